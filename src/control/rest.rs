//! The REST and WebSocket way into schema provisioning, in the shape of the service it
//! replaces, for the clients that already call it with curl: `POST /schema/upload`,
//! `GET /schema/job/{id}`, `GET /schema/jobs` and WebSocket `/ws`. Same engine as
//! `dbmazz.SchemaService` ([`crate::provision::jobs`]); this layer only translates.
//!
//! - The upload is `multipart/form-data` with the fields `engine` (`postgres|mysql`), `name`
//!   and the file part `schema`, in any order. The file goes to disk piece by piece as it
//!   arrives (never whole in memory; `SCHEMA_MAX_BYTES` enforced while it streams), split and
//!   guarded on the way when `engine` came before it; the job is queued once the form ends.
//!   Optional fields `dryRun`, `failIfDbExists`, `dropDbOnFailure`, `deduplicateByHash`,
//!   `deleteSchemaAfterApply`, `enableSqlGuard` (`true|false`) override the server's options
//!   for the call; the `Idempotency-Key` header is the idempotency key.
//! - Errors are JSON `{"success":false,"error":…,"code":…}` with the engine's HTTP status
//!   (400 bad name or file, 404 unknown job, 409 busy/exists, 413 too big, 429 rate limited with
//!   `Retry-After`, 503 provisioning not configured) and 401 without the token.
//! - With `GRPC_TOKEN` set, every route here needs `Authorization: Bearer <token>`, as gRPC
//!   does (the WebSocket too, on its upgrade request). Browsers cannot set that header on a
//!   WebSocket, so the upgrade may instead offer the subprotocols `dbmazz` and
//!   `bearer.<token>`; the answer names `dbmazz`. `/metrics` stays open, as before.
//! - WebSocket: `{"type":"subscribe","jobId":"…"}` (several per socket are fine) is answered by
//!   `progress` events while the job moves and one `done` or `failed` event at its end; each
//!   event is the job's JSON plus `"type"` and `"jobId"`.

use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use futures_util::{SinkExt, Stream, StreamExt};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::auth::BearerAuth;
use crate::provision::error::ProvisionError;
use crate::provision::job::{Job, JobStatus, Overrides, SqlEngine, UploadMeta};
use crate::provision::jobs::{Engine, Received, MAX_CHUNK_BYTES};

/// A text field of the upload form may be at most this long.
const MAX_FIELD_BYTES: usize = 1024;
/// The upload fails when the client sends nothing for this long.
const UPLOAD_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest WebSocket message accepted from a client.
const MAX_WS_MESSAGE: usize = 16 * 1024;
/// Subscriptions one WebSocket may hold at once.
const MAX_WS_SUBSCRIPTIONS: usize = 64;
/// Events queued for a slow WebSocket client before its subscriptions wait.
const WS_QUEUE: usize = 64;

#[derive(Clone)]
struct Ctx {
    engine: Engine,
}

/// The provisioning routes, behind the bearer token `auth`.
pub(crate) fn routes(engine: Engine, auth: BearerAuth) -> Router {
    Router::new()
        .route(
            "/schema/upload",
            // The engine caps the file (SCHEMA_MAX_BYTES) as it streams; no buffering cap here.
            post(upload).layer(DefaultBodyLimit::disable()),
        )
        .route("/schema/job/{id}", get(job))
        .route("/schema/jobs", get(jobs))
        .route("/ws", get(ws))
        .layer(middleware::from_fn_with_state(auth, require_token))
        .with_state(Ctx { engine })
}

/// The WebSocket subprotocol dbmazz speaks; a browser that sends its token as a subprotocol
/// offers it too, and the server answers with it (never with the token).
pub(crate) const WS_PROTOCOL: &str = "dbmazz";
/// Prefix of the subprotocol that carries the bearer token: `bearer.<GRPC_TOKEN>`.
const WS_BEARER_PREFIX: &str = "bearer.";

/// The token a WebSocket upgrade offers as the subprotocol `bearer.<token>` (browsers cannot
/// set `Authorization` on a WebSocket), as an `authorization` value.
fn ws_bearer(headers: &HeaderMap) -> Option<Vec<u8>> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|p| p.trim().strip_prefix(WS_BEARER_PREFIX))
        .map(|token| format!("Bearer {token}").into_bytes())
}

