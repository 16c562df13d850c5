//! The `dbmazz` binary: configuration from the environment, logging, signals, the control plane,
//! then the daemon.
//!
//! Exit codes: 0 after a clean stop (SIGTERM/SIGINT or DrainAndStop: flush, checkpoint,
//! confirm), 1 when the job failed, a listener could not be bound, or the drain did not finish
//! within `SHUTDOWN_TIMEOUT_MS` (or DrainAndStop's `timeout_ms`; then what was not durable is
//! not confirmed and PostgreSQL resends it), 2 when the configuration is invalid. A second SIGTERM/SIGINT exits at once with 130; that is safe because the checkpoint
//! and the slot only ever name changes that are already durable.
//!
//! After a definite error the process stays up while gRPC is enabled, so that orchestrators can
//! read the error from Health (`NOT_SERVING` + `errorDetail`); it exits 1 on SIGTERM/SIGINT or
//! DrainAndStop. With `GRPC_PORT=off` it exits 1 at once.
//!
//! Subcommands (only when the first argument names one; otherwise the daemon runs as above):
//! `dbmazz top` (terminal dashboard, see [`dbmazz::top`]) and `dbmazz verify` (compare source and
//! sink, see [`dbmazz::verify`]; exit 0 when equal, 1 when they differ, 2 for bad arguments) and
//! `dbmazz schema upload|status|list|drop` (schema provisioning client, see
//! [`dbmazz::schema_cli`]; exit 0 on success, 1 when the job failed, 2 for bad arguments or an
//! unreachable server).

use std::collections::HashMap;
use std::process::ExitCode;
use std::time::Duration;

use dbmazz::config::Config;
use dbmazz::control::ControlPlane;
use dbmazz::job::JobHandle;
use dbmazz::provision::config::ProvisionConfig;
use dbmazz::provision::jobs::Engine;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;
use tracing_subscriber::EnvFilter;

/// How long in-flight gRPC calls get to finish once the job stopped.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

