//! `SINK_TYPE=starrocks`: writes batches into StarRocks primary-key tables.
//!
//! At start it checks the cluster and every target table (exists, is a primary-key table), adds
//! the audit columns and any PostgreSQL column the target lacks (waiting for each schema-change
//! job), or creates missing tables when `CREATE_TABLES=true`. For each batch it splits every
//! table's changes at truncates and schema changes, collapses them per key, and sends one load
//! per column set. A batch is durable only when every load of every table committed.
//!
//! Labels are `<prefix>_<table>_<first LSN>_<last LSN>_<group>_<fingerprint of keys and
//! versions>`: the same changes always form the same loads with the same labels, so a retry after an ambiguous failure (commit, then the
//! connection dropped) is recognised by StarRocks as already done.
//!
//! A truncate is not idempotent, so under `TRUNCATE_POLICY=truncate` the sink keeps a
//! [`TruncateLog`]: a replayed truncate that was applied already is skipped, and so are the
//! replayed changes that precede it (see `truncates.rs`).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::config::{OnReject, StarRocksConfig, TableName, TruncatePolicy};
use crate::metrics::{now_unix_us, Metrics, SchemaEvent};
use crate::pipeline::change::{CatalogColumn, TableCatalog};
use crate::pipeline::change::{
    EncodedRows, Event, Op, RowChange, SchemaChange, TableSchema, TruncateChange,
};
use crate::pipeline::sink::{ErrorKind, Sink, SinkError, SnapshotEncoders};
use crate::starrocks::cluster::Cluster;
use crate::starrocks::ddl::{Ddl, DdlError, TargetTable};
use crate::starrocks::encode::{synced_at_now, BodyPool, Segment, StarRocksSnapshotEncoders};
use crate::starrocks::evolve;
use crate::starrocks::rejects::{self, DeadLetterError, DeadLetters, Refused, Rejection};
use crate::starrocks::stream_load::{LoadOutcome, LoadRequest, StreamLoader};
use crate::starrocks::target::{ColumnTargets, TargetColumn};
use crate::starrocks::truncates::{self, TruncateLog, TruncateLogError};
use crate::starrocks::types::{builtin_array_elem, starrocks_type, AUDIT_COLUMNS};

/// Writes change batches into StarRocks.
pub struct StarRocksSink {
    cfg: Arc<StarRocksConfig>,
    loader: StreamLoader,
    ddl: Ddl,
    label_prefix: String,
    /// The replication slot (the truncate log's rows are its).
    slot: String,
    /// PostgreSQL table → its StarRocks columns (names as StarRocks has them, ARRAY depths).
    targets: HashMap<TableName, Arc<ColumnTargets>>,
    /// What the cluster is (checks for columns added mid-stream).
    cluster: Cluster,
    metrics: Arc<Metrics>,
    body: Vec<u8>,
    /// The truncates applied so far (`TRUNCATE_POLICY=truncate` only).
    truncates: Option<TruncateLog>,
    /// Where refused rows go (`ON_REJECT=dead_letter` only).
    dead_letters: Option<DeadLetters>,
}

/// A sink error of the kind `transient` says, carrying `e`.
fn classified(transient: bool, e: impl std::error::Error + Send + Sync + 'static) -> SinkError {
    let kind = if transient {
        ErrorKind::Transient
    } else {
        ErrorKind::Definite
    };
    SinkError::from_cause(kind, e)
}

fn ddl_error(e: DdlError) -> SinkError {
    classified(e.is_transient(), e)
}

fn truncate_log_error(e: TruncateLogError) -> SinkError {
    classified(e.is_transient(), e)
}

fn dead_letter_error(e: DeadLetterError) -> SinkError {
    classified(e.is_transient(), e)
}

/// At most this many refused rows are named in a stop error (all are counted).
const NAMED_REFUSALS: usize = 10;