/// Refuses a request without the right bearer token (when one is configured): in the
/// `Authorization` header, or for a WebSocket upgrade in the subprotocol `bearer.<token>`.
pub(crate) async fn require_token(
    State(auth): State<BearerAuth>,
    req: Request,
    next: Next,
) -> Response {
    let from_protocol;
    let offered = match req.headers().get(header::AUTHORIZATION) {
        Some(v) => Some(v.as_bytes()),
        None => {
            from_protocol = ws_bearer(req.headers());
            from_protocol.as_deref()
        }
    };
    match auth.check(offered) {
        Ok(()) => next.run(req).await,
        Err(status) => {
            let mut resp = error_body(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                status.message(),
            );
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            resp
        }
    }
}

fn error_body(code: StatusCode, kind: &str, message: &str) -> Response {
    (
        code,
        Json(json!({ "success": false, "code": kind, "error": message })),
    )
        .into_response()
}

/// A refusal of the engine as a JSON response.
fn refusal(e: &ProvisionError) -> Response {
    let code = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let kind = match e {
        ProvisionError::Disabled | ProvisionError::EngineDisabled { .. } => "not-configured",
        ProvisionError::InvalidArgument(_) => "invalid-argument",
        ProvisionError::FailedPrecondition(_) => "failed-precondition",
        ProvisionError::TooLarge(_) => "too-large",
        ProvisionError::RateLimited { .. } => "rate-limited",
        ProvisionError::AlreadyExists(_) => "already-exists",
        ProvisionError::NotFound(_) => "not-found",
        ProvisionError::Interrupted(_) => "interrupted",
        ProvisionError::Internal(_) => "internal",
    };
    let mut resp = error_body(code, kind, &e.to_string());
    if let ProvisionError::RateLimited { retry_after_ms, .. } = e {
        let secs = retry_after_ms.div_ceil(1000).max(1);
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
    }
    resp
}

fn bad_request(message: impl Into<String>) -> Response {
    refusal(&ProvisionError::InvalidArgument(message.into()))
}

/// `POST /schema/upload`.
async fn upload(State(ctx): State<Ctx>, headers: HeaderMap, req: Request) -> Response {
    if !ctx.engine.is_enabled() {
        return refusal(&ProvisionError::Disabled);
    }
    let client = super::http::peer(req.extensions()).map(|a| a.ip());
    let idempotency_key = match headers.get("idempotency-key").map(|v| v.to_str()) {
        None => None,
        Some(Ok(k)) => Some(k.to_owned()),
        Some(Err(_)) => return bad_request("Idempotency-Key: use printable ASCII"),
    };
    let mut form = match <Multipart as FromRequest<()>>::from_request(req, &()).await {
        Ok(form) => form,
        Err(e) => {
            return bad_request(format!(
                "send multipart/form-data with the fields engine, name and the file part schema \
                 (curl -F engine=postgres -F name=tenant_a -F schema=@schema.sql): {}",
                e.body_text()
            ));
        }
    };
    let form: &mut Multipart = &mut form;
    let mut engine = None;
    let mut name: Option<String> = None;
    let mut server: Option<String> = None;
    let mut placement_labels = std::collections::BTreeMap::new();
    let mut overrides = Overrides::default();
    // The file part: stored as it arrives (split and guarded on the way when the engine is
    // already known), its job queued once the whole form has been read.
    let mut file: Option<(String, Received)> = None;
    loop {
        let field = match form.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => return bad_request(format!("malformed multipart body: {}", e.body_text())),
        };
        let field_name = field.name().unwrap_or_default().to_owned();
        if field_name == "schema" {
            if file.is_some() {
                return bad_request("the form has two file parts named schema; send one");
            }
            let file_name = field.file_name().unwrap_or_default().to_owned();
            if file_name.is_empty() {
                return bad_request("the part schema must be a file (curl -F schema=@schema.sql)");
            }
            if let Some(name) = &name {
                // Before the bytes: a refused name does not cost the whole upload.
                if let Err(e) = ctx.engine.check_database_name(name) {
                    return refusal(&e);
                }
            }
            let early = engine.map(|e| (e, &overrides));
            match ctx
                .engine
                .receive(client, early, Box::pin(pieces(field)))
                .await
            {
                Ok(received) => file = Some((file_name, received)),
                Err(e) => return refusal(&e),
            }
            continue;
        }
        let value = match small_text(field).await {
            Ok(v) => v,
            Err(resp) => return resp,
        };
        match field_name.as_str() {
            "engine" => match SqlEngine::parse(&value) {
                Some(e) => engine = Some(e),
                None => {
                    return bad_request(format!(
                        "field engine: expected postgres or mysql, got {value:?}"
                    ))
                }
            },
            "name" => name = Some(value),
            "server" => server = Some(value).filter(|v| !v.is_empty()),
            "placementLabels" => match crate::provision::servers::parse_labels(&value) {
                Ok(l) => placement_labels = l,
                Err(e) => return bad_request(format!("field placementLabels: {e}")),
            },
            other => {
                let slot = match other {
                    "dryRun" => &mut overrides.dry_run,
                    "failIfDbExists" => &mut overrides.fail_if_db_exists,
                    "dropDbOnFailure" => &mut overrides.drop_db_on_failure,
                    "deduplicateByHash" => &mut overrides.deduplicate_by_hash,
                    "deleteSchemaAfterApply" => &mut overrides.delete_schema_after_apply,
                    "enableSqlGuard" => &mut overrides.enable_sql_guard,
                    _ => {
                        return bad_request(format!(
                            "unknown field {other:?}; expected engine, name, schema (and \
                             optionally server, placementLabels, dryRun, failIfDbExists, \
                             dropDbOnFailure, deduplicateByHash, deleteSchemaAfterApply, \
                             enableSqlGuard)"
                        ))
                    }
                };
                *slot = Some(match value.as_str() {
                    "true" | "1" => true,
                    "false" | "0" => false,
                    _ => {
                        return bad_request(format!(
                            "field {other}: expected true or false, got {value:?}"
                        ))
                    }
                });
            }
        }
    }
    let Some((file_name, received)) = file else {
        return bad_request("the form has no file part named schema (curl -F schema=@schema.sql)");
    };
    let Some(engine) = engine else {
        return bad_request("the form has no field engine (postgres or mysql)");
    };
    let Some(database) = name else {
        return bad_request("the form has no field name (the database to create)");
    };
    let meta = UploadMeta {
        engine,
        server,
        placement_labels,
        database,
        file_name,
        idempotency_key,
        overrides,
        client,
    };
    match ctx.engine.queue(meta, received).await {
        Ok(s) => (
            StatusCode::ACCEPTED,
            Json(json!({
                "success": true,
                "jobId": s.job_id,
                "deduplicated": s.deduplicated,
                "sha256": s.sha256,
                "bytes": s.bytes,
            })),
        )
            .into_response(),
        Err(e) => refusal(&e),
    }
}

