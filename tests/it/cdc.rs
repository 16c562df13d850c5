//! End-to-end behaviour of the replication core: real PostgreSQL 15, the real `dbmazz` binary,
//! the NDJSON sink.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::{json, Value as Json};

use crate::support::dbmazz::{final_state, wait_until, Job};
use crate::support::pg::{PgCluster, PgOptions};

const MINUTE: Duration = Duration::from_secs(60);

/// The source's rows of `table`, keyed like [`final_state`] keys them.
pub(crate) fn source_state(
    pg: &PgCluster,
    db: &str,
    table: &str,
    key: &[&str],
) -> BTreeMap<(String, String), BTreeMap<String, Json>> {
    let out = pg.psql(db, &format!("SELECT row_to_json(t) FROM {table} t"));
    out.lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let row: BTreeMap<String, Json> = serde_json::from_str(l).unwrap();
            let mut k = serde_json::Map::new();
            for c in key {
                k.insert(c.to_string(), row[*c].clone());
            }
            (
                (format!("public.{table}"), Json::Object(k).to_string()),
                row,
            )
        })
        .collect()
}

pub(crate) fn sink_state_of(
    lines: &[Json],
    table: &str,
) -> BTreeMap<(String, String), BTreeMap<String, Json>> {
    let qualified = format!("public.{table}");
    final_state(lines)
        .into_iter()
        .filter(|((t, _), _)| *t == qualified)
        .collect()
}

fn slot_confirmed(pg: &PgCluster, db: &str, slot: &str) -> u64 {
    let text = pg.psql(
        db,
        &format!(
            "SELECT coalesce(confirmed_flush_lsn - '0/0', 0) FROM pg_replication_slots WHERE slot_name = '{slot}'"
        ),
    );
    text.trim().parse::<f64>().unwrap_or(0.0) as u64
}

