//! The WAL-growth guard through the real binary: the heartbeat keeps the slot moving while the
//! published tables are idle and another database is busy, and a slot held back by a stalled
//! sink is warned about, reported as at risk, and, once PostgreSQL invalidates it, fails the job
//! loud without anything being recreated.

use std::time::{Duration, Instant};

use serde_json::{json, Value as Json};

use crate::control::listening;
use crate::starrocks::{create_both, wait_converged};
use crate::support::dbmazz::{wait_until, Job};
use crate::support::grpcurl::Client;
use crate::support::pg::{server_major, PgCluster, PgOptions};
use crate::support::starrocks::Double;

const WAIT: Duration = Duration::from_secs(90);
const MB: i64 = 1 << 20;

/// `pg_current_wal_lsn() - restart_lsn` of dbmazz's slot, read straight from PostgreSQL.
fn retained(pg: &PgCluster) -> i64 {
    slot_distance(pg, "restart_lsn")
}

/// `pg_current_wal_lsn() - <column>` of dbmazz's slot.
fn slot_distance(pg: &PgCluster, column: &str) -> i64 {
    pg.psql(
        "postgres",
        &format!(
            "SELECT (pg_current_wal_lsn() - {column})::int8 FROM pg_replication_slots \
              WHERE slot_name = 'dbmazz_slot'"
        ),
    )
    .parse()
    .unwrap()
}

fn wal_position(pg: &PgCluster) -> i64 {
    pg.psql("postgres", "SELECT (pg_current_wal_lsn() - '0/0')::int8")
        .parse()
        .unwrap()
}

/// What [`idle_table_busy_neighbour`] measured.
struct Neighbour {
    /// WAL written by the busy database, in bytes.
    written: i64,
    /// Retained WAL from `restart_lsn`, sampled every 2 s after the writes: (s, bytes).
    retained: Vec<(u64, i64)>,
    /// `pg_current_wal_lsn() - confirmed_flush_lsn` at the same moments, in bytes.
    unconfirmed: Vec<i64>,
}

/// Streams an idle table of `app` with the given heartbeat while database `busy` writes about
/// 200 MB of WAL, then watches the slot for `settle`. Autovacuum is off so that nothing but the
/// heartbeat writes WAL once the busy database stops (autovacuum's WAL would move the slot by
/// chance, at its own schedule).
fn idle_table_busy_neighbour(heartbeat_ms: &str, settle: Duration) -> Neighbour {
    let pg = PgCluster::start_with(PgOptions {
        extra_conf: vec!["autovacuum = off".into()],
        ..Default::default()
    });
    let url = pg.create_database("app");
    pg.create_database("busy");
    pg.psql(
        "app",
        "CREATE TABLE t (id int PRIMARY KEY, n bigint); INSERT INTO t VALUES (1, 0)",
    );
    pg.psql("busy", "CREATE TABLE b (x text)");
    let job = Job::new(&url, "t")
        .env("HEARTBEAT_INTERVAL_MS", heartbeat_ms)
        .env("STATUS_INTERVAL_MS", "500")
        .env("SLOT_CHECK_INTERVAL_MS", "500");
    let mut p = job.spawn_streaming();
    wait_until(WAIT, "the snapshot row", || job.lines().len() == 1);

    let start = wal_position(&pg);
    for _ in 0..4 {
        // ~1 KB rows, below the TOAST threshold: stored (and logged) uncompressed.
        pg.psql(
            "busy",
            "INSERT INTO b SELECT repeat(md5(g::text), 30) FROM generate_series(1, 50000) g",
        );
    }
    let written = wal_position(&pg) - start;
    let ended = Instant::now();
    let mut samples = Vec::new();
    let mut confirmed_lag = Vec::new();
    while ended.elapsed() < settle {
        samples.push((ended.elapsed().as_secs(), retained(&pg)));
        confirmed_lag.push(slot_distance(&pg, "confirmed_flush_lsn"));
        std::thread::sleep(Duration::from_secs(2));
    }
    samples.push((ended.elapsed().as_secs(), retained(&pg)));
    eprintln!(
        "heartbeat {heartbeat_ms} ms: wrote {} MB of WAL in database busy; retained from \
         restart_lsn (s after the writes, MB): {:?}; behind confirmed_flush_lsn (MB): {:?}",
        written / MB,
        samples
            .iter()
            .map(|(s, r)| (*s, r / MB))
            .collect::<Vec<_>>(),
        confirmed_lag.iter().map(|b| b / MB).collect::<Vec<_>>()
    );
    // Nothing of the busy database, and no heartbeat, reached the sink.
    assert_eq!(job.lines().len(), 1, "{}", p.log());
    if heartbeat_ms != "0" {
        assert!(
            !p.log()
                .contains("heartbeat: pg_logical_emit_message failed"),
            "{}",
            p.log()
        );
    }
    p.terminate();
    assert!(p.wait(WAIT).success(), "{}", p.log());
    Neighbour {
        written,
        retained: samples,
        unconfirmed: confirmed_lag,
    }
}

