//! Counters and gauges of one replication job, shared by the gRPC metrics stream and the
//! Prometheus endpoint so that both always report the same numbers.
//!
//! The hot path only touches atomics, once per batch (never per row); per-table counters sit
//! behind a mutex that is taken once per batch as well.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

/// Changes per table, by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableCounters {
    /// Inserts made durable.
    pub inserts: u64,
    /// Updates made durable.
    pub updates: u64,
    /// Deletes made durable.
    pub deletes: u64,
    /// Truncates made durable.
    pub truncates: u64,
}

impl TableCounters {
    /// All changes.
    pub fn total(&self) -> u64 {
        self.inserts + self.updates + self.deletes + self.truncates
    }
}

/// Microseconds between the Unix epoch and PostgreSQL's epoch (2000-01-01).
pub const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;

/// The job's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Row changes (and truncates) durable in the sink.
    pub events_total: AtomicU64,
    /// Batches written to the sink.
    pub batches_total: AtomicU64,
    /// Bytes of change data durable in the sink.
    pub bytes_total: AtomicU64,
    /// Row changes read from the WAL (durable or not).
    pub events_received: AtomicU64,
    /// Commit time (µs since the Unix epoch) of the last durable transaction; 0 before any.
    pub last_durable_commit_unix_us: AtomicI64,
    /// Commit-to-sink-ack latency of the last durable transaction, in milliseconds.
    pub commit_to_ack_ms: AtomicU64,
    /// `pg_current_wal_lsn()` as last polled.
    pub server_wal_lsn: AtomicU64,
    /// `pg_current_wal_lsn() - confirmed_flush_lsn` of the slot, as last polled.
    pub slot_lag_bytes: AtomicU64,
    /// Float/numeric NaN and ±Infinity written to StarRocks as NULL (its types cannot hold them).
    pub values_non_finite_nulled: AtomicU64,
    /// Infinite dates/timestamps clamped to the ends of StarRocks' range.
    pub values_infinity_clamped: AtomicU64,
    /// Rows copied by the initial snapshot.
    pub snapshot_rows_total: AtomicU64,
    /// Stream Load requests that committed.
    pub loads_total: AtomicU64,
    /// Stream Load attempts that failed transiently and were retried.
    pub load_retries_total: AtomicU64,
    tables: Mutex<BTreeMap<String, TableCounters>>,
}

impl Metrics {
    /// Adds one batch's per-table counts.
    pub fn add_table_counts(&self, counts: &BTreeMap<String, TableCounters>) {
        let Ok(mut tables) = self.tables.lock() else {
            return;
        };
        for (name, c) in counts {
            let t = tables.entry(name.clone()).or_default();
            t.inserts += c.inserts;
            t.updates += c.updates;
            t.deletes += c.deletes;
            t.truncates += c.truncates;
        }
    }

    /// Per-table counters so far.
    pub fn table_counts(&self) -> BTreeMap<String, TableCounters> {
        self.tables.lock().map(|t| t.clone()).unwrap_or_default()
    }

    /// Records that a transaction committed at `commit_time_pg_us` (µs since 2000-01-01) is now
    /// durable.
    pub fn record_durable_commit(&self, commit_time_pg_us: i64) {
        let unix_us = commit_time_pg_us.saturating_add(PG_EPOCH_OFFSET_MICROS);
        self.last_durable_commit_unix_us
            .store(unix_us, Ordering::Relaxed);
        let now = now_unix_us();
        let lag_ms = (now - unix_us).max(0) / 1000;
        self.commit_to_ack_ms
            .store(lag_ms as u64, Ordering::Relaxed);
    }

    /// Row changes read but not yet durable.
    pub fn pending_events(&self) -> u64 {
        self.events_received
            .load(Ordering::Relaxed)
            .saturating_sub(self.events_total.load(Ordering::Relaxed))
    }
}

/// Microseconds since the Unix epoch.
pub fn now_unix_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// Resident set size of this process in bytes (from `/proc/self/statm`), 0 where unavailable.
pub fn rss_bytes() -> u64 {
    let Ok(statm) = std::fs::read_to_string("/proc/self/statm") else {
        return 0;
    };
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_counts_accumulate() {
        let m = Metrics::default();
        let mut batch = BTreeMap::new();
        batch.insert(
            "public.t".to_string(),
            TableCounters {
                inserts: 2,
                deletes: 1,
                ..Default::default()
            },
        );
        m.add_table_counts(&batch);
        m.add_table_counts(&batch);
        assert_eq!(m.table_counts()["public.t"].total(), 6);
    }

    #[test]
    fn rss_is_measured() {
        assert!(rss_bytes() > 1024 * 1024);
    }
}
