//! The pgoutput decoder: one logical replication message in, one typed [`Message`] out.
//!
//! PostgreSQL's `pgoutput` plugin sends every change as one `XLogData` payload. The replication
//! client hands that payload over as [`Bytes`]; [`decode`] turns it into a [`Message`] without
//! touching the network, the clock or any shared state, so it can be tested byte for byte,
//! property-tested and fuzzed on its own.
//!
//! ```text
//!  XLogData payload ──decode(frame, in_stream)──▶ Message::{Begin, Relation, Insert, …, Commit}
//!  (one Bytes)                                     values = Bytes slices of the same payload
//! ```
//!
//! Three properties matter more than anything else here:
//!
//! - **Never panics.** The bytes come from outside the process. Every read goes through the
//!   private `Reader` cursor, which checks the remaining length first; counts and lengths are
//!   checked against the bytes that are left *before* anything is allocated, negative counts
//!   are errors, and unknown tags, unknown value kinds and trailing bytes are typed
//!   [`DecodeError`]s rather than guesses. A misread message would silently corrupt rows
//!   downstream, so the decoder is strict. The lints at the top of this file keep indexing,
//!   `unwrap` and lossy casts out of the non-test code.
//! - **Zero-copy.** Column values ([`Value::Text`], [`Value::Binary`]) are `frame.slice(..)`
//!   sub-slices sharing the payload's buffer; nothing is copied and their UTF-8 is not checked
//!   here (consumers do it when they convert a value). Only names (schema, table, column,
//!   type, prefix, GID) become owned `String`s, after a UTF-8 check: they are few, small and
//!   outlive the frame in the schema cache.
//! - **Complete for PostgreSQL 15.** Every message pgoutput sends for protocol versions 1 to 3:
//!   transactions, origins, relations and types, the four change kinds, logical messages,
//!   streaming of in-progress transactions (version 2) and two-phase commit (version 3).
//!
//! Streaming needs one piece of context that the bytes do not carry: between Stream Start and
//! Stream Stop, Relation, Type, Insert, Update, Delete, Truncate and logical messages begin with
//! the streamed transaction's xid. The caller tracks that and passes it as `in_stream`.
//!
//! The layout follows PostgreSQL's "Logical Replication Message Formats" documentation and
//! `src/backend/replication/logical/proto.c`. Offsets in errors count from the first byte of the
//! payload (the tag is at offset 0).

#![deny(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unreachable,
    clippy::todo,
    clippy::unimplemented,
    clippy::cast_sign_loss,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap
)]

use std::fmt;

use bytes::Bytes;

use crate::Lsn;

/// Message tags: the first byte of every pgoutput message (PostgreSQL's `LogicalRepMsgType`).
pub mod tag {
    /// `B`: start of a transaction.
    pub const BEGIN: u8 = b'B';
    /// `C`: end of a transaction.
    pub const COMMIT: u8 = b'C';
    /// `O`: the replication origin of the transaction that follows.
    pub const ORIGIN: u8 = b'O';
    /// `R`: the layout of a relation, sent before its first change.
    pub const RELATION: u8 = b'R';
    /// `Y`: a non-built-in data type used by a relation.
    pub const TYPE: u8 = b'Y';
    /// `I`: an inserted row.
    pub const INSERT: u8 = b'I';
    /// `U`: an updated row.
    pub const UPDATE: u8 = b'U';
    /// `D`: a deleted row.
    pub const DELETE: u8 = b'D';
    /// `T`: one TRUNCATE statement.
    pub const TRUNCATE: u8 = b'T';
    /// `M`: a message from `pg_logical_emit_message`.
    pub const MESSAGE: u8 = b'M';
    /// `S`: start of a block of a streamed in-progress transaction (protocol 2+).
    pub const STREAM_START: u8 = b'S';
    /// `E`: end of a streamed block.
    pub const STREAM_STOP: u8 = b'E';
    /// `c`: commit of a streamed transaction.
    pub const STREAM_COMMIT: u8 = b'c';
    /// `A`: abort of a streamed transaction or of one of its subtransactions.
    pub const STREAM_ABORT: u8 = b'A';
    /// `b`: start of a transaction being prepared for two-phase commit (protocol 3).
    pub const BEGIN_PREPARE: u8 = b'b';
    /// `P`: end of a prepared transaction (`PREPARE TRANSACTION`).
    pub const PREPARE: u8 = b'P';
    /// `K`: `COMMIT PREPARED`.
    pub const COMMIT_PREPARED: u8 = b'K';
    /// `r`: `ROLLBACK PREPARED`.
    pub const ROLLBACK_PREPARED: u8 = b'r';
    /// `p`: `PREPARE TRANSACTION` of a streamed transaction.
    pub const STREAM_PREPARE: u8 = b'p';
}

/// Marks the tuple that follows as the row's new content.
const TUPLE_NEW: u8 = b'N';
/// Marks the tuple that follows as the old replica-identity key columns.
const TUPLE_KEY: u8 = b'K';
/// Marks the tuple that follows as the whole old row (`REPLICA IDENTITY FULL`).
const TUPLE_OLD: u8 = b'O';

/// Column value kinds inside a tuple.
const VALUE_NULL: u8 = b'n';
const VALUE_UNCHANGED_TOAST: u8 = b'u';
const VALUE_TEXT: u8 = b't';
const VALUE_BINARY: u8 = b'b';

/// Smallest encoding of one Relation column: flags, empty name, type OID, type modifier.
const MIN_COLUMN_LEN: usize = 1 + 1 + 4 + 4;

/// One decoded pgoutput message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Start of a committed transaction.
    Begin(Begin),
    /// End of the transaction started by the last [`Message::Begin`].
    Commit(Commit),
    /// The transaction came from another node through a replication origin.
    Origin(Origin),
    /// Layout of a relation; precedes its first change in a session (and follows DDL).
    Relation(Relation),
    /// A non-built-in type (enum, domain, composite, …) used by a relation's column.
    Type(TypeMsg),
    /// A row was inserted.
    Insert(Insert),
    /// A row was updated.
    Update(Update),
    /// A row was deleted.
    Delete(Delete),
    /// One or more relations were truncated by one statement.
    Truncate(Truncate),
    /// A message emitted with `pg_logical_emit_message`.
    LogicalMessage(LogicalMessage),
    /// Start of a block of changes of an in-progress, streamed transaction.
    StreamStart {
        /// The streamed (top-level) transaction.
        xid: u32,
        /// True for the transaction's first block.
        first_segment: bool,
    },
    /// End of the current streamed block; changes of other transactions may follow.
    StreamStop,
    /// A streamed transaction committed: everything streamed for `xid` is now durable.
    StreamCommit(StreamCommit),
    /// A streamed transaction, or one of its subtransactions, was rolled back.
    StreamAbort {
        /// The streamed (top-level) transaction.
        xid: u32,
        /// The aborted subtransaction; equal to `xid` when the whole transaction aborted.
        subxid: u32,
    },
    /// Start of a transaction being prepared for two-phase commit.
    BeginPrepare(BeginPrepare),
    /// The transaction started by [`Message::BeginPrepare`] was prepared.
    Prepare(Prepare),
    /// A prepared transaction was committed.
    CommitPrepared(CommitPrepared),
    /// A prepared transaction was rolled back.
    RollbackPrepared(RollbackPrepared),
    /// A streamed transaction was prepared; same fields as [`Message::Prepare`].
    StreamPrepare(Prepare),
}

