//! Truncates already applied to StarRocks, so that a replayed one is not applied again.
//!
//! Why: every other change dbmazz writes is idempotent (upserts keyed by primary key, guarded
//! by `merge_condition` on the commit LSN, under deterministic labels), but `TRUNCATE TABLE` is
//! not: run again after later rows were loaded, it removes them, and their loads, sent again
//! under the same labels, come back `Label Already Exists` and count as done. A truncate is
//! replayed whenever a batch is retried whole after an ambiguous failure, and after a restart
//! (PostgreSQL resends everything after the last checkpoint). So the sink records, per target
//! table, the LSN of the last truncate it applied, and:
//!
//! - skips a truncate whose LSN is at or before the recorded one (it was applied already);
//! - skips a row change of that table whose LSN is before the recorded one: it precedes the
//!   truncate, which removed it, and loading it again (under a new label if the replay cut its
//!   batches differently) would bring back a row the source no longer has. A truncate takes an
//!   `ACCESS EXCLUSIVE` lock, so every change of the table made by another transaction lies
//!   wholly before the truncate record or wholly after its commit, and the record's own LSN
//!   (unique in the WAL; a transaction may truncate twice, so not its commit LSN) orders the
//!   changes of its own transaction. Snapshot rows are not streamed changes and are left alone.
//!
//! The record is kept in memory (retries) and in a small dbmazz-owned primary-key table in the
//! target database, keyed by slot and table (restarts, `kill -9`):
//!
//! ```sql
//! CREATE TABLE IF NOT EXISTS dbmazz_truncates (slot_name VARCHAR(128) NOT NULL,
//!   table_name VARCHAR(256) NOT NULL, truncate_lsn BIGINT NOT NULL, recorded_at DATETIME NULL)
//!   PRIMARY KEY(slot_name, table_name) DISTRIBUTED BY HASH(slot_name)
//! ```
//!
//! It lives in StarRocks because that is where the truncate happens and what the sink can
//! reach; the checkpoint table in PostgreSQL belongs to the source side. Its encoded key stays
//! within StarRocks' 128-byte primary-key limit: slot and table names are PostgreSQL
//! identifiers of at most 63 bytes (63 + 2 + 63).
//!
//! **The window between the TRUNCATE and its record** (a crash, or an error or lost answer on
//! the record's `INSERT`): the truncate is applied again on the next attempt, which is
//! harmless. The sink handles a batch's events in order and one at a time, and writes the
//! record right after the TRUNCATE returns and before it sends anything else, so while the
//! record is missing no load of that table that follows the truncate in the stream has been
//! sent; nor has a later batch, or the checkpoint that would stop PostgreSQL from resending the
//! truncate. Running the truncate again therefore removes only rows that precede it, which it
//! removed once already. The in-memory record is updated only once the `INSERT` succeeded, so
//! a retry after a failed `INSERT` truncates again (harmless, as above) and writes it again.
//! Records only grow: a truncate is applied only when its LSN is above the recorded one.
//!
//! LSNs are comparable only within one slot's stream. Before the slot is created (first run,
//! or after it was dropped), the records of the slot name are forgotten
//! ([`TruncateLog::forget`]): no change from before a new slot is ever sent, and a record left
//! by an earlier slot of that name, on another source cluster say, could otherwise skip real
//! truncates and rows. Forgetting comes first, so a crash between the two forgets again.

use std::collections::HashMap;

use crate::starrocks::ddl::{Ddl, DdlError};
use crate::starrocks::encode::synced_at_now;
use crate::Lsn;

/// The table of applied truncates, in the target database.
pub const LOG_TABLE: &str = "dbmazz_truncates";

