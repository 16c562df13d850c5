//! The StarRocks sink's settings: `STARROCKS_*`, `CREATE_TABLES`, `TRUNCATE_POLICY` and `ON_REJECT`,
//! parsed and checked here, next to the code that uses them.

use std::fmt;
use std::time::Duration;

use percent_encoding::{percent_encode, AsciiSet, NON_ALPHANUMERIC};

use crate::env::{parse_choice, parse_num, ConfigError, Vars};

/// What a user name or password may hold unescaped in a URL: letters, digits and `-._~`.
const USERINFO: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');
use crate::secret::Secret;

/// What happens in StarRocks when a table is truncated in PostgreSQL (`TRUNCATE_POLICY`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TruncatePolicy {
    /// Stop the job with an error saying what happened (the default: nothing is lost or
    /// guessed).
    Stop,
    /// Truncate the target table too.
    Truncate,
}

/// What happens to a row StarRocks rejects (`ON_REJECT`): a value it cannot convert under
/// `strict_mode`, a string longer than its column, a NULL in a NOT NULL column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnReject {
    /// Stop the job, naming the rejected rows' keys, reasons and values (the default).
    Stop,
    /// Write the rejected rows to `dbmazz_dead_letters`, load the rest and keep streaming.
    DeadLetter,
}

/// What happens when a column of a replicated table changes type in a way StarRocks' `MODIFY
/// COLUMN` cannot follow without losing values (`SCHEMA_TYPE_CHANGE`). Widening changes
/// (int2→int4, varchar(10)→varchar(20), …) are always propagated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SchemaTypeChange {
    /// Stop the job before any row with the new type is written, naming the statement to run
    /// (the default).
    Stop,
    /// Drop the StarRocks column and add it again with the new type: the column's values of
    /// rows not changed since are lost (NULL) until they change again.
    RecreateColumn,
}

/// What happens to a column dropped in PostgreSQL (`SCHEMA_DROP_COLUMN`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SchemaDropColumn {
    /// Keep the StarRocks column; rows written from then on get NULL in it (the default).
    Keep,
    /// Drop the StarRocks column too.
    Drop,
    /// Stop the job, naming the statement to run.
    Stop,
}

/// How the cluster stores data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunMode {
    /// BEs keep the tablets and their replicas.
    SharedNothing,
    /// Compute nodes over object storage.
    SharedData,
}

impl fmt::Display for RunMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RunMode::SharedNothing => "shared_nothing",
            RunMode::SharedData => "shared_data",
        })
    }
}

