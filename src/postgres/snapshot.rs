//! The initial snapshot: existing rows first, then streaming with no gap and no stale row.
//!
//! ```text
//!  temporary slot ──(SNAPSHOT 'export')──▶ snapshot name + consistent point C
//!        │ stays idle until every worker imported the snapshot, then closes
//!        ▼
//!  SNAPSHOT_WORKERS connections: BEGIN REPEATABLE READ; SET TRANSACTION SNAPSHOT '…'
//!        │ each takes chunks (primary-key ranges) from a queue:
//!        │ COPY (SELECT … WHERE key > lo AND key <= hi) TO STDOUT, parsed line by line
//!        │ (StarRocks: encoded right here into Stream Load CSV/JSON bodies; other sinks: row events)
//!        ▼
//!  the pipeline (same byte budget as the stream) ──▶ sink ──▶ ChunkDone markers, once durable,
//!                                                            are recorded in dbmazz_snapshot_chunks
//! ```
//!
//! Encoding in the workers is what makes the copy fast: it runs in parallel, and a chunk's rows
//! need none of the per-key collapse of streamed changes (each key appears once in a chunk, every
//! row is a full row with version C − 1, see [`copy_version`]). A body is sent after everything queued before it, and its
//! chunk's ChunkDone marker comes after its last body, so "done only once durable" holds as for
//! row events.
//!
//! Every table to copy gets a plan (its chunks, their key bounds, and C1, the consistent point of
//! its first snapshot) in `dbmazz_snapshot_tables` / `dbmazz_snapshot_chunks`, next to
//! `dbmazz_checkpoints`. Streaming runs at the same time; the WAL reader drops a table's changes
//! committed before its C1 (they are in the copy). A crash or stop leaves unfinished chunks
//! pending; the next start copies only those, at a new snapshot C2 ≥ C1.
//!
//! **Why the result converges** (sinks apply a row only if its version, the commit LSN, is ≥ the
//! stored one — StarRocks' `merge_condition`). Take any key and a chunk copied at snapshot Cs
//! (C1, or a later C2 after a restart), its rows written with version Cs − 1 (just below Cs, above
//! every commit before it):
//! - The exported snapshot and Cs come from the same slot creation, which waits for every
//!   transaction running at that moment, so the copy holds exactly the commits < Cs (including
//!   those of transactions that were open when a table was added to the publication), and the
//!   main slot, created earlier, still delivers every commit ≥ C1.
//! - A commit ≥ Cs is not in the copy; it is streamed with version ≥ Cs > Cs − 1 and wins over the copied
//!   row whenever it arrives (before or after it).
//! - A commit in [C1, Cs) is already in the copy (version Cs − 1, above any commit LSN below
//!   Cs); when it is streamed its older
//!   version loses, so it cannot regress the row. Commits < C1 are not streamed for the table.
//! - A key deleted before Cs is absent from the copy; its delete is either < C1 (the sink never
//!   had the row from this job) or streamed (soft delete, version ≥ C1).
//!
//! So after the last chunk and the stream past it, every key holds the state of its last
//! commit: the same as the source. Restarting with a new Cs changes nothing in this argument,
//! which is why finished chunks never need the original snapshot again. Chunks are key ranges
//! rather than ctid ranges because a key stays in its range between two snapshots.
//!
//! Without `merge_condition` (the NDJSON sink) the same holds for a consumer that applies a line
//! only if its `commit_lsn` is ≥ the one it has for that key.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use futures_util::{pin_mut, TryStreamExt};
use tokio::sync::{mpsc, watch};
use tokio_postgres::Client;

use crate::config::{quote_ident, quote_literal, Config, SnapshotMode, TableName};
use crate::job::{JobHandle, RunState, Stage};
use crate::pipeline::batcher::{ChunkDurable, Feeder};
use crate::pipeline::change::{ColumnSchema, Event, TableSchema};
use crate::pipeline::sink::{SnapshotEncodeError, SnapshotEncoder, SnapshotEncoders};
use crate::postgres::conninfo::PgConnInfo;
use crate::postgres::replication::{ReplicationClient, ReplicationError};
use crate::postgres::schema_cache::TableCatalog;
use crate::postgres::setup::SourceInfo;
use crate::postgres::state_tables::{
    create_refused_hint, current_role, SNAPSHOT_DDL, SNAPSHOT_TABLES,
};
use crate::postgres::tls::{connect_sql, ConnectError};
use crate::postgres::toast_backfill::CopyingTables;
use crate::value::ValueKind;
use crate::Lsn;

