//! End to end into StarRocks: real PostgreSQL 15, the real `dbmazz` binary, and
//! `tools/starrocks-double` speaking Stream Load and the MySQL protocol, with its fault switches.
//! The oracle compares per-key row content of source and sink, not row counts.

mod ddl;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;

use crate::support::dbmazz::{wait_until, Job, Proc};
use crate::support::pg::PgCluster;
use crate::support::starrocks::Double;
use crate::support::tls_proxy::TlsProxy;

const MINUTE: Duration = Duration::from_secs(60);

type Rows = BTreeMap<String, Vec<Option<String>>>;

fn sr_job(pg_url: &str, tables: &str, d: &Double) -> Job {
    d.job(pg_url, tables)
}

/// Live (not soft-deleted) rows of a StarRocks table: key → the listed columns as text
/// (empty while a listed column does not exist yet).
pub(crate) fn sink_rows(d: &Double, table: &str, key: &str, cols: &str) -> Rows {
    d.try_query(&format!(
        "SELECT {key}, {cols}, dbmazz_is_deleted FROM app.{table} ORDER BY {key}"
    ))
    .unwrap_or_default()
    .into_iter()
    .filter(|r| !matches!(r.last().unwrap().as_deref(), Some("1" | "true")))
    .map(|mut r| {
        r.pop();
        let k = r.remove(0).unwrap();
        (k, r)
    })
    .collect()
}

/// The same from PostgreSQL (NULL as `None`).
pub(crate) fn source_rows(pg: &PgCluster, table: &str, key: &str, cols: &str) -> Rows {
    let out = pg.psql(
        "app",
        &format!("SELECT json_build_array({key}, {cols})::text FROM {table} ORDER BY {key}"),
    );
    out.lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let v: Vec<serde_json::Value> = serde_json::from_str(l).unwrap();
            let text = |v: &serde_json::Value| match v {
                serde_json::Value::Null => None,
                serde_json::Value::String(s) => Some(s.clone()),
                other => Some(other.to_string()),
            };
            (text(&v[0]).unwrap(), v[1..].iter().map(text).collect())
        })
        .collect()
}