/// A text field, at most [`MAX_FIELD_BYTES`].
async fn small_text(mut field: axum::extract::multipart::Field<'_>) -> Result<String, Response> {
    let name = field.name().unwrap_or_default().to_owned();
    let mut buf = Vec::new();
    loop {
        match field.chunk().await {
            Ok(Some(piece)) => {
                if buf.len() + piece.len() > MAX_FIELD_BYTES {
                    return Err(bad_request(format!(
                        "field {name}: longer than {MAX_FIELD_BYTES} bytes"
                    )));
                }
                buf.extend_from_slice(&piece);
            }
            Ok(None) => break,
            Err(e) => return Err(bad_request(format!("field {name}: {}", e.body_text()))),
        }
    }
    String::from_utf8(buf)
        .map(|s| s.trim().to_owned())
        .map_err(|_| bad_request(format!("field {name}: not UTF-8 text")))
}

/// The file part as the engine wants it: pieces of at most [`MAX_CHUNK_BYTES`], an error when
/// the client stalls for [`UPLOAD_IDLE_TIMEOUT`] or the body breaks off.
fn pieces(
    field: axum::extract::multipart::Field<'_>,
) -> impl Stream<Item = Result<Bytes, ProvisionError>> + Send + '_ {
    futures_util::stream::unfold(
        (field, Bytes::new(), false),
        |(mut field, mut rest, done)| async move {
            if done {
                return None;
            }
            if rest.is_empty() {
                match tokio::time::timeout(UPLOAD_IDLE_TIMEOUT, field.chunk()).await {
                    Err(_) => {
                        let e = ProvisionError::Interrupted(format!(
                            "no data from the client for {}s",
                            UPLOAD_IDLE_TIMEOUT.as_secs()
                        ));
                        return Some((Err(e), (field, rest, true)));
                    }
                    Ok(Err(e)) => {
                        let e = ProvisionError::Interrupted(e.body_text());
                        return Some((Err(e), (field, rest, true)));
                    }
                    Ok(Ok(None)) => return None,
                    Ok(Ok(Some(piece))) => rest = piece,
                }
            }
            let piece = rest.split_to(rest.len().min(MAX_CHUNK_BYTES));
            Some((Ok(piece), (field, rest, false)))
        },
    )
}

/// `GET /schema/job/{id}`.
async fn job(State(ctx): State<Ctx>, Path(id): Path<String>) -> Response {
    match ctx.engine.get(&id) {
        Ok(j) => Json(j).into_response(),
        Err(e) => refusal(&e),
    }
}

