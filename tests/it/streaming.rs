//! Large transactions streamed while they run (pgoutput protocol 2, `streaming 'on'`): staged
//! and spilled by dbmazz, delivered whole at their commit, in commit order. Real PostgreSQL with
//! `logical_decoding_work_mem = 64kB`, so that a few thousand rows are enough to be streamed;
//! the real binary; the NDJSON sink and the per-key oracle.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value as Json;

use crate::cdc::{sink_state_of, source_state};
use crate::support::dbmazz::{final_state, parse_lsn, wait_until, Job};
use crate::support::pg::{PgCluster, PgOptions};

const MINUTE: Duration = Duration::from_secs(60);

fn streaming_cluster() -> PgCluster {
    PgCluster::start_with(PgOptions {
        extra_conf: vec!["logical_decoding_work_mem = '64kB'".into()],
        ..PgOptions::default()
    })
}

/// A job with its own spill directory (inside the job's scratch directory).
fn job(url: &str, tables: &str) -> (Job, PathBuf) {
    let job = Job::new(url, tables);
    let spill = job.dir().join("spill");
    let job = job
        .env("SPILL_DIR", &spill.display().to_string())
        .env("SPILL_MEMORY_BYTES", "65536");
    (job, spill)
}

/// The spill files in `dir` (not the job's lock file), with their sizes.
fn spill_files(dir: &Path) -> Vec<(String, u64)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<(String, u64)> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".spill"))
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                e.metadata().map(|m| m.len()).unwrap_or(0),
            )
        })
        .collect();
    v.sort();
    v
}

/// `spill_bytes`, `stream_bytes` and `stream_txns` of the slot in `pg_stat_replication_slots`.
fn slot_stats(pg: &PgCluster) -> (u64, u64, u64) {
    let row = pg.psql(
        "app",
        "SELECT spill_bytes, stream_bytes, stream_txns FROM pg_stat_replication_slots \
         WHERE slot_name = 'dbmazz_slot'",
    );
    let v: Vec<u64> = row.split('|').map(|x| x.parse().unwrap_or(0)).collect();
    (
        v.first().copied().unwrap_or(0),
        v.get(1).copied().unwrap_or(0),
        v.get(2).copied().unwrap_or(0),
    )
}

/// Occurrences of `needle` in the NDJSON file, counted without parsing it.
fn count_in_file(path: &Path, needle: &[u8]) -> usize {
    std::fs::read(path).map_or(0, |b| {
        b.windows(needle.len()).filter(|w| *w == needle).count()
    })
}

/// Lines in the NDJSON file, counted without parsing them.
fn line_count(path: &Path) -> usize {
    std::fs::read(path).map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count())
}

fn rows_of<'a>(lines: &'a [Json], table: &str) -> Vec<&'a Json> {
    lines
        .iter()
        .filter(|l| {
            l["table"] == table && matches!(l["op"].as_str(), Some("insert" | "update" | "delete"))
        })
        .collect()
}

fn has_key(lines: &[Json], table: &str, id: i64) -> bool {
    rows_of(lines, table)
        .iter()
        .any(|l| l["key"]["id"].as_i64() == Some(id))
}

fn position(lines: &[Json], table: &str, id: i64) -> usize {
    lines
        .iter()
        .position(|l| l["table"] == table && l["key"]["id"].as_i64() == Some(id))
        .unwrap_or_else(|| panic!("{table} {id} not in the output"))
}

fn commit_lsn(line: &Json) -> u64 {
    parse_lsn(line["commit_lsn"].as_str().unwrap())
}

