//! Database provisioning: upload a `.sql` file, dbmazz creates the database and applies the file
//! in the background (PostgreSQL or MySQL/MariaDB), with live progress.
//!
//! Users upload a schema file (pg_dump or mysqldump output, or hand-written DDL); dbmazz creates
//! a database for it and applies the file statement by statement:
//!
//! ```text
//! gRPC SchemaService / REST / CLI ──▶ jobs::Engine (admission, registry, watch per job)
//!   upload: chunks ─▶ <id>.sql on disk, split + guard while receiving (the verdict)
//!   runner: worker permit ─▶ Applier ─▶ cleanup; records ─▶ store
//!   file bytes ──chunks──▶ split::Splitter ──Piece::Statement──▶ guard::Guard ──▶ applier
//!                              │  Piece::CopyData / CopyEnd ────────────────────▶ COPY protocol
//!                              └  Piece::Meta (pg_dump's \restrict, DELIMITER): never executed
//!   applier: apply_pg    (one transaction, as PROVISION_ROLE)
//!            apply_mysql (statements in order, as PROVISION_ROLE; DROP DATABASE on failure)
//! names: database-name validation and identifier quoting, before anything touches a server.
//! ```
//!
//! Dependencies point one way (an arrow reads "uses"; no module uses one that leads back):
//!
//! ```text
//! jobs ──▶ runner ──▶ applier ◀── apply_pg, apply_mysql ──▶ upload, names
//!  │         ├──────▶ apply_pg, apply_mysql (built from config)
//!  │         └──────▶ store ──▶ job ──▶ split ──▶ lexer ◀── guard
//!  └──▶ upload ──▶ split, guard, error ──▶ job
//! ```
//!
//! - [`config`]: `PROVISION_*` and `SCHEMA_*` settings.
//! - [`jobs`]: the job service every way in shares ([`jobs::Engine`]).
//! - [`job`]: the job model (what clients and the store see); [`error`]: why a call is refused.
//! - `runner`: one job's life on a worker; `applier`: the trait the runner drives
//!   `apply_pg` and `apply_mysql` through.
//! - `upload`: the upload on disk (received, validated, read back as pieces).
//! - [`store`]: job records on disk (`SCHEMA_JOB_STORE_PATH`).
//! - [`split`], [`guard`], [`names`], and `lexer` (the SQL lexing rules the splitter and the
//!   guard share): the pure, I/O-free parts that decide what gets executed.
//! - [`servers`]: the fleet's servers (`PROVISION_SERVERS_FILE` or the shorthand URLs) and the
//!   placement rule; [`registry`]: which tenant database lives where, with which migrations;
//!   [`migrate`]: one migration fanned out to many tenant databases, and the reconciliation
//!   after a crash. `jobs` (the engine) uses them; `migrate` reaches the servers through the
//!   `runner`, never through `jobs`.

mod applier;
mod apply_mysql;
mod apply_pg;
pub mod config;
pub mod error;
pub mod guard;
pub mod job;
pub mod jobs;
mod lexer;
pub mod migrate;
pub mod names;
pub mod registry;
mod runner;
pub mod servers;
pub mod split;
pub mod store;
mod upload;
