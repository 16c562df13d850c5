//! `dbmazz.HealthService/Check` and the standard `grpc.health.v1.Health`, both derived from the
//! job's state.
//!
//! The job is healthy (SERVING) while it starts, streams, is paused or drains. It is
//! NOT_SERVING, with an `errorDetail` that says what is wrong and what to do, while it retries a
//! transient failure (the source or the sink unreachable, a receive timeout: stage detail
//! `Retrying`), while the sink's circuit is open (`Sink unavailable`), while the sink has held
//! one batch for longer than `HEALTH_SINK_STALL_MS` (`Sink stalled`), while PostgreSQL is about
//! to invalidate the slot (`Slot about to be invalidated`, `wal_status = unreserved`), after a
//! definite error (`… failed`, `Slot invalidated`), and once it has stopped. The first four
//! clear by themselves as soon as the job (or the slot) moves again. A slot at risk (`extended`,
//! or past 80 % of `max_slot_wal_keep_size`) and a pause past `PAUSE_MAX_MS` are degraded but
//! working: SERVING, with the reason in `stageDetail`/`errorDetail`. [`JobHandle::health`]
//! decides; the
//! README's Health table documents it.

use tonic::{Request, Response, Status};
use tonic_health::server::HealthReporter;

use super::proto::health_check_response::ServingStatus;
use super::proto::health_service_server::HealthService;
use super::proto::{self, HealthCheckRequest, HealthCheckResponse};
use std::time::Duration;

use crate::job::{JobHandle, Stage};

/// The services whose `grpc.health.v1` status follows the job (besides the server's, "").
const SERVICE_NAMES: [&str; 4] = [
    "dbmazz.HealthService",
    "dbmazz.CdcControlService",
    "dbmazz.CdcStatusService",
    "dbmazz.CdcMetricsService",
];

/// `stageDetail` of a daemon without a CDC job.
pub(crate) const PROVISIONING_ONLY: &str =
    "Provisioning only: no CDC job (DATABASE_URL and TABLES are unset)";

/// Serves `dbmazz.HealthService`.
pub(crate) struct Health {
    /// The job whose health is reported; `None` in a provisioning-only daemon, which is
    /// healthy while it runs.
    job: Option<JobHandle>,
}

impl Health {
    /// Health of `job`.
    pub(crate) fn new(job: JobHandle) -> Self {
        Health { job: Some(job) }
    }

    /// Health of a daemon that only serves schema provisioning.
    pub(crate) fn provisioning_only() -> Self {
        Health { job: None }
    }
}

