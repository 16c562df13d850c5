//! Durable state in SQLite: rows, schema, labels and schema-change jobs.
//!
//! Why SQLite: it gives the double atomic loads (one SQLite transaction per Stream Load, so a
//! failed load leaves nothing behind), restart survival with `--data-dir`, and a SQL engine
//! for the `SELECT`s that tests and people run over the MySQL port.
//!
//! ```text
//! main database                          attached `information_schema` (in memory)
//!   "db.table"         one per table       schemata, tables, columns, tables_config
//!   _double_databases  catalog              rebuilt from the catalog after every DDL
//!   _double_tables     TableDef as JSON
//!   _double_labels     label states
//!   _double_alter_jobs SHOW ALTER TABLE COLUMN rows
//!   _double_meta       id counters
//! ```
//!
//! The in-memory [`Catalog`] and [`LabelBook`] mirror these tables; this module keeps both in
//! step inside the same SQLite transaction.

use std::path::Path;
use std::sync::Arc;

use rusqlite::{params, Connection, OptionalExtension};

use crate::catalog::{storage_name, Catalog, ColumnChange, Database, KeysType, TableDef};
use crate::clock;
use crate::labels::{LabelBook, LabelRecord, TxnState};
use crate::sql::{code, Position, SqlError};
use crate::types::{Cell, SrType};

/// A storage failure. These are bugs or disk problems, never bad client input.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("stored schema is unreadable: {0}")]
    Schema(#[from] serde_json::Error),
}

impl From<StoreError> for SqlError {
    fn from(e: StoreError) -> SqlError {
        SqlError::new(1105, format!("internal error: {e}"))
    }
}

/// Quotes an identifier for SQLite.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// What a row of a load does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Upsert,
    Delete,
}

/// One converted row of a load: full table width, in column order.
#[derive(Debug, Clone, PartialEq)]
pub struct RowOp {
    pub op: Op,
    pub values: Vec<Cell>,
}

/// How a load's rows combine with stored rows.
#[derive(Debug, Clone, Default)]
pub struct ApplyMode {
    /// Partial update: only these column indexes are written to an existing row.
    pub partial: Option<Vec<usize>>,
    /// `merge_condition`: an upsert is applied only if its value here is >= the stored one.
    pub merge: Option<usize>,
}

/// A schema-change job as `SHOW ALTER TABLE COLUMN` reports it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct AlterJob {
    pub job_id: i64,
    pub db: String,
    pub table: String,
    pub table_id: i64,
    pub txn_id: i64,
    pub created_ms: i64,
    pub finished_ms: Option<i64>,
    /// `FINISHED` or `CANCELLED` once done; None while running (the state is then derived
    /// from the elapsed time).
    pub final_state: Option<String>,
    pub msg: String,
    /// ADD COLUMN (the columns to add), MODIFY COLUMN (the new definitions) or DROP COLUMN
    /// (the dropped columns).
    #[serde(default)]
    pub kind: JobKind,
    pub columns: Vec<(crate::catalog::ColumnDef, Option<Position>)>,
    /// `Timeout` in SHOW ALTER: 86400 s (`alter_table_timeout_second`) for a job that
    /// rewrites data, 1000 for a fast-schema-evolution change (StarRocks'
    /// `SchemaChangeHandler.modifyTableAddOrDropColumns` records `new SchemaChangeJobV2(..., 1000)`).
    #[serde(default = "default_job_timeout_s")]
    pub timeout_s: i64,
}

/// What a schema-change job does to the table's columns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum JobKind {
    /// Jobs stored before MODIFY COLUMN existed have no kind: they are ADD COLUMN jobs.
    #[default]
    AddColumns,
    ModifyColumns,
    /// DROP COLUMN: `columns` holds the dropped columns as the table had them.
    DropColumns,
}

fn default_job_timeout_s() -> i64 {
    86_400
}

impl AlterJob {
    /// The state at `now_ms` for a job that takes `duration_ms`.
    pub fn state_at(&self, now_ms: i64, duration_ms: i64) -> &str {
        if let Some(s) = &self.final_state {
            return s;
        }
        let elapsed = now_ms - self.created_ms;
        if elapsed < duration_ms / 4 {
            "PENDING"
        } else if elapsed < duration_ms / 2 {
            "WAITING_TXN"
        } else {
            "RUNNING"
        }
    }

    pub fn is_done(&self) -> bool {
        self.final_state.is_some()
    }
}

/// The result of a query: column names and rows.
#[derive(Debug, Clone, Default)]
pub struct ResultSet {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Cell>>,
}

/// Everything durable.
pub struct Store {
    conn: Connection,
    pub catalog: Catalog,
    pub labels: LabelBook,
    pub jobs: Vec<AlterJob>,
    /// How long an ADD or MODIFY COLUMN job takes (`--alter-duration-ms`).
    pub alter_duration_ms: i64,
    next_id: i64,
}

