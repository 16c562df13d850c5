//! `dbmazz.CdcStatusService/GetStatus`: where the job is in the WAL.

use tonic::{Request, Response, Status};

use super::health;
use super::proto::cdc_status_service_server::CdcStatusService;
use super::proto::{CdcState, StatusRequest, StatusResponse};
use crate::config::TableName;
use crate::job::{JobHandle, RunState};
use crate::Lsn;

/// Serves `dbmazz.CdcStatusService`.
pub(crate) struct StatusService {
    job: JobHandle,
}

impl StatusService {
    /// Status of `job`.
    pub(crate) fn new(job: JobHandle) -> Self {
        StatusService { job }
    }
}

#[tonic::async_trait]
impl CdcStatusService for StatusService {
    async fn get_status(
        &self,
        _request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        let state = self.job.state();
        let confirmed = self.job.confirmed_lsn();
        let current = self.job.received_lsn().max(confirmed);
        let circuit = self.job.circuit().state();
        Ok(Response::new(StatusResponse {
            state: cdc_state(state.run) as i32,
            current_lsn: current.0,
            confirmed_lsn: confirmed.0,
            pending_events: self.job.metrics().pending_events(),
            slot_name: self.job.slot_name().to_owned(),
            tables: self.job.tables().iter().map(display_name).collect(),
            current_lsn_text: lsn_text(current),
            confirmed_lsn_text: lsn_text(confirmed),
            stage: health::stage(state.stage) as i32,
            sink_circuit_open: circuit.open,
            sink_circuit_opened_at_ms: (circuit.opened_at_unix_us / 1000).max(0) as u64,
            sink_consecutive_failures: circuit.consecutive_failures,
            sink_circuit_opened_total: circuit.opened_total,
        }))
    }
}

/// The wire form of a run state.
pub(crate) fn cdc_state(run: RunState) -> CdcState {
    match run {
        RunState::Starting => CdcState::Starting,
        RunState::Running => CdcState::Running,
        RunState::Paused => CdcState::Paused,
        RunState::Draining => CdcState::Draining,
        RunState::Stopped => CdcState::Stopped,
        RunState::Failed => CdcState::Failed,
    }
}

/// A table as operators write it in `TABLES`: bare for `public`, `schema.table` otherwise.
pub(crate) fn display_name(table: &TableName) -> String {
    if table.schema == "public" {
        table.name.clone()
    } else {
        table.to_string()
    }
}

/// PostgreSQL's `X/Y` text form.
pub(crate) fn lsn_text(lsn: Lsn) -> String {
    lsn.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_tables_are_listed_by_bare_name() {
        assert_eq!(display_name(&TableName::new("public", "orders")), "orders");
        assert_eq!(display_name(&TableName::new("sales", "t")), "sales.t");
    }

    #[test]
    fn lsn_text_is_postgres_form() {
        assert_eq!(lsn_text(Lsn(0x1_0000_00AB)), "1/AB");
        assert_eq!(lsn_text(Lsn::ZERO), "0/0");
    }
}
