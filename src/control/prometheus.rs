//! The Prometheus endpoint: `GET /metrics` on `METRICS_BIND:METRICS_PORT`, in the OpenMetrics
//! text format of the `prometheus-client` crate.
//!
//! The figures are read at scrape time through the same [`Sampler`] as the gRPC metrics stream,
//! so both report the same numbers; in addition the endpoint reports the slot's lag as polled
//! from `pg_replication_slots`. Rates are computed since the previous scrape. Labels carry table
//! names and change kinds only — never a row value or a secret.
//!
//! The listener and its limits are [`super::http`]'s; this module only renders the document
//! (and answers the paths nobody else serves), one request per connection as always.

use std::fmt;
use std::sync::{Arc, Mutex};

use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use prometheus_client::registry::Unit;

use super::sampler::{Baseline, Sampler};
use crate::job::JobHandle;

/// Metric names. Counters get the `_total` suffix in the exposition (`dbmazz_events_total`).
pub(crate) mod names {
    /// Counter: row changes (and truncates) durable in the sink.
    pub const EVENTS: &str = "dbmazz_events";
    /// Counter: row changes read from the WAL.
    pub const EVENTS_RECEIVED: &str = "dbmazz_events_received";
    /// Counter: batches written to the sink.
    pub const BATCHES: &str = "dbmazz_batches";
    /// Counter: bytes of change data durable in the sink.
    pub const BYTES: &str = "dbmazz_bytes";
    /// Counter, labels `table` and `op`: changes durable in the sink per table and kind.
    pub const TABLE_CHANGES: &str = "dbmazz_table_changes";
    /// Counter, label `kind`: schema changes of replicated tables dbmazz acted on (or stopped
    /// on), per kind (`add_column`, `widen_type`, `change_type`, `drop_column`,
    /// `rename_column`, `rename_table`, `key_change`).
    pub const SCHEMA_CHANGES: &str = "dbmazz_schema_changes";
    /// Counter: CPU time used by the process.
    pub const CPU_SECONDS: &str = "dbmazz_cpu_seconds";
    /// Gauge: row changes made durable per second since the previous scrape.
    pub const EVENTS_PER_SECOND: &str = "dbmazz_events_per_second";
    /// Gauge: bytes made durable per second since the previous scrape.
    pub const BYTES_PER_SECOND: &str = "dbmazz_bytes_per_second";
    /// Gauge: CPU used since the previous scrape, 1000 = one core.
    pub const CPU_MILLICORES: &str = "dbmazz_cpu_millicores";
    /// Gauge: WAL bytes not yet confirmed.
    pub const LAG_BYTES: &str = "dbmazz_lag_bytes";
    /// Gauge: row changes received but not yet durable, the pipeline's queue depth.
    pub const LAG_EVENTS: &str = "dbmazz_lag_events";
    /// Gauge: commit-to-sink-ack latency of the last durable transaction.
    pub const REPLICATION_LAG_MS: &str = "dbmazz_replication_lag_ms";
    /// Counter: rows StarRocks refused (strict-mode conversion, length, NOT NULL).
    pub const ROWS_REJECTED: &str = "dbmazz_rows_rejected";
    /// Counter: refused rows written to `dbmazz_dead_letters`.
    pub const DEAD_LETTERS_WRITTEN: &str = "dbmazz_dead_letters_written";
    /// Counter: dead letters a replay resolved.
    pub const DEAD_LETTERS_RESOLVED: &str = "dbmazz_dead_letters_resolved";
    /// Gauge: open dead letters of the job's slot.
    pub const DEAD_LETTERS_OPEN: &str = "dbmazz_dead_letters_open";
    /// Gauge: refused rows / (rows made durable + refused rows), since start.
    pub const LOAD_ERROR_RATIO: &str = "dbmazz_load_error_ratio";
    /// Gauge: `pg_current_wal_lsn() - confirmed_flush_lsn` of the slot.
    pub const SLOT_LAG_BYTES: &str = "dbmazz_slot_lag_bytes";
    /// Histogram (unit seconds, so exposed as `dbmazz_commit_to_ack_seconds`): time from a
    /// transaction's commit in PostgreSQL (its commit timestamp) to the sink acknowledging it,
    /// one observation per transaction made durable.
    pub const COMMIT_TO_ACK: &str = "dbmazz_commit_to_ack";
    /// Gauge: `pg_current_wal_lsn() - restart_lsn` of the slot: WAL kept on the server's disk.
    pub const SLOT_RETAINED_WAL_BYTES: &str = "dbmazz_slot_retained_wal_bytes";
    /// Gauge: `safe_wal_size` of the slot (absent when PostgreSQL reports none).
    pub const SLOT_SAFE_WAL_SIZE_BYTES: &str = "dbmazz_slot_safe_wal_size_bytes";
    /// Gauge: `max_slot_wal_keep_size` in bytes, -1 when unlimited.
    pub const SLOT_MAX_WAL_KEEP_SIZE_BYTES: &str = "dbmazz_slot_max_wal_keep_size_bytes";
    /// Gauge, label `status`: 1 for the slot's current `wal_status`, 0 for the others.
    pub const SLOT_WAL_STATUS: &str = "dbmazz_slot_wal_status";
    /// Gauge: 1 while a walsender holds the slot.
    pub const SLOT_ACTIVE: &str = "dbmazz_slot_active";
    /// Gauge: `inactive_since` as a Unix timestamp (PostgreSQL 17+, while inactive).
    pub const SLOT_INACTIVE_SINCE: &str = "dbmazz_slot_inactive_since_seconds";
    /// Gauge, label `reason`: 1 once PostgreSQL names an `invalidation_reason` (PostgreSQL 17+).
    pub const SLOT_INVALIDATION_REASON: &str = "dbmazz_slot_invalidation_reason";
    /// Gauge: smoothed growth of the retained WAL.
    pub const SLOT_RETAINED_GROWTH: &str = "dbmazz_slot_retained_wal_growth_bytes_per_second";
    /// Gauge: estimated seconds until `max_slot_wal_keep_size` is reached (absent if unknown).
    pub const SLOT_TIME_LEFT: &str = "dbmazz_slot_time_left_seconds";
    /// Gauge: arrival minus emit time of the last heartbeat (absent before the first).
    pub const HEARTBEAT_LAG: &str = "dbmazz_heartbeat_lag_seconds";
    /// Counter: heartbeat messages written into the source.
    pub const HEARTBEATS: &str = "dbmazz_heartbeats";
    /// Counter: heartbeat attempts that failed.
    pub const HEARTBEAT_FAILURES: &str = "dbmazz_heartbeat_failures";
    /// Gauge: streamed transactions open (received in part, not yet committed or aborted).
    pub const STREAMED_TXNS_OPEN: &str = "dbmazz_streamed_transactions_open";
    /// Counter: streamed transactions delivered at their commit.
    pub const STREAMED_TXNS: &str = "dbmazz_streamed_transactions";
    /// Gauge: bytes of open streamed transactions on disk in `SPILL_DIR`.
    pub const SPILL_BYTES: &str = "dbmazz_spill_bytes";
    /// Gauge: bytes of open streamed transactions held in memory.
    pub const SPILL_MEMORY_BYTES: &str = "dbmazz_spill_memory_bytes";
    /// Gauge: `SPILL_MAX_BYTES` in force.
    pub const SPILL_MAX_BYTES: &str = "dbmazz_spill_max_bytes";
    /// Counter: bytes written to spill files.
    pub const SPILLED_BYTES: &str = "dbmazz_spilled_bytes";
    /// Gauge: resident set size.
    pub const MEMORY_BYTES: &str = "dbmazz_memory_bytes";
    /// Gauge: highest WAL position received.
    pub const CURRENT_LSN: &str = "dbmazz_current_lsn";
    /// Gauge: highest LSN confirmed to PostgreSQL.
    pub const CONFIRMED_LSN: &str = "dbmazz_confirmed_lsn";
    /// Gauge: 1 while Health is SERVING, 0 otherwise (retrying, sink stalled, failed, stopped).
    pub const HEALTHY: &str = "dbmazz_healthy";
    /// Gauge: seconds the sink has held its outstanding batch (0 when none).
    pub const SINK_WAITING: &str = "dbmazz_sink_waiting_seconds";
    /// Gauge: 1 while the sink's circuit is open (reading stopped, loads are probes), else 0.
    pub const SINK_CIRCUIT_OPEN: &str = "dbmazz_sink_circuit_open";
    /// Gauge: seconds the sink's circuit has been open (0 while closed).
    pub const SINK_CIRCUIT_OPEN_SECONDS: &str = "dbmazz_sink_circuit_open_seconds";
    /// Counter: how often the sink's circuit opened.
    pub const SINK_CIRCUIT_OPENED: &str = "dbmazz_sink_circuit_opened";
    /// Gauge: failed loads in a row of the batch the sink holds (0 after a success).
    pub const SINK_CONSECUTIVE_FAILURES: &str = "dbmazz_sink_consecutive_failures";
    /// Rows copied by the initial snapshot (its rate is the snapshot's rows/s).
    pub const SNAPSHOT_ROWS: &str = "dbmazz_snapshot_rows";
    /// Stream Load requests that committed.
    pub const LOADS: &str = "dbmazz_starrocks_loads";
    /// Stream Load attempts that failed transiently and were retried.
    pub const LOAD_RETRIES: &str = "dbmazz_starrocks_load_retries";
    /// NaN/±Infinity written to StarRocks as NULL.
    pub const VALUES_NON_FINITE_NULLED: &str = "dbmazz_values_non_finite_nulled";
    /// Infinite dates/timestamps clamped to StarRocks' range.
    pub const VALUES_INFINITY_CLAMPED: &str = "dbmazz_values_infinity_clamped";
}

