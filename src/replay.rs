//! ListDeadLetters and ReplayDeadLetters: reading `dbmazz_dead_letters` and loading the current
//! source row of each letter's key once its cause is fixed.
//!
//! Why it re-reads the source instead of resending the letter's row: the row in a letter is what
//! StarRocks refused at the time, and changes to its key may have streamed since. The replay
//! reads the key's row as it is now and stamps it the way the snapshot stamps copied rows: with
//! a WAL position read just before the rows are read (in one REPEATABLE READ transaction), so
//! that `merge_condition` on `dbmazz_cdc_version` lets any change committed after the read win
//! over the replayed row. A key that no longer exists in the source is loaded as a soft delete
//! with that version. Rows StarRocks still refuses keep their letter open with the new reason;
//! the others are marked `resolved`.
//!
//! This lives beside the daemon rather than in the sink: it needs the source (to read rows) and
//! the sink (to load them), and runs on its own connections, outside the pipeline.
//!
//! The one window: a transaction whose commit record was written just before the position is
//! read but which was not yet visible to the read (PostgreSQL makes a commit visible a moment
//! after writing its record) carries a lower version than the replayed row, so its change to
//! the key would lose. The window is the time between those two steps of one commit.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures_util::{pin_mut, TryStreamExt};

use crate::config::{quote_ident, quote_literal, StarRocksConfig};
use crate::job::{JobHandle, SourceCatalog};
use crate::pipeline::change::TableSchema;
use crate::postgres::conninfo::PgConnInfo;
use crate::postgres::snapshot::{key_types, table_schema};
use crate::postgres::tls::connect_sql_bounded;
use crate::starrocks::ddl::Ddl;
use crate::starrocks::encode::{synced_at_now, BodyPool, SnapshotBody};
use crate::starrocks::rejects::{self, DeadLetter, DeadLetters, LetterFilter};
use crate::starrocks::sink::{column_targets, key_names};
use crate::starrocks::stream_load::{LoadOutcome, LoadRequest, StreamLoader};
use crate::starrocks::types::AUDIT_COLUMNS;
use crate::value::{self, JsonFlavor};
use crate::Lsn;

/// Size at which a replay cuts a load body.
const REPLAY_BODY_BYTES: usize = 16 << 20;

/// Most letters a ListDeadLetters call returns when it names no limit.
pub const DEFAULT_LIST_LIMIT: u32 = 1000;

/// A ListDeadLetters or ReplayDeadLetters call failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The job does not write to StarRocks.
    #[error("dead letters exist only with SINK_TYPE=starrocks")]
    NoStarRocks,
    /// The job has not read its source tables yet.
    #[error(
        "the job has not finished setup yet (its source tables are not read); try again once \
         Health says it is replicating"
    )]
    NotReady,
    /// A StarRocks statement failed.
    #[error("{0}")]
    StarRocks(String),
    /// PostgreSQL failed.
    #[error("reading the source rows of table {table}: {message}")]
    Source {
        /// Source table.
        table: String,
        /// What failed.
        message: String,
    },
    /// An argument is wrong.
    #[error("{0}")]
    Invalid(String),
}

/// What a replay did (or, in a dry run, would do) per letter.
#[derive(Debug, Default)]
pub struct ReplayReport {
    /// The version the replayed rows carry.
    pub version: Lsn,
    /// Letters the filter selected (open ones only).
    pub letters: Vec<DeadLetter>,
    /// Letters loaded and marked resolved (dry run: that would be loaded).
    pub resolved: u32,
    /// Of those, keys gone from the source, loaded as soft deletes.
    pub deleted: u32,
    /// Letters StarRocks still refuses, or whose row could not be read.
    pub failed: u32,
}

/// Lists and replays one job's dead letters.
pub struct Replayer {
    source: PgConnInfo,
    statement_timeout: Option<std::time::Duration>,
    sink: Option<Arc<StarRocksConfig>>,
    job: JobHandle,
}

