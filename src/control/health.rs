//! `dbmazz.HealthService/Check` and the standard `grpc.health.v1.Health`, both derived from the
//! job's state.
//!
//! The job is healthy (SERVING) while it starts, streams, is paused, drains, or retries a
//! transient failure; it is NOT_SERVING after a definite error — with an `errorDetail` that
//! says what is wrong and what to do — and once it has stopped.

use tonic::{Request, Response, Status};
use tonic_health::server::HealthReporter;

use super::proto::health_check_response::ServingStatus;
use super::proto::health_service_server::HealthService;
use super::proto::{self, HealthCheckRequest, HealthCheckResponse};
use crate::job::{JobHandle, JobState, RunState, Stage};

/// The services whose `grpc.health.v1` status follows the job (besides the server's, "").
const SERVICE_NAMES: [&str; 4] = [
    "dbmazz.HealthService",
    "dbmazz.CdcControlService",
    "dbmazz.CdcStatusService",
    "dbmazz.CdcMetricsService",
];

/// Serves `dbmazz.HealthService`.
pub(crate) struct Health {
    job: JobHandle,
}

impl Health {
    /// Health of `job`.
    pub(crate) fn new(job: JobHandle) -> Self {
        Health { job }
    }
}

#[tonic::async_trait]
impl HealthService for Health {
    async fn check(
        &self,
        _request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let state = self.job.state();
        Ok(Response::new(HealthCheckResponse {
            status: serving_status(&state) as i32,
            stage: stage(state.stage) as i32,
            stage_detail: state.detail,
            error_detail: state.error.unwrap_or_default(),
        }))
    }
}

/// Whether the job is healthy in `state`.
pub(crate) fn is_serving(state: &JobState) -> bool {
    !matches!(state.run, RunState::Failed | RunState::Stopped)
}

fn serving_status(state: &JobState) -> ServingStatus {
    if is_serving(state) {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
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

/// Keeps the `grpc.health.v1` statuses in step with the job until the job's state channel
/// closes.
pub(crate) async fn follow_job(job: JobHandle, reporter: HealthReporter) {
    let mut states = job.subscribe();
    drop(job);
    let mut last = None;
    loop {
        let serving = is_serving(&states.borrow_and_update());
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
        if states.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(run: RunState, error: Option<&str>) -> JobState {
        JobState {
            stage: Stage::Setup,
            run,
            detail: "d".into(),
            error: error.map(str::to_owned),
        }
    }

    #[test]
    fn only_a_failed_or_stopped_job_is_not_serving() {
        for run in [
            RunState::Starting,
            RunState::Running,
            RunState::Paused,
            RunState::Draining,
        ] {
            assert!(is_serving(&state(run, Some("retrying"))), "{run:?}");
        }
        assert!(!is_serving(&state(RunState::Failed, Some("boom"))));
        assert!(!is_serving(&state(RunState::Stopped, None)));
    }
}
