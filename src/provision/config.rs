//! The provisioning settings, read from the environment with the seed service's variable names.
//!
//! Provisioning is off unless `PROVISION_POSTGRES_URL` or `PROVISION_MYSQL_URL` is set, so a
//! daemon configured only for CDC behaves exactly as before. Every value is validated here, at
//! start, in the style of [`crate::config`]: one line naming the variable and what it expects
//! (exit code 2), and no secret ever in a message.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::env::{parse_num, ConfigError, Vars};
use crate::postgres::conninfo::PgConnInfo;
use crate::secret::Secret;

use super::job::SqlEngine;
use super::names::is_role_name;
use super::servers::{self, Admin, ServerDef};

/// Default `SCHEMA_TMP_PATH`: where uploads are stored until applied.
pub const DEFAULT_TMP_PATH: &str = "/tmp/dbmazz-schemas";
/// Default `SCHEMA_MAX_BYTES`: 8 GiB, enough for multi-GB dumps while bounding the disk used by
/// one upload.
pub const DEFAULT_MAX_BYTES: u64 = 8 * 1024 * 1024 * 1024;
/// Default `SCHEMA_WORKERS`: jobs applied at the same time.
pub const DEFAULT_WORKERS: u64 = 2;
/// Default `RATE_LIMIT_WINDOW_MS`.
pub const DEFAULT_RATE_LIMIT_WINDOW_MS: u64 = 60_000;
/// Default `RATE_LIMIT_MAX`: uploads per client address per window.
pub const DEFAULT_RATE_LIMIT_MAX: u64 = 30;
/// Default `SCHEMA_LOCK_TIMEOUT_MS`: a statement of an applied file that waits this long for a
/// lock fails instead of queueing the sessions behind it (a fresh database has no other
/// sessions; a live one has).
pub const DEFAULT_LOCK_TIMEOUT_MS: u64 = 10_000;

/// What a job does around the apply; the server's defaults, overridable per upload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobOptions {
    /// `SCHEMA_FAIL_IF_DB_EXISTS` (default true): refuse when the database exists already.
    pub fail_if_db_exists: bool,
    /// `SCHEMA_DROP_DB_ON_FAILURE` (default true): drop the database dbmazz created when the
    /// apply fails (or when dbmazz died during it).
    pub drop_db_on_failure: bool,
    /// `DELETE_SCHEMA_AFTER_APPLY` (default true): delete the stored upload when the job ends.
    pub delete_schema_after_apply: bool,
    /// `SCHEMA_DEDUPLICATE_BY_HASH` (default true): same engine + database + SHA-256 as an
    /// earlier job that did not fail, and whose database was not dropped since, returns that
    /// job.
    pub deduplicate_by_hash: bool,
    /// `SCHEMA_ENABLE_SQL_GUARD` (default true): refuse dangerous statements before anything
    /// is created.
    pub enable_sql_guard: bool,
    /// `SCHEMA_DRY_RUN` (default false): split and guard only.
    pub dry_run: bool,
}

impl Default for JobOptions {
    fn default() -> Self {
        JobOptions {
            fail_if_db_exists: true,
            drop_db_on_failure: true,
            delete_schema_after_apply: true,
            deduplicate_by_hash: true,
            enable_sql_guard: true,
            dry_run: false,
        }
    }
}

/// Uploads allowed per client address within a window (`RATE_LIMIT_WINDOW_MS`,
/// `RATE_LIMIT_MAX`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// Length of the window.
    pub window: Duration,
    /// Uploads per window.
    pub max: u32,
}

