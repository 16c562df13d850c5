//! The task tree of one replication job, and the order in which it stops.
//!
//! ```text
//!             ┌──────────── status task: standby updates every ≤ interval, at once on request
//!             │                 (write = received, flush = confirmed)
//! replication ┤
//!   stream    └─▶ WAL reader ──Feeder──▶ batcher ──▶ sink
//!                                          │ durable commit LSN (watch)
//!                                          ▼
//!                                   checkpoint task: save to dbmazz_checkpoints, then
//!                                   publish as `confirmed` and wake the status task
//! ```
//!
//! Stopping (SIGTERM, or the pipeline ending) runs in this order: the reader stops reading; the
//! batcher flushes what it holds; the checkpoint task persists the last durable commit; the status
//! task confirms it to PostgreSQL and ends the COPY; the stream is drained. So a clean stop
//! leaves `confirmed_flush_lsn` at the last durable commit, and a crash at any point leaves it at
//! or before it (the checkpoint is always written first).
//!
//! Transient failures (connection loss, a slot still held by a dead connection) restart the job
//! from its checkpoint with backoff; definite ones end it with the error.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::checkpoint::{CheckpointError, CheckpointStore, StoredSchema};
use crate::config::{quote_ident, Config, SinkConfig, StarRocksConfig, TableName};
use crate::job::{JobHandle, RunState, Stage};
use crate::ndjson::NdjsonSink;
use crate::pipeline::batcher::{self, Batcher};
use crate::pipeline::change::{CatalogColumn, TableCatalog};
use crate::pipeline::sink::{ErrorKind, Sink, SinkError};
use crate::postgres::failover;
use crate::postgres::heartbeat;
use crate::postgres::reader::{Progress, ReaderError, ReaderExit, SchemaLogQueue, WalReader};
use crate::postgres::replication::{
    ReplicationClient, ReplicationError, ReplicationStream, StatusSender,
};
use crate::postgres::schema_cache::SchemaCache;
use crate::postgres::setup::{self, SetupError};
use crate::postgres::slot_health::{human_bytes, human_duration, SlotAlarm, SlotView};
use crate::postgres::snapshot::{self, SnapshotError};
use crate::postgres::streamed::StreamedTxns;
use crate::postgres::tls::{connect_sql_bounded, ConnectError};
use crate::postgres::toast_backfill::{CopyingTables, ToastBackfill};
use crate::starrocks::sink::StarRocksSink;
use crate::starrocks::types::builtin_array_elem;
use crate::Lsn;