impl Message {
    /// The wire tag of this message (see [`tag`]).
    pub fn tag(&self) -> u8 {
        match self {
            Message::Begin(_) => tag::BEGIN,
            Message::Commit(_) => tag::COMMIT,
            Message::Origin(_) => tag::ORIGIN,
            Message::Relation(_) => tag::RELATION,
            Message::Type(_) => tag::TYPE,
            Message::Insert(_) => tag::INSERT,
            Message::Update(_) => tag::UPDATE,
            Message::Delete(_) => tag::DELETE,
            Message::Truncate(_) => tag::TRUNCATE,
            Message::LogicalMessage(_) => tag::MESSAGE,
            Message::StreamStart { .. } => tag::STREAM_START,
            Message::StreamStop => tag::STREAM_STOP,
            Message::StreamCommit(_) => tag::STREAM_COMMIT,
            Message::StreamAbort { .. } => tag::STREAM_ABORT,
            Message::BeginPrepare(_) => tag::BEGIN_PREPARE,
            Message::Prepare(_) => tag::PREPARE,
            Message::CommitPrepared(_) => tag::COMMIT_PREPARED,
            Message::RollbackPrepared(_) => tag::ROLLBACK_PREPARED,
            Message::StreamPrepare(_) => tag::STREAM_PREPARE,
        }
    }
}

/// `B`: a transaction starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Begin {
    /// LSN of the transaction's commit record: the version every row of it carries.
    pub final_lsn: Lsn,
    /// Commit time, microseconds since 2000-01-01 00:00:00 UTC.
    pub commit_time: i64,
    /// Transaction id.
    pub xid: u32,
}

/// `C`: a transaction ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    /// Unused by PostgreSQL 15 (always 0).
    pub flags: u8,
    /// LSN of the commit record (equals the Begin's `final_lsn`).
    pub commit_lsn: Lsn,
    /// LSN just past the commit record: where a restart after this transaction begins.
    pub end_lsn: Lsn,
    /// Commit time, microseconds since 2000-01-01 00:00:00 UTC.
    pub commit_time: i64,
}

/// `O`: the transaction was replicated from elsewhere through a named origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The commit LSN on the origin server.
    pub commit_lsn: Lsn,
    /// The origin's name.
    pub name: String,
}

/// `R`: the layout of a relation as published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    /// The streamed transaction, when sent inside a stream block.
    pub xid: Option<u32>,
    /// The relation's OID; changes refer to it.
    pub rel_id: RelId,
    /// Schema name (empty for `pg_catalog`).
    pub namespace: String,
    /// Relation name.
    pub name: String,
    /// `REPLICA IDENTITY` setting: `d` default, `n` nothing, `f` full, `i` index.
    pub replica_identity: u8,
    /// The published columns, in tuple order.
    pub columns: Vec<Column>,
}

/// One column of a [`Relation`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// Bit 0 set when the column is part of the replica identity key.
    pub flags: u8,
    /// Column name.
    pub name: String,
    /// OID of the column's type.
    pub type_oid: u32,
    /// Type modifier (`atttypmod`), e.g. length or precision; -1 when none.
    pub type_modifier: i32,
}

impl Column {
    /// The flag bit that marks a replica-identity key column.
    pub const FLAG_KEY: u8 = 1;

    /// Whether this column belongs to the replica identity (the key of updates and deletes).
    pub fn is_key(&self) -> bool {
        self.flags & Self::FLAG_KEY != 0
    }
}

/// `Y`: a data type that is not built in (its OID is at or above `FirstGenbkiObjectId`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeMsg {
    /// The streamed transaction, when sent inside a stream block.
    pub xid: Option<u32>,
    /// The type's OID, as used in [`Column::type_oid`].
    pub oid: u32,
    /// Schema name (empty for `pg_catalog`).
    pub namespace: String,
    /// Type name.
    pub name: String,
}

/// `I`: a row was inserted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Insert {
    /// The streamed transaction, when sent inside a stream block.
    pub xid: Option<u32>,
    /// The relation (see [`Relation::rel_id`]).
    pub rel_id: RelId,
    /// The new row.
    pub new: Tuple,
}

/// `U`: a row was updated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    /// The streamed transaction, when sent inside a stream block.
    pub xid: Option<u32>,
    /// The relation (see [`Relation::rel_id`]).
    pub rel_id: RelId,
    /// The old key (when the key changed) or the whole old row (`REPLICA IDENTITY FULL`).
    pub old: Option<OldTuple>,
    /// The new row; unchanged TOASTed columns are [`Value::UnchangedToast`].
    pub new: Tuple,
}

/// `D`: a row was deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delete {
    /// The streamed transaction, when sent inside a stream block.
    pub xid: Option<u32>,
    /// The relation (see [`Relation::rel_id`]).
    pub rel_id: RelId,
    /// The deleted row's key, or the whole row under `REPLICA IDENTITY FULL`.
    pub old: OldTuple,
}

/// The old row of an update or delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OldTuple {
    /// `K`: only the replica identity columns are set; the others are null.
    Key(Tuple),
    /// `O`: every column of the old row (`REPLICA IDENTITY FULL`).
    Full(Tuple),
}

impl OldTuple {
    /// The tuple, whichever kind it is.
    pub fn tuple(&self) -> &Tuple {
        match self {
            OldTuple::Key(t) | OldTuple::Full(t) => t,
        }
    }
}

/// `T`: relations truncated by one statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncate {
    /// The streamed transaction, when sent inside a stream block.
    pub xid: Option<u32>,
    /// Bit flags: [`Truncate::CASCADE`], [`Truncate::RESTART_IDENTITY`].
    pub options: u8,
    /// The truncated relations.
    pub rel_ids: Vec<RelId>,
}

impl Truncate {
    /// `TRUNCATE … CASCADE`.
    pub const CASCADE: u8 = 1;
    /// `TRUNCATE … RESTART IDENTITY`.
    pub const RESTART_IDENTITY: u8 = 2;
}

/// `M`: a message written with `pg_logical_emit_message` (only with the `messages` option).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogicalMessage {
    /// The streamed transaction, when sent inside a stream block.
    pub xid: Option<u32>,
    /// [`LogicalMessage::TRANSACTIONAL`] when the message is part of its transaction.
    pub flags: u8,
    /// LSN of the message.
    pub lsn: Lsn,
    /// The prefix given by the writer.
    pub prefix: String,
    /// The content, a slice of the frame.
    pub content: Bytes,
}