impl Replayer {
    /// A replayer for `job`, reading `source` and loading into `sink` (None: NDJSON).
    pub fn new(
        source: PgConnInfo,
        statement_timeout: Option<std::time::Duration>,
        sink: Option<StarRocksConfig>,
        job: JobHandle,
    ) -> Replayer {
        Replayer {
            source,
            statement_timeout,
            sink: sink.map(Arc::new),
            job,
        }
    }

    fn sink(&self) -> Result<(Arc<StarRocksConfig>, Ddl, DeadLetters), ReplayError> {
        let cfg = self.sink.clone().ok_or(ReplayError::NoStarRocks)?;
        let ddl = Ddl::new(&cfg.mysql_url, &cfg.database)
            .map_err(|e| ReplayError::StarRocks(e.to_string()))?;
        let letters = DeadLetters::for_slot(self.job.slot_name());
        Ok((cfg, ddl, letters))
    }

    /// The letters `filter` selects, newest first, and how many it selects in all.
    pub async fn list(&self, filter: &LetterFilter) -> Result<(Vec<DeadLetter>, u64), ReplayError> {
        let (_, ddl, letters) = self.sink()?;
        if ddl
            .table(rejects::DEAD_LETTER_TABLE)
            .await
            .map_err(|e| ReplayError::StarRocks(e.to_string()))?
            .is_none()
        {
            return Ok((Vec::new(), 0));
        }
        letters
            .list(&ddl, filter)
            .await
            .map_err(|e| ReplayError::StarRocks(e.to_string()))
    }

