//! The BE HTTP endpoint: the Stream Load itself, in StarRocks' phase order.
//!
//! ```text
//! header phase (before 100 Continue; failure = final JSON, body unread, close)
//!   auth parse · body size · format · JSON size · timeout · compression
//!   begin txn: password · database · table · label format · label in use  → PREPARE
//!   plan: strict_mode · partial_update · columns · merge_condition       (failure → ABORTED)
//! 100 Continue · body (Content-Length must match, or chunked)
//! write: decode + convert in order · filter ratio · apply in one SQLite transaction
//! answer: Success | Publish Timeout | Label Already Exists | Fail   (always HTTP 200)
//! ```
//!
//! Fault switches (see `faults`) cut in at the matching points of this sequence.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::catalog::TableDef;
use crate::double::Double;
use crate::faults::{Fired, MemTracker};
use crate::http::{BodyError as HttpBodyError, Conn, Request, Response};
use crate::labels::TxnState;
use crate::load::{self, status, Decoded, HeaderSource, LoadOptions, LoadPlan, LoadResult};

/// What the connection loop does after a handler answered.
pub enum Next {
    KeepAlive,
    Close,
    /// The body was not read: half-close and drain so the answer is not lost.
    CloseUnread,
    /// Drop the socket without a response (already decided by a fault).
    Drop,
}

/// `be_http_num_workers - 1`, the number in the concurrency-limit message.
const HTTP_WORKERS_LIMIT: u32 = 47;

/// Serves BE number `be` (0-based; it only decides the host in `ErrorURL`).
pub async fn serve(
    listener: TcpListener,
    double: Arc<Double>,
    be: usize,
    shutdown: watch::Receiver<bool>,
) {
    crate::double::accept_loop(listener, shutdown, "be", move |stream| {
        let double = double.clone();
        async move { handle(Conn::new(stream), double, be).await }
    })
    .await;
}

