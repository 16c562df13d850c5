//! Outages as production has them, through the real binary: a sink that fails for a while, a
//! PostgreSQL that goes away, and a stop requested in the middle of either. Each test checks what
//! Health (and Prometheus) say while it lasts, that the job comes back by itself, that a
//! bounded stop is bounded and names what is not durable, and, with the per-key oracle, that
//! nothing was lost.

use std::time::{Duration, Instant};

use serde_json::{json, Value as Json};

use crate::control::{listening, scrape};
use crate::starrocks::{create_both, wait_converged};
use crate::support::dbmazz::{wait_until, Job, Proc};
use crate::support::fault_proxy::{FaultProxy, Mode};
use crate::support::grpcurl::Client;
use crate::support::pg::PgCluster;
use crate::support::starrocks::Double;

const WAIT: Duration = Duration::from_secs(60);

fn table(pg: &PgCluster, d: &Double) {
    create_both(
        pg,
        d,
        "CREATE TABLE t (id int PRIMARY KEY, n bigint)",
        "CREATE TABLE app.t (id INT NOT NULL, n BIGINT) PRIMARY KEY(id) DISTRIBUTED BY HASH(id)",
    );
}

fn job(url: &str, d: &Double) -> Job {
    d.job(url, "t")
        .env("GRPC_PORT", "0")
        .env("FLUSH_INTERVAL_MS", "100")
}

/// Stops dbmazz with SIGTERM and expects a clean exit.
fn stop_cleanly(mut p: Proc) {
    p.terminate();
    assert!(p.wait(WAIT).success(), "{}", p.log());
}

/// After an outage a run left unfinished: clears the sink's faults, starts dbmazz again and
/// expects everything to arrive.
fn recover(pg: &PgCluster, d: &Double, job: &Job) {
    d.admin("DELETE", "/admin/faults", "");
    let p = job.spawn();
    wait_converged(pg, d, "t", "id", "n");
    stop_cleanly(p);
}

/// PostgreSQL with one extra `postgresql.conf` line.
fn pg_with(conf: &str) -> PgCluster {
    PgCluster::start_with(crate::support::pg::PgOptions {
        extra_conf: vec![conf.into()],
        ..Default::default()
    })
}

/// PostgreSQL with database `app`, and the double, both with table `t`.
fn stack() -> (PgCluster, String, Double) {
    let pg = PgCluster::start();
    let url = pg.create_database("app");
    let d = Double::start("app");
    table(&pg, &d);
    (pg, url, d)
}

/// Inserts rows `1..=n` into `t` and waits until the sink has them.
fn seed(pg: &PgCluster, d: &Double, n: u32) {
    pg.psql(
        "app",
        &format!("INSERT INTO t SELECT g, 0 FROM generate_series(1, {n}) g"),
    );
    wait_converged(pg, d, "t", "id", "n");
}

fn health(grpc: &Client) -> Json {
    grpc.ok("dbmazz.HealthService/Check", "{}")
}

/// Waits until Health reports `status` with `detail`, and returns that answer.
fn wait_health(grpc: &Client, status: &str, detail: &str) -> Json {
    let mut last = Json::Null;
    wait_until(WAIT, &format!("Health {status} {detail}"), || {
        last = health(grpc);
        last["status"] == status && last["stageDetail"] == detail
    });
    last
}

fn start(job: &Job) -> (Proc, Client) {
    let mut p = job.spawn();
    let port = listening(&mut p, "grpc").port();
    let grpc = Client::new(port);
    wait_health(&grpc, "SERVING", "Replicating");
    (p, grpc)
}