impl LogicalMessage {
    /// The flag of a transactional message (decoded at commit, between Begin and Commit).
    pub const TRANSACTIONAL: u8 = 1;
}

/// `c`: a streamed transaction committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamCommit {
    /// The streamed transaction.
    pub xid: u32,
    /// Unused by PostgreSQL 15 (always 0).
    pub flags: u8,
    /// LSN of the commit record.
    pub commit_lsn: Lsn,
    /// LSN just past the commit record.
    pub end_lsn: Lsn,
    /// Commit time, microseconds since 2000-01-01 00:00:00 UTC.
    pub commit_time: i64,
}

/// `b`: a transaction that is being prepared starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BeginPrepare {
    /// LSN of the PREPARE record.
    pub prepare_lsn: Lsn,
    /// LSN just past the PREPARE record.
    pub end_lsn: Lsn,
    /// Prepare time, microseconds since 2000-01-01 00:00:00 UTC.
    pub prepare_time: i64,
    /// Transaction id.
    pub xid: u32,
    /// The global transaction identifier given to `PREPARE TRANSACTION`.
    pub gid: String,
}

/// `P` and `p`: a transaction (streamed, for `p`) was prepared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepare {
    /// Unused by PostgreSQL 15 (always 0).
    pub flags: u8,
    /// LSN of the PREPARE record.
    pub prepare_lsn: Lsn,
    /// LSN just past the PREPARE record.
    pub end_lsn: Lsn,
    /// Prepare time, microseconds since 2000-01-01 00:00:00 UTC.
    pub prepare_time: i64,
    /// Transaction id.
    pub xid: u32,
    /// The global transaction identifier.
    pub gid: String,
}

/// `K`: a prepared transaction committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitPrepared {
    /// Unused by PostgreSQL 15 (always 0).
    pub flags: u8,
    /// LSN of the COMMIT PREPARED record.
    pub commit_lsn: Lsn,
    /// LSN just past that record.
    pub end_lsn: Lsn,
    /// Commit time, microseconds since 2000-01-01 00:00:00 UTC.
    pub commit_time: i64,
    /// Transaction id.
    pub xid: u32,
    /// The global transaction identifier.
    pub gid: String,
}

/// `r`: a prepared transaction was rolled back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollbackPrepared {
    /// Unused by PostgreSQL 15 (always 0).
    pub flags: u8,
    /// LSN just past the PREPARE record.
    pub prepare_end_lsn: Lsn,
    /// LSN just past the ROLLBACK PREPARED record.
    pub rollback_end_lsn: Lsn,
    /// Prepare time, microseconds since 2000-01-01 00:00:00 UTC.
    pub prepare_time: i64,
    /// Rollback time, microseconds since 2000-01-01 00:00:00 UTC.
    pub rollback_time: i64,
    /// Transaction id.
    pub xid: u32,
    /// The global transaction identifier.
    pub gid: String,
}

// Row values are the pipeline's source-neutral model; pgoutput's `n`, `u`, `t` and `b` column
// kinds decode into them one to one.
pub use crate::pipeline::change::{RelId, Tuple, Value};

/// Why a payload is not a valid pgoutput message.
///
/// Every variant is definite: the same bytes will never decode, so the caller should stop and
/// report (a protocol version or option mismatch is the usual cause), not retry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The payload has no bytes at all.
    #[error("empty pgoutput message")]
    Empty,
    /// The first byte is not a pgoutput message tag.
    #[error("unknown pgoutput message tag {}", ShowByte(*.0))]
    UnknownTag(u8),
    /// The payload ends before a field is complete.
    #[error(
        "truncated pgoutput message: needed {needed} bytes for {what} at offset {offset}, {remaining} remain"
    )]
    Truncated {
        /// The field being read.
        what: &'static str,
        /// Offset of the field in the payload.
        offset: usize,
        /// Bytes the field needs.
        needed: usize,
        /// Bytes left in the payload.
        remaining: usize,
    },
    /// A tuple value has a kind other than `n`, `u`, `t` or `b`.
    #[error(
        "unknown tuple value kind {} at offset {offset}: expected 'n', 'u', 't' or 'b'",
        ShowByte(*.kind)
    )]
    UnknownTupleKind {
        /// The kind byte found.
        kind: u8,
        /// Its offset in the payload.
        offset: usize,
    },
    /// A count or length is negative.
    #[error("negative {what} {value} at offset {offset}")]
    Negative {
        /// The field being read.
        what: &'static str,
        /// The value found.
        value: i64,
        /// Offset of the field in the payload.
        offset: usize,
    },
    /// A string runs to the end of the payload without its terminating NUL.
    #[error("unterminated string for {what} at offset {offset}: no NUL byte before the end")]
    MissingNul {
        /// The field being read.
        what: &'static str,
        /// Offset of the string in the payload.
        offset: usize,
    },
    /// A name is not valid UTF-8.
    #[error("{what} at offset {offset} is not valid UTF-8")]
    InvalidUtf8 {
        /// The field being read.
        what: &'static str,
        /// Offset of the string in the payload.
        offset: usize,
    },
    /// Bytes are left after a complete message.
    #[error("{count} unexpected bytes after a complete {} message", ShowByte(*.tag))]
    TrailingBytes {
        /// The message's tag.
        tag: u8,
        /// How many bytes are left over.
        count: usize,
    },
    /// The marker before a tuple (`N`, `K` or `O`) is not one allowed at that point.
    #[error("expected tuple marker {expected} at offset {offset}, found {}", ShowByte(*.found))]
    UnexpectedTupleMarker {
        /// What the message allows here.
        expected: &'static str,
        /// The byte found.
        found: u8,
        /// Its offset in the payload.
        offset: usize,
    },
}

/// Prints a protocol byte as `'B'` when it is printable ASCII, else as `0x00`.
struct ShowByte(u8);

impl fmt::Display for ShowByte {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_ascii_graphic() {
            write!(f, "'{}'", char::from(self.0))
        } else {
            write!(f, "0x{:02x}", self.0)
        }
    }
}

