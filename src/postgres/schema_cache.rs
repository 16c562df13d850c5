//! Relation schemas, keyed by relation OID, as pgoutput describes them.
//!
//! pgoutput sends a Relation message before the first change of a table in a session, and again
//! whenever the table's definition changed. Change messages carry only the relation OID and
//! positional values, so the cache is what gives them names, types and a primary key. A Relation
//! message that differs from the cached one is reported as a schema change, so that sinks can
//! react (add a column, or stop with a clear error) before rows with the new shape arrive.
//!
//! The primary key comes from the catalog (read at setup), not from pgoutput's "key" flags:
//! under REPLICA IDENTITY FULL every column is flagged as key.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::TableName;
use crate::pipeline::change::{ColumnSchema, RelId, TableSchema};
use crate::postgres::pgoutput::Relation;
use crate::value::ValueKind;

// What setup reads from the catalog is part of the pipeline's source-neutral model.
pub use crate::pipeline::change::{CatalogColumn, TableCatalog};

/// The result of feeding a Relation message to the cache.
#[derive(Debug)]
pub enum RelationUpdate {
    /// First sighting of a replicated table in this session.
    New(Arc<TableSchema>),
    /// Same definition as before (PostgreSQL resends Relation messages, e.g. after a reconnect).
    Unchanged(Arc<TableSchema>),
    /// The definition changed.
    Changed {
        /// Before.
        old: Arc<TableSchema>,
        /// After.
        new: Arc<TableSchema>,
    },
    /// The relation is not in `TABLES` (e.g. a shared publication): its changes are skipped.
    Ignored,
}

/// A relation cannot be replicated as described.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    /// A primary-key column is not among the replicated columns any more.
    #[error(
        "primary key column {column:?} of table {table} is not in the replicated columns \
         (was it renamed or dropped?); restore it or restart dbmazz after updating the sink"
    )]
    MissingKeyColumn {
        /// Table.
        table: TableName,
        /// Key column.
        column: String,
    },
}

/// Relation OID → schema, for the tables in `TABLES`.
#[derive(Debug, Default)]
pub struct SchemaCache {
    keys: HashMap<TableName, Vec<String>>,
    types: HashMap<u32, ValueKind>,
    by_id: hashbrown::HashMap<RelId, Option<Arc<TableSchema>>>,
}

impl SchemaCache {
    /// A cache for these tables; `types` resolves non-built-in type OIDs (enums, domains,
    /// arrays of user types).
    pub fn new(tables: &[TableCatalog], types: HashMap<u32, ValueKind>) -> Self {
        SchemaCache {
            keys: tables
                .iter()
                .map(|t| (t.name.clone(), t.key_columns.clone()))
                .collect(),
            types,
            by_id: hashbrown::HashMap::new(),
        }
    }

    /// Applies a Relation message.
    pub fn apply(&mut self, rel: &Relation) -> Result<RelationUpdate, SchemaError> {
        let name = TableName::new(rel.namespace.clone(), rel.name.clone());
        let Some(key_names) = self.keys.get(&name) else {
            self.by_id.insert(rel.rel_id, None);
            return Ok(RelationUpdate::Ignored);
        };
        let columns: Vec<ColumnSchema> = rel
            .columns
            .iter()
            .map(|c| ColumnSchema {
                name: c.name.clone(),
                type_oid: c.type_oid,
                type_modifier: c.type_modifier,
                kind: ValueKind::for_oid(c.type_oid, &self.types),
            })
            .collect();
        let key = if key_names.is_empty() {
            // No catalog key (should not happen: setup refuses such tables); use pgoutput's flags.
            rel.columns
                .iter()
                .enumerate()
                .filter(|(_, c)| c.is_key())
                .map(|(i, _)| i)
                .collect()
        } else {
            key_names
                .iter()
                .map(|k| {
                    columns.iter().position(|c| &c.name == k).ok_or_else(|| {
                        SchemaError::MissingKeyColumn {
                            table: name.clone(),
                            column: k.clone(),
                        }
                    })
                })
                .collect::<Result<Vec<_>, _>>()?
        };
        let schema = Arc::new(TableSchema {
            rel_id: rel.rel_id,
            name,
            columns,
            key,
            replica_identity: rel.replica_identity,
        });
        let update = match self.by_id.get(&rel.rel_id) {
            Some(Some(old)) if **old == *schema => RelationUpdate::Unchanged(old.clone()),
            Some(Some(old)) => RelationUpdate::Changed {
                old: old.clone(),
                new: schema.clone(),
            },
            _ => RelationUpdate::New(schema.clone()),
        };
        self.by_id.insert(rel.rel_id, Some(schema));
        Ok(update)
    }

