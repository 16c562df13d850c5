//! Typed configuration from the environment, validated before anything connects.
//!
//! Operators run dbmazz from environment variables whose names come from the original dbmazz
//! (`DATABASE_URL`, `SLOT_NAME`, `PUBLICATION_NAME`, `TABLES`, `FLUSH_SIZE`, `FLUSH_INTERVAL_MS`)
//! plus new knobs in the same style. Every value is checked here, at start, so that a typo is one
//! clear line naming the variable and what it expects (and exit code 2), rather than a confusing
//! failure minutes later. Passwords live in [`Secret`](crate::secret::Secret) inside
//! [`PgConnInfo`] and never appear in `Debug` output or errors.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use crate::postgres::conninfo::PgConnInfo;
use crate::secret::Secret;

/// A schema-qualified table name, as given in `TABLES` (unquoted parts are folded to lower case,
/// as PostgreSQL does).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableName {
    /// Schema, `public` when `TABLES` named none.
    pub schema: String,
    /// Table name.
    pub name: String,
}

impl TableName {
    /// Builds a name from its parts.
    pub fn new(schema: impl Into<String>, name: impl Into<String>) -> Self {
        TableName {
            schema: schema.into(),
            name: name.into(),
        }
    }

    /// The name quoted for SQL: `"schema"."name"`.
    pub fn quoted(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.schema, self.name)
    }
}

/// Quotes an SQL identifier, doubling embedded quotes.
pub fn quote_ident(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// Quotes an SQL string literal, doubling embedded single quotes.
pub fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// Where changes go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SinkConfig {
    /// StarRocks primary-key tables, through Stream Load.
    StarRocks(Box<StarRocksConfig>),
    /// One JSON object per change, to stdout (`None`) or appended to a file.
    Ndjson {
        /// `NDJSON_PATH`; `None` (unset or `-`) means stdout.
        path: Option<PathBuf>,
    },
}

/// What happens in StarRocks when a table is truncated in PostgreSQL (`TRUNCATE_POLICY`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TruncatePolicy {
    /// Stop the job with an error saying what happened (the default: nothing is lost or
    /// guessed).
    Stop,
    /// Truncate the target table too.
    Truncate,
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
    /// `CREATE_TABLES`: create missing target tables from the PostgreSQL schema.
    pub create_tables: bool,
    /// `STARROCKS_RUN_MODE`: `shared_nothing` or `shared_data` when set; unset (`auto`), it is
    /// read from the FE (which needs the OPERATE privilege).
    pub run_mode: Option<crate::starrocks::cluster::RunMode>,
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

/// `REPLICA_IDENTITY`: what dbmazz does to the replica identity of the tables it streams.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplicaIdentityPolicy {
    /// Leave tables as they are (their primary key identifies rows).
    Default,
    /// Set `REPLICA IDENTITY FULL`, so updates and deletes carry the whole old row.
    Full,
}

/// `SNAPSHOT_MODE`: which tables get their existing rows copied before streaming.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotMode {
    /// Tables that were never (completely) snapshotted.
    Initial,
    /// No snapshot: only changes made after the slot was created.
    Never,
    /// Every table, on every start.
    Always,
}

/// Initial-copy knobs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotConfig {
    /// `SNAPSHOT_MODE`.
    pub mode: SnapshotMode,
    /// `SNAPSHOT_WORKERS`: parallel connections reading chunks.
    pub workers: usize,
    /// `SNAPSHOT_CHUNK_ROWS`: target rows per chunk.
    pub chunk_rows: u64,
}

/// Batching knobs shared by every sink.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlushPolicy {
    /// `FLUSH_SIZE`: flush after this many row changes.
    pub max_events: usize,
    /// `FLUSH_MAX_BYTES`: flush once the batch holds this many bytes of row data; also the
    /// in-flight memory budget between the WAL reader and the sink.
    pub max_bytes: usize,
    /// `FLUSH_INTERVAL_MS`: flush a non-empty batch at least this often.
    pub interval: Duration,
}

