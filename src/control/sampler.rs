//! One consistent reading of the job's figures, with rates computed between two readings.
//!
//! Both the gRPC metrics stream and the Prometheus endpoint read the job through a [`Sampler`],
//! so they always report the same numbers. Rates (events/s, bytes/s, CPU) are the change of a
//! counter since the sampler's previous reading, divided by the time between them.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::job::JobHandle;
use crate::metrics::{self, TableCounters};

/// Clock ticks per second of `/proc/self/stat` times (`USER_HZ`, 100 on every Linux ABI).
const USER_HZ: u64 = 100;

/// Counters at one instant, to compute rates from.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Baseline {
    at: Instant,
    events: u64,
    bytes: u64,
    cpu_ticks: u64,
}

impl Baseline {
    /// The counters of `job` now.
    pub(crate) fn now(job: &JobHandle) -> Self {
        let m = job.metrics();
        Baseline {
            at: Instant::now(),
            events: m.events_total.load(Ordering::Relaxed),
            bytes: m.bytes_total.load(Ordering::Relaxed),
            cpu_ticks: cpu_ticks(),
        }
    }
}

/// What one reading reports.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Sample {
    /// Seconds since the Unix epoch.
    pub(crate) timestamp_s: u64,
    /// Row changes made durable per second since the previous reading.
    pub(crate) events_per_second: f64,
    /// Bytes of change data made durable per second since the previous reading.
    pub(crate) bytes_per_second: f64,
    /// CPU used since the previous reading, 1000 = one core.
    pub(crate) cpu_millicores: u64,
    /// CPU used since the process started, in seconds.
    pub(crate) cpu_seconds_total: f64,
    /// Resident set size.
    pub(crate) memory_bytes: u64,
    /// Row changes (and truncates) durable in the sink.
    pub(crate) events_total: u64,
    /// Row changes read from the WAL.
    pub(crate) events_received: u64,
    /// Batches written.
    pub(crate) batches_total: u64,
    /// Bytes of change data durable in the sink.
    pub(crate) bytes_total: u64,
    /// WAL bytes not yet confirmed: max(server WAL position, received) − confirmed.
    pub(crate) lag_bytes: u64,
    /// Row changes received but not yet durable.
    pub(crate) lag_events: u64,
    /// Commit-to-sink-ack latency of the last durable transaction.
    pub(crate) replication_lag_ms: u64,
    /// `pg_current_wal_lsn() - confirmed_flush_lsn` of the slot, as last polled.
    pub(crate) slot_lag_bytes: u64,
    /// Rows StarRocks refused.
    pub(crate) rows_rejected: u64,
    /// Open dead letters, as last counted.
    pub(crate) dead_letters_open: u64,
    /// Highest WAL position received.
    pub(crate) received_lsn: u64,
    /// Highest LSN confirmed to PostgreSQL.
    pub(crate) confirmed_lsn: u64,
    /// Per-table counters, keyed by `schema.table`.
    pub(crate) tables: BTreeMap<String, TableCounters>,
}

/// Reads the job and remembers the reading, for the next rates.
pub(crate) struct Sampler {
    job: JobHandle,
    previous: Baseline,
}

impl Sampler {
    /// A sampler whose first rates are computed since `since`.
    pub(crate) fn new(job: JobHandle, since: Baseline) -> Self {
        Sampler {
            job,
            previous: since,
        }
    }

    /// Reads the job now.
    pub(crate) fn sample(&mut self) -> Sample {
        let now = Baseline::now(&self.job);
        let m = self.job.metrics();
        let elapsed = now.at.duration_since(self.previous.at).as_secs_f64();
        let per_second = |delta: u64| {
            if elapsed > 0.0 {
                delta as f64 / elapsed
            } else {
                0.0
            }
        };
        let cpu_ticks = now.cpu_ticks.saturating_sub(self.previous.cpu_ticks);
        let cpu_millicores = per_second(cpu_ticks * 1000 / USER_HZ).round() as u64;
        let received = self.job.received_lsn().0;
        let confirmed = self.job.confirmed_lsn().0;
        let server_wal = m.server_wal_lsn.load(Ordering::Relaxed);
        let sample = Sample {
            timestamp_s: (metrics::now_unix_us() / 1_000_000) as u64,
            events_per_second: per_second(now.events.saturating_sub(self.previous.events)),
            bytes_per_second: per_second(now.bytes.saturating_sub(self.previous.bytes)),
            cpu_millicores,
            cpu_seconds_total: now.cpu_ticks as f64 / USER_HZ as f64,
            memory_bytes: metrics::rss_bytes(),
            events_total: now.events,
            events_received: m.events_received.load(Ordering::Relaxed),
            batches_total: m.batches_total.load(Ordering::Relaxed),
            bytes_total: now.bytes,
            lag_bytes: lag_bytes(server_wal, received, confirmed),
            lag_events: m.pending_events(),
            replication_lag_ms: m.commit_to_ack_ms.load(Ordering::Relaxed),
            slot_lag_bytes: m.slot_lag_bytes.load(Ordering::Relaxed),
            rows_rejected: m.rows_rejected_total.load(Ordering::Relaxed),
            dead_letters_open: m.dead_letters_open.load(Ordering::Relaxed),
            received_lsn: received.max(confirmed),
            confirmed_lsn: confirmed,
            tables: m.table_counts(),
        };
        self.previous = now;
        sample
    }
}

/// WAL not yet confirmed; 0 until the job confirmed a position (before that the difference
/// would be the whole WAL history).
fn lag_bytes(server_wal: u64, received: u64, confirmed: u64) -> u64 {
    if confirmed == 0 {
        return 0;
    }
    server_wal.max(received).saturating_sub(confirmed)
}

/// User + system CPU time of this process in clock ticks (fields 14 and 15 of
/// `/proc/self/stat`), 0 where unavailable.
fn cpu_ticks() -> u64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0;
    };
    // The command name (field 2) may contain spaces; the fields after it are fixed.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok());
    // `rest` starts at field 3 (state), so utime (14) and stime (15) are at 11 and 12.
    field(11).unwrap_or(0) + field(12).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_counts_from_the_furthest_known_wal_position() {
        assert_eq!(lag_bytes(1000, 900, 800), 200);
        assert_eq!(lag_bytes(500, 900, 800), 100);
        assert_eq!(lag_bytes(1000, 0, 0), 0);
        assert_eq!(lag_bytes(700, 700, 800), 0);
    }

    #[test]
    fn cpu_time_is_read_from_proc() {
        let start = cpu_ticks();
        let t = Instant::now();
        let mut x = 0u64;
        while t.elapsed().as_millis() < 100 {
            x = x.wrapping_mul(31).wrapping_add(1);
        }
        std::hint::black_box(x);
        assert!(cpu_ticks() > start);
    }
}
