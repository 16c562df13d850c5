//! Typed configuration from the environment, validated before anything connects.
//!
//! Operators run dbmazz from environment variables whose names come from the original dbmazz
//! (`DATABASE_URL`, `SLOT_NAME`, `PUBLICATION_NAME`, `TABLES`, `FLUSH_SIZE`, `FLUSH_INTERVAL_MS`)
//! plus new knobs in the same style. Every value is checked here, at start, so that a typo is one
//! clear line naming the variable and what it expects (and exit code 2), rather than a confusing
//! failure minutes later. Passwords live in [`Secret`](crate::secret::Secret) inside
//! [`PgConnInfo`] and never appear in `Debug` output or errors.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub(crate) use crate::env::parse_num;
pub use crate::env::ConfigError;
use crate::env::{parse_choice, parse_ip, Vars};
pub use crate::ident::{
    parse_table_selection, parse_tables, quote_ident, quote_literal, TableName, TablePattern,
};
use crate::postgres::conninfo::PgConnInfo;
pub use crate::postgres::streamed::SpillLimits;
use crate::secret::Secret;
pub use crate::starrocks::config::{
    OnReject, SchemaDropColumn, SchemaTypeChange, StarRocksConfig, TruncatePolicy,
};

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

/// `REPLICA_IDENTITY`: what dbmazz does to the replica identity of the tables it streams.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplicaIdentityPolicy {
    /// Leave tables as they are (their primary key identifies rows).
    Default,
    /// Set `REPLICA IDENTITY FULL`, so updates and deletes carry the whole old row.
    Full,
}

/// `SCHEMA_TABLE_RENAME`: what happens when a replicated table is renamed or moved to another
/// schema in PostgreSQL (`ALTER TABLE … RENAME` / `SET SCHEMA`) while dbmazz streams it or
/// while it is stopped. dbmazz knows each table by its relation OID, so it never loses track.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TableRenamePolicy {
    /// Keep streaming the table into the same target, and log the rename (the default).
    #[default]
    Follow,
    /// Stop the job, saying what happened and what to run.
    Stop,
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

/// The sink's circuit breaker (see [`crate::pipeline::circuit`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SinkCircuitPolicy {
    /// `SINK_CIRCUIT_FAILURES`: failed loads in a row that open the circuit (0: never open it).
    pub failures: u32,
    /// `SINK_CIRCUIT_PROBE_MS`: while open, one probe (the retry of the pending batch) this often.
    pub probe: Duration,
}

