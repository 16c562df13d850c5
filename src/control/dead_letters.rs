//! The REST way to the dead letters, for scripts that use curl rather than grpcurl:
//! `GET /dead-letters` (query `table` repeated, `status` open|resolved|all, `limit`) and
//! `POST /dead-letters/replay` (JSON `{"tables":[…],"keys":[…],"dry_run":false}`), answering
//! JSON with the fields of ListDeadLetters and ReplayDeadLetters. Same [`Replayer`] as gRPC,
//! behind the same bearer token.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use super::auth::BearerAuth;
use super::commands::list_filter;
use super::error::RpcError;
use super::proto::ListDeadLettersRequest;
use super::rest::require_token;
use crate::replay::Replayer;

/// The dead-letter routes, behind the bearer token `auth`.
pub(crate) fn routes(replayer: Arc<Replayer>, auth: BearerAuth) -> Router {
    Router::new()
        .route("/dead-letters", get(list))
        .route("/dead-letters/replay", post(replay))
        .layer(middleware::from_fn_with_state(auth, require_token))
        .with_state(replayer)
}

/// `GET /dead-letters` query.
#[derive(serde::Deserialize, Default)]
struct ListQuery {
    #[serde(default)]
    table: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    limit: Option<u32>,
}

/// `POST /dead-letters/replay` body.
#[derive(serde::Deserialize, Default)]
struct ReplayBody {
    #[serde(default)]
    tables: Vec<String>,
    #[serde(default)]
    keys: Vec<String>,
    #[serde(default)]
    dry_run: bool,
}

fn refused(e: RpcError) -> Response {
    let status = match e.code() {
        tonic::Code::InvalidArgument => StatusCode::BAD_REQUEST,
        tonic::Code::FailedPrecondition => StatusCode::CONFLICT,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    (
        status,
        Json(json!({ "success": false, "error": e.to_string() })),
    )
        .into_response()
}

async fn list(State(replayer): State<Arc<Replayer>>, Query(q): Query<ListQuery>) -> Response {
    let req = ListDeadLettersRequest {
        tables: q
            .table
            .map(|t| t.split(',').map(str::to_owned).collect())
            .unwrap_or_default(),
        status: q.status.unwrap_or_default(),
        limit: q.limit.unwrap_or(0),
    };
    let filter = match list_filter(&req) {
        Ok(f) => f,
        Err(e) => return refused(e),
    };
    match replayer.list(&filter).await {
        Ok((letters, total)) => Json(json!({ "letters": letters, "total": total })).into_response(),
        Err(e) => refused(e.into()),
    }
}

async fn replay(State(replayer): State<Arc<Replayer>>, Json(body): Json<ReplayBody>) -> Response {
    match replayer.replay(body.tables, body.keys, body.dry_run).await {
        Ok(r) => Json(json!({
            "matched": r.letters.len(),
            "resolved": r.resolved,
            "deleted": r.deleted,
            "failed": r.failed,
            "version": r.version.0,
            "version_text": r.version.to_string(),
            "dry_run": body.dry_run,
            "letters": r.letters,
        }))
        .into_response(),
        Err(e) => refused(e.into()),
    }
}
