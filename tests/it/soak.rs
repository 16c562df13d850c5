//! The bank soak (not in CI; `scripts/soak.sh` runs it): money moves between accounts under a
//! steady transfer load while a chaos loop breaks the network to PostgreSQL and to StarRocks,
//! restarts PostgreSQL and kills dbmazz with `kill -9`. At the end the sink must hold every
//! account exactly as the source does, so the sum of balances is unchanged: a lost, duplicated
//! or reordered transfer shows as a wrong balance.
//!
//! `SOAK_SECONDS` sets the length (default 3600), `SOAK_SEED` the fault sequence (printed).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::starrocks::wait_converged;
use crate::support::dbmazz::Proc;
use crate::support::fault_proxy::{FaultProxy, Mode};
use crate::support::pg::{free_port, pg_bin, PgCluster};
use crate::support::starrocks::Double;

const ACCOUNTS: i64 = 1000;
const OPENING_BALANCE: i64 = 1000;

/// A small deterministic generator (xorshift), so that a failing run can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Runs pgbench transfer transactions until `stop`, restarting it whenever PostgreSQL goes away.
fn transfers(port: u16, script: &std::path::Path, stop: &AtomicBool) -> u64 {
    let mut runs = 0;
    while !stop.load(Ordering::Relaxed) {
        runs += 1;
        let _ = std::process::Command::new(pg_bin().join("pgbench"))
            .args([
                "-n",
                "-c",
                "4",
                "-T",
                "20",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
            ])
            .arg("-p")
            .arg(port.to_string())
            .arg("-f")
            .arg(script)
            .arg("app")
            .env("PGSSLMODE", "disable")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
        std::thread::sleep(Duration::from_millis(200));
    }
    runs
}