/// The version copied rows carry: one less than the snapshot point C.
///
/// The copy holds exactly the commits before C, and the stream delivers the ones at or after
/// C. A transaction whose commit record starts exactly at C (the record right after the one
/// that made the temporary slot consistent) is streamed with version C; had the copy carried C
/// too, a copied row loaded after that change would tie and win (`merge_condition` and the
/// NDJSON rule both keep the later of equal versions), bringing back the old value. WAL records
/// start 8-byte aligned and are longer than 8 bytes, so no commit before C starts at C − 1:
/// the copy still wins over every commit it holds.
pub fn copy_version(snapshot_point: Lsn) -> Lsn {
    Lsn(snapshot_point.0.saturating_sub(1))
}

/// The snapshot failed.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// Connecting failed.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// Creating the temporary slot failed.
    #[error("creating the snapshot's temporary slot failed: {0}")]
    Slot(#[from] ReplicationError),
    /// The state tables could not be created.
    #[error(
        "cannot create the snapshot state tables {}: {}; {hint}",
        SNAPSHOT_TABLES.join(", "),
        crate::postgres::tls::flatten_chain(source)
    )]
    StateTables {
        /// The exact statements that let dbmazz start.
        hint: String,
        /// Cause.
        source: tokio_postgres::Error,
    },
    /// A query failed.
    #[error("snapshot {action} failed: {source}")]
    Sql {
        /// What was being done.
        action: String,
        /// Cause.
        source: tokio_postgres::Error,
    },
    /// A copied row could not be encoded for the sink.
    #[error("snapshot of {table}: {source}")]
    Copy {
        /// Table.
        table: TableName,
        /// What was wrong.
        source: SnapshotEncodeError,
    },
    /// The COPY data ended in the middle of a row.
    #[error("snapshot of {table}: the COPY data ends with {bytes} bytes after the last newline")]
    Truncated {
        /// Table.
        table: TableName,
        /// Bytes after the last newline.
        bytes: usize,
    },
    /// A worker task panicked or was cancelled.
    #[error("a snapshot worker failed: {0}")]
    Worker(#[from] tokio::task::JoinError),
    /// PostgreSQL invalidated (or someone dropped) the job's slot during the copy: the stream
    /// after the snapshot point cannot be delivered, so the copy would be useless.
    #[error("snapshot stopped: {0}")]
    SlotInvalidated(String),
}

impl SnapshotError {
    /// Whether restarting may help.
    pub fn is_transient(&self) -> bool {
        match self {
            SnapshotError::Connect(e) => e.is_transient(),
            SnapshotError::Slot(e) => e.is_transient(),
            SnapshotError::Sql { source, .. } | SnapshotError::StateTables { source, .. } => {
                source.is_closed() || source.code().is_none()
            }
            SnapshotError::Copy { .. }
            | SnapshotError::Truncated { .. }
            | SnapshotError::Worker(_)
            | SnapshotError::SlotInvalidated(_) => false,
        }
    }
}

