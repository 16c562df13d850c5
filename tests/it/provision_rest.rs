//! Schema provisioning through the ways people call it from outside: the REST endpoints with
//! the real `curl`, the WebSocket with a real WebSocket client, the `dbmazz schema` CLI in a
//! real terminal (tmux) and in a pipe, and a large streamed upload with the daemon's memory
//! watched. Real PostgreSQL 15 and a real MariaDB, both started by the test support; the real
//! `dbmazz` binary.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dbmazz::control::proto::schema_service_client::SchemaServiceClient;
use dbmazz::control::proto::upload_request::Part;
use dbmazz::control::proto::{
    job_event, SqlEngine, UploadMetadata, UploadRequest, WatchJobRequest,
};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value as Json;
use tokio_tungstenite::tungstenite::Message;

use crate::control::listening;

use crate::support::dbmazz::{Job, Proc};
use crate::support::mariadb::{MariaDb, PROVISION_PASSWORD, PROVISION_USER};
use crate::support::pg::PgCluster;

/// Upper bound for anything a test waits for; generous for a loaded two-core machine.
const WAIT: Duration = Duration::from_secs(120);

/// A daemon with provisioning on, its targets and its ports.
struct Daemon {
    pg: PgCluster,
    maria: Option<MariaDb>,
    job: Job,
    p: Proc,
    grpc: u16,
    http: SocketAddr,
}

impl Daemon {
    /// PostgreSQL (and with `mysql`, MariaDB) as provisioning targets, gRPC and HTTP on
    /// ephemeral ports, plus `env`.
    fn start(mysql: bool, env: &[(&str, &str)]) -> Daemon {
        let pg = PgCluster::start();
        let url = pg.create_database("app");
        pg.psql("app", "CREATE TABLE t (id int PRIMARY KEY)");
        pg.psql(
            "postgres",
            &format!("CREATE ROLE {PROVISION_USER} LOGIN PASSWORD '{PROVISION_PASSWORD}'"),
        );
        let maria = mysql.then(MariaDb::start);
        let job = Job::new(&url, "t");
        let tmp = job.dir().join("schemas").display().to_string();
        let mut job = job
            .env("GRPC_PORT", "0")
            .env("METRICS_PORT", "0")
            .env("PROVISION_POSTGRES_URL", &pg.url("postgres"))
            .env("PROVISION_ROLE", PROVISION_USER)
            .env("PROVISION_ROLE_PASSWORD", PROVISION_PASSWORD)
            .env("SCHEMA_TMP_PATH", &tmp);
        if let Some(m) = &maria {
            job = job.env("PROVISION_MYSQL_URL", &m.admin_url(""));
        }
        for (k, v) in env {
            job = job.env(k, v);
        }
        let mut p = job.spawn_streaming();
        let grpc = listening(&mut p, "grpc").port();
        let http = listening(&mut p, "metrics");
        Daemon {
            pg,
            maria,
            job,
            p,
            grpc,
            http,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    fn grpc_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc)
    }

    /// `curl -F engine=… -F name=… -F schema=@file` (plus `extra` arguments); the HTTP status
    /// and the JSON body.
    fn curl_upload(&self, engine: &str, name: &str, file: &Path, extra: &[&str]) -> (u16, Json) {
        let mut args = vec![
            "-F".to_owned(),
            format!("engine={engine}"),
            "-F".to_owned(),
            format!("name={name}"),
            "-F".to_owned(),
            format!("schema=@{}", file.display()),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        curl(&self.url("/schema/upload"), &args)
    }

    /// Polls `GET /schema/job/{id}` until the job ends; its last JSON.
    fn wait_job(&self, id: &str) -> Json {
        let deadline = Instant::now() + WAIT;
        loop {
            let (code, job) = curl(&self.url(&format!("/schema/job/{id}")), &[]);
            assert_eq!(code, 200, "{job}");
            if matches!(job["status"].as_str(), Some("success" | "failed")) {
                return job;
            }
            assert!(
                Instant::now() < deadline,
                "job {id} did not end: {job}\n{}",
                self.p.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- dbmazz log ---\n{}", self.p.log());
        }
    }
}

/// Runs the real curl; the HTTP status and the body parsed as JSON (`Null` when it is not).
fn curl(url: &str, args: &[String]) -> (u16, Json) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "120", "-w", "\n%{http_code}"])
        .args(args)
        .arg(url)
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "curl {url} {args:?}: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (body, code) = text.rsplit_once('\n').unwrap();
    (
        code.trim().parse().unwrap(),
        serde_json::from_str(body).unwrap_or(Json::Null),
    )
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// A pg_dump-like file: a table, COPY data, an index and a view.
const PG_SCHEMA: &str = "\
SET statement_timeout = 0;
SET client_encoding = 'UTF8';
CREATE TABLE public.accounts (id integer PRIMARY KEY, name text NOT NULL, note text);
COPY public.accounts (id, name, note) FROM stdin;
1\talice\tsays 'DROP DATABASE' in a literal
2\tbob\t\\N
3\tcarol\ttabs\\tand\\nnewlines
\\.
CREATE INDEX accounts_name ON public.accounts (name);
CREATE VIEW public.named AS SELECT id, name FROM public.accounts WHERE note IS NOT NULL;
";

