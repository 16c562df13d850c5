//! Batching, the flush policy, backpressure, and the durable-LSN hand-off.
//!
//! ```text
//!  WAL reader ──Feeder::send_all──▶ [bounded channel + byte budget] ──▶ Batcher ──write_batch──▶ Sink
//!       ▲ waits when the budget is spent                                │ after the sink returns
//!       └───────────── permits return when a batch is durable ◀─────────┘ durable LSN ─▶ checkpoint
//! ```
//!
//! The byte budget (twice `FLUSH_MAX_BYTES`) is what keeps memory flat whatever the transaction
//! size: every event holds permits for its bytes until the batch that contains it is durable, so
//! a slow sink makes the reader wait instead of buffering. A batch is flushed when it holds
//! `FLUSH_SIZE` changes, `FLUSH_MAX_BYTES` bytes, or its oldest change is `FLUSH_INTERVAL_MS`
//! old; that may be in the middle of a transaction, which is fine because only commit markers
//! move the durable LSN, and replays are idempotent.
//!
//! The reader sends events in parcels: everything decoded from the bytes one socket read
//! returned, with one budget acquisition and one channel send for the lot. A send per event
//! woke the batcher's thread for every row; under a steady OLTP load most of the daemon's time
//! went to those cross-thread wake-ups (tens of thousands of context switches a second), and
//! the scheduling delay showed up as commit → ack latency. Parcels add no delay: the reader
//! sends as soon as the socket has no complete message left.
//!
//! A failed write is retried, the same batch again, with a jittered backoff; after
//! `SINK_CIRCUIT_FAILURES` failures in a row the [circuit](super::circuit) opens: the feeder
//! holds every sender at its next parcel, and the batch is retried once per
//! `SINK_CIRCUIT_PROBE_MS` until the first success closes it.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::config::{FlushPolicy, SinkCircuitPolicy, TableName};
use crate::metrics::{now_unix_us, Metrics, TableCounters};
use crate::pipeline::change::{Event, Op};
use crate::pipeline::circuit::{Breaker, Circuit, Retry};
use crate::pipeline::sink::{BatchStage, ErrorKind, Sink, SinkError};
use crate::Lsn;

/// How far the server's position must be ahead of the durable LSN before an idle keepalive
/// moves the checkpoint (keeps a quiet database's slot from holding WAL, without a write per
/// keepalive).
pub const IDLE_CONFIRM_MIN_BYTES: u64 = 1024 * 1024;

/// Most envelopes the batcher takes from the channel per wake-up.
const RECV_AT_ONCE: usize = 256;

/// Largest parcel the reader stages before sending (a quarter of the budget if that is less),
/// so a long run of buffered messages still reaches the batcher in steps.
const PARCEL_MAX_BYTES: usize = 64 * 1024;

/// Events sent together, with the budget permits they hold until they are durable.
#[derive(Debug)]
pub struct Envelope {
    events: Parcel,
    permit: Option<OwnedSemaphorePermit>,
}

#[derive(Debug)]
enum Parcel {
    One(Event),
    Many(Vec<Event>),
}

/// The pipeline is gone (its task ended); the reader should stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the pipeline has stopped")]
pub struct PipelineClosed;

/// The sending side, used by the WAL reader.
#[derive(Clone, Debug)]
pub struct Feeder {
    tx: mpsc::Sender<Envelope>,
    budget: Arc<Semaphore>,
    budget_cap: u32,
    /// Holds senders while the sink's circuit is open.
    circuit: Arc<Circuit>,
}

impl Feeder {
    /// Sends an event, waiting while the byte budget is spent (backpressure) or the sink's
    /// circuit is open.
    pub async fn send(&self, event: Event) -> Result<(), PipelineClosed> {
        let need = self.permits_for(&event);
        self.send_parcel(Parcel::One(event), need).await
    }

    /// Sends `events` (in order) as one parcel and leaves the vector empty; `bytes` is the sum
    /// of their [`Event::data_bytes`]. Waits while the byte budget is spent or the sink's
    /// circuit is open.
    pub async fn send_all(
        &self,
        events: &mut Vec<Event>,
        bytes: usize,
    ) -> Result<(), PipelineClosed> {
        match events.len() {
            0 => Ok(()),
            1 => {
                let event = events.pop().expect("one event");
                self.send(event).await
            }
            n => {
                let need = self.clamp(bytes.max(n));
                let parcel = Parcel::Many(std::mem::take(events));
                self.send_parcel(parcel, need).await
            }
        }
    }

