//! How much WAL the replication slot holds back, and whether PostgreSQL is about to take it away.
//!
//! A logical slot pins every WAL segment from its `restart_lsn` on. When dbmazz falls behind (a
//! stalled sink, a long pause, an idle database next to a busy one) the retained WAL grows until
//! the disk fills or, with `max_slot_wal_keep_size` set, PostgreSQL invalidates the slot at a
//! checkpoint. After that the changes between the last confirmed LSN and the invalidation are
//! gone and the only way back is a fresh copy. This module is the pure part of the guard that
//! watches for it:
//!
//! ```text
//!  pg_replication_slots + pg_settings ──read()──▶ SlotReading ──WalGuard::observe──▶ Assessment
//!   (one query, built per server version)                      thresholds crossed (warn once),
//!                                                              growth rate, time left,
//!                                                              alarm: none | at risk |
//!                                                              unreserved | invalidated
//! ```
//!
//! The slot monitor (control plane) polls and logs; the job's Health reports the alarm; the
//! daemon fails the job on an invalidated slot. Nothing here recreates a slot.

use std::time::Duration;

/// How the slot stands, from the job's point of view.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum SlotAlarm {
    /// Nothing to report (or not polled yet).
    #[default]
    None,
    /// Degraded but working: `wal_status = extended`, or past 80 % of
    /// `max_slot_wal_keep_size`. Health stays SERVING and says why.
    AtRisk(String),
    /// `wal_status = unreserved`: the next checkpoint invalidates the slot unless it catches
    /// up. Health turns NOT_SERVING.
    Unreserved(String),
    /// `wal_status = lost` or an `invalidation_reason`: the job fails with this message.
    Invalidated(String),
}

/// The last poll of the slot and what it means; what Health, GetStatus and `/metrics` show.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SlotView {
    /// When it was polled, µs since the Unix epoch (0: never).
    pub polled_unix_us: i64,
    /// What was read.
    pub reading: SlotReading,
    /// Smoothed growth of the retained WAL.
    pub growth_bytes_per_second: Option<f64>,
    /// Estimated time until `max_slot_wal_keep_size` is reached.
    pub time_left: Option<Duration>,
    /// The classification.
    pub alarm: SlotAlarm,
}

/// One poll of the slot and of the settings that bound it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SlotReading {
    /// `pg_current_wal_lsn()` as a byte position.
    pub server_wal: u64,
    /// Whether the slot exists.
    pub exists: bool,
    /// `wal_status`: `reserved`, `extended`, `unreserved` or `lost` (empty when unknown).
    pub wal_status: String,
    /// `safe_wal_size`: bytes that can still be written before the slot is in danger (`None`
    /// when `max_slot_wal_keep_size` is -1, or the slot is lost).
    pub safe_wal_size: Option<i64>,
    /// `pg_current_wal_lsn() - restart_lsn`: WAL the slot keeps on disk (`None` once the slot
    /// has no restart LSN, i.e. after an invalidation).
    pub retained_bytes: Option<u64>,
    /// `pg_current_wal_lsn() - confirmed_flush_lsn`.
    pub confirmed_lag_bytes: Option<u64>,
    /// Whether a walsender holds the slot.
    pub active: bool,
    /// `inactive_since` in µs since the Unix epoch (PostgreSQL 17 and later).
    pub inactive_since_unix_us: Option<i64>,
    /// `invalidation_reason` (PostgreSQL 17 and later).
    pub invalidation_reason: Option<String>,
    /// `max_slot_wal_keep_size` in bytes; `None` when it is -1 (no limit).
    pub max_slot_wal_keep_size: Option<u64>,
}

/// The first server version with `pg_replication_slots.inactive_since` and
/// `invalidation_reason`.
const PG17: u32 = 170_000;

/// The poll query for a server of `server_version_num` (13 and later: `wal_status` and
/// `safe_wal_size` exist from 13 on). `$1` is the slot name. One row, whether or not the slot
/// exists.
pub fn query(server_version_num: u32) -> String {
    let (inactive_since, reason) = if server_version_num >= PG17 {
        (
            "(extract(epoch FROM s.inactive_since) * 1000000)::int8",
            "s.invalidation_reason::text",
        )
    } else {
        ("NULL::int8", "NULL::text")
    };
    format!(
        "SELECT (pg_current_wal_lsn() - '0/0')::int8, \
                (SELECT CASE WHEN setting::int8 < 0 THEN NULL \
                        ELSE setting::int8 * CASE unit WHEN 'kB' THEN 1024 WHEN 'MB' THEN 1048576 \
                                                       WHEN 'GB' THEN 1073741824 ELSE 1 END END \
                   FROM pg_settings WHERE name = 'max_slot_wal_keep_size'), \
                s.slot_name IS NOT NULL, coalesce(s.wal_status, ''), s.safe_wal_size::int8, \
                (pg_current_wal_lsn() - s.restart_lsn)::int8, \
                (pg_current_wal_lsn() - s.confirmed_flush_lsn)::int8, \
                coalesce(s.active, false), {inactive_since}, {reason} \
           FROM (SELECT $1::text AS name) q \
           LEFT JOIN pg_replication_slots s ON s.slot_name = q.name"
    )
}

