//! Starting and stopping the control plane: the gRPC server, the Prometheus endpoint and the
//! slot monitor — or, in a daemon without a CDC job, only the provisioning services.
//!
//! Listeners are bound before the job starts, so a port conflict is a startup error naming the
//! variable, and the bound address is logged (`grpc listening addr=…`) — with `GRPC_PORT=0` that
//! is the only way to learn the port. Shutdown is graceful and bounded: in-flight calls (such as
//! the DrainAndStop whose reply is the signal that the job stopped) are answered first.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::service::InterceptorLayer;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;

use super::auth::BearerAuth;
use super::commands::Commands;
use super::health::{self, Health};
use super::metrics_stream::MetricsStream;
use super::proto::cdc_control_service_server::CdcControlServiceServer;
use super::proto::cdc_metrics_service_server::CdcMetricsServiceServer;
use super::proto::cdc_status_service_server::CdcStatusServiceServer;
use super::proto::health_service_server::HealthServiceServer;
use super::proto::schema_service_server::SchemaServiceServer;
use super::proto::FILE_DESCRIPTOR_SET;
use super::sampler::Baseline;
use super::schema::SchemaRpc;
use super::status::StatusService;
use super::{dead_letters, http, prometheus, rest, slot_monitor};
use crate::config::{Config, ControlConfig};
use crate::job::JobHandle;
use crate::provision::jobs::Engine;

/// Largest request (and response) message, as tonic's default decoding limit: 4 MiB.
const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;
/// Concurrent calls per client connection.
const CALLS_PER_CONNECTION: usize = 32;
/// What reflection lists in a provisioning-only daemon.
const PROVISIONING_SERVICES: [&str; 5] = [
    "dbmazz.HealthService",
    "dbmazz.SchemaService",
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// The control plane could not start.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// A listening socket could not be bound.
    #[error(
        "cannot listen on {addr} ({vars}): {source}; pick a free port or set {vars} differently"
    )]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The variables that chose it.
        vars: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// The reflection service could not read the service descriptors.
    #[error("cannot build the gRPC reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

/// The running control plane of one job.
pub struct ControlPlane {
    grpc_addr: Option<SocketAddr>,
    metrics_addr: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    grpc: Option<JoinHandle<()>>,
    tasks: Vec<JoinHandle<()>>,
}