/// Decodes one pgoutput message.
///
/// `frame` is the payload of one `XLogData` message. `in_stream` must be true between a
/// [`Message::StreamStart`] and the next [`Message::StreamStop`] (protocol 2+ streaming), where
/// change, relation, type, truncate and logical messages carry a leading xid. Values in the
/// result are slices of `frame`. Any malformed input yields a [`DecodeError`], never a panic.
pub fn decode(frame: &Bytes, in_stream: bool) -> Result<Message, DecodeError> {
    let Some((&tag, _)) = frame.split_first() else {
        return Err(DecodeError::Empty);
    };
    let mut r = Reader {
        frame,
        buf: frame.as_ref(),
        pos: 1,
    };
    let msg = match tag {
        tag::BEGIN => Message::Begin(Begin {
            final_lsn: r.lsn("final_lsn")?,
            commit_time: r.i64("commit_time")?,
            xid: r.u32("xid")?,
        }),
        tag::COMMIT => Message::Commit(Commit {
            flags: r.u8("flags")?,
            commit_lsn: r.lsn("commit_lsn")?,
            end_lsn: r.lsn("end_lsn")?,
            commit_time: r.i64("commit_time")?,
        }),
        tag::ORIGIN => Message::Origin(Origin {
            commit_lsn: r.lsn("origin commit_lsn")?,
            name: r.cstring("origin name")?,
        }),
        tag::RELATION => Message::Relation(r.relation(in_stream)?),
        tag::TYPE => Message::Type(TypeMsg {
            xid: r.stream_xid(in_stream)?,
            oid: r.u32("type oid")?,
            namespace: r.cstring("type namespace")?,
            name: r.cstring("type name")?,
        }),
        tag::INSERT => Message::Insert(Insert {
            xid: r.stream_xid(in_stream)?,
            rel_id: RelId(r.u32("rel_id")?),
            new: {
                r.expect_marker(TUPLE_NEW, "'N'")?;
                r.tuple()?
            },
        }),
        tag::UPDATE => Message::Update(r.update(in_stream)?),
        tag::DELETE => Message::Delete(r.delete(in_stream)?),
        tag::TRUNCATE => Message::Truncate(r.truncate(in_stream)?),
        tag::MESSAGE => Message::LogicalMessage(LogicalMessage {
            xid: r.stream_xid(in_stream)?,
            flags: r.u8("message flags")?,
            lsn: r.lsn("message lsn")?,
            prefix: r.cstring("message prefix")?,
            content: {
                let len = r.len_i32("message content length")?;
                r.bytes(len, "message content")?
            },
        }),
        tag::STREAM_START => Message::StreamStart {
            xid: r.u32("xid")?,
            first_segment: r.u8("first_segment")? == 1,
        },
        tag::STREAM_STOP => Message::StreamStop,
        tag::STREAM_COMMIT => Message::StreamCommit(StreamCommit {
            xid: r.u32("xid")?,
            flags: r.u8("flags")?,
            commit_lsn: r.lsn("commit_lsn")?,
            end_lsn: r.lsn("end_lsn")?,
            commit_time: r.i64("commit_time")?,
        }),
        tag::STREAM_ABORT => Message::StreamAbort {
            xid: r.u32("xid")?,
            subxid: r.u32("subxid")?,
        },
        tag::BEGIN_PREPARE => Message::BeginPrepare(BeginPrepare {
            prepare_lsn: r.lsn("prepare_lsn")?,
            end_lsn: r.lsn("end_lsn")?,
            prepare_time: r.i64("prepare_time")?,
            xid: r.u32("xid")?,
            gid: r.cstring("gid")?,
        }),
        tag::PREPARE => Message::Prepare(r.prepare()?),
        tag::STREAM_PREPARE => Message::StreamPrepare(r.prepare()?),
        tag::COMMIT_PREPARED => Message::CommitPrepared(CommitPrepared {
            flags: r.u8("flags")?,
            commit_lsn: r.lsn("commit_lsn")?,
            end_lsn: r.lsn("end_lsn")?,
            commit_time: r.i64("commit_time")?,
            xid: r.u32("xid")?,
            gid: r.cstring("gid")?,
        }),
        tag::ROLLBACK_PREPARED => Message::RollbackPrepared(RollbackPrepared {
            flags: r.u8("flags")?,
            prepare_end_lsn: r.lsn("prepare_end_lsn")?,
            rollback_end_lsn: r.lsn("rollback_end_lsn")?,
            prepare_time: r.i64("prepare_time")?,
            rollback_time: r.i64("rollback_time")?,
            xid: r.u32("xid")?,
            gid: r.cstring("gid")?,
        }),
        other => return Err(DecodeError::UnknownTag(other)),
    };
    r.finish(tag)?;
    Ok(msg)
}

/// A checked, big-endian cursor over one payload.
///
/// Invariant: `pos <= buf.len()`. Every read checks the remaining length before it advances, so
/// a short payload is an error at the field where it ends.
struct Reader<'a> {
    /// The payload, for zero-copy slices of values.
    frame: &'a Bytes,
    /// The same bytes as a plain slice, for reads.
    buf: &'a [u8],
    /// Offset of the next unread byte.
    pos: usize,
}

