//! `dbmazz.SchemaService`: the gRPC way into the provisioning engine
//! ([`crate::provision::jobs`]). This layer only translates: messages to engine calls,
//! engine jobs to `SchemaJob`, [`ProvisionError`]s to status codes.

use std::pin::Pin;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::sync::watch;
use tonic::{Request, Response, Status, Streaming};

use super::proto::schema_job;
use super::proto::schema_service_server::SchemaService;
use super::proto::upload_request::Part;
use super::proto::{
    job_event, DropDatabaseRequest, DropDatabaseResponse, GetJobRequest, JobEvent, ListJobsRequest,
    ListJobsResponse, SchemaJob, UploadMetadata, UploadRequest, UploadResponse, WatchJobRequest,
};
use std::collections::BTreeMap;

use super::proto;
use crate::provision::error::ProvisionError;
use crate::provision::job::{Job, JobStatus, Overrides, SqlEngine, UploadMeta};
use crate::provision::jobs::{Engine, MAX_CHUNK_BYTES};
use crate::provision::migrate::{MigrateMeta, MigrationJob, OnFailure, Selector, TargetState};
use crate::provision::registry::{Filter, TenantDb};
use crate::provision::servers::is_label;

/// Serves `dbmazz.SchemaService` from an [`Engine`].
pub(crate) struct SchemaRpc {
    engine: Engine,
}

impl SchemaRpc {
    pub(crate) fn new(engine: Engine) -> SchemaRpc {
        SchemaRpc { engine }
    }

    fn enabled(&self) -> Result<(), Status> {
        if self.engine.is_enabled() {
            Ok(())
        } else {
            Err(ProvisionError::Disabled.into())
        }
    }
}

fn engine_of(value: i32, field: &str) -> Result<SqlEngine, Status> {
    match super::proto::SqlEngine::try_from(value) {
        Ok(super::proto::SqlEngine::Postgres) => Ok(SqlEngine::Postgres),
        Ok(super::proto::SqlEngine::Mysql) => Ok(SqlEngine::Mysql),
        _ => Err(Status::invalid_argument(format!(
            "{field}: expected POSTGRES or MYSQL"
        ))),
    }
}

/// The protobuf form of a job.
pub(crate) fn to_proto(j: &Job) -> SchemaJob {
    SchemaJob {
        id: j.id.clone(),
        status: match j.status {
            JobStatus::Queued => schema_job::Status::Queued,
            JobStatus::Running => schema_job::Status::Running,
            JobStatus::Success => schema_job::Status::Success,
            JobStatus::Failed => schema_job::Status::Failed,
        } as i32,
        progress: u32::from(j.progress),
        stage: j.stage.as_str().to_owned(),
        error: j.error.clone().unwrap_or_default(),
        sha256: j.sha256.clone(),
        bytes: j.bytes,
        bytes_applied: j.bytes_applied,
        statements: j.statements,
        engine: match j.engine {
            SqlEngine::Postgres => super::proto::SqlEngine::Postgres,
            SqlEngine::Mysql => super::proto::SqlEngine::Mysql,
        } as i32,
        database: j.database.clone(),
        server: j.server_name().to_owned(),
        file_name: j.file_name.clone(),
        dry_run: j.dry_run,
        created_database: j.created_database,
        created_at_ms: j.created_at_ms,
        started_at_ms: j.started_at_ms,
        finished_at_ms: j.finished_at_ms,
        apply_started_at_ms: j.apply_started_at_ms,
        idempotency_key: j.idempotency_key.clone().unwrap_or_default(),
    }
}

fn event(j: &Job) -> JobEvent {
    let kind = match j.status {
        JobStatus::Success => job_event::Type::Done,
        JobStatus::Failed => job_event::Type::Failed,
        JobStatus::Queued | JobStatus::Running => job_event::Type::Progress,
    };
    JobEvent {
        r#type: kind as i32,
        job: Some(to_proto(j)),
        migration: None,
    }
}

fn proto_engine(e: SqlEngine) -> i32 {
    let e = match e {
        SqlEngine::Postgres => super::proto::SqlEngine::Postgres,
        SqlEngine::Mysql => super::proto::SqlEngine::Mysql,
    };
    e as i32
}

fn proto_status(s: JobStatus) -> i32 {
    let s = match s {
        JobStatus::Queued => schema_job::Status::Queued,
        JobStatus::Running => schema_job::Status::Running,
        JobStatus::Success => schema_job::Status::Success,
        JobStatus::Failed => schema_job::Status::Failed,
    };
    s as i32
}

