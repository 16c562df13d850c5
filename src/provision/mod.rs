//! Database provisioning: upload a `.sql` file, dbmazz creates the database and applies the file
//! in the background (PostgreSQL or MySQL/MariaDB), with live progress.
//!
//! Users upload a schema file (pg_dump or mysqldump output, or hand-written DDL); dbmazz creates
//! a database for it and applies the file statement by statement:
//!
//! ```text
//! gRPC SchemaService / REST / CLI ──▶ engine (jobs, store, bounded workers)
//!   file bytes ──chunks──▶ split::Splitter ──Piece::Statement──▶ guard::Guard ──▶ applier
//!                              │  Piece::CopyData / CopyEnd ────────────────────▶ COPY protocol
//!                              └  Piece::Meta (pg_dump's \restrict, DELIMITER): never executed
//!   applier: apply_pg    (one transaction, as PROVISION_ROLE)
//!            apply_mysql (statements in order, as PROVISION_ROLE; DROP DATABASE on failure)
//! names: database-name validation and identifier quoting, before anything touches a server.
//! ```
//!
//! - [`config`]: `PROVISION_*` and `SCHEMA_*` settings.
//! - [`engine`]: the job engine every way in shares.
//! - [`store`]: job records on disk (`SCHEMA_JOB_STORE_PATH`).
//! - [`split`], [`guard`], [`names`]: the pure, I/O-free parts that decide what gets executed.

mod applier;
mod apply_mysql;
mod apply_pg;
pub mod config;
pub mod engine;
pub mod error;
pub mod guard;
pub mod job;
mod lexer;
pub mod names;
mod runner;
pub mod split;
pub mod store;
mod upload;
