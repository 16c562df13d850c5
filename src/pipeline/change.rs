//! The row-change model every sink consumes.
//!
//! The WAL reader turns pgoutput messages into [`Event`]s: row changes carrying the schema of
//! their table, truncates, schema changes and commit markers. Sinks see only this model, never
//! the wire format. Values stay the zero-copy [`Value`] slices the decoder produced; an
//! unchanged TOAST value stays [`Value::UnchangedToast`] so that no sink can mistake it for NULL.

use std::sync::Arc;

use bytes::Bytes;

use crate::config::TableName;
use crate::value::ValueKind;
use crate::Lsn;

/// The column values of one row, in the table's column order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tuple {
    /// One value per column.
    pub values: Vec<Value>,
}

/// One column value of a [`Tuple`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// SQL NULL (also every non-key column of a key-only old row).
    Null,
    /// A large value that did not change and was not sent (PostgreSQL's unchanged TOAST): never
    /// to be written as NULL.
    UnchangedToast,
    /// The value in the source type's text output format. Not checked for UTF-8 here.
    Text(Bytes),
    /// The value in the type's binary format.
    Binary(Bytes),
}

/// What the source's catalog says of a replicated table at start (sinks create and check their
/// tables from it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableCatalog {
    /// Table name, as `TABLES` gives it: the table's identity for the sinks and the bookkeeping,
    /// kept when the table is renamed in the source (`SCHEMA_TABLE_RENAME=follow`).
    pub name: TableName,
    /// The source's identifier of the table (PostgreSQL's relation OID), stable across renames.
    pub oid: RelId,
    /// The table's current name in the source, for queries; differs from `name` once a renamed
    /// table is followed.
    pub source_name: TableName,
    /// Primary-key column names, in key order.
    pub key_columns: Vec<String>,
    /// Columns in table order.
    pub columns: Vec<CatalogColumn>,
}

/// A column as the catalog describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CatalogColumn {
    /// Name.
    pub name: String,
    /// Type OID.
    pub type_oid: u32,
    /// Type modifier, -1 when none.
    pub type_modifier: i32,
    /// For arrays, the element type OID (0 otherwise).
    pub elem_oid: u32,
    /// For arrays, the dimensions the column was declared with (`attndims`: `int[][]` → 2);
    /// PostgreSQL does not enforce them, so values may still differ. 0 when not declared.
    pub array_dims: u8,
    /// `NOT NULL`.
    pub not_null: bool,
}

/// One column of a replicated table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ColumnSchema {
    /// Column name.
    pub name: String,
    /// PostgreSQL type OID.
    pub type_oid: u32,
    /// Type modifier (e.g. numeric precision), -1 when none.
    pub type_modifier: i32,
    /// How the value text is turned into JSON.
    pub kind: ValueKind,
}

/// A relation's OID, as pgoutput names a table in its change messages. It stays the same across
/// `ALTER TABLE … RENAME` and `SET SCHEMA`, so it, not the name, identifies a table mid-stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RelId(pub u32);

impl std::fmt::Display for RelId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// What a replicated table looks like at some point of the stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableSchema {
    /// The relation OID PostgreSQL uses in change messages.
    pub rel_id: RelId,
    /// Schema-qualified name.
    pub name: TableName,
    /// Columns in table order.
    pub columns: Vec<ColumnSchema>,
    /// Indexes (into `columns`) of the primary-key columns, in key order.
    pub key: Vec<usize>,
    /// pgoutput's replica identity setting: `d`efault, `f`ull, `i`ndex or `n`othing.
    pub replica_identity: u8,
}

/// The kind of a row change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// A new row.
    Insert,
    /// A changed row (possibly with a changed key).
    Update,
    /// A removed row.
    Delete,
    /// A row copied by the initial snapshot (an upsert stamped with the snapshot's LSN).
    Snapshot,
}

impl Op {
    /// Lower-case name, as written by the NDJSON sink.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Insert => "insert",
            Op::Update => "update",
            Op::Delete => "delete",
            Op::Snapshot => "snapshot",
        }
    }
}

/// Where a change sits in the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    /// LSN of the change record itself.
    pub lsn: Lsn,
    /// LSN of the commit record of its transaction (pgoutput Begin's `final_lsn`). This is the
    /// row version sinks store: commit LSNs are monotonic per row.
    pub commit_lsn: Lsn,
    /// Transaction id.
    pub xid: u32,
    /// Commit time, microseconds since 2000-01-01 UTC.
    pub commit_time: i64,
}

/// One INSERT, UPDATE or DELETE.
#[derive(Clone, Debug)]
pub struct RowChange {
    /// Insert, update or delete.
    pub op: Op,
    /// The table, as it was when the change was made.
    pub table: Arc<TableSchema>,
    /// Stream position.
    pub pos: Position,
    /// The row that describes the change: the new row of an insert or update (unchanged TOAST
    /// values stay [`Value::UnchangedToast`]), the old row of a delete.
    pub row: Tuple,
    /// `row` holds only the key columns (a delete under the default replica identity); the
    /// other columns are NULL markers that must not be taken as values.
    pub key_only: bool,
    /// For an update: the old row, present when the key changed (key columns only) or under
    /// REPLICA IDENTITY FULL (every column).
    pub old: Option<Tuple>,
}

