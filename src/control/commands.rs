//! `dbmazz.CdcControlService`: Pause, Resume, ReloadConfig, DrainAndStop and its 1.x name Stop,
//! and the dead-letter calls ListDeadLetters and ReplayDeadLetters (see `replay.rs`).
//!
//! Each call asks the job through its handle and, where the change takes effect asynchronously
//! (pause, resume), waits a bounded time for the job to get there so that the reply can report
//! the state reached. Every call is logged with its name, the caller's address and the result.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::watch;
use tonic::{Request, Response, Status};

use super::error::RpcError;
use super::proto::cdc_control_service_server::CdcControlService;
use super::proto::{
    ControlResponse, DeadLetter as DeadLetterMessage, DrainRequest, ListDeadLettersRequest,
    ListDeadLettersResponse, PauseRequest, ReloadConfigRequest, ReplayDeadLettersRequest,
    ReplayDeadLettersResponse, ResumeRequest, StopRequest,
};
use super::status::{cdc_state, display_name, lsn_text};
use crate::config::{parse_tables, TableName};
use crate::job::{JobHandle, RunState};
use crate::replay::{Replayer, DEFAULT_LIST_LIMIT};
use crate::starrocks::rejects::{DeadLetter, LetterFilter};

/// How long Pause waits for the job to flush, confirm and close the replication connection.
const PAUSE_WAIT: Duration = Duration::from_secs(30);
/// How long Resume waits for the job to stream again.
const RESUME_WAIT: Duration = Duration::from_secs(10);

/// Serves `dbmazz.CdcControlService`.
pub(crate) struct Commands {
    job: JobHandle,
    /// Set when the process should stop although the job cannot drain (it failed).
    stop: watch::Sender<bool>,
    replayer: std::sync::Arc<Replayer>,
}

impl Commands {
    /// Commands for `job`; `stop` asks the process to end when the job cannot drain.
    pub(crate) fn new(
        job: JobHandle,
        stop: watch::Sender<bool>,
        replayer: std::sync::Arc<Replayer>,
    ) -> Self {
        Commands {
            job,
            stop,
            replayer,
        }
    }

    async fn list_dead_letters(
        &self,
        req: &ListDeadLettersRequest,
    ) -> Result<ListDeadLettersResponse, RpcError> {
        let (letters, total) = self.replayer.list(&list_filter(req)?).await?;
        Ok(ListDeadLettersResponse {
            letters: letters.into_iter().map(letter_message).collect(),
            total,
        })
    }

    async fn replay_dead_letters(
        &self,
        req: &ReplayDeadLettersRequest,
    ) -> Result<ReplayDeadLettersResponse, RpcError> {
        let report = self
            .replayer
            .replay(req.tables.clone(), req.keys.clone(), req.dry_run)
            .await?;
        Ok(ReplayDeadLettersResponse {
            matched: report.letters.len() as u32,
            resolved: report.resolved,
            deleted: report.deleted,
            failed: report.failed,
            version: report.version.0,
            version_text: if report.version.0 == 0 {
                String::new()
            } else {
                report.version.to_string()
            },
            dry_run: req.dry_run,
            letters: report.letters.into_iter().map(letter_message).collect(),
        })
    }

    async fn pause(&self) -> Result<ControlResponse, RpcError> {
        self.job.pause()?;
        let run = self.settle(PAUSE_WAIT, |r| r == RunState::Paused).await;
        let message = if run == RunState::Paused {
            "paused: everything received is flushed and confirmed; new changes wait in the slot"
        } else {
            "pause requested: the job is still flushing"
        };
        Ok(self.reply(message.into()))
    }

    async fn resume(&self) -> Result<ControlResponse, RpcError> {
        self.job.resume()?;
        let run = self.settle(RESUME_WAIT, |r| r == RunState::Running).await;
        let message = if run == RunState::Running {
            "resumed: streaming from the checkpoint"
        } else {
            "resume requested: the job is still reconnecting"
        };
        Ok(self.reply(message.into()))
    }