fn sql(action: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> SnapshotError {
    let action = action.into();
    move |source| SnapshotError::Sql { action, source }
}

/// What streaming needs to know, and the copy work to do (if any).
pub struct SnapshotPlan {
    /// Per table, the LSN below which streamed changes are already in the copy.
    pub skip_before: HashMap<TableName, Lsn>,
    /// The copy to run, if any table needs one.
    pub work: Option<SnapshotWork>,
}

/// One chunk to copy.
struct ChunkTask {
    table: Arc<TableSchema>,
    chunk: i32,
    copy_sql: String,
}

/// One table's snapshot progress (what Health shows).
#[derive(Clone, Debug, Default)]
struct TableProgress {
    chunks_done: usize,
    chunks: usize,
    /// Rows of the durable chunks.
    rows_done: u64,
    /// PostgreSQL's estimate of the table's rows (`pg_class.reltuples`).
    rows_estimated: u64,
}

/// The copy to run: chunks, and the exported snapshot to read them at.
pub struct SnapshotWork {
    slot_conn: ReplicationClient,
    snapshot_name: String,
    lsn: Lsn,
    chunks: Vec<ChunkTask>,
    /// Per table with chunks to copy (for progress).
    totals: HashMap<TableName, TableProgress>,
    state: Client,
    slot: String,
}

impl SnapshotWork {
    /// The tables that still have chunks to copy.
    pub fn copying_tables(&self) -> Vec<TableName> {
        self.totals
            .iter()
            .filter(|(_, t)| t.chunks_done < t.chunks)
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Puts the job in the snapshot stage, with every table's progress as it stands, before
    /// the copy's workers are even connected: from the moment streaming starts until the last
    /// chunk is durable, Health says `STAGE_SNAPSHOT`, never `STAGE_CDC` and then back.
    pub fn show_progress(&self, job: &JobHandle) {
        set_progress(job, &self.totals);
    }
}

/// Creates the state tables unless they all exist (an administrator may have created them for
/// a role without `CREATE` on `public`: then no right on the schema is needed).
async fn create_state_tables(state: &tokio_postgres::Client) -> Result<(), SnapshotError> {
    let exist: bool = state
        .query_one(
            "SELECT bool_and(to_regclass(t) IS NOT NULL) FROM unnest($1::text[]) t",
            &[&SNAPSHOT_TABLES.as_slice()],
        )
        .await
        .map_err(sql("looking up the snapshot state tables"))?
        .get(0);
    if exist {
        return Ok(());
    }
    if let Err(source) = state.batch_execute(SNAPSHOT_DDL).await {
        let role = current_role(state)
            .await
            .unwrap_or_else(|| "<dbmazz's role>".into());
        return Err(SnapshotError::StateTables {
            hint: create_refused_hint(&role, "public", SNAPSHOT_DDL, &SNAPSHOT_TABLES),
            source,
        });
    }
    Ok(())
}

/// Decides which tables to copy, plans their chunks, and creates the exported snapshot.
pub async fn prepare(config: &Config, source: &SourceInfo) -> Result<SnapshotPlan, SnapshotError> {
    let state = connect_sql(&config.database).await?;
    create_state_tables(&state).await?;
    let slot = config.slot_name.as_str();
    if config.snapshot.mode == SnapshotMode::Always {
        state
            .execute(
                "DELETE FROM public.dbmazz_snapshot_tables WHERE slot_name = $1",
                &[&slot],
            )
            .await
            .map_err(sql("resetting snapshot state"))?;
        state
            .execute(
                "DELETE FROM public.dbmazz_snapshot_chunks WHERE slot_name = $1",
                &[&slot],
            )
            .await
            .map_err(sql("resetting snapshot state"))?;
    }
    let mut skip_before = HashMap::new();
    let mut resume: Vec<&TableCatalog> = Vec::new();
    let mut fresh: Vec<&TableCatalog> = Vec::new();
    for table in &source.tables {
        let name = table.name.to_string();
        let row = state
            .query_opt(
                "SELECT snapshot_lsn::text, state FROM public.dbmazz_snapshot_tables \
                  WHERE slot_name = $1 AND table_name = $2",
                &[&slot, &name],
            )
            .await
            .map_err(sql("reading snapshot state"))?;
        match row {
            Some(r) => {
                let lsn: String = r.get(0);
                let st: String = r.get(1);
                if let Ok(lsn) = lsn.parse() {
                    skip_before.insert(table.name.clone(), lsn);
                }
                if st != "done" && config.snapshot.mode != SnapshotMode::Never {
                    resume.push(table);
                }
            }
            None if config.snapshot.mode != SnapshotMode::Never => fresh.push(table),
            None => {}
        }
    }
    if resume.is_empty() && fresh.is_empty() {
        return Ok(SnapshotPlan {
            skip_before,
            work: None,
        });
    }

    let mut slot_conn = ReplicationClient::connect(&config.database).await?;
    let temp_name: String = format!("{}_snap", &slot[..slot.len().min(55)]);
    let created = slot_conn.create_temporary_snapshot_slot(&temp_name).await?;
    let snapshot_name = created.snapshot_name.unwrap_or_default();
    let lsn = created.consistent_point;
    tracing::info!(snapshot_lsn = %lsn, tables = fresh.len() + resume.len(), "snapshot exported");

    let mut chunks = Vec::new();
    let mut totals = HashMap::new();
    for table in fresh {
        let bounds = plan_bounds(&state, table, config.snapshot.chunk_rows).await?;
        let name = table.name.to_string();
        state
            .execute(
                "INSERT INTO public.dbmazz_snapshot_tables (slot_name, table_name, snapshot_lsn, state, chunks) \
                 VALUES ($1, $2, $3::text::pg_lsn, 'running', $4)",
                &[&slot, &name, &lsn.to_string(), &(bounds.len() as i32)],
            )
            .await
            .map_err(sql("recording the snapshot plan"))?;
        for (i, (lo, hi)) in bounds.iter().enumerate() {
            state
                .execute(
                    "INSERT INTO public.dbmazz_snapshot_chunks (slot_name, table_name, chunk, lower_bound, upper_bound) \
                     VALUES ($1, $2, $3, $4, $5)",
                    &[&slot, &name, &(i as i32), lo, hi],
                )
                .await
                .map_err(sql("recording the snapshot plan"))?;
        }
        skip_before.insert(table.name.clone(), lsn);
        tracing::info!(table = %table.name, chunks = bounds.len(), "snapshot planned");
    }
    for table in source.tables.iter() {
        let name = table.name.to_string();
        let rows = state
            .query(
                "SELECT chunk, lower_bound, upper_bound, done, rows FROM public.dbmazz_snapshot_chunks \
                  WHERE slot_name = $1 AND table_name = $2 ORDER BY chunk",
                &[&slot, &name],
            )
            .await
            .map_err(sql("reading the snapshot plan"))?;
        if rows.is_empty() {
            continue;
        }
        let done = rows.iter().filter(|r| r.get::<_, bool>(3)).count();
        if done == rows.len() {
            continue;
        }
        if done > 0 {
            tracing::info!(table = %table.name, done, total = rows.len(), "resuming snapshot: skipping finished chunks");
        }
        let rows_done: i64 = rows
            .iter()
            .filter(|r| r.get::<_, bool>(3))
            .map(|r| r.get::<_, Option<i64>>(4).unwrap_or(0))
            .sum();
        totals.insert(
            table.name.clone(),
            TableProgress {
                chunks_done: done,
                chunks: rows.len(),
                rows_done: rows_done.max(0) as u64,
                rows_estimated: estimate_rows(&state, table).await?.max(0.0) as u64,
            },
        );
        let schema = Arc::new(table_schema(table, &source.types));
        let key_types = key_types(&state, table).await?;
        for r in rows.iter().filter(|r| !r.get::<_, bool>(3)) {
            let lo: Option<Vec<String>> = r.get(1);
            let hi: Option<Vec<String>> = r.get(2);
            chunks.push(ChunkTask {
                table: schema.clone(),
                chunk: r.get(0),
                copy_sql: copy_sql(table, &key_types, lo.as_deref(), hi.as_deref()),
            });
        }
    }
    Ok(SnapshotPlan {
        skip_before,
        work: Some(SnapshotWork {
            slot_conn,
            snapshot_name,
            lsn,
            chunks,
            totals,
            state,
            slot: slot.to_owned(),
        }),
    })
}

/// The schema snapshot rows carry, built from the catalog the way the schema cache builds it
/// from a Relation message.
pub fn table_schema(table: &TableCatalog, types: &HashMap<u32, ValueKind>) -> TableSchema {
    let columns: Vec<ColumnSchema> = table
        .columns
        .iter()
        .map(|c| ColumnSchema {
            name: c.name.clone(),
            type_oid: c.type_oid,
            type_modifier: c.type_modifier,
            kind: ValueKind::for_oid(c.type_oid, types),
        })
        .collect();
    let key = table
        .key_columns
        .iter()
        .filter_map(|k| columns.iter().position(|c| &c.name == k))
        .collect();
    TableSchema {
        rel_id: table.oid,
        name: table.name.clone(),
        columns,
        key,
        replica_identity: b'd',
    }
}

/// The key columns' types as `format_type` spells them (for casts of key literals).
pub async fn key_types(state: &Client, table: &TableCatalog) -> Result<Vec<String>, SnapshotError> {
    let mut out = Vec::new();
    for k in &table.key_columns {
        let row = state
            .query_one(
                "SELECT format_type(atttypid, atttypmod) FROM pg_attribute \
                  WHERE attrelid = $1::text::regclass AND attname = $2",
                &[&table.source_name.quoted(), k],
            )
            .await
            .map_err(sql(format!("reading the key type of {}", table.name)))?;
        out.push(row.get(0));
    }
    Ok(out)
}

/// PostgreSQL's estimate of a table's rows: `reltuples`, or one from its size if it was never
/// analyzed.
async fn estimate_rows(state: &Client, table: &TableCatalog) -> Result<f64, SnapshotError> {
    Ok(state
        .query_one(
            "SELECT CASE WHEN c.reltuples >= 0 THEN c.reltuples::float8 \
                    ELSE pg_relation_size(c.oid)::float8 / 8192 * 60 END \
               FROM pg_class c WHERE c.oid = $1::text::regclass",
            &[&table.source_name.quoted()],
        )
        .await
        .map_err(sql(format!("estimating the size of {}", table.name)))?
        .get(0))
}

/// Splits the key space into ranges of about `chunk_rows` rows, from a sample of keys.
async fn plan_bounds(
    state: &Client,
    table: &TableCatalog,
    chunk_rows: u64,
) -> Result<Vec<(Option<Vec<String>>, Option<Vec<String>>)>, SnapshotError> {
    let est = estimate_rows(state, table).await?;
    let chunks = (est / chunk_rows as f64).ceil() as usize;
    if chunks <= 1 {
        return Ok(vec![(None, None)]);
    }
    let keys: Vec<String> = table
        .key_columns
        .iter()
        .map(|k| format!("{}::text", quote_ident(k)))
        .collect();
    let order: Vec<String> = table.key_columns.iter().map(|k| quote_ident(k)).collect();
    // SYSTEM sampling picks whole pages, and rows sit in pages in clusters of nearby keys: 64
    // sampled rows per chunk from a handful of pages would cut very uneven chunks (and leave one
    // worker with most of the table). So sample at least 16 pages per chunk, unless that is
    // more than 200,000 rows.
    let pages: f64 = state
        .query_one(
            "SELECT greatest(relpages::float8, pg_relation_size(oid)::float8 / 8192, 1) \
               FROM pg_class WHERE oid = $1::text::regclass",
            &[&table.source_name.quoted()],
        )
        .await
        .map_err(sql(format!("reading the size of {}", table.name)))?
        .get(0);
    let by_rows = chunks as f64 * 64.0 / est;
    let by_pages = (chunks as f64 * 16.0 / pages).min(200_000.0 / est);
    let pct = (by_rows.max(by_pages) * 100.0).clamp(0.01, 100.0);
    let sample = state
        .query(
            &format!(
                "SELECT ARRAY[{}] FROM {} TABLESAMPLE SYSTEM ({pct}) ORDER BY {}",
                keys.join(", "),
                table.source_name.quoted(),
                order.join(", ")
            ),
            &[],
        )
        .await
        .map_err(sql(format!("sampling the keys of {}", table.name)))?;
    let sample: Vec<Vec<String>> = sample.iter().map(|r| r.get(0)).collect();
    let mut cuts: Vec<Vec<String>> = Vec::new();
    for i in 1..chunks {
        if let Some(k) = sample.get(sample.len() * i / chunks) {
            if cuts.last() != Some(k) {
                cuts.push(k.clone());
            }
        }
    }
    let mut bounds = Vec::new();
    let mut lo = None;
    for cut in cuts {
        bounds.push((lo, Some(cut.clone())));
        lo = Some(cut);
    }
    bounds.push((lo, None));
    Ok(bounds)
}

/// `COPY (SELECT <columns> FROM t WHERE key > lo AND key <= hi) TO STDOUT`.
fn copy_sql(
    table: &TableCatalog,
    key_types: &[String],
    lo: Option<&[String]>,
    hi: Option<&[String]>,
) -> String {
    let cols: Vec<String> = table.columns.iter().map(|c| quote_ident(&c.name)).collect();
    let key: Vec<String> = table.key_columns.iter().map(|k| quote_ident(k)).collect();
    let row = |vals: &[String]| {
        let items: Vec<String> = vals
            .iter()
            .zip(key_types)
            .map(|(v, t)| format!("{}::{t}", quote_literal(v)))
            .collect();
        format!("ROW({})", items.join(", "))
    };
    let mut conds = Vec::new();
    if let Some(lo) = lo {
        conds.push(format!("ROW({}) > {}", key.join(", "), row(lo)));
    }
    if let Some(hi) = hi {
        conds.push(format!("ROW({}) <= {}", key.join(", "), row(hi)));
    }
    let filter = if conds.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conds.join(" AND "))
    };
    format!(
        "COPY (SELECT {} FROM {}{filter}) TO STDOUT",
        cols.join(", "),
        table.source_name.quoted()
    )
}

