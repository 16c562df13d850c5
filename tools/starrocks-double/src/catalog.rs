//! The schema: databases, tables and columns, with StarRocks' rules for primary-key tables.
//!
//! Why in memory as well as in SQLite: every load and every query needs the schema, and the
//! hot path must not parse it again. The catalog is the authority; `store` persists each
//! table definition as JSON so a restart with `--data-dir` gets the same schema back.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::types::{Cell, SrType};

/// How a table treats rows with the same key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeysType {
    /// `PRIMARY KEY(...)`: upsert, delete, partial update, merge_condition.
    PrimaryKeys,
    /// `DUPLICATE KEY(...)`: every loaded row is appended.
    DupKeys,
}

impl KeysType {
    /// The name in `information_schema.tables_config.TABLE_MODEL`.
    pub fn model(self) -> &'static str {
        match self {
            KeysType::PrimaryKeys => "PRIMARY_KEYS",
            KeysType::DupKeys => "DUP_KEYS",
        }
    }

    /// The clause in `SHOW CREATE TABLE`.
    pub fn clause(self) -> &'static str {
        match self {
            KeysType::PrimaryKeys => "PRIMARY KEY",
            KeysType::DupKeys => "DUPLICATE KEY",
        }
    }
}

/// A column's DEFAULT.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum DefaultValue {
    /// A literal, kept as text and converted with the column type when used.
    Literal(String),
    /// `DEFAULT CURRENT_TIMESTAMP` (DATETIME only).
    CurrentTimestamp,
}

/// One column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColumnDef {
    pub name: String,
    pub ty: SrType,
    pub nullable: bool,
    pub default: Option<DefaultValue>,
    pub comment: String,
    pub is_key: bool,
    /// The name the column was created under, once a RENAME COLUMN gave it another:
    /// StarRocks keeps addressing the column by this id (`Column.getColumnId`), so no new
    /// column may take it (`SchemaChangeHandler.addColumnInternal`). None while the two agree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column_id: Option<String>,
}

impl ColumnDef {
    /// The column's id in StarRocks: the name it was created under.
    pub fn id(&self) -> &str {
        self.column_id.as_deref().unwrap_or(&self.name)
    }

    /// The value this column gets when a row does not provide it: the DEFAULT, else NULL.
    pub fn default_cell(&self) -> Cell {
        match &self.default {
            Some(DefaultValue::Literal(s)) => self.ty.convert_text(s).unwrap_or(Cell::Null),
            Some(DefaultValue::CurrentTimestamp) => Cell::Text(crate::clock::now_datetime_string()),
            None => Cell::Null,
        }
    }

    /// The value a partial update writes for a new row that does not list this column:
    /// the DEFAULT, NULL when nullable, else the type's zero value.
    pub fn fill_cell(&self) -> Cell {
        match self.default_cell() {
            Cell::Null if !self.nullable => self.ty.zero_value(),
            c => c,
        }
    }

    /// The DEFAULT as `SHOW CREATE TABLE` and `information_schema` print it.
    pub fn default_text(&self) -> Option<String> {
        match &self.default {
            Some(DefaultValue::Literal(s)) => Some(s.clone()),
            Some(DefaultValue::CurrentTimestamp) => Some("CURRENT_TIMESTAMP".into()),
            None => None,
        }
    }
}

/// One table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableDef {
    pub id: i64,
    pub db: String,
    pub name: String,
    pub columns: Vec<ColumnDef>,
    pub keys: KeysType,
    pub key_columns: Vec<String>,
    pub distribution: Vec<String>,
    pub buckets: Option<u32>,
    /// `PROPERTIES(...)` as given, plus the defaults StarRocks shows.
    pub properties: Vec<(String, String)>,
    pub comment: String,
    /// Seconds since the Unix epoch.
    pub created_at: i64,
}

impl TableDef {
    /// The SQLite table holding this table's rows. StarRocks names cannot contain `.`, so this
    /// never collides with the double's own `_double_*` tables.
    pub fn storage_name(&self) -> String {
        storage_name(&self.db, &self.name)
    }

    /// Finds a column by name, case-insensitively like StarRocks.
    pub fn column(&self, name: &str) -> Option<(usize, &ColumnDef)> {
        self.columns
            .iter()
            .enumerate()
            .find(|(_, c)| c.name.eq_ignore_ascii_case(name))
    }

    /// Indexes of the key columns, in key order.
    pub fn key_indexes(&self) -> Vec<usize> {
        self.key_columns
            .iter()
            .filter_map(|k| self.column(k).map(|(i, _)| i))
            .collect()
    }

