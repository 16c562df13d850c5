//! The WAL reader: replication messages in, change events out.
//!
//! It owns the replication stream, decodes each XLogData payload with the pure
//! [`pgoutput`](crate::postgres::pgoutput) decoder, keeps the [`SchemaCache`] current, and feeds
//! [`Event`]s to the pipeline. Events are staged while more complete messages sit in the read
//! buffer and sent as one parcel once the socket has nothing more (or the parcel is full), so
//! the batcher wakes once per read rather than once per row. Sending waits when the pipeline's
//! byte budget is spent, which is how a slow sink slows reading instead of growing memory, and
//! while the sink's [circuit](crate::pipeline::circuit) is open, which is how a sink that is down
//! stops reading altogether. While it waits, the reader reads nothing, keepalives included: the
//! status task answers PostgreSQL on its own timer (at least every half `wal_sender_timeout`), so
//! the connection stays up however long the wait.
//!
//! Keepalives update the shared [`Progress`], wake the status task when PostgreSQL asks for a
//! reply, and, when no transaction is open, pass an idle marker so a quiet database can still
//! release WAL.
//!
//! On resume it skips transactions whose commit is older than the checkpoint: PostgreSQL 15 may
//! resend a few already-confirmed transactions after a restart.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::watch;

use crate::config::TableName;

use crate::checkpoint::StoredSchema;
use crate::metrics::{now_unix_us, Metrics, SchemaChangeKind, SchemaEvent};
use crate::pipeline::batcher::{Feeder, PipelineClosed};
use crate::pipeline::change::{
    Event, Op, Position, RowChange, SchemaChange, TableSchema, TruncateChange,
};
use crate::postgres::heartbeat;
use crate::postgres::pgoutput::{self, DecodeError, Message, OldTuple, RelId, Tuple, Value};
use crate::postgres::replication::{ReplicationError, ReplicationMessage, ReplicationStream};
use crate::postgres::schema_cache::{RelationUpdate, SchemaCache, SchemaError};
use crate::postgres::streamed::{SpillError, StreamedTxns};
use crate::Lsn;

pub use crate::pipeline::progress::Progress;

/// Why the reader stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ReaderError {
    /// The replication connection failed.
    #[error(transparent)]
    Replication(#[from] ReplicationError),
    /// A payload could not be decoded.
    #[error("cannot decode the pgoutput message at LSN {lsn}: {source}")]
    Decode {
        /// Where.
        lsn: Lsn,
        /// What.
        source: DecodeError,
    },
    /// A relation cannot be replicated as described.
    #[error("at LSN {lsn}: {source}")]
    Schema {
        /// Where.
        lsn: Lsn,
        /// What.
        source: Box<SchemaError>,
    },
    /// A change referred to a relation PostgreSQL never described.
    #[error("change at LSN {lsn} refers to relation OID {rel_id}, which the server never described (protocol error)")]
    UnknownRelation {
        /// Where.
        lsn: Lsn,
        /// The relation OID.
        rel_id: RelId,
    },
    /// A message that the protocol options dbmazz asked for never produce.
    #[error("unexpected pgoutput message {tag:?} at LSN {lsn} for the protocol options dbmazz asked for")]
    Unexpected {
        /// Message tag.
        tag: char,
        /// Where.
        lsn: Lsn,
    },
    /// A key column's value was not sent (an unchanged TOASTed key).
    #[error(
        "table {table} at LSN {lsn}: key column {column:?} has an unchanged TOAST value that was \
         not sent; set REPLICA_IDENTITY=full so the old row carries it"
    )]
    ToastedKey {
        /// Table.
        table: TableName,
        /// Column.
        column: String,
        /// Where.
        lsn: Lsn,
    },
    /// A streamed transaction could not be staged or read back (see `SPILL_DIR`).
    #[error("at LSN {lsn}: {source}")]
    Spill {
        /// Where.
        lsn: Lsn,
        /// What.
        source: SpillError,
    },
    /// The blocks of a streamed transaction arrived out of the order the protocol defines.
    #[error("streamed transaction {xid} at LSN {lsn}: {detail} (protocol error)")]
    StreamOrder {
        /// The transaction.
        xid: u32,
        /// Where.
        lsn: Lsn,
        /// What was wrong.
        detail: &'static str,
    },
    /// A change arrived outside a transaction.
    #[error("change at LSN {lsn} arrived outside a transaction (protocol error)")]
    NoTransaction {
        /// Where.
        lsn: Lsn,
    },
}

