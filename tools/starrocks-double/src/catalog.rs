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
}

impl ColumnDef {
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
