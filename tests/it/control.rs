//! The control plane as operators use it: the real `grpcurl` against the real daemon (with
//! PostgreSQL 15 and the NDJSON sink), the README's command blocks as written, and the
//! Prometheus endpoint scraped over plain HTTP.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::Value as Json;

use crate::support::dbmazz::{wait_until, Job, Proc};
use crate::support::fault_proxy::{FaultProxy, Mode};
use crate::support::grpcurl::{self, at_port, shell_ok, Client, Stream};
use crate::support::pg::PgCluster;

/// Upper bound for anything a test waits for; generous for a loaded two-core machine.
const WAIT: Duration = Duration::from_secs(60);

/// The address a listener of the daemon logged (`<what> listening addr=…`).
pub(crate) fn listening(p: &mut Proc, what: &str) -> SocketAddr {
    let needle = format!("{what} listening");
    p.wait_for_log(&needle, WAIT);
    let log = p.log();
    let line = log.lines().find(|l| l.contains(&needle)).unwrap();
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("addr="))
        .unwrap_or_else(|| panic!("no addr= in {line:?}"))
        .parse()
        .unwrap()
}

fn grpc_port(p: &mut Proc) -> u16 {
    listening(p, "grpc").port()
}

/// A job with gRPC on an ephemeral port.
fn grpc_job(url: &str, tables: &str) -> Job {
    Job::new(url, tables).env("GRPC_PORT", "0")
}

fn changes(job: &Job) -> usize {
    job.lines()
        .iter()
        .filter(|l| matches!(l["op"].as_str(), Some("insert" | "update" | "delete")))
        .count()
}

/// A uint64 as grpcurl prints it (a JSON string of digits; absent when zero).
fn uint(v: &Json) -> u64 {
    match v {
        Json::Null => 0,
        Json::String(s) => s.parse().unwrap_or_else(|_| panic!("not a uint64: {s:?}")),
        other => panic!("not a uint64: {other}"),
    }
}

fn slot_confirmed(pg: &PgCluster, db: &str) -> u64 {
    let text = pg.psql(
        db,
        "SELECT coalesce(confirmed_flush_lsn - '0/0', 0) FROM pg_replication_slots WHERE slot_name = 'dbmazz_slot'",
    );
    text.parse::<f64>().unwrap() as u64
}

fn wal_lsn(pg: &PgCluster, db: &str) -> u64 {
    pg.psql(db, "SELECT pg_current_wal_lsn() - '0/0'")
        .parse::<f64>()
        .unwrap() as u64
}

/// Prints a command and its output, so a `--nocapture` run shows what operators will see.
fn show(command: &str, output: &str) {
    eprintln!("$ {command}\n{output}");
}

/// `shop.orders` with `rows` rows, reached through a proxy that holds every piece of traffic
/// to PostgreSQL back 100 ms, so that a copy of it takes long enough to be watched. Returns
/// the cluster and the proxy (both must live as long as the test) and the URL through it.
fn orders_behind_latency(rows: u32) -> (PgCluster, FaultProxy, String) {
    let pg = PgCluster::start();
    pg.create_database("shop");
    pg.psql(
        "shop",
        &format!(
            "CREATE TABLE orders (id int PRIMARY KEY, total numeric);
             INSERT INTO orders SELECT g, g * 10 FROM generate_series(1, {rows}) g;"
        ),
    );
    let proxy = FaultProxy::start(pg.port);
    proxy.set(Mode::Latency(Duration::from_millis(100)));
    let url = format!(
        "postgres://postgres@127.0.0.1:{}/shop?sslmode=disable",
        proxy.port
    );
    (pg, proxy, url)
}