/// Reads the job at each scrape.
struct JobCollector {
    job: JobHandle,
    sampler: Mutex<Sampler>,
}

impl fmt::Debug for JobCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobCollector")
            .field("slot", &self.job.slot_name())
            .finish()
    }
}

fn counter<T>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: T,
) -> Result<(), fmt::Error>
where
    ConstCounter<T>: EncodeMetric,
{
    let metric = ConstCounter::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

fn gauge<T>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: T,
) -> Result<(), fmt::Error>
where
    ConstGauge<T>: EncodeMetric,
{
    let metric = ConstGauge::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

impl Collector for JobCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        use names::*;
        let s = match self.sampler.lock() {
            Ok(mut sampler) => sampler.sample(),
            Err(_) => return Ok(()),
        };
        let e = &mut encoder;
        counter(
            e,
            EVENTS,
            "Row changes (and truncates) durable in the sink.",
            s.events_total,
        )?;
        counter(
            e,
            EVENTS_RECEIVED,
            "Row changes read from the WAL.",
            s.events_received,
        )?;
        counter(e, BATCHES, "Batches written to the sink.", s.batches_total)?;
        let m = self.job.metrics();
        let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        counter(
            e,
            SNAPSHOT_ROWS,
            "Rows copied by the initial snapshot.",
            load(&m.snapshot_rows_total),
        )?;
        counter(
            e,
            LOADS,
            "StarRocks Stream Loads committed.",
            load(&m.loads_total),
        )?;
        counter(
            e,
            LOAD_RETRIES,
            "StarRocks Stream Load attempts retried after a transient failure.",
            load(&m.load_retries_total),
        )?;
        let rejected = load(&m.rows_rejected_total);
        counter(
            e,
            ROWS_REJECTED,
            "Rows StarRocks refused (a value that does not convert under strict mode, a string longer than its column, a NULL in a NOT NULL column).",
            rejected,
        )?;
        counter(
            e,
            DEAD_LETTERS_WRITTEN,
            "Refused rows written to dbmazz_dead_letters (ON_REJECT=dead_letter).",
            load(&m.dead_letters_written_total),
        )?;
        counter(
            e,
            DEAD_LETTERS_RESOLVED,
            "Dead letters a ReplayDeadLetters call loaded and marked resolved.",
            load(&m.dead_letters_resolved_total),
        )?;
        gauge(
            e,
            DEAD_LETTERS_OPEN,
            "Open dead letters of this job's slot, as last counted.",
            load(&m.dead_letters_open) as i64,
        )?;
        let attempted = s.events_total + rejected;
        gauge(
            e,
            LOAD_ERROR_RATIO,
            "Rows refused by StarRocks over rows made durable plus rows refused, since start.",
            if attempted == 0 {
                0.0
            } else {
                rejected as f64 / attempted as f64
            },
        )?;
        counter(
            e,
            VALUES_NON_FINITE_NULLED,
            "NaN and infinite numbers written to StarRocks as NULL.",
            load(&m.values_non_finite_nulled),
        )?;
        counter(
            e,
            VALUES_INFINITY_CLAMPED,
            "Infinite dates and timestamps clamped to the ends of StarRocks' range.",
            load(&m.values_infinity_clamped),
        )?;
        counter(
            e,
            BYTES,
            "Bytes of change data durable in the sink.",
            s.bytes_total,
        )?;
        counter(
            e,
            CPU_SECONDS,
            "CPU time used by the process.",
            s.cpu_seconds_total,
        )?;
        {
            let kind = ConstCounter::new(0u64).metric_type();
            let mut family = e.encode_descriptor(
                TABLE_CHANGES,
                "Changes durable in the sink, per table and kind.",
                None,
                kind,
            )?;
            for (table, c) in &s.tables {
                for (op, n) in [
                    ("insert", c.inserts),
                    ("update", c.updates),
                    ("delete", c.deletes),
                    ("truncate", c.truncates),
                ] {
                    let labels = [("table", table.as_str()), ("op", op)];
                    ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        {
            let kind = ConstCounter::new(0u64).metric_type();
            let mut family = e.encode_descriptor(
                SCHEMA_CHANGES,
                "Schema changes of replicated tables dbmazz acted on or stopped on, per kind.",
                None,
                kind,
            )?;
            for (k, n) in m.schema_change_counts() {
                let labels = [("kind", k.as_str())];
                ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
            }
        }
        gauge(
            e,
            EVENTS_PER_SECOND,
            "Row changes made durable per second since the previous scrape.",
            s.events_per_second,
        )?;
        gauge(
            e,
            BYTES_PER_SECOND,
            "Bytes made durable per second since the previous scrape.",
            s.bytes_per_second,
        )?;
        gauge(
            e,
            CPU_MILLICORES,
            "CPU used since the previous scrape (1000 = one core).",
            s.cpu_millicores as f64,
        )?;
        gauge(
            e,
            LAG_BYTES,
            "WAL bytes not yet confirmed: max(server WAL position, received) - confirmed.",
            s.lag_bytes,
        )?;
        gauge(
            e,
            LAG_EVENTS,
            "Row changes received but not yet durable (the pipeline's queue depth).",
            s.lag_events,
        )?;
        gauge(
            e,
            REPLICATION_LAG_MS,
            "Commit-to-sink-ack latency of the last durable transaction, in milliseconds.",
            s.replication_lag_ms,
        )?;
        {
            let h = m.commit_to_ack.snapshot();
            e.encode_descriptor(
                COMMIT_TO_ACK,
                "Time from a transaction's commit in PostgreSQL to the sink acknowledging it.",
                Some(&Unit::Seconds),
                MetricType::Histogram,
            )?
            .encode_histogram::<NoLabelSet>(
                h.sum_seconds,
                h.count,
                &h.buckets,
                None,
            )?;
        }
        gauge(
            e,
            SLOT_LAG_BYTES,
            "pg_current_wal_lsn() - confirmed_flush_lsn of the replication slot, as last polled.",
            s.slot_lag_bytes,
        )?;
        self.encode_wal_guard(e)?;
        self.encode_streaming(e)?;
        gauge(
            e,
            MEMORY_BYTES,
            "Resident set size of the process.",
            s.memory_bytes,
        )?;
        gauge(
            e,
            CURRENT_LSN,
            "Highest WAL position received.",
            s.received_lsn,
        )?;
        gauge(
            e,
            CONFIRMED_LSN,
            "Highest LSN checkpointed and confirmed to PostgreSQL.",
            s.confirmed_lsn,
        )?;
        gauge(
            e,
            HEALTHY,
            "1 while Health is SERVING; 0 while the job retries a failure, while the sink holds a batch past HEALTH_SINK_STALL_MS, after a definite error and once stopped.",
            u64::from(self.job.health().serving),
        )?;
        let waiting = m
            .sink_waiting(crate::metrics::now_unix_us())
            .map_or(0.0, |(waited, _)| waited.as_secs_f64());
        gauge(
            e,
            SINK_WAITING,
            "How long the sink has held the batch it is writing (retries included); 0 when no write is outstanding.",
            waiting,
        )?;
        let circuit = self.job.circuit().state();
        gauge(
            e,
            SINK_CIRCUIT_OPEN,
            "1 while the sink's circuit is open: SINK_CIRCUIT_FAILURES loads failed in a row, reading from PostgreSQL stopped, and the pending batch is retried every SINK_CIRCUIT_PROBE_MS.",
            u64::from(circuit.open),
        )?;
        let open_for = if circuit.open {
            (crate::metrics::now_unix_us() - circuit.opened_at_unix_us).max(0) as f64 / 1e6
        } else {
            0.0
        };
        gauge(
            e,
            SINK_CIRCUIT_OPEN_SECONDS,
            "How long the sink's circuit has been open; 0 while closed.",
            open_for,
        )?;
        counter(
            e,
            SINK_CIRCUIT_OPENED,
            "How often the sink's circuit opened.",
            circuit.opened_total,
        )?;
        gauge(
            e,
            SINK_CONSECUTIVE_FAILURES,
            "Failed loads in a row of the batch the sink holds; 0 after a success.",
            circuit.consecutive_failures,
        )?;
        Ok(())
    }
}

/// The `wal_status` values of PostgreSQL 13 and later.
const WAL_STATUSES: [&str; 4] = ["reserved", "extended", "unreserved", "lost"];

impl JobCollector {
    /// Streamed in-progress transactions and their spill.
    fn encode_streaming(&self, e: &mut DescriptorEncoder) -> Result<(), fmt::Error> {
        use names::*;
        let m = self.job.metrics();
        let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        gauge(
            e,
            STREAMED_TXNS_OPEN,
            "Transactions PostgreSQL is streaming while they run (STREAMING=on), not yet committed or aborted.",
            load(&m.streamed_txns_open) as i64,
        )?;
        counter(
            e,
            STREAMED_TXNS,
            "Streamed transactions delivered to the sink's pipeline at their commit.",
            load(&m.streamed_txns_total),
        )?;
        gauge(
            e,
            SPILL_BYTES,
            "Bytes of open streamed transactions spilled to SPILL_DIR.",
            load(&m.spill_disk_bytes) as i64,
        )?;
        gauge(
            e,
            SPILL_MEMORY_BYTES,
            "Bytes of open streamed transactions held in memory (SPILL_MEMORY_BYTES bounds it).",
            load(&m.spill_memory_bytes) as i64,
        )?;
        gauge(
            e,
            SPILL_MAX_BYTES,
            "SPILL_MAX_BYTES in force (0 while streaming is off).",
            load(&m.spill_max_bytes) as i64,
        )?;
        counter(
            e,
            SPILLED_BYTES,
            "Bytes written to spill files since start.",
            load(&m.spilled_bytes_total),
        )
    }

    /// The slot as the WAL-growth guard last polled it, and the heartbeat. Figures PostgreSQL
    /// did not report are left out rather than shown as 0.
    fn encode_wal_guard(&self, e: &mut DescriptorEncoder) -> Result<(), fmt::Error> {
        use names::*;
        let m = self.job.metrics();
        let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        counter(
            e,
            HEARTBEATS,
            "Heartbeat messages written into the source database.",
            load(&m.heartbeats_sent_total),
        )?;
        counter(
            e,
            HEARTBEAT_FAILURES,
            "Heartbeat attempts that failed.",
            load(&m.heartbeat_failures_total),
        )?;
        if let Some(lag) = m.heartbeat_lag_seconds() {
            gauge(
                e,
                HEARTBEAT_LAG,
                "Time from writing the last heartbeat message to receiving it through the slot.",
                lag,
            )?;
        }
        let view = self.job.slot_view();
        if view.polled_unix_us == 0 {
            return Ok(());
        }
        let r = &view.reading;
        if let Some(retained) = r.retained_bytes {
            gauge(
                e,
                SLOT_RETAINED_WAL_BYTES,
                "pg_current_wal_lsn() - restart_lsn of the replication slot: WAL it keeps on the server's disk.",
                retained,
            )?;
        }
        if let Some(safe) = r.safe_wal_size {
            gauge(
                e,
                SLOT_SAFE_WAL_SIZE_BYTES,
                "safe_wal_size of the replication slot: WAL that can still be written before it is in danger.",
                safe,
            )?;
        }
        gauge(
            e,
            SLOT_MAX_WAL_KEEP_SIZE_BYTES,
            "max_slot_wal_keep_size in bytes; -1 when unlimited.",
            r.max_slot_wal_keep_size
                .map_or(-1, |k| i64::try_from(k).unwrap_or(i64::MAX)),
        )?;
        {
            let kind = ConstGauge::new(0i64).metric_type();
            let mut family = e.encode_descriptor(
                SLOT_WAL_STATUS,
                "wal_status of the replication slot: 1 for the current one, 0 for the others.",
                None,
                kind,
            )?;
            for status in WAL_STATUSES {
                let labels = [("status", status)];
                ConstGauge::new(i64::from(r.wal_status == status))
                    .encode(family.encode_family(&labels)?)?;
            }
        }
        gauge(
            e,
            SLOT_ACTIVE,
            "1 while a walsender holds the replication slot.",
            i64::from(r.active),
        )?;
        if let Some(us) = r.inactive_since_unix_us {
            gauge(
                e,
                SLOT_INACTIVE_SINCE,
                "inactive_since of the replication slot, as a Unix timestamp (PostgreSQL 17+).",
                us as f64 / 1e6,
            )?;
        }
        if let Some(reason) = &r.invalidation_reason {
            let kind = ConstGauge::new(0i64).metric_type();
            let mut family = e.encode_descriptor(
                SLOT_INVALIDATION_REASON,
                "1 with the invalidation_reason PostgreSQL gives for the slot (PostgreSQL 17+).",
                None,
                kind,
            )?;
            let labels = [("reason", reason.as_str())];
            ConstGauge::new(1i64).encode(family.encode_family(&labels)?)?;
        }
        if let Some(growth) = view.growth_bytes_per_second {
            gauge(
                e,
                SLOT_RETAINED_GROWTH,
                "Growth of the slot's retained WAL, smoothed over the polls.",
                growth,
            )?;
        }
        if let Some(left) = view.time_left {
            gauge(
                e,
                SLOT_TIME_LEFT,
                "Estimated seconds until the slot reaches max_slot_wal_keep_size at the current growth.",
                left.as_secs_f64(),
            )?;
        }
        Ok(())
    }
}

/// The registry with the job's collector.
fn registry(job: JobHandle, since: Baseline) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(JobCollector {
        sampler: Mutex::new(Sampler::new(job.clone(), since)),
        job,
    }));
    registry
}

