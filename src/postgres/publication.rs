//! The publication dbmazz reads through: created when missing, completed when dbmazz may, and
//! checked either way.
//!
//! On a self-run server dbmazz's role usually owns the tables and creates the publication itself.
//! On a managed service it often does not: the CDC role has `REPLICATION` and `SELECT`, while
//! an administrator owns the tables and creates the publication. Both work as long as the
//! publication delivers every change of every table in `TABLES`, so this module checks exactly
//! that and, when something is missing that dbmazz's role may not fix, stops with the statement
//! its owner has to run:
//!
//! ```text
//!  pg_publication ─ missing ──▶ CREATE PUBLICATION … FOR TABLE …   (refused: the statement to run)
//!        │ found
//!        ▼
//!  publishes insert, update, delete, truncate?       no ──▶ the ALTER PUBLICATION … SET (publish …)
//!  pg_publication_tables lists every table?          no ──▶ ADD TABLE if we may, else the statement
//!  (15+) no row filter, column list = the columns?   no ──▶ what to change
//! ```
//!
//! A row filter or a column list (PostgreSQL 15+) would make the stream silently disagree with
//! the initial copy, which reads whole tables, so both are refused. Generated columns are not
//! replicated: pgoutput leaves them out before 18 and by default on 18, and the copy and the
//! catalog leave them out too; a PostgreSQL 18 publication with `publish_generated_columns =
//! stored` (or a column list naming a generated column) is refused for the same reason.

use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use crate::config::{quote_ident, TableName};
use crate::postgres::schema_cache::TableCatalog;

/// The first server version with publication column lists and row filters.
const PG15: u32 = 150_000;
/// The first server version with `publish_generated_columns`.
const PG18: u32 = 180_000;

/// The publication cannot deliver every change of every table, and dbmazz may not fix it.
#[derive(Debug, thiserror::Error)]
pub enum PublicationError {
    /// The publication leaves out some operations.
    #[error(
        "publication {publication} does not publish {missing}; as its owner run: ALTER \
         PUBLICATION {quoted} SET (publish = 'insert, update, delete, truncate');"
    )]
    Operations {
        /// Publication.
        publication: String,
        /// Its quoted name.
        quoted: String,
        /// The missing operations.
        missing: String,
    },
    /// dbmazz's role may not create the publication.
    #[error(
        "role {role} may not create publication {publication} ({}); as the owner of the \
         tables (or a superuser) run: {statement} and dbmazz will use it",
        crate::postgres::tls::flatten_chain(source)
    )]
    CannotCreate {
        /// Publication.
        publication: String,
        /// dbmazz's role.
        role: String,
        /// The statement to run.
        statement: String,
        /// Cause.
        source: tokio_postgres::Error,
    },
    /// The publication exists, lacks tables, and dbmazz's role may not add them.
    #[error(
        "publication {publication} (owned by {owner}) does not publish {}; role {role} may not \
         change it: as its owner run: {statement} or set PUBLICATION_NAME to a publication that \
         covers every table",
        names(missing)
    )]
    MissingTables {
        /// Publication.
        publication: String,
        /// Its owner.
        owner: String,
        /// dbmazz's role.
        role: String,
        /// Tables in `TABLES` it does not publish.
        missing: Vec<TableName>,
        /// The statement to run.
        statement: String,
    },
    /// A row filter would leave changes out of the stream.
    #[error(
        "publication {publication} publishes {table} with a row filter (WHERE {filter}): dbmazz \
         copies whole tables and needs every change; as its owner run: ALTER PUBLICATION {quoted} \
         SET TABLE … with no WHERE clause for {table}, or use another PUBLICATION_NAME"
    )]
    RowFilter {
        /// Publication.
        publication: String,
        /// Its quoted name.
        quoted: String,
        /// Table.
        table: TableName,
        /// The filter expression.
        filter: String,
    },
    /// A column list leaves out columns.
    #[error(
        "publication {publication} publishes only some columns of {table} (missing: {}): dbmazz \
         replicates whole rows; as its owner drop the column list (ALTER PUBLICATION {quoted} \
         SET TABLE … without one), or use another PUBLICATION_NAME",
        missing.join(", ")
    )]
    ColumnList {
        /// Publication.
        publication: String,
        /// Its quoted name.
        quoted: String,
        /// Table.
        table: TableName,
        /// Columns left out.
        missing: Vec<String>,
    },
    /// Generated columns would be published (PostgreSQL 18), which the copy leaves out.
    #[error(
        "publication {publication} publishes generated columns of {table} ({}): dbmazz does not \
         replicate generated columns (compute them in StarRocks instead); as its owner run: ALTER \
         PUBLICATION {quoted} SET (publish_generated_columns = none); and leave them out of any \
         column list",
        columns.join(", ")
    )]
    GeneratedColumns {
        /// Publication.
        publication: String,
        /// Its quoted name.
        quoted: String,
        /// Table.
        table: TableName,
        /// The generated columns it publishes.
        columns: Vec<String>,
    },
    /// A catalog query or DDL statement failed.
    #[error("{action} failed: {}", crate::postgres::tls::flatten_chain(source))]
    Sql {
        /// What was being done.
        action: String,
        /// Cause.
        source: tokio_postgres::Error,
    },
}

