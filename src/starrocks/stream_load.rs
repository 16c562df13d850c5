//! Stream Load over libcurl: one PUT per load, the FE's 307 followed by hand, and a decision for
//! every outcome (stream-load.md §5).
//!
//! libcurl runs on tokio's blocking pool, so the async runtime never blocks. Handles are pooled
//! and reset between loads, which keeps connections alive. Redirects are never followed
//! automatically: a 307's host goes through `STARROCKS_HOST_REWRITE` (and, when set,
//! `STARROCKS_REDIRECT_ALLOW`), and the same request, with the same label and credentials, is
//! sent there. An FE sends each load to some BE or CN of its
//! cluster, on whatever host that node registered with, so by default every redirect is followed.
//! `get_load_state` is redirected the same way when it reaches a follower FE. For
//! `STARROCKS_BE_PIN_MS` after a redirected load committed, loads go straight to that node (see
//! [`Pin`]).
//!
//! | outcome | decision |
//! |---|---|
//! | 307 + Location (≤ 3 hops; in `STARROCKS_REDIRECT_ALLOW` when that is set) | re-send there |
//! | pinned node: no answer, a redirect, or a definite refusal | re-send through the FE at once; unpin |
//! | pinned node: a transient refusal | transient, unpin (the retry asks the FE) |
//! | 401, 404/405, a body that is not JSON | definite |
//! | 5xx, refused/reset connection, timeout before a JSON result | transient: same label again |
//! | `Success`, `Publish Timeout` | committed |
//! | `Label Already Exists` + FINISHED | committed by an earlier attempt |
//! | `Label Already Exists` + RUNNING | poll `get_load_state`: VISIBLE/COMMITTED → committed, ABORTED → transient (resend), still running → transient |
//! | `Fail`/`FAILED` with a retryable message (concurrency limit, too many versions, shutting down, running-txn limit, status unknown, timeouts, no backend, the BE's memory limits) | transient |
//! | `Fail` with filtered rows (`NumberFilteredRows` > 0 or "too many filtered rows"): `strict_mode` and `max_filter_ratio: 0` make any rejected row fail the whole load | rejected: the sink isolates the rows (see `rejects.rs`) |
//! | any other `Fail` (bad column, partial-update misuse, access denied, …) | definite |

use std::cell::Cell;
use std::io::SeekFrom;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use curl::easy::{Easy, List, SeekResult};

use crate::config::StarRocksConfig;

/// How a load ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadOutcome {
    /// Committed (now or by an earlier attempt with the same label).
    Committed {
        /// Rows loaded by this attempt (0 when an earlier attempt committed).
        loaded_rows: u64,
    },
    /// Unknown or temporarily refused: send again with the same label later.
    Transient(String),
    /// Cannot succeed as is: stop the job.
    Definite(String),
    /// Rows of the body were rejected (conversion under `strict_mode`, length, NULL in a NOT
    /// NULL column); nothing of the load was applied.
    Rejected(Rejection),
}

/// How StarRocks rejected a load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The whole message, as a definite error would say it.
    pub message: String,
    /// Where the BE serves the rejected rows and reasons, when it said.
    pub error_url: Option<String>,
    /// Every row of the load was rejected (`NumberFilteredRows` = `NumberTotalRows`).
    pub all: bool,
}

/// One load: a JSON array body (or a CSV body) for one table with one column set.
#[derive(Debug, Clone)]
pub struct LoadRequest {
    /// Target table (in `STARROCKS_DB`).
    pub table: String,
    /// Deterministic label.
    pub label: String,
    /// `columns` header for a partial update; `None` for a full upsert.
    pub partial_columns: Option<String>,
    /// For a tab-separated CSV body of full rows: the `columns` header naming its fields.
    pub csv_columns: Option<std::sync::Arc<str>>,
    /// `[{...},{...}]`, or CSV lines (shared, so that a retried batch does not copy it).
    pub body: bytes::Bytes,
}

/// Sends loads to one StarRocks cluster.
pub struct StreamLoader {
    cfg: Arc<StarRocksConfig>,
    handles: Arc<Mutex<Vec<Easy>>>,
    /// The BE/CN the FE sent the last committed load to, and when (see [`Pin`]).
    pin: Arc<Mutex<Option<Pin>>>,
}