/// Why the job stopped.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// Connecting for SQL failed.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// Setup failed.
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// The checkpoint store failed.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The replication connection failed.
    #[error(transparent)]
    Replication(#[from] ReplicationError),
    /// The reader failed.
    #[error(transparent)]
    Reader(#[from] ReaderError),
    /// The sink failed.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// The initial snapshot failed.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// The server ended the replication stream without being asked to.
    #[error("the server ended the replication stream unexpectedly")]
    EndOfStream,
    /// PostgreSQL invalidated the slot (seen by the slot monitor): what happened and how to
    /// start over.
    #[error("{0}")]
    SlotInvalidated(String),
}

impl DaemonError {
    /// Whether restarting the job from its checkpoint may help.
    pub fn is_transient(&self) -> bool {
        match self {
            DaemonError::Connect(e) => e.is_transient(),
            DaemonError::Setup(e) => e.is_transient(),
            DaemonError::Checkpoint(e) => e.is_transient(),
            DaemonError::Replication(e) => e.is_transient(),
            DaemonError::Reader(e) => e.is_transient(),
            DaemonError::Sink(e) => e.kind == ErrorKind::Transient,
            DaemonError::Snapshot(e) => e.is_transient(),
            DaemonError::EndOfStream => true,
            DaemonError::SlotInvalidated(_) => false,
        }
    }
}

/// Runs the job until a drain is requested through `job` (then drains and returns `Ok`) or a
/// definite error (returned, and recorded in the job state for Health).
pub async fn run(config: Config, job: JobHandle) -> Result<(), DaemonError> {
    let mut drain = job.drain();
    let mut paused = job.paused();
    let mut slot = job.slot_views();
    let mut backoff = Duration::from_secs(1);
    loop {
        if let Some(why) = invalidated(&job) {
            let e = DaemonError::SlotInvalidated(why);
            job.set_state(
                job.state().stage,
                RunState::Failed,
                "Slot invalidated",
                Some(e.to_string()),
            );
            return Err(e);
        }
        if *drain.borrow() {
            job.set_state(Stage::Cdc, RunState::Stopped, "Stopped", None);
            return Ok(());
        }
        if *paused.borrow() {
            wait_while_paused(&config, &job, &mut paused, &mut drain, &mut slot).await;
            continue;
        }
        let started = tokio::time::Instant::now();
        let result = match &config.sink {
            SinkConfig::StarRocks(sr) => run_once(&config, SinkChoice::StarRocks(sr), &job).await,
            SinkConfig::Ndjson { path: Some(path) } => match NdjsonSink::file(path).await {
                Ok(sink) => run_once(&config, SinkChoice::Ready(sink), &job).await,
                Err(e) => Err(e.into()),
            },
            SinkConfig::Ndjson { path: None } => {
                run_once(&config, SinkChoice::Ready(NdjsonSink::stdout()), &job).await
            }
        };
        let stage = job.state().stage;
        match result {
            Ok(()) => backoff = Duration::from_secs(1),
            Err(e) if e.is_transient() && !*drain.borrow() => {
                if started.elapsed() > Duration::from_secs(60) {
                    backoff = Duration::from_secs(1);
                }
                tracing::warn!(error = %e, retry_in_s = backoff.as_secs(), "replication stopped, restarting from the checkpoint");
                job.set_state(stage, RunState::Starting, "Retrying", Some(e.to_string()));
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = drain.wait_for(|d| *d) => {}
                    _ = slot.wait_for(|v| matches!(v.alarm, SlotAlarm::Invalidated(_))) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(60));
            }
            Err(e) => {
                // A failure caused by the invalidation (the server ends the walsender that held
                // the slot) reads better as the monitor's account of it.
                let e = match invalidated(&job) {
                    Some(why) if !matches!(e, DaemonError::SlotInvalidated(_)) => {
                        tracing::debug!(error = %e, "failure after the slot was invalidated");
                        DaemonError::SlotInvalidated(why)
                    }
                    _ => e,
                };
                if matches!(
                    e,
                    DaemonError::SlotInvalidated(_)
                        | DaemonError::Setup(SetupError::SlotInvalidated(_))
                ) {
                    job.set_state(
                        stage,
                        RunState::Failed,
                        "Slot invalidated",
                        Some(e.to_string()),
                    );
                    return Err(e);
                }
                let detail = match stage {
                    Stage::Init | Stage::Setup => "Setup failed",
                    Stage::Snapshot => "Snapshot failed",
                    Stage::Cdc => "Replication failed",
                };
                job.set_state(stage, RunState::Failed, detail, Some(e.to_string()));
                return Err(e);
            }
        }
    }
}

/// The slot monitor's message when it last saw the slot invalidated.
fn invalidated(job: &JobHandle) -> Option<String> {
    match job.slot_view().alarm {
        SlotAlarm::Invalidated(why) => Some(why),
        _ => None,
    }
}

/// How often a long pause logs the WAL the slot retains.
const PAUSE_REPORT_EVERY: Duration = Duration::from_secs(60);