fn lsn(text: &str) -> u64 {
    let (hi, lo) = text.split_once('/').unwrap();
    (u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap()
}

pub(crate) fn psql_path() -> String {
    crate::support::pg::client_bin()
        .join("psql")
        .to_string_lossy()
        .into_owned()
}

fn changes(lines: &[Json]) -> Vec<&Json> {
    lines
        .iter()
        .filter(|l| matches!(l["op"].as_str(), Some("insert" | "update" | "delete")))
        .collect()
}

#[test]
fn inserts_updates_deletes_on_several_tables_arrive_in_order() {
    let pg = PgCluster::start();
    let url = pg.create_database("app");
    pg.psql(
        "app",
        "CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL);
         CREATE TABLE orders (id bigint PRIMARY KEY, customer_id int, status text, doc text);
         ALTER TABLE orders ALTER COLUMN doc SET STORAGE EXTERNAL;",
    );
    let job = Job::new(&url, "customers,orders");
    let mut p = job.spawn_streaming();
    // An update that leaves a TOASTed column alone while its table is still being copied gets the
    // value filled in from the source (see snapshot::unchanged_toast_update_that_overtakes_its_
    // chunk_keeps_the_toasted_value); this test is about the stream alone, so it waits for the
    // (empty) copy to end.
    p.wait_for_log("snapshot complete, streaming only", MINUTE);

    pg.psql(
        "app",
        "INSERT INTO customers VALUES (1, 'ada'), (2, 'bob');
         INSERT INTO orders VALUES (10, 1, 'new', repeat('x', 10000) || md5(random()::text));
         BEGIN; UPDATE orders SET status = 'paid' WHERE id = 10; DELETE FROM customers WHERE id = 2; COMMIT;
         UPDATE customers SET id = 3 WHERE id = 1;",
    );
    wait_until(MINUTE, "five changes in the output", || {
        changes(&job.lines()).len() >= 5
    });
    p.terminate();
    assert!(p.wait(MINUTE).success(), "{}", p.log());

    let lines = job.lines();
    let ops: Vec<(String, String)> = changes(&lines)
        .iter()
        .map(|l| {
            (
                l["table"].as_str().unwrap().to_owned(),
                l["op"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expect = [
        ("customers", "insert"),
        ("customers", "insert"),
        ("orders", "insert"),
        ("orders", "update"),
        ("customers", "delete"),
        ("customers", "update"),
    ];
    assert_eq!(
        ops,
        expect
            .iter()
            .map(|(t, o)| (t.to_string(), o.to_string()))
            .collect::<Vec<_>>()
    );

    let c = changes(&lines);
    // The TOASTed doc column was not changed by the update: marked, never null.
    assert_eq!(c[3]["unchanged_toast"], json!(["doc"]), "{}", p.log());
    assert!(c[3]["columns"].get("doc").is_none(), "{}", c[3]);
    assert_eq!(c[3]["columns"]["status"], json!("paid"));
    // Delete under the default identity carries the key only.
    assert_eq!(c[4]["key"], json!({"id": 2}));
    assert_eq!(c[4]["columns"], json!({"id": 2}));
    // A primary-key change names the old key.
    assert_eq!(c[5]["key"], json!({"id": 3}));
    assert_eq!(c[5]["old_key"], json!({"id": 1}));
    // Both changes of one transaction share its commit LSN and xid; LSNs grow.
    assert_eq!(c[3]["commit_lsn"], c[4]["commit_lsn"]);
    assert_eq!(c[3]["xid"], c[4]["xid"]);
    assert!(lsn(c[3]["lsn"].as_str().unwrap()) < lsn(c[4]["lsn"].as_str().unwrap()));
    assert!(lsn(c[4]["commit_lsn"].as_str().unwrap()) < lsn(c[5]["commit_lsn"].as_str().unwrap()));

    for (t, key) in [("customers", ["id"]), ("orders", ["id"])] {
        assert_eq!(
            sink_state_of(&lines, t),
            source_state(&pg, "app", t, &key),
            "table {t}"
        );
    }
}

#[test]
fn truncate_is_emitted_for_each_table() {
    let pg = PgCluster::start();
    let url = pg.create_database("app");
    pg.psql(
        "app",
        "CREATE TABLE a (id int PRIMARY KEY); CREATE TABLE b (id int PRIMARY KEY);
         CREATE TABLE untouched (id int PRIMARY KEY);",
    );
    let job = Job::new(&url, "a,b,untouched");
    let mut p = job.spawn_streaming();
    pg.psql(
        "app",
        "INSERT INTO a VALUES (1); INSERT INTO b VALUES (1);
         TRUNCATE a, b RESTART IDENTITY; INSERT INTO a VALUES (2);",
    );
    wait_until(MINUTE, "the insert after the truncate", || {
        job.lines()
            .iter()
            .any(|l| l["op"] == "insert" && l["key"] == json!({"id": 2}))
    });
    p.terminate();
    assert!(p.wait(MINUTE).success());
    let lines = job.lines();
    let truncs: Vec<&Json> = lines.iter().filter(|l| l["op"] == "truncate").collect();
    let tables: BTreeSet<&str> = truncs
        .iter()
        .map(|l| l["table"].as_str().unwrap())
        .collect();
    assert_eq!(tables, BTreeSet::from(["a", "b"]));
    assert!(truncs.iter().all(|l| l["restart_identity"] == json!(true)));
    assert!(truncs.iter().all(|l| l["cascade"] == json!(false)));
    let state = final_state(&lines);
    assert_eq!(
        state.len(),
        1,
        "only the row inserted after the truncate remains"
    );
}

#[test]
fn values_are_typed_json() {
    let pg = PgCluster::start();
    let url = pg.create_database("app");
    pg.psql(
        "app",
        "CREATE TYPE mood AS ENUM ('sad', 'happy');
         CREATE DOMAIN posint AS int CHECK (VALUE > 0);
         CREATE TABLE t (id int PRIMARY KEY, b bool, i8 bigint, f8 float8, f_nan float8,
            n numeric(40,20), n_nan numeric, j jsonb, arr int[], tarr text[], by bytea,
            ts timestamptz, tsn timestamp, ts_inf timestamptz, d date, u uuid, m mood,
            p posint, moods mood[], emoji text);",
    );
    let job = Job::new(&url, "t");
    let mut p = job.spawn_streaming();
    pg.psql(
        "app",
        "SET TimeZone = 'America/New_York';
         INSERT INTO t VALUES (1, true, -9007199254740993, 1.5, 'NaN',
            '12345678901234567890.12345678901234567890', 'NaN', '{\"a\": [1, null]}',
            '{{1,2},{3,NULL}}', '{\"a b\",\"c,d\",NULL}', '\\xDEADbeef',
            '2024-01-02 03:04:05.123456-05', '2024-01-02 03:04:05', 'infinity', '2024-02-29',
            'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'happy', 7, '{sad,happy}', '😀 ü');",
    );
    wait_until(MINUTE, "the insert", || !changes(&job.lines()).is_empty());
    p.terminate();
    p.wait(MINUTE);
    let lines = job.lines();
    let c = &changes(&lines)[0]["columns"];
    assert_eq!(c["b"], json!(true));
    assert_eq!(c["i8"].to_string(), "-9007199254740993");
    assert_eq!(c["f8"], json!(1.5));
    assert_eq!(c["f_nan"], json!("NaN"));
    assert_eq!(c["n"], json!("12345678901234567890.12345678901234567890"));
    assert_eq!(c["n_nan"], json!("NaN"));
    assert_eq!(c["j"], json!({"a": [1, null]}));
    assert_eq!(c["arr"], json!([[1, 2], [3, null]]));
    assert_eq!(c["tarr"], json!(["a b", "c,d", null]));
    assert_eq!(c["by"], json!("deadbeef"));
    assert_eq!(c["ts"], json!("2024-01-02T08:04:05.123456Z"));
    assert_eq!(c["tsn"], json!("2024-01-02T03:04:05"));
    assert_eq!(c["ts_inf"], json!("infinity"));
    assert_eq!(c["d"], json!("2024-02-29"));
    assert_eq!(c["u"], json!("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"));
    assert_eq!(c["m"], json!("happy"));
    assert_eq!(c["p"], json!(7));
    assert_eq!(c["moods"], json!(["sad", "happy"]));
    assert_eq!(c["emoji"], json!("😀 ü"));
}

#[test]
fn replica_identity_full_option_sets_full_and_backfills_unchanged_toast() {
    let pg = PgCluster::start();
    let url = pg.create_database("app");
    pg.psql(
        "app",
        "CREATE TABLE docs (id int PRIMARY KEY, title text, body text);
         ALTER TABLE docs ALTER COLUMN body SET STORAGE EXTERNAL;
         INSERT INTO docs VALUES (1, 't', repeat(md5('x'), 1000));",
    );
    let job = Job::new(&url, "docs").env("REPLICA_IDENTITY", "full");
    let mut p = job.spawn_streaming();
    assert_eq!(
        pg.psql(
            "app",
            "SELECT relreplident FROM pg_class WHERE relname = 'docs'"
        ),
        "f"
    );
    pg.psql(
        "app",
        "UPDATE docs SET title = 'u' WHERE id = 1; DELETE FROM docs WHERE id = 1;",
    );
    wait_until(MINUTE, "update and delete", || {
        changes(&job.lines()).len() >= 2
    });
    p.terminate();
    p.wait(MINUTE);
    let lines = job.lines();
    let c = changes(&lines);
    assert_eq!(c[0]["op"], "update");
    assert_eq!(c[0]["unchanged_toast"], json!([]));
    assert_eq!(c[0]["columns"]["body"].as_str().unwrap().len(), 32_000);
    assert_eq!(c[1]["op"], "delete");
    assert_eq!(
        c[1]["columns"]["title"],
        json!("u"),
        "FULL deletes carry the old row"
    );
}

#[test]
fn added_column_mid_stream_is_reported_before_rows_that_use_it() {
    let pg = PgCluster::start();
    let url = pg.create_database("app");
    pg.psql("app", "CREATE TABLE t (id int PRIMARY KEY, a text)");
    let job = Job::new(&url, "t");
    let mut p = job.spawn_streaming();
    pg.psql(
        "app",
        "INSERT INTO t VALUES (1, 'x'); ALTER TABLE t ADD COLUMN extra int; INSERT INTO t VALUES (2, 'y', 5);",
    );
    wait_until(MINUTE, "second insert", || changes(&job.lines()).len() >= 2);
    p.terminate();
    p.wait(MINUTE);
    let lines = job.lines();
    let ops: Vec<&str> = lines.iter().map(|l| l["op"].as_str().unwrap()).collect();
    assert_eq!(ops, ["insert", "schema", "insert"]);
    let cols: Vec<&str> = lines[1]["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(cols, ["id", "a", "extra"]);
    assert_eq!(lines[2]["columns"]["extra"], json!(5));
}

#[test]
fn sigterm_drains_and_confirms_the_last_commit() {
    let pg = PgCluster::start();
    let url = pg.create_database("app");
    pg.psql("app", "CREATE TABLE t (id int PRIMARY KEY, v text)");
    // A long flush interval: the data is only written because of the drain.
    let job = Job::new(&url, "t").env("FLUSH_INTERVAL_MS", "600000");
    let mut p = job.spawn_streaming();
    let before_commit = pg.psql(
        "app",
        "WITH ins AS (INSERT INTO t SELECT g, 'v' FROM generate_series(1, 500) g RETURNING 1)
         SELECT pg_current_wal_insert_lsn() - '0/0' FROM (SELECT count(*) FROM ins) c",
    );
    let before_commit: f64 = before_commit.trim().parse().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    p.terminate();
    assert!(p.wait(MINUTE).success(), "{}", p.log());
    assert_eq!(changes(&job.lines()).len(), 500);
    let confirmed = slot_confirmed(&pg, "app", "dbmazz_slot");
    assert!(
        confirmed as f64 > before_commit,
        "confirmed {confirmed} must pass the commit"
    );
    let stored = pg.psql(
        "app",
        "SELECT lsn - '0/0' FROM dbmazz_checkpoints WHERE slot_name = 'dbmazz_slot'",
    );
    assert_eq!(stored.trim().parse::<f64>().unwrap() as u64, confirmed);
}

#[test]
fn restart_resumes_after_the_checkpoint_without_duplicates() {
    let pg = PgCluster::start();
    let url = pg.create_database("app");
    pg.psql("app", "CREATE TABLE t (id int PRIMARY KEY)");
    let job = Job::new(&url, "t");
    let mut p = job.spawn_streaming();
    pg.psql("app", "INSERT INTO t SELECT generate_series(1, 100)");
    wait_until(MINUTE, "first 100 rows", || {
        changes(&job.lines()).len() >= 100
    });
    p.terminate();
    assert!(p.wait(MINUTE).success());
    pg.psql("app", "INSERT INTO t SELECT generate_series(101, 150)");
    let mut p = job.spawn_streaming();
    wait_until(MINUTE, "150 rows", || changes(&job.lines()).len() >= 150);
    std::thread::sleep(Duration::from_millis(500));
    p.terminate();
    assert!(p.wait(MINUTE).success());
    let lines = job.lines();
    let ids: Vec<i64> = changes(&lines)
        .iter()
        .map(|l| l["key"]["id"].as_i64().unwrap())
        .collect();
    assert_eq!(
        ids,
        (1..=150).collect::<Vec<_>>(),
        "each row exactly once, in order"
    );
}

#[test]
fn kill_9_mid_workload_loses_nothing_and_replays_only_the_unconfirmed_tail() {
    let pg = PgCluster::start();
    let url = pg.create_database("app");
    pg.psql(
        "app",
        "CREATE TABLE acct (id int PRIMARY KEY, balance bigint NOT NULL, note text);
         CREATE TABLE ledger (id bigserial PRIMARY KEY, acct int, amount bigint);
         INSERT INTO acct SELECT g, 1000, 'n' FROM generate_series(1, 50) g;",
    );
    pg.psql(
        "app",
        "SELECT pg_create_logical_replication_slot('reference', 'test_decoding')",
    );
    let job = Job::new(&url, "acct,ledger").env("FLUSH_SIZE", "50");
    let mut p = job.spawn_streaming();

    let workload = {
        let port = pg.port;
        std::thread::spawn(move || {
            for i in 0..240 {
                let a = i % 50 + 1;
                let b = (i * 7) % 50 + 1;
                let sql = format!(
                    "BEGIN;
                     UPDATE acct SET balance = balance - 5, note = 'tx{i}' WHERE id = {a};
                     UPDATE acct SET balance = balance + 5 WHERE id = {b};
                     INSERT INTO ledger (acct, amount) VALUES ({a}, -5), ({b}, 5);
                     {}
                     COMMIT;",
                    if i % 20 == 0 {
                        format!("DELETE FROM ledger WHERE id % 20 = {};", i % 7)
                    } else {
                        String::new()
                    }
                );
                let status = std::process::Command::new(psql_path())
                    .args([
                        "-X",
                        "-q",
                        "-h",
                        "127.0.0.1",
                        "-p",
                        &port.to_string(),
                        "-U",
                        "postgres",
                        "-d",
                        "app",
                        "-v",
                        "ON_ERROR_STOP=1",
                        "-c",
                        &sql,
                    ])
                    .status()
                    .unwrap();
                assert!(status.success());
                std::thread::sleep(Duration::from_millis(15));
            }
        })
    };

    wait_until(MINUTE, "some progress before the kill", || {
        changes(&job.lines()).len() > 300
    });
    p.kill9();
    // Nobody can confirm anything now: this is the replay bound.
    std::thread::sleep(Duration::from_millis(300));
    let confirmed_at_kill = slot_confirmed(&pg, "app", "dbmazz_slot");
    let lines_at_kill = job.lines().len();
    std::thread::sleep(Duration::from_millis(500));
    let mut p = job.spawn_streaming();
    workload.join().unwrap();

    let expected: BTreeSet<u64> = pg
        .psql(
            "app",
            "SELECT lsn - '0/0' FROM pg_logical_slot_peek_changes('reference', NULL, NULL)
              WHERE data LIKE 'table public.acct:%' OR data LIKE 'table public.ledger:%'",
        )
        .lines()
        .map(|l| l.trim().parse::<f64>().unwrap() as u64)
        .collect();
    wait_until(MINUTE, "every change in the output", || {
        let seen: BTreeSet<u64> = changes(&job.lines())
            .iter()
            .map(|l| lsn(l["lsn"].as_str().unwrap()))
            .collect();
        seen.is_superset(&expected)
    });
    p.terminate();
    assert!(p.wait(MINUTE).success(), "{}", p.log());

    let lines = job.lines();
    let seen: Vec<u64> = changes(&lines)
        .iter()
        .map(|l| lsn(l["lsn"].as_str().unwrap()))
        .collect();
    let unique: BTreeSet<u64> = seen.iter().copied().collect();
    assert_eq!(
        unique, expected,
        "the output is exactly the source's changes"
    );
    // Duplicates come only from the window after the last confirmed commit.
    let mut counts: BTreeMap<u64, usize> = BTreeMap::new();
    for l in changes(&lines) {
        *counts.entry(lsn(l["lsn"].as_str().unwrap())).or_default() += 1;
    }
    for l in changes(&lines) {
        let at = lsn(l["lsn"].as_str().unwrap());
        if counts[&at] > 1 {
            let commit = lsn(l["commit_lsn"].as_str().unwrap());
            assert!(
                commit >= confirmed_at_kill,
                "change at {at:#x} (commit {commit:#x}) was replayed although {confirmed_at_kill:#x} was confirmed"
            );
        }
    }
    assert!(lines.len() >= lines_at_kill);
    for (t, key) in [("acct", ["id"]), ("ledger", ["id"])] {
        assert_eq!(
            sink_state_of(&lines, t),
            source_state(&pg, "app", t, &key),
            "table {t}"
        );
    }
}

#[test]
fn confirmed_flush_never_passes_what_the_stalled_sink_holds() {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;

    let pg = PgCluster::start();
    let url = pg.create_database("app");
    pg.psql(
        "app",
        "CREATE TABLE t (id int PRIMARY KEY, batch int, pad text)",
    );
    let job = Job::new(&url, "t")
        .env("FLUSH_SIZE", "10")
        .env("FLUSH_INTERVAL_MS", "20");
    let fifo = job.dir().join("sink.fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let mut reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo)
        .unwrap();
    let pipe_capacity = unsafe { libc::fcntl(std::os::fd::AsRawFd::as_raw_fd(&reader), 1032) };
    assert!(pipe_capacity > 0);
    let job = job.env("NDJSON_PATH", fifo.to_str().unwrap());
    let p = job.spawn();
    let mut p = p;
    p.wait_for_log("streaming changes", MINUTE);

    pg.psql(
        "app",
        "DO $$ BEGIN FOR b IN 1..300 LOOP
           INSERT INTO t SELECT b * 100 + g, b, repeat('p', 200) FROM generate_series(1, 10) g;
           COMMIT; END LOOP; END $$;",
    );
    let end_of_workload = lsn(&pg.psql("app", "SELECT pg_current_wal_lsn()"));
    // The sink is stalled: nothing has been read from the pipe.
    std::thread::sleep(Duration::from_secs(2));
    let confirmed = slot_confirmed(&pg, "app", "dbmazz_slot");
    assert!(
        confirmed < end_of_workload,
        "confirmed {confirmed:#x} passed data the sink cannot hold"
    );

    // Drain the pipe: everything arrives eventually.
    let mut data = Vec::new();
    let mut chunk = vec![0u8; 1 << 16];
    let deadline = std::time::Instant::now() + MINUTE;
    while data.iter().filter(|b| **b == b'\n').count() < 3000 {
        match reader.read(&mut chunk) {
            Ok(n) if n > 0 => data.extend_from_slice(&chunk[..n]),
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
        assert!(
            std::time::Instant::now() < deadline,
            "3000 lines did not come through the pipe; log:\n{}",
            p.log()
        );
    }
    p.terminate();
    // Only the first pipe_capacity bytes can have been written while the sample was taken:
    // every transaction committed before the confirmed LSN must be complete in them.
    let prefix = &data[..(pipe_capacity as usize).min(data.len())];
    let prefix_text = String::from_utf8_lossy(prefix);
    let mut rows_per_commit: BTreeMap<u64, usize> = BTreeMap::new();
    for line in prefix_text
        .lines()
        .filter_map(|l| serde_json::from_str::<Json>(l).ok())
    {
        *rows_per_commit
            .entry(lsn(line["commit_lsn"].as_str().unwrap()))
            .or_default() += 1;
    }
    let all: Vec<Json> = String::from_utf8_lossy(&data)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let committed_before: BTreeSet<u64> = all
        .iter()
        .map(|l| lsn(l["commit_lsn"].as_str().unwrap()))
        .filter(|c| *c < confirmed)
        .collect();
    for commit in committed_before {
        assert_eq!(
            rows_per_commit.get(&commit).copied().unwrap_or(0),
            10,
            "transaction {commit:#x} was confirmed before all its rows were written"
        );
    }
    p.wait(MINUTE);
}

#[test]
fn million_row_transaction_streams_with_bounded_memory() {
    let pg = PgCluster::start();
    let url = pg.create_database("app");
    pg.psql("app", "CREATE TABLE big (id int PRIMARY KEY, v text)");
    let job = Job::new(&url, "big").env("FLUSH_SIZE", "5000");
    let mut p = job.spawn_streaming();
    pg.psql(
        "app",
        "INSERT INTO big SELECT g, md5(g::text) FROM generate_series(1, 1000000) g",
    );
    let count_lines = || {
        std::fs::read(job.out())
            .map(|d| d.iter().filter(|b| **b == b'\n').count())
            .unwrap_or(0)
    };
    wait_until(Duration::from_secs(300), "a million lines", || {
        count_lines() >= 1_000_000
    });
    let peak_kib = p.peak_rss_kib();
    p.terminate();
    assert!(p.wait(MINUTE).success());
    assert_eq!(count_lines(), 1_000_000);
    // The transaction is ~100 MB of output; memory must not follow it.
    assert!(
        peak_kib < 96 * 1024,
        "peak RSS {peak_kib} KiB is not bounded"
    );
}

#[test]
fn invalid_configuration_exits_2_naming_the_variable() {
    for (var, value) in [
        ("FLUSH_SIZE", "lots"),
        ("TABLES", "a,,b"),
        ("SINK_TYPE", "kafka"),
    ] {
        let job = Job::new("postgres://u:canary-pw@127.0.0.1:1/db", "t").env(var, value);
        let mut p = job.spawn();
        let status = p.wait(MINUTE);
        assert_eq!(status.code(), Some(2), "{var}={value}");
        let log = p.log();
        assert!(log.contains(var), "{log}");
        assert_eq!(log.lines().count(), 1, "one clear line: {log}");
        assert!(!log.contains("canary-pw"));
    }
}

fn setup_error(pg: &PgCluster, url: &str, tables: &str) -> String {
    let job = Job::new(url, tables);
    let mut p = job.spawn();
    let status = p.wait(MINUTE);
    assert_eq!(status.code(), Some(1), "{}", p.log());
    let _ = pg;
    p.log()
}

#[test]
fn missing_table_and_missing_primary_key_are_clear_errors() {
    let pg = PgCluster::start();
    let url = pg.create_database("app");
    pg.psql(
        "app",
        "CREATE TABLE keyless (a int); CREATE TABLE ok (id int PRIMARY KEY);",
    );
    let log = setup_error(&pg, &url, "ok,nope");
    assert!(
        log.contains("Table 'public.nope' not found in PostgreSQL"),
        "{log}"
    );
    let log = setup_error(&pg, &url, "ok,keyless");
    assert!(
        log.contains("table public.keyless has no primary key"),
        "{log}"
    );
    assert!(log.contains("ADD PRIMARY KEY"), "{log}");
}

#[test]
fn wal_level_replica_is_refused_with_a_hint() {
    let pg = PgCluster::start_with(PgOptions {
        wal_level: "replica",
        ..PgOptions::default()
    });
    let url = pg.create_database("app");
    pg.psql("app", "CREATE TABLE t (id int PRIMARY KEY)");
    let log = setup_error(&pg, &url, "t");
    assert!(log.contains("wal_level is \"replica\""), "{log}");
    assert!(
        log.contains("ALTER SYSTEM SET wal_level = logical"),
        "{log}"
    );
}

#[test]
fn wrong_password_is_refused_without_leaking_it() {
    let pg = PgCluster::start_with(PgOptions {
        hba: vec!["host all app_user 127.0.0.1/32 scram-sha-256".into()],
        ..PgOptions::default()
    });
    pg.create_database("app");
    pg.psql("app", "CREATE ROLE app_user LOGIN REPLICATION PASSWORD 'right-pw'; CREATE TABLE t (id int PRIMARY KEY);");
    let url = pg.url_as("app_user", "canary-wrong-pw", "app");
    let log = setup_error(&pg, &url, "t");
    assert!(log.contains("password authentication failed"), "{log}");
    assert!(log.contains("app_user"), "{log}");
    assert!(!log.contains("canary-wrong-pw"), "{log}");
}

#[test]
fn dropped_slot_with_a_checkpoint_is_refused_not_recreated() {
    let pg = PgCluster::start();
    let url = pg.create_database("app");
    pg.psql("app", "CREATE TABLE t (id int PRIMARY KEY)");
    let job = Job::new(&url, "t");
    let mut p = job.spawn_streaming();
    pg.psql("app", "INSERT INTO t VALUES (1)");
    wait_until(MINUTE, "the insert", || !changes(&job.lines()).is_empty());
    p.terminate();
    assert!(p.wait(MINUTE).success());
    pg.psql("app", "SELECT pg_drop_replication_slot('dbmazz_slot')");
    let mut p = job.spawn();
    assert_eq!(p.wait(MINUTE).code(), Some(1));
    assert!(
        p.log()
            .contains("does not exist, but dbmazz_checkpoints holds LSN"),
        "{}",
        p.log()
    );
    assert_eq!(
        pg.psql("app", "SELECT count(*) FROM pg_replication_slots"),
        "0",
        "no fresh slot papers over the loss"
    );
}