/// Reads the slot `slot` with the query for `server_version_num`.
pub async fn read(
    client: &tokio_postgres::Client,
    server_version_num: u32,
    slot: &str,
) -> Result<SlotReading, tokio_postgres::Error> {
    let row = client
        .query_one(&query(server_version_num), &[&slot])
        .await?;
    let bytes = |v: Option<i64>| v.map(|v| u64::try_from(v).unwrap_or(0));
    Ok(SlotReading {
        server_wal: bytes(row.try_get(0)?).unwrap_or(0),
        max_slot_wal_keep_size: bytes(row.try_get(1)?),
        exists: row.try_get(2)?,
        wal_status: row.try_get(3)?,
        safe_wal_size: row.try_get(4)?,
        retained_bytes: bytes(row.try_get(5)?),
        confirmed_lag_bytes: bytes(row.try_get(6)?),
        active: row.try_get(7)?,
        inactive_since_unix_us: row.try_get(8)?,
        invalidation_reason: row.try_get(9)?,
    })
}

/// `server_version_num` of the server behind `client`.
pub async fn server_version_num(
    client: &tokio_postgres::Client,
) -> Result<u32, tokio_postgres::Error> {
    let row = client
        .query_one("SELECT current_setting('server_version_num')::int4", &[])
        .await?;
    let v: i32 = row.try_get(0)?;
    Ok(u32::try_from(v).unwrap_or(0))
}

/// A retained-WAL level worth one warning per crossing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Threshold {
    /// `SLOT_RETAINED_WARN_BYTES`.
    Configured(u64),
    /// Half of `max_slot_wal_keep_size`.
    HalfOfKeep(u64),
    /// 80 % of `max_slot_wal_keep_size`.
    EightyPercentOfKeep(u64),
}

impl Threshold {
    /// The level in bytes.
    pub fn bytes(self) -> u64 {
        match self {
            Threshold::Configured(b)
            | Threshold::HalfOfKeep(b)
            | Threshold::EightyPercentOfKeep(b) => b,
        }
    }

    /// What the level is, in words.
    pub fn describe(self) -> String {
        match self {
            Threshold::Configured(b) => format!("SLOT_RETAINED_WARN_BYTES ({})", human_bytes(b)),
            Threshold::HalfOfKeep(b) => {
                format!("50 % of max_slot_wal_keep_size ({})", human_bytes(b))
            }
            Threshold::EightyPercentOfKeep(b) => {
                format!("80 % of max_slot_wal_keep_size ({})", human_bytes(b))
            }
        }
    }
}

/// What one poll means.
#[derive(Clone, Debug, PartialEq)]
pub struct Assessment {
    /// Thresholds the retained WAL crossed since the last poll (each warned about once, until
    /// the retained WAL falls back below 90 % of it).
    pub crossed: Vec<Threshold>,
    /// How fast the retained WAL grows, smoothed over the polls (negative: it shrinks).
    pub growth_bytes_per_second: Option<f64>,
    /// At that growth, the time until `max_slot_wal_keep_size` is reached (`None` without a
    /// limit or without growth).
    pub time_left: Option<Duration>,
    /// The state Health reports, and the daemon acts on.
    pub alarm: SlotAlarm,
}

/// Follows successive [`SlotReading`]s of one slot: warns once per threshold crossing,
/// estimates the growth and the time left, and classifies the slot.
#[derive(Debug)]
pub struct WalGuard {
    slot: String,
    warn_bytes: u64,
    /// Thresholds already warned about (by level), until re-armed.
    warned: Vec<u64>,
    /// The previous poll: seconds on a monotonic clock and retained bytes.
    last: Option<(f64, u64)>,
    /// Smoothed growth rate.
    rate: Option<f64>,
    /// The last retained figure seen (an invalidated slot has none any more).
    last_retained: Option<u64>,
}