    pub fn is_primary(&self) -> bool {
        self.keys == KeysType::PrimaryKeys
    }

    /// A property value, case-insensitive on the key.
    pub fn property(&self, key: &str) -> Option<&str> {
        self.properties
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }

    /// The statement `SHOW CREATE TABLE` prints.
    pub fn create_statement(&self) -> String {
        let mut out = format!("CREATE TABLE `{}` (\n", self.name);
        let cols: Vec<String> = self
            .columns
            .iter()
            .map(|c| {
                let mut s = format!("  `{}` {}", c.name, c.ty.sql());
                s.push_str(if c.nullable { " NULL" } else { " NOT NULL" });
                if let Some(d) = c.default_text() {
                    if d == "CURRENT_TIMESTAMP" {
                        s.push_str(" DEFAULT CURRENT_TIMESTAMP");
                    } else {
                        s.push_str(&format!(" DEFAULT \"{}\"", d.replace('"', "\\\"")));
                    }
                }
                s.push_str(&format!(" COMMENT \"{}\"", c.comment.replace('"', "\\\"")));
                s
            })
            .collect();
        out.push_str(&cols.join(",\n"));
        out.push_str("\n) ENGINE=OLAP \n");
        out.push_str(&format!(
            "{}({})\n",
            self.keys.clause(),
            backticked(&self.key_columns)
        ));
        if !self.comment.is_empty() {
            out.push_str(&format!(
                "COMMENT \"{}\"\n",
                self.comment.replace('"', "\\\"")
            ));
        }
        out.push_str(&format!(
            "DISTRIBUTED BY HASH({})",
            backticked(&self.distribution)
        ));
        if let Some(b) = self.buckets {
            out.push_str(&format!(" BUCKETS {b}"));
        }
        out.push_str(" \nPROPERTIES (\n");
        let props: Vec<String> = self
            .properties
            .iter()
            .map(|(k, v)| format!("\"{k}\" = \"{v}\""))
            .collect();
        out.push_str(&props.join(",\n"));
        out.push_str("\n);");
        out
    }

    /// `information_schema.tables_config.PROPERTIES`: a JSON object.
    pub fn properties_json(&self) -> String {
        let map: serde_json::Map<String, serde_json::Value> = self
            .properties
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        serde_json::Value::Object(map).to_string()
    }
}

/// `a`, `b` → "`a`, `b`", the form StarRocks prints key lists in.
pub fn backticked(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The SQLite table name for `db.table`.
pub fn storage_name(db: &str, table: &str) -> String {
    format!("{db}.{table}")
}

/// One database.
#[derive(Debug, Clone, Default)]
pub struct Database {
    pub id: i64,
    pub tables: BTreeMap<String, Arc<TableDef>>,
}

/// Every database and table the double knows.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub dbs: BTreeMap<String, Database>,
}

impl Catalog {
    pub fn db(&self, name: &str) -> Option<&Database> {
        self.dbs.get(name)
    }

    pub fn table(&self, db: &str, table: &str) -> Option<&Arc<TableDef>> {
        self.dbs.get(db).and_then(|d| d.tables.get(table))
    }

    /// Every table, in (database, name) order.
    pub fn tables(&self) -> impl Iterator<Item = &Arc<TableDef>> {
        self.dbs.values().flat_map(|d| d.tables.values())
    }
}

/// A schema rule broken by a CREATE TABLE or ALTER TABLE, with StarRocks' wording.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    #[error("Duplicate column name '{0}'")]
    DuplicateColumn(String),
    #[error("Key column '{0}' doesn't exist.")]
    UnknownKeyColumn(String),
    #[error("Key columns should be a ordered prefix of the schema. KeyColumns[index={index}, name={key}], SchemaColumns[index={index}, name={column}]")]
    KeyNotPrefix {
        index: usize,
        key: String,
        column: String,
    },
    #[error("Primary key column {column} with type {ty} is not supported; key columns must be BOOLEAN, TINYINT, SMALLINT, INT, BIGINT, LARGEINT, DATE, DATETIME, VARCHAR or STRING")]
    KeyTypeNotAllowed { column: String, ty: String },
    #[error("primary key column[{0}] cannot be nullable")]
    NullableKey(String),
    #[error("Distribution column[{0}] is not key column")]
    DistributionNotKey(String),
    #[error("Distribution column '{0}' doesn't exist.")]
    UnknownDistributionColumn(String),
    #[error(
        "Currently not support default distribution in PRIMARY_KEYS; use DISTRIBUTED BY HASH(...)"
    )]
    MissingDistribution,
    #[error("Table must have at least one column")]
    NoColumns,
    #[error("Invalid default value for '{column}': {reason}")]
    BadDefault { column: String, reason: String },
}