/// The protobuf form of a migration job.
pub(crate) fn migration_to_proto(j: &MigrationJob) -> proto::MigrationJob {
    use proto::migration_target::State;
    let n = |s| j.count(s) as u32;
    proto::MigrationJob {
        id: j.id.clone(),
        status: proto_status(j.status),
        migration_id: j.migration_id.clone(),
        sha256: j.sha256.clone(),
        bytes: j.bytes,
        file_name: j.file_name.clone(),
        engine: proto_engine(j.engine),
        on_failure: match j.on_failure {
            OnFailure::Continue => proto::OnFailure::Continue,
            OnFailure::Stop => proto::OnFailure::Stop,
        } as i32,
        created_at_ms: j.created_at_ms,
        started_at_ms: j.started_at_ms,
        finished_at_ms: j.finished_at_ms,
        total: j.targets.len() as u32,
        applied: n(TargetState::Applied),
        skipped: n(TargetState::Skipped),
        failed: n(TargetState::Failed),
        not_attempted: n(TargetState::NotAttempted),
        pending: n(TargetState::Pending),
        running: n(TargetState::Running),
        targets: j
            .targets
            .iter()
            .map(|t| proto::MigrationTarget {
                server: t.server.clone(),
                database: t.database.clone(),
                state: match t.state {
                    TargetState::Pending => State::Pending,
                    TargetState::Running => State::Running,
                    TargetState::Applied => State::Applied,
                    TargetState::Skipped => State::Skipped,
                    TargetState::Failed => State::Failed,
                    TargetState::NotAttempted => State::NotAttempted,
                } as i32,
                error: t.error.clone().unwrap_or_default(),
                line: t.line.unwrap_or(0),
                statements: t.statements,
                started_at_ms: t.started_at_ms,
                finished_at_ms: t.finished_at_ms,
            })
            .collect(),
        error: j.error.clone().unwrap_or_default(),
    }
}

fn migration_event(j: &MigrationJob) -> JobEvent {
    let kind = match j.status {
        JobStatus::Success => job_event::Type::Done,
        JobStatus::Failed => job_event::Type::Failed,
        JobStatus::Queued | JobStatus::Running => job_event::Type::Progress,
    };
    JobEvent {
        r#type: kind as i32,
        job: None,
        migration: Some(migration_to_proto(j)),
    }
}

fn tenant_to_proto(r: &TenantDb) -> proto::TenantDatabase {
    proto::TenantDatabase {
        server: r.server.clone(),
        engine: proto_engine(r.engine),
        database: r.database.clone(),
        state: r.state.as_str().to_owned(),
        created_by_dbmazz: r.created_by_dbmazz,
        created_at_ms: r.created_at_ms,
        job_id: r.job_id.clone(),
        file_name: r.file_name.clone(),
        sha256: r.sha256.clone(),
        migrations: r
            .migrations
            .iter()
            .map(|m| proto::AppliedMigration {
                id: m.id.clone(),
                sha256: m.sha256.clone(),
                applied_at_ms: m.applied_at_ms,
                job_id: m.job_id.clone(),
            })
            .collect(),
        last_failure: r.last_failure.as_ref().map(|f| proto::MigrationFailure {
            id: f.id.clone(),
            sha256: f.sha256.clone(),
            error: f.error.clone(),
            at_ms: f.at_ms,
            job_id: f.job_id.clone(),
        }),
    }
}

fn labels_of(
    map: std::collections::HashMap<String, String>,
    field: &str,
) -> Result<BTreeMap<String, String>, Status> {
    let mut out = BTreeMap::new();
    for (k, v) in map {
        if !is_label(&k) || !is_label(&v) {
            return Err(Status::invalid_argument(format!(
                "{field}: label {k:?} = {v:?}: keys and values are 1-63 letters, digits, '-', '_' and '.'"
            )));
        }
        out.insert(k, v);
    }
    Ok(out)
}

fn meta_of(m: UploadMetadata, client: Option<std::net::IpAddr>) -> Result<UploadMeta, Status> {
    Ok(UploadMeta {
        engine: engine_of(m.engine, "metadata.engine")?,
        server: Some(m.server).filter(|s| !s.is_empty()),
        placement_labels: labels_of(m.placement_labels, "metadata.placement_labels")?,
        database: m.database,
        file_name: m.file_name,
        idempotency_key: m.idempotency_key,
        overrides: Overrides {
            fail_if_db_exists: m.fail_if_db_exists,
            drop_db_on_failure: m.drop_db_on_failure,
            delete_schema_after_apply: m.delete_schema_after_apply,
            deduplicate_by_hash: m.deduplicate_by_hash,
            dry_run: m.dry_run,
            enable_sql_guard: m.enable_sql_guard,
        },
        client,
    })
}

