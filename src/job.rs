//! The run state of the replication job and the commands that change it.
//!
//! The daemon owns the job; the control plane (gRPC, Prometheus, signals) only holds a
//! [`JobHandle`]: it reads state through watch channels and atomics and asks for changes
//! (pause, resume, new flush settings, drain) through watch channels the daemon observes. The hot
//! path never waits on control-plane state.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::config::{
    FlushPolicy, TableName, DEFAULT_HEALTH_SINK_STALL_MS, DEFAULT_SHUTDOWN_TIMEOUT_MS,
};
use crate::metrics::Metrics;
use crate::pipeline::circuit::Circuit;
use crate::pipeline::progress::Progress;
use crate::postgres::slot_health::{SlotAlarm, SlotView};
use crate::Lsn;

/// Lifecycle stage, as Health reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Starting up.
    Init,
    /// Checking and preparing PostgreSQL (and the sink).
    Setup,
    /// Copying existing rows.
    Snapshot,
    /// Streaming changes.
    Cdc,
}

/// What the job is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunState {
    /// Connecting and setting up.
    Starting,
    /// Streaming.
    Running,
    /// Paused by request: everything received was flushed and confirmed, and the replication
    /// connection is closed (so neither `wal_sender_timeout` nor a PostgreSQL shutdown can be
    /// held up by the pause); PostgreSQL keeps the WAL for the slot.
    Paused,
    /// Flushing, checkpointing and confirming before stopping.
    Draining,
    /// Stopped cleanly.
    Stopped,
    /// Stopped by a definite error (see `error`).
    Failed,
}

/// A snapshot of the job's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobState {
    /// Lifecycle stage.
    pub stage: Stage,
    /// Run state.
    pub run: RunState,
    /// Human-readable stage detail, e.g. "Replicating".
    pub detail: String,
    /// The last error, with what to do about it: set when `run` is `Failed`, and while a
    /// transient error is being retried.
    pub error: Option<String>,
}

/// A control request that does not fit the current state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// The request needs another run state.
    #[error("{action} is not possible while the job is {state:?}")]
    WrongState {
        /// What was asked.
        action: &'static str,
        /// The state it was asked in.
        state: RunState,
    },
    /// An argument is out of range.
    #[error("{0}")]
    InvalidArgument(String),
    /// A drain did not finish in time; the process exits without confirming the rest.
    #[error(
        "the drain did not finish within {timeout_ms} ms: {waiting_on}. Changes received up to \
         {received} are not all durable; only those up to {confirmed} are confirmed to \
         PostgreSQL. dbmazz exits without confirming more, and PostgreSQL sends everything after \
         {confirmed} again when it restarts"
    )]
    DrainTimeout {
        /// The bound that expired.
        timeout_ms: u64,
        /// What the job was waiting for.
        waiting_on: String,
        /// Highest WAL position received.
        received: Lsn,
        /// Highest LSN checkpointed and confirmed.
        confirmed: Lsn,
    },
}

/// What Health reports: the job's state, turned `NOT_SERVING` while the job retries a failure,
/// while the sink's circuit is open, while the sink has held a batch past
/// `HEALTH_SINK_STALL_MS`, or while the slot is `unreserved` or invalidated; a slot at risk
/// keeps `SERVING` with the reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthReport {
    /// Whether orchestration should consider the job healthy.
    pub serving: bool,
    /// Lifecycle stage.
    pub stage: Stage,
    /// Human-readable state, e.g. "Replicating", "Retrying", "Sink unavailable", "Sink stalled".
    pub detail: String,
    /// Why it is not serving, and what to do.
    pub error: Option<String>,
}

/// The source tables as setup read them: what a dead-letter replay needs to read and encode
/// their rows.
#[derive(Debug, Default)]
pub struct SourceCatalog {
    /// The replicated tables.
    pub tables: Vec<crate::pipeline::change::TableCatalog>,
    /// JSON treatment of their non-built-in column types.
    pub types: std::collections::HashMap<u32, crate::value::ValueKind>,
}