    fn reload(&self, req: &ReloadConfigRequest) -> Result<ControlResponse, RpcError> {
        if !req.tables.is_empty() {
            self.check_tables(&req.tables)?;
        }
        let nonzero = |v: u64| (v != 0).then_some(v);
        let policy = self
            .job
            .reload(nonzero(req.flush_size), nonzero(req.flush_interval_ms))?;
        let message = format!(
            "in force: flush_size={} flush_interval_ms={}",
            policy.max_events,
            policy.interval.as_millis()
        );
        Ok(self.reply(message))
    }

    /// Accepts a table list only when it names the running tables (in any order).
    fn check_tables(&self, requested: &[String]) -> Result<(), RpcError> {
        let wanted = parse_tables(&requested.join(",")).map_err(RpcError::BadTables)?;
        let running = self.job.tables();
        let same = wanted.len() == running.len() && wanted.iter().all(|t| running.contains(t));
        if same {
            return Ok(());
        }
        let names = |tables: &[TableName]| {
            tables
                .iter()
                .map(display_name)
                .collect::<Vec<_>>()
                .join(",")
        };
        Err(RpcError::TablesNeedRestart {
            running: names(&running),
            requested: names(&wanted),
        })
    }

    /// Drains within `timeout_ms` (0: `SHUTDOWN_TIMEOUT_MS`).
    async fn drain_and_stop(&self, timeout_ms: u64) -> Result<ControlResponse, RpcError> {
        if self.job.state().run == RunState::Failed {
            // Nothing to drain: the job already stopped with an error that Health reports.
            self.stop.send_replace(true);
            return Ok(self.reply(
                "the job had failed (see HealthService/Check); the process stops with exit code 1"
                    .into(),
            ));
        }
        let timeout = match timeout_ms {
            0 => self.job.shutdown_timeout(),
            ms => Duration::from_millis(ms),
        };
        let confirmed = self.job.drain_and_stop(timeout).await?;
        // The process ends either way; after a failure main waits for this.
        self.stop.send_replace(true);
        if self.job.state().run == RunState::Failed {
            let mut reply = self.reply(
                "the job failed while draining (see HealthService/Check); the process stops with exit code 1"
                    .into(),
            );
            reply.success = false;
            return Ok(reply);
        }
        let mut reply = self.reply(format!(
            "drained: everything received is durable and confirmed up to {confirmed}; the process exits"
        ));
        reply.confirmed_lsn = confirmed.0;
        reply.confirmed_lsn_text = lsn_text(confirmed);
        Ok(reply)
    }

    /// Waits until the run state satisfies `reached`, the job ends, or `limit` passes; returns
    /// the run state then.
    async fn settle(&self, limit: Duration, reached: impl Fn(RunState) -> bool) -> RunState {
        let mut states = self.job.subscribe();
        let _ = tokio::time::timeout(
            limit,
            states.wait_for(|s| {
                reached(s.run) || matches!(s.run, RunState::Stopped | RunState::Failed)
            }),
        )
        .await;
        self.job.state().run
    }

    fn reply(&self, message: String) -> ControlResponse {
        let policy = self.job.flush_policy();
        ControlResponse {
            success: true,
            message,
            state: cdc_state(self.job.state().run) as i32,
            flush_size: policy.max_events as u64,
            flush_interval_ms: policy.interval.as_millis() as u64,
            confirmed_lsn: 0,
            confirmed_lsn_text: String::new(),
        }
    }
}

/// Logs a control call (never its arguments' secrets: there are none) and turns the result
/// into a gRPC reply.
fn audited(
    rpc: &'static str,
    peer: Option<SocketAddr>,
    result: Result<ControlResponse, RpcError>,
) -> Result<Response<ControlResponse>, Status> {
    let peer = peer_text(peer);
    match result {
        Ok(reply) => {
            tracing::info!(rpc, peer, result = "ok", success = reply.success, detail = %reply.message, "control call");
            Ok(Response::new(reply))
        }
        Err(err) => {
            tracing::info!(rpc, peer, result = ?err.code(), error = %err, "control call refused");
            Err(err.into())
        }
    }
}

