//! Runs provisioning jobs: one worker permit per job, the applier for its engine, the job's
//! record kept current, and the cleanup a failed job owes.
//!
//! ```text
//! run: permit (SCHEMA_WORKERS) ─▶ validating (the upload's verdict) ─▶ Applier::apply
//!      ─▶ cleanup (drop the database on failure, delete the upload) ─▶ done
//! ```
//!
//! The runner knows servers only through [`Applier`]; the appliers report back through
//! [`JobProgress`], which [`JobCtx`] implements here: stage changes are persisted at once,
//! progress is recorded on every call but wakes subscribers at most every 100 ms (or when the
//! percentage grows).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{watch, Semaphore};

use super::applier::{Applier, JobProgress, Target};
use super::apply_mysql::{MySqlApplier, MySqlApplyError};
use super::apply_pg::{PgApplier, PgApplyError};
use super::config::{JobOptions, ProvisionConfig};
use super::job::{now_ms, Job, JobStatus, JobStep, SqlEngine};
use super::store::{JobRecord, Store};
use super::upload::ValidationError;

/// Shortest time between two progress events of one job (a change of percentage is always
/// sent).
const PROGRESS_EVERY: Duration = Duration::from_millis(100);

/// One job's live state: what every reader sees (through the `watch`), and its options.
pub(super) struct Slot {
    /// The job as it is now; subscribers follow it.
    pub(super) tx: watch::Sender<Job>,
    /// The resolved options of the job.
    pub(super) options: JobOptions,
}

/// Why a job failed; the text is the job's `error`.
#[derive(Debug, thiserror::Error)]
pub(super) enum JobError {
    /// The upload does not split, or the SQL guard refused a statement.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// PostgreSQL refused (boxed: server errors are large, and jobs fail rarely).
    #[error(transparent)]
    Postgres(Box<PgApplyError>),
    /// MySQL refused.
    #[error(transparent)]
    MySql(Box<MySqlApplyError>),
    /// The job's engine is not configured (the service refuses such jobs before they run).
    #[error("{var} is not set")]
    NotConfigured {
        /// The engine's variable.
        var: &'static str,
    },
}

impl From<PgApplyError> for JobError {
    fn from(e: PgApplyError) -> JobError {
        JobError::Postgres(Box::new(e))
    }
}

impl From<MySqlApplyError> for JobError {
    fn from(e: MySqlApplyError) -> JobError {
        JobError::MySql(Box::new(e))
    }
}

/// Runs jobs on a bounded pool and keeps their records; shared by every job.
pub(super) struct Runner {
    postgres: Option<PgApplier>,
    mysql: Option<MySqlApplier>,
    store: Store,
    /// `SCHEMA_JOB_STORE_PATH`, for messages.
    store_path: PathBuf,
    /// `SCHEMA_TMP_PATH`: where uploads are stored.
    tmp_path: PathBuf,
    /// `SCHEMA_WORKERS` permits.
    workers: Arc<Semaphore>,
}

impl Runner {
    /// A runner with the appliers `cfg` configures, keeping records in `store`.
    pub(super) fn new(cfg: &ProvisionConfig, store: Store) -> Runner {
        Runner {
            postgres: PgApplier::new(cfg),
            mysql: MySqlApplier::new(cfg),
            store,
            store_path: cfg.job_store_path.clone(),
            tmp_path: cfg.tmp_path.clone(),
            workers: Arc::new(Semaphore::new(cfg.workers)),
        }
    }

    /// Whether `engine` has an applier (its URL is set).
    fn is_configured(&self, engine: SqlEngine) -> bool {
        match engine {
            SqlEngine::Postgres => self.postgres.is_some(),
            SqlEngine::Mysql => self.mysql.is_some(),
        }
    }

    /// Where the upload of job `id` is stored.
    pub(super) fn upload_path(&self, id: &str) -> PathBuf {
        self.tmp_path.join(format!("{id}.sql"))
    }

    /// Writes a job's record; a failure is logged (the in-memory state stays authoritative).
    pub(super) fn persist(&self, slot: &Slot) {
        let record = JobRecord {
            job: slot.tx.borrow().clone(),
            options: slot.options,
        };
        if let Err(e) = self.store.save(&record) {
            tracing::error!(job = %record.job.id, dir = %self.store_path.display(), error = %e, "cannot write the schema job record (SCHEMA_JOB_STORE_PATH)");
        }
    }

    /// Runs one job to its end on a worker permit.
    /// `validation` is the verdict of the [`Validator`](super::upload::Validator) that saw the
    /// upload.
    pub(super) async fn run(
        self: Arc<Self>,
        slot: Arc<Slot>,
        validation: Result<u64, ValidationError>,
    ) {
        let Ok(_permit) = self.workers.clone().acquire_owned().await else {
            return;
        };
        slot.tx.send_modify(|j| {
            j.status = JobStatus::Running;
            j.stage = JobStep::Validating;
            j.started_at_ms = now_ms();
        });
        self.persist(&slot);
        let mut ctx = JobCtx::new(self.clone(), slot.clone());
        let result = self.execute(&mut ctx, validation).await;
        let (id, engine, database, created) = {
            let j = slot.tx.borrow();
            (
                j.id.clone(),
                j.engine,
                j.database.clone(),
                j.created_database,
            )
        };
        let mut error = result.err().map(|e| e.to_string());
        if error.is_some() || slot.options.delete_schema_after_apply {
            ctx.set_stage(JobStep::Cleanup);
        }
        if let Some(message) = &mut error {
            if created && slot.options.drop_db_on_failure {
                match self.drop_db(engine, &database).await {
                    Ok(_) => {
                        message.push_str(&format!("; database {database} was dropped"));
                        slot.tx.send_modify(|j| j.created_database = false);
                    }
                    Err(e) => {
                        message.push_str(&format!("; dropping database {database} failed too: {e}"))
                    }
                }
            } else if created {
                message.push_str(&format!(
                    "; database {database} was kept (SCHEMA_DROP_DB_ON_FAILURE=false)"
                ));
            }
        }
        if slot.options.delete_schema_after_apply {
            let _ = tokio::fs::remove_file(self.upload_path(&id)).await;
        }
        slot.tx.send_modify(|j| {
            j.stage = JobStep::Done;
            j.finished_at_ms = now_ms();
            match &error {
                None => {
                    j.status = JobStatus::Success;
                    j.progress = 100;
                    if !j.dry_run {
                        j.bytes_applied = j.bytes;
                    }
                }
                Some(e) => {
                    j.status = JobStatus::Failed;
                    j.error = Some(e.clone());
                }
            }
        });
        self.persist(&slot);
        match &error {
            None => {
                tracing::info!(job = %id, %engine, database = %database, "schema job succeeded")
            }
            Some(e) => {
                tracing::warn!(job = %id, %engine, database = %database, error = %e, "schema job failed")
            }
        }
    }