/// The stage only moves forward: from the moment streaming starts (the log line scripts wait
/// for) until the copy's last chunk is durable, Health says `STAGE_SNAPSHOT`, then `STAGE_CDC`.
/// It once said `STAGE_CDC` first, while the copy's workers connected, and then went back to
/// `STAGE_SNAPSHOT`, so a script's "wait for CDC" loop could end before the copy had begun.
#[test]
fn health_says_snapshot_from_the_start_of_streaming_until_the_copy_is_durable() {
    // The copy's workers take a second or so to connect and import the snapshot after
    // streaming starts, a window wide enough for Health to be asked in.
    let (_pg, _proxy, url) = orders_behind_latency(1000);
    let job = grpc_job(&url, "orders");
    let mut p = job.spawn();
    let grpc = Client::new(grpc_port(&mut p));
    p.wait_for_log("streaming changes", WAIT);
    let first = grpc.ok("dbmazz.HealthService/Check", "{}");
    assert_eq!(first["stage"], "STAGE_SNAPSHOT", "{first}");
    assert!(
        first["stageDetail"]
            .as_str()
            .is_some_and(|d| d.starts_with("Snapshot: public.orders ")),
        "{first}"
    );

    let mut stages = vec![first["stage"].clone()];
    wait_until(WAIT, "STAGE_CDC", || {
        let h = grpc.ok("dbmazz.HealthService/Check", "{}");
        stages.push(h["stage"].clone());
        h["stage"] == "STAGE_CDC"
    });
    assert!(
        p.log().contains("snapshot complete"),
        "CDC before the copy was done; stages seen: {stages:?}\n{}",
        p.log()
    );
    let after = grpc.ok("dbmazz.HealthService/Check", "{}");
    assert_eq!(after["stage"], "STAGE_CDC", "{after}");
    assert_eq!(after["stageDetail"], "Replicating", "{after}");
    let copied = job
        .lines()
        .iter()
        .filter(|l| l["table"] == "orders" && l["op"] == "snapshot")
        .count();
    assert_eq!(copied, 1000, "rows copied");
}

/// A pause asked for while the copy runs stops the copy at a chunk boundary, and Health keeps
/// saying `STAGE_SNAPSHOT` (it once said `STAGE_CDC` "Paused", as if the copy were done). The
/// resumed copy finishes every row.
#[test]
fn a_pause_during_the_copy_keeps_stage_snapshot_and_the_resumed_copy_finishes() {
    // 40 chunks, one worker, 100 ms on every round trip to PostgreSQL: the copy takes seconds.
    let (_pg, proxy, url) = orders_behind_latency(4000);
    let job = grpc_job(&url, "orders")
        .env("SNAPSHOT_CHUNK_ROWS", "100")
        .env("SNAPSHOT_WORKERS", "1");
    let mut p = job.spawn();
    let grpc = Client::new(grpc_port(&mut p));
    p.wait_for_log("streaming changes", WAIT);
    assert_eq!(
        grpc.ok("dbmazz.CdcControlService/Pause", "{}")["state"],
        "PAUSED"
    );
    assert!(
        !p.log().contains("snapshot complete"),
        "the copy ended before the pause, so this test shows nothing:\n{}",
        p.log()
    );
    let paused = grpc.ok("dbmazz.HealthService/Check", "{}");
    assert_eq!(
        (paused["stage"].as_str(), paused["stageDetail"].as_str()),
        (Some("STAGE_SNAPSHOT"), Some("Paused")),
        "{paused}"
    );

    proxy.set(Mode::PassThrough);
    grpc.ok("dbmazz.CdcControlService/Resume", "{}");
    wait_until(WAIT, "the copy to finish after the resume", || {
        let h = grpc.ok("dbmazz.HealthService/Check", "{}");
        h["stage"] == "STAGE_CDC" && h["stageDetail"] == "Replicating"
    });
    assert!(p.log().contains("snapshot complete"), "{}", p.log());
    let copied: std::collections::BTreeSet<i64> = job
        .lines()
        .iter()
        .filter(|l| l["table"] == "orders" && l["op"] == "snapshot")
        .filter_map(|l| l["key"]["id"].as_i64())
        .collect();
    assert_eq!(copied.len(), 4000, "distinct rows copied");
}