/// Where loads go without asking the FE, for `STARROCKS_BE_PIN_MS` after the FE chose it.
///
/// Why: the FE answers every load with a 307 before it reads the body, so libcurl cannot keep
/// that connection, and each load through the FE pays a fresh TCP connection and a redirect
/// (~170–200 µs of CPU on loopback, half the fixed cost of a load; BENCHMARKS.md). StarRocks
/// takes the same PUT straight at a BE's HTTP port (stream-load.md §1), and the BE checks the
/// credentials and privilege with the FE when it begins the transaction, exactly as after a
/// redirect. Asking the FE again once the pin is older than the setting keeps loads spread the
/// way the FE spreads them, and any sign that the node is gone sends the load through the FE
/// at once.
#[derive(Debug, Clone)]
struct Pin {
    /// `scheme://host:port` of the node, after `STARROCKS_HOST_REWRITE`.
    base: String,
    since: std::time::Instant,
}

/// What a load teaches about the pinned node.
#[derive(Debug, PartialEq, Eq)]
enum PinUpdate {
    Keep,
    Clear,
    /// The FE redirected this load to `scheme://host:port`, and it committed there.
    Set(String),
}

const MAX_HOPS: usize = 3;

impl StreamLoader {
    /// A loader for the configured cluster.
    pub fn new(cfg: Arc<StarRocksConfig>) -> Self {
        StreamLoader {
            cfg,
            handles: Arc::new(Mutex::new(Vec::new())),
            pin: Arc::new(Mutex::new(None)),
        }
    }

    /// Sends one load and decides what its outcome means. Gives the body back for reuse.
    pub async fn load(&self, req: LoadRequest) -> (LoadOutcome, bytes::Bytes) {
        let cfg = self.cfg.clone();
        let handles = self.handles.clone();
        let pin = self.pin.clone();
        let joined = tokio::task::spawn_blocking(move || {
            let mut easy = lock(&handles).pop().unwrap_or_else(Easy::new);
            let pinned = lock(&pin)
                .as_ref()
                .filter(|p| p.since.elapsed() < cfg.be_pin)
                .map(|p| p.base.clone());
            let (outcome, update) = load_blocking(&mut easy, &cfg, &req, pinned.as_deref());
            match update {
                PinUpdate::Keep => {}
                PinUpdate::Clear => *lock(&pin) = None,
                PinUpdate::Set(base) => {
                    *lock(&pin) = Some(Pin {
                        base,
                        since: std::time::Instant::now(),
                    })
                }
            }
            lock(&handles).push(easy);
            (outcome, req)
        })
        .await;
        match joined {
            Ok((LoadOutcome::Transient(msg), req)) if msg.starts_with(LABEL_RUNNING) => {
                let outcome = self.await_running_label(&req.table, &req.label).await;
                (outcome, req.body)
            }
            Ok((outcome, req)) => (outcome, req.body),
            Err(e) => (
                LoadOutcome::Definite(format!("the Stream Load task failed: {e}")),
                bytes::Bytes::new(),
            ),
        }
    }

    /// An earlier attempt with this label is still open: ask the FE how it ends.
    async fn await_running_label(&self, table: &str, label: &str) -> LoadOutcome {
        for _ in 0..30 {
            let cfg = self.cfg.clone();
            let label_owned = label.to_owned();
            let state = tokio::task::spawn_blocking(move || load_state(&cfg, &label_owned))
                .await
                .unwrap_or_else(|e| Err(e.into()));
            match state.as_deref() {
                Ok("VISIBLE" | "COMMITTED") => return LoadOutcome::Committed { loaded_rows: 0 },
                Ok("ABORTED") => {
                    return LoadOutcome::Transient(format!(
                        "load {label} of table '{table}' was aborted; sending it again"
                    ))
                }
                _ => tokio::time::sleep(Duration::from_secs(1)).await,
            }
        }
        LoadOutcome::Transient(format!(
            "load {label} of table '{table}' is still running after 30 s"
        ))
    }
}

const LABEL_RUNNING: &str = "label running:";

struct Response {
    code: u32,
    location: Option<String>,
    body: Vec<u8>,
}