/// How the workers hand rows to the pipeline.
#[derive(Clone)]
pub struct Output {
    /// The sink's encoders, which turn copied lines into bodies of its own format.
    pub encoders: Arc<dyn SnapshotEncoders>,
    /// Size at which an encoded body is cut (a fraction of the byte budget).
    pub body_bytes: usize,
}

/// Runs the copy until every chunk is durable, or until `stop` (pause/drain) turns true.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    work: SnapshotWork,
    database: PgConnInfo,
    workers: usize,
    output: Output,
    feeder: Feeder,
    mut durable: mpsc::UnboundedReceiver<ChunkDurable>,
    stop: watch::Receiver<bool>,
    job: JobHandle,
    copying: Arc<CopyingTables>,
) -> Result<(), SnapshotError> {
    let SnapshotWork {
        slot_conn,
        snapshot_name,
        lsn,
        chunks,
        mut totals,
        state,
        slot,
    } = work;
    let pending = chunks.len();
    let queue = Arc::new(Mutex::new(chunks.into_iter().collect::<VecDeque<_>>()));
    let workers = workers.min(pending).max(1);
    let (imported_tx, mut imported_rx) = mpsc::channel::<()>(workers);
    let mut handles = Vec::new();
    for _ in 0..workers {
        let client = connect_sql(&database).await?;
        handles.push(tokio::spawn(worker(
            client,
            snapshot_name.clone(),
            lsn,
            queue.clone(),
            feeder.clone(),
            stop.clone(),
            imported_tx.clone(),
            job.clone(),
            output.clone(),
        )));
    }
    drop(feeder);
    drop(imported_tx);
    // The exported snapshot must outlive every import; then the temporary slot can go.
    let mut imported = 0;
    while imported < workers && imported_rx.recv().await.is_some() {
        imported += 1;
    }
    drop(slot_conn);
    set_progress(&job, &totals);

    let mut remaining = pending;
    let mut workers_done = false;
    let mut handles = futures_util::future::join_all(handles);
    while remaining > 0 {
        tokio::select! {
            results = &mut handles, if !workers_done => {
                workers_done = true;
                for r in results {
                    match r {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => return Err(e),
                        Err(join) => return Err(SnapshotError::Worker(join)),
                    }
                }
            }
            done = durable.recv() => {
                let Some(done) = done else { break };
                let name = done.table.to_string();
                state
                    .execute(
                        "UPDATE public.dbmazz_snapshot_chunks SET done = true, rows = $4 \
                          WHERE slot_name = $1 AND table_name = $2 AND chunk = $3",
                        &[&slot, &name, &done.chunk, &(done.rows as i64)],
                    )
                    .await
                    .map_err(sql("recording a finished chunk"))?;
                remaining -= 1;
                check_slot_between_chunks(&state, &slot).await?;
                if let Some(t) = totals.get_mut(&done.table) {
                    t.chunks_done += 1;
                    t.rows_done += done.rows;
                    if t.chunks_done == t.chunks {
                        state
                            .execute(
                                "UPDATE public.dbmazz_snapshot_tables SET state = 'done', updated_at = now() \
                                  WHERE slot_name = $1 AND table_name = $2",
                                &[&slot, &name],
                            )
                            .await
                            .map_err(sql("recording a finished table"))?;
                        copying.finished(&done.table);
                        tracing::info!(table = %done.table, "snapshot finished");
                    }
                }
                set_progress(&job, &totals);
            }
        }
    }
    if remaining == 0 {
        tracing::info!(snapshot_lsn = %lsn, "snapshot complete, streaming only");
        job.set_state(Stage::Cdc, RunState::Running, "Replicating", None);
    } else {
        tracing::info!(
            remaining,
            "snapshot stopped at a chunk boundary; it resumes on the next start"
        );
    }
    Ok(())
}