#[test]
fn readme_grpcurl_commands_work_as_written() {
    let pg = PgCluster::start();
    let url = pg.create_database("shop");
    pg.psql(
        "shop",
        "CREATE TABLE orders (id int PRIMARY KEY, total numeric);
         CREATE TABLE order_items (order_id int, line int, sku text, PRIMARY KEY (order_id, line));",
    );
    let job = grpc_job(&url, "orders,order_items");
    let mut p = job.spawn();
    let port = grpc_port(&mut p);

    // "Control Plane Integration", step 2: wait until the job reaches CDC.
    let wait_for_cdc = at_port(
        r#"while true; do
  STAGE=$(grpcurl -plaintext localhost:50051 dbmazz.HealthService/Check | jq -r '.stage')
  [ "$STAGE" == "STAGE_CDC" ] && break
  sleep 1
done"#,
        port,
    );
    shell_ok(&wait_for_cdc);

    let check = at_port(
        "grpcurl -plaintext localhost:50051 dbmazz.HealthService/Check",
        port,
    );
    let out = shell_ok(&check);
    show(&check, &out);
    let health: Json = serde_json::from_str(&out).unwrap();
    assert_eq!(health["status"], "SERVING");
    assert_eq!(health["stage"], "STAGE_CDC");
    assert_eq!(health["stageDetail"], "Replicating");
    assert!(health.get("errorDetail").is_none(), "{out}");

    let standard = at_port(
        "grpcurl -plaintext localhost:50051 grpc.health.v1.Health/Check",
        port,
    );
    let out = shell_ok(&standard);
    show(&standard, &out);
    assert_eq!(
        serde_json::from_str::<Json>(&out).unwrap()["status"],
        "SERVING"
    );

    pg.psql(
        "shop",
        "INSERT INTO orders SELECT g, g * 10 FROM generate_series(1, 30) g;
         INSERT INTO order_items SELECT g, 1, 'sku-' || g FROM generate_series(1, 30) g;",
    );
    wait_until(WAIT, "60 changes", || changes(&job) == 60);

    let status = at_port(
        "grpcurl -plaintext -d '{}' localhost:50051 dbmazz.CdcStatusService/GetStatus",
        port,
    );
    let out = shell_ok(&status);
    show(&status, &out);
    let s: Json = serde_json::from_str(&out).unwrap();
    assert_eq!(s["state"], "RUNNING");
    assert_eq!(s["slotName"], "dbmazz_slot");
    assert_eq!(s["tables"], serde_json::json!(["orders", "order_items"]));
    let current = uint(&s["currentLsn"]);
    let confirmed = uint(&s["confirmedLsn"]);
    assert!(current >= confirmed && confirmed > 0, "{out}");
    let text = s["confirmedLsnText"].as_str().unwrap();
    let (hi, lo) = text.split_once('/').unwrap();
    assert_eq!(
        (u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap(),
        confirmed
    );

    let pause = at_port(
        "grpcurl -plaintext -d '{}' localhost:50051 dbmazz.CdcControlService/Pause",
        port,
    );
    let out = shell_ok(&pause);
    show(&pause, &out);
    let r: Json = serde_json::from_str(&out).unwrap();
    assert_eq!(r["success"], true);
    assert_eq!(r["state"], "PAUSED");
    // Pausing twice makes no sense: a proper status code, not a silent success.
    let again = grpcurl::shell(&pause);
    let stderr = String::from_utf8_lossy(&again.stderr);
    show(&pause, &stderr);
    assert!(!again.status.success());
    assert!(stderr.contains("Code: FailedPrecondition"), "{stderr}");

    let resume = at_port(
        "grpcurl -plaintext -d '{}' localhost:50051 dbmazz.CdcControlService/Resume",
        port,
    );
    let out = shell_ok(&resume);
    show(&resume, &out);
    let r: Json = serde_json::from_str(&out).unwrap();
    assert_eq!(r["success"], true);
    assert_eq!(r["state"], "RUNNING");
    let again = grpcurl::shell(&resume);
    let stderr = String::from_utf8_lossy(&again.stderr);
    show(&resume, &stderr);
    assert!(stderr.contains("Code: FailedPrecondition"), "{stderr}");

    let reload = at_port(
        r#"grpcurl -plaintext -d '{"flush_size": 2000}' localhost:50051 \
  dbmazz.CdcControlService/ReloadConfig"#,
        port,
    );
    let out = shell_ok(&reload);
    show(&reload, &out);
    let r: Json = serde_json::from_str(&out).unwrap();
    assert_eq!(r["success"], true);
    assert_eq!(uint(&r["flushSize"]), 2000);
    assert_eq!(
        uint(&r["flushIntervalMs"]),
        100,
        "FLUSH_INTERVAL_MS unchanged"
    );

    let metrics = at_port(
        r#"grpcurl -plaintext -d '{"interval_ms": 2000}' localhost:50051 \
  dbmazz.CdcMetricsService/StreamMetrics"#,
        port,
    );
    let mut stream = Stream::shell(&metrics);
    let (first, text) = stream.next(WAIT);
    show(&metrics, &text);
    let (second, _) = stream.next(WAIT);
    stream.kill();
    for m in [&first, &second] {
        assert_eq!(uint(&m["totalEventsProcessed"]), 60);
        assert!(uint(&m["totalBatchesSent"]) >= 1);
        assert!(uint(&m["memoryBytes"]) > 1 << 20, "{m}");
    }
    let gap = uint(&second["timestamp"]) - uint(&first["timestamp"]);
    assert!(
        (1..=4).contains(&gap),
        "messages {gap} s apart, asked for 2 s"
    );
    p.wait_for_log("metrics stream ended", WAIT);
    // "Control Plane Integration", step 3: the first message comes at once.
    let monitor = at_port(
        r#"grpcurl -plaintext -d '{"interval_ms": 5000}' localhost:50051 \
  dbmazz.CdcMetricsService/StreamMetrics"#,
        port,
    );
    let mut stream = Stream::shell(&monitor);
    let (m, _) = stream.next(WAIT);
    stream.kill();
    assert_eq!(uint(&m["totalEventsProcessed"]), 60);

    let list = at_port("grpcurl -plaintext localhost:50051 list", port);
    let out = shell_ok(&list);
    show(&list, &out);
    let services: Vec<&str> = out.lines().collect();
    for s in [
        "dbmazz.CdcControlService",
        "dbmazz.CdcMetricsService",
        "dbmazz.CdcStatusService",
        "dbmazz.HealthService",
        "grpc.health.v1.Health",
    ] {
        assert!(services.contains(&s), "{s} missing from:\n{out}");
    }

    let describe = at_port(
        "grpcurl -plaintext localhost:50051 describe dbmazz.HealthService",
        port,
    );
    let out = shell_ok(&describe);
    show(&describe, &out);
    assert!(
        out.contains(
            "rpc Check ( .dbmazz.HealthCheckRequest ) returns ( .dbmazz.HealthCheckResponse );"
        ),
        "{out}"
    );
    let describe = at_port(
        "grpcurl -plaintext localhost:50051 describe dbmazz.HealthCheckResponse",
        port,
    );
    let out = shell_ok(&describe);
    show(&describe, &out);
    for field in [
        ".dbmazz.HealthCheckResponse.ServingStatus status = 1;",
        ".dbmazz.Stage stage = 2;",
        "string stage_detail = 3;",
        "string error_detail = 4;",
    ] {
        assert!(out.contains(field), "{field} missing from:\n{out}");
    }

    let drain = at_port(
        "grpcurl -plaintext -d '{}' localhost:50051 dbmazz.CdcControlService/DrainAndStop",
        port,
    );
    let out = shell_ok(&drain);
    show(&drain, &out);
    let r: Json = serde_json::from_str(&out).unwrap();
    assert_eq!(r["success"], true);
    assert_eq!(r["state"], "STOPPED");
    assert!(p.wait(WAIT).success(), "{}", p.log());
    assert_eq!(uint(&r["confirmedLsn"]), slot_confirmed(&pg, "shop"));
}

#[test]
fn pause_keeps_changes_in_the_slot_until_resume() {
    let pg = PgCluster::start();
    let url = pg.create_database("app");
    pg.psql("app", "CREATE TABLE t (id int PRIMARY KEY, v text)");
    let job = grpc_job(&url, "t").env("SLOT_CHECK_INTERVAL_MS", "1000");
    let mut p = job.spawn_streaming();
    let grpc = Client::new(grpc_port(&mut p));

    pg.psql(
        "app",
        "INSERT INTO t SELECT g, 'a' FROM generate_series(1, 100) g",
    );
    wait_until(WAIT, "the first 100 rows", || changes(&job) == 100);

    let reply = grpc.ok("dbmazz.CdcControlService/Pause", "{}");
    assert_eq!(reply["state"], "PAUSED");
    assert_eq!(
        grpc.ok("dbmazz.CdcStatusService/GetStatus", "{}")["state"],
        "PAUSED"
    );
    let wal_before = wal_lsn(&pg, "app");
    pg.psql(
        "app",
        "INSERT INTO t SELECT g, repeat('b', 100) FROM generate_series(101, 1100) g",
    );
    let piled_up = wal_lsn(&pg, "app") - wal_before;

    // While paused nothing is consumed: the slot holds the changes and the lag grows.
    let mut stream = grpc.stream(
        "dbmazz.CdcMetricsService/StreamMetrics",
        r#"{"interval_ms": 200}"#,
    );
    let deadline = Instant::now() + WAIT;
    let paused_lag = loop {
        let (m, _) = stream.next(WAIT);
        let lag = uint(&m["lagBytes"]);
        if lag >= piled_up && uint(&m["slotLagBytes"]) >= piled_up {
            assert_eq!(uint(&m["totalEventsProcessed"]), 100);
            break lag;
        }
        assert!(
            Instant::now() < deadline,
            "lag never grew past {piled_up}: {m}"
        );
    };
    let slot_lag: f64 = pg
        .psql(
            "app",
            "SELECT pg_current_wal_lsn() - confirmed_flush_lsn FROM pg_replication_slots",
        )
        .parse()
        .unwrap();
    assert!(slot_lag as u64 >= piled_up);
    assert_eq!(changes(&job), 100, "nothing is written while paused");

    let reply = grpc.ok("dbmazz.CdcControlService/Resume", "{}");
    assert_eq!(reply["state"], "RUNNING");
    wait_until(WAIT, "all 1100 rows", || changes(&job) == 1100);
    let deadline = Instant::now() + WAIT;
    loop {
        let (m, _) = stream.next(WAIT);
        if uint(&m["totalEventsProcessed"]) == 1100
            && uint(&m["lagEvents"]) == 0
            && uint(&m["lagBytes"]) < paused_lag / 2
        {
            break;
        }
        assert!(Instant::now() < deadline, "never caught up: {m}");
    }
    stream.kill();
    p.terminate();
    assert!(p.wait(WAIT).success(), "{}", p.log());
}

#[test]
fn reload_config_changes_the_batch_size_live() {
    let pg = PgCluster::start();
    let url = pg.create_database("app");
    pg.psql("app", "CREATE TABLE t (id int PRIMARY KEY)");
    let job = grpc_job(&url, "t")
        .env("FLUSH_SIZE", "100000")
        .env("FLUSH_INTERVAL_MS", "600000");
    let mut p = job.spawn_streaming();
    let grpc = Client::new(grpc_port(&mut p));

    pg.psql("app", "INSERT INTO t SELECT generate_series(1, 5)");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        changes(&job),
        0,
        "5 rows stay batched under FLUSH_SIZE=100000"
    );

    let reply = grpc.ok(
        "dbmazz.CdcControlService/ReloadConfig",
        r#"{"flush_size": 10}"#,
    );
    assert_eq!(reply["success"], true);
    assert_eq!(uint(&reply["flushSize"]), 10);
    assert_eq!(uint(&reply["flushIntervalMs"]), 600000);
    // 5 + 15 rows = two full batches of 10.
    pg.psql("app", "INSERT INTO t SELECT generate_series(6, 20)");
    wait_until(WAIT, "two batches of 10 rows", || changes(&job) == 20);

    // Out of range: refused, and nothing changes.
    let err = grpc
        .call(
            "dbmazz.CdcControlService/ReloadConfig",
            r#"{"flush_size": 20000000}"#,
        )
        .unwrap_err();
    assert_eq!(err.code, "InvalidArgument");
    assert!(err.message.contains("flush_size"), "{}", err.message);
    // The running table list is accepted as "no change"; another list needs a restart.
    grpc.ok(
        "dbmazz.CdcControlService/ReloadConfig",
        r#"{"tables": ["public.t"]}"#,
    );
    let err = grpc
        .call(
            "dbmazz.CdcControlService/ReloadConfig",
            r#"{"flush_interval_ms": 50, "tables": ["t", "other"]}"#,
        )
        .unwrap_err();
    assert_eq!(err.code, "FailedPrecondition");
    assert!(err.message.contains("TABLES=t,other"), "{}", err.message);
    let reply = grpc.ok("dbmazz.CdcControlService/ReloadConfig", "{}");
    assert_eq!(uint(&reply["flushSize"]), 10);
    assert_eq!(
        uint(&reply["flushIntervalMs"]),
        600000,
        "a refused call changes nothing"
    );
    assert!(
        p.log().contains("rpc=\"ReloadConfig\""),
        "control calls are logged"
    );
    p.terminate();
    assert!(p.wait(WAIT).success(), "{}", p.log());
}