impl ReaderError {
    /// Whether restarting the stream may help.
    pub fn is_transient(&self) -> bool {
        matches!(self, ReaderError::Replication(e) if e.is_transient())
    }
}

/// How the reader loop ended.
pub enum ReaderExit {
    /// Shutdown was requested; the stream is returned so it can be drained after the final
    /// status update.
    Shutdown(ReplicationStream),
    /// The pipeline stopped (its error is reported by the pipeline task).
    PipelineClosed(ReplicationStream),
    /// The server ended the stream.
    EndOfStream,
}

struct Txn {
    pos: Position,
    skip: bool,
}

/// Reads the stream and feeds the pipeline.
pub struct WalReader {
    stream: ReplicationStream,
    cache: SchemaCache,
    feeder: Feeder,
    progress: Arc<Progress>,
    metrics: Arc<Metrics>,
    resume_from: Lsn,
    txn: Option<Txn>,
    /// Per table: changes committed before this LSN are already in its snapshot.
    skip_by_name: std::collections::HashMap<TableName, Lsn>,
    skip_by_rel: hashbrown::HashMap<RelId, Lsn>,
    /// Events decoded but not yet sent, and their bytes.
    staged: Vec<Event>,
    staged_bytes: usize,
    /// Schema versions to record in the schema log (the checkpoint task writes them before the
    /// checkpoint passes them), and the last one recorded per table.
    schema_log: Option<SchemaLogQueue>,
    recorded: hashbrown::HashMap<RelId, StoredSchema>,
    /// Open streamed transactions (`None` when streaming is off), and the one whose block is
    /// being received.
    streamed: Option<StreamedTxns>,
    in_stream: Option<u32>,
}

/// Schema versions the reader saw, waiting to be written next to the checkpoint.
pub type SchemaLogQueue = Arc<std::sync::Mutex<Vec<StoredSchema>>>;

impl WalReader {
    /// A reader that skips transactions committed before `resume_from` (the checkpoint).
    pub fn new(
        stream: ReplicationStream,
        cache: SchemaCache,
        feeder: Feeder,
        progress: Arc<Progress>,
        metrics: Arc<Metrics>,
        resume_from: Lsn,
    ) -> Self {
        WalReader {
            stream,
            cache,
            feeder,
            progress,
            metrics,
            resume_from,
            txn: None,
            skip_by_name: std::collections::HashMap::new(),
            skip_by_rel: hashbrown::HashMap::new(),
            staged: Vec::new(),
            staged_bytes: 0,
            schema_log: None,
            recorded: hashbrown::HashMap::new(),
            streamed: None,
            in_stream: None,
        }
    }

    /// Accepts streamed in-progress transactions (pgoutput `streaming 'on'`), staged in
    /// `store` until they commit.
    pub fn with_streaming(mut self, store: StreamedTxns) -> Self {
        self.streamed = Some(store);
        self
    }

    /// Records each new schema version into `queue`; `recorded` are the versions the log
    /// already holds (one per table).
    pub fn with_schema_log(mut self, queue: SchemaLogQueue, recorded: Vec<StoredSchema>) -> Self {
        self.schema_log = Some(queue);
        self.recorded = recorded
            .into_iter()
            .map(|s| (RelId(s.rel_oid), s))
            .collect();
        self
    }

    /// Drops a table's changes committed before its snapshot LSN (they are in the copy).
    pub fn with_snapshot_skips(mut self, skips: std::collections::HashMap<TableName, Lsn>) -> Self {
        self.skip_by_name = skips;
        self
    }

