//! The binary as a newcomer meets it (issue 21): `--help`, `--version`, `dbmazz check` (a
//! preflight that changes nothing), `dbmazz health` (an exec probe) and `LOG_FORMAT=json`,
//! against real PostgreSQL and the StarRocks stand-in.

use std::process::{Command, Output};
use std::time::Duration;

use crate::control::listening;
use crate::starrocks::create_both;
use crate::support::dbmazz::{wait_until, Job};
use crate::support::pg::PgCluster;
use crate::support::starrocks::Double;

const MINUTE: Duration = Duration::from_secs(60);

fn dbmazz(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dbmazz"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .args(args)
        .output()
        .expect("run dbmazz")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Every environment variable the README's tables document (rows starting with a `VAR`).
fn readme_variables() -> Vec<String> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let mut vars = Vec::new();
    for line in readme.lines() {
        let Some(cell) = line.strip_prefix("| `") else {
            continue;
        };
        let first = cell.split(" |").next().unwrap_or("");
        for name in first.split('`').filter(|s| {
            s.len() > 2
                && s.chars()
                    .all(|c| c.is_ascii_uppercase() || c == '_' || c.is_ascii_digit())
        }) {
            if !["SERVING", "NOT_SERVING"].contains(&name) && !vars.iter().any(|v| v == name) {
                vars.push(name.to_owned());
            }
        }
    }
    vars
}

