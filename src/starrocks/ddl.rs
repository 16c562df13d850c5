//! The MySQL-protocol side of StarRocks: checks, audit columns, schema changes, CREATE TABLE.
//!
//! StarRocks runs DDL through its FE's MySQL port. `ALTER TABLE … ADD COLUMN` is an
//! asynchronous job: the statement returns at once, and the column exists for loads only once
//! `SHOW ALTER TABLE COLUMN` says FINISHED, so every ALTER here waits for that before rows that
//! use the column are sent. A second ALTER while one runs is refused ("state is not NORMAL"),
//! which is retried. Only text queries are used (no server-side prepared statements), with
//! literals escaped here.

use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Opts, Pool, Row};

use crate::postgres::schema_cache::TableCatalog;
use crate::secret::Secret;
use crate::starrocks::types::{starrocks_type, AUDIT_COLUMNS};

/// A DDL step failed.
#[derive(Debug, thiserror::Error)]
pub enum DdlError {
    /// The MySQL URL is malformed.
    #[error("STARROCKS_MYSQL_URL is not a valid MySQL URL (expected mysql://user:password@fe-host:9030/)")]
    BadUrl,
    /// A statement failed.
    #[error("StarRocks {action} failed: {message}")]
    Query {
        /// What was being done.
        action: String,
        /// The server's or driver's message (never the URL).
        message: String,
        /// Whether retrying may help (connection trouble).
        transient: bool,
    },
    /// An ALTER job was cancelled or timed out.
    #[error("StarRocks schema change on table '{table}' {outcome}; check SHOW ALTER TABLE COLUMN FROM {db}")]
    AlterJob {
        /// Database.
        db: String,
        /// Table.
        table: String,
        /// What happened.
        outcome: String,
    },
}

impl DdlError {
    /// Whether retrying later may help.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            DdlError::Query {
                transient: true,
                ..
            }
        )
    }
}

fn query_error(action: impl Into<String>) -> impl FnOnce(mysql_async::Error) -> DdlError {
    let action = action.into();
    move |e| {
        let transient = matches!(e, mysql_async::Error::Io(_) | mysql_async::Error::Driver(_));
        DdlError::Query {
            action,
            message: e.to_string(),
            transient,
        }
    }
}

/// Quotes a StarRocks identifier.
pub fn ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// Quotes a string literal for the MySQL protocol.
pub fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

/// What the target table looks like.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetTable {
    /// Column names (lower case, as StarRocks stores them).
    pub columns: Vec<String>,
    /// Table model from `information_schema.tables_config` (`PRIMARY_KEYS`, `DUP_KEYS`, …),
    /// when the server reports it.
    pub model: Option<String>,
}

/// A connection pool to the FE's MySQL port, bound to one database.
pub struct Ddl {
    pool: Pool,
    db: String,
}

impl Ddl {
    /// Connects lazily (the first statement opens the connection).
    pub fn new(url: &Secret, db: &str) -> Result<Ddl, DdlError> {
        let opts = Opts::from_url(url.expose()).map_err(|_| DdlError::BadUrl)?;
        Ok(Ddl {
            pool: Pool::new(opts),
            db: db.to_owned(),
        })
    }

    /// The database.
    pub fn db(&self) -> &str {
        &self.db
    }

    async fn rows(&self, action: &str, sql: &str) -> Result<Vec<Row>, DdlError> {
        let mut conn = self.pool.get_conn().await.map_err(query_error(action))?;
        conn.query(sql).await.map_err(query_error(action))
    }

    async fn exec(&self, action: &str, sql: &str) -> Result<(), DdlError> {
        let mut conn = self.pool.get_conn().await.map_err(query_error(action))?;
        conn.query_drop(sql).await.map_err(query_error(action))
    }

    /// `current_version()`.
    pub async fn version(&self) -> Result<String, DdlError> {
        let rows = self
            .rows("version check", "SELECT current_version()")
            .await?;
        Ok(rows
            .into_iter()
            .next()
            .and_then(|r| r.get::<Option<String>, _>(0).flatten())
            .unwrap_or_default())
    }

    /// The table's columns and model, or `None` if it does not exist.
    pub async fn table(&self, table: &str) -> Result<Option<TargetTable>, DdlError> {
        let action = format!("lookup of table '{table}'");
        let exists = self
            .rows(
                &action,
                &format!(
                    "SELECT TABLE_NAME FROM information_schema.tables WHERE TABLE_SCHEMA = {} AND TABLE_NAME = {}",
                    literal(&self.db),
                    literal(table)
                ),
            )
            .await?;
        if exists.is_empty() {
            return Ok(None);
        }
        let columns = self
            .rows(
                &action,
                &format!(
                    "SELECT COLUMN_NAME FROM information_schema.columns WHERE TABLE_SCHEMA = {} AND TABLE_NAME = {} ORDER BY ORDINAL_POSITION",
                    literal(&self.db),
                    literal(table)
                ),
            )
            .await?
            .into_iter()
            .filter_map(|r| r.get::<Option<String>, _>(0).flatten())
            .map(|c| c.to_lowercase())
            .collect();
        let model = self
            .rows(
                &action,
                &format!(
                    "SELECT TABLE_MODEL FROM information_schema.tables_config WHERE TABLE_SCHEMA = {} AND TABLE_NAME = {}",
                    literal(&self.db),
                    literal(table)
                ),
            )
            .await
            .ok()
            .and_then(|rows| rows.into_iter().next())
            .and_then(|r| r.get::<Option<String>, _>(0).flatten());
        Ok(Some(TargetTable { columns, model }))
    }