    /// Runs until shutdown is signalled, the pipeline closes, or an error.
    pub async fn run(
        mut self,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<ReaderExit, ReaderError> {
        loop {
            if *shutdown.borrow() {
                return Ok(ReaderExit::Shutdown(self.stream));
            }
            if !self.staged.is_empty() && !self.stream.has_buffered_message() {
                // Nothing more to decode without waiting on the socket: hand over what we have.
                let sent = tokio::select! {
                    biased;
                    r = self.send_staged() => r,
                    _ = shutdown.changed() => continue_after_shutdown(),
                };
                match sent {
                    Ok(()) => {}
                    Err(Step::Closed) => return Ok(ReaderExit::PipelineClosed(self.stream)),
                    Err(Step::Shutdown) => return Ok(ReaderExit::Shutdown(self.stream)),
                    Err(Step::Error(e)) => return Err(e),
                }
            }
            // Biased, the work first: when a message is already buffered (most of the time in a
            // catch-up) the shutdown future is dropped unpolled, instead of registering with the
            // watch channel and unregistering again for every message (8 % of the CPU on small
            // rows). A stop is still seen at the top of every turn and while waiting.
            let msg = tokio::select! {
                biased;
                msg = self.stream.next() => msg?,
                _ = shutdown.changed() => continue,
            };
            let Some(msg) = msg else {
                return Ok(ReaderExit::EndOfStream);
            };
            let result = match msg {
                ReplicationMessage::XLogData {
                    wal_start,
                    wal_end,
                    data,
                    ..
                } => {
                    self.progress.note_received(wal_start.max(wal_end));
                    tokio::select! {
                        biased;
                        r = self.handle_payload(wal_start, &data) => r,
                        _ = shutdown.changed() => continue_after_shutdown(),
                    }
                }
                ReplicationMessage::Keepalive {
                    wal_end,
                    reply_requested,
                    ..
                } => {
                    self.progress.note_received(wal_end);
                    if reply_requested {
                        self.progress.status_now.notify_one();
                    }
                    if self.txn.is_none() {
                        match self.staged.last_mut() {
                            Some(Event::Idle { wal_end: staged }) => *staged = wal_end,
                            _ => self.staged.push(Event::Idle { wal_end }),
                        }
                    }
                    Ok(())
                }
            };
            match result {
                Ok(()) => {}
                Err(Step::Closed) => return Ok(ReaderExit::PipelineClosed(self.stream)),
                Err(Step::Shutdown) => return Ok(ReaderExit::Shutdown(self.stream)),
                Err(Step::Error(e)) => return Err(e),
            }
        }
    }

    async fn handle_payload(&mut self, lsn: Lsn, data: &bytes::Bytes) -> Result<(), Step> {
        if let Some(xid) = self.in_stream {
            return self.stage_streamed(xid, lsn, data);
        }
        let msg = pgoutput::decode(data, false)
            .map_err(|source| Step::Error(ReaderError::Decode { lsn, source }))?;
        match msg {
            Message::StreamStart { xid, first_segment } => {
                let Some(store) = self.streamed.as_mut() else {
                    return Err(Step::Error(ReaderError::Unexpected {
                        tag: char::from(pgoutput::tag::STREAM_START),
                        lsn,
                    }));
                };
                if first_segment {
                    store.start(xid);
                } else if !store.is_open(xid) {
                    return Err(Step::Error(ReaderError::StreamOrder {
                        xid,
                        lsn,
                        detail:
                            "a later block arrived for a transaction whose first block never did",
                    }));
                }
                self.in_stream = Some(xid);
                Ok(())
            }
            Message::StreamAbort { xid, subxid } => {
                if let Some(store) = self.streamed.as_mut() {
                    store.abort(xid, subxid);
                }
                Ok(())
            }
            Message::StreamCommit(c) => self.deliver_streamed(lsn, c).await,
            other => self.handle_message(lsn, other).await,
        }
    }

    /// A frame between Stream Start and Stream Stop: staged as it came, decoded at commit.
    fn stage_streamed(&mut self, xid: u32, lsn: Lsn, data: &bytes::Bytes) -> Result<(), Step> {
        use pgoutput::tag;
        let Some(&t) = data.first() else {
            return Err(Step::Error(ReaderError::Decode {
                lsn,
                source: DecodeError::Empty,
            }));
        };
        match t {
            tag::STREAM_STOP => {
                self.in_stream = None;
                Ok(())
            }
            tag::RELATION
            | tag::TYPE
            | tag::INSERT
            | tag::UPDATE
            | tag::DELETE
            | tag::TRUNCATE
            | tag::MESSAGE => {
                let store = self.streamed.as_mut().expect("in_stream implies streaming");
                store
                    .stage(xid, lsn, data)
                    .map_err(|source| Step::Error(ReaderError::Spill { lsn, source }))
            }
            other => Err(Step::Error(ReaderError::Unexpected {
                tag: char::from(other),
                lsn,
            })),
        }
    }

    /// A streamed transaction committed: its staged frames go through the pipeline as one
    /// transaction at its commit LSN, exactly like a transaction sent whole. Changes of
    /// subtransactions that rolled back are skipped. A Relation message is applied just before
    /// the first change that uses it, so one sent for a rolled-back subtransaction (PostgreSQL
    /// sends it when that subtransaction first touched the table) never becomes a schema change
    /// on its own.
    async fn deliver_streamed(&mut self, lsn: Lsn, c: pgoutput::StreamCommit) -> Result<(), Step> {
        let Some(mut replay) = self.streamed.as_mut().and_then(|s| s.take(c.xid)) else {
            return Err(Step::Error(ReaderError::StreamOrder {
                xid: c.xid,
                lsn,
                detail: "Stream Commit for a transaction that was never started",
            }));
        };
        let skip = c.commit_lsn < self.resume_from;
        self.txn = Some(Txn {
            pos: Position {
                lsn,
                commit_lsn: c.commit_lsn,
                xid: c.xid,
                commit_time: c.commit_time,
            },
            skip,
        });
        let spilled = replay.spilled_bytes();
        let mut pending: hashbrown::HashMap<RelId, (Lsn, pgoutput::Relation)> =
            hashbrown::HashMap::new();
        let mut changes = 0u64;
        loop {
            let next = replay
                .next_frame()
                .map_err(|source| Step::Error(ReaderError::Spill { lsn, source }))?;
            let Some((flsn, frame)) = next else { break };
            if skip {
                continue;
            }
            let msg = pgoutput::decode(&frame, true)
                .map_err(|source| Step::Error(ReaderError::Decode { lsn: flsn, source }))?;
            let msg = match msg {
                Message::Relation(r) => {
                    pending.insert(r.rel_id, (flsn, r));
                    continue;
                }
                Message::Type(_) => continue,
                other => other,
            };
            // No allocation per change: the relations are borrowed from the message.
            let (sub, rels): (Option<u32>, &[RelId]) = match &msg {
                Message::Insert(m) => (m.xid, std::slice::from_ref(&m.rel_id)),
                Message::Update(m) => (m.xid, std::slice::from_ref(&m.rel_id)),
                Message::Delete(m) => (m.xid, std::slice::from_ref(&m.rel_id)),
                Message::Truncate(m) => (m.xid, &m.rel_ids),
                Message::LogicalMessage(m) => (m.xid, &[]),
                other => {
                    return Err(Step::Error(ReaderError::Unexpected {
                        tag: char::from(other.tag()),
                        lsn: flsn,
                    }))
                }
            };
            if sub.is_some_and(|x| replay.is_aborted(x)) {
                continue;
            }
            if !pending.is_empty() {
                for rel_id in rels {
                    if let Some((rlsn, rel)) = pending.remove(rel_id) {
                        self.handle_message(rlsn, Message::Relation(rel)).await?;
                    }
                }
            }
            changes += 1;
            self.handle_message(flsn, msg).await?;
        }
        drop(replay);
        self.metrics
            .streamed_txns_total
            .fetch_add(1, Ordering::Relaxed);
        tracing::debug!(xid = c.xid, commit_lsn = %c.commit_lsn, changes, spilled_bytes = spilled, skip, "streamed transaction committed");
        self.handle_message(
            lsn,
            Message::Commit(pgoutput::Commit {
                flags: c.flags,
                commit_lsn: c.commit_lsn,
                end_lsn: c.end_lsn,
                commit_time: c.commit_time,
            }),
        )
        .await
    }

    /// Handles one decoded message of a transaction sent whole (or replayed at its commit).
    async fn handle_message(&mut self, lsn: Lsn, msg: Message) -> Result<(), Step> {
        match msg {
            Message::Begin(b) => {
                let pos = Position {
                    lsn,
                    commit_lsn: b.final_lsn,
                    xid: b.xid,
                    commit_time: b.commit_time,
                };
                let skip = b.final_lsn < self.resume_from;
                if skip {
                    tracing::debug!(commit_lsn = %b.final_lsn, resume_from = %self.resume_from, "skipping already durable transaction");
                }
                self.txn = Some(Txn { pos, skip });
                Ok(())
            }
            Message::Commit(c) => {
                let skip = self.txn.take().is_some_and(|t| t.skip);
                if skip {
                    return Ok(());
                }
                self.send(Event::Commit {
                    commit_lsn: c.commit_lsn,
                    end_lsn: c.end_lsn,
                    commit_time: c.commit_time,
                })
                .await
            }
            Message::Relation(rel) => {
                // PostgreSQL sends Relation messages with no WAL position (0/0); the commit LSN
                // of the transaction they belong to places the new definition in the stream.
                let lsn = self.txn.as_ref().map_or(lsn, |t| t.pos.commit_lsn);
                let (update, renamed) = match self.cache.apply_at(&rel, lsn) {
                    Ok(r) => r,
                    Err(source) => {
                        self.record_refused_schema(&source, lsn);
                        return Err(Step::Error(ReaderError::Schema {
                            lsn,
                            source: Box::new(source),
                        }));
                    }
                };
                if let Some(r) = renamed {
                    tracing::warn!(
                        table = %r.table,
                        oid = r.rel_id.0,
                        from = %r.from,
                        to = %r.to,
                        lsn = %lsn,
                        "table renamed in PostgreSQL; SCHEMA_TABLE_RENAME=follow: its changes keep \
                         loading into the same target"
                    );
                    self.metrics.record_schema_event(SchemaEvent {
                        table: r.table.to_string(),
                        kind: SchemaChangeKind::RenameTable,
                        action: "followed",
                        detail: format!(
                            "{} renamed to {} (relation OID {})",
                            r.from, r.to, r.rel_id.0
                        ),
                        lsn: lsn.0,
                        at_unix_us: now_unix_us(),
                    });
                }
                if let RelationUpdate::New(t) | RelationUpdate::Changed { new: t, .. } = &update {
                    if let Some(&c) = self.skip_by_name.get(&t.name) {
                        self.skip_by_rel.insert(rel.rel_id, c);
                    }
                }
                if let RelationUpdate::New(t)
                | RelationUpdate::Changed { new: t, .. }
                | RelationUpdate::Unchanged(t) = &update
                {
                    self.record_schema(lsn, t);
                }
                if let RelationUpdate::Changed { old, new } = update {
                    tracing::info!(table = %new.name, lsn = %lsn, columns = new.columns.len(), "table definition changed");
                    return self
                        .send(Event::Schema(SchemaChange { old, new, lsn }))
                        .await;
                }
                Ok(())
            }
            Message::Insert(m) => {
                let Some((table, pos)) = self.target(m.rel_id, lsn)? else {
                    return Ok(());
                };
                self.send(Event::Row(RowChange {
                    op: Op::Insert,
                    table,
                    pos,
                    row: m.new,
                    key_only: false,
                    old: None,
                }))
                .await
            }
            Message::Update(m) => {
                let Some((table, pos)) = self.target(m.rel_id, lsn)? else {
                    return Ok(());
                };
                let old = m.old.map(|o| match o {
                    OldTuple::Key(t) | OldTuple::Full(t) => t,
                });
                let mut row = m.new;
                if let Some(old) = &old {
                    backfill_unchanged_toast(&mut row, old);
                }
                check_key_present(&table, &row, lsn)?;
                self.send(Event::Row(RowChange {
                    op: Op::Update,
                    table,
                    pos,
                    row,
                    key_only: false,
                    old,
                }))
                .await
            }
            Message::Delete(m) => {
                let Some((table, pos)) = self.target(m.rel_id, lsn)? else {
                    return Ok(());
                };
                let (row, key_only) = match m.old {
                    OldTuple::Key(t) => (t, true),
                    OldTuple::Full(t) => (t, false),
                };
                self.send(Event::Row(RowChange {
                    op: Op::Delete,
                    table,
                    pos,
                    row,
                    key_only,
                    old: None,
                }))
                .await
            }
            Message::Truncate(t) => {
                let mut targets = Vec::new();
                for rel_id in &t.rel_ids {
                    if let Some((table, pos)) = self.target(*rel_id, lsn)? {
                        targets.push((table, pos));
                    }
                }
                for (table, pos) in targets {
                    self.send(Event::Truncate(TruncateChange {
                        table,
                        pos,
                        cascade: t.options & 1 != 0,
                        restart_identity: t.options & 2 != 0,
                    }))
                    .await?;
                }
                Ok(())
            }
            // dbmazz's own heartbeat: its commit (an empty transaction for the sink) confirms
            // the WAL before it; the message itself only measures the lag.
            Message::LogicalMessage(m) if m.prefix == heartbeat::PREFIX => {
                if let Some(emitted) = heartbeat::parse_payload(&m.content) {
                    self.metrics.heartbeat_received(emitted);
                }
                Ok(())
            }
            // Types are resolved from the catalog at setup; origins and other logical messages
            // are not replicated.
            Message::Type(_) | Message::Origin(_) | Message::LogicalMessage(_) => Ok(()),
            other => Err(Step::Error(ReaderError::Unexpected {
                tag: char::from(other.tag()),
                lsn,
            })),
        }
    }

    /// The table and position of a change, or `None` when it is to be skipped (a table outside
    /// `TABLES`, or a transaction that is already durable).
    fn target(
        &self,
        rel_id: RelId,
        lsn: Lsn,
    ) -> Result<Option<(Arc<TableSchema>, Position)>, Step> {
        let txn = self
            .txn
            .as_ref()
            .ok_or(Step::Error(ReaderError::NoTransaction { lsn }))?;
        if txn.skip {
            return Ok(None);
        }
        if self
            .skip_by_rel
            .get(&rel_id)
            .is_some_and(|&c| txn.pos.commit_lsn < c)
        {
            return Ok(None);
        }
        match self.cache.get(rel_id) {
            None => Err(Step::Error(ReaderError::UnknownRelation { lsn, rel_id })),
            Some(None) => Ok(None),
            Some(Some(table)) => Ok(Some((table.clone(), Position { lsn, ..txn.pos }))),
        }
    }

    /// Stages an event; sends the staged parcel once it reaches the feeder's parcel limit.
    /// Queues `schema` for the schema log if it differs from the last version recorded.
    fn record_schema(&mut self, lsn: Lsn, schema: &TableSchema) {
        let Some(queue) = &self.schema_log else {
            return;
        };
        let source_name = self
            .cache
            .source_name(schema.rel_id)
            .cloned()
            .unwrap_or_else(|| schema.name.clone());
        let version = StoredSchema::of(lsn, schema, &source_name);
        if self
            .recorded
            .get(&schema.rel_id)
            .is_some_and(|r| r.same_shape(&version))
        {
            return;
        }
        if let Ok(mut q) = queue.lock() {
            q.push(version.clone());
        }
        self.recorded.insert(schema.rel_id, version);
    }

    /// Counts and shows a schema change the cache refused (the job stops on it).
    fn record_refused_schema(&self, e: &SchemaError, lsn: Lsn) {
        let (table, kind) = match e {
            SchemaError::TableRenamed { table, .. } => (table, SchemaChangeKind::RenameTable),
            SchemaError::KeyChanged { table, .. }
            | SchemaError::IdentityChanged { table, .. }
            | SchemaError::MissingKeyColumn { table, .. } => (table, SchemaChangeKind::KeyChange),
        };
        self.metrics.record_schema_event(SchemaEvent {
            table: table.to_string(),
            kind,
            action: "stopped",
            detail: e.to_string(),
            lsn: lsn.0,
            at_unix_us: now_unix_us(),
        });
    }

    async fn send(&mut self, event: Event) -> Result<(), Step> {
        if event.is_change() {
            self.metrics.events_received.fetch_add(1, Ordering::Relaxed);
        }
        self.staged_bytes += event.data_bytes();
        self.staged.push(event);
        if self.staged_bytes >= self.feeder.parcel_limit() {
            self.send_staged().await?;
        }
        Ok(())
    }

    async fn send_staged(&mut self) -> Result<(), Step> {
        let bytes = std::mem::take(&mut self.staged_bytes);
        self.feeder
            .send_all(&mut self.staged, bytes)
            .await
            .map_err(|PipelineClosed| Step::Closed)
    }
}

/// Why handling one message stopped the loop.
enum Step {
    Closed,
    Shutdown,
    Error(ReaderError),
}

impl From<ReaderError> for Step {
    fn from(e: ReaderError) -> Self {
        Step::Error(e)
    }
}

fn continue_after_shutdown() -> Result<(), Step> {
    Err(Step::Shutdown)
}

/// Under REPLICA IDENTITY FULL the old row carries the full value of a TOASTed column that the
/// update did not change; use it instead of leaving the column out.
fn backfill_unchanged_toast(row: &mut Tuple, old: &Tuple) {
    for (new, old) in row.values.iter_mut().zip(&old.values) {
        if matches!(new, Value::UnchangedToast) && matches!(old, Value::Text(_) | Value::Binary(_))
        {
            *new = old.clone();
        }
    }
}

fn check_key_present(table: &TableSchema, row: &Tuple, lsn: Lsn) -> Result<(), Step> {
    for &i in &table.key {
        if matches!(row.values.get(i), Some(Value::UnchangedToast)) {
            return Err(Step::Error(ReaderError::ToastedKey {
                table: table.name.clone(),
                column: table.columns[i].name.clone(),
                lsn,
            }));
        }
    }
    Ok(())
}
