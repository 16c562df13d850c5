//! Durable commit LSNs in `dbmazz_checkpoints`.
//!
//! The checkpoint is the end LSN of the last transaction whose every change is durable in the
//! sink (design invariant 1). It is written here *before* the same LSN is confirmed to
//! PostgreSQL, so the slot can never be ahead of what the sink holds. On restart the stored LSN
//! is where streaming resumes, and transactions that PostgreSQL resends from before it are
//! skipped. The table lives in the source database, next to the data it describes:
//!
//! ```sql
//! CREATE TABLE dbmazz_checkpoints (slot_name text PRIMARY KEY, lsn pg_lsn NOT NULL,
//!                                  updated_at timestamptz NOT NULL DEFAULT now());
//! ```
//!
//! Writes are monotonic: a stored LSN never moves backwards.

use std::time::Duration;

use tokio_postgres::Client;

use crate::config::{quote_ident, TableName};
use crate::pipeline::change::{TableCatalog, TableSchema};
use crate::postgres::state_tables::{
    checkpoint_ddl, create_refused_hint, current_role, schema_log_ddl,
};
use crate::Lsn;

/// Reading or writing the checkpoint failed.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The table could not be created.
    #[error(
        "cannot create the checkpoint table {table}: {}; {hint}",
        crate::postgres::tls::flatten_chain(source)
    )]
    Create {
        /// Qualified table name.
        table: String,
        /// The exact statements that let dbmazz start (see [`create_refused_hint`]).
        hint: String,
        /// Cause.
        source: tokio_postgres::Error,
    },
    /// A query failed.
    #[error(
        "checkpoint {action} for slot {slot} failed: {}",
        crate::postgres::tls::flatten_chain(source)
    )]
    Query {
        /// load or save.
        action: &'static str,
        /// Slot.
        slot: String,
        /// Cause.
        source: tokio_postgres::Error,
    },
    /// A save got no answer in time: the connection is likely dead (a network black hole
    /// swallows the query and the answer alike, and nothing on the client would ever notice).
    #[error(
        "checkpoint save for slot {slot} got no answer from PostgreSQL within {} ms; the \
         connection is considered dead and is re-established", timeout.as_millis()
    )]
    Timeout {
        /// Slot.
        slot: String,
        /// The limit that was exceeded.
        timeout: Duration,
    },
}

impl CheckpointError {
    /// Whether reconnecting may help: a lost connection or an unanswered save, as opposed to a
    /// server that refused the statement.
    pub fn is_transient(&self) -> bool {
        match self {
            CheckpointError::Query { source, .. } => {
                source.is_closed()
                    || source
                        .code()
                        .is_none_or(|c| crate::postgres::sqlstate::is_transient(c.code()))
            }
            CheckpointError::Timeout { .. } => true,
            CheckpointError::Create { .. } => false,
        }
    }
}

/// The checkpoint row of one slot.
pub struct CheckpointStore {
    client: Client,
    table: String,
    slot: String,
    save_timeout: Option<Duration>,
}

