//! `dbmazz.CdcMetricsService/StreamMetrics`: one metrics message every `interval_ms`.
//!
//! Each stream is a spawned task feeding a small bounded channel. The task ends as soon as the
//! client goes away (the channel closes, so the next send fails) or the server shuts down; it
//! never outlives its client.

use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::proto::cdc_metrics_service_server::CdcMetricsService;
use super::proto::{MetricsRequest, MetricsResponse, TableMetrics};
use super::sampler::{Baseline, Sample, Sampler};
use crate::job::JobHandle;

/// Interval when the request gives none.
const DEFAULT_INTERVAL: Duration = Duration::from_millis(1000);
/// Shortest interval served, whatever the request says.
const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// Messages buffered per stream before the task waits for the client.
const STREAM_BUFFER: usize = 4;

/// Serves `dbmazz.CdcMetricsService`.
pub(crate) struct MetricsStream {
    job: JobHandle,
    /// Counters at start, so that the first message's rates cover the time since start.
    started: Baseline,
    /// Becomes true when the server shuts down.
    shutdown: watch::Receiver<bool>,
}

impl MetricsStream {
    /// Streams of `job`'s metrics, first rates since `started`, ended by `shutdown`.
    pub(crate) fn new(job: JobHandle, started: Baseline, shutdown: watch::Receiver<bool>) -> Self {
        MetricsStream {
            job,
            started,
            shutdown,
        }
    }
}

/// The interval to serve for a requested `interval_ms`.
fn interval_for(interval_ms: u32) -> Duration {
    if interval_ms == 0 {
        DEFAULT_INTERVAL
    } else {
        Duration::from_millis(u64::from(interval_ms)).max(MIN_INTERVAL)
    }
}

#[tonic::async_trait]
impl CdcMetricsService for MetricsStream {
    type StreamMetricsStream = ReceiverStream<Result<MetricsResponse, Status>>;

    async fn stream_metrics(
        &self,
        request: Request<MetricsRequest>,
    ) -> Result<Response<Self::StreamMetricsStream>, Status> {
        let interval = interval_for(request.get_ref().interval_ms);
        let peer = request
            .remote_addr()
            .map(|p| p.to_string())
            .unwrap_or_default();
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let mut sampler = Sampler::new(self.job.clone(), self.started);
        let mut shutdown = self.shutdown.clone();
        tracing::info!(
            peer,
            interval_ms = interval.as_millis() as u64,
            "metrics stream started"
        );
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let reason = loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = tx.closed() => break "client went away",
                    _ = shutdown.wait_for(|s| *s) => break "server shutting down",
                }
                if tx.send(Ok(response(sampler.sample()))).await.is_err() {
                    break "client went away";
                }
            };
            tracing::info!(peer, reason, "metrics stream ended");
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// The wire form of a sample.
fn response(s: Sample) -> MetricsResponse {
    MetricsResponse {
        timestamp: s.timestamp_s,
        events_per_second: s.events_per_second,
        lag_bytes: s.lag_bytes,
        lag_events: s.lag_events,
        memory_bytes: s.memory_bytes,
        total_events_processed: s.events_total,
        total_batches_sent: s.batches_total,
        cpu_millicores: s.cpu_millicores,
        replication_lag_ms: s.replication_lag_ms,
        bytes_per_second: s.bytes_per_second,
        total_bytes: s.bytes_total,
        slot_lag_bytes: s.slot_lag_bytes,
        rows_rejected: s.rows_rejected,
        dead_letters_open: s.dead_letters_open,
        tables: s
            .tables
            .into_iter()
            .map(|(table, c)| TableMetrics {
                table,
                inserts: c.inserts,
                updates: c.updates,
                deletes: c.deletes,
                truncates: c.truncates,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_defaults_and_has_a_floor() {
        assert_eq!(interval_for(0), DEFAULT_INTERVAL);
        assert_eq!(interval_for(5), MIN_INTERVAL);
        assert_eq!(interval_for(2000), Duration::from_millis(2000));
    }
}