/// The whole validated provisioning configuration.
#[derive(Clone, Debug)]
pub struct ProvisionConfig {
    /// The servers tenants live on: `PROVISION_SERVERS_FILE`, plus the servers named
    /// `postgres` and `mysql` that `PROVISION_POSTGRES_URL` / `PROVISION_MYSQL_URL` define.
    pub servers: Vec<ServerDef>,
    /// `SCHEMA_TMP_PATH`.
    pub tmp_path: PathBuf,
    /// `SCHEMA_JOB_STORE_PATH` (default `$SCHEMA_TMP_PATH/jobs`): one JSON file per job.
    pub job_store_path: PathBuf,
    /// `SCHEMA_REGISTRY_PATH` (default `$SCHEMA_TMP_PATH/registry`): one JSON file per tenant
    /// database.
    pub registry_path: PathBuf,
    /// The `SCHEMA_*` defaults of every job.
    pub defaults: JobOptions,
    /// `SCHEMA_ENABLE_IDEMPOTENCY` (default true).
    pub idempotency: bool,
    /// `SCHEMA_FORBIDDEN_KEYWORDS`: extra words the guard refuses (comma list).
    pub forbidden_keywords: Vec<String>,
    /// `RATE_LIMIT_*`; `None` when `RATE_LIMIT_MAX=0`.
    pub rate_limit: Option<RateLimit>,
    /// `SCHEMA_MAX_BYTES`.
    pub max_bytes: u64,
    /// `SCHEMA_WORKERS`.
    pub workers: usize,
    /// Database names refused besides the built-in reserved ones: the daemon's own databases.
    pub reserved: Vec<String>,
    /// `SCHEMA_STATEMENT_TIMEOUT_MS` and `SCHEMA_LOCK_TIMEOUT_MS`.
    pub bounds: Bounds,
    /// `MIGRATION_CONCURRENCY` and `MIGRATION_CONCURRENCY_PER_SERVER`.
    pub migration_concurrency: MigrationConcurrency,
    /// `SCHEMA_JOB_RETENTION_MS` and `SCHEMA_UPLOAD_RETENTION_MS`.
    pub retention: Retention,
}

/// How many databases a migration works on at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MigrationConcurrency {
    /// `MIGRATION_CONCURRENCY` (default 8): in total.
    pub total: usize,
    /// `MIGRATION_CONCURRENCY_PER_SERVER` (default 4): on one server.
    pub per_server: usize,
}

/// How long finished jobs and stored uploads are kept; `None`: for ever.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    /// `SCHEMA_JOB_RETENTION_MS` (default 7 days): a finished job's record is deleted this
    /// long after it ended.
    pub jobs: Option<Duration>,
    /// `SCHEMA_UPLOAD_RETENTION_MS` (default 1 day): a stored upload kept after its job
    /// (`DELETE_SCHEMA_AFTER_APPLY=false`) is deleted this long after the job ended.
    pub uploads: Option<Duration>,
}

/// Default `SCHEMA_JOB_RETENTION_MS`: 7 days.
pub const DEFAULT_JOB_RETENTION_MS: u64 = 7 * 86_400_000;
/// Default `SCHEMA_UPLOAD_RETENTION_MS`: 1 day.
pub const DEFAULT_UPLOAD_RETENTION_MS: u64 = 86_400_000;

/// How long one statement of an applied file may run, and wait for a lock; `None`: no bound.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bounds {
    /// `SCHEMA_STATEMENT_TIMEOUT_MS` (default 0: none; a dump's COPY of a large table is one
    /// statement).
    pub statement: Option<Duration>,
    /// `SCHEMA_LOCK_TIMEOUT_MS` (default 10 s).
    pub lock: Option<Duration>,
}

impl Bounds {
    fn from_vars(vars: &Vars) -> Result<Bounds, ConfigError> {
        let ms = |var: &'static str, default| {
            parse_num(vars.get(var), var, default, 0, 86_400_000)
                .map(|ms| (ms > 0).then(|| Duration::from_millis(ms)))
        };
        Ok(Bounds {
            statement: ms("SCHEMA_STATEMENT_TIMEOUT_MS", 0)?,
            lock: ms("SCHEMA_LOCK_TIMEOUT_MS", DEFAULT_LOCK_TIMEOUT_MS)?,
        })
    }
}

