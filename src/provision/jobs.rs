//! The provisioning job service every way in shares (gRPC, REST, WebSocket, CLI): takes an
//! upload, registers its job, starts it, and tells everyone who asks where each job is.
//!
//! ```text
//! submit(meta, chunks) ─▶ upload::receive: SCHEMA_TMP_PATH/<id>.sql.part (SHA-256, size cap,
//!                         split + guard while streaming) ─▶ rename ─▶ <id>.sql
//!                         ─▶ dedupe / idempotency / one-job-per-database ─▶ job QUEUED (store)
//!                         ─▶ runner: worker permit (SCHEMA_WORKERS) ─▶ validating
//!                         ─▶ creating-database ─▶ applying-schema (as PROVISION_ROLE) ─▶ cleanup
//!                         ─▶ done
//! ```
//!
//! The verdict of the split and the guard is reached before anything is created, so a guard
//! refusal or a file that does not split never leaves a database behind; dry runs stop after
//! it. Every job's current state lives in a `watch` channel: [`Engine::get`] reads it,
//! [`Engine::subscribe`] follows it. Records are persisted on every status or stage change; at
//! start, jobs that were queued or running when the daemon died are failed with "dbmazz stopped
//! while the job was running" and their databases cleaned up per policy. This module keeps the
//! registry and the admission rules; running a job is [`super::runner`]'s.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use futures_util::Stream;
use tokio::sync::watch;

use super::config::{JobOptions, ProvisionConfig};
use super::error::{ProvisionError, StartError};
use super::guard::Guard;
use super::job::{
    now_ms, Dropped, Job, JobStatus, JobStep, Overrides, SqlEngine, Submitted, UploadMeta,
};
use super::migrate::{
    self, MigrateMeta, MigrateSubmitted, MigrationJob, MigrationTarget, Migrations, Migrator,
    TargetState,
};
use super::names;
use super::registry::{self, Registry};
use super::runner::{Runner, Slot};
use super::servers;
use super::store::{create_private_dir, Store};
use super::upload::{receive, remove_partial_uploads, validate_file, ValidationError, Validator};

/// How long ListServers waits for one server.
pub const SERVER_CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// One server as ListServers reports it.
#[derive(Clone, Debug)]
pub struct ServerStatus {
    /// Its name.
    pub name: String,
    /// Its engine.
    pub engine: SqlEngine,
    /// `host:port` of the admin connection.
    pub address: String,
    /// Whether the admin connection worked just now.
    pub reachable: bool,
    /// Its version, when reachable.
    pub version: String,
    /// Why it is not reachable.
    pub error: String,
    /// Tenant databases the registry has on it.
    pub tenants: u64,
    /// Its capacity.
    pub capacity: Option<u64>,
    /// Its placement weight.
    pub weight: u64,
    /// Its labels.
    pub labels: std::collections::BTreeMap<String, String>,
    /// The role of its tenant databases.
    pub role: String,
}

pub use super::job::STOPPED_REASON;
/// Largest chunk a client may send in one message.
pub const MAX_CHUNK_BYTES: usize = 1024 * 1024;

/// The provisioning engine; cheap to clone. A disabled engine refuses every call with
/// [`ProvisionError::Disabled`].
#[derive(Clone)]
pub struct Engine {
    pub(super) inner: Option<Arc<Inner>>,
}

pub(super) struct Inner {
    pub(super) cfg: ProvisionConfig,
    state: Mutex<State>,
    pub(super) runner: Arc<Runner>,
    /// The migration jobs.
    pub(super) migrator: Arc<Migrator>,
}

#[derive(Default)]
struct State {
    jobs: HashMap<String, Arc<Slot>>,
    /// Job ids in creation order.
    order: Vec<String>,
    /// Idempotency key → job id.
    keys: HashMap<String, String>,
    /// Per client: start of the window and uploads in it.
    rate: HashMap<Option<IpAddr>, (Instant, u32)>,
    /// Databases being dropped by DropDatabase.
    dropping: Vec<(String, String)>,
}

impl Engine {
    /// An engine that refuses every call (provisioning not configured).
    pub fn disabled() -> Engine {
        Engine { inner: None }
    }

    /// Opens the store and the upload directory, fails the jobs a dead daemon left running
    /// (cleaning up their databases in the background), and starts accepting uploads.
    pub async fn start(cfg: ProvisionConfig) -> Result<Engine, StartError> {
        create_private_dir(&cfg.tmp_path).map_err(|source| StartError::Dir {
            var: "SCHEMA_TMP_PATH",
            path: cfg.tmp_path.clone(),
            source,
        })?;
        let store_err = |source| StartError::Dir {
            var: "SCHEMA_JOB_STORE_PATH",
            path: cfg.job_store_path.clone(),
            source,
        };
        let store = Store::open(&cfg.job_store_path).map_err(store_err)?;
        let mut records = store.load().map_err(store_err)?;
        remove_partial_uploads(&cfg.tmp_path);
        records.sort_by(|a, b| {
            (a.job.created_at_ms, &a.job.id).cmp(&(b.job.created_at_ms, &b.job.id))
        });
        let mut state = State::default();
        let mut interrupted = Vec::new();
        for mut rec in records {
            if !rec.job.status.is_final() {
                rec.job.status = JobStatus::Failed;
                rec.job.stage = JobStep::Done;
                rec.job.error = Some(STOPPED_REASON.to_owned());
                rec.job.finished_at_ms = now_ms();
                interrupted.push(rec.job.id.clone());
            }
            if let Some(key) = &rec.job.idempotency_key {
                state.keys.insert(key.clone(), rec.job.id.clone());
            }
            state.order.push(rec.job.id.clone());
            state.jobs.insert(
                rec.job.id.clone(),
                Arc::new(Slot {
                    tx: watch::Sender::new(rec.job),
                    options: rec.options,
                }),
            );
        }
        let registry = Registry::open(&cfg.registry_path).map_err(|source| StartError::Dir {
            var: "SCHEMA_REGISTRY_PATH",
            path: cfg.registry_path.clone(),
            source,
        })?;
        let runner = Arc::new(Runner::new(&cfg, store, Arc::new(registry)));
        let (migrations, loaded) =
            Migrations::open(cfg.job_store_path.join("migrations")).map_err(store_err)?;
        let migrator = Arc::new(Migrator::new(
            runner.clone(),
            cfg.servers.clone(),
            cfg.migration_concurrency,
            migrations,
        ));
        let inner = Arc::new(Inner {
            cfg,
            state: Mutex::new(state),
            runner,
            migrator,
        });
        inner.migrator.resume(loaded);
        for id in interrupted {
            let slot = inner.slot(&id).expect("just inserted");
            inner.runner.persist(&slot);
            tracing::warn!(job = %id, "schema job failed: {STOPPED_REASON}");
            let runner = inner.runner.clone();
            tokio::spawn(async move { runner.finish_interrupted(slot).await });
        }
        if inner.cfg.retention.jobs.is_some() || inner.cfg.retention.uploads.is_some() {
            tokio::spawn(retention(Arc::downgrade(&inner)));
        }
        tracing::info!(
            servers = %inner.cfg.servers.iter().map(|s| format!("{}({})", s.name, s.engine)).collect::<Vec<_>>().join(","),
            workers = inner.cfg.workers,
            "schema provisioning enabled"
        );
        Ok(Engine { inner: Some(inner) })
    }