impl ControlPlane {
    /// Binds and starts whatever `config` enables (gRPC on `GRPC_BIND:GRPC_PORT`, Prometheus on
    /// `METRICS_BIND:METRICS_PORT`, and the slot monitor when either is on). `stop` is set when
    /// an operator asks the process to stop although the job cannot drain (it failed).
    /// `provision` serves `dbmazz.SchemaService` (a disabled engine answers FAILED_PRECONDITION).
    pub async fn start(
        config: &Config,
        job: &JobHandle,
        stop: watch::Sender<bool>,
        provision: &Engine,
    ) -> Result<ControlPlane, ListenError> {
        let baseline = Baseline::now(job);
        let replayer = std::sync::Arc::new(crate::replay::Replayer::new(
            config.database.clone(),
            config.statement_timeout,
            match &config.sink {
                crate::config::SinkConfig::StarRocks(sr) => Some((**sr).clone()),
                crate::config::SinkConfig::Ndjson { .. } => None,
            },
            job.clone(),
        ));
        let shutdown = watch::Sender::new(false);
        let mut plane = ControlPlane {
            grpc_addr: None,
            metrics_addr: None,
            shutdown,
            grpc: None,
            tasks: Vec::new(),
        };
        if let Some(addr) = config.metrics_addr {
            let listener = bind(addr, "METRICS_BIND/METRICS_PORT").await?;
            let local = listener.local_addr().unwrap_or(addr);
            tracing::info!(addr = %local, "metrics listening");
            plane.metrics_addr = Some(local);
            // The provisioning routes (REST, WebSocket) share the port with /metrics and the
            // token with gRPC; /metrics stays open.
            let router = rest::routes(
                provision.clone(),
                BearerAuth::new(config.grpc_token.as_ref()),
            )
            .merge(dead_letters::routes(
                replayer.clone(),
                BearerAuth::new(config.grpc_token.as_ref()),
            ))
            .merge(prometheus::routes(job.clone(), baseline));
            plane.tasks.push(tokio::spawn(http::serve(
                listener,
                router,
                plane.shutdown.subscribe(),
            )));
        }
        if let Some(addr) = config.grpc_addr {
            let listener = bind(addr, "GRPC_BIND/GRPC_PORT").await?;
            let local = listener.local_addr().unwrap_or(addr);
            let (reporter, standard_health) = tonic_health::server::health_reporter();
            plane
                .tasks
                .push(tokio::spawn(health::follow_job(job.clone(), reporter)));
            let reflection_v1 = reflection().build_v1()?;
            let reflection_v1alpha = reflection().build_v1alpha()?;
            let router = Server::builder()
                .concurrency_limit_per_connection(CALLS_PER_CONNECTION)
                .tcp_keepalive(Some(Duration::from_secs(60)))
                .layer(InterceptorLayer::new(BearerAuth::new(
                    config.grpc_token.as_ref(),
                )))
                .add_service(
                    HealthServiceServer::new(Health::new(job.clone()))
                        .max_decoding_message_size(MAX_MESSAGE_BYTES)
                        .max_encoding_message_size(MAX_MESSAGE_BYTES),
                )
                .add_service(
                    CdcControlServiceServer::new(Commands::new(job.clone(), stop, replayer))
                        .max_decoding_message_size(MAX_MESSAGE_BYTES)
                        .max_encoding_message_size(MAX_MESSAGE_BYTES),
                )
                .add_service(
                    CdcStatusServiceServer::new(StatusService::new(job.clone()))
                        .max_decoding_message_size(MAX_MESSAGE_BYTES)
                        .max_encoding_message_size(MAX_MESSAGE_BYTES),
                )
                .add_service(
                    CdcMetricsServiceServer::new(MetricsStream::new(
                        job.clone(),
                        baseline,
                        plane.shutdown.subscribe(),
                    ))
                    .max_decoding_message_size(MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_MESSAGE_BYTES),
                )
                .add_service(
                    SchemaServiceServer::new(SchemaRpc::new(provision.clone()))
                        .max_decoding_message_size(MAX_MESSAGE_BYTES)
                        .max_encoding_message_size(MAX_MESSAGE_BYTES),
                )
                .add_service(standard_health.max_decoding_message_size(MAX_MESSAGE_BYTES))
                .add_service(reflection_v1.max_decoding_message_size(MAX_MESSAGE_BYTES))
                .add_service(reflection_v1alpha.max_decoding_message_size(MAX_MESSAGE_BYTES));
            let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
            let mut stopping = plane.shutdown.subscribe();
            plane.grpc = Some(tokio::spawn(async move {
                let signal = async move {
                    let _ = stopping.wait_for(|s| *s).await;
                };
                if let Err(e) = router.serve_with_incoming_shutdown(incoming, signal).await {
                    tracing::error!(error = %e, "grpc server stopped");
                }
            }));
            tracing::info!(addr = %local, auth = config.grpc_token.is_some(), "grpc listening");
            if !local.ip().is_loopback() && config.grpc_token.is_none() {
                tracing::warn!(addr = %local, "grpc is reachable from other hosts without authentication: set GRPC_TOKEN (or GRPC_TOKEN_FILE), or bind to 127.0.0.1");
            }
            plane.grpc_addr = Some(local);
        }
        // The slot monitor is the WAL-growth guard: it runs even without gRPC and /metrics.
        plane.tasks.push(tokio::spawn(slot_monitor::run(
            config.database.clone(),
            config.wal_guard,
            job.clone(),
            plane.shutdown.subscribe(),
        )));
        Ok(plane)
    }

