//! Batching, the flush policy, backpressure, and the durable-LSN hand-off.
//!
//! ```text
//!  WAL reader ──Feeder::send──▶ [bounded channel + byte budget] ──▶ Batcher ──write_batch──▶ Sink
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

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::config::{FlushPolicy, TableName};
use crate::metrics::{Metrics, TableCounters};
use crate::pipeline::change::{Event, Op};
use crate::pipeline::sink::{ErrorKind, Sink, SinkError};
use crate::Lsn;

/// How far the server's position must be ahead of the durable LSN before an idle keepalive
/// moves the checkpoint (keeps a quiet database's slot from holding WAL, without a write per
/// keepalive).
pub const IDLE_CONFIRM_MIN_BYTES: u64 = 1024 * 1024;

/// Most envelopes the batcher takes from the channel per wake-up.
const RECV_AT_ONCE: usize = 256;

/// An event with the budget permits it holds until it is durable.
#[derive(Debug)]
pub struct Envelope {
    event: Event,
    permit: Option<OwnedSemaphorePermit>,
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
}

impl Feeder {
    /// Sends an event, waiting while the byte budget is spent (backpressure).
    pub async fn send(&self, event: Event) -> Result<(), PipelineClosed> {
        let need = self.permits_for(&event);
        let permit = self
            .budget
            .clone()
            .acquire_many_owned(need)
            .await
            .map_err(|_| PipelineClosed)?;
        self.tx
            .send(Envelope {
                event,
                permit: Some(permit),
            })
            .await
            .map_err(|_| PipelineClosed)
    }

    /// Sends an event only if that needs no waiting; returns whether it was sent.
    pub fn try_send(&self, event: Event) -> bool {
        let Ok(permit) = self
            .budget
            .clone()
            .try_acquire_many_owned(self.permits_for(&event))
        else {
            return false;
        };
        self.tx
            .try_send(Envelope {
                event,
                permit: Some(permit),
            })
            .is_ok()
    }

    fn permits_for(&self, event: &Event) -> u32 {
        u32::try_from(event.data_bytes())
            .unwrap_or(u32::MAX)
            .clamp(1, self.budget_cap)
    }

    /// Bytes of the budget currently free (for metrics and tests).
    pub fn budget_available(&self) -> usize {
        self.budget.available_permits()
    }
}

/// Creates the channel between the reader and the batcher, with an in-flight budget of
/// `2 × max_bytes` bytes.
pub fn channel(policy: &FlushPolicy) -> (Feeder, mpsc::Receiver<Envelope>) {
    let budget_cap = u32::try_from(policy.max_bytes.saturating_mul(2))
        .unwrap_or(u32::MAX)
        .min(Semaphore::MAX_PERMITS as u32);
    let (tx, rx) = mpsc::channel(16 * 1024);
    (
        Feeder {
            tx,
            budget: Arc::new(Semaphore::new(budget_cap as usize)),
            budget_cap,
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
    /// live from `policy`, so a reload applies to the next batch.
    pub fn new(
        sink: S,
        policy: watch::Receiver<FlushPolicy>,
        rx: mpsc::Receiver<Envelope>,
        durable: watch::Sender<Lsn>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Batcher {
            sink,
            policy,
            rx,
            durable,
            metrics,
            chunk_done: None,
        }
    }

    /// Reports durable snapshot chunks on `tx`.
    pub fn with_chunk_reports(mut self, tx: mpsc::UnboundedSender<ChunkDurable>) -> Self {
        self.chunk_done = Some(tx);
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
                        self.accept(&mut batch, env, &policy).await?;
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

    /// Adds one envelope to the batch, flushing when the batch is full.
    async fn accept(
        &mut self,
        batch: &mut Batch,
        env: Envelope,
        policy: &FlushPolicy,
    ) -> Result<(), SinkError> {
        if batch.events.is_empty() {
            // Nothing received before this marker is pending, so its position is durable.
            match env.event {
                Event::Commit { end_lsn, .. } => {
                    self.advance(end_lsn);
                    return Ok(());
                }
                Event::ChunkDone { .. } => {
                    self.report_chunk(&env.event);
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
        batch.push(env);
        if batch.changes >= policy.max_events || batch.bytes >= policy.max_bytes {
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
            let mut backoff = Duration::from_millis(200);
            loop {
                match self.sink.write_batch(&batch.events).await {
                    Ok(()) => break,
                    Err(e) if e.kind == ErrorKind::Transient => {
                        let wait = with_jitter(backoff);
                        tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "sink write failed, retrying");
                        tokio::time::sleep(wait).await;
                        backoff = (backoff * 2).min(Duration::from_secs(30));
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
    fn push(&mut self, env: Envelope) {
        self.changes += env.event.changes();
        if !matches!(
            env.event,
            Event::Commit { .. } | Event::Idle { .. } | Event::ChunkDone { .. }
        ) {
            self.needs_sink = true;
            self.oldest.get_or_insert_with(Instant::now);
        }
        self.bytes += env.event.data_bytes();
        self.events.push(env.event);
        match (&mut self.permit, env.permit) {
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

/// `base` plus up to 50 % random jitter, so that many jobs do not retry in lockstep.
fn with_jitter(base: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    base + base.mul_f64(f64::from(nanos % 1000) / 2000.0)
}
