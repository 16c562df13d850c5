//! Automatic source setup: checks, publication, slot and replica identity.
//!
//! Operators only name tables; dbmazz prepares the rest and says exactly what to do when it
//! cannot. Every step is safe to repeat after a crash:
//!
//! 1. The server must be PostgreSQL 14 or later (`version`), `wal_level` must be `logical` and
//!    the database encoding UTF8.
//! 2. Every table in `TABLES` must exist, be a plain table, and have a primary key. The replica
//!    identity is left alone by default (partial updates in the sink make FULL unnecessary);
//!    `REPLICA_IDENTITY=full` sets FULL.
//! 3. The publication is created, or checked and completed (`publication`): it must publish
//!    inserts, updates, deletes and truncates of every column of every table.
//! 4. dbmazz's own tables (checkpoint, snapshot progress) exist or may be created
//!    (`state_tables`), so that a least-privilege role fails here, with the statements to run,
//!    rather than after the slot exists.
//! 5. The slot is created if missing, unless a checkpoint says it existed before: then changes
//!    may have been lost and dbmazz refuses to paper over that with a fresh slot.

use std::collections::HashMap;
use std::time::Duration;

use tokio_postgres::Client;

use crate::config::{Config, ReplicaIdentityPolicy, TableName, TablePattern, TableRenamePolicy};
use crate::pipeline::change::RelId;
use crate::postgres::replication::{ReplicationClient, ReplicationError};
use crate::postgres::schema_cache::{CatalogColumn, TableCatalog};
use crate::value::{Scalar, ValueKind};
use crate::Lsn;

/// Setup cannot continue.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// `wal_level` is not logical.
    #[error(
        "wal_level is {actual:?} but logical replication needs 'logical': run \
         ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL"
    )]
    WalLevel {
        /// The current setting.
        actual: String,
    },
    /// The database encoding is not UTF8.
    #[error("database encoding is {actual}, but dbmazz needs UTF8 to emit valid JSON text; replicate from a UTF8 database")]
    Encoding {
        /// The current encoding.
        actual: String,
    },
    /// A table does not exist.
    #[error("Table '{table}' not found in PostgreSQL. Verify the table exists and is accessible, or fix TABLES.")]
    TableNotFound {
        /// Table.
        table: TableName,
    },
    /// `TABLES` has only patterns, and they match no table.
    #[error(
        "TABLES' patterns ({patterns}) match no table: create one, or fix TABLES (patterns \
         match ordinary tables by schema and name; `*` matches any run of characters)"
    )]
    NoTableMatches {
        /// The patterns.
        patterns: String,
    },
    /// A table was renamed while dbmazz was stopped, and `SCHEMA_TABLE_RENAME=stop`.
    #[error(
        "table {table} (relation OID {oid}) is now {now} in PostgreSQL (renamed or moved while \
         dbmazz was stopped), and SCHEMA_TABLE_RENAME=stop. Either rename it back \
         (ALTER TABLE {now} RENAME TO …/SET SCHEMA …), or restart with \
         SCHEMA_TABLE_RENAME=follow to keep loading it into the same target"
    )]
    Renamed {
        /// The table as `TABLES` names it.
        table: TableName,
        /// Its relation OID.
        oid: u32,
        /// Its name now.
        now: TableName,
    },
    /// Not a plain table.
    #[error("{table} is a {kind}, not a table; TABLES may only list ordinary tables")]
    NotATable {
        /// Table.
        table: TableName,
        /// What it is.
        kind: &'static str,
    },
    /// No primary key.
    #[error(
        "table {table} has no primary key: add one (ALTER TABLE {quoted} ADD PRIMARY KEY (...)); \
         dbmazz needs a key to apply updates and deletes in the sink"
    )]
    NoPrimaryKey {
        /// Table.
        table: TableName,
        /// Quoted name for the hint.
        quoted: String,
    },
    /// Replica identity that hides the key.
    #[error(
        "table {table} has REPLICA IDENTITY {identity}: updates and deletes would not carry its \
         primary key; run ALTER TABLE {table} REPLICA IDENTITY DEFAULT, or set REPLICA_IDENTITY=full"
    )]
    ReplicaIdentity {
        /// Table.
        table: TableName,
        /// Quoted name for the hint.
        quoted: String,
        /// NOTHING or USING INDEX.
        identity: &'static str,
    },
    /// `SLOT_FAILOVER=true` cannot be honoured.
    #[error(transparent)]
    Failover(#[from] crate::postgres::failover::FailoverError),
    /// dbmazz's role can neither use nor create its state tables.
    #[error(transparent)]
    StateTables(#[from] crate::postgres::state_tables::StateTablesError),
    /// The publication cannot deliver every change, and dbmazz may not fix it (boxed: its
    /// messages carry whole statements).
    #[error(transparent)]
    Publication(Box<crate::postgres::publication::PublicationError>),
    /// The slot exists with settings dbmazz cannot use.
    #[error("replication slot {slot} {problem}")]
    SlotUnusable {
        /// Slot.
        slot: String,
        /// What is wrong and what to do.
        problem: String,
    },
    /// PostgreSQL invalidated the slot (`wal_status = lost`): the message says what to do.
    #[error("{0}")]
    SlotInvalidated(String),
    /// The slot is in use by another connection.
    #[error(
        "replication slot {slot} is active for PID {pid}: another consumer (or a connection the \
         server has not noticed is dead) holds it; stop the other consumer, or wait for wal_sender_timeout"
    )]
    SlotActive {
        /// Slot.
        slot: String,
        /// Walsender PID.
        pid: i32,
    },
    /// A checkpoint exists but its slot is gone.
    #[error(
        "replication slot {slot} does not exist, but dbmazz_checkpoints holds LSN {checkpoint} for \
         it: the slot was dropped and changes after {checkpoint} may be lost. To start over, delete \
         the checkpoint row (DELETE FROM dbmazz_checkpoints WHERE slot_name = '{slot}') and restart \
         with a fresh copy of the tables. If the server failed over to a standby, the slot was not \
         synchronized to it: on PostgreSQL 17+ set SLOT_FAILOVER=true (and configure the standbys) \
         so that the next failover keeps it"
    )]
    SlotLost {
        /// Slot.
        slot: String,
        /// Stored checkpoint.
        checkpoint: Lsn,
    },
    /// A catalog query or DDL statement failed.
    #[error("{action} failed: {}", crate::postgres::tls::flatten_chain(source))]
    Sql {
        /// What was being done.
        action: String,
        /// Cause.
        source: tokio_postgres::Error,
    },
    /// The server is older than PostgreSQL 14.
    #[error(transparent)]
    Version(#[from] crate::postgres::version::UnsupportedVersion),
    /// Creating the slot failed.
    #[error("creating replication slot {slot} failed: {source}")]
    CreateSlot {
        /// Slot.
        slot: String,
        /// Cause.
        source: ReplicationError,
    },
}

