//! Schema evolution (issue 19): renamed tables, column drops, renames and type changes, mid-stream
//! and while dbmazz is stopped, with real PostgreSQL 15, the real binary, and the NDJSON sink or
//! the StarRocks stand-in. The oracle compares per-key row content of source and sink.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::control::{listening, scrape};
use crate::starrocks::{create_both, sink_rows, source_rows};
use crate::support::dbmazz::{wait_until, Job};
use crate::support::grpcurl::Client;
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
            // The name regclass gives can be renamed away before the statement runs: then the
            // round is rolled back to its savepoint and tried again under the new name.
            "DO $$ BEGIN LOOP BEGIN \
               EXECUTE format('INSERT INTO %s (id, v) SELECT g, ''v'' || g FROM generate_series({a}, {b}) g', {oid}::regclass); \
               EXECUTE format('UPDATE %s SET v = v || ''+'' WHERE id %% 7 = {m}', {oid}::regclass); \
               EXIT; \
             EXCEPTION WHEN undefined_table THEN NULL; END; END LOOP; END $$",
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

/// StarRocks' columns of `app.<table>`: name → lower-case COLUMN_TYPE.
fn sr_columns(d: &Double, table: &str) -> std::collections::BTreeMap<String, String> {
    d.query(&format!(
        "SELECT column_name, column_type FROM information_schema.columns \
         WHERE table_schema = 'app' AND table_name = '{table}'"
    ))
    .into_iter()
    .map(|r| {
        (
            r[0].clone().unwrap_or_default(),
            r[1].clone().unwrap_or_default().to_lowercase(),
        )
    })
    .collect()
}

const EVOLVING_PG: &str =
    "CREATE TABLE t (id int PRIMARY KEY, a int, b varchar(10), c text, d text)";
const EVOLVING_SR: &str =
    "CREATE TABLE app.t (id INT NOT NULL, a INT, b VARCHAR(40), c STRING, d STRING) \
                           PRIMARY KEY(id) DISTRIBUTED BY HASH(id)";
/// PostgreSQL with `t` in database `app`, and a stand-in (started with `args`) holding its target.
fn evolving(args: &[&str]) -> (PgCluster, String, Double) {
    let pg = PgCluster::start();
    let url = pg.create_database("app");
    let d = Double::start_with("app", args);
    create_both(&pg, &d, EVOLVING_PG, EVOLVING_SR);
    (pg, url, d)
}

/// A widening of `a` and `b`, a rename of `c`, a drop of `d` and an added `e`.
const EVOLUTION: [&str; 5] = [
    "ALTER TABLE t ALTER COLUMN a TYPE bigint",
    "ALTER TABLE t ALTER COLUMN b TYPE varchar(50)",
    "ALTER TABLE t RENAME COLUMN c TO c2",
    "ALTER TABLE t DROP COLUMN d",
    "ALTER TABLE t ADD COLUMN e int",
];

/// Small transactions on `t(id, a)` until `stop`: new keys and updates of earlier ones.
fn load_ids(pg: &PgCluster, stop: &AtomicBool) -> usize {
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        pg.psql(
            "app",
            &format!(
                "INSERT INTO t (id, a, b) SELECT g, g, 'b' || g FROM generate_series({}, {}) g; \
                 UPDATE t SET a = a + 1000 WHERE id % 5 = {}",
                i * 10 + 1,
                i * 10 + 10,
                i % 5
            ),
        );
        i += 1;
    }
    i
}