/// The exposition text of the job's metrics.
fn render(registry: &Registry) -> String {
    let mut body = String::new();
    if prometheus_client::encoding::text::encode(&mut body, registry).is_err() {
        body.clear();
    }
    body
}

/// The exposition's content type.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";

/// `GET /metrics` and `GET /`, and the answers to everything else on the port that no other
/// route takes (404 for an unknown path, 405 for another method). Each answer closes the
/// connection, as the endpoint always has.
pub(crate) fn routes(job: JobHandle, since: Baseline) -> Router {
    let registry = Arc::new(registry(job, since));
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let registry = registry.clone();
                async move { reply(StatusCode::OK, OPENMETRICS, render(&registry)) }
            }),
        )
        .route(
            "/",
            get(|| async { reply(StatusCode::OK, TEXT, "dbmazz: metrics at /metrics\n".into()) }),
        )
        .method_not_allowed_fallback(|| async { not_allowed() })
        .fallback(|method: Method| async move {
            if method == Method::GET || method == Method::HEAD {
                reply(
                    StatusCode::NOT_FOUND,
                    TEXT,
                    "not found; try /metrics\n".into(),
                )
            } else {
                not_allowed()
            }
        })
}

fn not_allowed() -> Response {
    reply(
        StatusCode::METHOD_NOT_ALLOWED,
        TEXT,
        "only GET is served\n".into(),
    )
}