/// Weight of the newest rate in the smoothed growth.
const RATE_WEIGHT: f64 = 0.5;
/// A threshold warns again only after the retained WAL fell below this share of it.
const REARM_SHARE: f64 = 0.9;

impl WalGuard {
    /// A guard for `slot` with `SLOT_RETAINED_WARN_BYTES` = `warn_bytes` (0: only the
    /// `max_slot_wal_keep_size` thresholds).
    pub fn new(slot: &str, warn_bytes: u64) -> Self {
        WalGuard {
            slot: slot.into(),
            warn_bytes,
            warned: Vec::new(),
            last: None,
            rate: None,
            last_retained: None,
        }
    }

    /// The thresholds in force for a keep size of `keep`.
    fn thresholds(&self, keep: Option<u64>) -> Vec<Threshold> {
        let mut t = Vec::new();
        if self.warn_bytes > 0 {
            t.push(Threshold::Configured(self.warn_bytes));
        }
        if let Some(keep) = keep.filter(|&k| k > 0) {
            t.push(Threshold::HalfOfKeep(keep / 2));
            t.push(Threshold::EightyPercentOfKeep(keep / 10 * 8));
        }
        t
    }

    /// The last retained WAL seen, in bytes.
    pub fn last_retained(&self) -> Option<u64> {
        self.last_retained
    }

    /// Takes the reading made at `now_secs` (a monotonic clock, in seconds).
    pub fn observe(&mut self, r: &SlotReading, now_secs: f64) -> Assessment {
        let mut crossed = Vec::new();
        if let Some(retained) = r.retained_bytes {
            if let Some((t0, r0)) = self.last {
                let dt = now_secs - t0;
                if dt > 0.0 {
                    let fresh = (retained as f64 - r0 as f64) / dt;
                    self.rate = Some(match self.rate {
                        Some(old) => old * (1.0 - RATE_WEIGHT) + fresh * RATE_WEIGHT,
                        None => fresh,
                    });
                }
            }
            self.last = Some((now_secs, retained));
            self.last_retained = Some(retained);
            let thresholds = self.thresholds(r.max_slot_wal_keep_size);
            self.warned
                .retain(|&level| retained as f64 >= level as f64 * REARM_SHARE);
            for t in thresholds {
                if retained >= t.bytes() && !self.warned.contains(&t.bytes()) {
                    self.warned.push(t.bytes());
                    crossed.push(t);
                }
            }
        }
        let time_left = self.time_left(r);
        Assessment {
            crossed,
            growth_bytes_per_second: self.rate,
            time_left,
            alarm: self.alarm(r, time_left),
        }
    }

    /// Bytes left before the keep size is reached, divided by the growth rate.
    fn time_left(&self, r: &SlotReading) -> Option<Duration> {
        let keep = r.max_slot_wal_keep_size?;
        let rate = self.rate.filter(|&g| g > 0.0)?;
        let left = match r.safe_wal_size {
            Some(safe) => safe.max(0) as f64,
            None => keep.saturating_sub(r.retained_bytes?) as f64,
        };
        Some(Duration::from_secs_f64((left / rate).min(1e9)))
    }

    fn alarm(&self, r: &SlotReading, time_left: Option<Duration>) -> SlotAlarm {
        if !r.exists {
            return SlotAlarm::None;
        }
        let slot = &self.slot;
        let retained = self
            .last_retained
            .map_or("an unknown amount".to_owned(), human_bytes);
        let keep = r
            .max_slot_wal_keep_size
            .map_or("-1 (no limit)".to_owned(), human_bytes);
        if r.wal_status == "lost" || r.invalidation_reason.is_some() {
            return SlotAlarm::Invalidated(invalidated_message(
                slot,
                &r.wal_status,
                r.invalidation_reason.as_deref(),
                &retained,
                &keep,
            ));
        }
        let left = time_left.map_or(String::new(), |t| {
            format!(
                "; at the current growth the limit is reached in about {}",
                human_duration(t)
            )
        });
        if r.wal_status == "unreserved" {
            return SlotAlarm::Unreserved(format!(
                "replication slot {slot} retains {retained} of WAL, beyond max_slot_wal_keep_size \
                 = {keep} (wal_status = unreserved): the next checkpoint invalidates it unless \
                 dbmazz confirms past the removed WAL first. Raise max_slot_wal_keep_size now \
                 (ALTER SYSTEM SET max_slot_wal_keep_size = ...; SELECT pg_reload_conf()) or \
                 make the sink catch up"
            ));
        }
        let past_80 = match (r.max_slot_wal_keep_size, r.retained_bytes) {
            (Some(keep), Some(retained)) => keep > 0 && retained >= keep / 10 * 8,
            _ => false,
        };
        if r.wal_status == "extended" || past_80 {
            return SlotAlarm::AtRisk(format!(
                "replication slot {slot} retains {retained} of WAL (wal_status = {}, \
                 max_slot_wal_keep_size = {keep}){left}; dbmazz keeps streaming, but the slot is \
                 invalidated if it reaches the limit: check that the sink keeps up, or raise \
                 max_slot_wal_keep_size",
                r.wal_status
            ));
        }
        SlotAlarm::None
    }
}

