//! Runs the real `dbmazz` binary as a child process, and reads what it wrote.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value as Json;
use tempfile::TempDir;

/// One replication job: its environment and output file, reusable across restarts.
pub struct Job {
    env: Vec<(String, String)>,
    dir: TempDir,
    runs: AtomicUsize,
}

impl Job {
    /// A job streaming `tables` from `url` into an NDJSON file, flushing every 100 ms.
    pub fn new(url: &str, tables: &str) -> Job {
        let dir = tempfile::Builder::new()
            .prefix("dbmazz-job")
            .tempdir()
            .unwrap();
        let out = dir.path().join("out.ndjson");
        Job {
            env: vec![
                ("DATABASE_URL".into(), url.into()),
                ("TABLES".into(), tables.into()),
                ("SINK_TYPE".into(), "ndjson".into()),
                ("NDJSON_PATH".into(), out.display().to_string()),
                ("FLUSH_INTERVAL_MS".into(), "100".into()),
                ("RUST_LOG".into(), "info".into()),
                ("GRPC_PORT".into(), "off".into()),
            ],
            dir,
            runs: AtomicUsize::new(0),
        }
    }

    /// Sets (or replaces) an environment variable.
    pub fn env(mut self, key: &str, value: &str) -> Job {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.into(), value.into()));
        self
    }

    /// Unsets an environment variable.
    pub fn without(mut self, key: &str) -> Job {
        self.env.retain(|(k, _)| k != key);
        self
    }

    /// The NDJSON output path.
    pub fn out(&self) -> PathBuf {
        PathBuf::from(&self.env.iter().find(|(k, _)| k == "NDJSON_PATH").unwrap().1)
    }

    /// A scratch directory that lives as long as the job.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Starts the binary.
    pub fn spawn(&self) -> Proc {
        let n = self.runs.fetch_add(1, Ordering::Relaxed);
        let log = self.dir.path().join(format!("dbmazz-{n}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_dbmazz"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log)
                    .unwrap(),
            )
            .spawn()
            .expect("spawn dbmazz");
        Proc { child, log }
    }

    /// Starts the binary and waits until it streams.
    pub fn spawn_streaming(&self) -> Proc {
        let mut p = self.spawn();
        p.wait_for_log("streaming changes", Duration::from_secs(60));
        p
    }

    /// Every NDJSON line written so far.
    pub fn lines(&self) -> Vec<Json> {
        read_ndjson(&self.out())
    }
}

/// Parses an NDJSON file; every complete line must be a JSON object. A last line without its
/// newline is still being written by the sink and is left for the next read.
pub fn read_ndjson(path: &Path) -> Vec<Json> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = text.rfind('\n').map_or("", |end| &text[..end]);
    complete
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad NDJSON line {l:?}: {e}")))
        .collect()
}

/// A running (or finished) dbmazz process.
pub struct Proc {
    child: Child,
    log: PathBuf,
}

