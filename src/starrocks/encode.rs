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
//!
//! Snapshot rows take a shorter path: [`SnapshotBody`] encodes COPY text lines straight into a
//! body in the snapshot worker that read them, with the same value conversions, and without a
//! segment (a chunk holds each key once, all rows full, all with the snapshot's version). Those
//! bodies are CSV wherever a row needs no escaping, which halves their size and their cost.

use std::collections::HashMap;
use std::hash::BuildHasher as _;
use std::sync::Arc;

use crate::config::TableName;
use crate::pipeline::change::{EncodedRows, Op, RowChange, TableSchema, Tuple, Value};
use crate::pipeline::sink::{SnapshotEncodeError, SnapshotEncoder, SnapshotEncoders};
use crate::pipeline::text_row::{check_field_count, copy_fields, unescape_into};
use crate::starrocks::target::ColumnTargets;
use crate::value::{self, JsonFlavor, KeyTooLong, Mapped, Scalar, ValueError, ValueKind};
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
    /// Per column: the JSON key (the target's own name, already escaped) and the target's
    /// ARRAY depth.
    keys: Vec<(Vec<u8>, Option<u8>)>,
    /// Per column: the name for a `columns` header.
    header_names: Vec<String>,
    key_limit: Option<KeyLimit>,
    rows: Vec<MergedRow>,
    /// Row index by key (hashed from the key columns' values, compared against `rows`).
    index: hashbrown::HashTable<usize>,
    hasher: hashbrown::DefaultHashBuilder,
}

/// Per column of `table`: the target's name and ARRAY depth.
fn target_columns<'a>(
    table: &'a TableSchema,
    targets: &'a ColumnTargets,
) -> impl Iterator<Item = (&'a str, Option<u8>)> + 'a {
    table
        .columns
        .iter()
        .map(move |c| match targets.get(&c.name) {
            Some(t) => (t.name.as_str(), t.array_depth),
            None => (c.name.as_str(), None),
        })
}

/// StarRocks' check of a primary key's encoded size (`primary_key_limit_size`, be.conf): a
/// longer key fails the whole load, so dbmazz stops before sending it, naming the key.
#[derive(Clone, Debug)]
struct KeyLimit {
    limit: usize,
    /// Per key column, in key order: its table column and fixed width (`None`: a string).
    columns: Vec<(usize, Option<u8>)>,
    /// What the encoding adds beyond the values' text: fixed widths and terminators.
    overhead: usize,
}

impl KeyLimit {
    /// The check for `table`'s key, or `None` when no key value can reach the limit.
    fn new(table: &TableSchema, targets: &ColumnTargets) -> Option<KeyLimit> {
        if targets.key_limit == 0 || table.key.is_empty() {
            return None;
        }
        let columns: Vec<(usize, Option<u8>)> = table
            .key
            .iter()
            .map(|&k| {
                let width = table
                    .columns
                    .get(k)
                    .and_then(|c| targets.get(&c.name))
                    .and_then(|t| t.key_width);
                (k, width)
            })
            .collect();
        let fixed: usize = columns.iter().filter_map(|(_, w)| w.map(usize::from)).sum();
        if columns.iter().all(|(_, w)| w.is_some()) && fixed <= targets.key_limit {
            return None;
        }
        let overhead = fixed + 2 * columns.len();
        Some(KeyLimit {
            limit: targets.key_limit,
            columns,
            overhead,
        })
    }

    /// Checks the key whose values (in key order, as text) `values` yields. A single string key
    /// counts its bytes; in a composite key a string that is not last also has its zero bytes
    /// escaped and a two-byte terminator.
    fn check<'v>(&self, values: impl Iterator<Item = &'v [u8]>) -> Result<(), KeyTooLong> {
        let last = self.columns.len().saturating_sub(1);
        let single = self.columns.len() == 1;
        let mut size = 0;
        for (i, ((_, width), value)) in self.columns.iter().zip(values).enumerate() {
            size += match width {
                Some(w) => usize::from(*w),
                None if single || i == last => value.len(),
                None => value.len() + memchr::memchr_iter(0, value).count() + 2,
            };
        }
        if size > self.limit {
            return Err(KeyTooLong {
                size,
                limit: self.limit,
            });
        }
        Ok(())
    }
}

impl Segment {
    /// An empty segment for `table`, whose columns the target names and shapes as `targets`
    /// says.
    pub fn new(table: Arc<TableSchema>, targets: &ColumnTargets) -> Self {
        let mut keys = Vec::with_capacity(table.columns.len());
        let mut header_names = Vec::with_capacity(table.columns.len());
        for (name, depth) in target_columns(&table, targets) {
            let mut key = Vec::with_capacity(name.len() + 2);
            value::write_escaped(&mut key, name.as_bytes());
            keys.push((key, depth));
            header_names.push(header_name(name));
        }
        Segment {
            key_limit: KeyLimit::new(&table, targets),
            table,
            keys,
            header_names,
            rows: Vec::new(),
            index: hashbrown::HashTable::new(),
            hasher: hashbrown::DefaultHashBuilder::default(),
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
            self.merge(old, Carried::Key, 2, true, pos.commit_lsn, pos.lsn);
        }
        let (op_type, deleted) = match change.op {
            Op::Insert | Op::Snapshot => (0, false),
            Op::Update => (1, false),
            Op::Delete => (2, true),
        };
        let carried = if change.key_only {
            Carried::Key
        } else {
            Carried::Row
        };
        self.merge(
            &change.row,
            carried,
            op_type,
            deleted,
            pos.commit_lsn,
            pos.lsn,
        );
    }