/// A mysqldump-like file with a DELIMITER-delimited trigger.
const MYSQL_SCHEMA: &str = "\
CREATE TABLE accounts (id INT PRIMARY KEY, name VARCHAR(50) NOT NULL, touched INT DEFAULT 0);
INSERT INTO accounts (id, name) VALUES (1,'alice'),(2,'bob; not a split'),(3,'carol');
DELIMITER ;;
CREATE TRIGGER accounts_touch BEFORE UPDATE ON accounts FOR EACH ROW BEGIN
  SET NEW.touched = OLD.touched + 1;
END ;;
DELIMITER ;
UPDATE accounts SET name = 'ALICE' WHERE id = 1;
";

#[test]
fn rest_upload_with_curl_applies_into_postgres_and_mariadb() {
    let d = Daemon::start(true, &[]);
    let dir = d.job.dir();

    // PostgreSQL: upload, poll until success, look at the database.
    let file = write(dir, "tenant.sql", PG_SCHEMA);
    let (code, resp) = d.curl_upload("postgres", "tenant_a", &file, &[]);
    assert_eq!(code, 202, "{resp}");
    assert_eq!(resp["success"], true, "{resp}");
    let id = resp["jobId"].as_str().unwrap().to_owned();
    assert_eq!(resp["bytes"], PG_SCHEMA.len() as u64);
    let job = d.wait_job(&id);
    assert_eq!(job["status"], "success", "{job}\n{}", d.p.log());
    assert_eq!(job["progress"], 100);
    assert_eq!(job["id"], id.as_str());
    assert_eq!(job["database"], "tenant_a");
    assert!(job["statements"].as_u64().unwrap() >= 5, "{job}");
    assert_eq!(
        d.pg.psql(
            "tenant_a",
            "SELECT count(*), string_agg(coalesce(note, '<null>'), '|' ORDER BY id) FROM accounts"
        ),
        "3|says 'DROP DATABASE' in a literal|<null>|tabs\tand\nnewlines"
    );
    assert_eq!(d.pg.psql("tenant_a", "SELECT count(*) FROM named"), "2");
    assert_eq!(
        d.pg.psql(
            "postgres",
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'tenant_a'"
        ),
        PROVISION_USER
    );

    // MariaDB: the same through engine=mysql, with a DELIMITER trigger.
    let file = write(dir, "tenant_my.sql", MYSQL_SCHEMA);
    let (code, resp) = d.curl_upload("mysql", "tenant_m", &file, &[]);
    assert_eq!(code, 202, "{resp}");
    let job = d.wait_job(resp["jobId"].as_str().unwrap());
    assert_eq!(job["status"], "success", "{job}\n{}", d.p.log());
    let maria = d.maria.as_ref().unwrap();
    assert_eq!(
        maria.query(
            "SELECT GROUP_CONCAT(CONCAT(name, ':', touched) ORDER BY id) FROM tenant_m.accounts"
        ),
        "ALICE:1,bob; not a split:0,carol:0"
    );

    // The same port still serves Prometheus, byte-compatible.
    let (code, _) = curl(&d.url("/metrics"), &["-o".into(), "/dev/null".into()]);
    assert_eq!(code, 200);
    let head = Command::new("curl")
        .args(["-sS", "-D", "-", "-o", "/dev/null"])
        .arg(d.url("/metrics"))
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&head.stdout);
    assert!(
        head.contains("Content-Type: application/openmetrics-text"),
        "{head}"
    );
    assert!(head.contains("Connection: close"), "{head}");

    // Refusals, as JSON with the right status.
    let (code, resp) = d.curl_upload("postgres", "Robert'); DROP TABLE x;--", &file, &[]);
    assert_eq!(code, 400, "{resp}");
    assert_eq!(resp["success"], false);
    assert!(resp["error"].as_str().unwrap().contains("Robert"), "{resp}");
    let txt = write(dir, "notes.txt", "CREATE TABLE x (id int);");
    let (code, resp) = d.curl_upload("postgres", "tenant_b", &txt, &[]);
    assert_eq!(code, 400, "{resp}");
    assert!(resp["error"].as_str().unwrap().contains(".sql"), "{resp}");
    let (code, resp) = d.curl_upload("oracle", "tenant_b", &file, &[]);
    assert_eq!(code, 400, "{resp}");
    assert!(resp["error"].as_str().unwrap().contains("engine"), "{resp}");
    let (code, resp) = curl(
        &d.url("/schema/upload"),
        &["-F".into(), format!("schema=@{}", file.display())],
    );
    assert_eq!(code, 400, "{resp}");
    assert!(resp["error"].as_str().unwrap().contains("engine"), "{resp}");
    let (code, resp) = d.curl_upload(
        "postgres",
        "tenant_a",
        &write(dir, "again.sql", "CREATE TABLE y (id int);"),
        &[],
    );
    assert_eq!(code, 202, "{resp}");
    let again = d.wait_job(resp["jobId"].as_str().unwrap());
    assert_eq!(
        again["status"], "failed",
        "an existing database is refused: {again}"
    );
    let (code, resp) = curl(&d.url("/schema/job/no-such-job"), &[]);
    assert_eq!(code, 404, "{resp}");
    assert_eq!(resp["code"], "not-found");

    // The list shows the jobs, newest first.
    let (code, list) = curl(&d.url("/schema/jobs?limit=2"), &[]);
    assert_eq!(code, 200);
    assert_eq!(list["jobs"].as_array().unwrap().len(), 2, "{list}");
    assert_eq!(list["jobs"][0]["database"], "tenant_a");
}

