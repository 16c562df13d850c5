//! Migrations fanned out to tenant databases: one uploaded `.sql` file applied once to every
//! database a selector picks from the registry, with bounded concurrency, per-database
//! progress and results, and a record in each database so that running it again is a no-op
//! where it was applied and a retry where it failed.
//!
//! ```text
//! MigrateDatabases(meta, chunks) ─▶ select targets (registry) ─▶ store + split + guard
//!   ─▶ job QUEUED (SCHEMA_JOB_STORE_PATH/migrations/<id>.json)
//!   ─▶ per database: permit of its server (MIGRATION_CONCURRENCY_PER_SERVER)
//!                    + permit of the fleet (MIGRATION_CONCURRENCY)
//!      ─▶ applier.migrate: PostgreSQL one transaction with the dbmazz_schema_migrations row;
//!                          MySQL statement by statement, the row says applied or failed
//!      ─▶ registry (migration recorded, or the failure) ─▶ the target's result in the job
//!   ─▶ SUCCESS when every database applied or had it; FAILED otherwise
//! ```
//!
//! The order of the writes is what keeps the three views in agreement: the database commits
//! first, then the registry, then the job's record. A `kill -9` between them leaves a target
//! that the job never saw finish; at the next start every such target is checked in its
//! database (the row is there or not) and the registry and the job are corrected from it.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{watch, Semaphore};

use super::applier::{Migrated, Migration};
use super::config::MigrationConcurrency;
use super::error::ProvisionError;
use super::job::{now_ms, JobStatus, SqlEngine, STOPPED_REASON};
use super::registry::{AppliedMigration, Filter, MigrationFailure, TenantState};
use super::runner::Runner;
use super::servers::ServerDef;
use super::store::create_private_dir;

/// Where one database of a migration is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TargetState {
    /// Waiting for a permit.
    Pending,
    /// Being applied.
    Running,
    /// Applied and recorded in the database.
    Applied,
    /// The database had it already (same id and SHA-256).
    Skipped,
    /// Failed; the error says why.
    Failed,
    /// Not started: `on_failure=stop`, its server unreachable, or dbmazz stopped.
    NotAttempted,
}

impl TargetState {
    /// Whether the target has its result.
    pub fn is_final(self) -> bool {
        !matches!(self, TargetState::Pending | TargetState::Running)
    }

    /// `pending`, `running`, `applied`, `skipped`, `failed`, `not-attempted`.
    pub fn as_str(self) -> &'static str {
        match self {
            TargetState::Pending => "pending",
            TargetState::Running => "running",
            TargetState::Applied => "applied",
            TargetState::Skipped => "skipped",
            TargetState::Failed => "failed",
            TargetState::NotAttempted => "not-attempted",
        }
    }
}

/// What a migration does when a database fails.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// Apply it to every other selected database anyway.
    #[default]
    Continue,
    /// Start no further database.
    Stop,
}

/// One database of a migration.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MigrationTarget {
    /// Its server.
    pub server: String,
    /// Its name.
    pub database: String,
    /// Where it is.
    pub state: TargetState,
    /// Why it failed or was not attempted.
    pub error: Option<String>,
    /// The line of the file a statement failed at.
    pub line: Option<u64>,
    /// Statements applied.
    pub statements: u64,
    /// When it started (0 until then).
    pub started_at_ms: u64,
    /// When it ended (0 until then).
    pub finished_at_ms: u64,
}

/// A migration fanned out to tenant databases.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MigrationJob {
    /// Server-generated id (a UUID).
    pub id: String,
    /// Queued, running; success when every target applied or skipped it; failed otherwise.
    pub status: JobStatus,
    /// The migration id recorded in each database.
    pub migration_id: String,
    /// SHA-256 of the file.
    pub sha256: String,
    /// Size of the file.
    pub bytes: u64,
    /// The client's file name.
    pub file_name: String,
    /// The file's dialect.
    pub engine: SqlEngine,
    /// `on_failure`.
    pub on_failure: OnFailure,
    /// When the file was stored.
    pub created_at_ms: u64,
    /// When the first database started.
    pub started_at_ms: u64,
    /// When the last ended.
    pub finished_at_ms: u64,
    /// One per selected database, by server then name.
    pub targets: Vec<MigrationTarget>,
    /// Failed only: a summary.
    pub error: Option<String>,
}

impl MigrationJob {
    /// Targets in `state`.
    pub fn count(&self, state: TargetState) -> usize {
        self.targets.iter().filter(|t| t.state == state).count()
    }
}