    /// Lays `row`'s values (those `carried` says) over its key's collapsed row, or starts one.
    /// Nothing is allocated for a key already collected.
    fn merge(
        &mut self,
        row: &Tuple,
        carried: Carried,
        op_type: u8,
        deleted: bool,
        version: Lsn,
        lsn: Lsn,
    ) {
        let table = &*self.table;
        let hash = self.hasher.hash_one(KeyOf(table, KeyView::Tuple(row)));
        let rows = &self.rows;
        let found = self.index.find(hash, |&i| {
            rows.get(i)
                .is_some_and(|r| same_key(table, KeyView::Merged(&r.values), KeyView::Tuple(row)))
        });
        match found.copied().and_then(|i| self.rows.get_mut(i)) {
            Some(merged) => {
                // The same rule as the loads' merge_condition: an older version never replaces
                // a newer one (snapshot rows interleave with streamed changes).
                if version < merged.version {
                    return;
                }
                carried.lay_over(&mut merged.values, row, &table.key);
                merged.op_type = op_type;
                merged.deleted = deleted;
                merged.version = version;
                merged.last_lsn = lsn;
            }
            None => {
                let mut values = vec![None; table.columns.len()];
                carried.lay_over(&mut values, row, &table.key);
                let at = self.rows.len();
                let (hasher, rows) = (&self.hasher, &self.rows);
                self.index.insert_unique(hash, at, |&i| {
                    let values = rows.get(i).map_or(&[][..], |r| &r.values[..]);
                    hasher.hash_one(KeyOf(table, KeyView::Merged(values)))
                });
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
        // Few column sets per segment: a linear search beats hashing a signature per row, and
        // allocates nothing per row.
        let mut out: Vec<(Vec<bool>, Vec<usize>)> = Vec::new();
        for (i, row) in self.rows.iter().enumerate() {
            let same = |sig: &[bool]| sig.iter().zip(&row.values).all(|(p, v)| *p == v.is_some());
            match out.iter_mut().find(|(sig, _)| same(sig)) {
                Some((_, idx)) => idx.push(i),
                None => out.push((row.values.iter().map(Option::is_some).collect(), vec![i])),
            }
        }
        // Full rows first (the common case), then by column set: the order is the same on
        // every run, so a retried batch gets the same labels.
        out.sort_by(|(a, _), (b, _)| {
            let full = |sig: &[bool]| sig.iter().all(|p| *p);
            (!full(a), a).cmp(&(!full(b), b))
        });
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
            if let Some(limit) = &self.key_limit {
                let key = limit.columns.iter().map(|(k, _)| match &row.values[*k] {
                    Some(Value::Text(b) | Value::Binary(b)) => &b[..],
                    _ => &[][..],
                });
                limit.check(key).map_err(|e| EncodeError {
                    table: self.table.name.to_string(),
                    column: self.key_names(),
                    lsn: row.last_lsn,
                    source: e.into(),
                })?;
            }
            out.push(b'{');
            for (c, v) in row.values.iter().enumerate() {
                let Some(v) = v else { continue };
                let col = &self.table.columns[c];
                let (key, depth) = &self.keys[c];
                out.extend_from_slice(key);
                out.push(b':');
                match v {
                    Value::Null => out.extend_from_slice(b"null"),
                    Value::Text(text) => {
                        let written = match (col.kind, depth) {
                            (ValueKind::Array { .. }, Some(depth)) => {
                                value::check_array_depth(text, *depth)
                            }
                            _ => Ok(()),
                        }
                        .and_then(|()| {
                            value::write_json_as(out, col.kind, text, JsonFlavor::StarRocks)
                        });
                        mapped += written.map_err(|source| EncodeError {
                            table: self.table.name.to_string(),
                            column: col.name.clone(),
                            lsn: row.last_lsn,
                            source,
                        })?;
                    }
                    Value::Binary(bytes) => value::write_hex_string(out, bytes),
                    Value::UnchangedToast => out.extend_from_slice(b"null"),
                }
                out.push(b',');
            }
            out.extend_from_slice(b"\"dbmazz_op_type\":");
            value::write_u64(out, u64::from(row.op_type));
            out.extend_from_slice(b",\"dbmazz_is_deleted\":");
            out.extend_from_slice(if row.deleted { b"true" } else { b"false" });
            out.extend_from_slice(b",\"dbmazz_synced_at\":\"");
            out.extend_from_slice(synced_at.as_bytes());
            out.extend_from_slice(b"\",\"dbmazz_cdc_version\":");
            value::write_u64(out, row.version.0);
            out.push(b'}');
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

    /// The key's column names, for errors.
    fn key_names(&self) -> String {
        let names: Vec<&str> = self
            .table
            .key
            .iter()
            .filter_map(|&k| self.table.columns.get(k).map(|c| c.name.as_str()))
            .collect();
        names.join(", ")
    }

    /// The `columns` header of a partial load with this column set.
    pub fn columns_header(&self, sig: &[bool]) -> String {
        let mut cols: Vec<String> = self
            .header_names
            .iter()
            .zip(sig)
            .filter(|(_, present)| **present)
            .map(|(name, _)| name.clone())
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

/// The values of a row's key columns, from a change's tuple or from a collapsed row.
#[derive(Clone, Copy)]
enum KeyView<'a> {
    Tuple(&'a Tuple),
    Merged(&'a [Option<Value>]),
}

impl<'a> KeyView<'a> {
    /// Column `k`'s key bytes: a text or binary value's bytes, `None` for anything else.
    fn part(self, k: usize) -> Option<&'a [u8]> {
        let v = match self {
            KeyView::Tuple(t) => t.values.get(k),
            KeyView::Merged(m) => m.get(k).and_then(Option::as_ref),
        };
        match v {
            Some(Value::Text(b) | Value::Binary(b)) => Some(&b[..]),
            _ => None,
        }
    }
}

/// Which of a change's values a collapsed row takes.
#[derive(Clone, Copy)]
enum Carried {
    /// Only the key columns (key-only deletes, the old key of a key change).
    Key,
    /// Every value but the unchanged TOAST ones.
    Row,
}

impl Carried {
    /// Sets the slots of `values` that `row` carries; the others keep what they hold.
    fn lay_over(self, values: &mut [Option<Value>], row: &Tuple, key: &[usize]) {
        match self {
            Carried::Key => {
                for &k in key {
                    if let (Some(slot), Some(v)) = (values.get_mut(k), row.values.get(k)) {
                        *slot = Some(v.clone());
                    }
                }
            }
            Carried::Row => {
                for (slot, v) in values.iter_mut().zip(&row.values) {
                    if !matches!(v, Value::UnchangedToast) {
                        *slot = Some(v.clone());
                    }
                }
            }
        }
    }
}

/// Hashes a row by its key columns only.
struct KeyOf<'a>(&'a TableSchema, KeyView<'a>);

impl std::hash::Hash for KeyOf<'_> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        for &k in &self.0.key {
            self.1.part(k).hash(state);
        }
    }
}

/// Whether two rows have the same key.
fn same_key(table: &TableSchema, a: KeyView<'_>, b: KeyView<'_>) -> bool {
    table.key.iter().all(|&k| a.part(k) == b.part(k))
}

/// Encodes snapshot rows straight from COPY text lines into Stream Load bodies, in the snapshot
/// worker that read them: no per-row allocation, no collapsing (a chunk holds each key once, and
/// every row is a full-row insert with the same version).
///
/// Two bodies fill side by side. A row goes into the **CSV** body when its table allows it (CSV
/// enabled, no JSON or array columns) and none of its fields holds a COPY escape other than the
/// NULL marker `\N` and a bytea's `\\x`. Such a row's fields then hold no tab, newline or
/// backslash, so they are tab-separated CSV exactly as StarRocks reads it without quoting or
/// escapes, and most fields are copied as they are; only values whose StarRocks text differs
/// from PostgreSQL's are converted (booleans, timestamptz, non-finite numbers, infinite dates,
/// money, bytea), by the same rules as JSON ([`value::write_starrocks_csv`]). Every other row goes
/// into the **JSON** body. A CSV row is about half the size of its JSON object and is cheaper to
/// write and to parse. CSV escaping is never relied on: a value that would need it goes as JSON.
pub struct SnapshotBody {
    table: Arc<TableSchema>,
    version: Lsn,
    /// `{"col":` for the first column, `,"col":` for the others.
    prefixes: Vec<Vec<u8>>,
    /// The audit columns and the closing brace.
    tail: Vec<u8>,
    /// The CSV body's `columns` header; `None` when every row goes as JSON.
    csv_columns: Option<Arc<str>>,
    /// The CSV audit fields and the row delimiter.
    csv_tail: Vec<u8>,
    /// Whether each column is part of the key (hashed into the fingerprint).
    is_key: Vec<bool>,
    /// Per column: the target's ARRAY depth, checked for array values.
    depths: Vec<Option<u8>>,
    key_limit: Option<KeyLimit>,
    json: Part,
    csv: Part,
    scratch: Vec<u8>,
    target: usize,
    pool: BodyPool,
}

/// One body being filled.
struct Part {
    body: Vec<u8>,
    rows: u64,
    fingerprint: u64,
    mapped: Mapped,
}

impl Part {
    fn new() -> Self {
        Part {
            body: Vec::new(),
            rows: 0,
            fingerprint: FNV_OFFSET,
            mapped: Mapped::default(),
        }
    }

    /// Takes a buffer for the body from `pool` the first time it is written to.
    fn ensure_buffer(&mut self, pool: &BodyPool, target: usize) {
        if self.body.capacity() == 0 {
            self.body = pool.get(target + target / 8);
        }
    }
}

/// Body buffers that come back when a body's last reference is dropped (once its batch is
/// durable), so that the snapshot reuses a few buffers instead of mapping and zeroing fresh
/// pages for every body. Keeps at most [`BodyPool::KEEP`] buffers.
#[derive(Clone, Debug, Default)]
pub struct BodyPool(Arc<std::sync::Mutex<Vec<Vec<u8>>>>);

impl BodyPool {
    /// Buffers kept for reuse (more than the byte budget lets be in flight is pointless).
    pub const KEEP: usize = 12;

    fn get(&self, capacity: usize) -> Vec<u8> {
        let mut buf = self
            .0
            .lock()
            .ok()
            .and_then(|mut free| free.pop())
            .unwrap_or_default();
        buf.reserve(capacity);
        buf
    }
}

/// A body's buffer on its way to the sink; goes back to its pool when dropped.
struct Pooled {
    buf: Vec<u8>,
    pool: BodyPool,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        if let Ok(mut free) = self.pool.0.lock() {
            if free.len() < BodyPool::KEEP {
                free.push(buf);
            }
        }
    }
}

impl SnapshotBody {
    /// The longest `columns` header a CSV body may need (JSON bodies need none).
    pub const MAX_CSV_HEADER: usize = 8 * 1024;