#[test]
fn a_streamed_transaction_arrives_whole_at_its_commit_in_commit_order() {
    let pg = streaming_cluster();
    let url = pg.create_database("app");
    pg.psql(
        "app",
        "CREATE TABLE big (id int PRIMARY KEY, v text); CREATE TABLE small (id int PRIMARY KEY, v text);",
    );
    let (job, spill) = job(&url, "big,small");
    let mut p = job.spawn_streaming();

    pg.psql("app", "INSERT INTO small VALUES (1, 'before')");
    let mut s = pg.session("app");
    s.run(
        &pg,
        "BEGIN; INSERT INTO big SELECT g, repeat('a', 200) FROM generate_series(1, 3000) g;",
    );
    pg.psql("app", "INSERT INTO small VALUES (2, 'during')");
    // The open transaction was streamed to dbmazz and spilled past the 64 kB budget...
    wait_until(MINUTE, "a spill file of the open transaction", || {
        spill_files(&spill)
            .iter()
            .any(|(n, _)| n.starts_with("dbmazz_slot-"))
    });
    wait_until(MINUTE, "the small transaction committed during it", || {
        has_key(&job.lines(), "small", 2)
    });
    // ...and nothing of it reached the sink before its commit.
    assert!(
        rows_of(&job.lines(), "big").is_empty(),
        "a row of an open transaction was written"
    );
    s.run(
        &pg,
        "UPDATE big SET v = 'b' WHERE id <= 100; DELETE FROM big WHERE id > 2900; COMMIT;",
    );
    s.close();
    pg.psql("app", "INSERT INTO small VALUES (3, 'after')");
    wait_until(MINUTE, "the small transaction committed after it", || {
        has_key(&job.lines(), "small", 3)
    });
    p.terminate();
    assert!(p.wait(MINUTE).success(), "{}", p.log());

    let lines = job.lines();
    let big = rows_of(&lines, "big");
    assert_eq!(
        big.len(),
        3000 + 100 + 100,
        "every change of the streamed transaction"
    );
    let big_commit = commit_lsn(big[0]);
    assert!(
        big.iter().all(|l| commit_lsn(l) == big_commit),
        "one commit LSN"
    );
    assert!(big
        .windows(2)
        .all(|w| parse_lsn(w[0]["lsn"].as_str().unwrap())
            <= parse_lsn(w[1]["lsn"].as_str().unwrap())));
    // Commit order: the small transactions around it keep their places.
    let first_big = lines.iter().position(|l| l["table"] == "big").unwrap();
    let last_big = lines.iter().rposition(|l| l["table"] == "big").unwrap();
    assert!(position(&lines, "small", 1) < first_big);
    assert!(position(&lines, "small", 2) < first_big);
    assert!(position(&lines, "small", 3) > last_big);
    assert!(commit_lsn(&lines[position(&lines, "small", 2)]) < big_commit);
    assert!(commit_lsn(&lines[position(&lines, "small", 3)]) > big_commit);
    for t in ["big", "small"] {
        assert_eq!(
            sink_state_of(&lines, t),
            source_state(&pg, "app", t, &["id"]),
            "{t}"
        );
    }
    wait_until(MINUTE, "PostgreSQL's streaming statistics", || {
        slot_stats(&pg).1 > 0
    });
    assert_eq!(slot_stats(&pg).0, 0, "PostgreSQL spilled to its own disk");
    assert!(spill_files(&spill).is_empty(), "{:?}", spill_files(&spill));
}

