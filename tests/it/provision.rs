//! Schema provisioning through the real daemon and the real `grpcurl`, against a real
//! PostgreSQL 15: uploads are streamed as an operator would (`split | base64 | grpcurl -d @`),
//! and every outcome is checked in the server itself (databases, tables, rows, owners).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value as Json;

use crate::support::dbmazz::{wait_until, Job, Proc};
use crate::support::grpcurl::{self, Client};
use crate::support::mariadb::{self, MariaDb};
use crate::support::pg::{PgCluster, PgOptions};

/// Upper bound for anything a test waits for; generous for a loaded two-core machine.
const WAIT: Duration = Duration::from_secs(60);
/// The non-superuser role schemas are applied as.
const ROLE: &str = "tenant_owner";
const ROLE_PASSWORD: &str = "tenant pw'1";

/// A PostgreSQL cluster where the role must log in with its password, with a `src` database
/// for the daemon's CDC job.
fn cluster() -> PgCluster {
    let pg = PgCluster::start_with(PgOptions {
        hba: vec![format!("host all {ROLE} 127.0.0.1/32 scram-sha-256")],
        ..PgOptions::default()
    });
    pg.psql(
        "postgres",
        &format!(
            "CREATE ROLE {ROLE} LOGIN PASSWORD '{}'",
            ROLE_PASSWORD.replace('\'', "''")
        ),
    );
    pg.create_database("src");
    pg.psql("src", "CREATE TABLE t (id int PRIMARY KEY)");
    pg
}

/// A daemon streaming `src.t` to NDJSON, with provisioning on `pg` and gRPC on a free port.
fn job(pg: &PgCluster, extra: &[(&str, &str)]) -> Job {
    let mut job = Job::new(&pg.url("src"), "t")
        .env("GRPC_PORT", "0")
        .env("PROVISION_POSTGRES_URL", &pg.url("postgres"))
        .env("PROVISION_ROLE", ROLE)
        .env("PROVISION_ROLE_PASSWORD", ROLE_PASSWORD);
    let tmp = job.dir().join("schemas");
    job = job.env("SCHEMA_TMP_PATH", &tmp.display().to_string());
    for (k, v) in extra {
        job = job.env(k, v);
    }
    job
}

/// Starts the daemon; returns it, a grpcurl client and the gRPC port.
fn start(job: &Job) -> (Proc, Client, u16) {
    let mut p = job.spawn();
    p.wait_for_log("grpc listening", WAIT);
    let log = p.log();
    let line = log.lines().find(|l| l.contains("grpc listening")).unwrap();
    let port: u16 = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("addr="))
        .and_then(|a| a.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"));
    (p, Client::new(port), port)
}

/// A failed grpcurl call: (code, message).
type Refusal = (String, String);

/// Streams `file` to `dbmazz.SchemaService/Upload` the way the README shows: the metadata
/// message, then 1 MiB chunks base64-encoded by `split --filter`.
fn upload(port: u16, metadata: &str, file: &Path) -> Result<Json, Refusal> {
    let metadata = metadata.replace('\'', "'\\''");
    let script = format!(
        "( printf '%s' '{{\"metadata\":{metadata}}}'; \
           split -b 1M --filter='printf \"{{\\\"chunk\\\":\\\"%s\\\"}}\" \"$(base64 -w0)\"' '{file}' ) \
         | grpcurl -plaintext -max-time 60 -d @ 127.0.0.1:{port} dbmazz.SchemaService/Upload",
        file = file.display()
    );
    let out = grpcurl::shell(&script);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        return Ok(serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("Upload printed no JSON ({e}): {stdout} {stderr}")));
    }
    let field = |p: &str| {
        stderr
            .lines()
            .find_map(|l| l.trim().strip_prefix(p))
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("Upload failed without a gRPC status: {stderr}"))
    };
    Err((field("Code: "), field("Message: ")))
}