/// Waits until a resume, a drain or an invalidated slot. Past `PAUSE_MAX_MS` it resumes by
/// itself (`PAUSE_AUTO_RESUME=true`) or reports the overdue pause in Health and logs the
/// retained WAL every minute.
async fn wait_while_paused(
    config: &Config,
    job: &JobHandle,
    paused: &mut watch::Receiver<bool>,
    drain: &mut watch::Receiver<bool>,
    slot: &mut watch::Receiver<SlotView>,
) {
    // A pause does not move the job along: one asked for during the copy stops it at a chunk
    // boundary, and the stage stays `Snapshot` until the resumed copy is done.
    let stage = job.state().stage;
    job.set_state(stage, RunState::Paused, "Paused", None);
    tracing::info!("paused: changes wait in the slot until resumed");
    let since = tokio::time::Instant::now();
    let mut next = config.wal_guard.pause_max.map(|max| since + max);
    loop {
        let wake = async {
            match next {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = paused.wait_for(|p| !*p) => {
                tracing::info!("resuming");
                return;
            }
            _ = drain.wait_for(|d| *d) => return,
            _ = slot.wait_for(|v| matches!(v.alarm, SlotAlarm::Invalidated(_))) => return,
            _ = wake => {}
        }
        let max = config.wal_guard.pause_max.unwrap_or_default();
        let retained = job.slot_view().reading.retained_bytes;
        let retained_text = retained.map_or("an unknown amount".to_owned(), human_bytes);
        if config.wal_guard.pause_auto_resume {
            tracing::warn!(
                paused_s = since.elapsed().as_secs(),
                retained = %retained_text,
                "the pause reached PAUSE_MAX_MS={}; resuming (PAUSE_AUTO_RESUME=true)",
                max.as_millis()
            );
            let _ = job.resume();
            continue;
        }
        let why = format!(
            "paused for {} (PAUSE_MAX_MS={}): the slot retains {retained_text} of WAL and keeps growing; Resume, or DrainAndStop, or set PAUSE_AUTO_RESUME=true",
            human_duration(since.elapsed()),
            max.as_millis()
        );
        tracing::warn!(
            slot = %config.slot_name,
            retained_bytes = retained.unwrap_or(0),
            "{why}"
        );
        job.set_state(stage, RunState::Paused, "Paused too long", Some(why));
        next = Some(tokio::time::Instant::now() + PAUSE_REPORT_EVERY);
    }
}

/// The sink of one run: ready to use, or prepared once the source's tables are known.
enum SinkChoice<'a> {
    Ready(NdjsonSink),
    StarRocks(&'a StarRocksConfig),
}

/// One connection's worth of streaming: setup, then stream until a pause or drain request (`Ok`)
/// or an error.
async fn run_once(
    config: &Config,
    sink: SinkChoice<'_>,
    job: &JobHandle,
) -> Result<(), DaemonError> {
    job.set_state(
        Stage::Setup,
        RunState::Starting,
        "Configuring PostgreSQL",
        None,
    );
    let client = connect_sql_bounded(&config.database, config.statement_timeout).await?;
    let source = setup::prepare_source(&client, config).await?;
    job.set_tables(source.tables.iter().map(|t| t.name.clone()).collect());
    let resume = Resume::load(config).await?;
    match sink {
        SinkChoice::Ready(sink) => stream(config, sink, job, client, source, resume).await,
        SinkChoice::StarRocks(sr) => {
            job.set_state(
                Stage::Setup,
                RunState::Starting,
                "Configuring StarRocks",
                None,
            );
            let sink = StarRocksSink::connect(
                sr.clone(),
                &config.slot_name,
                &resume.tables_at_checkpoint(&source.tables),
                job.metrics().clone(),
            )
            .await?;
            job.set_source_catalog(crate::job::SourceCatalog {
                tables: source.tables.clone(),
                types: source.types.clone(),
            });
            stream(config, sink, job, client, source, resume).await
        }
    }
}

/// Where the last run stopped: the checkpoint store, the checkpoint, and the schema each table
/// had there.
struct Resume {
    store: CheckpointStore,
    checkpoint: Option<Lsn>,
    stored_schemas: Vec<StoredSchema>,
}

impl Resume {
    async fn load(config: &Config) -> Result<Resume, DaemonError> {
        let store = CheckpointStore::open(
            connect_sql_bounded(&config.database, config.statement_timeout).await?,
            "public",
            &config.slot_name,
        )
        .await?
        .with_save_timeout(config.wal_receiver_timeout);
        let checkpoint = store.load().await?;
        store.open_schema_log().await?;
        // The schema each table had at the checkpoint: the first Relation message of this
        // session is compared with it, so drift made while dbmazz was stopped is seen as a
        // change at the point of the stream where it was made.
        let stored_schemas = match checkpoint {
            Some(c) => store.load_schemas(Some(c)).await?,
            None => Vec::new(),
        };
        Ok(Resume {
            store,
            checkpoint,
            stored_schemas,
        })
    }

    /// The tables as the sink last had them: a table whose definition changed while dbmazz
    /// was stopped keeps its columns at the checkpoint, so the sink prepares for the rows the
    /// stream replays first, and the change is applied where the stream reaches it.
    fn tables_at_checkpoint(&self, tables: &[TableCatalog]) -> Vec<TableCatalog> {
        tables
            .iter()
            .map(|t| {
                let Some(s) = self
                    .stored_schemas
                    .iter()
                    .find(|s| s.table == t.name && s.rel_oid == t.oid.0)
                else {
                    return t.clone();
                };
                let columns = s
                    .columns
                    .iter()
                    .map(|(name, type_oid, type_modifier)| {
                        t.columns
                            .iter()
                            .find(|c| {
                                &c.name == name
                                    && c.type_oid == *type_oid
                                    && c.type_modifier == *type_modifier
                            })
                            .cloned()
                            .unwrap_or_else(|| CatalogColumn {
                                name: name.clone(),
                                type_oid: *type_oid,
                                type_modifier: *type_modifier,
                                elem_oid: builtin_array_elem(*type_oid),
                                not_null: false,
                                array_dims: 0,
                            })
                    })
                    .collect();
                TableCatalog {
                    columns,
                    ..t.clone()
                }
            })
            .collect()
    }
}

/// Streams into `sink` until a pause or drain request, or an error.
async fn stream<S: Sink>(
    config: &Config,
    mut sink: S,
    job: &JobHandle,
    client: tokio_postgres::Client,
    source: setup::SourceInfo,
    resume: Resume,
) -> Result<(), DaemonError> {
    let Resume {
        store,
        checkpoint,
        stored_schemas,
    } = resume;
    let mut repl = ReplicationClient::connect(&config.database).await?;
    if config.slot_failover {
        failover::require(source.server_version_num).map_err(SetupError::from)?;
    }
    let slot_confirmed = match setup::check_slot(&client, &config.slot_name, checkpoint).await? {
        Some(confirmed) => confirmed,
        None => {
            // Before the slot exists: a crash between the two only means doing this again.
            sink.new_slot().await?;
            setup::create_slot(&mut repl, &config.slot_name).await?
        }
    };
    if config.slot_failover {
        // A new slot is marked right after its creation; a crash in between is fixed here on
        // the next start, as for a slot that existed before SLOT_FAILOVER was set.
        failover::ensure(&client, &mut repl, &config.slot_name)
            .await
            .map_err(SetupError::from)?;
    }
    drop(client);
    let plan = snapshot::prepare(config, &source).await?;

    let start = checkpoint.unwrap_or(Lsn::ZERO).max(slot_confirmed);
    let publication = quote_ident(&config.publication_name);
    // pgoutput delivers logical messages (the heartbeat) from PostgreSQL 14 on, when asked.
    let heartbeat_interval = config
        .wal_guard
        .heartbeat_interval
        .filter(|_| source.server_version_num >= 140_000);
    if config.wal_guard.heartbeat_interval.is_some() && heartbeat_interval.is_none() {
        tracing::warn!(
            server_version_num = source.server_version_num,
            "the heartbeat needs PostgreSQL 14 or later; it is off"
        );
    }
    // Streaming (protocol 2, on every supported server): PostgreSQL sends a transaction that
    // outgrows logical_decoding_work_mem while it runs, instead of spilling it to its own disk;
    // dbmazz holds it (memory, then SPILL_DIR) until its commit.
    let streamed = if config.streaming.enabled {
        let db = &config.database;
        let store = StreamedTxns::open(
            &config.streaming.spill,
            &config.slot_name,
            &format!("{:?}/{}", db.hosts, db.dbname),
            job.metrics().clone(),
        )
        .map_err(|source| ReaderError::Spill { lsn: start, source })?;
        tracing::info!(
            dir = %config.streaming.spill.dir.display(),
            memory_bytes = config.streaming.spill.memory_bytes,
            max_bytes = store.max_disk(),
            "streaming of in-progress transactions on"
        );
        Some(store)
    } else {
        None
    };
    let proto_version = if streamed.is_some() { "2" } else { "1" };
    let mut options = vec![
        ("proto_version", proto_version),
        ("publication_names", &publication),
    ];
    if streamed.is_some() {
        options.push(("streaming", "on"));
    }
    if heartbeat_interval.is_some() {
        options.push(("messages", "true"));
    }
    let (mut stream, status) = repl
        .start_logical_replication(&config.slot_name, start, &options)
        .await?;
    stream.set_receive_timeout(config.wal_receiver_timeout);
    // State first: scripts (and tests) that wait for this log line then ask Health. With a
    // copy to do, the stage is the snapshot's until its last chunk is durable (the copy then
    // says Replicating).
    match &plan.work {
        Some(work) => work.show_progress(job),
        None => job.set_state(Stage::Cdc, RunState::Running, "Replicating", None),
    }
    tracing::info!(slot = %config.slot_name, start = %start, tables = config.tables.len(), "streaming changes");

    let progress = job.progress().clone();
    progress.confirmed.fetch_max(start.0, Ordering::Relaxed);
    progress.received.fetch_max(start.0, Ordering::Relaxed);
    let status_period = source
        .wal_sender_timeout
        .map_or(config.status_interval, |t| {
            config.status_interval.min(t / 2)
        })
        .max(Duration::from_millis(100));
    let (stop_status_tx, stop_status_rx) = watch::channel(false);
    let status_task = tokio::spawn(status_loop(
        status,
        progress.clone(),
        status_period,
        stop_status_rx,
    ));
    let (durable_tx, durable_rx) = watch::channel(start);
    let schema_log: SchemaLogQueue = Arc::default();
    let checkpoint_task = tokio::spawn(checkpoint_loop(
        store,
        durable_rx,
        progress.clone(),
        schema_log.clone(),
    ));
    let (feeder, rx) = batcher::channel(&config.flush, job.circuit().clone());
    let snapshot_output = snapshot::Output {
        encoders: sink.snapshot_encoders(),
        // Four bodies per batch: the workers fill the next ones while a batch loads. At least
        // 1 MiB, so that the small default FLUSH_MAX_BYTES does not turn a big table into
        // thousands of tiny loads.
        body_bytes: (config.flush.max_bytes / 4).clamp(1 << 20, 16 << 20),
    };
    let (chunk_tx, chunk_rx) = mpsc::unbounded_channel();
    let copying = CopyingTables::new(
        plan.work
            .as_ref()
            .map(|w| w.copying_tables())
            .unwrap_or_default(),
    );
    let batcher_task = tokio::spawn(
        Batcher::new(
            sink,
            job.flush(),
            rx,
            durable_tx,
            job.metrics().clone(),
            config.sink_circuit,
            job.circuit().clone(),
        )
        .with_chunk_reports(chunk_tx)
        .with_stage(Box::new(ToastBackfill::new(
            copying.clone(),
            config.database.clone(),
        )))
        .run(),
    );
    // A table created later that matches a TABLES pattern: the run ends (everything received
    // is flushed and confirmed) and the next one sets it up and snapshots it, as for a table
    // added to TABLES across a restart.
    let (restart_tx, restart_rx) = watch::channel(false);
    let _discovery = (!config.table_patterns.is_empty()).then(|| {
        AbortOnDrop(tokio::spawn(discover_tables(
            config.clone(),
            source.tables.iter().map(|t| t.name.clone()).collect(),
            restart_tx,
        )))
    });
    let (stop_rx, stop_watcher) = stop_on_pause_or_drain(job, restart_rx);
    // Ends with this run (a pause writes no heartbeats: nothing would read them).
    let _heartbeat = heartbeat_interval.map(|interval| {
        AbortOnDrop(tokio::spawn(heartbeat::run(
            config.database.clone(),
            config.statement_timeout,
            interval,
            job.metrics().clone(),
            stop_rx.clone(),
        )))
    });
    let snapshot_task = plan.work.map(|work| {
        tokio::spawn(snapshot::run(
            work,
            config.database.clone(),
            config.snapshot.workers,
            snapshot_output,
            feeder.clone(),
            chunk_rx,
            stop_rx.clone(),
            job.clone(),
            copying,
        ))
    });
    let mut tasks = Tasks {
        slot: job.slot_views(),
        batcher: batcher_task,
        snapshot: snapshot_task,
        checkpoint: checkpoint_task,
        status: status_task,
        stop_status: stop_status_tx,
        stop_watcher,
    };
    let mut cache =
        SchemaCache::new(&source.tables, source.types).with_rename_policy(config.table_rename);
    let recorded: Vec<StoredSchema> = stored_schemas
        .into_iter()
        .filter(|s| cache.seed_stored(s))
        .collect();
    for stored in &recorded {
        if let Some(t) = source.tables.iter().find(|t| t.name == stored.table) {
            let now = StoredSchema::from_catalog(stored.lsn, t);
            if now.columns != stored.columns || now.source_name != stored.source_name {
                // Applied at the exact point: pgoutput describes the table again before its
                // first change after the ALTER, and that description is compared with this one.
                tracing::info!(
                    table = %t.name,
                    at_checkpoint = ?stored.columns.iter().map(|c| &c.0).collect::<Vec<_>>(),
                    now = ?now.columns.iter().map(|c| &c.0).collect::<Vec<_>>(),
                    "the table's definition changed while dbmazz was stopped; the change is \
                     applied where the stream reaches it, under the SCHEMA_* policies"
                );
            }
        }
    }
    if checkpoint.is_none() {
        // A new job streams from a slot created now: the catalog is the schema at its start.
        if let Ok(mut q) = schema_log.lock() {
            q.extend(
                source
                    .tables
                    .iter()
                    .map(|t| StoredSchema::from_catalog(start, t)),
            );
        }
    }
    let reader = WalReader::new(
        stream,
        cache,
        feeder,
        progress.clone(),
        job.metrics().clone(),
        checkpoint.unwrap_or(Lsn::ZERO),
    )
    .with_snapshot_skips(plan.skip_before)
    .with_schema_log(schema_log, recorded);
    let reader = match streamed {
        Some(store) => reader.with_streaming(store),
        None => reader,
    };
    let exit = tasks.supervise(reader.run(stop_rx)).await?;
    finish(tasks, exit, job, &progress).await
}

/// A watch that turns true when a pause or a drain is requested (the reader and the copy stop
/// on it), and the task that sets it.
fn stop_on_pause_or_drain(
    job: &JobHandle,
    mut restart: watch::Receiver<bool>,
) -> (watch::Receiver<bool>, JoinHandle<()>) {
    let (stop_tx, stop_rx) = watch::channel(false);
    let (mut paused, mut drain_rx) = (job.paused(), job.drain());
    let watcher = tokio::spawn(async move {
        tokio::select! {
            _ = paused.wait_for(|p| *p) => {}
            _ = drain_rx.wait_for(|d| *d) => {}
            Ok(_) = restart.wait_for(|r| *r) => {}
        }
        let _ = stop_tx.send(true);
    });
    (stop_rx, watcher)
}

/// Every `TABLES_DISCOVERY_INTERVAL_MS`, looks for tables that match a `TABLES` pattern and are
/// not streamed yet; on the first found, asks the run to end so that the next one adds them.
/// A failed look is logged and tried again at the next interval: it must not stop the stream.
async fn discover_tables(config: Config, known: Vec<TableName>, restart: watch::Sender<bool>) {
    let mut client: Option<tokio_postgres::Client> = None;
    loop {
        tokio::time::sleep(config.discovery_interval).await;
        if client.as_ref().is_none_or(|c| c.is_closed()) {
            client = connect_sql_bounded(&config.database, config.statement_timeout)
                .await
                .map_err(|e| tracing::warn!(error = %e, "looking for new tables: cannot connect"))
                .ok();
        }
        let Some(c) = &client else { continue };
        let found = match setup::matching_tables(c, &config.table_patterns).await {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(error = %e, "looking for new tables failed; trying again later");
                client = None;
                continue;
            }
        };
        let new: Vec<String> = found
            .iter()
            .filter(|t| !known.contains(t))
            .map(ToString::to_string)
            .collect();
        if !new.is_empty() {
            tracing::info!(
                tables = ?new,
                "new tables match TABLES; the stream restarts from its checkpoint to add and \
                 snapshot them (the other tables resume where they were)"
            );
            let _ = restart.send(true);
            return;
        }
    }
}

