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

use crate::checkpoint::StoredSchema;
use crate::config::{TableName, TableRenamePolicy};
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
    /// The table was renamed or moved, and `SCHEMA_TABLE_RENAME=stop`.
    #[error(
        "table {table} (relation OID {oid}) is now {now} in PostgreSQL (renamed or moved with \
         ALTER TABLE … RENAME / SET SCHEMA), and SCHEMA_TABLE_RENAME=stop: nothing of its \
         changes from then on was written. Either rename it back (ALTER TABLE {now} \
         RENAME TO …/SET SCHEMA …), or restart with SCHEMA_TABLE_RENAME=follow to keep loading \
         it into the same target"
    )]
    TableRenamed {
        /// The table as `TABLES` names it.
        table: TableName,
        /// Its relation OID.
        oid: u32,
        /// Its new name.
        now: TableName,
    },
    /// The primary key changed: what identifies a row is not what the target was built on.
    #[error(
        "the primary key of table {table} changed in PostgreSQL from ({was}) to ({now}) (at the \
         change whose Relation message is at LSN {lsn}); a changed key changes what a row is, \
         so dbmazz stops before writing any row keyed the new way. Restore the key \
         (ALTER TABLE {table} DROP CONSTRAINT …, ADD PRIMARY KEY ({was})), or rebuild the \
         target: drop the StarRocks table and this job's slot and checkpoint, then start again \
         (a fresh snapshot)"
    )]
    KeyChanged {
        /// Table.
        table: TableName,
        /// The key columns dbmazz knows.
        was: String,
        /// The ones PostgreSQL now flags.
        now: String,
        /// Where.
        lsn: crate::Lsn,
    },
    /// The replica identity changed to one that does not carry the primary key.
    #[error(
        "the replica identity of table {table} changed in PostgreSQL to {now} (at LSN {lsn}); \
         deletes and key changes would no longer carry the primary key dbmazz keys rows by. \
         Set it back: ALTER TABLE {table} REPLICA IDENTITY DEFAULT (or FULL), then restart"
    )]
    IdentityChanged {
        /// Table.
        table: TableName,
        /// The new identity, spelt as SQL.
        now: &'static str,
        /// Where.
        lsn: crate::Lsn,
    },
}

/// A replicated table renamed (or moved to another schema) in the source, followed by its OID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableRename {
    /// The table as `TABLES` names it (its target does not change).
    pub table: TableName,
    /// Its relation OID.
    pub rel_id: RelId,
    /// Its name before.
    pub from: TableName,
    /// Its name now.
    pub to: TableName,
}

/// A configured table: its identity, and the key the catalog gave at start.
#[derive(Debug)]
struct Tracked {
    name: TableName,
    key: Vec<String>,
    /// Its name in the source as last seen.
    source_name: TableName,
}

/// Relation OID → schema, for the tables in `TABLES`.
///
/// Tables are known by their relation OID (read from the catalog at start), so a table renamed
/// or moved to another schema is still recognised. A Relation message with an OID dbmazz does
/// not know but the name of a configured table (the table was dropped and created again while
/// changes of the old one were still in the WAL) is taken by its name, as before.
#[derive(Debug, Default)]
pub struct SchemaCache {
    by_oid: HashMap<RelId, Tracked>,
    keys: HashMap<TableName, Vec<String>>,
    types: HashMap<u32, ValueKind>,
    by_id: hashbrown::HashMap<RelId, Option<Arc<TableSchema>>>,
    rename: TableRenamePolicy,
}

impl SchemaCache {
    /// A cache for these tables; `types` resolves non-built-in type OIDs (enums, domains,
    /// arrays of user types).
    pub fn new(tables: &[TableCatalog], types: HashMap<u32, ValueKind>) -> Self {
        SchemaCache {
            by_oid: tables
                .iter()
                .map(|t| {
                    (
                        t.oid,
                        Tracked {
                            name: t.name.clone(),
                            key: t.key_columns.clone(),
                            source_name: t.source_name.clone(),
                        },
                    )
                })
                .collect(),
            keys: tables
                .iter()
                .map(|t| (t.name.clone(), t.key_columns.clone()))
                .collect(),
            types,
            by_id: hashbrown::HashMap::new(),
            rename: TableRenamePolicy::Follow,
        }
    }

    /// Sets what a renamed table does (`SCHEMA_TABLE_RENAME`).
    pub fn with_rename_policy(mut self, policy: TableRenamePolicy) -> Self {
        self.rename = policy;
        self
    }

