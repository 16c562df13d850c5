//! `dbmazz --help` and `dbmazz --version`: what a newcomer types first, answered without a
//! configuration. The daemon is configured by environment variables only, so the help lists
//! them by group with their defaults (the README's tables say more about each).

/// The version of the gRPC API (`proto/dbmazz.proto`, package `dbmazz`): raised when a change
/// breaks scripts written against it.
pub const GRPC_API_VERSION: &str = "1";

/// The commit the binary was built from (`git rev-parse --short HEAD` at build time), or
/// `unknown` outside a git checkout.
pub const GIT_COMMIT: &str = env!("DBMAZZ_GIT_COMMIT");

/// `dbmazz --version`.
pub fn version_text() -> String {
    format!(
        "dbmazz {} (commit {GIT_COMMIT}, gRPC API {GRPC_API_VERSION})",
        env!("CARGO_PKG_VERSION")
    )
}

/// One group of variables: its title and (name, default, meaning).
type Group = (
    &'static str,
    &'static [(&'static str, &'static str, &'static str)],
);

const GROUPS: &[Group] = &[
    (
        "Source (PostgreSQL)",
        &[
            (
                "DATABASE_URL",
                "required",
                "postgres://user:password@host:port/db (libpq parameters such as sslmode); \
                 unset with TABLES and a PROVISION_*_URL set: provisioning only, no CDC job",
            ),
            (
                "TABLES",
                "required",
                "comma list of tables (schema.table); `*` makes a pattern: public.*, sales.order_*",
            ),
            (
                "TABLES_DISCOVERY_INTERVAL_MS",
                "10000",
                "how often new tables matching a TABLES pattern are looked for",
            ),
            (
                "SLOT_NAME",
                "dbmazz_slot",
                "logical replication slot (created if missing)",
            ),
            (
                "SLOT_FAILOVER",
                "false",
                "true: a failover slot (PostgreSQL 17+) that survives a standby's promotion",
            ),
            (
                "PUBLICATION_NAME",
                "dbmazz_pub",
                "publication (created, or missing tables added)",
            ),
            (
                "REPLICA_IDENTITY",
                "default",
                "full sets REPLICA IDENTITY FULL on the tables",
            ),
            (
                "STATUS_INTERVAL_MS",
                "10000",
                "longest gap between status updates to PostgreSQL",
            ),
            (
                "STATEMENT_TIMEOUT_MS",
                "60000",
                "statement_timeout of dbmazz's bookkeeping sessions; 0: none",
            ),
            (
                "WAL_RECEIVER_TIMEOUT_MS",
                "60000",
                "a stream silent this long is a dead connection; 0: wait forever",
            ),
        ],
    ),
    (
        "Initial snapshot",
        &[
            ("SNAPSHOT_MODE", "initial", "initial, never or always"),
            (
                "SNAPSHOT_WORKERS",
                "2",
                "parallel connections reading chunks",
            ),
            ("SNAPSHOT_CHUNK_ROWS", "100000", "target rows per chunk"),
        ],
    ),
    (
        "Batching",
        &[
            (
                "FLUSH_SIZE",
                "1500",
                "flush a batch after this many changes",
            ),
            (
                "FLUSH_INTERVAL_MS",
                "5000",
                "flush a non-empty batch at least this often",
            ),
            (
                "FLUSH_MAX_BYTES",
                "1048576",
                "flush at this many bytes; twice this is the in-flight memory budget",
            ),
        ],
    ),
    (
        "Sink",
        &[
            ("SINK_TYPE", "starrocks", "starrocks or ndjson"),
            (
                "NDJSON_PATH",
                "stdout",
                "NDJSON file to append to; - means stdout",
            ),
            (
                "STARROCKS_URL",
                "required for starrocks",
                "FE (http://fe:8030) or BE (http://be:8040) HTTP address",
            ),
            ("STARROCKS_DB", "required for starrocks", "target database"),
            ("STARROCKS_USER", "root", "Stream Load and MySQL user"),
            ("STARROCKS_PASS", "empty", "its password"),
            (
                "STARROCKS_MYSQL_URL",
                "mysql://user:pass@<FE host>:9030/",
                "the FE's MySQL port, for DDL and checks",
            ),
            (
                "STARROCKS_REDIRECT_ALLOW",
                "empty: any node",
                "the only hosts a 307 may send loads to",
            ),
            (
                "STARROCKS_HOST_REWRITE",
                "127.0.0.1=<FE host>,localhost=<FE host>",
                "from=to rewrites of redirect hosts",
            ),
            (
                "STARROCKS_RUN_MODE",
                "auto",
                "shared_nothing or shared_data",
            ),
            (
                "STARROCKS_REPLICATION_NUM",
                "alive BEs, at most 3",
                "replication_num of the tables CREATE_TABLES makes",
            ),
            (
                "STARROCKS_PRIMARY_KEY_LIMIT",
                "128",
                "the BEs' primary_key_limit_size",
            ),
            (
                "STARROCKS_DATETIME_FRACTION",
                "keep",
                "drop: accept a StarRocks before 3.3.5 that keeps seconds only",
            ),
            (
                "STARROCKS_LOAD_TIMEOUT_S",
                "600",
                "server-side load timeout",
            ),
            (
                "STARROCKS_STALL_TIMEOUT_S",
                "120",
                "a load that moves no byte this long is retried",
            ),
            (
                "STARROCKS_BE_PIN_MS",
                "1000",
                "loads skip the FE's 307 this long after one (0: never)",
            ),
            (
                "STARROCKS_COMPRESS",
                "none",
                "gzip compresses load bodies (StarRocks 3.2.7+)",
            ),
            (
                "STARROCKS_CA_FILE",
                "system trust store",
                "PEM CA certificates for an https:// STARROCKS_URL",
            ),
            (
                "STARROCKS_SNAPSHOT_FORMAT",
                "csv",
                "csv or json for snapshot loads",
            ),
            ("CREATE_TABLES", "false", "create missing target tables"),
            ("TRUNCATE_POLICY", "stop", "stop or truncate"),
            (
                "ON_REJECT",
                "stop",
                "a row StarRocks refuses: stop, or dead_letter (dbmazz_dead_letters)",
            ),
            (
                "SINK_CIRCUIT_FAILURES",
                "5",
                "failed loads in a row that open the sink's circuit; 0: never",
            ),
            (
                "SINK_CIRCUIT_PROBE_MS",
                "10000",
                "while open, the pending batch is retried this often",
            ),
        ],
    ),
    (
        "Schema changes",
        &[
            (
                "SCHEMA_TABLE_RENAME",
                "follow",
                "a renamed table: follow (same target) or stop",
            ),
            (
                "SCHEMA_TYPE_CHANGE",
                "stop",
                "a narrowing type change: stop or recreate_column",
            ),
            (
                "SCHEMA_DROP_COLUMN",
                "keep",
                "a dropped column: keep, drop or stop",
            ),
        ],
    ),
    (
        "Large transactions",
        &[
            (
                "STREAMING",
                "on",
                "on: PostgreSQL streams large transactions as they run; off: it holds them",
            ),
            (
                "SPILL_DIR",
                "$TMPDIR/dbmazz-spill",
                "where open streamed transactions spill (created 0700)",
            ),
            (
                "SPILL_MEMORY_BYTES",
                "1048576",
                "memory for open streamed transactions before they spill",
            ),
            (
                "SPILL_MAX_BYTES",
                "half the free space",
                "disk for spilled transactions; past it the job stops",
            ),
        ],
    ),
    (
        "WAL-growth guard and health",
        &[
            (
                "SLOT_CHECK_INTERVAL_MS",
                "10000",
                "how often pg_replication_slots is read",
            ),
            (
                "SLOT_RETAINED_WARN_BYTES",
                "1073741824",
                "warn when the slot retains more WAL; 0: keep-size thresholds only",
            ),
            (
                "HEARTBEAT_INTERVAL_MS",
                "30000",
                "heartbeat message into the source; 0: off (PostgreSQL 14+)",
            ),
            (
                "PAUSE_MAX_MS",
                "3600000",
                "a longer Pause shows in Health; 0: no bound",
            ),
            (
                "PAUSE_AUTO_RESUME",
                "false",
                "true: resume by itself at PAUSE_MAX_MS",
            ),
            (
                "HEALTH_SINK_STALL_MS",
                "60000",
                "Health turns NOT_SERVING when the sink holds a batch longer",
            ),
            (
                "SHUTDOWN_TIMEOUT_MS",
                "25000",
                "how long a stop waits for the drain; 0: no bound",
            ),
        ],
    ),
    (
        "Control plane",
        &[
            (
                "GRPC_PORT",
                "50051",
                "gRPC port; off disables it; 0 picks a free port",
            ),
            (
                "GRPC_BIND",
                "127.0.0.1",
                "gRPC address (bind elsewhere only with GRPC_TOKEN)",
            ),
            (
                "GRPC_TOKEN",
                "unset",
                "bearer token every call needs (or GRPC_TOKEN_FILE)",
            ),
            ("GRPC_TOKEN_FILE", "unset", "file holding GRPC_TOKEN"),
            (
                "METRICS_PORT",
                "unset (off)",
                "Prometheus endpoint GET /metrics; 0 picks a free port",
            ),
            ("METRICS_BIND", "127.0.0.1", "Prometheus address"),
        ],
    ),
    (
        "Logging",
        &[
            (
                "RUST_LOG",
                "info",
                "log filter (or LOG_LEVEL); logs go to stderr",
            ),
            ("LOG_LEVEL", "info", "log level when RUST_LOG is unset"),
            (
                "LOG_FORMAT",
                "text",
                "text, or json: one JSON object per line",
            ),
        ],
    ),
    (
        "Schema provisioning (SchemaService)",
        &[
            (
                "PROVISION_POSTGRES_URL",
                "unset",
                "admin connection to PostgreSQL; enables engine POSTGRES",
            ),
            (
                "PROVISION_MYSQL_URL",
                "unset",
                "admin connection to MySQL/MariaDB; enables engine MYSQL",
            ),
            (
                "PROVISION_SERVERS_FILE",
                "unset",
                "TOML file of named servers (engine, admin_url, role, capacity, weight, labels)",
            ),
            (
                "PROVISION_ROLE",
                "required with a URL",
                "role that owns the created databases",
            ),
            (
                "PROVISION_ROLE_PASSWORD",
                "unset",
                "its password (or PROVISION_ROLE_PASSWORD_FILE)",
            ),
            (
                "PROVISION_MYSQL_ROLE_HOST",
                "%",
                "host part of the MySQL account",
            ),
            (
                "SCHEMA_TMP_PATH",
                "/tmp/dbmazz-schemas",
                "where uploads are stored until applied",
            ),
            (
                "SCHEMA_JOB_STORE_PATH",
                "$SCHEMA_TMP_PATH/jobs",
                "job records",
            ),
            ("SCHEMA_MAX_BYTES", "8589934592", "largest upload"),
            ("SCHEMA_WORKERS", "2", "jobs applied at the same time"),
            (
                "SCHEMA_STATEMENT_TIMEOUT_MS",
                "0",
                "longest a statement of an applied file may run; 0 = no bound",
            ),
            (
                "SCHEMA_LOCK_TIMEOUT_MS",
                "10000",
                "longest a statement of an applied file may wait for a lock; 0 = no bound",
            ),
            (
                "SCHEMA_REGISTRY_PATH",
                "$SCHEMA_TMP_PATH/registry",
                "the tenant registry (which database is on which server)",
            ),
            (
                "MIGRATION_CONCURRENCY",
                "8",
                "databases a migration works on at once",
            ),
            ("MIGRATION_CONCURRENCY_PER_SERVER", "4", "… on one server"),
            (
                "SCHEMA_JOB_RETENTION_MS",
                "604800000",
                "finished jobs are forgotten this long after they ended; 0 = never",
            ),
            (
                "SCHEMA_UPLOAD_RETENTION_MS",
                "86400000",
                "uploads kept after their job are deleted this long after it; 0 = never",
            ),
            (
                "SCHEMA_FAIL_IF_DB_EXISTS",
                "true",
                "fail when the database exists",
            ),
            (
                "SCHEMA_DROP_DB_ON_FAILURE",
                "true",
                "drop the database dbmazz created when the job fails",
            ),
            (
                "DELETE_SCHEMA_AFTER_APPLY",
                "true",
                "delete the stored upload when the job ends",
            ),
            (
                "SCHEMA_DEDUPLICATE_BY_HASH",
                "true",
                "return the earlier job for the same file",
            ),
            (
                "SCHEMA_ENABLE_SQL_GUARD",
                "true",
                "refuse dangerous statements",
            ),
            (
                "SCHEMA_FORBIDDEN_KEYWORDS",
                "unset",
                "extra refused words, comma-separated",
            ),
            ("SCHEMA_DRY_RUN", "false", "split and guard only"),
            (
                "SCHEMA_ENABLE_IDEMPOTENCY",
                "true",
                "honour idempotency_key",
            ),
            (
                "RATE_LIMIT_MAX",
                "30",
                "uploads per client address per window; 0: no limit",
            ),
            ("RATE_LIMIT_WINDOW_MS", "60000", "the window"),
        ],
    ),
];