async fn handle(mut conn: Conn, double: Arc<Double>, be: usize) {
    loop {
        let req = match conn.read_request().await {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(e) => {
                tracing::debug!(error = %e, "be: bad request");
                let _ = conn
                    .respond(&Response::text(400, "bad request").closing())
                    .await;
                return;
            }
        };
        let path = req.path.clone();
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        let next = match (req.method.as_str(), parts.as_slice()) {
            ("PUT", ["api", db, table, "_stream_load"]) => {
                stream_load(&mut conn, &double, &req, db, table, be).await
            }
            (_, ["api", "transaction", op]) => {
                crate::txn::handle(&mut conn, &double, &req, op).await
            }
            ("GET", ["api", "_load_error_log"]) => {
                let text = req.query_param("file").and_then(|f| {
                    double
                        .error_logs
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .get(f)
                        .map(str::to_owned)
                });
                let resp = match text {
                    Some(t) => Response::text(200, t),
                    None => Response::text(404, "error log not found"),
                };
                send(&mut conn, resp, Next::KeepAlive).await
            }
            ("GET", ["api", "health"]) => {
                send(
                    &mut conn,
                    Response::json(200, r#"{"status": "OK","msg": "To Be Added"}"#),
                    Next::KeepAlive,
                )
                .await
            }
            _ => {
                let next = if req.has_body() {
                    Next::CloseUnread
                } else {
                    Next::KeepAlive
                };
                send(&mut conn, Response::text(404, "Not Found"), next).await
            }
        };
        match next {
            Next::KeepAlive if req.keep_alive() => {}
            Next::KeepAlive | Next::Close => return conn.close().await,
            Next::CloseUnread => return conn.close_unread().await,
            Next::Drop => {
                double.stats.update(|s| s.connections_dropped += 1);
                return conn.abort();
            }
        }
    }
}

async fn send(conn: &mut Conn, resp: Response, next: Next) -> Next {
    match conn.respond(&resp).await {
        Ok(()) => next,
        Err(_) => Next::Close,
    }
}

/// Writes a load answer (HTTP 200, pretty JSON) and counts it.
pub async fn reply(conn: &mut Conn, double: &Double, result: &LoadResult, next: Next) -> Next {
    double.stats.load(
        result.status,
        result.number_total_rows,
        result.number_loaded_rows,
        result.number_filtered_rows,
        result.load_bytes,
    );
    let mut resp = Response::text(200, load::pretty_json(result));
    if matches!(next, Next::Close | Next::CloseUnread) {
        resp = resp.closing();
    }
    send(conn, resp, next).await
}

/// A bare 5xx as an overloaded or broken BE would send, with no JSON.
pub async fn reply_5xx(conn: &mut Conn, double: &Double, code: u16) {
    double.stats.update(|s| s.http_5xx_sent += 1);
    let resp = Response::text(code, format!("injected HTTP {code} by starrocks-double")).closing();
    let _ = conn.respond(&resp).await;
}

/// Header checks up to begin-txn that need no catalog: auth presence, size, options.
pub fn header_checks(double: &Double, req: &Request) -> Result<LoadOptions, String> {
    if crate::fe::basic_auth(req).is_none() {
        return Err("no valid Basic authorization".into());
    }
    let content_length = req.content_length().map_err(|e| e.to_string())?;
    let max = double
        .config
        .streaming_load_max_mb
        .saturating_mul(1024 * 1024);
    if let Some(len) = content_length {
        if len > max {
            return Err(format!(
                "body size {len} exceed limit: {max}. You can increase the limit by setting streaming_load_max_mb in be.conf."
            ));
        }
    }
    let version = &double.config.sr_version;
    let mut opts = LoadOptions::from_headers(
        req,
        content_length,
        double.config.load_timeout_second,
        version.at_least(3, 2, 7),
    )
    .map_err(|e| e.0)?;
    opts.datetime_micros = version.at_least(3, 3, 5);
    Ok(opts)
}

/// The FE side of begin-txn: password, database, table, label. On success the label is
/// PREPARE and its txn id is returned.
pub fn begin(
    double: &Double,
    req: &Request,
    db: &str,
    table: &str,
    label: &str,
    fired: &Fired,
) -> Result<(Arc<TableDef>, i64), Box<LoadResult>> {
    let fail = |msg: String| Box::new(LoadResult::fail(label, -1, msg));
    if let Err(msg) = crate::fe::authorized(double, req) {
        return Err(fail(msg));
    }
    if !load::label_is_valid(label) {
        return Err(fail(format!(
            "Label format error. regex: ^[-_A-Za-z0-9]{{1,128}}$, label: {label}"
        )));
    }
    double.evict_labels();
    let mut store = double.store();
    let Some(database) = store.catalog.db(db) else {
        return Err(fail(format!("unknown database, database={db}")));
    };
    let db_id = database.id;
    let Some(t) = store.catalog.table(db, table).cloned() else {
        return Err(fail(format!("unknown table, table={table}")));
    };
    if fired.running_txn_limit {
        return Err(fail(format!(
            "current running txns on db {db_id} is 1000, larger than limit 1000"
        )));
    }
    if let Some(state) = store.labels.blocking_state(db, label) {
        return Err(Box::new(LoadResult {
            txn_id: -1,
            label: label.to_owned(),
            status: status::LABEL_ALREADY_EXISTS,
            existing_job_status: Some(state.existing_job_status()),
            message: format!("Label [{label}] has already been used."),
            ..LoadResult::default()
        }));
    }
    let txn_id = store
        .begin_label(db, table, label)
        .map_err(|e| fail(format!("internal error: {e}")))?;
    Ok((t, txn_id))
}

/// Moves a label to ABORTED (a failed load's label can be reused).
pub fn abort_label(double: &Double, db: &str, label: &str) {
    if let Err(e) = double.store().set_label_state(db, label, TxnState::Aborted) {
        tracing::error!(error = %e, "cannot abort label");
    }
}

/// Reads the body within the load's timeout; the errors are the BE's messages.
pub async fn read_body(
    conn: &mut Conn,
    double: &Double,
    req: &Request,
    opts: &LoadOptions,
    started: Instant,
) -> Result<Vec<u8>, String> {
    let max = double
        .config
        .streaming_load_max_mb
        .saturating_mul(1024 * 1024);
    let deadline = started + Duration::from_secs(opts.timeout_s.max(1));
    match conn.read_body(req, max, deadline).await {
        Ok(b) if opts.gzip => {
            use std::io::Read;
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&b[..])
                .take(max + 1)
                .read_to_end(&mut out)
                .map_err(|e| format!("failed to decompress the gzip body: {e}"))?;
            if out.len() > max as usize {
                return Err(format!("body exceed max size: {max}."));
            }
            Ok(out)
        }
        Ok(b) => Ok(b),
        Err(HttpBodyError::Short { .. }) | Err(HttpBodyError::Io(_)) => {
            Err("receive body don't equal with body bytes".into())
        }
        Err(HttpBodyError::TooLarge(max)) => Err(format!(
            "body exceed max size: {max}. You can increase the limit by setting streaming_load_max_mb in be.conf."
        )),
        Err(HttpBodyError::BadChunk) => Err("receive body don't equal with body bytes (malformed chunked encoding)".into()),
    }
}