/// The filter of a ListDeadLetters request.
pub(crate) fn list_filter(req: &ListDeadLettersRequest) -> Result<LetterFilter, RpcError> {
    let status = match req.status.as_str() {
        "" | "open" => Some("open".to_owned()),
        "resolved" => Some("resolved".to_owned()),
        "all" => None,
        other => {
            return Err(crate::replay::ReplayError::Invalid(format!(
                "status {other:?}: expected open, resolved or all"
            ))
            .into())
        }
    };
    Ok(LetterFilter {
        tables: req.tables.clone(),
        keys: Vec::new(),
        status,
        limit: if req.limit == 0 {
            DEFAULT_LIST_LIMIT
        } else {
            req.limit
        },
    })
}

/// A dead letter as the API shows it.
pub(crate) fn letter_message(l: DeadLetter) -> DeadLetterMessage {
    DeadLetterMessage {
        id: l.id,
        table: l.source_table,
        key: l.key,
        row: l.row,
        op: l.op,
        cdc_version: l.version,
        reason: l.reason,
        label: l.label,
        status: l.status,
        first_seen: l.first_seen,
        last_seen: l.last_seen,
        resolved_at: l.resolved_at.unwrap_or_default(),
    }
}

/// Logs a dead-letter call and turns its result into a gRPC reply.
fn audited_call<T>(
    rpc: &'static str,
    peer: Option<SocketAddr>,
    result: Result<T, RpcError>,
) -> Result<Response<T>, Status> {
    let peer = peer_text(peer);
    match result {
        Ok(reply) => {
            tracing::info!(rpc, peer, result = "ok", "control call");
            Ok(Response::new(reply))
        }
        Err(err) => {
            tracing::info!(rpc, peer, result = ?err.code(), error = %err, "control call refused");
            Err(err.into())
        }
    }
}

/// The caller's address for logs.
fn peer_text(peer: Option<SocketAddr>) -> String {
    peer.map_or_else(|| "unknown".into(), |p| p.to_string())
}

#[tonic::async_trait]
impl CdcControlService for Commands {
    async fn pause(
        &self,
        request: Request<PauseRequest>,
    ) -> Result<Response<ControlResponse>, Status> {
        audited("Pause", request.remote_addr(), self.pause().await)
    }

    async fn resume(
        &self,
        request: Request<ResumeRequest>,
    ) -> Result<Response<ControlResponse>, Status> {
        audited("Resume", request.remote_addr(), self.resume().await)
    }

    async fn drain_and_stop(
        &self,
        request: Request<DrainRequest>,
    ) -> Result<Response<ControlResponse>, Status> {
        let peer = request.remote_addr();
        tracing::info!(
            rpc = "DrainAndStop",
            peer = peer_text(peer),
            "stop requested"
        );
        let timeout_ms = u64::from(request.get_ref().timeout_ms);
        audited("DrainAndStop", peer, self.drain_and_stop(timeout_ms).await)
    }

    async fn stop(
        &self,
        request: Request<StopRequest>,
    ) -> Result<Response<ControlResponse>, Status> {
        let peer = request.remote_addr();
        tracing::info!(rpc = "Stop", peer = peer_text(peer), "stop requested");
        audited("Stop", peer, self.drain_and_stop(0).await)
    }

    async fn reload_config(
        &self,
        request: Request<ReloadConfigRequest>,
    ) -> Result<Response<ControlResponse>, Status> {
        let result = self.reload(request.get_ref());
        audited("ReloadConfig", request.remote_addr(), result)
    }

    async fn list_dead_letters(
        &self,
        request: Request<ListDeadLettersRequest>,
    ) -> Result<Response<ListDeadLettersResponse>, Status> {
        let result = self.list_dead_letters(request.get_ref()).await;
        audited_call("ListDeadLetters", request.remote_addr(), result)
    }

    async fn replay_dead_letters(
        &self,
        request: Request<ReplayDeadLettersRequest>,
    ) -> Result<Response<ReplayDeadLettersResponse>, Status> {
        let peer = request.remote_addr();
        let req = request.get_ref();
        tracing::info!(
            rpc = "ReplayDeadLetters",
            peer = peer_text(peer),
            tables = ?req.tables,
            keys = req.keys.len(),
            dry_run = req.dry_run,
            "replay requested"
        );
        let result = self.replay_dead_letters(req).await;
        audited_call("ReplayDeadLetters", peer, result)
    }
}
