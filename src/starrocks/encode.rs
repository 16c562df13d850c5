//! Row changes → Stream Load JSON bodies.
//!
//! A [`Segment`] holds one table's changes between two barriers (a truncate or a schema change)
//! and collapses them to the last state per primary key: a full row replaces what was there, a
//! partial row (unchanged TOAST columns, key-only deletes) is laid over it. Rows are then grouped
//! by the set of columns they carry, and each group becomes one load: a full upsert, or a partial
//! update listing exactly those columns. Because keys are unique after collapsing, the groups of
//! one segment are independent and their order does not matter.
//!
//! Collapsing follows the rule of the loads' `merge_condition`: a change whose commit LSN is
//! older than the one already collected for its key is dropped (snapshot rows, stamped with the
//! snapshot's LSN, interleave with streamed changes that can be newer).
//!
//! Every row carries the audit columns: `dbmazz_op_type` (0 insert, 1 update, 2 delete),
//! `dbmazz_is_deleted`, `dbmazz_synced_at` and `dbmazz_cdc_version` (the commit LSN, which the
//! loads' `merge_condition` compares). Deletes are soft: the row stays with
//! `dbmazz_is_deleted = true` and its other columns as they were.
//!
//! Bodies are written straight into a reusable buffer, value by value; nothing is allocated per
//! row besides the collapsed row's slot.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::sync::Arc;

use crate::pipeline::change::{Op, RowChange, TableSchema};
use crate::postgres::pgoutput::{Tuple, Value};
use crate::value::{self, Dialect, Mapped, ValueError};
use crate::Lsn;

/// One key's collapsed state.
#[derive(Clone, Debug)]
pub struct MergedRow {
    /// Per table column: the value, or `None` when this row does not set it.
    pub values: Vec<Option<Value>>,
    /// `dbmazz_op_type` of the last change.
    pub op_type: u8,
    /// Whether the last change was a delete.
    pub deleted: bool,
    /// Commit LSN of the last change (`dbmazz_cdc_version`).
    pub version: Lsn,
    /// LSN of the first change collapsed into this row.
    pub first_lsn: Lsn,
    /// LSN of the last change collapsed into this row.
    pub last_lsn: Lsn,
}

/// A value could not be encoded for StarRocks.
#[derive(Debug, Clone, thiserror::Error)]
#[error("table {table} column {column:?} at LSN {lsn}: {source}")]
pub struct EncodeError {
    /// Table.
    pub table: String,
    /// Column.
    pub column: String,
    /// Change LSN.
    pub lsn: Lsn,
    /// Why.
    pub source: ValueError,
}

/// One table's collapsed changes between two barriers.
pub struct Segment {
    table: Arc<TableSchema>,
    rows: Vec<MergedRow>,
    index: hashbrown::HashMap<Vec<u8>, usize>,
}

impl Segment {
    /// An empty segment for `table`.
    pub fn new(table: Arc<TableSchema>) -> Self {
        Segment {
            table,
            rows: Vec::new(),
            index: hashbrown::HashMap::new(),
        }
    }

    /// The table.
    pub fn table(&self) -> &Arc<TableSchema> {
        &self.table
    }

    /// Collapsed rows so far.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether nothing was added.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Adds a change (a primary-key change becomes a soft delete of the old key plus an upsert
    /// of the new one).
    pub fn add(&mut self, change: &RowChange) {
        let pos = change.pos;
        if let Some(old) = change.changed_old_key() {
            let values = self.key_values(old);
            self.merge(old, values, 2, true, pos.commit_lsn, pos.lsn);
        }
        let (op_type, deleted) = match change.op {
            Op::Insert | Op::Snapshot => (0, false),
            Op::Update => (1, false),
            Op::Delete => (2, true),
        };
        let values = if change.key_only {
            self.key_values(&change.row)
        } else {
            change
                .row
                .values
                .iter()
                .map(|v| match v {
                    Value::UnchangedToast => None,
                    other => Some(other.clone()),
                })
                .collect()
        };
        self.merge(
            &change.row,
            values,
            op_type,
            deleted,
            pos.commit_lsn,
            pos.lsn,
        );
    }

    fn key_values(&self, row: &Tuple) -> Vec<Option<Value>> {
        let mut values = vec![None; self.table.columns.len()];
        for &k in &self.table.key {
            values[k] = row.values.get(k).cloned();
        }
        values
    }