/// `dbmazz --help`.
pub fn help_text() -> String {
    let mut out = format!(
        "{}\nPostgreSQL → StarRocks change data capture.\n\n\
         Usage:\n  dbmazz                 run the replication daemon, configured by the environment\n  \
         dbmazz check           preflight: check the configuration, PostgreSQL and the sink; change nothing\n  \
         dbmazz health          probe a running daemon's gRPC Health (exit 0 when SERVING)\n  \
         dbmazz top             live terminal dashboard of a running daemon\n  \
         dbmazz verify          compare source and sink per table\n  \
         dbmazz schema …        schema provisioning through a running daemon\n  \
         dbmazz --version       version, commit and gRPC API version\n  \
         dbmazz <command> --help   options of a command\n\n\
         Environment (default in brackets):\n",
        version_text()
    );
    for (title, vars) in GROUPS {
        out.push_str(&format!("\n{title}\n"));
        for (name, default, meaning) in *vars {
            out.push_str(&format!("  {name:<30} [{default}]\n      {meaning}\n"));
        }
    }
    out.push_str(
        "\nExit codes: 0 clean stop, 1 the job failed, 2 bad configuration.\n\
         Full reference: README.md (Running it, Control plane, Schema changes).\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variable_is_listed_once() {
        let mut names: Vec<&str> = GROUPS
            .iter()
            .flat_map(|(_, v)| v.iter().map(|(n, _, _)| *n))
            .collect();
        let all = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), all, "a variable is listed twice");
        assert!(help_text().contains("LOG_FORMAT"));
    }
}