/// The whole validated configuration of one replication job.
#[derive(Clone, Debug)]
pub struct Config {
    /// `DATABASE_URL`: the source database.
    pub database: PgConnInfo,
    /// `SLOT_NAME`.
    pub slot_name: String,
    /// `SLOT_FAILOVER`: mark the slot as a failover slot (PostgreSQL 17+), so that it is
    /// synchronized to standbys and survives a promotion.
    pub slot_failover: bool,
    /// `PUBLICATION_NAME`.
    pub publication_name: String,
    /// `TABLES`: the tables it names.
    pub tables: Vec<TableName>,
    /// `TABLES`: its patterns (`public.*`); the tables they match are found at start and, every
    /// `TABLES_DISCOVERY_INTERVAL_MS`, while streaming.
    pub table_patterns: Vec<TablePattern>,
    /// `TABLES_DISCOVERY_INTERVAL_MS`.
    pub discovery_interval: Duration,
    /// `FLUSH_SIZE`, `FLUSH_MAX_BYTES`, `FLUSH_INTERVAL_MS`.
    pub flush: FlushPolicy,
    /// `REPLICA_IDENTITY`.
    pub replica_identity: ReplicaIdentityPolicy,
    /// `SCHEMA_TABLE_RENAME`.
    pub table_rename: TableRenamePolicy,
    /// `SNAPSHOT_MODE`, `SNAPSHOT_WORKERS`, `SNAPSHOT_CHUNK_ROWS`.
    pub snapshot: SnapshotConfig,
    /// `SINK_TYPE` and its options.
    pub sink: SinkConfig,
    /// `STATUS_INTERVAL_MS`: the longest gap between two standby status updates (it is further
    /// capped at half of the server's `wal_sender_timeout`).
    pub status_interval: Duration,
    /// `SHUTDOWN_TIMEOUT_MS`: how long SIGTERM/SIGINT and a DrainAndStop without its own
    /// `timeout_ms` wait for the drain before the process exits without confirming the rest
    /// (zero: no bound).
    pub shutdown_timeout: Duration,
    /// `STATEMENT_TIMEOUT_MS`: `statement_timeout` of dbmazz's bookkeeping sessions (setup,
    /// checkpoints); `None` when set to 0.
    pub statement_timeout: Option<Duration>,
    /// `HEALTH_SINK_STALL_MS`: how long the sink may hold a batch (failing or not answering)
    /// before Health turns `NOT_SERVING` (zero: never).
    pub health_sink_stall: Duration,
    /// `SINK_CIRCUIT_FAILURES` and `SINK_CIRCUIT_PROBE_MS`.
    pub sink_circuit: SinkCircuitPolicy,
    /// `WAL_RECEIVER_TIMEOUT_MS`: how long the replication stream may stay completely silent
    /// (not even a keepalive it asked for) before the connection is considered dead and
    /// re-established; `None` when set to 0.
    pub wal_receiver_timeout: Option<Duration>,
    /// `GRPC_BIND` + `GRPC_PORT`: where the gRPC control plane listens; `None` when
    /// `GRPC_PORT=off`. Port 0 picks a free port (logged at start).
    pub grpc_addr: Option<SocketAddr>,
    /// `GRPC_TOKEN` (or the contents of `GRPC_TOKEN_FILE`): when set, every gRPC call needs
    /// `authorization: Bearer <token>`.
    pub grpc_token: Option<Secret>,
    /// `METRICS_BIND` + `METRICS_PORT`: Prometheus text endpoint; `None` when `METRICS_PORT` is
    /// unset.
    pub metrics_addr: Option<SocketAddr>,
    /// `SLOT_CHECK_INTERVAL_MS`, `SLOT_RETAINED_WARN_BYTES`, `HEARTBEAT_INTERVAL_MS`,
    /// `PAUSE_MAX_MS`, `PAUSE_AUTO_RESUME`.
    pub wal_guard: WalGuardConfig,
    /// `STREAMING`, `SPILL_DIR`, `SPILL_MEMORY_BYTES`, `SPILL_MAX_BYTES`.
    pub streaming: StreamingConfig,
}

/// Streaming of in-progress transactions (pgoutput protocol 2, `streaming 'on'`) and the local
/// spill that holds them until they commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamingConfig {
    /// `STREAMING=on|off`: whether PostgreSQL sends large transactions while they run.
    pub enabled: bool,
    /// `SPILL_DIR`, `SPILL_MEMORY_BYTES`, `SPILL_MAX_BYTES`.
    pub spill: SpillLimits,
}

/// Default `SPILL_MEMORY_BYTES`: 1 MiB. PostgreSQL streams only transactions larger than
/// `logical_decoding_work_mem` (64 MB by default), which spill anyway, so more memory would
/// only raise the RSS: with 2,000,000 rows streamed, 4 MiB peaked at 26.7 MB and 1 MiB at
/// 25.8 MB, at the same speed (BENCHMARKS.md).
pub const DEFAULT_SPILL_MEMORY_BYTES: u64 = 1 << 20;

impl StreamingConfig {
    /// Reads the streaming variables.
    pub fn from_vars(vars: &Vars) -> Result<StreamingConfig, ConfigError> {
        let get = |name: &str| vars.get(name);
        let enabled = parse_choice(
            get("STREAMING"),
            "STREAMING",
            &[("on", true), ("off", false)],
        )?;
        let dir = get("SPILL_DIR")
            .map_or_else(|| std::env::temp_dir().join("dbmazz-spill"), PathBuf::from);
        if !dir.is_absolute() {
            return Err(ConfigError::new(
                "SPILL_DIR",
                format!("{} is not an absolute path", dir.display()),
            ));
        }
        let memory_bytes = parse_num(
            get("SPILL_MEMORY_BYTES"),
            "SPILL_MEMORY_BYTES",
            DEFAULT_SPILL_MEMORY_BYTES,
            64 << 10,
            64 << 30,
        )?;
        let max_bytes = match get("SPILL_MAX_BYTES") {
            None => None,
            Some(_) => Some(parse_num(
                get("SPILL_MAX_BYTES"),
                "SPILL_MAX_BYTES",
                0,
                1 << 20,
                u64::MAX,
            )?),
        };
        Ok(StreamingConfig {
            enabled,
            spill: SpillLimits {
                dir,
                memory_bytes: memory_bytes as usize,
                max_bytes,
            },
        })
    }
}

