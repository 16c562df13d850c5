//! The job model: what a provisioning job is, as every way in (gRPC, REST, CLI) and the job
//! store see it.
//!
//! These types are plain data shared by the job service ([`super::jobs`]), the job records on
//! disk ([`super::store`]) and the appliers (which report [`JobStep`]s), so they live apart from
//! all of them and depend on none.

use std::fmt;
use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use super::split::Dialect;

/// The reason given for jobs that were running when dbmazz stopped.
pub const STOPPED_REASON: &str = "dbmazz stopped while the job was running";

/// The kind of server a schema is applied to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SqlEngine {
    /// PostgreSQL, through `PROVISION_POSTGRES_URL`.
    Postgres,
    /// MySQL 8 or MariaDB, through `PROVISION_MYSQL_URL`.
    Mysql,
}

impl SqlEngine {
    /// `postgres` or `mysql`.
    pub fn as_str(self) -> &'static str {
        match self {
            SqlEngine::Postgres => "postgres",
            SqlEngine::Mysql => "mysql",
        }
    }

    /// Parses `postgres` (or `postgresql`, `pg`) and `mysql` (or `mariadb`).
    pub fn parse(s: &str) -> Option<SqlEngine> {
        match s.to_ascii_lowercase().as_str() {
            "postgres" | "postgresql" | "pg" => Some(SqlEngine::Postgres),
            "mysql" | "mariadb" => Some(SqlEngine::Mysql),
            _ => None,
        }
    }

    /// The variable that enables this engine.
    pub fn url_var(self) -> &'static str {
        match self {
            SqlEngine::Postgres => "PROVISION_POSTGRES_URL",
            SqlEngine::Mysql => "PROVISION_MYSQL_URL",
        }
    }

    /// The file format uploads for this engine follow.
    pub(super) fn dialect(self) -> Dialect {
        match self {
            SqlEngine::Postgres => Dialect::Postgres,
            SqlEngine::Mysql => Dialect::MySql,
        }
    }
}

impl fmt::Display for SqlEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a job is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    /// Stored, waiting for a worker.
    Queued,
    /// Being validated or applied.
    Running,
    /// Applied (or validated, for a dry run).
    Success,
    /// Stopped; the job's `error` says why.
    Failed,
}

impl JobStatus {
    /// `queued`, `running`, `success` or `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Success => "success",
            JobStatus::Failed => "failed",
        }
    }

    /// Whether the job has ended.
    pub fn is_final(self) -> bool {
        matches!(self, JobStatus::Success | JobStatus::Failed)
    }
}

/// What a running job is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JobStep {
    /// Waiting for a worker.
    Queued,
    /// Taking the verdict of the split and SQL guard (made while the upload was received).
    Validating,
    /// Creating the database and granting it to the role.
    CreatingDatabase,
    /// Running the statements.
    ApplyingSchema,
    /// Dropping a failed job's database, deleting the upload.
    Cleanup,
    /// Ended (see the status).
    Done,
}

impl JobStep {
    /// The kebab-case name (`applying-schema`).
    pub fn as_str(self) -> &'static str {
        match self {
            JobStep::Queued => "queued",
            JobStep::Validating => "validating",
            JobStep::CreatingDatabase => "creating-database",
            JobStep::ApplyingSchema => "applying-schema",
            JobStep::Cleanup => "cleanup",
            JobStep::Done => "done",
        }
    }
}

/// One job as clients see it (also its JSON form for REST: camelCase fields, lower-case
/// status, kebab-case stage).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Job {
    /// Server-generated id (a UUID).
    pub id: String,
    /// Where the job is.
    pub status: JobStatus,
    /// Percentage of the file applied, 0-100; never decreases, 100 exactly at success.
    pub progress: u8,
    /// What it is doing.
    pub stage: JobStep,
    /// Why it failed (and what was cleaned up).
    pub error: Option<String>,
    /// SHA-256 of the file, lower-case hex.
    pub sha256: String,
    /// Size of the file.
    pub bytes: u64,
    /// Bytes of the file applied so far.
    pub bytes_applied: u64,
    /// Statements applied (validated, for a dry run).
    pub statements: u64,
    /// Target server kind.
    pub engine: SqlEngine,
    /// Target server (records from before server names hold "", which means the server named
    /// after the engine).
    #[serde(default)]
    pub server: String,
    /// Target database.
    pub database: String,
    /// The client's file name (never used as a path).
    pub file_name: String,
    /// Whether this is a dry run.
    pub dry_run: bool,
    /// Whether dbmazz created the database for this job and still holds it.
    pub created_database: bool,
    /// When the upload was stored (ms since the Unix epoch).
    pub created_at_ms: u64,
    /// When a worker took it (0 until then).
    pub started_at_ms: u64,
    /// When it ended (0 until then).
    pub finished_at_ms: u64,
    /// When the apply proper began, after validation and CREATE DATABASE (0 until then, and
    /// for a dry run).
    #[serde(default)]
    pub apply_started_at_ms: u64,
    /// The idempotency key of the upload.
    pub idempotency_key: Option<String>,
}

/// Per-upload overrides of the server's `SCHEMA_*` settings; `None` keeps the setting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `SCHEMA_FAIL_IF_DB_EXISTS`.
    pub fail_if_db_exists: Option<bool>,
    /// `SCHEMA_DROP_DB_ON_FAILURE`.
    pub drop_db_on_failure: Option<bool>,
    /// `DELETE_SCHEMA_AFTER_APPLY`.
    pub delete_schema_after_apply: Option<bool>,
    /// `SCHEMA_DEDUPLICATE_BY_HASH`.
    pub deduplicate_by_hash: Option<bool>,
    /// `SCHEMA_DRY_RUN`.
    pub dry_run: Option<bool>,
    /// `SCHEMA_ENABLE_SQL_GUARD`: may turn the guard on, never off.
    pub enable_sql_guard: Option<bool>,
}

/// What an upload is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadMeta {
    /// Target server kind.
    pub engine: SqlEngine,
    /// The server to create it on; `None`: the placement rule picks one.
    pub server: Option<String>,
    /// With placement: only servers with these labels.
    pub placement_labels: std::collections::BTreeMap<String, String>,
    /// Database to create.
    pub database: String,
    /// The client's file name; must end in `.sql`.
    pub file_name: String,
    /// With `SCHEMA_ENABLE_IDEMPOTENCY`: retries with the same key return the first job.
    pub idempotency_key: Option<String>,
    /// Per-call overrides.
    pub overrides: Overrides,
    /// The caller's address, for `RATE_LIMIT_*` (`None`: all such callers share one budget).
    pub client: Option<IpAddr>,
}

/// The answer to an accepted upload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Submitted {
    /// The job (the earlier one when `deduplicated`).
    pub job_id: String,
    /// An earlier job was returned and the upload discarded.
    pub deduplicated: bool,
    /// SHA-256 of the upload.
    pub sha256: String,
    /// Size of the upload.
    pub bytes: u64,
}

/// The answer to a DropDatabase.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dropped {
    /// False when the database did not exist.
    pub dropped: bool,
    /// Connections terminated first.
    pub terminated_connections: u32,
    /// What happened, in words.
    pub message: String,
}

/// Now, in ms since the Unix epoch (the unit of the job's timestamps).
pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Job {
    /// The server the job targets (the engine's name for records from before server names).
    pub fn server_name(&self) -> &str {
        if self.server.is_empty() {
            self.engine.as_str()
        } else {
            &self.server
        }
    }
}