#[test]
#[ignore = "takes an hour by default; run by scripts/soak.sh"]
fn bank_transfers_survive_network_faults_postgres_restarts_and_kill_9() {
    let seconds: u64 = std::env::var("SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3600);
    let seed: u64 = std::env::var("SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("bank soak: {seconds} s, SOAK_SEED={seed}");
    let mut rng = Rng(seed);

    let pg = Mutex::new(PgCluster::start_with(crate::support::pg::PgOptions {
        extra_conf: vec!["wal_sender_timeout = 10s".into()],
        ..Default::default()
    }));
    let url = pg.lock().unwrap().create_database("app");
    let port = pg.lock().unwrap().port;
    pg.lock().unwrap().psql(
        "app",
        &format!(
            "CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL);
             INSERT INTO accounts SELECT g, {OPENING_BALANCE} FROM generate_series(1, {ACCOUNTS}) g;"
        ),
    );
    let be_port = free_port();
    let d = Double::start_with(
        "app",
        &[
            "--be-port",
            &be_port.to_string(),
            "--advertise-be-host",
            "127.0.0.2",
        ],
    );
    d.exec("CREATE TABLE app.accounts (id INT NOT NULL, balance BIGINT NOT NULL) PRIMARY KEY(id) DISTRIBUTED BY HASH(id)");
    let pg_proxy = FaultProxy::start(port);
    let fe_proxy = FaultProxy::start(d.fe);
    let be_proxy = FaultProxy::start_on(
        &format!("127.0.0.2:{be_port}"),
        std::net::SocketAddr::from(([127, 0, 0, 1], be_port)),
    );
    let job = d
        .job(
            &url.replace(&format!(":{port}/"), &format!(":{}/", pg_proxy.port)),
            "accounts",
        )
        .env(
            "STARROCKS_URL",
            &format!("http://127.0.0.1:{}", fe_proxy.port),
        )
        .env("FLUSH_INTERVAL_MS", "200")
        .env("WAL_RECEIVER_TIMEOUT_MS", "5000")
        .env("STARROCKS_STALL_TIMEOUT_S", "10")
        .env("RUST_LOG", "info");
    let script = job.dir().join("transfer.sql");
    std::fs::write(
        &script,
        format!(
            "\\set a random(1, {ACCOUNTS})\n\\set b random(1, {ACCOUNTS})\n\\set amount random(1, 50)\n\
             BEGIN;\n\
             UPDATE accounts SET balance = balance - :amount WHERE id = :a;\n\
             UPDATE accounts SET balance = balance + :amount WHERE id = :b;\n\
             COMMIT;\n"
        ),
    )
    .unwrap();

    let mut p: Proc = job.spawn_streaming();
    let stop = AtomicBool::new(false);
    let mut counts = std::collections::BTreeMap::<&str, u32>::new();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    std::thread::scope(|s| {
        // Restarts keep the port, so the writer needs nothing else of the cluster.
        let writer = s.spawn(|| transfers(port, &script, &stop));
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_secs(10 + rng.below(30)));
            let hold = Duration::from_secs(3 + rng.below(15));
            let what = match rng.below(8) {
                0 => {
                    pg_proxy.set(Mode::BlackHole);
                    std::thread::sleep(hold);
                    pg_proxy.set(Mode::PassThrough);
                    "black hole to PostgreSQL"
                }
                1 => {
                    pg_proxy.reset_all();
                    "connections to PostgreSQL reset"
                }
                2 => {
                    pg_proxy.set(Mode::Latency(Duration::from_millis(200)));
                    std::thread::sleep(hold);
                    pg_proxy.set(Mode::PassThrough);
                    "200 ms latency to PostgreSQL"
                }
                3 => {
                    pg.lock().unwrap().stop_immediate();
                    std::thread::sleep(Duration::from_secs(2));
                    pg.lock().unwrap().restart();
                    "PostgreSQL crash and restart"
                }
                4 => {
                    p.kill9();
                    p = job.spawn();
                    "kill -9 of dbmazz"
                }
                5 => {
                    fe_proxy.set(Mode::BlackHole);
                    std::thread::sleep(hold);
                    fe_proxy.set(Mode::PassThrough);
                    "black hole to the StarRocks FE"
                }
                6 => {
                    be_proxy.set(Mode::Bandwidth(50_000));
                    std::thread::sleep(Duration::from_secs(1));
                    be_proxy.set(Mode::BlackHole);
                    std::thread::sleep(hold);
                    be_proxy.set(Mode::PassThrough);
                    "black hole to the BE mid-body"
                }
                _ => {
                    d.fault(json!({"kind": "http_5xx", "table": "accounts"}));
                    std::thread::sleep(hold);
                    d.admin("DELETE", "/admin/faults", "");
                    "StarRocks answering 503"
                }
            };
            *counts.entry(what).or_default() += 1;
            eprintln!(
                "[{:>5} s left] {what}",
                deadline.saturating_duration_since(Instant::now()).as_secs()
            );
        }
        stop.store(true, Ordering::Relaxed);
        let runs = writer.join().unwrap();
        eprintln!("pgbench runs: {runs}");
    });

    let pg = pg.into_inner().unwrap();
    let total = pg.psql("app", "SELECT sum(balance) FROM accounts");
    assert_eq!(
        total,
        (ACCOUNTS * OPENING_BALANCE).to_string(),
        "the source lost money"
    );
    let txns = pg.psql(
        "app",
        "SELECT xact_commit FROM pg_stat_database WHERE datname = 'app'",
    );
    wait_converged(&pg, &d, "accounts", "id", "balance");
    let sink_total = d.query("SELECT sum(balance) FROM app.accounts");
    assert_eq!(
        sink_total[0][0].as_deref(),
        Some(total.as_str()),
        "the sink's balances do not add up"
    );
    eprintln!("bank soak passed: {seconds} s, seed {seed}, faults {counts:?}, transactions committed in app (pg_stat_database, since the last crash) {txns}; every account equal, sum {total}");
    p.terminate();
    let _ = p.wait(Duration::from_secs(60));
}
