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

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{watch, Semaphore};

use super::applier::{Applier, JobProgress, Migrated, Migration, Target};
use super::apply_mysql::{MySqlApplier, MySqlApplyError};
use super::apply_pg::{PgApplier, PgApplyError};
use super::config::{JobOptions, ProvisionConfig};
use super::job::{now_ms, Job, JobStatus, JobStep, SqlEngine};
use super::registry::{Registry, TenantDb, TenantState};
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
    /// The job's server is not configured (any more).
    #[error(
        "server {server} is not configured (PROVISION_SERVERS_FILE, PROVISION_POSTGRES_URL or \
         PROVISION_MYSQL_URL)"
    )]
    UnknownServer {
        /// The server's name.
        server: String,
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

/// The applier of one server.
pub(super) enum ServerApplier {
    /// A PostgreSQL server.
    Postgres(PgApplier),
    /// A MySQL or MariaDB server.
    Mysql(MySqlApplier),
}

/// Runs jobs on a bounded pool and keeps their records; shared by every job.
pub(super) struct Runner {
    /// The appliers, by server name.
    appliers: BTreeMap<String, ServerApplier>,
    /// The tenant registry.
    pub(super) registry: Arc<Registry>,
    store: Store,
    /// `SCHEMA_JOB_STORE_PATH`, for messages.
    store_path: PathBuf,
    /// `SCHEMA_TMP_PATH`: where uploads are stored.
    tmp_path: PathBuf,
    /// `SCHEMA_WORKERS` permits.
    workers: Arc<Semaphore>,
}

impl Runner {
    /// A runner with the appliers `cfg` configures, keeping records in `store` and tenants
    /// in `registry`.
    pub(super) fn new(cfg: &ProvisionConfig, store: Store, registry: Arc<Registry>) -> Runner {
        let appliers = cfg
            .servers
            .iter()
            .map(|s| {
                let applier = match s.engine {
                    SqlEngine::Postgres => {
                        PgApplier::new(s, cfg.bounds).map(ServerApplier::Postgres)
                    }
                    SqlEngine::Mysql => MySqlApplier::new(s, cfg.bounds).map(ServerApplier::Mysql),
                };
                (
                    s.name.clone(),
                    applier.expect("a server's admin matches its engine"),
                )
            })
            .collect();
        Runner {
            appliers,
            registry,
            store,
            store_path: cfg.job_store_path.clone(),
            tmp_path: cfg.tmp_path.clone(),
            workers: Arc::new(Semaphore::new(cfg.workers)),
        }
    }

    /// The applier of `server`.
    pub(super) fn applier(&self, server: &str) -> Result<&ServerApplier, JobError> {
        self.appliers
            .get(server)
            .ok_or_else(|| JobError::UnknownServer {
                server: server.to_owned(),
            })
    }

    /// Deletes the record of job `id` (retention); logged when that fails.
    pub(super) fn forget_job(&self, id: &str) {
        if let Err(e) = self.store.remove(id) {
            tracing::warn!(job = %id, dir = %self.store_path.display(), error = %e, "cannot delete an expired schema job record");
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
        let (id, server, database, created) = {
            let j = slot.tx.borrow();
            (
                j.id.clone(),
                j.server_name().to_owned(),
                j.database.clone(),
                j.created_database,
            )
        };
        let engine = slot.tx.borrow().engine;
        let mut error = result.err().map(|e| e.to_string());
        if error.is_some() || slot.options.delete_schema_after_apply {
            ctx.set_stage(JobStep::Cleanup);
        }
        if let Some(message) = &mut error {
            if created && slot.options.drop_db_on_failure {
                match self.drop_db(&server, &database).await {
                    Ok(_) => {
                        message.push_str(&format!("; database {database} was dropped"));
                        slot.tx.send_modify(|j| j.created_database = false);
                        self.forget(&server, &database);
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
        if !slot.options.dry_run {
            self.record_tenant(&slot, error.is_none());
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

    /// Records the tenant database of an ended upload job: ready after a success, failed when
    /// a failure kept it (a dropped one was forgotten already).
    fn record_tenant(&self, slot: &Slot, success: bool) {
        let j = slot.tx.borrow().clone();
        let server = j.server_name().to_owned();
        let known = self.registry.get(&server, &j.database);
        let state = if success {
            TenantState::Ready
        } else if known.is_some() {
            TenantState::Failed
        } else {
            // A failure on a database dbmazz did not create (or dropped): nothing to record.
            return;
        };
        let record = match known {
            Some(mut r) => {
                r.state = state;
                r
            }
            None => TenantDb {
                server: server.clone(),
                engine: j.engine,
                database: j.database.clone(),
                state,
                created_by_dbmazz: false,
                created_at_ms: now_ms(),
                job_id: j.id.clone(),
                file_name: j.file_name.clone(),
                sha256: j.sha256.clone(),
                migrations: Vec::new(),
                last_failure: None,
            },
        };
        if let Err(e) = self.registry.put(record) {
            tracing::error!(job = %j.id, server = %server, database = %j.database, error = %e, "cannot write the tenant registry (SCHEMA_REGISTRY_PATH)");
        }
    }

    /// Forgets a dropped database in the registry (logged when that fails).
    pub(super) fn forget(&self, server: &str, database: &str) {
        if let Err(e) = self.registry.remove(server, database) {
            tracing::error!(server, database, error = %e, "cannot remove a dropped database from the tenant registry (SCHEMA_REGISTRY_PATH)");
        }
    }

    /// The validation's verdict (made during the upload), then (unless a dry run) the apply.
    async fn execute(
        &self,
        ctx: &mut JobCtx,
        validation: Result<u64, ValidationError>,
    ) -> Result<(), JobError> {
        let (id, server, database) = {
            let j = ctx.slot.tx.borrow();
            (j.id.clone(), j.server_name().to_owned(), j.database.clone())
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
        match self.applier(&server)? {
            ServerApplier::Postgres(a) => Ok(a.apply(target, ctx).await?),
            ServerApplier::Mysql(a) => Ok(a.apply(target, ctx).await?),
        }
    }

    /// Drops a database on `server` after terminating its connections: (existed, terminated).
    pub(super) async fn drop_db(&self, server: &str, name: &str) -> Result<(bool, u32), JobError> {
        match self.applier(server)? {
            ServerApplier::Postgres(a) => Ok(a.drop_database(name).await?),
            ServerApplier::Mysql(a) => Ok(a.drop_database(name).await?),
        }
    }

    /// Cleans up after a job that was running when the daemon died.
    pub(super) async fn finish_interrupted(self: Arc<Self>, slot: Arc<Slot>) {
        let (id, server, database, created) = {
            let j = slot.tx.borrow();
            (
                j.id.clone(),
                j.server_name().to_owned(),
                j.database.clone(),
                j.created_database,
            )
        };
        if created && slot.options.drop_db_on_failure {
            let note = if self.applier(&server).is_err() {
                format!("; database {database} was kept: server {server} is no longer configured")
            } else {
                match self.drop_db(&server, &database).await {
                    Ok(_) => {
                        slot.tx.send_modify(|j| j.created_database = false);
                        self.forget(&server, &database);
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
        if !slot.options.dry_run {
            self.record_tenant(&slot, false);
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
        let j = self.slot.tx.borrow().clone();
        let record = TenantDb {
            server: j.server_name().to_owned(),
            engine: j.engine,
            database: j.database.clone(),
            state: TenantState::Creating,
            created_by_dbmazz: true,
            created_at_ms: now_ms(),
            job_id: j.id.clone(),
            file_name: j.file_name.clone(),
            sha256: j.sha256.clone(),
            migrations: Vec::new(),
            last_failure: None,
        };
        if let Err(e) = self.runner.registry.put(record) {
            tracing::error!(job = %j.id, database = %j.database, error = %e, "cannot write the tenant registry (SCHEMA_REGISTRY_PATH)");
        }
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

impl Runner {
    /// Applies migration `m` to `database` on `server`.
    pub(super) async fn migrate(
        &self,
        server: &str,
        database: &str,
        m: Migration<'_>,
    ) -> Result<Migrated, JobError> {
        match self.applier(server)? {
            ServerApplier::Postgres(a) => Ok(a.migrate(database, m).await?),
            ServerApplier::Mysql(a) => Ok(a.migrate(database, m).await?),
        }
    }

    /// The SHA-256 `database` on `server` records for migration `id`, if any.
    pub(super) async fn recorded_migration(
        &self,
        server: &str,
        database: &str,
        id: &str,
    ) -> Result<Option<String>, JobError> {
        match self.applier(server)? {
            ServerApplier::Postgres(a) => Ok(a.recorded_migration(database, id).await?),
            ServerApplier::Mysql(a) => Ok(a.recorded_migration(database, id).await?),
        }
    }

    /// Connects to `server` as its admin: its version string.
    pub(super) async fn server_version(&self, server: &str) -> Result<String, JobError> {
        match self.applier(server)? {
            ServerApplier::Postgres(a) => Ok(a.version().await?),
            ServerApplier::Mysql(a) => Ok(a.version().await?),
        }
    }
}

impl JobError {
    /// Whether the server could not be reached at all.
    pub(super) fn is_unreachable(&self) -> bool {
        match self {
            JobError::Postgres(e) => e.is_unreachable(),
            JobError::MySql(e) => e.is_unreachable(),
            _ => false,
        }
    }

    /// The line of the file a failure is at, if a statement failed.
    pub(super) fn line(&self) -> Option<u64> {
        match self {
            JobError::Postgres(e) => e.line(),
            JobError::MySql(e) => e.line(),
            _ => None,
        }
    }
}