    /// Creates a primary-key table for `source` (key columns first, then the others, then the
    /// audit columns).
    pub async fn create_table(&self, table: &str, source: &TableCatalog) -> Result<(), DdlError> {
        let mut cols = Vec::new();
        for key in &source.key_columns {
            if let Some(c) = source.columns.iter().find(|c| &c.name == key) {
                cols.push(format!(
                    "{} {} NOT NULL",
                    ident(&c.name),
                    starrocks_type(c, true)
                ));
            }
        }
        for c in source
            .columns
            .iter()
            .filter(|c| !source.key_columns.contains(&c.name))
        {
            cols.push(format!(
                "{} {} NULL",
                ident(&c.name),
                starrocks_type(c, false)
            ));
        }
        for (name, ty) in AUDIT_COLUMNS {
            cols.push(format!("{} {ty} NULL", ident(name)));
        }
        let keys: Vec<String> = source.key_columns.iter().map(|k| ident(k)).collect();
        let sql = format!(
            "CREATE TABLE IF NOT EXISTS {}.{} ({}) PRIMARY KEY({}) DISTRIBUTED BY HASH({}) PROPERTIES(\"fast_schema_evolution\" = \"true\")",
            ident(&self.db),
            ident(table),
            cols.join(", "),
            keys.join(", "),
            keys.join(", ")
        );
        self.exec(&format!("CREATE TABLE '{table}'"), &sql).await
    }

    /// Adds nullable columns and waits for the schema-change job to finish.
    pub async fn add_columns(
        &self,
        table: &str,
        columns: &[(String, String)],
    ) -> Result<(), DdlError> {
        if columns.is_empty() {
            return Ok(());
        }
        let adds: Vec<String> = columns
            .iter()
            .map(|(name, ty)| format!("ADD COLUMN {} {ty} NULL", ident(name)))
            .collect();
        let sql = format!(
            "ALTER TABLE {}.{} {}",
            ident(&self.db),
            ident(table),
            adds.join(", ")
        );
        let action = format!("ALTER TABLE '{table}'");
        let mut attempts = 0;
        loop {
            match self.exec(&action, &sql).await {
                Ok(()) => break,
                Err(DdlError::Query { message, .. })
                    if message.contains("is not NORMAL") && attempts < 120 =>
                {
                    // Another schema change on this table is still running.
                    attempts += 1;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => return Err(e),
            }
        }
        tracing::info!(
            table,
            columns = columns.len(),
            "schema change submitted, waiting for it to finish"
        );
        self.wait_for_alter(table).await
    }

    async fn wait_for_alter(&self, table: &str) -> Result<(), DdlError> {
        let sql = format!(
            "SHOW ALTER TABLE COLUMN FROM {} WHERE TableName = {} ORDER BY CreateTime DESC LIMIT 1",
            ident(&self.db),
            literal(table)
        );
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3600);
        let mut pause = Duration::from_millis(100);
        loop {
            let rows = self
                .rows(&format!("SHOW ALTER TABLE COLUMN for '{table}'"), &sql)
                .await?;
            let state = rows.first().map(|r| {
                let get = |name: &str| {
                    r.columns_ref()
                        .iter()
                        .position(|c| c.name_str().eq_ignore_ascii_case(name))
                        .and_then(|i| r.get::<Option<String>, _>(i).flatten())
                        .unwrap_or_default()
                };
                (get("State"), get("Msg"))
            });
            match state {
                None => return Ok(()),
                Some((s, _)) if s == "FINISHED" => return Ok(()),
                Some((s, msg)) if s == "CANCELLED" => {
                    return Err(DdlError::AlterJob {
                        db: self.db.clone(),
                        table: table.into(),
                        outcome: format!("was cancelled: {msg}"),
                    })
                }
                Some(_) if tokio::time::Instant::now() > deadline => {
                    return Err(DdlError::AlterJob {
                        db: self.db.clone(),
                        table: table.into(),
                        outcome: "did not finish within an hour".into(),
                    })
                }
                Some(_) => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(3));
                }
            }
        }
    }

    /// `TRUNCATE TABLE`.
    pub async fn truncate(&self, table: &str) -> Result<(), DdlError> {
        self.exec(
            &format!("TRUNCATE TABLE '{table}'"),
            &format!("TRUNCATE TABLE {}.{}", ident(&self.db), ident(table)),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_escapes_what_mysql_would_interpret() {
        assert_eq!(ident("a`b"), "`a``b`");
        assert_eq!(literal("it's \\ here"), "'it''s \\\\ here'");
    }
}