impl ProvisionConfig {
    /// Reads the provisioning settings; `Ok(None)` when neither `PROVISION_SERVERS_FILE` nor
    /// `PROVISION_POSTGRES_URL` nor `PROVISION_MYSQL_URL` is set. `own_databases` are refused as
    /// targets (the CDC source).
    pub fn from_vars(
        vars: &HashMap<String, String>,
        own_databases: &[String],
    ) -> Result<Option<ProvisionConfig>, ConfigError> {
        let vars = Vars::from(vars);
        let get = |name: &str| vars.get(name);
        let (postgres, mysql) = shorthand(&vars)?;
        let file = get("PROVISION_SERVERS_FILE");
        if postgres.is_none() && mysql.is_none() && file.is_none() {
            return Ok(None);
        }
        let mysql_role_host = get("PROVISION_MYSQL_ROLE_HOST").unwrap_or_else(|| "%".into());
        if mysql_role_host.contains(['\'', '\\', '`']) || mysql_role_host.len() > 255 {
            return Err(ConfigError::new(
                "PROVISION_MYSQL_ROLE_HOST",
                "must be a host pattern such as % or 10.0.%, without quotes or backslashes",
            ));
        }
        let (role, role_password) = role(&vars, postgres.as_ref(), file.is_none())?;
        let mut servers = match &file {
            Some(path) => servers::read_file(
                path,
                &servers::RoleDefaults {
                    role: role.as_deref(),
                    role_password: role_password.as_ref(),
                    mysql_role_host: &mysql_role_host,
                },
            )?,
            None => Vec::new(),
        };
        let shorthand = [
            postgres.map(|pg| (SqlEngine::Postgres, Admin::Postgres(Box::new(pg)))),
            mysql.map(|url| (SqlEngine::Mysql, Admin::Mysql(url))),
        ];
        for (engine, admin) in shorthand.into_iter().flatten() {
            let Some(role) = role.clone() else {
                return Err(missing_role());
            };
            if servers.iter().any(|s| s.name == engine.as_str()) {
                return Err(ConfigError::new(
                    engine.url_var(),
                    format!(
                        "defines the server {:?}, which PROVISION_SERVERS_FILE defines too; \
                         keep one of them",
                        engine.as_str()
                    ),
                ));
            }
            servers.push(ServerDef {
                name: engine.as_str().to_owned(),
                engine,
                admin,
                role,
                role_password: role_password.clone(),
                mysql_role_host: mysql_role_host.clone(),
                capacity: None,
                weight: 1,
                labels: Default::default(),
            });
        }
        let (tmp_path, job_store_path, registry_path) = paths(&vars)?;
        let idempotency = parse_bool(&get, "SCHEMA_ENABLE_IDEMPOTENCY", true)?;
        let (rate_limit, max_bytes, workers) = limits(&vars)?;
        Ok(Some(ProvisionConfig {
            reserved: reserved(own_databases, &servers),
            servers,
            tmp_path,
            job_store_path,
            registry_path,
            defaults: job_defaults(&vars)?,
            idempotency,
            forbidden_keywords: forbidden_keywords(&vars)?,
            rate_limit,
            max_bytes,
            workers,
            bounds: Bounds::from_vars(&vars)?,
            migration_concurrency: migration_concurrency(&vars)?,
            retention: retention(&vars)?,
        }))
    }

    /// The server named `name`.
    pub fn server(&self, name: &str) -> Option<&ServerDef> {
        self.servers.iter().find(|s| s.name == name)
    }

    /// Whether some server has `engine`.
    pub fn has_engine(&self, engine: SqlEngine) -> bool {
        self.servers.iter().any(|s| s.engine == engine)
    }
}

fn missing_role() -> ConfigError {
    ConfigError::new(
        "PROVISION_ROLE",
        "is not set; name the non-superuser role (PostgreSQL) or user (MySQL) that owns \
         the created databases and that schemas are applied as",
    )
}

/// `MIGRATION_CONCURRENCY` and `MIGRATION_CONCURRENCY_PER_SERVER`.
fn migration_concurrency(vars: &Vars) -> Result<MigrationConcurrency, ConfigError> {
    let total = parse_num(
        vars.get("MIGRATION_CONCURRENCY"),
        "MIGRATION_CONCURRENCY",
        8,
        1,
        256,
    )?;
    let per_server = parse_num(
        vars.get("MIGRATION_CONCURRENCY_PER_SERVER"),
        "MIGRATION_CONCURRENCY_PER_SERVER",
        4,
        1,
        256,
    )?;
    Ok(MigrationConcurrency {
        total: total as usize,
        per_server: per_server as usize,
    })
}

