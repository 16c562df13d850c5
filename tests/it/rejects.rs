//! Rows StarRocks refuses: strict loads, `ON_REJECT=stop` naming the rows, and
//! `ON_REJECT=dead_letter` setting exactly the refused rows aside while everything else loads
//! and streaming goes on. Real PostgreSQL 15, the `dbmazz` binary and the StarRocks stand-in,
//! whose target tables are made narrower than the source by hand.

use std::time::Duration;

use crate::control::{listening, scrape};
use crate::starrocks::{create_both, sink_rows};
use crate::support::dbmazz::wait_until;
use crate::support::grpcurl::Client;
use crate::support::pg::PgCluster;
use crate::support::starrocks::Double;

const MINUTE: Duration = Duration::from_secs(60);

/// Source `t (id, v text, n int, m int)`; target with `v VARCHAR(5)`, `n TINYINT` (nullable,
/// so a non-strict load would store NULL for 300) and `m INT NOT NULL` (a schema changed by
/// hand).
fn narrow_tables(pg: &PgCluster, d: &Double) {
    create_both(
        pg,
        d,
        "CREATE TABLE t (id int PRIMARY KEY, v text, n int, m int)",
        "CREATE TABLE app.t (id INT NOT NULL, v VARCHAR(5), n TINYINT, m INT NOT NULL) \
         PRIMARY KEY(id) DISTRIBUTED BY HASH(id)",
    );
}

/// The open dead letters of table `public.t`: key → (op, reason, status).
fn letters(d: &Double) -> Vec<(String, String, String, String)> {
    d.try_query(
        "SELECT row_key, op, reason, status FROM app.dbmazz_dead_letters \
         WHERE source_table = 'public.t' ORDER BY row_key",
    )
    .unwrap_or_default()
    .into_iter()
    .map(|r| {
        let s = |i: usize| r[i].clone().unwrap_or_default();
        (s(0), s(1), s(2), s(3))
    })
    .collect()
}

