//! Executes MySQL-protocol statements against the catalog and SQLite.
//!
//! Why rewrite instead of interpret: tests and people need real SQL over the stored rows
//! (filters, ORDER BY, aggregates, joins). SQLite already has that; the double only has to
//! map StarRocks names onto its storage and a few MySQL-isms onto SQLite:
//!
//! ```text
//! FROM db.t / FROM t (after USE)  →  FROM "db.t" AS "t"
//! information_schema.columns      →  the attached, catalog-built information_schema
//! @@version_comment, current_version(), database()  →  literals
//! SELECT expr                     →  SELECT expr AS "expr"   (MySQL column naming)
//! ```
//!
//! DDL, SHOW and INSERT are executed here directly against the catalog and store.

use crate::catalog::{
    drop_columns, drop_is_metadata_only, modify_columns, modify_is_metadata_only, validate_table,
    ColumnChange, ColumnDef, KeysType, ModifyError, TableDef,
};
use crate::clock;
use crate::double::Double;
use crate::labels::TxnState;
use crate::sql::{self, code, SqlError, Statement, Tok, Token};
use crate::store::{quote_ident, ApplyMode, JobKind, ResultSet, Store};
use crate::types::Cell;

/// The MySQL version string StarRocks 3.x reports for `@@version` / `version()`.
const MYSQL_VERSION: &str = "8.0.33";

/// One MySQL connection's state.
#[derive(Debug, Clone)]
pub struct Session {
    pub db: Option<String>,
    pub user: String,
    pub connection_id: u32,
}

/// What a statement produced.
#[derive(Debug)]
pub enum Outcome {
    Rows(ResultSet),
    Done { affected: u64 },
}

fn done() -> Outcome {
    Outcome::Done { affected: 0 }
}

fn rows(columns: &[&str], rows: Vec<Vec<Cell>>) -> Outcome {
    Outcome::Rows(ResultSet {
        columns: columns.iter().map(|c| c.to_string()).collect(),
        rows,
    })
}

fn text(s: impl Into<String>) -> Cell {
    Cell::Text(s.into())
}

fn opt_text(s: Option<String>) -> Cell {
    s.map(Cell::Text).unwrap_or(Cell::Null)
}