/// The whole validated configuration of one replication job.
#[derive(Clone, Debug)]
pub struct Config {
    /// `DATABASE_URL`: the source database.
    pub database: PgConnInfo,
    /// `SLOT_NAME`.
    pub slot_name: String,
    /// `PUBLICATION_NAME`.
    pub publication_name: String,
    /// `TABLES`.
    pub tables: Vec<TableName>,
    /// `FLUSH_SIZE`, `FLUSH_MAX_BYTES`, `FLUSH_INTERVAL_MS`.
    pub flush: FlushPolicy,
    /// `REPLICA_IDENTITY`.
    pub replica_identity: ReplicaIdentityPolicy,
    /// `SNAPSHOT_MODE`, `SNAPSHOT_WORKERS`, `SNAPSHOT_CHUNK_ROWS`.
    pub snapshot: SnapshotConfig,
    /// `SINK_TYPE` and its options.
    pub sink: SinkConfig,
    /// `STATUS_INTERVAL_MS`: the longest gap between two standby status updates (it is further
    /// capped at half of the server's `wal_sender_timeout`).
    pub status_interval: Duration,
    /// `GRPC_BIND` + `GRPC_PORT`: where the gRPC control plane listens; `None` when
    /// `GRPC_PORT=off`. Port 0 picks a free port (logged at start).
    pub grpc_addr: Option<SocketAddr>,
    /// `GRPC_TOKEN` (or the contents of `GRPC_TOKEN_FILE`): when set, every gRPC call needs
    /// `authorization: Bearer <token>`.
    pub grpc_token: Option<Secret>,
    /// `METRICS_BIND` + `METRICS_PORT`: Prometheus text endpoint; `None` when `METRICS_PORT` is
    /// unset.
    pub metrics_addr: Option<SocketAddr>,
}

/// A variable has a value dbmazz cannot use.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid configuration: {var}: {message}")]
pub struct ConfigError {
    /// The environment variable.
    pub var: &'static str,
    /// What is wrong and what is expected (never the value of a secret).
    pub message: String,
}

impl ConfigError {
    pub(crate) fn new(var: &'static str, message: impl Into<String>) -> Self {
        ConfigError {
            var,
            message: message.into(),
        }
    }
}

/// Default `FLUSH_SIZE`, as in the original dbmazz.
pub const DEFAULT_FLUSH_SIZE: usize = 1500;
/// Default `FLUSH_INTERVAL_MS`, as in the original dbmazz.
pub const DEFAULT_FLUSH_INTERVAL_MS: u64 = 5000;
/// Default `FLUSH_MAX_BYTES`. It only binds for wide rows (1,500 rows of 200 bytes are 300 KB),
/// and it sets the memory in flight: the TOAST-mix catch-up of `benches/e2e.sh` peaked at 23 MB
/// RSS with 2 MiB and at 37 MB with 8 MiB, at the same speed.
pub const DEFAULT_FLUSH_MAX_BYTES: usize = 2 * 1024 * 1024;
/// Default `STATUS_INTERVAL_MS`.
pub const DEFAULT_STATUS_INTERVAL_MS: u64 = 10_000;

