//! Counters and gauges of one replication job, shared by the gRPC metrics stream and the
//! Prometheus endpoint so that both always report the same numbers.
//!
//! The hot path only touches atomics, once per batch (never per row); per-table counters sit
//! behind a mutex that is taken once per batch as well.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

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

pub use crate::lsn::PG_EPOCH_OFFSET_MICROS;

/// A kind of schema change of a replicated table (the label of `dbmazz_schema_changes_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SchemaChangeKind {
    /// A column was added.
    AddColumn,
    /// A column's type widened (int2→int4, varchar(10)→varchar(20), …).
    WidenType,
    /// A column's type changed in a way that can lose values.
    ChangeType,
    /// A column was dropped.
    DropColumn,
    /// A column was renamed.
    RenameColumn,
    /// The table was renamed or moved to another schema.
    RenameTable,
    /// The primary key or the replica identity changed.
    KeyChange,
}

impl SchemaChangeKind {
    /// Every kind, in a fixed order.
    pub const ALL: [SchemaChangeKind; 7] = [
        SchemaChangeKind::AddColumn,
        SchemaChangeKind::WidenType,
        SchemaChangeKind::ChangeType,
        SchemaChangeKind::DropColumn,
        SchemaChangeKind::RenameColumn,
        SchemaChangeKind::RenameTable,
        SchemaChangeKind::KeyChange,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            SchemaChangeKind::AddColumn => "add_column",
            SchemaChangeKind::WidenType => "widen_type",
            SchemaChangeKind::ChangeType => "change_type",
            SchemaChangeKind::DropColumn => "drop_column",
            SchemaChangeKind::RenameColumn => "rename_column",
            SchemaChangeKind::RenameTable => "rename_table",
            SchemaChangeKind::KeyChange => "key_change",
        }
    }

    fn index(self) -> usize {
        Self::ALL.iter().position(|k| *k == self).unwrap_or(0)
    }
}

/// One schema-change decision, as `GetStatus` shows the last one of each table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SchemaEvent {
    /// The table, as `TABLES` names it.
    pub table: String,
    /// What changed.
    pub kind: SchemaChangeKind,
    /// What dbmazz did: `propagated`, `kept`, `recreated`, `followed` or `stopped`.
    pub action: &'static str,
    /// The change in words, with the statement run (or to run).
    pub detail: String,
    /// LSN of the Relation message that carried it (0 when found at start).
    pub lsn: u64,
    /// When (µs since the Unix epoch).
    pub at_unix_us: i64,
}

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
    /// Heartbeat messages written into the source.
    pub heartbeats_sent_total: AtomicU64,
    /// Heartbeat attempts that failed.
    pub heartbeat_failures_total: AtomicU64,
    /// Arrival time minus emit time of the last heartbeat received, in µs (meaningful once
    /// `heartbeat_received_unix_us` is set).
    pub heartbeat_lag_us: AtomicI64,
    /// When (µs since the Unix epoch) the last heartbeat arrived; 0 before any.
    pub heartbeat_received_unix_us: AtomicI64,
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
    /// Rows StarRocks refused (each counted once per refusal).
    pub rows_rejected_total: AtomicU64,
    /// Refused rows written to `dbmazz_dead_letters`.
    pub dead_letters_written_total: AtomicU64,
    /// Dead letters a replay loaded and marked resolved.
    pub dead_letters_resolved_total: AtomicU64,
    /// Open dead letters of this job's slot, as last counted.
    pub dead_letters_open: AtomicU64,
    /// Streamed transactions (pgoutput streaming) started and not yet committed or aborted.
    pub streamed_txns_open: AtomicU64,
    /// Streamed transactions delivered to the pipeline at their commit.
    pub streamed_txns_total: AtomicU64,
    /// Bytes of open streamed transactions held in memory (allocated capacity).
    pub spill_memory_bytes: AtomicU64,
    /// Bytes of open streamed transactions spilled to `SPILL_DIR`.
    pub spill_disk_bytes: AtomicU64,
    /// `SPILL_MAX_BYTES` in force (0 while streaming is off).
    pub spill_max_bytes: AtomicU64,
    /// Bytes written to spill files since start.
    pub spilled_bytes_total: AtomicU64,
    /// Commit-to-sink-ack latency of every transaction made durable.
    pub commit_to_ack: LatencyHistogram,
    /// When (µs since the Unix epoch) the sink started on the batch it has not yet made durable
    /// (retries included); 0 while no write is outstanding.
    sink_write_since_unix_us: AtomicI64,
    /// The last transient sink error, with the start of the write it belongs to: it counts only
    /// while that write is the outstanding one, so a write that succeeds touches no lock.
    sink_error: Mutex<Option<(i64, String)>>,
    tables: Mutex<BTreeMap<String, TableCounters>>,
    schema_changes: [AtomicU64; SchemaChangeKind::ALL.len()],
    schema_events: Mutex<BTreeMap<String, SchemaEvent>>,
}