fn main() -> ExitCode {
    fixed_mmap_threshold();
    one_malloc_arena();
    if let Some(cmd) = std::env::args().nth(1) {
        match cmd.as_str() {
            "--help" | "-h" | "help" => {
                print!("{}", dbmazz::help::help_text());
                return ExitCode::SUCCESS;
            }
            "--version" | "-V" | "version" => {
                println!("{}", dbmazz::help::version_text());
                return ExitCode::SUCCESS;
            }
            "top" | "verify" | "schema" | "health" | "check" => return cli::main(),
            other if other.starts_with('-') => {
                eprintln!("dbmazz: unknown option {other:?}; see dbmazz --help");
                return ExitCode::from(2);
            }
            _ => {}
        }
    }
    let filter = EnvFilter::try_from_env("RUST_LOG")
        .or_else(|_| {
            EnvFilter::try_new(std::env::var("LOG_LEVEL").unwrap_or_else(|_| "info".into()))
        })
        .unwrap_or_else(|_| EnvFilter::new("info"));
    match std::env::var("LOG_FORMAT").as_deref() {
        Ok("json") => tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_target(false)
            .init(),
        Ok("text") | Err(_) => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_target(false)
            .init(),
        Ok(other) => {
            eprintln!("dbmazz: invalid configuration: LOG_FORMAT: {other:?} is not supported; expected text or json");
            return ExitCode::from(2);
        }
    }

    let vars: HashMap<String, String> = std::env::vars().collect();
    if !dbmazz::config::wants_cdc(&vars) {
        match ProvisionConfig::from_vars(&vars, &[]) {
            Ok(Some(provision)) => return provisioning_only(provision, &vars),
            // Neither a job nor provisioning: the job's error below names DATABASE_URL.
            Ok(None) => {}
            Err(e) => {
                eprintln!("dbmazz: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let config = match Config::from_vars(&vars) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("dbmazz: {e}");
            return ExitCode::from(2);
        }
    };
    let provision_config =
        match ProvisionConfig::from_vars(&vars, std::slice::from_ref(&config.database.dbname)) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("dbmazz: {e}");
                return ExitCode::from(2);
            }
        };

    let runtime = match daemon_runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    runtime.block_on(async move {
        let job = JobHandle::new(&config.slot_name, &config.tables, config.flush);
        job.set_sink_stall_after(config.health_sink_stall);
        job.set_shutdown_timeout(config.shutdown_timeout);
        // Set when an operator asks the process to stop (signal, or DrainAndStop after a failure).
        let stop = watch::Sender::new(false);
        if let Err(e) = spawn_signal_handler(job.clone(), stop.clone()) {
            eprintln!("dbmazz: cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
        let provision = match provision_config {
            None => Engine::disabled(),
            Some(c) => match Engine::start(c).await {
                Ok(engine) => engine,
                Err(e) => {
                    eprintln!("dbmazz: invalid configuration: {e}");
                    return ExitCode::from(2);
                }
            },
        };
        let plane = match ControlPlane::start(&config, &job, stop.clone(), &provision).await {
            Ok(plane) => plane,
            Err(e) => {
                tracing::error!(error = %e, "cannot start the control plane");
                eprintln!("dbmazz: {e}");
                return ExitCode::FAILURE;
            }
        };
        tracing::info!(
            source = %config.database.redacted(),
            slot = %config.slot_name,
            publication = %config.publication_name,
            tables = config.tables.len(),
            "dbmazz starting"
        );
        // A task of its own, so it runs on a worker thread rather than block_on's: the WAL reader
        // then wakes the batcher on the same worker (tokio's LIFO slot) instead of across
        // threads for every socket read, which cost most of the CPU under OLTP traffic.
        let mut abandoned = job.abandoned();
        let replication = tokio::spawn(dbmazz::daemon::run(config, job));
        let joined = tokio::select! {
            joined = replication => joined,
            _ = abandoned.wait_for(|a| *a) => {
                // A bounded drain gave up (its error is logged, and answered to DrainAndStop):
                // end without confirming more. The slot keeps everything not confirmed.
                eprintln!("dbmazz: the drain did not finish in time; exiting without confirming the rest (see the log)");
                plane.shutdown(SHUTDOWN_GRACE).await;
                // Not a return: dropping the runtime would wait for a sink call that hangs.
                std::process::exit(1);
            }
        };
        let result = match joined {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(join) => Err(format!("the replication task failed: {join}")),
        };
        match result {
            Ok(()) => {
                plane.shutdown(SHUTDOWN_GRACE).await;
                ExitCode::SUCCESS
            }
            Err(e) => {
                tracing::error!(error = %e, "replication stopped");
                eprintln!("dbmazz: {e}");
                if let Some(addr) = plane.grpc_addr() {
                    tracing::info!(%addr, "the job failed; Health reports the error until the process is stopped (SIGTERM or DrainAndStop)");
                    let _ = stop.subscribe().wait_for(|s| *s).await;
                }
                plane.shutdown(SHUTDOWN_GRACE).await;
                ExitCode::FAILURE
            }
        }
    })
}

/// Large buffers (Stream Load bodies, 256 KiB read chunks) are freed and reallocated all the
/// time. glibc raises its mmap threshold after each large free, so they end up in the heap
/// arenas, where fragmentation keeps freed memory resident: the TOAST-mix catch-up peaked at
/// 25 MB instead of 21 MB. A fixed threshold keeps allocations of 128 KiB and more in their own
/// mappings, returned to the system on free, at the same speed. `MALLOC_MMAP_THRESHOLD_` in the
/// environment still overrides it.
fn fixed_mmap_threshold() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
        // SAFETY: mallopt only adjusts allocator parameters; called before any thread starts.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
        }
    }
}

/// Keeps glibc's allocator to one arena. By default every thread that allocates gets its own
/// arena (up to 8 per core), each keeping freed memory for itself: with the two runtime workers
/// handing batches to each other, that is ~5 MB more resident memory (21 vs 27 MB peak on the
/// bulk catch-up in `benches/e2e.sh`) for no measurable CPU or throughput gain. An operator's
/// own `MALLOC_ARENA_MAX` wins.
fn one_malloc_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator parameter; called before any thread starts.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
}

mod cli {
    //! `dbmazz top`, `dbmazz verify` and `dbmazz schema`.

    use std::process::ExitCode;
    use std::time::Duration;

    use clap::{Args, Parser, Subcommand};
    use dbmazz::verify::Target;

