//! The `dbmazz` binary: configuration from the environment, logging, signals, the control plane,
//! then the daemon.
//!
//! Exit codes: 0 after a clean stop (SIGTERM/SIGINT or DrainAndStop: flush, checkpoint,
//! confirm), 1 when the job failed or a listener could not be bound, 2 when the configuration is
//! invalid. A second SIGTERM/SIGINT exits at once with 130; that is safe because the checkpoint
//! and the slot only ever name changes that are already durable.
//!
//! After a definite error the process stays up while gRPC is enabled, so that orchestrators can
//! read the error from Health (`NOT_SERVING` + `errorDetail`); it exits 1 on SIGTERM/SIGINT or
//! DrainAndStop. With `GRPC_PORT=off` it exits 1 at once.

use std::process::ExitCode;
use std::time::Duration;

use dbmazz::config::Config;
use dbmazz::control::ControlPlane;
use dbmazz::job::JobHandle;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;
use tracing_subscriber::EnvFilter;

/// How long in-flight gRPC calls get to finish once the job stopped.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

fn main() -> ExitCode {
    let filter = EnvFilter::try_from_env("RUST_LOG")
        .or_else(|_| {
            EnvFilter::try_new(std::env::var("LOG_LEVEL").unwrap_or_else(|_| "info".into()))
        })
        .unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();

    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("dbmazz: {e}");
            return ExitCode::from(2);
        }
    };

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("dbmazz: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let job = JobHandle::new(&config.slot_name, &config.tables, config.flush);
        // Set when an operator asks the process to stop (signal, or DrainAndStop after a failure).
        let stop = watch::Sender::new(false);
        if let Err(e) = spawn_signal_handler(job.clone(), stop.clone()) {
            eprintln!("dbmazz: cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
        let plane = match ControlPlane::start(&config, &job, stop.clone()).await {
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
        match dbmazz::daemon::run(config, job).await {
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
                tracing::info!("stop requested: flushing, checkpointing and confirming");
                job.request_drain();
                stop.send_replace(true);
            } else {
                tracing::warn!("second stop signal: exiting now; unconfirmed changes will be resent on restart");
                std::process::exit(130);
            }
        }
    });
    Ok(())
}