impl Config {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        Self::from_vars(&std::env::vars().collect())
    }

    /// Reads the configuration from a map of variables (the environment, or a test's map).
    pub fn from_vars(vars: &HashMap<String, String>) -> Result<Config, ConfigError> {
        let get = |name: &str| {
            vars.get(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };

        let url = get("DATABASE_URL").ok_or_else(|| {
            ConfigError::new(
                "DATABASE_URL",
                "is not set; expected postgres://user:password@host:5432/db",
            )
        })?;
        let database =
            PgConnInfo::parse(&url).map_err(|e| ConfigError::new("DATABASE_URL", e.to_string()))?;

        let slot_name = get("SLOT_NAME").unwrap_or_else(|| "dbmazz_slot".into());
        if !is_slot_name(&slot_name) {
            return Err(ConfigError::new(
                "SLOT_NAME",
                format!(
                    "{slot_name:?} is not a valid replication slot name; \
                     use 1-63 lower-case letters, digits and underscores"
                ),
            ));
        }
        let publication_name = get("PUBLICATION_NAME").unwrap_or_else(|| "dbmazz_pub".into());
        if publication_name.len() > 63 || publication_name.contains('\0') {
            return Err(ConfigError::new(
                "PUBLICATION_NAME",
                "must be 1-63 bytes without NUL characters",
            ));
        }

        let tables_raw = get("TABLES").ok_or_else(|| {
            ConfigError::new(
                "TABLES",
                "is not set; expected a comma-separated list such as orders,public.order_items",
            )
        })?;
        let tables = parse_tables(&tables_raw).map_err(|m| ConfigError::new("TABLES", m))?;

        let max_events = parse_num(
            get("FLUSH_SIZE"),
            "FLUSH_SIZE",
            DEFAULT_FLUSH_SIZE as u64,
            1,
            10_000_000,
        )? as usize;
        let interval_ms = parse_num(
            get("FLUSH_INTERVAL_MS"),
            "FLUSH_INTERVAL_MS",
            DEFAULT_FLUSH_INTERVAL_MS,
            1,
            3_600_000,
        )?;
        let max_bytes = parse_num(
            get("FLUSH_MAX_BYTES"),
            "FLUSH_MAX_BYTES",
            DEFAULT_FLUSH_MAX_BYTES as u64,
            64 * 1024,
            4 * 1024 * 1024 * 1024,
        )? as usize;
        let status_ms = parse_num(
            get("STATUS_INTERVAL_MS"),
            "STATUS_INTERVAL_MS",
            DEFAULT_STATUS_INTERVAL_MS,
            100,
            600_000,
        )?;

        let replica_identity = parse_choice(
            get("REPLICA_IDENTITY"),
            "REPLICA_IDENTITY",
            &[
                ("default", ReplicaIdentityPolicy::Default),
                ("full", ReplicaIdentityPolicy::Full),
            ],
        )?;

        let sink = match get("SINK_TYPE").as_deref() {
            None | Some("starrocks") => SinkConfig::StarRocks(Box::new(starrocks_config(&get)?)),
            Some("ndjson") => SinkConfig::Ndjson {
                path: get("NDJSON_PATH").filter(|p| p != "-").map(PathBuf::from),
            },
            Some(other) => {
                return Err(ConfigError::new(
                    "SINK_TYPE",
                    format!("{other:?} is not supported; expected starrocks or ndjson"),
                ))
            }
        };

        let snapshot = SnapshotConfig {
            mode: parse_choice(
                get("SNAPSHOT_MODE"),
                "SNAPSHOT_MODE",
                &[
                    ("initial", SnapshotMode::Initial),
                    ("never", SnapshotMode::Never),
                    ("always", SnapshotMode::Always),
                ],
            )?,
            workers: parse_num(get("SNAPSHOT_WORKERS"), "SNAPSHOT_WORKERS", 2, 1, 64)? as usize,
            chunk_rows: parse_num(
                get("SNAPSHOT_CHUNK_ROWS"),
                "SNAPSHOT_CHUNK_ROWS",
                100_000,
                100,
                100_000_000,
            )?,
        };

        let grpc_bind = parse_ip(get("GRPC_BIND"), "GRPC_BIND")?;
        let grpc_addr = match get("GRPC_PORT").as_deref() {
            Some("off") => None,
            port => Some(SocketAddr::new(
                grpc_bind,
                parse_num(port.map(str::to_owned), "GRPC_PORT", 50051, 0, 65535)? as u16,
            )),
        };
        let grpc_token = match (get("GRPC_TOKEN"), get("GRPC_TOKEN_FILE")) {
            (Some(t), _) => Some(Secret::new(t)),
            (None, Some(path)) => {
                let token = std::fs::read_to_string(&path).map_err(|e| {
                    ConfigError::new("GRPC_TOKEN_FILE", format!("cannot read {path}: {e}"))
                })?;
                Some(Secret::new(token.trim()))
            }
            (None, None) => None,
        };
        if grpc_token.as_ref().is_some_and(|t| t.expose().len() < 16) {
            return Err(ConfigError::new(
                "GRPC_TOKEN",
                "is too short; use at least 16 random characters",
            ));
        }
        let metrics_bind = parse_ip(get("METRICS_BIND"), "METRICS_BIND")?;
        let metrics_addr = match get("METRICS_PORT").as_deref() {
            None | Some("off") => None,
            port => Some(SocketAddr::new(
                metrics_bind,
                parse_num(port.map(str::to_owned), "METRICS_PORT", 9187, 0, 65535)? as u16,
            )),
        };

        Ok(Config {
            database,
            slot_name,
            publication_name,
            tables,
            flush: FlushPolicy {
                max_events,
                max_bytes,
                interval: Duration::from_millis(interval_ms),
            },
            replica_identity,
            snapshot,
            sink,
            status_interval: Duration::from_millis(status_ms),
            grpc_addr,
            grpc_token,
            metrics_addr,
        })
    }
}