fn check_evolved(pg: &PgCluster, d: &Double, drop_policy_kept: bool, log: &dyn Fn() -> String) {
    // Rows that use every new column.
    pg.psql(
        "app",
        "INSERT INTO t (id, a, b, c2, e) VALUES (1000000, 9000000000, repeat('x', 50), 'renamed', 7); \
         UPDATE t SET c2 = 'c' || id, e = id WHERE id % 3 = 0",
    );
    let cols = "a, b, c2, e";
    let mut last = Default::default();
    let converged = (0..600).any(|_| {
        let (src, dst) = (
            source_rows(pg, "t", "id", cols),
            sink_rows(d, "t", "id", cols),
        );
        let same = src == dst;
        if !same {
            last = (
                src.len(),
                dst.len(),
                src.into_iter().zip(dst).find(|(a, b)| a != b),
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        same
    });
    assert!(converged, "source and sink differ: {last:?}\n{}", log());
    let sr = sr_columns(d, "t");
    assert!(sr["a"].starts_with("bigint"), "a widened: {sr:?}");
    assert_eq!(
        sr["b"], "varchar(200)",
        "b widened (4 bytes per character): {sr:?}"
    );
    assert!(
        sr.contains_key("c2") && !sr.contains_key("c"),
        "c renamed: {sr:?}"
    );
    assert_eq!(
        sr.contains_key("d"),
        drop_policy_kept,
        "d kept or dropped: {sr:?}"
    );
    assert!(sr.contains_key("e"), "e added: {sr:?}");
}

#[test]
fn column_changes_under_load_are_propagated_to_starrocks() {
    let (pg, url, d) = evolving(&[]);
    pg.psql(
        "app",
        "INSERT INTO t SELECT g, g, 'b', 'c', 'd' FROM generate_series(-99, 0) g",
    );
    let job = d
        .job(&url, "t")
        .env("GRPC_PORT", "0")
        .env("METRICS_PORT", "0");
    let mut p = job.spawn_streaming();
    let grpc = Client::new(listening(&mut p, "grpc").port());
    let metrics = listening(&mut p, "metrics");
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let loader = s.spawn(|| load_ids(&pg, &stop));
        for alter in EVOLUTION {
            std::thread::sleep(Duration::from_millis(700));
            pg.psql("app", alter);
        }
        std::thread::sleep(Duration::from_millis(700));
        stop.store(true, Ordering::Relaxed);
        assert!(loader.join().unwrap() > 5);
    });
    check_evolved(&pg, &d, true, &|| p.log());
    // Every decision is counted and shown.
    let (_, samples) = scrape(metrics);
    for (kind, n) in [
        ("widen_type", 2.0),
        ("rename_column", 1.0),
        ("drop_column", 1.0),
        ("add_column", 1.0),
    ] {
        let name = format!("dbmazz_schema_changes_total{{kind=\"{kind}\"}}");
        assert_eq!(samples.get(&name), Some(&n), "{name}: {samples:?}");
    }
    let status = grpc.ok("dbmazz.CdcStatusService/GetStatus", "{}");
    let last = &status["schemaChanges"][0];
    assert_eq!(last["table"], "public.t", "{status}");
    assert_eq!(last["kind"], "add_column", "the last change of t: {status}");
    assert!(
        last["detail"]
            .as_str()
            .unwrap()
            .contains("ADD COLUMN `e` INT"),
        "{status}"
    );
    p.terminate();
    assert!(p.wait(MINUTE).success(), "{}", p.log());
    let log = p.log();
    for needle in [
        "MODIFY COLUMN `a` BIGINT",
        "RENAME COLUMN `c` TO `c2`",
        "ADD COLUMN `e` INT",
        "kept in StarRocks",
    ] {
        assert!(log.contains(needle), "the log names {needle:?}: {log}");
    }
}

#[test]
fn column_changes_made_while_stopped_are_applied_at_restart() {
    let (pg, url, d) = evolving(&[]);
    let job = d.job(&url, "t").env("SCHEMA_DROP_COLUMN", "drop");
    let mut p = job.spawn_streaming();
    pg.psql(
        "app",
        "INSERT INTO t SELECT g, g, 'b', 'c', 'd' FROM generate_series(1, 100) g",
    );
    wait_until(MINUTE, "the first rows", || {
        sink_rows(&d, "t", "id", "a").len() == 100
    });
    p.terminate();
    assert!(p.wait(MINUTE).success(), "{}", p.log());
    // While stopped: rows with the old shape, the changes, rows with the new shape.
    pg.psql("app", "UPDATE t SET d = 'before' WHERE id <= 10");
    for alter in EVOLUTION {
        pg.psql("app", alter);
    }
    pg.psql("app", "INSERT INTO t (id, a, b, c2, e) SELECT g, g, 'new', 'new', g FROM generate_series(101, 150) g");
    let mut p = job.spawn_streaming();
    check_evolved(&pg, &d, false, &|| p.log());
    p.terminate();
    assert!(p.wait(MINUTE).success(), "{}", p.log());
    let log = p.log();
    assert!(
        log.contains("changed while dbmazz was stopped"),
        "the drift is reported at start: {log}"
    );
}