    /// An encoder for `table`'s rows copied at `version`, cutting bodies at about `target` bytes
    /// (buffers come from `pool`); `csv` lets it use CSV bodies where rows allow. Columns are
    /// named and shaped as `targets` says.
    pub fn new(
        table: Arc<TableSchema>,
        targets: &ColumnTargets,
        version: Lsn,
        synced_at: &str,
        target: usize,
        pool: BodyPool,
        csv: bool,
    ) -> Self {
        let names: Vec<(&str, Option<u8>)> = target_columns(&table, targets).collect();
        let prefixes = names
            .iter()
            .enumerate()
            .map(|(i, (name, _))| {
                let mut p = vec![if i == 0 { b'{' } else { b',' }];
                value::write_escaped(&mut p, name.as_bytes());
                p.push(b':');
                p
            })
            .collect();
        let depths = names.iter().map(|(_, depth)| *depth).collect();
        let key_limit = KeyLimit::new(&table, targets);
        let tail = format!(
            "{}\"dbmazz_op_type\":0,\"dbmazz_is_deleted\":false,\"dbmazz_synced_at\":\"{synced_at}\",\"dbmazz_cdc_version\":{}}}",
            if table.columns.is_empty() { "{" } else { "," },
            version.0
        )
        .into_bytes();
        let csv_columns = (csv
            && !table.columns.is_empty()
            && table.columns.iter().all(|c| value::csv_capable(c.kind)))
        .then(|| {
            let names: Vec<String> = names
                .iter()
                .map(|(name, _)| header_name(name))
                .chain(
                    crate::starrocks::types::AUDIT_COLUMNS
                        .iter()
                        .map(|(n, _)| n.to_string()),
                )
                .collect();
            names.join(",")
        })
        // CSV needs the `columns` header on every load; a very wide table stays on JSON rather
        // than risk the FE's HTTP header size limit.
        .filter(|header| header.len() <= Self::MAX_CSV_HEADER)
        .map(Arc::from);
        let csv_tail = format!("\t0\t0\t{synced_at}\t{}\n", version.0).into_bytes();
        let is_key = (0..table.columns.len())
            .map(|i| table.key.contains(&i))
            .collect();
        SnapshotBody {
            table,
            version,
            prefixes,
            tail,
            csv_columns,
            csv_tail,
            is_key,
            depths,
            key_limit,
            json: Part::new(),
            csv: Part::new(),
            scratch: Vec::new(),
            target,
            pool,
        }
    }

    /// Whether a body reached its target size.
    pub fn is_full(&self) -> bool {
        self.json.body.len() >= self.target || self.csv.body.len() >= self.target
    }

    /// Rows in the current bodies.
    pub fn rows(&self) -> u64 {
        self.json.rows + self.csv.rows
    }