impl PublicationError {
    /// Whether retrying later may help (connection trouble); every other case needs a person.
    pub fn is_transient(&self) -> bool {
        match self {
            PublicationError::Sql { source, .. } => {
                source.is_closed()
                    || source
                        .code()
                        .is_none_or(|c| crate::postgres::sqlstate::is_transient(c.code()))
            }
            _ => false,
        }
    }
}

fn names(tables: &[TableName]) -> String {
    tables
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn sql(action: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> PublicationError {
    let action = action.into();
    move |source| PublicationError::Sql { action, source }
}

fn is_permission_denied(err: &tokio_postgres::Error) -> bool {
    err.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE)
}

/// Creates `publication` for `tables`, or checks (and where dbmazz's role may, completes) the
/// one that exists. `server_version_num` decides which catalog columns exist.
pub async fn ensure(
    client: &Client,
    publication: &str,
    tables: &[TableCatalog],
    server_version_num: u32,
) -> Result<(), PublicationError> {
    let quoted = quote_ident(publication);
    let list = |tables: &[&TableName]| {
        tables
            .iter()
            .map(|t| t.quoted())
            .collect::<Vec<_>>()
            .join(", ")
    };
    // A table renamed while dbmazz was stopped is published under its current name.
    let all: Vec<&TableName> = tables.iter().map(|t| &t.source_name).collect();
    let role: String = client
        .query_one("SELECT current_user::text", &[])
        .await
        .map_err(sql("reading the current role"))?
        .get(0);
    let row = client
        .query_opt(
            "SELECT puballtables, pubinsert, pubupdate, pubdelete, pubtruncate, \
                    pg_get_userbyid(pubowner)::text, pg_has_role(pubowner, 'USAGE') \
               FROM pg_publication WHERE pubname = $1",
            &[&publication],
        )
        .await
        .map_err(sql(format!("looking up publication {publication}")))?;
    let Some(row) = row else {
        let statement = format!("CREATE PUBLICATION {quoted} FOR TABLE {};", list(&all));
        return match client.batch_execute(&statement).await {
            Ok(()) => {
                tracing::info!(publication, tables = all.len(), "created publication");
                check_columns(client, publication, tables, server_version_num).await
            }
            Err(source) if is_permission_denied(&source) => Err(PublicationError::CannotCreate {
                publication: publication.into(),
                role,
                statement,
                source,
            }),
            Err(source) => Err(sql(format!("creating publication {publication}"))(source)),
        };
    };
    let ops = ["insert", "update", "delete", "truncate"];
    let missing: Vec<&str> = ops
        .iter()
        .enumerate()
        .filter(|(i, _)| !row.get::<_, bool>(i + 1))
        .map(|(_, op)| *op)
        .collect();
    if !missing.is_empty() {
        return Err(PublicationError::Operations {
            publication: publication.into(),
            quoted,
            missing: missing.join(", "),
        });
    }
    let all_tables: bool = row.get(0);
    let owner: String = row.get(5);
    let may_alter: bool = row.get(6);
    if !all_tables {
        let published: Vec<(String, String)> = client
            .query(
                "SELECT schemaname::text, tablename::text FROM pg_publication_tables \
                  WHERE pubname = $1",
                &[&publication],
            )
            .await
            .map_err(sql(format!("listing tables of publication {publication}")))?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let missing: Vec<&TableName> = all
            .iter()
            .copied()
            .filter(|t| {
                !published
                    .iter()
                    .any(|(s, n)| *s == t.schema && *n == t.name)
            })
            .collect();
        if !missing.is_empty() {
            let statement = format!("ALTER PUBLICATION {quoted} ADD TABLE {};", list(&missing));
            let refused = |_| PublicationError::MissingTables {
                publication: publication.into(),
                owner: owner.clone(),
                role: role.clone(),
                missing: missing.iter().copied().cloned().collect(),
                statement: statement.clone(),
            };
            if !may_alter {
                return Err(refused(()));
            }
            match client.batch_execute(&statement).await {
                Ok(()) => {
                    tracing::info!(publication, tables = %list(&missing), "added tables to publication")
                }
                Err(source) if is_permission_denied(&source) => return Err(refused(())),
                Err(source) => {
                    return Err(sql(format!("adding tables to publication {publication}"))(
                        source,
                    ))
                }
            }
        }
    }
    check_columns(client, publication, tables, server_version_num).await
}

/// PostgreSQL 15+: no row filter, and exactly the catalog's columns (non-generated) published.
async fn check_columns(
    client: &Client,
    publication: &str,
    tables: &[TableCatalog],
    server_version_num: u32,
) -> Result<(), PublicationError> {
    if server_version_num < PG15 {
        return Ok(());
    }
    let quoted = quote_ident(publication);
    let rows = client
        .query(
            "SELECT schemaname::text, tablename::text, attnames::text[], rowfilter \
               FROM pg_publication_tables WHERE pubname = $1",
            &[&publication],
        )
        .await
        .map_err(sql(format!(
            "reading the columns of publication {publication}"
        )))?;
    for table in tables {
        let Some(row) = rows.iter().find(|r| {
            r.get::<_, String>(0) == table.source_name.schema
                && r.get::<_, String>(1) == table.source_name.name
        }) else {
            continue;
        };
        let published: Vec<String> = row.get::<_, Option<Vec<String>>>(2).unwrap_or_default();
        if let Some(filter) = row.get::<_, Option<String>>(3) {
            return Err(PublicationError::RowFilter {
                publication: publication.into(),
                quoted,
                table: table.source_name.clone(),
                filter,
            });
        }
        let missing: Vec<String> = table
            .columns
            .iter()
            .filter(|c| !published.contains(&c.name))
            .map(|c| c.name.clone())
            .collect();
        if !missing.is_empty() {
            return Err(PublicationError::ColumnList {
                publication: publication.into(),
                quoted,
                table: table.source_name.clone(),
                missing,
            });
        }
        let extra: Vec<String> = published
            .into_iter()
            .filter(|name| !table.columns.iter().any(|c| c.name == *name))
            .collect();
        if !extra.is_empty() && server_version_num >= PG18 {
            return Err(PublicationError::GeneratedColumns {
                publication: publication.into(),
                quoted,
                table: table.source_name.clone(),
                columns: extra,
            });
        }
    }
    Ok(())
}