/// The messages after the metadata of a client-streaming upload as the engine takes them:
/// each one's chunk (`chunk_of`; `None` is a second metadata, refused), at most
/// [`MAX_CHUNK_BYTES`]; a broken stream ends the upload as interrupted.
fn file_chunks<M>(
    stream: Streaming<M>,
    message: &'static str,
    chunk_of: fn(M) -> Option<Vec<u8>>,
) -> impl Stream<Item = Result<Bytes, ProvisionError>> + Send + Unpin
where
    M: Send + 'static,
{
    stream.map(move |msg| match msg.map(chunk_of) {
        Ok(Some(b)) if b.len() > MAX_CHUNK_BYTES => Err(ProvisionError::InvalidArgument(format!(
            "chunk of {} bytes: send at most {MAX_CHUNK_BYTES} bytes per message",
            b.len()
        ))),
        Ok(Some(b)) => Ok(Bytes::from(b)),
        Ok(None) => Err(ProvisionError::InvalidArgument(format!(
            "only the first {message} carries metadata; later ones carry chunks"
        ))),
        Err(s) => Err(ProvisionError::Interrupted(s.message().to_owned())),
    })
}

/// A job's events: its state now, then one per change, ending after the first final one
/// (`to_event` gives the event and whether the job has ended).
fn job_events<T>(rx: watch::Receiver<T>, to_event: fn(&T) -> (JobEvent, bool)) -> EventStream
where
    T: Clone + Send + Sync + 'static,
{
    // State: the receiver, whether the final event was sent, whether this is the first.
    Box::pin(futures_util::stream::unfold(
        (rx, false, true),
        move |(mut rx, ended, first)| async move {
            if ended {
                return None;
            }
            if !first && rx.changed().await.is_err() {
                return None;
            }
            let (ev, last) = to_event(&rx.borrow_and_update());
            Some((Ok(ev), (rx, last, false)))
        },
    ))
}

type EventStream = Pin<Box<dyn Stream<Item = Result<JobEvent, Status>> + Send>>;