    /// Adds one COPY text line (without its newline). On error the bodies are unusable.
    pub fn push_line(&mut self, line: &[u8]) -> Result<(), SnapshotEncodeError> {
        if let Some(limit) = &self.key_limit {
            // A line shorter than the limit less what the encoding adds cannot hold a longer key.
            if line.len() + limit.overhead > limit.limit {
                self.check_key(line)?;
            }
        }
        if self.csv_columns.is_some() && self.push_csv(line)? {
            return Ok(());
        }
        self.push_json(line)
    }

    /// Checks the encoded size of one COPY line's key.
    fn check_key(&mut self, line: &[u8]) -> Result<(), SnapshotEncodeError> {
        let Some(limit) = &self.key_limit else {
            return Ok(());
        };
        // Fields up to the last key column; only escaped key values are copied.
        let last_key = limit.columns.iter().map(|(k, _)| *k).max().unwrap_or(0);
        let fields: Vec<&[u8]> = copy_fields(line).take(last_key + 1).collect();
        let mut values: Vec<std::borrow::Cow<'_, [u8]>> = Vec::with_capacity(limit.columns.len());
        for (k, _) in &limit.columns {
            let raw = fields.get(*k).copied().unwrap_or_default();
            values.push(if memchr::memchr(b'\\', raw).is_some() {
                let mut text = Vec::with_capacity(raw.len());
                unescape_into(raw, &mut text)?;
                text.into()
            } else {
                raw.into()
            });
        }
        limit.check(values.iter().map(|v| &v[..])).map_err(|e| {
            let names: Vec<&str> = limit
                .columns
                .iter()
                .filter_map(|(k, _)| self.table.columns.get(*k).map(|c| c.name.as_str()))
                .collect();
            SnapshotEncodeError::Key {
                columns: names.join(", "),
                source: e.into(),
            }
        })
    }

    /// Adds a line to the CSV body; `false` (with nothing written) when it must go as JSON.
    fn push_csv(&mut self, line: &[u8]) -> Result<bool, SnapshotEncodeError> {
        // Invalid UTF-8 goes the JSON way, which names the column that holds it. So does a line
        // starting with a byte-order mark, which a CSV reader may take for the body's encoding
        // mark and strip.
        if line.starts_with("\u{feff}".as_bytes()) || simdutf8::basic::from_utf8(line).is_err() {
            return Ok(false);
        }
        let part = &mut self.csv;
        part.ensure_buffer(&self.pool, self.target);
        let start = part.body.len();
        let written = csv_row(
            &self.table,
            &self.is_key,
            line,
            &mut part.body,
            &mut self.scratch,
            part.fingerprint,
        );
        match written {
            Ok(Some((fingerprint, mapped))) => {
                part.body.extend_from_slice(&self.csv_tail);
                part.rows += 1;
                part.fingerprint = fingerprint;
                part.mapped += mapped;
                Ok(true)
            }
            Ok(None) => {
                part.body.truncate(start);
                Ok(false)
            }
            Err(e) => {
                part.body.truncate(start);
                Err(e)
            }
        }
    }

    fn push_json(&mut self, line: &[u8]) -> Result<(), SnapshotEncodeError> {
        let part = &mut self.json;
        part.ensure_buffer(&self.pool, self.target);
        part.body
            .push(if part.body.is_empty() { b'[' } else { b',' });
        let mut fields = 0;
        for raw in copy_fields(line) {
            fields += 1;
            let Some(col) = self.table.columns.get(fields - 1) else {
                continue;
            };
            part.body.extend_from_slice(&self.prefixes[fields - 1]);
            if raw == b"\\N" {
                part.body.extend_from_slice(b"null");
                continue;
            }
            let text = if memchr::memchr(b'\\', raw).is_some() {
                self.scratch.clear();
                unescape_into(raw, &mut self.scratch)?;
                &self.scratch[..]
            } else {
                raw
            };
            if self.is_key[fields - 1] {
                fnv(&mut part.fingerprint, &(text.len() as u32).to_le_bytes());
                fnv(&mut part.fingerprint, text);
            }
            if let (ValueKind::Array { .. }, Some(depth)) = (col.kind, self.depths[fields - 1]) {
                value::check_array_depth(text, depth).map_err(|source| {
                    SnapshotEncodeError::Value {
                        column: col.name.clone(),
                        source,
                    }
                })?;
            }
            part.mapped +=
                value::write_json_as(&mut part.body, col.kind, text, JsonFlavor::StarRocks)
                    .map_err(|source| SnapshotEncodeError::Value {
                        column: col.name.clone(),
                        source,
                    })?;
        }
        check_field_count(fields, self.prefixes.len())?;
        part.body.extend_from_slice(&self.tail);
        part.rows += 1;
        Ok(())
    }

    /// Takes the fuller of the bodies encoded so far (`None` if neither holds a row) and starts
    /// it anew; call it until `None` to take both.
    pub fn take(&mut self) -> Option<EncodedRows> {
        let csv = self.csv.rows > 0
            && (self.json.rows == 0 || self.csv.body.len() >= self.json.body.len());
        let part = if csv {
            &mut self.csv
        } else if self.json.rows > 0 {
            &mut self.json
        } else {
            return None;
        };
        let mut body = std::mem::take(&mut part.body);
        let mut fingerprint = std::mem::replace(&mut part.fingerprint, FNV_OFFSET);
        fnv(&mut fingerprint, &self.version.0.to_le_bytes());
        if csv {
            // The two bodies of a chunk hold different keys; this keeps their labels apart
            // even if the key hashes collided.
            fnv(&mut fingerprint, b"csv");
        } else {
            body.push(b']');
        }
        Some(EncodedRows {
            table: self.table.clone(),
            body: bytes::Bytes::from_owner(Pooled {
                buf: body,
                pool: self.pool.clone(),
            }),
            rows: std::mem::take(&mut part.rows),
            version: self.version,
            fingerprint,
            mapped: std::mem::take(&mut part.mapped),
            layout: if csv { self.csv_columns.clone() } else { None },
        })
    }
}

/// Writes the fields of one COPY line to `body` as a CSV row (without the audit fields), hashing
/// key fields into `fingerprint`. `Ok(None)` when a field holds an escape CSV cannot carry; the
/// caller then drops what was written and sends the line as JSON.
fn csv_row(
    table: &TableSchema,
    is_key: &[bool],
    line: &[u8],
    body: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
    mut fingerprint: u64,
) -> Result<Option<(u64, Mapped)>, SnapshotEncodeError> {
    // Most lines hold no backslash at all: then no field needs the per-field check.
    let any_escape = memchr::memchr(b'\\', line).is_some();
    let mut mapped = Mapped::default();
    let mut fields = 0;
    for raw in copy_fields(line) {
        fields += 1;
        let Some(col) = table.columns.get(fields - 1) else {
            continue;
        };
        if fields > 1 {
            body.push(b'\t');
        }
        let escaped = any_escape && memchr::memchr(b'\\', raw).is_some();
        if escaped && raw == b"\\N" {
            body.extend_from_slice(raw);
            continue;
        }
        if is_key[fields - 1] {
            fnv(&mut fingerprint, &(raw.len() as u32).to_le_bytes());
            fnv(&mut fingerprint, raw);
        }
        mapped += match col.kind {
            ValueKind::Scalar(Scalar::Bytea) if escaped => {
                value::write_starrocks_csv_bytea(body, raw).map(|()| Mapped::default())
            }
            ValueKind::Scalar(kind) if !escaped => {
                value::write_starrocks_csv(body, kind, raw, scratch)
            }
            _ => return Ok(None),
        }
        .map_err(|source| SnapshotEncodeError::Value {
            column: col.name.clone(),
            source,
        })?;
    }
    check_field_count(fields, is_key.len())?;
    Ok(Some((fingerprint, mapped)))
}

impl SnapshotEncoder for SnapshotBody {
    fn push_line(&mut self, line: &[u8]) -> Result<(), SnapshotEncodeError> {
        SnapshotBody::push_line(self, line)
    }

