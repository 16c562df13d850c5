//! Database-per-tenant fleets through the real daemon (provisioning only) and the real
//! `dbmazz schema` CLI: two real PostgreSQL servers and a real MariaDB from a servers file,
//! tenants placed by the rule, migrations fanned out with failures, a `kill -9` in the middle
//! of a fan-out, and a server that is down. Every outcome is checked in the servers
//! themselves.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::Value as Json;

use crate::support::dbmazz::{wait_until, Job, Proc};
use crate::support::grpcurl::Client;
use crate::support::mariadb::{self, MariaDb};
use crate::support::pg::{PgCluster, PgOptions};

const WAIT: Duration = Duration::from_secs(120);
const ROLE: &str = "tenant_owner";
const ROLE_PASSWORD: &str = "tenant-pw-1";

/// A PostgreSQL server where the tenant role logs in with its password.
fn pg_server() -> PgCluster {
    let pg = PgCluster::start_with(PgOptions {
        hba: vec![format!("host all {ROLE} 127.0.0.1/32 scram-sha-256")],
        ..PgOptions::default()
    });
    pg.psql(
        "postgres",
        &format!("CREATE ROLE {ROLE} LOGIN PASSWORD '{ROLE_PASSWORD}'"),
    );
    pg
}

/// A provisioning-only daemon over the servers of `toml`, gRPC on a free port.
struct Fleet {
    job: Job,
    p: Proc,
    port: u16,
}

impl Fleet {
    fn start(toml: &str, extra: &[(&str, &str)]) -> Fleet {
        let mut job = Job::new("unused", "unused")
            .without("DATABASE_URL")
            .without("TABLES")
            .without("SINK_TYPE")
            .without("NDJSON_PATH")
            .without("FLUSH_INTERVAL_MS")
            .env("GRPC_PORT", "0")
            // Thirty tenants within a minute are the point here.
            .env("RATE_LIMIT_MAX", "0")
            .env("PROVISION_ROLE", ROLE)
            .env("PROVISION_ROLE_PASSWORD", ROLE_PASSWORD);
        let servers = job.dir().join("servers.toml");
        std::fs::write(&servers, toml).unwrap();
        let tmp = job.dir().join("schemas");
        job = job
            .env("PROVISION_SERVERS_FILE", &servers.display().to_string())
            .env("SCHEMA_TMP_PATH", &tmp.display().to_string());
        for (k, v) in extra {
            job = job.env(k, v);
        }
        let mut p = job.spawn();
        let port = grpc_port(&mut p);
        Fleet { job, p, port }
    }

    /// Restarts the daemon (after a kill).
    fn restart(&mut self) {
        self.p = self.job.spawn();
        self.port = grpc_port(&mut self.p);
    }

    fn grpc(&self) -> Client {
        Client::new(self.port)
    }

    /// Runs `dbmazz schema ARGS` against the daemon.
    fn cli(&self, args: &[&str]) -> Output {
        std::process::Command::new(env!("CARGO_BIN_EXE_dbmazz"))
            .arg("schema")
            .args(["--addr", &format!("http://127.0.0.1:{}", self.port)])
            .args(args)
            .env_remove("GRPC_TOKEN")
            .output()
            .unwrap()
    }

    /// `dbmazz schema upload` of `file` as `name`, placed by the rule (or on `server`); the
    /// upload must succeed.
    fn provision(&self, engine: &str, name: &str, file: &Path, server: Option<&str>) {
        let mut args = vec!["upload", "--plain", "--engine", engine, "--name", name];
        if let Some(s) = server {
            args.extend(["--server", s]);
        }
        let path = file.display().to_string();
        args.push(&path);
        let out = self.cli(&args);
        assert!(
            out.status.success(),
            "upload {name}: {}\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.p.log()
        );
    }

    /// The registry, as ListDatabases answers.
    fn databases(&self) -> Vec<Json> {
        let r = self.grpc().ok("dbmazz.SchemaService/ListDatabases", "{}");
        r["databases"].as_array().cloned().unwrap_or_default()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- dbmazz log ---\n{}", self.p.log());
        }
    }
}