/// The tasks of one streaming run besides the reader: whichever ends first with an error
/// stops the others.
struct Tasks {
    /// The slot monitor's readings: an invalidated slot ends the run.
    slot: watch::Receiver<SlotView>,
    batcher: JoinHandle<Result<(), SinkError>>,
    snapshot: Option<JoinHandle<Result<(), SnapshotError>>>,
    checkpoint: JoinHandle<Result<(), DaemonError>>,
    status: JoinHandle<Result<(), DaemonError>>,
    stop_status: watch::Sender<bool>,
    stop_watcher: JoinHandle<()>,
}

impl Tasks {
    fn abort_all(&self) {
        self.batcher.abort();
        self.checkpoint.abort();
        self.status.abort();
        self.stop_watcher.abort();
        if let Some(t) = &self.snapshot {
            t.abort();
        }
    }

    /// Runs the reader until it exits, or returns the error of a task that ended before it (the
    /// other tasks are then aborted).
    async fn supervise(
        &mut self,
        reader_run: impl std::future::Future<Output = Result<ReaderExit, ReaderError>>,
    ) -> Result<Result<ReaderExit, ReaderError>, DaemonError> {
        tokio::pin!(reader_run);
        let failed: DaemonError = loop {
            let snapshot_running = self.snapshot.is_some();
            tokio::select! {
                exit = &mut reader_run => return Ok(exit),
                r = async { self.snapshot.as_mut().expect("guarded").await }, if snapshot_running => {
                    match r {
                        Ok(Ok(())) => self.snapshot = None,
                        Ok(Err(e)) => break e.into(),
                        Err(join) => break SinkError::definite(format!("the snapshot task failed: {join}")).caused_by(join).into(),
                    }
                }
                // The batcher only ends early when the sink failed; that error is the reason.
                r = &mut self.batcher => break match r {
                    Ok(Err(e)) => e.into(),
                    Ok(Ok(())) => DaemonError::EndOfStream,
                    Err(join) => SinkError::definite(format!("the pipeline task failed: {join}")).caused_by(join).into(),
                },
                r = &mut self.checkpoint => break flatten(r).err().unwrap_or(DaemonError::EndOfStream),
                r = &mut self.status => break flatten(r).err().unwrap_or(DaemonError::EndOfStream),
                v = self.slot.wait_for(|v| matches!(v.alarm, SlotAlarm::Invalidated(_))) => {
                    match v.as_deref().map(|v| v.alarm.clone()) {
                        Ok(SlotAlarm::Invalidated(why)) => break DaemonError::SlotInvalidated(why),
                        _ => continue,
                    }
                }
            }
        };
        self.abort_all();
        Err(failed)
    }
}