/// `SCHEMA_JOB_RETENTION_MS` and `SCHEMA_UPLOAD_RETENTION_MS`.
fn retention(vars: &Vars) -> Result<Retention, ConfigError> {
    let ms = |var: &'static str, default| {
        parse_num(vars.get(var), var, default, 0, 3650 * 86_400_000)
            .map(|ms| (ms > 0).then(|| Duration::from_millis(ms)))
    };
    Ok(Retention {
        jobs: ms("SCHEMA_JOB_RETENTION_MS", DEFAULT_JOB_RETENTION_MS)?,
        uploads: ms("SCHEMA_UPLOAD_RETENTION_MS", DEFAULT_UPLOAD_RETENTION_MS)?,
    })
}

/// `PROVISION_POSTGRES_URL` and `PROVISION_MYSQL_URL`.
fn shorthand(vars: &Vars) -> Result<(Option<PgConnInfo>, Option<Secret>), ConfigError> {
    let get = |name: &str| vars.get(name);
    let postgres = match get("PROVISION_POSTGRES_URL") {
        None => None,
        Some(url) => Some(
            PgConnInfo::parse(&url)
                .map_err(|e| ConfigError::new("PROVISION_POSTGRES_URL", e.to_string()))?,
        ),
    };
    let mysql = match get("PROVISION_MYSQL_URL") {
        None => None,
        Some(url) => {
            if !url.starts_with("mysql://") {
                return Err(ConfigError::new(
                    "PROVISION_MYSQL_URL",
                    "must look like mysql://admin:password@host:3306/",
                ));
            }
            if mysql_async::Opts::from_url(&url).is_err() {
                return Err(ConfigError::new(
                    "PROVISION_MYSQL_URL",
                    "is not a valid URL; expected mysql://admin:password@host:3306/ \
                     (percent-encode special characters in the password)",
                ));
            }
            Some(Secret::new(url))
        }
    };
    Ok((postgres, mysql))
}

/// `PROVISION_ROLE` and its password (`PROVISION_ROLE_PASSWORD` or `…_FILE`); the role is
/// `required` unless a servers file names one per server.
fn role(
    vars: &Vars,
    postgres: Option<&PgConnInfo>,
    required: bool,
) -> Result<(Option<String>, Option<Secret>), ConfigError> {
    let get = |name: &str| vars.get(name);
    let role = match get("PROVISION_ROLE") {
        Some(role) => role,
        None if required => return Err(missing_role()),
        None => return Ok((None, role_password(vars)?)),
    };
    if !is_role_name(&role) {
        return Err(ConfigError::new(
            "PROVISION_ROLE",
            format!("{role:?} is not a valid role name; use 1-63 letters, digits and underscores"),
        ));
    }
    if let Some(pg) = postgres {
        if pg.user == role {
            return Err(ConfigError::new(
                "PROVISION_ROLE",
                "is the same role as PROVISION_POSTGRES_URL's user; schemas must run as a \
                 separate non-superuser role",
            ));
        }
    }
    Ok((Some(role), role_password(vars)?))
}

/// `PROVISION_ROLE_PASSWORD` or the contents of `PROVISION_ROLE_PASSWORD_FILE`.
fn role_password(vars: &Vars) -> Result<Option<Secret>, ConfigError> {
    let get = |name: &str| vars.get(name);
    Ok(
        match (
            get("PROVISION_ROLE_PASSWORD"),
            get("PROVISION_ROLE_PASSWORD_FILE"),
        ) {
            (Some(p), _) => Some(Secret::new(p)),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    ConfigError::new(
                        "PROVISION_ROLE_PASSWORD_FILE",
                        format!("cannot read {path}: {e}"),
                    )
                })?;
                Some(Secret::new(text.trim_end_matches(['\n', '\r'])))
            }
            (None, None) => None,
        },
    )
}