    /// The schema of a relation: `None` if it was never described, `Some(None)` if it is
    /// ignored.
    pub fn get(&self, rel_id: RelId) -> Option<Option<&Arc<TableSchema>>> {
        self.by_id.get(&rel_id).map(Option::as_ref)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::postgres::pgoutput::Column;
    use crate::value::Scalar;

    fn rel(cols: &[(&str, u32)]) -> Relation {
        Relation {
            xid: None,
            rel_id: RelId(42),
            namespace: "public".into(),
            name: "orders".into(),
            replica_identity: b'd',
            columns: cols
                .iter()
                .map(|(n, t)| Column {
                    flags: 0,
                    name: n.to_string(),
                    type_oid: *t,
                    type_modifier: -1,
                })
                .collect(),
        }
    }

    fn cache() -> SchemaCache {
        SchemaCache::new(
            &[TableCatalog {
                name: TableName::new("public", "orders"),
                key_columns: vec!["id".into()],
                columns: Vec::new(),
            }],
            HashMap::from([(99_999, ValueKind::Scalar(Scalar::Text))]),
        )
    }

    #[test]
    fn added_column_is_reported_as_a_change() {
        let mut c = cache();
        assert!(matches!(
            c.apply(&rel(&[("id", 20), ("note", 25)])).unwrap(),
            RelationUpdate::New(_)
        ));
        assert!(matches!(
            c.apply(&rel(&[("id", 20), ("note", 25)])).unwrap(),
            RelationUpdate::Unchanged(_)
        ));
        match c
            .apply(&rel(&[("id", 20), ("note", 25), ("extra", 23)]))
            .unwrap()
        {
            RelationUpdate::Changed { old, new } => {
                assert_eq!(old.columns.len(), 2);
                assert_eq!(new.columns.len(), 3);
                assert_eq!(new.key, vec![0]);
            }
            other => panic!("expected a change, got {other:?}"),
        }
    }

    #[test]
    fn key_comes_from_the_catalog_not_the_flags() {
        let mut c = cache();
        let mut r = rel(&[("note", 25), ("id", 20)]);
        for col in &mut r.columns {
            col.flags = 1; // REPLICA IDENTITY FULL flags every column
        }
        let RelationUpdate::New(s) = c.apply(&r).unwrap() else {
            panic!()
        };
        assert_eq!(s.key, vec![1]);
        assert_eq!(s.columns[1].kind, ValueKind::Scalar(Scalar::Int));
    }

    #[test]
    fn dropped_key_column_is_an_error_naming_it() {
        let mut c = cache();
        let err = c.apply(&rel(&[("note", 25)])).unwrap_err();
        assert!(err.to_string().contains("\"id\""));
        assert!(err.to_string().contains("public.orders"));
    }

    #[test]
    fn tables_outside_the_list_are_ignored() {
        let mut c = cache();
        let mut r = rel(&[("id", 20)]);
        r.name = "other".into();
        assert!(matches!(c.apply(&r).unwrap(), RelationUpdate::Ignored));
        assert!(matches!(c.get(RelId(42)), Some(None)));
        assert!(c.get(RelId(7)).is_none());
    }
}