/// `STARROCKS_*` settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StarRocksConfig {
    /// `STARROCKS_URL`: scheme://host:port of an FE (:8030) or BE (:8040), without a path.
    pub url: String,
    /// The host of `url` (used for the default MySQL address and redirect rules).
    pub host: String,
    /// `STARROCKS_DB`.
    pub database: String,
    /// `STARROCKS_USER`.
    pub user: String,
    /// `STARROCKS_PASS`.
    pub password: Secret,
    /// `STARROCKS_MYSQL_URL` (default `mysql://user:pass@<host>:9030/`): the FE's MySQL port,
    /// used for DDL and checks.
    pub mysql_url: Secret,
    /// `STARROCKS_REDIRECT_ALLOW`: when set, the only hosts a 307 may send loads to (after
    /// rewriting); empty (the default) follows the FE to any of its nodes.
    pub redirect_allow: Vec<String>,
    /// `STARROCKS_HOST_REWRITE`: `from=to` pairs applied to redirect hosts (default:
    /// `127.0.0.1` and `localhost` → the FE host, for all-in-one setups).
    pub host_rewrite: Vec<(String, String)>,
    /// `STARROCKS_LOAD_TIMEOUT_S`: the server-side `timeout` of each load; the client waits
    /// 60 s longer.
    pub load_timeout: Duration,
    /// `STARROCKS_STALL_TIMEOUT_S`: a load that moves no byte for this long is abandoned and
    /// retried (the label makes the retry safe): a network that drops
    /// packets without closing would otherwise hold the batch for the whole load timeout.
    pub stall_timeout: Duration,
    /// `STARROCKS_BE_PIN_MS`: for this long after the FE redirected a load that then
    /// committed, loads go straight to that BE/CN and skip the FE's 307 (a fresh TCP connection
    /// per load); 0 sends every load through the FE.
    pub be_pin: Duration,
    /// `CREATE_TABLES`: create missing target tables from the PostgreSQL schema.
    pub create_tables: bool,
    /// `STARROCKS_RUN_MODE`: `shared_nothing` or `shared_data` when set; unset (`auto`), it is
    /// read from the FE (which needs the OPERATE privilege).
    pub run_mode: Option<RunMode>,
    /// `STARROCKS_DATETIME_FRACTION=drop`: accept that a StarRocks before 3.3.5 keeps
    /// timestamps to the second (default `keep`: such a cluster is refused).
    pub datetime_fraction_drop: bool,
    /// `STARROCKS_PRIMARY_KEY_LIMIT`: the BEs' `primary_key_limit_size` (default 128 bytes); a
    /// row whose encoded key is longer stops the job before its load is sent.
    pub primary_key_limit: usize,
    /// `STARROCKS_REPLICATION_NUM`: replicas of the tables dbmazz creates; `None` (the default)
    /// takes the number of alive BEs (or CNs), at most 3.
    pub replication_num: Option<u32>,
    /// `TRUNCATE_POLICY`.
    pub truncate_policy: TruncatePolicy,
    /// `ON_REJECT`.
    pub on_reject: OnReject,
    /// `SCHEMA_TYPE_CHANGE`.
    pub type_change: SchemaTypeChange,
    /// `SCHEMA_DROP_COLUMN`.
    pub drop_column: SchemaDropColumn,
    /// `STARROCKS_COMPRESS=gzip`: gzip load bodies (`compression: gzip`, StarRocks ≥ 3.2.7).
    pub gzip: bool,
    /// `STARROCKS_CA_FILE`: PEM CA certificates that an `https://` StarRocks must chain to;
    /// without it the system's trust store is used.
    pub ca_file: Option<std::path::PathBuf>,
    /// `STARROCKS_SNAPSHOT_FORMAT=csv` (default): snapshot rows that need no escaping are loaded
    /// as tab-separated CSV, the rest (and tables with JSON or array columns) as JSON; `json`
    /// loads every snapshot row as JSON.
    pub snapshot_csv: bool,
}

/// Default `STARROCKS_STALL_TIMEOUT_S`.
pub const DEFAULT_STALL_TIMEOUT_S: u64 = 120;

/// Default `STARROCKS_BE_PIN_MS`.
pub const DEFAULT_BE_PIN_MS: u64 = 1000;