/// The WAL-growth guard: how the slot is watched, kept moving, and how long a pause may hold
/// it back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalGuardConfig {
    /// `SLOT_CHECK_INTERVAL_MS`: time between two polls of `pg_replication_slots`.
    pub slot_check_interval: Duration,
    /// `SLOT_RETAINED_WARN_BYTES`: warn when the slot retains this much WAL (0: only the
    /// `max_slot_wal_keep_size` thresholds).
    pub retained_warn_bytes: u64,
    /// `HEARTBEAT_INTERVAL_MS`: time between two heartbeat messages; `None` when 0 (off).
    pub heartbeat_interval: Option<Duration>,
    /// `PAUSE_MAX_MS`: how long a pause may last before Health says so; `None` when 0.
    pub pause_max: Option<Duration>,
    /// `PAUSE_AUTO_RESUME`: resume at `PAUSE_MAX_MS` instead of reporting it.
    pub pause_auto_resume: bool,
}

/// Default `SLOT_CHECK_INTERVAL_MS`.
pub const DEFAULT_SLOT_CHECK_INTERVAL_MS: u64 = 10_000;
/// Default `SLOT_RETAINED_WARN_BYTES`: 1 GiB, 64 default WAL segments: far above what a
/// healthy job retains (a few segments), well below a typical WAL volume.
pub const DEFAULT_SLOT_RETAINED_WARN_BYTES: u64 = 1 << 30;
/// Default `HEARTBEAT_INTERVAL_MS`.
pub const DEFAULT_HEARTBEAT_INTERVAL_MS: u64 = 30_000;
/// Default `PAUSE_MAX_MS`: one hour.
pub const DEFAULT_PAUSE_MAX_MS: u64 = 3_600_000;

impl WalGuardConfig {
    /// Reads the guard's variables.
    pub fn from_vars(vars: &Vars) -> Result<WalGuardConfig, ConfigError> {
        let get = |name: &str| vars.get(name);
        let check_ms = parse_num(
            get("SLOT_CHECK_INTERVAL_MS"),
            "SLOT_CHECK_INTERVAL_MS",
            DEFAULT_SLOT_CHECK_INTERVAL_MS,
            100,
            3_600_000,
        )?;
        let warn_bytes = parse_num(
            get("SLOT_RETAINED_WARN_BYTES"),
            "SLOT_RETAINED_WARN_BYTES",
            DEFAULT_SLOT_RETAINED_WARN_BYTES,
            0,
            u64::MAX,
        )?;
        let heartbeat_ms = parse_num(
            get("HEARTBEAT_INTERVAL_MS"),
            "HEARTBEAT_INTERVAL_MS",
            DEFAULT_HEARTBEAT_INTERVAL_MS,
            0,
            86_400_000,
        )?;
        if (1..100).contains(&heartbeat_ms) {
            return Err(ConfigError::new(
                "HEARTBEAT_INTERVAL_MS",
                format!("{heartbeat_ms} is too short; use 0 (off) or at least 100"),
            ));
        }
        let pause_ms = parse_num(
            get("PAUSE_MAX_MS"),
            "PAUSE_MAX_MS",
            DEFAULT_PAUSE_MAX_MS,
            0,
            30 * 86_400_000,
        )?;
        let pause_auto_resume = parse_choice(
            get("PAUSE_AUTO_RESUME"),
            "PAUSE_AUTO_RESUME",
            &[("false", false), ("true", true)],
        )?;
        Ok(WalGuardConfig {
            slot_check_interval: Duration::from_millis(check_ms),
            retained_warn_bytes: warn_bytes,
            heartbeat_interval: (heartbeat_ms > 0).then(|| Duration::from_millis(heartbeat_ms)),
            pause_max: (pause_ms > 0).then(|| Duration::from_millis(pause_ms)),
            pause_auto_resume,
        })
    }
}

/// Where the control plane listens and how callers authenticate: what every daemon needs,
/// whether it runs a CDC job or only serves schema provisioning.
#[derive(Clone, Debug)]
pub struct ControlConfig {
    /// `GRPC_BIND` + `GRPC_PORT`; `None` when `GRPC_PORT=off`.
    pub grpc_addr: Option<SocketAddr>,
    /// `GRPC_TOKEN` / `GRPC_TOKEN_FILE`.
    pub grpc_token: Option<Secret>,
    /// `METRICS_BIND` + `METRICS_PORT`; `None` when `METRICS_PORT` is unset.
    pub metrics_addr: Option<SocketAddr>,
}