impl Proc {
    /// The process id.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// What it logged on stderr.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        unsafe { libc::kill(self.pid(), libc::SIGTERM) };
    }

    /// Sends SIGKILL and reaps the process.
    pub fn kill9(&mut self) {
        unsafe { libc::kill(self.pid(), libc::SIGKILL) };
        let _ = self.child.wait();
    }

    /// Whether the process has exited (it is reaped if so).
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Waits for the process to exit.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                panic!(
                    "dbmazz did not exit within {timeout:?}; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the log contains `needle`.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.log().contains(needle) {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "dbmazz exited ({status}) before logging {needle:?}; log:\n{}",
                    self.log()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "dbmazz did not log {needle:?} within {timeout:?}; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Peak resident memory (VmHWM) in KiB, while the process is alive.
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc status")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Polls `cond` every 50 ms until it holds, panicking with `what` after `timeout`.
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Applies NDJSON lines the way the README tells a consumer to, giving the final row per
/// `schema.table` and key. Unchanged TOAST columns keep their previous value; deletes remove the
/// row.
///
/// Changes (`insert`, `update`, `delete`, `truncate`) apply in file order, as the stream wrote
/// them, so a reordered or stale change still shows. A `snapshot` line is different: the copy
/// runs next to the stream, so a copied row (its version, `commit_lsn`, is the snapshot point)
/// can be written after a newer streamed change of its key, or after the delete or truncate that
/// removed it. It applies only if its version is at least that of the last change streamed for
/// its key and of the table's last truncate.
pub fn final_state(lines: &[Json]) -> BTreeMap<(String, String), BTreeMap<String, Json>> {
    let mut state: BTreeMap<(String, String), BTreeMap<String, Json>> = BTreeMap::new();
    // The commit LSN of the last change streamed per key (deletes included), and per table of
    // its last truncate.
    let mut streamed: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut truncated: BTreeMap<String, u64> = BTreeMap::new();
    for line in lines {
        let table = format!(
            "{}.{}",
            line["schema"].as_str().unwrap(),
            line["table"].as_str().unwrap()
        );
        let version = line["commit_lsn"].as_str().map(parse_lsn);
        let op = line["op"].as_str().unwrap();
        match op {
            "insert" | "update" | "snapshot" => {
                let key = (table.clone(), line["key"].to_string());
                if op == "snapshot" {
                    let copied_at = version
                        .unwrap_or_else(|| panic!("snapshot line without commit_lsn: {line}"));
                    let newer = |v: Option<&u64>| v.is_some_and(|&v| v > copied_at);
                    if newer(streamed.get(&key)) || newer(truncated.get(&table)) {
                        continue;
                    }
                } else if let Some(v) = version {
                    streamed.insert(key.clone(), v);
                }
                if let Some(old) = line.get("old_key") {
                    let old = (table.clone(), old.to_string());
                    state.remove(&old);
                    if let Some(v) = version {
                        streamed.insert(old, v);
                    }
                }
                let mut row = state.remove(&key).unwrap_or_default();
                for (k, v) in line["columns"].as_object().unwrap() {
                    row.insert(k.clone(), v.clone());
                }
                state.insert(key, row);
            }
            "delete" => {
                let key = (table, line["key"].to_string());
                state.remove(&key);
                if let Some(v) = version {
                    streamed.insert(key, v);
                }
            }
            "truncate" => {
                state.retain(|(t, _), _| *t != table);
                if let Some(v) = version {
                    truncated.insert(table, v);
                }
            }
            _ => {}
        }
    }
    state
}

/// `16/B374D848` as a number.
pub fn parse_lsn(text: &str) -> u64 {
    let (hi, lo) = text
        .split_once('/')
        .unwrap_or_else(|| panic!("not an LSN: {text:?}"));
    (u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A line of `public.t` keyed by `id`, at commit LSN `0/<version>`.
    fn line(op: &str, id: i64, v: i64, version: u64) -> Json {
        json!({"op": op, "schema": "public", "table": "t", "commit_lsn": format!("0/{version:X}"),
               "key": {"id": id}, "columns": {"id": id, "v": v}})
    }

    fn rows(lines: &[Json]) -> Vec<(i64, i64)> {
        final_state(lines)
            .values()
            .map(|r| (r["id"].as_i64().unwrap(), r["v"].as_i64().unwrap()))
            .collect()
    }

    #[test]
    fn a_copied_row_written_after_a_newer_change_of_its_key_does_not_bring_it_back() {
        // The copy's point is 0x100; a transaction committed at 0x200 updates key 2 and deletes
        // key 3, and the stream writes it before the copy's lines (what a slow copy does).
        let lines = [
            line("insert", 4, 0, 0x200),
            line("update", 2, 1, 0x200),
            line("delete", 3, 0, 0x200),
            line("snapshot", 1, 0, 0x100),
            line("snapshot", 2, 0, 0x100),
            line("snapshot", 3, 0, 0x100),
        ];
        assert_eq!(rows(&lines), [(1, 0), (2, 1), (4, 0)]);
    }

    #[test]
    fn a_copied_row_wins_over_older_changes_and_a_later_change_wins_over_it() {
        // A restart copies at a new point (0x300) while the stream replays from an older
        // checkpoint: the replayed change (0x200) is older than the copied row, the next one newer.
        let lines = [
            line("update", 1, 1, 0x200),
            line("snapshot", 1, 5, 0x300),
            line("update", 1, 6, 0x400),
        ];
        assert_eq!(rows(&lines), [(1, 6)]);
    }

    #[test]
    fn a_truncate_hides_older_copied_rows_only() {
        let lines = [
            json!({"op": "truncate", "schema": "public", "table": "t", "commit_lsn": "0/200"}),
            line("snapshot", 1, 0, 0x100),
            line("snapshot", 2, 0, 0x300),
        ];
        assert_eq!(rows(&lines), [(2, 0)]);
    }

    #[test]
    fn streamed_changes_apply_in_file_order_so_a_regression_shows() {
        let lines = [line("update", 1, 2, 0x300), line("update", 1, 1, 0x200)];
        assert_eq!(rows(&lines), [(1, 1)]);
    }
}
