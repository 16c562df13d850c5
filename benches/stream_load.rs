//! The Stream Load transport alone: dbmazz's `StreamLoader` sending ready-made JSON bodies to
//! `starrocks-double --discard`, with no PostgreSQL and no walsender in the run. The end-to-end
//! benchmark cannot separate the transport's cost per load from its cost per byte: its CPU
//! figures move ±20 % with the walsender's regime. Here the only variable is the body size, so
//! the cost of a load splits into a fixed part (libcurl's set-up and teardown, the BE's exchange,
//! and, once a second or with no pin, the FE's 307 on a new connection) and a part per megabyte.
//!
//! Run: `cargo build --release -p starrocks-double && cargo bench --bench stream_load`
//! (`STREAM_LOAD_MB`, default 256: the megabytes sent per body size; `STREAM_LOAD_TO_BE=1` sends
//! to the BE directly, which StarRocks accepts, to price the FE's redirect; `STARROCKS_BE_PIN_MS`
//! as for the daemon, so `=0` sends every load through the FE). Prints one line per body
//! size: loads, wall time, dbmazz's CPU (user + system of this process, which runs the loads
//! on tokio's blocking pool), per load and per MB, and the double's CPU.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use dbmazz::config::{Config, SinkConfig, StarRocksConfig};
use dbmazz::starrocks::stream_load::{LoadOutcome, LoadRequest, StreamLoader};
use mysql_async::prelude::Queryable;