#[test]
fn any_role_may_emit_the_heartbeat_by_default() {
    let pg = PgCluster::start();
    pg.psql("postgres", "CREATE ROLE plain LOGIN");
    // No ACL on the function means PostgreSQL's default: EXECUTE for PUBLIC.
    assert_eq!(
        pg.psql(
            "postgres",
            "SELECT bool_and(proacl IS NULL) FROM pg_proc WHERE proname = 'pg_logical_emit_message'"
        ),
        "t"
    );
    assert_eq!(
        pg.psql(
            "postgres",
            "SET ROLE plain; SELECT pg_logical_emit_message(true, 'dbmazz_heartbeat', '1') IS NOT NULL"
        ),
        "SET\nt"
    );
}

#[test]
fn heartbeat_keeps_the_slot_moving_while_another_database_writes_200_mb() {
    let n = idle_table_busy_neighbour("1000", Duration::from_secs(45));
    assert!(n.written >= 190 * MB, "only {} MB written", n.written / MB);
    let (at, last) = *n.retained.last().unwrap();
    assert!(
        last < 64 * MB,
        "the slot still retains {} MB {at} s after the writes: {:?}",
        last / MB,
        n.retained
    );
}

/// Without the heartbeat, keepalives still let dbmazz confirm the neighbour's WAL (the idle
/// marker), but PostgreSQL moves `restart_lsn` only when it decodes a running-transactions
/// record after that, which needs WAL of some kind: on a server that goes quiet the slot keeps
/// the whole 200 MB.
#[test]
fn without_heartbeat_a_quiet_server_keeps_the_neighbours_wal_in_the_slot() {
    let n = idle_table_busy_neighbour("0", Duration::from_secs(60));
    assert!(n.written >= 190 * MB, "only {} MB written", n.written / MB);
    let unconfirmed = *n.unconfirmed.last().unwrap();
    assert!(
        unconfirmed <= MB,
        "confirmed_flush_lsn is {unconfirmed} bytes behind"
    );
    let (at, last) = *n.retained.last().unwrap();
    if server_major() == 14 {
        // PostgreSQL 14 was seen to release the neighbour's WAL within about 16 s even without
        // a heartbeat (a little WAL keeps being written on the idle 14 server, and restart_lsn
        // follows it); 15 to 18 keep all of it. Which 14 behaviour does this is not pinned down,
        // so on 14 only the confirmation above is checked; the heartbeat is harmless either way.
        let _ = (at, last);
        return;
    }
    assert!(
        last >= n.written - 8 * MB,
        "the slot released WAL without a heartbeat ({} MB left {at} s after the writes): {:?}",
        last / MB,
        n.retained
    );
}

fn health(grpc: &Client) -> Json {
    grpc.ok("dbmazz.HealthService/Check", "{}")
}

/// Moves the WAL `segments` segments (16 MB each) ahead in database `busy`.
fn switch_segments(pg: &PgCluster, segments: u32) {
    pg.psql(
        "busy",
        &format!(
            "DO $$ BEGIN FOR i IN 1..{segments} LOOP INSERT INTO b VALUES (i); \
             PERFORM pg_switch_wal(); END LOOP; END $$"
        ),
    );
}