fn starrocks_config(get: &dyn Fn(&str) -> Option<String>) -> Result<StarRocksConfig, ConfigError> {
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
            percent_encode(&user),
            percent_encode(password.expose()),
            host
        )),
    };
    let list = |var: &str| -> Vec<String> {
        get(var)
            .map(|v| {
                v.split(',')
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    };
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
    if host_rewrite.is_empty() && !matches!(host.as_str(), "127.0.0.1" | "localhost") {
        host_rewrite = vec![
            ("127.0.0.1".into(), host.clone()),
            ("localhost".into(), host.clone()),
        ];
    }
    // Empty: follow the FE wherever it sends a load (its BEs and CNs are on other hosts).
    let redirect_allow = list("STARROCKS_REDIRECT_ALLOW");
    let load_timeout = Duration::from_secs(parse_num(
        get("STARROCKS_LOAD_TIMEOUT_S"),
        "STARROCKS_LOAD_TIMEOUT_S",
        600,
        1,
        259_200,
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
    let run_mode = {
        use crate::starrocks::cluster::RunMode;
        parse_choice(
            get("STARROCKS_RUN_MODE"),
            "STARROCKS_RUN_MODE",
            &[
                ("auto", None),
                ("shared_nothing", Some(RunMode::SharedNothing)),
                ("shared_data", Some(RunMode::SharedData)),
            ],
        )?
    };
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
    let ca_file = match get("STARROCKS_CA_FILE") {
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
    };
    Ok(StarRocksConfig {
        gzip,
        ca_file,
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
        create_tables,
        run_mode,
        datetime_fraction_drop,
        primary_key_limit,
        replication_num,
        truncate_policy,
    })
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn parse_ip(raw: Option<String>, var: &'static str) -> Result<IpAddr, ConfigError> {
    match raw {
        None => Ok(IpAddr::from([127, 0, 0, 1])),
        Some(v) => v.parse().map_err(|_| {
            ConfigError::new(
                var,
                format!("{v:?} is not an IP address; expected e.g. 127.0.0.1 or 0.0.0.0"),
            )
        }),
    }
}

fn is_slot_name(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Parses a variable that takes one of a few words; the first choice is the default.
fn parse_choice<T: Copy>(
    raw: Option<String>,
    var: &'static str,
    choices: &[(&str, T)],
) -> Result<T, ConfigError> {
    let Some(raw) = raw else {
        return Ok(choices[0].1);
    };
    if let Some((_, v)) = choices.iter().find(|(word, _)| *word == raw) {
        return Ok(*v);
    }
    let words: Vec<&str> = choices.iter().map(|(w, _)| *w).collect();
    let expected = match words.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => words.join(""),
    };
    Err(ConfigError::new(
        var,
        format!("{raw:?} is not supported; expected {expected}"),
    ))
}

pub(crate) fn parse_num(
    raw: Option<String>,
    var: &'static str,
    default: u64,
    min: u64,
    max: u64,
) -> Result<u64, ConfigError> {
    let Some(raw) = raw else { return Ok(default) };
    match raw.parse::<u64>() {
        Ok(v) if (min..=max).contains(&v) => Ok(v),
        _ => Err(ConfigError::new(
            var,
            format!("{raw:?} is not a whole number between {min} and {max}"),
        )),
    }
}

/// Parses `TABLES`: a comma list of `table` or `schema.table`, where a part may be
/// double-quoted to keep its case or contain dots.
pub fn parse_tables(raw: &str) -> Result<Vec<TableName>, String> {
    let mut out: Vec<TableName> = Vec::new();
    for item in split_outside_quotes(raw, ',')? {
        let item = item.trim();
        if item.is_empty() {
            return Err(format!(
                "{raw:?} has an empty entry; remove the extra comma"
            ));
        }
        let parts = split_outside_quotes(item, '.')?;
        let parts: Vec<String> = parts
            .iter()
            .map(|p| parse_ident(p.trim()))
            .collect::<Result<_, _>>()?;
        let table = match parts.as_slice() {
            [name] => TableName::new("public", name.clone()),
            [schema, name] => TableName::new(schema.clone(), name.clone()),
            _ => {
                return Err(format!(
                    "{item:?} is not a table name; expected table or schema.table"
                ))
            }
        };
        if !out.contains(&table) {
            out.push(table);
        }
    }
    Ok(out)
}

fn split_outside_quotes(s: &str, sep: char) -> Result<Vec<&str>, String> {
    let mut parts = Vec::new();
    let mut in_quotes = false;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        if c == '"' {
            in_quotes = !in_quotes;
        } else if c == sep && !in_quotes {
            parts.push(&s[start..i]);
            start = i + 1;
        }
    }
    if in_quotes {
        return Err(format!("{s:?} has an unclosed double quote"));
    }
    parts.push(&s[start..]);
    Ok(parts)
}

fn parse_ident(part: &str) -> Result<String, String> {
    if let Some(inner) = part.strip_prefix('"').and_then(|p| p.strip_suffix('"')) {
        let name = inner.replace("\"\"", "\"");
        if name.is_empty() || name.len() > 63 {
            return Err(format!("{part} must be 1-63 bytes long"));
        }
        return Ok(name);
    }
    let valid = !part.is_empty()
        && part.len() <= 63
        && part
            .chars()
            .next()
            .is_some_and(|c| c.is_alphabetic() || c == '_')
        && part
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '$');
    if !valid {
        return Err(format!(
            "{part:?} is not a valid identifier; double-quote names with other characters"
        ));
    }
    Ok(part.to_lowercase())
}

/// A StarRocks configuration for unit tests.
#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;

    /// FE `fe:8030`, database `d`, every option at its default.
    pub(crate) fn starrocks_config() -> StarRocksConfig {
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
            create_tables: false,
            run_mode: None,
            datetime_fraction_drop: false,
            primary_key_limit: 128,
            replication_num: None,
            truncate_policy: TruncatePolicy::Stop,
            gzip: false,
            ca_file: None,
            snapshot_csv: true,
        }
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

    fn base() -> Vec<(&'static str, &'static str)> {
        vec![
            ("DATABASE_URL", "postgres://u:s3cret@db:5432/app"),
            ("TABLES", "orders"),
            ("SINK_TYPE", "ndjson"),
        ]
    }

    #[test]
    fn defaults_match_the_original_dbmazz() {
        let c = Config::from_vars(&vars(&base())).unwrap();
        assert_eq!(c.slot_name, "dbmazz_slot");
        assert_eq!(c.publication_name, "dbmazz_pub");
        assert_eq!(c.flush.max_events, 1500);
        assert_eq!(c.flush.interval, Duration::from_millis(5000));
        assert_eq!(c.tables, vec![TableName::new("public", "orders")]);
        assert_eq!(c.replica_identity, ReplicaIdentityPolicy::Default);
        assert_eq!(c.sink, SinkConfig::Ndjson { path: None });
        assert_eq!(c.grpc_addr, Some("127.0.0.1:50051".parse().unwrap()));
        assert_eq!(c.metrics_addr, None);
        assert!(c.grpc_token.is_none());
    }

    #[test]
    fn starrocks_is_the_default_sink_and_derives_its_mysql_address() {
        let mut v = base();
        v.retain(|(k, _)| *k != "SINK_TYPE");
        v.extend([
            ("STARROCKS_URL", "http://sr-fe:8030/"),
            ("STARROCKS_DB", "analytics"),
            ("STARROCKS_PASS", "p@ss"),
        ]);
        let c = Config::from_vars(&vars(&v)).unwrap();
        let SinkConfig::StarRocks(sr) = c.sink else {
            panic!("expected starrocks")
        };
        assert_eq!(sr.url, "http://sr-fe:8030");
        assert_eq!(sr.mysql_url.expose(), "mysql://root:p%40ss@sr-fe:9030/");
        assert_eq!(sr.host_rewrite[0], ("127.0.0.1".into(), "sr-fe".into()));
        assert!(
            sr.redirect_allow.is_empty(),
            "loads follow the FE to any node by default"
        );
        assert_eq!(sr.replication_num, None);
        assert_eq!(sr.truncate_policy, TruncatePolicy::Stop);
        assert!(sr.snapshot_csv, "CSV snapshot bodies by default");
        assert!(!format!("{sr:?}").contains("p@ss"));
    }

    #[test]
    fn word_choices_default_to_the_first_and_name_every_choice_when_wrong() {
        let c = Config::from_vars(&vars(&base())).unwrap();
        assert_eq!(c.snapshot.mode, SnapshotMode::Initial);
        assert_eq!(c.replica_identity, ReplicaIdentityPolicy::Default);
        let mut v = base();
        v.push(("SNAPSHOT_MODE", "always"));
        assert_eq!(
            Config::from_vars(&vars(&v)).unwrap().snapshot.mode,
            SnapshotMode::Always
        );
        v.pop();
        v.push(("SNAPSHOT_MODE", "Always"));
        let e = Config::from_vars(&vars(&v)).unwrap_err();
        assert_eq!(e.var, "SNAPSHOT_MODE");
        assert!(
            e.to_string()
                .contains("\"Always\" is not supported; expected initial, never or always"),
            "{e}"
        );
    }

    #[test]
    fn starrocks_settings_are_validated() {
        for (var, value) in [
            ("STARROCKS_URL", "sr-fe:8030"),
            ("STARROCKS_URL", "http://sr-fe:x"),
            ("TRUNCATE_POLICY", "ignore"),
            ("CREATE_TABLES", "yes"),
            ("STARROCKS_HOST_REWRITE", "nohost"),
            ("STARROCKS_COMPRESS", "zstd"),
            ("STARROCKS_SNAPSHOT_FORMAT", "parquet"),
        ] {
            let mut v = base();
            v.retain(|(k, _)| *k != "SINK_TYPE");
            v.extend([("STARROCKS_URL", "http://h:8030"), ("STARROCKS_DB", "d")]);
            v.retain(|(k, _)| k != &var);
            v.push((var, value));
            assert_eq!(
                Config::from_vars(&vars(&v)).unwrap_err().var,
                var,
                "{var}={value}"
            );
        }
    }

    #[test]
    fn control_plane_can_be_moved_or_switched_off() {
        let mut v = base();
        v.extend([
            ("GRPC_PORT", "off"),
            ("METRICS_PORT", "0"),
            ("METRICS_BIND", "0.0.0.0"),
        ]);
        let c = Config::from_vars(&vars(&v)).unwrap();
        assert_eq!(c.grpc_addr, None);
        assert_eq!(c.metrics_addr, Some("0.0.0.0:0".parse().unwrap()));
        let mut v = base();
        v.push(("GRPC_TOKEN", "short"));
        assert_eq!(Config::from_vars(&vars(&v)).unwrap_err().var, "GRPC_TOKEN");
    }

    #[test]
    fn tables_accept_schemas_quotes_and_fold_case() {
        let t = parse_tables(r#"Orders, sales.items ,"Mixed"."A.b",orders"#).unwrap();
        assert_eq!(
            t,
            vec![
                TableName::new("public", "orders"),
                TableName::new("sales", "items"),
                TableName::new("Mixed", "A.b"),
            ]
        );
        assert_eq!(t[2].quoted(), r#""Mixed"."A.b""#);
    }

    #[test]
    fn bad_values_name_the_variable() {
        let cases: &[(&str, &str)] = &[
            ("FLUSH_SIZE", "abc"),
            ("FLUSH_SIZE", "0"),
            ("FLUSH_INTERVAL_MS", "-5"),
            ("SLOT_NAME", "Bad-Slot"),
            ("TABLES", "a,,b"),
            ("TABLES", "a.b.c"),
            ("TABLES", "\"open"),
            ("SINK_TYPE", "kafka"),
            ("REPLICA_IDENTITY", "nothing"),
            ("SNAPSHOT_MODE", "sometimes"),
            ("SNAPSHOT_WORKERS", "0"),
            ("DATABASE_URL", "mysql://x"),
        ];
        for (var, value) in cases {
            let mut v = base();
            v.retain(|(k, _)| k != var);
            v.push((var, value));
            let err = Config::from_vars(&vars(&v)).unwrap_err();
            assert_eq!(err.var, *var, "{var}={value}: {err}");
            assert!(err.to_string().starts_with("invalid configuration: "));
        }
    }

    #[test]
    fn missing_required_variables_are_reported() {
        let err = Config::from_vars(&vars(&[("TABLES", "t")])).unwrap_err();
        assert_eq!(err.var, "DATABASE_URL");
        let err = Config::from_vars(&vars(&[("DATABASE_URL", "postgres://u@h/d")])).unwrap_err();
        assert_eq!(err.var, "TABLES");
    }

    #[test]
    fn password_never_appears_in_debug_or_errors() {
        let c = Config::from_vars(&vars(&base())).unwrap();
        assert!(!format!("{c:?}").contains("s3cret"));
        let mut v = base();
        v.push(("FLUSH_SIZE", "x"));
        let err = Config::from_vars(&vars(&v)).unwrap_err();
        assert!(!err.to_string().contains("s3cret"));
    }
}