struct Shared {
    state: watch::Sender<JobState>,
    /// The source tables, once setup read them.
    catalog: std::sync::Mutex<Option<Arc<SourceCatalog>>>,
    /// Set when a bounded drain gave up: the process exits without confirming more.
    abandoned: watch::Sender<bool>,
    /// `HEALTH_SINK_STALL_MS` (0: never).
    sink_stall_ms: AtomicU64,
    /// `SHUTDOWN_TIMEOUT_MS` (0: no bound).
    shutdown_timeout_ms: AtomicU64,
    paused: watch::Sender<bool>,
    drain: watch::Sender<bool>,
    /// The slot as the slot monitor last saw it.
    slot_view: watch::Sender<SlotView>,
    flush: watch::Sender<FlushPolicy>,
    metrics: Arc<Metrics>,
    progress: Arc<Progress>,
    circuit: Arc<Circuit>,
    slot: String,
    tables: std::sync::Mutex<Vec<TableName>>,
}

/// Shared view of one job, cheap to clone.
#[derive(Clone)]
pub struct JobHandle(Arc<Shared>);

impl JobHandle {
    /// A handle for a job on `slot` replicating `tables` with the initial flush settings.
    pub fn new(slot: &str, tables: &[TableName], flush: FlushPolicy) -> Self {
        JobHandle(Arc::new(Shared {
            catalog: std::sync::Mutex::new(None),
            state: watch::Sender::new(JobState {
                stage: Stage::Init,
                run: RunState::Starting,
                detail: "Initializing".into(),
                error: None,
            }),
            abandoned: watch::Sender::new(false),
            sink_stall_ms: AtomicU64::new(DEFAULT_HEALTH_SINK_STALL_MS),
            shutdown_timeout_ms: AtomicU64::new(DEFAULT_SHUTDOWN_TIMEOUT_MS),
            paused: watch::Sender::new(false),
            drain: watch::Sender::new(false),
            slot_view: watch::Sender::new(SlotView::default()),
            flush: watch::Sender::new(flush),
            metrics: Arc::new(Metrics::default()),
            progress: Arc::new(Progress::default()),
            circuit: Arc::new(Circuit::default()),
            slot: slot.into(),
            tables: std::sync::Mutex::new(tables.to_vec()),
        }))
    }

    /// The current state.
    pub fn state(&self) -> JobState {
        self.0.state.borrow().clone()
    }

    /// A receiver that sees every state change.
    pub fn subscribe(&self) -> watch::Receiver<JobState> {
        self.0.state.subscribe()
    }