    /// Whether provisioning is configured.
    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    pub(super) fn inner(&self) -> Result<&Arc<Inner>, ProvisionError> {
        self.inner.as_ref().ok_or(ProvisionError::Disabled)
    }

    /// Stores an upload and queues its job. `body` yields the file's bytes (chunks of any
    /// size; the gRPC and REST layers bound them); an `Err` item aborts the upload with that
    /// error. Returns once the file is stored, with the new job's id, or an earlier job's id
    /// when the idempotency key or the SHA-256 (with deduplication) matches.
    pub async fn submit<S>(&self, meta: UploadMeta, body: S) -> Result<Submitted, ProvisionError>
    where
        S: Stream<Item = Result<Bytes, ProvisionError>> + Send + Unpin,
    {
        let inner = self.inner()?;
        inner.check_meta(&meta)?;
        inner.resolve(&meta.overrides)?;
        if let Some(key) = meta
            .idempotency_key
            .as_ref()
            .filter(|_| inner.cfg.idempotency)
        {
            if let Some(found) = inner.by_key(key, &meta)? {
                return Ok(found);
            }
        }
        let received = self
            .receive(meta.client, Some((meta.engine, &meta.overrides)), body)
            .await?;
        self.queue(meta, received).await
    }

    /// Stores an upload whose job is not described yet (a form whose fields follow the
    /// file): the file goes to `SCHEMA_TMP_PATH` with its SHA-256 and `SCHEMA_MAX_BYTES`
    /// enforced. With `early` (the engine and the overrides known so far) it is also split and
    /// guarded on the way in; [`Engine::queue`] validates it again from disk only if the final
    /// engine or guard setting differ. Counts against the client's rate limit.
    pub async fn receive<S>(
        &self,
        client: Option<IpAddr>,
        early: Option<(SqlEngine, &Overrides)>,
        body: S,
    ) -> Result<Received, ProvisionError>
    where
        S: Stream<Item = Result<Bytes, ProvisionError>> + Send + Unpin,
    {
        let inner = self.inner()?;
        let validation = match early {
            Some((engine, overrides)) => {
                inner.check_engine(engine)?;
                Some((engine, inner.resolve(overrides)?.enable_sql_guard))
            }
            None => None,
        };
        inner.rate_check(client)?;
        let id = uuid::Uuid::new_v4().to_string();
        let part = inner.cfg.tmp_path.join(format!("{id}.sql.part"));
        // Split and guard the file as it arrives, in the same pass as the SHA-256: the worker
        // then starts with the verdict instead of reading the whole file a second time.
        let mut validator = validation.map(|(engine, guard)| inner.validator(engine, guard));
        let received = receive(body, &part, inner.cfg.max_bytes, validator.as_mut()).await;
        // From here on, dropping `Received` removes the part file.
        let mut stored = Received {
            id,
            part,
            sha256: String::new(),
            bytes: 0,
            verdict: None,
        };
        (stored.sha256, stored.bytes) = received?;
        stored.verdict = validation
            .zip(validator)
            .map(|((engine, guard), v)| (engine, guard, v.finish()));
        Ok(stored)
    }

    /// Queues the job of a stored upload: `meta` is checked, the verdict of the split and the
    /// guard taken (or reached now, from disk), and the job registered and started — or an
    /// earlier job returned (idempotency key, SHA-256), the upload then discarded.
    pub async fn queue(
        &self,
        meta: UploadMeta,
        received: Received,
    ) -> Result<Submitted, ProvisionError> {
        let inner = self.inner()?;
        inner.check_meta(&meta)?;
        let options = inner.resolve(&meta.overrides)?;
        let key = meta
            .idempotency_key
            .clone()
            .filter(|_| inner.cfg.idempotency);
        if let Some(key) = &key {
            if let Some(found) = inner.by_key(key, &meta)? {
                return Ok(found);
            }
        }
        if received.bytes == 0 {
            return Err(ProvisionError::InvalidArgument(format!(
                "{}: the file is empty",
                meta.file_name
            )));
        }
        let id = received.id.clone();
        let path = inner.runner.upload_path(&id);
        let (sha256, bytes, validation) = received
            .store(inner, meta.engine, options.enable_sql_guard, &path)
            .await?;

        let mut job = Job {
            id: id.clone(),
            status: JobStatus::Queued,
            progress: 0,
            stage: JobStep::Queued,
            error: None,
            sha256: sha256.clone(),
            bytes,
            bytes_applied: 0,
            statements: 0,
            engine: meta.engine,
            server: String::new(),
            database: meta.database.clone(),
            file_name: meta.file_name.clone(),
            dry_run: options.dry_run,
            created_database: false,
            created_at_ms: now_ms(),
            started_at_ms: 0,
            finished_at_ms: 0,
            apply_started_at_ms: 0,
            idempotency_key: key.clone(),
        };
        let registered = {
            let mut st = inner.state.lock().expect("provision state");
            match inner.choose_server(&st, &meta) {
                Ok(server) => {
                    job.server = server;
                    inner.register(&mut st, job, options, &meta, key.as_deref())
                }
                Err(e) => Err(e),
            }
        };
        let slot = match registered {
            Ok(Ok(slot)) => slot,
            Ok(Err(earlier)) => {
                let _ = tokio::fs::remove_file(&path).await;
                return Ok(earlier);
            }
            Err(e) => {
                let _ = tokio::fs::remove_file(&path).await;
                return Err(e);
            }
        };
        inner.runner.persist(&slot);
        tracing::info!(job = %id, engine = %meta.engine, database = %meta.database, bytes, dry_run = options.dry_run, "schema job queued");
        let worker = inner.runner.clone();
        tokio::spawn(async move { worker.run(slot, validation).await });
        Ok(Submitted {
            job_id: id,
            deduplicated: false,
            sha256,
            bytes,
        })
    }

