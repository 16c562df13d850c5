//! The admin HTTP port: fault switches, counters and reset, for tests and demos.
//!
//! ```text
//! GET    /admin/faults        list faults in force
//! POST   /admin/faults        add one fault (JSON object) or several (JSON array)
//! DELETE /admin/faults        clear all faults;  DELETE /admin/faults/{id}: one
//! GET    /admin/stats         load / row / status counters
//! POST   /admin/reset         clear faults and counters; ?data=true also drops every database
//! GET    /admin/labels?db=d   the label table of a database
//! ```
//!
//! Not part of StarRocks: it exists so a test can say "the next load of `orders` commits and
//! then loses its answer" without touching the daemon under test.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::double::Double;
use crate::faults::FaultSpec;
use crate::http::{Conn, Request, Response};

pub async fn serve(listener: TcpListener, double: Arc<Double>, shutdown: watch::Receiver<bool>) {
    crate::double::accept_loop(listener, shutdown, "admin", move |stream| {
        let double = double.clone();
        async move {
            let mut conn = Conn::new(stream);
            loop {
                let req = match conn.read_request().await {
                    Ok(Some(r)) => r,
                    Ok(None) => return,
                    Err(_) => {
                        let _ = conn
                            .respond(&Response::text(400, "bad request").closing())
                            .await;
                        return;
                    }
                };
                let deadline = Instant::now() + Duration::from_secs(10);
                let body = match conn.read_body(&req, 1 << 20, deadline).await {
                    Ok(b) => b,
                    Err(e) => {
                        let _ = conn
                            .respond(&Response::text(400, e.to_string()).closing())
                            .await;
                        return;
                    }
                };
                let resp = route(&double, &req, &body).await;
                if conn.respond(&resp).await.is_err() || !req.keep_alive() {
                    return conn.close().await;
                }
            }
        }
    })
    .await;
}

fn ok_json(v: serde_json::Value) -> Response {
    Response::json(200, serde_json::to_vec_pretty(&v).unwrap_or_default())
}

fn bad(msg: impl Into<String>) -> Response {
    Response::json(400, json!({"error": msg.into()}).to_string())
}

async fn route(double: &Arc<Double>, req: &Request, body: &[u8]) -> Response {
    let parts: Vec<&str> = req.path.trim_matches('/').split('/').collect();
    match (req.method.as_str(), parts.as_slice()) {
        ("GET", ["admin", "faults"]) => ok_json(json!(double.faults.list())),
        ("POST", ["admin", "faults"]) => add_faults(double, body),
        ("DELETE", ["admin", "faults"]) => {
            double.faults.clear();
            ok_json(json!({"cleared": true}))
        }
        ("DELETE", ["admin", "faults", id]) => match id.parse::<u64>() {
            Ok(id) if double.faults.remove(id) => ok_json(json!({"removed": id})),
            _ => Response::json(404, json!({"error": format!("no fault {id}")}).to_string()),
        },
        ("GET", ["admin", "stats"]) => ok_json(json!(double.stats.snapshot())),
        ("POST", ["admin", "reset"]) => {
            double.faults.clear();
            double.stats.reset(double.config.discard);
            if req.query_param("data") == Some("true") {
                let d = double.clone();
                let res = tokio::task::spawn_blocking(move || {
                    let mut store = d.store();
                    let dbs: Vec<String> = store.catalog.dbs.keys().cloned().collect();
                    for db in dbs {
                        store.drop_database(&db, true)?;
                    }
                    Ok::<(), crate::sql::SqlError>(())
                })
                .await;
                match res {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return bad(e.message),
                    Err(e) => return bad(e.to_string()),
                }
            }
            ok_json(json!({"reset": true}))
        }
        ("GET", ["admin", "labels"]) => {
            let Some(db) = req.query_param("db") else {
                return bad("the db query parameter is required");
            };
            double.evict_labels();
            let store = double.store();
            let q = format!(
                "SELECT label, table_name, txn_id, state, created_ms, finished_ms FROM _double_labels WHERE db = '{}' ORDER BY created_ms",
                db.replace('\'', "''")
            );
            match store.query(&q) {
                Ok(rs) => {
                    let rows: Vec<serde_json::Value> = rs
                        .rows
                        .iter()
                        .map(|r| {
                            let cell = |i: usize| match &r[i] {
                                crate::types::Cell::Int(v) => json!(v),
                                crate::types::Cell::Text(s) => json!(s),
                                _ => serde_json::Value::Null,
                            };
                            json!({"label": cell(0), "table": cell(1), "txn_id": cell(2), "state": cell(3),
                                   "created_ms": cell(4), "finished_ms": cell(5)})
                        })
                        .collect();
                    ok_json(json!(rows))
                }
                Err(e) => bad(e.to_string()),
            }
        }
        ("GET", ["admin", "health"]) => ok_json(json!({"status": "OK", "ports": double.ports})),
        _ => Response::json(404, json!({"error": "not found"}).to_string()),
    }
}

fn add_faults(double: &Double, body: &[u8]) -> Response {
    let specs: Vec<FaultSpec> = match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Array(items)) => {
            match items
                .into_iter()
                .map(serde_json::from_value)
                .collect::<Result<Vec<FaultSpec>, _>>()
            {
                Ok(s) => s,
                Err(e) => return bad(format!("invalid fault: {e}")),
            }
        }
        Ok(v) => match serde_json::from_value(v) {
            Ok(s) => vec![s],
            Err(e) => return bad(format!("invalid fault: {e}")),
        },
        Err(e) => return bad(format!("invalid JSON: {e}")),
    };
    let ids: Vec<u64> = specs
        .into_iter()
        .map(|s| {
            tracing::info!(kind = ?s.kind, table = ?s.table, count = ?s.count, "fault added");
            double.faults.add(s)
        })
        .collect();
    ok_json(json!({"ids": ids}))
}
