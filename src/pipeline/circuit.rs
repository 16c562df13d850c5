//! The sink's circuit breaker: after `SINK_CIRCUIT_FAILURES` failed loads in a row, stop
//! reading from the source and probe the sink at a fixed pace until it answers again.
//!
//! ```text
//!            failure (n < threshold): back off 200 ms, doubling, jittered
//!          ┌──────┐
//!          ▼      │        n = threshold                     probe fails: wait SINK_CIRCUIT_PROBE_MS
//!      ┌────────┐ │   ┌─────────────────────────┐          ┌──────┐
//!  ───▶│ closed │─┴──▶│ open: the Feeder gate   │──────────┤      ▼
//!      └────────┘     │ holds the reader; one   │◀─────────┘ (no further growth)
//!          ▲          │ probe per interval      │
//!          │          └─────────────────────────┘
//!          └──────────── first success: close, reading resumes
//! ```
//!
//! Why stop reading at all, when the byte budget already stops the reader once the pipeline is
//! full? Because a sink that is down is not a sink that is slow: while it is down nothing the
//! reader takes can become durable, so reading on only fills the budget (up to twice
//! `FLUSH_MAX_BYTES` of memory) for nothing, and the operator gets no clear signal. With the
//! circuit open the reader stops at its next parcel, Health says "Sink unavailable" and since
//! when, and the changes wait where they are safe anyway: in the slot. The status task keeps
//! sending standby status updates on its own timer throughout, so PostgreSQL's
//! `wal_sender_timeout` never ends the connection, and nothing is confirmed past what is durable.
//!
//! The probe is the retry of the batch the sink is holding, nothing else: it is the only load
//! that can go first without breaking the order of one table's loads, and its labels make a
//! retry that had in fact committed harmless.
//!
//! The state machine ([`Breaker`]) is owned by the batcher and reads no clock, so its counting
//! and cadence are unit-tested; what it decides is published in a [`Circuit`] that the
//! [`Feeder`](super::batcher::Feeder) checks once per parcel (one relaxed atomic load when
//! closed) and that Health, Prometheus and GetStatus read.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::config::SinkCircuitPolicy;

/// First wait after a failed load while the circuit is closed.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// Longest wait between two attempts while the circuit is closed (and the only cap when the
/// breaker is off).
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The circuit's state as the rest of the job sees it: the reader's gate, and the figures that
/// Health, Prometheus and GetStatus report. Shared by every run of the job.
#[derive(Debug)]
pub struct Circuit {
    open: AtomicBool,
    /// Wakes a reader held at the gate when the circuit closes.
    changes: watch::Sender<bool>,
    /// When it last opened (µs since the Unix epoch); 0 while closed.
    opened_at_unix_us: AtomicI64,
    /// How often it opened since the process started.
    opened_total: AtomicU64,
    /// Failed loads in a row of the outstanding batch.
    consecutive_failures: AtomicU64,
    /// The settings in force, for Health's message.
    threshold: AtomicU64,
    probe_ms: AtomicU64,
}

impl Default for Circuit {
    fn default() -> Self {
        Circuit {
            open: AtomicBool::new(false),
            changes: watch::Sender::new(false),
            opened_at_unix_us: AtomicI64::new(0),
            opened_total: AtomicU64::new(0),
            consecutive_failures: AtomicU64::new(0),
            threshold: AtomicU64::new(0),
            probe_ms: AtomicU64::new(0),
        }
    }
}

/// A reading of a [`Circuit`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CircuitState {
    /// Whether the circuit is open (the reader is held, loads are probes).
    pub open: bool,
    /// When it opened (µs since the Unix epoch); 0 while closed.
    pub opened_at_unix_us: i64,
    /// How often it opened since the process started.
    pub opened_total: u64,
    /// Failed loads in a row of the outstanding batch (0 when the last load succeeded).
    pub consecutive_failures: u64,
    /// `SINK_CIRCUIT_FAILURES` in force.
    pub threshold: u64,
    /// `SINK_CIRCUIT_PROBE_MS` in force.
    pub probe: Duration,
}