impl CheckpointStore {
    /// Opens (and creates if needed) `schema.dbmazz_checkpoints`.
    pub async fn open(client: Client, schema: &str, slot: &str) -> Result<Self, CheckpointError> {
        let table = format!("{}.dbmazz_checkpoints", quote_ident(schema));
        let exists: bool = client
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&table])
            .await
            .map_err(|source| CheckpointError::Query {
                action: "lookup",
                slot: slot.into(),
                source,
            })?
            .get(0);
        if !exists {
            let ddl = checkpoint_ddl(&table);
            if let Err(source) = client.batch_execute(&ddl).await {
                let role = current_role(&client)
                    .await
                    .unwrap_or_else(|| "<dbmazz's role>".into());
                return Err(CheckpointError::Create {
                    hint: create_refused_hint(&role, schema, &ddl, &[&table]),
                    table,
                    source,
                });
            }
        }
        Ok(CheckpointStore {
            client,
            table,
            slot: slot.into(),
            save_timeout: None,
        })
    }

    /// Bounds every [`save`](Self::save): one that gets no answer within `timeout` fails with
    /// [`CheckpointError::Timeout`] instead of waiting forever on a dead connection. `None`
    /// waits as long as the connection lives.
    pub fn with_save_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.save_timeout = timeout;
        self
    }

    /// The stored LSN, if this slot ever checkpointed.
    pub async fn load(&self) -> Result<Option<Lsn>, CheckpointError> {
        let row = self
            .client
            .query_opt(
                &format!("SELECT lsn::text FROM {} WHERE slot_name = $1", self.table),
                &[&self.slot],
            )
            .await
            .map_err(|source| self.query_error("load", source))?;
        Ok(row.and_then(|r| r.get::<_, String>(0).parse().ok()))
    }

    /// Stores `lsn` unless a later one is already stored.
    pub async fn save(&self, lsn: Lsn) -> Result<(), CheckpointError> {
        let Some(timeout) = self.save_timeout else {
            return self.save_unbounded(lsn).await;
        };
        tokio::time::timeout(timeout, self.save_unbounded(lsn))
            .await
            .unwrap_or_else(|_| {
                Err(CheckpointError::Timeout {
                    slot: self.slot.clone(),
                    timeout,
                })
            })
    }

    async fn save_unbounded(&self, lsn: Lsn) -> Result<(), CheckpointError> {
        self.client
            .execute(
                &format!(
                    "INSERT INTO {t} AS c (slot_name, lsn, updated_at) VALUES ($1, $2::text::pg_lsn, now()) \
                     ON CONFLICT (slot_name) DO UPDATE SET lsn = EXCLUDED.lsn, updated_at = now() \
                     WHERE c.lsn <= EXCLUDED.lsn",
                    t = self.table
                ),
                &[&self.slot, &lsn.to_string()],
            )
            .await
            .map_err(|source| self.query_error("save", source))?;
        Ok(())
    }

    fn query_error(&self, action: &'static str, source: tokio_postgres::Error) -> CheckpointError {
        CheckpointError::Query {
            action,
            slot: self.slot.clone(),
            source,
        }
    }
}

/// The table holding, per slot and table, each schema version dbmazz streamed with, keyed by
/// the LSN of the Relation message that introduced it (design: "the last schema dbmazz applied,
/// persisted next to the checkpoint"). On restart the version in force at the checkpoint
/// seeds the schema cache, so a change made while dbmazz was stopped is compared with what the
/// sink last had, exactly as a change made while it runs.
pub const SCHEMA_LOG_TABLE: &str = "dbmazz_schemas";

/// One stored schema version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredSchema {
    /// LSN of the Relation message (or the stream start) it was recorded at.
    pub lsn: Lsn,
    /// The table, as `TABLES` names it.
    pub table: TableName,
    /// Its relation OID.
    pub rel_oid: u32,
    /// Its name in the source then.
    pub source_name: TableName,
    /// Columns: name, type OID, type modifier.
    pub columns: Vec<(String, u32, i32)>,
    /// Key column names.
    pub key: Vec<String>,
    /// Replica identity byte.
    pub replica_identity: u8,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct StoredColumn {
    name: String,
    type_oid: u32,
    type_modifier: i32,
}

impl StoredSchema {
    /// The version of `schema` (named `source_name` in the source) at `lsn`.
    pub fn of(lsn: Lsn, schema: &TableSchema, source_name: &TableName) -> StoredSchema {
        StoredSchema {
            lsn,
            table: schema.name.clone(),
            rel_oid: schema.rel_id.0,
            source_name: source_name.clone(),
            columns: schema
                .columns
                .iter()
                .map(|c| (c.name.clone(), c.type_oid, c.type_modifier))
                .collect(),
            key: schema
                .key
                .iter()
                .filter_map(|&i| schema.columns.get(i).map(|c| c.name.clone()))
                .collect(),
            replica_identity: schema.replica_identity,
        }
    }

    /// The version a new job starts with: the catalog read at setup.
    pub fn from_catalog(lsn: Lsn, t: &TableCatalog) -> StoredSchema {
        StoredSchema {
            lsn,
            table: t.name.clone(),
            rel_oid: t.oid.0,
            source_name: t.source_name.clone(),
            columns: t
                .columns
                .iter()
                .map(|c| (c.name.clone(), c.type_oid, c.type_modifier))
                .collect(),
            key: t.key_columns.clone(),
            replica_identity: b'd',
        }
    }

    /// Whether both describe the same columns, key and identity.
    pub fn same_shape(&self, other: &StoredSchema) -> bool {
        self.rel_oid == other.rel_oid
            && self.columns == other.columns
            && self.key == other.key
            && self.replica_identity == other.replica_identity
            && self.source_name == other.source_name
    }
}

impl CheckpointStore {
    fn schema_log(&self) -> String {
        // Next to the checkpoint table, in its schema.
        let schema = self
            .table
            .rsplit_once('.')
            .map_or("public", |(s, _)| s)
            .to_owned();
        format!("{schema}.{SCHEMA_LOG_TABLE}")
    }

