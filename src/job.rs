//! The run state of the replication job and the commands that change it.
//!
//! The daemon owns the job; the control plane (gRPC, Prometheus, signals) only holds a
//! [`JobHandle`]: it reads state through watch channels and atomics and asks for changes
//! (pause, resume, new flush settings, drain) through watch channels the daemon observes. The hot
//! path never waits on control-plane state.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::config::{FlushPolicy, TableName};
use crate::metrics::Metrics;
use crate::pipeline::progress::Progress;
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
}

struct Shared {
    state: watch::Sender<JobState>,
    paused: watch::Sender<bool>,
    drain: watch::Sender<bool>,
    flush: watch::Sender<FlushPolicy>,
    metrics: Arc<Metrics>,
    progress: Arc<Progress>,
    slot: String,
    tables: Vec<TableName>,
}

/// Shared view of one job, cheap to clone.
#[derive(Clone)]
pub struct JobHandle(Arc<Shared>);

impl JobHandle {
    /// A handle for a job on `slot` replicating `tables` with the initial flush settings.
    pub fn new(slot: &str, tables: &[TableName], flush: FlushPolicy) -> Self {
        JobHandle(Arc::new(Shared {
            state: watch::Sender::new(JobState {
                stage: Stage::Init,
                run: RunState::Starting,
                detail: "Initializing".into(),
                error: None,
            }),
            paused: watch::Sender::new(false),
            drain: watch::Sender::new(false),
            flush: watch::Sender::new(flush),
            metrics: Arc::new(Metrics::default()),
            progress: Arc::new(Progress::default()),
            slot: slot.into(),
            tables: tables.to_vec(),
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

    /// The replication slot.
    pub fn slot_name(&self) -> &str {
        &self.0.slot
    }

    /// The replicated tables.
    pub fn tables(&self) -> &[TableName] {
        &self.0.tables
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

    /// Drains and waits until the job stopped; returns the confirmed LSN.
    pub async fn drain_and_stop(&self) -> Result<Lsn, ControlError> {
        let state = self.state().run;
        if matches!(state, RunState::Stopped | RunState::Failed) {
            return Err(ControlError::WrongState {
                action: "DrainAndStop",
                state,
            });
        }
        let mut rx = self.subscribe();
        self.request_drain();
        let _ = rx
            .wait_for(|s| matches!(s.run, RunState::Stopped | RunState::Failed))
            .await;
        Ok(self.confirmed_lsn())
    }

    // ---- used by the daemon ----

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
