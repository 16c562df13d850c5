//! The FE HTTP endpoint: authenticates, checks `Expect`, and redirects loads to the BE.
//!
//! Why it never reads the body: the real FE answers 307 (or an error) as soon as it has the
//! headers and closes the connection; a client that streams the body without waiting for
//! `100 Continue` sees a reset instead of the redirect. The double reproduces that exactly.
//!
//! ```text
//! PUT /api/{db}/{table}/_stream_load ── 401 (bad auth) | 200 FAILED (no Expect) | 307 → a BE
//! GET /api/{db}/get_load_state?label= ── 307 → leader (a follower hop) | {"status":"OK","state":..}
//! POST /api/transaction/{op}          ── 307 → BE 0
//! ```
//!
//! With `--fe-extra-hops N` the entry FE and the first N-1 hops act as followers: loads,
//! transaction calls and `get_load_state` are redirected to the next hop, and only the last
//! hop (the leader) picks a BE or answers (StarRocks: `RestBaseAction.redirectToLeader`,
//! called first by `GetStreamLoadState`). Loads are spread round-robin over the BEs, so a
//! client that only accepts its FE's host in a `Location` fails as it would on a cluster.

use std::sync::Arc;

use base64::Engine;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::double::Double;
use crate::http::{Conn, Request, Response};
use crate::load::HeaderSource;

/// Decodes `Authorization: Basic ...` into (user, password).
pub fn basic_auth(req: &Request) -> Option<(String, String)> {
    let v = req.header("authorization")?;
    let (scheme, rest) = v.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (user, pass) = text.split_once(':')?;
    // StarRocks accepts `user@cluster`-less names only; strip a `default_cluster:` prefix.
    let user = user.strip_prefix("default_cluster:").unwrap_or(user);
    Some((user.to_owned(), pass.to_owned()))
}

/// Whether the request carries the configured credentials.
pub fn authorized(double: &Double, req: &Request) -> Result<(), String> {
    match basic_auth(req) {
        None => Err("Need auth information.".into()),
        Some((u, p)) if u == double.config.user && p == double.config.password => Ok(()),
        Some((u, _)) => Err(format!("Access denied for user '{u}'")),
    }
}

fn unauthorized(msg: &str) -> Response {
    let body = json!({"status": "FAILED", "code": "1", "msg": msg, "message": msg});
    Response::json(401, body.to_string()).header("WWW-Authenticate", "Basic realm=\"\"")
}

/// What the connection loop does after a response.
pub enum After {
    KeepAlive,
    Close,
    /// The request body was not read: half-close and drain.
    CloseUnread,
}

/// Serves one FE listener. `next_hop` is the next FE port in a multi-hop chain; None means
/// this FE redirects straight to the BE.
pub async fn serve(
    listener: TcpListener,
    double: Arc<Double>,
    next_hop: Option<u16>,
    shutdown: watch::Receiver<bool>,
) {
    crate::double::accept_loop(listener, shutdown, "fe", move |stream| {
        let double = double.clone();
        async move {
            let mut conn = Conn::new(stream);
            loop {
                let req = match conn.read_request().await {
                    Ok(Some(r)) => r,
                    Ok(None) => return,
                    Err(e) => {
                        tracing::debug!(error = %e, "fe: bad request");
                        let _ = conn
                            .respond(&Response::text(400, "bad request").closing())
                            .await;
                        return;
                    }
                };
                let (resp, after) = route(&double, &req, next_hop);
                if conn.respond(&resp).await.is_err() {
                    return;
                }
                match after {
                    After::KeepAlive if req.keep_alive() && !req.has_body() => {}
                    After::KeepAlive | After::CloseUnread => return conn.close_unread().await,
                    After::Close => return conn.close().await,
                }
            }
        }
    })
    .await;
}