    async fn send_parcel(&self, events: Parcel, need: u32) -> Result<(), PipelineClosed> {
        // Once per parcel, not per row: one relaxed load while the sink is healthy.
        if self.circuit.is_open() {
            self.circuit.wait_closed().await;
        }
        let permit = self
            .budget
            .clone()
            .acquire_many_owned(need)
            .await
            .map_err(|_| PipelineClosed)?;
        self.tx
            .send(Envelope {
                events,
                permit: Some(permit),
            })
            .await
            .map_err(|_| PipelineClosed)
    }

    fn permits_for(&self, event: &Event) -> u32 {
        self.clamp(event.data_bytes())
    }

    fn clamp(&self, bytes: usize) -> u32 {
        u32::try_from(bytes)
            .unwrap_or(u32::MAX)
            .clamp(1, self.budget_cap)
    }

    /// Budget bytes one parcel may hold; the reader sends before it stages more.
    pub fn parcel_limit(&self) -> usize {
        (self.budget_cap as usize / 4).clamp(1, PARCEL_MAX_BYTES)
    }

    /// Bytes of the budget currently free (for metrics and tests).
    pub fn budget_available(&self) -> usize {
        self.budget.available_permits()
    }
}

/// Creates the channel between the reader and the batcher, with an in-flight budget of
/// `2 × max_bytes` bytes; senders also wait while `circuit` is open.
pub fn channel(policy: &FlushPolicy, circuit: Arc<Circuit>) -> (Feeder, mpsc::Receiver<Envelope>) {
    let budget_cap = u32::try_from(policy.max_bytes.saturating_mul(2))
        .unwrap_or(u32::MAX)
        .min(Semaphore::MAX_PERMITS as u32);
    let (tx, rx) = mpsc::channel(16 * 1024);
    (
        Feeder {
            tx,
            budget: Arc::new(Semaphore::new(budget_cap as usize)),
            budget_cap,
            circuit,
        },
        rx,
    )
}

/// Collects events into batches and hands them to the sink.
pub struct Batcher<S> {
    sink: S,
    policy: watch::Receiver<FlushPolicy>,
    rx: mpsc::Receiver<Envelope>,
    durable: watch::Sender<Lsn>,
    metrics: Arc<Metrics>,
    chunk_done: Option<mpsc::UnboundedSender<ChunkDurable>>,
    stage: Option<Box<dyn BatchStage>>,
    breaker: Breaker,
}

/// A snapshot chunk whose rows are all durable in the sink.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkDurable {
    /// Table.
    pub table: TableName,
    /// Chunk number.
    pub chunk: i32,
    /// Rows it held.
    pub rows: u64,
}

impl<S: Sink> Batcher<S> {
    /// A batcher that reports each newly durable LSN on `durable`. The flush policy is read
    /// live from `policy`, so a reload applies to the next batch. Failed writes open `circuit`
    /// (the one the feeder of `rx` was made with) as `breaker` says.
    pub fn new(
        sink: S,
        policy: watch::Receiver<FlushPolicy>,
        rx: mpsc::Receiver<Envelope>,
        durable: watch::Sender<Lsn>,
        metrics: Arc<Metrics>,
        circuit_policy: SinkCircuitPolicy,
        circuit: Arc<Circuit>,
    ) -> Self {
        Batcher {
            sink,
            policy,
            rx,
            durable,
            metrics,
            chunk_done: None,
            stage: None,
            breaker: Breaker::new(circuit_policy, circuit),
        }
    }

    /// Reports durable snapshot chunks on `tx`.
    pub fn with_chunk_reports(mut self, tx: mpsc::UnboundedSender<ChunkDurable>) -> Self {
        self.chunk_done = Some(tx);
        self
    }

    /// Runs `stage` on each batch before the sink writes it.
    pub fn with_stage(mut self, stage: Box<dyn BatchStage>) -> Self {
        self.stage = Some(stage);
        self
    }

