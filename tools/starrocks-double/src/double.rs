//! The shared state of one running double, its counters, and the task tree that serves it.
//!
//! ```text
//! run() ─ binds FE (+ extra hops), BEs, MySQL, admin ─ prints {"fe":..,"be":..,"bes":[..],..} ─┐
//!   ├─ fe::serve     307 to a BE (round-robin), get_load_state
//!   ├─ be::serve     Stream Load, transaction API, error logs (one per BE, one shared store)
//!   ├─ mysql::serve  DDL, information_schema, SELECT
//!   ├─ admin::serve  faults, stats, reset
//!   └─ housekeeping  finishes ALTER jobs, evicts labels, expires transactions (every 50 ms)
//! ```
//!
//! Shutdown: a watch channel flips, every accept loop stops, and `run` returns.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::Config;
use crate::faults::Faults;
use crate::store::{Store, StoreError};
use crate::txn::StreamTxn;

/// One BE (or CN) HTTP listener as clients reach it: the host the FE advertises in its
/// redirects and `SHOW BACKENDS`, and the bound port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BeAddr {
    pub host: String,
    pub port: u16,
}

/// The ports actually bound (after port 0 was resolved).
#[derive(Debug, Clone, Serialize)]
pub struct Ports {
    pub fe: u16,
    /// BE 0's port (`bes[0].port`), kept for clients of the single-BE layout.
    pub be: u16,
    /// Every BE: BE i is 127.0.0.(i+1) for i >= 1.
    pub bes: Vec<BeAddr>,
    pub mysql: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin: Option<u16>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fe_hops: Vec<u16>,
}

/// Counters behind `GET /admin/stats`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StatsSnapshot {
    pub loads: u64,
    pub loads_by_status: BTreeMap<String, u64>,
    /// Rows decoded (or counted, with `--discard`) per body format: `csv`, `json`.
    pub rows_by_format: BTreeMap<String, u64>,
    pub rows_total: u64,
    pub rows_loaded: u64,
    pub rows_filtered: u64,
    pub load_bytes: u64,
    pub fe_redirects: u64,
    pub fe_rejected: u64,
    pub faults_fired: u64,
    pub connections_dropped: u64,
    pub http_5xx_sent: u64,
    pub txn_api_calls: u64,
    pub mysql_connections: u64,
    pub mysql_statements: u64,
    pub discard: bool,
}

/// Thread-safe counters.
#[derive(Debug, Default)]
pub struct Stats(Mutex<StatsSnapshot>);

impl Stats {
    pub fn update(&self, f: impl FnOnce(&mut StatsSnapshot)) {
        f(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()));
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn reset(&self, discard: bool) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = StatsSnapshot {
            discard,
            ..StatsSnapshot::default()
        };
    }

    /// Records one finished load.
    pub fn load(&self, status: &str, total: u64, loaded: u64, filtered: u64, bytes: u64) {
        self.update(|s| {
            s.loads += 1;
            *s.loads_by_status.entry(status.to_owned()).or_default() += 1;
            s.rows_total += total;
            s.rows_loaded += loaded;
            s.rows_filtered += filtered;
            s.load_bytes += bytes;
        });
    }
}

/// Rejected-row logs served at `/api/_load_error_log?file=...`, newest kept.
#[derive(Debug, Default)]
pub struct ErrorLogs {
    files: VecDeque<(String, String)>,
}

const ERROR_LOGS_KEPT: usize = 200;

impl ErrorLogs {
    pub fn put(&mut self, name: String, text: String) {
        if self.files.len() >= ERROR_LOGS_KEPT {
            self.files.pop_front();
        }
        self.files.push_back((name, text));
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.files
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t.as_str())
    }
}

/// Everything the servers share.
pub struct Double {
    pub config: Config,
    pub ports: Ports,
    store: Mutex<Store>,
    pub faults: Faults,
    pub stats: Stats,
    pub error_logs: Mutex<ErrorLogs>,
    /// Open transactions of the transaction API, by (db, label).
    pub txns: Mutex<HashMap<(String, String), StreamTxn>>,
    /// The next BE the FE redirects a load to (round-robin over the alive BEs).
    next_be: AtomicUsize,
}

impl Double {
    /// Locks the store. A panic while holding it cannot leave SQLite half-written (every
    /// change is one transaction), so a poisoned lock is still usable.
    pub fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `label_keep_max_second` in milliseconds.
    pub fn label_keep_ms(&self) -> i64 {
        (self.config.label_keep_max_second as i64).saturating_mul(1000)
    }

    /// Applies label retention now.
    pub fn evict_labels(&self) {
        let keep_ms = self.label_keep_ms();
        let keep_num = self.config.label_keep_max_num;
        if let Err(e) = self.store().evict_labels(keep_ms, keep_num) {
            tracing::error!(error = %e, "label eviction failed");
        }
    }

    /// The `ErrorURL` for an error log file kept by BE `be` (every BE serves every log).
    pub fn error_url(&self, be: usize, file: &str) -> String {
        let addr = self.ports.bes.get(be).unwrap_or(&self.ports.bes[0]);
        format!(
            "http://{}:{}/api/_load_error_log?file={file}",
            addr.host, addr.port
        )
    }

    /// The BE the FE sends the next load to: round-robin over the BEs, as the FE's
    /// `seqChooseBackendIds` does (shared-data picks a random alive CN; round-robin is a
    /// stand-in that still spreads loads over every node).
    pub fn pick_be(&self) -> &BeAddr {
        let i = self.next_be.fetch_add(1, Ordering::Relaxed) % self.ports.bes.len();
        &self.ports.bes[i]
    }

