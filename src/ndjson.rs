//! The NDJSON sink: one JSON object per change, to stdout or appended to a file.
//!
//! Useful on its own for piping changes into other tools, and the simplest sink to prove the
//! replication core with. A batch counts as durable once it is written and flushed, and for a
//! file also `fsync`ed; only then can its commits be checkpointed.
//!
//! Line shapes (values follow [`crate::value`]):
//!
//! ```text
//! {"op":"insert|update|delete","schema":"public","table":"orders","lsn":"0/16B3748",
//!  "commit_lsn":"0/16B37A0","xid":745,"key":{"id":1},"old_key":{"id":0},
//!  "columns":{"id":1,"note":"…"},"unchanged_toast":["payload"]}
//! {"op":"truncate","schema":"public","table":"orders","lsn":…,"commit_lsn":…,"xid":…,
//!  "cascade":false,"restart_identity":false}
//! {"op":"schema","schema":"public","table":"orders","lsn":…,"columns":[{"name":"id","type_oid":20,"type_modifier":-1,"key":true}]}
//! ```
//!
//! `old_key` appears only when an update changed the primary key. A delete's `columns` hold
//! the key only, or the whole old row under REPLICA IDENTITY FULL. `unchanged_toast` lists the
//! columns whose value did not change and was not sent (never written as null).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use tokio::io::AsyncWriteExt;

use std::sync::Arc;

use bytes::Bytes;

use crate::pipeline::change::{EncodedRows, Event, Op, Position, RowChange, TableSchema};
use crate::pipeline::change::{Tuple, Value};
use crate::pipeline::sink::{
    Sink, SinkError, SnapshotEncodeError, SnapshotEncoder, SnapshotEncoders,
};
use crate::pipeline::text_row::parse_copy_line;
use crate::value::{self, ValueError};
use crate::Lsn;

enum Output {
    Stdout(tokio::io::Stdout),
    /// The file goes to a blocking thread for each batch, with the batch's bytes, and comes
    /// back with them: one hand-off per batch for write and `fsync`, and no copy of the body
    /// (`tokio::fs::File` copies every write into its own buffer and hands off write, flush
    /// and sync separately). `None` only if a write was interrupted by a panic.
    File {
        file: Option<std::fs::File>,
        path: PathBuf,
    },
}

/// Writes changes as NDJSON.
pub struct NdjsonSink {
    out: Output,
    buf: Vec<u8>,
}

impl NdjsonSink {
    /// A sink writing to standard output.
    pub fn stdout() -> Self {
        NdjsonSink {
            out: Output::Stdout(tokio::io::stdout()),
            buf: Vec::with_capacity(64 * 1024),
        }
    }

    /// A sink appending to `path` (created if missing). A last line without its newline is the
    /// torn end of a write that a crash cut short: it is cut off before anything is appended.
    pub async fn file(path: &Path) -> Result<Self, SinkError> {
        let owned = path.to_owned();
        let file = tokio::task::spawn_blocking(move || {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .read(true)
                .open(&owned)?;
            cut_torn_line(&file, &owned)?;
            Ok::<_, std::io::Error>(file)
        })
        .await
        .map_err(|e| SinkError::definite(format!("opening NDJSON_PATH failed: {e}")))?
        .map_err(|e| {
            SinkError::definite(format!(
                "cannot open NDJSON_PATH {}: {e}; check that the directory exists and is writable",
                path.display()
            ))
        })?;
        Ok(NdjsonSink {
            out: Output::File {
                file: Some(file),
                path: path.to_owned(),
            },
            buf: Vec::with_capacity(64 * 1024),
        })
    }

