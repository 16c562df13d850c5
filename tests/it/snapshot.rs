//! The initial snapshot, end to end into the StarRocks double: existing rows first, then
//! streaming, with writers busy during the copy, a `kill -9` in the middle, and tables added
//! later. The oracle compares every key's column values in source and sink.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::support::dbmazz::{wait_until, Job, Proc};
use crate::support::grpcurl::Client;
use crate::support::pg::PgCluster;
use crate::support::starrocks::Double;

const MINUTE: Duration = Duration::from_secs(60);

type Rows = BTreeMap<String, Option<String>>;

fn sr_job(pg_url: &str, tables: &str, d: &Double) -> Job {
    d.job(pg_url, tables)
        .env("FLUSH_SIZE", "20000")
        .env("FLUSH_INTERVAL_MS", "200")
        .env("SNAPSHOT_CHUNK_ROWS", "20000")
        .env("CREATE_TABLES", "true")
}

/// key → value text, from PostgreSQL (`key_expr` and `val_expr` are SQL over the table).
fn source(pg: &PgCluster, table: &str, key_expr: &str, val_expr: &str) -> Rows {
    pg.psql(
        "app",
        &format!("SELECT {key_expr} || E'\\t' || coalesce({val_expr}, '<null>') FROM {table}"),
    )
    .lines()
    .filter(|l| !l.is_empty())
    .map(|l| {
        let (k, v) = l.split_once('\t').unwrap();
        (k.to_owned(), (v != "<null>").then(|| v.to_owned()))
    })
    .collect()
}

/// The same from the sink, live rows only (empty while the table does not exist yet).
fn sink(d: &Double, table: &str, key_expr: &str, val_col: &str) -> Rows {
    d.try_query(&format!(
        "SELECT {key_expr}, {val_col}, dbmazz_is_deleted FROM app.{table}"
    ))
    .unwrap_or_default()
    .into_iter()
    .filter(|r| !matches!(r[2].as_deref(), Some("1" | "true")))
    .map(|r| (r[0].clone().unwrap(), r[1].clone()))
    .collect()
}