fn route(double: &Double, req: &Request, next_hop: Option<u16>) -> (Response, After) {
    let parts: Vec<&str> = req.path.trim_matches('/').split('/').collect();
    match (req.method.as_str(), parts.as_slice()) {
        ("PUT", ["api", db, table, "_stream_load"]) => {
            stream_load(double, req, db, table, next_hop)
        }
        (_, ["api", "transaction", _op]) => {
            if let Err(msg) = authorized(double, req) {
                return (unauthorized(&msg).closing(), After::CloseUnread);
            }
            double.stats.update(|s| s.fe_redirects += 1);
            (redirect(double, req, next_hop, false), After::CloseUnread)
        }
        ("GET", ["api", db, "get_load_state"]) => {
            if let Err(msg) = authorized(double, req) {
                return (unauthorized(&msg), After::KeepAlive);
            }
            if let Some(port) = next_hop {
                return (redirect_to_fe(double, req, port), After::Close);
            }
            (
                get_load_state(double, db, req.query_param("label")),
                After::KeepAlive,
            )
        }
        ("POST", ["api", db, _table, "_cancel"]) => {
            if let Err(msg) = authorized(double, req) {
                return (unauthorized(&msg), After::KeepAlive);
            }
            (
                cancel(double, db, req.query_param("label")),
                After::KeepAlive,
            )
        }
        ("GET", [""]) | ("GET", ["api", "health"]) => (
            Response::json(200, json!({"status": "OK", "msg": "Success"}).to_string()),
            After::KeepAlive,
        ),
        _ => (
            Response::json(
                404,
                json!({"status": "FAILED", "msg": "Not Found"}).to_string(),
            ),
            After::CloseUnread,
        ),
    }
}

fn stream_load(
    double: &Double,
    req: &Request,
    db: &str,
    table: &str,
    next_hop: Option<u16>,
) -> (Response, After) {
    if let Err(msg) = authorized(double, req) {
        double.stats.update(|s| s.fe_rejected += 1);
        return (unauthorized(&msg).closing(), After::CloseUnread);
    }
    let fail = |msg: &str| {
        double.stats.update(|s| s.fe_rejected += 1);
        let body = json!({"Status": "FAILED", "Message": format!("class com.starrocks.common.DdlException: {msg}")});
        (
            Response::json(200, body.to_string()).closing(),
            After::CloseUnread,
        )
    };
    if req.header("expect").is_none() {
        return fail("There is no 100-continue header");
    }
    if db.is_empty() {
        return fail("No database selected.");
    }
    if table.is_empty() {
        return fail("No table selected.");
    }
    double.stats.update(|s| s.fe_redirects += 1);
    (redirect(double, req, next_hop, true), After::CloseUnread)
}

/// 307 to the next FE hop or to a BE, same path and query, and close. A Stream Load
/// (`spread`) goes to the next BE in turn; the transaction API stays on BE 0, which holds
/// the label for its whole life as the FE's per-label coordinator does.
fn redirect(double: &Double, req: &Request, next_hop: Option<u16>, spread: bool) -> Response {
    if let Some(port) = next_hop {
        return redirect_to_fe(double, req, port);
    }
    let be = if spread {
        double.pick_be()
    } else {
        &double.ports.bes[0]
    };
    let location = format!("http://{}:{}{}", be.host, be.port, req.target);
    Response::new(307, "text/html; charset=UTF-8", Vec::new())
        .header("Location", location)
        .closing()
}

/// 307 from a follower FE to the next FE hop (the leader at the end of the chain).
fn redirect_to_fe(double: &Double, req: &Request, port: u16) -> Response {
    let location = format!("http://{}:{port}{}", double.config.bind_host(), req.target);
    Response::new(307, "text/html; charset=UTF-8", Vec::new())
        .header("Location", location)
        .closing()
}

fn get_load_state(double: &Double, db: &str, label: Option<&str>) -> Response {
    let Some(label) = label.filter(|l| !l.is_empty()) else {
        return Response::json(200, json!({"status": "FAILED", "msg": "No label selected.", "message": "No label selected."}).to_string());
    };
    double.evict_labels();
    let store = double.store();
    if store.catalog.db(db).is_none() {
        let msg = format!("Database[{db}] does not exist");
        return Response::json(
            200,
            json!({"status": "FAILED", "msg": msg, "message": msg}).to_string(),
        );
    }
    let state = store
        .labels
        .get(db, label)
        .map(|r| r.state.name())
        .unwrap_or("UNKNOWN");
    Response::json(
        200,
        json!({"status": "OK", "msg": "Success", "message": "Success", "state": state}).to_string(),
    )
}

fn cancel(double: &Double, db: &str, label: Option<&str>) -> Response {
    let Some(label) = label else {
        return Response::json(
            200,
            json!({"status": "FAILED", "msg": "No label selected."}).to_string(),
        );
    };
    let cancelled = crate::txn::abort(double, db, label);
    if cancelled {
        Response::json(200, json!({"status": "OK", "msg": "Success"}).to_string())
    } else {
        let msg = format!("Load with label {label} is not running");
        Response::json(200, json!({"status": "FAILED", "msg": msg}).to_string())
    }
}