impl ControlConfig {
    /// Reads the control-plane variables.
    pub fn from_vars(vars: &HashMap<String, String>) -> Result<ControlConfig, ConfigError> {
        let (grpc_addr, grpc_token, metrics_addr) = control_plane(&Vars::from(vars))?;
        Ok(ControlConfig {
            grpc_addr,
            grpc_token,
            metrics_addr,
        })
    }
}

/// Whether the environment asks for a CDC job: `DATABASE_URL` or `TABLES` is set. Without
/// either, a daemon with provisioning settings runs provisioning only.
pub fn wants_cdc(vars: &HashMap<String, String>) -> bool {
    let vars = Vars::from(vars);
    vars.get("DATABASE_URL").is_some() || vars.get("TABLES").is_some()
}

/// The CDC-only variables that are set in `vars`: a provisioning-only daemon names them in a
/// warning, since it ignores them.
pub fn cdc_only_vars_set(vars: &HashMap<String, String>) -> Vec<String> {
    const PREFIXES: [&str; 8] = [
        "SLOT_",
        "PUBLICATION_",
        "SINK_",
        "STARROCKS_",
        "SNAPSHOT_",
        "FLUSH_",
        "NDJSON_",
        "SPILL_",
    ];
    let mut set: Vec<String> = vars
        .iter()
        .filter(|(k, v)| !v.is_empty() && PREFIXES.iter().any(|p| k.starts_with(p)))
        .map(|(k, _)| k.clone())
        .collect();
    set.sort();
    set
}

/// Default `TABLES_DISCOVERY_INTERVAL_MS`.
pub const DEFAULT_TABLES_DISCOVERY_INTERVAL_MS: u64 = 10_000;

/// Default `FLUSH_SIZE`, as in the original dbmazz.
pub const DEFAULT_FLUSH_SIZE: usize = 1500;
/// Default `FLUSH_INTERVAL_MS`, as in the original dbmazz.
pub const DEFAULT_FLUSH_INTERVAL_MS: u64 = 5000;
/// Default `FLUSH_MAX_BYTES`. It only binds for wide rows (1,500 narrow rows hold about
/// 500 KB), and it sets the memory in flight: in the catch-ups of `benches/e2e.sh` 1 MiB kept
/// the peak RSS at 15–19 MB against 16–22 MB with 2 MiB (and 37 MB with 8 MiB), at the same
/// speed.
pub const DEFAULT_FLUSH_MAX_BYTES: usize = 1024 * 1024;
/// Default `STATUS_INTERVAL_MS`.
pub const DEFAULT_STATUS_INTERVAL_MS: u64 = 10_000;
/// Default `SHUTDOWN_TIMEOUT_MS`: Kubernetes' default grace period is 30 s, so the process ends
/// with a clear message a little before the SIGKILL.
pub const DEFAULT_SHUTDOWN_TIMEOUT_MS: u64 = 25_000;
/// Default `STATEMENT_TIMEOUT_MS`.
pub const DEFAULT_STATEMENT_TIMEOUT_MS: u64 = 60_000;
/// Default `HEALTH_SINK_STALL_MS`.
pub const DEFAULT_HEALTH_SINK_STALL_MS: u64 = 60_000;
/// Default `SINK_CIRCUIT_FAILURES`: with the 200 ms doubling backoff, about 6 s of failures.
pub const DEFAULT_SINK_CIRCUIT_FAILURES: u64 = 5;
/// Default `SINK_CIRCUIT_PROBE_MS`.
pub const DEFAULT_SINK_CIRCUIT_PROBE_MS: u64 = 10_000;
/// Default `WAL_RECEIVER_TIMEOUT_MS`: PostgreSQL's default `wal_receiver_timeout`.
pub const DEFAULT_WAL_RECEIVER_TIMEOUT_MS: u64 = 60_000;