#[test]
fn rolled_back_savepoints_and_an_aborted_transaction_leave_nothing_behind() {
    let pg = streaming_cluster();
    let url = pg.create_database("app");
    pg.psql(
        "app",
        "CREATE TABLE big (id int PRIMARY KEY, v text); CREATE TABLE small (id int PRIMARY KEY);",
    );
    let (job, spill) = job(&url, "big,small");
    let job = job.env("RUST_LOG", "info,dbmazz::postgres::reader=debug");
    let mut p = job.spawn_streaming();

    // Each step streams (over 64 kB of changes) before the next savepoint decides its fate.
    let mut s = pg.session("app");
    for step in [
        "BEGIN; INSERT INTO big SELECT g, 'kept' FROM generate_series(1, 1000) g;",
        "SAVEPOINT a; INSERT INTO big SELECT g, 'gone' FROM generate_series(1001, 2000) g;",
        "SAVEPOINT b; INSERT INTO big SELECT g, 'gone' FROM generate_series(2001, 3000) g;",
        // A column added in a rolled-back savepoint must not reach the sink's schema. (PostgreSQL
        // 15 was seen to hold the changes after the ALTER until the rollback, so only what it
        // streamed before the ALTER reaches dbmazz; other versions may stream more.)
        "ALTER TABLE big ADD COLUMN extra int;
         INSERT INTO big SELECT g, 'gone', 1 FROM generate_series(9001, 11000) g;",
        "ROLLBACK TO a;",
        "INSERT INTO big SELECT g, 'kept' FROM generate_series(3001, 4000) g;",
        "SAVEPOINT c; UPDATE big SET v = 'updated' WHERE id <= 10; RELEASE c;",
        "SAVEPOINT d; DELETE FROM big WHERE id <= 500; ROLLBACK TO d;",
        "COMMIT;",
    ] {
        s.run(&pg, step);
    }
    // A whole transaction streamed and then rolled back.
    s.run(
        &pg,
        "BEGIN; INSERT INTO big SELECT g, 'aborted' FROM generate_series(5001, 8000) g;",
    );
    wait_until(MINUTE, "a spill file of the open transaction", || {
        !spill_files(&spill).is_empty()
    });
    s.run(&pg, "ROLLBACK;");
    s.close();
    pg.psql("app", "INSERT INTO small VALUES (1)");
    wait_until(MINUTE, "the marker after the rollback", || {
        has_key(&job.lines(), "small", 1)
    });
    wait_until(MINUTE, "the aborted transaction's spill removed", || {
        spill_files(&spill).is_empty()
    });
    p.terminate();
    assert!(p.wait(MINUTE).success(), "{}", p.log());

    let lines = job.lines();
    let big = rows_of(&lines, "big");
    assert!(
        big.iter()
            .all(|l| l["columns"]["v"] != "gone" && l["columns"]["v"] != "aborted"),
        "a rolled-back change reached the sink"
    );
    assert!(
        big.iter().all(|l| l["op"] != "delete"),
        "a rolled-back delete reached the sink"
    );
    assert_eq!(big.len(), 2000 + 10);
    assert!(
        lines
            .iter()
            .filter(|l| l["op"] == "schema")
            .all(|l| !l.to_string().contains("\"extra\"")),
        "the rolled-back column reached the sink's schema"
    );
    assert!(big.iter().all(|l| l["columns"].get("extra").is_none()));
    assert_eq!(
        sink_state_of(&lines, "big"),
        source_state(&pg, "app", "big", &["id"])
    );
    // The savepoint transaction reached dbmazz streamed (not sent whole at its commit).
    assert!(
        p.log().contains("streamed transaction committed"),
        "{}",
        p.log()
    );
}

#[test]
fn toast_values_and_unchanged_toast_updates_inside_a_streamed_transaction() {
    let pg = streaming_cluster();
    let url = pg.create_database("app");
    pg.psql(
        "app",
        "CREATE TABLE docs (id int PRIMARY KEY, n int, body text);
         ALTER TABLE docs ALTER COLUMN body SET STORAGE EXTERNAL;
         INSERT INTO docs SELECT g, 0, repeat(md5(g::text), 400) FROM generate_series(1, 20) g;",
    );
    let (job, _spill) = job(&url, "docs");
    let mut p = job.spawn_streaming();
    wait_until(MINUTE, "the snapshot of the 20 rows", || {
        final_state(&job.lines()).len() == 20
    });
    // Unchanged TOAST in a table still being copied is filled from the source; wait for the end.
    p.wait_for_log("snapshot complete, streaming only", MINUTE);
    let mut s = pg.session("app");
    s.run(
        &pg,
        "BEGIN; INSERT INTO docs SELECT g, 0, repeat(md5(g::text), 400) FROM generate_series(21, 200) g;
         UPDATE docs SET n = n + 1;
         UPDATE docs SET body = 'short' WHERE id % 10 = 0;
         COMMIT;",
    );
    s.close();
    wait_until(MINUTE, "the last update", || {
        rows_of(&job.lines(), "docs")
            .iter()
            .any(|l| l["columns"]["body"] == "short" && l["key"]["id"] == 200)
    });
    p.terminate();
    assert!(p.wait(MINUTE).success(), "{}", p.log());

    let lines = job.lines();
    let docs = rows_of(&lines, "docs");
    let updates: Vec<&&Json> = docs
        .iter()
        .filter(|l| l["op"] == "update" && l["columns"]["body"] != "short")
        .collect();
    assert_eq!(updates.len(), 200);
    // The update that left body alone marks it unchanged (never null) for the stored rows.
    assert!(updates
        .iter()
        .filter(|l| l["key"]["id"].as_i64().unwrap() <= 20)
        .all(|l| l["unchanged_toast"] == serde_json::json!(["body"])));
    assert_eq!(
        sink_state_of(&lines, "docs"),
        source_state(&pg, "app", "docs", &["id"])
    );
    wait_until(MINUTE, "PostgreSQL's streaming statistics", || {
        slot_stats(&pg).1 > 0
    });
}