const INTERNAL_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS _double_meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS _double_databases (name TEXT PRIMARY KEY, id INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS _double_tables (db TEXT NOT NULL, name TEXT NOT NULL, def TEXT NOT NULL, PRIMARY KEY (db, name));
CREATE TABLE IF NOT EXISTS _double_labels (db TEXT NOT NULL, label TEXT NOT NULL, table_name TEXT NOT NULL,
    txn_id INTEGER NOT NULL, state TEXT NOT NULL, created_ms INTEGER NOT NULL, finished_ms INTEGER,
    PRIMARY KEY (db, label));
CREATE TABLE IF NOT EXISTS _double_alter_jobs (JobId INTEGER PRIMARY KEY, DbName TEXT NOT NULL, TableName TEXT NOT NULL,
    CreateTime TEXT, FinishTime TEXT, IndexName TEXT, IndexId INTEGER, OriginIndexId INTEGER, SchemaVersion TEXT,
    TransactionId INTEGER, State TEXT, Msg TEXT, Progress TEXT, Timeout INTEGER, job TEXT NOT NULL);
";

const INFO_SCHEMA: &str = "
CREATE TABLE information_schema.schemata (CATALOG_NAME TEXT, SCHEMA_NAME TEXT, DEFAULT_CHARACTER_SET_NAME TEXT,
    DEFAULT_COLLATION_NAME TEXT, SQL_PATH TEXT);
CREATE TABLE information_schema.tables (TABLE_CATALOG TEXT, TABLE_SCHEMA TEXT, TABLE_NAME TEXT, TABLE_TYPE TEXT,
    ENGINE TEXT, VERSION INTEGER, ROW_FORMAT TEXT, TABLE_ROWS INTEGER, AVG_ROW_LENGTH INTEGER, DATA_LENGTH INTEGER,
    MAX_DATA_LENGTH INTEGER, INDEX_LENGTH INTEGER, DATA_FREE INTEGER, AUTO_INCREMENT INTEGER, CREATE_TIME TEXT,
    UPDATE_TIME TEXT, CHECK_TIME TEXT, TABLE_COLLATION TEXT, CHECKSUM INTEGER, CREATE_OPTIONS TEXT, TABLE_COMMENT TEXT);
CREATE TABLE information_schema.columns (TABLE_CATALOG TEXT, TABLE_SCHEMA TEXT, TABLE_NAME TEXT, COLUMN_NAME TEXT,
    ORDINAL_POSITION INTEGER, COLUMN_DEFAULT TEXT, IS_NULLABLE TEXT, DATA_TYPE TEXT, CHARACTER_MAXIMUM_LENGTH INTEGER,
    CHARACTER_OCTET_LENGTH INTEGER, NUMERIC_PRECISION INTEGER, NUMERIC_SCALE INTEGER, DATETIME_PRECISION INTEGER,
    CHARACTER_SET_NAME TEXT, COLLATION_NAME TEXT, COLUMN_TYPE TEXT, COLUMN_KEY TEXT, EXTRA TEXT, PRIVILEGES TEXT,
    COLUMN_COMMENT TEXT, COLUMN_SIZE INTEGER, DECIMAL_DIGITS INTEGER, GENERATION_EXPRESSION TEXT, SRS_ID INTEGER);
CREATE TABLE information_schema.tables_config (TABLE_SCHEMA TEXT, TABLE_NAME TEXT, TABLE_ENGINE TEXT, TABLE_MODEL TEXT,
    PRIMARY_KEY TEXT, PARTITION_KEY TEXT, DISTRIBUTE_KEY TEXT, DISTRIBUTE_TYPE TEXT, DISTRIBUTE_BUCKET INTEGER,
    SORT_KEY TEXT, PROPERTIES TEXT, TABLE_ID INTEGER);
";

impl Store {
    /// Opens the store: a file under `data_dir`, or memory when None.
    pub fn open(data_dir: Option<&Path>, alter_duration_ms: i64) -> Result<Store, StoreError> {
        let conn = match data_dir {
            Some(dir) => {
                let conn = Connection::open(dir.join("starrocks-double.sqlite"))?;
                conn.pragma_update(None, "journal_mode", "WAL")?;
                conn.pragma_update(None, "synchronous", "NORMAL")?;
                conn
            }
            None => Connection::open_in_memory()?,
        };
        conn.execute_batch(INTERNAL_SCHEMA)?;
        conn.execute_batch("ATTACH DATABASE ':memory:' AS information_schema")?;
        conn.execute_batch(INFO_SCHEMA)?;
        let next_id: i64 = conn
            .query_row(
                "SELECT value FROM _double_meta WHERE key = 'next_id'",
                [],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(10_001);
        let mut store = Store {
            conn,
            catalog: Catalog::default(),
            labels: LabelBook::default(),
            jobs: Vec::new(),
            alter_duration_ms,
            next_id,
        };
        store.load_persisted()?;
        store.refresh_info_schema()?;
        Ok(store)
    }

    fn load_persisted(&mut self) -> Result<(), StoreError> {
        let mut dbs = self
            .conn
            .prepare("SELECT name, id FROM _double_databases")?;
        let rows = dbs.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        for row in rows {
            let (name, id) = row?;
            self.catalog.dbs.insert(
                name,
                Database {
                    id,
                    tables: Default::default(),
                },
            );
        }
        drop(dbs);
        let mut tables = self.conn.prepare("SELECT def FROM _double_tables")?;
        let defs: Vec<String> = tables
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        drop(tables);
        for def in defs {
            let t: TableDef = serde_json::from_str(&def)?;
            if let Some(db) = self.catalog.dbs.get_mut(&t.db) {
                db.tables.insert(t.name.clone(), Arc::new(t));
            }
        }
        let mut labels = self.conn.prepare(
            "SELECT db, label, table_name, txn_id, state, created_ms, finished_ms FROM _double_labels",
        )?;
        let recs: Vec<LabelRecord> = labels
            .query_map([], |r| {
                let state: String = r.get(4)?;
                Ok(LabelRecord {
                    db: r.get(0)?,
                    label: r.get(1)?,
                    table: r.get(2)?,
                    txn_id: r.get(3)?,
                    state: TxnState::parse(&state).unwrap_or(TxnState::Aborted),
                    created_ms: r.get(5)?,
                    finished_ms: r.get(6)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        drop(labels);
        for mut rec in recs {
            // A load that was running when the double stopped never finished: StarRocks aborts it.
            if matches!(rec.state, TxnState::Prepare | TxnState::Prepared) {
                rec.state = TxnState::Aborted;
                rec.finished_ms = Some(clock::now_ms());
            }
            if rec.state == TxnState::Committed {
                rec.state = TxnState::Visible;
                rec.finished_ms = Some(clock::now_ms());
            }
            self.labels.put(rec);
        }
        let mut jobs = self
            .conn
            .prepare("SELECT job FROM _double_alter_jobs ORDER BY JobId")?;
        let js: Vec<String> = jobs
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        drop(jobs);
        for j in js {
            self.jobs.push(serde_json::from_str(&j)?);
        }
        Ok(())
    }

    /// A fresh id for databases, tables, transactions and jobs (one sequence, like the FE).
    pub fn next_id(&mut self) -> Result<i64, StoreError> {
        let id = self.next_id;
        self.next_id += 1;
        self.conn.execute(
            "INSERT INTO _double_meta (key, value) VALUES ('next_id', ?1)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            params![self.next_id],
        )?;
        Ok(id)
    }

    // ----- schema -----

    pub fn create_database(&mut self, name: &str, if_not_exists: bool) -> Result<(), SqlError> {
        if self.catalog.dbs.contains_key(name) || name.eq_ignore_ascii_case("information_schema") {
            if if_not_exists {
                return Ok(());
            }
            return Err(SqlError::new(
                code::DB_CREATE_EXISTS,
                format!("Can't create database '{name}'; database exists"),
            ));
        }
        let id = self.next_id()?;
        self.conn
            .execute(
                "INSERT INTO _double_databases (name, id) VALUES (?1, ?2)",
                params![name, id],
            )
            .map_err(StoreError::from)?;
        self.catalog.dbs.insert(
            name.to_owned(),
            Database {
                id,
                tables: Default::default(),
            },
        );
        self.refresh_info_schema()?;
        Ok(())
    }

    pub fn drop_database(&mut self, name: &str, if_exists: bool) -> Result<(), SqlError> {
        let Some(db) = self.catalog.dbs.get(name) else {
            if if_exists {
                return Ok(());
            }
            return Err(SqlError::new(
                code::DB_DROP_EXISTS,
                format!("Can't drop database '{name}'; database doesn't exist"),
            ));
        };
        let tables: Vec<String> = db.tables.keys().cloned().collect();
        let tx = self.conn.transaction().map_err(StoreError::from)?;
        for t in &tables {
            tx.execute_batch(&format!(
                "DROP TABLE IF EXISTS {}",
                quote_ident(&storage_name(name, t))
            ))
            .map_err(StoreError::from)?;
        }
        tx.execute("DELETE FROM _double_tables WHERE db = ?1", params![name])
            .map_err(StoreError::from)?;
        tx.execute(
            "DELETE FROM _double_databases WHERE name = ?1",
            params![name],
        )
        .map_err(StoreError::from)?;
        tx.execute("DELETE FROM _double_labels WHERE db = ?1", params![name])
            .map_err(StoreError::from)?;
        tx.commit().map_err(StoreError::from)?;
        self.catalog.dbs.remove(name);
        self.labels.drop_db(name);
        self.refresh_info_schema()?;
        Ok(())
    }

    /// Creates a table whose definition has already been validated.
    pub fn create_table(&mut self, mut def: TableDef, if_not_exists: bool) -> Result<(), SqlError> {
        let Some(db) = self.catalog.dbs.get(&def.db) else {
            return Err(SqlError::new(
                code::BAD_DB,
                format!("Unknown database '{}'", def.db),
            ));
        };
        if db.tables.contains_key(&def.name) {
            if if_not_exists {
                return Ok(());
            }
            return Err(SqlError::new(
                code::TABLE_EXISTS,
                format!("Table '{}' already exists", def.name),
            ));
        }
        def.id = self.next_id()?;
        let json = serde_json::to_string(&def).map_err(StoreError::from)?;
        let tx = self.conn.transaction().map_err(StoreError::from)?;
        tx.execute_batch(&create_table_sql(&def))
            .map_err(StoreError::from)?;
        tx.execute(
            "INSERT INTO _double_tables (db, name, def) VALUES (?1, ?2, ?3)",
            params![def.db, def.name, json],
        )
        .map_err(StoreError::from)?;
        tx.commit().map_err(StoreError::from)?;
        if let Some(db) = self.catalog.dbs.get_mut(&def.db) {
            db.tables.insert(def.name.clone(), Arc::new(def));
        }
        self.refresh_info_schema()?;
        Ok(())
    }

    pub fn drop_table(&mut self, db: &str, table: &str, if_exists: bool) -> Result<(), SqlError> {
        if self.catalog.table(db, table).is_none() {
            if if_exists && self.catalog.db(db).is_some() {
                return Ok(());
            }
            if self.catalog.db(db).is_none() {
                return Err(SqlError::new(
                    code::BAD_DB,
                    format!("Unknown database '{db}'"),
                ));
            }
            return Err(SqlError::new(
                code::BAD_TABLE,
                format!("Unknown table '{table}'"),
            ));
        }
        let tx = self.conn.transaction().map_err(StoreError::from)?;
        tx.execute_batch(&format!(
            "DROP TABLE IF EXISTS {}",
            quote_ident(&storage_name(db, table))
        ))
        .map_err(StoreError::from)?;
        tx.execute(
            "DELETE FROM _double_tables WHERE db = ?1 AND name = ?2",
            params![db, table],
        )
        .map_err(StoreError::from)?;
        tx.commit().map_err(StoreError::from)?;
        if let Some(d) = self.catalog.dbs.get_mut(db) {
            d.tables.remove(table);
        }
        self.refresh_info_schema()?;
        Ok(())
    }

    pub fn truncate_table(&mut self, table: &TableDef) -> Result<(), StoreError> {
        self.conn.execute_batch(&format!(
            "DELETE FROM {}",
            quote_ident(&table.storage_name())
        ))?;
        Ok(())
    }

    /// Rebuilds the attached `information_schema` tables from the catalog.
    pub fn refresh_info_schema(&mut self) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        tx.execute_batch(
            "DELETE FROM information_schema.schemata; DELETE FROM information_schema.tables;
             DELETE FROM information_schema.columns; DELETE FROM information_schema.tables_config;",
        )?;
        {
            let mut schemata = tx.prepare(
                "INSERT INTO information_schema.schemata VALUES ('def', ?1, 'utf8', 'utf8_general_ci', NULL)",
            )?;
            schemata.execute(params!["information_schema"])?;
            for name in self.catalog.dbs.keys() {
                schemata.execute(params![name])?;
            }
            let mut tables = tx.prepare(
                "INSERT INTO information_schema.tables (TABLE_CATALOG, TABLE_SCHEMA, TABLE_NAME, TABLE_TYPE, ENGINE,
                 VERSION, ROW_FORMAT, CREATE_TIME, TABLE_COLLATION, TABLE_COMMENT)
                 VALUES ('def', ?1, ?2, ?3, ?4, NULL, NULL, ?5, 'utf8_general_ci', ?6)",
            )?;
            for sys in ["schemata", "tables", "columns", "tables_config"] {
                tables.execute(params![
                    "information_schema",
                    sys,
                    "SYSTEM VIEW",
                    "MEMORY",
                    None::<String>,
                    ""
                ])?;
            }
            let mut columns = tx.prepare(
                "INSERT INTO information_schema.columns VALUES ('def', ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11,
                 NULL, ?12, ?13, ?14, ?15, '', 'SELECT,INSERT,UPDATE,REFERENCES', ?16, ?17, ?18, NULL, NULL)",
            )?;
            let mut config = tx.prepare(
                "INSERT INTO information_schema.tables_config VALUES (?1, ?2, 'OLAP', ?3, ?4, '', ?5, ?6, ?7, ?8, ?9, ?10)",
            )?;
            for t in self.catalog.tables() {
                tables.execute(params![
                    t.db,
                    t.name,
                    "BASE TABLE",
                    "StarRocks",
                    clock::datetime_string(t.created_at * 1000),
                    t.comment
                ])?;
                for (i, c) in t.columns.iter().enumerate() {
                    let (prec, scale) = c.ty.numeric_precision_scale();
                    let is_string = c.ty.char_max_len().is_some();
                    let key = if c.is_key {
                        match t.keys {
                            KeysType::PrimaryKeys => "PRI",
                            KeysType::DupKeys => "DUP",
                        }
                    } else {
                        ""
                    };
                    columns.execute(params![
                        t.db,
                        t.name,
                        c.name,
                        (i + 1) as i64,
                        c.default_text(),
                        if c.nullable { "YES" } else { "NO" },
                        c.ty.data_type(),
                        c.ty.char_max_len(),
                        c.ty.char_max_len(),
                        prec,
                        scale,
                        is_string.then_some("utf8"),
                        is_string.then_some("utf8_general_ci"),
                        c.ty.column_type(),
                        key,
                        c.comment,
                        c.ty.column_size(),
                        c.ty.decimal_digits(),
                    ])?;
                }
                let keys = crate::catalog::backticked(&t.key_columns);
                let dist = crate::catalog::backticked(&t.distribution);
                config.execute(params![
                    t.db,
                    t.name,
                    t.keys.model(),
                    keys,
                    dist,
                    if t.distribution.is_empty() {
                        "RANDOM"
                    } else {
                        "HASH"
                    },
                    t.buckets.map(i64::from),
                    keys,
                    t.properties_json(),
                    t.id
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    // ----- labels -----

    /// Writes a label to SQLite (the in-memory book is updated by the caller).
    fn persist_label(conn: &Connection, rec: &LabelRecord) -> Result<(), StoreError> {
        conn.prepare_cached(
            "INSERT INTO _double_labels (db, label, table_name, txn_id, state, created_ms, finished_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT(db, label) DO UPDATE SET table_name = excluded.table_name, txn_id = excluded.txn_id,
               state = excluded.state, created_ms = excluded.created_ms, finished_ms = excluded.finished_ms",
        )?
        .execute(params![
            rec.db,
            rec.label,
            rec.table,
            rec.txn_id,
            rec.state.name(),
            rec.created_ms,
            rec.finished_ms
        ])?;
        Ok(())
    }

    /// Begins a transaction for `label`: PREPARE with a new txn id.
    pub fn begin_label(&mut self, db: &str, table: &str, label: &str) -> Result<i64, StoreError> {
        let txn_id = self.next_id()?;
        let rec = LabelRecord {
            db: db.to_owned(),
            label: label.to_owned(),
            table: table.to_owned(),
            txn_id,
            state: TxnState::Prepare,
            created_ms: clock::now_ms(),
            finished_ms: None,
        };
        Self::persist_label(&self.conn, &rec)?;
        self.labels.put(rec);
        Ok(txn_id)
    }

    /// Moves a label to a new state (no data change).
    pub fn set_label_state(
        &mut self,
        db: &str,
        label: &str,
        state: TxnState,
    ) -> Result<(), StoreError> {
        let Some(rec) = self.labels.get_mut(db, label) else {
            return Ok(());
        };
        rec.state = state;
        if state.is_final() {
            rec.finished_ms = Some(clock::now_ms());
        }
        let rec = rec.clone();
        Self::persist_label(&self.conn, &rec)
    }

    /// Applies label retention; evicted labels are forgotten in SQLite too.
    pub fn evict_labels(&mut self, keep_ms: i64, keep_num: usize) -> Result<usize, StoreError> {
        let gone = self.labels.evict(clock::now_ms(), keep_ms, keep_num);
        if !gone.is_empty() {
            let tx = self.conn.transaction()?;
            {
                let mut del =
                    tx.prepare_cached("DELETE FROM _double_labels WHERE db = ?1 AND label = ?2")?;
                for (db, label) in &gone {
                    del.execute(params![db, label])?;
                }
            }
            tx.commit()?;
        }
        Ok(gone.len())
    }

    // ----- rows -----

    /// Applies a load's rows in order, atomically, and moves its label to `final_state` in
    /// the same transaction: either all of it is visible or none of it.
    ///
    /// `table` is the schema the load was planned against. If a schema change finished since
    /// (a column dropped or renamed), the rows are written into the table as it now is:
    /// StarRocks writes by column unique id, so such a load still succeeds ([`project`]).
    pub fn apply(
        &mut self,
        table: &TableDef,
        mode: &ApplyMode,
        rows: &[RowOp],
        label: Option<(&str, TxnState)>,
    ) -> Result<(), StoreError> {
        let now = self.catalog.table(&table.db, &table.name).cloned();
        let projected = now
            .as_deref()
            .filter(|now| !same_columns(table, now))
            .map(|now| (now, project(table, now, mode, rows)));
        let tx = self.conn.transaction()?;
        match &projected {
            Some((now, (mode, rows))) => apply_rows(&tx, now, mode, rows)?,
            None => apply_rows(&tx, table, mode, rows)?,
        }
        if let Some((label, state)) = label {
            if let Some(rec) = self.labels.get_mut(&table.db, label) {
                rec.state = state;
                if state.is_final() {
                    rec.finished_ms = Some(clock::now_ms());
                }
                Self::persist_label(&tx, rec)?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Runs a read query.
    pub fn query(&self, sql: &str) -> Result<ResultSet, rusqlite::Error> {
        let mut stmt = self.conn.prepare(sql)?;
        let columns: Vec<String> = stmt.column_names().iter().map(|s| s.to_string()).collect();
        let width = columns.len();
        let mut rows = Vec::new();
        let mut q = stmt.query([])?;
        while let Some(r) = q.next()? {
            let mut row = Vec::with_capacity(width);
            for i in 0..width {
                row.push(Cell::from_sql(r.get_ref(i)?));
            }
            rows.push(row);
        }
        Ok(ResultSet { columns, rows })
    }

    /// Runs a statement that changes rows; returns how many.
    pub fn execute(&self, sql: &str) -> Result<usize, rusqlite::Error> {
        self.conn.execute(sql, [])
    }

    /// Counts the rows of a table (admin stats and tests).
    pub fn count_rows(&self, table: &TableDef) -> Result<i64, StoreError> {
        Ok(self.conn.query_row(
            &format!(
                "SELECT count(*) FROM {}",
                quote_ident(&table.storage_name())
            ),
            [],
            |r| r.get(0),
        )?)
    }

    // ----- schema change jobs -----

    /// Whether a schema change is running on the table ("state is not NORMAL").
    pub fn has_running_job(&self, db: &str, table: &str) -> bool {
        self.jobs
            .iter()
            .any(|j| j.db == db && j.table == table && !j.is_done())
    }

    /// Cancels the table's running job, which then shows CANCELLED with `user cancelled`;
    /// whether there was one.
    pub fn cancel_running_job(&mut self, db: &str, table: &str) -> Result<bool, StoreError> {
        let now = clock::now_ms();
        let Some(job) = self
            .jobs
            .iter_mut()
            .find(|j| j.db == db && j.table == table && !j.is_done())
        else {
            return Ok(false);
        };
        job.final_state = Some("CANCELLED".into());
        job.msg = "user cancelled".into();
        job.finished_ms = Some(now);
        let job = job.clone();
        self.persist_job(&job)?;
        Ok(true)
    }

    /// Records a new ADD or MODIFY COLUMN job; it finishes `duration` later in
    /// [`Store::finish_jobs`].
    pub fn add_job(
        &mut self,
        table: &TableDef,
        kind: JobKind,
        columns: Vec<ColumnChange>,
    ) -> Result<i64, StoreError> {
        let job = self.new_job(table, kind, columns, default_job_timeout_s())?;
        let job_id = job.job_id;
        self.persist_job(&job)?;
        self.jobs.push(job);
        Ok(job_id)
    }

    /// A fast-schema-evolution ADD or MODIFY COLUMN: the change is made now, and the job is
    /// recorded already FINISHED, as StarRocks' metadata-only path does. A failure is the
    /// statement's error and records nothing.
    pub fn change_columns_now(
        &mut self,
        table: &TableDef,
        kind: JobKind,
        columns: Vec<ColumnChange>,
    ) -> Result<Result<i64, String>, StoreError> {
        let mut job = self.new_job(table, kind, columns, 1000)?;
        if let Err(msg) = self.apply_job(&job) {
            return Ok(Err(msg));
        }
        job.final_state = Some("FINISHED".into());
        job.finished_ms = Some(job.created_ms);
        let job_id = job.job_id;
        self.persist_job(&job)?;
        self.jobs.push(job);
        self.refresh_info_schema()?;
        Ok(Ok(job_id))
    }

    fn new_job(
        &mut self,
        table: &TableDef,
        kind: JobKind,
        columns: Vec<ColumnChange>,
        timeout_s: i64,
    ) -> Result<AlterJob, StoreError> {
        let job_id = self.next_id()?;
        let txn_id = self.next_id()?;
        Ok(AlterJob {
            job_id,
            db: table.db.clone(),
            table: table.name.clone(),
            table_id: table.id,
            txn_id,
            created_ms: clock::now_ms(),
            finished_ms: None,
            final_state: None,
            msg: String::new(),
            kind,
            columns,
            timeout_s,
        })
    }

    fn persist_job(&self, job: &AlterJob) -> Result<(), StoreError> {
        let now = clock::now_ms();
        self.conn.execute(
            "INSERT INTO _double_alter_jobs (JobId, DbName, TableName, CreateTime, FinishTime, IndexName, IndexId,
               OriginIndexId, SchemaVersion, TransactionId, State, Msg, Progress, Timeout, job)
             VALUES (?1, ?2, ?3, ?4, ?5, ?3, ?6, ?7, ?8, ?9, ?10, ?11, NULL, ?13, ?12)
             ON CONFLICT(JobId) DO UPDATE SET FinishTime = excluded.FinishTime, State = excluded.State,
               Msg = excluded.Msg, job = excluded.job",
            params![
                job.job_id,
                job.db,
                job.table,
                clock::datetime_string(job.created_ms),
                job.finished_ms.map(clock::datetime_string),
                job.job_id + 1,
                job.table_id + 1,
                format!("1:{}", job.job_id),
                job.txn_id,
                job.state_at(now, self.alter_duration_ms),
                job.msg,
                serde_json::to_string(job)?,
                job.timeout_s
            ],
        )?;
        Ok(())
    }

    /// Finishes every job older than `alter_duration_ms`: added columns become part of the
    /// table (existing rows get the default), modified columns take their new definition
    /// (existing rows are converted). Also refreshes the states SHOW ALTER reads.
    pub fn finish_jobs(&mut self) -> Result<bool, StoreError> {
        let now = clock::now_ms();
        let duration_ms = self.alter_duration_ms;
        let mut changed = false;
        for i in 0..self.jobs.len() {
            if self.jobs[i].is_done() {
                continue;
            }
            if now - self.jobs[i].created_ms >= duration_ms {
                let job = self.jobs[i].clone();
                let outcome = self.apply_job(&job);
                let j = &mut self.jobs[i];
                match outcome {
                    Ok(()) => j.final_state = Some("FINISHED".into()),
                    Err(msg) => {
                        j.final_state = Some("CANCELLED".into());
                        j.msg = msg;
                    }
                }
                j.finished_ms = Some(now);
                changed = true;
            }
            let job = self.jobs[i].clone();
            self.persist_job(&job)?;
        }
        if changed {
            self.refresh_info_schema()?;
        }
        Ok(changed)
    }

    /// Applies a finished job to the table. Errors become the job's `Msg`.
    fn apply_job(&mut self, job: &AlterJob) -> Result<(), String> {
        let Some(current) = self.catalog.table(&job.db, &job.table).cloned() else {
            return Err(format!("table {} was dropped", job.table));
        };
        match job.kind {
            JobKind::ModifyColumns => return self.apply_modify(&current, &job.columns),
            JobKind::DropColumns => {
                let names: Vec<String> = job.columns.iter().map(|(c, _)| c.name.clone()).collect();
                return self.apply_drop(&current, &names);
            }
            JobKind::AddColumns => {}
        }
        let mut def = (*current).clone();
        for (col, pos) in &job.columns {
            if def.column(&col.name).is_some() {
                return Err(format!(
                    "Can not add column which already exists in base table: {}",
                    col.name
                ));
            }
            let at = match pos {
                None => def.columns.len(),
                Some(Position::First) => def.key_columns.len(),
                Some(Position::After(name)) => match def.column(name) {
                    Some((i, _)) => i + 1,
                    None => return Err(format!("Column[{name}] does not exist")),
                },
            };
            def.columns.insert(at, col.clone());
        }
        let reorder = job.columns.iter().any(|(_, p)| p.is_some());
        let json = serde_json::to_string(&def).map_err(|e| e.to_string())?;
        let run = |conn: &mut Connection| -> Result<(), rusqlite::Error> {
            let tx = conn.transaction()?;
            let name = quote_ident(&def.storage_name());
            if reorder {
                // SQLite cannot place a column; rebuild the table in the new order.
                let tmp = quote_ident(&format!("{}.__rebuild", def.storage_name()));
                let mut staged = def.clone();
                staged.name = format!("{}.__rebuild", def.name);
                tx.execute_batch(&create_table_sql(&staged))?;
                let cols: Vec<String> = def
                    .columns
                    .iter()
                    .map(|c| {
                        if current.column(&c.name).is_some() {
                            quote_ident(&c.name)
                        } else {
                            sql_literal(&c.default_cell())
                        }
                    })
                    .collect();
                tx.execute_batch(&format!(
                    "INSERT INTO {tmp} SELECT {} FROM {name}; DROP TABLE {name}; ALTER TABLE {tmp} RENAME TO {name};",
                    cols.join(", ")
                ))?;
            } else {
                for (col, _) in &job.columns {
                    let default = match col.default_cell() {
                        Cell::Null => String::new(),
                        c => format!(" DEFAULT {}", sql_literal(&c)),
                    };
                    tx.execute_batch(&format!(
                        "ALTER TABLE {name} ADD COLUMN {} {}{default}",
                        quote_ident(&col.name),
                        col.ty.sqlite_decl()
                    ))?;
                }
            }
            tx.execute(
                "UPDATE _double_tables SET def = ?1 WHERE db = ?2 AND name = ?3",
                params![json, def.db, def.name],
            )?;
            tx.commit()
        };
        run(&mut self.conn).map_err(|e| e.to_string())?;
        if let Some(d) = self.catalog.dbs.get_mut(&def.db) {
            d.tables.insert(def.name.clone(), Arc::new(def));
        }
        Ok(())
    }

    /// Rewrites the table under its modified columns, as a StarRocks schema-change job
    /// rewrites every tablet into a shadow index: SQLite gets a new table in the new column
    /// order with the new column types' affinities, and every stored row is copied over
    /// with the modified columns converted to their new types. Widening keeps each value as
    /// it is; a value the new type cannot hold fails the job.
    fn apply_modify(
        &mut self,
        current: &Arc<TableDef>,
        changes: &[ColumnChange],
    ) -> Result<(), String> {
        let def = crate::catalog::modify_columns(current, changes).map_err(|e| match e {
            crate::catalog::ModifyError::Ddl(m) => m,
            crate::catalog::ModifyError::Unsupported(m) => m.to_owned(),
        })?;
        let json = serde_json::to_string(&def).map_err(|e| e.to_string())?;
        // For every new column: where it was in the old table and what type it had.
        let sources: Vec<(usize, SrType)> = def
            .columns
            .iter()
            .map(|c| {
                current
                    .column(&c.name)
                    .map(|(i, old)| (i, old.ty.clone()))
                    .ok_or_else(|| format!("Column[{}] does not exists", c.name))
            })
            .collect::<Result<_, _>>()?;
        let name = quote_ident(&def.storage_name());
        let tmp_name = format!("{}.__rebuild", def.name);
        let tmp = quote_ident(&storage_name(&def.db, &tmp_name));
        let old_names: Vec<String> = current
            .columns
            .iter()
            .map(|c| quote_ident(&c.name))
            .collect();
        let new_names: Vec<String> = def.columns.iter().map(|c| quote_ident(&c.name)).collect();
        let placeholders: Vec<String> = (1..=def.columns.len()).map(|i| format!("?{i}")).collect();
        let run = |conn: &mut Connection| -> Result<Result<(), String>, rusqlite::Error> {
            let tx = conn.transaction()?;
            let mut staged = def.clone();
            staged.name = tmp_name.clone();
            tx.execute_batch(&create_table_sql(&staged))?;
            {
                let mut read =
                    tx.prepare(&format!("SELECT {} FROM {name}", old_names.join(", ")))?;
                let mut write = tx.prepare(&format!(
                    "INSERT INTO {tmp} ({}) VALUES ({})",
                    new_names.join(", "),
                    placeholders.join(", ")
                ))?;
                let mut rows = read.query([])?;
                while let Some(r) = rows.next()? {
                    let mut out = Vec::with_capacity(sources.len());
                    for ((from, old_ty), col) in sources.iter().zip(&def.columns) {
                        let cell = Cell::from_sql(r.get_ref(*from)?);
                        match col.ty.convert_stored(old_ty, &cell) {
                            Ok(Cell::Null) if !col.nullable => {
                                return Ok(Err(format!(
                                    "column {} is NOT NULL but a converted value is NULL",
                                    col.name
                                )));
                            }
                            Ok(c) => out.push(c),
                            Err(e) => {
                                return Ok(Err(format!(
                                    "failed to convert column {} from {} to {}: {e}",
                                    col.name,
                                    old_ty.fe_name(),
                                    col.ty.fe_name()
                                )));
                            }
                        }
                    }
                    write.execute(rusqlite::params_from_iter(out.iter()))?;
                }
            }
            tx.execute_batch(&format!(
                "DROP TABLE {name}; ALTER TABLE {tmp} RENAME TO {name};"
            ))?;
            tx.execute(
                "UPDATE _double_tables SET def = ?1 WHERE db = ?2 AND name = ?3",
                params![json, def.db, def.name],
            )?;
            tx.commit()?;
            Ok(Ok(()))
        };
        run(&mut self.conn).map_err(|e| e.to_string())??;
        if let Some(d) = self.catalog.dbs.get_mut(&def.db) {
            d.tables.insert(def.name.clone(), Arc::new(def));
        }
        Ok(())
    }

    /// Rewrites the table without its dropped columns: a new SQLite table in the new
    /// column order takes every stored row's remaining values, so the dropped values are
    /// gone, as after StarRocks' schema change (or, with fast schema evolution, as far as
    /// any reader can tell).
    fn apply_drop(&mut self, current: &Arc<TableDef>, names: &[String]) -> Result<(), String> {
        let def = crate::catalog::drop_columns(current, names).map_err(|e| match e {
            crate::catalog::ModifyError::Ddl(m) => m,
            crate::catalog::ModifyError::Unsupported(m) => m.to_owned(),
        })?;
        let json = serde_json::to_string(&def).map_err(|e| e.to_string())?;
        let name = quote_ident(&def.storage_name());
        let tmp_name = format!("{}.__rebuild", def.name);
        let tmp = quote_ident(&storage_name(&def.db, &tmp_name));
        let kept: Vec<String> = def.columns.iter().map(|c| quote_ident(&c.name)).collect();
        let kept = kept.join(", ");
        let run = |conn: &mut Connection| -> Result<(), rusqlite::Error> {
            let tx = conn.transaction()?;
            let mut staged = def.clone();
            staged.name = tmp_name.clone();
            tx.execute_batch(&create_table_sql(&staged))?;
            tx.execute_batch(&format!(
                "INSERT INTO {tmp} ({kept}) SELECT {kept} FROM {name}; DROP TABLE {name}; \
                 ALTER TABLE {tmp} RENAME TO {name};"
            ))?;
            tx.execute(
                "UPDATE _double_tables SET def = ?1 WHERE db = ?2 AND name = ?3",
                params![json, def.db, def.name],
            )?;
            tx.commit()
        };
        run(&mut self.conn).map_err(|e| e.to_string())?;
        if let Some(d) = self.catalog.dbs.get_mut(&def.db) {
            d.tables.insert(def.name.clone(), Arc::new(def));
        }
        Ok(())
    }

    /// Renames a column at once, as StarRocks' metadata-only RENAME COLUMN does: the stored
    /// rows keep their values under the new name, and no job is recorded. A refusal is the
    /// statement's error and changes nothing.
    pub fn rename_column(
        &mut self,
        current: &TableDef,
        from: &str,
        to: &str,
    ) -> Result<Result<(), crate::catalog::RenameError>, StoreError> {
        let def = match crate::catalog::rename_column(current, from, to) {
            Ok(d) => d,
            Err(e) => return Ok(Err(e)),
        };
        let stored = current
            .column(from)
            .map(|(_, c)| c.name.clone())
            .unwrap_or_else(|| from.to_owned());
        let json = serde_json::to_string(&def)?;
        let tx = self.conn.transaction()?;
        tx.execute_batch(&format!(
            "ALTER TABLE {} RENAME COLUMN {} TO {}",
            quote_ident(&def.storage_name()),
            quote_ident(&stored),
            quote_ident(to)
        ))?;
        tx.execute(
            "UPDATE _double_tables SET def = ?1 WHERE db = ?2 AND name = ?3",
            params![json, def.db, def.name],
        )?;
        tx.commit()?;
        if let Some(d) = self.catalog.dbs.get_mut(&def.db) {
            d.tables.insert(def.name.clone(), Arc::new(def));
        }
        self.refresh_info_schema()?;
        Ok(Ok(()))
    }
}

/// A cell as a SQLite literal (for DEFAULT clauses and table rebuilds).
fn sql_literal(c: &Cell) -> String {
    match c {
        Cell::Null => "NULL".into(),
        Cell::Int(i) => i.to_string(),
        Cell::Real(f) => format!("{f:?}"),
        Cell::Text(s) => format!("'{}'", s.replace('\'', "''")),
        Cell::Blob(b) => format!(
            "X'{}'",
            b.iter().map(|x| format!("{x:02x}")).collect::<String>()
        ),
    }
}

/// `CREATE TABLE` for a table's SQLite storage. Primary-key tables are WITHOUT ROWID tables
/// keyed like StarRocks; duplicate-key tables keep insertion order in the rowid.
fn create_table_sql(def: &TableDef) -> String {
    let cols: Vec<String> = def
        .columns
        .iter()
        .map(|c| format!("{} {}", quote_ident(&c.name), c.ty.sqlite_decl()))
        .collect();
    let mut sql = format!(
        "CREATE TABLE {} ({}",
        quote_ident(&def.storage_name()),
        cols.join(", ")
    );
    if def.is_primary() {
        let keys: Vec<String> = def.key_columns.iter().map(|k| quote_ident(k)).collect();
        sql.push_str(&format!(
            ", PRIMARY KEY ({})) WITHOUT ROWID",
            keys.join(", ")
        ));
    } else {
        sql.push(')');
    }
    sql
}

/// Whether two schemas of a table have the same columns, by id and name, in the same order.
fn same_columns(a: &TableDef, b: &TableDef) -> bool {
    a.columns.len() == b.columns.len()
        && a.columns
            .iter()
            .zip(&b.columns)
            .all(|(x, y)| x.name == y.name && x.id() == y.id())
}

/// A load planned against `planned` rewritten for the table as it is `now`: columns are
/// matched by id (the name they were created under), so a renamed column's values go under
/// its new name, a dropped column's are discarded, and a column added since gets its
/// default (or keeps the stored value, in a partial update, which does not list it).
fn project(
    planned: &TableDef,
    now: &TableDef,
    mode: &ApplyMode,
    rows: &[RowOp],
) -> (ApplyMode, Vec<RowOp>) {
    let source: Vec<Option<usize>> = now
        .columns
        .iter()
        .map(|c| {
            planned
                .columns
                .iter()
                .position(|p| p.id().eq_ignore_ascii_case(c.id()))
        })
        .collect();
    let moved = |old: usize| source.iter().position(|s| *s == Some(old));
    let mode = ApplyMode {
        partial: mode
            .partial
            .as_ref()
            .map(|cols| cols.iter().filter_map(|&i| moved(i)).collect()),
        merge: mode.merge.and_then(moved),
    };
    let rows = rows
        .iter()
        .map(|r| RowOp {
            op: r.op,
            values: source
                .iter()
                .zip(&now.columns)
                .map(|(s, c)| match s {
                    Some(i) => r.values[*i].clone(),
                    None => c.fill_cell(),
                })
                .collect(),
        })
        .collect();
    (mode, rows)
}

fn apply_rows(
    tx: &rusqlite::Transaction<'_>,
    table: &TableDef,
    mode: &ApplyMode,
    rows: &[RowOp],
) -> Result<(), StoreError> {
    let name = quote_ident(&table.storage_name());
    let width = table.columns.len();
    let placeholders: Vec<String> = (1..=width).map(|i| format!("?{i}")).collect();
    let verb = if table.is_primary() {
        "INSERT OR REPLACE"
    } else {
        "INSERT"
    };
    // Columns are named: a schema change may have finished since this load was planned, and
    // a column added meanwhile gets its default, as in StarRocks.
    let names: Vec<String> = table.columns.iter().map(|c| quote_ident(&c.name)).collect();
    let names = names.join(", ");
    let mut insert = tx.prepare_cached(&format!(
        "{verb} INTO {name} ({names}) VALUES ({})",
        placeholders.join(", ")
    ))?;
    if !table.is_primary() {
        for row in rows.iter().filter(|r| r.op == Op::Upsert) {
            insert.execute(rusqlite::params_from_iter(row.values.iter()))?;
        }
        return Ok(());
    }
    let keys = table.key_indexes();
    let key_where: Vec<String> = table
        .key_columns
        .iter()
        .enumerate()
        .map(|(i, k)| format!("{} = ?{}", quote_ident(k), i + 1))
        .collect();
    let key_where = key_where.join(" AND ");
    let mut delete = tx.prepare_cached(&format!("DELETE FROM {name} WHERE {key_where}"))?;
    let needs_current = mode.partial.is_some() || mode.merge.is_some();
    let mut select = if needs_current {
        Some(tx.prepare_cached(&format!("SELECT {names} FROM {name} WHERE {key_where}"))?)
    } else {
        None
    };
    for row in rows {
        let key: Vec<&Cell> = keys.iter().map(|&i| &row.values[i]).collect();
        match row.op {
            Op::Delete => {
                delete.execute(rusqlite::params_from_iter(key.iter()))?;
            }
            Op::Upsert => {
                let Some(select) = select.as_mut() else {
                    insert.execute(rusqlite::params_from_iter(row.values.iter()))?;
                    continue;
                };
                let current: Option<Vec<Cell>> = select
                    .query_row(rusqlite::params_from_iter(key.iter()), |r| {
                        (0..width)
                            .map(|i| r.get_ref(i).map(Cell::from_sql))
                            .collect()
                    })
                    .optional()?;
                let merged = match (&current, &mode.partial) {
                    (Some(cur), Some(cols)) => {
                        let mut m = cur.clone();
                        for &i in cols {
                            m[i] = row.values[i].clone();
                        }
                        m
                    }
                    _ => row.values.clone(),
                };
                if let (Some(cur), Some(mi)) = (&current, mode.merge) {
                    let ty = &table.columns[mi].ty;
                    if ty.compare(&merged[mi], &cur[mi]) == std::cmp::Ordering::Less {
                        continue;
                    }
                }
                insert.execute(rusqlite::params_from_iter(merged.iter()))?;
            }
        }
    }
    Ok(())
}