impl StarRocksSink {
    /// Checks and prepares the target tables.
    pub async fn connect(
        cfg: StarRocksConfig,
        slot: &str,
        tables: &[TableCatalog],
        metrics: Arc<Metrics>,
    ) -> Result<Self, SinkError> {
        let cfg = Arc::new(cfg);
        let ddl = Ddl::new(&cfg.mysql_url, &cfg.database).map_err(ddl_error)?;
        let cluster = Cluster::probe(&ddl, &cfg).await.map_err(ddl_error)?;
        tracing::info!(
            version = %cluster.version_text,
            run_mode = ?cluster.run_mode,
            alive_backends = ?cluster.alive_backends,
            database = %cfg.database,
            "connected to StarRocks"
        );
        cluster
            .check(&cfg)
            .map_err(|e| SinkError::from_cause(ErrorKind::Definite, e))?;
        for t in tables {
            cluster
                .check_columns(&cfg, &t.name.to_string(), &t.columns)
                .map_err(|e| SinkError::from_cause(ErrorKind::Definite, e))?;
        }
        let replication_num = cluster.replication_num(&cfg);
        let mut seen: HashMap<&str, &TableName> = HashMap::new();
        let mut targets = HashMap::new();
        for t in tables {
            if let Some(other) = seen.insert(t.name.name.as_str(), &t.name) {
                return Err(SinkError::definite(format!(
                    "tables {other} and {} would both load into StarRocks table '{}'; replicate them with separate jobs",
                    t.name, t.name.name
                )));
            }
            let columns = prepare_table(&ddl, &cfg, t, replication_num).await?;
            targets.insert(t.name.clone(), Arc::new(columns));
        }
        let truncates = match cfg.truncate_policy {
            TruncatePolicy::Truncate => Some(
                TruncateLog::open(&ddl, slot, replication_num)
                    .await
                    .map_err(truncate_log_error)?,
            ),
            TruncatePolicy::Stop => None,
        };
        let dead_letters = match cfg.on_reject {
            OnReject::DeadLetter => Some(
                DeadLetters::open(&ddl, slot, replication_num)
                    .await
                    .map_err(dead_letter_error)?,
            ),
            OnReject::Stop => None,
        };
        if let Some(letters) = &dead_letters {
            if let Ok(open) = letters.count_open(&ddl).await {
                metrics.dead_letters_open.store(open, Ordering::Relaxed);
                if open > 0 {
                    tracing::warn!(
                        open,
                        "{}.{} holds open dead letters of this slot: rows StarRocks refused; \
                         fix their cause and run ReplayDeadLetters",
                        cfg.database,
                        rejects::DEAD_LETTER_TABLE
                    );
                }
            }
        }
        Ok(StarRocksSink {
            loader: StreamLoader::new(cfg.clone()),
            cfg,
            ddl,
            label_prefix: format!("dbmazz_{slot}"),
            slot: slot.to_owned(),
            targets,
            cluster,
            metrics,
            body: Vec::with_capacity(1 << 20),
            truncates,
            dead_letters,
        })
    }

    async fn send_segment(&mut self, seg: Segment, synced_at: &str) -> Result<(), SinkError> {
        if seg.is_empty() {
            return Ok(());
        }
        let table = seg.table().clone();
        for (group, (sig, rows)) in seg.groups().into_iter().enumerate() {
            let first = rows
                .iter()
                .map(|&i| seg.rows()[i].first_lsn)
                .min()
                .unwrap_or_default();
            let last = rows
                .iter()
                .map(|&i| seg.rows()[i].last_lsn)
                .max()
                .unwrap_or_default();
            let mapped = seg.encode(&rows, synced_at, &mut self.body).map_err(|e| {
                SinkError::definite(format!("{e}; the job stops rather than guess a value"))
            })?;
            self.metrics
                .values_non_finite_nulled
                .fetch_add(u64::from(mapped.non_finite_to_null), Ordering::Relaxed);
            self.metrics
                .values_infinity_clamped
                .fetch_add(u64::from(mapped.infinity_clamped), Ordering::Relaxed);
            let full = sig.iter().all(|p| *p);
            let req = LoadRequest {
                table: table.name.name.clone(),
                label: label(
                    &self.label_prefix,
                    &table.name,
                    first.0,
                    last.0,
                    group,
                    seg.fingerprint(&rows),
                ),
                partial_columns: (!full).then(|| seg.columns_header(&sig)),
                csv_columns: None,
                body: std::mem::take(&mut self.body).into(),
            };
            let label = req.label.clone();
            let (outcome, body) = self.loader.load(req).await;
            if let LoadOutcome::Rejected(rejection) = outcome {
                // Rebuilt only here, so that a load that goes through copies nothing.
                let meta = LoadRequest {
                    table: table.name.name.clone(),
                    label,
                    partial_columns: (!full).then(|| seg.columns_header(&sig)),
                    csv_columns: None,
                    body: bytes::Bytes::new(),
                };
                self.isolate(&meta, &body, &table, false, rejection).await?;
                self.body = body.into();
                continue;
            }
            // Reuses the buffer when the load no longer holds it.
            self.body = body.into();
            self.load_outcome(outcome, &table.name, &label, rows.len())?;
        }
        Ok(())
    }

