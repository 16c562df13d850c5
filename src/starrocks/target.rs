//! The target table as StarRocks has it, as far as encoding a load body depends on it.
//!
//! Stream Load matches JSON keys to columns by their exact spelling, so a body must use the
//! StarRocks column's own name; an ARRAY column must get values of its own nesting, or
//! StarRocks loads the elements as NULL; and a primary key must fit `primary_key_limit_size`.
//! The sink reads these from `information_schema` at start and after each schema change; the
//! encoders ([`crate::starrocks::encode`]) look them up here.

use std::collections::HashMap;

/// One column as StarRocks stores it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetColumn {
    /// The sink's own name for the column (it may differ from the source's in case only).
    pub name: String,
    /// For an array column, how many array levels it nests; `None` for other types (and for
    /// types that hold any JSON, which take arrays of any depth).
    pub array_depth: Option<u8>,
    /// As part of a primary key: its encoded width in bytes when fixed (numbers, dates);
    /// `None` for strings, whose width is their length.
    pub key_width: Option<u8>,
}

/// How StarRocks names and shapes the columns of one table, looked up by the source's column
/// name without regard to case (StarRocks' names are case-insensitive in SQL).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ColumnTargets {
    by_name: HashMap<String, TargetColumn>,
    /// The most bytes an encoded primary key may take (0: no limit).
    pub key_limit: usize,
}

impl ColumnTargets {
    /// Records `column` for the source column `source_name`.
    pub fn insert(&mut self, source_name: &str, column: TargetColumn) {
        self.by_name.insert(source_name.to_lowercase(), column);
    }

    /// The target column for `source_name`, if the sink has it.
    pub fn get(&self, source_name: &str) -> Option<&TargetColumn> {
        self.by_name.get(&source_name.to_lowercase())
    }

    /// Whether the sink has a column for `source_name`.
    pub fn contains(&self, source_name: &str) -> bool {
        self.get(source_name).is_some()
    }

    /// The sink's name for `source_name` (the source's own when the sink has none yet).
    pub fn name<'a>(&'a self, source_name: &'a str) -> &'a str {
        self.get(source_name)
            .map_or(source_name, |c| c.name.as_str())
    }
}
