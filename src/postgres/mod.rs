//! The PostgreSQL side: connecting (plain SQL and replication), decoding pgoutput, tracking
//! relation schemas, preparing publication, slot and replica identity, and guarding the slot's
//! WAL (slot health, heartbeat).

pub mod conninfo;
pub mod failover;
pub mod heartbeat;
pub mod pgoutput;
pub mod publication;
pub mod reader;
pub mod replication;
pub mod schema_cache;
pub mod setup;
pub mod slot_health;
pub mod snapshot;
pub mod sqlstate;
pub mod state_tables;
pub mod streamed;
pub mod tls;
pub mod toast_backfill;
pub mod version;
