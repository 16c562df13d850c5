//! `dbmazz.SchemaService`: the gRPC way into the provisioning engine
//! ([`crate::provision::jobs`]). This layer only translates: messages to engine calls,
//! engine jobs to `SchemaJob`, [`ProvisionError`]s to status codes.

use std::pin::Pin;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use super::proto::schema_job;
use super::proto::schema_service_server::SchemaService;
use super::proto::upload_request::Part;
use super::proto::{
    job_event, DropDatabaseRequest, DropDatabaseResponse, GetJobRequest, JobEvent, ListJobsRequest,
    ListJobsResponse, SchemaJob, UploadMetadata, UploadRequest, UploadResponse, WatchJobRequest,
};
use crate::provision::error::ProvisionError;
use crate::provision::job::{Job, JobStatus, Overrides, SqlEngine, UploadMeta};
use crate::provision::jobs::{Engine, MAX_CHUNK_BYTES};

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
    }
}

fn meta_of(m: UploadMetadata, client: Option<std::net::IpAddr>) -> Result<UploadMeta, Status> {
    Ok(UploadMeta {
        engine: engine_of(m.engine, "metadata.engine")?,
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
        let body = stream.map(|msg| match msg {
            Ok(UploadRequest {
                part: Some(Part::Chunk(b)),
            }) => {
                if b.len() > MAX_CHUNK_BYTES {
                    Err(ProvisionError::InvalidArgument(format!(
                        "chunk of {} bytes: send at most {MAX_CHUNK_BYTES} bytes per message",
                        b.len()
                    )))
                } else {
                    Ok(Bytes::from(b))
                }
            }
            Ok(_) => Err(ProvisionError::InvalidArgument(
                "only the first UploadRequest carries metadata; later ones carry chunks".into(),
            )),
            Err(s) => Err(ProvisionError::Interrupted(s.message().to_owned())),
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
        let rx = self.engine.subscribe(&request.get_ref().id)?;
        // State: the receiver, and whether the final event was sent.
        let stream =
            futures_util::stream::unfold((rx, false, true), |(mut rx, ended, first)| async move {
                if ended {
                    return None;
                }
                if !first && rx.changed().await.is_err() {
                    return None;
                }
                let job = rx.borrow_and_update().clone();
                let ev = event(&job);
                Some((Ok(ev), (rx, job.status.is_final(), false)))
            });
        Ok(Response::new(Box::pin(stream)))
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
        let d = self.engine.drop_database(engine, &r.name, r.force).await?;
        Ok(Response::new(DropDatabaseResponse {
            dropped: d.dropped,
            terminated_connections: d.terminated_connections,
            message: d.message,
        }))
    }
}
