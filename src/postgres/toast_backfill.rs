//! Fills in unchanged TOAST values of updates to tables whose snapshot is still running.
//!
//! pgoutput leaves a TOASTed column out of an update that did not change it, and the sink then
//! writes a partial row that keeps the stored value. That relies on the row already being in
//! the sink. While a table is being copied it may not be: an update committed after the
//! snapshot point can reach the sink before the chunk that holds its key. The partial update
//! then creates the row without the TOASTed column, and the copied row, older by version,
//! loses to it under `merge_condition`, so the column would stay empty for good.
//!
//! So while a table has unfinished chunks, the batcher asks PostgreSQL for the missing values
//! of such updates (one query per table per flush) before the batch goes to the sink, and the
//! update is written as a full row. The value read is the current one, possibly newer than the
//! update: any later change of that column is itself streamed with a higher version and wins,
//! so the row still converges to the source. A key no longer found (deleted or re-keyed since)
//! keeps its partial row; its delete follows in the stream.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio_postgres::SimpleQueryMessage;

use crate::config::{quote_ident, quote_literal, TableName};
use crate::pipeline::change::Value;
use crate::pipeline::change::{Event, Op, TableSchema};
use crate::pipeline::sink::{BatchStage, SinkError};
use crate::postgres::conninfo::PgConnInfo;
use crate::postgres::tls::connect_sql;

/// Keys per lookup query.
const KEYS_PER_QUERY: usize = 500;

/// The tables whose snapshot has chunks left, shared by the snapshot task (which removes a
/// table once all its chunks are durable) and the batcher.
#[derive(Debug, Default)]
pub struct CopyingTables(Mutex<std::collections::HashSet<TableName>>);

impl CopyingTables {
    /// A set holding `tables`.
    pub fn new(tables: impl IntoIterator<Item = TableName>) -> Arc<Self> {
        Arc::new(CopyingTables(Mutex::new(tables.into_iter().collect())))
    }

    /// `table`'s copy is complete.
    pub fn finished(&self, table: &TableName) {
        self.lock().remove(table);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<TableName>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Looks up unchanged TOAST values for updates of tables in [`CopyingTables`].
pub struct ToastBackfill {
    copying: Arc<CopyingTables>,
    database: PgConnInfo,
    client: Option<tokio_postgres::Client>,
}

impl BatchStage for ToastBackfill {
    fn prepare<'a>(
        &'a mut self,
        events: &'a mut [Event],
    ) -> futures_util::future::BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move { self.fill(events).await.map(|_| ()) })
    }
}

impl ToastBackfill {
    /// A backfill reading from `database`; it connects on first use.
    pub fn new(copying: Arc<CopyingTables>, database: PgConnInfo) -> Self {
        ToastBackfill {
            copying,
            database,
            client: None,
        }
    }

    /// Replaces [`Value::UnchangedToast`] in updates of tables still being copied with the
    /// values PostgreSQL has now. Returns how many rows were completed. Connection failures are
    /// transient; a failed lookup (say the column was dropped since) leaves the rows partial
    /// and is logged.
    pub async fn fill(&mut self, events: &mut [Event]) -> Result<usize, SinkError> {
        let groups = {
            let copying = self.copying.lock();
            if copying.is_empty() {
                return Ok(0);
            }
            // Keyed by the schema's address: one query per table version.
            let mut groups: HashMap<usize, Vec<usize>> = HashMap::new();
            for (i, event) in events.iter().enumerate() {
                if let Event::Row(r) = event {
                    if r.op == Op::Update
                        && !r.key_only
                        && r.row.values.contains(&Value::UnchangedToast)
                        && copying.contains(&r.table.name)
                    {
                        groups
                            .entry(Arc::as_ptr(&r.table) as usize)
                            .or_default()
                            .push(i);
                    }
                }
            }
            groups.into_values().collect::<Vec<_>>()
        };
        let mut filled = 0;
        for rows in groups {
            for part in rows.chunks(KEYS_PER_QUERY) {
                filled += self.fill_table(events, part).await?;
            }
        }
        Ok(filled)
    }

