//! starrocks-double: a faithful StarRocks stand-in for dbmazz's tests, benchmarks and demo.
//!
//! StarRocks cannot run on the project's machines, so this process speaks its two client
//! protocols with StarRocks' statuses, messages, field names and primary-key semantics, and
//! keeps rows in SQLite so they can be queried back.
//!
//! ```text
//!  client ──PUT──▶ fe (307, get_load_state) ──Location──▶ be (Stream Load, txn API)
//!                                                          │ load: options, plan, decode
//!  mysql  ──────▶ mysql (opensrv) ──▶ query ──▶ sql (parse)│
//!                                        │                 ▼
//!                                        └──────────▶ store (SQLite: rows, catalog,
//!  admin  ──────▶ admin (faults, stats)                     labels, ALTER jobs)
//! ```
//!
//! Module map:
//! - [`config`]: command-line flags.
//! - [`double`]: shared state, counters, start-up and the housekeeping task.
//! - [`http`]: the hand-written HTTP/1.1 layer (100-continue, unread bodies, drops).
//! - [`fe`]: the FE endpoint: auth, `Expect`, 307, `get_load_state`.
//! - [`be`]: the BE endpoint: the Stream Load phases and their answers.
//! - [`txn`]: the Stream Load transaction interface (begin/load/prepare/commit/rollback).
//! - [`load`]: load options, column mapping, body decoding, row conversion, the result JSON.
//! - [`types`]: StarRocks types and value conversion (what gets filtered, what becomes NULL).
//! - [`catalog`]: databases, tables, columns and the primary-key rules.
//! - [`labels`]: label states and retention.
//! - [`store`]: SQLite persistence and atomic application of loads.
//! - [`sql`]: tokenizer and statement parser (DDL, SHOW, INSERT).
//! - [`query`]: statement execution and SELECT rewriting for SQLite.
//! - [`mysql`]: the MySQL protocol server.
//! - [`faults`]: the fault switches; [`admin`]: the admin HTTP port that sets them.
//! - [`clock`], [`ids`]: time formatting and random identifiers.

pub mod admin;
pub mod be;
pub mod catalog;
pub mod clock;
pub mod config;
pub mod double;
pub mod faults;
pub mod fe;
pub mod http;
pub mod ids;
pub mod labels;
pub mod load;
pub mod mysql;
pub mod query;
pub mod sql;
pub mod store;
pub mod txn;
pub mod types;

pub use config::Config;
pub use double::{start, Ports, Running};