impl SetupError {
    /// Whether retrying later may help (connection trouble, a slot still held by a dead peer).
    pub fn is_transient(&self) -> bool {
        match self {
            SetupError::SlotActive { .. } => true,
            SetupError::Sql { source, .. } => {
                source.is_closed()
                    || source
                        .code()
                        .is_none_or(|c| crate::postgres::sqlstate::is_transient(c.code()))
            }
            SetupError::CreateSlot { source, .. } => source.is_transient(),
            SetupError::Publication(err) => err.is_transient(),
            SetupError::StateTables(err) => err.is_transient(),
            SetupError::Failover(err) => err.is_transient(),
            _ => false,
        }
    }
}

impl From<crate::postgres::publication::PublicationError> for SetupError {
    fn from(err: crate::postgres::publication::PublicationError) -> Self {
        SetupError::Publication(Box::new(err))
    }
}

fn sql(action: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> SetupError {
    let action = action.into();
    move |source| SetupError::Sql { action, source }
}

/// What setup learned about the source.
#[derive(Debug, Clone)]
pub struct SourceInfo {
    /// Key columns of each table.
    pub tables: Vec<TableCatalog>,
    /// JSON treatment of the non-built-in column types.
    pub types: HashMap<u32, ValueKind>,
    /// The server's `wal_sender_timeout` (None when disabled).
    pub wal_sender_timeout: Option<Duration>,
    /// `server_version_num`, e.g. 150008.
    pub server_version_num: u32,
}

/// Checks the server and tables, sets replica identity, and prepares the publication.
pub async fn prepare_source(client: &Client, config: &Config) -> Result<SourceInfo, SetupError> {
    let server_version_num = show(client, "server_version_num")
        .await?
        .parse()
        .unwrap_or(0);
    crate::postgres::version::check_supported(server_version_num)?;
    crate::postgres::failover::require_primary(client).await?;
    let wal_level = show(client, "wal_level").await?;
    if wal_level != "logical" {
        return Err(SetupError::WalLevel { actual: wal_level });
    }
    let encoding = show(client, "server_encoding").await?;
    if encoding != "UTF8" && encoding != "SQL_ASCII" {
        return Err(SetupError::Encoding { actual: encoding });
    }
    let timeout_ms: i64 = client
        .query_one(
            "SELECT setting::bigint FROM pg_settings WHERE name = 'wal_sender_timeout'",
            &[],
        )
        .await
        .map_err(sql("reading wal_sender_timeout"))?
        .get(0);
    let wal_sender_timeout =
        (timeout_ms > 0).then(|| Duration::from_millis(timeout_ms.unsigned_abs()));

    let mut tables = Vec::new();
    let mut oids: Vec<u32> = Vec::new();
    let mut wanted = config.tables.clone();
    for t in matching_tables(client, &config.table_patterns).await? {
        if !wanted.contains(&t) {
            wanted.push(t);
        }
    }
    if wanted.is_empty() {
        return Err(SetupError::NoTableMatches {
            patterns: config
                .table_patterns
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    for table in &wanted {
        let source_name = match check_table(client, table, config.replica_identity).await {
            Err(SetupError::TableNotFound { .. }) => {
                renamed_while_stopped(client, config, table).await?
            }
            Err(e) => return Err(e),
            Ok(_) => table.clone(),
        };
        let (oid, key_columns) = check_table(client, &source_name, config.replica_identity).await?;
        oids.push(oid);
        tables.push(TableCatalog {
            name: table.clone(),
            oid: RelId(oid),
            source_name: source_name.clone(),
            key_columns,
            columns: table_columns(client, oid, &source_name).await?,
        });
    }
    let types = resolve_types(client, &oids).await?;
    crate::postgres::publication::ensure(
        client,
        &config.publication_name,
        &tables,
        server_version_num,
    )
    .await?;
    crate::postgres::state_tables::preflight(client).await?;
    Ok(SourceInfo {
        tables,
        types,
        wal_sender_timeout,
        server_version_num,
    })
}

/// The ordinary tables (not partitions, not dbmazz's own `dbmazz_*` tables, not in system
/// schemas) that match any of `patterns`, by schema and name.
pub async fn matching_tables(
    client: &Client,
    patterns: &[TablePattern],
) -> Result<Vec<TableName>, SetupError> {
    if patterns.is_empty() {
        return Ok(Vec::new());
    }
    let rows = client
        .query(
            "SELECT n.nspname::text, c.relname::text \
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
              WHERE c.relkind = 'r' AND NOT c.relispartition \
                AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
                AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%' \
                AND c.relname NOT LIKE 'dbmazz\\_%' \
              ORDER BY 1, 2",
            &[],
        )
        .await
        .map_err(sql("listing the tables TABLES' patterns may match"))?;
    Ok(rows
        .iter()
        .map(|r| TableName::new(r.get::<_, String>(0), r.get::<_, String>(1)))
        .filter(|t| patterns.iter().any(|p| p.matches(t)))
        .collect())
}

/// A table of `TABLES` that is not found by its name: if this slot streamed it before (its
/// relation OID is in the schema log) and a table with that OID still exists, it was renamed
/// or moved while dbmazz was stopped. `SCHEMA_TABLE_RENAME=follow` takes it under its new
/// name; `stop` says so. Otherwise the table is just missing.
async fn renamed_while_stopped(
    client: &Client,
    config: &Config,
    table: &TableName,
) -> Result<TableName, SetupError> {
    let not_found = || SetupError::TableNotFound {
        table: table.clone(),
    };
    let log = format!("public.{}", crate::checkpoint::SCHEMA_LOG_TABLE);
    let exists: bool = client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&log])
        .await
        .map_err(sql("looking up the schema log"))?
        .get(0);
    if !exists {
        return Err(not_found());
    }
    let row = client
        .query_opt(
            &format!(
                "SELECT n.nspname::text, c.relname::text, c.oid \
                   FROM (SELECT rel_oid FROM {log} WHERE slot_name = $1 AND table_name = $2 \
                          ORDER BY lsn DESC LIMIT 1) s \
                   JOIN pg_class c ON c.oid = s.rel_oid \
                   JOIN pg_namespace n ON n.oid = c.relnamespace"
            ),
            &[&config.slot_name, &table.quoted()],
        )
        .await
        .map_err(sql(format!("looking up the relation OID of {table}")))?;
    let Some(row) = row else {
        return Err(not_found());
    };
    let now = TableName::new(row.get::<_, String>(0), row.get::<_, String>(1));
    let oid: u32 = row.get(2);
    match config.table_rename {
        TableRenamePolicy::Stop => Err(SetupError::Renamed {
            table: table.clone(),
            oid,
            now,
        }),
        TableRenamePolicy::Follow => {
            tracing::warn!(
                table = %table,
                oid,
                now = %now,
                "table renamed in PostgreSQL while dbmazz was stopped; SCHEMA_TABLE_RENAME=follow: \
                 its changes keep loading into the same target"
            );
            Ok(now)
        }
    }
}

async fn show(client: &Client, setting: &str) -> Result<String, SetupError> {
    let rows = client
        .simple_query(&format!("SHOW {setting}"))
        .await
        .map_err(sql(format!("SHOW {setting}")))?;
    Ok(rows
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        })
        .unwrap_or_default())
}