#[test]
fn sink_outage_turns_health_not_serving_and_back_without_loss() {
    let (pg, url, d) = stack();
    // Without the circuit breaker, so that the backoff reaches its 30 s cap and the stall shows
    // (the circuit has its own test below).
    let job = job(&url, &d)
        .env("HEALTH_SINK_STALL_MS", "2000")
        .env("SINK_CIRCUIT_FAILURES", "0")
        .env("METRICS_PORT", "0");
    let (mut p, grpc) = start(&job);
    let metrics = listening(&mut p, "metrics");
    seed(&pg, &d, 100);

    // Every load now fails with 503 until the fault is cleared; writes keep coming.
    d.fault(json!({"kind": "http_5xx", "table": "t"}));
    pg.psql("app", "UPDATE t SET n = n + 1 WHERE id <= 50");
    let stalled = wait_health(&grpc, "NOT_SERVING", "Sink stalled");
    let why = stalled["errorDetail"].as_str().unwrap();
    assert!(
        why.contains("503") && why.contains("HEALTH_SINK_STALL_MS=2000"),
        "{why}"
    );
    // The standard service follows within its re-evaluation period (1 s).
    wait_until(WAIT, "grpc.health.v1 NOT_SERVING", || {
        grpc.ok("grpc.health.v1.Health/Check", "{}")["status"] == "NOT_SERVING"
    });
    let (body, samples) = scrape(metrics);
    assert_eq!(samples["dbmazz_healthy"], 0.0, "{body}");
    assert!(samples["dbmazz_sink_waiting_seconds"] >= 2.0, "{body}");
    // Two minutes down under a steady write load (past the retry backoff's 30 s cap).
    let until = Instant::now() + Duration::from_secs(120);
    let mut next = 101;
    while Instant::now() < until {
        pg.psql(
            "app",
            &format!(
                "INSERT INTO t VALUES ({next}, {next}); UPDATE t SET n = n + 1 WHERE id % 7 = {}",
                next % 7
            ),
        );
        next += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(health(&grpc)["stageDetail"], "Sink stalled");

    // The sink comes back: Health turns by itself, and every change arrives once.
    d.admin("DELETE", "/admin/faults", "");
    wait_health(&grpc, "SERVING", "Replicating");
    wait_converged(&pg, &d, "t", "id", "n");
    assert_eq!(scrape(metrics).1["dbmazz_healthy"], 1.0);
    stop_cleanly(p);
}

#[test]
fn source_outage_turns_health_retrying_and_back_without_loss() {
    let (mut pg, url, d) = stack();
    let (p, grpc) = start(&job(&url, &d));
    seed(&pg, &d, 100);

    pg.stop_immediate();
    let retrying = wait_health(&grpc, "NOT_SERVING", "Retrying");
    assert!(
        !retrying["errorDetail"].as_str().unwrap_or("").is_empty(),
        "{retrying}"
    );
    pg.restart();
    wait_health(&grpc, "SERVING", "Replicating");
    pg.psql(
        "app",
        "UPDATE t SET n = n + 1 WHERE id % 3 = 0; DELETE FROM t WHERE id > 90",
    );
    wait_converged(&pg, &d, "t", "id", "n");
    stop_cleanly(p);
}

/// Starts a job, loads rows, then makes every load fail so that the next changes cannot
/// become durable.
fn outage(pg: &PgCluster, d: &Double, job: &Job) -> (Proc, Client) {
    let (p, grpc) = start(job);
    seed(pg, d, 100);
    d.fault(json!({"kind": "http_5xx", "table": "t"}));
    pg.psql("app", "UPDATE t SET n = n + 1 WHERE id <= 50");
    (p, grpc)
}

#[test]
fn drain_and_stop_during_a_sink_outage_is_bounded_and_names_what_is_not_durable() {
    let (pg, url, d) = stack();
    let job = job(&url, &d);
    let (mut p, grpc) = outage(&pg, &d, &job);
    wait_until(WAIT, "a failing load", || {
        p.log().contains("sink write failed, retrying")
    });

    let asked = Instant::now();
    let err = grpc
        .call(
            "dbmazz.CdcControlService/DrainAndStop",
            r#"{"timeout_ms": 2000}"#,
        )
        .unwrap_err();
    let answered = asked.elapsed();
    eprintln!("DrainAndStop during the outage: {err:?}");
    assert_eq!(err.code, "DeadlineExceeded", "{err:?}");
    assert!(
        err.message.contains("within 2000 ms")
            && err.message.contains("not all durable")
            && err.message.contains("confirmed to PostgreSQL")
            && err.message.contains("503"),
        "{}",
        err.message
    );
    assert!(answered < Duration::from_secs(10), "{answered:?}");
    assert_eq!(p.wait(WAIT).code(), Some(1), "{}", p.log());

    // Nothing was confirmed past the failed batch: a new run delivers it.
    recover(&pg, &d, &job);
}

#[test]
fn sigterm_during_a_sink_outage_exits_within_shutdown_timeout() {
    let (pg, url, d) = stack();
    let job = job(&url, &d).env("SHUTDOWN_TIMEOUT_MS", "2000");
    let (mut p, _grpc) = outage(&pg, &d, &job);
    wait_until(WAIT, "a failing load", || {
        p.log().contains("sink write failed, retrying")
    });
    let asked = Instant::now();
    p.terminate();
    let status = p.wait(WAIT);
    let took = asked.elapsed();
    let log = p.log();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(took < Duration::from_secs(15), "{took:?}\n{log}");
    assert!(
        log.contains("the drain did not finish within 2000 ms") && log.contains("not all durable"),
        "{log}"
    );

    recover(&pg, &d, &job);
}

#[test]
fn slot_dropped_while_running_is_a_definite_error_and_never_recreated() {
    let pg = PgCluster::start();
    let url = pg.create_database("app");
    pg.psql("app", "CREATE TABLE t (id int PRIMARY KEY, n bigint)");
    let job = Job::new(&url, "t");
    let mut p = job.spawn_streaming();
    pg.psql(
        "app",
        "INSERT INTO t SELECT g, 0 FROM generate_series(1, 10) g",
    );
    wait_until(WAIT, "10 rows out", || job.lines().len() >= 10);
    // The slot can only be dropped once its walsender is gone; dbmazz reconnects within a
    // second, so terminate and drop in one loop.
    pg.psql(
        "app",
        "DO $$ BEGIN
           LOOP
             PERFORM pg_terminate_backend(active_pid) FROM pg_replication_slots
              WHERE slot_name = 'dbmazz_slot' AND active_pid IS NOT NULL;
             BEGIN
               PERFORM pg_drop_replication_slot('dbmazz_slot');
               EXIT;
             EXCEPTION WHEN object_in_use THEN PERFORM pg_sleep(0.01);
             END;
           END LOOP;
         END $$",
    );
    assert_eq!(p.wait(WAIT).code(), Some(1), "{}", p.log());
    let log = p.log();
    assert!(
        log.contains("was dropped") && log.contains("may be lost") && log.contains("To start over"),
        "{log}"
    );
    assert_eq!(
        pg.psql(
            "app",
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'dbmazz_slot'"
        ),
        "0",
        "dbmazz must not create a new slot silently"
    );
}

#[test]
fn slot_invalidated_while_running_is_a_definite_error_that_says_what_to_do() {
    let pg = pg_with("max_slot_wal_keep_size = 1MB");
    let url = pg.create_database("app");
    let d = Double::start("app");
    table(&pg, &d);
    let (mut p, grpc) = start(&job(&url, &d));
    seed(&pg, &d, 100);
    // The sink stalls, so the slot holds its WAL; then the WAL grows past the keep size and a
    // checkpoint removes it.
    d.fault(json!({"kind": "http_5xx", "table": "t"}));
    wait_until(WAIT, "the slot to be invalidated", || {
        pg.psql(
            "app",
            "UPDATE t SET n = n + 1; SELECT pg_switch_wal(); CHECKPOINT;",
        );
        pg.psql(
            "app",
            "SELECT coalesce(wal_status, '') FROM pg_replication_slots WHERE slot_name = 'dbmazz_slot'",
        ) == "lost"
    });
    let failed = wait_health(&grpc, "NOT_SERVING", "Slot invalidated");
    let why = failed["errorDetail"].as_str().unwrap();
    assert!(
        why.contains("dbmazz_slot")
            && why.contains("invalidated")
            && why.contains("max_slot_wal_keep_size")
            && why.contains("pg_drop_replication_slot('dbmazz_slot')"),
        "{why}"
    );
    p.terminate();
    assert_eq!(p.wait(WAIT).code(), Some(1), "{}", p.log());
}

#[test]
fn sigstop_longer_than_wal_sender_timeout_recovers_without_loss() {
    let pg = pg_with("wal_sender_timeout = 2s");
    let url = pg.create_database("app");
    pg.psql("app", "CREATE TABLE t (id int PRIMARY KEY, n bigint)");
    let job = Job::new(&url, "t");
    let p = job.spawn_streaming();
    pg.psql(
        "app",
        "INSERT INTO t SELECT g, 0 FROM generate_series(1, 100) g",
    );
    wait_until(WAIT, "100 rows out", || job.lines().len() >= 100);

    let signal = |sig: &str| {
        let ok = std::process::Command::new("kill")
            .args([sig, &p.pid().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig}");
    };
    signal("-STOP");
    pg.psql(
        "app",
        "UPDATE t SET n = 1 WHERE id <= 50; DELETE FROM t WHERE id > 90",
    );
    // 2x wal_sender_timeout: PostgreSQL ends the walsender while dbmazz is frozen.
    std::thread::sleep(Duration::from_secs(4));
    signal("-CONT");
    pg.psql("app", "INSERT INTO t VALUES (1000, 1000)");
    let expected = pg.psql(
        "app",
        "SELECT string_agg(id || ':' || n, ',' ORDER BY id) FROM t",
    );
    wait_until(WAIT, "the sink to equal the source", || {
        let text = |v: &Json| v.as_str().map_or_else(|| v.to_string(), str::to_owned);
        let mut rows: Vec<(i64, String)> = crate::support::dbmazz::final_state(&job.lines())
            .into_values()
            .map(|row| {
                let id: i64 = text(&row["id"]).parse().unwrap();
                (id, format!("{id}:{}", text(&row["n"])))
            })
            .collect();
        rows.sort();
        let got: Vec<&str> = rows.iter().map(|r| r.1.as_str()).collect();
        got.join(",") == expected
    });
    stop_cleanly(p);
}

#[test]
fn a_load_whose_body_stops_moving_is_abandoned_after_the_stall_timeout_and_retried() {
    let (pg, url, d) = stack();
    let job = job(&url, &d).env("STARROCKS_STALL_TIMEOUT_S", "5");
    let (p, _grpc) = start(&job);
    seed(&pg, &d, 100);
    // The BE takes the headers, says 100 Continue, then reads nothing for 20 s: from dbmazz's
    // side the body stops moving, as behind a network that drops packets.
    d.fault(json!({"kind": "stall_body_read_ms", "ms": 20_000, "count": 1, "table": "t"}));
    pg.psql("app", "UPDATE t SET n = n + 1 WHERE id <= 50");
    wait_until(WAIT, "the stalled load to be abandoned", || {
        p.log().contains("Operation too slow")
    });
    wait_converged(&pg, &d, "t", "id", "n");
    stop_cleanly(p);
}

/// `pg_current_wal_lsn() - confirmed_flush_lsn` of the job's slot, in bytes.
fn slot_lag(pg: &PgCluster) -> i64 {
    pg.psql(
        "app",
        "SELECT (pg_current_wal_lsn() - confirmed_flush_lsn)::bigint FROM pg_replication_slots WHERE slot_name = 'dbmazz_slot'",
    )
    .parse()
    .unwrap()
}

fn confirmed_flush(pg: &PgCluster) -> i64 {
    pg.psql(
        "app",
        "SELECT (confirmed_flush_lsn - '0/0')::bigint FROM pg_replication_slots WHERE slot_name = 'dbmazz_slot'",
    )
    .parse()
    .unwrap()
}

/// WAL from another database: the slot must move past it while the job's tables are idle.
fn neighbour_traffic(pg: &PgCluster) {
    pg.psql(
        "busy",
        "INSERT INTO noise SELECT g, repeat('x', 200) FROM generate_series(1, 20000) g;
         DELETE FROM noise; SELECT pg_switch_wal();",
    );
}

#[test]
fn an_idle_job_next_to_a_busy_database_frees_wal_but_never_confirms_what_is_not_durable() {
    let pg = pg_with("wal_sender_timeout = 2s");
    let url = pg.create_database("app");
    pg.create_database("busy");
    pg.psql("busy", "CREATE TABLE noise (id int PRIMARY KEY, pad text)");
    let d = Double::start("app");
    table(&pg, &d);
    // The circuit stays closed, so that the reader keeps taking keepalives while a change is
    // pending (an open circuit stops it reading at all).
    let job = job(&url, &d).env("SINK_CIRCUIT_FAILURES", "0");
    let (mut p, grpc) = start(&job);
    seed(&pg, &d, 10);

    // Idle job, busy neighbour: the slot follows the server's WAL (nothing retained for it).
    for _ in 0..4 {
        neighbour_traffic(&pg);
    }
    wait_until(WAIT, "the slot to follow the neighbour's WAL", || {
        slot_lag(&pg) < 16 << 20
    });

    // Now the sink fails: a change to the job's table is pending while the neighbour keeps
    // writing and PostgreSQL asks for replies every second. The slot must not pass it.
    d.fault(json!({"kind": "http_5xx", "table": "t"}));
    let before = confirmed_flush(&pg);
    let pending_at: i64 = pg
        .psql(
            "app",
            "UPDATE t SET n = 99 WHERE id = 1; SELECT (pg_current_wal_lsn() - '0/0')::bigint",
        )
        .lines()
        .last()
        .unwrap()
        .parse()
        .unwrap();
    assert!(before <= pending_at);
    for _ in 0..4 {
        neighbour_traffic(&pg);
        std::thread::sleep(Duration::from_millis(500));
        assert!(
            confirmed_flush(&pg) <= pending_at,
            "confirmed_flush_lsn passed a change the sink does not hold"
        );
    }
    // The replies kept the connection alive through several wal_sender_timeouts.
    assert!(
        !p.log().contains("restarting from the checkpoint"),
        "{}",
        p.log()
    );
    assert_eq!(health(&grpc)["stageDetail"], "Replicating");

    // A crash now loses nothing: the pending change comes again.
    p.kill9();
    recover(&pg, &d, &job);
}

#[test]
fn postgres_fast_shutdown_while_paused_is_not_held_up_and_resume_loses_nothing() {
    let (mut pg, url, d) = stack();
    let (p, grpc) = start(&job(&url, &d));
    seed(&pg, &d, 100);
    assert_eq!(
        grpc.ok("dbmazz.CdcControlService/Pause", "{}")["state"],
        "PAUSED"
    );
    pg.psql(
        "app",
        "UPDATE t SET n = 5 WHERE id <= 30; DELETE FROM t WHERE id > 95",
    );

    // A paused job holds no replication connection, so a fast shutdown does not wait for it.
    let asked = Instant::now();
    pg.stop_fast();
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "{:?}",
        asked.elapsed()
    );
    let paused = health(&grpc);
    assert_eq!(
        (paused["status"].as_str(), paused["stageDetail"].as_str()),
        (Some("SERVING"), Some("Paused"))
    );
    pg.restart();
    grpc.ok("dbmazz.CdcControlService/Resume", "{}");
    wait_health(&grpc, "SERVING", "Replicating");
    wait_converged(&pg, &d, "t", "id", "n");
    stop_cleanly(p);
}

#[test]
fn truncate_with_the_default_policy_stops_the_job_and_says_what_to_do() {
    let (pg, url, d) = stack();
    let (mut p, grpc) = start(&job(&url, &d));
    seed(&pg, &d, 10);
    pg.psql("app", "TRUNCATE t; INSERT INTO t VALUES (1, 1)");
    let failed = wait_health(&grpc, "NOT_SERVING", "Replication failed");
    let why = failed["errorDetail"].as_str().unwrap();
    assert!(
        why.contains("public.t")
            && why.contains("TRUNCATE_POLICY=stop")
            && why.contains("TRUNCATE_POLICY=truncate"),
        "{why}"
    );
    // Nothing after the truncate was applied or confirmed: the sink still has the 10 rows.
    assert_eq!(
        d.query("SELECT count(*) FROM app.t")[0][0].as_deref(),
        Some("10")
    );
    p.terminate();
    assert_eq!(p.wait(WAIT).code(), Some(1), "{}", p.log());
}

#[test]
fn every_kind_of_lost_or_late_answer_after_commit_loses_and_regresses_nothing() {
    let (pg, url, d) = stack();
    let (p, _grpc) = start(&job(&url, &d));
    seed(&pg, &d, 20);
    for fault in [
        json!({"kind": "http_5xx", "after_commit": true, "count": 1, "table": "t"}),
        json!({"kind": "txn_status_unknown", "count": 1, "table": "t"}),
        json!({"kind": "txn_status_unknown", "committed": false, "count": 1, "table": "t"}),
        json!({"kind": "publish_timeout", "visible_after_ms": 3000, "count": 1, "table": "t"}),
        json!({"kind": "commit_then_drop", "count": 1, "table": "t"}),
    ] {
        d.fault(fault.clone());
        // A lost change, or an older row image loaded over a newer one, shows in the per-key
        // comparison.
        pg.psql("app", "UPDATE t SET n = n + 1");
        wait_converged(&pg, &d, "t", "id", "n");
    }
    assert_eq!(
        d.query("SELECT min(n), max(n) FROM app.t")[0],
        vec![Some("5".to_owned()), Some("5".to_owned())]
    );
    stop_cleanly(p);
}

#[test]
fn starrocks_down_refusing_connections_then_back_on_its_data_converges() {
    let pg = PgCluster::start();
    let url = pg.create_database("app");
    let mut d = Double::start("app");
    table(&pg, &d);
    let job = job(&url, &d).env("HEALTH_SINK_STALL_MS", "2000");
    let (p, grpc) = start(&job);
    seed(&pg, &d, 100);

    d.kill();
    pg.psql(
        "app",
        "UPDATE t SET n = n + 1 WHERE id <= 60; DELETE FROM t WHERE id > 90",
    );
    // Refused connections fail fast: the circuit opens after five of them.
    let unavailable = wait_health(&grpc, "NOT_SERVING", "Sink unavailable");
    assert!(
        unavailable["errorDetail"]
            .as_str()
            .unwrap()
            .contains("onnect"),
        "{unavailable}"
    );
    pg.psql("app", "INSERT INTO t VALUES (500, 500)");
    d.restart();
    wait_health(&grpc, "SERVING", "Replicating");
    wait_converged(&pg, &d, "t", "id", "n");
    stop_cleanly(p);
}

#[test]
fn black_holes_to_the_fe_and_to_the_be_mid_body_are_abandoned_and_retried() {
    let pg = PgCluster::start();
    let url = pg.create_database("app");
    pg.psql(
        "app",
        "CREATE TABLE t (id int PRIMARY KEY, n bigint, pad text)",
    );
    // The BE "registers" as 127.0.0.2 on its port; a proxy there forwards to where it listens,
    // so loads reach it over a network the test controls. Another proxy fronts the FE.
    let be_port = crate::support::pg::free_port().to_string();
    let d = Double::start_with(
        "app",
        &["--be-port", &be_port, "--advertise-be-host", "127.0.0.2"],
    );
    d.exec("CREATE TABLE app.t (id INT NOT NULL, n BIGINT, pad STRING) PRIMARY KEY(id) DISTRIBUTED BY HASH(id)");
    let be_port: u16 = be_port.parse().unwrap();
    let be = FaultProxy::start_on(
        &format!("127.0.0.2:{be_port}"),
        std::net::SocketAddr::from(([127, 0, 0, 1], be_port)),
    );
    let fe = FaultProxy::start(d.fe);
    let job = job(&url, &d)
        .env("STARROCKS_URL", &format!("http://127.0.0.1:{}", fe.port))
        .env("STARROCKS_STALL_TIMEOUT_S", "5")
        .env("HEALTH_SINK_STALL_MS", "3000");
    let (p, grpc) = start(&job);
    pg.psql(
        "app",
        "INSERT INTO t SELECT g, 0, 'p' FROM generate_series(1, 100) g",
    );
    wait_converged(&pg, &d, "t", "id", "n, pad");
    assert!(be.accepted() > 0, "loads did not go through the BE proxy");

    // The FE goes silent: requests vanish, nothing is closed. Loads skip the FE for
    // STARROCKS_BE_PIN_MS (1 s) after it last sent one to the BE; past that, it is asked again.
    fe.set(Mode::BlackHole);
    std::thread::sleep(Duration::from_millis(1500));
    pg.psql("app", "UPDATE t SET n = 1 WHERE id <= 50");
    wait_health(&grpc, "NOT_SERVING", "Sink stalled");
    fe.set(Mode::PassThrough);
    wait_health(&grpc, "SERVING", "Replicating");
    wait_converged(&pg, &d, "t", "id", "n, pad");

    // The BE link slows to a crawl so that a load is mid-body, then drops everything.
    be.set(Mode::Bandwidth(20_000));
    pg.psql(
        "app",
        "UPDATE t SET n = 2, pad = repeat(md5(id::text), 100) WHERE id > 50",
    );
    std::thread::sleep(Duration::from_millis(1500));
    be.set(Mode::BlackHole);
    wait_until(WAIT, "the stalled body to be abandoned", || {
        p.log().matches("Operation too slow").count() >= 2
    });
    be.set(Mode::PassThrough);
    wait_converged(&pg, &d, "t", "id", "n, pad");
    stop_cleanly(p);
}

#[test]
fn a_setup_statement_stuck_behind_a_lock_hits_statement_timeout_and_is_retried() {
    let pg = PgCluster::start();
    let url = pg.create_database("app");
    pg.psql("app", "CREATE TABLE t (id int PRIMARY KEY, n bigint)");
    let job = Job::new(&url, "t")
        .env("GRPC_PORT", "0")
        .env("STATEMENT_TIMEOUT_MS", "1000");
    std::thread::scope(|s| {
        // A long transaction holds the table: creating the publication for it must wait.
        let locker = s.spawn(|| {
            pg.psql(
                "app",
                "BEGIN; LOCK TABLE t IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(8); COMMIT;",
            )
        });
        std::thread::sleep(Duration::from_millis(500));
        let mut p = job.spawn();
        let grpc = Client::new(listening(&mut p, "grpc").port());
        let retrying = wait_health(&grpc, "NOT_SERVING", "Retrying");
        assert!(
            retrying["errorDetail"]
                .as_str()
                .unwrap_or("")
                .contains("statement timeout"),
            "{retrying}"
        );
        locker.join().unwrap();
        wait_health(&grpc, "SERVING", "Replicating");
        pg.psql("app", "INSERT INTO t VALUES (1, 1)");
        wait_until(WAIT, "the row out", || job.lines().len() == 1);
        stop_cleanly(p);
    });
}

/// The walsender serving the job's slot.
fn walsender_pid(pg: &PgCluster) -> String {
    pg.psql(
        "app",
        "SELECT coalesce(active_pid::text, '') FROM pg_replication_slots WHERE slot_name = 'dbmazz_slot'",
    )
}

/// GetStatus's `currentLsn`: the highest WAL position dbmazz has read.
fn received_lsn(grpc: &Client) -> u64 {
    grpc.ok("dbmazz.CdcStatusService/GetStatus", "{}")["currentLsn"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

fn server_lsn(pg: &PgCluster) -> u64 {
    pg.psql("app", "SELECT (pg_current_wal_lsn() - '0/0')::bigint")
        .parse()
        .unwrap()
}

#[test]
fn sink_circuit_opens_stops_reading_keeps_the_connection_and_closes_without_loss() {
    const WAL_SENDER_TIMEOUT_S: u64 = 5;
    let pg = pg_with(&format!("wal_sender_timeout = {WAL_SENDER_TIMEOUT_S}s"));
    let url = pg.create_database("app");
    let d = Double::start("app");
    table(&pg, &d);
    let job = job(&url, &d)
        .env("SINK_CIRCUIT_FAILURES", "3")
        .env("SINK_CIRCUIT_PROBE_MS", "1000")
        .env("METRICS_PORT", "0");
    let (mut p, grpc) = start(&job);
    let metrics = listening(&mut p, "metrics");
    seed(&pg, &d, 100);
    let (_, samples) = scrape(metrics);
    assert_eq!(samples["dbmazz_sink_circuit_open"], 0.0);
    let walsender = walsender_pid(&pg);
    assert!(!walsender.is_empty());

    // Every load fails: after three in a row the circuit opens.
    d.fault(json!({"kind": "http_5xx", "table": "t"}));
    let outage = Instant::now();
    pg.psql("app", "UPDATE t SET n = n + 1 WHERE id <= 50");
    let open = wait_health(&grpc, "NOT_SERVING", "Sink unavailable");
    let opened_after = outage.elapsed();
    let why = open["errorDetail"].as_str().unwrap();
    assert!(
        why.contains("503")
            && why.contains("since ")
            && why.contains("SINK_CIRCUIT_FAILURES=3")
            && why.contains("every 1000 ms (SINK_CIRCUIT_PROBE_MS)"),
        "{why}"
    );
    let (body, samples) = scrape(metrics);
    assert_eq!(samples["dbmazz_sink_circuit_open"], 1.0, "{body}");
    assert_eq!(samples["dbmazz_sink_circuit_opened_total"], 1.0, "{body}");
    assert!(samples["dbmazz_sink_consecutive_failures"] >= 3.0, "{body}");
    assert!(samples["dbmazz_lag_events"] >= 50.0, "queue depth: {body}");
    assert_eq!(samples["dbmazz_healthy"], 0.0, "{body}");
    let status = grpc.ok("dbmazz.CdcStatusService/GetStatus", "{}");
    assert_eq!(status["sinkCircuitOpen"], true, "{status}");
    assert_ne!(status["sinkCircuitOpenedAtMs"], Json::Null, "{status}");

    // The source keeps writing for three wal_sender_timeouts. The reader takes at most the
    // parcel it was holding when the circuit opened, then nothing.
    pg.psql("app", "INSERT INTO t VALUES (1001, 1)");
    std::thread::sleep(Duration::from_millis(500));
    let held_at = received_lsn(&grpc);
    let server_before = server_lsn(&pg);
    let until = Instant::now() + Duration::from_secs(3 * WAL_SENDER_TIMEOUT_S + 1);
    let mut next = 1002;
    while Instant::now() < until {
        pg.psql(
            "app",
            &format!(
                "INSERT INTO t VALUES ({next}, {next}); UPDATE t SET n = n + 1 WHERE id = {}",
                next % 100 + 1
            ),
        );
        next += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    let server_after = server_lsn(&pg);
    assert!(server_after > server_before + 10_000, "the source wrote");
    assert_eq!(
        received_lsn(&grpc),
        held_at,
        "the reader read on while the circuit was open"
    );
    // Status updates went on: the same walsender, no reconnect, no timeout in PostgreSQL's log.
    let survived = outage.elapsed();
    assert_eq!(
        walsender_pid(&pg),
        walsender,
        "the replication connection was replaced"
    );
    assert!(
        !p.log().contains("restarting from the checkpoint"),
        "{}",
        p.log()
    );
    assert!(!pg.log().contains("replication timeout"), "{}", pg.log());
    // One probe a second, not a growing backoff.
    let probes = p.log().matches("sink probe failed").count();
    assert!(probes >= 12, "{probes} probes in {survived:?}\n{}", p.log());
    assert_eq!(health(&grpc)["stageDetail"], "Sink unavailable");

    // The sink comes back: the next probe closes the circuit and reading resumes.
    d.admin("DELETE", "/admin/faults", "");
    let back = Instant::now();
    wait_health(&grpc, "SERVING", "Replicating");
    let closed_after = back.elapsed();
    let (body, samples) = scrape(metrics);
    assert_eq!(samples["dbmazz_sink_circuit_open"], 0.0, "{body}");
    assert_eq!(samples["dbmazz_sink_consecutive_failures"], 0.0, "{body}");
    assert_eq!(samples["dbmazz_sink_circuit_opened_total"], 1.0, "{body}");
    wait_converged(&pg, &d, "t", "id", "n");
    assert!(received_lsn(&grpc) >= server_after);
    let log = p.log();
    assert_eq!(log.matches("sink circuit opened").count(), 1, "{log}");
    assert_eq!(log.matches("sink circuit closed").count(), 1, "{log}");
    eprintln!(
        "circuit: opened {:.1} s after the outage began; walsender {walsender} kept through \
         {:.1} s with wal_sender_timeout = {WAL_SENDER_TIMEOUT_S} s; {probes} probes; closed \
         {:.1} s after the sink came back",
        opened_after.as_secs_f64(),
        survived.as_secs_f64(),
        closed_after.as_secs_f64()
    );
    stop_cleanly(p);
}