/// Upper bounds of the commit-to-ack histogram's buckets, in milliseconds (then `+Inf`). Dense
/// around the `FLUSH_INTERVAL_MS` range (100 ms by default) where a healthy job sits, sparse in
/// the catch-up range.
pub const LATENCY_BUCKETS_MS: [u64; 17] = [
    5, 10, 25, 50, 75, 100, 150, 200, 250, 350, 500, 750, 1_000, 2_500, 5_000, 10_000, 60_000,
];

/// A fixed-bucket latency histogram that the hot path updates with relaxed atomics only (one
/// bucket increment, a count and a sum per observation), read by the Prometheus endpoint.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    /// Per-bucket (not cumulative) counts; the last one is `+Inf`.
    buckets: [AtomicU64; LATENCY_BUCKETS_MS.len() + 1],
    count: AtomicU64,
    sum_us: AtomicU64,
}

/// A copy of a [`LatencyHistogram`] at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LatencySnapshot {
    /// Per-bucket (not cumulative) counts, with each bucket's upper bound in seconds; the last
    /// bound is infinity.
    pub buckets: Vec<(f64, u64)>,
    /// Observations.
    pub count: u64,
    /// Sum of the observations, in seconds.
    pub sum_seconds: f64,
}

impl LatencyHistogram {
    /// Records one latency, in microseconds.
    pub fn observe_us(&self, us: u64) {
        let ms = us.div_ceil(1000);
        let i = LATENCY_BUCKETS_MS.partition_point(|&bound| bound < ms);
        if let Some(b) = self.buckets.get(i) {
            b.fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// The current counts.
    pub fn snapshot(&self) -> LatencySnapshot {
        let buckets = self
            .buckets
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let bound = LATENCY_BUCKETS_MS
                    .get(i)
                    .map_or(f64::INFINITY, |&ms| ms as f64 / 1000.0);
                (bound, n.load(Ordering::Relaxed))
            })
            .collect();
        LatencySnapshot {
            buckets,
            count: self.count.load(Ordering::Relaxed),
            sum_seconds: self.sum_us.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }
}

impl LatencySnapshot {
    /// The `q` quantile (0..=1), as the upper bound in milliseconds of the bucket that holds it
    /// (`None` with no observations; `u64::MAX` when it is in the `+Inf` bucket).
    pub fn quantile_ms(&self, q: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((self.count as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, (_, n)) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(LATENCY_BUCKETS_MS.get(i).copied().unwrap_or(u64::MAX));
            }
        }
        Some(u64::MAX)
    }
}

impl Metrics {
    /// Records the arrival of a heartbeat emitted at `emitted_unix_us`.
    pub fn heartbeat_received(&self, emitted_unix_us: i64) {
        let now = now_unix_us();
        self.heartbeat_lag_us.store(
            now.saturating_sub(emitted_unix_us).max(0),
            Ordering::Relaxed,
        );
        self.heartbeat_received_unix_us
            .store(now, Ordering::Relaxed);
    }

    /// Arrival minus emit time of the last heartbeat, in seconds; `None` before the first.
    pub fn heartbeat_lag_seconds(&self) -> Option<f64> {
        (self.heartbeat_received_unix_us.load(Ordering::Relaxed) > 0)
            .then(|| self.heartbeat_lag_us.load(Ordering::Relaxed) as f64 / 1e6)
    }

    /// Records a schema-change decision: counted by kind, and kept as the table's last one.
    pub fn record_schema_event(&self, event: SchemaEvent) {
        if let Some(c) = self.schema_changes.get(event.kind.index()) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        if let Ok(mut events) = self.schema_events.lock() {
            events.insert(event.table.clone(), event);
        }
    }

    /// Schema changes seen, per kind (every kind, zeros included).
    pub fn schema_change_counts(&self) -> Vec<(SchemaChangeKind, u64)> {
        SchemaChangeKind::ALL
            .iter()
            .map(|k| {
                let n = self
                    .schema_changes
                    .get(k.index())
                    .map_or(0, |c| c.load(Ordering::Relaxed));
                (*k, n)
            })
            .collect()
    }

    /// The last schema-change decision of each table that had one, by table name.
    pub fn schema_events(&self) -> Vec<SchemaEvent> {
        self.schema_events
            .lock()
            .map(|e| e.values().cloned().collect())
            .unwrap_or_default()
    }

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

    /// Records that the transactions committed at `commit_times_pg_us` (µs since 2000-01-01,
    /// PostgreSQL's clock, in commit order) are now durable: one histogram observation each, and
    /// the last one becomes the "last durable commit" gauges.
    pub fn record_durable_commits(&self, commit_times_pg_us: impl IntoIterator<Item = i64>) {
        let now = now_unix_us();
        let mut last = None;
        for t in commit_times_pg_us {
            let unix_us = t.saturating_add(PG_EPOCH_OFFSET_MICROS);
            // A server clock ahead of ours would give negative latencies: count them as 0.
            self.commit_to_ack
                .observe_us(u64::try_from(now - unix_us).unwrap_or(0));
            last = Some(unix_us);
        }
        if let Some(unix_us) = last {
            self.last_durable_commit_unix_us
                .store(unix_us, Ordering::Relaxed);
            let lag_ms = (now - unix_us).max(0) / 1000;
            self.commit_to_ack_ms
                .store(lag_ms as u64, Ordering::Relaxed);
        }
    }