/// A MySQL `LIKE` pattern match, case-insensitive (`%`, `_`, `\` escapes).
pub fn like(pattern: &str, value: &str) -> bool {
    fn go(p: &[char], v: &[char]) -> bool {
        match p.split_first() {
            None => v.is_empty(),
            Some(('%', rest)) => (0..=v.len()).any(|i| go(rest, &v[i..])),
            Some(('_', rest)) => !v.is_empty() && go(rest, &v[1..]),
            Some(('\\', rest)) if !rest.is_empty() => {
                !v.is_empty() && v[0].eq_ignore_ascii_case(&rest[0]) && go(&rest[1..], &v[1..])
            }
            Some((c, rest)) => !v.is_empty() && v[0].eq_ignore_ascii_case(c) && go(rest, &v[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let v: Vec<char> = value.chars().collect();
    go(&p, &v)
}

/// The system variables a client may read: the names StarRocks 3.x declares in
/// `qe/SessionVariable.java` and `qe/GlobalVariable.java` (plus `tx_read_only` /
/// `transaction_read_only`, StarRocks PR #37249) that MySQL clients and drivers ask for.
/// Anything else, `socket` included, is an unknown variable, as in StarRocks.
const VARIABLE_NAMES: &[&str] = &[
    "auto_increment_increment",
    "autocommit",
    "character_set_client",
    "character_set_connection",
    "character_set_database",
    "character_set_results",
    "character_set_server",
    "collation_connection",
    "collation_database",
    "collation_server",
    "init_connect",
    "interactive_timeout",
    "language",
    "license",
    "lower_case_table_names",
    "max_allowed_packet",
    "net_buffer_length",
    "net_read_timeout",
    "net_write_timeout",
    "performance_schema",
    "query_cache_size",
    "query_cache_type",
    "query_timeout",
    "sql_mode",
    "sql_safe_updates",
    "sql_select_limit",
    "system_time_zone",
    "time_zone",
    "transaction_isolation",
    "transaction_read_only",
    "tx_isolation",
    "tx_read_only",
    "version",
    "version_comment",
    "wait_timeout",
];

/// The value of a system variable, or None when StarRocks has no such variable.
fn system_variable(double: &Double, name: &str) -> Option<Cell> {
    let n = name.to_ascii_lowercase();
    Some(match n.as_str() {
        "version" => text(MYSQL_VERSION),
        "version_comment" => text(format!("StarRocks version {}", double.config.sr_version)),
        // SessionVariable: `maxAllowedPacket = 33554432; // 32MB`.
        "max_allowed_packet" => Cell::Int(33_554_432),
        "wait_timeout" => Cell::Int(28_800),
        "interactive_timeout" => Cell::Int(3600),
        "net_write_timeout" | "net_read_timeout" => Cell::Int(60),
        "net_buffer_length" => Cell::Int(16_384),
        "query_timeout" => Cell::Int(300),
        "sql_select_limit" => Cell::Int(9_223_372_036_854_775_807),
        "autocommit" => Cell::Int(1),
        "sql_safe_updates" => Cell::Int(0),
        "sql_mode" => text("ONLY_FULL_GROUP_BY"),
        "time_zone" | "system_time_zone" => text("UTC"),
        "tx_isolation" | "transaction_isolation" => text("REPEATABLE-READ"),
        "tx_read_only" | "transaction_read_only" => Cell::Int(0),
        "character_set_client"
        | "character_set_connection"
        | "character_set_results"
        | "character_set_server"
        | "character_set_database" => text("utf8"),
        "collation_connection" | "collation_server" | "collation_database" => {
            text("utf8_general_ci")
        }
        "lower_case_table_names" => Cell::Int(0),
        "init_connect" => text(""),
        "license" => text("Apache License 2.0"),
        "performance_schema" => Cell::Int(0),
        "query_cache_size" => Cell::Int(1_048_576),
        "query_cache_type" => Cell::Int(0),
        "auto_increment_increment" => Cell::Int(1),
        "language" => text("/starrocks/share/english/"),
        _ => return None,
    })
}

/// StarRocks' answer to `SELECT @@name` for a name it does not know
/// (`VariableMgr.fillValue`: `ERR_UNKNOWN_SYSTEM_VARIABLE` with the three most similar names,
/// raised as a semantic error, so it reaches the client as error 1064 "Getting analyzing
/// error"). The similar names are drawn from the double's own variable list.
pub fn unknown_variable(name: &str) -> SqlError {
    let mut ranked: Vec<(&str, f64)> = VARIABLE_NAMES
        .iter()
        .map(|v| {
            (
                *v,
                jaro_winkler(&v.to_ascii_uppercase(), &name.to_ascii_uppercase()),
            )
        })
        .collect();
    ranked.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap_or(std::cmp::Ordering::Equal));
    let similar: Vec<String> = ranked
        .iter()
        .take(3)
        .map(|(v, _)| format!("'{v}'"))
        .collect();
    SqlError::analysis(format!(
        "Unknown system variable '{name}', the most similar variables are {{{}}}",
        similar.join(", ")
    ))
}

/// Jaro-Winkler similarity (1.0 = equal), for ranking "most similar" variable names.
fn jaro_winkler(a: &str, b: &str) -> f64 {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    if a.is_empty() && b.is_empty() {
        return 1.0;
    }
    if a.is_empty() || b.is_empty() {
        return 0.0;
    }
    let window = (a.len().max(b.len()) / 2).saturating_sub(1);
    let mut a_match = vec![false; a.len()];
    let mut b_match = vec![false; b.len()];
    let mut matches = 0usize;
    for (i, ca) in a.iter().enumerate() {
        let lo = i.saturating_sub(window);
        let hi = (i + window + 1).min(b.len());
        for j in lo..hi {
            if !b_match[j] && b[j] == *ca {
                a_match[i] = true;
                b_match[j] = true;
                matches += 1;
                break;
            }
        }
    }
    if matches == 0 {
        return 0.0;
    }
    let a_seq = a.iter().zip(&a_match).filter(|(_, m)| **m).map(|(c, _)| c);
    let b_seq = b.iter().zip(&b_match).filter(|(_, m)| **m).map(|(c, _)| c);
    let transpositions = a_seq.zip(b_seq).filter(|(x, y)| x != y).count() / 2;
    let m = matches as f64;
    let jaro = (m / a.len() as f64 + m / b.len() as f64 + (m - transpositions as f64) / m) / 3.0;
    let prefix = a.iter().zip(&b).take(4).take_while(|(x, y)| x == y).count();
    jaro + prefix as f64 * 0.1 * (1.0 - jaro)
}

fn resolve_db(session: &Session, explicit: Option<String>) -> Result<String, SqlError> {
    explicit
        .or_else(|| session.db.clone())
        .ok_or_else(|| SqlError::new(code::NO_DB, "No database selected"))
}

fn table_of(store: &Store, db: &str, table: &str) -> Result<std::sync::Arc<TableDef>, SqlError> {
    if store.catalog.db(db).is_none() {
        return Err(SqlError::new(
            code::BAD_DB,
            format!("Unknown database '{db}'"),
        ));
    }
    store
        .catalog
        .table(db, table)
        .cloned()
        .ok_or_else(|| SqlError::analysis(format!("Unknown table '{db}.{table}'")))
}

/// Maps a SQLite error onto a StarRocks-style analysis error.
fn sqlite_error(e: rusqlite::Error) -> SqlError {
    let msg = e.to_string();
    if let Some(t) = msg.strip_prefix("no such table: ") {
        return SqlError::analysis(format!("Unknown table '{t}'"));
    }
    if let Some(c) = msg.strip_prefix("no such column: ") {
        return SqlError::analysis(format!("Column '{c}' cannot be resolved"));
    }
    SqlError::analysis(msg)
}

/// Runs one statement.
pub fn execute(
    double: &Double,
    session: &mut Session,
    sql_text: &str,
) -> Result<Outcome, SqlError> {
    let stmt = sql::parse(sql_text)?;
    match stmt {
        Statement::NoOp => Ok(done()),
        Statement::Use(db) => {
            if !db.eq_ignore_ascii_case("information_schema")
                && double.store().catalog.db(&db).is_none()
            {
                return Err(SqlError::new(
                    code::BAD_DB,
                    format!("Unknown database '{db}'"),
                ));
            }
            session.db = Some(db);
            Ok(done())
        }
        Statement::Query(toks) => {
            let mut store = double.store();
            if store.jobs.iter().any(|j| !j.is_done()) {
                store.finish_jobs()?;
            }
            let sqlite = rewrite_select(double, session, &store, sql_text, toks)?;
            store
                .query(&sqlite)
                .map(Outcome::Rows)
                .map_err(sqlite_error)
        }
        Statement::ShowDatabases { like: pattern } => {
            let store = double.store();
            let mut names: Vec<String> = vec!["information_schema".into()];
            names.extend(store.catalog.dbs.keys().cloned());
            names.sort();
            let out = names
                .into_iter()
                .filter(|n| pattern.as_deref().is_none_or(|p| like(p, n)))
                .map(|n| vec![text(n)])
                .collect();
            Ok(rows(&["Database"], out))
        }
        Statement::ShowTables {
            db,
            full,
            like: pattern,
        } => {
            let db = resolve_db(session, db)?;
            let store = double.store();
            let names: Vec<String> = if db.eq_ignore_ascii_case("information_schema") {
                ["columns", "schemata", "tables", "tables_config"]
                    .iter()
                    .map(|s| s.to_string())
                    .collect()
            } else {
                let Some(d) = store.catalog.db(&db) else {
                    return Err(SqlError::new(
                        code::BAD_DB,
                        format!("Unknown database '{db}'"),
                    ));
                };
                d.tables.keys().cloned().collect()
            };
            let col = format!("Tables_in_{db}");
            let out = names
                .into_iter()
                .filter(|n| pattern.as_deref().is_none_or(|p| like(p, n)))
                .map(|n| {
                    if full {
                        vec![text(n), text("BASE TABLE")]
                    } else {
                        vec![text(n)]
                    }
                })
                .collect();
            if full {
                Ok(rows(&[col.as_str(), "Table_type"], out))
            } else {
                Ok(rows(&[col.as_str()], out))
            }
        }
        Statement::ShowCreateTable { db, table } => {
            let db = resolve_db(session, db)?;
            let store = double.store();
            let t = table_of(&store, &db, &table)?;
            Ok(rows(
                &["Table", "Create Table"],
                vec![vec![text(t.name.clone()), text(t.create_statement())]],
            ))
        }
        Statement::Describe { db, table } => {
            let db = resolve_db(session, db)?;
            let mut store = double.store();
            if store.jobs.iter().any(|j| !j.is_done()) {
                store.finish_jobs()?;
            }
            let t = table_of(&store, &db, &table)?;
            let out = t
                .columns
                .iter()
                .map(|c| {
                    vec![
                        text(c.name.clone()),
                        text(c.ty.sql()),
                        text(if c.nullable { "YES" } else { "NO" }),
                        text(if c.is_key { "true" } else { "false" }),
                        opt_text(c.default_text()),
                        text(""),
                    ]
                })
                .collect();
            Ok(rows(
                &["Field", "Type", "Null", "Key", "Default", "Extra"],
                out,
            ))
        }
        Statement::ShowAlterColumn { db, tail } => {
            let db = resolve_db(session, db)?;
            let mut store = double.store();
            store.finish_jobs()?;
            let sqlite = show_alter_sql(double, session, &db, sql_text, tail)?;
            store
                .query(&sqlite)
                .map(Outcome::Rows)
                .map_err(sqlite_error)
        }
        Statement::ShowVariables { like: pattern } => {
            let out = VARIABLE_NAMES
                .iter()
                .filter(|n| pattern.as_deref().is_none_or(|p| like(p, n)))
                .filter_map(|n| {
                    system_variable(double, n).map(|v| {
                        let v = match v {
                            Cell::Int(i) => i.to_string(),
                            Cell::Text(s) => s,
                            _ => String::new(),
                        };
                        vec![text(*n), text(v)]
                    })
                })
                .collect();
            Ok(rows(&["Variable_name", "Value"], out))
        }
        Statement::ShowBackends => Ok(show_nodes(double, false)),
        Statement::ShowComputeNodes => Ok(show_nodes(double, true)),
        Statement::AdminShowFrontendConfig { like: pattern } => {
            let out = frontend_config(double)
                .into_iter()
                .filter(|(k, ..)| pattern.as_deref().is_none_or(|p| like(p, k)))
                .map(|(k, v, ty, mutable)| {
                    vec![
                        text(k),
                        text("[]"),
                        text(v),
                        text(ty),
                        text(mutable.to_string()),
                        text(""),
                    ]
                })
                .collect();
            Ok(rows(
                &["Key", "AliasNames", "Value", "Type", "IsMutable", "Comment"],
                out,
            ))
        }
        Statement::ShowEmpty => Ok(rows(&["Level", "Code", "Message"], Vec::new())),
        Statement::CreateDatabase {
            name,
            if_not_exists,
        } => {
            double.store().create_database(&name, if_not_exists)?;
            Ok(done())
        }
        Statement::DropDatabase { name, if_exists } => {
            double.store().drop_database(&name, if_exists)?;
            if session.db.as_deref() == Some(name.as_str()) {
                session.db = None;
            }
            Ok(done())
        }
        Statement::CreateTable(ct) => create_table(double, session, ct),
        Statement::DropTable {
            db,
            table,
            if_exists,
        } => {
            let db = resolve_db(session, db)?;
            double.store().drop_table(&db, &table, if_exists)?;
            Ok(done())
        }
        Statement::CancelAlterColumn { db, table } => {
            let db = resolve_db(session, db)?;
            let mut store = double.store();
            store.finish_jobs()?;
            table_of(&store, &db, &table)?;
            // SchemaChangeHandler.cancelColumnJob: only a table under SCHEMA_CHANGE has a job
            // to cancel; the job ends CANCELLED with "user cancelled".
            if !store.cancel_running_job(&db, &table)? {
                return Err(SqlError::new(
                    code::PARSE,
                    format!("Table[{table}] is not under SCHEMA_CHANGE."),
                ));
            }
            Ok(done())
        }
        Statement::TruncateTable { db, table } => {
            let db = resolve_db(session, db)?;
            let mut store = double.store();
            let t = table_of(&store, &db, &table)?;
            store.truncate_table(&t)?;
            Ok(done())
        }
        Statement::AlterAddColumns { db, table, columns } => {
            let db = resolve_db(session, db)?;
            let mut store = double.store();
            store.finish_jobs()?;
            let t = table_of(&store, &db, &table)?;
            if store.has_running_job(&db, &table) {
                return Err(SqlError::new(
                    code::PARSE,
                    format!("Table[{table}]'s state is not NORMAL. Do not allow doing ALTER ops"),
                ));
            }
            for (i, add) in columns.iter().enumerate() {
                let c = &add.column;
                if t.column(&c.name).is_some()
                    || columns[..i]
                        .iter()
                        .any(|o| o.column.name.eq_ignore_ascii_case(&c.name))
                {
                    return Err(SqlError::new(
                        code::DUP_FIELDNAME,
                        format!(
                            "Can not add column which already exists in base table: {}",
                            c.name
                        ),
                    ));
                }
                // A renamed column keeps the name it was created under as its id, and a new
                // column may not take it (SchemaChangeHandler.addColumnInternal; docs
                // ALTER_TABLE: "After renaming a column from A to B, adding a new column
                // named A is not supported").
                if let Some(holder) = t
                    .columns
                    .iter()
                    .find(|o| o.column_id.is_some() && o.id().eq_ignore_ascii_case(&c.name))
                {
                    return Err(SqlError::new(
                        code::PARSE,
                        format!(
                            "Can not add column which already exists in column id: {}, you can remove {} and try again.",
                            c.name, holder.name
                        ),
                    ));
                }
                if c.is_key {
                    return Err(SqlError::analysis(format!(
                        "Can not add key column {} to a {} table",
                        c.name,
                        t.keys.model()
                    )));
                }
                if !c.nullable && c.default.is_none() {
                    return Err(SqlError::analysis(format!(
                        "Can not add column {} which is not nullable and has no default value",
                        c.name
                    )));
                }
                if let Some(crate::catalog::DefaultValue::Literal(d)) = &c.default {
                    if let Err(e) = c.ty.convert_text(d) {
                        return Err(SqlError::analysis(format!(
                            "Invalid default value for '{}': {e}",
                            c.name
                        )));
                    }
                }
            }
            let columns = columns
                .into_iter()
                .map(|a| (a.column, a.position))
                .collect();
            if fast_schema_evolution(double, &t) {
                if let Err(msg) = store.change_columns_now(&t, JobKind::AddColumns, columns)? {
                    return Err(SqlError::analysis(msg));
                }
            } else {
                store.add_job(&t, JobKind::AddColumns, columns)?;
            }
            Ok(done())
        }
        Statement::AlterModifyColumns { db, table, columns } => {
            let db = resolve_db(session, db)?;
            let mut store = double.store();
            store.finish_jobs()?;
            let t = table_of(&store, &db, &table)?;
            if store.has_running_job(&db, &table) {
                return Err(SqlError::new(
                    code::PARSE,
                    format!("Table[{table}]'s state is not NORMAL. Do not allow doing ALTER ops"),
                ));
            }
            let changes: Vec<ColumnChange> = columns
                .into_iter()
                .map(|m| (m.column, m.position))
                .collect();
            for (c, _) in &changes {
                if let Some(crate::catalog::DefaultValue::Literal(d)) = &c.default {
                    if let Err(e) = c.ty.convert_text(d) {
                        return Err(SqlError::analysis(format!(
                            "Invalid default value for '{}': {e}",
                            c.name
                        )));
                    }
                }
            }
            let new_def = match modify_columns(&t, &changes) {
                Ok(d) => d,
                Err(ModifyError::Ddl(msg)) => return Err(SqlError::new(code::PARSE, msg)),
                Err(ModifyError::Unsupported(what)) => return Err(SqlError::unsupported(what)),
            };
            // A type change is a real schema-change job that rewrites the data, whatever
            // the table's fast_schema_evolution: StarRocks 3.x–4.0 take the metadata-only
            // path for MODIFY COLUMN only in shared-data (`processModifyColumn`: "The fast
            // schema evolution mechanism is only supported for modified columns in shared
            // data mode").
            let metadata_only = double.config.shared_data()
                && fast_schema_evolution(double, &t)
                && modify_is_metadata_only(&t, &new_def);
            if metadata_only {
                if let Err(msg) = store.change_columns_now(&t, JobKind::ModifyColumns, changes)? {
                    return Err(SqlError::new(code::PARSE, msg));
                }
            } else {
                store.add_job(&t, JobKind::ModifyColumns, changes)?;
            }
            Ok(done())
        }
        Statement::AlterDropColumns { db, table, columns } => {
            let db = resolve_db(session, db)?;
            let mut store = double.store();
            store.finish_jobs()?;
            let t = table_of(&store, &db, &table)?;
            if store.has_running_job(&db, &table) {
                return Err(SqlError::new(
                    code::PARSE,
                    format!("Table[{table}]'s state is not NORMAL. Do not allow doing ALTER ops"),
                ));
            }
            let dropped: Vec<ColumnChange> = match drop_columns(&t, &columns) {
                Ok(_) => columns
                    .iter()
                    .filter_map(|n| t.column(n).map(|(_, c)| (c.clone(), None)))
                    .collect(),
                Err(ModifyError::Ddl(msg)) => return Err(SqlError::new(code::PARSE, msg)),
                Err(ModifyError::Unsupported(what)) => return Err(SqlError::unsupported(what)),
            };
            // SchemaChangeHandler.processDropColumn keeps the fast path for a value column;
            // where the table has fast schema evolution, the drop is metadata only and its
            // job is FINISHED at once, like ADD COLUMN's.
            if fast_schema_evolution(double, &t) && drop_is_metadata_only(&t, &columns) {
                if let Err(msg) = store.change_columns_now(&t, JobKind::DropColumns, dropped)? {
                    return Err(SqlError::new(code::PARSE, msg));
                }
            } else {
                store.add_job(&t, JobKind::DropColumns, dropped)?;
            }
            Ok(done())
        }
        Statement::AlterRenameColumn {
            db,
            table,
            from,
            to,
            to_keyword,
            new_name,
        } => {
            // StarRocks has RENAME COLUMN from 3.3.2 (docs ALTER_TABLE "Rename a column";
            // StarRocks.g4 `columnRenameClause: RENAME COLUMN old TO new`). Before, the
            // grammar had `RENAME COLUMN old new` and no implementation behind it, and the
            // reserved word TO is a syntax error where the new name should be.
            if !double.config.sr_version.at_least(3, 3, 2) {
                if let Some(kw) = to_keyword {
                    return Err(sql::syntax_error(
                        sql_text,
                        kw.pos,
                        &kw.text(),
                        "a legal identifier",
                    ));
                }
                return Err(SqlError::unsupported(format!(
                    "RENAME COLUMN on StarRocks {}",
                    double.config.sr_version
                )));
            }
            if to_keyword.is_none() {
                return Err(sql::syntax_error(
                    sql_text,
                    new_name.pos,
                    &new_name.text(),
                    "TO",
                ));
            }
            let db = resolve_db(session, db)?;
            let mut store = double.store();
            store.finish_jobs()?;
            let t = table_of(&store, &db, &table)?;
            // LocalMetastore.renameColumn renames only in a NORMAL table
            // (ERR_CANNOT_RENAME_COLUMN_OF_NOT_NORMAL_TABLE, StarRocks' code 5513, which the
            // double's MySQL layer cannot send: it answers with 1064 like other DDL refusals).
            if store.has_running_job(&db, &table) {
                return Err(SqlError::new(
                    code::PARSE,
                    "Can not rename column of table in SCHEMA_CHANGE state",
                ));
            }
            match store.rename_column(&t, &from, &to)? {
                Ok(()) => Ok(done()),
                Err(e) => Err(SqlError::new(e.code(), e.to_string())),
            }
        }
        Statement::Insert {
            db,
            table,
            columns,
            rows: values,
        } => {
            let db = resolve_db(session, db)?;
            let mut store = double.store();
            let t = table_of(&store, &db, &table)?;
            let indexes: Vec<usize> = match columns {
                None => (0..t.columns.len()).collect(),
                Some(names) => names
                    .iter()
                    .map(|n| {
                        t.column(n).map(|(i, _)| i).ok_or_else(|| {
                            SqlError::analysis(format!("Unknown column '{n}' in '{table}'"))
                        })
                    })
                    .collect::<Result<_, _>>()?,
            };
            let ops = crate::load::convert_literals(&t, &indexes, &values)
                .map_err(|m| SqlError::new(1064, m))?;
            let label = format!("insert_{}", crate::ids::uuid().replace('-', ""));
            store.begin_label(&db, &table, &label)?;
            if double.config.discard {
                store.set_label_state(&db, &label, TxnState::Visible)?;
            } else {
                store.apply(
                    &t,
                    &ApplyMode::default(),
                    &ops,
                    Some((&label, TxnState::Visible)),
                )?;
            }
            Ok(Outcome::Done {
                affected: ops.len() as u64,
            })
        }
        Statement::Delete {
            db,
            table,
            where_tokens,
        } => {
            let db = resolve_db(session, db)?;
            let store = double.store();
            let t = table_of(&store, &db, &table)?;
            let cond = render(double, session, &where_tokens)?;
            let n = store
                .execute(&format!(
                    "DELETE FROM {} WHERE {cond}",
                    quote_ident(&t.storage_name())
                ))
                .map_err(sqlite_error)?;
            Ok(Outcome::Done { affected: n as u64 })
        }
    }
}

/// Whether ADD COLUMN (or DROP of a value column) on `t` is a metadata-only change that is
/// FINISHED at once: the table has `fast_schema_evolution` = true and the version supports
/// it (shared-nothing from 3.2, shared-data from 4.0: docs "Feature Differences between Shared-nothing and Shared-data").
fn fast_schema_evolution(double: &Double, t: &TableDef) -> bool {
    let on = t.properties.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("fast_schema_evolution") && v.eq_ignore_ascii_case("true")
    });
    let v = &double.config.sr_version;
    let supported = if double.config.shared_data() {
        v.at_least(4, 0, 0)
    } else {
        v.at_least(3, 2, 0)
    };
    on && supported
}

/// The replica count of a new table (checked against the alive BEs by [`check_replicas`]).
///
/// Shared-nothing: `replication_num` or FE `default_replication_num` (3); more replicas than
/// alive BEs fails when the FE places the tablets (`LocalMetastore.chosenBackendIdBySeq`,
/// wrapped with the table name and `default_replication_num`). Shared-data: the default is 1
/// (`RunMode.SharedData.getDefaultReplicationNum`) and the value is not checked against the
/// compute nodes (`PropertyAnalyzer.checkReplicationNum` compares the CN count with the
/// default, not with the table's value).
fn replication_num(double: &Double, properties: &[(String, String)]) -> Result<i64, SqlError> {
    let config = &double.config;
    let given = properties
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("replication_num"))
        .map(|(_, v)| v.trim());
    let n = match given {
        None if config.shared_data() => 1,
        None => i64::from(config.default_replication_num),
        Some(v) => v
            .parse::<i16>()
            .map(i64::from)
            .map_err(|e| SqlError::analysis(format!("{e}")))?,
    };
    if n <= 0 {
        return Err(SqlError::analysis(
            "Replication num should larger than 0. (suggested 3)",
        ));
    }
    Ok(n)
}