    /// A load was rejected: loads every row of it StarRocks takes, finds the ones it refuses,
    /// and stops naming them or sets them aside (`ON_REJECT`). See `rejects.rs`.
    async fn isolate(
        &mut self,
        meta: &LoadRequest,
        body: &[u8],
        table: &TableSchema,
        snapshot: bool,
        rejection: Rejection,
    ) -> Result<(), SinkError> {
        let key_names = self.key_names(table);
        let isolated = rejects::isolate(
            &self.loader,
            &self.cfg,
            meta,
            body,
            &table.name.to_string(),
            &key_names,
            snapshot,
            rejection,
        )
        .await;
        self.metrics
            .loads_total
            .fetch_add(isolated.parts_loaded, Ordering::Relaxed);
        if let Some((outcome, label, rows)) = isolated.failed {
            self.load_outcome(outcome, &table.name, &label, rows)?;
        }
        let refused = isolated.refused;
        self.metrics
            .rows_rejected_total
            .fetch_add(refused.len() as u64, Ordering::Relaxed);
        match &self.dead_letters {
            Some(letters) => {
                letters
                    .write(&self.ddl, &refused, &synced_at_now())
                    .await
                    .map_err(dead_letter_error)?;
                for r in &refused {
                    tracing::warn!(
                        table = %r.table,
                        key = %r.key,
                        version = r.version,
                        reason = %r.reason,
                        "row refused by StarRocks; written to {}",
                        rejects::DEAD_LETTER_TABLE
                    );
                }
                self.metrics
                    .dead_letters_written_total
                    .fetch_add(refused.len() as u64, Ordering::Relaxed);
                // The gauge is a figure to watch, not a correctness input: a failed count
                // leaves it as it was.
                if let Ok(open) = letters.count_open(&self.ddl).await {
                    self.metrics
                        .dead_letters_open
                        .store(open, Ordering::Relaxed);
                }
                Ok(())
            }
            None => Err(SinkError::definite(refusal_report(&table.name, &refused))),
        }
    }

    /// The target's names of `table`'s key columns.
    fn key_names(&self, table: &TableSchema) -> Vec<String> {
        key_names(table, self.targets.get(&table.name).map(|t| &**t))
    }

    /// Sends a block of snapshot rows the workers encoded: one full-row load.
    async fn send_encoded(&mut self, e: &EncodedRows) -> Result<(), SinkError> {
        self.metrics
            .values_non_finite_nulled
            .fetch_add(u64::from(e.mapped.non_finite_to_null), Ordering::Relaxed);
        self.metrics
            .values_infinity_clamped
            .fetch_add(u64::from(e.mapped.infinity_clamped), Ordering::Relaxed);
        let name = &e.table.name;
        let req = LoadRequest {
            table: name.name.clone(),
            label: label(
                &self.label_prefix,
                name,
                e.version.0,
                e.version.0,
                0,
                e.fingerprint,
            ),
            partial_columns: None,
            csv_columns: e.layout.clone(),
            body: e.body.clone(),
        };
        let label = req.label.clone();
        let (outcome, _) = self.loader.load(req).await;
        if let LoadOutcome::Rejected(rejection) = outcome {
            let meta = LoadRequest {
                table: name.name.clone(),
                label,
                partial_columns: None,
                csv_columns: e.layout.clone(),
                body: bytes::Bytes::new(),
            };
            return self
                .isolate(&meta, &e.body, &e.table, true, rejection)
                .await;
        }
        self.load_outcome(outcome, name, &label, e.rows as usize)
    }