/// Decodes and converts a body off the async threads; `--discard` only counts.
pub async fn decode(
    double: &Arc<Double>,
    body: Vec<u8>,
    opts: &LoadOptions,
    plan: &LoadPlan,
    table: &Arc<TableDef>,
    fired: &Fired,
) -> Result<Decoded, String> {
    let discard = double.config.discard;
    let strict_delete = double.config.strict_delete_rows;
    let reject_every = fired.reject_every;
    let format = opts.format;
    let (opts, plan, table) = (opts.clone(), plan.clone(), table.clone());
    let res = tokio::task::spawn_blocking(move || {
        if discard {
            return load::count_only(&body, &opts, &plan);
        }
        let mut d = load::decode(&body, &opts, &plan, &table, strict_delete)?;
        if let Some(every) = reject_every {
            let rows = std::mem::take(&mut d.rows);
            for (i, r) in rows.into_iter().enumerate() {
                if (i as u64 + 1) % every == 0 {
                    let text = format!("{:?}", r.values);
                    d.rejected_count += 1;
                    d.rejected.push(load::Rejected {
                        reason: "row rejected by the reject_rows fault of starrocks-double".into(),
                        row: text,
                    });
                } else {
                    d.rows.push(r);
                }
            }
        }
        Ok(d)
    })
    .await;
    match res {
        Ok(Ok(d)) => {
            let format = match format {
                load::Format::Csv => "csv",
                load::Format::Json => "json",
            };
            double
                .stats
                .update(|s| *s.rows_by_format.entry(format.into()).or_default() += d.total);
            Ok(d)
        }
        Ok(Err(e)) => Err(e.0),
        Err(e) => Err(format!("internal error: {e}")),
    }
}

/// Stores the rejected rows as an error log of BE `be`; returns its URL.
pub fn error_log(double: &Double, be: usize, d: &Decoded) -> Option<String> {
    if d.filtered() == 0 {
        return None;
    }
    let mut text = String::new();
    for r in &d.rejected {
        text.push_str(&format!("Error: {}. Row: {}\n", r.reason, r.row));
    }
    let name = crate::ids::error_log_name();
    let url = double.error_url(be, &name);
    double
        .error_logs
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .put(name, text);
    Some(url)
}

/// The BE's memory-limit failure (`MemTracker::err_msg`): `Memory of <tracker> exceed limit.
/// <where> Backend: <host>, Used: <bytes>, Limit: <bytes>. Mem usage has exceed the limit of
/// <BE|load>`.
pub fn mem_limit_message(tracker: MemTracker, host: &str) -> String {
    let (label, what) = match tracker {
        MemTracker::Process => ("process", "BE"),
        MemTracker::Load => ("load", "load"),
    };
    format!(
        "Memory of {label} exceed limit. Start execute plan fragment. Backend: {host}, Used: 53687091200, Limit: 53687091200. Mem usage has exceed the limit of {what}"
    )
}

/// What the BE refuses while writing, after the rows were read and converted.
///
/// - Shared-data before 3.4.1: a row-mode partial update with `merge_condition` fails in the
///   lake delta writer, `partial update and condition update at the same time` (StarRocks
///   `be/src/storage/lake/delta_writer.cpp`; supported from 3.4.1 per the docs' "Feature
///   Differences between Shared-nothing and Shared-data Clusters", PR #56132).
/// - The encoded primary key limit (`load::write_check`).
pub fn write_checks(
    double: &Double,
    plan: &LoadPlan,
    table: &TableDef,
    decoded: &Decoded,
) -> Result<(), String> {
    let config = &double.config;
    if config.shared_data()
        && plan.mode.partial.is_some()
        && plan.mode.merge.is_some()
        && !config.sr_version.at_least(3, 4, 1)
    {
        return Err("partial update and condition update at the same time".into());
    }
    if config.discard {
        return Ok(());
    }
    load::write_check(table, &decoded.rows, config.primary_key_limit_size)
}

/// Whether the filtered share exceeds `max_filter_ratio`.
pub fn too_many_filtered(d: &Decoded, max_filter_ratio: f64) -> bool {
    d.total > 0 && (d.filtered() as f64 / d.total as f64) > max_filter_ratio
}

