//! The contract between the pipeline and a destination.
//!
//! A sink receives batches of [`Event`]s in stream order and returns only once every event of
//! the batch is durable (fsynced, or acknowledged by StarRocks). The pipeline then, and only
//! then, lets the commit LSNs in that batch be checkpointed and confirmed to PostgreSQL.
//!
//! Delivery is at-least-once: after a crash, PostgreSQL resends from the last confirmed commit, so
//! a sink may see a change again. Sinks must tolerate that (the NDJSON sink writes the duplicate
//! line; the StarRocks sink's labels and `merge_condition` absorb it).

use std::future::Future;
use std::sync::Arc;

use crate::pipeline::change::{EncodedRows, Event, TableSchema};
use crate::pipeline::text_row::TextRowError;
use crate::value::ValueError;
use crate::Lsn;

/// Whether retrying can help.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// Retrying the same batch later may succeed (network, timeouts, overload).
    Transient,
    /// Retrying cannot succeed; the job stops and reports what to do.
    Definite,
}

/// The typed cause behind a [`SinkError`].
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A batch could not be made durable.
///
/// `message` is complete on its own: it names what failed (table, column, LSN, file), carries the
/// cause's text and says what to do, and it is what Health, the logs and the job's final error
/// show. `source` keeps the typed cause (a [`crate::value::ValueError`], an I/O error, a
/// StarRocks DDL error, …) so that callers can inspect it with
/// [`std::error::Error::source`] and `downcast_ref` instead of parsing the message; since the
/// message already holds its text, renderers print the message, not the chain.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct SinkError {
    /// Transient or definite.
    pub kind: ErrorKind,
    /// What failed (table, column, LSN, file), and what to do about it.
    pub message: String,
    /// The typed cause, when there is one.
    #[source]
    pub source: Option<Cause>,
}

impl SinkError {
    /// A definite error.
    pub fn definite(message: impl Into<String>) -> Self {
        SinkError {
            kind: ErrorKind::Definite,
            message: message.into(),
            source: None,
        }
    }

    /// A transient error.
    pub fn transient(message: impl Into<String>) -> Self {
        SinkError {
            kind: ErrorKind::Transient,
            message: message.into(),
            source: None,
        }
    }

    /// An error of `kind` whose message is the cause's own text.
    pub fn from_cause(kind: ErrorKind, cause: impl Into<Cause>) -> Self {
        let cause = cause.into();
        SinkError {
            kind,
            message: cause.to_string(),
            source: Some(cause),
        }
    }

    /// Keeps `cause` as this error's typed source (its text should already be in the message).
    pub fn caused_by(mut self, cause: impl Into<Cause>) -> Self {
        self.source = Some(cause.into());
        self
    }

    /// The typed cause, if it is an `E`.
    pub fn cause<E: std::error::Error + 'static>(&self) -> Option<&E> {
        self.source.as_deref().and_then(|c| c.downcast_ref::<E>())
    }
}

/// A snapshot row could not be encoded by a sink's [`SnapshotEncoder`].
#[derive(Debug, thiserror::Error)]
pub enum SnapshotEncodeError {
    /// The line is not a valid text row.
    #[error(transparent)]
    TextRow(#[from] TextRowError),
    /// A value does not fit its column.
    #[error("column {column:?}: {source}")]
    Value {
        /// The column.
        column: String,
        /// Why.
        source: ValueError,
    },
    /// The row's key does not fit the sink.
    #[error("key ({columns}): {source}")]
    Key {
        /// The key's columns.
        columns: String,
        /// Why.
        source: ValueError,
    },
    /// The sink's own encoding failed.
    #[error(transparent)]
    Sink(#[from] SinkError),
}

/// Encodes one table's snapshot rows into bodies in its sink's own format, inside a snapshot
/// worker, so that many tables and chunks are encoded in parallel.
///
/// Why the sink owns the encoder: each sink has its own wire format, and encoding is most of a
/// snapshot's CPU. The source only reads rows, as lines of text fields
/// ([`crate::pipeline::text_row`]), and hands each line to the encoder; what comes out is an
/// [`Event::Encoded`] block that only the sink that made it reads. No sink ever receives a
/// block it cannot read, and no source knows any sink's format.
pub trait SnapshotEncoder: Send {
    /// Adds one row: a line of text fields without its newline. On error the encoder is
    /// unusable.
    fn push_line(&mut self, line: &[u8]) -> Result<(), SnapshotEncodeError>;

    /// Whether a body reached its target size (then [`Self::take`] it).
    fn is_full(&self) -> bool;

    /// Takes a body encoded so far, `None` when none holds a row; call it until `None` to take
    /// them all.
    fn take(&mut self) -> Option<EncodedRows>;
}

/// What a sink hands the snapshot: a maker of [`SnapshotEncoder`]s, shared by the workers.
pub trait SnapshotEncoders: Send + Sync {
    /// An encoder for `table`'s rows copied at `version`, cutting bodies at about `target_bytes`.
    fn encoder(
        &self,
        table: Arc<TableSchema>,
        version: Lsn,
        target_bytes: usize,
    ) -> Box<dyn SnapshotEncoder>;
}

/// A step that completes a batch before its sink writes it: the pipeline runs it on every batch
/// (retried with the write). The source supplies such steps where only it can fill something
/// in, such as the unchanged TOAST values of tables still being copied; the pipeline and the
/// sinks stay unaware of what they do.
pub trait BatchStage: Send {
    /// Completes `events` in place.
    fn prepare<'a>(
        &'a mut self,
        events: &'a mut [Event],
    ) -> futures_util::future::BoxFuture<'a, Result<(), SinkError>>;
}

/// A destination for change events.
pub trait Sink: Send + 'static {
    /// The encoders the snapshot workers use for this sink's snapshot rows.
    fn snapshot_encoders(&self) -> Arc<dyn SnapshotEncoders>;

    /// Writes `events` (in order) and returns once all of them are durable. On error nothing
    /// in the batch may be assumed durable.
    fn write_batch(
        &mut self,
        events: &[Event],
    ) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// A new replication slot is about to be created: no change from before it will ever be
    /// sent, so whatever the sink keeps to recognise replays of older changes no longer applies.
    fn new_slot(&mut self) -> impl Future<Output = Result<(), SinkError>> + Send {
        async { Ok(()) }
    }
}