    #[derive(Parser)]
    #[command(
        name = "dbmazz",
        about = "PostgreSQL → StarRocks CDC; without a subcommand, the daemon (configured by the environment)"
    )]
    struct Cli {
        #[command(subcommand)]
        cmd: Cmd,
    }

    #[derive(Subcommand)]
    enum Cmd {
        /// Live terminal dashboard of a running dbmazz (gRPC API).
        Top(TopArgs),
        /// Compare source and sink per table (live row counts and per-key hashes).
        Verify(VerifyArgs),
        /// Provision databases through a running dbmazz (SchemaService).
        Schema(SchemaArgs),
        /// Probe a running dbmazz's Health: exit 0 when SERVING, 1 when not, 2 when unreachable.
        Health(HealthArgs),
        /// Preflight: check the configuration (the environment), PostgreSQL and the sink, one line
        /// per check with a fix; change nothing. Exit 0 when every check passes, 1 otherwise.
        Check,
    }

    #[derive(Args)]
    struct HealthArgs {
        /// host:port of dbmazz's gRPC API [default: 127.0.0.1:$GRPC_PORT or 127.0.0.1:50051].
        #[arg(long)]
        grpc: Option<String>,
        /// Bearer token [env: GRPC_TOKEN, or the file GRPC_TOKEN_FILE].
        #[arg(long)]
        token: Option<String>,
        /// How long to wait for the answer, in milliseconds.
        #[arg(long, default_value_t = 3000)]
        timeout_ms: u64,
    }

    #[derive(Args)]
    struct SchemaArgs {
        /// dbmazz's gRPC API [default: http://127.0.0.1:$GRPC_PORT or http://127.0.0.1:50051].
        #[arg(long, global = true)]
        addr: Option<String>,
        /// Bearer token [env: GRPC_TOKEN].
        #[arg(long, global = true, conflicts_with = "token_file")]
        token: Option<String>,
        /// File holding the bearer token [env: GRPC_TOKEN_FILE].
        #[arg(long, global = true)]
        token_file: Option<std::path::PathBuf>,
        #[command(subcommand)]
        cmd: SchemaCmd,
    }

    #[derive(Subcommand)]
    enum SchemaCmd {
        /// Upload a .sql file: dbmazz creates the database and applies the file; follows the job
        /// to its end (exit 0 on success, 1 when it failed).
        Upload(dbmazz::schema_cli::Upload),
        /// Show one job (exit 1 when it failed).
        Status {
            /// Job id.
            id: String,
        },
        /// List jobs, newest first.
        List {
            /// Most jobs shown.
            #[arg(long, default_value_t = 20)]
            limit: u32,
        },
        /// Drop a database (terminating its connections first).
        Drop {
            /// postgres or mysql.
            #[arg(long)]
            engine: String,
            /// The database.
            #[arg(long)]
            name: String,
            /// Drop it even though dbmazz did not create it.
            #[arg(long)]
            force: bool,
            /// The server it is on [default: the one the registry knows, or the only one of
            /// the engine].
            #[arg(long)]
            server: Option<String>,
        },
        /// Apply a migration to tenant databases (all, a server's, a label's, or a list);
        /// exit 0 only when every one applied it or had it already.
        Migrate(dbmazz::schema_cli::Migrate),
        /// The tenant registry: which database is on which server, with which migrations.
        Databases(dbmazz::schema_cli::Databases),
        /// The database servers, checked now (exit 1 when one is unreachable).
        Servers,
    }

    fn schema(a: SchemaArgs) -> ExitCode {
        use dbmazz::schema_cli::{self, Outcome, Server};
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let token = match (
            a.token,
            a.token_file
                .or_else(|| env("GRPC_TOKEN_FILE").map(Into::into)),
        ) {
            (Some(t), _) => Some(t),
            (None, Some(path)) => match schema_cli::read_token_file(&path) {
                Ok(t) => Some(t),
                Err(e) => {
                    eprintln!("dbmazz schema: {e}");
                    return ExitCode::from(2);
                }
            },
            (None, None) => env("GRPC_TOKEN"),
        };
        let server = Server {
            addr: a.addr.unwrap_or_else(|| {
                format!(
                    "http://127.0.0.1:{}",
                    env("GRPC_PORT").unwrap_or_else(|| "50051".into())
                )
            }),
            token,
        };
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("dbmazz schema: {e}");
                return ExitCode::from(2);
            }
        };
        let result = rt.block_on(async {
            match a.cmd {
                SchemaCmd::Upload(u) => schema_cli::upload(&server, &u).await,
                SchemaCmd::Status { id } => schema_cli::status(&server, &id).await,
                SchemaCmd::List { limit } => schema_cli::list(&server, limit).await,
                SchemaCmd::Drop {
                    engine,
                    name,
                    force,
                    server: on,
                } => schema_cli::drop_database(&server, &engine, on.as_deref(), &name, force).await,
                SchemaCmd::Migrate(m) => schema_cli::migrate(&server, &m).await,
                SchemaCmd::Databases(d) => schema_cli::databases(&server, &d).await,
                SchemaCmd::Servers => schema_cli::servers(&server).await,
            }
        });
        match result {
            Ok(Outcome::Success) => ExitCode::SUCCESS,
            Ok(Outcome::JobFailed) => ExitCode::FAILURE,
            Err(e) => {
                eprintln!("dbmazz schema: {e}");
                ExitCode::from(2)
            }
        }
    }

    /// Where source and sink are; unset flags fall back to the daemon's variables.
    #[derive(Args)]
    struct Where {
        /// PostgreSQL URL [env: DATABASE_URL].
        #[arg(long)]
        source_url: Option<String>,
        /// StarRocks MySQL URL, e.g. mysql://root:@127.0.0.1:9030/ [env: STARROCKS_MYSQL_URL].
        #[arg(long)]
        sink_mysql_url: Option<String>,
        /// StarRocks database [env: STARROCKS_DB].
        #[arg(long)]
        sink_db: Option<String>,
        /// Comma list of tables [env: TABLES].
        #[arg(long)]
        tables: Option<String>,
    }

    #[derive(Args)]
    struct TopArgs {
        /// host:port of dbmazz's gRPC API [default: 127.0.0.1:$GRPC_PORT or 127.0.0.1:50051].
        #[arg(long)]
        grpc: Option<String>,
        /// Bearer token [env: GRPC_TOKEN].
        #[arg(long)]
        token: Option<String>,
        #[command(flatten)]
        place: Where,
        /// Refresh interval in milliseconds.
        #[arg(long, default_value_t = 1000)]
        interval_ms: u64,
        /// Row-count refresh interval in seconds.
        #[arg(long, default_value_t = 3)]
        counts_every: u64,
        /// One summary line per interval, even on a terminal.
        #[arg(long)]
        plain: bool,
        /// Quit after this many seconds.
        #[arg(long)]
        duration: Option<u64>,
    }

    #[derive(Args)]
    struct VerifyArgs {
        #[command(flatten)]
        place: Where,
        /// Most differing keys listed per table.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Retry for up to this many seconds while source and sink differ.
        #[arg(long, default_value_t = 0)]
        wait: u64,
    }

    fn target(w: Where) -> anyhow::Result<Target> {
        Target::resolve(w.source_url, w.sink_mysql_url, w.sink_db, w.tables)
    }

    pub fn main() -> ExitCode {
        let cli = match Cli::try_parse() {
            Ok(c) => c,
            Err(e) => {
                let _ = e.print();
                return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
            }
        };
        match cli.cmd {
            Cmd::Schema(a) => schema(a),
            Cmd::Top(a) => {
                let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
                let grpc = a.grpc.unwrap_or_else(|| {
                    format!(
                        "127.0.0.1:{}",
                        env("GRPC_PORT").unwrap_or_else(|| "50051".into())
                    )
                });
                let counts = target(a.place).ok();
                let opts = dbmazz::top::Options {
                    grpc,
                    token: a.token.or_else(|| env("GRPC_TOKEN")),
                    counts,
                    interval: Duration::from_millis(a.interval_ms.max(100)),
                    counts_interval: Duration::from_secs(a.counts_every.max(1)),
                    plain: a.plain,
                    duration: a.duration.map(Duration::from_secs),
                };
                match dbmazz::top::run(opts) {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        eprintln!("dbmazz top: {e:#}");
                        ExitCode::FAILURE
                    }
                }
            }
            Cmd::Health(a) => {
                let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
                let grpc = a.grpc.unwrap_or_else(|| {
                    format!(
                        "127.0.0.1:{}",
                        env("GRPC_PORT").unwrap_or_else(|| "50051".into())
                    )
                });
                let token = a.token.or_else(|| env("GRPC_TOKEN")).or_else(|| {
                    env("GRPC_TOKEN_FILE")
                        .and_then(|f| std::fs::read_to_string(f).ok())
                        .map(|t| t.trim().to_owned())
                });
                match dbmazz::top::probe_health(
                    &grpc,
                    token.as_deref(),
                    Duration::from_millis(a.timeout_ms.max(100)),
                ) {
                    Ok(p) => {
                        println!("{}", p.line);
                        if p.serving {
                            ExitCode::SUCCESS
                        } else {
                            ExitCode::FAILURE
                        }
                    }
                    Err(e) => {
                        eprintln!("dbmazz health: {e:#}");
                        ExitCode::from(2)
                    }
                }
            }
            Cmd::Check => dbmazz::preflight::main(),
            Cmd::Verify(a) => {
                let t = match target(a.place) {
                    Ok(t) => t,
                    Err(e) => {
                        eprintln!("dbmazz verify: {e:#}");
                        return ExitCode::from(2);
                    }
                };
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        eprintln!("dbmazz verify: {e}");
                        return ExitCode::FAILURE;
                    }
                };
                match rt.block_on(dbmazz::verify::run(
                    &t,
                    a.limit,
                    Duration::from_secs(a.wait),
                )) {
                    Ok(true) => ExitCode::SUCCESS,
                    Ok(false) => ExitCode::FAILURE,
                    Err(e) => {
                        eprintln!("dbmazz verify: {e:#}");
                        ExitCode::from(2)
                    }
                }
            }
        }
    }
}