/// Checks a new table definition the way StarRocks' CREATE TABLE does.
pub fn validate_table(t: &TableDef, has_distribution: bool) -> Result<(), SchemaError> {
    if t.columns.is_empty() {
        return Err(SchemaError::NoColumns);
    }
    for (i, c) in t.columns.iter().enumerate() {
        if t.columns[..i]
            .iter()
            .any(|o| o.name.eq_ignore_ascii_case(&c.name))
        {
            return Err(SchemaError::DuplicateColumn(c.name.clone()));
        }
        if let Some(DefaultValue::Literal(d)) = &c.default {
            c.ty.convert_text(d).map_err(|e| SchemaError::BadDefault {
                column: c.name.clone(),
                reason: e.to_string(),
            })?;
        }
    }
    for (i, key) in t.key_columns.iter().enumerate() {
        let Some((_, col)) = t.column(key) else {
            return Err(SchemaError::UnknownKeyColumn(key.clone()));
        };
        let at = &t.columns[i];
        if !at.name.eq_ignore_ascii_case(key) {
            return Err(SchemaError::KeyNotPrefix {
                index: i,
                key: key.clone(),
                column: at.name.clone(),
            });
        }
        if t.keys == KeysType::PrimaryKeys {
            if !col.ty.allowed_in_primary_key() {
                return Err(SchemaError::KeyTypeNotAllowed {
                    column: col.name.clone(),
                    ty: col.ty.sql().to_uppercase(),
                });
            }
            if col.nullable {
                return Err(SchemaError::NullableKey(col.name.clone()));
            }
        }
    }
    if t.keys == KeysType::PrimaryKeys && !has_distribution {
        return Err(SchemaError::MissingDistribution);
    }
    for d in &t.distribution {
        if t.column(d).is_none() {
            return Err(SchemaError::UnknownDistributionColumn(d.clone()));
        }
        if t.keys == KeysType::PrimaryKeys
            && !t.key_columns.iter().any(|k| k.eq_ignore_ascii_case(d))
        {
            return Err(SchemaError::DistributionNotKey(d.clone()));
        }
    }
    Ok(())
}

/// One `MODIFY COLUMN`: the full new definition and an optional move.
pub type ColumnChange = (ColumnDef, Option<crate::sql::Position>);

