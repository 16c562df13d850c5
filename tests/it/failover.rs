//! Failover with and without failover slots (PostgreSQL 17+): a primary and a streaming standby,
//! a writer that never stops, the standby promoted and the old primary stopped under load. With
//! `SLOT_FAILOVER=true` dbmazz, pointed at the new primary, continues from its checkpoint and the
//! sink ends equal to the new primary per key; without it, the slot is gone and dbmazz stops
//! loudly, saying what happened and what to set, instead of creating a fresh slot.
//!
//! dbmazz is given both hosts (`postgres://…@primary,standby/app?target_session_attrs=read-write`)
//! and keeps running through the failover: it reconnects to whichever host is now the primary.

use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value as Json;

use crate::support::dbmazz::{final_state, wait_until, Job, Proc};
use crate::support::pg::{client_bin, pinned_bin, server_major, PgCluster, PgOptions};

const MINUTE: Duration = Duration::from_secs(60);
const ACCOUNTS: i64 = 50;

/// A primary (PostgreSQL 17+: the suite's server when it is that new, else the pinned 17) set up
/// for slot synchronization, its standby, and the database `app` with table `accounts`.
fn primary_and_standby() -> (PgCluster, PgCluster) {
    let bin = (server_major() < 17).then(|| pinned_bin("17"));
    let mut primary = PgCluster::start_with(PgOptions {
        bin,
        extra_conf: vec!["synchronized_standby_slots = 'sb'".into()],
        ..PgOptions::default()
    });
    primary.create_database("app");
    primary.psql(
        "app",
        &format!(
            "CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL, note text);
             INSERT INTO accounts SELECT g, 0, 'start' FROM generate_series(1, {ACCOUNTS}) g;"
        ),
    );
    let standby = primary.start_standby(
        "sb",
        &["hot_standby_feedback = on", "sync_replication_slots = on"],
    );
    (primary, standby)
}