fn grpc_port(p: &mut Proc) -> u16 {
    crate::control::listening(p, "grpc").port()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn pg_toml(name: &str, pg: &PgCluster, extra: &str) -> String {
    format!(
        "[[servers]]\nname = \"{name}\"\nengine = \"postgres\"\nadmin_url = \"{}\"\n{extra}\n",
        pg.url("postgres")
    )
}

/// The tenant databases of a server, as its catalog lists them.
fn pg_databases(pg: &PgCluster) -> Vec<String> {
    let out = pg.psql(
        "postgres",
        "SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database WHERE datname LIKE 'tenant_%'",
    );
    out.split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Whether `db` recorded migration `id`.
fn pg_has_migration(pg: &PgCluster, db: &str, id: &str) -> bool {
    pg.psql(
        db,
        "SELECT count(*) FROM pg_tables WHERE tablename = 'dbmazz_schema_migrations'",
    ) == "1"
        && pg.psql(
            db,
            &format!("SELECT count(*) FROM dbmazz_schema_migrations WHERE id = '{id}'"),
        ) == "1"
}

const PG_SCHEMA: &str = "CREATE TABLE accounts (id int PRIMARY KEY, name text NOT NULL);\n";
const PG_MIGRATION: &str = "\
ALTER TABLE accounts ADD COLUMN email text;
CREATE TABLE audit (id bigserial PRIMARY KEY, account_id int REFERENCES accounts (id));
CREATE INDEX accounts_email ON accounts (email);
";
const MY_SCHEMA: &str = "CREATE TABLE accounts (id INT PRIMARY KEY, name VARCHAR(50) NOT NULL);\n";
const MY_MIGRATION: &str = "\
ALTER TABLE accounts ADD COLUMN email VARCHAR(100);
CREATE TABLE audit (id BIGINT AUTO_INCREMENT PRIMARY KEY, account_id INT);
CREATE INDEX accounts_email ON accounts (email);
";

/// 30 tenants on two PostgreSQL servers and a MariaDB, placed by the rule (weight, capacity);
/// a migration fanned out to the 26 PostgreSQL ones, 2 of which are made to fail: the report
/// is exact, the failed ones are rolled back, and a re-run applies only to those 2. On MariaDB
/// a failure is reported statement by statement.
#[test]
fn tenants_are_placed_and_a_migration_fans_out_with_exact_failures_and_a_rerun_of_only_those() {
    let (a, b) = (pg_server(), pg_server());
    let m = MariaDb::start();
    let role_pw = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(role_pw.path(), mariadb::PROVISION_PASSWORD).unwrap();
    let toml = format!(
        "{}{}[[servers]]\nname = \"maria\"\nengine = \"mariadb\"\nadmin_url = \"{}\"\nrole = \"{}\"\nrole_password_file = \"{}\"\n",
        pg_toml("pg-a", &a, "capacity = 12\nlabels = { region = \"eu\" }"),
        pg_toml("pg-b", &b, "labels = { region = \"us\" }"),
        m.admin_url(""),
        mariadb::PROVISION_USER,
        role_pw.path().display()
    );
    let fleet = Fleet::start(&toml, &[]);
    let dir = fleet.job.dir().to_owned();
    let pg_schema = write(&dir, "schema.sql", PG_SCHEMA);
    let my_schema = write(&dir, "my_schema.sql", MY_SCHEMA);

    // 26 PostgreSQL tenants by placement: pg-a and pg-b take turns (ties by name) until pg-a
    // is full at 12; the last two go to pg-b. 4 MariaDB tenants.
    for i in 0..26 {
        fleet.provision("postgres", &format!("tenant_{i:02}"), &pg_schema, None);
    }
    for i in 0..4 {
        fleet.provision("mysql", &format!("tenant_m{i}"), &my_schema, None);
    }
    let on_a = pg_databases(&a);
    let on_b = pg_databases(&b);
    assert_eq!((on_a.len(), on_b.len()), (12, 14), "a={on_a:?} b={on_b:?}");
    assert_eq!(on_a[0], "tenant_00");
    assert_eq!(on_b[0], "tenant_01");
    let registry = fleet.databases();
    assert_eq!(registry.len(), 30);
    for r in &registry {
        let (server, db) = (
            r["server"].as_str().unwrap(),
            r["database"].as_str().unwrap(),
        );
        let expected = match server {
            "pg-a" => on_a.contains(&db.to_owned()),
            "pg-b" => on_b.contains(&db.to_owned()),
            "maria" => db.starts_with("tenant_m"),
            other => panic!("unknown server {other}"),
        };
        assert!(expected, "the registry puts {db} on {server}");
        assert_eq!(r["state"], "ready", "{r}");
    }
    let servers = fleet.grpc().ok("dbmazz.SchemaService/ListServers", "{}");
    let by_name = |n: &str| {
        servers["servers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == n)
            .cloned()
            .unwrap()
    };
    assert_eq!(by_name("pg-a")["reachable"], true, "{servers}");
    assert_eq!(by_name("pg-a")["tenants"], "12");
    assert_eq!(by_name("pg-a")["free"], "0");
    assert_eq!(by_name("pg-b")["tenants"], "14");
    assert!(by_name("maria")["version"]
        .as_str()
        .unwrap()
        .contains("MariaDB"));
    // A full server refuses a named placement by label: only pg-a is "eu".
    let out = fleet.cli(&[
        "upload",
        "--plain",
        "--engine",
        "postgres",
        "--name",
        "tenant_eu",
        "--label",
        "region=eu",
        pg_schema.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("capacity"), "{}", text(&out));

    // The upload's guard applies to migrations, before anything runs anywhere.
    let refused = write(
        &dir,
        "0001_bad.sql",
        "ALTER TABLE accounts ADD COLUMN x int;\nALTER SYSTEM SET work_mem = '1GB';\n",
    );
    let out = fleet.cli(&["migrate", "--all", "--plain", refused.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("line 2"), "{}", text(&out));
    assert_eq!(
        a.psql(
            &on_a[0],
            "SELECT count(*) FROM information_schema.columns WHERE column_name = 'x'"
        ),
        "0"
    );

    // Two tenants get a table in the way of the migration's second statement.
    let victims = [on_a[3].clone(), on_b[5].clone()];
    a.psql(&victims[0], "CREATE TABLE audit (x int)");
    b.psql(&victims[1], "CREATE TABLE audit (x int)");
    let migration = write(&dir, "0002_audit.sql", PG_MIGRATION);
    let out = fleet.cli(&["migrate", "--all", "--plain", migration.to_str().unwrap()]);
    let report = text(&out);
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert!(
        report.contains(
            "FAILED: migration 0002_audit on 26 databases: 24 applied, 0 skipped (already applied), 2 failed, 0 not attempted"
        ),
        "{report}"
    );
    for v in &victims {
        let line = report
            .lines()
            .find(|l| l.contains(v.as_str()) && l.contains("FAILED"))
            .unwrap_or_else(|| panic!("no failed row for {v}: {report}"));
        assert!(line.contains("line 2:"), "{line}");
        assert!(line.contains("\"audit\" already exists"), "{line}");
    }
    // The servers agree: 24 have the column and the record; the 2 were rolled back whole.
    for (pg, dbs) in [(&a, &on_a), (&b, &on_b)] {
        for db in dbs.iter() {
            let has_email = pg.psql(
                db,
                "SELECT count(*) FROM information_schema.columns WHERE table_name = 'accounts' AND column_name = 'email'",
            );
            let failed = victims.contains(db);
            assert_eq!(has_email, if failed { "0" } else { "1" }, "{db}");
            assert_eq!(pg_has_migration(pg, db, "0002_audit"), !failed, "{db}");
        }
    }
    let failed = fleet.grpc().ok(
        "dbmazz.SchemaService/ListDatabases",
        r#"{"failedOnly":true}"#,
    );
    let mut names: Vec<&str> = failed["databases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["database"].as_str().unwrap())
        .collect();
    names.sort();
    let mut expected: Vec<&str> = victims.iter().map(String::as_str).collect();
    expected.sort();
    assert_eq!(names, expected);

    // Fixed, then the same command again: only the two are applied.
    a.psql(&victims[0], "DROP TABLE audit");
    b.psql(&victims[1], "DROP TABLE audit");
    let out = fleet.cli(&["migrate", "--all", "--plain", migration.to_str().unwrap()]);
    let report = text(&out);
    assert_eq!(out.status.code(), Some(0), "{report}");
    assert!(
        report.contains("SUCCESS: migration 0002_audit on 26 databases: 2 applied, 24 skipped"),
        "{report}"
    );
    let left = fleet.grpc().ok(
        "dbmazz.SchemaService/ListDatabases",
        r#"{"missingMigration":"0002_audit","engine":"POSTGRES"}"#,
    );
    assert_eq!(left["total"].as_u64().unwrap_or(0), 0, "{left}");
    // A changed file under the same id is refused per database, never applied.
    let changed = write(
        &dir,
        "0002_audit_changed.sql",
        "CREATE TABLE other (id int);\n",
    );
    let out = fleet.cli(&[
        "migrate",
        "--server",
        "pg-a",
        "--id",
        "0002_audit",
        "--plain",
        changed.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("needs a new migration id"),
        "{}",
        text(&out)
    );

    // MariaDB: a failure is reported statement by statement (DDL does not roll back).
    m.query("CREATE TABLE tenant_m2.audit (x INT)");
    let my_migration = write(&dir, "0002_my_audit.sql", MY_MIGRATION);
    let out = fleet.cli(&[
        "migrate",
        "--engine",
        "mysql",
        "--server",
        "maria",
        "--plain",
        my_migration.to_str().unwrap(),
    ]);
    let report = text(&out);
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert!(
        report.contains("3 applied, 0 skipped (already applied), 1 failed"),
        "{report}"
    );
    let line = report
        .lines()
        .find(|l| l.contains("tenant_m2"))
        .unwrap_or_else(|| panic!("{report}"));
    assert!(line.contains("line 2:"), "{line}");
    assert!(
        line.contains("the 1 statement(s) before it were applied and stay"),
        "{line}"
    );
    assert_eq!(
        m.query(
            "SELECT status, statements FROM tenant_m2.dbmazz_schema_migrations WHERE id = '0002_my_audit'"
        ),
        "failed\t1"
    );
    assert_eq!(
        m.query("SELECT count(*) FROM tenant_m1.dbmazz_schema_migrations WHERE status = 'applied'"),
        "1"
    );
}

/// `kill -9` in the middle of a fan-out, then a restart: the job is failed, every database it
/// never saw finish is checked, the registry and the databases' own records agree, and a
/// re-run completes the rest.
#[test]
fn a_kill_during_a_fan_out_is_reconciled_at_restart_and_a_rerun_completes() {
    let pg = pg_server();
    let mut fleet = Fleet::start(&pg_toml("pg-a", &pg, ""), &[("MIGRATION_CONCURRENCY", "2")]);
    let dir = fleet.job.dir().to_owned();
    let schema = write(&dir, "schema.sql", PG_SCHEMA);
    let tenants: Vec<String> = (0..16).map(|i| format!("tenant_{i:02}")).collect();
    for t in &tenants {
        fleet.provision("postgres", t, &schema, None);
    }
    // Slow enough to be killed in the middle: 0.4 s per database, two at a time.
    let migration = write(
        &dir,
        "0003_slow.sql",
        "ALTER TABLE accounts ADD COLUMN note text;\nSELECT pg_sleep(0.4);\n",
    );
    let out = fleet.cli(&[
        "migrate",
        "--all",
        "--no-wait",
        "--plain",
        migration.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let id = stdout
        .split_whitespace()
        .nth(1)
        .unwrap()
        .trim_end_matches(':')
        .to_owned();
    let c = fleet.grpc();
    wait_until(WAIT, "a few databases to be migrated", || {
        let j = c.ok(
            "dbmazz.SchemaService/GetMigration",
            &format!(r#"{{"id":"{id}"}}"#),
        );
        j["applied"].as_u64().unwrap_or(0) >= 4
    });
    fleet.p.kill9();
    fleet.restart();

    let c = fleet.grpc();
    let mut job = Json::Null;
    wait_until(WAIT, "the interrupted migration to be reconciled", || {
        job = c.ok(
            "dbmazz.SchemaService/GetMigration",
            &format!(r#"{{"id":"{id}"}}"#),
        );
        job["status"] == "FAILED"
    });
    let error = job["error"].as_str().unwrap();
    assert!(
        error.starts_with("dbmazz stopped while the job was running"),
        "{error}"
    );
    let applied_in_job: Vec<String> = job["targets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["state"] == "APPLIED")
        .map(|t| t["database"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        (4..16).contains(&applied_in_job.len()),
        "killed in the middle: {applied_in_job:?}"
    );
    for t in job["targets"].as_array().unwrap() {
        assert!(
            matches!(t["state"].as_str(), Some("APPLIED" | "NOT_ATTEMPTED")),
            "every target has its result: {t}"
        );
    }
    // The three views agree: the database's record, the registry, the job.
    let registry = fleet.databases();
    for t in &tenants {
        let in_db = pg_has_migration(&pg, t, "0003_slow");
        let in_registry = registry
            .iter()
            .find(|r| r["database"] == t.as_str())
            .unwrap()["migrations"]
            .as_array()
            .is_some_and(|m| m.iter().any(|m| m["id"] == "0003_slow"));
        assert_eq!(
            in_db, in_registry,
            "{t}: database {in_db}, registry {in_registry}"
        );
        assert_eq!(in_db, applied_in_job.contains(t), "{t}: database vs job");
        let has_note = pg.psql(
            t,
            "SELECT count(*) FROM information_schema.columns WHERE column_name = 'note'",
        ) == "1";
        assert_eq!(
            has_note, in_db,
            "{t}: the column and the record commit together"
        );
    }

    let out = fleet.cli(&["migrate", "--all", "--plain", migration.to_str().unwrap()]);
    let report = text(&out);
    assert_eq!(out.status.code(), Some(0), "{report}");
    assert!(
        report.contains(&format!(
            "{} applied, {} skipped",
            16 - applied_in_job.len(),
            applied_in_job.len()
        )),
        "{report}"
    );
    for t in &tenants {
        assert!(pg_has_migration(&pg, t, "0003_slow"), "{t}");
    }
}

/// One server down during a fan-out: its databases fail (the first with the connection error)
/// or are not attempted, quickly; the other server's all complete; ListServers says which is
/// down.
#[test]
fn a_server_down_during_a_fan_out_fails_its_databases_and_the_others_complete() {
    let a = pg_server();
    let mut b = pg_server();
    let fleet = Fleet::start(
        &format!("{}{}", pg_toml("pg-a", &a, ""), pg_toml("pg-b", &b, "")),
        &[("MIGRATION_CONCURRENCY_PER_SERVER", "2")],
    );
    let dir = fleet.job.dir().to_owned();
    let schema = write(&dir, "schema.sql", PG_SCHEMA);
    for i in 0..6 {
        fleet.provision("postgres", &format!("tenant_a{i}"), &schema, Some("pg-a"));
        fleet.provision("postgres", &format!("tenant_b{i}"), &schema, Some("pg-b"));
    }
    b.stop_immediate();
    let migration = write(
        &dir,
        "0004_email.sql",
        "ALTER TABLE accounts ADD COLUMN email text;\n",
    );
    let started = Instant::now();
    let out = fleet.cli(&["migrate", "--all", "--plain", migration.to_str().unwrap()]);
    let report = text(&out);
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert!(started.elapsed() < Duration::from_secs(60), "{report}");
    assert!(report.contains("on 12 databases: 6 applied"), "{report}");
    let rows: Vec<&str> = report.lines().filter(|l| l.contains("tenant_b")).collect();
    assert_eq!(rows.len(), 6, "{report}");
    assert!(
        rows.iter().any(|l| l.contains("FAILED")
            && l.contains("of server pg-b")
            && l.contains("is the server up?")),
        "{report}"
    );
    for l in &rows {
        assert!(l.contains("FAILED") || l.contains("not attempted"), "{l}");
    }
    for i in 0..6 {
        assert!(pg_has_migration(&a, &format!("tenant_a{i}"), "0004_email"));
    }
    let servers = fleet.cli(&["servers"]);
    assert_eq!(servers.status.code(), Some(1), "{}", text(&servers));
    let listing = text(&servers);
    let b_line = listing.lines().find(|l| l.starts_with("pg-b")).unwrap();
    assert!(b_line.contains("DOWN"), "{listing}");
    let a_line = listing.lines().find(|l| l.starts_with("pg-a")).unwrap();
    assert!(a_line.contains("up (PostgreSQL"), "{listing}");
}