async fn check_table(
    client: &Client,
    table: &TableName,
    policy: ReplicaIdentityPolicy,
) -> Result<(u32, Vec<String>), SetupError> {
    let row = client
        .query_opt(
            "SELECT c.oid, c.relkind::text, c.relreplident::text, \
                    coalesce((SELECT array_agg(a.attname::text ORDER BY k.ord) \
                       FROM pg_index i \
                       CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) \
                       JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
                      WHERE i.indrelid = c.oid AND i.indisprimary), '{}') \
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
              WHERE n.nspname = $1 AND c.relname = $2",
            &[&table.schema, &table.name],
        )
        .await
        .map_err(sql(format!("looking up table {table}")))?;
    let Some(row) = row else {
        return Err(SetupError::TableNotFound {
            table: table.clone(),
        });
    };
    let oid: u32 = row.get(0);
    let relkind: String = row.get(1);
    let identity: String = row.get(2);
    let key: Vec<String> = row.get(3);
    let kind = match relkind.as_str() {
        "r" => None,
        "p" => Some("partitioned table (list its partitions instead)"),
        "v" => Some("view"),
        "m" => Some("materialized view"),
        "f" => Some("foreign table"),
        _ => Some("relation of another kind"),
    };
    if let Some(kind) = kind {
        return Err(SetupError::NotATable {
            table: table.clone(),
            kind,
        });
    }
    if key.is_empty() {
        return Err(SetupError::NoPrimaryKey {
            table: table.clone(),
            quoted: table.quoted(),
        });
    }
    match (policy, identity.as_str()) {
        (ReplicaIdentityPolicy::Full, "f") | (ReplicaIdentityPolicy::Default, "d" | "f") => {}
        (ReplicaIdentityPolicy::Full, _) => {
            client
                .batch_execute(&format!(
                    "ALTER TABLE {} REPLICA IDENTITY FULL",
                    table.quoted()
                ))
                .await
                .map_err(sql(format!("setting REPLICA IDENTITY FULL on {table}")))?;
            tracing::info!(table = %table, "set replica identity full");
        }
        (ReplicaIdentityPolicy::Default, other) => {
            return Err(SetupError::ReplicaIdentity {
                table: table.clone(),
                quoted: table.quoted(),
                identity: if other == "n" {
                    "NOTHING"
                } else {
                    "USING INDEX"
                },
            })
        }
    }
    Ok((oid, key))
}