    fn merge(
        &mut self,
        key_row: &Tuple,
        mut values: Vec<Option<Value>>,
        op_type: u8,
        deleted: bool,
        version: Lsn,
        lsn: Lsn,
    ) {
        values.resize(self.table.columns.len(), None);
        let key = key_bytes(&self.table, key_row);
        match self.index.get(&key) {
            Some(&i) => {
                let row = &mut self.rows[i];
                // The same rule as the loads' merge_condition: an older version never replaces
                // a newer one (snapshot rows interleave with streamed changes).
                if version < row.version {
                    return;
                }
                if values.iter().all(Option::is_some) {
                    row.values = values;
                } else {
                    for (slot, v) in row.values.iter_mut().zip(values) {
                        if v.is_some() {
                            *slot = v;
                        }
                    }
                }
                row.op_type = op_type;
                row.deleted = deleted;
                row.version = version;
                row.last_lsn = lsn;
            }
            None => {
                self.index.insert(key, self.rows.len());
                self.rows.push(MergedRow {
                    values,
                    op_type,
                    deleted,
                    version,
                    first_lsn: lsn,
                    last_lsn: lsn,
                });
            }
        }
    }

    /// Groups the rows by column set: `(columns present, row indexes)`, in a deterministic
    /// order.
    pub fn groups(&self) -> Vec<(Vec<bool>, Vec<usize>)> {
        // Fast path: every row carries every column (snapshots, insert-heavy batches).
        if self
            .rows
            .iter()
            .all(|r| r.values.iter().all(Option::is_some))
        {
            return vec![(
                vec![true; self.table.columns.len()],
                (0..self.rows.len()).collect(),
            )];
        }
        let mut groups: BTreeMap<Vec<bool>, Vec<usize>> = BTreeMap::new();
        for (i, row) in self.rows.iter().enumerate() {
            let sig: Vec<bool> = row.values.iter().map(Option::is_some).collect();
            groups.entry(sig).or_default().push(i);
        }
        let mut out: Vec<(Vec<bool>, Vec<usize>)> = groups.into_iter().collect();
        // Full rows first: the common case, and the order is then stable across runs.
        out.sort_by_key(|(sig, _)| !sig.iter().all(|p| *p));
        out
    }

    /// The rows.
    pub fn rows(&self) -> &[MergedRow] {
        &self.rows
    }

    /// Writes `[{...},...]` for the given rows into `out` (cleared first), with `synced_at` as
    /// `dbmazz_synced_at`. Returns the mappings applied to values.
    pub fn encode(
        &self,
        rows: &[usize],
        synced_at: &str,
        out: &mut Vec<u8>,
    ) -> Result<Mapped, EncodeError> {
        out.clear();
        let mut mapped = Mapped::default();
        out.push(b'[');
        for (n, &i) in rows.iter().enumerate() {
            let row = &self.rows[i];
            if n > 0 {
                out.push(b',');
            }
            out.push(b'{');
            for (c, v) in row.values.iter().enumerate() {
                let Some(v) = v else { continue };
                let col = &self.table.columns[c];
                value::write_escaped(out, col.name.as_bytes());
                out.push(b':');
                match v {
                    Value::Null => out.extend_from_slice(b"null"),
                    Value::Text(text) => {
                        let m = value::write_json_as(out, col.kind, text, Dialect::StarRocks)
                            .map_err(|source| EncodeError {
                                table: self.table.name.to_string(),
                                column: col.name.clone(),
                                lsn: row.last_lsn,
                                source,
                            })?;
                        mapped.non_finite_to_null += m.non_finite_to_null;
                        mapped.infinity_clamped += m.infinity_clamped;
                    }
                    Value::Binary(bytes) => value::write_hex_string(out, bytes),
                    Value::UnchangedToast => out.extend_from_slice(b"null"),
                }
                out.push(b',');
            }
            let _ = write!(
                out,
                "\"dbmazz_op_type\":{},\"dbmazz_is_deleted\":{},\"dbmazz_synced_at\":\"{synced_at}\",\"dbmazz_cdc_version\":{}}}",
                row.op_type, row.deleted, row.version.0
            );
        }
        out.push(b']');
        Ok(mapped)
    }