/// Locks the handle pool or the pin. Neither can be left half-written (a handle is pushed or
/// popped whole, the pin replaced whole), so a poisoned lock is still usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Sends one load: to the pinned node when there is one, else (or when that node is gone or
/// refuses in a way the FE might not) through the FE.
fn load_blocking(
    easy: &mut Easy,
    cfg: &StarRocksConfig,
    req: &LoadRequest,
    pinned: Option<&str>,
) -> (LoadOutcome, PinUpdate) {
    let compressed;
    let body: &[u8] = if cfg.gzip {
        use std::io::Write as _;
        let mut enc = flate2::write::GzEncoder::new(
            Vec::with_capacity(req.body.len() / 4),
            flate2::Compression::fast(),
        );
        compressed = match enc.write_all(&req.body).and_then(|()| enc.finish()) {
            Ok(c) => c,
            Err(e) => {
                return (
                    LoadOutcome::Definite(format!(
                        "compressing the load body of table '{}' failed: {e}",
                        req.table
                    )),
                    PinUpdate::Keep,
                )
            }
        };
        &compressed
    } else {
        &req.body
    };
    let path = format!("/api/{}/{}/_stream_load", cfg.database, req.table);
    if let Some(base) = pinned {
        let url = format!("{base}{path}");
        match put(easy, cfg, req, body, &url) {
            // No answer: the node may be gone. The same label through the FE is safe; if the
            // node did take the load, the FE says the label exists.
            Err(e) => {
                tracing::info!(node = %base, table = %req.table, label = %req.label, error = %e,
                    "the pinned StarRocks node did not answer; sending the load through the FE");
            }
            Ok(resp) if is_redirect(resp.code) => {
                tracing::info!(node = %base, table = %req.table, label = %req.label, code = resp.code,
                    "the pinned StarRocks node redirected a load; sending it through the FE");
            }
            Ok(resp) => match decide(&req.table, &req.label, resp.code, &resp.body) {
                outcome @ (LoadOutcome::Committed { .. } | LoadOutcome::Rejected(_)) => {
                    return (outcome, PinUpdate::Keep)
                }
                // The node's own answer (busy, memory, label still running): it stands, and the
                // retry asks the FE where to go.
                outcome @ LoadOutcome::Transient(_) => return (outcome, PinUpdate::Clear),
                // A refusal the FE might not give (the node left the cluster, the port now
                // serves something else): the FE decides.
                LoadOutcome::Definite(msg) => {
                    tracing::info!(node = %base, table = %req.table, label = %req.label,
                        error = %msg, "the pinned StarRocks node refused a load; sending it through the FE");
                }
            },
        }
    }
    let mut node = None;
    let outcome = through_fe(easy, cfg, req, body, &path, &mut node);
    let update = match (&outcome, node) {
        (LoadOutcome::Committed { .. }, Some(node)) if !cfg.be_pin.is_zero() => {
            PinUpdate::Set(node)
        }
        _ => PinUpdate::Clear,
    };
    (outcome, update)
}

/// Sends a load to the FE and follows its redirects. `node` ends as the `scheme://host:port`
/// that answered, when the FE redirected the load.
fn through_fe(
    easy: &mut Easy,
    cfg: &StarRocksConfig,
    req: &LoadRequest,
    body: &[u8],
    path: &str,
    node: &mut Option<String>,
) -> LoadOutcome {
    let mut url = format!("{}{path}", cfg.url);
    for _hop in 0..=MAX_HOPS {
        let resp = match put(easy, cfg, req, body, &url) {
            Ok(r) => r,
            Err(e) if is_certificate_error(&e) => {
                return LoadOutcome::Definite(format!(
                    "Stream Load of table '{}' to {url}: the server's TLS certificate was not \
                     accepted ({e}); point STARROCKS_CA_FILE at the CA that signed it",
                    req.table
                ))
            }
            Err(e) => {
                return LoadOutcome::Transient(format!(
                    "Stream Load of table '{}' (label {}) got no answer: {e}",
                    req.table, req.label
                ))
            }
        };
        if is_redirect(resp.code) {
            let Some(location) = resp.location else {
                return LoadOutcome::Definite(format!(
                    "StarRocks answered {} without a Location for table '{}'",
                    resp.code, req.table
                ));
            };
            match follow(cfg, &location) {
                Ok(next) => {
                    if next.downgraded
                        && !DOWNGRADE_LOGGED.swap(true, std::sync::atomic::Ordering::Relaxed)
                    {
                        tracing::warn!(
                            location = %next.url,
                            "StarRocks sends loads from the https FE to a plain-http BE/CN port \
                             (StarRocks' BEs have no TLS); keep that network trusted, or put TLS in \
                             front of the BEs and map them with STARROCKS_HOST_REWRITE"
                        );
                    }
                    url = next.url;
                    *node = Some(origin(&url).to_owned());
                    continue;
                }
                Err(e) => return LoadOutcome::Definite(e.to_string()),
            }
        }
        return decide(&req.table, &req.label, resp.code, &resp.body);
    }
    LoadOutcome::Definite(format!(
        "Stream Load of table '{}' was redirected more than {MAX_HOPS} times",
        req.table
    ))
}

/// An HTTP redirect status, which the loader follows by hand.
fn is_redirect(code: u32) -> bool {
    matches!(code, 301 | 302 | 303 | 307 | 308)
}