impl Config {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        Self::from_vars(&std::env::vars().collect())
    }

    /// Reads the configuration from a map of variables (the environment, or a test's map).
    pub fn from_vars(vars: &HashMap<String, String>) -> Result<Config, ConfigError> {
        let vars = Vars::from(vars);
        let get = |name: &str| vars.get(name);
        let (database, slot_name, publication_name, tables, table_patterns) = source(&vars)?;
        let discovery_ms = parse_num(
            get("TABLES_DISCOVERY_INTERVAL_MS"),
            "TABLES_DISCOVERY_INTERVAL_MS",
            DEFAULT_TABLES_DISCOVERY_INTERVAL_MS,
            100,
            86_400_000,
        )?;
        let status_ms = parse_num(
            get("STATUS_INTERVAL_MS"),
            "STATUS_INTERVAL_MS",
            DEFAULT_STATUS_INTERVAL_MS,
            100,
            600_000,
        )?;
        let shutdown_ms = parse_num(
            get("SHUTDOWN_TIMEOUT_MS"),
            "SHUTDOWN_TIMEOUT_MS",
            DEFAULT_SHUTDOWN_TIMEOUT_MS,
            0,
            86_400_000,
        )?;
        let statement_ms = parse_num(
            get("STATEMENT_TIMEOUT_MS"),
            "STATEMENT_TIMEOUT_MS",
            DEFAULT_STATEMENT_TIMEOUT_MS,
            0,
            86_400_000,
        )?;
        let sink_stall_ms = parse_num(
            get("HEALTH_SINK_STALL_MS"),
            "HEALTH_SINK_STALL_MS",
            DEFAULT_HEALTH_SINK_STALL_MS,
            0,
            86_400_000,
        )?;

        let wal_receiver_timeout = wal_receiver_timeout(&vars)?;
        let slot_failover = parse_choice(
            get("SLOT_FAILOVER"),
            "SLOT_FAILOVER",
            &[("false", false), ("true", true)],
        )?;

        let replica_identity = parse_choice(
            get("REPLICA_IDENTITY"),
            "REPLICA_IDENTITY",
            &[
                ("default", ReplicaIdentityPolicy::Default),
                ("full", ReplicaIdentityPolicy::Full),
            ],
        )?;

        let table_rename = parse_choice(
            get("SCHEMA_TABLE_RENAME"),
            "SCHEMA_TABLE_RENAME",
            &[
                ("follow", TableRenamePolicy::Follow),
                ("stop", TableRenamePolicy::Stop),
            ],
        )?;

        let sink = match get("SINK_TYPE").as_deref() {
            None | Some("starrocks") => {
                SinkConfig::StarRocks(Box::new(StarRocksConfig::from_vars(&vars)?))
            }
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

        let (grpc_addr, grpc_token, metrics_addr) = control_plane(&vars)?;
        Ok(Config {
            database,
            slot_name,
            slot_failover,
            publication_name,
            tables,
            table_patterns,
            discovery_interval: Duration::from_millis(discovery_ms),
            flush: FlushPolicy::from_vars(&vars)?,
            replica_identity,
            table_rename,
            snapshot: SnapshotConfig::from_vars(&vars)?,
            sink,
            status_interval: Duration::from_millis(status_ms),
            shutdown_timeout: Duration::from_millis(shutdown_ms),
            statement_timeout: (statement_ms > 0).then(|| Duration::from_millis(statement_ms)),
            health_sink_stall: Duration::from_millis(sink_stall_ms),
            sink_circuit: SinkCircuitPolicy::from_vars(&vars)?,
            wal_receiver_timeout,
            grpc_addr,
            grpc_token,
            metrics_addr,
            wal_guard: WalGuardConfig::from_vars(&vars)?,
            streaming: StreamingConfig::from_vars(&vars)?,
        })
    }
}

/// `DATABASE_URL`, `SLOT_NAME`, `PUBLICATION_NAME` and `TABLES`.
#[allow(clippy::type_complexity)]
fn source(
    vars: &Vars,
) -> Result<
    (
        PgConnInfo,
        String,
        String,
        Vec<TableName>,
        Vec<TablePattern>,
    ),
    ConfigError,