impl Circuit {
    /// Whether the circuit is open. One relaxed load: this is what the hot path pays.
    #[inline]
    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::Relaxed)
    }

    /// Returns once the circuit is closed (at once when it is).
    pub async fn wait_closed(&self) {
        let mut rx = self.changes.subscribe();
        // The sender lives in `self`, so this cannot fail while we borrow it.
        let _ = rx.wait_for(|open| !*open).await;
    }

    /// The current figures.
    pub fn state(&self) -> CircuitState {
        let open = self.is_open();
        CircuitState {
            open,
            opened_at_unix_us: if open {
                self.opened_at_unix_us.load(Ordering::Relaxed)
            } else {
                0
            },
            opened_total: self.opened_total.load(Ordering::Relaxed),
            consecutive_failures: self.consecutive_failures.load(Ordering::Relaxed),
            threshold: self.threshold.load(Ordering::Relaxed),
            probe: Duration::from_millis(self.probe_ms.load(Ordering::Relaxed)),
        }
    }

    fn configure(&self, policy: &SinkCircuitPolicy) {
        self.threshold
            .store(u64::from(policy.failures), Ordering::Relaxed);
        self.probe_ms
            .store(policy.probe.as_millis() as u64, Ordering::Relaxed);
    }

    fn set_failures(&self, n: u32) {
        self.consecutive_failures
            .store(u64::from(n), Ordering::Relaxed);
    }

    fn set_open(&self, now_unix_us: i64) {
        self.opened_at_unix_us.store(now_unix_us, Ordering::Relaxed);
        self.opened_total.fetch_add(1, Ordering::Relaxed);
        self.open.store(true, Ordering::Relaxed);
        self.changes.send_replace(true);
    }

    fn set_closed(&self) {
        self.open.store(false, Ordering::Relaxed);
        self.opened_at_unix_us.store(0, Ordering::Relaxed);
        self.changes.send_replace(false);
    }
}

/// What to do after a failed load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// The circuit is closed: retry after this wait (before jitter).
    Backoff(Duration),
    /// The circuit is open: the next attempt is a probe, after exactly this wait.
    Probe(Duration),
}

/// The breaker's answer to a failed load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Failure {
    /// When and how to try again.
    pub retry: Retry,
    /// This failure opened the circuit.
    pub opened: bool,
    /// Failed loads in a row, this one included.
    pub consecutive: u32,
}

/// The breaker's answer to a successful load that closed the circuit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Closed {
    /// Failed loads in a row before this success.
    pub failures: u32,
    /// How long it was open.
    pub open_for: Duration,
}

/// The state machine: counts failed loads in a row, decides the waits, and opens and closes the
/// [`Circuit`]. Owned by the batcher; dropping it closes the circuit (a run that ends releases
/// the reader of the next one).
#[derive(Debug)]
pub struct Breaker {
    policy: SinkCircuitPolicy,
    circuit: Arc<Circuit>,
    failures: u32,
    backoff: Duration,
    /// When it opened (µs since the Unix epoch), while open.
    opened_at: Option<i64>,
}

impl Breaker {
    /// A closed breaker publishing into `circuit`.
    pub fn new(policy: SinkCircuitPolicy, circuit: Arc<Circuit>) -> Self {
        circuit.configure(&policy);
        circuit.set_failures(0);
        if circuit.is_open() {
            circuit.set_closed();
        }
        Breaker {
            policy,
            circuit,
            failures: 0,
            backoff: FIRST_BACKOFF,
            opened_at: None,
        }
    }

    /// Whether the circuit is open.
    pub fn is_open(&self) -> bool {
        self.opened_at.is_some()
    }

    /// Records a failed load at `now_unix_us` and says when to try again.
    pub fn failed(&mut self, now_unix_us: i64) -> Failure {
        self.failures = self.failures.saturating_add(1);
        self.circuit.set_failures(self.failures);
        if self.opened_at.is_some() {
            return Failure {
                retry: Retry::Probe(self.policy.probe),
                opened: false,
                consecutive: self.failures,
            };
        }
        if self.policy.failures > 0 && self.failures >= self.policy.failures {
            self.opened_at = Some(now_unix_us);
            self.circuit.set_open(now_unix_us);
            return Failure {
                retry: Retry::Probe(self.policy.probe),
                opened: true,
                consecutive: self.failures,
            };
        }
        let wait = self.backoff;
        self.backoff = (self.backoff * 2).min(self.max_backoff());
        Failure {
            retry: Retry::Backoff(wait),
            opened: false,
            consecutive: self.failures,
        }
    }

    /// Records a successful load at `now_unix_us`; says so when it closed the circuit.
    #[inline]
    pub fn succeeded(&mut self, now_unix_us: i64) -> Option<Closed> {
        if self.failures == 0 {
            return None;
        }
        let failures = std::mem::take(&mut self.failures);
        self.backoff = FIRST_BACKOFF;
        self.circuit.set_failures(0);
        let opened_at = self.opened_at.take()?;
        self.circuit.set_closed();
        Some(Closed {
            failures,
            open_for: Duration::from_micros(now_unix_us.saturating_sub(opened_at).max(0) as u64),
        })
    }

    /// While closed, waits grow to 30 s, but never past the probe interval: an open circuit
    /// must not retry more often than the closed one did.
    fn max_backoff(&self) -> Duration {
        if self.policy.failures == 0 {
            MAX_BACKOFF
        } else {
            MAX_BACKOFF.min(self.policy.probe).max(FIRST_BACKOFF)
        }
    }
}