impl RowChange {
    /// Memory its tuples hold: the value slots and the bytes they refer to (its share of the
    /// in-flight budget).
    pub fn data_bytes(&self) -> usize {
        tuple_bytes(Some(&self.row)) + tuple_bytes(self.old.as_ref())
    }

    /// The old row when this update changed the primary key.
    pub fn changed_old_key(&self) -> Option<&Tuple> {
        let old = self.old.as_ref()?;
        let changed = self.table.key.iter().any(|&i| {
            let (n, o) = (self.row.values.get(i), old.values.get(i));
            !matches!(n, Some(Value::UnchangedToast)) && n != o
        });
        changed.then_some(old)
    }
}

/// Memory a tuple holds: one [`Value`] slot per column plus the bytes each value refers to.
/// Counting the slots at their real size (not a guess) keeps the in-flight budget a budget of
/// memory: on narrow rows the slots outweigh the data.
fn tuple_bytes(t: Option<&Tuple>) -> usize {
    t.map_or(0, |t| {
        t.values
            .iter()
            .map(|v| {
                std::mem::size_of::<Value>()
                    + match v {
                        Value::Text(b) | Value::Binary(b) => b.len(),
                        Value::Null | Value::UnchangedToast => 0,
                    }
            })
            .sum()
    })
}

/// A TRUNCATE of one table.
#[derive(Clone, Debug)]
pub struct TruncateChange {
    /// The truncated table.
    pub table: Arc<TableSchema>,
    /// Stream position.
    pub pos: Position,
    /// `TRUNCATE ... CASCADE`.
    pub cascade: bool,
    /// `TRUNCATE ... RESTART IDENTITY`.
    pub restart_identity: bool,
}

/// A table whose columns changed mid-stream (PostgreSQL sent a new Relation message).
#[derive(Clone, Debug)]
pub struct SchemaChange {
    /// The schema before.
    pub old: Arc<TableSchema>,
    /// The schema from now on.
    pub new: Arc<TableSchema>,
    /// Commit LSN of the transaction whose changes first use the new schema (PostgreSQL gives
    /// Relation messages no position of their own).
    pub lsn: Lsn,
}

/// Everything that flows from the WAL reader to the sink, in stream order.
#[derive(Clone, Debug)]
pub enum Event {
    /// A row change.
    Row(RowChange),
    /// A truncated table.
    Truncate(TruncateChange),
    /// A table's columns changed; later rows use the new schema.
    Schema(SchemaChange),
    /// The end of a transaction: once everything before it is durable, `end_lsn` may be
    /// checkpointed and confirmed.
    Commit {
        /// LSN of the commit record.
        commit_lsn: Lsn,
        /// LSN just past the commit record: the resume point.
        end_lsn: Lsn,
        /// Commit time, microseconds since 2000-01-01 UTC.
        commit_time: i64,
    },
    /// PostgreSQL reported its WAL position while no transaction was open: once everything
    /// before this marker is durable, `wal_end` may be confirmed (lets quiet databases release
    /// WAL).
    Idle {
        /// The server's sent position.
        wal_end: Lsn,
    },
    /// Snapshot rows already encoded in the sink's own format by the encoder the sink handed the
    /// snapshot ([`crate::pipeline::sink::Sink::snapshot_encoders`]).
    Encoded(EncodedRows),
    /// Every row of one snapshot chunk was sent before this marker; once it is durable the
    /// chunk is recorded as done.
    ChunkDone {
        /// Table.
        table: TableName,
        /// Chunk number.
        chunk: i32,
        /// Rows the chunk held.
        rows: u64,
    },
}

impl Event {
    /// Memory this event holds: the event itself, its value slots and the bytes they refer to
    /// (its share of the in-flight budget and of a batch's size).
    pub fn data_bytes(&self) -> usize {
        std::mem::size_of::<Event>()
            + match self {
                Event::Row(r) => r.data_bytes(),
                Event::Encoded(e) => e.body.len(),
                _ => 0,
            }
    }

    /// Whether this is a row-level change (row or truncate) rather than a marker.
    pub fn is_change(&self) -> bool {
        matches!(self, Event::Row(_) | Event::Truncate(_) | Event::Encoded(_))
    }

    /// Row-level changes this event stands for (what `FLUSH_SIZE` counts).
    pub fn changes(&self) -> usize {
        match self {
            Event::Row(_) | Event::Truncate(_) => 1,
            Event::Encoded(e) => e.rows as usize,
            _ => 0,
        }
    }
}

/// A block of snapshot rows of one table, encoded as one body in its sink's own format: every
/// row is a full-row insert stamped with the snapshot's LSN, so nothing needs collapsing or
/// grouping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodedRows {
    /// Table.
    pub table: Arc<TableSchema>,
    /// The body (StarRocks: one load's JSON array or tab-separated CSV; NDJSON: the lines).
    pub body: bytes::Bytes,
    /// What the sink must say about the body's layout when it sends it, if anything
    /// (StarRocks: the `columns` header of a CSV body).
    pub layout: Option<Arc<str>>,
    /// Rows in the body.
    pub rows: u64,
    /// The version every row carries (the snapshot's consistent point).
    pub version: Lsn,
    /// A hash of the rows' keys, so that bodies with the same version never share a label.
    pub fingerprint: u64,
    /// Values mapped while encoding (NaN to null, infinite dates clamped).
    pub mapped: crate::value::Mapped,
}