    async fn write_out(&mut self) -> std::io::Result<()> {
        match &mut self.out {
            Output::Stdout(out) => {
                out.write_all(&self.buf).await?;
                out.flush().await
            }
            Output::File { file, .. } => {
                let mut f = file.take().ok_or_else(|| {
                    std::io::Error::other("an earlier write to the file panicked; restart the job")
                })?;
                let body = std::mem::take(&mut self.buf);
                let (f, body, written) = tokio::task::spawn_blocking(move || {
                    let written = f.write_all(&body).and_then(|()| match f.sync_data() {
                        // Pipes and character devices (a FIFO, /dev/null) cannot be synced;
                        // for them a completed write is as durable as it gets.
                        Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => Ok(()),
                        other => other,
                    });
                    (f, body, written)
                })
                .await
                .map_err(std::io::Error::other)?;
                *file = Some(f);
                self.buf = body;
                written
            }
        }
    }
}

/// Cuts a regular file back to its last newline. A write that `kill -9` or a power cut
/// interrupted leaves part of a line; its batch was never confirmed, so PostgreSQL sends it
/// again, and appending after the fragment would glue a broken line to the first new one.
fn cut_torn_line(file: &std::fs::File, path: &Path) -> std::io::Result<()> {
    use std::io::{Read as _, Seek as _, SeekFrom};
    let meta = file.metadata()?;
    if !meta.is_file() || meta.len() == 0 {
        return Ok(());
    }
    // Read the tail backwards until a newline; lines are short next to the file.
    let mut reader = file;
    let mut end = meta.len();
    let mut chunk = [0u8; 64 * 1024];
    while end > 0 {
        let start = end.saturating_sub(chunk.len() as u64);
        let n = (end - start) as usize;
        reader.seek(SeekFrom::Start(start))?;
        reader.read_exact(&mut chunk[..n])?;
        if let Some(i) = memchr::memrchr(b'\n', &chunk[..n]) {
            let keep = start + i as u64 + 1;
            if keep < meta.len() {
                cut(file, path, keep, meta.len())?;
            }
            return Ok(());
        }
        end = start;
    }
    cut(file, path, 0, meta.len())
}

fn cut(file: &std::fs::File, path: &Path, keep: u64, len: u64) -> std::io::Result<()> {
    tracing::warn!(
        path = %path.display(),
        bytes = len - keep,
        "NDJSON_PATH ended in a partial line (a write cut short by a crash); it is removed, and \
         its changes are written again from the last confirmed position"
    );
    file.set_len(keep)?;
    file.sync_data()
}

/// Snapshot rows as NDJSON lines, written by the snapshot workers: each copied line becomes the
/// same `"op":"snapshot"` line a row event would, in a body that the sink writes as it is.
pub struct NdjsonSnapshotEncoders;

impl SnapshotEncoders for NdjsonSnapshotEncoders {
    fn encoder(
        &self,
        table: Arc<TableSchema>,
        version: Lsn,
        target_bytes: usize,
    ) -> Box<dyn SnapshotEncoder> {
        Box::new(NdjsonSnapshotBody {
            table,
            version,
            target_bytes,
            body: Vec::new(),
            rows: 0,
        })
    }
}

/// One table's snapshot lines being collected.
struct NdjsonSnapshotBody {
    table: Arc<TableSchema>,
    version: Lsn,
    target_bytes: usize,
    body: Vec<u8>,
    rows: u64,
}

impl SnapshotEncoder for NdjsonSnapshotBody {
    fn push_line(&mut self, line: &[u8]) -> Result<(), SnapshotEncodeError> {
        let columns = self.table.columns.len();
        let row = RowChange {
            op: Op::Snapshot,
            table: self.table.clone(),
            pos: Position {
                lsn: self.version,
                commit_lsn: self.version,
                xid: 0,
                commit_time: 0,
            },
            row: parse_copy_line(&Bytes::copy_from_slice(line), columns)?,
            key_only: false,
            old: None,
        };
        encode_row(&mut self.body, &row)?;
        self.rows += 1;
        Ok(())
    }

    fn is_full(&self) -> bool {
        self.body.len() >= self.target_bytes
    }