/// Starts a StarRocks job on `t`, applies `alter` and a row that needs it, and expects a stop
/// whose message holds each of `needles`; returns the job for a restart.
fn expect_stop(
    pg: &PgCluster,
    d: &Double,
    job: &crate::support::dbmazz::Job,
    alter: &str,
    needles: &[&str],
) {
    let mut p = job.spawn_streaming();
    pg.psql("app", "INSERT INTO t (id, a) VALUES (1, 1)");
    wait_until(MINUTE, "the first row", || {
        sink_rows(d, "t", "id", "a").len() == 1
    });
    pg.psql("app", alter);
    pg.psql("app", "INSERT INTO t (id, a) VALUES (2, 2)");
    let status = p.wait(MINUTE);
    let log = p.log();
    assert!(!status.success(), "the job stops: {log}");
    for n in needles {
        assert!(log.contains(n), "the stop names {n:?}: {log}");
    }
    assert_eq!(
        sink_rows(d, "t", "id", "a").len(),
        1,
        "no row after the change was written"
    );
}

#[test]
fn stop_policies_stop_before_any_row_of_the_new_shape_and_name_the_statement() {
    let (pg, url, d) = evolving(&[]);
    // A narrowing under the default SCHEMA_TYPE_CHANGE=stop, then recreate_column.
    let job = d.job(&url, "t");
    expect_stop(
        &pg,
        &d,
        &job,
        "ALTER TABLE t ALTER COLUMN b TYPE varchar(5)",
        &[
            "SCHEMA_TYPE_CHANGE=stop",
            "MODIFY COLUMN `b` VARCHAR(20)",
            "DROP COLUMN `b`",
        ],
    );
    let job = job.env("SCHEMA_TYPE_CHANGE", "recreate_column");
    let mut p = job.spawn_streaming();
    wait_until(MINUTE, "the second row", || {
        sink_rows(&d, "t", "id", "a").len() == 2
    });
    assert_eq!(sr_columns(&d, "t")["b"], "varchar(20)");
    pg.psql("app", "DELETE FROM t");
    wait_until(MINUTE, "the deletes", || {
        sink_rows(&d, "t", "id", "a").is_empty()
    });
    p.terminate();
    assert!(p.wait(MINUTE).success(), "{}", p.log());

    // A drop under SCHEMA_DROP_COLUMN=stop.
    let job = job.env("SCHEMA_DROP_COLUMN", "stop");
    expect_stop(
        &pg,
        &d,
        &job,
        "ALTER TABLE t DROP COLUMN d",
        &["SCHEMA_DROP_COLUMN=stop", "DROP COLUMN `d`"],
    );
}

#[test]
fn a_rename_on_a_starrocks_without_rename_column_stops_with_the_statement() {
    let (pg, url, d) = evolving(&["--sr-version", "3.3.1"]);
    let job = d.job(&url, "t");
    expect_stop(
        &pg,
        &d,
        &job,
        "ALTER TABLE t RENAME COLUMN c TO c2",
        &["no RENAME COLUMN", "RENAME COLUMN `c` TO `c2`"],
    );
}

#[test]
fn a_primary_key_change_stops_with_instructions() {
    let (pg, url, d) = evolving(&[]);
    let job = d.job(&url, "t");
    expect_stop(
        &pg,
        &d,
        &job,
        "ALTER TABLE t DROP CONSTRAINT t_pkey, ADD PRIMARY KEY (id, a)",
        &["primary key of table public.t changed", "(id) to (id, a)"],
    );
}