/// `scheme://host:port` of a URL: everything before the path.
fn origin(url: &str) -> &str {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    match url[after_scheme..].find(['/', '?']) {
        Some(i) => &url[..after_scheme + i],
        None => url,
    }
}

/// Where a 307 sends a load: the location after `STARROCKS_HOST_REWRITE`. The operator chose
/// the FE, so wherever it sends loads is followed, unless `STARROCKS_REDIRECT_ALLOW` narrows it.
/// StarRocks always redirects to its BEs' plain-HTTP port (`RestBaseAction.redirectTo` builds an
/// `http` URI), so the location's scheme is kept: an https FE (behind a TLS terminator) still
/// sends loads to http BEs, and dbmazz says so once in the log.
#[derive(Debug, PartialEq, Eq)]
struct Redirect {
    url: String,
    /// The FE was reached over https and the location is http.
    downgraded: bool,
}

/// Whether the https → http redirect was logged already.
static DOWNGRADE_LOGGED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// A redirect that is not followed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedirectError {
    /// The `Location` is not a URL.
    #[error("StarRocks redirected to an unusable location {0:?}")]
    Unusable(String),
    /// The host is outside `STARROCKS_REDIRECT_ALLOW`.
    #[error(
        "StarRocks redirected a load to {0}, which is not in STARROCKS_REDIRECT_ALLOW; \
         add it there (or map it with STARROCKS_HOST_REWRITE=from=to, or unset \
         STARROCKS_REDIRECT_ALLOW to follow the FE wherever it sends loads)"
    )]
    NotAllowed(String),
}