    /// Every configured server, checked now (in parallel, at most [`SERVER_CHECK_TIMEOUT`]
    /// each): reachable, version, tenant databases.
    pub async fn list_servers(&self) -> Result<Vec<ServerStatus>, ProvisionError> {
        let inner = self.inner()?;
        let checks = inner.cfg.servers.iter().map(|s| {
            let runner = inner.runner.clone();
            async move {
                let check =
                    tokio::time::timeout(SERVER_CHECK_TIMEOUT, runner.server_version(&s.name))
                        .await;
                let (reachable, version, error) = match check {
                    Ok(Ok(v)) => (true, v, String::new()),
                    Ok(Err(e)) => (false, String::new(), e.to_string()),
                    Err(_) => (
                        false,
                        String::new(),
                        format!("no answer within {}s", SERVER_CHECK_TIMEOUT.as_secs()),
                    ),
                };
                ServerStatus {
                    name: s.name.clone(),
                    engine: s.engine,
                    address: s.place(),
                    reachable,
                    version,
                    error,
                    tenants: runner.registry.count(&s.name),
                    capacity: s.capacity,
                    weight: s.weight,
                    labels: s.labels.clone(),
                    role: s.role.clone(),
                }
            }
        });
        Ok(futures_util::future::join_all(checks).await)
    }

    /// The tenant databases `filter` selects from the registry, by server then name.
    pub fn list_databases(
        &self,
        filter: &registry::Filter,
    ) -> Result<Vec<registry::TenantDb>, ProvisionError> {
        let inner = self.inner()?;
        Ok(inner
            .runner
            .registry
            .list(filter, |s| inner.cfg.server(s).map(|d| d.labels.clone())))
    }

    /// Refuses a database name no upload could use, before its file is received.
    pub fn check_database_name(&self, name: &str) -> Result<(), ProvisionError> {
        self.inner()?.check_name(name)
    }

    /// One job as it is now.
    pub fn get(&self, id: &str) -> Result<Job, ProvisionError> {
        let inner = self.inner()?;
        if inner.migrator.jobs.get(id).is_some() {
            return Err(ProvisionError::InvalidArgument(format!(
                "job {id} is a migration job: read it with SchemaService/GetMigration or WatchJob"
            )));
        }
        let slot = inner
            .slot(id)
            .ok_or_else(|| ProvisionError::NotFound(id.to_owned()))?;
        let job = slot.tx.borrow().clone();
        Ok(job)
    }

    /// At most `limit` jobs (0 = 100), newest first.
    pub fn list(&self, limit: usize) -> Result<Vec<Job>, ProvisionError> {
        let inner = self.inner()?;
        let limit = if limit == 0 { 100 } else { limit };
        let st = inner.state.lock().expect("provision state");
        Ok(st
            .order
            .iter()
            .rev()
            .take(limit)
            .filter_map(|id| st.jobs.get(id))
            .map(|s| s.tx.borrow().clone())
            .collect())
    }

    /// Follows one job: the receiver holds its current state and sees every change (progress
    /// is throttled to about ten changes a second). The job has ended when its status
    /// [`is_final`](JobStatus::is_final); no change follows that.
    pub fn subscribe(&self, id: &str) -> Result<watch::Receiver<Job>, ProvisionError> {
        let inner = self.inner()?;
        let slot = inner
            .slot(id)
            .ok_or_else(|| ProvisionError::NotFound(id.to_owned()))?;
        Ok(slot.tx.subscribe())
    }

    /// Drops a database after terminating its connections. Refuses a database a job is
    /// working on, and one dbmazz did not create unless `force`. `server` may be left out when
    /// the registry knows the database, or when one server has `engine`.
    pub async fn drop_database(
        &self,
        engine: SqlEngine,
        server: Option<&str>,
        name: &str,
        force: bool,
    ) -> Result<Dropped, ProvisionError> {
        let inner = self.inner()?;
        inner.check_engine(engine)?;
        inner.check_name(name)?;
        let server = inner.target_server(engine, server, name)?;
        let created = {
            let mut st = inner.state.lock().expect("provision state");
            if let Some(busy) = st.active_on(&server, name) {
                return Err(ProvisionError::FailedPrecondition(format!(
                    "job {busy} is working on database {name} of server {server}; wait for it \
                     to end (WatchJob) and retry"
                )));
            }
            if st.dropping.iter().any(|(s, n)| *s == server && n == name) {
                return Err(ProvisionError::FailedPrecondition(format!(
                    "database {name} of server {server} is already being dropped"
                )));
            }
            let created: Vec<Arc<Slot>> = st
                .jobs
                .values()
                .filter(|s| {
                    let j = s.tx.borrow();
                    j.server_name() == server && j.database == name && j.created_database
                })
                .cloned()
                .collect();
            let registered = inner
                .runner
                .registry
                .get(&server, name)
                .is_some_and(|r| r.created_by_dbmazz);
            if created.is_empty() && !registered && !force {
                return Err(ProvisionError::FailedPrecondition(format!(
                    "{engine} database {name} (server {server}) was not created by dbmazz; set \
                     force to drop it anyway"
                )));
            }
            st.dropping.push((server.clone(), name.to_owned()));
            created
        };
        let result = inner.runner.drop_db(&server, name).await;
        {
            let mut st = inner.state.lock().expect("provision state");
            st.dropping.retain(|(s, n)| !(*s == server && n == name));
        }
        let (existed, terminated) =
            result.map_err(|e| ProvisionError::FailedPrecondition(e.to_string()))?;
        for slot in created {
            slot.tx.send_modify(|j| j.created_database = false);
            inner.runner.persist(&slot);
        }
        inner.runner.forget(&server, name);
        let message = if existed {
            format!(
                "dropped {engine} database {name} on server {server} (terminated {terminated} \
                 connections)"
            )
        } else {
            format!("{engine} database {name} did not exist on server {server}")
        };
        tracing::info!(%engine, server = %server, database = name, terminated, existed, "drop database");
        Ok(Dropped {
            dropped: existed,
            terminated_connections: terminated,
            message,
        })
    }
}

/// An upload stored under `SCHEMA_TMP_PATH` whose job is not queued yet ([`Engine::receive`]);
/// dropping it removes the file.
pub struct Received {
    id: String,
    part: PathBuf,
    sha256: String,
    bytes: u64,
    /// The engine and guard setting it was validated with on the way in, and the verdict.
    verdict: Option<(SqlEngine, bool, Result<u64, ValidationError>)>,
}