impl StarRocksConfig {
    /// Reads the `STARROCKS_*` settings (and `CREATE_TABLES`, `TRUNCATE_POLICY`, `ON_REJECT`,
    /// `SCHEMA_TYPE_CHANGE`, `SCHEMA_DROP_COLUMN`).
    pub fn from_vars(vars: &Vars) -> Result<StarRocksConfig, ConfigError> {
        let get = |name: &str| vars.get(name);
        let (url, host) = fe_url(vars)?;
        let database = get("STARROCKS_DB").ok_or_else(|| {
            ConfigError::new(
                "STARROCKS_DB",
                "is not set; expected the StarRocks database name",
            )
        })?;
        let user = get("STARROCKS_USER").unwrap_or_else(|| "root".into());
        let password = Secret::new(get("STARROCKS_PASS").unwrap_or_default());
        let mysql_url = match get("STARROCKS_MYSQL_URL") {
            Some(u) => {
                if !u.starts_with("mysql://") {
                    return Err(ConfigError::new(
                        "STARROCKS_MYSQL_URL",
                        "must look like mysql://user:password@fe-host:9030/",
                    ));
                }
                Secret::new(u)
            }
            None => Secret::new(format!(
                "mysql://{}:{}@{}:9030/",
                percent_encode(user.as_bytes(), USERINFO),
                percent_encode(password.expose().as_bytes(), USERINFO),
                host
            )),
        };
        let (host_rewrite, redirect_allow) = redirects(vars, &host)?;
        let load_timeout = Duration::from_secs(parse_num(
            get("STARROCKS_LOAD_TIMEOUT_S"),
            "STARROCKS_LOAD_TIMEOUT_S",
            600,
            1,
            259_200,
        )?);
        let stall_timeout = Duration::from_secs(parse_num(
            get("STARROCKS_STALL_TIMEOUT_S"),
            "STARROCKS_STALL_TIMEOUT_S",
            DEFAULT_STALL_TIMEOUT_S,
            5,
            86_400,
        )?);
        let be_pin = Duration::from_millis(parse_num(
            get("STARROCKS_BE_PIN_MS"),
            "STARROCKS_BE_PIN_MS",
            DEFAULT_BE_PIN_MS,
            0,
            3_600_000,
        )?);
        let create_tables = parse_choice(
            get("CREATE_TABLES"),
            "CREATE_TABLES",
            &[("false", false), ("true", true)],
        )?;
        let replication_num = get("STARROCKS_REPLICATION_NUM")
            .map(|raw| parse_num(Some(raw), "STARROCKS_REPLICATION_NUM", 3, 1, 32))
            .transpose()?
            .map(|n| n as u32);
        let run_mode = parse_choice(
            get("STARROCKS_RUN_MODE"),
            "STARROCKS_RUN_MODE",
            &[
                ("auto", None),
                ("shared_nothing", Some(RunMode::SharedNothing)),
                ("shared_data", Some(RunMode::SharedData)),
            ],
        )?;
        let primary_key_limit = parse_num(
            get("STARROCKS_PRIMARY_KEY_LIMIT"),
            "STARROCKS_PRIMARY_KEY_LIMIT",
            128,
            1,
            1 << 20,
        )? as usize;
        let datetime_fraction_drop = parse_choice(
            get("STARROCKS_DATETIME_FRACTION"),
            "STARROCKS_DATETIME_FRACTION",
            &[("keep", false), ("drop", true)],
        )?;
        let truncate_policy = parse_choice(
            get("TRUNCATE_POLICY"),
            "TRUNCATE_POLICY",
            &[
                ("stop", TruncatePolicy::Stop),
                ("truncate", TruncatePolicy::Truncate),
            ],
        )?;
        let on_reject = parse_choice(
            get("ON_REJECT"),
            "ON_REJECT",
            &[
                ("stop", OnReject::Stop),
                ("dead_letter", OnReject::DeadLetter),
            ],
        )?;
        let type_change = parse_choice(
            get("SCHEMA_TYPE_CHANGE"),
            "SCHEMA_TYPE_CHANGE",
            &[
                ("stop", SchemaTypeChange::Stop),
                ("recreate_column", SchemaTypeChange::RecreateColumn),
            ],
        )?;
        let drop_column = parse_choice(
            get("SCHEMA_DROP_COLUMN"),
            "SCHEMA_DROP_COLUMN",
            &[
                ("keep", SchemaDropColumn::Keep),
                ("drop", SchemaDropColumn::Drop),
                ("stop", SchemaDropColumn::Stop),
            ],
        )?;
        let gzip = parse_choice(
            get("STARROCKS_COMPRESS"),
            "STARROCKS_COMPRESS",
            &[("none", false), ("gzip", true)],
        )?;
        let snapshot_csv = parse_choice(
            get("STARROCKS_SNAPSHOT_FORMAT"),
            "STARROCKS_SNAPSHOT_FORMAT",
            &[("csv", true), ("json", false)],
        )?;
        Ok(StarRocksConfig {
            gzip,
            ca_file: ca_file(vars)?,
            snapshot_csv,
            url,
            host,
            database,
            user,
            password,
            mysql_url,
            redirect_allow,
            host_rewrite,
            load_timeout,
            stall_timeout,
            be_pin,
            create_tables,
            run_mode,
            datetime_fraction_drop,
            primary_key_limit,
            replication_num,
            truncate_policy,
            on_reject,
            type_change,
            drop_column,
        })
    }
}