/// The form's fields may come in any order: the file first, options after it. A file whose
/// engine came after it is split and guarded from disk; a missing field is a 400 that leaves
/// no file behind.
#[test]
fn rest_form_fields_are_accepted_in_any_order() {
    let d = Daemon::start(false, &[]);
    let dir = d.job.dir();
    let file = write(dir, "tenant.sql", PG_SCHEMA);
    let form = |parts: &[String]| {
        let args: Vec<String> = parts
            .iter()
            .flat_map(|p| ["-F".to_owned(), p.clone()])
            .collect();
        curl(&d.url("/schema/upload"), &args)
    };
    let schema = format!("schema=@{}", file.display());

    // The file first, then name and engine.
    let (code, resp) = form(&[
        schema.clone(),
        "name=tenant_late".into(),
        "engine=postgres".into(),
    ]);
    assert_eq!(code, 202, "{resp}");
    let job = d.wait_job(resp["jobId"].as_str().unwrap());
    assert_eq!(job["status"], "success", "{job}");
    assert_eq!(
        d.pg.psql("tenant_late", "SELECT count(*) FROM accounts"),
        "3"
    );

    // An option after the file is honoured: a dry run creates nothing.
    let (code, resp) = form(&[
        "engine=postgres".into(),
        "name=tenant_dry".into(),
        schema.clone(),
        "dryRun=true".into(),
    ]);
    assert_eq!(code, 202, "{resp}");
    let job = d.wait_job(resp["jobId"].as_str().unwrap());
    assert_eq!(
        (job["status"].as_str(), job["dryRun"].as_bool()),
        (Some("success"), Some(true)),
        "{job}"
    );
    assert_eq!(
        d.pg.psql(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname = 'tenant_dry'"
        ),
        "0"
    );

    // A file the guard refuses, its engine named after it: refused before anything is created.
    let bad = write(
        dir,
        "bad.sql",
        "CREATE TABLE a (id int);\nCREATE DATABASE other;\n",
    );
    let (code, resp) = form(&[
        format!("schema=@{}", bad.display()),
        "engine=postgres".into(),
        "name=tenant_guarded".into(),
    ]);
    assert_eq!(code, 202, "{resp}");
    let job = d.wait_job(resp["jobId"].as_str().unwrap());
    assert_eq!(job["status"], "failed", "{job}");
    let error = job["error"].as_str().unwrap();
    assert!(error.starts_with("line 2: "), "{error}");
    assert_eq!(job["createdDatabase"], false, "{job}");

    // A missing field after the file: 400, and the stored bytes are removed.
    let (code, resp) = form(&[schema.clone(), "engine=postgres".into()]);
    assert_eq!(code, 400, "{resp}");
    assert!(
        resp["error"].as_str().unwrap().contains("no field name"),
        "{resp}"
    );
    let (code, resp) = form(&[schema.clone(), "name=tenant_x".into(), "color=blue".into()]);
    assert_eq!(code, 400, "{resp}");
    assert!(
        resp["error"].as_str().unwrap().contains("unknown field"),
        "{resp}"
    );
    let left: Vec<_> = std::fs::read_dir(dir.join("schemas"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_file())
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "files left behind: {left:?}");
}

