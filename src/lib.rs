//! dbmazz: stream every committed change of chosen PostgreSQL tables into a sink.
//!
//! ```text
//! PostgreSQL WAL ──pgoutput──▶ postgres::replication ──Bytes──▶ postgres::pgoutput ──▶ postgres::reader
//!                                   ▲  standby status (flush LSN)                            │ pipeline::change
//!           COPY ──▶ postgres::snapshot ──lines──▶ the sink's SnapshotEncoder ───────────────┤
//!                                   │                                                        ▼
//!                             checkpoint ◀──── durable commit LSN ──── pipeline::batcher (budget, stages)
//!                                                                                            │
//!                                                                                            ▼
//!                                                                       sink: ndjson │ starrocks
//! ```
//!
//! Dependencies follow the arrows: the pipeline and the sinks never import `postgres`, and the
//! source never imports a sink (`scripts/check-layers.py` checks it).
//!
//! Module map:
//! - [`config`]: typed configuration from the environment, validated at start; each sink parses
//!   its own section.
//! - [`env`]: the one environment reader and its parsers.
//! - [`ident`]: table names, table lists and SQL quoting.
//! - [`lsn`]: the `Lsn` newtype and its `X/Y` text form.
//! - [`secret`]: a string that never prints its value.
//! - [`postgres`]: everything that talks to PostgreSQL: connection parameters, TLS, the
//!   replication client, the pure pgoutput decoder, the schema cache, automatic setup, and the
//!   source side of the WAL-growth guard (slot health, heartbeat).
//! - [`pipeline`]: the source-neutral row-change model, rows as text lines, stream positions, the
//!   batcher with its flush policy and stages, and the sink contract.
//! - [`value`]: PostgreSQL text values to typed JSON, shared by every sink.
//! - [`ndjson`]: the NDJSON sink (one change per line, to stdout or a file).
//! - [`starrocks`]: the StarRocks sink (Stream Load for rows, MySQL protocol for DDL).
//! - [`checkpoint`]: durable commit LSNs in `dbmazz_checkpoints`.
//! - [`daemon`]: the task tree that wires it together, and the shutdown order.
//! - [`job`]: the job's run state and the commands (pause, resume, reload, drain) that the
//!   control plane sends through a handle.
//! - [`metrics`]: counters and gauges shared by every way of reporting them.
//! - [`control`]: the control plane: gRPC services (health, control, status, metrics stream,
//!   reflection, `grpc.health.v1`), the Prometheus endpoint and the slot monitor (the
//!   WAL-growth guard's poller).
//! - [`provision`]: the schema provisioning service (upload a `.sql` file, create the
//!   database, apply it in the background): job engine, statement splitter, SQL guard,
//!   database-name validation.
//! - [`schema_cli`]: `dbmazz schema`, the provisioning client (upload with progress bars).
//! - [`top`]: `dbmazz top`, the terminal dashboard fed by the gRPC API.
//! - [`verify`]: `dbmazz verify`, the per-table, per-key comparison of source and sink.

pub mod checkpoint;
pub mod config;
pub mod control;
pub mod daemon;
pub mod env;
pub mod help;
pub mod ident;
pub mod job;
pub mod lsn;
pub mod metrics;
pub mod ndjson;
pub mod pipeline;
pub mod postgres;
pub mod preflight;
pub mod provision;
pub mod replay;
pub mod schema_cli;
pub mod secret;
pub mod starrocks;
pub mod top;
pub mod value;
pub mod verify;

pub use lsn::Lsn;