/// Which tenant databases a migration covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selector {
    /// Every tenant database of the engine.
    All,
    /// Those on this server.
    Server(String),
    /// Those on servers with all these labels.
    Labels(BTreeMap<String, String>),
    /// These: `name` (when one server has it) or `server/name`.
    Databases(Vec<String>),
}

/// What a migration is.
#[derive(Clone, Debug)]
pub struct MigrateMeta {
    /// The file's dialect; only databases of this engine are selected.
    pub engine: SqlEngine,
    /// The migration id; `None`: the file name without `.sql`.
    pub migration_id: Option<String>,
    /// The client's file name; must end in `.sql`.
    pub file_name: String,
    /// Which databases.
    pub selector: Selector,
    /// What a failure does.
    pub on_failure: OnFailure,
    /// The caller's address, for `RATE_LIMIT_*`.
    pub client: Option<IpAddr>,
}

/// The answer to an accepted migration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MigrateSubmitted {
    /// The fan-out job.
    pub job_id: String,
    /// Selected databases.
    pub databases: u32,
    /// SHA-256 of the file.
    pub sha256: String,
    /// Its size.
    pub bytes: u64,
    /// The migration id.
    pub migration_id: String,
}

/// The migration jobs: live state and records under `SCHEMA_JOB_STORE_PATH/migrations`.
pub(super) struct Migrations {
    dir: PathBuf,
    jobs: Mutex<HashMap<String, Arc<watch::Sender<MigrationJob>>>>,
}