/// The table after `ALTER TABLE ... MODIFY COLUMN`, or the FE's refusal (its DdlException
/// text, which the client sees after `ERROR 1064`).
///
/// Follows StarRocks 3.x's FE, `fe/fe-core/src/main/java/com/starrocks/alter/SchemaChangeHandler.java`:
/// `processModifyColumn` runs once per clause on a working copy of the schema, then
/// `createJob` compares the result with the table (`Column.checkSchemaChangeAllowed`,
/// distribution columns) and `AlterJobV2Builder.build` refuses a statement that changes
/// nothing. Per clause:
/// - a primary-key table's key columns cannot be modified (`Can not modify key column: c for
///   primary key table`);
/// - the column must exist (`Column[c] does not exists`), and so must an AFTER column;
/// - the column takes its whole definition from the clause (type, KEY, NULL, DEFAULT,
///   COMMENT: docs ALTER_TABLE "you must specify the full definition of the column");
/// - FIRST moves it to the front, AFTER x behind x, no position keeps its place.
///
/// Then, for every column that differs from the table's (`checkSchemaChangeAllowed`):
/// - the type change must be allowed ([`SrType::schema_change_allowed`]), else
///   `Can not change OLD to NEW`;
/// - NULL cannot become NOT NULL (`Can not change from nullable to non-nullable`; docs:
///   "Conversion from NULL to NOT NULL is not supported");
/// - the DEFAULT must stay the same (`Can not change default value`);
/// - a CHAR/VARCHAR cannot get shorter (`Cannot shorten string length`).
///
/// Not modelled: sort keys (`ORDER BY`, not kept by the double), partition columns,
/// rollups, generated and AUTO_INCREMENT columns. Making a primary-key table's value column
/// a KEY is refused as unsupported.
pub fn modify_columns(t: &TableDef, changes: &[ColumnChange]) -> Result<TableDef, ModifyError> {
    use crate::sql::Position;
    let mut columns = t.columns.clone();
    for (new, position) in changes {
        let base = t.column(&new.name).map(|(_, c)| c);
        if t.is_primary() {
            if base.is_some_and(|c| c.is_key) {
                return Err(ModifyError::Ddl(format!(
                    "Can not modify key column: {} for primary key table",
                    new.name
                )));
            }
            if new.is_key {
                return Err(ModifyError::Unsupported(
                    "MODIFY COLUMN ... KEY on a primary key table's value column",
                ));
            }
        }
        let Some(at) = columns
            .iter()
            .position(|c| c.name.eq_ignore_ascii_case(&new.name))
        else {
            return Err(ModifyError::Ddl(format!(
                "Column[{}] does not exists",
                new.name
            )));
        };
        let mut col = new.clone();
        // The column keeps its name as the table spells it, and its id.
        col.name = columns[at].name.clone();
        col.column_id = columns[at].column_id.clone();
        // Where the column goes, as an index into the schema before the move: -1 for FIRST.
        let after: Option<isize> = match position {
            None => None,
            Some(Position::First) => Some(-1),
            Some(Position::After(name)) => match columns
                .iter()
                .position(|c| c.name.eq_ignore_ascii_case(name))
            {
                Some(i) => Some(i as isize),
                None => return Err(ModifyError::Ddl(format!("Column[{name}] does not exists"))),
            },
        };
        match after {
            None => columns[at] = col,
            Some(last) if last > at as isize => {
                columns.insert(last as usize + 1, col);
                columns.remove(at);
            }
            Some(last) if last < at as isize => {
                columns.remove(at);
                columns.insert((last + 1) as usize, col);
            }
            Some(_) => {
                let name = match position {
                    Some(Position::After(n)) => n.clone(),
                    _ => col.name.clone(),
                };
                return Err(ModifyError::Ddl(format!(
                    "Column[{name}] modify position is invalid"
                )));
            }
        }
    }
    if columns == t.columns {
        return Err(ModifyError::Ddl(
            "Nothing is changed. please check your alter stmt.".into(),
        ));
    }
    // createJob 1: keys first, and at least one.
    let mut seen_value = false;
    for c in &columns {
        if c.is_key && seen_value {
            return Err(ModifyError::Ddl(format!(
                "Invalid column order. value should be after key. index[{}]",
                t.name
            )));
        }
        seen_value |= !c.is_key;
    }
    if !columns.iter().any(|c| c.is_key) {
        return Err(ModifyError::Ddl(format!(
            "No key column left. index[{}]",
            t.name
        )));
    }
    // createJob 2: each changed column against the table's.
    for new in &columns {
        let Some((_, old)) = t.column(&new.name) else {
            continue;
        };
        if old == new {
            continue;
        }
        if !old.ty.schema_change_allowed(&new.ty) {
            return Err(ModifyError::Ddl(format!(
                "Can not change {} to {}",
                old.ty.fe_name(),
                new.ty.fe_name()
            )));
        }
        if old.nullable && !new.nullable {
            return Err(ModifyError::Ddl(
                "Can not change from nullable to non-nullable".into(),
            ));
        }
        if old.default != new.default {
            return Err(ModifyError::Ddl("Can not change default value".into()));
        }
        let len = |ty: &SrType| match ty {
            SrType::Char(n) | SrType::Varchar(n) => Some(*n),
            _ => None,
        };
        if let (Some(from), Some(to)) = (len(&old.ty), len(&new.ty)) {
            if from > to {
                return Err(ModifyError::Ddl("Cannot shorten string length".into()));
            }
        }
    }
    // createJob 4: distribution columns cannot change.
    for d in &t.distribution {
        let old = t.column(d).map(|(_, c)| c);
        let new = columns.iter().find(|c| c.name.eq_ignore_ascii_case(d));
        if let (Some(old), Some(new)) = (old, new) {
            if old != new {
                return Err(ModifyError::Ddl(format!(
                    "Can not modify distribution column[{}]. index[{}]",
                    old.name, t.name
                )));
            }
        }
    }
    let mut def = t.clone();
    if !def.is_primary() {
        def.key_columns = columns
            .iter()
            .filter(|c| c.is_key)
            .map(|c| c.name.clone())
            .collect();
    }
    def.columns = columns;
    Ok(def)
}

/// Why a MODIFY COLUMN is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModifyError {
    /// StarRocks refuses it with this text.
    Ddl(String),
    /// StarRocks may accept it; the double does not implement it.
    Unsupported(&'static str),
}

