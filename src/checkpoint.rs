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

use crate::config::quote_ident;
use crate::postgres::state_tables::{create_refused_hint, current_role};
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
            let ddl = format!(
                "CREATE TABLE IF NOT EXISTS {table} (slot_name text PRIMARY KEY, \
                 lsn pg_lsn NOT NULL, updated_at timestamptz NOT NULL DEFAULT now());"
            );
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