async fn table_columns(
    client: &Client,
    oid: u32,
    table: &TableName,
) -> Result<Vec<CatalogColumn>, SetupError> {
    let rows = client
        .query(
            "SELECT a.attname::text, a.atttypid, a.atttypmod, t.typelem, a.attnotnull, \
                    a.attndims::int4 \
               FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid \
              WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped \
                AND a.attgenerated = '' \
              ORDER BY a.attnum",
            &[&oid],
        )
        .await
        .map_err(sql(format!("reading the columns of {table}")))?;
    Ok(rows
        .iter()
        .map(|r| CatalogColumn {
            name: r.get(0),
            type_oid: r.get(1),
            type_modifier: r.get(2),
            elem_oid: r.get(3),
            not_null: r.get(4),
            array_dims: u8::try_from(r.get::<_, i32>(5)).unwrap_or(u8::MAX),
        })
        .collect())
}

/// Resolves the JSON treatment of user-defined column types (domains, enums, arrays of them).
async fn resolve_types(
    client: &Client,
    oids: &[u32],
) -> Result<HashMap<u32, ValueKind>, SetupError> {
    let rows = client
        .query(
            "SELECT DISTINCT t.oid, t.typtype::text, t.typbasetype, t.typelem, \
                    coalesce(e.typbasetype, 0::oid), coalesce(e.typdelim, ',')::text \
               FROM pg_attribute a \
               JOIN pg_type t ON t.oid = a.atttypid \
               LEFT JOIN pg_type e ON e.oid = t.typelem AND t.typcategory = 'A' \
              WHERE a.attrelid = ANY($1) AND a.attnum > 0 AND NOT a.attisdropped",
            &[&oids],
        )
        .await
        .map_err(sql("reading column types"))?;
    let mut out = HashMap::new();
    for row in rows {
        let oid: u32 = row.get(0);
        if ValueKind::for_builtin_oid(oid).is_some() {
            continue;
        }
        let typtype: String = row.get(1);
        let base: u32 = row.get(2);
        let elem: u32 = row.get(3);
        let elem_base: u32 = row.get(4);
        let delim: String = row.get(5);
        let scalar_of = |o: u32| match ValueKind::for_builtin_oid(o) {
            Some(ValueKind::Scalar(s)) => s,
            _ => Scalar::Text,
        };
        let kind = if elem != 0 && typtype != "d" {
            let elem_oid = if elem_base != 0 { elem_base } else { elem };
            ValueKind::Array {
                elem: scalar_of(elem_oid),
                delim: delim.bytes().next().unwrap_or(b','),
            }
        } else if typtype == "d" {
            ValueKind::for_builtin_oid(base).unwrap_or(ValueKind::Scalar(Scalar::Text))
        } else {
            ValueKind::Scalar(Scalar::Text)
        };
        out.insert(oid, kind);
    }
    Ok(out)
}