/// The daemon's runtime, the same in both modes: two worker threads.
fn daemon_runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("dbmazz: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        })
}

/// A daemon with provisioning settings and neither `DATABASE_URL` nor `TABLES`: it serves
/// SchemaService and Health (gRPC) and the provisioning routes (HTTP port) until SIGTERM/SIGINT,
/// then exits 0. Jobs still running then are failed at the next start, as after a crash.
fn provisioning_only(provision: ProvisionConfig, vars: &HashMap<String, String>) -> ExitCode {
    let control = match dbmazz::config::ControlConfig::from_vars(vars) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("dbmazz: {e}");
            return ExitCode::from(2);
        }
    };
    if control.grpc_addr.is_none() && control.metrics_addr.is_none() {
        eprintln!(
            "dbmazz: invalid configuration: GRPC_PORT: is off and METRICS_PORT is unset, so a \
             daemon that only provisions schemas would serve nothing; enable one of them"
        );
        return ExitCode::from(2);
    }
    let ignored = dbmazz::config::cdc_only_vars_set(vars);
    let runtime = match daemon_runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    runtime.block_on(async move {
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            eprintln!("dbmazz: cannot install signal handlers");
            return ExitCode::FAILURE;
        };
        let engine = match Engine::start(provision).await {
            Ok(engine) => engine,
            Err(e) => {
                eprintln!("dbmazz: invalid configuration: {e}");
                return ExitCode::from(2);
            }
        };
        let plane = match ControlPlane::start_provisioning(&control, &engine).await {
            Ok(plane) => plane,
            Err(e) => {
                tracing::error!(error = %e, "cannot start the control plane");
                eprintln!("dbmazz: {e}");
                return ExitCode::FAILURE;
            }
        };
        if !ignored.is_empty() {
            tracing::warn!(
                variables = %ignored.join(","),
                "these CDC settings are ignored: DATABASE_URL and TABLES are unset, so this daemon only provisions schemas"
            );
        }
        tracing::info!("dbmazz starting: provisioning only (DATABASE_URL and TABLES are unset: no CDC job)");
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("stop requested: closing the control plane");
        plane.shutdown(SHUTDOWN_GRACE).await;
        ExitCode::SUCCESS
    })
}

/// First SIGTERM/SIGINT: drain and stop. Second: exit at once.
fn spawn_signal_handler(job: JobHandle, stop: watch::Sender<bool>) -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        let mut seen = 0;
        loop {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            seen += 1;
            if seen == 1 {
                let timeout = job.shutdown_timeout();
                tracing::info!(
                    timeout_ms = timeout.as_millis() as u64,
                    "stop requested: flushing, checkpointing and confirming"
                );
                stop.send_replace(true);
                // Bounded by SHUTDOWN_TIMEOUT_MS: on expiry the job is abandoned and main exits.
                let job = job.clone();
                tokio::spawn(async move {
                    let _ = job.drain_and_stop(timeout).await;
                });
            } else {
                tracing::warn!("second stop signal: exiting now; unconfirmed changes will be resent on restart");
                std::process::exit(130);
            }
        }
    });
    Ok(())
}