/// `get_load_state` gave no state, or an error log could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LoadStateError {
    /// The request failed.
    #[error(transparent)]
    Http(#[from] curl::Error),
    /// A redirect without a `Location`.
    #[error("get_load_state answered {0} without a Location")]
    NoLocation(u32),
    /// A redirect that is not followed.
    #[error(transparent)]
    Redirect(#[from] RedirectError),
    /// The answer is not JSON.
    #[error("get_load_state answered HTTP {code} without JSON: {source}")]
    NotJson {
        /// HTTP status.
        code: u32,
        /// Why.
        source: serde_json::Error,
    },
    /// Too many redirects.
    #[error("get_load_state was redirected more than {MAX_HOPS} times")]
    TooManyHops,
    /// An HTTP status other than 200.
    #[error("HTTP {0}")]
    Status(u32),
    /// The blocking task did not finish.
    #[error("the get_load_state task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

fn follow(cfg: &StarRocksConfig, location: &str) -> Result<Redirect, RedirectError> {
    let (their_scheme, rest) = location
        .split_once("://")
        .ok_or_else(|| RedirectError::Unusable(location.to_owned()))?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !p.ends_with(']') => (h, Some(p)),
        _ => (authority, None),
    };
    let host = cfg
        .host_rewrite
        .iter()
        .find(|(from, _)| from == host)
        .map_or(host, |(_, to)| to.as_str());
    if !cfg.redirect_allow.is_empty() && !cfg.redirect_allow.iter().any(|h| h == host) {
        return Err(RedirectError::NotAllowed(host.to_owned()));
    }
    let ours = cfg.url.split_once("://").map_or("http", |(s, _)| s);
    let scheme = their_scheme.to_ascii_lowercase();
    Ok(Redirect {
        url: match port {
            Some(p) => format!("{scheme}://{host}:{p}{path}"),
            None => format!("{scheme}://{host}{path}"),
        },
        downgraded: ours.eq_ignore_ascii_case("https") && scheme == "http",
    })
}

fn put(
    easy: &mut Easy,
    cfg: &StarRocksConfig,
    req: &LoadRequest,
    body_bytes: &[u8],
    url: &str,
) -> Result<Response, curl::Error> {
    easy.reset();
    easy.url(url)?;
    tls_options(easy, cfg)?;
    easy.upload(true)?;
    easy.in_filesize(body_bytes.len() as u64)?;
    easy.username(&cfg.user)?;
    easy.password(cfg.password.expose())?;
    easy.follow_location(false)?;
    easy.connect_timeout(Duration::from_secs(10))?;
    // The client must wait longer than the server's own load timeout.
    easy.timeout(cfg.load_timeout + Duration::from_secs(60))?;
    stall_options(easy, cfg)?;
    let mut headers = List::new();
    headers.append("Expect: 100-continue")?;
    headers.append(&format!("label: {}", req.label))?;
    if let Some(columns) = &req.csv_columns {
        // Rows come without quoting or escapes (see `SnapshotBody`), NULL as `\N`.
        headers.append("format: csv")?;
        headers.append("column_separator: \\x09")?;
        headers.append(&format!("columns: {columns}"))?;
    } else {
        headers.append("format: json")?;
        headers.append("strip_outer_array: true")?;
        headers.append("ignore_json_size: true")?;
    }
    // A value StarRocks cannot convert is a rejection dbmazz sees, not a silent NULL; and one
    // rejected row fails the load, so no row is dropped unnoticed.
    headers.append("strict_mode: true")?;
    headers.append("max_filter_ratio: 0")?;
    headers.append("merge_condition: dbmazz_cdc_version")?;
    headers.append(&format!("timeout: {}", cfg.load_timeout.as_secs()))?;
    if cfg.gzip {
        headers.append("compression: gzip")?;
    }
    if let Some(columns) = &req.partial_columns {
        headers.append("partial_update: true")?;
        headers.append("partial_update_mode: row")?;
        headers.append(&format!("columns: {columns}"))?;
    }
    easy.http_headers(headers)?;

    let pos = Cell::new(0usize);
    let mut body = Vec::new();
    let mut location = None;
    {
        let mut transfer = easy.transfer();
        transfer.read_function(|buf| {
            let start = pos.get().min(body_bytes.len());
            let n = buf.len().min(body_bytes.len() - start);
            buf[..n].copy_from_slice(&body_bytes[start..start + n]);
            pos.set(start + n);
            Ok(n)
        })?;
        transfer.seek_function(|from| match from {
            SeekFrom::Start(offset) => {
                pos.set(offset as usize);
                SeekResult::Ok
            }
            _ => SeekResult::CantSeek,
        })?;
        capture_answer(&mut transfer, &mut body, &mut location)?;
        transfer.perform()?;
    }
    Ok(Response {
        code: easy.response_code()?,
        location,
        body,
    })
}

/// Trust settings for `https://` addresses: the configured CA file, else the system's store.
/// Bounds on a peer that goes silent without closing. Keepalives find a dead host while dbmazz
/// waits for the answer (everything sent is acknowledged, so TCP itself would wait forever);
/// the low-speed limit finds a path that stopped delivering while the body is sent (TCP
/// retransmits, or a proxy's window stays shut, for many minutes). Either ends the attempt
/// with a transient error, and the retry reuses the label.
fn stall_options(easy: &mut Easy, cfg: &StarRocksConfig) -> Result<(), curl::Error> {
    easy.tcp_keepalive(true)?;
    easy.tcp_keepidle(Duration::from_secs(30))?;
    easy.tcp_keepintvl(Duration::from_secs(10))?;
    easy.low_speed_limit(1)?;
    easy.low_speed_time(cfg.stall_timeout)
}

fn tls_options(easy: &mut Easy, cfg: &StarRocksConfig) -> Result<(), curl::Error> {
    match &cfg.ca_file {
        Some(path) => easy.cainfo(path),
        None => easy.ssl_options(curl::easy::SslOpt::new().native_ca(true)),
    }
}

/// A TLS failure that retrying will not fix: the certificate did not verify.
fn is_certificate_error(e: &curl::Error) -> bool {
    e.is_peer_failed_verification()
        || e.is_ssl_certproblem()
        || e.is_ssl_cacert_badfile()
        || e.is_ssl_issuer_error()
}

fn get_field<'a>(v: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    v.as_object()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

fn get_str<'a>(v: &'a serde_json::Value, name: &str) -> &'a str {
    get_field(v, name).and_then(|v| v.as_str()).unwrap_or("")
}

/// Messages of loads refused for lack of memory on the BE (the process, the load or query pool):
/// memory frees up, so the same load later can succeed. Not the per-query limit, which the same
/// body hits again.
const MEMORY: [&str; 3] = [
    "mem usage has exceed the limit",
    "exceed limit",
    "memory limit exceeded",
];

const RETRYABLE: [&str; 9] = [
    "cuncurrent limit",
    "concurrent limit",
    "too many versions",
    "service is shutting down",
    "current running txns on db",
    "transaction status unknown",
    "timeout",
    "no backend alive",
    "timed out",
];