/// Checks that the slot is usable; returns its `confirmed_flush_lsn`, or `None` when it does
/// not exist and may be created ([`create_slot`]): there is no checkpoint that needs it.
pub async fn check_slot(
    client: &Client,
    slot: &str,
    checkpoint: Option<Lsn>,
) -> Result<Option<Lsn>, SetupError> {
    let row = client
        .query_opt(
            "SELECT plugin::text, slot_type, database::text = current_database(), active, \
                    coalesce(active_pid, 0), coalesce(wal_status, ''), \
                    coalesce(confirmed_flush_lsn::text, '0/0'), \
                    current_setting('max_slot_wal_keep_size') \
               FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(sql(format!("looking up replication slot {slot}")))?;
    let unusable = |problem: String| SetupError::SlotUnusable {
        slot: slot.into(),
        problem,
    };
    let Some(row) = row else {
        if let Some(checkpoint) = checkpoint {
            return Err(SetupError::SlotLost {
                slot: slot.into(),
                checkpoint,
            });
        }
        return Ok(None);
    };
    let plugin: Option<String> = row.get(0);
    let slot_type: String = row.get(1);
    let same_db: Option<bool> = row.get(2);
    let active: bool = row.get(3);
    let pid: i32 = row.get(4);
    let wal_status: String = row.get(5);
    let confirmed: String = row.get(6);
    if slot_type != "logical" || plugin.as_deref() != Some("pgoutput") {
        return Err(unusable(format!(
            "is a {slot_type} slot with plugin {}; dbmazz needs a logical pgoutput slot: use another SLOT_NAME",
            plugin.as_deref().unwrap_or("none")
        )));
    }
    if same_db != Some(true) {
        return Err(unusable(
            "belongs to another database; use another SLOT_NAME".into(),
        ));
    }
    if wal_status == "lost" {
        let keep: String = row.get(7);
        return Err(SetupError::SlotInvalidated(
            crate::postgres::slot_health::invalidated_message(
                slot,
                &wal_status,
                None,
                "an unknown amount",
                &keep,
            ),
        ));
    }
    if active {
        return Err(SetupError::SlotActive {
            slot: slot.into(),
            pid,
        });
    }
    let confirmed: Lsn = confirmed.parse().unwrap_or(Lsn::ZERO);
    if let Some(cp) = checkpoint {
        if confirmed > cp {
            tracing::warn!(slot, confirmed = %confirmed, checkpoint = %cp,
                "the slot is ahead of the checkpoint: something else confirmed this slot; changes between them were not written by dbmazz");
        }
    }
    Ok(Some(confirmed))
}

/// Creates the slot; returns its consistent point.
pub async fn create_slot(repl: &mut ReplicationClient, slot: &str) -> Result<Lsn, SetupError> {
    let created = repl
        .create_logical_slot(slot, false)
        .await
        .map_err(|source| SetupError::CreateSlot {
            slot: slot.into(),
            source,
        })?;
    tracing::info!(slot, consistent_point = %created.consistent_point, "created replication slot");
    Ok(created.consistent_point)
}
