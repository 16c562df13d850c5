//! The PostgreSQL side: connecting (plain SQL and replication), decoding pgoutput, tracking
//! relation schemas, and preparing publication, slot and replica identity.

pub mod conninfo;
pub mod pgoutput;
pub mod reader;
pub mod replication;
pub mod schema_cache;
pub mod setup;
pub mod snapshot;
pub mod sqlstate;
pub mod tls;
pub mod toast_backfill;