/// Whether a MODIFY COLUMN can skip rewriting data in shared-data with fast schema
/// evolution (`SchemaChangeHandler.processModifyColumn` returns true): neither the old nor
/// the new column is a key, both types are scalar, the old one is not a DECIMAL, and the
/// zone maps stay valid ([`SrType::zonemap_reusable`]). In shared-nothing a MODIFY always
/// rewrites data (StarRocks 3.x–4.0).
pub fn modify_is_metadata_only(t: &TableDef, new: &TableDef) -> bool {
    new.columns.iter().all(|n| {
        let Some((_, o)) = t.column(&n.name) else {
            return true;
        };
        if o == n {
            return true;
        }
        !o.is_key
            && !n.is_key
            && !matches!(o.ty, SrType::Array(_) | SrType::Decimal { .. })
            && !matches!(n.ty, SrType::Array(_))
            && o.ty.zonemap_reusable(&n.ty)
    })
}

/// The table after `ALTER TABLE ... DROP COLUMN a[, DROP COLUMN b]`, or the FE's refusal.
///
/// Follows StarRocks 3.x's FE, `SchemaChangeHandler.processDropColumn` (once per clause, on a
/// working copy of the schema) and then `createJob`'s checks on the result:
/// - a primary-key table's key column cannot be dropped (`Can not drop key column in primary
///   data model table`); a duplicate-key table's can, as long as a key column is left (`No key
///   column left. index[t]`);
/// - the column must exist in the working schema, so dropping it twice in one statement fails
///   the second time (`Column does not exists: c`);
/// - a distribution column cannot be dropped (`Distribution column[c] cannot be dropped.
///   index[t]`, `checkDistributionColumnChange`).
///
/// Not modelled: sort keys (`Can not drop sort column in primary data model table`),
/// partition columns, rollups and materialized views, which the double does not keep.
pub fn drop_columns(t: &TableDef, names: &[String]) -> Result<TableDef, ModifyError> {
    let mut columns = t.columns.clone();
    for name in names {
        if t.is_primary() && t.column(name).is_some_and(|(_, c)| c.is_key) {
            return Err(ModifyError::Ddl(
                "Can not drop key column in primary data model table".into(),
            ));
        }
        let Some(at) = columns
            .iter()
            .position(|c| c.name.eq_ignore_ascii_case(name))
        else {
            return Err(ModifyError::Ddl(format!("Column does not exists: {name}")));
        };
        columns.remove(at);
    }
    if !columns.iter().any(|c| c.is_key) {
        return Err(ModifyError::Ddl(format!(
            "No key column left. index[{}]",
            t.name
        )));
    }
    for d in &t.distribution {
        if !columns.iter().any(|c| c.name.eq_ignore_ascii_case(d)) {
            return Err(ModifyError::Ddl(format!(
                "Distribution column[{d}] cannot be dropped. index[{}]",
                t.name
            )));
        }
    }
    let mut def = t.clone();
    def.key_columns = columns
        .iter()
        .filter(|c| c.is_key)
        .map(|c| c.name.clone())
        .collect();
    def.columns = columns;
    Ok(def)
}

/// Whether a DROP COLUMN is metadata-only under fast schema evolution: no dropped column is
/// a key (`processDropColumn` clears `fastSchemaEvolution` for a key column of any table
/// model).
pub fn drop_is_metadata_only(t: &TableDef, names: &[String]) -> bool {
    names
        .iter()
        .all(|n| t.column(n).is_none_or(|(_, c)| !c.is_key))
}

/// Why `ALTER TABLE ... RENAME COLUMN` is refused, with StarRocks' error code and words
/// (`LocalMetastore.renameColumn`, `ErrorCode`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenameError {
    /// `ERR_BAD_FIELD_ERROR` (1054).
    #[error("Unknown column '{column}' in '{table}'")]
    UnknownColumn { column: String, table: String },
    /// `ERR_DUP_FIELDNAME` (1060), also for a rename to the column's own name (the new name
    /// is looked up case-insensitively).
    #[error("Duplicate column name '{0}'")]
    Duplicate(String),
}

impl RenameError {
    /// The MySQL error number StarRocks reports.
    pub fn code(&self) -> u16 {
        match self {
            RenameError::UnknownColumn { .. } => 1054,
            RenameError::Duplicate(_) => 1060,
        }
    }
}

