//! `starrocks-double`: parse flags, start every listener, print the bound ports as one JSON
//! line on stdout, log to stderr, and stop cleanly on SIGTERM or Ctrl-C.

use std::process::ExitCode;

use clap::Parser;
use starrocks_double::Config;

fn main() -> ExitCode {
    let config = Config::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("starrocks-double: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let running = match starrocks_double::start(config).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "cannot start");
                return ExitCode::FAILURE;
            }
        };
        // Install the SIGTERM handler before announcing the ports: a supervisor that reads
        // the ports line and stops the double at once must get a clean exit.
        let signal = wait_for_signal();
        match serde_json::to_string(&running.ports) {
            Ok(line) => println!("{line}"),
            Err(e) => tracing::error!(error = %e, "cannot print the ports"),
        }
        tracing::info!(
            fe = running.ports.fe,
            be = running.ports.be,
            mysql = running.ports.mysql,
            admin = ?running.ports.admin,
            discard = running.double.config.discard,
            "starrocks-double ready"
        );
        signal.await;
        tracing::info!("stopping");
        running.stop().await;
        ExitCode::SUCCESS
    })
}

/// Registers the SIGTERM / Ctrl-C handlers now; the returned future ends at the first one.
fn wait_for_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let term = {
        use tokio::signal::unix::{signal, SignalKind};
        signal(SignalKind::terminate()).ok()
    };
    async move {
        #[cfg(unix)]
        if let Some(mut term) = term {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    }
}
