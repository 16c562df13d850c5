//! The integration suite: one binary, one module per concern. Every test that needs PostgreSQL
//! starts its own real PostgreSQL cluster through `support::pg` (Debian's 15 unless `PG_MAJOR` or
//! `PG_BIN` picks another major).

mod support;

mod cdc;
mod cli;
mod control;
mod decoder;
mod demo;
mod failover;
mod faults;
mod fleet;
mod managed;
mod mariadb;
mod network;
mod pg_versions;
mod provision;
mod provision_rest;
mod rejects;
mod replication;
mod schema;
mod snapshot;
mod soak;
mod starrocks;
mod starrocks_compat;
mod streaming;
mod top;
mod verify;
mod wal_guard;