#[test]
fn drain_and_stop_confirms_the_last_commit_and_exits_zero() {
    let pg = PgCluster::start();
    let url = pg.create_database("app");
    pg.psql("app", "CREATE TABLE t (id int PRIMARY KEY, v text)");
    let job = grpc_job(&url, "t")
        .env("FLUSH_SIZE", "50")
        .env("FLUSH_INTERVAL_MS", "600000");
    let mut p = job.spawn_streaming();
    let grpc = Client::new(grpc_port(&mut p));

    pg.psql(
        "app",
        "INSERT INTO t SELECT g, 'a' FROM generate_series(1, 50) g",
    );
    wait_until(WAIT, "a full batch", || changes(&job) == 50);
    // GetStatus reports what the slot has confirmed.
    wait_until(
        WAIT,
        "GetStatus confirmedLsn = the slot's confirmed_flush_lsn",
        || {
            let s = grpc.ok("dbmazz.CdcStatusService/GetStatus", "{}");
            let confirmed = uint(&s["confirmedLsn"]);
            confirmed > 0 && confirmed == slot_confirmed(&pg, "app")
        },
    );

    // The last transaction stays in the batch (30 < FLUSH_SIZE, 10 min interval): only the
    // drain writes it. Its LSN is read inside it, before its commit.
    let before_commit: f64 = pg
        .psql(
            "app",
            "WITH ins AS (INSERT INTO t SELECT g, 'b' FROM generate_series(51, 80) g RETURNING 1)
             SELECT pg_current_wal_insert_lsn() - '0/0' FROM (SELECT count(*) FROM ins) c",
        )
        .parse()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(changes(&job), 50);

    let reply = grpc.ok("dbmazz.CdcControlService/DrainAndStop", "{}");
    assert_eq!(reply["success"], true);
    assert_eq!(reply["state"], "STOPPED");
    assert!(
        p.wait(WAIT).success(),
        "exit 0 after DrainAndStop: {}",
        p.log()
    );
    assert_eq!(changes(&job), 80);
    let confirmed = slot_confirmed(&pg, "app");
    assert!(
        confirmed as f64 > before_commit,
        "confirmed {confirmed} must pass the last commit"
    );
    assert_eq!(uint(&reply["confirmedLsn"]), confirmed);
}