#[test]
fn a_pattern_picks_up_a_table_created_while_streaming_with_a_transaction_open_on_it() {
    let pg = PgCluster::start();
    let url = pg.create_database("app");
    let d = Double::start("app");
    pg.psql(
        "app",
        "CREATE TABLE a (id int PRIMARY KEY, v text); CREATE TABLE other (id int PRIMARY KEY)",
    );
    let job = d
        .job(&url, "public.a*, public.b*")
        .env("CREATE_TABLES", "true")
        .env("TABLES_DISCOVERY_INTERVAL_MS", "300");
    let mut p = job.spawn_streaming();
    pg.psql(
        "app",
        "INSERT INTO a VALUES (1, 'one'); INSERT INTO other VALUES (1)",
    );
    wait_until(MINUTE, "a's first row", || {
        sink_rows(&d, "a", "id", "v").len() == 1
    });
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        // Table a keeps changing through the addition.
        let loader = s.spawn(|| {
            let mut i = 2;
            while !stop.load(Ordering::Relaxed) {
                pg.psql("app", &format!("INSERT INTO a VALUES ({i}, 'v{i}'); UPDATE a SET v = v || '+' WHERE id = {}", i / 2));
                i += 1;
            }
        });
        pg.psql(
            "app",
            "CREATE TABLE b (id int PRIMARY KEY, v text); INSERT INTO b VALUES (1, 'before')",
        );
        let mut session = pg.session("app");
        session.send("BEGIN; INSERT INTO b VALUES (2, 'open during the addition');");
        // The job notices b, restarts, and waits for this transaction to take b's snapshot.
        std::thread::sleep(Duration::from_secs(3));
        session.send("COMMIT;");
        session.close();
        pg.psql(
            "app",
            "INSERT INTO b VALUES (3, 'after'); UPDATE b SET v = 'updated' WHERE id = 1",
        );
        std::thread::sleep(Duration::from_secs(1));
        stop.store(true, Ordering::Relaxed);
        loader.join().unwrap();
    });
    crate::starrocks::wait_converged(&pg, &d, "a", "id", "v");
    crate::starrocks::wait_converged(&pg, &d, "b", "id", "v");
    assert_eq!(sink_rows(&d, "b", "id", "v").len(), 3);
    assert!(
        d.try_query("SELECT id FROM app.other").is_err(),
        "other matches no pattern"
    );
    p.terminate();
    assert!(p.wait(MINUTE).success(), "{}", p.log());
    let log = p.log();
    assert!(log.contains("new tables match TABLES"), "{log}");
}

#[test]
fn a_narrowing_and_a_key_change_made_while_stopped_stop_at_restart() {
    let (pg, url, d) = evolving(&[]);
    let job = d.job(&url, "t");
    let mut p = job.spawn_streaming();
    pg.psql("app", "INSERT INTO t (id, a, b) VALUES (1, 1, 'x')");
    wait_until(MINUTE, "the first row", || {
        sink_rows(&d, "t", "id", "a").len() == 1
    });
    p.terminate();
    assert!(p.wait(MINUTE).success(), "{}", p.log());

    // While stopped: a narrowing, and a row that needs it.
    pg.psql(
        "app",
        "ALTER TABLE t ALTER COLUMN b TYPE varchar(5); INSERT INTO t (id, a, b) VALUES (2, 2, 'y')",
    );
    let mut p = job.spawn();
    let status = p.wait(MINUTE);
    let log = p.log();
    assert!(!status.success(), "{log}");
    assert!(
        log.contains("SCHEMA_TYPE_CHANGE=stop") && log.contains("MODIFY COLUMN `b` VARCHAR(20)"),
        "{log}"
    );
    assert_eq!(sink_rows(&d, "t", "id", "a").len(), 1, "row 2 not written");
    let job = job.env("SCHEMA_TYPE_CHANGE", "recreate_column");
    let mut p = job.spawn_streaming();
    wait_until(MINUTE, "row 2", || sink_rows(&d, "t", "id", "b").len() == 2);
    // As documented: the recreated column is NULL for rows not changed since, until they are.
    let rows = sink_rows(&d, "t", "id", "b");
    assert_eq!(rows["1"], vec![None], "{rows:?}");
    assert_eq!(rows["2"], vec![Some("y".to_owned())], "{rows:?}");
    pg.psql("app", "UPDATE t SET b = b WHERE id = 1");
    crate::starrocks::wait_converged(&pg, &d, "t", "id", "a, b");
    p.terminate();
    assert!(p.wait(MINUTE).success(), "{}", p.log());

    // While stopped: a primary-key change, and a row keyed the new way.
    pg.psql("app", "ALTER TABLE t DROP CONSTRAINT t_pkey, ADD PRIMARY KEY (id, a); INSERT INTO t (id, a, b) VALUES (2, 3, 'z')");
    let mut p = job.spawn();
    let status = p.wait(MINUTE);
    let log = p.log();
    assert!(!status.success(), "{log}");
    assert!(
        log.contains("primary key of table public.t changed"),
        "{log}"
    );
    assert_eq!(
        sink_rows(&d, "t", "id", "a").len(),
        2,
        "no row keyed the new way"
    );
}