/// Reading or writing the truncate log failed.
#[derive(Debug, thiserror::Error)]
pub enum TruncateLogError {
    /// The log table could not be created or read at start.
    #[error(
        "cannot create or read {db}.{LOG_TABLE}, where dbmazz records the truncates it applied \
         (TRUNCATE_POLICY=truncate): {source}; grant CREATE TABLE, SELECT, INSERT and DELETE on \
         database {db} to the StarRocks user"
    )]
    Open {
        /// Target database.
        db: String,
        /// Cause.
        source: DdlError,
    },
    /// A row of the log holds something that is not an LSN.
    #[error(
        "{db}.{LOG_TABLE} holds {value:?} as the truncate LSN of table '{table}' for slot {slot}, \
         which is not an LSN; delete that row (the truncate may then be applied again) and restart"
    )]
    BadRow {
        /// Target database.
        db: String,
        /// Slot.
        slot: String,
        /// Target table.
        table: String,
        /// What the row holds.
        value: String,
    },
    /// Recording an applied truncate failed; the next attempt truncates again and retries.
    #[error(
        "StarRocks table '{table}' was truncated (truncate at LSN {lsn}), but recording that in \
         {db}.{LOG_TABLE} failed: {source}; the batch is retried, and applying the truncate again \
         before anything else is loaded is harmless"
    )]
    Record {
        /// Target database.
        db: String,
        /// Target table.
        table: String,
        /// LSN of the truncate.
        lsn: Lsn,
        /// Cause.
        source: DdlError,
    },
    /// An LSN does not fit the log's BIGINT column.
    #[error(
        "the truncate of table '{table}' is at LSN {lsn}, beyond what {LOG_TABLE}.truncate_lsn \
         (BIGINT) holds; use TRUNCATE_POLICY=stop and truncate the StarRocks table yourself"
    )]
    LsnRange {
        /// Target table.
        table: String,
        /// LSN of the truncate.
        lsn: Lsn,
    },
    /// Forgetting the records of a new slot failed.
    #[error(
        "cannot delete the rows of slot {slot} from {db}.{LOG_TABLE} (its slot was created anew, \
         so they no longer apply): {source}; delete them yourself (DELETE FROM {db}.{LOG_TABLE} \
         WHERE slot_name = '{slot}') if this persists"
    )]
    Forget {
        /// Target database.
        db: String,
        /// Slot.
        slot: String,
        /// Cause.
        source: DdlError,
    },
}

impl TruncateLogError {
    /// Whether retrying later may help.
    pub fn is_transient(&self) -> bool {
        match self {
            TruncateLogError::Open { source, .. }
            | TruncateLogError::Record { source, .. }
            | TruncateLogError::Forget { source, .. } => source.is_transient(),
            TruncateLogError::BadRow { .. } | TruncateLogError::LsnRange { .. } => false,
        }
    }
}

/// The LSN of the last truncate applied to each target table, for one slot.
#[derive(Debug, Default)]
pub struct TruncateLog {
    slot: String,
    /// Target (StarRocks) table name → LSN of its last applied truncate.
    applied: HashMap<String, Lsn>,
}

impl TruncateLog {
    /// Creates the log table if needed and reads the records of `slot`.
    pub async fn open(
        ddl: &Ddl,
        slot: &str,
        replication_num: Option<u32>,
    ) -> Result<TruncateLog, TruncateLogError> {
        let open = |source| TruncateLogError::Open {
            db: ddl.db().to_owned(),
            source,
        };
        ddl.create_truncate_log(LOG_TABLE, replication_num)
            .await
            .map_err(open)?;
        let rows = ddl.truncate_log_rows(LOG_TABLE, slot).await.map_err(open)?;
        let mut log = TruncateLog {
            slot: slot.to_owned(),
            applied: HashMap::new(),
        };
        for (table, value) in rows {
            let lsn = parse_lsn(&value).ok_or_else(|| TruncateLogError::BadRow {
                db: ddl.db().to_owned(),
                slot: slot.to_owned(),
                table: table.clone(),
                value,
            })?;
            log.note(table, lsn);
        }
        Ok(log)
    }

    /// The LSN of the last truncate applied to `table`.
    pub fn applied(&self, table: &str) -> Option<Lsn> {
        self.applied.get(table).copied()
    }

    /// Whether the truncate of `table` at `lsn` was applied already.
    pub fn already_applied(&self, table: &str, lsn: Lsn) -> bool {
        self.applied(table).is_some_and(|done| lsn <= done)
    }