impl Migrations {
    /// Opens the record directory and loads every record (unreadable ones are skipped with a
    /// warning naming the file).
    pub(super) fn open(dir: PathBuf) -> std::io::Result<(Migrations, Vec<MigrationJob>)> {
        create_private_dir(&dir)?;
        let mut loaded = Vec::new();
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            match std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<MigrationJob>(&b).map_err(|e| e.to_string()))
            {
                Ok(j) => loaded.push(j),
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "skipping unreadable migration job record")
                }
            }
        }
        let migrations = Migrations {
            dir,
            jobs: Mutex::new(HashMap::new()),
        };
        Ok((migrations, loaded))
    }

    pub(super) fn insert(&self, job: MigrationJob) -> Arc<watch::Sender<MigrationJob>> {
        let id = job.id.clone();
        let tx = Arc::new(watch::Sender::new(job));
        self.jobs
            .lock()
            .expect("migration jobs")
            .insert(id, tx.clone());
        tx
    }

    pub(super) fn get(&self, id: &str) -> Option<Arc<watch::Sender<MigrationJob>>> {
        self.jobs.lock().expect("migration jobs").get(id).cloned()
    }

    /// Every job, newest first.
    pub(super) fn all(&self) -> Vec<MigrationJob> {
        let mut v: Vec<MigrationJob> = self
            .jobs
            .lock()
            .expect("migration jobs")
            .values()
            .map(|tx| tx.borrow().clone())
            .collect();
        v.sort_by(|a, b| (b.created_at_ms, &b.id).cmp(&(a.created_at_ms, &a.id)));
        v
    }

    /// Forgets the finished jobs that ended before `cutoff_ms` (retention): (ids removed).
    pub(super) fn expire(&self, cutoff_ms: u64) -> Vec<String> {
        let mut jobs = self.jobs.lock().expect("migration jobs");
        let expired: Vec<String> = jobs
            .iter()
            .filter(|(_, tx)| {
                let j = tx.borrow();
                j.status.is_final() && j.finished_at_ms > 0 && j.finished_at_ms < cutoff_ms
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in &expired {
            jobs.remove(id);
            let _ = std::fs::remove_file(self.dir.join(format!("{id}.json")));
        }
        expired
    }

    /// The running or queued migration job that covers `server/database`, if any.
    pub(super) fn busy(&self, server: &str, database: &str) -> Option<String> {
        self.jobs
            .lock()
            .expect("migration jobs")
            .values()
            .find_map(|tx| {
                let j = tx.borrow();
                (!j.status.is_final()
                    && j.targets
                        .iter()
                        .any(|t| t.server == server && t.database == database))
                .then(|| j.id.clone())
            })
    }

    /// Writes a job's record (`.tmp`, then rename); `sync` also fsyncs it (at the start and
    /// the end of a job; the per-database updates in between are rebuilt from the databases
    /// after a crash).
    fn persist(&self, job: &MigrationJob, sync: bool) {
        let write = || -> std::io::Result<()> {
            let bytes = serde_json::to_vec_pretty(job).map_err(std::io::Error::other)?;
            let tmp = self.dir.join(format!("{}.json.tmp", job.id));
            {
                let mut f = std::fs::File::create(&tmp)?;
                f.write_all(&bytes)?;
                if sync {
                    f.sync_all()?;
                }
            }
            std::fs::rename(&tmp, self.dir.join(format!("{}.json", job.id)))
        };
        if let Err(e) = write() {
            tracing::error!(job = %job.id, dir = %self.dir.display(), error = %e, "cannot write the migration job record (SCHEMA_JOB_STORE_PATH)");
        }
    }
}

/// A migration id: 1-128 letters, digits, `.`, `-` and `_`.
pub(super) fn is_migration_id(s: &str) -> bool {
    (1..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

/// Runs migration jobs: their records, the fan-out, and the reconciliation after a crash.
pub(super) struct Migrator {
    runner: Arc<Runner>,
    servers: Vec<ServerDef>,
    concurrency: MigrationConcurrency,
    /// The jobs.
    pub(super) jobs: Migrations,
}

impl Migrator {
    /// A migrator applying through `runner` to `servers`.
    pub(super) fn new(
        runner: Arc<Runner>,
        servers: Vec<ServerDef>,
        concurrency: MigrationConcurrency,
        jobs: Migrations,
    ) -> Migrator {
        Migrator {
            runner,
            servers,
            concurrency,
            jobs,
        }
    }

    fn server(&self, name: &str) -> Option<&ServerDef> {
        self.servers.iter().find(|s| s.name == name)
    }

    /// Records a new job and starts its fan-out over the stored file at `path`.
    pub(super) fn start(self: &Arc<Self>, job: MigrationJob, path: PathBuf) {
        self.jobs.persist(&job, true);
        let tx = self.jobs.insert(job);
        tokio::spawn(fan_out(self.clone(), tx, path));
    }

    /// At start: loads the migration jobs; those a dead daemon left unfinished are reconciled
    /// in the background — each unfinished database is asked whether it recorded the
    /// migration (applied: the registry and the job say so; not: not attempted), and the job
    /// fails with [`STOPPED_REASON`].
    pub(super) fn resume(self: &Arc<Self>, loaded: Vec<MigrationJob>) {
        for job in loaded {
            let unfinished = !job.status.is_final();
            let tx = self.jobs.insert(job);
            if unfinished {
                let id = tx.borrow().id.clone();
                tracing::warn!(job = %id, "migration job failed: {STOPPED_REASON}; checking its unfinished databases");
                tokio::spawn(reconcile(self.clone(), tx));
            }
        }
    }

    /// The ready tenant databases of `engine` that `selector` picks: (server, database), by
    /// server then name.
    pub(super) fn select(
        &self,
        engine: SqlEngine,
        selector: &Selector,
    ) -> Result<Vec<(String, String)>, ProvisionError> {
        let labels = |s: &str| self.server(s).map(|d| d.labels.clone());
        let mut filter = Filter {
            engine: Some(engine),
            ..Filter::default()
        };
        match selector {
            Selector::All => {}
            Selector::Server(s) => {
                match self.server(s) {
                    None => {
                        return Err(ProvisionError::InvalidArgument(format!(
                            "server {s:?} is not configured; SchemaService/ListServers lists them"
                        )))
                    }
                    Some(d) if d.engine != engine => {
                        return Err(ProvisionError::InvalidArgument(format!(
                            "server {s} is a {} server, not {engine}",
                            d.engine
                        )))
                    }
                    Some(_) => {}
                }
                filter.server = Some(s.clone());
            }
            Selector::Labels(l) => filter.labels = l.clone(),
            Selector::Databases(names) => {
                let all = self.runner.registry.list(&filter, labels);
                let mut out = Vec::new();
                for name in names {
                    let (server, db) = match name.split_once('/') {
                        Some((s, d)) => (Some(s), d),
                        None => (None, name.as_str()),
                    };
                    let found: Vec<_> = all
                        .iter()
                        .filter(|r| r.database == db && server.is_none_or(|s| r.server == s))
                        .collect();
                    match found.as_slice() {
                        [] => {
                            return Err(ProvisionError::InvalidArgument(format!(
                                "{engine} database {name} is not in the tenant registry \
                                 (SchemaService/ListDatabases lists them)"
                            )))
                        }
                        [one] => out.push((one.server.clone(), one.database.clone())),
                        many => {
                            return Err(ProvisionError::InvalidArgument(format!(
                                "database {db} is on the servers {}; write server/{db}",
                                many.iter()
                                    .map(|r| r.server.as_str())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            )))
                        }
                    }
                }
                out.sort();
                out.dedup();
                return Ok(out);
            }
        }
        let picked: Vec<(String, String)> = self
            .runner
            .registry
            .list(&filter, labels)
            .into_iter()
            .filter(|r| r.state == TenantState::Ready)
            .map(|r| (r.server, r.database))
            .collect();
        if picked.is_empty() {
            return Err(ProvisionError::InvalidArgument(format!(
                "the selector matches no ready {engine} tenant database \
                 (SchemaService/ListDatabases lists them)"
            )));
        }
        Ok(picked)
    }

    /// Records what one database did in the registry: the migration applied (also when it
    /// was there already), or the failure.
    fn record(&self, job: &Which, server: &str, database: &str, outcome: Result<(), &str>) {
        let result = self
            .runner
            .registry
            .update(server, database, |r| match outcome {
                Ok(()) => {
                    if !r.has_migration(&job.migration_id) {
                        r.migrations.push(AppliedMigration {
                            id: job.migration_id.clone(),
                            sha256: job.sha256.clone(),
                            applied_at_ms: now_ms(),
                            job_id: job.id.clone(),
                        });
                    }
                    if r.last_failure
                        .as_ref()
                        .is_some_and(|f| f.id == job.migration_id)
                    {
                        r.last_failure = None;
                    }
                }
                Err(error) => {
                    r.last_failure = Some(MigrationFailure {
                        id: job.migration_id.clone(),
                        sha256: job.sha256.clone(),
                        error: error.to_owned(),
                        at_ms: now_ms(),
                        job_id: job.id.clone(),
                    })
                }
            });
        if let Err(e) = result {
            tracing::error!(job = %job.id, server, database, error = %e, "cannot write the tenant registry (SCHEMA_REGISTRY_PATH)");
        }
    }
}

/// What identifies a migration, shared by the tasks of its fan-out.
struct Which {
    /// The fan-out job.
    id: String,
    /// The migration id.
    migration_id: String,
    /// SHA-256 of its file.
    sha256: String,
    /// What a failure does.
    on_failure: OnFailure,
}

impl Which {
    fn of(j: &MigrationJob) -> Arc<Which> {
        Arc::new(Which {
            id: j.id.clone(),
            migration_id: j.migration_id.clone(),
            sha256: j.sha256.clone(),
            on_failure: j.on_failure,
        })
    }
}

/// Changes target `i` of a job.
fn set_target(
    tx: &watch::Sender<MigrationJob>,
    i: usize,
    change: impl FnOnce(&mut MigrationTarget),
) {
    tx.send_modify(|j| change(&mut j.targets[i]));
}

/// Applies the migration to every target, within the permits, then ends the job.
async fn fan_out(inner: Arc<Migrator>, tx: Arc<watch::Sender<MigrationJob>>, path: PathBuf) {
    tx.send_modify(|j| {
        j.status = JobStatus::Running;
        j.started_at_ms = now_ms();
    });
    let conc = inner.concurrency;
    let total = Arc::new(Semaphore::new(conc.total));
    let mut per_server: HashMap<String, Arc<Semaphore>> = HashMap::new();
    let stop = Arc::new(AtomicBool::new(false));
    let down: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    let path = Arc::new(path);
    let (which, targets) = {
        let j = tx.borrow();
        let targets: Vec<(String, String)> = j
            .targets
            .iter()
            .map(|t| (t.server.clone(), t.database.clone()))
            .collect();
        (Which::of(&j), targets)
    };
    let mut tasks = tokio::task::JoinSet::new();
    for (i, (server, database)) in targets.into_iter().enumerate() {
        let server_permits = per_server
            .entry(server.clone())
            .or_insert_with(|| Arc::new(Semaphore::new(conc.per_server)))
            .clone();
        let (inner, tx, total, stop, down, path, job) = (
            inner.clone(),
            tx.clone(),
            total.clone(),
            stop.clone(),
            down.clone(),
            path.clone(),
            which.clone(),
        );
        tasks.spawn(async move {
            let Ok(_server) = server_permits.acquire_owned().await else {
                return;
            };
            let Ok(_fleet) = total.acquire_owned().await else {
                return;
            };
            let skip = if stop.load(Ordering::SeqCst) {
                Some("not started: an earlier database failed and on_failure is stop".to_owned())
            } else {
                down.lock()
                    .expect("down servers")
                    .get(&server)
                    .map(|e| format!("not started: server {server} is unreachable ({e})"))
            };
            if let Some(reason) = skip {
                set_target(&tx, i, |t| {
                    t.state = TargetState::NotAttempted;
                    t.error = Some(reason);
                    t.finished_at_ms = now_ms();
                });
                return;
            }
            set_target(&tx, i, |t| {
                t.state = TargetState::Running;
                t.started_at_ms = now_ms();
            });
            let m = Migration {
                id: &job.migration_id,
                sha256: &job.sha256,
                job_id: &job.id,
                upload: &path,
            };
            let result = inner.runner.migrate(&server, &database, m).await;
            match result {
                Ok(done) => {
                    inner.record(&job, &server, &database, Ok(()));
                    set_target(&tx, i, |t| {
                        match done {
                            Migrated::Applied { statements } => {
                                t.state = TargetState::Applied;
                                t.statements = statements;
                            }
                            Migrated::Skipped => t.state = TargetState::Skipped,
                        }
                        t.finished_at_ms = now_ms();
                    });
                }
                Err(e) => {
                    let error = e.to_string();
                    if e.is_unreachable() {
                        down.lock()
                            .expect("down servers")
                            .insert(server.clone(), error.clone());
                    }
                    if job.on_failure == OnFailure::Stop {
                        stop.store(true, Ordering::SeqCst);
                    }
                    inner.record(&job, &server, &database, Err(&error));
                    tracing::warn!(job = %job.id, migration = %job.migration_id, server = %server, database = %database, error = %error, "migration failed on a database");
                    set_target(&tx, i, |t| {
                        t.state = TargetState::Failed;
                        t.line = e.line();
                        t.error = Some(error);
                        t.finished_at_ms = now_ms();
                    });
                }
            }
            inner.jobs.persist(&tx.borrow(), false);
        });
    }
    while tasks.join_next().await.is_some() {}
    let _ = tokio::fs::remove_file(path.as_path()).await;
    finish(&inner, &tx, None);
}

/// Ends a job: its status and summary from its targets; the record fsynced.
fn finish(inner: &Migrator, tx: &watch::Sender<MigrationJob>, reason: Option<&str>) {
    tx.send_modify(|j| {
        let bad = j.count(TargetState::Failed) + j.count(TargetState::NotAttempted);
        j.finished_at_ms = now_ms();
        if bad == 0 && reason.is_none() {
            j.status = JobStatus::Success;
            j.error = None;
        } else {
            j.status = JobStatus::Failed;
            let mut summary = format!(
                "{} of {} databases failed, {} not attempted",
                j.count(TargetState::Failed),
                j.targets.len(),
                j.count(TargetState::NotAttempted)
            );
            if let Some(r) = reason {
                summary = format!("{r}; {summary}");
            }
            j.error = Some(summary);
        }
    });
    let job = tx.borrow().clone();
    inner.jobs.persist(&job, true);
    tracing::info!(
        job = %job.id,
        migration = %job.migration_id,
        status = job.status.as_str(),
        applied = job.count(TargetState::Applied),
        skipped = job.count(TargetState::Skipped),
        failed = job.count(TargetState::Failed),
        not_attempted = job.count(TargetState::NotAttempted),
        "migration ended"
    );
}

async fn reconcile(inner: Arc<Migrator>, tx: Arc<watch::Sender<MigrationJob>>) {
    let job = tx.borrow().clone();
    let which = Which::of(&job);
    for (i, t) in job.targets.iter().enumerate() {
        if t.state.is_final() {
            continue;
        }
        let found = inner
            .runner
            .recorded_migration(&t.server, &t.database, &job.migration_id)
            .await;
        match found {
            Ok(Some(sha)) if sha == job.sha256 => {
                inner.record(&which, &t.server, &t.database, Ok(()));
                set_target(&tx, i, |t| {
                    t.state = TargetState::Applied;
                    t.finished_at_ms = now_ms();
                });
            }
            other => {
                let why = match other {
                    Err(e) => format!(
                        "{STOPPED_REASON} before it finished here, and checking failed: {e}; \
                         run the migration again"
                    ),
                    _ => format!(
                        "{STOPPED_REASON} before it finished here (nothing was recorded); run \
                         the migration again"
                    ),
                };
                set_target(&tx, i, |t| {
                    t.state = TargetState::NotAttempted;
                    t.error = Some(why);
                    t.finished_at_ms = now_ms();
                });
            }
        }
    }
    let _ = tokio::fs::remove_file(inner.runner.upload_path(&job.id)).await;
    finish(&inner, &tx, Some(STOPPED_REASON));
}