    /// The validation's verdict (made during the upload), then (unless a dry run) the apply.
    async fn execute(
        &self,
        ctx: &mut JobCtx,
        validation: Result<u64, ValidationError>,
    ) -> Result<(), JobError> {
        let (id, engine, database) = {
            let j = ctx.slot.tx.borrow();
            (j.id.clone(), j.engine, j.database.clone())
        };
        let path = self.upload_path(&id);
        let statements = validation?;
        if ctx.slot.options.dry_run {
            ctx.slot.tx.send_modify(|j| j.statements = statements);
            return Ok(());
        }
        let target = Target {
            database: &database,
            fail_if_db_exists: ctx.slot.options.fail_if_db_exists,
            upload: &path,
        };
        match engine {
            SqlEngine::Postgres => Ok(self.postgres()?.apply(target, ctx).await?),
            SqlEngine::Mysql => Ok(self.mysql()?.apply(target, ctx).await?),
        }
    }

    fn postgres(&self) -> Result<&PgApplier, JobError> {
        self.postgres.as_ref().ok_or(JobError::NotConfigured {
            var: SqlEngine::Postgres.url_var(),
        })
    }

    fn mysql(&self) -> Result<&MySqlApplier, JobError> {
        self.mysql.as_ref().ok_or(JobError::NotConfigured {
            var: SqlEngine::Mysql.url_var(),
        })
    }

    /// Drops a database on `engine` after terminating its connections: (existed, terminated).
    pub(super) async fn drop_db(
        &self,
        engine: SqlEngine,
        name: &str,
    ) -> Result<(bool, u32), JobError> {
        match engine {
            SqlEngine::Postgres => Ok(self.postgres()?.drop_database(name).await?),
            SqlEngine::Mysql => Ok(self.mysql()?.drop_database(name).await?),
        }
    }

    /// Cleans up after a job that was running when the daemon died.
    pub(super) async fn finish_interrupted(self: Arc<Self>, slot: Arc<Slot>) {
        let (id, engine, database, created) = {
            let j = slot.tx.borrow();
            (
                j.id.clone(),
                j.engine,
                j.database.clone(),
                j.created_database,
            )
        };
        if created && slot.options.drop_db_on_failure {
            let note = if !self.is_configured(engine) {
                format!(
                    "; database {database} was kept: {} is no longer set",
                    engine.url_var()
                )
            } else {
                match self.drop_db(engine, &database).await {
                    Ok(_) => {
                        slot.tx.send_modify(|j| j.created_database = false);
                        format!("; database {database} was dropped")
                    }
                    Err(e) => format!("; dropping database {database} failed: {e}"),
                }
            };
            slot.tx.send_modify(|j| {
                if let Some(err) = &mut j.error {
                    err.push_str(&note);
                }
            });
        }
        if slot.options.delete_schema_after_apply {
            let _ = tokio::fs::remove_file(self.upload_path(&id)).await;
        }
        self.persist(&slot);
    }
}

/// One running job, as its applier sees it: where progress goes.
struct JobCtx {
    runner: Arc<Runner>,
    slot: Arc<Slot>,
    last_sent: Instant,
}

impl JobCtx {
    fn new(runner: Arc<Runner>, slot: Arc<Slot>) -> JobCtx {
        JobCtx {
            runner,
            slot,
            last_sent: Instant::now(),
        }
    }
}

impl JobProgress for JobCtx {
    fn set_stage(&mut self, stage: JobStep) {
        self.slot.tx.send_modify(|j| {
            j.stage = stage;
            if stage == JobStep::ApplyingSchema {
                j.apply_started_at_ms = now_ms();
            }
        });
        self.runner.persist(&self.slot);
    }

    fn mark_created(&mut self) {
        self.slot.tx.send_modify(|j| j.created_database = true);
        self.runner.persist(&self.slot);
    }

    /// Reports that the file is applied up to byte `applied`, with `statements` run.
    fn progress(&mut self, applied: u64, statements: u64) {
        let (bytes, old) = {
            let j = self.slot.tx.borrow();
            (j.bytes, j.progress)
        };
        let pct = (applied.saturating_mul(100) / bytes.max(1)).min(99) as u8;
        // Always recorded (GetJob is exact); subscribers are woken when the percentage grows
        // or every PROGRESS_EVERY.
        let notify = pct > old || self.last_sent.elapsed() >= PROGRESS_EVERY;
        if notify {
            self.last_sent = Instant::now();
        }
        self.slot.tx.send_if_modified(|j| {
            j.progress = j.progress.max(pct);
            j.bytes_applied = j.bytes_applied.max(applied);
            j.statements = statements;
            notify
        });
    }
}