#[tonic::async_trait]
impl SchemaService for SchemaRpc {
    async fn upload(
        &self,
        request: Request<Streaming<UploadRequest>>,
    ) -> Result<Response<UploadResponse>, Status> {
        self.enabled()?;
        let client = request.remote_addr().map(|a| a.ip());
        let mut stream = request.into_inner();
        let first = stream
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("empty upload: send metadata first"))?;
        let Some(Part::Metadata(m)) = first.part else {
            return Err(Status::invalid_argument(
                "the first UploadRequest must carry metadata (engine, database, file_name)",
            ));
        };
        let meta = meta_of(m, client)?;
        let body = file_chunks(stream, "UploadRequest", |m| match m.part {
            Some(Part::Chunk(b)) => Some(b),
            _ => None,
        });
        let done = self.engine.submit(meta, Box::pin(body)).await?;
        Ok(Response::new(UploadResponse {
            job_id: done.job_id,
            deduplicated: done.deduplicated,
            sha256: done.sha256,
            bytes: done.bytes,
        }))
    }

    async fn get_job(
        &self,
        request: Request<GetJobRequest>,
    ) -> Result<Response<SchemaJob>, Status> {
        self.enabled()?;
        let job = self.engine.get(&request.get_ref().id)?;
        Ok(Response::new(to_proto(&job)))
    }

    type WatchJobStream = EventStream;

    async fn watch_job(
        &self,
        request: Request<WatchJobRequest>,
    ) -> Result<Response<Self::WatchJobStream>, Status> {
        self.enabled()?;
        let id = &request.get_ref().id;
        if self.engine.is_migration(id) {
            let rx = self.engine.subscribe_migration(id)?;
            return Ok(Response::new(job_events(rx, |j| {
                (migration_event(j), j.status.is_final())
            })));
        }
        let rx = self.engine.subscribe(id)?;
        Ok(Response::new(job_events(rx, |j| {
            (event(j), j.status.is_final())
        })))
    }

    async fn list_jobs(
        &self,
        request: Request<ListJobsRequest>,
    ) -> Result<Response<ListJobsResponse>, Status> {
        self.enabled()?;
        let jobs = self.engine.list(request.get_ref().limit as usize)?;
        Ok(Response::new(ListJobsResponse {
            jobs: jobs.iter().map(to_proto).collect(),
        }))
    }

    async fn drop_database(
        &self,
        request: Request<DropDatabaseRequest>,
    ) -> Result<Response<DropDatabaseResponse>, Status> {
        self.enabled()?;
        let r = request.into_inner();
        let engine = engine_of(r.engine, "engine")?;
        let server = Some(r.server.as_str()).filter(|s| !s.is_empty());
        let d = self
            .engine
            .drop_database(engine, server, &r.name, r.force)
            .await?;
        Ok(Response::new(DropDatabaseResponse {
            dropped: d.dropped,
            terminated_connections: d.terminated_connections,
            message: d.message,
        }))
    }

    async fn list_servers(
        &self,
        _request: Request<proto::ListServersRequest>,
    ) -> Result<Response<proto::ListServersResponse>, Status> {
        self.enabled()?;
        let servers = self.engine.list_servers().await?;
        Ok(Response::new(proto::ListServersResponse {
            servers: servers
                .into_iter()
                .map(|s| proto::ServerInfo {
                    name: s.name,
                    engine: proto_engine(s.engine),
                    address: s.address,
                    reachable: s.reachable,
                    version: s.version,
                    error: s.error,
                    tenants: s.tenants,
                    capacity: s.capacity,
                    free: s.capacity.map(|c| c.saturating_sub(s.tenants)),
                    weight: s.weight,
                    labels: s.labels.into_iter().collect(),
                    role: s.role,
                })
                .collect(),
        }))
    }

    async fn list_databases(
        &self,
        request: Request<proto::ListDatabasesRequest>,
    ) -> Result<Response<proto::ListDatabasesResponse>, Status> {
        self.enabled()?;
        let r = request.into_inner();
        let filter = Filter {
            server: Some(r.server).filter(|s| !s.is_empty()),
            engine: match r.engine {
                0 => None,
                e => Some(engine_of(e, "engine")?),
            },
            labels: labels_of(r.labels, "labels")?,
            name_prefix: Some(r.name_prefix).filter(|s| !s.is_empty()),
            missing_migration: Some(r.missing_migration).filter(|s| !s.is_empty()),
            failed_only: r.failed_only,
        };
        let all = self.engine.list_databases(&filter)?;
        let total = all.len() as u32;
        let limit = if r.limit == 0 {
            all.len()
        } else {
            r.limit as usize
        };
        Ok(Response::new(proto::ListDatabasesResponse {
            databases: all.iter().take(limit).map(tenant_to_proto).collect(),
            total,
        }))
    }

    async fn migrate_databases(
        &self,
        request: Request<Streaming<proto::MigrateRequest>>,
    ) -> Result<Response<proto::MigrateResponse>, Status> {
        use proto::migrate_request::Part as MPart;
        self.enabled()?;
        let client = request.remote_addr().map(|a| a.ip());
        let mut stream = request.into_inner();
        let first = stream
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("empty request: send metadata first"))?;
        let Some(MPart::Metadata(m)) = first.part else {
            return Err(Status::invalid_argument(
                "the first MigrateRequest must carry metadata (engine, file_name, a selector)",
            ));
        };
        let chosen = [
            m.all,
            !m.server.is_empty(),
            !m.labels.is_empty(),
            !m.databases.is_empty(),
        ]
        .iter()
        .filter(|x| **x)
        .count();
        if chosen != 1 {
            return Err(Status::invalid_argument(
                "metadata: set exactly one of all, server, labels or databases",
            ));
        }
        let selector = if m.all {
            Selector::All
        } else if !m.server.is_empty() {
            Selector::Server(m.server)
        } else if !m.labels.is_empty() {
            Selector::Labels(labels_of(m.labels, "metadata.labels")?)
        } else {
            Selector::Databases(m.databases)
        };
        let meta = MigrateMeta {
            engine: engine_of(m.engine, "metadata.engine")?,
            migration_id: Some(m.migration_id).filter(|s| !s.is_empty()),
            file_name: m.file_name,
            selector,
            on_failure: match proto::OnFailure::try_from(m.on_failure) {
                Ok(proto::OnFailure::Stop) => OnFailure::Stop,
                _ => OnFailure::Continue,
            },
            client,
        };
        let body = file_chunks(stream, "MigrateRequest", |m| match m.part {
            Some(MPart::Chunk(b)) => Some(b),
            _ => None,
        });
        let done = self.engine.migrate(meta, Box::pin(body)).await?;
        Ok(Response::new(proto::MigrateResponse {
            job_id: done.job_id,
            databases: done.databases,
            sha256: done.sha256,
            bytes: done.bytes,
            migration_id: done.migration_id,
        }))
    }

    async fn get_migration(
        &self,
        request: Request<GetJobRequest>,
    ) -> Result<Response<proto::MigrationJob>, Status> {
        self.enabled()?;
        let job = self.engine.migration(&request.get_ref().id)?;
        Ok(Response::new(migration_to_proto(&job)))
    }
}
