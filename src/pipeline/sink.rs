//! The contract between the pipeline and a destination.
//!
//! A sink receives batches of [`Event`]s in stream order and returns only once every event of
//! the batch is durable (fsynced, or acknowledged by StarRocks). The pipeline then, and only
//! then, lets the commit LSNs in that batch be checkpointed and confirmed to PostgreSQL.
//!
//! Delivery is at-least-once: after a crash, PostgreSQL resends from the last confirmed commit, so
//! a sink may see a change again. Sinks must tolerate that (the NDJSON sink writes the duplicate
//! line; the StarRocks sink's labels and `merge_condition` absorb it).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use crate::config::TableName;
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
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SnapshotFormat {
    /// One [`Event::Row`] per row (the sink encodes them like streamed changes).
    Rows,
    /// [`Event::Encoded`] blocks of StarRocks Stream Load bodies, encoded by the workers in
    /// parallel, each sent as one load: JSON only, or CSV wherever a row needs no escaping.
    StarRocks {
        /// Whether CSV bodies may be used.
        csv: bool,
        /// Per table, the target's own column names and shapes.
        targets: Arc<HashMap<TableName, Arc<ColumnTargets>>>,
    },
}

/// One column as a sink stores it.
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

/// How a sink names and shapes the columns of one table, looked up by the source's column
/// name without regard to case (the sink's names are case-insensitive).
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