/// Between two chunks: stops the copy loud when the job's slot was invalidated or is gone (the
/// stream after the snapshot point is lost with it).
async fn check_slot_between_chunks(state: &Client, slot: &str) -> Result<(), SnapshotError> {
    let row = state
        .query_opt(
            "SELECT coalesce(wal_status, ''), current_setting('max_slot_wal_keep_size') \
               FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(sql("checking the replication slot between chunks"))?;
    match row {
        None => Err(SnapshotError::SlotInvalidated(format!(
            "replication slot {slot} no longer exists (it was dropped during the copy); dbmazz \
             does not recreate it. To start over: DELETE FROM dbmazz_checkpoints WHERE slot_name \
             = '{slot}'; DELETE FROM dbmazz_snapshot_tables WHERE slot_name = '{slot}'; DELETE \
             FROM dbmazz_snapshot_chunks WHERE slot_name = '{slot}'; then start dbmazz again"
        ))),
        Some(row) => {
            let status: String = row.get(0);
            if status == "lost" {
                let keep: String = row.get(1);
                return Err(SnapshotError::SlotInvalidated(
                    crate::postgres::slot_health::invalidated_message(
                        slot,
                        &status,
                        None,
                        "an unknown amount",
                        &keep,
                    ),
                ));
            }
            Ok(())
        }
    }
}

fn set_progress(job: &JobHandle, totals: &HashMap<TableName, TableProgress>) {
    let mut parts: Vec<String> = totals.iter().map(|(t, p)| progress_text(t, p)).collect();
    parts.sort();
    let rows = job.metrics().snapshot_rows_total.load(Ordering::Relaxed);
    job.set_state(
        Stage::Snapshot,
        RunState::Running,
        &format!("Snapshot: {} ({rows} rows read)", parts.join(", ")),
        None,
    );
}

/// `public.t 1200000/~5000000 rows (24%), 5/20 chunks`: rows of durable chunks against
/// PostgreSQL's estimate (which may be off; the chunk count is exact).
fn progress_text(table: &TableName, p: &TableProgress) -> String {
    let pct = p
        .rows_done
        .saturating_mul(100)
        .checked_div(p.rows_estimated)
        .map_or(String::new(), |pct| format!(" ({}%)", pct.min(100)));
    format!(
        "{table} {}/~{} rows{pct}, {}/{} chunks",
        p.rows_done, p.rows_estimated, p.chunks_done, p.chunks
    )
}

#[allow(clippy::too_many_arguments)]
async fn worker(
    mut client: Client,
    snapshot_name: String,
    lsn: Lsn,
    queue: Arc<Mutex<VecDeque<ChunkTask>>>,
    feeder: Feeder,
    mut stop: watch::Receiver<bool>,
    imported: mpsc::Sender<()>,
    job: JobHandle,
    output: Output,
) -> Result<(), SnapshotError> {
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(sql("starting the snapshot transaction"))?;
    tx.batch_execute(&format!(
        "SET TRANSACTION SNAPSHOT {}",
        quote_literal(&snapshot_name)
    ))
    .await
    .map_err(sql("importing the exported snapshot"))?;
    let _ = imported.send(()).await;
    drop(imported);
    loop {
        if *stop.borrow() {
            return Ok(());
        }
        let Some(task) = queue.lock().ok().and_then(|mut q| q.pop_front()) else {
            return Ok(());
        };
        let table = task.table.name.clone();
        let copy = tx
            .copy_out(&task.copy_sql)
            .await
            .map_err(sql(format!("COPY of {table}")))?;
        pin_mut!(copy);
        let mut buf = BytesMut::new();
        let mut rows: u64 = 0;
        let mut body =
            output
                .encoders
                .encoder(task.table.clone(), copy_version(lsn), output.body_bytes);
        let copy_error = |source| SnapshotError::Copy {
            table: table.clone(),
            source,
        };
        // One stop future for the whole chunk: building one per row costs more than the row.
        let mut stop_copy = stop.clone();
        let stopped = stop_copy.changed();
        tokio::pin!(stopped);
        loop {
            // Not biased: with COPY data always ready, a biased select would only see a pause
            // at the end of the chunk.
            let next = tokio::select! {
                next = copy.try_next() => next.map_err(|e| sql(format!("COPY of {table}"))(e))?,
                _ = &mut stopped => return Ok(()),
            };
            let Some(data) = next else { break };
            // PostgreSQL sends one row per CopyData message: use it in place.
            let single = buf.is_empty()
                && data.last() == Some(&b'\n')
                && memchr::memchr(b'\n', &data[..data.len() - 1]).is_none();
            if single {
                rows += 1;
                let end = data.len() - 1;
                let event = line_event(body.as_mut(), &data[..end]).map_err(copy_error)?;
                if let Some(event) = event {
                    if !send(&feeder, &mut stop, event).await {
                        return Ok(());
                    }
                }
                continue;
            }
            buf.extend_from_slice(&data);
            while let Some(nl) = memchr::memchr(b'\n', &buf) {
                let line = buf.split_to(nl + 1).freeze().slice(..nl);
                rows += 1;
                let event = line_event(body.as_mut(), &line).map_err(copy_error)?;
                if let Some(event) = event {
                    if !send(&feeder, &mut stop, event).await {
                        return Ok(());
                    }
                }
            }
        }
        if !buf.is_empty() {
            return Err(SnapshotError::Truncated {
                table,
                bytes: buf.len(),
            });
        }
        while let Some(e) = body.take() {
            if !send(&feeder, &mut stop, Event::Encoded(e)).await {
                return Ok(());
            }
        }
        job.metrics()
            .snapshot_rows_total
            .fetch_add(rows, Ordering::Relaxed);
        let _ = feeder
            .send(Event::ChunkDone {
                table,
                chunk: task.chunk,
                rows,
            })
            .await;
    }
}

/// Adds one copied line to the sink's encoder; returns a body to send once one is full.
fn line_event(
    body: &mut dyn SnapshotEncoder,
    line: &[u8],
) -> Result<Option<Event>, SnapshotEncodeError> {
    body.push_line(line)?;
    Ok(if body.is_full() {
        body.take().map(Event::Encoded)
    } else {
        None
    })
}

/// Sends an event unless a stop comes first; returns whether to go on.
async fn send(feeder: &Feeder, stop: &mut watch::Receiver<bool>, event: Event) -> bool {
    tokio::select! {
        r = feeder.send(event) => r.is_ok(),
        _ = stop.changed() => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::change::RelId;

    #[test]
    fn progress_shows_rows_against_the_estimate_and_chunks() {
        let t = TableName::new("public", "t");
        let p = TableProgress {
            chunks_done: 5,
            chunks: 20,
            rows_done: 1_250_000,
            rows_estimated: 5_000_000,
        };
        assert_eq!(
            progress_text(&t, &p),
            "public.t 1250000/~5000000 rows (25%), 5/20 chunks"
        );
        let under = TableProgress {
            rows_done: 700,
            rows_estimated: 500,
            ..p
        };
        assert!(progress_text(&t, &under).contains("700/~500 rows (100%)"));
        let unknown = TableProgress {
            chunks: 1,
            ..TableProgress::default()
        };
        assert_eq!(
            progress_text(&t, &unknown),
            "public.t 0/~0 rows, 0/1 chunks"
        );
    }

    #[test]
    fn copied_rows_lose_to_a_commit_at_the_snapshot_point_and_win_over_earlier_ones() {
        let c = Lsn(0x1_0000_0040);
        let v = copy_version(c);
        assert!(
            v < c,
            "a commit starting exactly at C is newer than the copy"
        );
        // The latest commit record before C starts at least 8 bytes (one aligned record) earlier.
        assert!(
            v > Lsn(c.0 - 8),
            "the copy is newer than every commit it holds"
        );
    }

    #[test]
    fn chunk_sql_bounds_keys_as_rows() {
        let table = TableCatalog {
            name: TableName::new("public", "t"),
            oid: RelId(1),
            source_name: TableName::new("public", "t"),
            key_columns: vec!["a".into(), "b".into()],
            columns: vec![],
        };
        let s = copy_sql(
            &table,
            &["integer".into(), "text".into()],
            Some(&["1".into(), "x'y".into()]),
            None,
        );
        assert_eq!(
            s,
            "COPY (SELECT  FROM \"public\".\"t\" WHERE ROW(\"a\", \"b\") > ROW('1'::integer, 'x''y'::text)) TO STDOUT"
        );
    }
}