#[test]
fn rest_limits_token_and_idempotency() {
    let d = Daemon::start(
        false,
        &[
            ("GRPC_TOKEN", "s3cret-token-0123456789"),
            ("SCHEMA_MAX_BYTES", "2000"),
            ("RATE_LIMIT_MAX", "3"),
            ("RATE_LIMIT_WINDOW_MS", "600000"),
        ],
    );
    let dir = d.job.dir();
    let small = write(dir, "small.sql", "CREATE TABLE s (id int);\n");
    let bearer = [
        "-H".to_owned(),
        "Authorization: Bearer s3cret-token-0123456789".to_owned(),
    ];

    // Without (or with a wrong) token: 401, on every provisioning route; /metrics stays open.
    let (code, resp) = d.curl_upload("postgres", "tenant_x", &small, &[]);
    assert_eq!(code, 401, "{resp}");
    assert_eq!(resp["code"], "unauthenticated");
    let (code, _) = curl(
        &d.url("/schema/job/x"),
        &["-H".into(), "Authorization: Bearer wrong".into()],
    );
    assert_eq!(code, 401);
    let (code, _) = curl(&d.url("/metrics"), &["-o".into(), "/dev/null".into()]);
    assert_eq!(code, 200);
    assert!(
        !d.p.log().contains("s3cret-token-0123456789"),
        "the token was logged"
    );

    // Idempotency key: the retry gets the first job back.
    let key = ["-H".to_owned(), "Idempotency-Key: order-42".to_owned()];
    let args: Vec<&str> = bearer.iter().chain(&key).map(String::as_str).collect();
    let (code, first) = d.curl_upload("postgres", "tenant_k", &small, &args);
    assert_eq!(code, 202, "{first}");
    let (code, retry) = d.curl_upload("postgres", "tenant_k", &small, &args);
    assert_eq!(code, 202, "{retry}");
    assert_eq!(retry["jobId"], first["jobId"]);
    assert_eq!(retry["deduplicated"], true);

    // Too big: 413 while streaming, nothing created.
    let big = write(
        dir,
        "big.sql",
        &"-- padding padding padding padding\n".repeat(100),
    );
    let auth: Vec<&str> = bearer.iter().map(String::as_str).collect();
    let (code, resp) = d.curl_upload("postgres", "tenant_big", &big, &auth);
    assert_eq!(code, 413, "{resp}");
    assert!(
        resp["error"].as_str().unwrap().contains("SCHEMA_MAX_BYTES"),
        "{resp}"
    );

    // Rate limit: the uploads above used the window (the idempotent retry and the refused one
    // may or may not count); within a few more, 429 with Retry-After.
    let mut limited = None;
    for i in 0..4 {
        let (code, resp) = d.curl_upload("postgres", &format!("tenant_r{i}"), &small, &auth);
        if code == 429 {
            limited = Some(resp);
            break;
        }
        assert_eq!(code, 202, "{resp}");
    }
    let resp = limited.expect("RATE_LIMIT_MAX=3 never answered 429");
    assert_eq!(resp["code"], "rate-limited");
    assert!(
        resp["error"].as_str().unwrap().contains("RATE_LIMIT_MAX"),
        "{resp}"
    );
}

