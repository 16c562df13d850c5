//! The Stream Load transaction interface: begin, load (×N), prepare, commit, rollback.
//!
//! Why: it is the exactly-once path (prepare, record, commit), and its failure modes differ
//! from a plain load: commit is idempotent ("Transaction already commited"), a busy
//! transaction answers `TXN_IN_PROCESSING`, an unknown one `TXN_NOT_EXISTS`, and open
//! transactions expire (`timeout` before prepare, `prepared_timeout` after).
//!
//! ```text
//! begin ─▶ PREPARE ─load*─▶ PREPARE ─prepare─▶ PREPARED ─commit─▶ VISIBLE
//!            └─ rollback / error / timeout ─▶ ABORTED ◀─ prepared_timeout ─┘
//! ```
//!
//! Loaded rows wait in memory until commit; a restart loses open transactions (their labels
//! come back ABORTED).

use std::sync::Arc;

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::Value as Json;
use tokio::time::Instant;

use crate::be::{self, Next};
use crate::catalog::TableDef;
use crate::clock;
use crate::double::Double;
use crate::faults::Fired;
use crate::http::{Conn, Request, Response};
use crate::labels::TxnState;
use crate::load::{self, status, Decoded, HeaderSource, Rejected};
use crate::store::{ApplyMode, RowOp};

/// Default `prepared_timeout` (FE `prepared_transaction_default_timeout_second`).
const PREPARED_TIMEOUT_S: u64 = 86_400;

/// One open transaction.
pub struct StreamTxn {
    pub table: Arc<TableDef>,
    pub txn_id: i64,
    pub state: TxnState,
    rows: Vec<RowOp>,
    rejected: Vec<Rejected>,
    total: u64,
    rejected_count: u64,
    bytes: u64,
    seq: u64,
    mode: ApplyMode,
    max_filter_ratio: f64,
    begin_ms: i64,
    timeout_s: u64,
    idle_timeout_s: Option<u64>,
    last_active_ms: i64,
    prepared_ms: Option<i64>,
    prepared_timeout_s: u64,
    busy: bool,
}