/// After the reader exited: flushes, checkpoints and confirms what arrived, then says how the
/// run ended.
async fn finish(
    mut tasks: Tasks,
    exit: Result<ReaderExit, ReaderError>,
    job: &JobHandle,
    progress: &Progress,
) -> Result<(), DaemonError> {
    tasks.stop_watcher.abort();
    let stopping = matches!(exit, Ok(ReaderExit::Shutdown(_)));
    if !stopping {
        // Only a stop request makes the copy end by itself; otherwise it is cut here (its
        // unfinished chunks are copied again on the next start).
        if let Some(t) = tasks.snapshot.take() {
            t.abort();
        }
    }
    if *job.drain().borrow() {
        job.set_state(Stage::Cdc, RunState::Draining, "Draining", None);
    }
    let Tasks {
        batcher,
        snapshot,
        checkpoint,
        status,
        stop_status,
        ..
    } = tasks;
    let stream = match exit {
        Ok(ReaderExit::Shutdown(stream)) | Ok(ReaderExit::PipelineClosed(stream)) => Some(stream),
        Ok(ReaderExit::EndOfStream) => None,
        Err(e) => {
            // Flush what arrived before the failure so that the restart replays less; but a
            // slot that PostgreSQL invalidated (it ends the walsender that held it) will never
            // be restarted from, and a stalled sink must not keep the failure from showing.
            let aborts = [
                batcher.abort_handle(),
                checkpoint.abort_handle(),
                status.abort_handle(),
            ];
            let mut slot = job.slot_views();
            tokio::select! {
                _ = drain(batcher, snapshot, checkpoint, stop_status, status, None) => {}
                _ = slot.wait_for(|v| matches!(v.alarm, SlotAlarm::Invalidated(_))) => {
                    aborts.iter().for_each(|a| a.abort());
                }
            }
            return Err(e.into());
        }
    };
    let ended_by_server = stream.is_none();
    drain(batcher, snapshot, checkpoint, stop_status, status, stream).await?;
    if ended_by_server {
        return Err(DaemonError::EndOfStream);
    }
    tracing::info!(confirmed = %Lsn(progress.confirmed.load(Ordering::Relaxed)), "flushed and confirmed everything received");
    Ok(())
}