fn reply(code: StatusCode, content_type: &'static str, body: String) -> Response {
    (
        code,
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONNECTION, "close"),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{FlushPolicy, TableName};
    use crate::metrics::TableCounters;
    use std::collections::BTreeMap;
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    fn job() -> JobHandle {
        JobHandle::new(
            "s",
            &[TableName::new("public", "t")],
            FlushPolicy {
                max_events: 10,
                max_bytes: 1 << 20,
                interval: Duration::from_secs(1),
            },
        )
    }

    #[test]
    fn exposition_carries_the_job_counters_and_table_labels() {
        let job = job();
        job.metrics().events_total.store(7, Ordering::Relaxed);
        job.metrics()
            .snapshot_rows_total
            .store(5, Ordering::Relaxed);
        let mut counts = BTreeMap::new();
        counts.insert(
            "public.t".to_string(),
            TableCounters {
                inserts: 7,
                ..Default::default()
            },
        );
        job.metrics().add_table_counts(&counts);
        let now_pg = crate::metrics::now_unix_us() - crate::metrics::PG_EPOCH_OFFSET_MICROS;
        job.metrics().record_durable_commits([
            now_pg - 60_000,
            now_pg - 70_000,
            now_pg - 2_000_000,
        ]);
        let registry = registry(job.clone(), Baseline::now(&job));
        let text = render(&registry);
        assert!(
            text.contains("# TYPE dbmazz_commit_to_ack_seconds histogram\n"),
            "{text}"
        );
        assert!(
            text.contains("\ndbmazz_commit_to_ack_seconds_count 3\n"),
            "{text}"
        );
        // cumulative buckets: two commits within 75 ms, all three within 2.5 s
        assert!(
            text.contains("\ndbmazz_commit_to_ack_seconds_bucket{le=\"0.05\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("\ndbmazz_commit_to_ack_seconds_bucket{le=\"0.075\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("\ndbmazz_commit_to_ack_seconds_bucket{le=\"2.5\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("\ndbmazz_commit_to_ack_seconds_bucket{le=\"+Inf\"} 3\n"),
            "{text}"
        );
        assert!(text.contains("\ndbmazz_events_total 7\n"), "{text}");
        assert!(text.contains("\ndbmazz_snapshot_rows_total 5\n"), "{text}");
        assert!(
            text.contains(r#"dbmazz_table_changes_total{table="public.t",op="insert"} 7"#),
            "{text}"
        );
        assert!(text.contains("\ndbmazz_healthy 1\n"), "{text}");
        assert!(text.contains("\ndbmazz_sink_circuit_open 0\n"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn an_open_circuit_shows_in_the_gauges() {
        use crate::config::SinkCircuitPolicy;
        use crate::pipeline::circuit::Breaker;
        let job = job();
        let registry = registry(job.clone(), Baseline::now(&job));
        let mut breaker = Breaker::new(
            SinkCircuitPolicy {
                failures: 2,
                probe: Duration::from_secs(1),
            },
            job.circuit().clone(),
        );
        let now = crate::metrics::now_unix_us();
        breaker.failed(now - 3_000_000);
        breaker.failed(now - 2_000_000);
        breaker.failed(now);
        let text = render(&registry);
        for line in [
            "\ndbmazz_sink_circuit_open 1\n",
            "\ndbmazz_sink_circuit_opened_total 1\n",
            "\ndbmazz_sink_consecutive_failures 3\n",
            "# TYPE dbmazz_sink_circuit_open_seconds gauge\n",
        ] {
            assert!(text.contains(line), "{line:?} in {text}");
        }
        let open_for: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("dbmazz_sink_circuit_open_seconds "))
            .unwrap()
            .parse()
            .unwrap();
        assert!((2.0..60.0).contains(&open_for), "{open_for}");
        breaker.succeeded(now);
        let text = render(&registry);
        assert!(text.contains("\ndbmazz_sink_circuit_open 0\n"), "{text}");
        assert!(
            text.contains("\ndbmazz_sink_circuit_opened_total 1\n"),
            "{text}"
        );
        assert!(
            text.contains("\ndbmazz_sink_consecutive_failures 0\n"),
            "{text}"
        );
    }

    #[test]
    fn exposition_carries_the_slot_guard_and_leaves_out_what_was_not_reported() {
        use crate::postgres::slot_health::{SlotAlarm, SlotReading, SlotView};
        let job = job();
        let registry = registry(job.clone(), Baseline::now(&job));
        let before = render(&registry);
        assert!(
            !before.contains("dbmazz_slot_retained_wal_bytes"),
            "{before}"
        );
        assert!(!before.contains("dbmazz_heartbeat_lag_seconds"), "{before}");
        job.report_slot(SlotView {
            polled_unix_us: 1,
            reading: SlotReading {
                exists: true,
                wal_status: "extended".into(),
                retained_bytes: Some(3 << 20),
                max_slot_wal_keep_size: None,
                ..SlotReading::default()
            },
            growth_bytes_per_second: Some(1024.0),
            time_left: None,
            alarm: SlotAlarm::AtRisk("x".into()),
        });
        job.metrics()
            .heartbeat_received(crate::metrics::now_unix_us() - 1_500_000);
        let text = render(&registry);
        for line in [
            "\ndbmazz_slot_retained_wal_bytes 3145728\n",
            "\ndbmazz_slot_max_wal_keep_size_bytes -1\n",
            "\ndbmazz_slot_wal_status{status=\"extended\"} 1\n",
            "\ndbmazz_slot_wal_status{status=\"reserved\"} 0\n",
            "\ndbmazz_slot_retained_wal_growth_bytes_per_second 1024.0\n",
            "\ndbmazz_heartbeats_total 0\n",
        ] {
            assert!(text.contains(line), "{line:?} missing: {text}");
        }
        assert!(!text.contains("dbmazz_slot_safe_wal_size_bytes"), "{text}");
        assert!(!text.contains("dbmazz_slot_time_left_seconds"), "{text}");
        let lag = text
            .lines()
            .find_map(|l| l.strip_prefix("dbmazz_heartbeat_lag_seconds "))
            .and_then(|v| v.parse::<f64>().ok())
            .expect("heartbeat lag");
        assert!((1.4..5.0).contains(&lag), "{lag}");
    }

    async fn call(method: Method, path: &str) -> (StatusCode, String, String) {
        use tower::ServiceExt;
        let job = job();
        let req = axum::http::Request::builder()
            .method(method)
            .uri(path)
            .body(axum::body::Body::empty())
            .unwrap();
        let resp = routes(job.clone(), Baseline::now(&job))
            .oneshot(req)
            .await
            .unwrap();
        let status = resp.status();
        let ctype = resp.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .to_owned();
        assert_eq!(resp.headers()[header::CONNECTION], "close");
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, ctype, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn only_get_metrics_is_served() {
        let (status, ctype, body) = call(Method::GET, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(ctype, OPENMETRICS);
        assert!(body.ends_with("# EOF\n"), "{body}");
        let (status, _, body) = call(Method::GET, "/other").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body, "not found; try /metrics\n");
        let (status, _, body) = call(Method::POST, "/metrics").await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(body, "only GET is served\n");
    }
}