    /// Seeds the schema a table had when dbmazz last applied it (persisted next to the
    /// checkpoint), so that the first Relation message of the session is compared with it: a
    /// change made while dbmazz was stopped is then a [`RelationUpdate::Changed`] like one made
    /// while it runs.
    pub fn seed(&mut self, schema: Arc<TableSchema>) {
        if self.by_oid.contains_key(&schema.rel_id) {
            self.by_id.insert(schema.rel_id, Some(schema));
        }
    }

    /// Seeds a version from the schema log (see [`seed`](Self::seed)); its name in the source
    /// then becomes the one a rename is detected against. Returns whether the table is one of
    /// this job's (by OID and name).
    pub fn seed_stored(&mut self, stored: &StoredSchema) -> bool {
        let rel_id = RelId(stored.rel_oid);
        let Some(t) = self.by_oid.get_mut(&rel_id) else {
            return false;
        };
        if t.name != stored.table {
            return false;
        }
        t.source_name = stored.source_name.clone();
        let columns: Vec<ColumnSchema> = stored
            .columns
            .iter()
            .map(|(name, type_oid, type_modifier)| ColumnSchema {
                name: name.clone(),
                type_oid: *type_oid,
                type_modifier: *type_modifier,
                kind: ValueKind::for_oid(*type_oid, &self.types),
            })
            .collect();
        let key: Option<Vec<usize>> = stored
            .key
            .iter()
            .map(|k| columns.iter().position(|c| &c.name == k))
            .collect();
        let Some(key) = key else {
            return false;
        };
        self.by_id.insert(
            rel_id,
            Some(Arc::new(TableSchema {
                rel_id,
                name: stored.table.clone(),
                columns,
                key,
                replica_identity: stored.replica_identity,
            })),
        );
        true
    }

    /// The table's name in the source as last seen (for the schema log).
    pub fn source_name(&self, rel_id: RelId) -> Option<&TableName> {
        self.by_oid.get(&rel_id).map(|t| &t.source_name)
    }

