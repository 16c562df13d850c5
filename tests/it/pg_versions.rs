//! What differs between PostgreSQL majors, seen from outside: the oldest server dbmazz refuses,
//! and the catalog and replication features that only some majors have. The rest of the suite
//! runs unchanged on whichever major `PG_MAJOR` picks (see `scripts/test.sh` for the matrix).

use std::time::Duration;

use crate::support::dbmazz::{wait_until, Job};
use crate::support::pg::{client_bin, pinned_bin, server_major, PgCluster, PgOptions};

const MINUTE: Duration = Duration::from_secs(60);

#[test]
fn postgresql_13_is_refused_at_start_naming_its_version() {
    let pg = PgCluster::start_with(PgOptions {
        bin: Some(pinned_bin("13")),
        ..PgOptions::default()
    });
    let url = pg.create_database("app");
    pg.psql("app", "CREATE TABLE t (id int PRIMARY KEY)");
    let job = Job::new(&url, "t");
    let mut p = job.spawn();
    let status = p.wait(MINUTE);
    let log = p.log();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("PostgreSQL 13.23"), "{log}");
    assert!(log.contains("needs PostgreSQL 14 or later"), "{log}");
    // Refused before touching anything: no publication, no slot.
    assert_eq!(pg.psql("app", "SELECT count(*) FROM pg_publication"), "0");
    assert_eq!(
        pg.psql("app", "SELECT count(*) FROM pg_replication_slots"),
        "0"
    );
}

/// Column lists and row filters (PostgreSQL 15+) would make the stream disagree with the copy,
/// which reads whole tables: a publication with either is refused, naming what to change.
#[test]
fn a_publication_with_a_row_filter_or_a_column_list_is_refused() {
    let pg = PgCluster::start();
    let url = pg.create_database("app");
    pg.psql(
        "app",
        "CREATE TABLE t (id int PRIMARY KEY, note text, qty int)",
    );
    if server_major() < 15 {
        // Neither exists before 15: the syntax itself is refused, so nothing can slip through.
        let sql = "CREATE PUBLICATION dbmazz_pub FOR TABLE t WHERE (id > 10)";
        let out = std::process::Command::new(client_bin().join("psql"))
            .args([
                "-X",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-d",
                "app",
                "-c",
                sql,
            ])
            .arg("-p")
            .arg(pg.port.to_string())
            .output()
            .unwrap();
        assert!(!out.status.success());
        return;
    }
    pg.psql(
        "app",
        "CREATE PUBLICATION dbmazz_pub FOR TABLE t WHERE (id > 10)",
    );
    let log = setup_refused(&url, "t");
    assert!(
        log.contains("publishes public.t with a row filter (WHERE (id > 10))"),
        "{log}"
    );
    pg.psql("app", "ALTER PUBLICATION dbmazz_pub SET TABLE t (id, qty)");
    let log = setup_refused(&url, "t");
    assert!(
        log.contains("publishes only some columns of public.t (missing: note)"),
        "{log}"
    );
    pg.psql("app", "ALTER PUBLICATION dbmazz_pub SET TABLE t");
    let job = Job::new(&url, "t");
    let mut p = job.spawn_streaming();
    p.terminate();
    assert!(p.wait(MINUTE).success(), "{}", p.log());
    assert_eq!(
        pg.psql("app", "SELECT count(*) FROM pg_replication_slots"),
        "1"
    );
}

/// Generated columns are not replicated, on every major: pgoutput leaves stored ones out unless
/// a PostgreSQL 18 publication asks for them, virtual ones (18) are never decoded, and the copy
/// leaves both out, so copied and streamed rows have the same columns. An 18 publication that
/// publishes them is refused, with the statement that turns it off.
#[test]
fn generated_columns_are_left_out_of_copy_and_stream_alike() {
    let pg = PgCluster::start();
    let url = pg.create_database("app");
    let virtual_column = if server_major() >= 18 {
        ", v int GENERATED ALWAYS AS (a * 3) VIRTUAL"
    } else {
        ""
    };
    pg.psql(
        "app",
        &format!(
            "CREATE TABLE t (id int PRIMARY KEY, a int, \
             g int GENERATED ALWAYS AS (a * 2) STORED{virtual_column});
             INSERT INTO t (id, a) VALUES (1, 10);"
        ),
    );
    let job = Job::new(&url, "t");
    let mut p = job.spawn_streaming();
    pg.psql(
        "app",
        "INSERT INTO t (id, a) VALUES (2, 20); UPDATE t SET a = 11 WHERE id = 1",
    );
    wait_until(MINUTE, "the copied row and two changes", || {
        job.lines()
            .iter()
            .filter(|l| matches!(l["op"].as_str(), Some("snapshot" | "insert" | "update")))
            .count()
            >= 3
    });
    p.terminate();
    assert!(p.wait(MINUTE).success(), "{}", p.log());
    for line in job.lines().iter().filter(|l| l.get("columns").is_some()) {
        let mut names: Vec<&String> = line["columns"].as_object().unwrap().keys().collect();
        names.sort();
        assert_eq!(names, ["a", "id"], "{line}");
    }

    if server_major() >= 18 {
        pg.psql(
            "app",
            "ALTER PUBLICATION dbmazz_pub SET (publish_generated_columns = stored)",
        );
        let log = setup_refused(&url, "t");
        assert!(
            log.contains("publication dbmazz_pub publishes generated columns of public.t (g)"),
            "{log}"
        );
        assert!(
            log.contains(
                "ALTER PUBLICATION \"dbmazz_pub\" SET (publish_generated_columns = none);"
            ),
            "{log}"
        );
    }
}

/// Runs a job that must stop during setup (exit code 1); returns its log.
fn setup_refused(url: &str, tables: &str) -> String {
    let job = Job::new(url, tables);
    let mut p = job.spawn();
    let status = p.wait(MINUTE);
    let log = p.log();
    assert_eq!(status.code(), Some(1), "{log}");
    log
}