    fn load_outcome(
        &self,
        outcome: LoadOutcome,
        table: &TableName,
        label: &str,
        rows: usize,
    ) -> Result<(), SinkError> {
        match outcome {
            LoadOutcome::Committed { loaded_rows } => {
                self.metrics.loads_total.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(table = %table, label, rows, loaded_rows, "load committed");
                Ok(())
            }
            LoadOutcome::Transient(msg) => {
                self.metrics
                    .load_retries_total
                    .fetch_add(1, Ordering::Relaxed);
                Err(SinkError::transient(msg))
            }
            LoadOutcome::Definite(msg) => Err(SinkError::definite(msg)),
            LoadOutcome::Rejected(Rejection {
                message, error_url, ..
            }) => Err(SinkError::definite(format!(
                "{message}{}",
                error_url
                    .map(|u| format!("; rejected rows and reasons: {u}"))
                    .unwrap_or_default()
            ))),
        }
    }

    /// Whether `r` is a streamed change that precedes a truncate of its table applied already
    /// (a replay): loading it again would bring back a row the truncate removed.
    fn superseded(&self, r: &RowChange) -> bool {
        r.op != Op::Snapshot
            && self
                .truncates
                .as_ref()
                .is_some_and(|log| log.superseded(&r.table.name.name, r.pos.lsn))
    }

    async fn truncate(&mut self, t: &TruncateChange) -> Result<(), SinkError> {
        let target = &t.table.name.name;
        if let Some(log) = &self.truncates {
            if log.already_applied(target, t.pos.lsn) {
                tracing::info!(
                    table = %t.table.name,
                    lsn = %t.pos.lsn,
                    applied = %log.applied(target).unwrap_or_default(),
                    "skipped a replayed truncate of the StarRocks table: already applied"
                );
                return Ok(());
            }
        }
        match self.cfg.truncate_policy {
            TruncatePolicy::Stop => Err(SinkError::definite(format!(
                "table {} was truncated in PostgreSQL (commit {}), and TRUNCATE_POLICY=stop: \
                 truncate the StarRocks table '{}' yourself if that is intended, then restart \
                 with TRUNCATE_POLICY=truncate to mirror truncates from now on",
                t.table.name, t.pos.commit_lsn, t.table.name.name
            ))),
            TruncatePolicy::Truncate => {
                self.ddl.truncate(target).await.map_err(ddl_error)?;
                // Recorded before anything else is sent: until then, truncating again is
                // harmless (see `truncates.rs`).
                if let Some(log) = &mut self.truncates {
                    log.record(&self.ddl, target, t.pos.lsn)
                        .await
                        .map_err(truncate_log_error)?;
                }
                tracing::info!(table = %t.table.name, lsn = %t.pos.lsn, "truncated the StarRocks table");
                Ok(())
            }
        }
    }