/// Body sizes: a small flush, mixed's typical load (~390 KB), the 1 MiB default, and larger.
const SIZES: [usize; 4] = [64 << 10, 390 << 10, 1 << 20, 4 << 20];

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` and friends
    }
    let mb: usize = std::env::var("STREAM_LOAD_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (mut double, ports) = spawn_double(dir.path());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let mysql = format!("mysql://root:@127.0.0.1:{}/", ports.mysql);
    rt.block_on(create_table(&mysql));
    let to_be = std::env::var("STREAM_LOAD_TO_BE").is_ok_and(|v| v == "1");
    let cfg = Arc::new(config(if to_be { ports.be } else { ports.fe }, &mysql));
    println!(
        "| body KiB | loads | wall s | dbmazz CPU s | µs CPU per load | ms CPU per MB | double CPU s |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    let mut label = 0u64;
    for size in SIZES {
        let body = bytes::Bytes::from(body_of(size));
        let loads = (mb << 20).div_ceil(size).max(20);
        let loader = StreamLoader::new(cfg.clone());
        // Warm-up: the handle pool, the connection to the BE, the allocator.
        for _ in 0..3 {
            label += 1;
            rt.block_on(load(&loader, &body, label));
        }
        let (cpu0, dcpu0, t0) = (self_cpu(), child_cpu(double.id()), Instant::now());
        for _ in 0..loads {
            label += 1;
            rt.block_on(load(&loader, &body, label));
        }
        let (cpu, dcpu, wall) = (
            self_cpu() - cpu0,
            child_cpu(double.id()) - dcpu0,
            t0.elapsed().as_secs_f64(),
        );
        let total_mb = (loads * size) as f64 / (1 << 20) as f64;
        println!(
            "| {} | {loads} | {wall:.2} | {cpu:.2} | {:.0} | {:.2} | {dcpu:.2} |",
            size >> 10,
            cpu / loads as f64 * 1e6,
            cpu / total_mb * 1e3,
        );
    }
    let _ = double.kill();
    let _ = double.wait();
}

async fn load(loader: &StreamLoader, body: &bytes::Bytes, label: u64) {
    let req = LoadRequest {
        table: "t".into(),
        label: format!("bench_{}_{label}", std::process::id()),
        partial_columns: None,
        csv_columns: None,
        body: body.clone(),
    };
    match loader.load(req).await.0 {
        LoadOutcome::Committed { .. } => {}
        other => panic!("load {label} did not commit: {other:?}"),
    }
}

/// A JSON array of rows of about `size` bytes, shaped like dbmazz's own bodies.
fn body_of(size: usize) -> Vec<u8> {
    let pad = "x".repeat(200);
    let mut out = Vec::with_capacity(size + 512);
    out.push(b'[');
    let mut id = 0u64;
    while out.len() < size {
        if id > 0 {
            out.push(b',');
        }
        id += 1;
        out.extend_from_slice(
            format!(
                r#"{{"id":{id},"v":"{pad}","dbmazz_cdc_version":{id},"dbmazz_is_deleted":false}}"#
            )
            .as_bytes(),
        );
    }
    out.push(b']');
    out
}

async fn create_table(url: &str) {
    // StarRocks has no `socket` variable, so mysql_async must not ask for it.
    let opts = mysql_async::OptsBuilder::from_opts(
        mysql_async::Opts::from_url(url).expect("the double's MySQL address"),
    )
    .prefer_socket(false);
    let mut conn = mysql_async::Conn::new(opts)
        .await
        .expect("a MySQL connection to the double");
    for sql in [
        "CREATE DATABASE IF NOT EXISTS bench",
        "CREATE TABLE bench.t (id BIGINT NOT NULL, v STRING, dbmazz_cdc_version BIGINT, \
         dbmazz_is_deleted BOOLEAN) PRIMARY KEY(id) DISTRIBUTED BY HASH(id)",
    ] {
        conn.query_drop(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    let _ = conn.disconnect().await;
}

fn config(http: u16, mysql: &str) -> StarRocksConfig {
    let vars: HashMap<String, String> = [
        ("DATABASE_URL", "postgres://u@127.0.0.1/x"),
        ("SINK_TYPE", "starrocks"),
        ("TABLES", "t"),
        ("STARROCKS_URL", &format!("http://127.0.0.1:{http}")),
        ("STARROCKS_MYSQL_URL", mysql),
        ("STARROCKS_DB", "bench"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .chain(
        std::env::var("STARROCKS_BE_PIN_MS")
            .ok()
            .map(|v| ("STARROCKS_BE_PIN_MS".to_owned(), v)),
    )
    .collect();
    match Config::from_vars(&vars)
        .expect("a valid configuration")
        .sink
    {
        SinkConfig::StarRocks(c) => *c,
        _ => unreachable!("SINK_TYPE is starrocks"),
    }
}

/// The double's listeners this bench uses.
struct Ports {
    fe: u16,
    /// The first BE's HTTP port.
    be: u16,
    mysql: u16,
}

/// Starts `target/release/starrocks-double --discard` on free ports; returns it and its ports.
fn spawn_double(dir: &std::path::Path) -> (Child, Ports) {
    // The bench runs from target/release/deps; the double sits in target/release.
    let exe = std::env::current_exe().expect("the bench's own path");
    let bin: PathBuf = exe
        .parent()
        .and_then(|d| d.parent())
        .map(|d| d.join("starrocks-double"))
        .expect("target/release");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --release -p starrocks-double` first",
        bin.display()
    );
    let mut child = Command::new(&bin)
        .args(["--fe-port", "0", "--be-port", "0", "--mysql-port", "0"])
        .args(["--admin-port", "0", "--default-replication-num", "1"])
        .arg("--discard")
        .arg("--data-dir")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("the double's stdout"))
        .read_line(&mut line)
        .expect("the double's ports line");
    let json: serde_json::Value = serde_json::from_str(&line)
        .unwrap_or_else(|e| panic!("the double did not print its ports ({e}): {line:?}"));
    let port = |v: &serde_json::Value| {
        v.as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or_else(|| panic!("a port missing in {line}"))
    };
    let ports = Ports {
        fe: port(&json["fe"]),
        be: port(&json["bes"][0]["port"]),
        mysql: port(&json["mysql"]),
    };
    (child, ports)
}

/// User + system CPU seconds of this process (all its threads).
fn self_cpu() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// User + system CPU seconds of a child that is still running, from `/proc/PID/stat`.
fn child_cpu(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may contain spaces) start at ") ".
    let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz // utime, stime (fields 14 and 15 of the whole line)
}