    /// A fingerprint of what these rows say (keys, versions, operations), so that two loads
    /// with the same LSN range but different content never share a label (snapshot rows all
    /// carry the snapshot's LSN).
    pub fn fingerprint(&self, rows: &[usize]) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |bytes: &[u8]| {
            for b in bytes {
                h = (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
            }
        };
        for &i in rows {
            let row = &self.rows[i];
            for &k in &self.table.key {
                if let Some(Some(Value::Text(b) | Value::Binary(b))) = row.values.get(k) {
                    eat(&(b.len() as u32).to_le_bytes());
                    eat(b);
                }
            }
            eat(&row.version.0.to_le_bytes());
            eat(&[row.op_type, u8::from(row.deleted)]);
        }
        h
    }

    /// The `columns` header of a partial load with this column set.
    pub fn columns_header(&self, sig: &[bool]) -> String {
        let mut cols: Vec<String> = self
            .table
            .columns
            .iter()
            .zip(sig)
            .filter(|(_, present)| **present)
            .map(|(c, _)| header_name(&c.name))
            .collect();
        cols.extend(
            crate::starrocks::types::AUDIT_COLUMNS
                .iter()
                .map(|(n, _)| n.to_string()),
        );
        cols.join(",")
    }
}

fn header_name(name: &str) -> String {
    if name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        name.to_owned()
    } else {
        format!("`{}`", name.replace('`', "``"))
    }
}