    fn report_chunk(&self, event: &Event) {
        if let (Event::ChunkDone { table, chunk, rows }, Some(tx)) = (event, &self.chunk_done) {
            let _ = tx.send(ChunkDurable {
                table: table.clone(),
                chunk: *chunk,
                rows: *rows,
            });
        }
    }

    /// Runs until the feeder side is dropped, then flushes what is left and returns.
    pub async fn run(mut self) -> Result<(), SinkError> {
        let mut batch = Batch::default();
        let mut policy_open = true;
        // Envelopes are taken from the channel up to this many per wake-up, and the flush timer
        // is armed once per batch (not once per event): both keep the per-change cost small.
        let mut received = Vec::with_capacity(RECV_AT_ONCE);
        let timer = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(timer);
        let mut armed: Option<Instant> = None;
        loop {
            let policy = *self.policy.borrow();
            let deadline = batch.oldest.map(|t| t + policy.interval);
            if deadline != armed {
                if let Some(d) = deadline {
                    timer.as_mut().reset(d);
                }
                armed = deadline;
            }
            tokio::select! {
                n = self.rx.recv_many(&mut received, RECV_AT_ONCE) => {
                    if n == 0 {
                        break;
                    }
                    for env in received.drain(..) {
                        self.accept_envelope(&mut batch, env, &policy).await?;
                    }
                }
                _ = &mut timer, if deadline.is_some() => {
                    self.flush(&mut batch).await?;
                }
                // A reload applies at once: a smaller size may already be reached, and the
                // next turn of the loop recomputes the deadline.
                changed = self.policy.changed(), if policy_open => {
                    if changed.is_err() {
                        policy_open = false;
                    } else {
                        let p = *self.policy.borrow_and_update();
                        if batch.changes >= p.max_events || batch.bytes >= p.max_bytes {
                            self.flush(&mut batch).await?;
                        }
                    }
                }
            }
        }
        self.flush(&mut batch).await
    }

    /// Adds an envelope's events to the batch. Each event of a parcel carries its share of the
    /// parcel's permits, so a flush in the middle of a parcel returns exactly the budget of what
    /// became durable.
    async fn accept_envelope(
        &mut self,
        batch: &mut Batch,
        env: Envelope,
        policy: &FlushPolicy,
    ) -> Result<(), SinkError> {
        let events = match env.events {
            Parcel::One(event) => return self.accept(batch, event, env.permit, policy).await,
            Parcel::Many(events) => events,
        };
        let mut permit = env.permit;
        let last = events.len() - 1;
        for (i, event) in events.into_iter().enumerate() {
            let share = if i == last {
                permit.take()
            } else {
                permit.as_mut().and_then(|p| {
                    let n = event.data_bytes().clamp(1, p.num_permits());
                    if n == p.num_permits() {
                        None
                    } else {
                        p.split(n)
                    }
                })
            };
            self.accept(batch, event, share, policy).await?;
        }
        Ok(())
    }

    /// Adds one event (with its budget permits) to the batch, flushing when the batch is full.
    async fn accept(
        &mut self,
        batch: &mut Batch,
        event: Event,
        permit: Option<OwnedSemaphorePermit>,
        policy: &FlushPolicy,
    ) -> Result<(), SinkError> {
        if batch.events.is_empty() {
            // Nothing received before this marker is pending, so its position is durable.
            match event {
                Event::Commit { end_lsn, .. } => {
                    self.advance(end_lsn);
                    return Ok(());
                }
                Event::ChunkDone { .. } => {
                    self.report_chunk(&event);
                    return Ok(());
                }
                Event::Idle { wal_end } => {
                    // Only worth a checkpoint write when unrelated WAL piled up; otherwise
                    // the write itself would produce WAL, a keepalive, and another write.
                    if wal_end.0 >= self.durable.borrow().0 + IDLE_CONFIRM_MIN_BYTES {
                        self.advance(wal_end);
                    }
                    return Ok(());
                }
                _ => {}
            }
        }
        // A finished snapshot chunk is flushed at once: its bodies are already full-size loads,
        // so waiting for FLUSH_INTERVAL_MS would only delay the chunk's (and the snapshot's)
        // completion.
        let chunk_done = matches!(event, Event::ChunkDone { .. });
        batch.push(event, permit);
        if chunk_done || batch.changes >= policy.max_events || batch.bytes >= policy.max_bytes {
            self.flush(batch).await?;
        }
        Ok(())
    }