    /// The sink started writing a batch.
    pub fn sink_write_started(&self) {
        self.sink_write_since_unix_us
            .store(now_unix_us(), Ordering::Relaxed);
    }

    /// The outstanding write failed with a transient error and will be retried.
    pub fn sink_write_failed(&self, error: String) {
        let since = self.sink_write_since_unix_us.load(Ordering::Relaxed);
        if let Ok(mut e) = self.sink_error.lock() {
            *e = Some((since, error));
        }
    }

    /// The outstanding write became durable (or the batch was given up).
    pub fn sink_write_ended(&self) {
        self.sink_write_since_unix_us.store(0, Ordering::Relaxed);
    }

    /// How long the outstanding sink write has waited at `now_us`, and its last error; `None`
    /// while no write is outstanding.
    pub fn sink_waiting(&self, now_us: i64) -> Option<(Duration, Option<String>)> {
        let since = self.sink_write_since_unix_us.load(Ordering::Relaxed);
        if since == 0 {
            return None;
        }
        let waited = Duration::from_micros(now_us.saturating_sub(since).max(0) as u64);
        let error = self.sink_error.lock().ok().and_then(|e| match &*e {
            Some((of, text)) if *of == since => Some(text.clone()),
            _ => None,
        });
        Some((waited, error))
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

/// `unix_us` (µs since the Unix epoch) as UTC text, `2026-12-02 13:40:05 UTC`.
pub fn utc_text(unix_us: i64) -> String {
    format!("{} UTC", utc_datetime(unix_us.div_euclid(1_000_000)))
}

/// `unix_secs` as `YYYY-MM-DD HH:MM:SS` (UTC, proleptic Gregorian), the form StarRocks' DATETIME
/// takes too.
pub fn utc_datetime(unix_secs: i64) -> String {
    let days = unix_secs.div_euclid(86_400);
    let rem = unix_secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
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
    fn commit_latencies_land_in_their_buckets() {
        let m = Metrics::default();
        let now_pg = now_unix_us() - PG_EPOCH_OFFSET_MICROS;
        // 3 s, 40 ms and ~0 ms ago, and one "from the future" (server clock ahead)
        m.record_durable_commits([
            now_pg - 3_000_000,
            now_pg - 40_000,
            now_pg,
            now_pg + 5_000_000,
        ]);
        let s = m.commit_to_ack.snapshot();
        assert_eq!(s.count, 4);
        assert_eq!(s.buckets.len(), LATENCY_BUCKETS_MS.len() + 1);
        let at = |ms: f64| {
            s.buckets
                .iter()
                .find(|(b, _)| (*b - ms / 1000.0).abs() < 1e-9)
                .unwrap()
                .1
        };
        assert_eq!(at(5_000.0), 1, "3 s lands in (2.5 s, 5 s]");
        assert_eq!(at(50.0), 1, "40 ms lands in (25 ms, 50 ms]");
        assert_eq!(
            at(5.0),
            2,
            "~0 ms and a negative latency land in the first bucket"
        );
        assert!(
            s.sum_seconds >= 3.04 && s.sum_seconds < 3.5,
            "{}",
            s.sum_seconds
        );
        assert_eq!(s.quantile_ms(0.5), Some(5));
        assert_eq!(s.quantile_ms(0.99), Some(5_000));
        // the gauge follows the last commit of the call
        assert_eq!(m.commit_to_ack_ms.load(Ordering::Relaxed), 0);
        assert_eq!(LatencySnapshot::default().quantile_ms(0.5), None);
    }

    #[test]
    fn bucket_bounds_are_inclusive() {
        let h = LatencyHistogram::default();
        h.observe_us(100_000); // exactly 100 ms: le="0.1"
        h.observe_us(100_001); // just above: le="0.15"
        h.observe_us(3_600_000_000); // an hour: +Inf
        let s = h.snapshot();
        let nonzero: Vec<(f64, u64)> = s.buckets.iter().copied().filter(|b| b.1 > 0).collect();
        assert_eq!(nonzero, vec![(0.1, 1), (0.15, 1), (f64::INFINITY, 1)]);
    }

    #[test]
    fn civil_dates_and_utc_text() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(utc_datetime(-1), "1969-12-31 23:59:59");
        assert_eq!(utc_text(1_796_218_805_999_999), "2026-12-02 13:40:05 UTC");
    }

    #[test]
    fn rss_is_measured() {
        assert!(rss_bytes() > 1024 * 1024);
    }
}