/// The decision table for one HTTP answer.
pub fn decide(table: &str, label: &str, code: u32, body: &[u8]) -> LoadOutcome {
    let what = format!("Stream Load of table '{table}' (label {label})");
    if code == 401 || code == 403 {
        return LoadOutcome::Definite(format!(
            "{what} was refused ({code}): check STARROCKS_USER/STARROCKS_PASS and the INSERT privilege"
        ));
    }
    if code >= 500 {
        return LoadOutcome::Transient(format!("{what}: StarRocks answered HTTP {code}"));
    }
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(body) else {
        return LoadOutcome::Definite(format!(
            "{what}: HTTP {code} with a body that is not JSON; is STARROCKS_URL an FE (:8030) or BE (:8040) HTTP port?"
        ));
    };
    if code != 200 {
        return LoadOutcome::Definite(format!(
            "{what}: HTTP {code}: {}",
            get_str(&json, "message")
        ));
    }
    let status = get_str(&json, "status");
    let message = [get_str(&json, "message"), get_str(&json, "msg")].join(" ");
    let message = message.trim();
    match status {
        // Stream Load never answers `OK` (that is the transaction API's word); an unknown
        // status is judged by its message below.
        "Success" | "Publish Timeout" => LoadOutcome::Committed {
            loaded_rows: get_field(&json, "NumberLoadedRows")
                .and_then(|v| v.as_u64())
                .unwrap_or(0),
        },
        "Label Already Exists" => match get_str(&json, "ExistingJobStatus") {
            "FINISHED" => LoadOutcome::Committed { loaded_rows: 0 },
            _ => LoadOutcome::Transient(format!("{LABEL_RUNNING} {what} is still running")),
        },
        _ => {
            let lower = message.to_lowercase();
            let memory =
                MEMORY.iter().any(|m| lower.contains(m)) && !lower.contains("single query");
            let filtered = get_field(&json, "NumberFilteredRows")
                .and_then(|v| v.as_u64())
                .unwrap_or(0);
            if memory || RETRYABLE.iter().any(|m| lower.contains(m)) {
                LoadOutcome::Transient(format!("{what}: {message}"))
            } else if filtered > 0 || lower.contains("too many filtered rows") {
                let error_url = get_str(&json, "ErrorURL");
                let total = get_field(&json, "NumberTotalRows")
                    .and_then(|v| v.as_u64())
                    .unwrap_or(0);
                LoadOutcome::Rejected(Rejection {
                    message: format!(
                        "{what} failed: {message} ({filtered} of {total} rows rejected); nothing \
                         of it was applied"
                    ),
                    error_url: (!error_url.is_empty()).then(|| error_url.to_owned()),
                    all: total > 0 && filtered == total,
                })
            } else {
                let error_url = get_str(&json, "ErrorURL");
                let hint = if error_url.is_empty() {
                    String::new()
                } else {
                    format!("; rejected rows and reasons: {error_url}")
                };
                LoadOutcome::Definite(format!(
                    "{what} failed: {message}{hint}; nothing of it was applied, the job stops \
                     so no row is silently dropped"
                ))
            }
        }
    }
}

/// `GET /api/{db}/get_load_state?label=L` → the label's state. A follower FE answers with a 307
/// to the leader, which is followed like a load's redirect.
pub fn load_state(cfg: &StarRocksConfig, label: &str) -> Result<String, LoadStateError> {
    let mut easy = Easy::new();
    let mut url = format!(
        "{}/api/{}/get_load_state?label={label}",
        cfg.url, cfg.database
    );
    for _hop in 0..=MAX_HOPS {
        let mut body = Vec::new();
        let mut location = None;
        let mut run = || -> Result<u32, curl::Error> {
            easy.reset();
            easy.url(&url)?;
            tls_options(&mut easy, cfg)?;
            easy.username(&cfg.user)?;
            easy.password(cfg.password.expose())?;
            easy.follow_location(false)?;
            easy.timeout(Duration::from_secs(10))?;
            easy.connect_timeout(Duration::from_secs(10))?;
            {
                let mut transfer = easy.transfer();
                capture_answer(&mut transfer, &mut body, &mut location)?;
                transfer.perform()?;
            }
            easy.response_code()
        };
        let code = run()?;
        if is_redirect(code) {
            let location = location.ok_or(LoadStateError::NoLocation(code))?;
            url = follow(cfg, &location)?.url;
            continue;
        }
        let json: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|source| LoadStateError::NotJson { code, source })?;
        return Ok(get_str(&json, "state").to_owned());
    }
    Err(LoadStateError::TooManyHops)
}

/// Most of an error log dbmazz reads: the first rows are what it needs.
const ERROR_LOG_MAX: usize = 256 * 1024;

