//! Fault switches: the failures a Stream Load client must survive, injected on demand.
//!
//! Why: the hard cases for a CDC sink are the ambiguous ones (data committed but the answer
//! lost, delayed or wrong). Real StarRocks produces them rarely; the double produces them on
//! the next N loads of a chosen table, set at run time through the admin port.
//!
//! ```text
//! header phase   http_5xx · concurrency_limit · running_txn_limit · shutting_down
//!                stall_before_continue_ms
//! body           stall_body_read_ms · reject_rows
//! write          too_many_versions · mem_limit · delay_ms (before commit)
//! after commit   commit_then_drop · delay_ms{after_commit} · http_5xx{after_commit}
//!                publish_timeout · txn_status_unknown
//! ```

use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// The kind of a fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// The BE answers `status` (default 503) with no JSON; before anything, or after commit.
    #[serde(rename = "http_5xx")]
    Http5xx,
    /// Sleeps `ms` before replying: before the commit, or after it with `after_commit`.
    DelayMs,
    /// Same as `delay_ms` with `after_commit: true`.
    DelayAfterCommitMs,
    /// Applies and commits the load, then closes the socket without a response.
    CommitThenDrop,
    /// Commits and answers `Publish Timeout`; the label is COMMITTED, VISIBLE after
    /// `visible_after_ms` (default 1000).
    PublishTimeout,
    /// `Fail` "too many versions" after reading the body; nothing applied.
    TooManyVersions,
    /// `Fail` "Stream Load exceed http cuncurrent limit" in the header phase.
    ConcurrencyLimit,
    /// `Fail` "current running txns on db ... larger than limit" at begin.
    RunningTxnLimit,
    /// `Fail` "Service is shutting down" in the header phase.
    ShuttingDown,
    /// `Fail` "Transaction status unknown, you can retry with same label"; the load is
    /// committed unless `committed: false`.
    TxnStatusUnknown,
    /// Waits `ms` before sending `100 Continue`.
    StallBeforeContinueMs,
    /// Sends `100 Continue`, then waits `ms` before reading the body.
    StallBodyReadMs,
    /// Filters every `every`-th row (default every row) as a data-quality failure.
    RejectRows,
    /// `Fail` with the BE's memory-limit message after reading the body; nothing applied.
    /// `tracker`: `process` (default, the BE's process limit) or `load` (the load limit).
    MemLimit,
}

/// One fault as posted to `/admin/faults`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FaultSpec {
    pub kind: FaultKind,
    /// Only the next N loads (None: until cleared).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// Only loads into this table: `t` (any database) or `db.t`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ms: Option<u64>,
    #[serde(default)]
    pub after_commit: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub committed: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visible_after_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracker: Option<MemTracker>,
}

/// The memory tracker a `mem_limit` fault says was exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemTracker {
    Process,
    Load,
}

/// A fault in force.
#[derive(Debug, Clone, Serialize)]
pub struct ActiveFault {
    pub id: u64,
    #[serde(flatten)]
    pub spec: FaultSpec,
    /// Loads it has hit so far.
    pub fired: u64,
}

/// What the faults matching one load ask for.
#[derive(Debug, Clone, Default)]
pub struct Fired {
    pub http_5xx_before: Option<u16>,
    pub http_5xx_after_commit: Option<u16>,
    pub delay_before_commit_ms: u64,
    pub delay_after_commit_ms: u64,
    pub commit_then_drop: bool,
    pub publish_timeout_visible_after_ms: Option<u64>,
    pub too_many_versions: bool,
    pub concurrency_limit: bool,
    pub running_txn_limit: bool,
    pub shutting_down: bool,
    pub txn_status_unknown_committed: Option<bool>,
    pub stall_before_continue_ms: u64,
    pub stall_body_read_ms: u64,
    pub reject_every: Option<u64>,
    pub mem_limit: Option<MemTracker>,
    /// How many faults matched.
    pub count: u64,
}

/// The registry behind `/admin/faults`.
#[derive(Debug, Default)]
pub struct Faults {
    inner: Mutex<(u64, Vec<ActiveFault>)>,
}

fn table_matches(filter: &Option<String>, db: &str, table: &str) -> bool {
    match filter {
        None => true,
        Some(f) => match f.split_once('.') {
            Some((d, t)) => d == db && t == table,
            None => f == table,
        },
    }
}