    /// Creates the schema log unless it exists (an administrator may have created it for a role
    /// without `CREATE` on the schema: then no right on the schema is needed).
    pub async fn open_schema_log(&self) -> Result<(), CheckpointError> {
        let table = self.schema_log();
        let exists: bool = self
            .client
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&table])
            .await
            .map_err(|source| CheckpointError::Query {
                action: "lookup",
                slot: self.slot.clone(),
                source,
            })?
            .get(0);
        if exists {
            return Ok(());
        }
        let ddl = schema_log_ddl(&table);
        if let Err(source) = self.client.batch_execute(&ddl).await {
            let role = current_role(&self.client)
                .await
                .unwrap_or_else(|| "<dbmazz's role>".into());
            let schema = table.rsplit_once('.').map_or("public", |(s, _)| s);
            return Err(CheckpointError::Create {
                hint: create_refused_hint(&role, schema, &ddl, &[&table]),
                table,
                source,
            });
        }
        Ok(())
    }

    /// Per table, the latest version recorded at or before `at` (every table's latest when
    /// `at` is `None`).
    pub async fn load_schemas(
        &self,
        at: Option<Lsn>,
    ) -> Result<Vec<StoredSchema>, CheckpointError> {
        let at = at.unwrap_or(Lsn(u64::MAX >> 1)).to_string();
        let rows = self
            .client
            .query(
                &format!(
                    "SELECT DISTINCT ON (table_name) table_name, lsn::text, rel_oid, source_name, \
                            columns::text, key_columns, replica_identity \
                       FROM {} WHERE slot_name = $1 AND lsn <= $2::text::pg_lsn \
                      ORDER BY table_name, lsn DESC",
                    self.schema_log()
                ),
                &[&self.slot, &at],
            )
            .await
            .map_err(|source| self.query_error("schema load", source))?;
        let mut out = Vec::new();
        for r in rows {
            let one = |text: String| {
                crate::ident::parse_tables(&text)
                    .ok()
                    .and_then(|mut t| (t.len() == 1).then(|| t.remove(0)))
            };
            let (Some(table), Some(source_name)) =
                (one(r.get::<_, String>(0)), one(r.get::<_, String>(3)))
            else {
                continue;
            };
            let Ok(columns) = serde_json::from_str::<Vec<StoredColumn>>(&r.get::<_, String>(4))
            else {
                continue;
            };
            out.push(StoredSchema {
                lsn: r.get::<_, String>(1).parse().unwrap_or(Lsn::ZERO),
                table,
                rel_oid: r.get(2),
                source_name,
                columns: columns
                    .into_iter()
                    .map(|c| (c.name, c.type_oid, c.type_modifier))
                    .collect(),
                key: r.get(5),
                replica_identity: r.get::<_, String>(6).bytes().next().unwrap_or(b'd'),
            });
        }
        Ok(out)
    }

    /// Records schema versions (idempotent: a version already recorded at its LSN is kept).
    pub async fn save_schemas(&self, versions: &[StoredSchema]) -> Result<(), CheckpointError> {
        for v in versions {
            let columns: Vec<StoredColumn> = v
                .columns
                .iter()
                .map(|(name, type_oid, type_modifier)| StoredColumn {
                    name: name.clone(),
                    type_oid: *type_oid,
                    type_modifier: *type_modifier,
                })
                .collect();
            let columns = serde_json::to_string(&columns).unwrap_or_else(|_| "[]".into());
            let identity = (v.replica_identity as char).to_string();
            let (table, lsn, source_name) =
                (v.table.quoted(), v.lsn.to_string(), v.source_name.quoted());
            let sql = format!(
                "INSERT INTO {} (slot_name, table_name, lsn, rel_oid, source_name, columns, \
                 key_columns, replica_identity) \
                 VALUES ($1, $2, $3::text::pg_lsn, $4, $5, $6::text::jsonb, $7, $8) \
                 ON CONFLICT (slot_name, table_name, lsn) DO NOTHING",
                self.schema_log()
            );
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 8] = [
                &self.slot,
                &table,
                &lsn,
                &v.rel_oid,
                &source_name,
                &columns,
                &v.key,
                &identity,
            ];
            let fut = self.client.execute(&sql, &params);
            let done = match self.save_timeout {
                Some(timeout) => tokio::time::timeout(timeout, fut).await.map_err(|_| {
                    CheckpointError::Timeout {
                        slot: self.slot.clone(),
                        timeout,
                    }
                })?,
                None => fut.await,
            };
            done.map_err(|source| self.query_error("schema save", source))?;
        }
        Ok(())
    }
}
