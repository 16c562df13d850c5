//! `dbmazz top` in a real terminal: tmux at 80×24, driven with `send-keys`, read with
//! `capture-pane`.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::support::dbmazz::{wait_until, Job, Proc};
use crate::support::grpcurl::Client;
use crate::support::pg::PgCluster;
use crate::support::starrocks::Double;

/// A tmux server of our own (its own socket), killed on drop. Also used by the
/// `dbmazz schema` CLI tests.
pub(crate) struct Tmux {
    socket: String,
}

impl Tmux {
    fn cmd(&self) -> Command {
        let mut c = Command::new("tmux");
        c.args(["-L", &self.socket]).stdin(Stdio::null());
        c
    }

    fn start(command: &str) -> Tmux {
        Tmux::start_named("top", 80, 24, command)
    }

    /// A session `top` of `width`×`height` running `command`, on a tmux server named after
    /// `name` and this process (tests running at once do not share a server).
    pub(crate) fn start_named(name: &str, width: u16, height: u16, command: &str) -> Tmux {
        let t = Tmux {
            socket: format!("dbmazz-{name}-test-{}", std::process::id()),
        };
        let ok = t
            .cmd()
            .args([
                "-f",
                "/dev/null",
                "new-session",
                "-d",
                "-x",
                &width.to_string(),
                "-y",
                &height.to_string(),
                "-s",
                "top",
            ])
            .arg(command)
            .env("TERM", "xterm-256color")
            .status()
            .expect("run tmux (scripts/install-deps.sh installs it)");
        assert!(ok.success(), "tmux new-session failed");
        t
    }

    fn capture(&self) -> String {
        let out = self
            .cmd()
            .args(["capture-pane", "-p", "-t", "top"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn keys(&self, keys: &str) {
        self.cmd()
            .args(["send-keys", "-t", "top", keys])
            .status()
            .unwrap();
    }

    fn alive(&self) -> bool {
        self.cmd()
            .args(["has-session", "-t", "top"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    pub(crate) fn wait_screen(&self, what: &str, cond: impl Fn(&str) -> bool) -> String {
        let mut last = String::new();
        for _ in 0..600 {
            last = self.capture();
            if cond(&last) {
                return last;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("screen never showed {what}:\n{last}");
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").stderr(Stdio::null()).status();
    }
}

fn grpc_port(p: &mut Proc) -> u16 {
    p.wait_for_log("grpc listening", Duration::from_secs(60));
    let log = p.log();
    let line = log.lines().find(|l| l.contains("grpc listening")).unwrap();
    let addr = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("addr="))
        .unwrap();
    addr.rsplit(':').next().unwrap().parse().unwrap()
}

/// The number after `label` on the screen, e.g. `events` in the totals panel.
fn number_after(screen: &str, label: &str) -> Option<f64> {
    let rest = &screen[screen.find(label)? + label.len()..];
    let word = rest.split_whitespace().next()?;
    let (num, mult) = match word.strip_suffix('k') {
        Some(n) => (n, 1e3),
        None => match word.strip_suffix('M') {
            Some(n) => (n, 1e6),
            None => (word, 1.0),
        },
    };
    num.parse::<f64>().ok().map(|v| v * mult)
}

#[test]
fn top_shows_live_numbers_and_pauses_in_tmux() {
    let pg = PgCluster::start();
    pg.create_database("app");
    pg.psql(
        "app",
        "CREATE TABLE orders (id bigint PRIMARY KEY, note text);",
    );
    let d = Double::start("app");
    let job = Job::new(&pg.url("app"), "orders")
        .env("SINK_TYPE", "starrocks")
        .env("STARROCKS_URL", &d.url())
        .env("STARROCKS_MYSQL_URL", &d.mysql_url())
        .env("STARROCKS_DB", "app")
        .env("CREATE_TABLES", "true")
        .env("GRPC_PORT", "0");
    let mut p = job.spawn_streaming();
    let port = grpc_port(&mut p);

    // Steady traffic while the dashboard runs.
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let stop = stop.clone();
        let url = pg.url("app");
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let sql = format!(
                    "INSERT INTO orders SELECT g, 'n' FROM generate_series({}, {}) g",
                    n * 200 + 1,
                    n * 200 + 200
                );
                let _ = Command::new(crate::support::pg::client_bin().join("psql"))
                    .args(["-X", "-q", "-d", &url, "-c", &sql])
                    .output();
                n += 1;
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };

    let cmd = format!(
        "{} top --grpc 127.0.0.1:{port} --source-url '{}' --sink-mysql-url '{}' --sink-db app --tables orders --counts-every 1",
        env!("CARGO_BIN_EXE_dbmazz"),
        pg.url("app"),
        d.mysql_url()
    );
    let tmux = Tmux::start(&cmd);
    let screen = tmux.wait_screen("live numbers", |s| {
        s.contains("RUNNING")
            && number_after(s, "events ").is_some_and(|v| v > 0.0)
            && number_after(s, "orders").is_some_and(|v| v > 0.0)
    });
    assert!(screen.contains("dbmazz top"), "{screen}");
    assert!(screen.contains("CDC"), "{screen}");
    assert!(screen.contains("events/s"), "{screen}");
    assert!(screen.contains("confirmed 0/"), "{screen}");
    assert!(screen.lines().count() <= 24, "{screen}");
    assert!(screen.lines().all(|l| l.chars().count() <= 80), "{screen}");
    // The source-vs-sink panel shows row counts that grow.
    let first = number_after(&screen, "orders").unwrap();
    tmux.wait_screen("growing totals", |s| {
        number_after(s, "events ").is_some_and(|v| v > first)
    });

    let grpc = Client::new(port);
    tmux.keys("p");
    wait_until(Duration::from_secs(30), "GetStatus to say PAUSED", || {
        grpc.ok("dbmazz.CdcStatusService/GetStatus", "{}")["state"] == "PAUSED"
    });
    tmux.wait_screen("PAUSED in the title", |s| s.contains("state PAUSED"));
    tmux.keys("p");
    wait_until(Duration::from_secs(30), "GetStatus to say RUNNING", || {
        grpc.ok("dbmazz.CdcStatusService/GetStatus", "{}")["state"] == "RUNNING"
    });
    tmux.wait_screen("RUNNING again", |s| s.contains("state RUNNING"));

    tmux.keys("q");
    wait_until(Duration::from_secs(10), "top to quit on q", || {
        !tmux.alive()
    });
    stop.store(true, Ordering::Relaxed);
    traffic.join().unwrap();
}