    fn advance(&self, lsn: Lsn) {
        self.durable.send_if_modified(|cur| {
            let moved = lsn > *cur;
            if moved {
                *cur = lsn;
            }
            moved
        });
    }

    fn record(&self, batch: &Batch) {
        let m = &self.metrics;
        m.batches_total.fetch_add(1, Ordering::Relaxed);
        m.events_total
            .fetch_add(batch.changes as u64, Ordering::Relaxed);
        m.bytes_total
            .fetch_add(batch.bytes as u64, Ordering::Relaxed);
        let mut counts: BTreeMap<&TableName, TableCounters> = BTreeMap::new();
        let mut commits = Vec::new();
        for event in &batch.events {
            match event {
                Event::Row(r) => {
                    let c = counts.entry(&r.table.name).or_default();
                    match r.op {
                        Op::Insert | Op::Snapshot => c.inserts += 1,
                        Op::Update => c.updates += 1,
                        Op::Delete => c.deletes += 1,
                    }
                }
                Event::Encoded(e) => counts.entry(&e.table.name).or_default().inserts += e.rows,
                Event::Truncate(t) => counts.entry(&t.table.name).or_default().truncates += 1,
                Event::Commit { commit_time, .. } => commits.push(*commit_time),
                _ => {}
            }
        }
        let counts: BTreeMap<String, TableCounters> = counts
            .into_iter()
            .map(|(t, c)| (t.to_string(), c))
            .collect();
        m.add_table_counts(&counts);
        m.record_durable_commits(commits);
    }

    async fn flush(&mut self, batch: &mut Batch) -> Result<(), SinkError> {
        if batch.events.is_empty() {
            batch.clear();
            return Ok(());
        }
        if batch.needs_sink {
            // Health reads how long this write has been outstanding (a sink that fails or does
            // not answer keeps the pipeline from moving).
            self.metrics.sink_write_started();
            let _ended = WriteEnded(self.metrics.clone());
            loop {
                let written = async {
                    if let Some(stage) = self.stage.as_mut() {
                        stage.prepare(&mut batch.events).await?;
                    }
                    self.sink.write_batch(&batch.events).await
                }
                .await;
                match written {
                    Ok(()) => {
                        if let Some(closed) = self.breaker.succeeded(now_unix_us()) {
                            tracing::info!(
                                open_for_s = closed.open_for.as_secs(),
                                failed_loads = closed.failures,
                                "sink circuit closed: the pending batch is durable, reading from PostgreSQL resumes"
                            );
                        }
                        break;
                    }
                    Err(e) if e.kind == ErrorKind::Transient => {
                        self.metrics.sink_write_failed(e.to_string());
                        let failure = self.breaker.failed(now_unix_us());
                        let wait = match failure.retry {
                            Retry::Backoff(base) => {
                                let wait = with_jitter(base);
                                tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "sink write failed, retrying");
                                wait
                            }
                            Retry::Probe(every) if failure.opened => {
                                tracing::warn!(
                                    error = %e,
                                    failed_loads = failure.consecutive,
                                    probe_every_ms = every.as_millis() as u64,
                                    "sink circuit opened: stopped reading from PostgreSQL; the pending batch is retried as a probe until the sink takes it"
                                );
                                every
                            }
                            Retry::Probe(every) => {
                                tracing::info!(error = %e, failed_loads = failure.consecutive, next_probe_in_ms = every.as_millis() as u64, "sink probe failed, the circuit stays open");
                                every
                            }
                        };
                        tokio::time::sleep(wait).await;
                    }
                    Err(e) => return Err(e),
                }
            }
            self.record(batch);
        }
        let durable = batch.events.iter().rev().find_map(|e| match e {
            Event::Commit { end_lsn, .. } => Some(*end_lsn),
            Event::Idle { wal_end } => Some(*wal_end),
            _ => None,
        });
        for event in &batch.events {
            self.report_chunk(event);
        }
        // Dropping the events and their permits returns the budget to the reader.
        batch.clear();
        if let Some(lsn) = durable {
            self.advance(lsn);
        }
        Ok(())
    }
}