/// What happened to an invalidated slot and how to start over: the message of the definite
/// error that ends the job (from the monitor while streaming, or from the setup check).
pub fn invalidated_message(
    slot: &str,
    wal_status: &str,
    invalidation_reason: Option<&str>,
    retained: &str,
    keep: &str,
) -> String {
    let status = if wal_status.is_empty() {
        "unknown"
    } else {
        wal_status
    };
    let reason = invalidation_reason.map_or(String::new(), |why| {
        format!(", invalidation_reason = {why}")
    });
    format!(
        "replication slot {slot} was invalidated by PostgreSQL (wal_status = {status}{reason}; \
         last seen retaining {retained} of WAL, max_slot_wal_keep_size = {keep}): the WAL it \
         still needed was removed, so the changes since the last confirmed LSN can no longer be \
         streamed. dbmazz does not recreate the slot. To start over: SELECT \
         pg_drop_replication_slot('{slot}'); DELETE FROM dbmazz_checkpoints WHERE slot_name = \
         '{slot}'; DELETE FROM dbmazz_snapshot_tables WHERE slot_name = '{slot}'; DELETE FROM \
         dbmazz_snapshot_chunks WHERE slot_name = '{slot}'; then raise max_slot_wal_keep_size \
         (or remove what held dbmazz back) and start dbmazz again: it creates the slot and \
         copies the tables anew"
    )
}