/// Placing `n` replicas of each tablet needs `n` alive BEs (shared-nothing only).
fn check_replicas(double: &Double, table: &str, n: i64) -> Result<(), SqlError> {
    let config = &double.config;
    let alive = double.ports.bes.len() as i64;
    if !config.shared_data() && n > alive {
        let ids: Vec<String> = (0..double.ports.bes.len())
            .map(|i| Double::node_id(i).to_string())
            .collect();
        return Err(SqlError::new(
            code::PARSE,
            format!(
                "Table replication num should be less than or equal to the number of available BE nodes. \
                 You can change this default by setting the replication_num table properties. \
                 Current alive backend is [{}]. , table={table}, default_replication_num={}",
                ids.join(","),
                config.default_replication_num
            ),
        ));
    }
    Ok(())
}

/// The FE configs `ADMIN SHOW FRONTEND CONFIG` lists: (key, value, Java type, mutable).
/// Rows follow `ConfigBase.getConfigInfo`: Key, AliasNames (`[]`), Value, Type, IsMutable,
/// Comment (StarRocks' comment texts are not reproduced).
fn frontend_config(double: &Double) -> Vec<(&'static str, String, &'static str, bool)> {
    let c = &double.config;
    vec![
        (
            "default_replication_num",
            c.default_replication_num.to_string(),
            "short",
            true,
        ),
        (
            "label_keep_max_num",
            c.label_keep_max_num.to_string(),
            "int",
            true,
        ),
        (
            "label_keep_max_second",
            c.label_keep_max_second.to_string(),
            "int",
            true,
        ),
        ("run_mode", c.run_mode.name().to_owned(), "String", false),
        (
            "stream_load_default_timeout_second",
            c.load_timeout_second.to_string(),
            "int",
            true,
        ),
    ]
}