#[test]
fn help_lists_the_commands_and_every_documented_variable_without_a_configuration() {
    let vars = readme_variables();
    assert!(vars.len() > 60, "the README's tables were read: {vars:?}");
    for flag in ["--help", "-h", "help"] {
        let o = dbmazz(&[flag], &[]);
        assert!(o.status.success(), "{flag}: {o:?}");
        let text = stdout(&o);
        for cmd in ["check", "health", "top", "verify", "schema", "--version"] {
            assert!(
                text.contains(&format!("dbmazz {cmd}")),
                "{flag} names {cmd}: {text}"
            );
        }
        for v in &vars {
            assert!(text.contains(v.as_str()), "{flag} lists {v}");
        }
        assert!(text.contains("[dbmazz_slot]"), "defaults are shown");
    }
    let o = dbmazz(&["--version"], &[]);
    assert!(o.status.success());
    let v = stdout(&o);
    assert!(
        v.starts_with(&format!("dbmazz {} (commit ", env!("CARGO_PKG_VERSION"))),
        "{v}"
    );
    assert!(v.contains("gRPC API 1"), "{v}");
    let bad = dbmazz(&["--bogus"], &[]);
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn check_passes_on_a_ready_setup_and_changes_nothing() {
    let pg = PgCluster::start();
    let url = pg.create_database("app");
    let d = Double::start("app");
    create_both(
        &pg,
        &d,
        "CREATE TABLE t (id int PRIMARY KEY, v text)",
        "CREATE TABLE app.t (id INT NOT NULL, v STRING) PRIMARY KEY(id) DISTRIBUTED BY HASH(id)",
    );
    let sr_url = d.url();
    let mysql = d.mysql_url();
    let env = [
        ("DATABASE_URL", url.as_str()),
        ("TABLES", "t"),
        ("STARROCKS_URL", sr_url.as_str()),
        ("STARROCKS_MYSQL_URL", mysql.as_str()),
        ("STARROCKS_DB", "app"),
    ];
    let o = dbmazz(&["check"], &env);
    let text = stdout(&o);
    assert!(
        o.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    for needle in [
        "✓ PostgreSQL: wal_level = logical",
        "✓ PostgreSQL: table public.t has a primary key",
        "✓ PostgreSQL: publication dbmazz_pub will be created",
        "✓ StarRocks: table t exists",
        "every check passed",
    ] {
        assert!(text.contains(needle), "{needle}: {text}");
    }
    assert!(!text.contains('✗'), "{text}");
    // Nothing was created.
    assert_eq!(
        pg.psql(
            "app",
            "SELECT (SELECT count(*) FROM pg_publication) + (SELECT count(*) FROM pg_replication_slots) \
                  + (SELECT count(*) FROM pg_class WHERE relname LIKE 'dbmazz%')"
        ),
        "0"
    );
}

#[test]
fn check_names_each_problem_with_its_fix_and_exits_1() {
    let pg = PgCluster::start();
    let url = pg.create_database("app");
    pg.psql("app", "CREATE TABLE nokey (v text)");
    let o = dbmazz(
        &["check"],
        &[
            ("DATABASE_URL", url.as_str()),
            ("TABLES", "missing,nokey,sales.order_*"),
            ("SINK_TYPE", "ndjson"),
            ("NDJSON_PATH", "/nonexistent-dir/out.ndjson"),
        ],
    );
    let text = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{text}");
    for needle in [
        "✗ PostgreSQL: table public.missing not found",
        "✗ PostgreSQL: table public.nokey has no primary key\n    fix: ALTER TABLE \"public\".\"nokey\" ADD PRIMARY KEY",
        "✗ PostgreSQL: TABLES pattern sales.order_* matches no table yet",
        "✗ NDJSON: /nonexistent-dir does not exist",
        "4 check(s) failed",
    ] {
        assert!(text.contains(needle), "{needle}: {text}");
    }
    let bad = dbmazz(&["check"], &[("TABLES", "t")]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        stdout(&bad).contains("✗ configuration: invalid configuration: DATABASE_URL"),
        "{}",
        stdout(&bad)
    );
}

#[test]
fn health_probe_exits_by_the_daemons_health_and_logs_can_be_json() {
    let pg = PgCluster::start();
    let url = pg.create_database("app");
    pg.psql("app", "CREATE TABLE t (id int PRIMARY KEY)");
    let job = Job::new(&url, "t")
        .env("GRPC_PORT", "0")
        .env("LOG_FORMAT", "json");
    let mut p = job.spawn_streaming();
    let port = listening_json(&mut p);
    // The initial copy of `t` runs next to the stream for a moment (Health: "Snapshot: …"),
    // SERVING as well; then it says Replicating.
    let probe = || dbmazz(&["health", "--grpc", &format!("127.0.0.1:{port}")], &[]);
    let o = probe();
    assert!(o.status.success(), "{o:?}");
    assert!(stdout(&o).starts_with("SERVING "), "{}", stdout(&o));
    wait_until(Duration::from_secs(60), "Health saying Replicating", || {
        stdout(&probe()).starts_with("SERVING Replicating")
    });
    // Every log line is one JSON object with the text form's fields.
    let log = p.log();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let start = lines
        .iter()
        .find(|l| l["message"] == "dbmazz starting")
        .unwrap_or_else(|| panic!("{log}"));
    assert_eq!(start["level"], "INFO");
    assert_eq!(start["slot"], "dbmazz_slot");
    p.terminate();
    assert!(p.wait(MINUTE).success());

    // A failed job stays up with gRPC: the probe says NOT_SERVING and exits 1.
    let job = Job::new(&url, "absent").env("GRPC_PORT", "0");
    let mut p = job.spawn();
    let port = listening(&mut p, "grpc").port();
    p.wait_for_log("replication stopped", MINUTE);
    let o = dbmazz(&["health", "--grpc", &format!("127.0.0.1:{port}")], &[]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(
        stdout(&o).contains("NOT_SERVING Setup failed: Table 'public.absent' not found"),
        "{}",
        stdout(&o)
    );
    p.terminate();
    let _ = p.wait(MINUTE);
    // Nothing listening: 2.
    let o = dbmazz(&["health", "--grpc", &format!("127.0.0.1:{port}")], &[]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    // An unknown LOG_FORMAT is a configuration error.
    let o = dbmazz(&[], &[("LOG_FORMAT", "xml")]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("LOG_FORMAT"));
}

/// The gRPC port from a JSON log's `grpc listening` line.
fn listening_json(p: &mut crate::support::dbmazz::Proc) -> u16 {
    p.wait_for_log("grpc listening", MINUTE);
    let log = p.log();
    let line = log.lines().find(|l| l.contains("grpc listening")).unwrap();
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    v["addr"]
        .as_str()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}