> {
    let get = |name: &str| vars.get(name);
    let url = get("DATABASE_URL").ok_or_else(|| {
        ConfigError::new(
            "DATABASE_URL",
            "is not set; expected postgres://user:password@host:5432/db (or, for a daemon \
             that only provisions schemas, leave DATABASE_URL and TABLES unset and set \
             PROVISION_POSTGRES_URL or PROVISION_MYSQL_URL)",
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
    let (tables, patterns) = parse_table_selection(&tables_raw)
        .map_err(|e| ConfigError::new("TABLES", e.to_string()))?;
    Ok((database, slot_name, publication_name, tables, patterns))
}

/// `WAL_RECEIVER_TIMEOUT_MS`: 0 disables the timeout; otherwise at least 100 ms, because the
/// stream asks the server for a keepalive after half of it.
fn wal_receiver_timeout(vars: &Vars) -> Result<Option<Duration>, ConfigError> {
    const VAR: &str = "WAL_RECEIVER_TIMEOUT_MS";
    let ms = parse_num(
        vars.get(VAR),
        VAR,
        DEFAULT_WAL_RECEIVER_TIMEOUT_MS,
        0,
        86_400_000,
    )?;
    match ms {
        0 => Ok(None),
        1..100 => Err(ConfigError::new(
            VAR,
            format!("{ms} is too short; use 0 (no timeout) or at least 100"),
        )),
        _ => Ok(Some(Duration::from_millis(ms))),
    }
}

impl FlushPolicy {
    /// `FLUSH_SIZE`, `FLUSH_INTERVAL_MS` and `FLUSH_MAX_BYTES`.
    pub fn from_vars(vars: &Vars) -> Result<FlushPolicy, ConfigError> {
        let get = |name: &str| vars.get(name);
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
        Ok(FlushPolicy {
            max_events,
            max_bytes,
            interval: Duration::from_millis(interval_ms),
        })
    }
}

impl SinkCircuitPolicy {
    /// `SINK_CIRCUIT_FAILURES` and `SINK_CIRCUIT_PROBE_MS`.
    pub fn from_vars(vars: &Vars) -> Result<SinkCircuitPolicy, ConfigError> {
        let get = |name: &str| vars.get(name);
        let failures = parse_num(
            get("SINK_CIRCUIT_FAILURES"),
            "SINK_CIRCUIT_FAILURES",
            DEFAULT_SINK_CIRCUIT_FAILURES,
            0,
            1_000_000,
        )? as u32;
        let probe_ms = parse_num(
            get("SINK_CIRCUIT_PROBE_MS"),
            "SINK_CIRCUIT_PROBE_MS",
            DEFAULT_SINK_CIRCUIT_PROBE_MS,
            100,
            3_600_000,
        )?;
        Ok(SinkCircuitPolicy {
            failures,
            probe: Duration::from_millis(probe_ms),
        })
    }
}

impl SnapshotConfig {
    /// `SNAPSHOT_MODE`, `SNAPSHOT_WORKERS` and `SNAPSHOT_CHUNK_ROWS`.
    pub fn from_vars(vars: &Vars) -> Result<SnapshotConfig, ConfigError> {
        let get = |name: &str| vars.get(name);
        Ok(SnapshotConfig {
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
        })
    }
}

/// The gRPC and Prometheus listeners: `GRPC_BIND`, `GRPC_PORT`, `GRPC_TOKEN(_FILE)`,
/// `METRICS_BIND`, `METRICS_PORT`.
#[allow(clippy::type_complexity)]
fn control_plane(
    vars: &Vars,
) -> Result<(Option<SocketAddr>, Option<Secret>, Option<SocketAddr>), ConfigError> {
    let get = |name: &str| vars.get(name);
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

    Ok((grpc_addr, grpc_token, metrics_addr))
}

fn is_slot_name(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
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
    fn wal_receiver_timeout_defaults_to_postgres_and_0_disables_it() {
        let c = Config::from_vars(&vars(&base())).unwrap();
        assert_eq!(c.wal_receiver_timeout, Some(Duration::from_secs(60)));
        let mut v = base();
        v.push(("WAL_RECEIVER_TIMEOUT_MS", "0"));
        assert_eq!(
            Config::from_vars(&vars(&v)).unwrap().wal_receiver_timeout,
            None
        );
        v.pop();
        v.push(("WAL_RECEIVER_TIMEOUT_MS", "2500"));
        assert_eq!(
            Config::from_vars(&vars(&v)).unwrap().wal_receiver_timeout,
            Some(Duration::from_millis(2500))
        );
        for bad in ["50", "-1", "1m", "86400001"] {
            let mut v = base();
            v.push(("WAL_RECEIVER_TIMEOUT_MS", bad));
            let err = Config::from_vars(&vars(&v)).unwrap_err();
            assert_eq!(err.var, "WAL_RECEIVER_TIMEOUT_MS", "{bad}: {err}");
        }
    }

    #[test]
    fn sink_circuit_defaults_to_5_failures_and_a_10_s_probe() {
        let c = Config::from_vars(&vars(&base())).unwrap();
        assert_eq!(
            c.sink_circuit,
            SinkCircuitPolicy {
                failures: 5,
                probe: Duration::from_secs(10)
            }
        );
        let mut v = base();
        v.extend([
            ("SINK_CIRCUIT_FAILURES", "0"),
            ("SINK_CIRCUIT_PROBE_MS", "2500"),
        ]);
        let c = Config::from_vars(&vars(&v)).unwrap();
        assert_eq!(c.sink_circuit.failures, 0);
        assert_eq!(c.sink_circuit.probe, Duration::from_millis(2500));
        for (var, bad) in [
            ("SINK_CIRCUIT_FAILURES", "-1"),
            ("SINK_CIRCUIT_FAILURES", "five"),
            ("SINK_CIRCUIT_PROBE_MS", "50"),
            ("SINK_CIRCUIT_PROBE_MS", "3600001"),
        ] {
            let mut v = base();
            v.push((var, bad));
            assert_eq!(Config::from_vars(&vars(&v)).unwrap_err().var, var, "{bad}");
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
    fn wal_guard_defaults_and_switches() {
        let c = Config::from_vars(&vars(&base())).unwrap().wal_guard;
        assert_eq!(c.slot_check_interval, Duration::from_secs(10));
        assert_eq!(c.retained_warn_bytes, 1 << 30);
        assert_eq!(c.heartbeat_interval, Some(Duration::from_secs(30)));
        assert_eq!(c.pause_max, Some(Duration::from_secs(3600)));
        assert!(!c.pause_auto_resume);
        let mut v = base();
        v.extend([
            ("HEARTBEAT_INTERVAL_MS", "0"),
            ("PAUSE_MAX_MS", "0"),
            ("PAUSE_AUTO_RESUME", "true"),
            ("SLOT_RETAINED_WARN_BYTES", "0"),
        ]);
        let c = Config::from_vars(&vars(&v)).unwrap().wal_guard;
        assert_eq!((c.heartbeat_interval, c.pause_max), (None, None));
        assert!(c.pause_auto_resume);
        assert_eq!(c.retained_warn_bytes, 0);
        for (var, bad) in [
            ("HEARTBEAT_INTERVAL_MS", "50"),
            ("SLOT_CHECK_INTERVAL_MS", "0"),
            ("PAUSE_AUTO_RESUME", "yes"),
        ] {
            let mut v = base();
            v.push((var, bad));
            assert_eq!(Config::from_vars(&vars(&v)).unwrap_err().var, var);
        }
    }

    #[test]
    fn streaming_is_on_by_default_with_a_bounded_spill() {
        let c = Config::from_vars(&vars(&base())).unwrap().streaming;
        assert!(c.enabled);
        assert_eq!(c.spill.memory_bytes, 1 << 20);
        assert_eq!(c.spill.max_bytes, None);
        assert_eq!(c.spill.dir, std::env::temp_dir().join("dbmazz-spill"));
        let mut v = base();
        v.extend([
            ("STREAMING", "off"),
            ("SPILL_DIR", "/var/lib/dbmazz/spill"),
            ("SPILL_MEMORY_BYTES", "65536"),
            ("SPILL_MAX_BYTES", "1073741824"),
        ]);
        let c = Config::from_vars(&vars(&v)).unwrap().streaming;
        assert!(!c.enabled);
        assert_eq!(c.spill.dir, PathBuf::from("/var/lib/dbmazz/spill"));
        assert_eq!(c.spill.memory_bytes, 65536);
        assert_eq!(c.spill.max_bytes, Some(1 << 30));
        for (var, bad) in [
            ("STREAMING", "parallel"),
            ("SPILL_DIR", "spill"),
            ("SPILL_MEMORY_BYTES", "1000"),
            ("SPILL_MAX_BYTES", "1000"),
            ("SPILL_MAX_BYTES", "lots"),
        ] {
            let mut v = base();
            v.push((var, bad));
            let err = Config::from_vars(&vars(&v)).unwrap_err();
            assert_eq!(err.var, var, "{bad}: {err}");
        }
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