fn assert_converges(pg: &PgCluster, d: &Double, table: &str, key: (&str, &str), val: (&str, &str)) {
    let deadline = std::time::Instant::now() + Duration::from_secs(240);
    loop {
        let src = source(pg, table, key.0, val.0);
        let dst = sink(d, table, key.1, val.1);
        if src == dst {
            return;
        }
        if std::time::Instant::now() > deadline {
            let missing: Vec<_> = src
                .keys()
                .filter(|k| !dst.contains_key(*k))
                .take(5)
                .collect();
            let extra: Vec<_> = dst
                .keys()
                .filter(|k| !src.contains_key(*k))
                .take(5)
                .collect();
            let differ: Vec<_> = src
                .iter()
                .filter(|(k, v)| dst.get(*k).is_some_and(|d| d != *v))
                .take(5)
                .collect();
            panic!(
                "{table}: {} source rows, {} sink rows; missing {missing:?}, extra {extra:?}, differ {differ:?}",
                src.len(),
                dst.len()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Stops the writer thread when the test's scope ends, also by a failed assertion (the scope
/// would otherwise wait for the writer forever).
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// The port the daemon's gRPC server logged.
fn grpc_port(p: &mut Proc) -> u16 {
    p.wait_for_log("grpc listening", MINUTE);
    let log = p.log();
    let line = log.lines().find(|l| l.contains("grpc listening")).unwrap();
    let addr = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("addr="))
        .unwrap_or_else(|| panic!("no addr= in {line:?}"));
    addr.rsplit(':').next().unwrap().parse().unwrap()
}

/// `(rows done, rows estimated, chunks done, chunks)` of `table` in Health's stage detail
/// (`public.t 40000/~150000 rows (26%), 2/8 chunks, …`).
fn table_progress(detail: &str, table: &str) -> (u64, u64, u64, u64) {
    let needle = format!("public.{table} ");
    let rest = detail
        .split_once(&needle)
        .unwrap_or_else(|| panic!("no {needle:?} in {detail:?}"))
        .1;
    let num = |s: &str| -> u64 {
        s.parse()
            .unwrap_or_else(|_| panic!("{s:?} is not a number in {detail:?}"))
    };
    let (rows, rest) = rest.split_once(" rows").unwrap();
    let (done, estimated) = rows.split_once("/~").unwrap();
    let chunks = rest.split(", ").nth(1).unwrap();
    let (chunks_done, chunks) = chunks.trim_end_matches(" chunks").split_once('/').unwrap();
    (
        num(done),
        num(estimated),
        num(chunks_done),
        num(chunks.split(' ').next().unwrap()),
    )
}

fn setup_mixed(pg: &PgCluster, rows_per_table: i64) {
    pg.psql(
        "app",
        &format!(
            "CREATE TABLE t_int (id int PRIMARY KEY, v text);
             CREATE TABLE t_text (code text PRIMARY KEY, v text);
             CREATE TABLE t_comp (a bigint, b text, v text, PRIMARY KEY (a, b));
             INSERT INTO t_int SELECT g, md5(g::text) FROM generate_series(1, {n}) g;
             INSERT INTO t_text SELECT 'k' || g, md5(g::text) FROM generate_series(1, {n}) g;
             INSERT INTO t_comp SELECT g / 10, 'b' || (g % 10), md5(g::text) FROM generate_series(1, {n}) g;
             ANALYZE t_int; ANALYZE t_text; ANALYZE t_comp;",
            n = rows_per_table
        ),
    );
}

fn check_mixed(pg: &PgCluster, d: &Double) {
    assert_converges(pg, d, "t_int", ("id::text", "id"), ("v", "v"));
    assert_converges(pg, d, "t_text", ("code", "code"), ("v", "v"));
    assert_converges(
        pg,
        d,
        "t_comp",
        ("a::text || '/' || b", "concat(a, '/', b)"),
        ("v", "v"),
    );
}

/// Writes to all three tables in small transactions until `stop`.
fn writer(pg: &PgCluster, stop: &AtomicBool, n: i64) {
    let mut i: i64 = 0;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let k = (i * 7919) % n + 1;
        pg.psql(
            "app",
            &format!(
                "BEGIN;
                 UPDATE t_int SET v = 'u{i}' WHERE id = {k};
                 UPDATE t_text SET v = 'u{i}' WHERE code = 'k{k}';
                 UPDATE t_comp SET v = 'u{i}' WHERE a = {a} AND b = 'b{b}';
                 DELETE FROM t_int WHERE id = {d};
                 INSERT INTO t_int VALUES ({new}, 'new{i}') ON CONFLICT (id) DO UPDATE SET v = 'again{i}';
                 INSERT INTO t_text VALUES ('new{i}', 'n') ON CONFLICT DO NOTHING;
                 COMMIT;",
                a = k / 10,
                b = k % 10,
                d = (k * 13) % n + 1,
                new = n + i,
            ),
        );
    }
}

#[test]
fn million_rows_copied_while_writers_run_converge_per_key() {
    let pg = PgCluster::start();
    let url = pg.create_database("app");
    let d = Double::start("app");
    let n = 333_334;
    setup_mixed(&pg, n);
    let job = sr_job(&url, "t_int,t_text,t_comp", &d).env("GRPC_PORT", "0");
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let _stop_writer = StopOnDrop(&stop);
        let w = s.spawn(|| writer(&pg, &stop, n));
        let mut p = job.spawn();
        let grpc = Client::new(grpc_port(&mut p));
        p.wait_for_log("snapshot exported", MINUTE);
        // Health shows per-table progress while copying: rows done against the estimate,
        // and chunks.
        let deadline = std::time::Instant::now() + Duration::from_secs(300);
        let detail = loop {
            let health = grpc.ok("dbmazz.HealthService/Check", "{}");
            let detail = health["stageDetail"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            if health["stage"] == "STAGE_SNAPSHOT"
                && ["t_comp", "t_int", "t_text"]
                    .iter()
                    .any(|t| table_progress(&detail, t).2 > 0)
            {
                break detail;
            }
            assert!(
                !p.log().contains("snapshot complete"),
                "the copy ended before Health showed a finished chunk: {health}"
            );
            assert!(
                std::time::Instant::now() < deadline,
                "no progress: {detail:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        for table in ["t_comp", "t_int", "t_text"] {
            let (done, estimated, chunks_done, chunks) = table_progress(&detail, table);
            // ANALYZE ran on n rows (its estimate samples pages, so it may be a little off).
            assert!(
                (n as u64 * 9 / 10..n as u64 * 11 / 10).contains(&estimated),
                "{table}: estimate {estimated} in {detail:?}"
            );
            let planned: u64 = pg
                .psql(
                    "app",
                    &format!("SELECT count(*) FROM dbmazz_snapshot_chunks WHERE table_name = 'public.{table}'"),
                )
                .parse()
                .unwrap();
            assert_eq!(chunks, planned, "{table} in {detail:?}");
            assert!(chunks_done < chunks, "{table} in {detail:?}");
            // Rows of the chunks recorded done (read after Health, so at least as many).
            let recorded: u64 = pg
                .psql(
                    "app",
                    &format!("SELECT coalesce(sum(rows), 0) FROM dbmazz_snapshot_chunks WHERE table_name = 'public.{table}' AND done"),
                )
                .parse()
                .unwrap();
            assert!(
                done <= recorded,
                "{table}: {recorded} rows recorded, {detail:?}"
            );
            assert!(chunks_done == 0 || done > 0, "{table} in {detail:?}");
        }
        p.wait_for_log("snapshot complete", Duration::from_secs(300));
        // Keep writing a little after the copy, then quiesce.
        std::thread::sleep(Duration::from_secs(1));
        stop.store(true, Ordering::Relaxed);
        w.join().unwrap();
        check_mixed(&pg, &d);
        let log = p.log();
        assert!(log.contains("snapshot planned"), "{log}");
        p.terminate();
        assert!(p.wait(MINUTE).success(), "{}", p.log());
    });
}

#[test]
fn kill_9_mid_snapshot_resumes_at_the_first_unfinished_chunk() {
    let pg = PgCluster::start();
    let url = pg.create_database("app");
    let d = Double::start("app");
    let n = 150_000;
    setup_mixed(&pg, n);
    let job = sr_job(&url, "t_int,t_text,t_comp", &d)
        .env("SNAPSHOT_WORKERS", "1")
        .env("FLUSH_SIZE", "5000");
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let _stop_writer = StopOnDrop(&stop);
        let w = s.spawn(|| writer(&pg, &stop, n));
        let mut p = job.spawn();
        p.wait_for_log("snapshot exported", MINUTE);
        // Kill once some chunks are durable but not all.
        let deadline = std::time::Instant::now() + MINUTE;
        loop {
            let done = pg.psql(
                "app",
                "SELECT count(*) FILTER (WHERE done) FROM dbmazz_snapshot_chunks",
            );
            if done.parse::<i64>().unwrap_or(0) >= 3 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no chunk finished: {}",
                p.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        p.kill9();
        let (done, total): (i64, i64) = {
            let r = pg.psql("app", "SELECT count(*) FILTER (WHERE done) || ' ' || count(*) FROM dbmazz_snapshot_chunks");
            let (a, b) = r.split_once(' ').unwrap();
            (a.parse().unwrap(), b.parse().unwrap())
        };
        assert!(
            done < total,
            "the kill came too late to test resumption ({done}/{total})"
        );
        let mut p = job.spawn();
        p.wait_for_log("resuming snapshot: skipping finished chunks", MINUTE);
        p.wait_for_log("snapshot complete", Duration::from_secs(300));
        stop.store(true, Ordering::Relaxed);
        w.join().unwrap();
        check_mixed(&pg, &d);
        p.terminate();
        assert!(p.wait(MINUTE).success(), "{}", p.log());
    });
}

#[test]
fn postgres_crash_mid_snapshot_resumes_and_converges() {
    let mut pg = PgCluster::start();
    let url = pg.create_database("app");
    let d = Double::start("app");
    setup_mixed(&pg, 150_000);
    let job = sr_job(&url, "t_int,t_text,t_comp", &d)
        .env("SNAPSHOT_WORKERS", "1")
        .env("FLUSH_SIZE", "5000");
    let mut p = job.spawn();
    p.wait_for_log("snapshot exported", MINUTE);
    wait_until(MINUTE, "a durable chunk", || {
        pg.psql(
            "app",
            "SELECT count(*) FILTER (WHERE done) FROM dbmazz_snapshot_chunks",
        )
        .parse::<i64>()
        .unwrap_or(0)
            >= 1
    });
    pg.stop_immediate();
    p.wait_for_log("restarting from the checkpoint", MINUTE);
    pg.restart();
    p.wait_for_log("snapshot complete", Duration::from_secs(300));
    pg.psql(
        "app",
        "UPDATE t_int SET v = 'after' WHERE id % 1000 = 0; DELETE FROM t_text WHERE code LIKE 'k1%';",
    );
    check_mixed(&pg, &d);
    p.terminate();
    assert!(p.wait(MINUTE).success(), "{}", p.log());
}

#[test]
fn unchanged_toast_update_that_overtakes_its_chunk_keeps_the_toasted_value() {
    // An update that leaves a TOASTed column alone is a partial row. If it is streamed before
    // the snapshot chunk holding its key is loaded, the copied row (older by version) loses to
    // it; the update must therefore carry the full value, or the column stays empty.
    let pg = PgCluster::start();
    let url = pg.create_database("app");
    let d = Double::start("app");
    pg.psql(
        "app",
        "CREATE TABLE a_filler (id int PRIMARY KEY, v text);
         INSERT INTO a_filler SELECT g, 'f' || g FROM generate_series(1, 400000) g;
         CREATE TABLE z_docs (id int PRIMARY KEY, title text, body text);
         ALTER TABLE z_docs ALTER COLUMN body SET STORAGE EXTERNAL;
         INSERT INTO z_docs SELECT g, 't', repeat(md5(g::text), 200) FROM generate_series(1, 50) g;",
    );
    // One worker copies a_filler's 20 chunks first; z_docs waits behind them.
    let job = sr_job(&url, "a_filler,z_docs", &d)
        .env("SNAPSHOT_WORKERS", "1")
        .env("RUST_LOG", "info,dbmazz::postgres::toast_backfill=debug");
    let mut p = job.spawn_streaming();
    pg.psql("app", "UPDATE z_docs SET title = 'changed' WHERE id <= 25");
    p.wait_for_log("snapshot complete", 4 * MINUTE);
    assert_converges(&pg, &d, "z_docs", ("id::text", "id"), ("title", "title"));
    assert_converges(&pg, &d, "z_docs", ("id::text", "id"), ("body", "body"));
    let log = p.log();
    assert!(
        log.contains("filled unchanged TOAST values during the snapshot"),
        "the update reached the sink while z_docs was still being copied: {log}"
    );
    p.terminate();
    assert!(p.wait(MINUTE).success());
}

#[test]
fn empty_toasted_and_later_added_tables_are_copied() {
    let pg = PgCluster::start();
    let url = pg.create_database("app");
    let d = Double::start("app");
    pg.psql(
        "app",
        "CREATE TABLE empty (id int PRIMARY KEY, v text);
         CREATE TABLE toasty (id int PRIMARY KEY, v text);
         ALTER TABLE toasty ALTER COLUMN v SET STORAGE EXTERNAL;
         INSERT INTO toasty SELECT g, repeat(md5(g::text), 200) FROM generate_series(1, 300) g;
         CREATE TABLE later (id int PRIMARY KEY, v text);
         INSERT INTO later SELECT g, 'l' || g FROM generate_series(1, 1000) g;",
    );
    let job = sr_job(&url, "empty,toasty", &d);
    let mut p = job.spawn();
    p.wait_for_log("snapshot complete", MINUTE);
    assert_converges(&pg, &d, "toasty", ("id::text", "id"), ("v", "v"));
    assert_converges(&pg, &d, "empty", ("id::text", "id"), ("v", "v"));
    // An unchanged-TOAST update after the copy keeps the copied value.
    pg.psql(
        "app",
        "UPDATE toasty SET id = id WHERE id <= 10; INSERT INTO empty VALUES (1, 'x')",
    );
    assert_converges(&pg, &d, "toasty", ("id::text", "id"), ("v", "v"));
    assert_converges(&pg, &d, "empty", ("id::text", "id"), ("v", "v"));
    p.terminate();
    assert!(p.wait(MINUTE).success());

    // Restart with one more table, with a transaction open on it while dbmazz adds it.
    let mut open_tx = std::process::Command::new(crate::support::pg::client_bin().join("psql"))
        .args([
            "-X",
            "-q",
            "-h",
            "127.0.0.1",
            "-p",
            &pg.port.to_string(),
            "-U",
            "postgres",
            "-d",
            "app",
        ])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let stdin = open_tx.stdin.as_mut().unwrap();
        writeln!(
            stdin,
            "BEGIN; INSERT INTO later VALUES (5000, 'open'); SELECT pg_sleep(3); COMMIT;"
        )
        .unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    let job2 = d
        .job(&url, "empty,toasty,later")
        .env("CREATE_TABLES", "true");
    let mut p = job2.spawn();
    p.wait_for_log("snapshot complete", MINUTE);
    drop(open_tx.stdin.take());
    assert!(open_tx.wait().unwrap().success());
    pg.psql("app", "UPDATE later SET v = 'changed' WHERE id = 1");
    assert_converges(&pg, &d, "later", ("id::text", "id"), ("v", "v"));
    let log = p.log();
    assert!(
        !log.contains("table=public.toasty chunks"),
        "finished tables are not copied again: {log}"
    );
    p.terminate();
    assert!(p.wait(MINUTE).success());
}

#[test]
fn copied_rows_equal_streamed_rows_whether_loaded_as_csv_or_json() {
    let pg = PgCluster::start();
    let url = pg.create_database("app");
    let d = Double::start("app");
    let columns = "id, ok, f, n, ts, t, d, by, u, s, vc";
    pg.psql(
        "app",
        &format!(
            "CREATE TABLE copied (id int PRIMARY KEY, ok bool, f float8, n numeric(20,4),
                 ts timestamptz, t timestamp, d date, by bytea, u uuid, s text, vc varchar(40));
             CREATE TABLE streamed (LIKE copied INCLUDING ALL);
             INSERT INTO copied ({columns}) VALUES
               (1, true, 1.5, 12.5, '2024-01-02 03:04:05.25+02', '2024-01-02 03:04:05', '2024-02-29',
                '\\x0aff', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'plain \"quoted\" text', ''),
               (2, false, 'NaN', 'NaN', 'infinity', '-infinity', 'infinity', '\\x', NULL, '', NULL),
               (3, NULL, '-Infinity', -0.0001, '1999-12-31 23:59:59+00', NULL, '-infinity', NULL, NULL,
                E'tab\\there, newline\\n, cr\\r, backslash \\\\', E'\\\\N'),
               (4, true, 1e300, 0, NULL, NULL, NULL, '\\x00', NULL, E'\\\\N', 'é 😀'),
               (5, true, 2, 3, NULL, NULL, NULL, NULL, NULL, E'form\\ffeed and bell \\x07', 'x');
             INSERT INTO copied (id, ok, f, n, ts, s, vc)
               SELECT g, g % 2 = 0, g / 7.0, g * 1.25, '2026-01-01'::timestamptz + g * interval '1 s',
                      'row ' || g, md5(g::text)
                 FROM generate_series(10, 3000) g;"
        ),
    );
    let job = sr_job(&url, "copied,streamed", &d);
    let mut p = job.spawn();
    p.wait_for_log("snapshot complete", MINUTE);
    pg.psql(
        "app",
        &format!("INSERT INTO streamed ({columns}) SELECT {columns} FROM copied"),
    );
    let sink_rows = |table: &str| {
        d.try_query(&format!(
            "SELECT {columns}, dbmazz_is_deleted, dbmazz_op_type FROM app.{table} ORDER BY id"
        ))
        .unwrap_or_default()
    };
    let deadline = std::time::Instant::now() + 2 * MINUTE;
    while sink_rows("streamed").len() < 2996 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(300));
    }
    let (copied, streamed) = (sink_rows("copied"), sink_rows("streamed"));
    assert_eq!(copied.len(), 2996);
    for (c, s) in copied.iter().zip(&streamed) {
        assert_eq!(c, s, "the copied row equals the streamed one");
    }
    assert_eq!(copied.len(), streamed.len());
    assert_converges(
        &pg,
        &d,
        "copied",
        ("id::text", "id"),
        ("upper(encode(convert_to(s, 'UTF8'), 'hex'))", "hex(s)"),
    );
    assert_converges(&pg, &d, "copied", ("id::text", "id"), ("vc", "vc"));
    let by_format = &d.stats()["rows_by_format"];
    assert!(
        by_format["csv"].as_u64().unwrap_or(0) >= 2993,
        "rows without escapes are loaded as CSV: {by_format}"
    );
    assert!(
        by_format["json"].as_u64().unwrap_or(0) >= 2996 + 3,
        "streamed rows and the three rows with escapes are JSON: {by_format}"
    );
    p.terminate();
    assert!(p.wait(MINUTE).success());
}