/// `SHOW BACKENDS` (`compute = false`) or `SHOW COMPUTE NODES`, with the columns of
/// StarRocks 3.3's `BackendsProcDir` / `ComputeNodeProcDir` (plus their shared-data columns).
/// Shared-nothing nodes are BEs, so `SHOW COMPUTE NODES` is empty; in shared-data they are
/// compute nodes, so `SHOW BACKENDS` is empty.
fn show_nodes(double: &Double, compute: bool) -> Outcome {
    let shared_data = double.config.shared_data();
    let mut columns: Vec<&str> = if compute {
        vec![
            "ComputeNodeId",
            "IP",
            "HeartbeatPort",
            "BePort",
            "HttpPort",
            "BrpcPort",
            "LastStartTime",
            "LastHeartbeat",
            "Alive",
            "SystemDecommissioned",
            "ClusterDecommissioned",
            "ErrMsg",
            "Version",
            "CpuCores",
            "NumRunningQueries",
            "MemUsedPct",
            "CpuUsedPct",
            "HasStoragePath",
        ]
    } else {
        vec![
            "BackendId",
            "IP",
            "HeartbeatPort",
            "BePort",
            "HttpPort",
            "BrpcPort",
            "LastStartTime",
            "LastHeartbeat",
            "Alive",
            "SystemDecommissioned",
            "ClusterDecommissioned",
            "TabletNum",
            "DataUsedCapacity",
            "AvailCapacity",
            "TotalCapacity",
            "UsedPct",
            "MaxDiskUsedPct",
            "ErrMsg",
            "Version",
            "Status",
            "DataTotalCapacity",
            "DataUsedPct",
            "CpuCores",
            "MemLimit",
            "NumRunningQueries",
            "MemUsedPct",
            "CpuUsedPct",
            "DataCacheMetrics",
            "Location",
        ]
    };
    if shared_data {
        columns.extend(["StarletPort", "WorkerId", "WarehouseName"]);
        if compute {
            columns.push("TabletNum");
        }
    }
    let listed = compute == shared_data;
    let now = clock::now_datetime_string();
    let version = double.config.sr_version.to_string();
    let out = if !listed {
        Vec::new()
    } else {
        double
            .ports
            .bes
            .iter()
            .enumerate()
            .map(|(i, be)| {
                let mut row = vec![
                    Cell::Int(Double::node_id(i)),
                    text(be.host.clone()),
                    Cell::Int(9050),
                    Cell::Int(9060),
                    Cell::Int(i64::from(be.port)),
                    Cell::Int(8060),
                    text(now.clone()),
                    text(now.clone()),
                    text("true"),
                    text("false"),
                    text("false"),
                ];
                if compute {
                    row.extend([
                        text(""),
                        text(version.clone()),
                        Cell::Int(2),
                        Cell::Int(0),
                        text("0.00 %"),
                        text("0.0 %"),
                        text("true"),
                    ]);
                } else {
                    row.extend([
                        Cell::Int(0),
                        text("0.000 B"),
                        text("1.000 TB"),
                        text("1.000 TB"),
                        text("0.00 %"),
                        text("0.00 %"),
                        text(""),
                        text(version.clone()),
                        text("{\"lastSuccessReportTabletsTime\":\"N/A\"}"),
                        text("0.000 B"),
                        text("0.00 %"),
                        Cell::Int(2),
                        text("8.000 GB"),
                        Cell::Int(0),
                        text("0.00 %"),
                        text("0.0 %"),
                        text("N/A"),
                        text(""),
                    ]);
                }
                if shared_data {
                    row.extend([
                        Cell::Int(9070),
                        Cell::Int(i as i64),
                        text("default_warehouse"),
                    ]);
                    if compute {
                        row.push(Cell::Int(0));
                    }
                }
                row
            })
            .collect()
    };
    rows(&columns, out)
}