#[test]
fn rest_without_provisioning_answers_503_and_still_serves_metrics() {
    let pg = PgCluster::start();
    let url = pg.create_database("app");
    pg.psql("app", "CREATE TABLE t (id int PRIMARY KEY)");
    let job = Job::new(&url, "t").env("METRICS_PORT", "0");
    let mut p = job.spawn_streaming();
    let http = listening(&mut p, "metrics");
    let file = write(job.dir(), "s.sql", "CREATE TABLE s (id int);");
    let (code, resp) = curl(
        &format!("http://{http}/schema/upload"),
        &[
            "-F".into(),
            "engine=postgres".into(),
            "-F".into(),
            "name=tenant_a".into(),
            "-F".into(),
            format!("schema=@{}", file.display()),
        ],
    );
    assert_eq!(code, 503, "{resp}");
    assert!(
        resp["error"]
            .as_str()
            .unwrap()
            .contains("PROVISION_POSTGRES_URL"),
        "{resp}"
    );
    let (code, _) = curl(
        &format!("http://{http}/metrics"),
        &["-o".into(), "/dev/null".into()],
    );
    assert_eq!(code, 200);
}

/// A schema of `rows` COPY rows of about 100 bytes each into `big`.
fn copy_schema_chunks(rows: u64, per_chunk: u64) -> impl Iterator<Item = Vec<u8>> {
    let head = b"CREATE TABLE big (id bigint PRIMARY KEY, payload text NOT NULL);\nCOPY big (id, payload) FROM stdin;\n".to_vec();
    let pad = "x".repeat(90);
    let mut next = 1u64;
    let mut done = false;
    std::iter::once(head).chain(std::iter::from_fn(move || {
        if done {
            return None;
        }
        let mut buf = Vec::with_capacity((per_chunk * 110) as usize);
        let end = (next + per_chunk).min(rows + 1);
        for id in next..end {
            use std::io::Write;
            writeln!(buf, "{id}\t{pad}{id}").unwrap();
        }
        next = end;
        if next > rows {
            buf.extend_from_slice(b"\\.\n");
            done = true;
        }
        Some(buf)
    }))
}

