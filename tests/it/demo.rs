//! The newcomer's command, headless: `demo/demo-start.sh --duration 30` with the binaries of
//! this build (`DEMO_BIN_DIR`) and its own state directory (`DEMO_RUN`). It must replicate tens
//! of thousands of changes, `dbmazz verify` must find source and sink equal once the traffic
//! stops, and `demo-stop.sh` must leave no process and no listening port behind.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn read(dir: &Path, file: &str) -> Option<String> {
    std::fs::read_to_string(dir.join(file))
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

fn alive(pid: i32) -> bool {
    unsafe { libc::kill(pid, 0) == 0 }
}

#[test]
fn demo_runs_headless_replicates_verifies_and_stops_cleanly() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_dbmazz")).parent().unwrap();
    assert!(
        bin_dir.join("starrocks-double").exists(),
        "build starrocks-double first (scripts/test.sh does)"
    );
    let run = tempfile::Builder::new()
        .prefix("dbmazz-demo")
        .tempdir()
        .unwrap();
    let started = Instant::now();
    let mut child = Command::new(root.join("demo/demo-start.sh"))
        .args(["--duration", "30", "--prometheus"])
        .env("DEMO_RUN", run.path())
        .env("DEMO_BIN_DIR", bin_dir)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(run.path().with_extension("out")).unwrap())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();

    // Record what it started while it runs: pids and ports.
    let mut pids: BTreeMap<&str, i32> = BTreeMap::new();
    let mut ports: Vec<u16> = Vec::new();
    let status = loop {
        for name in [
            "traffic.pid",
            "dbmazz.pid",
            "starrocks.pid",
            "prometheus.pid",
        ] {
            if let Some(pid) = read(run.path(), name).and_then(|p| p.parse().ok()) {
                pids.insert(name, pid);
            }
        }
        for name in ["pg.port", "grpc.port", "sr.ports", "prometheus.port"] {
            for p in read(run.path(), name)
                .unwrap_or_default()
                .split_whitespace()
            {
                if let Ok(p) = p.parse() {
                    if !ports.contains(&p) {
                        ports.push(p);
                    }
                }
            }
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(170),
            "the demo took too long"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let out = std::fs::read_to_string(run.path().with_extension("out")).unwrap();
    let _ = std::fs::remove_file(run.path().with_extension("out"));
    assert!(status.success(), "demo failed ({status}):\n{out}");
    eprintln!("demo took {:?}", started.elapsed());

    let total: u64 = out
        .lines()
        .find(|l| l.starts_with("dbmazz top: final:"))
        .and_then(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("total_events="))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no final summary:\n{out}"));
    eprintln!("demo replicated {total} events");
    assert!(total >= 20_000, "only {total} events replicated:\n{out}");
    assert!(out.contains("verify: source and sink are equal"), "{out}");
    for t in ["customers", "orders", "order_items"] {
        assert!(out.contains(&format!("public.{t}: source ")), "{out}");
    }

    // The real Prometheus scraped dbmazz with the deploy kit's rules loaded.
    assert!(out.contains("Prometheus UI : http://127.0.0.1:"), "{out}");
    let rules_line = out
        .lines()
        .find(|l| l.starts_with("prometheus: "))
        .unwrap_or_else(|| panic!("no Prometheus line:\n{out}"));
    assert!(
        rules_line.starts_with("prometheus: up{job=\"dbmazz\"} = 1, "),
        "{rules_line}"
    );
    let rules: u32 = rules_line
        .split_whitespace()
        .rev()
        .nth(3)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(rules >= 10, "{rules_line}");
    assert_eq!(pids.len(), 4, "pid files seen: {pids:?}");
    for (name, pid) in &pids {
        assert!(
            !alive(*pid),
            "{name} (pid {pid}) still runs after demo-stop"
        );
    }
    assert!(ports.len() >= 5, "ports seen: {ports:?}");
    for p in ports {
        assert!(
            TcpListener::bind(("127.0.0.1", p)).is_ok(),
            "port {p} is still in use after demo-stop"
        );
    }
    assert!(
        !run.path().join("pgdata/postmaster.pid").exists(),
        "PostgreSQL still runs"
    );
}