/// `SCHEMA_TMP_PATH`, `SCHEMA_JOB_STORE_PATH` and `SCHEMA_REGISTRY_PATH`, all absolute.
fn paths(vars: &Vars) -> Result<(PathBuf, PathBuf, PathBuf), ConfigError> {
    let get = |name: &str| vars.get(name);
    let tmp_path = PathBuf::from(get("SCHEMA_TMP_PATH").unwrap_or_else(|| DEFAULT_TMP_PATH.into()));
    if !tmp_path.is_absolute() {
        return Err(ConfigError::new(
            "SCHEMA_TMP_PATH",
            "must be an absolute directory path",
        ));
    }
    let under_tmp = |var: &'static str, default: &str| {
        let path = get(var).map_or_else(|| tmp_path.join(default), PathBuf::from);
        if path.is_absolute() {
            Ok(path)
        } else {
            Err(ConfigError::new(var, "must be an absolute directory path"))
        }
    };
    let job_store_path = under_tmp("SCHEMA_JOB_STORE_PATH", "jobs")?;
    let registry_path = under_tmp("SCHEMA_REGISTRY_PATH", "registry")?;
    Ok((tmp_path, job_store_path, registry_path))
}

/// The per-upload defaults (`SCHEMA_FAIL_IF_DB_EXISTS`, … `SCHEMA_DRY_RUN`).
fn job_defaults(vars: &Vars) -> Result<JobOptions, ConfigError> {
    let get = |name: &str| vars.get(name);
    let d = JobOptions::default();
    Ok(JobOptions {
        fail_if_db_exists: parse_bool(&get, "SCHEMA_FAIL_IF_DB_EXISTS", d.fail_if_db_exists)?,
        drop_db_on_failure: parse_bool(&get, "SCHEMA_DROP_DB_ON_FAILURE", d.drop_db_on_failure)?,
        delete_schema_after_apply: parse_bool(
            &get,
            "DELETE_SCHEMA_AFTER_APPLY",
            d.delete_schema_after_apply,
        )?,
        deduplicate_by_hash: parse_bool(&get, "SCHEMA_DEDUPLICATE_BY_HASH", d.deduplicate_by_hash)?,
        enable_sql_guard: parse_bool(&get, "SCHEMA_ENABLE_SQL_GUARD", d.enable_sql_guard)?,
        dry_run: parse_bool(&get, "SCHEMA_DRY_RUN", d.dry_run)?,
    })
}

/// `SCHEMA_FORBIDDEN_KEYWORDS`, upper-cased.
fn forbidden_keywords(vars: &Vars) -> Result<Vec<String>, ConfigError> {
    let get = |name: &str| vars.get(name);
    let mut forbidden_keywords = Vec::new();
    for word in get("SCHEMA_FORBIDDEN_KEYWORDS")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|w| !w.is_empty())
    {
        if !word
            .split_whitespace()
            .all(|w| w.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
        {
            return Err(ConfigError::new(
                "SCHEMA_FORBIDDEN_KEYWORDS",
                format!(
                    "{word:?} is not a keyword; expected a comma list of SQL words such as \
                     TRUNCATE,GRANT or multi-word phrases such as DROP TABLE"
                ),
            ));
        }
        forbidden_keywords.push(word.to_ascii_uppercase());
    }
    Ok(forbidden_keywords)
}

/// `RATE_LIMIT_*`, `SCHEMA_MAX_BYTES` and `SCHEMA_WORKERS`.
fn limits(vars: &Vars) -> Result<(Option<RateLimit>, u64, usize), ConfigError> {
    let get = |name: &str| vars.get(name);
    let window_ms = parse_num(
        get("RATE_LIMIT_WINDOW_MS"),
        "RATE_LIMIT_WINDOW_MS",
        DEFAULT_RATE_LIMIT_WINDOW_MS,
        1,
        86_400_000,
    )?;
    let max = parse_num(
        get("RATE_LIMIT_MAX"),
        "RATE_LIMIT_MAX",
        DEFAULT_RATE_LIMIT_MAX,
        0,
        1_000_000,
    )?;
    let rate_limit = (max > 0).then(|| RateLimit {
        window: Duration::from_millis(window_ms),
        max: max as u32,
    });
    let max_bytes = parse_num(
        get("SCHEMA_MAX_BYTES"),
        "SCHEMA_MAX_BYTES",
        DEFAULT_MAX_BYTES,
        1,
        u64::MAX / 2,
    )?;
    let workers = parse_num(
        get("SCHEMA_WORKERS"),
        "SCHEMA_WORKERS",
        DEFAULT_WORKERS,
        1,
        64,
    )? as usize;
    Ok((rate_limit, max_bytes, workers))
}