#[derive(Default)]
struct Batch {
    events: Vec<Event>,
    permit: Option<OwnedSemaphorePermit>,
    /// Row changes and truncates (what `FLUSH_SIZE` counts).
    changes: usize,
    /// Whether any event needs the sink (not only commit/idle markers).
    needs_sink: bool,
    bytes: usize,
    oldest: Option<Instant>,
}

impl Batch {
    fn push(&mut self, event: Event, permit: Option<OwnedSemaphorePermit>) {
        self.changes += event.changes();
        if !matches!(
            event,
            Event::Commit { .. } | Event::Idle { .. } | Event::ChunkDone { .. }
        ) {
            self.needs_sink = true;
            self.oldest.get_or_insert_with(Instant::now);
        }
        self.bytes += event.data_bytes();
        self.events.push(event);
        match (&mut self.permit, permit) {
            (Some(held), Some(p)) => held.merge(p),
            (held @ None, p) => *held = p,
            (Some(_), None) => {}
        }
    }

    fn clear(&mut self) {
        self.events.clear();
        self.permit = None;
        self.changes = 0;
        self.needs_sink = false;
        self.bytes = 0;
        self.oldest = None;
    }
}

/// Marks the outstanding sink write as ended when the write is over, however it ends (success,
/// a definite error, or the task being cancelled).
struct WriteEnded(Arc<Metrics>);

impl Drop for WriteEnded {
    fn drop(&mut self) {
        self.0.sink_write_ended();
    }
}

