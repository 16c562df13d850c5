//! The control plane: how operators and orchestrators observe and steer a running job.
//!
//! ```text
//!                 ┌─ auth (bearer token, constant time) ─┐
//! gRPC client ──▶ │ dbmazz.HealthService        health   │
//! (grpcurl, jq)   │ dbmazz.CdcControlService    commands │──▶ JobHandle (watch channels,
//!                 │ dbmazz.CdcStatusService     status   │    atomics, Metrics)
//!                 │ dbmazz.CdcMetricsService    stream   │        ▲
//!                 │ dbmazz.SchemaService        schema   │──▶ provision::jobs::Engine
//!                 │ grpc.health.v1 · reflection v1/v1α   │        │ server WAL position,
//!                 └──────────────────────────────────────┘        │ slot lag (every 2 s)
//! Prometheus ───▶ GET /metrics (prometheus)                   slot_monitor ──SQL──▶ PostgreSQL
//! curl, browsers ▶ /schema/*, /ws (rest, same token as gRPC) ──▶ provision::jobs::Engine
//!                  └─ both on the HTTP port (http: axum routes, hyper connections)
//! ```
//!
//! Everything here only *observes* the job through its [`JobHandle`](crate::job::JobHandle) or
//! asks it for a change; the replication hot path never waits on the control plane. Errors of
//! the job's commands become gRPC status codes in one place ([`error`]).
//!
//! Security defaults: the listeners bind `127.0.0.1` unless `GRPC_BIND` / `METRICS_BIND` say
//! otherwise; with `GRPC_TOKEN` set every call, reflection and health included, needs
//! `authorization: Bearer <token>`, and so does every provisioning route of the HTTP port
//! (`/metrics` stays open); gRPC messages are limited to 4 MiB, uploads by `SCHEMA_MAX_BYTES`.

mod auth;
mod commands;
mod dead_letters;
mod error;
mod health;
mod http;
mod metrics_stream;
mod prometheus;
mod rest;
mod sampler;
mod schema;
mod server;
mod slot_monitor;
mod status;

pub use server::{ControlPlane, ListenError};

/// Code generated from `proto/dbmazz.proto` by `build.rs` (servers, and the client `dbmazz top` uses).
pub mod proto {
    tonic::include_proto!("dbmazz");

    /// The encoded descriptors of `dbmazz.proto`, served by gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("dbmazz_descriptor");
}