/// Uploads a generated COPY file of `rows` rows over gRPC (generated as it is sent, never on
/// disk), follows WatchJob, samples the daemon's RSS; returns (job events' progress, peak RSS
/// KiB, bytes).
async fn streamed_upload(d: &Daemon, name: &str, rows: u64) -> (Vec<u32>, u64, u64) {
    let channel = tonic::transport::Endpoint::from_shared(d.grpc_url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = SchemaServiceClient::new(channel).max_encoding_message_size(4 << 20);
    let meta = UploadRequest {
        part: Some(Part::Metadata(UploadMetadata {
            engine: SqlEngine::Postgres as i32,
            database: name.into(),
            file_name: "big.sql".into(),
            ..Default::default()
        })),
    };
    // 1 MiB chunks: ~9500 rows of ~110 bytes.
    let chunks = copy_schema_chunks(rows, 9500).map(|c| UploadRequest {
        part: Some(Part::Chunk(c)),
    });
    let stream = tokio_stream::iter(std::iter::once(meta).chain(chunks));
    let pid = d.p.pid();
    let sampler = std::thread::spawn(move || {
        let mut max = 0u64;
        let mut samples = 0;
        while let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            let rss: u64 = text
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or(0);
            max = max.max(rss);
            samples += 1;
            if std::path::Path::new(&format!("/tmp/.stop-sampling-{pid}")).exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        (max, samples)
    });
    let resp = client.upload(stream).await.unwrap().into_inner();
    let mut events = client
        .watch_job(WatchJobRequest {
            id: resp.job_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut progress = Vec::new();
    let mut last = None;
    while let Some(ev) = events.next().await {
        let ev = ev.unwrap();
        let job = ev.job.unwrap();
        progress.push(job.progress);
        last = Some((ev.r#type, job));
    }
    std::fs::write(format!("/tmp/.stop-sampling-{pid}"), b"").unwrap();
    let (max_rss, samples) = sampler.join().unwrap();
    let _ = std::fs::remove_file(format!("/tmp/.stop-sampling-{pid}"));
    let (kind, job) = last.expect("WatchJob sent no event");
    assert_eq!(kind, job_event::Type::Done as i32, "{job:?}\n{}", d.p.log());
    assert!(samples > 5, "too few RSS samples ({samples})");
    (progress, max_rss, resp.bytes)
}

fn check_streamed(rows: u64, name: &str) {
    let d = Daemon::start(false, &[("SCHEMA_MAX_BYTES", "4000000000")]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let started = Instant::now();
    let (progress, max_rss_kib, bytes) = rt.block_on(streamed_upload(&d, name, rows));
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "{bytes} bytes in {secs:.1}s ({:.1} MB/s), daemon max RSS {} KiB, {} progress events",
        bytes as f64 / 1e6 / secs,
        max_rss_kib,
        progress.len()
    );
    assert!(
        progress.windows(2).all(|w| w[0] <= w[1]),
        "progress went down: {progress:?}"
    );
    assert_eq!(progress.last(), Some(&100));
    assert!(
        progress.iter().filter(|p| (1..100).contains(*p)).count() >= 2,
        "expected intermediate progress: {progress:?}"
    );
    assert_eq!(
        d.pg.psql(name, "SELECT count(*), max(id) FROM big"),
        format!("{rows}|{rows}")
    );
    assert!(
        max_rss_kib < 64 * 1024,
        "the daemon's RSS reached {max_rss_kib} KiB for a {bytes}-byte upload"
    );
    let peak = d.p.peak_rss_kib();
    assert!(peak < 64 * 1024, "VmHWM {peak} KiB");
}

#[test]
fn a_100_mb_upload_streams_with_flat_memory_and_monotonic_progress() {
    check_streamed(950_000, "tenant_100mb");
}

/// The ≥ 1 GB variant: `DBMAZZ_SOAK=1` (scripts/soak.sh) or `cargo test -- --ignored`.
#[test]
#[ignore = "takes minutes; run by scripts/soak.sh"]
fn a_1_gb_upload_streams_with_flat_memory_and_monotonic_progress() {
    check_streamed(9_800_000, "tenant_1gb");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_subscription_sees_monotonic_progress_then_done_or_failed() {
    let d = tokio::task::spawn_blocking(|| Daemon::start(false, &[]))
        .await
        .unwrap();
    let dir = d.job.dir().to_owned();
    // ~30 MB of COPY data: long enough to see progress events (about ten a second).
    let path = dir.join("ws.sql");
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        for c in copy_schema_chunks(280_000, 10_000) {
            f.write_all(&c).unwrap();
        }
    }
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", d.http))
        .await
        .unwrap();

    // Bad requests are answered, the socket stays usable.
    ws.send(Message::text("hello")).await.unwrap();
    let reply = next_json(&mut ws).await;
    assert_eq!(reply["type"], "error", "{reply}");
    ws.send(Message::text(r#"{"type":"subscribe","jobId":"nope"}"#))
        .await
        .unwrap();
    let reply = next_json(&mut ws).await;
    assert_eq!(reply["type"], "error", "{reply}");
    assert_eq!(reply["jobId"], "nope");

    let (code, resp) = {
        let d = &d;
        let path = path.clone();
        tokio::task::block_in_place(|| d.curl_upload("postgres", "tenant_ws", &path, &[]))
    };
    assert_eq!(code, 202, "{resp}");
    let id = resp["jobId"].as_str().unwrap().to_owned();
    ws.send(Message::text(
        serde_json::json!({"type": "subscribe", "jobId": id}).to_string(),
    ))
    .await
    .unwrap();
    let mut progress = Vec::new();
    let last = loop {
        let ev = next_json(&mut ws).await;
        eprintln!("{ev}");
        assert_eq!(ev["jobId"], id.as_str(), "{ev}");
        progress.push(ev["progress"].as_u64().unwrap());
        match ev["type"].as_str().unwrap() {
            "progress" => assert!(matches!(ev["status"].as_str(), Some("queued" | "running"))),
            "done" | "failed" => break ev,
            other => panic!("unexpected event {other}: {ev}"),
        }
    };
    assert_eq!(last["type"], "done", "{last}");
    assert_eq!(last["status"], "success");
    assert!(
        progress.windows(2).all(|w| w[0] <= w[1]),
        "progress went down: {progress:?}"
    );
    assert_eq!(progress.last(), Some(&100));
    assert!(progress.len() >= 3, "too few events: {progress:?}");

    // A failing job ends with a `failed` event carrying the line and the server's message.
    let bad = write(
        &dir,
        "bad.sql",
        "CREATE TABLE a (id int);\nINSERT INTO a VALUES (1);\nINSERT INTO missing VALUES (2);\n",
    );
    let (code, resp) =
        tokio::task::block_in_place(|| d.curl_upload("postgres", "tenant_ws_bad", &bad, &[]));
    assert_eq!(code, 202, "{resp}");
    let bad_id = resp["jobId"].as_str().unwrap().to_owned();
    ws.send(Message::text(
        serde_json::json!({"type": "subscribe", "jobId": bad_id}).to_string(),
    ))
    .await
    .unwrap();
    let failed = loop {
        let ev = next_json(&mut ws).await;
        if ev["type"] != "progress" {
            break ev;
        }
    };
    assert_eq!(failed["type"], "failed", "{failed}");
    let error = failed["error"].as_str().unwrap();
    assert!(error.contains("line 3"), "{error}");
    assert!(error.contains("missing"), "{error}");
    ws.close(None).await.unwrap();
}

/// With `GRPC_TOKEN` set, a browser-style WebSocket client authenticates with the
/// subprotocols `dbmazz` and `bearer.<token>`: the answer names `dbmazz` (never the token);
/// no token or a wrong one is 401; the token without `dbmazz` is 400 saying what to offer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_takes_the_token_as_a_subprotocol_like_a_browser_sends_it() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Error as WsError;
    const TOKEN: &str = "ws-token-0123456789abcdef";
    let d = tokio::task::spawn_blocking(|| Daemon::start(false, &[("GRPC_TOKEN", TOKEN)]))
        .await
        .unwrap();
    let url = format!("ws://{}/ws", d.http);
    let connect = |protocols: Option<&str>| {
        let mut req = url.as_str().into_client_request().unwrap();
        if let Some(p) = protocols {
            req.headers_mut()
                .insert("Sec-WebSocket-Protocol", p.parse().unwrap());
        }
        tokio_tungstenite::connect_async(req)
    };
    let status = |r: Result<_, WsError>| match r {
        Err(WsError::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("not an HTTP refusal: {e}"),
        Ok(_) => 101,
    };
    assert_eq!(status(connect(None).await), 401);
    assert_eq!(
        status(connect(Some("dbmazz, bearer.wrong-token-0123456789")).await),
        401
    );
    match connect(Some(&format!("bearer.{TOKEN}"))).await {
        Err(WsError::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 400);
            let body = String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default());
            assert!(body.contains("offer the subprotocol"), "{body}");
            assert!(!body.contains(TOKEN), "{body}");
        }
        other => panic!("expected 400, got {:?}", other.map(|_| ())),
    }
    let (mut ws, resp) = connect(Some(&format!("dbmazz, bearer.{TOKEN}")))
        .await
        .unwrap();
    assert_eq!(
        resp.headers()
            .get("Sec-WebSocket-Protocol")
            .and_then(|v| v.to_str().ok()),
        Some("dbmazz")
    );
    ws.send(Message::text(r#"{"type":"subscribe","jobId":"nope"}"#))
        .await
        .unwrap();
    let reply = next_json(&mut ws).await;
    assert_eq!(
        (reply["type"].as_str(), reply["jobId"].as_str()),
        (Some("error"), Some("nope"))
    );
    assert!(!d.p.log().contains(TOKEN), "the token was logged");
}

async fn next_json<S>(ws: &mut S) -> Json
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("no WebSocket message in time")
            .expect("the WebSocket closed")
            .unwrap();
        if let Message::Text(t) = msg {
            return serde_json::from_str(t.as_str()).unwrap();
        }
    }
}

/// The CLI in a pipe: plain progress lines, exit 0; a failing file: exit 1 with the line; an
/// unreachable server: exit 2.
#[test]
fn cli_upload_exit_codes_and_plain_progress() {
    let d = Daemon::start(false, &[]);
    let dir = d.job.dir();
    let good = write(dir, "good.sql", PG_SCHEMA);
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_dbmazz"))
            .arg("schema")
            .args(args)
            .env_remove("GRPC_TOKEN")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let addr = d.grpc_url();
    let (code, out, err) = run(&[
        "upload",
        "--addr",
        &addr,
        "--engine",
        "postgres",
        "--name",
        "tenant_cli",
    ]
    .iter()
    .copied()
    .chain([good.to_str().unwrap()])
    .collect::<Vec<_>>());
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(out.contains("upload: 100%"), "{out}");
    assert!(out.contains("apply: 100%"), "{out}");
    assert!(out.contains("SUCCESS"), "{out}");
    assert_eq!(
        d.pg.psql("tenant_cli", "SELECT count(*) FROM accounts"),
        "3"
    );

    let bad = write(
        dir,
        "bad.sql",
        "CREATE TABLE a (id int);\n\nSELECT no_such_column FROM a;\n",
    );
    let (code, out, err) = run(&[
        "upload",
        "--addr",
        &addr,
        "--engine",
        "postgres",
        "--name",
        "tenant_cli_bad",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(1), "{out}\n{err}");
    assert!(err.contains("FAILED") && err.contains("line 3"), "{err}");
    assert!(err.contains("no_such_column"), "{err}");
    assert_eq!(
        d.pg.psql(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname = 'tenant_cli_bad'"
        ),
        "0",
        "the failed job's database was left behind"
    );

    let (code, out, err) = run(&["status", "--addr", &addr, "no-such-job"]);
    assert_eq!(code, Some(2), "{out}\n{err}");
    assert!(err.contains("NotFound"), "{err}");
    let (code, out, _) = run(&["list", "--addr", &addr]);
    assert_eq!(code, Some(0));
    assert!(
        out.contains("tenant_cli_bad") && out.contains("FAILED"),
        "{out}"
    );

    let closed = format!("http://127.0.0.1:{}", crate::support::pg::free_port());
    let (code, _, err) = run(&[
        "upload",
        "--addr",
        &closed,
        "--engine",
        "postgres",
        "--name",
        "x",
        good.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("cannot connect"), "{err}");
    let (code, _, err) = run(&[
        "upload",
        "--addr",
        &addr,
        "--engine",
        "postgres",
        "--name",
        "x",
        "/nonexistent/schema.sql",
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("/nonexistent/schema.sql"), "{err}");
}

/// The CLI in a real terminal: the bars are drawn, and the exit code is right.
#[test]
fn cli_upload_draws_progress_bars_in_a_terminal() {
    let d = Daemon::start(false, &[]);
    let dir = d.job.dir();
    let path = dir.join("tty.sql");
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        for c in copy_schema_chunks(200_000, 10_000) {
            f.write_all(&c).unwrap();
        }
    }
    let bad = write(
        dir,
        "bad.sql",
        "CREATE TABLE a (id int);\nINSERT INTO nope VALUES (1);\n",
    );
    let bin = env!("CARGO_BIN_EXE_dbmazz");
    let addr = d.grpc_url();
    let script = format!(
        "{bin} schema upload --addr {addr} --engine postgres --name tenant_tty {}; echo EXIT=$?; \
         {bin} schema upload --addr {addr} --engine postgres --name tenant_tty_bad {}; echo EXIT=$?; \
         sleep 60",
        path.display(),
        bad.display()
    );
    let tmux = crate::top::Tmux::start_named("schema", 120, 30, &script);
    let screen = tmux.wait_screen("both uploads to end", |s| s.matches("EXIT=").count() == 2);
    eprintln!("{screen}");
    assert!(
        screen.contains("EXIT=0\n") || screen.contains("EXIT=0 "),
        "{screen}"
    );
    assert!(screen.contains("EXIT=1"), "{screen}");
    assert!(
        screen.contains("upload [") && screen.contains("apply ["),
        "{screen}"
    );
    assert!(screen.contains("100%"), "{screen}");
    assert!(screen.contains("SUCCESS"), "{screen}");
    assert!(screen.contains("line 2"), "{screen}");
    assert_eq!(
        d.pg.psql("tenant_tty", "SELECT count(*) FROM big"),
        "200000"
    );
}