/// The table after `ALTER TABLE ... RENAME COLUMN from TO to`.
///
/// StarRocks (from 3.3.2) renames synchronously and in metadata only: rows are addressed by
/// column unique ids, so nothing is rewritten (`LocalMetastore.renameColumn` logs a
/// `ColumnRenameInfo` and calls `OlapTable.renameColumn`). It checks only that the column
/// exists and that the new name is free; key, distribution and value columns may all be
/// renamed, and the key and distribution lists follow the new name. The column keeps its id
/// (the name it was created under), which a later ADD COLUMN may not reuse.
pub fn rename_column(t: &TableDef, from: &str, to: &str) -> Result<TableDef, RenameError> {
    let Some((at, old)) = t.column(from) else {
        return Err(RenameError::UnknownColumn {
            column: from.to_owned(),
            table: t.name.clone(),
        });
    };
    if t.column(to).is_some() {
        return Err(RenameError::Duplicate(to.to_owned()));
    }
    let old_name = old.name.clone();
    let mut def = t.clone();
    let renamed = &mut def.columns[at];
    if renamed.column_id.is_none() {
        renamed.column_id = Some(old_name.clone());
    }
    renamed.name = to.to_owned();
    for list in [&mut def.key_columns, &mut def.distribution] {
        for n in list.iter_mut() {
            if n.eq_ignore_ascii_case(&old_name) {
                *n = to.to_owned();
            }
        }
    }
    Ok(def)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, ty: SrType, nullable: bool) -> ColumnDef {
        ColumnDef {
            name: name.into(),
            ty,
            nullable,
            default: None,
            comment: String::new(),
            is_key: false,
            column_id: None,
        }
    }

    fn table(cols: Vec<ColumnDef>, keys: &[&str]) -> TableDef {
        TableDef {
            id: 1,
            db: "d".into(),
            name: "t".into(),
            columns: cols,
            keys: KeysType::PrimaryKeys,
            key_columns: keys.iter().map(|s| s.to_string()).collect(),
            distribution: keys.iter().map(|s| s.to_string()).collect(),
            buckets: None,
            properties: vec![],
            comment: String::new(),
            created_at: 0,
        }
    }

    fn modify(t: &TableDef, col: ColumnDef) -> Result<TableDef, ModifyError> {
        modify_columns(t, &[(col, None)])
    }

    fn ddl_error(r: Result<TableDef, ModifyError>) -> String {
        match r {
            Err(ModifyError::Ddl(m)) => m,
            other => panic!("expected a DDL error, got {other:?}"),
        }
    }

    fn pk_table() -> TableDef {
        let mut id = col("id", SrType::BigInt, false);
        id.is_key = true;
        table(
            vec![
                id,
                col("v", SrType::Varchar(8), true),
                col("n", SrType::TinyInt, false),
                col("m", SrType::Int, false),
            ],
            &["id"],
        )
    }

    #[test]
    fn modify_widens_varchar_and_integers_and_drops_not_null() {
        let t = pk_table();
        let wide = modify(&t, col("v", SrType::Varchar(64), true)).unwrap();
        assert_eq!(wide.columns[1].ty, SrType::Varchar(64));
        for ty in [
            SrType::SmallInt,
            SrType::Int,
            SrType::BigInt,
            SrType::LargeInt,
        ] {
            let w = modify(&t, col("n", ty.clone(), false)).unwrap();
            assert_eq!(w.columns[2].ty, ty);
        }
        let nullable = modify(&t, col("M", SrType::Int, true)).unwrap();
        assert!(nullable.columns[3].nullable);
        assert_eq!(nullable.columns[3].name, "m", "keeps the table's spelling");
        assert_eq!(nullable.key_columns, vec!["id".to_string()]);
    }

    #[test]
    fn modify_refuses_what_starrocks_refuses() {
        let t = pk_table();
        let mut key = col("id", SrType::LargeInt, false);
        key.is_key = true;
        assert_eq!(
            ddl_error(modify(&t, key)),
            "Can not modify key column: id for primary key table"
        );
        assert_eq!(
            ddl_error(modify(&t, col("v", SrType::Varchar(4), true))),
            "Cannot shorten string length"
        );
        assert_eq!(
            ddl_error(modify(&t, col("m", SrType::SmallInt, false))),
            "Can not change INT to SMALLINT"
        );
        assert_eq!(
            ddl_error(modify(&t, col("n", SrType::Date, false))),
            "Can not change TINYINT to DATE"
        );
        assert_eq!(
            ddl_error(modify(&t, col("v", SrType::Varchar(64), false))),
            "Can not change from nullable to non-nullable"
        );
        let mut with_default = col("m", SrType::BigInt, false);
        with_default.default = Some(DefaultValue::Literal("0".into()));
        assert_eq!(
            ddl_error(modify(&t, with_default)),
            "Can not change default value"
        );
        assert_eq!(
            ddl_error(modify(&t, col("nope", SrType::Int, true))),
            "Column[nope] does not exists"
        );
        assert_eq!(
            ddl_error(modify(&t, col("v", SrType::Varchar(8), true))),
            "Nothing is changed. please check your alter stmt."
        );
        let mut as_key = col("v", SrType::Varchar(8), false);
        as_key.is_key = true;
        assert!(matches!(
            modify(&t, as_key),
            Err(ModifyError::Unsupported(_))
        ));
    }

    #[test]
    fn modify_moves_columns_like_starrocks() {
        let t = pk_table();
        let moved = modify_columns(
            &t,
            &[(
                col("m", SrType::Int, false),
                Some(crate::sql::Position::After("id".into())),
            )],
        )
        .unwrap();
        let names: Vec<&str> = moved.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, vec!["id", "m", "v", "n"]);
        let first = modify_columns(
            &t,
            &[(
                col("m", SrType::Int, false),
                Some(crate::sql::Position::First),
            )],
        );
        assert_eq!(
            ddl_error(first),
            "Invalid column order. value should be after key. index[t]"
        );
        let itself = modify_columns(
            &t,
            &[(
                col("m", SrType::BigInt, false),
                Some(crate::sql::Position::After("m".into())),
            )],
        );
        assert_eq!(ddl_error(itself), "Column[m] modify position is invalid");
    }

    #[test]
    fn modify_of_a_duplicate_key_table_checks_distribution_and_keys() {
        let mut k = col("k", SrType::Int, false);
        k.is_key = true;
        let mut t = table(vec![k, col("d", SrType::Int, true)], &["k"]);
        t.keys = KeysType::DupKeys;
        t.distribution = vec!["d".into()];
        assert_eq!(
            ddl_error(modify(&t, col("d", SrType::BigInt, true))),
            "Can not modify distribution column[d]. index[t]"
        );
        // Without KEY the key column would become a value column: no key left.
        assert_eq!(
            ddl_error(modify(&t, col("k", SrType::BigInt, false))),
            "No key column left. index[t]"
        );
        let mut wider = col("k", SrType::BigInt, false);
        wider.is_key = true;
        let w = modify(&t, wider).unwrap();
        assert_eq!(w.key_columns, vec!["k".to_string()]);
    }

    #[test]
    fn only_zone_map_safe_value_changes_are_metadata_only() {
        let t = pk_table();
        let int = modify(&t, col("n", SrType::Int, false)).unwrap();
        assert!(modify_is_metadata_only(&t, &int));
        let text = modify(&t, col("n", SrType::Varchar(10), false)).unwrap();
        assert!(!modify_is_metadata_only(&t, &text));
    }

    #[test]
    fn drop_removes_value_columns_and_refuses_keys_like_starrocks() {
        let t = pk_table();
        let dropped = drop_columns(&t, &["V".into(), "m".into()]).unwrap();
        let names: Vec<&str> = dropped.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, vec!["id", "n"]);
        assert!(drop_is_metadata_only(&t, &["v".into()]));
        let err = |r: Result<TableDef, ModifyError>| match r {
            Err(ModifyError::Ddl(m)) => m,
            other => panic!("expected a DDL error, got {other:?}"),
        };
        assert_eq!(
            err(drop_columns(&t, &["id".into()])),
            "Can not drop key column in primary data model table"
        );
        assert_eq!(
            err(drop_columns(&t, &["nope".into()])),
            "Column does not exists: nope"
        );
        assert_eq!(
            err(drop_columns(&t, &["v".into(), "v".into()])),
            "Column does not exists: v"
        );
    }

    #[test]
    fn drop_of_a_duplicate_key_table_keeps_a_key_and_the_distribution() {
        let mut k = col("k", SrType::Int, false);
        k.is_key = true;
        let mut k2 = col("k2", SrType::Int, false);
        k2.is_key = true;
        let mut t = table(vec![k, k2, col("d", SrType::Int, true)], &["k", "k2"]);
        t.keys = KeysType::DupKeys;
        t.distribution = vec!["k".into()];
        let fewer = drop_columns(&t, &["k2".into()]).unwrap();
        assert_eq!(fewer.key_columns, vec!["k".to_string()]);
        assert!(!drop_is_metadata_only(&t, &["k2".into()]));
        assert_eq!(
            drop_columns(&t, &["k".into()]),
            Err(ModifyError::Ddl(
                "Distribution column[k] cannot be dropped. index[t]".into()
            ))
        );
        assert_eq!(
            drop_columns(&t, &["k".into(), "k2".into()]),
            Err(ModifyError::Ddl("No key column left. index[t]".into()))
        );
    }

    #[test]
    fn rename_follows_into_keys_and_distribution_and_refuses_taken_names() {
        let t = pk_table();
        let r = rename_column(&t, "ID", "key_id").unwrap();
        assert_eq!(r.columns[0].name, "key_id");
        assert_eq!(r.key_columns, vec!["key_id".to_string()]);
        assert_eq!(r.distribution, vec!["key_id".to_string()]);
        assert_eq!(r.columns[0].ty, SrType::BigInt);
        let v = rename_column(&t, "v", "label").unwrap();
        assert_eq!(v.columns[1].name, "label");
        assert_eq!(v.key_columns, vec!["id".to_string()]);
        let missing = rename_column(&t, "nope", "x").unwrap_err();
        assert_eq!(missing.to_string(), "Unknown column 'nope' in 't'");
        assert_eq!(missing.code(), 1054);
        let taken = rename_column(&t, "v", "M").unwrap_err();
        assert_eq!(taken.to_string(), "Duplicate column name 'M'");
        assert_eq!(taken.code(), 1060);
        let same = rename_column(&t, "v", "v").unwrap_err();
        assert_eq!(same, RenameError::Duplicate("v".into()));
        assert_eq!(v.columns[1].id(), "v", "the id stays the created name");
        let back = rename_column(&v, "label", "tag").unwrap();
        assert_eq!(back.columns[1].column_id.as_deref(), Some("v"));
        let modified = modify(&back, col("tag", SrType::Varchar(16), true)).unwrap();
        assert_eq!(modified.columns[1].id(), "v", "MODIFY keeps it");
    }

    #[test]
    fn modify_allows_the_widenings_a_cdc_pipeline_asks_for_and_no_narrowing() {
        let dec = |precision, scale| SrType::Decimal { precision, scale };
        let widen = [
            (SrType::SmallInt, SrType::Int),
            (SrType::Int, SrType::BigInt),
            (SrType::Varchar(10), SrType::Varchar(20)),
            (
                SrType::Varchar(10),
                SrType::Varchar(crate::types::STRING_LEN),
            ),
            (dec(10, 2), dec(12, 2)),
            (dec(10, 2), dec(12, 4)),
            (SrType::Float, SrType::Double),
        ];
        for (from, to) in widen {
            let t = table(vec![key_col(), col("c", from.clone(), true)], &["id"]);
            let w = modify(&t, col("c", to.clone(), true))
                .unwrap_or_else(|e| panic!("{from:?} -> {to:?}: {e:?}"));
            assert_eq!(w.columns[1].ty, to);
        }
        let narrow = [
            (SrType::BigInt, SrType::Int, "Can not change BIGINT to INT"),
            (
                SrType::Double,
                SrType::Float,
                "Can not change DOUBLE to FLOAT",
            ),
            (
                dec(12, 4),
                dec(12, 2),
                "Can not change DECIMAL64(12,4) to DECIMAL64(12,2)",
            ),
            (
                SrType::Varchar(20),
                SrType::Varchar(10),
                "Cannot shorten string length",
            ),
            (
                SrType::DateTime,
                SrType::DateTime,
                "Nothing is changed. please check your alter stmt.",
            ),
        ];
        for (from, to, words) in narrow {
            let t = table(vec![key_col(), col("c", from, true)], &["id"]);
            assert_eq!(ddl_error(modify(&t, col("c", to, true))), words);
        }
    }

    fn key_col() -> ColumnDef {
        let mut id = col("id", SrType::BigInt, false);
        id.is_key = true;
        id
    }

    #[test]
    fn primary_key_must_be_a_prefix() {
        let t = table(
            vec![
                col("v", SrType::Int, true),
                col("id", SrType::BigInt, false),
            ],
            &["id"],
        );
        assert!(matches!(
            validate_table(&t, true),
            Err(SchemaError::KeyNotPrefix { .. })
        ));
    }

    #[test]
    fn primary_key_rejects_decimal_and_nullable() {
        let t = table(
            vec![col(
                "id",
                SrType::Decimal {
                    precision: 10,
                    scale: 2,
                },
                false,
            )],
            &["id"],
        );
        assert!(matches!(
            validate_table(&t, true),
            Err(SchemaError::KeyTypeNotAllowed { .. })
        ));
        let t = table(vec![col("id", SrType::BigInt, true)], &["id"]);
        assert!(matches!(
            validate_table(&t, true),
            Err(SchemaError::NullableKey(_))
        ));
    }

    #[test]
    fn primary_key_table_needs_distribution() {
        let t = table(vec![col("id", SrType::BigInt, false)], &["id"]);
        assert_eq!(
            validate_table(&t, false),
            Err(SchemaError::MissingDistribution)
        );
        assert_eq!(validate_table(&t, true), Ok(()));
    }
}