    /// A table's columns changed: plans the StarRocks side (see `evolve.rs`), runs it, and
    /// records each decision.
    async fn schema_change(&mut self, change: &SchemaChange) -> Result<(), SinkError> {
        let (old, new) = (&change.old, &change.new);
        let name = &new.name;
        let target = self
            .ddl
            .table(&name.name)
            .await
            .map_err(ddl_error)?
            .ok_or_else(|| {
                SinkError::definite(format!(
                    "Table '{}' not found in StarRocks while applying a schema change of {name}; \
                     create it again (or set CREATE_TABLES=true) and restart",
                    name.name
                ))
            })?;
        let policy = evolve::Policy {
            type_change: self.cfg.type_change,
            drop_column: self.cfg.drop_column,
            rename_supported: self.cluster.supports_rename_column(),
            version: &self.cluster.version_text,
            db: &self.cfg.database,
        };
        let steps = match evolve::plan(name, old, new, &target, &policy) {
            Ok(steps) => steps,
            Err(stop) => {
                self.metrics.record_schema_event(SchemaEvent {
                    table: name.to_string(),
                    kind: stop.kind,
                    action: "stopped",
                    detail: stop.message.clone(),
                    lsn: change.lsn.0,
                    at_unix_us: now_unix_us(),
                });
                tracing::error!(table = %name, lsn = %change.lsn, "{}", stop.message);
                return Err(SinkError::from_cause(ErrorKind::Definite, stop));
            }
        };
        let adds: Vec<CatalogColumn> = steps
            .iter()
            .filter_map(|s| match s {
                evolve::Step::Add { column, .. } => new
                    .columns
                    .iter()
                    .find(|c| &c.name == column)
                    .map(|c| CatalogColumn {
                        name: c.name.clone(),
                        type_oid: c.type_oid,
                        type_modifier: c.type_modifier,
                        elem_oid: builtin_array_elem(c.type_oid),
                        not_null: false,
                        array_dims: 0,
                    }),
                _ => None,
            })
            .collect();
        if !adds.is_empty() {
            self.cluster
                .check_columns(&self.cfg, &name.to_string(), &adds)
                .map_err(|e| SinkError::from_cause(ErrorKind::Definite, e))?;
        }
        let mut current = target;
        for step in &steps {
            let statement = step.statement(&self.cfg.database, &name.name);
            let table = &name.name;
            current = match step {
                evolve::Step::Add { column, sr_type } => self
                    .ddl
                    .add_columns(table, &[(column.clone(), sr_type.clone())])
                    .await
                    .map_err(ddl_error)?,
                evolve::Step::Modify {
                    column, sr_type, ..
                } => self
                    .ddl
                    .modify_columns(table, &[(column.clone(), sr_type.clone())])
                    .await
                    .map_err(ddl_error)?,
                evolve::Step::Recreate {
                    column, sr_type, ..
                } => {
                    self.ddl
                        .drop_columns(table, std::slice::from_ref(column))
                        .await
                        .map_err(ddl_error)?;
                    self.ddl
                        .add_columns(table, &[(column.clone(), sr_type.clone())])
                        .await
                        .map_err(ddl_error)?
                }
                evolve::Step::Drop { column } => self
                    .ddl
                    .drop_columns(table, std::slice::from_ref(column))
                    .await
                    .map_err(ddl_error)?,
                evolve::Step::Rename { from, to } => self
                    .ddl
                    .rename_column(table, from, to)
                    .await
                    .map_err(ddl_error)?,
                evolve::Step::Keep { .. } | evolve::Step::Same { .. } => current,
            };
            let detail = match &statement {
                Some(sql) => format!("{}: {sql}", step.describe()),
                None => step.describe(),
            };
            tracing::info!(
                table = %name,
                lsn = %change.lsn,
                change = step.kind().as_str(),
                action = step.action(),
                statement = statement.as_deref().unwrap_or(""),
                "{}",
                step.describe()
            );
            self.metrics.record_schema_event(SchemaEvent {
                table: name.to_string(),
                kind: step.kind(),
                action: step.action(),
                detail,
                lsn: change.lsn.0,
                at_unix_us: now_unix_us(),
            });
        }
        let updated = column_targets(
            &self.cfg,
            name,
            &current,
            new.columns.iter().map(|c| c.name.as_str()),
        )?;
        self.targets.insert(name.clone(), Arc::new(updated));
        Ok(())
    }
}

/// The target's names of `table`'s key columns (`targets`: its StarRocks columns, when known).
pub(crate) fn key_names(table: &TableSchema, targets: Option<&ColumnTargets>) -> Vec<String> {
    table
        .key
        .iter()
        .filter_map(|&k| table.columns.get(k))
        .map(|c| {
            targets
                .and_then(|t| t.get(&c.name))
                .map_or_else(|| c.name.clone(), |t| t.name.clone())
        })
        .collect()
}

/// The stop error for rows StarRocks refused (`ON_REJECT=stop`).
fn refusal_report(table: &TableName, refused: &[Refused]) -> String {
    let mut out = format!(
        "StarRocks refused {} row(s) of table {table} (every other row of the load is loaded):",
        refused.len()
    );
    for r in refused.iter().take(NAMED_REFUSALS) {
        out.push_str(&format!(
            "\n  key {} ({} at version {}): {}; row {}",
            r.key,
            r.op,
            r.version,
            r.reason,
            rejects::clip(&r.row, 500)
        ));
    }
    if refused.len() > NAMED_REFUSALS {
        out.push_str(&format!(
            "\n  … and {} more",
            refused.len() - NAMED_REFUSALS
        ));
    }
    out.push_str(
        "\nThe job stops (ON_REJECT=stop) rather than drop them: fix the target table or the \
         source rows, then restart; or set ON_REJECT=dead_letter to set refused rows aside in \
         dbmazz_dead_letters and keep streaming",
    );
    out
}

