//! The WAL-growth guard's eyes: polls `pg_replication_slots` for the job's slot every
//! `SLOT_CHECK_INTERVAL_MS`, and tells everyone else what it saw.
//!
//! ```text
//! PostgreSQL ──poll──▶ WalGuard (postgres::slot_health) ──▶ log: a warning per threshold
//!                                                            crossed, with the time left
//!                                                       ──▶ JobHandle::report_slot ──▶ Health,
//!                                                            GetStatus, /metrics, and the daemon
//!                                                            (which fails the job on an
//!                                                            invalidated slot)
//! ```
//!
//! It runs on its own plain SQL connection, never touches the replication connection, and runs
//! whether or not gRPC or `/metrics` are on (it is the guard, not only a figure). A poll that
//! fails is logged at debug level; the connection is dropped and made again at the next tick. It
//! never fails the job itself: it only reports, and the daemon decides.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::watch;

use crate::config::WalGuardConfig;
use crate::job::JobHandle;
use crate::postgres::conninfo::PgConnInfo;
use crate::postgres::slot_health::{
    self, human_bytes, human_duration, SlotAlarm, SlotView, WalGuard,
};
use crate::postgres::tls::{connect_sql_bounded, flatten_chain};

/// Longest a poll (connect + query) may take.
const POLL_TIMEOUT: Duration = Duration::from_secs(10);

/// Polls until `shutdown` becomes true, reporting each reading to the job.
pub(crate) async fn run(
    database: PgConnInfo,
    guard_config: WalGuardConfig,
    job: JobHandle,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut conn: Option<(tokio_postgres::Client, u32)> = None;
    let mut guard = WalGuard::new(job.slot_name(), guard_config.retained_warn_bytes);
    let clock = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(guard_config.slot_check_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        let polled =
            tokio::time::timeout(POLL_TIMEOUT, poll(&database, &mut conn, job.slot_name())).await;
        let reading = match polled {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                tracing::debug!(error = %flatten_chain(e.as_ref()), "slot monitor: poll failed; retrying");
                conn = None;
                continue;
            }
            Err(_) => {
                tracing::debug!("slot monitor: poll timed out; retrying");
                conn = None;
                continue;
            }
        };
        let m = job.metrics();
        m.server_wal_lsn
            .store(reading.server_wal, Ordering::Relaxed);
        if let Some(lag) = reading.confirmed_lag_bytes {
            m.slot_lag_bytes.store(lag, Ordering::Relaxed);
        }
        let assessment = guard.observe(&reading, clock.elapsed().as_secs_f64());
        let retained = reading.retained_bytes.unwrap_or(0);
        for threshold in &assessment.crossed {
            let left = assessment.time_left.map_or(
                "unknown (no limit, or not growing)".to_owned(),
                human_duration,
            );
            tracing::warn!(
                slot = job.slot_name(),
                retained_bytes = retained,
                retained = %human_bytes(retained),
                wal_status = %reading.wal_status,
                growth_bytes_per_s = assessment.growth_bytes_per_second.unwrap_or(0.0).round(),
                time_left = %left,
                "the replication slot retains more WAL than {}; estimated time before max_slot_wal_keep_size is reached: {left}",
                threshold.describe(),
            );
        }
        let before = job.slot_view().alarm;
        if std::mem::discriminant(&before) != std::mem::discriminant(&assessment.alarm) {
            match &assessment.alarm {
                SlotAlarm::None => {
                    if before != SlotAlarm::None {
                        tracing::info!(slot = job.slot_name(), retained = %human_bytes(retained), "the replication slot is no longer at risk");
                    }
                }
                SlotAlarm::AtRisk(why) => tracing::warn!(slot = job.slot_name(), "{why}"),
                SlotAlarm::Unreserved(why) | SlotAlarm::Invalidated(why) => {
                    tracing::error!(slot = job.slot_name(), "{why}")
                }
            }
        }
        job.report_slot(SlotView {
            polled_unix_us: crate::metrics::now_unix_us(),
            reading,
            growth_bytes_per_second: assessment.growth_bytes_per_second,
            time_left: assessment.time_left,
            alarm: assessment.alarm,
        });
    }
}

async fn poll(
    database: &PgConnInfo,
    conn: &mut Option<(tokio_postgres::Client, u32)>,
    slot: &str,
) -> Result<slot_health::SlotReading, Box<dyn std::error::Error + Send + Sync>> {
    if conn.as_ref().is_none_or(|(c, _)| c.is_closed()) {
        let client = connect_sql_bounded(database, Some(POLL_TIMEOUT)).await?;
        let version = slot_health::server_version_num(&client).await?;
        *conn = Some((client, version));
    }
    let Some((client, version)) = conn.as_ref() else {
        return Err("no connection".into());
    };
    Ok(slot_health::read(client, *version, slot).await?)
}