    fn is_full(&self) -> bool {
        SnapshotBody::is_full(self)
    }

    fn take(&mut self) -> Option<EncodedRows> {
        SnapshotBody::take(self)
    }
}

/// The StarRocks sink's snapshot encoders: [`SnapshotBody`]s over the target tables' columns,
/// sharing one pool of body buffers.
pub struct StarRocksSnapshotEncoders {
    /// Per table, the target's columns.
    pub targets: HashMap<TableName, Arc<ColumnTargets>>,
    /// Whether CSV bodies may be used.
    pub csv: bool,
    /// Body buffers for reuse.
    pub pool: BodyPool,
}

impl SnapshotEncoders for StarRocksSnapshotEncoders {
    fn encoder(
        &self,
        table: Arc<TableSchema>,
        version: Lsn,
        target_bytes: usize,
    ) -> Box<dyn SnapshotEncoder> {
        let targets = self.targets.get(&table.name).cloned().unwrap_or_default();
        Box::new(SnapshotBody::new(
            table,
            &targets,
            version,
            &synced_at_now(),
            target_bytes,
            self.pool.clone(),
            self.csv,
        ))
    }
}

impl Drop for SnapshotBody {
    /// Bodies still being filled (or never used) hand their buffers back to the pool.
    fn drop(&mut self) {
        for part in [&mut self.json, &mut self.csv] {
            if part.body.capacity() > 0 {
                drop(Pooled {
                    buf: std::mem::take(&mut part.body),
                    pool: self.pool.clone(),
                });
            }
        }
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

fn fnv(h: &mut u64, bytes: &[u8]) {
    for b in bytes {
        *h = (*h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
    }
}

/// The current UTC time as StarRocks DATETIME text.
pub fn synced_at_now() -> String {
    crate::metrics::utc_datetime(crate::metrics::now_unix_us().div_euclid(1_000_000))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TableName;
    use crate::pipeline::change::{ColumnSchema, Position, RelId};
    use bytes::Bytes;

    fn table() -> Arc<TableSchema> {
        let col = |name: &str, kind| ColumnSchema {
            name: name.into(),
            type_oid: 0,
            type_modifier: -1,
            kind: ValueKind::Scalar(kind),
        };
        Arc::new(TableSchema {
            rel_id: RelId(1),
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

    #[test]
    fn snapshot_bodies_match_the_segment_encoding_of_the_same_copy_lines() {
        let lines: [&[u8]; 3] = [
            b"1\tplain\t\\N-not-null",
            b"2\t\\N\ttab\\there \"quoted\" \\\\ and \\n",
            b"3\t\\x41\\102\t",
        ];
        let pool = BodyPool::default();
        let mut enc = SnapshotBody::new(
            table(),
            &ColumnTargets::default(),
            Lsn(77),
            "2026-01-01 00:00:00",
            1 << 20,
            pool.clone(),
            false,
        );
        let mut seg = Segment::new(table(), &ColumnTargets::default());
        for line in lines {
            enc.push_line(line).unwrap();
            let row = crate::pipeline::text_row::parse_copy_line(&Bytes::copy_from_slice(line), 3)
                .unwrap();
            seg.add(&RowChange {
                op: Op::Snapshot,
                table: table(),
                pos: Position {
                    lsn: Lsn(77),
                    commit_lsn: Lsn(77),
                    xid: 0,
                    commit_time: 0,
                },
                row,
                key_only: false,
                old: None,
            });
        }
        assert!(!enc.is_full());
        assert_eq!(enc.rows(), 3);
        let e = enc.take().unwrap();
        assert_eq!((e.rows, e.version), (3, Lsn(77)));
        let got: serde_json::Value = serde_json::from_slice(&e.body).unwrap();
        assert_eq!(got, body(&seg, &[0, 1, 2]));
        assert_eq!(got[1]["doc"], "tab\there \"quoted\" \\ and \n");
        assert_eq!(got[2]["a"], "AB");
        assert_eq!(got[1]["a"], serde_json::Value::Null);
        assert!(enc.take().is_none(), "a taken body starts empty");

        // The fingerprint follows the keys: other keys, other label.
        let fp = |lines: &[&[u8]]| {
            let mut enc = SnapshotBody::new(
                table(),
                &ColumnTargets::default(),
                Lsn(77),
                "x",
                1 << 20,
                pool.clone(),
                false,
            );
            for l in lines {
                enc.push_line(l).unwrap();
            }
            enc.take().unwrap().fingerprint
        };
        assert_eq!(fp(&[b"1\ta\tb"]), fp(&[b"1\tother\tvalues"]));
        assert_ne!(fp(&[b"1\ta\tb"]), fp(&[b"2\ta\tb"]));

        // Buffers come back to the pool once the body is dropped, and are reused.
        drop(e);
        let fresh = BodyPool::default();
        let mut small = SnapshotBody::new(
            table(),
            &ColumnTargets::default(),
            Lsn(78),
            "x",
            16,
            fresh.clone(),
            false,
        );
        small.push_line(b"4\tx\ty").unwrap();
        assert!(small.is_full(), "a 16-byte target is reached by one row");
        let e = small.take().unwrap();
        assert!(fresh.0.lock().unwrap().is_empty());
        drop(e);
        assert_eq!(fresh.0.lock().unwrap().len(), 1, "the buffer came back");
        small.push_line(b"5\tx\ty").unwrap();
        assert!(fresh.0.lock().unwrap().is_empty(), "and was taken again");

        let mut bad = SnapshotBody::new(
            table(),
            &ColumnTargets::default(),
            Lsn(77),
            "x",
            1 << 20,
            pool,
            false,
        );
        let err = bad.push_line(b"1\ttoo few").unwrap_err().to_string();
        assert!(err.contains("2 fields, the table has 3 columns"), "{err}");
        let err = bad.push_line(b"x\ta\tb").unwrap_err().to_string();
        assert!(err.contains("\"id\""), "names the column: {err}");
    }

    fn typed_table(extra: Option<(&str, Scalar)>) -> Arc<TableSchema> {
        let col = |name: &str, kind| ColumnSchema {
            name: name.into(),
            type_oid: 0,
            type_modifier: -1,
            kind: ValueKind::Scalar(kind),
        };
        let mut columns = vec![
            col("id", Scalar::Int),
            col("ok", Scalar::Bool),
            col("f", Scalar::Float),
            col("n", Scalar::Numeric),
            col("ts", Scalar::Timestamptz),
            col("d", Scalar::Date),
            col("by", Scalar::Bytea),
            col("odd name", Scalar::Text),
        ];
        columns.extend(extra.map(|(n, k)| col(n, k)));
        Arc::new(TableSchema {
            rel_id: RelId(2),
            name: TableName::new("public", "typed"),
            columns,
            key: vec![0],
            replica_identity: b'd',
        })
    }

    fn text_table(columns: usize, name_len: usize) -> Arc<TableSchema> {
        Arc::new(TableSchema {
            rel_id: RelId(3),
            name: TableName::new("public", "wide"),
            columns: (0..columns)
                .map(|i| ColumnSchema {
                    name: format!("{i:0>name_len$}"),
                    type_oid: 25,
                    type_modifier: -1,
                    kind: ValueKind::Scalar(Scalar::Text),
                })
                .collect(),
            key: vec![0],
            replica_identity: b'd',
        })
    }

    #[test]
    fn what_a_csv_reader_could_misread_goes_as_json() {
        let pool = BodyPool::default();
        let mut enc = SnapshotBody::new(
            text_table(2, 4),
            &ColumnTargets::default(),
            Lsn(5),
            "S",
            1 << 20,
            pool.clone(),
            true,
        );
        enc.push_line("\u{feff}bom\tx".as_bytes()).unwrap();
        enc.push_line(b"plain\tx").unwrap();
        let mut formats: Vec<(bool, u64)> = std::iter::from_fn(|| enc.take())
            .map(|e| (e.layout.is_some(), e.rows))
            .collect();
        formats.sort();
        assert_eq!(
            formats,
            [(false, 1), (true, 1)],
            "the line starting with a BOM is JSON"
        );

        // 400 columns with 20-byte names make a `columns` header over 8 KiB: JSON only.
        let mut wide = SnapshotBody::new(
            text_table(400, 20),
            &ColumnTargets::default(),
            Lsn(5),
            "S",
            1 << 20,
            pool.clone(),
            true,
        );
        wide.push_line(vec!["v"; 400].join("\t").as_bytes())
            .unwrap();
        assert!(wide.take().unwrap().layout.is_none());
        let mut narrow = SnapshotBody::new(
            text_table(100, 20),
            &ColumnTargets::default(),
            Lsn(5),
            "S",
            1 << 20,
            pool.clone(),
            true,
        );
        narrow
            .push_line(vec!["v"; 100].join("\t").as_bytes())
            .unwrap();
        assert!(narrow.take().unwrap().layout.is_some());

        // Buffers of bodies still being filled go back to the pool with the encoder.
        let fresh = BodyPool::default();
        let mut enc = SnapshotBody::new(
            text_table(2, 4),
            &ColumnTargets::default(),
            Lsn(5),
            "S",
            64,
            fresh.clone(),
            true,
        );
        enc.push_line(b"a\\tb\tx").unwrap();
        enc.push_line(b"plain\tx").unwrap();
        assert!(fresh.0.lock().unwrap().is_empty());
        drop(enc);
        assert_eq!(
            fresh.0.lock().unwrap().len(),
            2,
            "the JSON and the CSV buffer came back"
        );
    }

    /// A CSV field as the JSON value StarRocks would get for it from the JSON body.
    fn csv_as_json(field: &str, json: &serde_json::Value) -> serde_json::Value {
        use serde_json::Value as J;
        match (field, json) {
            ("\\N", _) => J::Null,
            ("1", J::Bool(_)) => J::Bool(true),
            ("0", J::Bool(_)) => J::Bool(false),
            (f, J::String(_)) => J::String(f.into()),
            (f, _) => serde_json::from_str(f).unwrap_or_else(|_| J::String(f.into())),
        }
    }

    #[test]
    fn csv_rows_carry_the_json_values_and_escaped_rows_go_as_json() {
        let lines: [&[u8]; 6] = [
            b"1\tt\t1.5\t12.50\t2024-01-02 03:04:05.25+00\t2024-02-29\t\\\\x0AfF\tplain \"quoted\" text",
            b"2\tf\tNaN\t-Infinity\tinfinity\t-infinity\t\\N\t\\N",
            b"3\t\\N\t-1e-05\t0\t1999-12-31 23:59:59+00\tinfinity\t\\\\x\t",
            b"4\tt\t2\t3\t2024-01-02 03:04:05+00\t2024-01-01\t\\N\ttab\\there, newline\\n, backslash \\\\",
            b"5\tt\t2\t3\t2024-01-02 03:04:05+00\t2024-01-01\t\\N\t\\\\N is not null here",
            "6\tt\t2\t3\t2024-01-02 03:04:05+00\t2024-01-01\t\\N\té 😀 \u{1}".as_bytes(),
        ];
        let pool = BodyPool::default();
        let encode = |csv: bool| {
            let mut enc = SnapshotBody::new(
                typed_table(None),
                &ColumnTargets::default(),
                Lsn(9),
                "S",
                1 << 20,
                pool.clone(),
                csv,
            );
            for l in lines {
                enc.push_line(l).unwrap();
            }
            assert_eq!(enc.rows(), 6);
            let mut out = Vec::new();
            while let Some(e) = enc.take() {
                out.push(e);
            }
            out
        };
        let json_only = encode(false);
        assert_eq!(json_only.len(), 1);
        assert!(json_only[0].layout.is_none());
        let reference: Vec<serde_json::Value> =
            serde_json::from_slice::<Vec<_>>(&json_only[0].body).unwrap();

        let both = encode(true);
        assert_eq!(both.len(), 2, "one CSV body and one JSON body");
        let (csv, json) = match both[0].layout {
            Some(_) => (&both[0], &both[1]),
            None => (&both[1], &both[0]),
        };
        assert_eq!((csv.rows, json.rows), (4, 2));
        assert_eq!(
            csv.layout.as_deref(),
            Some("id,ok,f,n,ts,d,by,`odd name`,dbmazz_op_type,dbmazz_is_deleted,dbmazz_synced_at,dbmazz_cdc_version")
        );
        let text = std::str::from_utf8(&csv.body).unwrap();
        assert!(text.ends_with('\n'));
        assert_eq!(
            text.lines().next().unwrap(),
            "1\t1\t1.5\t12.50\t2024-01-02 03:04:05.25\t2024-02-29\t0aff\tplain \"quoted\" text\t0\t0\tS\t9"
        );
        let names: Vec<&str> = csv.layout.as_deref().unwrap().split(',').collect();
        let mut seen = Vec::new();
        for line in text.lines() {
            let fields: Vec<&str> = line.split('\t').collect();
            assert_eq!(fields.len(), names.len(), "{line:?}");
            let id: usize = fields[0].parse().unwrap();
            let want = &reference[id - 1];
            for (name, field) in names.iter().zip(&fields) {
                let key = name.trim_matches('`');
                assert_eq!(
                    csv_as_json(field, &want[key]),
                    want[key],
                    "row {id} column {key}"
                );
            }
            seen.push(id);
        }
        assert_eq!(seen, [1, 2, 3, 6], "rows with escapes are not CSV");
        let json_rows: Vec<serde_json::Value> = serde_json::from_slice(&json.body).unwrap();
        assert_eq!(json_rows, [reference[3].clone(), reference[4].clone()]);
        assert_eq!(json_rows[1]["odd name"], "\\N is not null here");
        assert_eq!(
            (csv.mapped.non_finite_to_null, csv.mapped.infinity_clamped),
            (2, 3),
            "NaN and -Infinity nulled; three infinite dates clamped"
        );
        assert_ne!(csv.fingerprint, json.fingerprint);

        // Bad values are errors naming the column, in CSV as in JSON.
        for csv in [true, false] {
            let mut enc = SnapshotBody::new(
                typed_table(None),
                &ColumnTargets::default(),
                Lsn(9),
                "S",
                1 << 20,
                pool.clone(),
                csv,
            );
            let err = enc
                .push_line(b"7\tyes\t1\t1\t2024-01-02 03:04:05+00\t2024-01-01\t\\N\tx")
                .unwrap_err()
                .to_string();
            assert!(err.contains("\"ok\"") && err.contains("boolean"), "{err}");
            let err = enc
                .push_line(b"7\tt\t1\t1\t2024-01-02 03:04:05+02\t2024-01-01\t\\N\tx")
                .unwrap_err()
                .to_string();
            assert!(err.contains("\"ts\""), "{err}");
            let err = enc
                .push_line(b"7\tt\t1\t1\t2024-01-02 03:04:05+00\t2024-01-01\t\\N\t\xff")
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("\"odd name\"") && err.contains("UTF-8"),
                "{err}"
            );
            let err = enc.push_line(b"7\tt").unwrap_err().to_string();
            assert!(err.contains("2 fields, the table has 8 columns"), "{err}");
        }

        // A JSON column keeps the whole table on JSON bodies.
        let mut enc = SnapshotBody::new(
            typed_table(Some(("doc", Scalar::Json))),
            &ColumnTargets::default(),
            Lsn(9),
            "S",
            1 << 20,
            pool,
            true,
        );
        enc.push_line(b"1\tt\t1\t1\t2024-01-02 03:04:05+00\t2024-01-01\t\\N\tx\t{\"a\": 1}")
            .unwrap();
        let e = enc.take().unwrap();
        assert!(e.layout.is_none() && e.body.starts_with(b"["));
    }

    /// A table `(Id int key, Tags int[], name text key-less)` and the target's view of it.
    fn mixed_case() -> (Arc<TableSchema>, ColumnTargets) {
        let col = |name: &str, kind| ColumnSchema {
            name: name.into(),
            type_oid: 0,
            type_modifier: -1,
            kind,
        };
        let table = Arc::new(TableSchema {
            rel_id: RelId(3),
            name: TableName::new("public", "m"),
            columns: vec![
                col("Id", ValueKind::Scalar(Scalar::Text)),
                col(
                    "Tags",
                    ValueKind::Array {
                        elem: Scalar::Int,
                        delim: b',',
                    },
                ),
            ],
            key: vec![0],
            replica_identity: b'd',
        });
        let mut targets = ColumnTargets::default();
        targets.key_limit = 16;
        targets.insert(
            "id",
            crate::starrocks::target::TargetColumn {
                name: "id".into(),
                array_depth: None,
                key_width: None,
            },
        );
        targets.insert(
            "tags",
            crate::starrocks::target::TargetColumn {
                name: "TAGS".into(),
                array_depth: Some(1),
                key_width: None,
            },
        );
        (table, targets)
    }

    #[test]
    fn bodies_use_the_targets_spelling_and_check_array_depth_and_key_size() {
        let (table, targets) = mixed_case();
        let mut seg = Segment::new(table.clone(), &targets);
        let mut c = change(Op::Insert, 10, vec![t("k1"), t("{1,2}")], false, None);
        c.table = table.clone();
        seg.add(&c);
        let json = body(&seg, &[0]);
        assert_eq!(json[0]["id"], "k1");
        assert_eq!(json[0]["TAGS"], serde_json::json!([1, 2]));
        assert!(json[0].get("Id").is_none() && json[0].get("Tags").is_none());
        assert!(seg
            .columns_header(&[true, false])
            .starts_with("id,dbmazz_op_type"));

        let mut seg = Segment::new(table.clone(), &targets);
        let mut c = change(Op::Insert, 10, vec![t("k2"), t("{{1,2}}")], false, None);
        c.table = table.clone();
        seg.add(&c);
        let err = seg
            .encode(&[0], "S", &mut Vec::new())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("\"Tags\"")
                && err.contains("2-dimensional")
                && err.contains("ARRAY<ARRAY<"),
            "{err}"
        );

        let mut seg = Segment::new(table.clone(), &targets);
        let mut c = change(
            Op::Insert,
            10,
            vec![t(&"k".repeat(17)), t("{}")],
            false,
            None,
        );
        c.table = table.clone();
        seg.add(&c);
        let err = seg
            .encode(&[0], "S", &mut Vec::new())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("17 bytes") && err.contains("STARROCKS_PRIMARY_KEY_LIMIT"),
            "{err}"
        );
        assert!(
            !err.contains(&"k".repeat(17)),
            "key values stay out of errors"
        );

        let mut enc = SnapshotBody::new(
            table,
            &targets,
            Lsn(5),
            "S",
            1 << 20,
            BodyPool::default(),
            true,
        );
        enc.push_line(b"k3\t{3}").unwrap();
        let e = enc.take().unwrap();
        let json: serde_json::Value = serde_json::from_slice(&e.body).unwrap();
        assert_eq!(json[0]["TAGS"], serde_json::json!([3]));
        assert!(enc
            .push_line(b"k4\t{{3}}")
            .unwrap_err()
            .to_string()
            .contains("2-dimensional"));
        let err = enc
            .push_line(format!("{}\t{{}}", "k".repeat(17)).as_bytes())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("key (Id)") && err.contains("17 bytes"),
            "{err}"
        );
    }

    #[test]
    fn composite_keys_count_like_starrocks_encoder() {
        let limit = KeyLimit {
            limit: 20,
            columns: vec![(0, Some(8)), (1, None), (2, None)],
            overhead: 0,
        };
        // 8 (bigint) + 5 + 2 (terminator) + 5 (last string) = 20: allowed.
        assert!(limit
            .check([&b"1"[..], b"abcde", b"fghij"].into_iter())
            .is_ok());
        // A zero byte in a string that is not last is escaped to two bytes.
        let e = limit
            .check([&b"1"[..], b"ab\0de", b"fghij"].into_iter())
            .unwrap_err();
        assert_eq!((e.size, e.limit), (21, 20));
    }

    fn body(seg: &Segment, rows: &[usize]) -> serde_json::Value {
        let mut out = Vec::new();
        seg.encode(rows, "2026-01-01 00:00:00", &mut out).unwrap();
        serde_json::from_slice(&out).unwrap()
    }

    #[test]
    fn two_updates_of_one_key_collapse_to_the_last() {
        let mut seg = Segment::new(table(), &ColumnTargets::default());
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
    fn many_keys_collapse_by_key_and_group_in_a_fixed_order() {
        let mut seg = Segment::new(table(), &ColumnTargets::default());
        // 3,000 keys (the index grows many times), each changed twice; key `k` ends as a full
        // row, a partial row without `doc`, or a key-only delete laid over its full row.
        for k in 0..3000u64 {
            let id = t(&k.to_string());
            seg.add(&change(
                Op::Insert,
                10 * k,
                vec![id.clone(), t("x"), t("d")],
                false,
                None,
            ));
        }
        for k in 0..3000u64 {
            let id = t(&k.to_string());
            let lsn = 100_000 + k;
            let c = match k % 3 {
                0 => change(Op::Update, lsn, vec![id, t("y"), t("e")], false, None),
                1 => change(
                    Op::Update,
                    lsn,
                    vec![id, t("z"), Value::UnchangedToast],
                    false,
                    None,
                ),
                _ => change(
                    Op::Delete,
                    lsn,
                    vec![id, Value::Null, Value::Null],
                    true,
                    None,
                ),
            };
            seg.add(&c);
        }
        assert_eq!(seg.len(), 3000, "one collapsed row per key");
        let groups = seg.groups();
        assert_eq!(groups.len(), 1, "every row still carries every column");
        let b = body(&seg, &groups[0].1);
        let rows = b.as_array().expect("a JSON array");
        assert_eq!(rows.len(), 3000);
        for (k, row) in rows.iter().enumerate() {
            assert_eq!(row["id"], serde_json::json!(k));
            let want = match k % 3 {
                0 => ("y", "e", false),
                1 => ("z", "d", false),
                _ => ("x", "d", true),
            };
            assert_eq!(
                (
                    row["a"].as_str(),
                    row["doc"].as_str(),
                    row["dbmazz_is_deleted"].as_bool()
                ),
                (Some(want.0), Some(want.1), Some(want.2)),
                "key {k}"
            );
        }

        let mut seg = Segment::new(table(), &ColumnTargets::default());
        seg.add(&change(
            Op::Update,
            1,
            vec![t("1"), Value::UnchangedToast, t("d")],
            false,
            None,
        ));
        seg.add(&change(
            Op::Delete,
            2,
            vec![t("2"), Value::Null, Value::Null],
            true,
            None,
        ));
        seg.add(&change(
            Op::Insert,
            3,
            vec![t("3"), t("a"), t("d")],
            false,
            None,
        ));
        seg.add(&change(
            Op::Update,
            4,
            vec![t("4"), t("a"), Value::UnchangedToast],
            false,
            None,
        ));
        seg.add(&change(
            Op::Update,
            5,
            vec![t("5"), Value::UnchangedToast, t("d")],
            false,
            None,
        ));
        let groups: Vec<(Vec<bool>, Vec<usize>)> = seg.groups();
        assert_eq!(
            groups,
            vec![
                (vec![true, true, true], vec![2]),
                (vec![true, false, false], vec![1]),
                (vec![true, false, true], vec![0, 4]),
                (vec![true, true, false], vec![3]),
            ],
            "full rows first, then the column sets in order, rows in arrival order"
        );
    }

    #[test]
    fn unchanged_toast_makes_a_partial_row_that_never_writes_the_column() {
        let mut seg = Segment::new(table(), &ColumnTargets::default());
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
        let mut seg = Segment::new(table(), &ColumnTargets::default());
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
        let mut seg = Segment::new(table(), &ColumnTargets::default());
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
        let mut seg = Segment::new(table(), &ColumnTargets::default());
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
        let mut seg = Segment::new(table(), &ColumnTargets::default());
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
        let mut seg = Segment::new(table(), &ColumnTargets::default());
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