/// Keeps moving money between accounts through whichever port `port` names, one transaction per
/// psql call, ignoring failures (the primary goes away under it); returns the stop switch.
fn writer(port: Arc<AtomicU16>) -> (Arc<AtomicBool>, std::thread::JoinHandle<u64>) {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let handle = std::thread::spawn(move || {
        let mut n: i64 = 0;
        let mut committed = 0;
        while !flag.load(Ordering::Relaxed) {
            n += 1;
            let (from, to) = (n % ACCOUNTS + 1, (n * 7) % ACCOUNTS + 1);
            let sql = format!(
                "BEGIN; UPDATE accounts SET balance = balance - 1, note = 'tx {n}' WHERE id = {from}; \
                 UPDATE accounts SET balance = balance + 1 WHERE id = {to}; \
                 INSERT INTO accounts VALUES ({id}, {n}, 'new') ON CONFLICT (id) DO UPDATE SET balance = accounts.balance + 1; \
                 COMMIT;",
                id = ACCOUNTS + n % 500 + 1
            );
            let ok = std::process::Command::new(client_bin().join("psql"))
                .args(["-X", "-q", "-h", "127.0.0.1", "-U", "postgres", "-d", "app"])
                .arg("-p")
                .arg(port.load(Ordering::Relaxed).to_string())
                .args(["-c", &sql])
                .env("PGCONNECT_TIMEOUT", "2")
                .output()
                .is_ok_and(|o| o.status.success());
            if ok {
                committed += 1;
            } else {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        committed
    });
    (stop, handle)
}

fn number(value: &Json) -> i64 {
    value
        .as_i64()
        .or_else(|| value.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or_else(|| panic!("not a number: {value}"))
}

/// The sink's accounts as (id, balance, note), from the NDJSON lines.
fn sink_accounts(job: &Job) -> Vec<(i64, i64, String)> {
    let mut rows: Vec<(i64, i64, String)> = final_state(&job.lines())
        .into_iter()
        .filter(|((table, _), _)| table == "public.accounts")
        .map(|(_, row)| {
            (
                number(&row["id"]),
                number(&row["balance"]),
                row["note"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    rows.sort();
    rows
}

fn source_accounts(pg: &PgCluster) -> Vec<(i64, i64, String)> {
    let text = pg.psql(
        "app",
        "SELECT id || '|' || balance || '|' || note FROM accounts ORDER BY id",
    );
    text.lines()
        .map(|line| {
            let mut parts = line.splitn(3, '|');
            (
                parts.next().unwrap().parse().unwrap(),
                parts.next().unwrap().parse().unwrap(),
                parts.next().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Runs the scenario up to the failover: dbmazz, given both hosts, streaming from the primary
/// under load, the standby promoted, the old primary stopped. Returns the new primary, the job,
/// its still running dbmazz, and the writer (now aimed at the new primary) with its stop switch.
fn fail_over(
    failover_slot: bool,
) -> (
    PgCluster,
    Job,
    Proc,
    Arc<AtomicBool>,
    std::thread::JoinHandle<u64>,
) {
    let (mut primary, standby) = primary_and_standby();
    let url = format!(
        "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/app?sslmode=disable\
         &target_session_attrs=read-write",
        primary.port, standby.port
    );
    let job = Job::new(&url, "accounts")
        .env(
            "SLOT_FAILOVER",
            if failover_slot { "true" } else { "false" },
        )
        .env("FLUSH_INTERVAL_MS", "200");
    let p = job.spawn_streaming();
    if failover_slot {
        assert_eq!(
            primary.psql(
                "app",
                "SELECT failover FROM pg_replication_slots WHERE slot_name = 'dbmazz_slot'"
            ),
            "t"
        );
    }
    let port = Arc::new(AtomicU16::new(primary.port));
    let (stop, handle) = writer(port.clone());
    std::thread::sleep(Duration::from_secs(3));
    if failover_slot {
        wait_until(MINUTE, "the slot synchronized to the standby", || {
            standby.psql(
                "app",
                "SELECT count(*) FROM pg_replication_slots \
                 WHERE slot_name = 'dbmazz_slot' AND synced AND NOT temporary",
            ) == "1"
        });
    }
    let before = sink_accounts(&job).len();
    assert!(
        before >= ACCOUNTS as usize,
        "only {before} rows before the failover"
    );

    // 1. promote the standby; 2. stop the old primary; the writer follows the new primary.
    standby.promote();
    // The standby inherited synchronized_standby_slots = 'sb' with the copied configuration;
    // no standby follows the new primary, so its walsenders would wait for 'sb' forever.
    standby.psql(
        "postgres",
        "ALTER SYSTEM SET synchronized_standby_slots = ''",
    );
    standby.psql("postgres", "SELECT pg_reload_conf()");
    port.store(standby.port, Ordering::Relaxed);
    primary.stop_immediate();
    (standby, job, p, stop, handle)
}

#[test]
fn with_failover_slots_dbmazz_continues_on_the_promoted_standby_without_loss() {
    let (new_primary, job, mut p, stop, handle) = fail_over(true);
    // 3. dbmazz, given both hosts, continues on the new primary from its checkpoint. A row
    // only the new primary has must reach the sink.
    new_primary.psql(
        "app",
        "INSERT INTO accounts VALUES (100000, 0, 'written on the new primary')",
    );
    std::thread::sleep(Duration::from_secs(5));
    stop.store(true, Ordering::Relaxed);
    let committed = handle.join().unwrap();
    assert!(committed > 20, "only {committed} transactions committed");

    // 4. after quiescing, the sink equals the new primary per key.
    let expected = source_accounts(&new_primary);
    let deadline = std::time::Instant::now() + MINUTE;
    while sink_accounts(&job) != expected {
        if std::time::Instant::now() > deadline {
            let sink = sink_accounts(&job);
            let differ: Vec<String> = expected
                .iter()
                .filter(|row| !sink.contains(row))
                .take(10)
                .map(|row| {
                    let got = sink.iter().find(|s| s.0 == row.0);
                    format!("source {row:?} sink {got:?}")
                })
                .collect();
            panic!(
                "the sink differs from the new primary ({} vs {} rows): {differ:#?}\n{}",
                sink.len(),
                expected.len(),
                p.log()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    p.terminate();
    assert!(p.wait(MINUTE).success(), "{}", p.log());
    let log = p.log();
    assert_eq!(
        log.matches("created replication slot").count(),
        1,
        "the slot is created once, on the first primary:\n{log}"
    );
    let sink = sink_accounts(&job);
    assert!(sink.iter().any(|row| row.0 == 100000), "{sink:?}");
    assert_eq!(sink, expected);
}

#[test]
fn without_failover_slots_the_lost_slot_is_a_loud_error_never_a_new_slot() {
    let (new_primary, _job, mut p, stop, handle) = fail_over(false);
    stop.store(true, Ordering::Relaxed);
    handle.join().unwrap();
    // dbmazz reconnects to the new primary by itself, finds no slot there, and stops.
    let status = p.wait(2 * MINUTE);
    let log = p.log();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains("replication slot dbmazz_slot does not exist, but dbmazz_checkpoints holds"),
        "{log}"
    );
    assert!(log.contains("set SLOT_FAILOVER=true"), "{log}");
    assert_eq!(
        new_primary.psql(
            "app",
            "SELECT count(*) FROM pg_replication_slots WHERE slot_type = 'logical'"
        ),
        "0",
        "no slot may be created on the new primary"
    );
}

#[test]
fn slot_failover_turns_failover_on_for_an_existing_slot_and_is_refused_before_17() {
    let old_bin = if server_major() < 17 {
        None
    } else {
        Some(pinned_bin("16"))
    };
    let old = PgCluster::start_with(PgOptions {
        bin: old_bin,
        ..PgOptions::default()
    });
    let url = old.create_database("app");
    old.psql("app", "CREATE TABLE t (id int PRIMARY KEY)");
    let refused = Job::new(&url, "t").env("SLOT_FAILOVER", "true");
    let mut p = refused.spawn();
    let status = p.wait(MINUTE);
    let log = p.log();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains("SLOT_FAILOVER=true needs PostgreSQL 17 or later"),
        "{log}"
    );
    assert_eq!(
        old.psql("app", "SELECT count(*) FROM pg_replication_slots"),
        "0"
    );

    let bin = (server_major() < 17).then(|| pinned_bin("17"));
    let pg = PgCluster::start_with(PgOptions {
        bin,
        ..PgOptions::default()
    });
    let url = pg.create_database("app");
    pg.psql("app", "CREATE TABLE t (id int PRIMARY KEY)");
    let job = Job::new(&url, "t");
    let mut p = job.spawn_streaming();
    p.terminate();
    assert!(p.wait(MINUTE).success(), "{}", p.log());
    let failover = || {
        pg.psql(
            "app",
            "SELECT failover FROM pg_replication_slots WHERE slot_name = 'dbmazz_slot'",
        )
    };
    assert_eq!(failover(), "f");
    let job = job.env("SLOT_FAILOVER", "true");
    let mut p = job.spawn_streaming();
    assert_eq!(failover(), "t");
    pg.psql("app", "INSERT INTO t VALUES (1)");
    wait_until(MINUTE, "the insert", || {
        job.lines().iter().any(|l| l["op"] == "insert")
    });
    p.terminate();
    assert!(p.wait(MINUTE).success(), "{}", p.log());
    let log = p.log();
    assert!(
        log.contains("turned on failover for the replication slot"),
        "{log}"
    );
    // No standby is configured here: dbmazz says what a synchronized standby would need.
    assert!(log.contains("synchronized_standby_slots is empty"), "{log}");
}

#[test]
fn a_standby_is_refused_at_start_with_what_to_do() {
    let bin = (server_major() < 16).then(|| pinned_bin("16"));
    let mut primary = PgCluster::start_with(PgOptions {
        bin,
        ..PgOptions::default()
    });
    primary.create_database("app");
    primary.psql("app", "CREATE TABLE t (id int PRIMARY KEY)");
    let standby = primary.start_standby("sb", &[]);
    let job = Job::new(&standby.url("app"), "t");
    let mut p = job.spawn();
    let status = p.wait(MINUTE);
    let log = p.log();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("the server is a standby"), "{log}");
    assert!(log.contains("point DATABASE_URL at the primary"), "{log}");
    assert_eq!(
        primary.psql(
            "app",
            "SELECT count(*) FROM pg_replication_slots WHERE slot_type = 'logical'"
        ),
        "0"
    );
}

#[test]
fn read_write_skips_a_read_only_host_listed_first() {
    let mut primary = PgCluster::start();
    primary.create_database("app");
    primary.psql("app", "CREATE TABLE t (id int PRIMARY KEY)");
    let standby = primary.start_standby("sb", &[]);
    let url = |attrs: &str| {
        format!(
            "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/app?sslmode=disable{attrs}",
            standby.port, primary.port
        )
    };
    // Without target_session_attrs the first host that answers is used: the standby, refused.
    let refused = Job::new(&url(""), "t");
    let mut p = refused.spawn();
    let status = p.wait(MINUTE);
    let log = p.log();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("the server is a standby"), "{log}");

    // With read-write the standby is skipped and the primary streams.
    let job = Job::new(&url("&target_session_attrs=read-write"), "t");
    let mut p = job.spawn_streaming();
    primary.psql("app", "INSERT INTO t VALUES (1)");
    wait_until(MINUTE, "the insert", || {
        job.lines().iter().any(|l| l["op"] == "insert")
    });
    p.terminate();
    assert!(p.wait(MINUTE).success(), "{}", p.log());
}