    fn take(&mut self) -> Option<EncodedRows> {
        if self.rows == 0 {
            return None;
        }
        Some(EncodedRows {
            table: self.table.clone(),
            body: Bytes::from(std::mem::take(&mut self.body)),
            layout: None,
            rows: std::mem::take(&mut self.rows),
            version: self.version,
            fingerprint: 0,
            mapped: value::Mapped::default(),
        })
    }
}

impl Sink for NdjsonSink {
    fn snapshot_encoders(&self) -> Arc<dyn SnapshotEncoders> {
        Arc::new(NdjsonSnapshotEncoders)
    }

    async fn write_batch(&mut self, events: &[Event]) -> Result<(), SinkError> {
        self.buf.clear();
        for event in events {
            encode_event(&mut self.buf, event)?;
        }
        if self.buf.is_empty() {
            return Ok(());
        }
        self.write_out().await.map_err(|e| {
            let target = match &self.out {
                Output::Stdout(_) => "stdout".to_owned(),
                Output::File { path, .. } => path.display().to_string(),
            };
            // A closed pipe or a full disk will not heal by retrying the same write here; the
            // job stops and resumes from the last checkpoint when restarted.
            SinkError::definite(format!("writing NDJSON to {target} failed: {e}")).caused_by(e)
        })
    }
}

/// Appends the NDJSON line(s) for one event to `out`.
pub fn encode_event(out: &mut Vec<u8>, event: &Event) -> Result<(), SinkError> {
    match event {
        Event::Row(row) => encode_row(out, row),
        Event::Truncate(t) => {
            head(out, "truncate", &t.table, &t.pos);
            let _ = writeln!(
                out,
                ",\"cascade\":{},\"restart_identity\":{}}}",
                t.cascade, t.restart_identity
            );
            Ok(())
        }
        Event::Schema(change) => {
            let t = &change.new;
            out.extend_from_slice(b"{\"op\":\"schema\",\"schema\":");
            value::write_escaped(out, t.name.schema.as_bytes());
            out.extend_from_slice(b",\"table\":");
            value::write_escaped(out, t.name.name.as_bytes());
            let _ = write!(out, ",\"lsn\":\"{}\",\"columns\":[", change.lsn);
            for (i, c) in t.columns.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(b"{\"name\":");
                value::write_escaped(out, c.name.as_bytes());
                let _ = write!(
                    out,
                    ",\"type_oid\":{},\"type_modifier\":{},\"key\":{}}}",
                    c.type_oid,
                    c.type_modifier,
                    t.key.contains(&i)
                );
            }
            out.extend_from_slice(b"]}\n");
            Ok(())
        }
        Event::Encoded(e) => {
            // Snapshot lines this sink's own encoder wrote.
            out.extend_from_slice(&e.body);
            Ok(())
        }
        Event::Commit { .. } | Event::Idle { .. } | Event::ChunkDone { .. } => Ok(()),
    }
}

fn head(out: &mut Vec<u8>, op: &str, table: &TableSchema, pos: &Position) {
    out.extend_from_slice(b"{\"op\":\"");
    out.extend_from_slice(op.as_bytes());
    out.extend_from_slice(b"\",\"schema\":");
    value::write_escaped(out, table.name.schema.as_bytes());
    out.extend_from_slice(b",\"table\":");
    value::write_escaped(out, table.name.name.as_bytes());
    out.extend_from_slice(b",\"lsn\":\"");
    pos.lsn.write_text(out);
    out.extend_from_slice(b"\",\"commit_lsn\":\"");
    pos.commit_lsn.write_text(out);
    out.extend_from_slice(b"\",\"xid\":");
    value::write_u64(out, u64::from(pos.xid));
}

fn encode_row(out: &mut Vec<u8>, row: &RowChange) -> Result<(), SinkError> {
    let start = out.len();
    let result = encode_row_inner(out, row);
    if result.is_err() {
        out.truncate(start);
    }
    result
}