#[test]
fn missing_table_turns_health_not_serving_with_a_hint() {
    let pg = PgCluster::start();
    let url = pg.create_database("app");
    let job = grpc_job(&url, "my_table");

    for stop_with_signal in [false, true] {
        let mut p = job.spawn();
        let port = grpc_port(&mut p);
        let grpc = Client::new(port);
        p.wait_for_log("replication stopped", WAIT);
        let check = at_port(
            "grpcurl -plaintext localhost:50051 dbmazz.HealthService/Check",
            port,
        );
        let out = shell_ok(&check);
        show(&check, &out);
        let health: Json = serde_json::from_str(&out).unwrap();
        assert_eq!(health["status"], "NOT_SERVING");
        assert_eq!(health["stage"], "STAGE_SETUP");
        let detail = health["errorDetail"].as_str().unwrap();
        assert!(
            detail.contains("my_table")
                && detail.contains("not found")
                && detail.contains("TABLES"),
            "{detail}"
        );
        assert_eq!(
            grpc.ok("grpc.health.v1.Health/Check", "{}")["status"],
            "NOT_SERVING"
        );
        assert_eq!(
            grpc.ok("dbmazz.CdcStatusService/GetStatus", "{}")["state"],
            "FAILED"
        );
        let err = grpc
            .call("dbmazz.CdcControlService/Pause", "{}")
            .unwrap_err();
        assert_eq!(err.code, "FailedPrecondition");
        if stop_with_signal {
            p.terminate();
        } else {
            let reply = grpc.ok("dbmazz.CdcControlService/DrainAndStop", "{}");
            assert_eq!(reply["state"], "FAILED");
        }
        assert_eq!(p.wait(WAIT).code(), Some(1), "{}", p.log());
    }
}