impl Received {
    /// The id the stored file goes by.
    pub(super) fn id(&self) -> &str {
        &self.id
    }

    /// Its size.
    pub(super) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Settles the verdict of the split and the guard for `engine` and `guard` (taken from the
    /// way in when they match, else reached now from disk) and moves the file to `dest`:
    /// (SHA-256, bytes, verdict).
    pub(super) async fn store(
        mut self,
        inner: &Inner,
        engine: SqlEngine,
        guard: bool,
        dest: &std::path::Path,
    ) -> Result<(String, u64, Result<u64, ValidationError>), ProvisionError> {
        let validation = match self.verdict.take() {
            Some((e, g, verdict)) if e == engine && g == guard => verdict,
            _ => {
                let mut validator = inner.validator(engine, guard);
                validate_file(&self.part, &mut validator).await?;
                validator.finish()
            }
        };
        if let Err(e) = tokio::fs::rename(&self.part, dest).await {
            return Err(ProvisionError::Internal(format!(
                "cannot store the upload in SCHEMA_TMP_PATH ({}): {e}",
                inner.cfg.tmp_path.display()
            )));
        }
        // Renamed: the part file no longer exists for the drop to remove.
        Ok((std::mem::take(&mut self.sha256), self.bytes, validation))
    }
}

impl Drop for Received {
    fn drop(&mut self) {
        // After the rename in `queue` the file is gone and this fails harmlessly.
        let _ = std::fs::remove_file(&self.part);
    }
}

impl Engine {
    /// Stores a migration file and starts applying it to every selected tenant database.
    /// Refused before anything runs: an engine without servers, a bad id or file name, a
    /// selector that matches nothing (or names an unknown database), a database another
    /// migration is working on, and a file the split or the guard refuses.
    pub async fn migrate<S>(
        &self,
        meta: MigrateMeta,
        body: S,
    ) -> Result<MigrateSubmitted, ProvisionError>
    where
        S: Stream<Item = Result<Bytes, ProvisionError>> + Send + Unpin,
    {
        let inner = self.inner()?.clone();
        if !inner.cfg.has_engine(meta.engine) {
            return Err(ProvisionError::EngineDisabled {
                engine: meta.engine,
                var: meta.engine.url_var(),
            });
        }
        let lower = meta.file_name.to_ascii_lowercase();
        if !lower.ends_with(".sql")
            || meta.file_name.len() > 255
            || meta.file_name.contains(['\0', '\n', '/'])
        {
            return Err(ProvisionError::InvalidArgument(format!(
                "file_name {:?}: only .sql files are accepted (at most 255 characters, no /)",
                meta.file_name
            )));
        }
        let migration_id = meta
            .migration_id
            .clone()
            .filter(|id| !id.is_empty())
            .unwrap_or_else(|| meta.file_name[..meta.file_name.len() - 4].to_owned());
        if !migrate::is_migration_id(&migration_id) {
            return Err(ProvisionError::InvalidArgument(format!(
                "migration_id {migration_id:?}: use 1-128 letters, digits, '.', '-' and '_' \
                 (it defaults to the file name without .sql)"
            )));
        }
        let targets = inner.migrator.select(meta.engine, &meta.selector)?;
        for (server, database) in &targets {
            if let Some(busy) = inner.migrator.jobs.busy(server, database) {
                return Err(ProvisionError::FailedPrecondition(format!(
                    "migration job {busy} is working on {server}/{database}; wait for it \
                     (WatchJob) and retry"
                )));
            }
        }
        let guard = inner.cfg.defaults.enable_sql_guard;
        let received = self
            .receive(
                meta.client,
                Some((meta.engine, &Overrides::default())),
                body,
            )
            .await?;
        if received.bytes() == 0 {
            return Err(ProvisionError::InvalidArgument(format!(
                "{}: the file is empty",
                meta.file_name
            )));
        }
        let id = received.id().to_owned();
        let path = inner.runner.upload_path(&id);
        let (sha256, bytes, verdict) = received.store(&inner, meta.engine, guard, &path).await?;
        if let Err(e) = verdict {
            let _ = tokio::fs::remove_file(&path).await;
            return Err(ProvisionError::InvalidArgument(format!(
                "{}: {e}; nothing was applied",
                meta.file_name
            )));
        }
        let job = MigrationJob {
            id: id.clone(),
            status: JobStatus::Queued,
            migration_id: migration_id.clone(),
            sha256: sha256.clone(),
            bytes,
            file_name: meta.file_name.clone(),
            engine: meta.engine,
            on_failure: meta.on_failure,
            created_at_ms: now_ms(),
            started_at_ms: 0,
            finished_at_ms: 0,
            targets: targets
                .iter()
                .map(|(server, database)| MigrationTarget {
                    server: server.clone(),
                    database: database.clone(),
                    state: TargetState::Pending,
                    error: None,
                    line: None,
                    statements: 0,
                    started_at_ms: 0,
                    finished_at_ms: 0,
                })
                .collect(),
            error: None,
        };
        let databases = job.targets.len() as u32;
        tracing::info!(job = %id, migration = %migration_id, databases, engine = %meta.engine, "migration queued");
        inner.migrator.start(job, path);
        Ok(MigrateSubmitted {
            job_id: id,
            databases,
            sha256,
            bytes,
            migration_id,
        })
    }

    /// One migration job as it is now.
    pub fn migration(&self, id: &str) -> Result<MigrationJob, ProvisionError> {
        let inner = self.inner()?;
        if inner.migrator.jobs.get(id).is_none() && self.get(id).is_ok() {
            return Err(ProvisionError::InvalidArgument(format!(
                "job {id} is an upload job: read it with SchemaService/GetJob or WatchJob"
            )));
        }
        let tx = inner
            .migrator
            .jobs
            .get(id)
            .ok_or_else(|| ProvisionError::NotFound(id.to_owned()))?;
        let job = tx.borrow().clone();
        Ok(job)
    }

    /// Follows one migration job (see [`Engine::subscribe`]).
    pub fn subscribe_migration(
        &self,
        id: &str,
    ) -> Result<watch::Receiver<MigrationJob>, ProvisionError> {
        let inner = self.inner()?;
        let tx = inner
            .migrator
            .jobs
            .get(id)
            .ok_or_else(|| ProvisionError::NotFound(id.to_owned()))?;
        Ok(tx.subscribe())
    }