fn encode_row_inner(out: &mut Vec<u8>, row: &RowChange) -> Result<(), SinkError> {
    let table = &*row.table;
    head(out, row.op.as_str(), table, &row.pos);
    out.extend_from_slice(b",\"key\":");
    write_object(out, row, &row.row, table.key.iter().copied())?;
    if let Some(old) = row.changed_old_key() {
        out.extend_from_slice(b",\"old_key\":");
        write_object(out, row, old, table.key.iter().copied())?;
    }
    out.extend_from_slice(b",\"columns\":");
    if row.key_only {
        write_object(out, row, &row.row, table.key.iter().copied())?;
    } else {
        write_object(out, row, &row.row, 0..table.columns.len())?;
    }
    out.extend_from_slice(b",\"unchanged_toast\":[");
    let mut first = true;
    for (i, v) in row.row.values.iter().enumerate() {
        if matches!(v, Value::UnchangedToast) {
            if !first {
                out.push(b',');
            }
            first = false;
            let name = table.columns.get(i).map_or("", |c| c.name.as_str());
            value::write_escaped(out, name.as_bytes());
        }
    }
    out.extend_from_slice(b"]}\n");
    Ok(())
}

/// Writes `{"col": value, ...}` for the given column indexes, skipping unchanged TOAST values.
fn write_object(
    out: &mut Vec<u8>,
    row: &RowChange,
    tuple: &Tuple,
    columns: impl Iterator<Item = usize>,
) -> Result<(), SinkError> {
    let table = &*row.table;
    out.push(b'{');
    let mut first = true;
    for i in columns {
        let (Some(col), Some(v)) = (table.columns.get(i), tuple.values.get(i)) else {
            return Err(SinkError::definite(format!(
                "table {} at LSN {}: the row has {} values but the schema has {} columns",
                table.name,
                row.pos.lsn,
                tuple.values.len(),
                table.columns.len()
            )));
        };
        if matches!(v, Value::UnchangedToast) {
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        value::write_escaped(out, col.name.as_bytes());
        out.push(b':');
        match v {
            Value::Null => out.extend_from_slice(b"null"),
            Value::Text(text) => value::write_json(out, col.kind, text)
                .map_err(|e| value_error(table, &col.name, row, &e))?,
            Value::Binary(bytes) => value::write_hex_string(out, bytes),
            Value::UnchangedToast => {}
        }
    }
    out.push(b'}');
    Ok(())
}

fn value_error(table: &TableSchema, column: &str, row: &RowChange, e: &ValueError) -> SinkError {
    SinkError::definite(format!(
        "table {} column {column:?} at LSN {} (commit {}): {e}; \
         this type's text form is not supported, please report it",
        table.name, row.pos.lsn, row.pos.commit_lsn
    ))
    .caused_by(e.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_torn_last_line_is_cut_and_whole_lines_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.ndjson");
        // The last case is a torn line longer than one read of the tail.
        let mut long = b"{\"a\":1}\n".to_vec();
        long.extend(std::iter::repeat_n(b'x', 200_000));
        for (before, after) in [
            (&b"{\"a\":1}\n{\"b\":"[..], &b"{\"a\":1}\n"[..]),
            (b"{\"a\":1}\n", b"{\"a\":1}\n"),
            (b"{\"torn", b""),
            (b"", b""),
            (&long[..], b"{\"a\":1}\n"),
        ] {
            std::fs::write(&path, before).unwrap();
            let file = std::fs::OpenOptions::new()
                .append(true)
                .read(true)
                .open(&path)
                .unwrap();
            cut_torn_line(&file, &path).unwrap();
            assert_eq!(
                std::fs::read(&path).unwrap(),
                after,
                "{:?}",
                String::from_utf8_lossy(&before[..before.len().min(40)])
            );
        }
    }
}