/// A JSON object whose keys keep insertion order (the BE's field order).
struct Ordered(Vec<(&'static str, Json)>);

impl Serialize for Ordered {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

fn answer(fields: Vec<(&'static str, Json)>) -> Response {
    Response::text(200, load::pretty_json(&Ordered(fields)))
}

fn error(status: &str, message: impl Into<String>) -> Response {
    answer(vec![
        ("Status", status.into()),
        ("Message", message.into().into()),
    ])
}

fn not_exists(label: &str) -> Response {
    error(
        "TXN_NOT_EXISTS",
        format!("Transaction with label {label} does not exist"),
    )
}

fn in_processing(label: &str) -> Response {
    answer(vec![
        ("Status", "TXN_IN_PROCESSING".into()),
        ("Label", label.into()),
        ("Message", "Transaction is in processing".into()),
    ])
}

fn counts(
    txn_id: i64,
    label: &str,
    total: u64,
    filtered: u64,
    bytes: u64,
) -> Vec<(&'static str, Json)> {
    vec![
        ("Status", "OK".into()),
        ("Message", "".into()),
        ("Label", label.into()),
        ("TxnId", txn_id.into()),
        ("NumberTotalRows", total.into()),
        ("NumberLoadedRows", (total - filtered).into()),
        ("NumberFilteredRows", filtered.into()),
        ("NumberUnselectedRows", 0.into()),
        ("LoadBytes", bytes.into()),
        ("LoadTimeMs", 0.into()),
        ("StreamLoadPlanTimeMs", 0.into()),
        ("ReceivedDataTimeMs", 0.into()),
        ("WriteDataTimeMs", 0.into()),
        ("CommitAndPublishTimeMs", 0.into()),
    ]
}

fn header_secs(req: &Request, name: &str) -> Option<u64> {
    req.header(name).and_then(|v| v.trim().parse().ok())
}

/// Serves `/api/transaction/{op}` on the BE.
pub async fn handle(conn: &mut Conn, double: &Arc<Double>, req: &Request, op: &str) -> Next {
    double.stats.update(|s| s.txn_api_calls += 1);
    let unread = if req.has_body() {
        Next::CloseUnread
    } else {
        Next::KeepAlive
    };
    let label = req.header("label").map(str::trim).unwrap_or("").to_owned();
    let db = req.header("db").map(str::trim).unwrap_or("").to_owned();
    if label.is_empty() {
        return send(
            conn,
            error("INVALID_ARGUMENT", "No label selected."),
            unread,
        )
        .await;
    }
    if db.is_empty() {
        return send(
            conn,
            error("INVALID_ARGUMENT", "No database selected."),
            unread,
        )
        .await;
    }
    if crate::fe::basic_auth(req).is_none() {
        return send(
            conn,
            error("INTERNAL_ERROR", "no valid Basic authorization"),
            unread,
        )
        .await;
    }
    if let Err(msg) = crate::fe::authorized(double, req) {
        return send(conn, error("FAILED", msg), unread).await;
    }
    match op {
        "begin" => {
            let resp = begin(double, req, &db, &label);
            send(conn, resp, unread).await
        }
        "load" => load_chunk(conn, double, req, &db, &label).await,
        "prepare" => {
            let resp = prepare(double, req, &db, &label);
            send(conn, resp, unread).await
        }
        "commit" => {
            let resp = commit(double, &db, &label).await;
            send(conn, resp, unread).await
        }
        "rollback" => {
            let resp = if abort(double, &db, &label) {
                answer(vec![
                    ("Status", "OK".into()),
                    ("Message", "".into()),
                    ("Label", label.as_str().into()),
                ])
            } else {
                not_exists(&label)
            };
            send(conn, resp, unread).await
        }
        _ => {
            send(
                conn,
                error(
                    "INVALID_ARGUMENT",
                    format!("Invalid transaction operation {op}"),
                ),
                unread,
            )
            .await
        }
    }
}

async fn send(conn: &mut Conn, resp: Response, next: Next) -> Next {
    match conn.respond(&resp).await {
        Ok(()) => next,
        Err(_) => Next::Close,
    }
}

fn txns(
    double: &Double,
) -> std::sync::MutexGuard<'_, std::collections::HashMap<(String, String), StreamTxn>> {
    double.txns.lock().unwrap_or_else(|e| e.into_inner())
}

fn begin(double: &Double, req: &Request, db: &str, label: &str) -> Response {
    let table = req.header("table").map(str::trim).unwrap_or("");
    if table.is_empty() {
        return error("INVALID_ARGUMENT", "No table selected.");
    }
    let (table_def, txn_id) = match be::begin(double, req, db, table, label, &Fired::default()) {
        Ok(x) => x,
        Err(r) if r.status == status::LABEL_ALREADY_EXISTS => {
            return answer(vec![
                ("Status", "LABEL_ALREADY_EXISTS".into()),
                (
                    "ExistingJobStatus",
                    r.existing_job_status.unwrap_or("RUNNING").into(),
                ),
                ("Message", r.message.into()),
            ])
        }
        Err(r) => return error("FAILED", r.message),
    };
    let now = clock::now_ms();
    txns(double).insert(
        (db.to_owned(), label.to_owned()),
        StreamTxn {
            table: table_def,
            txn_id,
            state: TxnState::Prepare,
            rows: Vec::new(),
            rejected: Vec::new(),
            total: 0,
            rejected_count: 0,
            bytes: 0,
            seq: 0,
            mode: ApplyMode::default(),
            max_filter_ratio: 0.0,
            begin_ms: now,
            timeout_s: header_secs(req, "timeout").unwrap_or(double.config.load_timeout_second),
            idle_timeout_s: header_secs(req, "idle_transaction_timeout"),
            last_active_ms: now,
            prepared_ms: None,
            prepared_timeout_s: PREPARED_TIMEOUT_S,
            busy: false,
        },
    );
    answer(vec![
        ("Status", "OK".into()),
        ("Message", "".into()),
        ("Label", label.into()),
        ("TxnId", txn_id.into()),
        ("BeginTxnTimeMs", 0.into()),
    ])
}

/// Marks a transaction busy for one call; the answer when it cannot be.
fn claim(
    double: &Double,
    db: &str,
    label: &str,
) -> Result<(Arc<TableDef>, i64, TxnState), Response> {
    let mut map = txns(double);
    let Some(t) = map.get_mut(&(db.to_owned(), label.to_owned())) else {
        return Err(not_exists(label));
    };
    if t.busy {
        return Err(in_processing(label));
    }
    t.busy = true;
    t.last_active_ms = clock::now_ms();
    Ok((t.table.clone(), t.txn_id, t.state))
}

fn release(double: &Double, db: &str, label: &str) {
    if let Some(t) = txns(double).get_mut(&(db.to_owned(), label.to_owned())) {
        t.busy = false;
        t.last_active_ms = clock::now_ms();
    }
}

async fn load_chunk(
    conn: &mut Conn,
    double: &Arc<Double>,
    req: &Request,
    db: &str,
    label: &str,
) -> Next {
    let started = Instant::now();
    let unread = Next::CloseUnread;
    let (table, txn_id, state) = match claim(double, db, label) {
        Ok(x) => x,
        Err(resp) => return send(conn, resp, unread).await,
    };
    if state != TxnState::Prepare {
        release(double, db, label);
        return send(
            conn,
            error(
                "FAILED",
                "Transcation State Invalid: the transaction is PREPARED, no more load allowed",
            ),
            unread,
        )
        .await;
    }
    let failed = |msg: String| {
        abort(double, db, label);
        error("FAILED", msg)
    };
    let mut opts = match be::header_checks(double, req) {
        Ok(o) => o,
        Err(msg) => return send(conn, failed(msg), unread).await,
    };
    let plan = match opts
        .read_plan_headers(req)
        .and_then(|_| load::plan(&opts, &table))
    {
        Ok(p) => p,
        Err(e) => return send(conn, failed(e.0), unread).await,
    };
    if req.expects_continue() && conn.send_continue().await.is_err() {
        release(double, db, label);
        return Next::Close;
    }
    let body = match be::read_body(conn, double, req, &opts, started).await {
        Ok(b) => b,
        Err(msg) => return send(conn, failed(msg), Next::Close).await,
    };
    let bytes = body.len() as u64;
    let decoded: Decoded =
        match be::decode(double, body, &opts, &plan, &table, &Fired::default()).await {
            Ok(d) => d,
            Err(msg) => return send(conn, failed(msg), Next::KeepAlive).await,
        };
    if let Err(msg) = be::write_checks(double, &plan, &table, &decoded) {
        return send(conn, failed(msg), Next::KeepAlive).await;
    }
    let seq = append(
        double,
        db,
        label,
        decoded,
        bytes,
        &plan.mode,
        opts.max_filter_ratio,
    );
    let Some(seq) = seq else {
        return send(conn, not_exists(label), Next::KeepAlive).await;
    };
    let resp = answer(vec![
        ("Status", "OK".into()),
        ("Message", "".into()),
        ("Label", label.into()),
        ("TxnId", txn_id.into()),
        ("Seq", seq.into()),
        ("LoadBytes", bytes.into()),
        ("StreamLoadPlanTimeMs", 0.into()),
        (
            "ReceivedDataTimeMs",
            (started.elapsed().as_millis() as u64).into(),
        ),
    ]);
    send(conn, resp, Next::KeepAlive).await
}

/// Adds one chunk's rows to its transaction; returns the chunk's sequence number.
fn append(
    double: &Double,
    db: &str,
    label: &str,
    decoded: Decoded,
    bytes: u64,
    mode: &ApplyMode,
    ratio: f64,
) -> Option<u64> {
    let mut map = txns(double);
    let t = map.get_mut(&(db.to_owned(), label.to_owned()))?;
    t.total += decoded.total;
    t.rejected_count += decoded.rejected_count;
    t.rejected.extend(decoded.rejected);
    t.rows.extend(decoded.rows);
    t.bytes += bytes;
    t.seq += 1;
    t.mode = mode.clone();
    t.max_filter_ratio = ratio;
    t.busy = false;
    t.last_active_ms = clock::now_ms();
    Some(t.seq)
}

/// The filter check of prepare/commit; on failure the transaction is rolled back.
fn check_filtered(double: &Double, db: &str, label: &str) -> Result<(), Response> {
    let verdict = {
        let map = txns(double);
        let Some(t) = map.get(&(db.to_owned(), label.to_owned())) else {
            return Err(not_exists(label));
        };
        let d = Decoded {
            total: t.total,
            rows: Vec::new(),
            rejected: t.rejected.clone(),
            rejected_count: t.rejected_count,
        };
        be::too_many_filtered(&d, t.max_filter_ratio).then(|| be::error_log(double, 0, &d))
    };
    match verdict {
        None => Ok(()),
        Some(url) => {
            abort(double, db, label);
            let mut fields = vec![
                ("Status", "FAILED".into()),
                ("Message", "too many filtered rows".into()),
            ];
            if let Some(url) = url {
                fields.push(("ErrorURL", url.into()));
            }
            Err(answer(fields))
        }
    }
}

fn prepare(double: &Double, req: &Request, db: &str, label: &str) -> Response {
    let (_, txn_id, state) = match claim(double, db, label) {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    if state == TxnState::Prepare {
        if let Err(resp) = check_filtered(double, db, label) {
            return resp;
        }
        if let Err(e) = double
            .store()
            .set_label_state(db, label, TxnState::Prepared)
        {
            release(double, db, label);
            return error("INTERNAL_ERROR", e.to_string());
        }
    }
    let mut map = txns(double);
    let Some(t) = map.get_mut(&(db.to_owned(), label.to_owned())) else {
        return not_exists(label);
    };
    t.state = TxnState::Prepared;
    t.prepared_ms = Some(clock::now_ms());
    t.prepared_timeout_s = header_secs(req, "prepared_timeout").unwrap_or(PREPARED_TIMEOUT_S);
    t.busy = false;
    answer(counts(txn_id, label, t.total, t.rejected_count, t.bytes))
}

async fn commit(double: &Arc<Double>, db: &str, label: &str) -> Response {
    let (table, txn_id, state) = match claim(double, db, label) {
        Ok(x) => x,
        Err(resp) => {
            let done = double
                .store()
                .labels
                .get(db, label)
                .filter(|r| matches!(r.state, TxnState::Committed | TxnState::Visible))
                .map(|r| r.txn_id);
            return match done {
                Some(txn_id) => answer(vec![
                    ("Status", "OK".into()),
                    ("Message", "Transaction already commited".into()),
                    ("Label", label.into()),
                    ("TxnId", txn_id.into()),
                ]),
                None => resp,
            };
        }
    };
    if state == TxnState::Prepare {
        if let Err(resp) = check_filtered(double, db, label) {
            return resp;
        }
    }
    let Some(t) = txns(double).remove(&(db.to_owned(), label.to_owned())) else {
        return not_exists(label);
    };
    let fields = counts(txn_id, label, t.total, t.rejected_count, t.bytes);
    let d = double.clone();
    let (db_s, label_s) = (db.to_owned(), label.to_owned());
    let applied = tokio::task::spawn_blocking(move || {
        let mut store = d.store();
        if d.config.discard {
            store.set_label_state(&db_s, &label_s, TxnState::Visible)
        } else {
            store.apply(
                &table,
                &t.mode,
                &t.rows,
                Some((&label_s, TxnState::Visible)),
            )
        }
    })
    .await;
    match applied {
        Ok(Ok(())) => {
            double.stats.load(status::SUCCESS, 0, 0, 0, 0);
            answer(fields)
        }
        Ok(Err(e)) => {
            be::abort_label(double, db, label);
            error("INTERNAL_ERROR", e.to_string())
        }
        Err(e) => {
            be::abort_label(double, db, label);
            error("INTERNAL_ERROR", e.to_string())
        }
    }
}

/// Rolls back an open, idle transaction (rollback, `_cancel`, errors). False when none.
pub fn abort(double: &Double, db: &str, label: &str) -> bool {
    let removed = txns(double)
        .remove(&(db.to_owned(), label.to_owned()))
        .is_some();
    if removed {
        be::abort_label(double, db, label);
    }
    removed
}

/// Aborts transactions past their `timeout`, idle timeout or `prepared_timeout`.
pub fn expire(double: &Double) {
    let now = clock::now_ms();
    let expired: Vec<(String, String)> = txns(double)
        .iter()
        .filter(|(_, t)| !t.busy)
        .filter(|(_, t)| match t.state {
            TxnState::Prepared => t
                .prepared_ms
                .is_some_and(|p| now - p > (t.prepared_timeout_s as i64) * 1000),
            _ => {
                now - t.begin_ms > (t.timeout_s as i64) * 1000
                    || t.idle_timeout_s
                        .is_some_and(|i| now - t.last_active_ms > (i as i64) * 1000)
            }
        })
        .map(|(k, _)| k.clone())
        .collect();
    for (db, label) in expired {
        tracing::info!(db = %db, label = %label, "transaction expired");
        abort(double, &db, &label);
    }
}