/// Bytes identifying a row's primary key.
fn key_bytes(table: &TableSchema, row: &Tuple) -> Vec<u8> {
    let mut key = Vec::with_capacity(32);
    for &k in &table.key {
        match row.values.get(k) {
            Some(Value::Text(b)) | Some(Value::Binary(b)) => {
                key.push(b't');
                key.extend_from_slice(&(b.len() as u32).to_le_bytes());
                key.extend_from_slice(b);
            }
            _ => key.push(b'n'),
        }
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TableName;
    use crate::pipeline::change::{ColumnSchema, Position};
    use crate::value::{Scalar, ValueKind};
    use bytes::Bytes;

    fn table() -> Arc<TableSchema> {
        let col = |name: &str, kind| ColumnSchema {
            name: name.into(),
            type_oid: 0,
            type_modifier: -1,
            kind: ValueKind::Scalar(kind),
        };
        Arc::new(TableSchema {
            rel_id: 1,
            name: TableName::new("public", "t"),
            columns: vec![
                col("id", Scalar::Int),
                col("a", Scalar::Text),
                col("doc", Scalar::Text),
            ],
            key: vec![0],
            replica_identity: b'd',
        })
    }

    fn t(s: &str) -> Value {
        Value::Text(Bytes::copy_from_slice(s.as_bytes()))
    }

    fn change(
        op: Op,
        lsn: u64,
        values: Vec<Value>,
        key_only: bool,
        old: Option<Vec<Value>>,
    ) -> RowChange {
        RowChange {
            op,
            table: table(),
            pos: Position {
                lsn: Lsn(lsn),
                commit_lsn: Lsn(lsn + 1000),
                xid: 1,
                commit_time: 0,
            },
            row: Tuple { values },
            key_only,
            old: old.map(|values| Tuple { values }),
        }
    }

    fn body(seg: &Segment, rows: &[usize]) -> serde_json::Value {
        let mut out = Vec::new();
        seg.encode(rows, "2026-01-01 00:00:00", &mut out).unwrap();
        serde_json::from_slice(&out).unwrap()
    }

    #[test]
    fn two_updates_of_one_key_collapse_to_the_last() {
        let mut seg = Segment::new(table());
        seg.add(&change(
            Op::Insert,
            1,
            vec![t("1"), t("x"), t("d")],
            false,
            None,
        ));
        seg.add(&change(
            Op::Update,
            2,
            vec![t("1"), t("y"), t("d")],
            false,
            None,
        ));
        assert_eq!(seg.len(), 1);
        let groups = seg.groups();
        assert_eq!(groups.len(), 1);
        let b = body(&seg, &groups[0].1);
        assert_eq!(b[0]["a"], "y");
        assert_eq!(b[0]["dbmazz_op_type"], 1);
        assert_eq!(b[0]["dbmazz_cdc_version"], 1002);
    }

    #[test]
    fn unchanged_toast_makes_a_partial_row_that_never_writes_the_column() {
        let mut seg = Segment::new(table());
        seg.add(&change(
            Op::Update,
            1,
            vec![t("1"), t("y"), Value::UnchangedToast],
            false,
            None,
        ));
        seg.add(&change(
            Op::Insert,
            2,
            vec![t("2"), t("z"), t("big")],
            false,
            None,
        ));
        let groups = seg.groups();
        assert_eq!(
            groups.len(),
            2,
            "full and partial rows go to separate loads"
        );
        assert!(groups[0].0.iter().all(|p| *p));
        let partial = &groups[1];
        assert_eq!(partial.0, vec![true, true, false]);
        assert_eq!(
            seg.columns_header(&partial.0),
            "id,a,dbmazz_op_type,dbmazz_is_deleted,dbmazz_synced_at,dbmazz_cdc_version"
        );
        let b = body(&seg, &partial.1);
        assert!(b[0].get("doc").is_none());
    }

    #[test]
    fn partial_after_full_stays_full_with_the_new_values() {
        let mut seg = Segment::new(table());
        seg.add(&change(
            Op::Insert,
            1,
            vec![t("1"), t("x"), t("d")],
            false,
            None,
        ));
        seg.add(&change(
            Op::Update,
            2,
            vec![t("1"), t("y"), Value::UnchangedToast],
            false,
            None,
        ));
        let groups = seg.groups();
        assert_eq!(groups.len(), 1);
        let b = body(&seg, &groups[0].1);
        assert_eq!(
            (b[0]["a"].as_str(), b[0]["doc"].as_str()),
            (Some("y"), Some("d"))
        );
    }

    #[test]
    fn key_only_delete_is_a_soft_partial_update() {
        let mut seg = Segment::new(table());
        seg.add(&change(
            Op::Delete,
            1,
            vec![t("1"), Value::Null, Value::Null],
            true,
            None,
        ));
        let groups = seg.groups();
        assert_eq!(groups[0].0, vec![true, false, false]);
        let b = body(&seg, &groups[0].1);
        assert_eq!(b[0]["dbmazz_is_deleted"], true);
        assert_eq!(b[0]["dbmazz_op_type"], 2);
        assert!(
            b[0].get("a").is_none(),
            "the other columns keep their stored values"
        );
    }

    #[test]
    fn key_change_soft_deletes_the_old_key() {
        let mut seg = Segment::new(table());
        seg.add(&change(
            Op::Update,
            1,
            vec![t("2"), t("x"), t("d")],
            false,
            Some(vec![t("1"), Value::Null, Value::Null]),
        ));
        assert_eq!(seg.len(), 2);
        let all: Vec<serde_json::Value> = seg
            .groups()
            .iter()
            .flat_map(|(_, rows)| body(&seg, rows).as_array().unwrap().clone())
            .collect();
        let old = all.iter().find(|r| r["id"] == 1).unwrap();
        assert_eq!(old["dbmazz_is_deleted"], true);
        let new = all.iter().find(|r| r["id"] == 2).unwrap();
        assert_eq!(new["dbmazz_is_deleted"], false);
    }

    #[test]
    fn an_older_snapshot_row_never_replaces_a_newer_change() {
        let mut seg = Segment::new(table());
        // Streamed delete at commit 2000, then the snapshot's copy of the row at LSN 1500.
        seg.add(&change(
            Op::Delete,
            1000,
            vec![t("1"), Value::Null, Value::Null],
            true,
            None,
        ));
        let mut snap = change(
            Op::Snapshot,
            500,
            vec![t("1"), t("old"), t("d")],
            false,
            None,
        );
        snap.pos.commit_lsn = Lsn(1500);
        seg.add(&snap);
        let groups = seg.groups();
        let b = body(&seg, &groups[0].1);
        assert_eq!(b[0]["dbmazz_is_deleted"], true);
        assert!(b[0].get("a").is_none());
    }

    #[test]
    fn reinsert_after_delete_revives_the_row() {
        let mut seg = Segment::new(table());
        seg.add(&change(
            Op::Delete,
            1,
            vec![t("1"), Value::Null, Value::Null],
            true,
            None,
        ));
        seg.add(&change(
            Op::Insert,
            2,
            vec![t("1"), t("x"), t("d")],
            false,
            None,
        ));
        let groups = seg.groups();
        assert_eq!(groups.len(), 1);
        assert_eq!(body(&seg, &groups[0].1)[0]["dbmazz_is_deleted"], false);
    }
}