fn create_table(
    double: &Double,
    session: &Session,
    ct: sql::CreateTable,
) -> Result<Outcome, SqlError> {
    let db = resolve_db(session, ct.db.clone())?;
    if db.eq_ignore_ascii_case("information_schema") {
        return Err(SqlError::analysis(
            "Access denied; you can not create tables in information_schema",
        ));
    }
    let (keys, key_columns) = match &ct.keys {
        Some((k, cols)) => (*k, cols.clone()),
        None => (
            KeysType::DupKeys,
            vec![ct
                .columns
                .first()
                .map(|c| c.name.clone())
                .unwrap_or_default()],
        ),
    };
    let mut columns: Vec<ColumnDef> = ct.columns.clone();
    for c in &mut columns {
        c.is_key = key_columns.iter().any(|k| k.eq_ignore_ascii_case(&c.name));
    }
    let replication_num = replication_num(double, &ct.properties)?;
    let mut properties: Vec<(String, String)> = vec![
        ("compression".into(), "LZ4".into()),
        ("fast_schema_evolution".into(), "true".into()),
        ("replicated_storage".into(), "true".into()),
        ("replication_num".into(), replication_num.to_string()),
    ];
    if keys == KeysType::PrimaryKeys {
        properties.push(("enable_persistent_index".into(), "true".into()));
    }
    for (k, v) in &ct.properties {
        if k.eq_ignore_ascii_case("replication_num") {
            continue;
        }
        match properties
            .iter_mut()
            .find(|(pk, _)| pk.eq_ignore_ascii_case(k))
        {
            Some(p) => p.1 = v.clone(),
            None => properties.push((k.clone(), v.clone())),
        }
    }
    let def = TableDef {
        id: 0,
        db: db.clone(),
        name: ct.name.clone(),
        columns,
        keys,
        key_columns,
        distribution: ct.distribution.clone().unwrap_or_default(),
        buckets: ct.buckets,
        properties,
        comment: ct.comment.clone(),
        created_at: clock::now_ms() / 1000,
    };
    validate_table(&def, ct.distribution.is_some()).map_err(SqlError::analysis)?;
    let mut store = double.store();
    if store.catalog.db(&db).is_some() && store.catalog.table(&db, &ct.name).is_none() {
        check_replicas(double, &ct.name, replication_num)?;
    }
    store.create_table(def, ct.if_not_exists)?;
    Ok(done())
}