    /// Whether a streamed change of `table` at `lsn` precedes a truncate applied already (and
    /// so must not be loaded again).
    pub fn superseded(&self, table: &str, lsn: Lsn) -> bool {
        self.applied(table).is_some_and(|done| lsn < done)
    }

    /// Records that `table` was truncated at `lsn`: in StarRocks first, then here.
    pub async fn record(
        &mut self,
        ddl: &Ddl,
        table: &str,
        lsn: Lsn,
    ) -> Result<(), TruncateLogError> {
        let value = i64::try_from(lsn.0).map_err(|_| TruncateLogError::LsnRange {
            table: table.to_owned(),
            lsn,
        })?;
        ddl.record_truncate(LOG_TABLE, &self.slot, table, value, &synced_at_now())
            .await
            .map_err(|source| TruncateLogError::Record {
                db: ddl.db().to_owned(),
                table: table.to_owned(),
                lsn,
                source,
            })?;
        self.note(table.to_owned(), lsn);
        Ok(())
    }

    fn note(&mut self, table: String, lsn: Lsn) {
        let done = self.applied.entry(table).or_default();
        *done = (*done).max(lsn);
    }

    /// Forgets every record of the slot, here and in StarRocks (its slot is created anew).
    pub async fn forget(&mut self, ddl: &Ddl) -> Result<(), TruncateLogError> {
        forget_stored(ddl, &self.slot).await?;
        self.applied.clear();
        Ok(())
    }
}

/// Deletes the records of `slot` from the log table if there is one: also under
/// `TRUNCATE_POLICY=stop`, so that records of an earlier slot are not trusted should the policy
/// later become `truncate` again.
pub async fn forget_stored(ddl: &Ddl, slot: &str) -> Result<(), TruncateLogError> {
    let forget = |source| TruncateLogError::Forget {
        db: ddl.db().to_owned(),
        slot: slot.to_owned(),
        source,
    };
    if ddl.table(LOG_TABLE).await.map_err(forget)?.is_none() {
        return Ok(());
    }
    ddl.clear_truncate_log(LOG_TABLE, slot)
        .await
        .map_err(forget)
}

/// The LSN a `truncate_lsn` value holds (a non-negative BIGINT as text).
fn parse_lsn(value: &str) -> Option<Lsn> {
    value.trim().parse::<i64>().ok().and_then(|v| {
        let v = u64::try_from(v).ok()?;
        Some(Lsn(v))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(records: &[(&str, u64)]) -> TruncateLog {
        let mut log = TruncateLog::default();
        for (t, lsn) in records {
            log.note((*t).to_owned(), Lsn(*lsn));
        }
        log
    }

    #[test]
    fn a_truncate_at_or_before_the_record_is_already_applied() {
        let log = log(&[("t", 100)]);
        assert!(log.already_applied("t", Lsn(100)));
        assert!(log.already_applied("t", Lsn(40)));
        assert!(!log.already_applied("t", Lsn(101)));
        assert!(!log.already_applied("other", Lsn(1)));
    }

    #[test]
    fn only_changes_before_the_applied_truncate_are_superseded() {
        let log = log(&[("t", 100)]);
        assert!(log.superseded("t", Lsn(99)));
        assert!(!log.superseded("t", Lsn(101)));
        assert!(!log.superseded("u", Lsn(99)));
    }

    #[test]
    fn records_never_move_backwards() {
        let log = log(&[("t", 100), ("t", 50)]);
        assert_eq!(log.applied("t"), Some(Lsn(100)));
    }

    #[test]
    fn stored_values_parse_as_lsns_or_not_at_all() {
        assert_eq!(parse_lsn("42"), Some(Lsn(42)));
        assert_eq!(
            parse_lsn(" 9223372036854775807 "),
            Some(Lsn(i64::MAX as u64))
        );
        assert_eq!(parse_lsn("-1"), None);
        assert_eq!(parse_lsn("0/2A"), None);
    }
}