    /// Whether `id` names a migration job.
    pub fn is_migration(&self, id: &str) -> bool {
        self.inner
            .as_ref()
            .is_some_and(|i| i.migrator.jobs.get(id).is_some())
    }

    /// Every migration job, newest first.
    pub fn migrations(&self) -> Result<Vec<MigrationJob>, ProvisionError> {
        Ok(self.inner()?.migrator.jobs.all())
    }
}

/// Longest time between two retention sweeps.
const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// Deletes what `SCHEMA_JOB_RETENTION_MS` and `SCHEMA_UPLOAD_RETENTION_MS` let go, every
/// [`SWEEP_EVERY`] (or more often for short retentions), until the engine is dropped.
async fn retention(inner: std::sync::Weak<Inner>) {
    let every = {
        let Some(i) = inner.upgrade() else { return };
        let r = i.cfg.retention;
        [r.jobs, r.uploads]
            .into_iter()
            .flatten()
            .map(|d| d / 4)
            .chain([SWEEP_EVERY])
            .min()
            .unwrap_or(SWEEP_EVERY)
            .max(std::time::Duration::from_millis(10))
    };
    loop {
        tokio::time::sleep(every).await;
        let Some(inner) = inner.upgrade() else { return };
        inner.sweep(now_ms());
    }
}

impl Inner {
    /// One retention sweep at `now`: finished jobs older than the job retention are forgotten
    /// (record and upload deleted); uploads kept after their job (`DELETE_SCHEMA_AFTER_APPLY`
    /// off) older than the upload retention are deleted. The tenant registry is never swept:
    /// it is what DropDatabase and migrations go by.
    pub(super) fn sweep(&self, now: u64) {
        let r = self.cfg.retention;
        let before =
            |d: Option<std::time::Duration>| d.map(|d| now.saturating_sub(d.as_millis() as u64));
        let (jobs_cutoff, uploads_cutoff) = (before(r.jobs), before(r.uploads));
        let mut expired = Vec::new();
        let mut stale_uploads = Vec::new();
        {
            let mut st = self.state.lock().expect("provision state");
            for (id, slot) in &st.jobs {
                let j = slot.tx.borrow();
                if !j.status.is_final() || j.finished_at_ms == 0 {
                    continue;
                }
                if jobs_cutoff.is_some_and(|c| j.finished_at_ms < c) {
                    expired.push(id.clone());
                } else if uploads_cutoff.is_some_and(|c| j.finished_at_ms < c) {
                    stale_uploads.push(id.clone());
                }
            }
            for id in &expired {
                st.jobs.remove(id);
                st.order.retain(|o| o != id);
                st.keys.retain(|_, v| v != id);
            }
        }
        for id in &expired {
            self.runner.forget_job(id);
            let _ = std::fs::remove_file(self.runner.upload_path(id));
        }
        for id in &stale_uploads {
            if std::fs::remove_file(self.runner.upload_path(id)).is_ok() {
                tracing::info!(job = %id, "deleted a kept upload (SCHEMA_UPLOAD_RETENTION_MS)");
            }
        }
        let migrations = jobs_cutoff
            .map(|c| self.migrator.jobs.expire(c))
            .unwrap_or_default();
        if !expired.is_empty() || !migrations.is_empty() {
            tracing::info!(
                jobs = expired.len(),
                migrations = migrations.len(),
                "forgot finished jobs (SCHEMA_JOB_RETENTION_MS)"
            );
        }
    }
}

impl State {
    /// The queued or running job on this database, if any.
    fn active_on(&self, server: &str, name: &str) -> Option<String> {
        self.jobs.values().find_map(|s| {
            let j = s.tx.borrow();
            (j.server_name() == server && j.database == name && !j.status.is_final() && !j.dry_run)
                .then(|| j.id.clone())
        })
    }

    /// Queued or running jobs on `server` whose database is not in the registry yet (placement
    /// counts them, so that uploads arriving together spread out).
    fn pending_on(&self, server: &str) -> u64 {
        self.jobs
            .values()
            .filter(|s| {
                let j = s.tx.borrow();
                j.server_name() == server
                    && !j.status.is_final()
                    && !j.dry_run
                    && !j.created_database
            })
            .count() as u64
    }
}

impl Inner {
    fn slot(&self, id: &str) -> Option<Arc<Slot>> {
        self.state
            .lock()
            .expect("provision state")
            .jobs
            .get(id)
            .cloned()
    }

    fn check_engine(&self, engine: SqlEngine) -> Result<(), ProvisionError> {
        if self.cfg.has_engine(engine) {
            Ok(())
        } else {
            Err(ProvisionError::EngineDisabled {
                engine,
                var: engine.url_var(),
            })
        }
    }

    /// The upload's engine, file name, database and idempotency key, checked in that order.
    /// The server an upload goes to: the one named; else the one the registry knows the
    /// database on; else the placement rule's pick.
    fn choose_server(&self, st: &State, meta: &UploadMeta) -> Result<String, ProvisionError> {
        if meta.server.is_some() {
            return self.target_server(meta.engine, meta.server.as_deref(), &meta.database);
        }
        if let Some(known) = self.known_server(meta.engine, &meta.database)? {
            return Ok(known);
        }
        let registry = &self.runner.registry;
        servers::place(
            &self.cfg.servers,
            meta.engine,
            &meta.placement_labels,
            |s| registry.count(s) + st.pending_on(s),
        )
        .map(|s| s.name.clone())
        .map_err(|e| ProvisionError::FailedPrecondition(e.0))
    }