/// Matches the source's column names to the target's, which StarRocks compares without regard
/// to case in SQL but which Stream Load's JSON reader matches exactly: the body must carry the
/// target's own spelling.
pub(crate) fn column_targets<'a>(
    cfg: &StarRocksConfig,
    table: &TableName,
    target: &TargetTable,
    source_columns: impl Iterator<Item = &'a str>,
) -> Result<ColumnTargets, SinkError> {
    let mut out = ColumnTargets::default();
    out.key_limit = cfg.primary_key_limit;
    for c in &target.columns {
        out.insert(
            &c.name,
            TargetColumn {
                name: c.name.clone(),
                array_depth: c.array_depth(),
                key_width: c.key_width(),
            },
        );
    }
    let mut seen: HashMap<String, &str> = HashMap::new();
    for name in source_columns {
        if let Some(other) = seen.insert(name.to_lowercase(), name) {
            return Err(SinkError::definite(format!(
                "columns {other:?} and {name:?} of table {table} differ only in case; StarRocks column names \
                 ignore case, so both would load into one column: rename one of them in \
                 PostgreSQL"
            )));
        }
    }
    Ok(out)
}

/// Checks one target table and brings it up to date; returns its columns.
async fn prepare_table(
    ddl: &Ddl,
    cfg: &StarRocksConfig,
    source: &TableCatalog,
    replication_num: Option<u32>,
) -> Result<ColumnTargets, SinkError> {
    let name = &source.name.name;
    let target = match ddl.table(name).await.map_err(ddl_error)? {
        Some(t) => t,
        None if cfg.create_tables => {
            ddl.create_table(name, source, replication_num)
                .await
                .map_err(ddl_error)?;
            tracing::info!(table = %source.name, "created the StarRocks table");
            ddl.table(name).await.map_err(ddl_error)?.ok_or_else(|| {
                SinkError::definite(format!(
                    "Table '{name}' was created in StarRocks but cannot be found"
                ))
            })?
        }
        None => {
            return Err(SinkError::definite(format!(
                "Table '{name}' not found in StarRocks. Create the table before starting CDC \
                 (or set CREATE_TABLES=true)."
            )))
        }
    };
    if let Some(model) = target.model.as_deref() {
        if model != "PRIMARY_KEYS" {
            return Err(SinkError::definite(format!(
                "Table '{name}' in StarRocks is a {model} table; dbmazz needs a primary-key table \
                 (CREATE TABLE ... PRIMARY KEY(...)) so updates and deletes replace rows"
            )));
        }
    }
    let mut columns = column_targets(
        cfg,
        &source.name,
        &target,
        source.columns.iter().map(|c| c.name.as_str()),
    )?;
    for key in &source.key_columns {
        if !columns.contains(key) {
            return Err(SinkError::definite(format!(
                "Table '{name}' in StarRocks has no column {key:?}, part of the PostgreSQL primary key; \
                 recreate it with that key"
            )));
        }
    }
    let mut missing: Vec<(String, String)> = AUDIT_COLUMNS
        .iter()
        .filter(|(n, _)| !columns.contains(n))
        .map(|(n, t)| (n.to_string(), t.to_string()))
        .collect();
    missing.extend(
        source
            .columns
            .iter()
            .filter(|c| !columns.contains(&c.name))
            .map(|c| (c.name.clone(), starrocks_type(c, false))),
    );
    if !missing.is_empty() {
        tracing::info!(table = name, columns = ?missing.iter().map(|(n, _)| n).collect::<Vec<_>>(), "adding columns in StarRocks");
        let target = ddl.add_columns(name, &missing).await.map_err(ddl_error)?;
        columns = column_targets(
            cfg,
            &source.name,
            &target,
            source.columns.iter().map(|c| c.name.as_str()),
        )?;
    }
    Ok(columns)
}