    /// Replays the open letters of `tables` and `keys` (empty: all).
    pub async fn replay(
        &self,
        tables: Vec<String>,
        keys: Vec<String>,
        dry_run: bool,
    ) -> Result<ReplayReport, ReplayError> {
        let (cfg, ddl, letters) = self.sink()?;
        let catalog = self.job.source_catalog().ok_or(ReplayError::NotReady)?;
        let filter = LetterFilter {
            tables,
            keys,
            status: Some("open".into()),
            limit: u32::MAX,
        };
        let (selected, _) = self.list(&filter).await?;
        let mut report = ReplayReport::default();
        if selected.is_empty() {
            return Ok(report);
        }
        let mut by_table: HashMap<String, Vec<DeadLetter>> = HashMap::new();
        for l in selected {
            by_table.entry(l.source_table.clone()).or_default().push(l);
        }
        let mut client = connect_sql_bounded(&self.source, self.statement_timeout)
            .await
            .map_err(|e| ReplayError::Source {
                table: "(all)".into(),
                message: e.to_string(),
            })?;
        // Read before the rows' snapshot is taken: every change the read does not see commits
        // later, with a higher version (see the module doc for the one window).
        let version: String = client
            .query_one("SELECT pg_current_wal_lsn()::text", &[])
            .await
            .map_err(|e| ReplayError::Source {
                table: "(all)".into(),
                message: e.to_string(),
            })?
            .get(0);
        let version: Lsn = version.parse().map_err(|_| ReplayError::Source {
            table: "(all)".into(),
            message: format!("pg_current_wal_lsn() gave {version:?}"),
        })?;
        report.version = version;
        let mut key_type_names: HashMap<String, Vec<String>> = HashMap::new();
        for table in by_table.keys() {
            if let Some(source) = catalog.tables.iter().find(|t| &t.name.to_string() == table) {
                let types = key_types(&client, source)
                    .await
                    .map_err(|e| ReplayError::Source {
                        table: table.clone(),
                        message: e.to_string(),
                    })?;
                key_type_names.insert(table.clone(), types);
            }
        }
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(|e| ReplayError::Source {
                table: "(all)".into(),
                message: e.to_string(),
            })?;
        let loader = StreamLoader::new(cfg.clone());
        let now = synced_at_now();
        let mut outcome: Vec<DeadLetter> = Vec::new();
        let mut tables: Vec<_> = by_table.into_iter().collect();
        tables.sort_by(|a, b| a.0.cmp(&b.0));
        for (table_text, table_letters) in tables {
            let Some(source) = catalog
                .tables
                .iter()
                .find(|t| t.name.to_string() == table_text)
            else {
                report.failed += table_letters.len() as u32;
                for mut l in table_letters {
                    l.reason = format!(
                        "{} (replay: table {table_text} is not replicated by this job)",
                        l.reason
                    );
                    l.last_seen = now.clone();
                    outcome.push(l);
                }
                continue;
            };
            let schema = Arc::new(table_schema(source, &catalog.types));
            let target = ddl
                .table(&source.name.name)
                .await
                .map_err(|e| ReplayError::StarRocks(e.to_string()))?
                .ok_or_else(|| {
                    ReplayError::StarRocks(format!(
                        "Table '{}' not found in StarRocks",
                        source.name.name
                    ))
                })?;
            let targets = column_targets(
                &cfg,
                &source.name,
                &target,
                source.columns.iter().map(|c| c.name.as_str()),
            )
            .map_err(|e| ReplayError::StarRocks(e.to_string()))?;
            let key_targets = key_names(&schema, Some(&targets));
            let types = key_type_names.remove(&table_text).unwrap_or_default();
            let mut body = SnapshotBody::new(
                schema.clone(),
                &targets,
                version,
                &now,
                REPLAY_BODY_BYTES,
                BodyPool::default(),
                cfg.snapshot_csv,
            );
            let mut encoded = Vec::new();
            let mut gone: Vec<(DeadLetter, Vec<Option<String>>)> = Vec::new();
            let mut found: Vec<DeadLetter> = Vec::new();
            for mut l in table_letters {
                let key = match key_values(&l.key, &key_targets) {
                    Ok(k) => k,
                    Err(e) => {
                        report.failed += 1;
                        l.reason = format!("{} (replay: {e})", l.reason);
                        l.last_seen = now.clone();
                        outcome.push(l);
                        continue;
                    }
                };
                let sql = row_copy_sql(&schema, &source.source_name.quoted(), &types, &key);
                let lines = copy_lines(&tx, &sql)
                    .await
                    .map_err(|e| ReplayError::Source {
                        table: table_text.clone(),
                        message: e,
                    })?;
                match lines.as_slice() {
                    [] if !key_text_round_trips(&schema) => {
                        report.failed += 1;
                        l.reason = format!(
                            "{} (replay: no source row matches the key, and the key's type does \
                             not let dbmazz tell a deleted row from a key it could not match; \
                             touch the row in PostgreSQL so that it streams again)",
                            l.reason
                        );
                        l.last_seen = now.clone();
                        outcome.push(l);
                    }
                    [] => gone.push((l, key)),
                    [line] => {
                        body.push_line(line).map_err(|e| ReplayError::Source {
                            table: table_text.clone(),
                            message: e.to_string(),
                        })?;
                        found.push(l);
                        if body.is_full() {
                            encoded.extend(body.take());
                        }
                    }
                    _ => {
                        report.failed += 1;
                        l.reason = format!(
                            "{} (replay: the key matches {} source rows)",
                            l.reason,
                            lines.len()
                        );
                        l.last_seen = now.clone();
                        outcome.push(l);
                    }
                }
            }
            if dry_run {
                report.resolved += (found.len() + gone.len()) as u32;
                report.deleted += gone.len() as u32;
                report.letters.extend(found);
                report.letters.extend(gone.into_iter().map(|(l, _)| l));
                continue;
            }
            // Load the rows found, then the soft deletes of the keys gone.
            let mut refused: HashMap<String, String> = HashMap::new();
            let mut loads: Vec<(LoadRequest, bool)> = Vec::new();
            while let Some(e) = body.take() {
                encoded.push(e);
            }
            for e in encoded {
                loads.push((
                    LoadRequest {
                        table: source.name.name.clone(),
                        label: replay_label(self.job.slot_name(), version, e.fingerprint, 0),
                        partial_columns: None,
                        csv_columns: e.layout.clone(),
                        body: e.body.clone(),
                    },
                    true,
                ));
            }
            if !gone.is_empty() {
                let (delete_body, header) =
                    soft_deletes(&schema, &key_targets, &gone, version, &now)
                        .map_err(|e| ReplayError::Invalid(e.to_string()))?;
                loads.push((
                    LoadRequest {
                        table: source.name.name.clone(),
                        label: replay_label(
                            self.job.slot_name(),
                            version,
                            fingerprint(&delete_body),
                            1,
                        ),
                        partial_columns: Some(header),
                        csv_columns: None,
                        body: delete_body.into(),
                    },
                    false,
                ));
            }
            for (req, snapshot) in loads {
                let meta = LoadRequest {
                    body: bytes::Bytes::new(),
                    ..req.clone()
                };
                let body = req.body.clone();
                let (result, _) = loader.load(req).await;
                match result {
                    LoadOutcome::Committed { .. } => {}
                    LoadOutcome::Rejected(rejection) => {
                        let isolated = rejects::isolate(
                            &loader,
                            &cfg,
                            &meta,
                            &body,
                            &table_text,
                            &key_targets,
                            snapshot,
                            rejection,
                        )
                        .await;
                        if let Some((failed, label, _)) = isolated.failed {
                            return Err(ReplayError::StarRocks(format!(
                                "replay load {label} of table {table_text} failed: {failed:?}; \
                                 nothing was marked, run the replay again"
                            )));
                        }
                        for r in isolated.refused {
                            refused.insert(r.key, r.reason);
                        }
                    }
                    other => {
                        return Err(ReplayError::StarRocks(format!(
                            "replay load {} of table {table_text} failed: {other:?}; nothing \
                             was marked, run the replay again",
                            meta.label
                        )))
                    }
                }
            }
            let deleted_ids: Vec<String> = gone.iter().map(|(l, _)| l.id.clone()).collect();
            for mut l in found.into_iter().chain(gone.into_iter().map(|(l, _)| l)) {
                match refused.get(&l.key) {
                    Some(reason) => {
                        report.failed += 1;
                        l.reason = format!("replay at version {version}: {reason}");
                        l.last_seen = now.clone();
                    }
                    None => {
                        report.resolved += 1;
                        if deleted_ids.contains(&l.id) {
                            report.deleted += 1;
                        }
                        l.status = "resolved".into();
                        l.resolved_at = Some(now.clone());
                    }
                }
                outcome.push(l);
            }
        }
        drop(tx);
        if dry_run {
            report.letters.extend(outcome);
            return Ok(report);
        }
        letters
            .update(&ddl, &outcome)
            .await
            .map_err(|e| ReplayError::StarRocks(e.to_string()))?;
        let m = self.job.metrics();
        m.dead_letters_resolved_total
            .fetch_add(u64::from(report.resolved), Ordering::Relaxed);
        if let Ok(open) = letters.count_open(&ddl).await {
            m.dead_letters_open.store(open, Ordering::Relaxed);
        }
        tracing::info!(
            resolved = report.resolved,
            deleted = report.deleted,
            failed = report.failed,
            version = %version,
            "replayed dead letters"
        );
        report.letters = outcome;
        Ok(report)
    }
}