    /// The control plane of a daemon without a CDC job: `dbmazz.SchemaService`,
    /// `dbmazz.HealthService`, `grpc.health.v1` and reflection over exactly those on gRPC; the
    /// provisioning routes (REST, WebSocket) on the HTTP port. The CDC services and `/metrics`
    /// are not served (there is no job to report on): reflection does not list them, and a
    /// call to one is `UNIMPLEMENTED`.
    pub async fn start_provisioning(
        control: &ControlConfig,
        provision: &Engine,
    ) -> Result<ControlPlane, ListenError> {
        let mut plane = ControlPlane {
            grpc_addr: None,
            metrics_addr: None,
            shutdown: watch::Sender::new(false),
            grpc: None,
            tasks: Vec::new(),
        };
        if let Some(addr) = control.metrics_addr {
            let listener = bind(addr, "METRICS_BIND/METRICS_PORT").await?;
            let local = listener.local_addr().unwrap_or(addr);
            tracing::info!(addr = %local, "http listening (schema provisioning routes)");
            plane.metrics_addr = Some(local);
            let router = rest::routes(
                provision.clone(),
                BearerAuth::new(control.grpc_token.as_ref()),
            );
            plane.tasks.push(tokio::spawn(http::serve(
                listener,
                router,
                plane.shutdown.subscribe(),
            )));
        }
        if let Some(addr) = control.grpc_addr {
            let listener = bind(addr, "GRPC_BIND/GRPC_PORT").await?;
            let local = listener.local_addr().unwrap_or(addr);
            let (reporter, standard_health) = tonic_health::server::health_reporter();
            for name in ["", "dbmazz.HealthService", "dbmazz.SchemaService"] {
                reporter
                    .set_service_status(name, tonic_health::ServingStatus::Serving)
                    .await;
            }
            let only = |b: tonic_reflection::server::Builder<'static>| {
                PROVISIONING_SERVICES
                    .iter()
                    .fold(b, |b, name| b.with_service_name(*name))
            };
            let reflection_v1 = only(reflection()).build_v1()?;
            let reflection_v1alpha = only(reflection()).build_v1alpha()?;
            let router = Server::builder()
                .concurrency_limit_per_connection(CALLS_PER_CONNECTION)
                .tcp_keepalive(Some(Duration::from_secs(60)))
                .layer(InterceptorLayer::new(BearerAuth::new(
                    control.grpc_token.as_ref(),
                )))
                .add_service(
                    HealthServiceServer::new(Health::provisioning_only())
                        .max_decoding_message_size(MAX_MESSAGE_BYTES)
                        .max_encoding_message_size(MAX_MESSAGE_BYTES),
                )
                .add_service(
                    SchemaServiceServer::new(SchemaRpc::new(provision.clone()))
                        .max_decoding_message_size(MAX_MESSAGE_BYTES)
                        .max_encoding_message_size(MAX_MESSAGE_BYTES),
                )
                .add_service(standard_health.max_decoding_message_size(MAX_MESSAGE_BYTES))
                .add_service(reflection_v1.max_decoding_message_size(MAX_MESSAGE_BYTES))
                .add_service(reflection_v1alpha.max_decoding_message_size(MAX_MESSAGE_BYTES));
            let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
            let mut stopping = plane.shutdown.subscribe();
            plane.grpc = Some(tokio::spawn(async move {
                let signal = async move {
                    let _ = stopping.wait_for(|s| *s).await;
                };
                if let Err(e) = router.serve_with_incoming_shutdown(incoming, signal).await {
                    tracing::error!(error = %e, "grpc server stopped");
                }
            }));
            tracing::info!(addr = %local, auth = control.grpc_token.is_some(), "grpc listening");
            if !local.ip().is_loopback() && control.grpc_token.is_none() {
                tracing::warn!(addr = %local, "grpc is reachable from other hosts without authentication: set GRPC_TOKEN (or GRPC_TOKEN_FILE), or bind to 127.0.0.1");
            }
            plane.grpc_addr = Some(local);
        }
        Ok(plane)
    }

    /// Where gRPC listens, when enabled.
    pub fn grpc_addr(&self) -> Option<SocketAddr> {
        self.grpc_addr
    }

    /// Where the Prometheus endpoint listens, when enabled.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Stops accepting calls, lets in-flight calls finish for at most `grace`, then stops
    /// everything.
    pub async fn shutdown(mut self, grace: Duration) {
        self.shutdown.send_replace(true);
        if let Some(mut grpc) = self.grpc.take() {
            if tokio::time::timeout(grace, &mut grpc).await.is_err() {
                tracing::warn!(
                    grace_s = grace.as_secs(),
                    "grpc calls still open after the grace period; closing them"
                );
                grpc.abort();
            }
        }
        for task in self.tasks.drain(..) {
            task.abort();
        }
    }
}

/// Reflection over every service served: dbmazz's, `grpc.health.v1` and both reflection
/// versions (grpcurl 1.8 speaks only v1alpha, newer clients v1).
fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .include_reflection_service(false)
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET)
}

async fn bind(addr: SocketAddr, vars: &'static str) -> Result<TcpListener, ListenError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ListenError::Bind { addr, vars, source })
}