/// The databases that are never provisioning targets: the daemon's own and the servers'
/// maintenance databases.
fn reserved(own_databases: &[String], servers: &[ServerDef]) -> Vec<String> {
    let mut reserved: Vec<String> = own_databases.to_vec();
    reserved.extend(servers.iter().filter_map(ServerDef::maintenance_database));
    reserved.sort();
    reserved.dedup();
    reserved
}

fn parse_bool(
    get: &dyn Fn(&str) -> Option<String>,
    var: &'static str,
    default: bool,
) -> Result<bool, ConfigError> {
    match get(var).map(|v| v.to_ascii_lowercase()).as_deref() {
        None => Ok(default),
        Some("true" | "1" | "yes" | "on") => Ok(true),
        Some("false" | "0" | "no" | "off") => Ok(false),
        Some(other) => Err(ConfigError::new(
            var,
            format!("{other:?} is not true or false"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn off_without_urls_and_defaults_with_one() {
        assert!(ProvisionConfig::from_vars(&vars(&[]), &[])
            .unwrap()
            .is_none());
        let c = ProvisionConfig::from_vars(
            &vars(&[
                (
                    "PROVISION_POSTGRES_URL",
                    "postgres://admin:pw@db:5432/postgres",
                ),
                ("PROVISION_ROLE", "tenant_owner"),
            ]),
            &["app".into()],
        )
        .unwrap()
        .unwrap();
        assert_eq!(c.defaults, JobOptions::default());
        assert_eq!(c.job_store_path, PathBuf::from("/tmp/dbmazz-schemas/jobs"));
        assert_eq!(c.reserved, vec!["app".to_string(), "postgres".into()]);
        assert_eq!(c.workers, 2);
        assert_eq!(c.rate_limit.unwrap().max, 30);
        assert_eq!(
            c.bounds,
            Bounds {
                statement: None,
                lock: Some(Duration::from_secs(10))
            }
        );
    }

    #[test]
    fn errors_name_the_variable_and_never_the_password() {
        let base = [
            (
                "PROVISION_POSTGRES_URL",
                "postgres://admin:hunter2@db/postgres",
            ),
            ("PROVISION_ROLE", "tenant_owner"),
        ];
        let cases: &[(&str, &str, &str)] = &[
            ("SCHEMA_DRY_RUN", "maybe", "SCHEMA_DRY_RUN"),
            ("SCHEMA_WORKERS", "0", "SCHEMA_WORKERS"),
            (
                "SCHEMA_STATEMENT_TIMEOUT_MS",
                "1h",
                "SCHEMA_STATEMENT_TIMEOUT_MS",
            ),
            ("SCHEMA_LOCK_TIMEOUT_MS", "-1", "SCHEMA_LOCK_TIMEOUT_MS"),
            ("SCHEMA_MAX_BYTES", "ten", "SCHEMA_MAX_BYTES"),
            ("SCHEMA_TMP_PATH", "relative/dir", "SCHEMA_TMP_PATH"),
            (
                "SCHEMA_FORBIDDEN_KEYWORDS",
                "DROP;--",
                "SCHEMA_FORBIDDEN_KEYWORDS",
            ),
            ("PROVISION_ROLE", "bad-role", "PROVISION_ROLE"),
            ("PROVISION_MYSQL_URL", "http://x", "PROVISION_MYSQL_URL"),
        ];
        for (k, v, var) in cases {
            let mut m = vars(&base);
            m.insert(k.to_string(), v.to_string());
            let e = ProvisionConfig::from_vars(&m, &[]).unwrap_err();
            assert_eq!(e.var, *var);
            assert!(!e.to_string().contains("hunter2"), "{e}");
        }
        let e = ProvisionConfig::from_vars(
            &vars(&[("PROVISION_MYSQL_URL", "mysql://root:hunter2@db:3306/")]),
            &[],
        )
        .unwrap_err();
        assert_eq!(e.var, "PROVISION_ROLE");
        assert!(!e.to_string().contains("hunter2"));
    }
}