impl SourceCatalog {
    /// Whether `table` (`schema.table`) is one of the job's tables.
    pub fn has(&self, table: &str) -> bool {
        self.tables.iter().any(|t| t.name.to_string() == table)
    }
}

/// Whether every key column has a type whose StarRocks text parses back to the same value in
/// PostgreSQL, so that "no row matches" means the row is gone (and a soft delete is right).
fn key_text_round_trips(schema: &TableSchema) -> bool {
    // int2, int4, int8, text, varchar, bpchar, uuid, numeric, date, timestamp
    const SAFE: [u32; 10] = [21, 23, 20, 25, 1043, 1042, 2950, 1700, 1082, 1114];
    schema
        .key
        .iter()
        .all(|&k| SAFE.contains(&schema.columns[k].type_oid))
}

/// The key values of a letter's `row_key`, in the order of `names` (the target's key columns).
fn key_values(key: &str, names: &[String]) -> Result<Vec<Option<String>>, String> {
    let object: serde_json::Map<String, serde_json::Value> = serde_json::from_str(key)
        .map_err(|e| format!("the key {key} is not a JSON object: {e}"))?;
    names
        .iter()
        .map(|n| match object.get(n) {
            Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Ok(Some(other.to_string())),
            None => Err(format!("the key {key} has no column {n:?}")),
        })
        .collect()
}