/// `STARROCKS_URL`, without a trailing slash, and its host.
fn fe_url(vars: &Vars) -> Result<(String, String), ConfigError> {
    let get = |name: &str| vars.get(name);
    let raw = get("STARROCKS_URL").ok_or_else(|| {
        ConfigError::new(
            "STARROCKS_URL",
            "is not set; expected http://fe-host:8030 (or a BE on :8040), or set SINK_TYPE=ndjson",
        )
    })?;
    let bad_url = || {
        ConfigError::new(
            "STARROCKS_URL",
            format!("{raw:?} is not a URL of the form http://host:port"),
        )
    };
    let rest = raw
        .strip_prefix("http://")
        .or_else(|| raw.strip_prefix("https://"))
        .ok_or_else(bad_url)?;
    let authority = rest.trim_end_matches('/');
    if authority.is_empty() || authority.contains('/') || authority.contains('@') {
        return Err(bad_url());
    }
    let host = match authority.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() => h.to_owned(),
        Some(_) => return Err(bad_url()),
        None => authority.to_owned(),
    };
    let url = raw.trim_end_matches('/').to_owned();
    Ok((url, host))
}

/// `STARROCKS_HOST_REWRITE` (default: loopback to the FE host, for all-in-one setups) and
/// `STARROCKS_REDIRECT_ALLOW`.
#[allow(clippy::type_complexity)]
fn redirects(vars: &Vars, host: &str) -> Result<(Vec<(String, String)>, Vec<String>), ConfigError> {
    let list = |var: &str| vars.list(var);
    let mut host_rewrite = Vec::new();
    for pair in list("STARROCKS_HOST_REWRITE") {
        let (from, to) = pair.split_once('=').ok_or_else(|| {
            ConfigError::new(
                "STARROCKS_HOST_REWRITE",
                format!("{pair:?} is not from=to; expected e.g. 127.0.0.1=fe.internal"),
            )
        })?;
        host_rewrite.push((from.trim().to_owned(), to.trim().to_owned()));
    }
    if host_rewrite.is_empty() && !matches!(host, "127.0.0.1" | "localhost") {
        host_rewrite = vec![
            ("127.0.0.1".into(), host.to_owned()),
            ("localhost".into(), host.to_owned()),
        ];
    }
    // Empty: follow the FE wherever it sends a load (its BEs and CNs are on other hosts).
    let redirect_allow = list("STARROCKS_REDIRECT_ALLOW");
    Ok((host_rewrite, redirect_allow))
}

/// `STARROCKS_CA_FILE`, checked to be readable.
fn ca_file(vars: &Vars) -> Result<Option<std::path::PathBuf>, ConfigError> {
    Ok(match vars.get("STARROCKS_CA_FILE") {
        None => None,
        Some(path) => {
            if let Err(e) = std::fs::metadata(&path) {
                return Err(ConfigError::new(
                    "STARROCKS_CA_FILE",
                    format!("cannot read {path:?}: {e}; expected a PEM file of CA certificates"),
                ));
            }
            Some(std::path::PathBuf::from(path))
        }
    })
}

/// A StarRocks configuration for unit tests.
#[cfg(test)]
pub mod tests_support {
    use super::*;

    /// FE `fe:8030`, database `d`, every option at its default.
    pub fn starrocks_config() -> StarRocksConfig {
        StarRocksConfig {
            url: "http://fe:8030".into(),
            host: "fe".into(),
            database: "d".into(),
            user: "root".into(),
            password: Secret::new(""),
            mysql_url: Secret::new("mysql://root:@fe:9030/"),
            redirect_allow: Vec::new(),
            host_rewrite: Vec::new(),
            load_timeout: Duration::from_secs(600),
            stall_timeout: Duration::from_secs(DEFAULT_STALL_TIMEOUT_S),
            be_pin: Duration::from_millis(DEFAULT_BE_PIN_MS),
            create_tables: false,
            run_mode: None,
            datetime_fraction_drop: false,
            primary_key_limit: 128,
            replication_num: None,
            truncate_policy: TruncatePolicy::Stop,
            on_reject: OnReject::Stop,
            type_change: SchemaTypeChange::Stop,
            drop_column: SchemaDropColumn::Keep,
            gzip: false,
            ca_file: None,
            snapshot_csv: true,
        }
    }
}