/// `123.4 MiB`.
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// `2 h 5 min`, `3 min 20 s`, `45 s`.
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, s % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: u64 = 1 << 20;

    fn reading(retained: u64, keep: Option<u64>, status: &str) -> SlotReading {
        SlotReading {
            exists: true,
            wal_status: status.into(),
            retained_bytes: Some(retained),
            max_slot_wal_keep_size: keep,
            safe_wal_size: keep.map(|k| k as i64 - retained as i64),
            ..SlotReading::default()
        }
    }

    #[test]
    fn each_threshold_warns_once_per_crossing_and_rearms_below_it() {
        let mut g = WalGuard::new("s", 100 * MB);
        let keep = Some(1000 * MB);
        assert!(g
            .observe(&reading(50 * MB, keep, "reserved"), 0.0)
            .crossed
            .is_empty());
        let a = g.observe(&reading(120 * MB, keep, "reserved"), 10.0);
        assert_eq!(a.crossed, vec![Threshold::Configured(100 * MB)]);
        // Still above: no second warning.
        assert!(g
            .observe(&reading(130 * MB, keep, "reserved"), 20.0)
            .crossed
            .is_empty());
        // Past 50 % and 80 % in one step: both, in order.
        let a = g.observe(&reading(850 * MB, keep, "reserved"), 30.0);
        assert_eq!(
            a.crossed,
            vec![
                Threshold::HalfOfKeep(500 * MB),
                Threshold::EightyPercentOfKeep(800 * MB)
            ]
        );
        // Dipping just under a level does not re-arm it (flapping); falling well below does.
        assert!(g
            .observe(&reading(790 * MB, keep, "reserved"), 40.0)
            .crossed
            .is_empty());
        assert!(g
            .observe(&reading(810 * MB, keep, "reserved"), 50.0)
            .crossed
            .is_empty());
        g.observe(&reading(10 * MB, keep, "reserved"), 60.0);
        let a = g.observe(&reading(120 * MB, keep, "reserved"), 70.0);
        assert_eq!(a.crossed, vec![Threshold::Configured(100 * MB)]);
    }

    #[test]
    fn without_a_keep_size_only_the_configured_threshold_counts() {
        let mut g = WalGuard::new("s", 100 * MB);
        let a = g.observe(&reading(10_000 * MB, None, "extended"), 0.0);
        assert_eq!(a.crossed, vec![Threshold::Configured(100 * MB)]);
        assert_eq!(a.time_left, None);
        let mut off = WalGuard::new("s", 0);
        assert!(off
            .observe(&reading(10_000 * MB, None, "reserved"), 0.0)
            .crossed
            .is_empty());
    }

    #[test]
    fn time_left_follows_the_growth_between_polls() {
        let mut g = WalGuard::new("s", 0);
        let keep = Some(1000 * MB);
        let first = g.observe(&reading(100 * MB, keep, "reserved"), 0.0);
        assert_eq!(first.time_left, None, "no rate from one poll");
        // 10 MB/s for 10 s; 800 MB left → 80 s.
        let a = g.observe(&reading(200 * MB, keep, "reserved"), 10.0);
        let rate = a.growth_bytes_per_second.unwrap();
        assert!((rate - 10.0 * MB as f64).abs() < 1.0, "{rate}");
        assert_eq!(a.time_left.unwrap().as_secs(), 80);
        // Growth halves: the smoothed rate is between the two.
        let a = g.observe(&reading(250 * MB, keep, "reserved"), 20.0);
        let rate = a.growth_bytes_per_second.unwrap() / MB as f64;
        assert!((7.0..8.0).contains(&rate), "{rate}");
        // Shrinking WAL: no estimate.
        g.observe(&reading(10 * MB, keep, "reserved"), 30.0);
        let a = g.observe(&reading(10 * MB, keep, "reserved"), 40.0);
        assert_eq!(a.time_left, None);
    }

    #[test]
    fn extended_or_past_80_percent_is_at_risk_unreserved_and_lost_are_worse() {
        let keep = Some(1000 * MB);
        let mut g = WalGuard::new("orders_slot", 0);
        assert_eq!(
            g.observe(&reading(100 * MB, keep, "reserved"), 0.0).alarm,
            SlotAlarm::None
        );
        assert!(matches!(
            g.observe(&reading(100 * MB, None, "extended"), 1.0).alarm,
            SlotAlarm::AtRisk(_)
        ));
        let SlotAlarm::AtRisk(why) = g.observe(&reading(850 * MB, keep, "reserved"), 2.0).alarm
        else {
            panic!("not at risk")
        };
        assert!(
            why.contains("orders_slot") && why.contains("850.0 MiB"),
            "{why}"
        );
        assert!(matches!(
            g.observe(&reading(1100 * MB, keep, "unreserved"), 3.0)
                .alarm,
            SlotAlarm::Unreserved(_)
        ));
        // After the invalidation the slot has no restart LSN: the message keeps the last figure.
        let lost = SlotReading {
            exists: true,
            wal_status: "lost".into(),
            max_slot_wal_keep_size: keep,
            ..SlotReading::default()
        };
        let SlotAlarm::Invalidated(why) = g.observe(&lost, 4.0).alarm else {
            panic!("not invalidated")
        };
        for part in [
            "orders_slot",
            "1.1 GiB",
            "1000.0 MiB",
            "pg_drop_replication_slot('orders_slot')",
            "dbmazz_checkpoints",
            "dbmazz_snapshot_tables",
            "does not recreate",
        ] {
            assert!(why.contains(part), "{part} missing: {why}");
        }
        // PostgreSQL 17 names the reason.
        let reason = SlotReading {
            exists: true,
            wal_status: "lost".into(),
            invalidation_reason: Some("wal_removed".into()),
            ..SlotReading::default()
        };
        let SlotAlarm::Invalidated(why) = g.observe(&reason, 5.0).alarm else {
            panic!("not invalidated")
        };
        assert!(why.contains("invalidation_reason = wal_removed"), "{why}");
        // A missing slot is the setup check's business (it knows the checkpoint).
        assert_eq!(
            g.observe(&SlotReading::default(), 6.0).alarm,
            SlotAlarm::None
        );
    }

    #[test]
    fn the_query_reads_pg17_columns_only_where_they_exist() {
        assert!(query(170_002).contains("invalidation_reason"));
        assert!(query(170_002).contains("inactive_since"));
        assert!(!query(150_008).contains("invalidation_reason"));
        assert!(!query(160_004).contains("inactive_since"));
    }

    #[test]
    fn figures_read_as_words() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(3 * MB / 2), "1.5 MiB");
        assert_eq!(human_duration(Duration::from_secs(45)), "45 s");
        assert_eq!(human_duration(Duration::from_secs(200)), "3 min 20 s");
        assert_eq!(human_duration(Duration::from_secs(7500)), "2 h 5 min");
    }
}