pub(crate) fn wait_converged(pg: &PgCluster, d: &Double, table: &str, key: &str, cols: &str) {
    let mut last = (Rows::new(), Rows::new());
    let converged = (0..600).any(|_| {
        last = (
            source_rows(pg, table, key, cols),
            sink_rows(d, table, key, cols),
        );
        if last.0 == last.1 {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
        false
    });
    assert!(
        converged,
        "table {table} did not converge:\nsource {:?}\nsink   {:?}",
        last.0, last.1
    );
}

pub(crate) fn create_both(pg: &PgCluster, d: &Double, pg_ddl: &str, sr_ddl: &str) {
    pg.psql("app", pg_ddl);
    for stmt in sr_ddl.split(';').filter(|s| !s.trim().is_empty()) {
        d.exec(stmt);
    }
}

#[test]
fn inserts_updates_deletes_and_truncates_on_three_tables_converge() {
    let pg = PgCluster::start();
    let url = pg.create_database("app");
    let d = Double::start("app");
    create_both(
        &pg,
        &d,
        "CREATE TABLE customers (id int PRIMARY KEY, name text);
         CREATE TABLE orders (id bigint PRIMARY KEY, customer_id int, status text);
         CREATE TABLE items (order_id bigint, line int, sku text, PRIMARY KEY (order_id, line));",
        "CREATE TABLE app.customers (id INT NOT NULL, name STRING) PRIMARY KEY(id) DISTRIBUTED BY HASH(id);
         CREATE TABLE app.orders (id BIGINT NOT NULL, customer_id INT, status STRING) PRIMARY KEY(id) DISTRIBUTED BY HASH(id);
         CREATE TABLE app.items (order_id BIGINT NOT NULL, line INT NOT NULL, sku STRING) PRIMARY KEY(order_id, line) DISTRIBUTED BY HASH(order_id)",
    );
    let job = sr_job(&url, "customers,orders,items", &d).env("TRUNCATE_POLICY", "truncate");
    let mut p = job.spawn_streaming();
    // The audit columns were added to the existing tables.
    let cols: Vec<String> = d
        .query("SELECT COLUMN_NAME FROM information_schema.columns WHERE TABLE_SCHEMA = 'app' AND TABLE_NAME = 'orders'")
        .into_iter()
        .map(|r| r[0].clone().unwrap())
        .collect();
    for audit in [
        "dbmazz_op_type",
        "dbmazz_is_deleted",
        "dbmazz_synced_at",
        "dbmazz_cdc_version",
    ] {
        assert!(cols.contains(&audit.to_string()), "{cols:?}");
    }
    pg.psql(
        "app",
        "INSERT INTO customers SELECT g, 'c' || g FROM generate_series(1, 50) g;
         INSERT INTO orders SELECT g, g % 50 + 1, 'new' FROM generate_series(1, 200) g;
         INSERT INTO items SELECT g, l, 'sku' || g FROM generate_series(1, 100) g, generate_series(1, 3) l;
         UPDATE orders SET status = 'paid' WHERE id % 3 = 0;
         DELETE FROM orders WHERE id % 7 = 0;
         DELETE FROM items WHERE line = 2;
         UPDATE customers SET name = NULL WHERE id = 5;",
    );
    wait_converged(&pg, &d, "customers", "id", "name");
    wait_converged(&pg, &d, "orders", "id", "customer_id, status");
    wait_converged(&pg, &d, "items", "concat(order_id, '/', line)", "sku");
    pg.psql(
        "app",
        "TRUNCATE items; INSERT INTO items VALUES (7, 1, 'after')",
    );
    wait_converged(&pg, &d, "items", "concat(order_id, '/', line)", "sku");
    p.terminate();
    assert!(p.wait(MINUTE).success(), "{}", p.log());
}

#[test]
fn primary_key_change_soft_deletes_the_old_key_and_soft_deletes_keep_columns() {
    let pg = PgCluster::start();
    let url = pg.create_database("app");
    let d = Double::start("app");
    create_both(
        &pg,
        &d,
        "CREATE TABLE t (id int PRIMARY KEY, v text)",
        "CREATE TABLE app.t (id INT NOT NULL, v STRING) PRIMARY KEY(id) DISTRIBUTED BY HASH(id)",
    );
    let job = sr_job(&url, "t", &d);
    let mut p = job.spawn_streaming();
    pg.psql("app", "INSERT INTO t VALUES (1, 'one'), (2, 'two')");
    wait_converged(&pg, &d, "t", "id", "v");
    pg.psql(
        "app",
        "UPDATE t SET id = 10 WHERE id = 1; DELETE FROM t WHERE id = 2;",
    );
    wait_converged(&pg, &d, "t", "id", "v");
    let all = d.query("SELECT id, v, dbmazz_is_deleted, dbmazz_op_type FROM app.t ORDER BY id");
    let by_id: BTreeMap<String, Vec<Option<String>>> = all
        .into_iter()
        .map(|r| (r[0].clone().unwrap(), r))
        .collect();
    // The deleted row stays, soft-deleted, with its other columns intact.
    assert_eq!(by_id["2"][1].as_deref(), Some("two"));
    assert!(matches!(by_id["2"][2].as_deref(), Some("1" | "true")));
    assert_eq!(by_id["2"][3].as_deref(), Some("2"));
    assert!(
        matches!(by_id["1"][2].as_deref(), Some("1" | "true")),
        "old key soft-deleted: {by_id:?}"
    );
    assert_eq!(by_id["10"][1].as_deref(), Some("one"));
    p.terminate();
    p.wait(MINUTE);
}

fn toast_case(identity: &str) {
    let pg = PgCluster::start();
    let url = pg.create_database("app");
    let d = Double::start("app");
    create_both(
        &pg,
        &d,
        "CREATE TABLE docs (id int PRIMARY KEY, title text, body text);
         ALTER TABLE docs ALTER COLUMN body SET STORAGE EXTERNAL;",
        "CREATE TABLE app.docs (id INT NOT NULL, title STRING, body VARCHAR(1048576)) PRIMARY KEY(id) DISTRIBUTED BY HASH(id)",
    );
    let job = sr_job(&url, "docs", &d).env("REPLICA_IDENTITY", identity);
    let mut p = job.spawn_streaming();
    pg.psql(
        "app",
        "INSERT INTO docs SELECT g, 't', repeat(md5(g::text), 300) FROM generate_series(1, 20) g",
    );
    wait_converged(&pg, &d, "docs", "id", "title, body");
    // Updates that leave the TOASTed body alone, twice for one key in one transaction.
    pg.psql(
        "app",
        "BEGIN; UPDATE docs SET title = 'x' WHERE id <= 10; UPDATE docs SET title = 'y' WHERE id = 3; COMMIT;",
    );
    wait_converged(&pg, &d, "docs", "id", "title, body");
    let body = d.query("SELECT body FROM app.docs WHERE id = 3");
    assert_eq!(
        body[0][0].as_deref().map(str::len),
        Some(9600),
        "the body was never overwritten"
    );
    p.terminate();
    assert!(p.wait(MINUTE).success());
}

#[test]
fn unchanged_toast_is_never_overwritten_with_default_identity() {
    toast_case("default");
}

#[test]
fn unchanged_toast_is_never_overwritten_with_full_identity() {
    toast_case("full");
}

#[test]
fn column_added_mid_stream_is_added_in_starrocks_before_its_rows() {
    let pg = PgCluster::start();
    let url = pg.create_database("app");
    let d = Double::start("app");
    create_both(
        &pg,
        &d,
        "CREATE TABLE t (id int PRIMARY KEY, a text)",
        "CREATE TABLE app.t (id INT NOT NULL, a STRING) PRIMARY KEY(id) DISTRIBUTED BY HASH(id)",
    );
    // Compressed bodies too: StarRocks accepts gzip JSON from 3.2.7.
    let job = sr_job(&url, "t", &d).env("STARROCKS_COMPRESS", "gzip");
    let mut p = job.spawn_streaming();
    pg.psql(
        "app",
        "INSERT INTO t VALUES (1, 'x'); ALTER TABLE t ADD COLUMN extra int; INSERT INTO t VALUES (2, 'y', 5);",
    );
    wait_converged(&pg, &d, "t", "id", "a, extra");
    p.terminate();
    assert!(p.wait(MINUTE).success());
}

#[test]
fn create_tables_builds_primary_key_tables_with_mapped_types() {
    let pg = PgCluster::start();
    let url = pg.create_database("app");
    let d = Double::start("app");
    pg.psql(
        "app",
        "CREATE TABLE typed (id bigint PRIMARY KEY, f8 float8, n numeric(40,20), n2 numeric(12,2),
            ts timestamptz, d date, j jsonb, arr int[], t text, by bytea, u uuid)",
    );
    let job = sr_job(&url, "typed", &d).env("CREATE_TABLES", "true");
    let mut p = job.spawn_streaming();
    pg.psql(
        "app",
        "INSERT INTO typed VALUES
           (1, 'NaN', '12345678901234567890.12345678901234567890', 1.5, '2024-01-02 03:04:05.5+02',
            'infinity', '{\"a\": 1}', '{1,2}', repeat('é', 40000), '\\x00ff', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'),
           (2, '-Infinity', '1', 2, 'infinity', '2024-02-29', null, '{}', '😀', null, null)",
    );
    wait_until(MINUTE, "two rows", || {
        d.query("SELECT count(*) FROM app.typed")[0][0].as_deref() == Some("2")
    });
    let r = d.query("SELECT f8, n, n2, ts, d, arr, t, by, u FROM app.typed WHERE id = 1");
    let r = &r[0];
    assert_eq!(r[0], None, "NaN is stored as NULL (documented)");
    assert_eq!(
        r[1].as_deref(),
        Some("12345678901234567890.12345678901234567890")
    );
    assert!(
        r[3].as_deref().unwrap().starts_with("2024-01-02 01:04:05"),
        "UTC: {:?}",
        r[3]
    );
    assert_eq!(r[4].as_deref(), Some("9999-12-31"));
    assert_eq!(
        r[5].as_deref().map(|s| s.replace(' ', "")),
        Some("[1,2]".into())
    );
    assert_eq!(r[6].as_deref().map(|s| s.chars().count()), Some(40_000));
    assert_eq!(r[7].as_deref(), Some("00ff"));
    let r2 = d.query("SELECT ts, t FROM app.typed WHERE id = 2");
    assert!(r2[0][0]
        .as_deref()
        .unwrap()
        .starts_with("9999-12-31 23:59:59"));
    assert_eq!(r2[0][1].as_deref(), Some("😀"));
    p.terminate();
    assert!(p.wait(MINUTE).success());
}

#[test]
fn rejected_row_stops_the_job_with_table_label_and_reason() {
    let pg = PgCluster::start();
    let url = pg.create_database("app");
    let d = Double::start("app");
    create_both(
        &pg,
        &d,
        "CREATE TABLE t (id int PRIMARY KEY, v text)",
        "CREATE TABLE app.t (id INT NOT NULL, v VARCHAR(5)) PRIMARY KEY(id) DISTRIBUTED BY HASH(id)",
    );
    let job = sr_job(&url, "t", &d);
    let mut p = job.spawn_streaming();
    pg.psql(
        "app",
        "INSERT INTO t VALUES (1, 'ok'), (2, 'much too long for five bytes')",
    );
    let status = p.wait(MINUTE);
    assert_eq!(status.code(), Some(1), "{}", p.log());
    let log = p.log();
    assert!(log.contains("table 't'"), "{log}");
    assert!(log.contains("label dbmazz_dbmazz_slot_public_t_"), "{log}");
    assert!(log.contains("too many filtered rows"), "{log}");
    // ON_REJECT=stop names the refused row (see rejects.rs for the rest).
    assert!(log.contains(r#"key {"id":"2"}"#), "{log}");
    // The row StarRocks takes is loaded; the refused one is not, and nothing was confirmed
    // past it.
    assert_eq!(
        d.query("SELECT id FROM app.t")
            .into_iter()
            .map(|r| r[0].clone())
            .collect::<Vec<_>>(),
        vec![Some("1".to_owned())]
    );
}

#[test]
fn ambiguous_and_transient_failures_converge_without_double_apply() {
    let pg = PgCluster::start();
    let url = pg.create_database("app");
    let d = Double::start("app");
    create_both(
        &pg,
        &d,
        "CREATE TABLE c (id int PRIMARY KEY, n bigint)",
        "CREATE TABLE app.c (id INT NOT NULL, n BIGINT) PRIMARY KEY(id) DISTRIBUTED BY HASH(id)",
    );
    let job = sr_job(&url, "c", &d);
    let mut p = job.spawn_streaming();
    pg.psql(
        "app",
        "INSERT INTO c SELECT g, 0 FROM generate_series(1, 10) g",
    );
    wait_converged(&pg, &d, "c", "id", "n");
    // Commit then drop the connection: the retry with the same label must be recognised.
    d.fault(json!({"kind": "commit_then_drop", "count": 1, "table": "c"}));
    pg.psql("app", "UPDATE c SET n = n + 1");
    wait_converged(&pg, &d, "c", "id", "n");
    // Publish Timeout counts as committed.
    d.fault(json!({"kind": "publish_timeout", "count": 1, "table": "c"}));
    pg.psql("app", "UPDATE c SET n = n + 1");
    wait_converged(&pg, &d, "c", "id", "n");
    // A storm of 5xx answers and a concurrency-limit refusal: backoff, then through.
    d.fault(json!({"kind": "http_5xx", "count": 4, "table": "c"}));
    d.fault(json!({"kind": "concurrency_limit", "count": 1, "table": "c"}));
    pg.psql("app", "UPDATE c SET n = n + 1");
    wait_converged(&pg, &d, "c", "id", "n");
    assert_eq!(
        source_rows(&pg, "c", "id", "n")["1"][0].as_deref(),
        Some("3"),
        "three increments, each applied once"
    );
    let log = p.log();
    assert!(log.contains("sink write failed, retrying"), "{log}");
    p.terminate();
    assert!(p.wait(MINUTE).success(), "{}", p.log());
}

#[test]
fn kill_9_mid_load_then_restart_converges() {
    let pg = PgCluster::start();
    let url = pg.create_database("app");
    let d = Double::start("app");
    create_both(
        &pg,
        &d,
        "CREATE TABLE k (id int PRIMARY KEY, n bigint, pad text)",
        "CREATE TABLE app.k (id INT NOT NULL, n BIGINT, pad STRING) PRIMARY KEY(id) DISTRIBUTED BY HASH(id)",
    );
    let job = sr_job(&url, "k", &d).env("FLUSH_SIZE", "200");
    let mut p = job.spawn_streaming();
    // Slow loads so the kill lands while one is in flight.
    d.fault(json!({"kind": "delay_ms", "ms": 300, "table": "k"}));
    pg.psql(
        "app",
        "INSERT INTO k SELECT g, 0, repeat('p', 100) FROM generate_series(1, 3000) g",
    );
    for round in 0..5 {
        pg.psql(
            "app",
            &format!("UPDATE k SET n = n + 1 WHERE id % 5 = {round}"),
        );
    }
    std::thread::sleep(Duration::from_millis(700));
    p.kill9();
    d.admin("DELETE", "/admin/faults", "");
    pg.psql(
        "app",
        "DELETE FROM k WHERE id % 11 = 0; UPDATE k SET pad = 'after' WHERE id % 13 = 0",
    );
    let mut p = job.spawn_streaming();
    wait_converged(&pg, &d, "k", "id", "n, pad");
    p.terminate();
    assert!(p.wait(MINUTE).success(), "{}", p.log());
}

#[test]
fn missing_starrocks_table_is_a_clear_error() {
    let pg = PgCluster::start();
    let url = pg.create_database("app");
    let d = Double::start("app");
    pg.psql("app", "CREATE TABLE orders (id int PRIMARY KEY)");
    let job = sr_job(&url, "orders", &d);
    let mut p = job.spawn();
    assert_eq!(p.wait(MINUTE).code(), Some(1));
    assert!(
        p.log().contains(
            "Table 'orders' not found in StarRocks. Create the table before starting CDC"
        ),
        "{}",
        p.log()
    );
}

#[test]
fn https_starrocks_is_verified_against_the_configured_ca() {
    let pg = PgCluster::start();
    let url = pg.create_database("app");
    let d = Double::start("app");
    create_both(
        &pg,
        &d,
        "CREATE TABLE t (id int PRIMARY KEY, v text)",
        "CREATE TABLE app.t (id INT NOT NULL, v STRING) PRIMARY KEY(id) DISTRIBUTED BY HASH(id)",
    );
    let proxy = TlsProxy::start(d.fe);
    let https = format!("https://localhost:{}", proxy.port);
    pg.psql(
        "app",
        "INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 50) g",
    );

    // A certificate from a CA the job was not told to trust stops the job with what to do,
    // rather than retrying forever.
    let other = proxy.other_ca_cert();
    let untrusted = sr_job(&url, "t", &d)
        .env("STARROCKS_URL", &https)
        .env("STARROCKS_CA_FILE", other.to_str().unwrap());
    let mut p = untrusted.spawn();
    let status = p.wait(MINUTE);
    let log = p.log();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("TLS certificate was not accepted"), "{log}");
    assert!(log.contains("STARROCKS_CA_FILE"), "{log}");
    assert_eq!(
        d.query("SELECT count(*) FROM app.t")[0][0].as_deref(),
        Some("0")
    );

    // With the right CA, the snapshot and then the stream go through TLS.
    let ca = proxy.ca_cert();
    let trusted = sr_job(&url, "t", &d)
        .env("STARROCKS_URL", &https)
        .env("STARROCKS_CA_FILE", ca.to_str().unwrap());
    let mut p = trusted.spawn_streaming();
    pg.psql(
        "app",
        "UPDATE t SET v = 'changed' WHERE id <= 10; DELETE FROM t WHERE id = 50",
    );
    wait_converged(&pg, &d, "t", "id", "v");
    p.terminate();
    assert!(p.wait(MINUTE).success(), "{}", p.log());
}

/// A job with `TRUNCATE_POLICY=truncate` on table `t (id, v)`, streaming, with rows 1–10
/// loaded; `sr_extra` runs in StarRocks after the table is created.
fn truncating_job(sr_extra: &str, env: &[(&str, &str)]) -> (PgCluster, Double, Job, Proc) {
    let pg = PgCluster::start();
    let url = pg.create_database("app");
    let d = Double::start("app");
    create_both(
        &pg,
        &d,
        "CREATE TABLE t (id int PRIMARY KEY, v text)",
        &format!(
            "CREATE TABLE app.t (id INT NOT NULL, v STRING) PRIMARY KEY(id) DISTRIBUTED BY HASH(id);{sr_extra}"
        ),
    );
    let mut job = sr_job(&url, "t", &d).env("TRUNCATE_POLICY", "truncate");
    for (k, v) in env {
        job = job.env(k, v);
    }
    let p = job.spawn_streaming();
    pg.psql(
        "app",
        "INSERT INTO t SELECT g, 'before' FROM generate_series(1, 10) g",
    );
    wait_converged(&pg, &d, "t", "id", "v");
    (pg, d, job, p)
}

/// Issue 16: a batch `TRUNCATE t; INSERT …` whose load after the truncate commits but loses its
/// answer is retried whole. The retry must not truncate again: the rows loaded after the
/// truncate would go, and their loads, back as `Label Already Exists`, would count as done.
#[test]
fn ambiguous_load_after_a_truncate_does_not_truncate_twice() {
    // Every load through the FE: a load pinned to a BE whose answer is lost is settled inside
    // the loader, through the FE, by its label (`starrocks_compat::loads_skip_the_fes_redirect…`);
    // this test is about the batch retried whole.
    let (pg, d, _job, mut p) = truncating_job("", &[("STARROCKS_BE_PIN_MS", "0")]);
    // The next load of t is the one after the truncate: it commits, then the answer is lost.
    d.fault(json!({"kind": "commit_then_drop", "count": 1, "table": "t"}));
    pg.psql(
        "app",
        "BEGIN; TRUNCATE t; INSERT INTO t SELECT g, 'after' FROM generate_series(101, 120) g; COMMIT",
    );
    // A later transaction, in a later batch: once it is in StarRocks, the retry is over.
    p.wait_for_log("sink write failed, retrying", MINUTE);
    pg.psql("app", "INSERT INTO t VALUES (1000, 'marker')");
    wait_converged(&pg, &d, "t", "id", "v");
    assert_eq!(source_rows(&pg, "t", "id", "v").len(), 21);
    let log = p.log();
    assert_eq!(
        log.matches("truncated the StarRocks table").count(),
        1,
        "the truncate runs once: {log}"
    );
    assert!(log.contains("already applied"), "{log}");
    p.terminate();
    assert!(p.wait(MINUTE).success(), "{}", p.log());
}

/// Issue 16 across a restart: the truncate and the rows after it are loaded, dbmazz is killed
/// before the checkpoint covers them, and PostgreSQL sends them again. The replayed truncate
/// must not remove the rows loaded after it.
#[test]
fn truncate_replayed_after_kill_9_keeps_the_rows_loaded_after_it() {
    truncate_replayed_after_kill_9("", &[]);
}

/// The same, with changes before the truncate that the checkpoint does not cover either, and
/// batches cut differently after the restart (so their loads get new labels): the replayed
/// changes the truncate removed must not come back.
#[test]
fn changes_replayed_from_before_an_applied_truncate_do_not_come_back() {
    truncate_replayed_after_kill_9(
        "INSERT INTO t SELECT g, 'gone' FROM generate_series(11, 20) g;
         UPDATE t SET v = 'gone too' WHERE id <= 5;",
        &[("FLUSH_SIZE", "1")],
    );
}

/// Rows 1–10 loaded and checkpointed; then, with the checkpoint held back, `before` and
/// `BEGIN; TRUNCATE t; INSERT 101–120; COMMIT` are loaded; kill -9, restart with `restart_env`.
fn truncate_replayed_after_kill_9(before: &str, restart_env: &[(&str, &str)]) {
    let (pg, d, job, mut p) = truncating_job("", &[]);
    let saved = || {
        pg.psql(
            "app",
            "SELECT lsn - '0/0' FROM dbmazz_checkpoints WHERE slot_name = 'dbmazz_slot'",
        )
    };
    wait_until(MINUTE, "the first checkpoint", || !saved().is_empty());
    // Hold the checkpoint row: the sink gets ahead of the checkpoint (and of the slot).
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (lock, holder) = rt.block_on(async {
        let c = pg.client("app").await;
        c.batch_execute("BEGIN; LOCK TABLE dbmazz_checkpoints IN EXCLUSIVE MODE")
            .await
            .unwrap();
        let pid: i32 = c
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .unwrap()
            .get(0);
        (c, pid)
    });
    let checkpoint = saved();
    if !before.is_empty() {
        pg.psql("app", before);
    }
    pg.psql(
        "app",
        "BEGIN; TRUNCATE t; INSERT INTO t SELECT g, 'after' FROM generate_series(101, 120) g; COMMIT",
    );
    wait_converged(&pg, &d, "t", "id", "v");
    p.kill9();
    // The killed process's checkpoint UPDATE still waits for the lock in its backend: end it
    // (and the walsender) before letting go, or it would commit once the lock is gone.
    pg.psql(
        "app",
        &format!(
            "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity \
             WHERE datname = 'app' AND pid NOT IN (pg_backend_pid(), {holder})"
        ),
    );
    drop(lock);
    drop(rt);
    assert_eq!(saved(), checkpoint, "the kill came before the checkpoint");
    let job = restart_env.iter().fold(job, |job, (k, v)| job.env(k, v));
    let mut p = job.spawn_streaming();
    // The transaction is sent again: wait until it was handled, whichever way.
    wait_until(MINUTE, "the replayed truncate", || {
        let log = p.log();
        log.contains("truncated the StarRocks table") || log.contains("already applied")
    });
    pg.psql("app", "INSERT INTO t VALUES (1000, 'marker')");
    wait_converged(&pg, &d, "t", "id", "v");
    assert_eq!(source_rows(&pg, "t", "id", "v").len(), 21);
    let log = p.log();
    assert!(
        !log.contains("truncated the StarRocks table"),
        "the replayed truncate is not applied again: {log}"
    );
    assert!(log.contains("already applied"), "{log}");
    p.terminate();
    assert!(p.wait(MINUTE).success(), "{}", p.log());
}

/// A record of an earlier slot of the same name (here one far ahead, as another source cluster
/// could leave) is forgotten when the slot is created: it must not make dbmazz skip a truncate.
#[test]
fn truncate_records_of_an_earlier_slot_are_forgotten_when_the_slot_is_created() {
    // A record left by an earlier slot of the same name, at an LSN beyond any real one.
    let (pg, d, _job, mut p) = truncating_job(
        "CREATE TABLE app.dbmazz_truncates (slot_name VARCHAR(128) NOT NULL, table_name VARCHAR(256) NOT NULL, truncate_lsn BIGINT NOT NULL, recorded_at DATETIME NULL) PRIMARY KEY(slot_name, table_name) DISTRIBUTED BY HASH(slot_name);
         INSERT INTO app.dbmazz_truncates (slot_name, table_name, truncate_lsn) VALUES ('dbmazz_slot', 't', 9000000000000000000)",
        &[],
    );
    pg.psql(
        "app",
        "BEGIN; TRUNCATE t; INSERT INTO t VALUES (101, 'after'); COMMIT",
    );
    wait_converged(&pg, &d, "t", "id", "v");
    let recorded = d.query("SELECT truncate_lsn FROM app.dbmazz_truncates WHERE slot_name = 'dbmazz_slot' AND table_name = 't'");
    assert_eq!(recorded.len(), 1);
    let lsn: i64 = recorded[0][0].as_deref().unwrap().parse().unwrap();
    assert!(lsn < 9_000_000_000_000_000_000, "{lsn}");
    p.terminate();
    assert!(p.wait(MINUTE).success(), "{}", p.log());
}