    async fn fill_table(
        &mut self,
        events: &mut [Event],
        rows: &[usize],
    ) -> Result<usize, SinkError> {
        let Event::Row(first) = &events[rows[0]] else {
            return Ok(0);
        };
        let table = first.table.clone();
        let mut missing: Vec<usize> = Vec::new();
        let mut keys = Vec::with_capacity(rows.len());
        for &i in rows {
            let Event::Row(r) = &events[i] else { continue };
            for (c, v) in r.row.values.iter().enumerate() {
                if *v == Value::UnchangedToast && !missing.contains(&c) {
                    missing.push(c);
                }
            }
            match key_text(&table, &r.row.values) {
                Some(k) => keys.push(k),
                None => return Ok(0),
            }
        }
        missing.sort_unstable();
        let sql = lookup_sql(&table, &missing, &keys);
        let transient = |e: &dyn std::fmt::Display| {
            SinkError::transient(format!(
                "looking up unchanged TOAST values of {} during its snapshot: {e}",
                table.name
            ))
        };
        let client = match &self.client {
            Some(c) if !c.is_closed() => c,
            _ => {
                let c = connect_sql(&self.database)
                    .await
                    .map_err(|e| transient(&e))?;
                self.client.insert(c)
            }
        };
        let messages = match client.simple_query(&sql).await {
            Ok(m) => m,
            Err(e) if client.is_closed() => return Err(transient(&e)),
            Err(e) => {
                tracing::warn!(table = %table.name, error = %e, "could not look up unchanged TOAST values; those updates stay partial");
                return Ok(0);
            }
        };
        let nkey = table.key.len();
        let mut found: HashMap<Vec<String>, Vec<Option<String>>> = HashMap::new();
        for m in messages {
            if let SimpleQueryMessage::Row(row) = m {
                let key = (0..nkey)
                    .map(|i| row.get(i).unwrap_or_default().to_owned())
                    .collect();
                let values = (0..missing.len())
                    .map(|i| row.get(nkey + i).map(str::to_owned))
                    .collect();
                found.insert(key, values);
            }
        }
        let mut filled = 0;
        for (&i, key) in rows.iter().zip(&keys) {
            let Event::Row(r) = &mut events[i] else {
                continue;
            };
            let Some(values) = found.get(key) else {
                continue;
            };
            for (&c, v) in missing.iter().zip(values) {
                if r.row.values[c] == Value::UnchangedToast {
                    r.row.values[c] = match v {
                        Some(text) => Value::Text(Bytes::copy_from_slice(text.as_bytes())),
                        None => Value::Null,
                    };
                }
            }
            filled += 1;
        }
        tracing::debug!(table = %table.name, rows = rows.len(), filled, "filled unchanged TOAST values during the snapshot");
        Ok(filled)
    }
}

/// The key columns' text, or `None` if one is not plain text (never for pgoutput text mode).
fn key_text(table: &TableSchema, values: &[Value]) -> Option<Vec<String>> {
    table
        .key
        .iter()
        .map(|&k| match values.get(k) {
            Some(Value::Text(b)) => std::str::from_utf8(b).ok().map(str::to_owned),
            _ => None,
        })
        .collect()
}

/// `SELECT keys, missing FROM ONLY t WHERE (keys) IN ((…), …)`; the literals are untyped, so
/// PostgreSQL reads them as the key columns' own types and can use the primary key.
fn lookup_sql(table: &TableSchema, missing: &[usize], keys: &[Vec<String>]) -> String {
    let col = |i: &usize| quote_ident(&table.columns[*i].name);
    let key_cols: Vec<String> = table.key.iter().map(col).collect();
    let selected: Vec<String> = key_cols
        .iter()
        .cloned()
        .chain(missing.iter().map(col))
        .collect();
    let tuples: Vec<String> = keys
        .iter()
        .map(|k| {
            let lits: Vec<String> = k.iter().map(|v| quote_literal(v)).collect();
            format!("({})", lits.join(", "))
        })
        .collect();
    format!(
        "SELECT {} FROM ONLY {} WHERE ({}) IN ({})",
        selected.join(", "),
        table.name.quoted(),
        key_cols.join(", "),
        tuples.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::change::{ColumnSchema, RelId};
    use crate::value::ValueKind;

    fn table() -> TableSchema {
        let c = |name: &str| ColumnSchema {
            name: name.into(),
            type_oid: 25,
            type_modifier: -1,
            kind: ValueKind::Scalar(crate::value::Scalar::Text),
        };
        TableSchema {
            rel_id: RelId(1),
            name: TableName::new("public", "Docs"),
            columns: vec![c("id"), c("part"), c("body"), c("title")],
            key: vec![0, 1],
            replica_identity: b'd',
        }
    }

    #[test]
    fn lookup_quotes_names_and_literals_and_selects_keys_first() {
        let sql = lookup_sql(
            &table(),
            &[2],
            &[vec!["1".into(), "a'b".into()], vec!["2".into(), "c".into()]],
        );
        assert_eq!(
            sql,
            "SELECT \"id\", \"part\", \"body\" FROM ONLY \"public\".\"Docs\" \
             WHERE (\"id\", \"part\") IN (('1', 'a''b'), ('2', 'c'))"
        );
    }

    #[test]
    fn key_text_needs_every_key_column_as_text() {
        let t = table();
        let text = |s: &str| Value::Text(Bytes::copy_from_slice(s.as_bytes()));
        assert_eq!(
            key_text(
                &t,
                &[text("1"), text("x"), Value::UnchangedToast, Value::Null]
            ),
            Some(vec!["1".to_owned(), "x".to_owned()])
        );
        assert_eq!(key_text(&t, &[text("1"), Value::Null]), None);
    }
}
