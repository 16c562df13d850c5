//! Failover slots (PostgreSQL 17+): a replication slot that survives the promotion of a standby.
//!
//! A logical slot lives on one server. Before PostgreSQL 17 a failover to a standby left it
//! behind: the new primary had no slot, the changes between dbmazz's checkpoint and the
//! failover could not be streamed any more, and the only honest answer was a fresh copy (dbmazz
//! says so loudly, see `setup::SetupError::SlotLost`). From 17 on a slot marked `failover` is
//! copied to standbys that ask for it, and after promotion dbmazz continues from its checkpoint
//! on the new primary, as if nothing had happened:
//!
//! ```text
//!  primary                                   standby (sync_replication_slots = on,
//!   slot dbmazz_slot (failover = true) ──────▶  hot_standby_feedback = on, primary_slot_name,
//!   synchronized_standby_slots = 'sb'           dbname in primary_conninfo)
//!     walsender waits until 'sb' has the WAL     slot dbmazz_slot (synced = true)
//!     before it sends dbmazz a change            └─ promoted: the slot is usable, dbmazz resumes
//! ```
//!
//! dbmazz itself always reads from the primary and refuses a standby at start
//! ([`require_primary`]).
//!
//! With `SLOT_FAILOVER=true` dbmazz marks its slot (a new one right after creating it, an
//! existing one at start, with `ALTER_REPLICATION_SLOT … (FAILOVER true)`), and says what the
//! servers still need, because none of that is dbmazz's to set. `synchronized_standby_slots`
//! matters most: without it the primary may send dbmazz a change the standby never received,
//! and after the failover the sink holds a row the new primary does not.

use tokio_postgres::Client;

use crate::ident::quote_ident;
use crate::postgres::replication::{ReplicationClient, ReplicationError};
use crate::postgres::version;

/// The first server version with failover slots.
pub const MIN_VERSION: u32 = 170_000;

/// `SLOT_FAILOVER=true` cannot be honoured.
#[derive(Debug, thiserror::Error)]
pub enum FailoverError {
    /// The server predates failover slots.
    #[error(
        "SLOT_FAILOVER=true needs PostgreSQL 17 or later, and the server is PostgreSQL {found}: \
         a slot cannot follow a failover before 17; unset SLOT_FAILOVER or upgrade"
    )]
    Unsupported {
        /// The server's version, as released (e.g. "16.14").
        found: String,
    },
    /// The server is a standby.
    #[error(
        "the server is a standby (pg_is_in_recovery() is true): dbmazz reads from the primary, \
         because it keeps its checkpoint in the source database and a standby is read-only; \
         point DATABASE_URL at the primary (logical decoding on a standby, PostgreSQL 16+, is \
         not supported)"
    )]
    Standby,
    /// Marking the slot failed.
    #[error("turning on failover for replication slot {slot} failed: {source}")]
    Alter {
        /// Slot.
        slot: String,
        /// Cause.
        source: ReplicationError,
    },
    /// A catalog query failed.
    #[error("{action} failed: {}", crate::postgres::tls::flatten_chain(source))]
    Sql {
        /// What was being done.
        action: String,
        /// Cause.
        source: tokio_postgres::Error,
    },
}

impl FailoverError {
    /// Whether retrying later may help (connection trouble).
    pub fn is_transient(&self) -> bool {
        match self {
            FailoverError::Unsupported { .. } | FailoverError::Standby => false,
            FailoverError::Alter { source, .. } => source.is_transient(),
            FailoverError::Sql { source, .. } => source.is_closed() || source.code().is_none(),
        }
    }
}

/// Fails unless the server has failover slots; checked before any slot is created.
pub fn require(server_version_num: u32) -> Result<(), FailoverError> {
    if server_version_num >= MIN_VERSION {
        Ok(())
    } else {
        Err(FailoverError::Unsupported {
            found: version::display(server_version_num),
        })
    }
}

/// Fails when the server is a standby. PostgreSQL 16+ can decode on a standby, but dbmazz writes
/// its checkpoint and snapshot progress into the source database and emits heartbeats there,
/// none of which a read-only standby allows; so it refuses one rather than fail later.
pub async fn require_primary(client: &Client) -> Result<(), FailoverError> {
    let standby: bool = client
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await
        .map_err(|source| FailoverError::Sql {
            action: "checking whether the server is a standby".into(),
            source,
        })?
        .get(0);
    if standby {
        Err(FailoverError::Standby)
    } else {
        Ok(())
    }
}

/// Marks `slot` (which exists and is not in use) as a failover slot unless it already is, then
/// logs what the primary and the standbys need for it to be synchronized.
pub async fn ensure(
    client: &Client,
    repl: &mut ReplicationClient,
    slot: &str,
) -> Result<(), FailoverError> {
    let sql = |action: &str| {
        let action = action.to_owned();
        move |source| FailoverError::Sql { action, source }
    };
    let row = client
        .query_one(
            "SELECT coalesce((SELECT failover FROM pg_replication_slots WHERE slot_name = $1), \
                             false), \
                    current_setting('synchronized_standby_slots')",
            &[&slot],
        )
        .await
        .map_err(sql("reading the slot's failover setting"))?;
    let failover: bool = row.get(0);
    let standby_slots: String = row.get(1);
    if !failover {
        repl.simple_query(&format!(
            "ALTER_REPLICATION_SLOT {} (FAILOVER true)",
            quote_ident(slot)
        ))
        .await
        .map_err(|source| FailoverError::Alter {
            slot: slot.into(),
            source,
        })?;
        tracing::info!(slot, "turned on failover for the replication slot");
    }
    if standby_slots.trim().is_empty() {
        tracing::warn!(
            slot,
            "synchronized_standby_slots is empty on the primary: it may send dbmazz changes a \
             standby has not received, and after a failover the sink would hold rows the new \
             primary lacks; set synchronized_standby_slots to the standbys' physical slots"
        );
    }
    tracing::info!(
        slot,
        synchronized_standby_slots = %standby_slots,
        "failover slot: each standby that may be promoted needs sync_replication_slots = on, \
         hot_standby_feedback = on, primary_slot_name, and dbname in primary_conninfo"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failover_slots_start_with_17() {
        assert!(require(170_000).is_ok());
        assert!(require(180_004).is_ok());
        let err = require(160_014).unwrap_err().to_string();
        assert!(err.contains("PostgreSQL 16.14"), "{err}");
        assert!(err.contains("17 or later"), "{err}");
    }
}