#[test]
fn a_value_out_of_range_is_refused_not_nulled_and_stop_names_key_and_reason() {
    let pg = PgCluster::start();
    let url = pg.create_database("app");
    let d = Double::start("app");
    narrow_tables(&pg, &d);
    let job = d.job(&url, "t");
    let mut p = job.spawn_streaming();
    pg.psql(
        "app",
        "INSERT INTO t VALUES (1, 'ok', 1, 1), (2, 'ok', 300, 2), (3, 'ok', 3, 3)",
    );
    let status = p.wait(MINUTE);
    assert_eq!(status.code(), Some(1), "{}", p.log());
    let log = p.log();
    assert!(
        log.contains("StarRocks refused 1 row(s) of table public.t"),
        "{log}"
    );
    assert!(log.contains(r#"key {"id":"2"}"#), "{log}");
    assert!(
        log.contains("column=n"),
        "the reason names the column: {log}"
    );
    assert!(
        log.contains("\"n\":300"),
        "the row's values are named: {log}"
    );
    assert!(log.contains("ON_REJECT=dead_letter"), "{log}");
    // The other rows of the load are in; the refused one is not there as NULL.
    let rows = sink_rows(&d, "t", "id", "n");
    assert_eq!(
        rows.keys().cloned().collect::<Vec<_>>(),
        vec!["1".to_owned(), "3".to_owned()],
        "{rows:?}"
    );
    // Nothing past the refusal was confirmed: a restart meets the same row again.
    let mut again = job.spawn();
    assert_eq!(again.wait(MINUTE).code(), Some(1), "{}", again.log());
    assert!(again.log().contains(r#"key {"id":"2"}"#));
}

#[test]
fn dead_letters_hold_exactly_the_refused_rows_while_the_rest_loads_and_streams_on() {
    let pg = PgCluster::start();
    let url = pg.create_database("app");
    let d = Double::start("app");
    narrow_tables(&pg, &d);
    // Existing rows, one of them refused by the snapshot's load.
    pg.psql(
        "app",
        "INSERT INTO t SELECT g, 'ok', g, g FROM generate_series(1, 10) g;
         UPDATE t SET v = 'snapshot value too long' WHERE id = 4",
    );
    let job = d
        .job(&url, "t")
        .env("ON_REJECT", "dead_letter")
        .env("METRICS_PORT", "0");
    let mut p = job.spawn_streaming();
    let metrics = listening(&mut p, "metrics");
    // One transaction, one load: a too-long string, an out-of-range number, a NULL into a
    // NOT NULL column, among 17 good rows.
    pg.psql(
        "app",
        "BEGIN;
         INSERT INTO t SELECT g, 'ok', g % 100, g FROM generate_series(11, 30) g;
         UPDATE t SET v = 'much too long' WHERE id = 13;
         UPDATE t SET n = 300 WHERE id = 17;
         UPDATE t SET m = NULL WHERE id = 21;
         COMMIT",
    );
    wait_until(MINUTE, "4 dead letters", || letters(&d).len() == 4);
    let got = letters(&d);
    let keys: Vec<&str> = got.iter().map(|l| l.0.as_str()).collect();
    assert_eq!(
        keys,
        [
            r#"{"id":"13"}"#,
            r#"{"id":"17"}"#,
            r#"{"id":"21"}"#,
            r#"{"id":"4"}"#
        ],
        "{got:?}"
    );
    assert!(
        got.iter().all(|l| l.3 == "open" && !l.2.is_empty()),
        "{got:?}"
    );
    assert_eq!(got[3].1, "snapshot");
    // Inserted, then updated in the same transaction: the load carried the last change.
    assert_eq!(got[0].1, "update");
    assert!(got[1].2.contains("column=n"), "{got:?}");
    assert!(got[2].2.to_lowercase().contains("null"), "{got:?}");
    // Every other row is in the sink.
    let live = |d: &Double| {
        sink_rows(d, "t", "id", "v")
            .keys()
            .map(|k| k.parse::<i32>().unwrap())
            .collect::<std::collections::BTreeSet<_>>()
    };
    let expected: std::collections::BTreeSet<i32> =
        (1..=30).filter(|i| ![4, 13, 17, 21].contains(i)).collect();
    wait_until(MINUTE, "the 26 good rows", || live(&d) == expected);
    // Streaming goes on, and a later change to a refused key that loads wins.
    pg.psql(
        "app",
        "INSERT INTO t VALUES (31, 'new', 1, 1); UPDATE t SET v = 'fixed' WHERE id = 13",
    );
    wait_until(MINUTE, "row 31 and the fixed row 13", || {
        let rows = sink_rows(&d, "t", "id", "v");
        rows.contains_key("31") && rows.get("13") == Some(&vec![Some("fixed".into())])
    });
    let (body, samples) = scrape(metrics);
    assert_eq!(samples["dbmazz_rows_rejected_total"], 4.0, "{body}");
    assert_eq!(samples["dbmazz_dead_letters_written_total"], 4.0, "{body}");
    assert_eq!(samples["dbmazz_dead_letters_open"], 4.0, "{body}");
    assert!(samples["dbmazz_load_error_ratio"] > 0.0, "{body}");
    p.terminate();
    assert!(p.wait(MINUTE).success(), "{}", p.log());
    let log = p.log();
    assert!(log.contains("written to dbmazz_dead_letters"), "{log}");
}

/// `POST path` with a JSON body over plain HTTP; the status code and the JSON answer.
fn post_json(addr: std::net::SocketAddr, path: &str, body: &str) -> (u16, serde_json::Value) {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(MINUTE)).unwrap();
    write!(
        conn,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    conn.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let code = head.split(' ').nth(1).unwrap().parse().unwrap();
    (
        code,
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    )
}

#[test]
fn replay_after_the_target_is_fixed_brings_the_sink_equal_to_the_source() {
    let pg = PgCluster::start();
    let url = pg.create_database("app");
    let d = Double::start("app");
    narrow_tables(&pg, &d);
    pg.psql(
        "app",
        "INSERT INTO t SELECT g, 'ok', g, g FROM generate_series(1, 10) g;
         UPDATE t SET v = 'snapshot value too long' WHERE id = 4",
    );
    let job = d
        .job(&url, "t")
        .env("ON_REJECT", "dead_letter")
        .env("GRPC_PORT", "0")
        .env("METRICS_PORT", "0");
    let mut p = job.spawn_streaming();
    let grpc = Client::new(listening(&mut p, "grpc").port());
    let http = listening(&mut p, "metrics");
    pg.psql(
        "app",
        "BEGIN;
         INSERT INTO t SELECT g, 'ok', g, g FROM generate_series(11, 22) g;
         UPDATE t SET v = 'much too long' WHERE id = 13;
         UPDATE t SET n = 300 WHERE id IN (17, 22);
         UPDATE t SET m = NULL WHERE id = 19;
         COMMIT",
    );
    wait_until(MINUTE, "5 dead letters", || letters(&d).len() == 5);
    // Key 22 leaves the source: its replay is a soft delete.
    pg.psql(
        "app",
        "DELETE FROM t WHERE id = 22; INSERT INTO t VALUES (23, 'ok', 1, 1)",
    );
    wait_until(MINUTE, "row 23", || {
        sink_rows(&d, "t", "id", "v").contains_key("23")
    });

    let listed = grpc.ok("dbmazz.CdcControlService/ListDeadLetters", "{}");
    assert_eq!(listed["total"], "5", "{listed}");
    assert_eq!(listed["letters"].as_array().unwrap().len(), 5);

    // A dry run reads the source and changes nothing.
    let dry = grpc
        .call(
            "dbmazz.CdcControlService/ReplayDeadLetters",
            r#"{"dry_run": true}"#,
        )
        .unwrap_or_else(|e| panic!("{e:?}\n{}", p.log()));
    assert_eq!(
        (dry["matched"].as_u64(), dry["deleted"].as_u64()),
        (Some(5), Some(1)),
        "{dry}"
    );
    assert_eq!(letters(&d).iter().filter(|l| l.3 == "open").count(), 5);

    // Before the target is fixed, the replay resolves only the key gone from the source and
    // records the new reasons.
    let early = grpc.ok("dbmazz.CdcControlService/ReplayDeadLetters", "{}");
    assert_eq!(
        (
            early["resolved"].as_u64(),
            early["deleted"].as_u64(),
            early["failed"].as_u64()
        ),
        (Some(1), Some(1), Some(4)),
        "{early}"
    );
    let open: Vec<_> = letters(&d).into_iter().filter(|l| l.3 == "open").collect();
    assert_eq!(open.len(), 4, "{open:?}");
    assert!(
        open.iter().all(|l| l.2.starts_with("replay at version")),
        "{open:?}"
    );

    // Fix the target, then replay over REST until StarRocks takes every row.
    // One schema-change job at a time, as in StarRocks: one statement with three clauses.
    d.exec(
        "ALTER TABLE app.t MODIFY COLUMN v VARCHAR(64), MODIFY COLUMN n INT, \
         MODIFY COLUMN m INT NULL",
    );
    let mut last = serde_json::Value::Null;
    wait_until(MINUTE, "a replay with nothing refused", || {
        let (code, answer) = post_json(http, "/dead-letters/replay", "{}");
        assert_eq!(code, 200, "{answer}");
        last = answer;
        last["failed"] == 0
    });
    assert_eq!(last["resolved"], 4, "{last}");
    crate::starrocks::wait_converged(&pg, &d, "t", "id", "v, n, m");
    assert!(letters(&d).iter().all(|l| l.3 == "resolved"));
    let resolved = grpc.ok(
        "dbmazz.CdcControlService/ListDeadLetters",
        r#"{"status": "resolved"}"#,
    );
    assert_eq!(resolved["total"], "5", "{resolved}");
    let (body, samples) = scrape(http);
    assert_eq!(samples["dbmazz_dead_letters_open"], 0.0, "{body}");
    assert_eq!(samples["dbmazz_dead_letters_resolved_total"], 5.0, "{body}");
    p.terminate();
    assert!(p.wait(MINUTE).success(), "{}", p.log());
}

#[test]
fn dead_letter_calls_say_what_they_need_on_an_ndjson_job() {
    let pg = PgCluster::start();
    let url = pg.create_database("app");
    pg.psql("app", "CREATE TABLE t (id int PRIMARY KEY)");
    let job = crate::support::dbmazz::Job::new(&url, "t").env("GRPC_PORT", "0");
    let mut p = job.spawn_streaming();
    let grpc = Client::new(listening(&mut p, "grpc").port());
    let err = grpc
        .call("dbmazz.CdcControlService/ReplayDeadLetters", "{}")
        .unwrap_err();
    assert_eq!(err.code, "FailedPrecondition", "{err:?}");
    assert!(err.message.contains("SINK_TYPE=starrocks"), "{err:?}");
    let err = grpc
        .call(
            "dbmazz.CdcControlService/ListDeadLetters",
            r#"{"status": "maybe"}"#,
        )
        .unwrap_err();
    assert_eq!(err.code, "InvalidArgument", "{err:?}");
    p.terminate();
    assert!(p.wait(MINUTE).success(), "{}", p.log());
}

#[test]
fn a_load_whose_every_row_is_refused_is_not_split_row_by_row() {
    let pg = PgCluster::start();
    let url = pg.create_database("app");
    let d = Double::start("app");
    narrow_tables(&pg, &d);
    let job = d.job(&url, "t").env("ON_REJECT", "dead_letter");
    let mut p = job.spawn_streaming();
    let before = d.stats()["loads"].as_u64().unwrap();
    // Every row breaks the NOT NULL column m.
    pg.psql(
        "app",
        "INSERT INTO t SELECT g, 'ok', 1, NULL FROM generate_series(1, 64) g",
    );
    wait_until(MINUTE, "64 dead letters", || letters(&d).len() == 64);
    let loads = d.stats()["loads"].as_u64().unwrap() - before;
    // One load, refused whole: no part is sent (splitting would take 127 loads).
    assert_eq!(loads, 1, "{}", d.stats());
    let got = letters(&d);
    assert!(
        got.iter().all(|l| l.2.contains("non-nullable column 'm'")),
        "{got:?}"
    );
    p.terminate();
    assert!(p.wait(MINUTE).success(), "{}", p.log());
}
