//! The heartbeat: a small transactional logical message written into the source database every
//! `HEARTBEAT_INTERVAL_MS`, so that the slot keeps moving when the published tables are idle.
//!
//! Why it is needed: a slot only advances as far as dbmazz confirms, and dbmazz confirms the end
//! of what it received. When the published tables are quiet but the cluster writes WAL (another
//! database, unpublished tables, vacuum), pgoutput sends no transaction for it, and the slot's
//! `restart_lsn` can only move at the transactions it decodes. A message written with
//! `pg_logical_emit_message(true, …)` is decoded like a change of this database: it arrives
//! (with `messages 'true'` in START_REPLICATION) as Begin, Message, Commit; the pipeline confirms
//! that commit without writing anything to the sink, so the slot advances past the unrelated WAL.
//!
//! ```text
//! heartbeat task ──SELECT pg_logical_emit_message(true, 'dbmazz_heartbeat', '<µs>')──▶ PostgreSQL
//!                                                                              │ WAL
//! WAL reader ◀──────────────── Begin · Message · Commit ─────────────── slot ◀─┘
//!   └─ dbmazz_heartbeat_lag_seconds = arrival − <µs> (both dbmazz's clock: no skew)
//! ```
//!
//! The heartbeat runs on its own SQL connection with the same bounds as the bookkeeping sessions.
//! It never fails the job: a failure is logged (at most once per [`WARN_EVERY`]) and the next tick
//! tries again.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::metrics::{now_unix_us, Metrics};
use crate::postgres::conninfo::PgConnInfo;
use crate::postgres::tls::{connect_sql_bounded, flatten_chain};

/// The prefix of dbmazz's heartbeat messages.
pub const PREFIX: &str = "dbmazz_heartbeat";

/// Longest one heartbeat (connect + statement) may take.
const TIMEOUT: Duration = Duration::from_secs(10);
/// The shortest gap between two warnings about failed heartbeats.
pub const WARN_EVERY: Duration = Duration::from_secs(600);

/// The statement: a transactional message whose content is the emit time in µs since the Unix
/// epoch, as decimal text.
const EMIT: &str = "SELECT pg_logical_emit_message(true, 'dbmazz_heartbeat', $1::text)::text";

/// The emit time a heartbeat message carries (µs since the Unix epoch), or `None` when the
/// content is not one of ours.
pub fn parse_payload(content: &[u8]) -> Option<i64> {
    std::str::from_utf8(content).ok()?.trim().parse().ok()
}

/// Emits a heartbeat every `interval` until `stop` turns true.
pub async fn run(
    database: PgConnInfo,
    statement_timeout: Option<Duration>,
    interval: Duration,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) {
    let mut client: Option<tokio_postgres::Client> = None;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_warning: Option<tokio::time::Instant> = None;
    let mut failing = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let bound = statement_timeout.map_or(TIMEOUT, |t| t.min(TIMEOUT));
        let emitted = tokio::time::timeout(TIMEOUT, emit(&database, bound, &mut client)).await;
        let error = match emitted {
            Ok(Ok(())) => {
                metrics
                    .heartbeats_sent_total
                    .fetch_add(1, Ordering::Relaxed);
                if failing {
                    tracing::info!("heartbeat: emitting again");
                    failing = false;
                }
                continue;
            }
            Ok(Err(e)) => flatten_chain(e.as_ref()),
            Err(_) => format!("no answer within {} s", TIMEOUT.as_secs()),
        };
        client = None;
        failing = true;
        metrics
            .heartbeat_failures_total
            .fetch_add(1, Ordering::Relaxed);
        if last_warning.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
            last_warning = Some(tokio::time::Instant::now());
            tracing::warn!(
                error = %error,
                "heartbeat: pg_logical_emit_message failed; replication goes on, but an idle \
                 database does not move the slot. The role needs EXECUTE on \
                 pg_logical_emit_message (granted to PUBLIC by default); set \
                 HEARTBEAT_INTERVAL_MS=0 to turn the heartbeat off (next warning in 10 min at \
                 the earliest)"
            );
        } else {
            tracing::debug!(error = %error, "heartbeat failed");
        }
    }
}

async fn emit(
    database: &PgConnInfo,
    statement_timeout: Duration,
    client: &mut Option<tokio_postgres::Client>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    if client.as_ref().is_none_or(|c| c.is_closed()) {
        *client = Some(connect_sql_bounded(database, Some(statement_timeout)).await?);
    }
    let Some(c) = client.as_ref() else {
        return Err("no connection".into());
    };
    c.query_one(EMIT, &[&now_unix_us().to_string()]).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_decimal_timestamp_is_a_payload() {
        assert_eq!(
            parse_payload(b"1764680000000000"),
            Some(1_764_680_000_000_000)
        );
        assert_eq!(parse_payload(b"hello"), None);
        assert_eq!(parse_payload(&[0xff, 0xfe]), None);
    }
}