/// `COPY` of the row whose key is `key` (text values cast to the key columns' types).
fn row_copy_sql(
    schema: &TableSchema,
    quoted_table: &str,
    types: &[String],
    key: &[Option<String>],
) -> String {
    let cols: Vec<String> = schema
        .columns
        .iter()
        .map(|c| quote_ident(&c.name))
        .collect();
    let conds: Vec<String> = schema
        .key
        .iter()
        .zip(key)
        .zip(types)
        .map(|((&k, v), t)| {
            let col = quote_ident(&schema.columns[k].name);
            match v {
                Some(v) => format!("{col} = {}::{t}", quote_literal(v)),
                None => format!("{col} IS NULL"),
            }
        })
        .collect();
    format!(
        "COPY (SELECT {} FROM {quoted_table} WHERE {}) TO STDOUT",
        cols.join(", "),
        conds.join(" AND ")
    )
}

/// The lines a `COPY ... TO STDOUT` gives.
async fn copy_lines(
    tx: &tokio_postgres::Transaction<'_>,
    sql: &str,
) -> Result<Vec<Vec<u8>>, String> {
    let copy = tx.copy_out(sql).await.map_err(|e| e.to_string())?;
    pin_mut!(copy);
    let mut all = Vec::new();
    while let Some(data) = copy.try_next().await.map_err(|e| e.to_string())? {
        all.extend_from_slice(&data);
    }
    Ok(all
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect())
}

/// A JSON body of soft deletes for the keys gone from the source, and its `columns` header.
fn soft_deletes(
    schema: &TableSchema,
    key_targets: &[String],
    gone: &[(DeadLetter, Vec<Option<String>>)],
    version: Lsn,
    synced_at: &str,
) -> Result<(Vec<u8>, String), value::ValueError> {
    let mut out = b"[".to_vec();
    for (i, (_, key)) in gone.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'{');
        for ((&k, name), v) in schema.key.iter().zip(key_targets).zip(key) {
            value::write_escaped(&mut out, name.as_bytes());
            out.push(b':');
            match v {
                Some(text) => {
                    value::write_json_as(
                        &mut out,
                        schema.columns[k].kind,
                        text.as_bytes(),
                        JsonFlavor::StarRocks,
                    )?;
                }
                None => out.extend_from_slice(b"null"),
            }
            out.push(b',');
        }
        out.extend_from_slice(
            format!(
                "\"dbmazz_op_type\":2,\"dbmazz_is_deleted\":true,\"dbmazz_synced_at\":\"{synced_at}\",\"dbmazz_cdc_version\":{}}}",
                version.0
            )
            .as_bytes(),
        );
    }
    out.push(b']');
    let header: Vec<String> = key_targets
        .iter()
        .map(|n| format!("`{}`", n.replace('`', "``")))
        .chain(AUDIT_COLUMNS.iter().map(|(n, _)| n.to_string()))
        .collect();
    Ok((out, header.join(",")))
}

fn fingerprint(body: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in body {
        h = (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
    }
    h
}

/// A replay load's label: slot, version, what it holds.
fn replay_label(slot: &str, version: Lsn, fingerprint: u64, part: u8) -> String {
    let slot: String = slot.chars().take(64).collect();
    format!(
        "dbmazz_{slot}_replay_{:X}_{part}_{fingerprint:016X}",
        version.0
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_come_back_in_the_order_of_the_key_columns() {
        assert_eq!(
            key_values(r#"{"b":"x","a":"5"}"#, &["a".into(), "b".into()]),
            Ok(vec![Some("5".into()), Some("x".into())])
        );
        assert!(key_values(r#"{"a":"5"}"#, &["a".into(), "b".into()]).is_err());
        assert!(key_values("not json", &["a".into()]).is_err());
    }

    #[test]
    fn replay_labels_are_bounded() {
        let l = replay_label(&"s".repeat(63), Lsn(u64::MAX), u64::MAX, 1);
        assert!(l.len() <= 128, "{}", l.len());
    }
}