    /// The node ids `SHOW BACKENDS` / `SHOW COMPUTE NODES` print: 10001, 10002, ...
    pub fn node_id(index: usize) -> i64 {
        10_001 + index as i64
    }
}

/// Why the double could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot bind {what} on {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: String,
        source: std::io::Error,
    },
    #[error("cannot open the store: {0}")]
    Store(#[from] StoreError),
    #[error("cannot create the data directory: {0}")]
    DataDir(std::io::Error),
}

async fn bind(config: &Config, port: u16, what: &'static str) -> Result<TcpListener, StartError> {
    let addr = format!("{}:{port}", config.bind);
    TcpListener::bind(&addr)
        .await
        .map_err(|source| StartError::Bind { what, addr, source })
}

fn local_port(l: &TcpListener) -> u16 {
    l.local_addr().map(|a| a.port()).unwrap_or(0)
}

/// A started double: its ports, and what to call to stop it.
pub struct Running {
    pub ports: Ports,
    pub double: Arc<Double>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Stops every listener and waits for the accept loops to end.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Binds every port, opens the store and starts serving.
pub async fn start(config: Config) -> Result<Running, StartError> {
    if let Some(dir) = &config.data_dir {
        std::fs::create_dir_all(dir).map_err(StartError::DataDir)?;
    }
    let store = Store::open(config.data_dir.as_deref(), config.alter_duration_ms as i64)?;
    let fe = bind(&config, config.fe_port, "the FE HTTP port").await?;
    let mut hops = Vec::new();
    for _ in 0..config.fe_extra_hops {
        hops.push(bind(&config, 0, "an extra FE hop").await?);
    }
    let be = bind(&config, config.be_port, "the BE HTTP port").await?;
    let mut more_bes = Vec::new();
    for i in 1..config.be_count {
        let addr = format!("127.0.0.{}:{}", i + 1, config.be_port);
        let listener = TcpListener::bind(&addr)
            .await
            .map_err(|source| StartError::Bind {
                what: "an extra BE HTTP port",
                addr,
                source,
            })?;
        more_bes.push(listener);
    }
    let mysql = bind(&config, config.mysql_port, "the MySQL port").await?;
    let admin = match config.admin_port.0 {
        Some(p) => Some(bind(&config, p, "the admin port").await?),
        None => None,
    };
    let mut bes = vec![BeAddr {
        host: config.advertise_be_host.clone(),
        port: local_port(&be),
    }];
    for (i, l) in more_bes.iter().enumerate() {
        bes.push(BeAddr {
            host: format!("127.0.0.{}", i + 2),
            port: local_port(l),
        });
    }
    let ports = Ports {
        fe: local_port(&fe),
        be: local_port(&be),
        bes,
        mysql: local_port(&mysql),
        admin: admin.as_ref().map(local_port),
        fe_hops: hops.iter().map(local_port).collect(),
    };
    let stats = Stats::default();
    stats.reset(config.discard);
    let double = Arc::new(Double {
        config,
        ports: ports.clone(),
        store: Mutex::new(store),
        faults: Faults::default(),
        stats,
        error_logs: Mutex::new(ErrorLogs::default()),
        txns: Mutex::new(HashMap::new()),
        next_be: AtomicUsize::new(0),
    });
    let (tx, rx) = watch::channel(false);
    let mut tasks = Vec::new();
    // The FE chain: fe -> hop 1 -> ... -> hop N -> BE.
    let mut next_hops: Vec<Option<u16>> = ports.fe_hops.iter().map(|p| Some(*p)).collect();
    next_hops.push(None);
    tasks.push(tokio::spawn(crate::fe::serve(
        fe,
        double.clone(),
        next_hops[0],
        rx.clone(),
    )));
    for (i, hop) in hops.into_iter().enumerate() {
        tasks.push(tokio::spawn(crate::fe::serve(
            hop,
            double.clone(),
            next_hops[i + 1],
            rx.clone(),
        )));
    }
    for (i, listener) in std::iter::once(be).chain(more_bes).enumerate() {
        tasks.push(tokio::spawn(crate::be::serve(
            listener,
            double.clone(),
            i,
            rx.clone(),
        )));
    }
    tasks.push(tokio::spawn(crate::mysql::serve(
        mysql,
        double.clone(),
        rx.clone(),
    )));
    if let Some(admin) = admin {
        tasks.push(tokio::spawn(crate::admin::serve(
            admin,
            double.clone(),
            rx.clone(),
        )));
    }
    tasks.push(tokio::spawn(housekeeping(double.clone(), rx)));
    Ok(Running {
        ports,
        double,
        shutdown: tx,
        tasks,
    })
}

/// Periodic work: finish schema-change jobs, evict labels, expire transactions.
async fn housekeeping(double: Arc<Double>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let mut n: u64 = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        n += 1;
        let d = double.clone();
        let evict = n % 20 == 0;
        let res = tokio::task::spawn_blocking(move || {
            let has_jobs = d.store().jobs.iter().any(|j| !j.is_done());
            if has_jobs {
                if let Err(e) = d.store().finish_jobs() {
                    tracing::error!(error = %e, "finishing schema change jobs failed");
                }
            }
            if evict {
                d.evict_labels();
            }
            crate::txn::expire(&d);
        })
        .await;
        if let Err(e) = res {
            tracing::error!(error = %e, "housekeeping task failed");
        }
    }
}

/// Accepts connections until shutdown, handing each to `handle`.
pub async fn accept_loop<F, Fut>(
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
    what: &'static str,
    handle: F,
) where
    F: Fn(tokio::net::TcpStream) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(handle(stream));
                }
                Err(e) => {
                    tracing::warn!(error = %e, listener = what, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.changed() => return,
        }
    }
}