impl Drop for Breaker {
    fn drop(&mut self) {
        self.circuit.set_failures(0);
        if self.opened_at.is_some() {
            self.circuit.set_closed();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(failures: u32, probe_ms: u64) -> SinkCircuitPolicy {
        SinkCircuitPolicy {
            failures,
            probe: Duration::from_millis(probe_ms),
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn opens_after_the_threshold_of_consecutive_failures_and_then_only_probes() {
        let circuit = Arc::new(Circuit::default());
        let mut b = Breaker::new(policy(5, 10_000), circuit.clone());
        let waits: Vec<Retry> = (0..4).map(|i| b.failed(i).retry).collect();
        assert_eq!(
            waits,
            vec![
                Retry::Backoff(ms(200)),
                Retry::Backoff(ms(400)),
                Retry::Backoff(ms(800)),
                Retry::Backoff(ms(1600)),
            ]
        );
        assert!(!circuit.is_open(), "four failures do not open it");
        assert_eq!(circuit.state().consecutive_failures, 4);

        let fifth = b.failed(5_000_000);
        assert_eq!(
            fifth,
            Failure {
                retry: Retry::Probe(ms(10_000)),
                opened: true,
                consecutive: 5
            }
        );
        let s = circuit.state();
        assert!(s.open && b.is_open());
        assert_eq!(
            (s.opened_at_unix_us, s.opened_total, s.threshold, s.probe),
            (5_000_000, 1, 5, ms(10_000))
        );
        // Probe cadence: a fixed interval, no growth, no second opening.
        for n in 6..40 {
            let f = b.failed(n * 10_000_000);
            assert_eq!(f.retry, Retry::Probe(ms(10_000)), "failure {n}");
            assert!(!f.opened);
        }
        assert_eq!(circuit.state().opened_total, 1);
        assert_eq!(circuit.state().opened_at_unix_us, 5_000_000);
    }

    #[test]
    fn a_success_resets_the_count_so_only_failures_in_a_row_open_it() {
        let circuit = Arc::new(Circuit::default());
        let mut b = Breaker::new(policy(3, 1000), circuit.clone());
        for round in 0..5 {
            assert_eq!(b.failed(round).retry, Retry::Backoff(ms(200)));
            assert_eq!(b.failed(round).retry, Retry::Backoff(ms(400)));
            assert_eq!(b.succeeded(round), None, "closed: nothing to report");
            assert_eq!(circuit.state().consecutive_failures, 0);
        }
        assert!(!circuit.is_open());
        assert_eq!(circuit.state().opened_total, 0);
        assert_eq!(b.succeeded(0), None);
    }

    #[test]
    fn the_first_success_closes_it_and_a_new_outage_counts_from_zero() {
        let circuit = Arc::new(Circuit::default());
        let mut b = Breaker::new(policy(2, 5000), circuit.clone());
        b.failed(0);
        assert!(b.failed(1_000_000).opened);
        b.failed(6_000_000);
        assert_eq!(
            b.succeeded(9_000_000),
            Some(Closed {
                failures: 3,
                open_for: Duration::from_secs(8)
            })
        );
        let s = circuit.state();
        assert!(!s.open && !b.is_open());
        assert_eq!((s.opened_at_unix_us, s.consecutive_failures), (0, 0));
        // The backoff starts over too.
        assert_eq!(b.failed(10_000_000).retry, Retry::Backoff(ms(200)));
        assert!(b.failed(11_000_000).opened);
        assert_eq!(circuit.state().opened_total, 2);
    }

    #[test]
    fn closed_backoff_never_exceeds_the_probe_interval_nor_30_s() {
        let circuit = Arc::new(Circuit::default());
        let mut b = Breaker::new(policy(100, 1000), circuit.clone());
        let waits: Vec<Retry> = (0..6).map(|i| b.failed(i).retry).collect();
        assert_eq!(
            waits,
            [200, 400, 800, 1000, 1000, 1000].map(|n| Retry::Backoff(ms(n)))
        );
        let mut off = Breaker::new(policy(0, 1000), circuit.clone());
        let last = (0..20).map(|i| off.failed(i).retry).last().unwrap();
        assert_eq!(last, Retry::Backoff(MAX_BACKOFF), "0 turns the breaker off");
        assert!(!circuit.is_open());
    }

    #[tokio::test]
    async fn the_gate_holds_until_closed_and_dropping_the_breaker_releases_it() {
        let circuit = Arc::new(Circuit::default());
        circuit.wait_closed().await;
        let mut b = Breaker::new(policy(1, 1000), circuit.clone());
        assert!(b.failed(0).opened);
        let waiting = tokio::spawn({
            let c = circuit.clone();
            async move { c.wait_closed().await }
        });
        tokio::time::sleep(ms(50)).await;
        assert!(!waiting.is_finished(), "held while open");
        b.succeeded(1);
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("released by the success")
            .unwrap();

        let mut b = Breaker::new(policy(1, 1000), circuit.clone());
        b.failed(0);
        assert!(circuit.is_open());
        drop(b);
        assert!(
            !circuit.is_open(),
            "a run that ends releases the next reader"
        );
        tokio::time::timeout(Duration::from_secs(5), circuit.wait_closed())
            .await
            .unwrap();
    }
}