    /// Applies a Relation message at `lsn`; reports a rename of a replicated table, which
    /// `SCHEMA_TABLE_RENAME=follow` keeps streaming.
    pub fn apply_at(
        &mut self,
        rel: &Relation,
        lsn: crate::Lsn,
    ) -> Result<(RelationUpdate, Option<TableRename>), SchemaError> {
        let source_name = TableName::new(rel.namespace.clone(), rel.name.clone());
        let (name, key_names, renamed) = match self.by_oid.get_mut(&rel.rel_id) {
            Some(t) => {
                let renamed = (t.source_name != source_name).then(|| TableRename {
                    table: t.name.clone(),
                    rel_id: rel.rel_id,
                    from: t.source_name.clone(),
                    to: source_name.clone(),
                });
                if renamed.is_some() && self.rename == TableRenamePolicy::Stop {
                    return Err(SchemaError::TableRenamed {
                        table: t.name.clone(),
                        oid: rel.rel_id.0,
                        now: source_name,
                    });
                }
                t.source_name = source_name.clone();
                (t.name.clone(), t.key.clone(), renamed)
            }
            None => match self.keys.get(&source_name) {
                Some(k) => (source_name.clone(), k.clone(), None),
                None => {
                    self.by_id.insert(rel.rel_id, None);
                    return Ok((RelationUpdate::Ignored, None));
                }
            },
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
        if matches!(rel.replica_identity, b'n' | b'i') {
            return Err(SchemaError::IdentityChanged {
                table: name,
                now: if rel.replica_identity == b'n' {
                    "NOTHING"
                } else {
                    "USING INDEX"
                },
                lsn,
            });
        }
        // The key dbmazz streamed the table with until now (the previous description, or the
        // version seeded from the schema log), else the catalog's at start: a key changed while
        // dbmazz was stopped is then seen too.
        let key_names: Vec<String> = match self.by_id.get(&rel.rel_id) {
            Some(Some(prev)) if !prev.key.is_empty() => prev
                .key
                .iter()
                .filter_map(|&i| prev.columns.get(i).map(|c| c.name.clone()))
                .collect(),
            _ => key_names,
        };
        let key = if key_names.is_empty() {
            // No catalog key (should not happen: setup refuses such tables); use pgoutput's flags.
            rel.columns
                .iter()
                .enumerate()
                .filter(|(_, c)| c.is_key())
                .map(|(i, _)| i)
                .collect()
        } else {
            if rel.replica_identity == b'd' {
                // Under the default identity pgoutput flags the primary key's columns: a
                // different set means the key changed.
                let flagged: Vec<&str> = rel
                    .columns
                    .iter()
                    .filter(|c| c.is_key())
                    .map(|c| c.name.as_str())
                    .collect();
                let mut a: Vec<&str> = flagged.clone();
                let mut b: Vec<&str> = key_names.iter().map(String::as_str).collect();
                a.sort_unstable();
                b.sort_unstable();
                // A key column missing altogether is reported below, by name.
                if !a.is_empty()
                    && a != b
                    && key_names
                        .iter()
                        .all(|k| rel.columns.iter().any(|c| &c.name == k))
                {
                    return Err(SchemaError::KeyChanged {
                        table: name,
                        was: key_names.join(", "),
                        now: flagged.join(", "),
                        lsn,
                    });
                }
            }
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
        Ok((update, renamed))
    }

    /// Applies a Relation message (no rename reporting; tests and tools).
    pub fn apply(&mut self, rel: &Relation) -> Result<RelationUpdate, SchemaError> {
        self.apply_at(rel, crate::Lsn::ZERO).map(|(u, _)| u)
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
                oid: RelId(42),
                source_name: TableName::new("public", "orders"),
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
        r.replica_identity = b'f';
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
        r.rel_id = RelId(43);
        assert!(matches!(c.apply(&r).unwrap(), RelationUpdate::Ignored));
        assert!(matches!(c.get(RelId(43)), Some(None)));
        assert!(c.get(RelId(7)).is_none());
    }

    #[test]
    fn a_renamed_table_is_followed_by_its_oid_and_reported_once() {
        let mut c = cache();
        c.apply(&rel(&[("id", 20)])).unwrap();
        let mut r = rel(&[("id", 20)]);
        r.namespace = "archive".into();
        r.name = "orders_2026".into();
        let (update, renamed) = c.apply_at(&r, crate::Lsn(7)).unwrap();
        let RelationUpdate::Unchanged(t) = update else {
            panic!("expected the same table, got {update:?}")
        };
        assert_eq!(t.name, TableName::new("public", "orders"));
        let renamed = renamed.expect("the rename is reported");
        assert_eq!(renamed.from, TableName::new("public", "orders"));
        assert_eq!(renamed.to, TableName::new("archive", "orders_2026"));
        // Reported once: the next Relation message under the new name is not a new rename.
        let (_, again) = c.apply_at(&r, crate::Lsn(8)).unwrap();
        assert_eq!(again, None);
        // Renamed back: reported again.
        let (_, back) = c.apply_at(&rel(&[("id", 20)]), crate::Lsn(9)).unwrap();
        assert_eq!(back.unwrap().to, TableName::new("public", "orders"));
    }

    #[test]
    fn a_rename_under_the_stop_policy_is_an_error_naming_both_names() {
        let mut c = cache().with_rename_policy(TableRenamePolicy::Stop);
        let mut r = rel(&[("id", 20)]);
        r.name = "orders_old".into();
        let err = c.apply_at(&r, crate::Lsn(7)).unwrap_err().to_string();
        assert!(err.contains("public.orders"), "{err}");
        assert!(err.contains("public.orders_old"), "{err}");
        assert!(err.contains("SCHEMA_TABLE_RENAME=follow"), "{err}");
    }

    #[test]
    fn a_changed_primary_key_stops() {
        let mut c = cache();
        let mut r = rel(&[("id", 20), ("code", 25)]);
        r.columns[0].flags = 1;
        c.apply(&r).unwrap();
        r.columns[0].flags = 0;
        r.columns[1].flags = 1;
        let err = c.apply_at(&r, crate::Lsn(9)).unwrap_err();
        assert!(matches!(err, SchemaError::KeyChanged { .. }), "{err}");
        assert!(err.to_string().contains("from (id) to (code)"), "{err}");
    }

    #[test]
    fn an_identity_without_the_key_stops_but_full_is_fine() {
        let mut c = cache();
        let mut r = rel(&[("id", 20)]);
        r.replica_identity = b'f';
        assert!(c.apply(&r).is_ok());
        r.replica_identity = b'n';
        let err = c.apply(&r).unwrap_err().to_string();
        assert!(err.contains("REPLICA IDENTITY DEFAULT"), "{err}");
    }

    #[test]
    fn a_seeded_schema_turns_drift_made_while_stopped_into_a_change() {
        let mut c = cache();
        let RelationUpdate::New(before) = c.apply(&rel(&[("id", 20), ("note", 25)])).unwrap()
        else {
            panic!()
        };
        let mut fresh = cache();
        fresh.seed(before);
        assert!(matches!(
            fresh.apply(&rel(&[("id", 20)])).unwrap(),
            RelationUpdate::Changed { .. }
        ));
    }
}
