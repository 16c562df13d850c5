//! Surviving a real network: the real `dbmazz` binary streams from a real PostgreSQL 15 through
//! the [`FaultProxy`], under a write load that goes straight to the server, while the link
//! black-holes or the server crashes. Whatever happened, the NDJSON output must end up with
//! exactly the source's rows, key by key.

use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::cdc::{psql_path, sink_state_of, source_state};
use crate::support::dbmazz::{wait_until, Job, Proc};
use crate::support::fault_proxy::{FaultProxy, Mode};
use crate::support::pg::PgCluster;

const MINUTE: Duration = Duration::from_secs(60);

/// What the log says when the receive timeout fires.
const RECEIVE_TIMEOUT_LOG: &str = "nothing received from PostgreSQL";

/// Writes to `acct` through its own connections, straight to the server, until stopped:
/// inserts a new key per transaction, updates an older one, deletes now and then. Failures
/// (the server is down) are skipped; the oracle is the table as it ends up.
struct Load {
    stop: Arc<AtomicBool>,
    committed: Arc<AtomicU64>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Load {
    fn start(pg_port: u16) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let committed = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, committed) = (stop.clone(), committed.clone());
            thread::spawn(move || {
                let mut i: u64 = 1000;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let sql = format!(
                        "BEGIN;
                         INSERT INTO acct (id, v, note) VALUES ({i}, 0, 'new');
                         UPDATE acct SET v = v + 1, note = 'upd{i}' WHERE id = {};
                         DELETE FROM acct WHERE id = {} AND {i} % 7 = 0;
                         COMMIT;",
                        i / 2,
                        i - 40
                    );
                    let ok = Command::new(psql_path())
                        .args(["-X", "-q", "-h", "127.0.0.1", "-p", &pg_port.to_string()])
                        .args(["-U", "postgres", "-d", "app", "-v", "ON_ERROR_STOP=1"])
                        .args(["-c", &sql])
                        .env("PGCONNECT_TIMEOUT", "2")
                        .stderr(std::process::Stdio::null())
                        .status()
                        .is_ok_and(|s| s.success());
                    if ok {
                        committed.fetch_add(1, Ordering::Relaxed);
                    } else {
                        thread::sleep(Duration::from_millis(100));
                    }
                }
            })
        };
        Load {
            stop,
            committed,
            thread: Some(thread),
        }
    }

    fn committed(&self) -> u64 {
        self.committed.load(Ordering::Relaxed)
    }

    /// Stops writing and returns how many transactions committed.
    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        self.committed()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A cluster with the `acct` table seeded, in database `app`.
fn source() -> PgCluster {
    let pg = PgCluster::start();
    pg.create_database("app");
    pg.psql(
        "app",
        "CREATE TABLE acct (id bigint PRIMARY KEY, v bigint NOT NULL, note text);
         INSERT INTO acct SELECT g, 0, 'seed' FROM generate_series(1, 1000) g;",
    );
    pg
}

/// Waits until the output holds exactly the source's rows of `acct`, key by key.
fn wait_for_oracle(pg: &PgCluster, job: &Job, p: &Proc, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let want = source_state(pg, "app", "acct", &["id"]);
        let got = sink_state_of(&job.lines(), "acct");
        if got == want {
            return;
        }
        if Instant::now() > deadline {
            let missing = want.keys().filter(|k| !got.contains_key(*k)).count();
            let differing = want
                .iter()
                .filter(|(k, v)| got.get(*k).is_some_and(|g| g != *v))
                .count();
            let extra = got.keys().filter(|k| !want.contains_key(*k)).count();
            panic!(
                "the output does not match the source after {within:?}: {missing} keys missing, \
                 {differing} differ, {extra} extra (source has {}); dbmazz log:\n{}",
                want.len(),
                p.log()
            );
        }
        thread::sleep(Duration::from_millis(200));
    }
}

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

