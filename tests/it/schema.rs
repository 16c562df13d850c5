//! Schema evolution (issue 19): renamed tables, column drops, renames and type changes, mid-stream
//! and while dbmazz is stopped, with real PostgreSQL 15, the real binary, and the NDJSON sink or
//! the StarRocks stand-in. The oracle compares per-key row content of source and sink.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::starrocks::{create_both, sink_rows, source_rows};
use crate::support::dbmazz::{wait_until, Job};
use crate::support::pg::PgCluster;
use crate::support::starrocks::Double;

const MINUTE: Duration = Duration::from_secs(60);

/// The NDJSON change lines (no schema lines) as (op, table, key id).
fn change_ids(job: &Job) -> Vec<(String, String, i64)> {
    job.lines()
        .iter()
        .filter(|l| l["op"] != "schema")
        .map(|l| {
            (
                l["op"].as_str().unwrap().to_owned(),
                format!(
                    "{}.{}",
                    l["schema"].as_str().unwrap(),
                    l["table"].as_str().unwrap()
                ),
                l["columns"]["id"].as_i64().unwrap_or(-1),
            )
        })
        .collect()
}

/// Small transactions against the table with relation OID `oid` (whatever its name is at the
/// time: the load follows renames too), until `stop` is set: inserts of new keys and updates
/// of earlier ones.
fn load(pg: &PgCluster, oid: u32, stop: &AtomicBool) -> usize {
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        let sql = format!(
            "DO $$ BEGIN \
               EXECUTE format('INSERT INTO %s (id, v) SELECT g, ''v'' || g FROM generate_series({a}, {b}) g', {oid}::regclass); \
               EXECUTE format('UPDATE %s SET v = v || ''+'' WHERE id %% 7 = {m}', {oid}::regclass); \
             END $$",
            a = i * 20 + 1,
            b = i * 20 + 20,
            m = i % 7
        );
        pg.psql("app", &sql);
        i += 1;
    }
    i
}

fn oid_of(pg: &PgCluster, table: &str) -> u32 {
    pg.psql("app", &format!("SELECT '{table}'::regclass::oid"))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn a_table_renamed_mid_stream_is_followed_and_loses_nothing() {
    // The reproduction: insert (1), rename b to b2, insert (2), rename back, insert (3).
    let pg = PgCluster::start();
    let url = pg.create_database("app");
    pg.psql("app", "CREATE TABLE b (id int PRIMARY KEY, v text)");
    let job = Job::new(&url, "public.b");
    let mut p = job.spawn_streaming();
    pg.psql("app", "INSERT INTO b VALUES (1, 'one')");
    pg.psql("app", "ALTER TABLE b RENAME TO b2");
    pg.psql("app", "INSERT INTO b2 VALUES (2, 'two')");
    pg.psql(
        "app",
        "CREATE SCHEMA archive; ALTER TABLE b2 SET SCHEMA archive",
    );
    pg.psql("app", "INSERT INTO archive.b2 VALUES (4, 'four')");
    pg.psql(
        "app",
        "ALTER TABLE archive.b2 SET SCHEMA public; ALTER TABLE b2 RENAME TO b",
    );
    pg.psql("app", "INSERT INTO b VALUES (3, 'three')");
    wait_until(MINUTE, "the third insert", || change_ids(&job).len() >= 4);
    p.terminate();
    assert!(p.wait(MINUTE).success(), "{}", p.log());
    let ids = change_ids(&job);
    let expected: Vec<(String, String, i64)> = [1, 2, 4, 3]
        .iter()
        .map(|i| ("insert".to_owned(), "public.b".to_owned(), *i))
        .collect();
    assert_eq!(
        ids, expected,
        "every change, under the table's configured name"
    );
    let log = p.log();
    assert!(
        log.contains("table renamed in PostgreSQL") && log.contains("public.b2"),
        "the rename is logged: {log}"
    );
    assert!(log.contains("archive.b2"), "the move is logged: {log}");
}

#[test]
fn a_renamed_table_under_the_stop_policy_stops_before_its_changes_and_resumes_with_follow() {
    let pg = PgCluster::start();
    let url = pg.create_database("app");
    pg.psql("app", "CREATE TABLE b (id int PRIMARY KEY, v text)");
    let job = Job::new(&url, "public.b").env("SCHEMA_TABLE_RENAME", "stop");
    let mut p = job.spawn_streaming();
    pg.psql("app", "INSERT INTO b VALUES (1, 'one')");
    wait_until(MINUTE, "the first insert", || change_ids(&job).len() == 1);
    pg.psql(
        "app",
        "ALTER TABLE b RENAME TO b2; INSERT INTO b2 VALUES (2, 'two')",
    );
    let status = p.wait(MINUTE);
    assert!(!status.success(), "the job stops");
    let log = p.log();
    assert!(
        log.contains("SCHEMA_TABLE_RENAME=stop") && log.contains("public.b2"),
        "the error names the new name and the policy: {log}"
    );
    assert_eq!(
        change_ids(&job).len(),
        1,
        "nothing of the renamed table was written"
    );
    // Nothing was confirmed past it either: under `follow` the change arrives.
    let job = job.env("SCHEMA_TABLE_RENAME", "follow");
    let mut p = job.spawn_streaming();
    wait_until(MINUTE, "the second insert", || change_ids(&job).len() == 2);
    p.terminate();
    assert!(p.wait(MINUTE).success(), "{}", p.log());
    assert_eq!(change_ids(&job)[1], ("insert".into(), "public.b".into(), 2));
}

#[test]
fn a_table_renamed_and_moved_under_load_loses_nothing_in_starrocks() {
    let pg = PgCluster::start();
    let url = pg.create_database("app");
    let d = Double::start("app");
    create_both(
        &pg,
        &d,
        "CREATE TABLE t (id int PRIMARY KEY, v text); CREATE SCHEMA other",
        "CREATE TABLE app.t (id INT NOT NULL, v STRING) PRIMARY KEY(id) DISTRIBUTED BY HASH(id)",
    );
    let oid = oid_of(&pg, "t");
    let job = d.job(&url, "t");
    let mut p = job.spawn_streaming();
    let stop = AtomicBool::new(false);
    let rounds = std::thread::scope(|s| {
        let loader = s.spawn(|| load(&pg, oid, &stop));
        std::thread::sleep(Duration::from_millis(1500));
        pg.psql("app", "ALTER TABLE t RENAME TO t_renamed");
        std::thread::sleep(Duration::from_millis(1500));
        pg.psql("app", "ALTER TABLE t_renamed SET SCHEMA other");
        std::thread::sleep(Duration::from_millis(1500));
        stop.store(true, Ordering::Relaxed);
        loader.join().unwrap()
    });
    assert!(rounds > 5, "the load ran ({rounds} rounds)");
    // The source is now other.t_renamed; StarRocks keeps the table `t`.
    let mut last = Default::default();
    let converged = (0..600).any(|_| {
        let src = source_rows(&pg, "other.t_renamed", "id", "v");
        let dst = sink_rows(&d, "t", "id", "v");
        let same = src == dst;
        last = (src.len(), dst.len());
        if !same {
            std::thread::sleep(Duration::from_millis(100));
        }
        same
    });
    assert!(
        converged,
        "source and sink rows differ (source, sink counts {last:?})"
    );
    p.terminate();
    assert!(p.wait(MINUTE).success(), "{}", p.log());
}