/// Renders tokens as SQLite SQL, replacing variables and MySQL-only functions.
fn render(double: &Double, session: &Session, toks: &[Token]) -> Result<String, SqlError> {
    let mut out: Vec<String> = Vec::with_capacity(toks.len());
    let mut i = 0;
    while i < toks.len() {
        let t = &toks[i];
        let call = toks.get(i + 1).is_some_and(|n| n.is_sym("("))
            && toks.get(i + 2).is_some_and(|n| n.is_sym(")"));
        match &t.tok {
            Tok::Word(w) if call => {
                let lw = w.to_ascii_lowercase();
                let replacement = match lw.as_str() {
                    "current_version" => Some(sql_string(&double.config.sr_version.text)),
                    "version" => Some(sql_string(MYSQL_VERSION)),
                    "database" | "schema" => Some(
                        session
                            .db
                            .as_deref()
                            .map(sql_string)
                            .unwrap_or_else(|| "NULL".into()),
                    ),
                    "current_user" | "user" | "session_user" | "system_user" => {
                        Some(sql_string(&format!("'{}'@'%'", session.user)))
                    }
                    "connection_id" => Some(session.connection_id.to_string()),
                    "now" | "current_timestamp" | "localtime" | "localtimestamp" | "sysdate" => {
                        Some("datetime('now')".into())
                    }
                    "curdate" | "current_date" => Some("date('now')".into()),
                    _ => None,
                };
                if let Some(r) = replacement {
                    out.push(r);
                    i += 3;
                    continue;
                }
                out.push(w.clone());
            }
            Tok::Word(w)
                if w.eq_ignore_ascii_case("if")
                    && toks.get(i + 1).is_some_and(|n| n.is_sym("(")) =>
            {
                out.push("iif".into())
            }
            Tok::Word(w) if w.eq_ignore_ascii_case("char_length") => out.push("length".into()),
            Tok::Word(w) => out.push(w.clone()),
            Tok::Quoted(q) => out.push(quote_ident(q)),
            Tok::Str(s) => out.push(sql_string(s)),
            Tok::Num(n) => out.push(n.clone()),
            Tok::Sym(s) => out.push(
                match *s {
                    "&&" => "AND",
                    "||" => "OR",
                    "<=>" => "IS",
                    ":=" => "=",
                    other => other,
                }
                .to_owned(),
            ),
            Tok::Param => {
                return Err(SqlError::analysis("a '?' placeholder was not bound"));
            }
            Tok::SysVar(name) => match system_variable(double, name) {
                Some(Cell::Int(v)) => out.push(v.to_string()),
                Some(Cell::Text(s)) => out.push(sql_string(&s)),
                _ => return Err(unknown_variable(name)),
            },
            Tok::UserVar(_) => out.push("NULL".into()),
        }
        i += 1;
    }
    Ok(out.join(" "))
}