/// `GET <ErrorURL>`: the rejected rows and reasons a BE kept for a load (its host mapped like a
/// redirect's, see [`follow`]). Reads at most the first 256 KiB.
pub fn error_log(cfg: &StarRocksConfig, error_url: &str) -> Result<String, LoadStateError> {
    let url = follow(cfg, error_url)?.url;
    let mut easy = Easy::new();
    let mut body = Vec::new();
    let code = {
        easy.url(&url)?;
        tls_options(&mut easy, cfg)?;
        easy.username(&cfg.user)?;
        easy.password(cfg.password.expose())?;
        easy.follow_location(false)?;
        easy.timeout(Duration::from_secs(10))?;
        easy.connect_timeout(Duration::from_secs(10))?;
        let mut transfer = easy.transfer();
        transfer.write_function(|data| {
            let room = ERROR_LOG_MAX.saturating_sub(body.len());
            body.extend_from_slice(&data[..data.len().min(room)]);
            // Returning less than given ends the transfer once the cap is reached.
            Ok(if room == 0 { 0 } else { data.len() })
        })?;
        let performed = transfer.perform();
        drop(transfer);
        match performed {
            Ok(()) => easy.response_code()?,
            Err(e) if e.is_write_error() && body.len() >= ERROR_LOG_MAX => 200,
            Err(e) => return Err(e.into()),
        }
    };
    if code != 200 {
        return Err(LoadStateError::Status(code));
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// Collects an answer's body and its `Location` header, if any.
fn capture_answer<'d>(
    transfer: &mut curl::easy::Transfer<'_, 'd>,
    body: &'d mut Vec<u8>,
    location: &'d mut Option<String>,
) -> Result<(), curl::Error> {
    transfer.write_function(move |data| {
        body.extend_from_slice(data);
        Ok(data.len())
    })?;
    transfer.header_function(move |line| {
        if let Some(value) = header_value(line, "location") {
            *location = Some(value);
        }
        true
    })
}

/// The value of header `name` if `line` is that header.
fn header_value(line: &[u8], name: &str) -> Option<String> {
    let line = std::str::from_utf8(line).ok()?;
    let (n, value) = line.split_once(':')?;
    n.trim()
        .eq_ignore_ascii_case(name)
        .then(|| value.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decide_json(code: u32, body: &str) -> LoadOutcome {
        decide("orders", "l1", code, body.as_bytes())
    }

    #[test]
    fn decision_table_matches_the_spec() {
        assert_eq!(
            decide_json(200, r#"{"Status":"Success","NumberLoadedRows":3}"#),
            LoadOutcome::Committed { loaded_rows: 3 }
        );
        assert!(matches!(
            decide_json(200, r#"{"Status":"Publish Timeout"}"#),
            LoadOutcome::Committed { .. }
        ));
        assert!(matches!(
            decide_json(
                200,
                r#"{"Status":"Label Already Exists","ExistingJobStatus":"FINISHED"}"#
            ),
            LoadOutcome::Committed { loaded_rows: 0 }
        ));
        assert!(matches!(
            decide_json(200, r#"{"Status":"Label Already Exists","ExistingJobStatus":"RUNNING"}"#),
            LoadOutcome::Transient(m) if m.starts_with(LABEL_RUNNING)
        ));
        assert!(matches!(
            decide_json(503, "busy"),
            LoadOutcome::Transient(_)
        ));
        assert!(matches!(decide_json(401, "{}"), LoadOutcome::Definite(_)));
        assert!(matches!(
            decide_json(200, "<html>"),
            LoadOutcome::Definite(_)
        ));
        assert!(matches!(
            decide_json(
                200,
                r#"{"Status":"Fail","Message":"Stream Load exceed http cuncurrent limit"}"#
            ),
            LoadOutcome::Transient(_)
        ));
        assert!(matches!(
            decide_json(
                200,
                r#"{"Status":"Fail","Message":"Too many versions. tablet_id: 1"}"#
            ),
            LoadOutcome::Transient(_)
        ));
        match decide_json(
            200,
            r#"{"Status":"Fail","Message":"too many filtered rows","ErrorURL":"http://be/api/_load_error_log?file=x"}"#,
        ) {
            LoadOutcome::Rejected(Rejection {
                message,
                error_url,
                all: false,
            }) => {
                assert!(
                    message.contains("orders")
                        && message.contains("l1")
                        && message.contains("too many filtered rows")
                );
                assert_eq!(
                    error_url.as_deref(),
                    Some("http://be/api/_load_error_log?file=x")
                );
            }
            other => panic!("{other:?}"),
        }
        // Filtered rows count even when the message words it otherwise.
        assert!(matches!(
            decide_json(
                200,
                r#"{"Status":"Fail","Message":"data quality error","NumberTotalRows":3,"NumberFilteredRows":1}"#
            ),
            LoadOutcome::Rejected(Rejection {
                error_url: None,
                all: false,
                ..
            })
        ));
        assert!(matches!(
            decide_json(
                200,
                r#"{"Status":"Fail","Message":"too many filtered rows","NumberTotalRows":2,"NumberFilteredRows":2}"#
            ),
            LoadOutcome::Rejected(Rejection { all: true, .. })
        ));
        assert!(matches!(
            decide_json(
                200,
                r#"{"Status":"Fail","Message":"Unknown column 'x' in 't'"}"#
            ),
            LoadOutcome::Definite(_)
        ));
        assert!(matches!(
            decide_json(200, r#"{"status":"FAILED","msg":"No backend alive."}"#),
            LoadOutcome::Transient(_)
        ));
    }

    fn cfg() -> StarRocksConfig {
        StarRocksConfig {
            redirect_allow: vec!["fe".into(), "be1".into()],
            host_rewrite: vec![("127.0.0.1".into(), "fe".into())],
            ..crate::starrocks::config::tests_support::starrocks_config()
        }
    }

    #[test]
    fn redirects_are_rewritten_and_checked_against_the_allowlist() {
        let c = cfg();
        assert_eq!(
            follow(&c, "http://127.0.0.1:8040/api/d/t/_stream_load?x=1")
                .unwrap()
                .url,
            "http://fe:8040/api/d/t/_stream_load?x=1"
        );
        assert_eq!(
            follow(&c, "http://be1:8040/p").unwrap().url,
            "http://be1:8040/p"
        );
        let err = follow(&c, "http://evil:8040/p").unwrap_err();
        assert!(err.to_string().contains("STARROCKS_REDIRECT_ALLOW"));
    }

    #[test]
    fn the_pinned_node_is_the_origin_of_the_url_the_fe_sent_the_load_to() {
        assert_eq!(
            origin("http://10.0.0.7:8040/api/d/t/_stream_load"),
            "http://10.0.0.7:8040"
        );
        assert_eq!(
            origin("http://[::1]:8040/api/d/t/_stream_load"),
            "http://[::1]:8040"
        );
        assert_eq!(origin("http://be:8040?x=1"), "http://be:8040");
        assert_eq!(origin("http://be:8040"), "http://be:8040");
    }

    #[test]
    fn without_an_allowlist_every_redirect_is_followed() {
        let mut c = cfg();
        c.redirect_allow.clear();
        assert_eq!(
            follow(&c, "http://10.0.0.7:8040/api/d/t/_stream_load").unwrap(),
            Redirect {
                url: "http://10.0.0.7:8040/api/d/t/_stream_load".into(),
                downgraded: false
            }
        );
        c.url = "https://fe:8030".into();
        assert_eq!(
            follow(&c, "http://be2.internal:8040/p").unwrap(),
            Redirect {
                url: "http://be2.internal:8040/p".into(),
                downgraded: true
            },
            "StarRocks' BEs speak plain HTTP; the downgrade is noted"
        );
        assert_eq!(
            follow(&c, "HTTPS://[::1]/p").unwrap().url,
            "https://[::1]/p",
            "a bracketed IPv6 host without a port"
        );
    }

    #[test]
    fn memory_limits_are_transient_but_the_json_size_limit_is_not() {
        for message in [
            "Memory of process exceed limit. Start execute plan fragment. Backend: 10.0.0.1, Used: 6226410376, Limit: 6184752905. Mem usage has exceed the limit of BE",
            "Memory of load exceed limit. Backend: 10.0.0.1, Used: 1, Limit: 1. Mem usage has exceed the limit of load",
            "Mem usage has exceed the limit of BE",
            "Memory limit exceeded: Mem usage has exceed the limit of query pool",
        ] {
            let body = serde_json::json!({"Status": "Fail", "Message": message}).to_string();
            assert!(
                matches!(decide_json(200, &body), LoadOutcome::Transient(_)),
                "{message}"
            );
        }
        let body = serde_json::json!({"Status": "Fail", "Message": "The file size 200 exceeds the limit 100, adjust the FE configuration json_file_size_limit if you are sure you want to perform the operation"}).to_string();
        assert!(matches!(decide_json(200, &body), LoadOutcome::Definite(_)));
    }

    #[test]
    fn ok_is_not_a_stream_load_success() {
        assert!(!matches!(
            decide_json(200, r#"{"Status":"OK","Message":""}"#),
            LoadOutcome::Committed { .. }
        ));
    }
}
