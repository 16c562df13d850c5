//! Polls PostgreSQL for the server's WAL position and the slot's lag, for the lag figures of the
//! metrics stream and the Prometheus endpoint.
//!
//! It runs on its own plain SQL connection, never touches the replication connection, and never
//! fails the job: on an error it logs at debug level, drops the connection and tries again at the
//! next tick.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::watch;

use crate::job::JobHandle;
use crate::postgres::conninfo::PgConnInfo;
use crate::postgres::tls::connect_sql;

/// Time between two polls.
const POLL_INTERVAL: Duration = Duration::from_secs(2);
/// Longest a poll (connect + query) may take.
const POLL_TIMEOUT: Duration = Duration::from_secs(10);

/// The server's WAL position and, when the slot exists and has confirmed something, its lag.
const QUERY: &str = "SELECT (pg_current_wal_lsn() - '0/0')::int8, \
     (SELECT (pg_current_wal_lsn() - confirmed_flush_lsn)::int8 \
        FROM pg_replication_slots WHERE slot_name = $1)";

/// Polls until `shutdown` becomes true, storing what it reads in the job's metrics.
pub(crate) async fn run(database: PgConnInfo, job: JobHandle, mut shutdown: watch::Receiver<bool>) {
    let mut client: Option<tokio_postgres::Client> = None;
    let mut tick = tokio::time::interval(POLL_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        let polled =
            tokio::time::timeout(POLL_TIMEOUT, poll(&database, &mut client, job.slot_name())).await;
        match polled {
            Ok(Ok((server_wal, slot_lag))) => {
                let m = job.metrics();
                m.server_wal_lsn.store(server_wal, Ordering::Relaxed);
                if let Some(lag) = slot_lag {
                    m.slot_lag_bytes.store(lag, Ordering::Relaxed);
                }
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "slot monitor: poll failed; retrying");
                client = None;
            }
            Err(_) => {
                tracing::debug!("slot monitor: poll timed out; retrying");
                client = None;
            }
        }
    }
}

async fn poll(
    database: &PgConnInfo,
    client: &mut Option<tokio_postgres::Client>,
    slot: &str,
) -> Result<(u64, Option<u64>), Box<dyn std::error::Error + Send + Sync>> {
    if client.as_ref().is_none_or(|c| c.is_closed()) {
        *client = Some(connect_sql(database).await?);
    }
    let Some(c) = client.as_ref() else {
        return Err("no connection".into());
    };
    let row = c.query_one(QUERY, &[&slot]).await?;
    let server_wal: i64 = row.try_get(0)?;
    let slot_lag: Option<i64> = row.try_get(1)?;
    Ok((
        u64::try_from(server_wal).unwrap_or(0),
        slot_lag.map(|l| u64::try_from(l).unwrap_or(0)),
    ))
}