fn sql_string(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

const CLAUSE_KEYWORDS: &[&str] = &[
    "WHERE",
    "GROUP",
    "ORDER",
    "LIMIT",
    "HAVING",
    "JOIN",
    "LEFT",
    "RIGHT",
    "INNER",
    "CROSS",
    "OUTER",
    "FULL",
    "ON",
    "USING",
    "UNION",
    "EXCEPT",
    "INTERSECT",
    "NATURAL",
    "INTO",
    "FOR",
    "WINDOW",
    "STRAIGHT_JOIN",
];

fn is_clause_keyword(t: &Token) -> bool {
    matches!(&t.tok, Tok::Word(w) if CLAUSE_KEYWORDS.iter().any(|k| w.eq_ignore_ascii_case(k)))
}

/// Adds `AS "<original text>"` to computed select items, so columns are named like MySQL
/// names them (`count(*)`, `@@version_comment`, `current_version()`).
fn alias_select_items(sql_text: &str, toks: &mut Vec<Token>) {
    if !toks.first().is_some_and(|t| t.is_kw("SELECT")) {
        return;
    }
    let mut start = 1;
    while toks
        .get(start)
        .is_some_and(|t| t.is_kw("DISTINCT") || t.is_kw("ALL"))
    {
        start += 1;
    }
    let mut items: Vec<(usize, usize)> = Vec::new();
    let mut depth = 0i32;
    let mut item_start = start;
    let mut end = toks.len();
    for (i, t) in toks.iter().enumerate().skip(start) {
        if t.is_sym("(") {
            depth += 1;
        } else if t.is_sym(")") {
            depth -= 1;
        } else if depth == 0 && t.is_sym(",") {
            items.push((item_start, i));
            item_start = i + 1;
        } else if depth == 0 && (t.is_kw("FROM") || is_clause_keyword(t) || t.is_sym(";")) {
            end = i;
            break;
        }
    }
    if item_start < end {
        items.push((item_start, end));
    }
    let text_end = |idx: usize| -> usize { toks.get(idx).map(|t| t.pos).unwrap_or(sql_text.len()) };
    let mut inserts: Vec<(usize, String)> = Vec::new();
    for (a, b) in items {
        let item = &toks[a..b];
        if item.is_empty() {
            continue;
        }
        let simple_ref = item.iter().enumerate().all(|(k, t)| {
            if k % 2 == 0 {
                t.ident().is_some() || t.is_sym("*")
            } else {
                t.is_sym(".")
            }
        });
        if simple_ref {
            continue;
        }
        let n = item.len();
        let has_alias = n >= 2
            && (item[n - 2].is_kw("AS")
                || (item[n - 1].ident().is_some()
                    && !item[n - 2].is_sym(".")
                    && !matches!(item[n - 2].tok, Tok::Sym(s) if s != ")")
                    && !["END", "NULL", "TRUE", "FALSE"]
                        .iter()
                        .any(|k| item[n - 1].is_kw(k))));
        if has_alias {
            continue;
        }
        let from = item[0].pos;
        let to = text_end(b).min(sql_text.len());
        if from >= to {
            continue;
        }
        let original = sql_text[from..to].trim().trim_end_matches(';').trim_end();
        inserts.push((b, original.to_owned()));
    }
    for (at, name) in inserts.into_iter().rev() {
        let pos = toks.get(at).map(|t| t.pos).unwrap_or(sql_text.len());
        toks.insert(
            at,
            Token {
                tok: Tok::Quoted(name),
                pos,
            },
        );
        toks.insert(
            at,
            Token {
                tok: Tok::Word("AS".into()),
                pos,
            },
        );
    }
}

/// Rewrites a SELECT for SQLite: select aliases, table references, variables.
fn rewrite_select(
    double: &Double,
    session: &Session,
    store: &Store,
    sql_text: &str,
    mut toks: Vec<Token>,
) -> Result<String, SqlError> {
    alias_select_items(sql_text, &mut toks);
    let mut out: Vec<Token> = Vec::with_capacity(toks.len() + 8);
    let mut i = 0;
    while i < toks.len() {
        let t = &toks[i];
        out.push(t.clone());
        i += 1;
        if !(t.is_kw("FROM") || t.is_kw("JOIN")) {
            continue;
        }
        while let Some(first) = toks.get(i).and_then(|x| x.ident().map(str::to_owned)) {
            let qualified = toks.get(i + 1).is_some_and(|x| x.is_sym("."))
                && toks.get(i + 2).and_then(|x| x.ident()).is_some();
            let (db, name, consumed) = if qualified {
                let second = toks[i + 2].ident().unwrap_or_default().to_owned();
                (Some(first), second, 3)
            } else {
                (None, first, 1)
            };
            let pos = toks[i].pos;
            let resolved: Option<(String, String)> = match &db {
                Some(d) if d.eq_ignore_ascii_case("information_schema") => None,
                Some(d) => {
                    if store.catalog.db(d).is_some() {
                        if store.catalog.table(d, &name).is_none() {
                            return Err(SqlError::analysis(format!("Unknown table '{d}.{name}'")));
                        }
                        Some((d.clone(), name.clone()))
                    } else {
                        return Err(SqlError::new(
                            code::BAD_DB,
                            format!("Unknown database '{d}'"),
                        ));
                    }
                }
                None => match &session.db {
                    Some(d) if d.eq_ignore_ascii_case("information_schema") => None,
                    Some(d) => store
                        .catalog
                        .table(d, &name)
                        .map(|_| (d.clone(), name.clone())),
                    None => None,
                },
            };
            match (resolved, &db) {
                (Some((d, n)), _) => {
                    out.push(Token {
                        tok: Tok::Quoted(crate::catalog::storage_name(&d, &n)),
                        pos,
                    });
                    i += consumed;
                    let has_alias = toks.get(i).is_some_and(|x| {
                        x.is_kw("AS") || (x.ident().is_some() && !is_clause_keyword(x))
                    });
                    if !has_alias {
                        out.push(Token {
                            tok: Tok::Word("AS".into()),
                            pos,
                        });
                        out.push(Token {
                            tok: Tok::Quoted(n),
                            pos,
                        });
                    }
                }
                (None, Some(_)) => {
                    // information_schema.x: the attached database answers as is.
                    out.push(Token {
                        tok: Tok::Word("information_schema".into()),
                        pos,
                    });
                    out.push(Token {
                        tok: Tok::Sym("."),
                        pos,
                    });
                    out.push(Token {
                        tok: Tok::Word(name.to_ascii_lowercase()),
                        pos,
                    });
                    i += consumed;
                }
                (None, None) => {
                    if session
                        .db
                        .as_deref()
                        .is_some_and(|d| d.eq_ignore_ascii_case("information_schema"))
                    {
                        out.push(Token {
                            tok: Tok::Word("information_schema".into()),
                            pos,
                        });
                        out.push(Token {
                            tok: Tok::Sym("."),
                            pos,
                        });
                        out.push(Token {
                            tok: Tok::Word(name.to_ascii_lowercase()),
                            pos,
                        });
                    } else {
                        out.push(toks[i].clone());
                    }
                    i += consumed;
                }
            }
            // Copy an alias, then continue through a comma-separated FROM list.
            if toks.get(i).is_some_and(|x| x.is_kw("AS")) {
                out.push(toks[i].clone());
                i += 1;
            }
            if toks
                .get(i)
                .is_some_and(|x| x.ident().is_some() && !is_clause_keyword(x))
            {
                out.push(toks[i].clone());
                i += 1;
            }
            if toks.get(i).is_some_and(|x| x.is_sym(",")) {
                out.push(toks[i].clone());
                i += 1;
                continue;
            }
            break;
        }
    }
    render(double, session, &out)
}

/// `SHOW ALTER TABLE COLUMN` as a query over the jobs table, keeping the user's WHERE,
/// ORDER BY and LIMIT (ties on CreateTime are broken by JobId, newest first when DESC).
fn show_alter_sql(
    double: &Double,
    session: &Session,
    db: &str,
    _sql_text: &str,
    tail: Vec<Token>,
) -> Result<String, SqlError> {
    let mut where_part: Vec<Token> = Vec::new();
    let mut order_part: Vec<Token> = Vec::new();
    let mut limit_part: Vec<Token> = Vec::new();
    let mut section = 0;
    let mut depth = 0;
    let mut i = 0;
    while i < tail.len() {
        let t = &tail[i];
        if depth == 0 && t.is_kw("WHERE") {
            section = 1;
        } else if depth == 0 && t.is_kw("ORDER") && tail.get(i + 1).is_some_and(|n| n.is_kw("BY")) {
            section = 2;
            i += 2;
            continue;
        } else if depth == 0 && t.is_kw("LIMIT") {
            section = 3;
        } else {
            if t.is_sym("(") {
                depth += 1;
            }
            if t.is_sym(")") {
                depth -= 1;
            }
            match section {
                1 => where_part.push(t.clone()),
                2 => order_part.push(t.clone()),
                3 => limit_part.push(t.clone()),
                _ => {
                    return Err(sql::syntax_error(
                        _sql_text,
                        t.pos,
                        &t.text(),
                        "WHERE, ORDER BY, LIMIT",
                    ));
                }
            }
        }
        i += 1;
    }
    let mut sql = format!(
        "SELECT JobId, TableName, CreateTime, FinishTime, IndexName, IndexId, OriginIndexId, SchemaVersion, \
         TransactionId, State, Msg, Progress, Timeout FROM _double_alter_jobs WHERE DbName = {}",
        sql_string(db)
    );
    if !where_part.is_empty() {
        sql.push_str(&format!(" AND ({})", render(double, session, &where_part)?));
    }
    if order_part.is_empty() {
        sql.push_str(" ORDER BY JobId");
    } else {
        let desc = order_part.last().is_some_and(|t| t.is_kw("DESC"));
        sql.push_str(&format!(
            " ORDER BY {}, JobId {}",
            render(double, session, &order_part)?,
            if desc { "DESC" } else { "ASC" }
        ));
    }
    if !limit_part.is_empty() {
        sql.push_str(&format!(" LIMIT {}", render(double, session, &limit_part)?));
    }
    Ok(sql)
}

/// Replaces `?` placeholders with literals (prepared statements are executed as text).
pub fn bind_params(sql_text: &str, params: &[Option<String>]) -> Result<String, SqlError> {
    let toks = sql::lex(sql_text)?;
    let mut out = String::with_capacity(sql_text.len() + 16);
    let mut last = 0;
    for (n, t) in toks.iter().filter(|t| t.tok == Tok::Param).enumerate() {
        out.push_str(&sql_text[last..t.pos]);
        match params.get(n) {
            Some(Some(lit)) => out.push_str(lit),
            Some(None) => out.push_str("NULL"),
            None => {
                return Err(SqlError::analysis(
                    "not enough parameters for the prepared statement",
                ))
            }
        }
        last = t.pos + 1;
    }
    out.push_str(&sql_text[last..]);
    Ok(out)
}

/// How many `?` placeholders a statement has.
pub fn count_params(sql_text: &str) -> usize {
    sql::lex(sql_text)
        .map(|t| t.iter().filter(|t| t.tok == Tok::Param).count())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_matches_mysql_wildcards() {
        assert!(like("ord%", "orders"));
        assert!(like("o_ders", "ORDERS"));
        assert!(!like("ord_", "orders"));
    }

    #[test]
    fn params_are_spliced_outside_strings() {
        let s = bind_params(
            "SELECT '?' , ? FROM t WHERE a = ?",
            &[Some("1".into()), None],
        )
        .unwrap();
        assert_eq!(s, "SELECT '?' , 1 FROM t WHERE a = NULL");
        assert_eq!(count_params("SELECT ? , '?'"), 1);
    }

    #[test]
    fn computed_select_items_get_mysql_names() {
        let sql = "SELECT count(*), id, @@version_comment, x AS y FROM t";
        let mut toks = sql::lex(sql).unwrap();
        alias_select_items(sql, &mut toks);
        let texts: Vec<String> = toks.iter().map(|t| t.text()).collect();
        assert!(texts.contains(&"`count(*)`".to_string()), "{texts:?}");
        assert!(
            texts.contains(&"`@@version_comment`".to_string()),
            "{texts:?}"
        );
        assert!(!texts.contains(&"`id`".to_string()));
    }
}