impl Faults {
    /// Adds a fault; returns its id.
    pub fn add(&self, spec: FaultSpec) -> u64 {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.0 += 1;
        let id = g.0;
        g.1.push(ActiveFault { id, spec, fired: 0 });
        id
    }

    pub fn list(&self) -> Vec<ActiveFault> {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .clone()
    }

    pub fn clear(&self) {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .clear();
    }

    /// Removes one fault by id; false when unknown.
    pub fn remove(&self, id: u64) -> bool {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let before = g.1.len();
        g.1.retain(|f| f.id != id);
        g.1.len() != before
    }

    /// Takes the faults for one load into `db.table`, using up one of each one's count.
    pub fn take(&self, db: &str, table: &str) -> Fired {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut fired = Fired::default();
        for f in g.1.iter_mut() {
            if !table_matches(&f.spec.table, db, table) {
                continue;
            }
            f.fired += 1;
            fired.count += 1;
            let s = &f.spec;
            let ms = s.ms.unwrap_or(0);
            match s.kind {
                FaultKind::Http5xx if s.after_commit => {
                    fired.http_5xx_after_commit = Some(s.status.unwrap_or(503))
                }
                FaultKind::Http5xx => fired.http_5xx_before = Some(s.status.unwrap_or(503)),
                FaultKind::DelayMs if s.after_commit => fired.delay_after_commit_ms += ms,
                FaultKind::DelayMs => fired.delay_before_commit_ms += ms,
                FaultKind::DelayAfterCommitMs => fired.delay_after_commit_ms += ms,
                FaultKind::CommitThenDrop => fired.commit_then_drop = true,
                FaultKind::PublishTimeout => {
                    fired.publish_timeout_visible_after_ms =
                        Some(s.visible_after_ms.unwrap_or(1000))
                }
                FaultKind::TooManyVersions => fired.too_many_versions = true,
                FaultKind::ConcurrencyLimit => fired.concurrency_limit = true,
                FaultKind::RunningTxnLimit => fired.running_txn_limit = true,
                FaultKind::ShuttingDown => fired.shutting_down = true,
                FaultKind::TxnStatusUnknown => {
                    fired.txn_status_unknown_committed = Some(s.committed.unwrap_or(true))
                }
                FaultKind::StallBeforeContinueMs => fired.stall_before_continue_ms += ms,
                FaultKind::StallBodyReadMs => fired.stall_body_read_ms += ms,
                FaultKind::RejectRows => fired.reject_every = Some(s.every.unwrap_or(1).max(1)),
                FaultKind::MemLimit => {
                    fired.mem_limit = Some(s.tracker.unwrap_or(MemTracker::Process))
                }
            }
        }
        g.1.retain(|f| f.spec.count.is_none_or(|c| f.fired < c));
        fired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(kind: FaultKind) -> FaultSpec {
        FaultSpec {
            kind,
            count: None,
            table: None,
            status: None,
            ms: None,
            after_commit: false,
            committed: None,
            visible_after_ms: None,
            every: None,
            tracker: None,
        }
    }

    #[test]
    fn counted_fault_expires_after_n_loads() {
        let f = Faults::default();
        f.add(FaultSpec {
            count: Some(2),
            ..spec(FaultKind::TooManyVersions)
        });
        assert!(f.take("d", "t").too_many_versions);
        assert!(f.take("d", "t").too_many_versions);
        assert!(!f.take("d", "t").too_many_versions);
    }

    #[test]
    fn table_filter_matches_plain_and_qualified_names() {
        let f = Faults::default();
        f.add(FaultSpec {
            table: Some("d.orders".into()),
            ..spec(FaultKind::CommitThenDrop)
        });
        assert!(!f.take("d", "users").commit_then_drop);
        assert!(!f.take("e", "orders").commit_then_drop);
        assert!(f.take("d", "orders").commit_then_drop);
    }

    #[test]
    fn http_5xx_defaults_to_503_and_can_follow_the_commit() {
        let f = Faults::default();
        f.add(FaultSpec {
            after_commit: true,
            status: Some(500),
            ..spec(FaultKind::Http5xx)
        });
        let fired = f.take("d", "t");
        assert_eq!(fired.http_5xx_after_commit, Some(500));
        assert_eq!(fired.http_5xx_before, None);
    }
}