#[test]
fn kill_9_while_streaming_and_while_delivering_then_restart_converges() {
    let pg = streaming_cluster();
    let url = pg.create_database("app");
    pg.psql(
        "app",
        "CREATE TABLE big (id int PRIMARY KEY, v text); CREATE TABLE small (id int PRIMARY KEY);",
    );
    let (job, spill) = job(&url, "big,small");
    let job = job.env("FLUSH_SIZE", "500");
    let mut p = job.spawn_streaming();

    // 1. Killed while a transaction is being streamed: its spill file is left behind.
    let mut s = pg.session("app");
    s.run(
        &pg,
        "BEGIN; INSERT INTO big SELECT g, 'one' FROM generate_series(1, 5000) g;",
    );
    wait_until(MINUTE, "a spill file", || !spill_files(&spill).is_empty());
    p.kill9();
    let left = spill_files(&spill);
    assert!(!left.is_empty());
    let mut p = job.spawn_streaming();
    // PostgreSQL sends the open transaction again from its start, under the same xid (so the
    // same file name): the log says the old file went first.
    assert!(
        p.log().contains("removed spill files of an earlier run")
            && p.log().contains(&format!("files={}", left.len())),
        "{}",
        p.log()
    );
    s.run(
        &pg,
        "INSERT INTO big SELECT g, 'one' FROM generate_series(5001, 6000) g; COMMIT;",
    );

    wait_until(MINUTE, "the first transaction written", || {
        count_in_file(&job.out(), br#""v":"one""#) == 6000
    });

    // 2. Killed while a committed streamed transaction is being delivered.
    let file_len = || std::fs::metadata(job.out()).map_or(0, |m| m.len());
    let before = file_len();
    s.run(
        &pg,
        "BEGIN; INSERT INTO big SELECT g, 'two' FROM generate_series(100001, 300000) g; COMMIT;",
    );
    s.close();
    wait_until(2 * MINUTE, "the second transaction being written", || {
        file_len() > before + 1_000_000
    });
    p.kill9();
    let written = count_in_file(&job.out(), br#""v":"two""#);
    assert!(
        written > 0 && written < 200_000,
        "not killed in the middle of the delivery: {written} of 200000 rows written"
    );
    let mut p = job.spawn_streaming();
    pg.psql("app", "INSERT INTO small VALUES (1)");
    wait_until(3 * MINUTE, "the marker after both transactions", || {
        count_in_file(&job.out(), br#""table":"small""#) > 0
    });
    p.terminate();
    assert!(p.wait(MINUTE).success(), "{}", p.log());

    let lines = job.lines();
    assert_eq!(final_state(&lines).len(), 6000 + 200_000 + 1);
    assert_eq!(
        sink_state_of(&lines, "big"),
        source_state(&pg, "app", "big", &["id"])
    );
    assert!(spill_files(&spill).is_empty(), "{:?}", spill_files(&spill));
    eprintln!("second transaction: {written} of 200000 rows written when killed");
}

#[test]
fn three_large_open_transactions_stay_within_the_memory_budget() {
    let pg = streaming_cluster();
    let url = pg.create_database("app");
    pg.psql(
        "app",
        "CREATE TABLE a (id int PRIMARY KEY, v text); CREATE TABLE b (id int PRIMARY KEY, v text);
         CREATE TABLE c (id int PRIMARY KEY, v text);",
    );
    let job = Job::new(&url, "a,b,c");
    let spill = job.dir().join("spill");
    // The default SPILL_MEMORY_BYTES (1 MiB).
    let job = job.env("SPILL_DIR", &spill.display().to_string());
    let mut p = job.spawn_streaming();
    let rss_before = p.peak_rss_kib();
    let mut sessions = Vec::new();
    for t in ["a", "b", "c"] {
        let mut s = pg.session("app");
        s.run(
            &pg,
            &format!(
                "BEGIN; INSERT INTO {t} SELECT g, repeat(md5(g::text), 8) FROM generate_series(1, 100000) g;"
            ),
        );
        sessions.push(s);
    }
    // About 30 MB of row data each, all three open at once.
    wait_until(
        2 * MINUTE,
        "three spill files holding the open transactions",
        || {
            let files = spill_files(&spill);
            files.len() == 3 && files.iter().all(|(_, len)| *len > 20_000_000)
        },
    );
    let peak = p.peak_rss_kib();
    for mut s in sessions {
        s.run(&pg, "COMMIT;");
        s.close();
    }
    wait_until(3 * MINUTE, "every row", || {
        line_count(&job.out()) >= 300_000
    });
    assert_eq!(final_state(&job.lines()).len(), 300_000);
    p.terminate();
    assert!(p.wait(MINUTE).success(), "{}", p.log());
    // 90 MB staged; dbmazz grew by the 1 MiB budget and the pipeline, not by the data.
    assert!(
        peak < rss_before + 24 * 1024,
        "peak RSS {peak} KiB with three open transactions, {rss_before} KiB before"
    );
    assert!(spill_files(&spill).is_empty());
    eprintln!("peak RSS {peak} KiB (before {rss_before} KiB)");
}

#[test]
fn streaming_off_leaves_large_transactions_to_postgresql() {
    let pg = streaming_cluster();
    let url = pg.create_database("app");
    pg.psql("app", "CREATE TABLE big (id int PRIMARY KEY, v text);");
    let (job, spill) = job(&url, "big");
    let job = job.env("STREAMING", "off");
    let mut p = job.spawn_streaming();
    pg.psql(
        "app",
        "INSERT INTO big SELECT g, repeat('a', 200) FROM generate_series(1, 3000) g",
    );
    wait_until(MINUTE, "every row", || {
        rows_of(&job.lines(), "big").len() == 3000
    });
    p.terminate();
    assert!(p.wait(MINUTE).success(), "{}", p.log());
    wait_until(MINUTE, "PostgreSQL spilling the transaction itself", || {
        slot_stats(&pg).0 > 0
    });
    assert_eq!(
        slot_stats(&pg).1,
        0,
        "PostgreSQL streamed with STREAMING=off"
    );
    assert!(!spill.exists(), "STREAMING=off must not create SPILL_DIR");
}

#[test]
fn the_spill_limit_stops_the_job_naming_the_transaction_and_a_larger_one_converges() {
    let pg = streaming_cluster();
    let url = pg.create_database("app");
    pg.psql("app", "CREATE TABLE big (id int PRIMARY KEY, v text)");
    let (job, spill) = job(&url, "big");
    let job = job.env("SPILL_MAX_BYTES", "1048576");
    let mut p = job.spawn_streaming();
    let mut s = pg.session("app");
    s.run(
        &pg,
        "BEGIN; INSERT INTO big SELECT g, repeat('a', 200) FROM generate_series(1, 20000) g;",
    );
    let xid = pg.psql(
        "app",
        "SELECT backend_xid FROM pg_stat_activity WHERE state = 'idle in transaction' \
         AND backend_xid IS NOT NULL",
    );
    // About 5 MB of changes against a 1 MiB limit: the job stops, naming the transaction and
    // the directory, and confirms nothing of it.
    assert_eq!(p.wait(MINUTE).code(), Some(1), "{}", p.log());
    let log = p.log();
    assert!(log.contains("would exceed SPILL_MAX_BYTES"), "{log}");
    assert!(
        log.contains(&format!("streamed transaction {xid} ")),
        "{log}"
    );
    assert!(log.contains(&spill.display().to_string()), "{log}");
    assert!(log.contains("STREAMING=off"), "{log}");
    s.run(&pg, "COMMIT;");
    s.close();
    assert!(rows_of(&job.lines(), "big").is_empty());

    // With room, the restart delivers it whole.
    let job = job.env("SPILL_MAX_BYTES", "1073741824");
    let mut p = job.spawn_streaming();
    wait_until(MINUTE, "every row", || line_count(&job.out()) >= 20_000);
    p.terminate();
    assert!(p.wait(MINUTE).success(), "{}", p.log());
    assert_eq!(
        sink_state_of(&job.lines(), "big"),
        source_state(&pg, "app", "big", &["id"])
    );
    assert!(spill_files(&spill).is_empty());
}