fn meta(database: &str, extra: &str) -> String {
    format!(r#"{{"engine":"POSTGRES","database":"{database}","fileName":"schema.sql"{extra}}}"#)
}

fn upload_ok(port: u16, metadata: &str, file: &Path) -> Json {
    upload(port, metadata, file).unwrap_or_else(|e| panic!("Upload {metadata} refused: {e:?}"))
}

/// Polls GetJob until the job ends.
fn finished(c: &Client, id: &str) -> Json {
    let mut job = Json::Null;
    wait_until(WAIT, "the schema job to end", || {
        job = c.ok(
            "dbmazz.SchemaService/GetJob",
            &format!(r#"{{"id":"{id}"}}"#),
        );
        matches!(job["status"].as_str(), Some("SUCCESS" | "FAILED"))
    });
    job
}

fn uint(v: &Json) -> u64 {
    match v {
        Json::Null => 0,
        Json::String(s) => s.parse().unwrap(),
        Json::Number(n) => n.as_u64().unwrap(),
        other => panic!("not a number: {other}"),
    }
}

fn db_exists(pg: &PgCluster, name: &str) -> bool {
    pg.psql(
        "postgres",
        &format!("SELECT count(*) FROM pg_database WHERE datname = '{name}'"),
    ) == "1"
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn sha256_hex(path: &Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

/// Per table of `public`: row count and an order-independent checksum of the rows' text.
fn fingerprint(pg: &PgCluster, db: &str) -> String {
    let tables = pg.psql(
        db,
        "SELECT string_agg(tablename, ' ' ORDER BY tablename) FROM pg_tables WHERE schemaname = 'public'",
    );
    tables
        .split_whitespace()
        .map(|t| {
            let sums = pg.psql(
                db,
                &format!("SELECT count(*) || ':' || coalesce(sum(hashtext(x::text)::bigint), 0) FROM public.{t} x"),
            );
            format!("{t}={sums}")
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[test]
fn pg_dump_of_a_pgbench_database_is_applied_with_equal_rows_and_monotonic_progress() {
    let pg = cluster();
    pg.create_database("bench");
    let pgbench = std::process::Command::new("pgbench")
        .args(["-i", "-s", "2", "-q", "-h", "127.0.0.1", "-U", "postgres"])
        .args(["-p", &pg.port.to_string(), "bench"])
        .env("PGSSLMODE", "disable")
        .output()
        .unwrap();
    assert!(pgbench.status.success(), "{pgbench:?}");
    let job = job(&pg, &[]);
    let dump = job.dir().join("bench.sql");
    let out = std::process::Command::new("pg_dump")
        .args(["--no-owner", "-h", "127.0.0.1", "-U", "postgres"])
        .args(["-p", &pg.port.to_string(), "-f"])
        .arg(&dump)
        .arg("bench")
        .env("PGSSLMODE", "disable")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let size = std::fs::metadata(&dump).unwrap().len();
    assert!(size > 10_000_000, "the dump holds COPY data ({size} bytes)");

    let (_p, c, port) = start(&job);
    let reply = upload_ok(port, &meta("tenant_a", ""), &dump);
    let id = reply["jobId"].as_str().unwrap().to_owned();
    assert_eq!(reply["sha256"], sha256_hex(&dump));
    assert_eq!(uint(&reply["bytes"]), size);

    let mut watch = c.stream(
        "dbmazz.SchemaService/WatchJob",
        &format!(r#"{{"id":"{id}"}}"#),
    );
    let mut last = 0;
    let mut events = 0;
    let final_event = loop {
        let (ev, _) = watch.next(WAIT);
        events += 1;
        let progress = uint(&ev["job"]["progress"]);
        assert!(progress >= last, "progress went from {last} to {progress}");
        last = progress;
        match ev["type"].as_str() {
            Some("PROGRESS") => assert!(progress < 100, "100 before the end: {ev}"),
            Some("DONE") | Some("FAILED") => break ev,
            other => panic!("unexpected event type {other:?}: {ev}"),
        }
    };
    assert_eq!(final_event["type"], "DONE", "{final_event}");
    assert_eq!(uint(&final_event["job"]["progress"]), 100);
    assert!(events >= 3, "only {events} events");

    let j = finished(&c, &id);
    assert_eq!(j["status"], "SUCCESS", "{j}");
    assert_eq!(j["stage"], "done");
    assert_eq!(uint(&j["bytesApplied"]), size);
    assert!(uint(&j["statements"]) > 10, "{j}");
    assert_eq!(j["createdDatabase"], true);
    // The apply proper began after the worker took the job, and before it finished.
    let (started, apply, end) = (
        uint(&j["startedAtMs"]),
        uint(&j["applyStartedAtMs"]),
        uint(&j["finishedAtMs"]),
    );
    assert!(started > 0 && started <= apply && apply <= end, "{j}");

    let source = fingerprint(&pg, "bench");
    assert!(source.contains("pgbench_accounts=200000:"), "{source}");
    assert_eq!(fingerprint(&pg, "tenant_a"), source);
    // Everything belongs to the role: the database, and the tables it created.
    assert_eq!(
        pg.psql(
            "postgres",
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'tenant_a'"
        ),
        ROLE
    );
    assert_eq!(
        pg.psql(
            "tenant_a",
            "SELECT string_agg(DISTINCT tableowner, ',') FROM pg_tables WHERE schemaname = 'public'"
        ),
        ROLE
    );
    // The upload was deleted after the apply (DELETE_SCHEMA_AFTER_APPLY defaults to true).
    let left: Vec<_> = std::fs::read_dir(job.dir().join("schemas"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "sql"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn a_failure_halfway_rolls_back_drops_the_database_and_names_the_line() {
    let pg = cluster();
    let job = job(&pg, &[]);
    let file = write(
        job.dir(),
        "bad.sql",
        "CREATE TABLE a (id int PRIMARY KEY);\n\
         INSERT INTO a VALUES (1), (2);\n\
         -- the next statement fails\n\
         INSERT INTO a\n  SELECT * FROM missing_table;\n\
         CREATE TABLE b (id int);\n",
    );
    let (_p, c, port) = start(&job);
    let id = upload_ok(port, &meta("tenant_bad", ""), &file)["jobId"]
        .as_str()
        .unwrap()
        .to_owned();
    let j = finished(&c, &id);
    assert_eq!(j["status"], "FAILED", "{j}");
    let error = j["error"].as_str().unwrap();
    assert!(error.starts_with("line 5: "), "{error}");
    assert!(
        error.contains("relation \"missing_table\" does not exist"),
        "{error}"
    );
    assert!(error.contains("database tenant_bad was dropped"), "{error}");
    assert_eq!(j["createdDatabase"], Json::Null, "{j}");
    assert!(!db_exists(&pg, "tenant_bad"));

    // With SCHEMA_DROP_DB_ON_FAILURE off for the call, the rolled-back database stays, empty.
    let id = upload_ok(
        port,
        &meta("tenant_kept", r#","dropDbOnFailure":false"#),
        &file,
    )["jobId"]
        .as_str()
        .unwrap()
        .to_owned();
    let j = finished(&c, &id);
    assert_eq!(j["status"], "FAILED", "{j}");
    assert!(j["error"].as_str().unwrap().contains("was kept"), "{j}");
    assert!(db_exists(&pg, "tenant_kept"));
    assert_eq!(
        pg.psql(
            "tenant_kept",
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
        ),
        "0",
        "the transaction was rolled back"
    );
}

#[test]
fn the_guard_refuses_before_anything_is_created_and_ignores_literals_and_comments() {
    let pg = cluster();
    let job = job(&pg, &[("SCHEMA_FORBIDDEN_KEYWORDS", "TRUNCATE")]);
    let (_p, c, port) = start(&job);
    let cases = [
        ("ALTER SYSTEM SET work_mem = '1GB';", "alter-system"),
        ("CREATE ROLE intruder SUPERUSER;", "role"),
        ("COPY a FROM PROGRAM 'id';", "copy"),
        ("SET ROLE postgres;", "role"),
        ("DROP DATABASE src;", "database"),
        ("TRUNCATE a;", "forbidden-keyword"),
    ];
    for (i, (statement, rule)) in cases.iter().enumerate() {
        let file = write(
            job.dir(),
            &format!("g{i}.sql"),
            &format!("CREATE TABLE a (id int);\n\n{statement}\n"),
        );
        let name = format!("guarded_{i}");
        let id = upload_ok(port, &meta(&name, ""), &file)["jobId"]
            .as_str()
            .unwrap()
            .to_owned();
        let j = finished(&c, &id);
        assert_eq!(j["status"], "FAILED", "{statement}: {j}");
        let error = j["error"].as_str().unwrap();
        assert!(error.starts_with("line 3: "), "{statement}: {error}");
        assert!(error.contains(rule), "{statement}: {error}");
        assert!(!db_exists(&pg, &name), "{statement} created {name}");
    }
    // The same words inside literals and comments are not statements.
    let file = write(
        job.dir(),
        "ok.sql",
        "-- ALTER SYSTEM SET x = 1; DROP DATABASE src;\n\
         CREATE TABLE notes (body text DEFAULT 'CREATE ROLE x; COPY a FROM PROGRAM ''id''');\n\
         /* SET ROLE postgres; */\n\
         INSERT INTO notes VALUES ($$TRUNCATE notes; ALTER SYSTEM RESET ALL$$);\n\
         COMMENT ON TABLE notes IS 'DROP DATABASE src';\n",
    );
    let id = upload_ok(port, &meta("guarded_ok", ""), &file)["jobId"]
        .as_str()
        .unwrap()
        .to_owned();
    let j = finished(&c, &id);
    assert_eq!(j["status"], "SUCCESS", "{j}");
    assert_eq!(
        pg.psql("guarded_ok", "SELECT body FROM notes"),
        "TRUNCATE notes; ALTER SYSTEM RESET ALL"
    );
}

#[test]
fn dedupe_idempotency_dry_run_size_cap_and_rate_limit() {
    let pg = cluster();
    let job = job(
        &pg,
        &[
            ("SCHEMA_MAX_BYTES", "4096"),
            ("RATE_LIMIT_MAX", "5"),
            ("RATE_LIMIT_WINDOW_MS", "600000"),
        ],
    );
    let (_p, c, port) = start(&job);
    let schema = write(job.dir(), "s.sql", "CREATE TABLE a (id int);\n");
    let other = write(job.dir(), "o.sql", "CREATE TABLE b (id int);\n");

    // 1, 2: the same file for the same database returns the first job.
    let first = upload_ok(port, &meta("dedup_a", ""), &schema);
    let first_id = first["jobId"].as_str().unwrap().to_owned();
    assert_eq!(first["deduplicated"], Json::Null);
    assert_eq!(finished(&c, &first_id)["status"], "SUCCESS");
    let again = upload_ok(port, &meta("dedup_a", ""), &schema);
    assert_eq!(again["jobId"], first_id.as_str());
    assert_eq!(again["deduplicated"], true);

    // 3: an idempotency key returns its job even for another file (a retry is not counted by
    // the rate limit: nothing is stored).
    let keyed = upload_ok(
        port,
        &meta("keyed_b", r#","idempotencyKey":"req-42""#),
        &schema,
    );
    let keyed_id = keyed["jobId"].as_str().unwrap().to_owned();
    let retry = upload_ok(
        port,
        &meta("keyed_b", r#","idempotencyKey":"req-42""#),
        &other,
    );
    assert_eq!(retry["jobId"], keyed_id.as_str());
    assert_eq!(retry["deduplicated"], true);
    assert_eq!(finished(&c, &keyed_id)["status"], "SUCCESS");
    assert_eq!(
        pg.psql(
            "keyed_b",
            "SELECT string_agg(tablename, ',') FROM pg_tables WHERE schemaname = 'public'"
        ),
        "a"
    );
    // The same key for another database is a conflict (not counted by the rate limit).
    let (code, message) = upload(
        port,
        &meta("keyed_c", r#","idempotencyKey":"req-42""#),
        &schema,
    )
    .unwrap_err();
    assert_eq!(code, "AlreadyExists", "{message}");
    assert!(message.contains("req-42"), "{message}");

    // 4: a dry run validates and creates nothing.
    let dry = upload_ok(port, &meta("dry_d", r#","dryRun":true"#), &schema);
    let j = finished(&c, dry["jobId"].as_str().unwrap());
    assert_eq!(j["status"], "SUCCESS", "{j}");
    assert_eq!(j["dryRun"], true);
    assert_eq!(uint(&j["statements"]), 1);
    assert!(!db_exists(&pg, "dry_d"));

    // 5: the size cap, enforced while streaming.
    let big = write(
        job.dir(),
        "big.sql",
        &"CREATE TABLE IF NOT EXISTS x (id int);\n".repeat(200),
    );
    let (code, message) = upload(port, &meta("big_e", ""), &big).unwrap_err();
    assert_eq!(code, "ResourceExhausted", "{message}");
    assert!(message.contains("SCHEMA_MAX_BYTES"), "{message}");
    assert!(!db_exists(&pg, "big_e"));

    // 6: over RATE_LIMIT_MAX.
    let (code, message) = upload(port, &meta("late_f", ""), &other).unwrap_err();
    assert_eq!(code, "ResourceExhausted", "{message}");
    assert!(message.contains("RATE_LIMIT_MAX"), "{message}");

    // No partial or duplicate upload was left behind.
    let files: Vec<_> = std::fs::read_dir(job.dir().join("schemas"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_file())
        .collect();
    assert!(files.is_empty(), "{files:?}");
    let listed = c.ok("dbmazz.SchemaService/ListJobs", "{}");
    assert_eq!(listed["jobs"].as_array().unwrap().len(), 3, "{listed}");
}

#[test]
fn a_job_running_when_dbmazz_is_killed_is_failed_and_its_database_dropped_after_restart() {
    let pg = cluster();
    let job = job(&pg, &[]);
    let file = write(
        job.dir(),
        "slow.sql",
        "CREATE TABLE a (id int);\nSELECT pg_sleep(30);\nCREATE TABLE b (id int);\n",
    );
    let (mut p, c, port) = start(&job);
    let id = upload_ok(port, &meta("tenant_crash", ""), &file)["jobId"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_until(WAIT, "the job to apply", || {
        let j = c.ok(
            "dbmazz.SchemaService/GetJob",
            &format!(r#"{{"id":"{id}"}}"#),
        );
        j["stage"] == "applying-schema"
    });
    assert!(db_exists(&pg, "tenant_crash"));
    p.kill9();

    let (_p, c, _) = start(&job);
    let mut j = Json::Null;
    wait_until(WAIT, "the interrupted job's cleanup", || {
        j = c.ok(
            "dbmazz.SchemaService/GetJob",
            &format!(r#"{{"id":"{id}"}}"#),
        );
        j["error"].as_str().is_some_and(|e| e.contains("dropped"))
    });
    assert_eq!(j["status"], "FAILED", "{j}");
    assert_eq!(
        j["error"],
        "dbmazz stopped while the job was running; database tenant_crash was dropped"
    );
    assert!(!db_exists(&pg, "tenant_crash"));
}

#[test]
fn drop_database_terminates_connections_and_refuses_databases_dbmazz_did_not_create() {
    let pg = cluster();
    let job = job(&pg, &[]);
    let file = write(job.dir(), "s.sql", "CREATE TABLE a (id int);\n");
    let (_p, c, port) = start(&job);
    let id = upload_ok(port, &meta("tenant_drop", ""), &file)["jobId"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(finished(&c, &id)["status"], "SUCCESS");
    // An open session on the database.
    let mut session = std::process::Command::new("psql")
        .args(["-X", "-h", "127.0.0.1", "-U", "postgres", "-p"])
        .arg(pg.port.to_string())
        .args(["-d", "tenant_drop", "-c", "SELECT pg_sleep(60)"])
        .env("PGSSLMODE", "disable")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until(WAIT, "the session to connect", || {
        pg.psql(
            "postgres",
            "SELECT count(*) FROM pg_stat_activity WHERE datname = 'tenant_drop'",
        ) != "0"
    });
    let r = c.ok(
        "dbmazz.SchemaService/DropDatabase",
        r#"{"engine":"POSTGRES","name":"tenant_drop"}"#,
    );
    assert_eq!(r["dropped"], true, "{r}");
    assert_eq!(r["terminatedConnections"], 1, "{r}");
    assert!(!db_exists(&pg, "tenant_drop"));
    let _ = session.wait();
    let j = c.ok(
        "dbmazz.SchemaService/GetJob",
        &format!(r#"{{"id":"{id}"}}"#),
    );
    assert_eq!(j["createdDatabase"], Json::Null, "{j}");
    // The same file provisions the dropped database again (no deduplication to the old job).
    let again = upload_ok(port, &meta("tenant_drop", ""), &file);
    assert_eq!(again["deduplicated"], Json::Null, "{again}");
    let id2 = again["jobId"].as_str().unwrap().to_owned();
    assert_ne!(id2, id);
    assert_eq!(finished(&c, &id2)["status"], "SUCCESS");
    assert!(db_exists(&pg, "tenant_drop"));

    pg.create_database("foreign_db");
    let e = c
        .call(
            "dbmazz.SchemaService/DropDatabase",
            r#"{"engine":"POSTGRES","name":"foreign_db"}"#,
        )
        .unwrap_err();
    assert_eq!(e.code, "FailedPrecondition", "{e:?}");
    assert!(e.message.contains("not created by dbmazz"), "{e:?}");
    assert!(db_exists(&pg, "foreign_db"));
    let r = c.ok(
        "dbmazz.SchemaService/DropDatabase",
        r#"{"engine":"POSTGRES","name":"foreign_db","force":true}"#,
    );
    assert_eq!(r["dropped"], true, "{r}");
    assert!(!db_exists(&pg, "foreign_db"));
}

#[test]
fn database_names_from_an_injection_corpus_are_all_refused() {
    let pg = cluster();
    let job = job(&pg, &[]);
    let file = write(job.dir(), "s.sql", "CREATE TABLE a (id int);\n");
    let (_p, c, port) = start(&job);
    let long = "a".repeat(64);
    let corpus = [
        "",
        "Tenant",
        "1tenant",
        "tenant-a",
        "tenant a",
        "a;b",
        "x\\\"; DROP DATABASE src; --",
        "a'||'b",
        "../etc",
        "t\\u00e9",
        "tenant\\u0000",
        "postgres",
        "template0",
        "template1",
        "information_schema",
        "src",
        long.as_str(),
    ];
    for name in corpus {
        let (code, message) = upload(port, &meta(name, ""), &file).unwrap_err();
        assert_eq!(code, "InvalidArgument", "{name:?}: {message}");
        assert!(message.starts_with("database: "), "{name:?}: {message}");
        let e = c
            .call(
                "dbmazz.SchemaService/DropDatabase",
                &format!(r#"{{"engine":"POSTGRES","name":"{name}","force":true}}"#),
            )
            .unwrap_err();
        assert_eq!(e.code, "InvalidArgument", "{name:?}: {e:?}");
    }
    assert_eq!(
        pg.psql(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname NOT IN ('postgres', 'template0', 'template1', 'src')"
        ),
        "0"
    );
    assert!(db_exists(&pg, "src"));
    // A file name that is not .sql, and an engine that is not configured.
    let (code, message) = upload(
        port,
        r#"{"engine":"POSTGRES","database":"ok_name","fileName":"dump.tar"}"#,
        &file,
    )
    .unwrap_err();
    assert_eq!(code, "InvalidArgument", "{message}");
    assert!(message.contains(".sql"), "{message}");
    let (code, message) = upload(
        port,
        r#"{"engine":"MYSQL","database":"ok_name","fileName":"s.sql"}"#,
        &file,
    )
    .unwrap_err();
    assert_eq!(code, "FailedPrecondition", "{message}");
    assert!(message.contains("PROVISION_MYSQL_URL"), "{message}");
}

#[test]
fn without_provision_urls_the_service_answers_failed_precondition_naming_them() {
    let pg = cluster();
    let job = Job::new(&pg.url("src"), "t").env("GRPC_PORT", "0");
    let (_p, c, _) = start(&job);
    let e = c.call("dbmazz.SchemaService/ListJobs", "{}").unwrap_err();
    assert_eq!(e.code, "FailedPrecondition", "{e:?}");
    assert!(e.message.contains("PROVISION_POSTGRES_URL"), "{e:?}");
    assert!(e.message.contains("PROVISION_MYSQL_URL"), "{e:?}");
    // The CDC job runs as before.
    let h = c.ok("dbmazz.HealthService/Check", "{}");
    assert_eq!(h["status"], "SERVING", "{h}");
}

/// Without `DATABASE_URL` and `TABLES`, a daemon with provisioning settings serves
/// SchemaService and Health only: reflection lists exactly those, the CDC services are
/// unimplemented, `/metrics` is not served, uploads apply, and SIGTERM ends it with 0.
#[test]
fn a_daemon_without_database_url_serves_only_provisioning() {
    let pg = cluster();
    let job = job(&pg, &[("METRICS_PORT", "0"), ("SLOT_NAME", "ignored_slot")])
        .without("DATABASE_URL")
        .without("TABLES");
    let (mut p, c, port) = start(&job);
    let log = p.log();
    assert!(log.contains("provisioning only"), "{log}");
    assert!(
        log.lines()
            .any(|l| l.contains("ignored") && l.contains("SLOT_NAME")),
        "the ignored CDC setting is named: {log}"
    );
    let listed = String::from_utf8(c.run(&["list"]).stdout).unwrap();
    let mut services: Vec<&str> = listed.lines().collect();
    services.sort();
    assert_eq!(
        services,
        [
            "dbmazz.HealthService",
            "dbmazz.SchemaService",
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
        ]
    );
    let h = c.ok("dbmazz.HealthService/Check", "{}");
    assert_eq!(h["status"], "SERVING", "{h}");
    assert!(
        h["stageDetail"]
            .as_str()
            .unwrap()
            .contains("Provisioning only"),
        "{h}"
    );
    let std = c.ok(
        "grpc.health.v1.Health/Check",
        r#"{"service":"dbmazz.SchemaService"}"#,
    );
    assert_eq!(std["status"], "SERVING", "{std}");
    let e = c
        .call("dbmazz.CdcStatusService/GetStatus", "{}")
        .unwrap_err();
    assert_eq!(e.code, "Unimplemented", "{e:?}");

    let file = write(
        job.dir(),
        "s.sql",
        "CREATE TABLE a (id int PRIMARY KEY);\nINSERT INTO a VALUES (1), (2);\n",
    );
    let id = upload_ok(port, &meta("tenant_only", ""), &file)["jobId"]
        .as_str()
        .unwrap()
        .to_owned();
    let j = finished(&c, &id);
    assert_eq!(j["status"], "SUCCESS", "{j}");
    assert_eq!(pg.psql("tenant_only", "SELECT count(*) FROM a"), "2");

    // The HTTP port serves the provisioning routes, and not /metrics.
    let http = crate::control::listening(&mut p, "http");
    let status = |path: &str| {
        let out = std::process::Command::new("curl")
            .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}"])
            .arg(format!("http://{http}{path}"))
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(status(&format!("/schema/job/{id}")), "200");
    assert_eq!(status("/metrics"), "404");

    p.terminate();
    assert_eq!(p.wait(WAIT).code(), Some(0), "{}", p.log());
}

/// `SCHEMA_STATEMENT_TIMEOUT_MS` and `SCHEMA_LOCK_TIMEOUT_MS` hold for every statement of a
/// file, even after the file's own `SET statement_timeout = 0` / `lock_timeout = 0` (as every
/// pg_dump file starts): a statement past either fails the job, naming the line and the
/// variable, and everything is rolled back.
#[test]
fn statement_and_lock_timeouts_bound_applied_files_even_after_the_files_own_sets() {
    let pg = cluster();
    let job = job(
        &pg,
        &[
            ("SCHEMA_STATEMENT_TIMEOUT_MS", "700"),
            ("SCHEMA_LOCK_TIMEOUT_MS", "400"),
        ],
    );
    let (_p, c, port) = start(&job);
    let slow = write(
        job.dir(),
        "slow.sql",
        "SET statement_timeout = 0;\nSET lock_timeout = 0;\nCREATE TABLE a (id int);\n\
         SELECT pg_sleep(5);\n",
    );
    let started = std::time::Instant::now();
    let id = upload_ok(port, &meta("tenant_slow", ""), &slow)["jobId"]
        .as_str()
        .unwrap()
        .to_owned();
    let j = finished(&c, &id);
    assert_eq!(j["status"], "FAILED", "{j}");
    let error = j["error"].as_str().unwrap();
    assert!(error.starts_with("line 4: "), "{error}");
    assert!(error.contains("SQLSTATE 57014"), "{error}");
    assert!(
        error.contains("longer than SCHEMA_STATEMENT_TIMEOUT_MS (700 ms)"),
        "{error}"
    );
    assert!(
        error.contains("database tenant_slow was dropped"),
        "{error}"
    );
    assert!(started.elapsed() < Duration::from_secs(5), "{error}");

    // A table of an existing database, locked by another session: the file waits 400 ms for
    // it, not until the lock is released.
    pg.create_database("tenant_locked");
    pg.psql(
        "tenant_locked",
        &format!("CREATE TABLE t (id int); ALTER TABLE t OWNER TO {ROLE}"),
    );
    let mut holder = pg.session("tenant_locked");
    holder.run(&pg, "BEGIN; LOCK TABLE t IN ACCESS EXCLUSIVE MODE;");
    let alter = write(
        job.dir(),
        "alter.sql",
        "SET lock_timeout = 0;\nALTER TABLE t ADD COLUMN note text;\n",
    );
    let id = upload_ok(
        port,
        &meta("tenant_locked", r#","failIfDbExists":false"#),
        &alter,
    )["jobId"]
        .as_str()
        .unwrap()
        .to_owned();
    let j = finished(&c, &id);
    assert_eq!(j["status"], "FAILED", "{j}");
    let error = j["error"].as_str().unwrap();
    assert!(error.starts_with("line 2: "), "{error}");
    assert!(error.contains("SQLSTATE 55P03"), "{error}");
    assert!(
        error.contains("longer than SCHEMA_LOCK_TIMEOUT_MS (400 ms) for a lock"),
        "{error}"
    );
    holder.run(&pg, "ROLLBACK;");
    holder.close();
    assert_eq!(
        pg.psql(
            "tenant_locked",
            "SELECT count(*) FROM information_schema.columns WHERE table_name = 't'"
        ),
        "1",
        "the ALTER did not happen"
    );
}

/// Without `DATABASE_URL` and without provisioning, the daemon refuses to start and says what
/// either mode needs.
#[test]
fn without_database_url_or_provisioning_the_error_names_both_ways() {
    let job = Job::new("postgres://u@127.0.0.1:9/x", "t")
        .without("DATABASE_URL")
        .without("TABLES");
    let mut p = job.spawn();
    assert_eq!(p.wait(WAIT).code(), Some(2));
    let log = p.log();
    assert!(log.contains("DATABASE_URL: is not set"), "{log}");
    assert!(log.contains("PROVISION_POSTGRES_URL"), "{log}");
}

/// A daemon streaming `src.t` from `pg`, provisioning on MariaDB `m` only.
fn mysql_job(pg: &PgCluster, m: &MariaDb) -> Job {
    let job = Job::new(&pg.url("src"), "t")
        .env("GRPC_PORT", "0")
        .env("PROVISION_MYSQL_URL", &m.admin_url(""))
        .env("PROVISION_ROLE", mariadb::PROVISION_USER)
        .env("PROVISION_ROLE_PASSWORD", mariadb::PROVISION_PASSWORD);
    let tmp = job.dir().join("schemas");
    job.env("SCHEMA_TMP_PATH", &tmp.display().to_string())
}

fn mysql_meta(database: &str) -> String {
    format!(r#"{{"engine":"MYSQL","database":"{database}","fileName":"dump.sql"}}"#)
}

/// On MariaDB a statement past `SCHEMA_STATEMENT_TIMEOUT_MS` is killed by dbmazz (MySQL has no
/// server-side bound for every statement), and the job names the line and the variable.
#[test]
fn a_mysql_statement_past_the_timeout_is_killed_and_named() {
    let pg = cluster();
    let m = MariaDb::start();
    let job = mysql_job(&pg, &m).env("SCHEMA_STATEMENT_TIMEOUT_MS", "700");
    let file = write(
        job.dir(),
        "slow.sql",
        "CREATE TABLE a (id int);\nDO SLEEP(30);\nCREATE TABLE b (id int);\n",
    );
    let (_p, c, port) = start(&job);
    let started = std::time::Instant::now();
    let id = upload_ok(port, &mysql_meta("tenant_slow"), &file)["jobId"]
        .as_str()
        .unwrap()
        .to_owned();
    let j = finished(&c, &id);
    assert_eq!(j["status"], "FAILED", "{j}");
    let error = j["error"].as_str().unwrap();
    assert!(error.starts_with("line 2: "), "{error}");
    assert!(
        error.contains("longer than SCHEMA_STATEMENT_TIMEOUT_MS (700 ms) and was killed"),
        "{error}"
    );
    assert!(!error.contains("which failed"), "{error}");
    assert!(
        error.contains("database tenant_slow was dropped"),
        "{error}"
    );
    assert!(started.elapsed() < Duration::from_secs(25), "{error}");
    let sleeping =
        m.query("SELECT count(*) FROM information_schema.PROCESSLIST WHERE INFO LIKE 'DO SLEEP%'");
    assert_eq!(sleeping.trim(), "0", "the statement still runs");
}

/// What mysqldump writes for a table with rows, a trigger and a procedure (DELIMITER blocks,
/// version comments, LOCK TABLES), with the provisioning account as definer.
fn mysqldump_style() -> String {
    let definer = format!("`{}`@`%`", mariadb::PROVISION_USER);
    format!(
        r#"-- MySQL dump 10.13  Distrib 8.0.36, for Linux (x86_64)
/*!40101 SET @OLD_CHARACTER_SET_CLIENT=@@CHARACTER_SET_CLIENT */;
/*!40101 SET NAMES utf8mb4 */;
/*!40014 SET @OLD_UNIQUE_CHECKS=@@UNIQUE_CHECKS, UNIQUE_CHECKS=0 */;
/*!40101 SET @OLD_SQL_MODE=@@SQL_MODE, SQL_MODE='NO_AUTO_VALUE_ON_ZERO' */;

DROP TABLE IF EXISTS `orders`;
CREATE TABLE `orders` (
  `id` int NOT NULL AUTO_INCREMENT,
  `note` varchar(100) DEFAULT NULL,
  `total` decimal(10,2) NOT NULL,
  PRIMARY KEY (`id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

LOCK TABLES `orders` WRITE;
/*!40000 ALTER TABLE `orders` DISABLE KEYS */;
INSERT INTO `orders` VALUES (1,'semi; colon',10.50),(2,'it''s \"quoted\"',20.00),(3,'back\\slash; DELIMITER ;;',5.25);
/*!40000 ALTER TABLE `orders` ENABLE KEYS */;
UNLOCK TABLES;

CREATE TABLE `audit` (
  `order_id` int NOT NULL,
  `what` varchar(40) NOT NULL
) ENGINE=InnoDB;

DELIMITER ;;
/*!50003 CREATE*/ /*!50017 DEFINER={definer}*/ /*!50003 TRIGGER `orders_ai` AFTER INSERT ON `orders` FOR EACH ROW BEGIN
  INSERT INTO audit (order_id, what) VALUES (NEW.id, 'inserted; ok');
END */;;
DELIMITER ;

DELIMITER ;;
CREATE DEFINER={definer} PROCEDURE `order_total`(OUT n DECIMAL(10,2))
BEGIN
  SELECT SUM(total) INTO n FROM orders;
END ;;
DELIMITER ;
/*!40101 SET SQL_MODE=@OLD_SQL_MODE */;
/*!40014 SET UNIQUE_CHECKS=@OLD_UNIQUE_CHECKS */;
"#
    )
}

#[test]
fn a_mysqldump_style_file_with_delimiter_triggers_is_applied_on_mariadb() {
    let pg = cluster();
    let m = MariaDb::start();
    let job = mysql_job(&pg, &m);
    let file = write(job.dir(), "dump.sql", &mysqldump_style());
    let (_p, c, port) = start(&job);
    let id = upload_ok(port, &mysql_meta("shop_a"), &file)["jobId"]
        .as_str()
        .unwrap()
        .to_owned();
    let j = finished(&c, &id);
    assert_eq!(j["status"], "SUCCESS", "{j}");
    assert_eq!(j["engine"], "MYSQL");
    assert_eq!(uint(&j["progress"]), 100);
    assert_eq!(
        m.query("SELECT id, note, total FROM shop_a.orders ORDER BY id"),
        "1\tsemi; colon\t10.50\n2\tit's \"quoted\"\t20.00\n3\tback\\\\slash; DELIMITER ;;\t5.25"
    );
    // The trigger and the procedure exist and work.
    m.query("INSERT INTO shop_a.orders (note, total) VALUES ('new', 1.00)");
    assert_eq!(
        m.query("SELECT order_id, what FROM shop_a.audit"),
        "4\tinserted; ok"
    );
    assert_eq!(m.query("CALL shop_a.order_total(@n); SELECT @n"), "36.75");
    // The account got rights on this database only.
    let grants = m.query(&format!(
        "SHOW GRANTS FOR '{}'@'%'",
        mariadb::PROVISION_USER
    ));
    assert!(grants.contains("ON `shop_a`.*"), "{grants}");
    assert!(!grants.contains("ALL PRIVILEGES ON *.*"), "{grants}");
}

#[test]
fn a_mysql_failure_drops_the_database_and_names_the_line() {
    let pg = cluster();
    let m = MariaDb::start();
    let job = mysql_job(&pg, &m).env("SCHEMA_ENABLE_SQL_GUARD", "false");
    let file = write(
        job.dir(),
        "bad.sql",
        "CREATE TABLE a (id int);\nINSERT INTO a VALUES (1);\n\nINSERT INTO missing_table VALUES (1);\nCREATE TABLE b (id int);\n",
    );
    let (_p, c, port) = start(&job);
    let id = upload_ok(port, &mysql_meta("shop_bad"), &file)["jobId"]
        .as_str()
        .unwrap()
        .to_owned();
    let j = finished(&c, &id);
    assert_eq!(j["status"], "FAILED", "{j}");
    let error = j["error"].as_str().unwrap();
    assert!(error.starts_with("line 4: "), "{error}");
    assert!(error.contains("missing_table"), "{error}");
    assert!(error.contains("ERROR 1146"), "{error}");
    assert!(error.contains("database shop_bad was dropped"), "{error}");
    assert!(!m.database_exists("shop_bad"));

    // LOAD DATA LOCAL: with the guard on for the call it is refused before anything is
    // created; with the guard off (as this daemon runs) the driver refuses to send the file.
    let file = write(
        job.dir(),
        "load.sql",
        "CREATE TABLE a (line text);\nLOAD DATA LOCAL INFILE '/etc/hostname' INTO TABLE a;\n",
    );
    let guarded =
        r#"{"engine":"MYSQL","database":"shop_load","fileName":"l.sql","enableSqlGuard":true}"#;
    let id = upload_ok(port, guarded, &file)["jobId"]
        .as_str()
        .unwrap()
        .to_owned();
    let j = finished(&c, &id);
    assert_eq!(j["status"], "FAILED", "{j}");
    let error = j["error"].as_str().unwrap();
    assert!(
        error.starts_with("line 2: ") && error.contains("rule load"),
        "{error}"
    );
    assert!(!m.database_exists("shop_load"));
    let id = upload_ok(port, &mysql_meta("shop_load"), &file)["jobId"]
        .as_str()
        .unwrap()
        .to_owned();
    let j = finished(&c, &id);
    assert_eq!(j["status"], "FAILED", "{j}");
    let error = j["error"].as_str().unwrap();
    assert!(error.starts_with("line 2: "), "{error}");
    assert!(error.contains("dropped"), "{error}");
    assert!(!m.database_exists("shop_load"));

    // DropDatabase on MariaDB kills the open connections first.
    let id = upload_ok(
        port,
        &mysql_meta("shop_drop"),
        &write(job.dir(), "ok.sql", "CREATE TABLE a (id int);\n"),
    )["jobId"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(finished(&c, &id)["status"], "SUCCESS");
    let mut session = std::process::Command::new("mariadb")
        .args(["--no-defaults", "--protocol=tcp", "-h", "127.0.0.1", "-P"])
        .arg(m.port.to_string())
        .arg(format!("-u{}", mariadb::PROVISION_USER))
        .arg(format!("-p{}", mariadb::PROVISION_PASSWORD))
        .args(["shop_drop", "-e", "SELECT SLEEP(60)"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until(WAIT, "the session to connect", || {
        m.query("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE DB = 'shop_drop'") != "0"
    });
    let r = c.ok(
        "dbmazz.SchemaService/DropDatabase",
        r#"{"engine":"MYSQL","name":"shop_drop"}"#,
    );
    assert_eq!(r["dropped"], true, "{r}");
    assert_eq!(r["terminatedConnections"], 1, "{r}");
    assert!(!m.database_exists("shop_drop"));
    let _ = session.kill();
    let _ = session.wait();
}

#[test]
fn a_real_mariadb_dump_is_applied_like_the_mariadb_client_does() {
    let pg = cluster();
    let m = MariaDb::start();
    let job = mysql_job(&pg, &m);
    // Definers must be the applying account (a non-privileged account cannot create objects
    // for root); everything else is mariadb-dump's own output.
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/provision/mariadb_dump_shop.sql"),
    )
    .unwrap()
    .replace(
        "DEFINER=`root`@`localhost`",
        &format!("DEFINER=`{}`@`%`", mariadb::PROVISION_USER),
    );
    let file = write(job.dir(), "shop.sql", &text);
    // The reference: the same file through the mariadb client, as the admin.
    m.query("CREATE DATABASE shop_ref");
    let out = std::process::Command::new("mariadb")
        .args(["--no-defaults", "--protocol=tcp", "-h", "127.0.0.1", "-P"])
        .arg(m.port.to_string())
        .arg(format!("-u{}", mariadb::ADMIN_USER))
        .arg(format!("-p{}", mariadb::ADMIN_PASSWORD))
        .arg("shop_ref")
        .stdin(std::fs::File::open(&file).unwrap())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let (_p, c, port) = start(&job);
    let id = upload_ok(port, &mysql_meta("shop_x"), &file)["jobId"]
        .as_str()
        .unwrap()
        .to_owned();
    let j = finished(&c, &id);
    assert_eq!(j["status"], "SUCCESS", "{j}");
    for table in ["customers", "orders"] {
        let sums = m.query(&format!("CHECKSUM TABLE shop_ref.{table}, shop_x.{table}"));
        let values: Vec<&str> = sums
            .lines()
            .map(|l| l.split('\t').nth(1).unwrap())
            .collect();
        assert_eq!(values.len(), 2, "{sums}");
        assert_eq!(values[0], values[1], "{table}: {sums}");
        assert_eq!(
            m.query(&format!("SELECT COUNT(*) FROM shop_x.{table}")),
            "6"
        );
    }
    assert_eq!(
        m.query("SELECT name FROM shop_x.customers WHERE id = 4"),
        "DROP DATABASE shop;"
    );
    assert_eq!(
        m.query("SELECT * FROM shop_x.customer_orders ORDER BY name"),
        // What the view computes, on the reference tables (its definer has no rights there).
        m.query(
            "SELECT c.name, COUNT(o.id) FROM shop_ref.customers c \
             LEFT JOIN shop_ref.orders o ON o.customer_id = c.id GROUP BY c.name ORDER BY c.name"
        )
    );
    let routines = "SELECT GROUP_CONCAT(ROUTINE_NAME ORDER BY ROUTINE_NAME) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = ";
    assert_eq!(
        m.query(&format!("{routines}'shop_x'")),
        m.query(&format!("{routines}'shop_ref'"))
    );
    let triggers = "SELECT GROUP_CONCAT(TRIGGER_NAME) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = ";
    assert_eq!(
        m.query(&format!("{triggers}'shop_x'")),
        m.query(&format!("{triggers}'shop_ref'"))
    );
    assert_ne!(m.query(&format!("{triggers}'shop_x'")), "NULL");
}