#[test]
fn grpc_token_is_required_and_never_logged() {
    const TOKEN: &str = "tok-3f9c2a7e51d84b06a1e2";
    let pg = PgCluster::start();
    let url = pg.create_database("app");
    pg.psql("app", "CREATE TABLE t (id int PRIMARY KEY)");
    let job = grpc_job(&url, "t").env("GRPC_TOKEN", TOKEN);
    let mut p = job.spawn_streaming();
    let port = grpc_port(&mut p);

    let anonymous = Client::new(port);
    let wrong = Client::new(port).header("authorization: Bearer tok-not-the-right-one-000");
    let right = Client::new(port).header(&format!("authorization: Bearer {TOKEN}"));
    for client in [&anonymous, &wrong] {
        for method in [
            "dbmazz.HealthService/Check",
            "dbmazz.CdcControlService/Pause",
            "grpc.health.v1.Health/Check",
        ] {
            let err = client.call(method, "{}").unwrap_err();
            assert_eq!(err.code, "Unauthenticated", "{method}");
        }
        let list = client.run(&["list"]);
        show(
            "grpcurl -plaintext 127.0.0.1:PORT list",
            &String::from_utf8_lossy(&list.stderr),
        );
        assert!(!list.status.success());
        assert!(String::from_utf8_lossy(&list.stderr).contains("Unauthenticated"));
    }
    assert_eq!(
        grpc_state(&right),
        "RUNNING",
        "nothing was paused by refused calls"
    );
    assert_eq!(
        right.ok("dbmazz.HealthService/Check", "{}")["status"],
        "SERVING"
    );
    let list = right.run(&["list"]);
    assert!(list.status.success());
    assert!(String::from_utf8_lossy(&list.stdout).contains("dbmazz.HealthService"));
    right.ok("dbmazz.CdcControlService/Pause", "{}");
    right.ok("dbmazz.CdcControlService/Resume", "{}");
    right.ok("dbmazz.CdcControlService/DrainAndStop", "{}");
    assert!(p.wait(WAIT).success(), "{}", p.log());
    let log = p.log();
    assert!(log.contains("grpc call refused"), "{log}");
    assert!(
        !log.contains(TOKEN),
        "the token leaked into the log:\n{log}"
    );
    assert!(!log.contains("tok-not-the-right-one"), "{log}");
}

