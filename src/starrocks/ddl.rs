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
use mysql_async::{Opts, OptsBuilder, Pool, Row};

use crate::pipeline::change::TableCatalog;
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
    /// The table was dropped while dbmazz added columns to it.
    #[error("Table '{table}' disappeared from StarRocks while dbmazz added columns to it")]
    Vanished {
        /// Table.
        table: String,
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

/// Runs one statement's round trip within [`STATEMENT_WAIT`]; past it, a transient error.
async fn bounded<T>(
    action: &str,
    work: impl std::future::Future<Output = Result<T, DdlError>>,
) -> Result<T, DdlError> {
    match tokio::time::timeout(STATEMENT_WAIT, work).await {
        Ok(r) => r,
        Err(_) => Err(DdlError::Query {
            action: action.to_owned(),
            message: format!(
                "no answer from the StarRocks FE within {} s; check the network to its MySQL port",
                STATEMENT_WAIT.as_secs()
            ),
            transient: true,
        }),
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

/// MySQL options for a StarRocks FE from `url`, or `None` when it is not a MySQL URL.
///
/// `prefer_socket` is always off: with it on, the driver asks for `@@socket` on connect, a
/// variable StarRocks does not have (`ERROR 1193: Unknown system variable 'socket'`), and the
/// connection fails before any statement runs.
pub fn mysql_opts(url: &str) -> Option<Opts> {
    let opts = Opts::from_url(url).ok()?;
    Some(
        OptsBuilder::from_opts(opts)
            .prefer_socket(false)
            // A dead FE host is noticed while a statement waits (see STATEMENT_WAIT too).
            .tcp_keepalive(Some(Duration::from_secs(30)))
            .into(),
    )
}

/// The longest dbmazz waits for the FE to accept a connection and answer one statement
/// (asynchronous jobs such as ADD COLUMN are awaited separately, by polling). An FE behind a
/// network that stopped delivering would otherwise hold the sink forever.
pub const STATEMENT_WAIT: Duration = Duration::from_secs(120);

/// One column of a target table, as `information_schema.columns` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetColumn {
    /// The name as StarRocks stores it (case kept: Stream Load matches JSON keys by exact name).
    pub name: String,
    /// `COLUMN_TYPE`, lower case (`int(11)`, `array<array<int(11)>>`, `json`, …).
    pub column_type: String,
}

impl TargetColumn {
    /// For an `ARRAY` column, how many `ARRAY` levels it nests; `None` for any other type.
    pub fn array_depth(&self) -> Option<u8> {
        let mut depth = 0u8;
        let mut rest = self.column_type.as_str();
        while let Some(inner) = rest.strip_prefix("array<") {
            depth = depth.saturating_add(1);
            rest = inner;
        }
        (depth > 0).then_some(depth)
    }

    /// Its encoded width in a primary key when fixed (StarRocks' key encoder); `None` for
    /// strings.
    pub fn key_width(&self) -> Option<u8> {
        let base = self
            .column_type
            .split(|c: char| c == '(' || c.is_whitespace())
            .next()
            .unwrap_or("");
        Some(match base {
            "boolean" | "tinyint" => 1,
            "smallint" => 2,
            "int" | "integer" | "date" => 4,
            "bigint" | "datetime" => 8,
            "largeint" => 16,
            _ => return None,
        })
    }
}

/// What the target table looks like.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetTable {
    /// Its columns, in order.
    pub columns: Vec<TargetColumn>,
    /// Table model from `information_schema.tables_config` (`PRIMARY_KEYS`, `DUP_KEYS`, …),
    /// when the server reports it.
    pub model: Option<String>,
}

/// One row of `SHOW ALTER TABLE COLUMN`.
struct AlterJob {
    id: String,
    state: String,
    msg: String,
}

/// A connection pool to the FE's MySQL port, bound to one database.
pub struct Ddl {
    pool: Pool,
    db: String,
}

impl Ddl {
    /// Connects lazily (the first statement opens the connection).
    pub fn new(url: &Secret, db: &str) -> Result<Ddl, DdlError> {
        let opts = mysql_opts(url.expose()).ok_or(DdlError::BadUrl)?;
        Ok(Ddl {
            pool: Pool::new(opts),
            db: db.to_owned(),
        })
    }

    /// The database.
    pub fn db(&self) -> &str {
        &self.db
    }

    pub(crate) async fn rows(&self, action: &str, sql: &str) -> Result<Vec<Row>, DdlError> {
        bounded(action, async {
            let mut conn = self.pool.get_conn().await.map_err(query_error(action))?;
            conn.query(sql).await.map_err(query_error(action))
        })
        .await
    }

    pub(crate) async fn exec(&self, action: &str, sql: &str) -> Result<(), DdlError> {
        bounded(action, async {
            let mut conn = self.pool.get_conn().await.map_err(query_error(action))?;
            conn.query_drop(sql).await.map_err(query_error(action))
        })
        .await
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

    /// The value of FE configuration item `name` (`ADMIN SHOW FRONTEND CONFIG LIKE`), read from
    /// its `Value` column by name (the column set differs between releases).
    pub async fn frontend_config(&self, name: &str) -> Result<Option<String>, DdlError> {
        let rows = self
            .rows(
                "ADMIN SHOW FRONTEND CONFIG",
                &format!("ADMIN SHOW FRONTEND CONFIG LIKE {}", literal(name)),
            )
            .await?;
        Ok(rows.first().and_then(|r| text_column(r, "Value")))
    }

    /// Alive BEs that are not being decommissioned (`SHOW BACKENDS`).
    pub async fn alive_backends(&self) -> Result<usize, DdlError> {
        let rows = self.rows("SHOW BACKENDS", "SHOW BACKENDS").await?;
        Ok(rows
            .iter()
            .filter(|r| {
                text_column(r, "Alive").is_some_and(|v| v.eq_ignore_ascii_case("true"))
                    && !text_column(r, "SystemDecommissioned")
                        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
            })
            .count())
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
                    "SELECT COLUMN_NAME, COLUMN_TYPE FROM information_schema.columns WHERE TABLE_SCHEMA = {} AND TABLE_NAME = {} ORDER BY ORDINAL_POSITION",
                    literal(&self.db),
                    literal(table)
                ),
            )
            .await?
            .into_iter()
            .filter_map(|r| {
                let name = r.get::<Option<String>, _>(0).flatten()?;
                let column_type = r.get::<Option<String>, _>(1).flatten().unwrap_or_default();
                Some(TargetColumn {
                    name,
                    column_type: column_type.to_lowercase(),
                })
            })
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
    /// audit columns), with `replication_num` replicas when given (else the cluster's default).
    pub async fn create_table(
        &self,
        table: &str,
        source: &TableCatalog,
        replication_num: Option<u32>,
    ) -> Result<(), DdlError> {
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
        let replicas = replication_num
            .map(|n| format!(", \"replication_num\" = \"{n}\""))
            .unwrap_or_default();
        let sql = format!(
            "CREATE TABLE IF NOT EXISTS {}.{} ({}) PRIMARY KEY({}) DISTRIBUTED BY HASH({}) PROPERTIES(\"fast_schema_evolution\" = \"true\"{replicas})",
            ident(&self.db),
            ident(table),
            cols.join(", "),
            keys.join(", "),
            keys.join(", ")
        );
        self.exec(&format!("CREATE TABLE '{table}'"), &sql).await
    }

    /// Adds nullable columns, waits until loads can use them, and returns the table as
    /// StarRocks then shows it.
    pub async fn add_columns(
        &self,
        table: &str,
        columns: &[(String, String)],
    ) -> Result<TargetTable, DdlError> {
        if columns.is_empty() {
            return self.table(table).await?.ok_or_else(|| DdlError::Vanished {
                table: table.into(),
            });
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
        // Jobs that existed before ours: on a fast-schema-evolution table ADD COLUMN makes no
        // job at all, and the newest row may then be an older, unrelated one.
        let earlier: Vec<String> = self
            .alter_jobs(table)
            .await?
            .into_iter()
            .map(|j| j.id)
            .collect();
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
        let names: Vec<&str> = columns.iter().map(|(n, _)| n.as_str()).collect();
        self.wait_for_alter(table, &earlier, &names).await
    }

    /// `SHOW ALTER TABLE COLUMN` rows of `table`.
    async fn alter_jobs(&self, table: &str) -> Result<Vec<AlterJob>, DdlError> {
        let sql = format!(
            "SHOW ALTER TABLE COLUMN FROM {} WHERE TableName = {}",
            ident(&self.db),
            literal(table)
        );
        let rows = self
            .rows(&format!("SHOW ALTER TABLE COLUMN for '{table}'"), &sql)
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                let get = |name: &str| text_column(r, name).unwrap_or_default();
                AlterJob {
                    id: get("JobId"),
                    state: get("State"),
                    msg: get("Msg"),
                }
            })
            .collect())
    }

    /// Waits until every job on `table` that is not in `earlier` finished and every column in
    /// `columns` is visible; returns the table as it then is.
    async fn wait_for_alter(
        &self,
        table: &str,
        earlier: &[String],
        columns: &[&str],
    ) -> Result<TargetTable, DdlError> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3600);
        let mut pause = Duration::from_millis(100);
        loop {
            let ours: Vec<AlterJob> = self
                .alter_jobs(table)
                .await?
                .into_iter()
                .filter(|j| !earlier.contains(&j.id))
                .collect();
            if let Some(job) = ours.iter().find(|j| j.state == "CANCELLED") {
                return Err(DdlError::AlterJob {
                    db: self.db.clone(),
                    table: table.into(),
                    outcome: format!("was cancelled: {}", job.msg),
                });
            }
            if ours.iter().all(|j| j.state == "FINISHED") {
                let target = self.table(table).await?.ok_or_else(|| DdlError::Vanished {
                    table: table.into(),
                })?;
                let visible = columns.iter().all(|c| {
                    target
                        .columns
                        .iter()
                        .any(|have| have.name.eq_ignore_ascii_case(c))
                });
                if visible {
                    return Ok(target);
                }
            }
            if tokio::time::Instant::now() > deadline {
                return Err(DdlError::AlterJob {
                    db: self.db.clone(),
                    table: table.into(),
                    outcome: "did not finish within an hour".into(),
                });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(3));
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

    /// Creates `log` (if missing): the primary-key table of applied truncates, one row per slot
    /// and target table (see `truncates.rs`).
    pub async fn create_truncate_log(
        &self,
        log: &str,
        replication_num: Option<u32>,
    ) -> Result<(), DdlError> {
        let replicas = replication_num
            .map(|n| format!(" PROPERTIES(\"replication_num\" = \"{n}\")"))
            .unwrap_or_default();
        let sql = format!(
            "CREATE TABLE IF NOT EXISTS {}.{} (slot_name VARCHAR(128) NOT NULL, \
             table_name VARCHAR(256) NOT NULL, truncate_lsn BIGINT NOT NULL, \
             recorded_at DATETIME NULL) PRIMARY KEY(slot_name, table_name) \
             DISTRIBUTED BY HASH(slot_name){replicas}",
            ident(&self.db),
            ident(log),
        );
        self.exec(&format!("CREATE TABLE '{log}'"), &sql).await
    }

    /// The `(table_name, truncate_lsn)` rows of `slot` in `log`.
    pub async fn truncate_log_rows(
        &self,
        log: &str,
        slot: &str,
    ) -> Result<Vec<(String, String)>, DdlError> {
        let rows = self
            .rows(
                &format!("read of '{log}'"),
                &format!(
                    "SELECT table_name, truncate_lsn FROM {}.{} WHERE slot_name = {}",
                    ident(&self.db),
                    ident(log),
                    literal(slot)
                ),
            )
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|r| {
                let table = r.get::<Option<String>, _>(0).flatten()?;
                let lsn = r.get::<Option<String>, _>(1).flatten()?;
                Some((table, lsn))
            })
            .collect())
    }

    /// Upserts the row of `slot` and `table` in `log` (`INSERT` replaces a primary-key row).
    pub async fn record_truncate(
        &self,
        log: &str,
        slot: &str,
        table: &str,
        lsn: i64,
        at: &str,
    ) -> Result<(), DdlError> {
        self.exec(
            &format!("write to '{log}' for table '{table}'"),
            &format!(
                "INSERT INTO {}.{} (slot_name, table_name, truncate_lsn, recorded_at) VALUES ({}, {}, {lsn}, {})",
                ident(&self.db),
                ident(log),
                literal(slot),
                literal(table),
                literal(at)
            ),
        )
        .await
    }

    /// Deletes every row of `slot` from `log`.
    pub async fn clear_truncate_log(&self, log: &str, slot: &str) -> Result<(), DdlError> {
        self.exec(
            &format!("clearing of '{log}'"),
            &format!(
                "DELETE FROM {}.{} WHERE slot_name = {}",
                ident(&self.db),
                ident(log),
                literal(slot)
            ),
        )
        .await
    }
}

/// The text of column `name` (matched without regard to case) of a result row.
fn text_column(row: &Row, name: &str) -> Option<String> {
    row.columns_ref()
        .iter()
        .position(|c| c.name_str().eq_ignore_ascii_case(name))
        .and_then(|i| row.get::<Option<String>, _>(i).flatten())
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