impl Reader<'_> {
    /// The unread bytes.
    #[inline]
    fn rest(&self) -> &[u8] {
        self.buf.get(self.pos..).unwrap_or_default()
    }

    /// How many bytes are unread.
    #[inline]
    fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    #[cold]
    #[inline(never)]
    fn truncated(&self, what: &'static str, needed: usize) -> DecodeError {
        DecodeError::Truncated {
            what,
            offset: self.pos,
            needed,
            remaining: self.remaining(),
        }
    }

    /// Reads the next `N` bytes.
    #[inline]
    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        match self.rest().first_chunk::<N>() {
            Some(bytes) => {
                let bytes = *bytes;
                self.pos += N;
                Ok(bytes)
            }
            None => Err(self.truncated(what, N)),
        }
    }

    #[inline]
    fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        self.array::<1>(what).map(|[b]| b)
    }

    #[inline]
    fn i16(&mut self, what: &'static str) -> Result<i16, DecodeError> {
        self.array(what).map(i16::from_be_bytes)
    }

    #[inline]
    fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        self.array(what).map(u32::from_be_bytes)
    }

    #[inline]
    fn i32(&mut self, what: &'static str) -> Result<i32, DecodeError> {
        self.array(what).map(i32::from_be_bytes)
    }

    #[inline]
    fn i64(&mut self, what: &'static str) -> Result<i64, DecodeError> {
        self.array(what).map(i64::from_be_bytes)
    }

    #[inline]
    fn lsn(&mut self, what: &'static str) -> Result<Lsn, DecodeError> {
        self.array(what).map(|b| Lsn(u64::from_be_bytes(b)))
    }

    /// An `Int16` count; negative is an error.
    #[inline]
    fn count_i16(&mut self, what: &'static str) -> Result<usize, DecodeError> {
        let offset = self.pos;
        let value = self.i16(what)?;
        usize::try_from(value).map_err(|_| DecodeError::Negative {
            what,
            value: i64::from(value),
            offset,
        })
    }

    /// An `Int32` count or length; negative is an error.
    #[inline]
    fn len_i32(&mut self, what: &'static str) -> Result<usize, DecodeError> {
        let offset = self.pos;
        let value = self.i32(what)?;
        usize::try_from(value).map_err(|_| DecodeError::Negative {
            what,
            value: i64::from(value),
            offset,
        })
    }

    /// The next `len` bytes as a zero-copy slice of the frame.
    #[inline]
    fn bytes(&mut self, len: usize, what: &'static str) -> Result<Bytes, DecodeError> {
        if len > self.remaining() {
            return Err(self.truncated(what, len));
        }
        let start = self.pos;
        self.pos += len;
        // In bounds: `start + len <= buf.len()` was checked above.
        Ok(self.frame.slice(start..self.pos))
    }

    /// A NUL-terminated UTF-8 string.
    fn cstring(&mut self, what: &'static str) -> Result<String, DecodeError> {
        let offset = self.pos;
        let rest = self.rest();
        let Some(nul) = memchr::memchr(0, rest) else {
            return Err(DecodeError::MissingNul { what, offset });
        };
        let raw = rest.get(..nul).unwrap_or_default();
        let text = simdutf8::basic::from_utf8(raw)
            .map_err(|_| DecodeError::InvalidUtf8 { what, offset })?;
        let text = text.to_owned();
        self.pos += nul + 1;
        Ok(text)
    }

    /// The xid that leads streamed messages.
    #[inline]
    fn stream_xid(&mut self, in_stream: bool) -> Result<Option<u32>, DecodeError> {
        if in_stream {
            self.u32("xid").map(Some)
        } else {
            Ok(None)
        }
    }

    /// Reads one tuple marker byte and checks it is `want`.
    #[inline]
    fn expect_marker(&mut self, want: u8, expected: &'static str) -> Result<(), DecodeError> {
        let offset = self.pos;
        let found = self.u8("tuple marker")?;
        if found == want {
            Ok(())
        } else {
            Err(DecodeError::UnexpectedTupleMarker {
                expected,
                found,
                offset,
            })
        }
    }

    /// `TupleData`: an `Int16` column count, then one kind byte (and for `t`/`b` an `Int32`
    /// length and the bytes) per column.
    fn tuple(&mut self) -> Result<Tuple, DecodeError> {
        let count = self.count_i16("tuple column count")?;
        // Each value takes at least its kind byte: never reserve more than the bytes left.
        let mut values = Vec::with_capacity(count.min(self.remaining()));
        for _ in 0..count {
            let offset = self.pos;
            let value = match self.u8("tuple value kind")? {
                VALUE_TEXT => Value::Text(self.counted_value("text value")?),
                VALUE_NULL => Value::Null,
                VALUE_UNCHANGED_TOAST => Value::UnchangedToast,
                VALUE_BINARY => Value::Binary(self.counted_value("binary value")?),
                kind => return Err(DecodeError::UnknownTupleKind { kind, offset }),
            };
            values.push(value);
        }
        Ok(Tuple { values })
    }

    /// An `Int32` length followed by that many bytes.
    #[inline]
    fn counted_value(&mut self, what: &'static str) -> Result<Bytes, DecodeError> {
        let len = self.len_i32("value length")?;
        self.bytes(len, what)
    }

    fn relation(&mut self, in_stream: bool) -> Result<Relation, DecodeError> {
        let xid = self.stream_xid(in_stream)?;
        let rel_id = RelId(self.u32("rel_id")?);
        let namespace = self.cstring("relation namespace")?;
        let name = self.cstring("relation name")?;
        let replica_identity = self.u8("replica identity")?;
        let count = self.count_i16("relation column count")?;
        let mut columns = Vec::with_capacity(count.min(self.remaining() / MIN_COLUMN_LEN));
        for _ in 0..count {
            columns.push(Column {
                flags: self.u8("column flags")?,
                name: self.cstring("column name")?,
                type_oid: self.u32("column type oid")?,
                type_modifier: self.i32("column type modifier")?,
            });
        }
        Ok(Relation {
            xid,
            rel_id,
            namespace,
            name,
            replica_identity,
            columns,
        })
    }

    fn update(&mut self, in_stream: bool) -> Result<Update, DecodeError> {
        let xid = self.stream_xid(in_stream)?;
        let rel_id = RelId(self.u32("rel_id")?);
        let offset = self.pos;
        let old = match self.u8("tuple marker")? {
            TUPLE_KEY => Some(OldTuple::Key(self.tuple()?)),
            TUPLE_OLD => Some(OldTuple::Full(self.tuple()?)),
            TUPLE_NEW => None,
            found => {
                return Err(DecodeError::UnexpectedTupleMarker {
                    expected: "'K', 'O' or 'N'",
                    found,
                    offset,
                })
            }
        };
        if old.is_some() {
            self.expect_marker(TUPLE_NEW, "'N'")?;
        }
        let new = self.tuple()?;
        Ok(Update {
            xid,
            rel_id,
            old,
            new,
        })
    }

    fn delete(&mut self, in_stream: bool) -> Result<Delete, DecodeError> {
        let xid = self.stream_xid(in_stream)?;
        let rel_id = RelId(self.u32("rel_id")?);
        let offset = self.pos;
        let old = match self.u8("tuple marker")? {
            TUPLE_KEY => OldTuple::Key(self.tuple()?),
            TUPLE_OLD => OldTuple::Full(self.tuple()?),
            found => {
                return Err(DecodeError::UnexpectedTupleMarker {
                    expected: "'K' or 'O'",
                    found,
                    offset,
                })
            }
        };
        Ok(Delete { xid, rel_id, old })
    }

    fn truncate(&mut self, in_stream: bool) -> Result<Truncate, DecodeError> {
        let xid = self.stream_xid(in_stream)?;
        let count = self.len_i32("truncate relation count")?;
        let options = self.u8("truncate options")?;
        if count > self.remaining() / 4 {
            return Err(self.truncated("truncate rel_ids", count.saturating_mul(4)));
        }
        let mut rel_ids = Vec::with_capacity(count);
        for _ in 0..count {
            rel_ids.push(RelId(self.u32("truncate rel_id")?));
        }
        Ok(Truncate {
            xid,
            options,
            rel_ids,
        })
    }

    /// The common body of Prepare and Stream Prepare.
    fn prepare(&mut self) -> Result<Prepare, DecodeError> {
        Ok(Prepare {
            flags: self.u8("flags")?,
            prepare_lsn: self.lsn("prepare_lsn")?,
            end_lsn: self.lsn("end_lsn")?,
            prepare_time: self.i64("prepare_time")?,
            xid: self.u32("xid")?,
            gid: self.cstring("gid")?,
        })
    }

    /// Checks that the whole payload was consumed.
    fn finish(&self, tag: u8) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            count => Err(DecodeError::TrailingBytes { tag, count }),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )]

    use super::*;

    /// Builds a payload field by field, big-endian, the way PostgreSQL's `pq_send*` does.
    #[derive(Default)]
    struct Frame(Vec<u8>);

    impl Frame {
        fn new(tag: u8) -> Self {
            Frame(vec![tag])
        }
        fn u8(mut self, v: u8) -> Self {
            self.0.push(v);
            self
        }
        fn i16(mut self, v: i16) -> Self {
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }
        fn i32(mut self, v: i32) -> Self {
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }
        fn u32(mut self, v: u32) -> Self {
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }
        fn i64(mut self, v: i64) -> Self {
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }
        fn u64(mut self, v: u64) -> Self {
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }
        fn cstr(mut self, s: &str) -> Self {
            self.0.extend_from_slice(s.as_bytes());
            self.0.push(0);
            self
        }
        fn raw(mut self, b: &[u8]) -> Self {
            self.0.extend_from_slice(b);
            self
        }
        /// A tuple value of kind `t` with the given text.
        fn text(self, s: &str) -> Self {
            self.u8(b't')
                .i32(i32::try_from(s.len()).unwrap())
                .raw(s.as_bytes())
        }
        fn build(self) -> Bytes {
            Bytes::from(self.0)
        }
    }

    fn text(s: &str) -> Value {
        Value::Text(Bytes::copy_from_slice(s.as_bytes()))
    }

    fn ok(frame: &Bytes, in_stream: bool) -> Message {
        match decode(frame, in_stream) {
            Ok(m) => m,
            Err(e) => panic!("frame {:02x?} should decode: {e}", frame.as_ref()),
        }
    }

    fn begin_frame() -> Bytes {
        Frame::new(b'B')
            .u64(0x1_0000_0100)
            .i64(7_000_000)
            .u32(742)
            .build()
    }

    fn insert_frame() -> Bytes {
        Frame::new(b'I')
            .u32(16384)
            .u8(b'N')
            .i16(5)
            .text("42")
            .u8(b'n')
            .u8(b'u')
            .u8(b'b')
            .i32(2)
            .raw(&[0xff, 0x00])
            .text("")
            .build()
    }

    fn relation_frame() -> Bytes {
        Frame::new(b'R')
            .u32(16384)
            .cstr("public")
            .cstr("orders")
            .u8(b'd')
            .i16(2)
            .u8(1)
            .cstr("id")
            .u32(20)
            .i32(-1)
            .u8(0)
            .cstr("amount")
            .u32(1700)
            .i32(786_438)
            .build()
    }

    /// One valid frame of every message kind, with the in_stream flag it needs.
    fn samples() -> Vec<(Bytes, bool)> {
        vec![
            (begin_frame(), false),
            (
                Frame::new(b'C').u8(0).u64(0x100).u64(0x130).i64(9).build(),
                false,
            ),
            (Frame::new(b'O').u64(0x55).cstr("node_a").build(), false),
            (relation_frame(), false),
            (
                Frame::new(b'Y')
                    .u32(900)
                    .u32(16_500)
                    .cstr("public")
                    .cstr("mood")
                    .build(),
                true,
            ),
            (insert_frame(), false),
            (
                Frame::new(b'U')
                    .u32(16384)
                    .u8(b'K')
                    .i16(1)
                    .text("1")
                    .u8(b'N')
                    .i16(1)
                    .text("2")
                    .build(),
                false,
            ),
            (
                Frame::new(b'U')
                    .u32(16384)
                    .u8(b'N')
                    .i16(2)
                    .text("1")
                    .u8(b'u')
                    .build(),
                false,
            ),
            (
                Frame::new(b'D')
                    .u32(900)
                    .u32(16384)
                    .u8(b'O')
                    .i16(1)
                    .text("1")
                    .build(),
                true,
            ),
            (
                Frame::new(b'T').i32(2).u8(3).u32(16384).u32(16390).build(),
                false,
            ),
            (
                Frame::new(b'M')
                    .u8(1)
                    .u64(0x200)
                    .cstr("dbmazz")
                    .i32(5)
                    .raw(b"hello")
                    .build(),
                false,
            ),
            (Frame::new(b'S').u32(900).u8(1).build(), false),
            (Frame::new(b'E').build(), true),
            (
                Frame::new(b'c')
                    .u32(900)
                    .u8(0)
                    .u64(0x300)
                    .u64(0x330)
                    .i64(11)
                    .build(),
                false,
            ),
            (Frame::new(b'A').u32(900).u32(901).build(), false),
            (
                Frame::new(b'b')
                    .u64(0x400)
                    .u64(0x430)
                    .i64(12)
                    .u32(950)
                    .cstr("gid-1")
                    .build(),
                false,
            ),
            (
                Frame::new(b'P')
                    .u8(0)
                    .u64(0x400)
                    .u64(0x430)
                    .i64(12)
                    .u32(950)
                    .cstr("gid-1")
                    .build(),
                false,
            ),
            (
                Frame::new(b'p')
                    .u8(0)
                    .u64(0x400)
                    .u64(0x430)
                    .i64(12)
                    .u32(950)
                    .cstr("gid-2")
                    .build(),
                false,
            ),
            (
                Frame::new(b'K')
                    .u8(0)
                    .u64(0x500)
                    .u64(0x530)
                    .i64(13)
                    .u32(950)
                    .cstr("gid-1")
                    .build(),
                false,
            ),
            (
                Frame::new(b'r')
                    .u8(0)
                    .u64(0x430)
                    .u64(0x630)
                    .i64(12)
                    .i64(14)
                    .u32(951)
                    .cstr("gid-3")
                    .build(),
                false,
            ),
        ]
    }

    #[test]
    fn begin_carries_final_lsn_time_and_xid() {
        assert_eq!(
            ok(&begin_frame(), false),
            Message::Begin(Begin {
                final_lsn: Lsn(0x1_0000_0100),
                commit_time: 7_000_000,
                xid: 742,
            })
        );
    }

    #[test]
    fn commit_carries_commit_and_end_lsn() {
        let frame = Frame::new(b'C').u8(0).u64(0x100).u64(0x130).i64(9).build();
        assert_eq!(
            ok(&frame, false),
            Message::Commit(Commit {
                flags: 0,
                commit_lsn: Lsn(0x100),
                end_lsn: Lsn(0x130),
                commit_time: 9,
            })
        );
    }

    #[test]
    fn origin_carries_name() {
        let frame = Frame::new(b'O').u64(0x55).cstr("node_a").build();
        assert_eq!(
            ok(&frame, false),
            Message::Origin(Origin {
                commit_lsn: Lsn(0x55),
                name: "node_a".into(),
            })
        );
    }

    #[test]
    fn relation_lists_columns_and_key_flags() {
        let Message::Relation(rel) = ok(&relation_frame(), false) else {
            panic!("not a relation");
        };
        assert_eq!(rel.xid, None);
        assert_eq!(rel.rel_id, RelId(16384));
        assert_eq!(
            (rel.namespace.as_str(), rel.name.as_str()),
            ("public", "orders")
        );
        assert_eq!(rel.replica_identity, b'd');
        let names: Vec<_> = rel.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["id", "amount"]);
        assert!(rel.columns[0].is_key());
        assert!(!rel.columns[1].is_key());
        assert_eq!(rel.columns[1].type_oid, 1700);
        assert_eq!(rel.columns[1].type_modifier, 786_438);
    }

    #[test]
    fn streamed_relation_starts_with_xid() {
        let mut raw = vec![b'R'];
        raw.extend_from_slice(&77u32.to_be_bytes());
        raw.extend_from_slice(&relation_frame()[1..]);
        let Message::Relation(rel) = ok(&Bytes::from(raw), true) else {
            panic!("not a relation");
        };
        assert_eq!(rel.xid, Some(77));
        assert_eq!(rel.columns.len(), 2);
    }

    #[test]
    fn type_in_stream_carries_xid() {
        let frame = Frame::new(b'Y')
            .u32(900)
            .u32(16_500)
            .cstr("public")
            .cstr("mood")
            .build();
        assert_eq!(
            ok(&frame, true),
            Message::Type(TypeMsg {
                xid: Some(900),
                oid: 16_500,
                namespace: "public".into(),
                name: "mood".into(),
            })
        );
    }

    #[test]
    fn insert_decodes_every_value_kind() {
        let frame = insert_frame();
        assert_eq!(
            ok(&frame, false),
            Message::Insert(Insert {
                xid: None,
                rel_id: RelId(16384),
                new: Tuple {
                    values: vec![
                        text("42"),
                        Value::Null,
                        Value::UnchangedToast,
                        Value::Binary(Bytes::from_static(&[0xff, 0x00])),
                        text(""),
                    ],
                },
            })
        );
    }

    #[test]
    fn values_are_slices_of_the_frame() {
        let frame = insert_frame();
        let Message::Insert(insert) = ok(&frame, false) else {
            panic!("not an insert");
        };
        let range = frame.as_ptr_range();
        for value in &insert.new.values {
            if let Value::Text(b) | Value::Binary(b) = value {
                if !b.is_empty() {
                    assert!(range.contains(&b.as_ptr()), "value was copied");
                }
            }
        }
    }

    #[test]
    fn values_are_not_checked_for_utf8() {
        let frame = Frame::new(b'I')
            .u32(1)
            .u8(b'N')
            .i16(1)
            .u8(b't')
            .i32(2)
            .raw(&[0xc3, 0x28])
            .build();
        assert!(decode(&frame, false).is_ok());
    }

    #[test]
    fn update_with_changed_key_has_old_key() {
        let frame = Frame::new(b'U')
            .u32(16384)
            .u8(b'K')
            .i16(2)
            .text("1")
            .u8(b'n')
            .u8(b'N')
            .i16(2)
            .text("2")
            .text("x")
            .build();
        let Message::Update(update) = ok(&frame, false) else {
            panic!("not an update");
        };
        assert_eq!(
            update.old,
            Some(OldTuple::Key(Tuple {
                values: vec![text("1"), Value::Null],
            }))
        );
        assert_eq!(update.new.values, vec![text("2"), text("x")]);
    }

    #[test]
    fn update_under_full_identity_has_whole_old_row() {
        let frame = Frame::new(b'U')
            .u32(5)
            .u8(b'O')
            .i16(1)
            .text("a")
            .u8(b'N')
            .i16(1)
            .text("b")
            .build();
        let Message::Update(update) = ok(&frame, false) else {
            panic!("not an update");
        };
        let old = update.old.expect("old row");
        assert!(matches!(old, OldTuple::Full(_)));
        assert_eq!(old.tuple().values, vec![text("a")]);
    }

    #[test]
    fn update_without_old_tuple_keeps_unchanged_toast_marker() {
        let frame = Frame::new(b'U')
            .u32(5)
            .u8(b'N')
            .i16(2)
            .text("1")
            .u8(b'u')
            .build();
        assert_eq!(
            ok(&frame, false),
            Message::Update(Update {
                xid: None,
                rel_id: RelId(5),
                old: None,
                new: Tuple {
                    values: vec![text("1"), Value::UnchangedToast],
                },
            })
        );
    }

    #[test]
    fn delete_carries_key_or_full_old_row() {
        for (marker, full) in [(b'K', false), (b'O', true)] {
            let frame = Frame::new(b'D').u32(9).u8(marker).i16(1).text("7").build();
            let Message::Delete(delete) = ok(&frame, false) else {
                panic!("not a delete");
            };
            assert_eq!(matches!(delete.old, OldTuple::Full(_)), full);
            assert_eq!(delete.old.tuple().values, vec![text("7")]);
        }
    }

    #[test]
    fn delete_in_stream_carries_xid() {
        let frame = Frame::new(b'D').u32(900).u32(9).u8(b'K').i16(0).build();
        let Message::Delete(delete) = ok(&frame, true) else {
            panic!("not a delete");
        };
        assert_eq!((delete.xid, delete.rel_id), (Some(900), RelId(9)));
    }

    #[test]
    fn truncate_lists_relations_and_options() {
        let frame = Frame::new(b'T')
            .i32(2)
            .u8(Truncate::CASCADE | Truncate::RESTART_IDENTITY)
            .u32(16384)
            .u32(16390)
            .build();
        assert_eq!(
            ok(&frame, false),
            Message::Truncate(Truncate {
                xid: None,
                options: 3,
                rel_ids: vec![RelId(16384), RelId(16390)],
            })
        );
    }

    #[test]
    fn logical_message_content_is_a_slice() {
        let frame = Frame::new(b'M')
            .u32(900)
            .u8(LogicalMessage::TRANSACTIONAL)
            .u64(0x200)
            .cstr("dbmazz")
            .i32(5)
            .raw(b"hello")
            .build();
        assert_eq!(
            ok(&frame, true),
            Message::LogicalMessage(LogicalMessage {
                xid: Some(900),
                flags: 1,
                lsn: Lsn(0x200),
                prefix: "dbmazz".into(),
                content: Bytes::from_static(b"hello"),
            })
        );
    }

    #[test]
    fn stream_control_messages_decode() {
        let start = Frame::new(b'S').u32(900).u8(1).build();
        assert_eq!(
            ok(&start, false),
            Message::StreamStart {
                xid: 900,
                first_segment: true,
            }
        );
        assert_eq!(ok(&Frame::new(b'E').build(), true), Message::StreamStop);
        let commit = Frame::new(b'c')
            .u32(900)
            .u8(0)
            .u64(0x300)
            .u64(0x330)
            .i64(11)
            .build();
        assert_eq!(
            ok(&commit, false),
            Message::StreamCommit(StreamCommit {
                xid: 900,
                flags: 0,
                commit_lsn: Lsn(0x300),
                end_lsn: Lsn(0x330),
                commit_time: 11,
            })
        );
        let abort = Frame::new(b'A').u32(900).u32(901).build();
        assert_eq!(
            ok(&abort, false),
            Message::StreamAbort {
                xid: 900,
                subxid: 901,
            }
        );
    }

    #[test]
    fn two_phase_messages_decode() {
        let prepare = Prepare {
            flags: 0,
            prepare_lsn: Lsn(0x400),
            end_lsn: Lsn(0x430),
            prepare_time: 12,
            xid: 950,
            gid: "gid-1".into(),
        };
        let body = |tag| {
            Frame::new(tag)
                .u8(0)
                .u64(0x400)
                .u64(0x430)
                .i64(12)
                .u32(950)
                .cstr("gid-1")
                .build()
        };
        assert_eq!(ok(&body(b'P'), false), Message::Prepare(prepare.clone()));
        assert_eq!(ok(&body(b'p'), false), Message::StreamPrepare(prepare));
        let begin = Frame::new(b'b')
            .u64(0x400)
            .u64(0x430)
            .i64(12)
            .u32(950)
            .cstr("gid-1")
            .build();
        assert_eq!(
            ok(&begin, false),
            Message::BeginPrepare(BeginPrepare {
                prepare_lsn: Lsn(0x400),
                end_lsn: Lsn(0x430),
                prepare_time: 12,
                xid: 950,
                gid: "gid-1".into(),
            })
        );
        let commit = Frame::new(b'K')
            .u8(0)
            .u64(0x500)
            .u64(0x530)
            .i64(13)
            .u32(950)
            .cstr("gid-1")
            .build();
        assert_eq!(
            ok(&commit, false),
            Message::CommitPrepared(CommitPrepared {
                flags: 0,
                commit_lsn: Lsn(0x500),
                end_lsn: Lsn(0x530),
                commit_time: 13,
                xid: 950,
                gid: "gid-1".into(),
            })
        );
        let rollback = Frame::new(b'r')
            .u8(0)
            .u64(0x430)
            .u64(0x630)
            .i64(12)
            .i64(14)
            .u32(951)
            .cstr("gid-3")
            .build();
        assert_eq!(
            ok(&rollback, false),
            Message::RollbackPrepared(RollbackPrepared {
                flags: 0,
                prepare_end_lsn: Lsn(0x430),
                rollback_end_lsn: Lsn(0x630),
                prepare_time: 12,
                rollback_time: 14,
                xid: 951,
                gid: "gid-3".into(),
            })
        );
    }

    #[test]
    fn tag_matches_the_wire_byte() {
        for (frame, in_stream) in samples() {
            assert_eq!(ok(&frame, in_stream).tag(), frame[0]);
        }
    }

    #[test]
    fn every_strict_prefix_is_an_error() {
        for (frame, in_stream) in samples() {
            for len in 0..frame.len() {
                let prefix = frame.slice(..len);
                assert!(
                    decode(&prefix, in_stream).is_err(),
                    "prefix {len} of {:?} decoded",
                    char::from(frame[0])
                );
            }
        }
    }

    #[test]
    fn trailing_bytes_are_an_error() {
        for (frame, in_stream) in samples() {
            let mut longer = frame.to_vec();
            longer.push(0);
            assert_eq!(
                decode(&Bytes::from(longer), in_stream),
                Err(DecodeError::TrailingBytes {
                    tag: frame[0],
                    count: 1,
                })
            );
        }
    }

    #[test]
    fn empty_payload_is_an_error() {
        assert_eq!(decode(&Bytes::new(), false), Err(DecodeError::Empty));
    }

    #[test]
    fn unknown_tag_is_an_error() {
        let err = decode(&Bytes::from_static(b"Z"), false).unwrap_err();
        assert_eq!(err, DecodeError::UnknownTag(b'Z'));
        assert_eq!(err.to_string(), "unknown pgoutput message tag 'Z'");
    }

    #[test]
    fn truncation_error_names_field_and_offset() {
        let frame = Frame::new(b'C').u8(0).raw(&[1, 2, 3]).build();
        assert_eq!(
            decode(&frame, false).unwrap_err().to_string(),
            "truncated pgoutput message: needed 8 bytes for commit_lsn at offset 2, 3 remain"
        );
    }

    #[test]
    fn unknown_value_kind_is_an_error() {
        let frame = Frame::new(b'I').u32(1).u8(b'N').i16(1).u8(b'x').build();
        assert_eq!(
            decode(&frame, false),
            Err(DecodeError::UnknownTupleKind {
                kind: b'x',
                offset: 8,
            })
        );
    }

    #[test]
    fn negative_counts_and_lengths_are_errors() {
        let columns = Frame::new(b'I').u32(1).u8(b'N').i16(-1).build();
        assert!(matches!(
            decode(&columns, false),
            Err(DecodeError::Negative { value: -1, .. })
        ));
        let length = Frame::new(b'I')
            .u32(1)
            .u8(b'N')
            .i16(1)
            .u8(b't')
            .i32(-5)
            .build();
        assert_eq!(
            decode(&length, false),
            Err(DecodeError::Negative {
                what: "value length",
                value: -5,
                offset: 9,
            })
        );
        let relations = Frame::new(b'T').i32(i32::MIN).u8(0).build();
        assert!(matches!(
            decode(&relations, false),
            Err(DecodeError::Negative { .. })
        ));
        let attributes = Frame::new(b'R')
            .u32(1)
            .cstr("s")
            .cstr("t")
            .u8(b'd')
            .i16(i16::MIN)
            .build();
        assert!(matches!(
            decode(&attributes, false),
            Err(DecodeError::Negative { .. })
        ));
    }

    #[test]
    fn huge_counts_fail_before_allocating() {
        let truncate = Frame::new(b'T').i32(i32::MAX).u8(0).u32(1).build();
        assert!(matches!(
            decode(&truncate, false),
            Err(DecodeError::Truncated { .. })
        ));
        let tuple = Frame::new(b'I').u32(1).u8(b'N').i16(i16::MAX).build();
        assert!(matches!(
            decode(&tuple, false),
            Err(DecodeError::Truncated { .. })
        ));
        let value = Frame::new(b'I')
            .u32(1)
            .u8(b'N')
            .i16(1)
            .u8(b't')
            .i32(i32::MAX)
            .build();
        assert!(matches!(
            decode(&value, false),
            Err(DecodeError::Truncated { .. })
        ));
    }

    #[test]
    fn wrong_tuple_markers_are_errors() {
        let insert = Frame::new(b'I').u32(1).u8(b'K').i16(0).build();
        assert!(matches!(
            decode(&insert, false),
            Err(DecodeError::UnexpectedTupleMarker { found: b'K', .. })
        ));
        let delete = Frame::new(b'D').u32(1).u8(b'N').i16(0).build();
        assert!(matches!(
            decode(&delete, false),
            Err(DecodeError::UnexpectedTupleMarker { found: b'N', .. })
        ));
        let update = Frame::new(b'U')
            .u32(1)
            .u8(b'K')
            .i16(0)
            .u8(b'K')
            .i16(0)
            .build();
        assert!(matches!(
            decode(&update, false),
            Err(DecodeError::UnexpectedTupleMarker { found: b'K', .. })
        ));
    }

    #[test]
    fn names_must_be_terminated_utf8() {
        let unterminated = Frame::new(b'O').u64(1).raw(b"abc").build();
        assert_eq!(
            decode(&unterminated, false),
            Err(DecodeError::MissingNul {
                what: "origin name",
                offset: 9,
            })
        );
        let invalid = Frame::new(b'O').u64(1).raw(&[0xff, 0xfe, 0]).build();
        assert_eq!(
            decode(&invalid, false),
            Err(DecodeError::InvalidUtf8 {
                what: "origin name",
                offset: 9,
            })
        );
    }

    #[test]
    fn stream_flag_changes_how_changes_are_read() {
        // An insert read as streamed takes its first four bytes as the xid, so the rest no
        // longer lines up: the decoder must say so instead of guessing.
        assert!(decode(&insert_frame(), true).is_err());
    }
}
