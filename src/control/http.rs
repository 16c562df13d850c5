//! The HTTP port (`METRICS_BIND:METRICS_PORT`): one listener for Prometheus' `GET /metrics`
//! and for the REST and WebSocket shape of schema provisioning ([`super::rest`]).
//!
//! Routing is axum's; the connections are served by hyper directly rather than `axum::serve`,
//! because the endpoint keeps its historic wire form: title-case header names and
//! `Connection: close` after a scrape (scrapers and scripts that read to EOF keep working).
//! Limits: a request head bounded to [`READ_BUFFER`] and read within [`READ_TIMEOUT`], at most [`MAX_CONNECTIONS`]
//! connections at once (more are closed at accept), and the per-route limits of
//! [`super::rest`]. On shutdown, open connections finish their current request.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tower::ServiceExt;

/// Time a client gets to send its request head.
pub(crate) const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once (scrapes, uploads and WebSockets together).
const MAX_CONNECTIONS: usize = 64;
/// hyper's read buffer: bounds a request head, and the size of the body pieces an upload
/// arrives in.
const READ_BUFFER: usize = 256 * 1024;

/// Serves `router` on `listener` until `shutdown` becomes true.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    mut shutdown: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|s| *s) => return,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::debug!(error = %e, "http: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "http: too many connections, closing one");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let mut stopping = shutdown.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                let router = router.clone();
                async move { Ok::<_, Infallible>(router.oneshot(req).await.into_response()) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .title_case_headers(true)
                .timer(TokioTimer::new())
                .header_read_timeout(READ_TIMEOUT)
                .max_buf_size(READ_BUFFER)
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            tokio::pin!(conn);
            let stop = async move {
                let _ = stopping.wait_for(|s| *s).await;
            };
            let result = tokio::select! {
                r = conn.as_mut() => r,
                () = stop => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "http: connection ended with an error");
            }
            drop(permit);
        });
    }
}

/// The peer address of a request served by [`serve`] (absent in unit tests).
pub(crate) fn peer(req: &axum::http::Extensions) -> Option<SocketAddr> {
    req.get::<ConnectInfo<SocketAddr>>().map(|c| c.0)
}

trait IntoResponseInfallible {
    fn into_response(self) -> axum::response::Response;
}

impl IntoResponseInfallible for Result<axum::response::Response, Infallible> {
    fn into_response(self) -> axum::response::Response {
        match self {
            Ok(r) => r,
            Err(never) => match never {},
        }
    }
}