/// `<prefix>_<table>_<first>_<last>_<group>_<fingerprint>`, at most 128 characters of
/// `[-_A-Za-z0-9]`.
fn label(
    prefix: &str,
    table: &TableName,
    first: u64,
    last: u64,
    group: usize,
    fingerprint: u64,
) -> String {
    // All 64 bits of the fingerprint: the snapshot bodies of one table share first, last and
    // group, so a collision there would read as "already loaded" and lose a body's rows.
    let tail = format!("_{first:X}_{last:X}_{group}_{fingerprint:016X}");
    let t: String = table
        .to_string()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let full = format!("{prefix}_{t}{tail}");
    if full.len() <= 128 {
        return full;
    }
    // Too long to read anyway: a hash of slot and table keeps it unique and within 128.
    let hash = format!("{prefix}/{table}")
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
    format!("dbmazz_{hash:016X}{tail}")
}

impl Sink for StarRocksSink {
    fn snapshot_encoders(&self) -> Arc<dyn SnapshotEncoders> {
        Arc::new(StarRocksSnapshotEncoders {
            targets: self.targets.clone(),
            // Compressed CSV is a different `format` (`gzip`), which not every StarRocks reads
            // like JSON's `compression`; gzip keeps snapshot bodies JSON.
            csv: self.cfg.snapshot_csv && !self.cfg.gzip,
            // One pool per snapshot: its buffers go when the snapshot is over.
            pool: BodyPool::default(),
        })
    }

    async fn write_batch(&mut self, events: &[Event]) -> Result<(), SinkError> {
        let synced_at = synced_at_now();
        let mut segments: BTreeMap<TableName, Segment> = BTreeMap::new();
        for event in events {
            match event {
                Event::Row(r) if self.superseded(r) => {}
                Event::Row(r) => segments
                    .entry(r.table.name.clone())
                    .or_insert_with(|| {
                        let targets = self.targets.get(&r.table.name).cloned().unwrap_or_default();
                        Segment::new(r.table.clone(), &targets)
                    })
                    .add(r),
                Event::Truncate(t) => {
                    if let Some(seg) = segments.remove(&t.table.name) {
                        self.send_segment(seg, &synced_at).await?;
                    }
                    self.truncate(t).await?;
                }
                Event::Schema(change) => {
                    if let Some(seg) = segments.remove(&change.new.name) {
                        self.send_segment(seg, &synced_at).await?;
                    }
                    self.schema_change(change).await?;
                }
                Event::Encoded(e) => {
                    // Streamed changes of the table received before this block load first, so
                    // loads keep the order of the stream.
                    if let Some(seg) = segments.remove(&e.table.name) {
                        self.send_segment(seg, &synced_at).await?;
                    }
                    self.send_encoded(e).await?;
                }
                Event::Commit { .. } | Event::Idle { .. } | Event::ChunkDone { .. } => {}
            }
        }
        for (_, seg) in segments {
            self.send_segment(seg, &synced_at).await?;
        }
        Ok(())
    }

    async fn new_slot(&mut self) -> Result<(), SinkError> {
        match &mut self.truncates {
            Some(log) => log.forget(&self.ddl).await,
            None => truncates::forget_stored(&self.ddl, &self.slot).await,
        }
        .map_err(truncate_log_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_deterministic_bounded_and_safe() {
        let t = TableName::new("public", "orders");
        let a = label("dbmazz_slot", &t, 0x10, 0x20, 0, 0xAB);
        assert_eq!(a, "dbmazz_slot_public_orders_10_20_0_00000000000000AB");
        assert_ne!(
            a,
            label("dbmazz_slot", &t, 0x10, 0x20, 0, 0xAB | (1 << 40)),
            "every bit of the fingerprint counts"
        );
        assert_eq!(a, label("dbmazz_slot", &t, 0x10, 0x20, 0, 0xAB));
        assert_ne!(a, label("dbmazz_slot", &t, 0x10, 0x20, 0, 0xAC));
        let long = TableName::new("s", "x".repeat(200));
        let l = label(&"p".repeat(70), &long, u64::MAX, u64::MAX, 3, 1);
        assert!(l.len() <= 128, "{}", l.len());
        assert!(l.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
        let other = TableName::new("s", format!("{}y", "x".repeat(199)));
        assert_ne!(l, label(&"p".repeat(70), &other, u64::MAX, u64::MAX, 3, 1));
    }
}