#[tonic::async_trait]
impl HealthService for Health {
    async fn check(
        &self,
        _request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let Some(job) = &self.job else {
            return Ok(Response::new(HealthCheckResponse {
                status: ServingStatus::Serving as i32,
                stage: proto::Stage::Unspecified as i32,
                stage_detail: PROVISIONING_ONLY.to_owned(),
                error_detail: String::new(),
            }));
        };
        let health = job.health();
        let status = if health.serving {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        Ok(Response::new(HealthCheckResponse {
            status: status as i32,
            stage: stage(health.stage) as i32,
            stage_detail: health.detail,
            error_detail: health.error.unwrap_or_default(),
        }))
    }
}

/// The wire form of a lifecycle stage.
pub(crate) fn stage(stage: Stage) -> proto::Stage {
    match stage {
        Stage::Init => proto::Stage::Init,
        Stage::Setup => proto::Stage::Setup,
        Stage::Snapshot => proto::Stage::Snapshot,
        Stage::Cdc => proto::Stage::Cdc,
    }
}

/// How often the `grpc.health.v1` statuses are re-evaluated besides state changes (a sink stall
/// shows through time passing, not through a state change).
const REEVALUATE: Duration = Duration::from_secs(1);

/// Keeps the `grpc.health.v1` statuses in step with the job until the job's state channel
/// closes.
pub(crate) async fn follow_job(job: JobHandle, reporter: HealthReporter) {
    let mut states = job.subscribe();
    let mut last = None;
    loop {
        states.borrow_and_update();
        let serving = job.health().serving;
        if last != Some(serving) {
            let status = if serving {
                tonic_health::ServingStatus::Serving
            } else {
                tonic_health::ServingStatus::NotServing
            };
            reporter.set_service_status("", status).await;
            for name in SERVICE_NAMES {
                reporter.set_service_status(name, status).await;
            }
            last = Some(serving);
        }
        tokio::select! {
            changed = states.changed() => if changed.is_err() {
                return;
            },
            _ = tokio::time::sleep(REEVALUATE) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FlushPolicy;
    use crate::job::RunState;
    use crate::metrics::now_unix_us;

    fn job(run: RunState, error: Option<&str>) -> JobHandle {
        let job = JobHandle::new(
            "s",
            &[],
            FlushPolicy {
                max_events: 10,
                max_bytes: 1 << 20,
                interval: Duration::from_secs(1),
            },
        );
        job.set_state(Stage::Cdc, run, "d", error.map(str::to_owned));
        job
    }

    #[test]
    fn a_failed_stopped_or_retrying_job_is_not_serving() {
        for run in [
            RunState::Starting,
            RunState::Running,
            RunState::Paused,
            RunState::Draining,
        ] {
            assert!(job(run, None).health().serving, "{run:?}");
        }
        let retrying = job(RunState::Starting, Some("connection refused")).health();
        assert!(!retrying.serving);
        assert_eq!(retrying.error.as_deref(), Some("connection refused"));
        assert!(!job(RunState::Failed, Some("boom")).health().serving);
        assert!(!job(RunState::Stopped, None).health().serving);
    }

    #[test]
    fn a_slot_at_risk_keeps_serving_an_unreserved_or_invalidated_one_does_not() {
        use crate::postgres::slot_health::{SlotAlarm, SlotView};
        let j = job(RunState::Running, None);
        let view = |alarm| SlotView {
            polled_unix_us: 1,
            alarm,
            ..SlotView::default()
        };
        j.report_slot(view(SlotAlarm::AtRisk("slot s retains 900 MiB".into())));
        let h = j.health();
        assert!(h.serving);
        assert_eq!(h.detail, "d (slot at risk)");
        assert_eq!(h.error.as_deref(), Some("slot s retains 900 MiB"));
        j.report_slot(view(SlotAlarm::Unreserved("beyond the keep size".into())));
        let h = j.health();
        assert!(!h.serving);
        assert_eq!(h.detail, "Slot about to be invalidated");
        j.report_slot(view(SlotAlarm::Invalidated("gone".into())));
        assert!(!j.health().serving);
        j.report_slot(view(SlotAlarm::None));
        let h = j.health();
        assert!(h.serving);
        assert_eq!(h.error, None);
        // A failed job reports its own error, not the slot's.
        let failed = job(RunState::Failed, Some("boom"));
        failed.report_slot(view(SlotAlarm::AtRisk("x".into())));
        assert_eq!(failed.health().error.as_deref(), Some("boom"));
    }

    #[test]
    fn a_sink_that_holds_a_batch_past_the_threshold_turns_health_and_back() {
        let j = job(RunState::Running, None);
        j.set_sink_stall_after(Duration::from_secs(60));
        let m = j.metrics().clone();
        m.sink_write_started();
        m.sink_write_failed("HTTP 503 from the BE".into());
        let now = now_unix_us();
        assert!(j.health_at(now + 59_000_000).serving);
        let stalled = j.health_at(now + 61_000_000);
        assert!(!stalled.serving);
        assert_eq!(stalled.detail, "Sink stalled");
        let why = stalled.error.unwrap();
        assert!(
            why.contains("HTTP 503 from the BE") && why.contains("HEALTH_SINK_STALL_MS"),
            "{why}"
        );
        m.sink_write_ended();
        assert!(j.health_at(now + 61_000_000).serving);
        // Zero turns the check off; a paused job holds no batch.
        m.sink_write_started();
        j.set_sink_stall_after(Duration::ZERO);
        assert!(j.health_at(now + 3_600_000_000).serving);
    }
}
