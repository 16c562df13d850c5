//! The MySQL-protocol side of StarRocks: checks, audit columns, schema changes, CREATE TABLE.
//!
//! StarRocks runs DDL through its FE's MySQL port. `ADD`, `MODIFY` and `DROP COLUMN` are
//! asynchronous jobs: the statement returns at once, and the new shape holds for loads only
//! once `SHOW ALTER TABLE COLUMN` says FINISHED, so every ALTER here waits for that before rows
//! of the new shape are sent. With fast schema evolution an ADD or a DROP of a value column is
//! FINISHED at once; `RENAME COLUMN` (StarRocks 3.3.2 and later) is always synchronous and
//! metadata-only. A second ALTER while one runs is refused ("state is not NORMAL"), which is
//! retried. Only text queries are used (no server-side prepared statements), with literals
//! escaped here.
//!
//! | change | statement ([`add_columns_sql`] …) | StarRocks runs it as | awaited until |
//! |---|---|---|---|
//! | add | `ADD COLUMN c T NULL` | job, or at once (fast schema evolution) | job FINISHED, column visible |
//! | modify | `MODIFY COLUMN c T NULL` (the full definition) | job (shared-data with fast schema evolution: at once) | job FINISHED |
//! | drop | `DROP COLUMN c` | job, or at once for a value column (fast schema evolution) | job FINISHED, column gone |
//! | rename | `RENAME COLUMN a TO b` | at once, metadata only | the statement returns |

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
    /// The table was dropped while dbmazz changed its columns.
    #[error("Table '{table}' disappeared from StarRocks while dbmazz changed its columns")]
    Vanished {
        /// Table.
        table: String,
    },
    /// StarRocks refused a schema change (an ALTER it will not run, such as a narrowing type
    /// change, a key column, or RENAME COLUMN before 3.3.2). Retrying does not help.
    #[error("StarRocks refused to change column(s) {columns} of table '{table}': {message}; the statement was: {statement}")]
    Refused {
        /// Table.
        table: String,
        /// The columns concerned, quoted and comma-separated.
        columns: String,
        /// The statement, as a person would run it.
        statement: String,
        /// StarRocks' answer.
        message: String,
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

impl TargetTable {
    /// Whether the table has column `name` (StarRocks' names are case-insensitive in SQL).
    pub fn has(&self, name: &str) -> bool {
        self.columns
            .iter()
            .any(|c| c.name.eq_ignore_ascii_case(name))
    }
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
            return self.existing(table).await;
        }
        let names: Vec<&str> = columns.iter().map(|(n, _)| n.as_str()).collect();
        let sql = add_columns_sql(&self.db, table, columns);
        self.alter(table, &names, &sql, |t| names.iter().all(|n| t.has(n)))
            .await
    }

    /// Changes the types of columns (`MODIFY COLUMN c T NULL`: dbmazz's value columns are
    /// nullable and have no DEFAULT or COMMENT, and MODIFY takes the whole definition), waits
    /// until the schema-change job is FINISHED, and returns the table as StarRocks then shows
    /// it. StarRocks refuses what its schema-change matrix does not allow (a narrowing, a key
    /// column of a primary-key table): [`DdlError::Refused`]. A job that cannot convert a
    /// stored value is cancelled: [`DdlError::AlterJob`].
    pub async fn modify_columns(
        &self,
        table: &str,
        columns: &[(String, String)],
    ) -> Result<TargetTable, DdlError> {
        if columns.is_empty() {
            return self.existing(table).await;
        }
        let names: Vec<&str> = columns.iter().map(|(n, _)| n.as_str()).collect();
        let sql = modify_columns_sql(&self.db, table, columns);
        self.alter(table, &names, &sql, |t| names.iter().all(|n| t.has(n)))
            .await
    }

    /// Drops columns, waits until the schema change is FINISHED and the columns are gone, and
    /// returns the table as StarRocks then shows it. Columns the table no longer has are
    /// skipped, so a drop repeated after a restart is harmless. StarRocks refuses to drop a
    /// key column of a primary-key table: [`DdlError::Refused`].
    pub async fn drop_columns(
        &self,
        table: &str,
        columns: &[String],
    ) -> Result<TargetTable, DdlError> {
        let current = self.existing(table).await?;
        let present: Vec<String> = columns.iter().filter(|c| current.has(c)).cloned().collect();
        if present.is_empty() {
            return Ok(current);
        }
        let names: Vec<&str> = present.iter().map(String::as_str).collect();
        let sql = drop_columns_sql(&self.db, table, &present);
        self.alter(table, &names, &sql, |t| !names.iter().any(|n| t.has(n)))
            .await
    }

    /// Renames a column (StarRocks 3.3.2 and later; see
    /// [`crate::starrocks::cluster::Cluster::supports_rename_column`]), which StarRocks does at
    /// once and in metadata only, and returns the table as StarRocks then shows it. A rename
    /// already made (`from` gone, `to` present) is not repeated. An older StarRocks answers
    /// with a syntax error: [`DdlError::Refused`].
    pub async fn rename_column(
        &self,
        table: &str,
        from: &str,
        to: &str,
    ) -> Result<TargetTable, DdlError> {
        let current = self.existing(table).await?;
        if !current.has(from) && current.has(to) {
            return Ok(current);
        }
        let sql = rename_column_sql(&self.db, table, from, to);
        self.alter(table, &[from, to], &sql, |t| t.has(to) && !t.has(from))
            .await
    }

    /// The table, which must exist.
    async fn existing(&self, table: &str) -> Result<TargetTable, DdlError> {
        self.table(table).await?.ok_or_else(|| DdlError::Vanished {
            table: table.into(),
        })
    }

    /// Runs the ALTER `sql` on `table` (retrying while another schema change runs), then waits
    /// until every job it started is FINISHED and `done` holds for the table; returns the
    /// table as it then is. `columns` name the columns concerned, for errors.
    async fn alter(
        &self,
        table: &str,
        columns: &[&str],
        sql: &str,
        done: impl Fn(&TargetTable) -> bool,
    ) -> Result<TargetTable, DdlError> {
        let action = format!("ALTER TABLE '{table}'");
        // Jobs that existed before ours: a fast schema change or a rename makes no job at
        // all, and the newest row may then be an older, unrelated one.
        let earlier: Vec<String> = self
            .alter_jobs(table)
            .await?
            .into_iter()
            .map(|j| j.id)
            .collect();
        let mut attempts = 0;
        loop {
            match self.exec(&action, sql).await {
                Ok(()) => break,
                Err(DdlError::Query {
                    action, message, ..
                }) if is_busy(&message) => {
                    // Another schema change on this table is still running: wait a minute
                    // for it, then let the caller retry later.
                    if attempts >= 120 {
                        return Err(DdlError::Query {
                            action,
                            message,
                            transient: true,
                        });
                    }
                    attempts += 1;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(DdlError::Query {
                    message,
                    transient: false,
                    ..
                }) => {
                    return Err(DdlError::Refused {
                        table: table.into(),
                        columns: quoted_list(columns),
                        statement: sql.to_owned(),
                        message,
                    })
                }
                Err(e) => return Err(e),
            }
        }
        tracing::info!(
            table,
            columns = columns.len(),
            statement = sql,
            "schema change submitted, waiting for it to finish"
        );
        self.wait_for_alter(table, &earlier, done).await
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

    /// Waits until every job on `table` that is not in `earlier` finished and `done` holds
    /// for the table; returns the table as it then is.
    async fn wait_for_alter(
        &self,
        table: &str,
        earlier: &[String],
        done: impl Fn(&TargetTable) -> bool,
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
                let target = self.existing(table).await?;
                if done(&target) {
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

/// Whether StarRocks refused an ALTER because another schema change on the table runs: ADD,
/// MODIFY and DROP say the table "is not NORMAL", RENAME that it is "in SCHEMA_CHANGE state".
fn is_busy(message: &str) -> bool {
    message.contains("is not NORMAL") || message.contains("SCHEMA_CHANGE state")
}

/// `'a', 'b'`: column names for an error message.
fn quoted_list(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("'{n}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `ALTER TABLE `db`.`t` ` followed by `clauses`, comma-separated.
fn alter_sql(db: &str, table: &str, clauses: Vec<String>) -> String {
    format!(
        "ALTER TABLE {}.{} {}",
        ident(db),
        ident(table),
        clauses.join(", ")
    )
}

/// The statement [`Ddl::add_columns`] runs: one `ADD COLUMN c T NULL` per column.
pub fn add_columns_sql(db: &str, table: &str, columns: &[(String, String)]) -> String {
    let clauses = columns
        .iter()
        .map(|(name, ty)| format!("ADD COLUMN {} {ty} NULL", ident(name)))
        .collect();
    alter_sql(db, table, clauses)
}

/// The statement that adds one nullable column `column` of StarRocks type `ty`.
pub fn add_column_sql(db: &str, table: &str, column: &str, ty: &str) -> String {
    add_columns_sql(db, table, &[(column.to_owned(), ty.to_owned())])
}

/// The statement [`Ddl::modify_columns`] runs: one `MODIFY COLUMN c T NULL` per column.
pub fn modify_columns_sql(db: &str, table: &str, columns: &[(String, String)]) -> String {
    let clauses = columns
        .iter()
        .map(|(name, ty)| format!("MODIFY COLUMN {} {ty} NULL", ident(name)))
        .collect();
    alter_sql(db, table, clauses)
}

/// The statement that changes column `column` to StarRocks type `ty` (nullable).
pub fn modify_column_sql(db: &str, table: &str, column: &str, ty: &str) -> String {
    modify_columns_sql(db, table, &[(column.to_owned(), ty.to_owned())])
}

/// The statement [`Ddl::drop_columns`] runs: one `DROP COLUMN c` per column.
pub fn drop_columns_sql(db: &str, table: &str, columns: &[String]) -> String {
    let clauses = columns
        .iter()
        .map(|name| format!("DROP COLUMN {}", ident(name)))
        .collect();
    alter_sql(db, table, clauses)
}

/// The statement that drops column `column`.
pub fn drop_column_sql(db: &str, table: &str, column: &str) -> String {
    drop_columns_sql(db, table, &[column.to_owned()])
}

/// The statement [`Ddl::rename_column`] runs: `RENAME COLUMN from TO to` (the grammar of
/// StarRocks 3.3.2 and later, where `TO` is required).
pub fn rename_column_sql(db: &str, table: &str, from: &str, to: &str) -> String {
    alter_sql(
        db,
        table,
        vec![format!("RENAME COLUMN {} TO {}", ident(from), ident(to))],
    )
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

    #[test]
    fn schema_change_statements_are_what_a_person_would_run() {
        assert_eq!(
            add_column_sql("app", "orders", "note", "VARCHAR(65533)"),
            "ALTER TABLE `app`.`orders` ADD COLUMN `note` VARCHAR(65533) NULL"
        );
        assert_eq!(
            modify_columns_sql(
                "app",
                "orders",
                &[
                    ("qty".into(), "BIGINT".into()),
                    ("price".into(), "DECIMAL(12,2)".into())
                ]
            ),
            "ALTER TABLE `app`.`orders` MODIFY COLUMN `qty` BIGINT NULL, \
             MODIFY COLUMN `price` DECIMAL(12,2) NULL"
        );
        assert_eq!(
            modify_column_sql("app", "orders", "qty", "BIGINT"),
            "ALTER TABLE `app`.`orders` MODIFY COLUMN `qty` BIGINT NULL"
        );
        assert_eq!(
            drop_column_sql("app", "or`ders", "old"),
            "ALTER TABLE `app`.`or``ders` DROP COLUMN `old`"
        );
        assert_eq!(
            drop_columns_sql("app", "t", &["a".into(), "b".into()]),
            "ALTER TABLE `app`.`t` DROP COLUMN `a`, DROP COLUMN `b`"
        );
        assert_eq!(
            rename_column_sql("app", "t", "name", "full name"),
            "ALTER TABLE `app`.`t` RENAME COLUMN `name` TO `full name`"
        );
    }

    #[test]
    fn a_running_schema_change_is_recognised_in_both_wordings() {
        assert!(is_busy(
            "Table[t]'s state is not NORMAL. Do not allow doing ALTER ops"
        ));
        assert!(is_busy(
            "Can not rename column of table in SCHEMA_CHANGE state"
        ));
        assert!(!is_busy("Can not change BIGINT to INT"));
    }
}