async fn drain(
    batcher_task: JoinHandle<Result<(), SinkError>>,
    snapshot_task: Option<JoinHandle<Result<(), SnapshotError>>>,
    checkpoint_task: JoinHandle<Result<(), DaemonError>>,
    stop_status: watch::Sender<bool>,
    status_task: JoinHandle<Result<(), DaemonError>>,
    stream: Option<ReplicationStream>,
) -> Result<(), DaemonError> {
    let sink_result = match batcher_task.await {
        Ok(r) => r.map_err(DaemonError::from),
        Err(join) => Err(
            SinkError::definite(format!("the pipeline task failed: {join}"))
                .caused_by(join)
                .into(),
        ),
    };
    // The copy records the chunks that became durable in the final flush, then ends.
    if let Some(t) = snapshot_task {
        match tokio::time::timeout(Duration::from_secs(30), t).await {
            Ok(Ok(Err(e))) => {
                tracing::warn!(error = %e, "snapshot bookkeeping failed while stopping")
            }
            Ok(_) => {}
            Err(_) => tracing::warn!("snapshot bookkeeping did not finish within 30 s"),
        }
    }
    let checkpoint_result = flatten(checkpoint_task.await);
    let _ = stop_status.send(true);
    let status_result = flatten(status_task.await);
    if let Some(mut stream) = stream {
        let drained = tokio::time::timeout(Duration::from_secs(10), async {
            while let Ok(Some(_)) = stream.next().await {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!("the server did not end the replication stream within 10 s");
        }
    }
    sink_result?;
    checkpoint_result?;
    status_result
}

fn flatten(r: Result<Result<(), DaemonError>, tokio::task::JoinError>) -> Result<(), DaemonError> {
    match r {
        Ok(r) => r,
        Err(join) => Err(
            SinkError::definite(format!("a replication task failed: {join}"))
                .caused_by(join)
                .into(),
        ),
    }
}

/// Aborts a helper task when the run that started it ends.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Persists each newly durable LSN, then publishes it as confirmed.
async fn checkpoint_loop(
    store: CheckpointStore,
    mut durable: watch::Receiver<Lsn>,
    progress: Arc<Progress>,
    schema_log: SchemaLogQueue,
) -> Result<(), DaemonError> {
    let mut persisted = Lsn(progress.confirmed.load(Ordering::Relaxed));
    loop {
        let closed = durable.changed().await.is_err();
        let lsn = *durable.borrow_and_update();
        if lsn > persisted {
            // Schema versions first: every version at or before a stored checkpoint is in the
            // log, so a restart seeds the schema the sink last had.
            let versions: Vec<StoredSchema> = schema_log
                .lock()
                .map(|mut q| std::mem::take(&mut *q))
                .unwrap_or_default();
            if let Err(e) = store.save_schemas(&versions).await {
                if let Ok(mut q) = schema_log.lock() {
                    q.splice(0..0, versions);
                }
                return Err(e.into());
            }
            store.save(lsn).await?;
            persisted = lsn;
            progress.confirmed.fetch_max(lsn.0, Ordering::Relaxed);
            progress.status_now.notify_one();
            tracing::debug!(lsn = %lsn, "checkpoint saved");
        }
        if closed {
            return Ok(());
        }
        // Coalesce bursts of small batches into fewer checkpoint writes.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sends standby status updates independently of sink speed.
async fn status_loop(
    mut status: StatusSender,
    progress: Arc<Progress>,
    period: Duration,
    mut stop: watch::Receiver<bool>,
) -> Result<(), DaemonError> {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stopping = tokio::select! {
            _ = tick.tick() => false,
            _ = progress.status_now.notified() => false,
            _ = stop.changed() => true,
        };
        let confirmed = Lsn(progress.confirmed.load(Ordering::Relaxed));
        let received = Lsn(progress.received.load(Ordering::Relaxed)).max(confirmed);
        status
            .send_status(received, confirmed, confirmed, false)
            .await?;
        if stopping {
            status.finish().await?;
            return Ok(());
        }
    }
}