#[test]
fn a_stalled_sink_warns_then_degrades_then_fails_loud_when_the_slot_is_invalidated() {
    let pg = PgCluster::start_with(PgOptions {
        extra_conf: vec![
            "max_slot_wal_keep_size = 160MB".into(),
            "min_wal_size = 32MB".into(),
            "max_wal_size = 64MB".into(),
            "checkpoint_timeout = 1h".into(),
        ],
        ..Default::default()
    });
    let url = pg.create_database("app");
    pg.create_database("busy");
    pg.psql("busy", "CREATE TABLE b (x int)");
    let d = Double::start("app");
    create_both(
        &pg,
        &d,
        "CREATE TABLE t (id int PRIMARY KEY, n bigint)",
        "CREATE TABLE app.t (id INT NOT NULL, n BIGINT) PRIMARY KEY(id) DISTRIBUTED BY HASH(id)",
    );
    let job = d
        .job(&url, "t")
        .env("GRPC_PORT", "0")
        .env("FLUSH_INTERVAL_MS", "100")
        .env("SLOT_CHECK_INTERVAL_MS", "300")
        .env("SLOT_RETAINED_WARN_BYTES", &(32 * MB).to_string());
    let mut p = job.spawn();
    let grpc = Client::new(listening(&mut p, "grpc").port());
    p.wait_for_log("streaming changes", WAIT);
    pg.psql("app", "INSERT INTO t VALUES (1, 0)");
    wait_converged(&pg, &d, "t", "id", "n");

    // The sink fails every load from now on: the row below stays in the pipeline, and nothing
    // after it is confirmed.
    d.fault(json!({"kind": "http_5xx", "table": "t"}));
    pg.psql("app", "INSERT INTO t VALUES (2, 0)");
    // Nine segment switches: the slot retains between 128 and 144 MB, past 80 % of the keep
    // size and below it.
    switch_segments(&pg, 9);
    // A poll taken during the switches may already say "at risk" (wal_status = extended); wait
    // for one taken after them.
    let retained_now = |status: &Json| -> i64 {
        status["slotRetainedWalBytes"]
            .as_str()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let mut status = Json::Null;
    wait_until(WAIT, "a slot poll after the switches", || {
        status = grpc.ok("dbmazz.CdcStatusService/GetStatus", "{}");
        retained_now(&status) > 128 * MB
    });
    assert_eq!(status["slotAlarm"], "at_risk", "{status}");
    let h = health(&grpc);
    assert_eq!(h["status"], "SERVING", "{h}");
    assert!(
        h["stageDetail"]
            .as_str()
            .is_some_and(|d| d.contains("slot at risk")),
        "{h}"
    );
    assert!(
        h["errorDetail"]
            .as_str()
            .is_some_and(|e| e.contains("dbmazz_slot") && e.contains("160.0 MiB")),
        "{h}"
    );
    assert_eq!(status["maxSlotWalKeepSizeBytes"], (160 * MB).to_string());
    let log = p.log();
    for threshold in [
        "SLOT_RETAINED_WARN_BYTES (32.0 MiB)",
        "50 % of max_slot_wal_keep_size (80.0 MiB)",
        "80 % of max_slot_wal_keep_size (128.0 MiB)",
    ] {
        assert_eq!(
            log.matches(threshold).count(),
            1,
            "one warning for {threshold}: {log}"
        );
    }

    // Past the keep size, then a checkpoint: PostgreSQL invalidates the slot.
    switch_segments(&pg, 4);
    pg.psql("postgres", "CHECKPOINT");
    wait_until(WAIT, "the job to fail", || {
        grpc.ok("dbmazz.CdcStatusService/GetStatus", "{}")["state"] == "FAILED"
    });
    let h = health(&grpc);
    assert_eq!(h["status"], "NOT_SERVING", "{h}");
    let why = h["errorDetail"].as_str().unwrap_or_default().to_owned();
    eprintln!("invalidated: {why}");
    for part in [
        "replication slot dbmazz_slot was invalidated",
        "wal_status = lost",
        "max_slot_wal_keep_size = 160.0 MiB",
        "SELECT pg_drop_replication_slot('dbmazz_slot')",
        "DELETE FROM dbmazz_checkpoints WHERE slot_name = 'dbmazz_slot'",
        "does not recreate the slot",
    ] {
        assert!(why.contains(part), "{part:?} missing from {h}");
    }
    // Nothing recreated the slot: it is still the invalidated one.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        pg.psql(
            "postgres",
            "SELECT wal_status FROM pg_replication_slots WHERE slot_name = 'dbmazz_slot'"
        ),
        "lost"
    );
    assert_eq!(
        p.log().matches("created replication slot").count(),
        1,
        "{}",
        p.log()
    );
    p.terminate();
    p.wait(WAIT);
}

