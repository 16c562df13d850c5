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

use crate::pipeline::change::Event;

/// Whether retrying can help.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// Retrying the same batch later may succeed (network, timeouts, overload).
    Transient,
    /// Retrying cannot succeed; the job stops and reports what to do.
    Definite,
}

/// A batch could not be made durable.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct SinkError {
    /// Transient or definite.
    pub kind: ErrorKind,
    /// What failed (table, column, LSN, file), and what to do about it.
    pub message: String,
}

impl SinkError {
    /// A definite error.
    pub fn definite(message: impl Into<String>) -> Self {
        SinkError {
            kind: ErrorKind::Definite,
            message: message.into(),
        }
    }

    /// A transient error.
    pub fn transient(message: impl Into<String>) -> Self {
        SinkError {
            kind: ErrorKind::Transient,
            message: message.into(),
        }
    }
}

/// How the snapshot workers hand rows to a sink.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotFormat {
    /// One [`Event::Row`] per row (the sink encodes them like streamed changes).
    Rows,
    /// [`Event::Encoded`] blocks of StarRocks Stream Load bodies, encoded by the workers in
    /// parallel, each sent as one load: JSON only, or CSV wherever a row needs no escaping.
    StarRocks {
        /// Whether CSV bodies may be used.
        csv: bool,
    },
}

/// A destination for change events.
pub trait Sink: Send + 'static {
    /// How this sink wants snapshot rows.
    fn snapshot_format(&self) -> SnapshotFormat {
        SnapshotFormat::Rows
    }

    /// Writes `events` (in order) and returns once all of them are durable. On error nothing
    /// in the batch may be assumed durable.
    fn write_batch(
        &mut self,
        events: &[Event],
    ) -> impl Future<Output = Result<(), SinkError>> + Send;
}
