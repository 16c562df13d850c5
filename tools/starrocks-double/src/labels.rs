//! Load labels: the per-database idempotency table of StarRocks' FE.
//!
//! Why it matters: a client that retries an ambiguous load with the same label must get
//! `Label Already Exists` (and `ExistingJobStatus`) instead of a second copy of the rows, and
//! it must learn that dedupe is best-effort, because labels are evicted by age and by count.
//!
//! ```text
//! begin ─▶ PREPARE ─(txn API prepare)─▶ PREPARED ─▶ COMMITTED ─(publish)─▶ VISIBLE
//!             └──────────── failure / rollback / timeout ──────────────▶ ABORTED (reusable)
//! ```

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// The state of the transaction behind a label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnState {
    Prepare,
    Prepared,
    Committed,
    Visible,
    Aborted,
}

impl TxnState {
    /// The name `get_load_state` returns.
    pub fn name(self) -> &'static str {
        match self {
            TxnState::Prepare => "PREPARE",
            TxnState::Prepared => "PREPARED",
            TxnState::Committed => "COMMITTED",
            TxnState::Visible => "VISIBLE",
            TxnState::Aborted => "ABORTED",
        }
    }

    pub fn parse(s: &str) -> Option<TxnState> {
        Some(match s {
            "PREPARE" => TxnState::Prepare,
            "PREPARED" => TxnState::Prepared,
            "COMMITTED" => TxnState::Committed,
            "VISIBLE" => TxnState::Visible,
            "ABORTED" => TxnState::Aborted,
            _ => return None,
        })
    }

    /// `ExistingJobStatus` of a `Label Already Exists` answer.
    pub fn existing_job_status(self) -> &'static str {
        match self {
            TxnState::Prepare | TxnState::Prepared => "RUNNING",
            TxnState::Committed | TxnState::Visible => "FINISHED",
            TxnState::Aborted => "CANCELLED",
        }
    }

    /// VISIBLE and ABORTED are final; only final labels are evicted.
    pub fn is_final(self) -> bool {
        matches!(self, TxnState::Visible | TxnState::Aborted)
    }
}

/// One label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelRecord {
    pub db: String,
    pub label: String,
    pub table: String,
    pub txn_id: i64,
    pub state: TxnState,
    pub created_ms: i64,
    /// When the label reached a final state.
    pub finished_ms: Option<i64>,
}

/// Every label the FE remembers, per database.
#[derive(Debug, Default)]
pub struct LabelBook {
    by_db: HashMap<String, HashMap<String, LabelRecord>>,
}

impl LabelBook {
    pub fn get(&self, db: &str, label: &str) -> Option<&LabelRecord> {
        self.by_db.get(db).and_then(|m| m.get(label))
    }

    pub fn get_mut(&mut self, db: &str, label: &str) -> Option<&mut LabelRecord> {
        self.by_db.get_mut(db).and_then(|m| m.get_mut(label))
    }

    /// Records (or replaces) a label.
    pub fn put(&mut self, rec: LabelRecord) {
        self.by_db
            .entry(rec.db.clone())
            .or_default()
            .insert(rec.label.clone(), rec);
    }

    /// The state that blocks reusing `label`, if any (ABORTED labels may be reused).
    pub fn blocking_state(&self, db: &str, label: &str) -> Option<TxnState> {
        self.get(db, label)
            .map(|r| r.state)
            .filter(|s| *s != TxnState::Aborted)
    }

    /// Forgets every label of a database (DROP DATABASE).
    pub fn drop_db(&mut self, db: &str) {
        self.by_db.remove(db);
    }

    /// Evicts final labels older than `keep_ms`, then the oldest final ones beyond `keep_num`
    /// per database (the count rule ignores age, like the FE). Returns what was evicted.
    pub fn evict(&mut self, now_ms: i64, keep_ms: i64, keep_num: usize) -> Vec<(String, String)> {
        let mut evicted = Vec::new();
        for (db, labels) in &mut self.by_db {
            labels.retain(|label, r| {
                let old = r.state.is_final() && r.finished_ms.is_some_and(|f| now_ms - f > keep_ms);
                if old {
                    evicted.push((db.clone(), label.clone()));
                }
                !old
            });
            let mut finals: Vec<(i64, String)> = labels
                .values()
                .filter(|r| r.state.is_final())
                .map(|r| (r.finished_ms.unwrap_or(r.created_ms), r.label.clone()))
                .collect();
            if finals.len() > keep_num {
                finals.sort();
                let excess = finals.len() - keep_num;
                for (_, label) in finals.into_iter().take(excess) {
                    labels.remove(&label);
                    evicted.push((db.clone(), label));
                }
            }
        }
        evicted
    }

    /// Every label, for persistence checks and tests.
    pub fn len(&self) -> usize {
        self.by_db.values().map(|m| m.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(label: &str, state: TxnState, finished: Option<i64>) -> LabelRecord {
        LabelRecord {
            db: "d".into(),
            label: label.into(),
            table: "t".into(),
            txn_id: 1,
            state,
            created_ms: 0,
            finished_ms: finished,
        }
    }

    #[test]
    fn aborted_labels_do_not_block_reuse() {
        let mut b = LabelBook::default();
        b.put(rec("a", TxnState::Aborted, Some(1)));
        b.put(rec("v", TxnState::Visible, Some(1)));
        assert_eq!(b.blocking_state("d", "a"), None);
        assert_eq!(b.blocking_state("d", "v"), Some(TxnState::Visible));
    }

    #[test]
    fn eviction_by_age_keeps_running_labels() {
        let mut b = LabelBook::default();
        b.put(rec("old", TxnState::Visible, Some(0)));
        b.put(rec("running", TxnState::Prepare, None));
        let gone = b.evict(10_000, 5_000, 100);
        assert_eq!(gone, vec![("d".to_string(), "old".to_string())]);
        assert!(b.get("d", "running").is_some());
    }

    #[test]
    fn eviction_by_count_drops_the_oldest_first() {
        let mut b = LabelBook::default();
        for i in 0..5 {
            b.put(rec(&format!("l{i}"), TxnState::Visible, Some(i)));
        }
        b.evict(10, 1_000_000, 3);
        assert!(b.get("d", "l0").is_none());
        assert!(b.get("d", "l1").is_none());
        assert!(b.get("d", "l4").is_some());
        assert_eq!(b.len(), 3);
    }

    #[test]
    fn existing_job_status_maps_states() {
        assert_eq!(TxnState::Prepare.existing_job_status(), "RUNNING");
        assert_eq!(TxnState::Committed.existing_job_status(), "FINISHED");
        assert_eq!(TxnState::Visible.existing_job_status(), "FINISHED");
    }
}