#[test]
fn a_pause_past_pause_max_shows_in_health_or_resumes_by_itself() {
    let pg = PgCluster::start();
    let url = pg.create_database("app");
    pg.psql("app", "CREATE TABLE t (id int PRIMARY KEY, n bigint)");
    let base = Job::new(&url, "t")
        .env("GRPC_PORT", "0")
        .env("SLOT_CHECK_INTERVAL_MS", "200")
        .env("PAUSE_MAX_MS", "1000");
    let mut p = base.spawn();
    let grpc = Client::new(listening(&mut p, "grpc").port());
    p.wait_for_log("streaming changes", WAIT);
    grpc.ok("dbmazz.CdcControlService/Pause", "{}");
    wait_until(WAIT, "Health to report the long pause", || {
        health(&grpc)["stageDetail"] == "Paused too long"
    });
    let h = health(&grpc);
    assert_eq!(h["status"], "SERVING", "{h}");
    let why = h["errorDetail"].as_str().unwrap_or_default();
    assert!(
        why.contains("PAUSE_MAX_MS=1000")
            && why.contains("the slot retains")
            && why.contains(" of WAL and keeps growing; Resume, or DrainAndStop"),
        "{h}"
    );
    assert!(p.log().contains("the slot retains"), "{}", p.log());
    grpc.ok("dbmazz.CdcControlService/Resume", "{}");
    wait_until(WAIT, "streaming again", || {
        health(&grpc)["stageDetail"] == "Replicating"
    });
    p.terminate();
    assert!(p.wait(WAIT).success(), "{}", p.log());

    let auto = base.env("PAUSE_AUTO_RESUME", "true");
    let mut p = auto.spawn();
    let grpc = Client::new(listening(&mut p, "grpc").port());
    p.wait_for_log("streaming changes", WAIT);
    grpc.ok("dbmazz.CdcControlService/Pause", "{}");
    p.wait_for_log("resuming (PAUSE_AUTO_RESUME=true)", WAIT);
    wait_until(WAIT, "streaming again by itself", || {
        grpc.ok("dbmazz.CdcStatusService/GetStatus", "{}")["state"] == "RUNNING"
    });
    pg.psql("app", "INSERT INTO t VALUES (1, 1)");
    wait_until(WAIT, "the row after the automatic resume", || {
        auto.lines().len() == 1
    });
    p.terminate();
    assert!(p.wait(WAIT).success(), "{}", p.log());
}

#[test]
fn a_failing_heartbeat_warns_once_and_replication_goes_on() {
    let pg = PgCluster::start();
    let _ = pg.create_database("app");
    // PostgreSQL 17 added a `flush` argument, so the overloads differ by major: revoke them all.
    pg.psql(
        "app",
        "CREATE ROLE mover LOGIN REPLICATION; GRANT CREATE ON DATABASE app TO mover; \
         GRANT ALL ON SCHEMA public TO mover; \
         CREATE TABLE t (id int PRIMARY KEY, n bigint); ALTER TABLE t OWNER TO mover; \
         DO $$ DECLARE f regprocedure; BEGIN \
           FOR f IN SELECT oid FROM pg_proc WHERE proname = 'pg_logical_emit_message' LOOP \
             EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', f); \
           END LOOP; END $$",
    );
    let job =
        Job::new(&pg.url_as("mover", "unused", "app"), "t").env("HEARTBEAT_INTERVAL_MS", "200");
    let mut p = job.spawn_streaming();
    p.wait_for_log("heartbeat: pg_logical_emit_message failed", WAIT);
    // Several more heartbeats fail meanwhile; the job streams on.
    std::thread::sleep(Duration::from_secs(2));
    pg.psql("app", "INSERT INTO t VALUES (1, 1)");
    wait_until(WAIT, "the row", || job.lines().len() == 1);
    let log = p.log();
    assert_eq!(
        log.matches("heartbeat: pg_logical_emit_message failed")
            .count(),
        1,
        "{log}"
    );
    assert!(log.contains("permission denied"), "{log}");
    p.terminate();
    assert!(p.wait(WAIT).success(), "{}", p.log());
}
