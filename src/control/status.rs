//! `dbmazz.CdcStatusService/GetStatus`: where the job is in the WAL.

use tonic::{Request, Response, Status};

use super::health;
use super::proto::cdc_status_service_server::CdcStatusService;
use super::proto::{CdcState, SchemaChangeStatus, StatusRequest, StatusResponse};
use crate::config::TableName;
use crate::job::{JobHandle, RunState};
use crate::postgres::slot_health::SlotAlarm;
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
        let m = self.job.metrics();
        let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
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
            schema_changes: self
                .job
                .metrics()
                .schema_events()
                .into_iter()
                .map(|e| SchemaChangeStatus {
                    table: e.table,
                    kind: e.kind.as_str().to_owned(),
                    action: e.action.to_owned(),
                    detail: e.detail,
                    lsn: lsn_text(Lsn(e.lsn)),
                    at_ms: (e.at_unix_us / 1000).max(0) as u64,
                })
                .collect(),
            streamed_txns_open: load(&m.streamed_txns_open),
            spill_memory_bytes: load(&m.spill_memory_bytes),
            spill_bytes: load(&m.spill_disk_bytes),
            spill_max_bytes: load(&m.spill_max_bytes),
            streamed_txns_total: load(&m.streamed_txns_total),
            ..slot_fields(&self.job)
        }))
    }
}

/// The wire form of a run state.
/// The WAL-growth guard's fields of GetStatus.
fn slot_fields(job: &JobHandle) -> StatusResponse {
    let view = job.slot_view();
    let r = &view.reading;
    let (alarm, detail) = match &view.alarm {
        _ if view.polled_unix_us == 0 => ("", String::new()),
        SlotAlarm::None => ("ok", String::new()),
        SlotAlarm::AtRisk(why) => ("at_risk", why.clone()),
        SlotAlarm::Unreserved(why) => ("unreserved", why.clone()),
        SlotAlarm::Invalidated(why) => ("invalidated", why.clone()),
    };
    StatusResponse {
        slot_wal_status: r.wal_status.clone(),
        slot_retained_wal_bytes: r.retained_bytes.unwrap_or(0),
        slot_safe_wal_size_bytes: r.safe_wal_size.unwrap_or(-1),
        max_slot_wal_keep_size_bytes: r
            .max_slot_wal_keep_size
            .map_or(-1, |k| i64::try_from(k).unwrap_or(i64::MAX)),
        slot_inactive_since_unix_ms: r.inactive_since_unix_us.map_or(0, |us| us / 1000),
        slot_invalidation_reason: r.invalidation_reason.clone().unwrap_or_default(),
        slot_alarm: alarm.into(),
        slot_alarm_detail: detail,
        slot_time_left_seconds: view
            .time_left
            .map_or(-1, |t| i64::try_from(t.as_secs()).unwrap_or(i64::MAX)),
        heartbeat_lag_seconds: job.metrics().heartbeat_lag_seconds().unwrap_or(-1.0),
        ..StatusResponse::default()
    }
}

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