/// Waits until dbmazz has logged `needle` at least `times` times, showing its log if not.
fn wait_for_log_count(p: &Proc, needle: &str, times: usize, within: Duration) {
    let deadline = Instant::now() + within;
    while count(&p.log(), needle) < times {
        if Instant::now() > deadline {
            panic!(
                "dbmazz did not log {needle:?} {times} times within {within:?}; log:\n{}",
                p.log()
            );
        }
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn black_hole_under_load_times_out_reconnects_after_healing_and_loses_nothing() {
    let pg = source();
    let proxy = FaultProxy::start(pg.port);
    let url = format!(
        "postgres://postgres@127.0.0.1:{}/app?sslmode=disable&connect_timeout=2",
        proxy.port
    );
    let timeout = Duration::from_millis(2000);
    let job = Job::new(&url, "acct").env("WAL_RECEIVER_TIMEOUT_MS", "2000");
    let p = job.spawn_streaming();
    wait_for_oracle(&pg, &job, &p, MINUTE);

    // Idle for 2.5 timeouts: the server has nothing to send and our status updates keep it from
    // sending keepalives, so only the stream's own ping keeps the connection alive.
    thread::sleep(timeout * 5 / 2);
    assert_eq!(
        count(&p.log(), RECEIVE_TIMEOUT_LOG),
        0,
        "an idle but healthy link timed out:\n{}",
        p.log()
    );

    let load = Load::start(pg.port);
    wait_until(MINUTE, "the load to stream", || {
        load.committed() > 20 && job.lines().len() > 20
    });

    proxy.set(Mode::BlackHole);
    let holed = Instant::now();
    eprintln!("black hole from {:?}", std::time::SystemTime::now());
    // Long enough for the timeout, the failed restart and a reconnect attempt into the hole.
    thread::sleep(timeout * 3);
    proxy.set(Mode::PassThrough);
    let healed = Instant::now();
    let accepted_at_heal = proxy.accepted();

    wait_for_log_count(&p, "streaming changes", 2, MINUTE);
    assert!(proxy.accepted() > accepted_at_heal);
    let reconnected = healed.elapsed();
    let committed = load.finish();
    wait_for_oracle(&pg, &job, &p, MINUTE);
    let caught_up = healed.elapsed();

    let log = p.log();
    assert!(
        log.contains(RECEIVE_TIMEOUT_LOG) && log.contains("WAL_RECEIVER_TIMEOUT_MS"),
        "the log names the receive timeout:\n{log}"
    );
    assert!(
        log.contains(&format!("127.0.0.1:{}", proxy.port)),
        "the error names the server:\n{log}"
    );
    eprintln!(
        "black hole of {:?}: streaming again {reconnected:?} after the link healed, output \
         complete after {caught_up:?} ({committed} transactions under load); restarts:\n{}",
        healed - holed,
        log.lines()
            .filter(|l| l.contains("WARN") || l.contains("streaming changes"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    p.terminate();
    let mut p = p;
    assert!(p.wait(MINUTE).success(), "{}", p.log());
}

#[test]
fn postgres_immediate_restart_while_streaming_loses_nothing() {
    let mut pg = source();
    let job = Job::new(&pg.url("app"), "acct").env("WAL_RECEIVER_TIMEOUT_MS", "5000");
    let mut p = job.spawn_streaming();
    let load = Load::start(pg.port);
    wait_until(MINUTE, "the load to stream", || {
        load.committed() > 20 && job.lines().len() > 20
    });

    pg.stop_immediate();
    thread::sleep(Duration::from_secs(2));
    pg.restart();
    let restarted = Instant::now();
    // Write some more after the crash, then let dbmazz catch up.
    let before = load.committed();
    wait_until(MINUTE, "writes after the restart", || {
        load.committed() > before + 20
    });
    wait_for_log_count(&p, "streaming changes", 2, MINUTE);
    let reconnected = restarted.elapsed();
    load.finish();
    wait_for_oracle(&pg, &job, &p, MINUTE);
    eprintln!(
        "streaming again {reconnected:?} after PostgreSQL restarted, output complete after {:?}",
        restarted.elapsed()
    );
    p.terminate();
    assert!(p.wait(MINUTE).success(), "{}", p.log());
}

#[test]
fn connections_reset_under_load_reconnect_and_lose_nothing() {
    let pg = source();
    let proxy = FaultProxy::start(pg.port);
    let url = format!(
        // Every network parameter, on the SQL and the replication connections alike.
        "postgres://postgres@127.0.0.1:{}/app?sslmode=disable&connect_timeout=2&keepalives=1\
         &keepalives_idle=5&keepalives_interval=1&keepalives_count=2&tcp_user_timeout=5000",
        proxy.port
    );
    let job = Job::new(&url, "acct").env("WAL_RECEIVER_TIMEOUT_MS", "5000");
    let mut p = job.spawn_streaming();
    let load = Load::start(pg.port);
    wait_until(MINUTE, "the load to stream", || {
        load.committed() > 20 && job.lines().len() > 20
    });
    proxy.reset_all();
    let reset = Instant::now();
    wait_for_log_count(&p, "streaming changes", 2, MINUTE);
    let reconnected = reset.elapsed();
    load.finish();
    wait_for_oracle(&pg, &job, &p, MINUTE);
    eprintln!("streaming again {reconnected:?} after every connection was reset");
    p.terminate();
    assert!(p.wait(MINUTE).success(), "{}", p.log());
}

#[test]
fn connecting_into_a_black_hole_times_out_retries_and_starts_once_healed() {
    let pg = source();
    let proxy = FaultProxy::start(pg.port);
    proxy.set(Mode::BlackHole);
    let url = format!(
        "postgres://postgres@127.0.0.1:{}/app?sslmode=disable&connect_timeout=2",
        proxy.port
    );
    let job = Job::new(&url, "acct");
    let mut p = job.spawn();
    // The TCP connect succeeds (the proxy accepts); the handshake is what never answers.
    wait_for_log_count(&p, "timed out after 2s", 2, MINUTE);
    assert!(proxy.accepted() >= 2);
    proxy.set(Mode::PassThrough);
    let healed = Instant::now();
    wait_for_log_count(&p, "streaming changes", 1, MINUTE);
    eprintln!("streaming {:?} after the link healed", healed.elapsed());
    wait_for_oracle(&pg, &job, &p, MINUTE);
    p.terminate();
    assert!(p.wait(MINUTE).success(), "{}", p.log());
}

#[test]
fn slow_link_under_load_does_not_trip_the_receive_timeout() {
    let pg = source();
    let proxy = FaultProxy::start(pg.port);
    let url = format!(
        "postgres://postgres@127.0.0.1:{}/app?sslmode=disable&connect_timeout=5",
        proxy.port
    );
    let job = Job::new(&url, "acct").env("WAL_RECEIVER_TIMEOUT_MS", "2000");
    let p = job.spawn_streaming();
    let load = Load::start(pg.port);
    wait_until(MINUTE, "the load to stream", || {
        load.committed() > 20 && job.lines().len() > 20
    });
    // Slow round trips, then a trickle: the stream lags but bytes keep arriving, and a slow
    // link is not a dead one.
    proxy.set(Mode::Latency(Duration::from_millis(300)));
    thread::sleep(Duration::from_secs(5));
    proxy.set(Mode::Bandwidth(8_000));
    thread::sleep(Duration::from_secs(6));
    load.finish();
    // Idle on the trickle: the ping and its answer still get through.
    thread::sleep(Duration::from_secs(3));
    proxy.set(Mode::PassThrough);
    wait_for_oracle(&pg, &job, &p, MINUTE);
    let log = p.log();
    assert_eq!(count(&log, RECEIVE_TIMEOUT_LOG), 0, "{log}");
    assert_eq!(count(&log, "streaming changes"), 1, "{log}");
    p.terminate();
    let mut p = p;
    assert!(p.wait(MINUTE).success(), "{}", p.log());
}

#[test]
fn a_slow_link_lets_the_stream_overtake_the_copy_and_the_output_still_converges() {
    let pg = source();
    let proxy = FaultProxy::start(pg.port);
    let url = format!(
        "postgres://postgres@127.0.0.1:{}/app?sslmode=disable&connect_timeout=5",
        proxy.port
    );
    let job = Job::new(&url, "acct");
    // At 8 kB/s the copy's 1000 rows (some 17 kB) take two seconds to come through, one
    // streamed transaction a tenth of a second.
    proxy.set(Mode::Bandwidth(8_000));
    let p = job.spawn_streaming();
    // The load's first transaction (i = 1001): it updates key 500 and deletes key 961, both
    // rows that are being copied, after the copy's snapshot point.
    pg.psql(
        "app",
        "BEGIN;
         INSERT INTO acct (id, v, note) VALUES (1001, 0, 'new');
         UPDATE acct SET v = v + 1, note = 'upd1001' WHERE id = 500;
         DELETE FROM acct WHERE id = 961;
         COMMIT;",
    );
    let at = |lines: &[serde_json::Value], op: &str, id: i64| {
        lines
            .iter()
            .position(|l| l["op"] == op && l["key"]["id"] == id)
    };
    wait_until(
        MINUTE,
        "the change and the copied rows in the output",
        || {
            let lines = job.lines();
            at(&lines, "delete", 961).is_some() && at(&lines, "snapshot", 961).is_some()
        },
    );
    let lines = job.lines();
    let before = |op: &str, id: i64| {
        at(&lines, op, id).expect("the change") < at(&lines, "snapshot", id).expect("the copy")
    };
    assert!(
        before("update", 500) && before("delete", 961),
        "the stream was expected to write the change before the copied rows of its keys:\n{}",
        lines
            .iter()
            .filter(|l| l["op"] != "snapshot"
                || [500, 961].contains(&l["key"]["id"].as_i64().unwrap_or(0)))
            .map(|l| l.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    );
    proxy.set(Mode::PassThrough);
    // The copied rows carry the snapshot point as their version, older than the change: a
    // consumer that applies a line only if its commit_lsn is not older than the key's keeps
    // the update and the delete.
    wait_for_oracle(&pg, &job, &p, MINUTE);
    p.terminate();
    let mut p = p;
    assert!(p.wait(MINUTE).success(), "{}", p.log());
}