/// `base` plus up to 50 % random jitter, so that many jobs do not retry in lockstep.
fn with_jitter(base: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    base + base.mul_f64(f64::from(nanos % 1000) / 2000.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TableName;
    use crate::pipeline::change::{ColumnSchema, Position, RelId, RowChange, TableSchema};
    use crate::pipeline::change::{Tuple, Value};
    use crate::value::{Scalar, ValueKind};

    /// Records the row count of every batch it is given.
    struct Recording(Arc<std::sync::Mutex<Vec<usize>>>);

    impl Sink for Recording {
        fn snapshot_encoders(&self) -> Arc<dyn crate::pipeline::sink::SnapshotEncoders> {
            Arc::new(crate::ndjson::NdjsonSnapshotEncoders)
        }

        async fn write_batch(&mut self, events: &[Event]) -> Result<(), SinkError> {
            let rows = events.iter().filter(|e| e.is_change()).count();
            self.0.lock().unwrap().push(rows);
            Ok(())
        }
    }

    fn row(id: u64) -> Event {
        let table = Arc::new(TableSchema {
            rel_id: RelId(1),
            name: TableName::new("public", "t"),
            columns: vec![ColumnSchema {
                name: "id".into(),
                type_oid: 20,
                type_modifier: -1,
                kind: ValueKind::Scalar(Scalar::Int),
            }],
            key: vec![0],
            replica_identity: b'd',
        });
        Event::Row(RowChange {
            op: Op::Insert,
            table,
            pos: Position {
                lsn: Lsn(id),
                commit_lsn: Lsn(100),
                xid: 1,
                commit_time: 0,
            },
            row: Tuple {
                values: vec![Value::Text(bytes::Bytes::from(id.to_string()))],
            },
            key_only: false,
            old: None,
        })
    }

    /// The in-flight budget is a memory budget: a row's share must cover what it really holds
    /// (the event, one value slot per column, the bytes), or narrow rows overrun it.
    #[test]
    fn a_rows_budget_share_covers_its_memory() {
        let event = row(7);
        let Event::Row(change) = &event else {
            unreachable!("row() builds a row")
        };
        let held = std::mem::size_of::<Event>()
            + change.row.values.capacity() * std::mem::size_of::<Value>()
            + change
                .row
                .values
                .iter()
                .map(|v| match v {
                    Value::Text(b) | Value::Binary(b) => b.len(),
                    _ => 0,
                })
                .sum::<usize>();
        assert!(
            event.data_bytes() >= held,
            "counted {} bytes for a row holding {held}",
            event.data_bytes()
        );
    }

    /// A batcher over a [`Recording`] sink with `policy` (and chunk reports when `chunks` is
    /// given), running as a task.
    struct Rig {
        feeder: Feeder,
        cap: usize,
        batches: Arc<std::sync::Mutex<Vec<usize>>>,
        durable: watch::Receiver<Lsn>,
        task: tokio::task::JoinHandle<Result<(), SinkError>>,
        _policy: watch::Sender<FlushPolicy>,
    }

    fn rig(
        max_events: usize,
        interval: Duration,
        chunks: Option<mpsc::UnboundedSender<ChunkDurable>>,
    ) -> Rig {
        let policy = FlushPolicy {
            max_events,
            max_bytes: 1 << 20,
            interval,
        };
        let circuit = Arc::new(Circuit::default());
        let (feeder, rx) = channel(&policy, circuit.clone());
        let (policy_tx, policy_rx) = watch::channel(policy);
        let (durable_tx, durable) = watch::channel(Lsn::ZERO);
        let batches = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut batcher = Batcher::new(
            Recording(batches.clone()),
            policy_rx,
            rx,
            durable_tx,
            Arc::new(Metrics::default()),
            SinkCircuitPolicy {
                failures: 5,
                probe: Duration::from_secs(10),
            },
            circuit,
        );
        if let Some(tx) = chunks {
            batcher = batcher.with_chunk_reports(tx);
        }
        Rig {
            cap: feeder.budget_available(),
            feeder,
            batches,
            durable,
            task: tokio::spawn(batcher.run()),
            _policy: policy_tx,
        }
    }

    #[tokio::test]
    async fn a_parcel_split_over_batches_returns_exactly_its_budget() {
        let Rig {
            feeder,
            cap,
            batches,
            durable: mut durable_rx,
            task,
            ..
        } = rig(2, Duration::from_secs(3600), None);

        let mut parcel: Vec<Event> = (1..=5).map(row).collect();
        parcel.push(Event::Commit {
            commit_lsn: Lsn(100),
            end_lsn: Lsn(101),
            commit_time: 0,
        });
        let bytes = parcel.iter().map(Event::data_bytes).sum();
        feeder.send_all(&mut parcel, bytes).await.unwrap();
        assert!(parcel.is_empty(), "the parcel was taken");
        // Two full batches are written at once; the fifth row waits with its commit.
        tokio::time::timeout(Duration::from_secs(5), async {
            while batches.lock().unwrap().len() < 2 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .unwrap();
        assert_eq!(*batches.lock().unwrap(), vec![2, 2]);
        assert!(
            feeder.budget_available() < cap,
            "the rows not yet durable still hold budget"
        );
        assert_eq!(*durable_rx.borrow_and_update(), Lsn::ZERO);

        drop(feeder);
        task.await.unwrap().unwrap();
        assert_eq!(*batches.lock().unwrap(), vec![2, 2, 1]);
        assert_eq!(*durable_rx.borrow(), Lsn(101));
    }

    #[tokio::test]
    async fn budget_comes_back_whole_once_every_event_is_durable() {
        let Rig {
            feeder,
            cap,
            batches,
            task,
            ..
        } = rig(3, Duration::from_millis(10), None);
        for start in [0, 10, 20] {
            let mut parcel: Vec<Event> = (start..start + 7).map(row).collect();
            let bytes = parcel.iter().map(Event::data_bytes).sum();
            feeder.send_all(&mut parcel, bytes).await.unwrap();
        }
        feeder.send(row(99)).await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), async {
            while feeder.budget_available() != cap {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("every permit returns after the timed flush");
        assert_eq!(batches.lock().unwrap().iter().sum::<usize>(), 22);
        drop(feeder);
        task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_finished_snapshot_chunk_is_flushed_without_waiting_for_the_interval() {
        let (chunk_tx, mut chunk_rx) = mpsc::unbounded_channel();
        let Rig {
            feeder, batches, ..
        } = rig(1000, Duration::from_secs(3600), Some(chunk_tx));
        feeder.send(row(1)).await.unwrap();
        feeder
            .send(Event::ChunkDone {
                table: TableName::new("public", "t"),
                chunk: 3,
                rows: 1,
            })
            .await
            .unwrap();
        let done = tokio::time::timeout(Duration::from_secs(5), chunk_rx.recv())
            .await
            .expect("reported before the hour-long interval")
            .unwrap();
        assert_eq!(done.chunk, 3);
        assert_eq!(*batches.lock().unwrap(), vec![1]);
    }

    /// Fails every write while `failing` is set, and records when each attempt came.
    struct Flaky {
        failing: Arc<std::sync::atomic::AtomicBool>,
        attempts: Arc<std::sync::Mutex<Vec<Instant>>>,
        written: Arc<std::sync::Mutex<Vec<usize>>>,
    }

    impl Sink for Flaky {
        fn snapshot_encoders(&self) -> Arc<dyn crate::pipeline::sink::SnapshotEncoders> {
            Arc::new(crate::ndjson::NdjsonSnapshotEncoders)
        }

        async fn write_batch(&mut self, events: &[Event]) -> Result<(), SinkError> {
            self.attempts.lock().unwrap().push(Instant::now());
            if self.failing.load(Ordering::Relaxed) {
                return Err(SinkError::transient("HTTP 503"));
            }
            let rows = events.iter().filter(|e| e.is_change()).count();
            self.written.lock().unwrap().push(rows);
            Ok(())
        }
    }

    #[tokio::test]
    async fn an_open_circuit_holds_the_feeder_probes_at_its_pace_and_loses_nothing() {
        let policy = FlushPolicy {
            max_events: 1,
            max_bytes: 1 << 20,
            interval: Duration::from_millis(10),
        };
        let circuit = Arc::new(Circuit::default());
        let (feeder, rx) = channel(&policy, circuit.clone());
        let (_policy_tx, policy_rx) = watch::channel(policy);
        let (durable_tx, durable) = watch::channel(Lsn::ZERO);
        let failing = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let attempts = Arc::new(std::sync::Mutex::new(Vec::new()));
        let written = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = Flaky {
            failing: failing.clone(),
            attempts: attempts.clone(),
            written: written.clone(),
        };
        let circuit_policy = SinkCircuitPolicy {
            failures: 3,
            probe: Duration::from_millis(300),
        };
        let task = tokio::spawn(
            Batcher::new(
                sink,
                policy_rx,
                rx,
                durable_tx,
                Arc::new(Metrics::default()),
                circuit_policy,
                circuit.clone(),
            )
            .run(),
        );
        feeder.send(row(1)).await.unwrap();
        while !circuit.is_open() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            attempts.lock().unwrap().len(),
            3,
            "opened on the third failure"
        );

        // The next parcel waits at the gate, however long the outage lasts.
        let held = tokio::spawn({
            let feeder = feeder.clone();
            async move {
                feeder.send(row(2)).await.unwrap();
                let commit = Event::Commit {
                    commit_lsn: Lsn(100),
                    end_lsn: Lsn(101),
                    commit_time: 0,
                };
                feeder.send(commit).await.unwrap();
            }
        });
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(
            !held.is_finished(),
            "the feeder is held while the circuit is open"
        );
        let times = attempts.lock().unwrap().clone();
        let probes = times.len() - 3;
        assert!(
            (3..=5).contains(&probes),
            "one probe per 300 ms: {probes} in 1.5 s"
        );
        for pair in times[2..].windows(2) {
            let gap = pair[1] - pair[0];
            // exactly the probe interval: no jitter, no growth
            assert!(
                gap >= Duration::from_millis(300) && gap < Duration::from_millis(450),
                "probe gap {gap:?}"
            );
        }
        assert!(written.lock().unwrap().is_empty());

        // The first success closes it; the held parcel goes through and nothing is lost.
        failing.store(false, Ordering::Relaxed);
        tokio::time::timeout(Duration::from_secs(5), held)
            .await
            .expect("released once a probe succeeds")
            .unwrap();
        assert!(!circuit.is_open());
        assert_eq!(circuit.state().opened_total, 1);
        drop(feeder);
        task.await.unwrap().unwrap();
        assert_eq!(*written.lock().unwrap(), vec![1, 1]);
        assert_eq!(*durable.borrow(), Lsn(101));
    }
}
