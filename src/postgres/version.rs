//! Which PostgreSQL servers dbmazz runs against, and what it does differently on each.
//!
//! dbmazz supports PostgreSQL 14 to 18 and refuses anything older at start, before it creates a
//! publication or a slot, with a message that names the version it found. 14 is the floor because
//! it is the first release whose pgoutput carries logical messages (the WAL-growth heartbeat
//! needs them) and the oldest one the test matrix runs; nothing below it is tested.
//!
//! What differs between the supported majors, and where dbmazz handles it:
//!
//! | difference                                                         | majors | handled in |
//! |--------------------------------------------------------------------|--------|------------|
//! | `CREATE_REPLICATION_SLOT … (SNAPSHOT 'x')` option list; 14 only parses `EXPORT_SNAPSHOT` / `NOEXPORT_SNAPSHOT` | 15+ | `replication::client` |
//! | `public` no longer writable by every role                          | 15+    | `state_tables`: the GRANT or CREATE TABLEs to run |
//! | publication row filters and column lists (`pg_publication_tables.rowfilter`, `.attnames`) | 15+ | `publication`: refused |
//! | `pg_replication_slots.conflicting`; logical decoding on a standby  | 16+    | `failover`: a standby is refused |
//! | `pg_replication_slots.inactive_since`, `.invalidation_reason`      | 17+    | `slot_health` |
//! | failover slots (`failover`, `synced`, `ALTER_REPLICATION_SLOT`, `synchronized_standby_slots`) | 17+ | `failover` |
//! | `pg_logical_emit_message(…, flush)`                                | 17+    | `heartbeat` uses the three-argument form, valid everywhere |
//! | the `idle_timeout` invalidation reason (`idle_replication_slot_timeout`) | 18 | `slot_health` reports any reason verbatim |
//! | `publish_generated_columns`, virtual generated columns             | 18     | `publication`: generated columns are not replicated |
//!
//! pgoutput itself: every supported server speaks protocol 2, which adds streaming of
//! in-progress transactions (`streaming 'on'`). dbmazz asks for 2 with streaming on every major
//! (`STREAMING=on`, the default; see [`streamed`](crate::postgres::streamed)) and for 1 with
//! `STREAMING=off`. It does not ask for 3 (15+, two-phase commit: a prepared transaction is
//! sent at COMMIT PREPARED like any other) or 4 (16+, `streaming 'parallel'`, which only adds
//! the abort LSN and time that a parallel apply worker needs), so the decoder sees the same
//! messages on 14 to 18.

/// `server_version_num` of the oldest supported server (14.0).
pub const MIN_SUPPORTED: u32 = 140_000;

/// The server is older than [`MIN_SUPPORTED`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "PostgreSQL {} (server_version_num {version_num}) is not supported: dbmazz needs PostgreSQL \
     14 or later; upgrade the server (pg_upgrade, or your provider's major-version upgrade)",
    display(*version_num)
)]
pub struct UnsupportedVersion {
    /// The server's `server_version_num`.
    pub version_num: u32,
}

/// Fails for servers older than [`MIN_SUPPORTED`]. A `server_version_num` of 0 means it could
/// not be read; that is refused too rather than guessed at.
pub fn check_supported(version_num: u32) -> Result<(), UnsupportedVersion> {
    if version_num >= MIN_SUPPORTED {
        Ok(())
    } else {
        Err(UnsupportedVersion { version_num })
    }
}

/// `server_version_num` as people write it: 140023 → "14.23", 90624 → "9.6.24".
pub fn display(version_num: u32) -> String {
    if version_num >= 100_000 {
        format!("{}.{}", version_num / 10_000, version_num % 10_000)
    } else {
        format!(
            "{}.{}.{}",
            version_num / 10_000,
            version_num / 100 % 100,
            version_num % 100
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_from_14_on_are_supported() {
        assert!(check_supported(140_000).is_ok());
        assert!(check_supported(180_004).is_ok());
        let err = check_supported(130_023).unwrap_err();
        assert_eq!(err.version_num, 130_023);
        let text = err.to_string();
        assert!(text.contains("PostgreSQL 13.23"), "{text}");
        assert!(text.contains("14 or later"), "{text}");
        assert!(check_supported(0).is_err());
    }

    #[test]
    fn versions_print_as_released() {
        assert_eq!(display(140_023), "14.23");
        assert_eq!(display(180_004), "18.4");
        assert_eq!(display(90_624), "9.6.24");
    }
}