    /// The server the registry knows `database` of `engine` on, if one.
    fn known_server(
        &self,
        engine: SqlEngine,
        database: &str,
    ) -> Result<Option<String>, ProvisionError> {
        let on: Vec<String> = self
            .runner
            .registry
            .list(
                &registry::Filter {
                    engine: Some(engine),
                    ..Default::default()
                },
                |_| None,
            )
            .into_iter()
            .filter(|r| r.database == database)
            .map(|r| r.server)
            .collect();
        match on.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(one.clone())),
            many => Err(ProvisionError::FailedPrecondition(format!(
                "{engine} database {database} exists on the servers {}; name the server",
                many.join(", ")
            ))),
        }
    }

    /// The server a call about `database` means: the one named (which must exist and be of
    /// `engine`), else the one the registry knows it on, else the only server of `engine`.
    fn target_server(
        &self,
        engine: SqlEngine,
        named: Option<&str>,
        database: &str,
    ) -> Result<String, ProvisionError> {
        if let Some(name) = named {
            let Some(s) = self.cfg.server(name) else {
                return Err(ProvisionError::InvalidArgument(format!(
                    "server {name:?} is not configured; SchemaService/ListServers lists them"
                )));
            };
            if s.engine != engine {
                return Err(ProvisionError::InvalidArgument(format!(
                    "server {name} is a {} server, not {engine}",
                    s.engine
                )));
            }
            return Ok(s.name.clone());
        }
        if let Some(known) = self.known_server(engine, database)? {
            return Ok(known);
        }
        let of_engine: Vec<&str> = self
            .cfg
            .servers
            .iter()
            .filter(|s| s.engine == engine)
            .map(|s| s.name.as_str())
            .collect();
        match of_engine.as_slice() {
            [one] => Ok((*one).to_owned()),
            [] => Err(ProvisionError::EngineDisabled {
                engine,
                var: engine.url_var(),
            }),
            many => Err(ProvisionError::InvalidArgument(format!(
                "{engine} database {database} is not in the registry and there are several \
                 {engine} servers ({}); name the server",
                many.join(", ")
            ))),
        }
    }

    fn check_meta(&self, meta: &UploadMeta) -> Result<(), ProvisionError> {
        self.check_engine(meta.engine)?;
        if !meta.file_name.to_ascii_lowercase().ends_with(".sql")
            || meta.file_name.len() > 255
            || meta.file_name.contains(['\0', '\n'])
        {
            return Err(ProvisionError::InvalidArgument(format!(
                "file_name {:?}: only .sql files are accepted (at most 255 characters)",
                meta.file_name
            )));
        }
        self.check_name(&meta.database)?;
        if let Some(key) = &meta.idempotency_key {
            if key.is_empty() || key.len() > 128 || !key.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(ProvisionError::InvalidArgument(
                    "idempotency_key: use 1-128 printable ASCII characters without spaces".into(),
                ));
            }
        }
        Ok(())
    }

    /// The split and the guard (when `guard`) for a file of `engine`.
    pub(super) fn validator(&self, engine: SqlEngine, guard: bool) -> Validator {
        Validator::new(
            engine.dialect(),
            guard.then(|| Guard::new(engine.dialect(), &self.cfg.forbidden_keywords)),
        )
    }

    fn check_name(&self, name: &str) -> Result<(), ProvisionError> {
        names::validate_database_name(name, &self.cfg.reserved)
            .map_err(|e| ProvisionError::InvalidArgument(format!("database: {e}")))
    }

    fn resolve(&self, o: &Overrides) -> Result<JobOptions, ProvisionError> {
        let d = self.cfg.defaults;
        if d.enable_sql_guard && o.enable_sql_guard == Some(false) {
            return Err(ProvisionError::InvalidArgument(
                "enable_sql_guard: the SQL guard is on for this server (SCHEMA_ENABLE_SQL_GUARD) \
                 and a call cannot turn it off"
                    .into(),
            ));
        }
        Ok(JobOptions {
            fail_if_db_exists: o.fail_if_db_exists.unwrap_or(d.fail_if_db_exists),
            drop_db_on_failure: o.drop_db_on_failure.unwrap_or(d.drop_db_on_failure),
            delete_schema_after_apply: o
                .delete_schema_after_apply
                .unwrap_or(d.delete_schema_after_apply),
            deduplicate_by_hash: o.deduplicate_by_hash.unwrap_or(d.deduplicate_by_hash),
            enable_sql_guard: o.enable_sql_guard.unwrap_or(d.enable_sql_guard),
            dry_run: o.dry_run.unwrap_or(d.dry_run),
        })
    }

    /// The earlier job of an idempotency key, if the key is known.
    fn by_key(&self, key: &str, meta: &UploadMeta) -> Result<Option<Submitted>, ProvisionError> {
        let st = self.state.lock().expect("provision state");
        let Some(id) = st.keys.get(key) else {
            return Ok(None);
        };
        let Some(slot) = st.jobs.get(id) else {
            return Ok(None);
        };
        let j = slot.tx.borrow();
        if j.engine != meta.engine || j.database != meta.database {
            return Err(ProvisionError::AlreadyExists(format!(
                "idempotency_key {key:?} was used for job {} ({} database {}); use a new key \
                 for a different request",
                j.id, j.engine, j.database
            )));
        }
        Ok(Some(Submitted {
            job_id: j.id.clone(),
            deduplicated: true,
            sha256: j.sha256.clone(),
            bytes: j.bytes,
        }))
    }

    fn rate_check(&self, client: Option<IpAddr>) -> Result<(), ProvisionError> {
        let Some(limit) = self.cfg.rate_limit else {
            return Ok(());
        };
        let mut st = self.state.lock().expect("provision state");
        let now = Instant::now();
        st.rate
            .retain(|_, (start, _)| now.duration_since(*start) < limit.window);
        let entry = st.rate.entry(client).or_insert((now, 0));
        if entry.1 >= limit.max {
            let left = limit.window.saturating_sub(now.duration_since(entry.0));
            return Err(ProvisionError::RateLimited {
                max: limit.max,
                window_ms: limit.window.as_millis() as u64,
                retry_after_ms: left.as_millis() as u64,
            });
        }
        entry.1 += 1;
        Ok(())
    }

    /// Registers a stored upload, or returns the earlier job it duplicates (`Ok(Err)`).
    fn register(
        &self,
        st: &mut State,
        job: Job,
        options: JobOptions,
        meta: &UploadMeta,
        key: Option<&str>,
    ) -> Result<Result<Arc<Slot>, Submitted>, ProvisionError> {
        if let Some(key) = key {
            if let Some(id) = st.keys.get(key) {
                let j = st.jobs[id].tx.borrow();
                if j.engine != meta.engine || j.database != meta.database {
                    return Err(ProvisionError::AlreadyExists(format!(
                        "idempotency_key {key:?} was used for job {} ({} database {}); use a \
                         new key for a different request",
                        j.id, j.engine, j.database
                    )));
                }
                return Ok(Err(Submitted {
                    job_id: j.id.clone(),
                    deduplicated: true,
                    sha256: j.sha256.clone(),
                    bytes: j.bytes,
                }));
            }
        }
        if options.deduplicate_by_hash {
            let earlier = st.order.iter().rev().find_map(|id| {
                let j = st.jobs[id].tx.borrow();
                // A job that did not fail, and (unless a dry run) still holds the database it
                // created: after a DropDatabase the same file provisions the database again.
                (j.engine == job.engine
                    && j.server_name() == job.server
                    && j.database == job.database
                    && j.sha256 == job.sha256
                    && j.dry_run == job.dry_run
                    && j.status != JobStatus::Failed
                    && (j.dry_run || !j.status.is_final() || j.created_database))
                    .then(|| Submitted {
                        job_id: j.id.clone(),
                        deduplicated: true,
                        sha256: j.sha256.clone(),
                        bytes: j.bytes,
                    })
            });
            if let Some(earlier) = earlier {
                return Ok(Err(earlier));
            }
        }
        if !job.dry_run {
            if let Some(busy) = st.active_on(&job.server, &job.database) {
                return Err(ProvisionError::FailedPrecondition(format!(
                    "job {busy} is already working on {} database {}; one job per database at a \
                     time: wait for it (WatchJob) and retry",
                    job.engine, job.database
                )));
            }
            if st
                .dropping
                .iter()
                .any(|(s, n)| *s == job.server && *n == job.database)
            {
                return Err(ProvisionError::FailedPrecondition(format!(
                    "{} database {} is being dropped; retry when DropDatabase returns",
                    job.engine, job.database
                )));
            }
        }
        let id = job.id.clone();
        let slot = Arc::new(Slot {
            tx: watch::Sender::new(job),
            options,
        });
        if let Some(key) = key {
            st.keys.insert(key.to_owned(), id.clone());
        }
        st.order.push(id.clone());
        st.jobs.insert(id, slot.clone());
        Ok(Ok(slot))
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use futures_util::Stream;
    use sha2::{Digest, Sha256};

    use super::*;
    use crate::provision::store::JobRecord;
    use crate::provision::upload::hex;

    fn config(dir: &Path, extra: &[(&str, &str)]) -> ProvisionConfig {
        let mut vars: HashMap<String, String> = [
            // Nothing listens there: these tests never reach a server.
            (
                "PROVISION_POSTGRES_URL",
                "postgres://admin@127.0.0.1:9/postgres?sslmode=disable",
            ),
            ("PROVISION_ROLE", "tenant_owner"),
            ("SCHEMA_TMP_PATH", dir.to_str().unwrap()),
            ("SCHEMA_DRY_RUN", "true"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for (k, v) in extra {
            vars.insert(k.to_string(), v.to_string());
        }
        ProvisionConfig::from_vars(&vars, &["app".into()])
            .unwrap()
            .unwrap()
    }

    fn meta(db: &str) -> UploadMeta {
        UploadMeta {
            engine: SqlEngine::Postgres,
            server: None,
            placement_labels: Default::default(),
            database: db.into(),
            file_name: "schema.sql".into(),
            idempotency_key: None,
            overrides: Overrides::default(),
            client: None,
        }
    }

    fn body(text: &str) -> impl Stream<Item = Result<Bytes, ProvisionError>> + Send + Unpin {
        let chunks: Vec<Result<Bytes, ProvisionError>> = text
            .as_bytes()
            .chunks(7)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        futures_util::stream::iter(chunks)
    }

    async fn wait_final(engine: &Engine, id: &str) -> Job {
        let mut rx = engine.subscribe(id).unwrap();
        let mut last = 0;
        loop {
            let j = rx.borrow_and_update().clone();
            assert!(j.progress >= last, "progress went down");
            last = j.progress;
            if j.status.is_final() {
                return j;
            }
            rx.changed().await.unwrap();
        }
    }

    const SCHEMA: &str = "CREATE TABLE a (id int);\nINSERT INTO a VALUES (1);\n";

    #[tokio::test]
    async fn a_dry_run_counts_statements_and_the_hash_matches_the_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::start(config(dir.path(), &[])).await.unwrap();
        let s = engine.submit(meta("tenant_a"), body(SCHEMA)).await.unwrap();
        assert!(!s.deduplicated);
        assert_eq!(s.bytes, SCHEMA.len() as u64);
        assert_eq!(s.sha256, hex(&Sha256::digest(SCHEMA.as_bytes())));
        let j = wait_final(&engine, &s.job_id).await;
        assert_eq!(j.status, JobStatus::Success, "{j:?}");
        assert_eq!((j.statements, j.progress, j.dry_run), (2, 100, true));
        assert_eq!(j.apply_started_at_ms, 0, "a dry run applies nothing");
        // The upload was deleted, and the job is listed.
        assert!(!dir.path().join(format!("{}.sql", s.job_id)).exists());
        assert_eq!(engine.list(0).unwrap()[0].id, s.job_id);
        // Same bytes, same database: the same job.
        let again = engine.submit(meta("tenant_a"), body(SCHEMA)).await.unwrap();
        assert_eq!((again.job_id, again.deduplicated), (s.job_id, true));
    }

    #[tokio::test]
    async fn refusals_have_their_codes_and_leave_no_file_behind() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::start(config(
            dir.path(),
            &[("SCHEMA_MAX_BYTES", "40"), ("RATE_LIMIT_MAX", "3")],
        ))
        .await
        .unwrap();
        let mut m = meta("tenant_a");
        m.file_name = "schema.txt".into();
        let e = engine.submit(m, body(SCHEMA)).await.unwrap_err();
        assert_eq!(e.grpc_code(), tonic::Code::InvalidArgument, "{e}");
        let e = engine.submit(meta("app"), body(SCHEMA)).await.unwrap_err();
        assert_eq!(e.grpc_code(), tonic::Code::InvalidArgument, "{e}");
        let mut m = meta("tenant_a");
        m.overrides.enable_sql_guard = Some(false);
        let e = engine.submit(m, body(SCHEMA)).await.unwrap_err();
        assert!(e.to_string().contains("SCHEMA_ENABLE_SQL_GUARD"), "{e}");
        let mut m = meta("tenant_a");
        m.engine = SqlEngine::Mysql;
        let e = engine.submit(m, body(SCHEMA)).await.unwrap_err();
        assert_eq!(e.grpc_code(), tonic::Code::FailedPrecondition);
        assert!(e.to_string().contains("PROVISION_MYSQL_URL"), "{e}");
        // Rate-limited uploads: 1 too large, 2 empty, 3 interrupted, 4 refused.
        let e = engine
            .submit(meta("tenant_a"), body(&SCHEMA.repeat(2)))
            .await
            .unwrap_err();
        assert_eq!(
            (e.grpc_code(), e.http_status()),
            (tonic::Code::ResourceExhausted, 413)
        );
        let e = engine.submit(meta("tenant_a"), body("")).await.unwrap_err();
        assert_eq!(e.grpc_code(), tonic::Code::InvalidArgument, "{e}");
        let broken = futures_util::stream::iter(vec![
            Ok(Bytes::from_static(b"CREATE")),
            Err(ProvisionError::Interrupted("client went away".into())),
        ]);
        let e = engine.submit(meta("tenant_a"), broken).await.unwrap_err();
        assert_eq!(e.grpc_code(), tonic::Code::Cancelled, "{e}");
        let e = engine
            .submit(meta("tenant_a"), body(SCHEMA))
            .await
            .unwrap_err();
        assert_eq!(
            (e.grpc_code(), e.http_status()),
            (tonic::Code::ResourceExhausted, 429)
        );
        assert!(e.to_string().contains("RATE_LIMIT_MAX"), "{e}");
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .filter(|e| e.path().is_file())
            .collect();
        assert!(left.is_empty(), "{left:?}");
        assert_eq!(
            engine.get("nope").unwrap_err().grpc_code(),
            tonic::Code::NotFound
        );
    }

    #[tokio::test]
    async fn idempotency_keys_return_the_first_job_and_conflict_across_databases() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::start(config(dir.path(), &[])).await.unwrap();
        let mut m = meta("tenant_a");
        m.idempotency_key = Some("req-1".into());
        let first = engine.submit(m.clone(), body(SCHEMA)).await.unwrap();
        let retry = engine.submit(m.clone(), body("SELECT 1;")).await.unwrap();
        assert_eq!((retry.job_id, retry.deduplicated), (first.job_id, true));
        m.database = "tenant_b".into();
        let e = engine.submit(m, body(SCHEMA)).await.unwrap_err();
        assert_eq!(e.grpc_code(), tonic::Code::AlreadyExists, "{e}");
    }

    #[tokio::test]
    async fn jobs_left_running_by_a_dead_daemon_are_failed_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path(), &[]);
        let store = Store::open(&cfg.job_store_path).unwrap();
        let job = |id: &str, status, created| Job {
            id: id.into(),
            status,
            progress: 40,
            stage: JobStep::ApplyingSchema,
            error: None,
            sha256: "00".into(),
            bytes: 10,
            bytes_applied: 4,
            statements: 1,
            engine: SqlEngine::Postgres,
            server: String::new(),
            database: format!("db_{id}"),
            file_name: "s.sql".into(),
            dry_run: false,
            created_database: created,
            created_at_ms: 1,
            started_at_ms: 2,
            finished_at_ms: 0,
            apply_started_at_ms: 0,
            idempotency_key: None,
        };
        for (id, status, created) in [
            ("a", JobStatus::Running, false),
            ("b", JobStatus::Queued, false),
            ("c", JobStatus::Running, true),
        ] {
            store
                .save(&JobRecord {
                    job: job(id, status, created),
                    options: JobOptions::default(),
                })
                .unwrap();
        }
        let engine = Engine::start(cfg.clone()).await.unwrap();
        for id in ["a", "b"] {
            let j = engine.get(id).unwrap();
            assert_eq!(j.status, JobStatus::Failed);
            assert_eq!(j.error.as_deref(), Some(STOPPED_REASON));
        }
        // The database of "c" cannot be dropped (nothing listens): the error says so, and
        // dbmazz still counts it as its own.
        let mut rx = engine.subscribe("c").unwrap();
        let j = loop {
            let j = rx.borrow_and_update().clone();
            if j.error
                .as_deref()
                .is_some_and(|e| e.len() > STOPPED_REASON.len())
            {
                break j;
            }
            rx.changed().await.unwrap();
        };
        assert_eq!(j.status, JobStatus::Failed);
        let error = j.error.unwrap();
        assert!(error.starts_with(STOPPED_REASON), "{error}");
        assert!(error.contains("dropping database db_c failed"), "{error}");
        assert!(j.created_database);
        // The records on disk say the same after another restart.
        drop(engine);
        let engine = Engine::start(cfg).await.unwrap();
        assert_eq!(engine.get("a").unwrap().status, JobStatus::Failed);
        assert_eq!(engine.list(0).unwrap().len(), 3);
    }

    #[tokio::test]
    async fn retention_forgets_finished_jobs_and_deletes_kept_uploads() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(
            dir.path(),
            &[
                ("SCHEMA_JOB_RETENTION_MS", "60000"),
                ("SCHEMA_UPLOAD_RETENTION_MS", "30000"),
            ],
        );
        let engine = Engine::start(cfg.clone()).await.unwrap();
        let mut m = meta("tenant_a");
        m.overrides.delete_schema_after_apply = Some(false);
        m.idempotency_key = Some("k1".into());
        let id = engine.submit(m, body(SCHEMA)).await.unwrap().job_id;
        let done = wait_final(&engine, &id).await.finished_at_ms;
        let upload = dir.path().join(format!("{id}.sql"));
        let record = cfg.job_store_path.join(format!("{id}.json"));
        assert!(upload.exists() && record.exists());
        let inner = engine.inner().unwrap().clone();
        inner.sweep(done + 10_000);
        assert!(upload.exists(), "too early for the upload");
        inner.sweep(done + 40_000);
        assert!(
            !upload.exists(),
            "the kept upload is deleted after SCHEMA_UPLOAD_RETENTION_MS"
        );
        assert!(engine.get(&id).is_ok(), "the job stays");
        inner.sweep(done + 70_000);
        assert_eq!(
            engine.get(&id).unwrap_err().grpc_code(),
            tonic::Code::NotFound
        );
        assert!(!record.exists());
        // The key is forgotten with the job: it starts a new one.
        let mut m = meta("tenant_a");
        m.idempotency_key = Some("k1".into());
        let again = engine.submit(m, body(SCHEMA)).await.unwrap();
        assert_ne!(again.job_id, id);
        drop(engine);
        // And it stays forgotten after a restart.
        let engine = Engine::start(cfg).await.unwrap();
        assert!(engine.get(&id).is_err());

        // The background sweep runs by itself with a short retention.
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::start(config(dir.path(), &[("SCHEMA_JOB_RETENTION_MS", "40")]))
            .await
            .unwrap();
        let id = engine
            .submit(meta("tenant_b"), body(SCHEMA))
            .await
            .unwrap()
            .job_id;
        wait_final(&engine, &id).await;
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        while engine.get(&id).is_ok() {
            assert!(Instant::now() < deadline, "the sweep never ran");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn a_disabled_engine_names_the_variables() {
        let e = Engine::disabled().list(0).unwrap_err();
        assert_eq!(e.grpc_code(), tonic::Code::FailedPrecondition);
        assert!(e.to_string().contains("PROVISION_POSTGRES_URL"));
        assert!(e.to_string().contains("PROVISION_MYSQL_URL"));
    }
}
