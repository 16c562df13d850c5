//! The integration suite: one binary, one module per concern. Every test that needs PostgreSQL
//! starts its own real PostgreSQL 15 cluster through `support::pg`.

mod support;

mod cdc;
mod cli;
mod control;
mod decoder;
mod demo;
mod faults;
mod mariadb;
mod network;
mod provision;
mod provision_rest;
mod rejects;
mod replication;
mod schema;
mod snapshot;
mod soak;
mod starrocks;
mod starrocks_compat;
mod top;
mod verify;
mod wal_guard;