#[derive(serde::Deserialize)]
struct ListQuery {
    limit: Option<usize>,
}

/// `GET /schema/jobs?limit=N`: newest first.
async fn jobs(State(ctx): State<Ctx>, Query(q): Query<ListQuery>) -> Response {
    match ctx.engine.list(q.limit.unwrap_or(0).min(1000)) {
        Ok(list) => Json(json!({ "jobs": list })).into_response(),
        Err(e) => refusal(&e),
    }
}

/// `GET /ws`: the WebSocket of job events.
async fn ws(State(ctx): State<Ctx>, headers: HeaderMap, upgrade: WebSocketUpgrade) -> Response {
    let offers_ours = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == WS_PROTOCOL);
    if ws_bearer(&headers).is_some() && !offers_ours {
        // A browser fails a connection whose answer names none of the subprotocols it offered,
        // and the token must never be echoed back.
        return bad_request(format!(
            "offer the subprotocol {WS_PROTOCOL:?} next to the token: new WebSocket(url, \
             [\"{WS_PROTOCOL}\", \"bearer.\" + token])"
        ));
    }
    upgrade
        .protocols([WS_PROTOCOL])
        .max_message_size(MAX_WS_MESSAGE)
        .max_frame_size(MAX_WS_MESSAGE)
        .on_upgrade(move |socket| websocket(ctx.engine, socket))
}

/// An event of `job` for the WebSocket: the job's JSON plus `type` and `jobId`.
fn ws_event(j: &Job) -> Value {
    let kind = match j.status {
        JobStatus::Success => "done",
        JobStatus::Failed => "failed",
        JobStatus::Queued | JobStatus::Running => "progress",
    };
    let mut v = serde_json::to_value(j).unwrap_or_else(|_| json!({}));
    if let Value::Object(map) = &mut v {
        map.insert("type".into(), kind.into());
        map.insert("jobId".into(), j.id.clone().into());
    }
    v
}

fn ws_error(job_id: Option<&str>, message: &str) -> Value {
    json!({ "type": "error", "jobId": job_id, "error": message })
}

async fn websocket(engine: Engine, socket: WebSocket) {
    let (mut sink, mut incoming) = socket.split();
    let (tx, mut rx) = mpsc::channel::<Value>(WS_QUEUE);
    let writer = tokio::spawn(async move {
        while let Some(v) = rx.recv().await {
            if sink
                .send(Message::Text(v.to_string().into()))
                .await
                .is_err()
            {
                break;
            }
        }
        let _ = sink.close().await;
    });
    let mut subscriptions = tokio::task::JoinSet::new();
    while let Some(msg) = incoming.next().await {
        let text = match msg {
            Ok(Message::Text(t)) => t,
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => continue,
        };
        let request: Value = match serde_json::from_str(text.as_str()) {
            Ok(v) => v,
            Err(e) => {
                let _ = tx
                    .send(ws_error(
                        None,
                        &format!("not JSON: {e}; send {{\"type\":\"subscribe\",\"jobId\":\"…\"}}"),
                    ))
                    .await;
                continue;
            }
        };
        let kind = request.get("type").and_then(Value::as_str);
        let job_id = request.get("jobId").and_then(Value::as_str);
        let (Some("subscribe"), Some(job_id)) = (kind, job_id) else {
            let _ = tx
                .send(ws_error(
                    job_id,
                    "expected {\"type\":\"subscribe\",\"jobId\":\"…\"}",
                ))
                .await;
            continue;
        };
        while subscriptions.try_join_next().is_some() {}
        if subscriptions.len() >= MAX_WS_SUBSCRIPTIONS {
            let _ = tx
                .send(ws_error(
                    Some(job_id),
                    &format!("at most {MAX_WS_SUBSCRIPTIONS} subscriptions per connection"),
                ))
                .await;
            continue;
        }
        let mut watch = match engine.subscribe(job_id) {
            Ok(w) => w,
            Err(e) => {
                let _ = tx.send(ws_error(Some(job_id), &e.to_string())).await;
                continue;
            }
        };
        let tx = tx.clone();
        subscriptions.spawn(async move {
            loop {
                let j = watch.borrow_and_update().clone();
                if tx.send(ws_event(&j)).await.is_err() || j.status.is_final() {
                    return;
                }
                if watch.changed().await.is_err() {
                    // The engine dropped the job's sender: report what it last said.
                    let j = watch.borrow().clone();
                    if j.status.is_final() {
                        let _ = tx.send(ws_event(&j)).await;
                    }
                    return;
                }
            }
        });
    }
    subscriptions.abort_all();
    drop(tx);
    let _ = writer.await;
}