fn ms_since(t: Instant) -> u64 {
    t.elapsed().as_millis() as u64
}

async fn stream_load(
    conn: &mut Conn,
    double: &Arc<Double>,
    req: &Request,
    db: &str,
    table: &str,
    be: usize,
) -> Next {
    let started = Instant::now();
    let fired = double.faults.take(db, table);
    if fired.count > 0 {
        double.stats.update(|s| s.faults_fired += fired.count);
    }
    if let Some(code) = fired.http_5xx_before {
        reply_5xx(conn, double, code).await;
        return Next::CloseUnread;
    }
    let label = req
        .header("label")
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .unwrap_or_else(crate::ids::uuid);
    if fired.concurrency_limit {
        let msg = format!(
            "Stream Load exceed http cuncurrent limit {HTTP_WORKERS_LIMIT}, please try again later"
        );
        return reply(
            conn,
            double,
            &LoadResult::fail(&label, -1, msg),
            Next::CloseUnread,
        )
        .await;
    }
    if fired.shutting_down {
        return reply(
            conn,
            double,
            &LoadResult::fail(&label, -1, "Service is shutting down"),
            Next::CloseUnread,
        )
        .await;
    }
    let mut opts = match header_checks(double, req) {
        Ok(o) => o,
        Err(msg) => {
            return reply(
                conn,
                double,
                &LoadResult::fail(&label, -1, msg),
                Next::CloseUnread,
            )
            .await
        }
    };
    // Begin txn (FE): PREPARE.
    let begin_started = Instant::now();
    let (table_def, txn_id) = match begin(double, req, db, table, &label, &fired) {
        Ok(x) => x,
        Err(result) => return reply(conn, double, &result, Next::CloseUnread).await,
    };
    let begin_ms = ms_since(begin_started);
    let plan_started = Instant::now();
    let plan = match opts
        .read_plan_headers(req)
        .and_then(|_| load::plan(&opts, &table_def))
    {
        Ok(p) => p,
        Err(e) => {
            abort_label(double, db, &label);
            return reply(
                conn,
                double,
                &LoadResult::fail(&label, txn_id, e.0),
                Next::CloseUnread,
            )
            .await;
        }
    };
    let plan_ms = ms_since(plan_started);
    if fired.stall_before_continue_ms > 0 {
        tokio::time::sleep(Duration::from_millis(fired.stall_before_continue_ms)).await;
    }
    if req.expects_continue() && conn.send_continue().await.is_err() {
        abort_label(double, db, &label);
        return Next::Close;
    }
    if fired.stall_body_read_ms > 0 {
        tokio::time::sleep(Duration::from_millis(fired.stall_body_read_ms)).await;
    }
    let read_started = Instant::now();
    let body = match read_body(conn, double, req, &opts, started).await {
        Ok(b) => b,
        Err(msg) => {
            abort_label(double, db, &label);
            return reply(
                conn,
                double,
                &LoadResult::fail(&label, txn_id, msg),
                Next::Close,
            )
            .await;
        }
    };
    let read_ms = ms_since(read_started);
    let load_bytes = body.len() as u64;
    let base = LoadResult {
        txn_id,
        label: label.clone(),
        load_bytes,
        begin_txn_time_ms: begin_ms,
        stream_load_plan_time_ms: plan_ms,
        read_data_time_ms: read_ms,
        ..LoadResult::default()
    };
    let failed = |msg: String, d: Option<&Decoded>| LoadResult {
        status: status::FAIL,
        message: msg,
        number_total_rows: d.map_or(0, |d| d.total),
        number_loaded_rows: 0,
        number_filtered_rows: d.map_or(0, |d| d.filtered()),
        load_time_ms: ms_since(started),
        ..base.clone()
    };
    if fired.too_many_versions {
        abort_label(double, db, &label);
        let msg = format!(
            "Failed to load data into tablet {}, because of too many versions, current/limit: 1001/1000. You can reduce the loading job concurrency, or increase loading data batch size. If you are loading data with Routine Load, you can increase FE configs routine_load_task_consume_second and max_routine_load_batch_size",
            table_def.id + 3
        );
        return reply(conn, double, &failed(msg, None), Next::KeepAlive).await;
    }
    let write_started = Instant::now();
    let decoded = match decode(double, body, &opts, &plan, &table_def, &fired).await {
        Ok(d) => d,
        Err(msg) => {
            abort_label(double, db, &label);
            return reply(conn, double, &failed(msg, None), Next::KeepAlive).await;
        }
    };
    let error_url = error_log(double, be, &decoded);
    if too_many_filtered(&decoded, opts.max_filter_ratio) {
        abort_label(double, db, &label);
        let mut r = failed("too many filtered rows".into(), Some(&decoded));
        r.error_url = error_url;
        return reply(conn, double, &r, Next::KeepAlive).await;
    }
    if let Some(tracker) = fired.mem_limit {
        abort_label(double, db, &label);
        let host = &double.ports.bes[be].host;
        let msg = mem_limit_message(tracker, host);
        return reply(conn, double, &failed(msg, Some(&decoded)), Next::KeepAlive).await;
    }
    if let Err(msg) = write_checks(double, &plan, &table_def, &decoded) {
        abort_label(double, db, &label);
        return reply(conn, double, &failed(msg, Some(&decoded)), Next::KeepAlive).await;
    }
    if fired.delay_before_commit_ms > 0 {
        tokio::time::sleep(Duration::from_millis(fired.delay_before_commit_ms)).await;
    }
    if fired.txn_status_unknown_committed == Some(false) {
        abort_label(double, db, &label);
        let r = failed(
            "Transaction status unknown, you can retry with same label".into(),
            Some(&decoded),
        );
        return reply(conn, double, &r, Next::KeepAlive).await;
    }
    let write_ms = ms_since(write_started);
    let commit_started = Instant::now();
    let final_state = if fired.publish_timeout_visible_after_ms.is_some() {
        TxnState::Committed
    } else {
        TxnState::Visible
    };
    let applied = {
        let double = double.clone();
        let table_def = table_def.clone();
        let label = label.clone();
        let mode = plan.mode.clone();
        let rows = decoded.rows;
        tokio::task::spawn_blocking(move || {
            let mut store = double.store();
            if double.config.discard {
                store.set_label_state(&table_def.db, &label, final_state)
            } else {
                store.apply(&table_def, &mode, &rows, Some((&label, final_state)))
            }
        })
        .await
    };
    match applied {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::error!(error = %e, label = %label, "applying a load failed");
            abort_label(double, db, &label);
            return reply(
                conn,
                double,
                &failed(format!("internal error: {e}"), None),
                Next::KeepAlive,
            )
            .await;
        }
        Err(e) => {
            abort_label(double, db, &label);
            return reply(
                conn,
                double,
                &failed(format!("internal error: {e}"), None),
                Next::KeepAlive,
            )
            .await;
        }
    }
    if let Some(after) = fired.publish_timeout_visible_after_ms {
        let double = double.clone();
        let (db, label) = (db.to_owned(), label.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(after)).await;
            let d = double.clone();
            let _ = tokio::task::spawn_blocking(move || {
                if let Err(e) = d.store().set_label_state(&db, &label, TxnState::Visible) {
                    tracing::error!(error = %e, "publishing a label failed");
                }
            })
            .await;
        });
    }
    let commit_ms = ms_since(commit_started);
    let total = decoded.total;
    let filtered = decoded.rejected_count;
    let mut result = LoadResult {
        status: status::SUCCESS,
        message: "OK".into(),
        number_total_rows: total,
        number_loaded_rows: total - filtered,
        number_filtered_rows: filtered,
        write_data_time_ms: write_ms,
        commit_and_publish_time_ms: commit_ms,
        error_url,
        ..base
    };
    if fired.commit_then_drop {
        double
            .stats
            .load("Dropped", total, total - filtered, filtered, load_bytes);
        return Next::Drop;
    }
    if fired.delay_after_commit_ms > 0 {
        tokio::time::sleep(Duration::from_millis(fired.delay_after_commit_ms)).await;
    }
    if let Some(code) = fired.http_5xx_after_commit {
        reply_5xx(conn, double, code).await;
        return Next::Close;
    }
    if fired.publish_timeout_visible_after_ms.is_some() {
        result.status = status::PUBLISH_TIMEOUT;
        result.message = "transaction commit successfully, BUT data will be visible later".into();
    }
    if fired.txn_status_unknown_committed == Some(true) {
        result.status = status::FAIL;
        result.message = "Transaction status unknown, you can retry with same label".into();
    }
    result.load_time_ms = ms_since(started);
    reply(conn, double, &result, Next::KeepAlive).await
}