    /// The job's counters.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.0.metrics
    }

    /// WAL positions: received and confirmed.
    pub fn progress(&self) -> &Arc<Progress> {
        &self.0.progress
    }

    /// The sink's circuit breaker: open or closed, since when, failures in a row.
    pub fn circuit(&self) -> &Arc<Circuit> {
        &self.0.circuit
    }

    /// The replication slot.
    pub fn slot_name(&self) -> &str {
        &self.0.slot
    }

    /// The replicated tables: `TABLES`' names, plus the tables its patterns matched once setup
    /// found them.
    pub fn tables(&self) -> Vec<TableName> {
        self.0.tables.lock().map(|t| t.clone()).unwrap_or_default()
    }

    /// Records the tables setup resolved.
    pub fn set_tables(&self, tables: Vec<TableName>) {
        if let Ok(mut t) = self.0.tables.lock() {
            *t = tables;
        }
    }

    /// Highest WAL position received.
    pub fn received_lsn(&self) -> Lsn {
        Lsn(self
            .0
            .progress
            .received
            .load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Highest LSN checkpointed and confirmed to PostgreSQL.
    pub fn confirmed_lsn(&self) -> Lsn {
        Lsn(self
            .0
            .progress
            .confirmed
            .load(std::sync::atomic::Ordering::Relaxed))
    }

    /// The flush settings in force.
    pub fn flush_policy(&self) -> FlushPolicy {
        *self.0.flush.borrow()
    }

    /// Stops consuming: flushes and confirms what was received, then closes the replication
    /// connection until [`resume`](Self::resume).
    pub fn pause(&self) -> Result<(), ControlError> {
        let state = self.state().run;
        if state != RunState::Running {
            return Err(ControlError::WrongState {
                action: "Pause",
                state,
            });
        }
        self.0.paused.send_replace(true);
        Ok(())
    }

    /// Resumes after a pause.
    pub fn resume(&self) -> Result<(), ControlError> {
        let state = self.state().run;
        if !*self.0.paused.borrow() || matches!(state, RunState::Draining | RunState::Stopped) {
            return Err(ControlError::WrongState {
                action: "Resume",
                state,
            });
        }
        self.0.paused.send_replace(false);
        Ok(())
    }

    /// Applies new flush settings live; `None` keeps a setting. Returns what is now in force.
    pub fn reload(
        &self,
        flush_size: Option<u64>,
        flush_interval_ms: Option<u64>,
    ) -> Result<FlushPolicy, ControlError> {
        let mut policy = self.flush_policy();
        if let Some(size) = flush_size {
            if !(1..=10_000_000).contains(&size) {
                return Err(ControlError::InvalidArgument(format!(
                    "flush_size {size} is out of range; expected 1 to 10000000"
                )));
            }
            policy.max_events = size as usize;
        }
        if let Some(ms) = flush_interval_ms {
            if !(1..=3_600_000).contains(&ms) {
                return Err(ControlError::InvalidArgument(format!(
                    "flush_interval_ms {ms} is out of range; expected 1 to 3600000"
                )));
            }
            policy.interval = Duration::from_millis(ms);
        }
        self.0.flush.send_replace(policy);
        Ok(policy)
    }

    /// Asks the job to flush, checkpoint, confirm and stop.
    pub fn request_drain(&self) {
        self.0.drain.send_replace(true);
    }

    /// Drains and waits until the job stopped; returns the confirmed LSN. With a non-zero
    /// `timeout`, gives up when it expires: the job is then [abandoned](Self::abandoned) (the
    /// process exits without confirming more) and the error says what was not durable.
    pub async fn drain_and_stop(&self, timeout: Duration) -> Result<Lsn, ControlError> {
        let state = self.state().run;
        if matches!(state, RunState::Stopped | RunState::Failed) {
            return Err(ControlError::WrongState {
                action: "DrainAndStop",
                state,
            });
        }
        let mut rx = self.subscribe();
        self.request_drain();
        let stopped = rx.wait_for(|s| matches!(s.run, RunState::Stopped | RunState::Failed));
        if timeout.is_zero() {
            let _ = stopped.await;
        } else if tokio::time::timeout(timeout, stopped).await.is_err() {
            let err = ControlError::DrainTimeout {
                timeout_ms: timeout.as_millis() as u64,
                waiting_on: self.waiting_on(),
                received: self.received_lsn(),
                confirmed: self.confirmed_lsn(),
            };
            tracing::error!(error = %err, "giving up the drain");
            self.0.abandoned.send_replace(true);
            return Err(err);
        }
        Ok(self.confirmed_lsn())
    }

    /// Turns true when a bounded drain gave up; the process then exits at once.
    pub fn abandoned(&self) -> watch::Receiver<bool> {
        self.0.abandoned.subscribe()
    }

    /// Sets `HEALTH_SINK_STALL_MS` (zero: the sink never turns Health `NOT_SERVING` by itself).
    pub fn set_sink_stall_after(&self, after: Duration) {
        self.0
            .sink_stall_ms
            .store(after.as_millis() as u64, Ordering::Relaxed);
    }

    /// Sets `SHUTDOWN_TIMEOUT_MS`, the bound of a drain that names none (zero: no bound).
    pub fn set_shutdown_timeout(&self, timeout: Duration) {
        self.0
            .shutdown_timeout_ms
            .store(timeout.as_millis() as u64, Ordering::Relaxed);
    }

    /// `SHUTDOWN_TIMEOUT_MS`.
    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_millis(self.0.shutdown_timeout_ms.load(Ordering::Relaxed))
    }

    /// The slot as last polled, with its classification.
    pub fn slot_view(&self) -> SlotView {
        self.0.slot_view.borrow().clone()
    }

    /// Records a poll of the slot (the slot monitor does this).
    pub fn report_slot(&self, view: SlotView) {
        self.0.slot_view.send_replace(view);
    }

    /// A receiver that sees every poll of the slot (the daemon fails the job on an
    /// invalidated slot).
    pub fn slot_views(&self) -> watch::Receiver<SlotView> {
        self.0.slot_view.subscribe()
    }

    /// What Health reports now.
    pub fn health(&self) -> HealthReport {
        self.health_at(crate::metrics::now_unix_us())
    }

    /// What Health reports at `now_us` (µs since the Unix epoch).
    pub fn health_at(&self, now_us: i64) -> HealthReport {
        let s = self.state();
        // A transient failure being retried: the source or the sink is unreachable, and
        // nothing moves until a retry gets through.
        let retrying = s.run == RunState::Starting && s.error.is_some();
        let serving = !matches!(s.run, RunState::Failed | RunState::Stopped) && !retrying;
        let alarm = self.0.slot_view.borrow().alarm.clone();
        if serving {
            // PostgreSQL is about to take the slot's WAL away (or did): nothing dbmazz does by
            // itself fixes that, so orchestration must see it.
            let urgent = match &alarm {
                SlotAlarm::Unreserved(why) => Some(("Slot about to be invalidated", why.clone())),
                SlotAlarm::Invalidated(why) => Some(("Slot invalidated", why.clone())),
                _ => None,
            };
            if let Some((detail, why)) = urgent {
                return HealthReport {
                    serving: false,
                    stage: s.stage,
                    detail: detail.into(),
                    error: Some(why),
                };
            }
        }
        if serving && matches!(s.run, RunState::Running | RunState::Draining) {
            let circuit = self.0.circuit.state();
            if circuit.open {
                let error = self.0.metrics.sink_waiting(now_us).and_then(|(_, e)| e);
                let open_for = now_us.saturating_sub(circuit.opened_at_unix_us).max(0) / 1_000_000;
                return HealthReport {
                    serving: false,
                    stage: s.stage,
                    detail: "Sink unavailable".into(),
                    error: Some(format!(
                        "the sink's circuit has been open since {} ({open_for} s) after {} \
                         failed loads in a row (SINK_CIRCUIT_FAILURES={}); last error: {}. \
                         dbmazz stopped reading from PostgreSQL (the slot keeps the changes, \
                         status updates keep the connection up), retries the pending batch every \
                         {} ms (SINK_CIRCUIT_PROBE_MS) and resumes by itself after the first \
                         success; check that the sink is reachable and accepts loads",
                        crate::metrics::utc_text(circuit.opened_at_unix_us),
                        circuit.consecutive_failures,
                        circuit.threshold,
                        error.as_deref().unwrap_or("no answer"),
                        circuit.probe.as_millis(),
                    )),
                };
            }
            let limit = Duration::from_millis(self.0.sink_stall_ms.load(Ordering::Relaxed));
            if let Some((waited, error)) = self.0.metrics.sink_waiting(now_us) {
                if !limit.is_zero() && waited >= limit {
                    return HealthReport {
                        serving: false,
                        stage: s.stage,
                        detail: "Sink stalled".into(),
                        error: Some(format!(
                            "the sink has not made a batch durable for {} s \
                             (HEALTH_SINK_STALL_MS={}): {}; dbmazz keeps retrying and Health \
                             turns SERVING once the batch is durable; check that the sink is \
                             reachable and accepts loads",
                            waited.as_secs(),
                            limit.as_millis(),
                            error.as_deref().unwrap_or("no answer yet"),
                        )),
                    };
                }
            }
        }
        if let (true, None, SlotAlarm::AtRisk(why)) = (serving, &s.error, alarm) {
            // Degraded but working: restarting would not help, so Health stays SERVING.
            return HealthReport {
                serving,
                stage: s.stage,
                detail: format!("{} (slot at risk)", s.detail),
                error: Some(why),
            };
        }
        HealthReport {
            serving,
            stage: s.stage,
            detail: s.detail,
            error: s.error,
        }
    }

    /// What a drain that does not finish is waiting for, in words.
    fn waiting_on(&self) -> String {
        let now = crate::metrics::now_unix_us();
        if let Some((waited, error)) = self.0.metrics.sink_waiting(now) {
            return format!(
                "the sink has not made the last batch durable for {} s ({})",
                waited.as_secs(),
                error.as_deref().unwrap_or("no answer yet")
            );
        }
        let s = self.state();
        match s.error {
            Some(e) => format!("the job is {} ({e})", s.detail),
            None => format!(
                "the job is {} (flushing, checkpointing and confirming to PostgreSQL)",
                s.detail
            ),
        }
    }

    /// The source tables as setup last read them (`None` before setup).
    pub fn source_catalog(&self) -> Option<Arc<SourceCatalog>> {
        self.0.catalog.lock().ok().and_then(|c| c.clone())
    }

    // ---- used by the daemon ----

    /// Records the source tables setup read.
    pub(crate) fn set_source_catalog(&self, catalog: SourceCatalog) {
        if let Ok(mut c) = self.0.catalog.lock() {
            *c = Some(Arc::new(catalog));
        }
    }

    /// Updates the state.
    pub(crate) fn set_state(
        &self,
        stage: Stage,
        run: RunState,
        detail: &str,
        error: Option<String>,
    ) {
        self.0.state.send_replace(JobState {
            stage,
            run,
            detail: detail.into(),
            error,
        });
    }

    /// Watches pause requests.
    pub(crate) fn paused(&self) -> watch::Receiver<bool> {
        self.0.paused.subscribe()
    }

    /// Watches drain requests.
    pub(crate) fn drain(&self) -> watch::Receiver<bool> {
        self.0.drain.subscribe()
    }

    /// Watches flush settings.
    pub(crate) fn flush(&self) -> watch::Receiver<FlushPolicy> {
        self.0.flush.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handle() -> JobHandle {
        JobHandle::new(
            "s",
            &[],
            FlushPolicy {
                max_events: 1500,
                max_bytes: 1 << 20,
                interval: Duration::from_secs(5),
            },
        )
    }

    #[test]
    fn pause_needs_a_running_job_and_resume_a_paused_one() {
        let h = handle();
        assert!(matches!(h.pause(), Err(ControlError::WrongState { .. })));
        h.set_state(Stage::Cdc, RunState::Running, "Replicating", None);
        assert!(matches!(h.resume(), Err(ControlError::WrongState { .. })));
        h.pause().unwrap();
        assert!(*h.paused().borrow());
        h.resume().unwrap();
        assert!(!*h.paused().borrow());
    }

    #[test]
    fn an_open_circuit_turns_health_not_serving_with_since_when_and_what_to_do() {
        use crate::config::SinkCircuitPolicy;
        use crate::pipeline::circuit::Breaker;
        let h = handle();
        h.set_state(Stage::Cdc, RunState::Running, "Replicating", None);
        let policy = SinkCircuitPolicy {
            failures: 2,
            probe: Duration::from_millis(3000),
        };
        let mut breaker = Breaker::new(policy, h.circuit().clone());
        h.metrics().sink_write_started();
        let opened = crate::metrics::now_unix_us();
        h.metrics().sink_write_failed("HTTP 503 from the BE".into());
        breaker.failed(opened - 1_000_000);
        assert!(h.health_at(opened).serving, "one failure is a retry");
        breaker.failed(opened);
        // 42 s: before HEALTH_SINK_STALL_MS (60 s) would call it a stall.
        let r = h.health_at(opened + 42_000_000);
        assert!(!r.serving);
        assert_eq!(r.detail, "Sink unavailable");
        let why = r.error.unwrap();
        let since = format!("since {} (42 s)", crate::metrics::utc_text(opened));
        for part in [
            since.as_str(),
            "2 failed loads in a row (SINK_CIRCUIT_FAILURES=2)",
            "last error: HTTP 503 from the BE",
            "every 3000 ms (SINK_CIRCUIT_PROBE_MS)",
            "stopped reading from PostgreSQL",
        ] {
            assert!(why.contains(part), "{part:?} in {why}");
        }
        breaker.succeeded(opened + 50_000_000);
        h.metrics().sink_write_ended();
        let r = h.health_at(opened + 50_000_000);
        assert!(r.serving);
        assert_eq!(r.detail, "Replicating");
    }

    #[test]
    fn reload_validates_and_reports_what_is_in_force() {
        let h = handle();
        let p = h.reload(Some(10), None).unwrap();
        assert_eq!(p.max_events, 10);
        assert_eq!(p.interval, Duration::from_secs(5));
        assert!(h.reload(Some(0), None).is_err());
        assert!(h.reload(None, Some(0)).is_err());
        assert_eq!(h.flush_policy().max_events, 10);
    }
}