fn grpc_state(client: &Client) -> String {
    client.ok("dbmazz.CdcStatusService/GetStatus", "{}")["state"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// `GET /metrics` over plain TCP; the exposition's samples by `name{labels}`.
pub(crate) fn scrape(addr: SocketAddr) -> (String, BTreeMap<String, f64>) {
    let mut conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        conn,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nAccept: */*\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    conn.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(
        head.contains("Content-Type: application/openmetrics-text"),
        "{head}"
    );
    let samples = body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (name, value) = l.rsplit_once(' ').unwrap();
            (name.to_owned(), value.parse().unwrap())
        })
        .collect();
    (body.to_owned(), samples)
}

#[test]
fn prometheus_endpoint_reports_the_rows_written() {
    let pg = PgCluster::start();
    let url = pg.create_database("app");
    pg.psql(
        "app",
        "CREATE TABLE t (id int PRIMARY KEY, v text); CREATE SCHEMA sales; CREATE TABLE sales.o (id int PRIMARY KEY)",
    );
    let job = Job::new(&url, "t,sales.o")
        .env("METRICS_PORT", "0")
        .env("SLOT_CHECK_INTERVAL_MS", "1000");
    let mut p = job.spawn_streaming();
    let addr = listening(&mut p, "metrics");

    pg.psql(
        "app",
        "INSERT INTO t SELECT g, 'v' FROM generate_series(1, 40) g;
         UPDATE t SET v = 'w' WHERE id <= 2;
         DELETE FROM t WHERE id = 40;
         INSERT INTO sales.o SELECT generate_series(1, 7);",
    );
    wait_until(WAIT, "50 changes", || changes(&job) == 50);
    // The slot monitor polls every SLOT_CHECK_INTERVAL_MS; wait until it saw the slot.
    let mut scraped = scrape(addr);
    wait_until(WAIT, "a polled slot lag", || {
        scraped = scrape(addr);
        scraped
            .1
            .get("dbmazz_slot_lag_bytes")
            .copied()
            .unwrap_or(0.0)
            > 0.0
    });
    let (body, samples) = scraped;
    eprintln!("{body}");
    assert_eq!(samples["dbmazz_events_total"], 50.0, "{body}");
    assert_eq!(samples["dbmazz_events_received_total"], 50.0);
    assert!(samples["dbmazz_batches_total"] >= 1.0);
    assert!(samples["dbmazz_bytes_total"] > 0.0);
    let t = |op: &str| {
        samples[&format!("dbmazz_table_changes_total{{table=\"public.t\",op=\"{op}\"}}")]
    };
    assert_eq!((t("insert"), t("update"), t("delete")), (40.0, 2.0, 1.0));
    assert_eq!(
        samples["dbmazz_table_changes_total{table=\"sales.o\",op=\"insert\"}"],
        7.0
    );
    assert_eq!(samples["dbmazz_lag_events"], 0.0);
    assert_eq!(samples["dbmazz_healthy"], 1.0);
    assert!(samples["dbmazz_memory_bytes"] > 1_048_576.0);
    assert!(samples["dbmazz_confirmed_lsn"] > 0.0);
    for name in [
        "dbmazz_events_per_second",
        "dbmazz_bytes_per_second",
        "dbmazz_lag_bytes",
        "dbmazz_replication_lag_ms",
        "dbmazz_cpu_millicores",
        "dbmazz_cpu_seconds_total",
    ] {
        assert!(samples.contains_key(name), "{name} missing:\n{body}");
    }
    assert!(body.contains("# TYPE dbmazz_events counter"), "{body}");
    assert!(
        body.contains("# TYPE dbmazz_slot_lag_bytes gauge"),
        "{body}"
    );
    assert!(body.ends_with("# EOF\n"));
    p.terminate();
    assert!(p.wait(WAIT).success(), "{}", p.log());
}

#[test]
fn stream_metrics_counts_the_rows_written_and_ends_with_its_client() {
    let pg = PgCluster::start();
    let url = pg.create_database("app");
    pg.psql(
        "app",
        "CREATE TABLE a (id int PRIMARY KEY); CREATE TABLE b (id int PRIMARY KEY)",
    );
    let job = grpc_job(&url, "a,b");
    let mut p = job.spawn_streaming();
    let grpc = Client::new(grpc_port(&mut p));
    let mut stream = grpc.stream(
        "dbmazz.CdcMetricsService/StreamMetrics",
        r#"{"interval_ms": 200}"#,
    );
    let (first, _) = stream.next(WAIT);
    assert_eq!(uint(&first["totalEventsProcessed"]), 0);

    pg.psql(
        "app",
        "INSERT INTO a SELECT generate_series(1, 300); INSERT INTO b SELECT generate_series(1, 25);",
    );
    let deadline = Instant::now() + WAIT;
    let mut saw_rate = false;
    let last = loop {
        let (m, _) = stream.next(WAIT);
        saw_rate |= m["eventsPerSecond"].as_f64().unwrap_or(0.0) > 0.0;
        if uint(&m["totalEventsProcessed"]) == 325 {
            break m;
        }
        assert!(Instant::now() < deadline, "never reached 325 events: {m}");
    };
    assert!(saw_rate, "eventsPerSecond stayed 0 while 325 rows arrived");
    assert_eq!(changes(&job), 325);
    let tables: BTreeMap<String, u64> = last["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["table"].as_str().unwrap().to_owned(), uint(&t["inserts"])))
        .collect();
    assert_eq!(tables["public.a"], 300);
    assert_eq!(tables["public.b"], 25);
    assert!(uint(&last["memoryBytes"]) > 1 << 20);
    assert!(uint(&last["totalBytes"]) > 0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(uint(&last["timestamp"]).abs_diff(now) < 60);

    // The client goes away: the server's stream task notices and ends.
    stream.kill();
    p.wait_for_log("reason=\"client went away\"", WAIT);
    p.terminate();
    assert!(p.wait(WAIT).success(), "{}", p.log());
}

#[test]
fn a_taken_port_is_a_startup_error_naming_the_variable() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    // Nothing connects to this database: binding fails first.
    let url = "postgres://postgres@127.0.0.1:1/none?sslmode=disable";
    for (var, job) in [
        ("GRPC_PORT", Job::new(url, "t").env("GRPC_PORT", &port)),
        (
            "METRICS_PORT",
            Job::new(url, "t").env("METRICS_PORT", &port),
        ),
    ] {
        let mut p = job.spawn();
        assert_eq!(p.wait(WAIT).code(), Some(1), "{}", p.log());
        let log = p.log();
        assert!(
            log.contains(var) && log.contains(&format!("127.0.0.1:{port}")),
            "{log}"
        );
    }
}
