//! The replication connection once it is open: commands, then the CopyBoth stream.
//!
//! [`ReplicationClient`] runs simple-protocol queries and the replication commands dbmazz uses
//! (`IDENTIFY_SYSTEM`, `CREATE_REPLICATION_SLOT`). `START_REPLICATION` consumes it and splits the
//! connection into a [`ReplicationStream`] to read and a [`StatusSender`] to confirm progress,
//! so that reading WAL and confirming it can live on different tasks; the two share the write
//! half only for the CopyDone handshake at the end.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use postgres_protocol::message::backend::{
    COMMAND_COMPLETE_TAG, COPY_DATA_TAG, COPY_DONE_TAG, COPY_IN_RESPONSE_TAG,
    COPY_OUT_RESPONSE_TAG, DATA_ROW_TAG, EMPTY_QUERY_RESPONSE_TAG, ERROR_RESPONSE_TAG,
    NOTICE_RESPONSE_TAG, NOTIFICATION_RESPONSE_TAG, PARAMETER_STATUS_TAG, READY_FOR_QUERY_TAG,
    ROW_DESCRIPTION_TAG,
};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::error::{io_error, protocol, server_error, ErrorFields, ReplicationError};
use super::framing::{
    parse_copy_data, parse_data_row, parse_parameter_status, Frame, FrameReader, Gulp,
    ReplicationMessage,
};
use super::tls::PgStream;
use crate::ident::{quote_ident, quote_literal};
use crate::lsn::{Lsn, PG_EPOCH_OFFSET_MICROS};

/// The backend's answer to a `START_REPLICATION`: the stream is now in CopyBoth mode.
const COPY_BOTH_RESPONSE_TAG: u8 = b'W';
/// The standby status update, our one CopyData payload kind.
const STANDBY_STATUS_UPDATE_TAG: u8 = b'r';

/// The answer to `IDENTIFY_SYSTEM`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SystemInfo {
    /// The cluster's system identifier (a decimal u64, kept as text).
    pub system_id: String,
    /// Current timeline.
    pub timeline: u32,
    /// Current WAL flush position.
    pub xlogpos: Lsn,
    /// The database of this connection (`None` for physical replication connections).
    pub dbname: Option<String>,
}

/// The answer to `CREATE_REPLICATION_SLOT … LOGICAL`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreatedSlot {
    /// The LSN from which the slot guarantees changes: everything committed after it streams.
    pub consistent_point: Lsn,
    /// The exported snapshot, usable with `SET TRANSACTION SNAPSHOT` on another connection only
    /// until the next command on this replication connection.
    pub snapshot_name: Option<String>,
}

/// A replication connection before streaming: runs replication commands and plain SQL.
pub struct ReplicationClient {
    pub(super) reader: FrameReader<PgStream>,
    pub(super) wbuf: BytesMut,
    pub(super) params: HashMap<String, String>,
    pub(super) backend_pid: Option<i32>,
    pub(super) tls: bool,
}

impl std::fmt::Debug for ReplicationClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicationClient")
            .field("peer", &self.reader.peer)
            .field("backend_pid", &self.backend_pid)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

impl ReplicationClient {
    /// A server parameter reported at startup or since (`server_version`, `TimeZone`, …).
    pub fn parameter(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }

    /// The process id of the walsender serving this connection.
    pub fn backend_pid(&self) -> Option<i32> {
        self.backend_pid
    }

    /// Whether the connection is encrypted.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// Runs one simple-protocol query (SQL or a replication command) and returns every row of
    /// every result set, as text columns (`None` for NULL).
    pub async fn simple_query(
        &mut self,
        sql: &str,
    ) -> Result<Vec<Vec<Option<String>>>, ReplicationError> {
        let peer = self.reader.peer.clone();
        self.wbuf.clear();
        frontend::query(sql, &mut self.wbuf)
            .map_err(|_| protocol(&peer, "the query contains a NUL byte"))?;
        self.send().await?;

        let mut rows = Vec::new();
        let mut failure = None;
        loop {
            let frame = match self.reader.next_frame().await {
                Ok(frame) => frame,
                // A FATAL error is followed by the server closing: report the error, not the EOF.
                Err(err) => return Err(failure.unwrap_or_else(|| err.into())),
            };
            match frame.tag {
                ROW_DESCRIPTION_TAG | COMMAND_COMPLETE_TAG | EMPTY_QUERY_RESPONSE_TAG => {}
                DATA_ROW_TAG => {
                    rows.push(parse_data_row(&frame.body).map_err(|e| protocol(&peer, e))?)
                }
                ERROR_RESPONSE_TAG => failure = Some(server_error(&peer, &frame.body)),
                READY_FOR_QUERY_TAG => {
                    return match failure {
                        Some(err) => Err(err),
                        None => Ok(rows),
                    }
                }
                COPY_IN_RESPONSE_TAG | COPY_OUT_RESPONSE_TAG | COPY_BOTH_RESPONSE_TAG => {
                    return Err(protocol(
                        &peer,
                        "simple_query cannot run COPY or START_REPLICATION; use \
                         start_logical_replication",
                    ))
                }
                tag => self.handle_async(tag, &frame.body, "a query")?,
            }
        }
    }

    /// `IDENTIFY_SYSTEM`: system id, timeline, current WAL position and database.
    pub async fn identify_system(&mut self) -> Result<SystemInfo, ReplicationError> {
        let peer = self.reader.peer.clone();
        let rows = self.simple_query("IDENTIFY_SYSTEM").await?;
        let row = single_row(&peer, "IDENTIFY_SYSTEM", &rows, 4)?;
        let timeline = row[1]
            .as_deref()
            .and_then(|t| t.parse::<u32>().ok())
            .ok_or_else(|| protocol(&peer, "IDENTIFY_SYSTEM returned an invalid timeline"))?;
        Ok(SystemInfo {
            system_id: row[0]
                .clone()
                .ok_or_else(|| protocol(&peer, "IDENTIFY_SYSTEM returned no system id"))?,
            timeline,
            xlogpos: parse_lsn(&peer, "IDENTIFY_SYSTEM xlogpos", row[2].as_deref())?,
            dbname: row[3].clone(),
        })
    }

    /// Creates a logical slot using pgoutput. With `export_snapshot`, the returned snapshot shows
    /// the database exactly as of `consistent_point`; it stays valid only until the next command
    /// on this connection, so the initial copy must import it first.
    pub async fn create_logical_slot(
        &mut self,
        slot: &str,
        export_snapshot: bool,
    ) -> Result<CreatedSlot, ReplicationError> {
        let command = create_slot_command(
            slot,
            SlotKind {
                temporary: false,
                export_snapshot,
            },
            self.server_major(),
        );
        self.create_slot(&command).await
    }

    /// Runs a CREATE_REPLICATION_SLOT command and reads its consistent point and snapshot.
    async fn create_slot(&mut self, command: &str) -> Result<CreatedSlot, ReplicationError> {
        let peer = self.reader.peer.clone();
        let rows = self.simple_query(command).await?;
        let row = single_row(&peer, "CREATE_REPLICATION_SLOT", &rows, 3)?;
        Ok(CreatedSlot {
            consistent_point: parse_lsn(
                &peer,
                "CREATE_REPLICATION_SLOT consistent_point",
                row[1].as_deref(),
            )?,
            snapshot_name: row[2].clone(),
        })
    }

    /// `CREATE_REPLICATION_SLOT "slot" TEMPORARY LOGICAL pgoutput (SNAPSHOT 'export')` (or
    /// `… EXPORT_SNAPSHOT` before PostgreSQL 15): a slot that lives only as long as this
    /// connection, created just for its exported snapshot and consistent point (the initial copy
    /// reads at that snapshot). The snapshot stays valid until the next command on this
    /// connection, so keep the connection idle until every reader has imported it.
    pub async fn create_temporary_snapshot_slot(
        &mut self,
        slot: &str,
    ) -> Result<CreatedSlot, ReplicationError> {
        let command = create_slot_command(
            slot,
            SlotKind {
                temporary: true,
                export_snapshot: true,
            },
            self.server_major(),
        );
        self.create_slot(&command).await
    }

    /// `START_REPLICATION SLOT "slot" LOGICAL start (options)`; on success the connection is in
    /// CopyBoth mode and is split into a stream to read and a sender for status updates, which
    /// may live on different tasks. `start` = [`Lsn::ZERO`] means "from the slot's
    /// `confirmed_flush_lsn`".
    pub async fn start_logical_replication(
        mut self,
        slot: &str,
        start: Lsn,
        options: &[(&str, &str)],
    ) -> Result<(ReplicationStream, StatusSender), ReplicationError> {
        let peer = self.reader.peer.clone();
        self.wbuf.clear();
        frontend::query(
            &start_replication_command(slot, start, options),
            &mut self.wbuf,
        )
        .map_err(|_| protocol(&peer, "slot name or options contain a NUL byte"))?;
        self.send().await?;
        loop {
            let frame = self.reader.next_frame().await?;
            match frame.tag {
                COPY_BOTH_RESPONSE_TAG => break,
                ERROR_RESPONSE_TAG => return Err(server_error(&peer, &frame.body)),
                tag => self.handle_async(tag, &frame.body, "START_REPLICATION")?,
            }
        }
        tracing::debug!(peer = %peer, slot, start = %start, "logical replication started");

        let FrameReader {
            io,
            buf,
            peer,
            chunks,
            ..
        } = self.reader;
        let probe = io.probe();
        let (read_half, write_half) = tokio::io::split(io);
        let writer = Arc::new(Mutex::new(CopyWriter {
            io: write_half,
            buf: BytesMut::with_capacity(64),
            copy_done_sent: false,
            last_status: LastStatus::default(),
        }));
        let stream = ReplicationStream {
            reader: FrameReader {
                io: read_half,
                buf,
                peer: peer.clone(),
                gulp: Gulp::Full,
                probe: Some(probe),
                chunks,
            },
            writer: writer.clone(),
            state: StreamState::Streaming,
            receive_timeout: None,
        };
        Ok((stream, StatusSender { writer, peer }))
    }

    /// Major version from `server_version` (e.g. 15), if the server reported it.
    fn server_major(&self) -> Option<u32> {
        let version = self.parameter("server_version")?;
        let digits: String = version.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    }

    /// Writes out and clears the write buffer.
    pub(super) async fn send(&mut self) -> Result<(), ReplicationError> {
        let io = &mut self.reader.io;
        let result = async {
            io.write_all(&self.wbuf).await?;
            io.flush().await
        }
        .await;
        self.wbuf.clear();
        result.map_err(|e| io_error(&self.reader.peer, e))
    }

    /// Messages the server may send at any time; anything else is unexpected `during`.
    pub(super) fn handle_async(
        &mut self,
        tag: u8,
        body: &Bytes,
        during: &str,
    ) -> Result<(), ReplicationError> {
        let peer = &self.reader.peer;
        match tag {
            PARAMETER_STATUS_TAG => {
                let (name, value) = parse_parameter_status(body).map_err(|e| protocol(peer, e))?;
                self.params.insert(name, value);
                Ok(())
            }
            _ => handle_async_common(peer, tag, body, during),
        }
    }
}

/// Notices and notifications are logged and otherwise ignored; other tags are protocol errors.
fn handle_async_common(
    peer: &str,
    tag: u8,
    body: &Bytes,
    during: &str,
) -> Result<(), ReplicationError> {
    match tag {
        NOTICE_RESPONSE_TAG => {
            let fields = ErrorFields::parse(body);
            tracing::debug!(
                peer = %peer,
                severity = %fields.severity,
                code = %fields.code,
                message = %fields.message,
                "server notice"
            );
            Ok(())
        }
        PARAMETER_STATUS_TAG | NOTIFICATION_RESPONSE_TAG => Ok(()),
        tag => Err(protocol(
            peer,
            format!("unexpected message {:?} during {during}", char::from(tag)),
        )),
    }
}

/// Where the stream stands in the CopyBoth shutdown handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StreamState {
    /// Messages flow.
    Streaming,
    /// The server sent CopyDone; waiting for CommandComplete/ReadyForQuery.
    ServerDone,
    /// ReadyForQuery seen: nothing more will come.
    Finished,
}

/// The write half, shared by [`StatusSender`] and, for the shutdown handshake and pings, the
/// stream.
struct CopyWriter {
    io: WriteHalf<PgStream>,
    buf: BytesMut,
    copy_done_sent: bool,
    /// The positions of the last status update, repeated by a ping so that it never moves
    /// them (zero, PostgreSQL's "invalid", before the first one: the server then ignores them).
    last_status: LastStatus,
}

/// The write, flush and apply positions of a standby status update.
#[derive(Clone, Copy, Debug, Default)]
struct LastStatus {
    write: Lsn,
    flush: Lsn,
    apply: Lsn,
}

impl CopyWriter {
    async fn flush_buf(&mut self, peer: &str) -> Result<(), ReplicationError> {
        let result = async {
            self.io.write_all(&self.buf).await?;
            self.io.flush().await
        }
        .await;
        self.buf.clear();
        result.map_err(|e| io_error(peer, e))
    }

    /// A standby status update at `status`, stamped now; with `reply_requested` the server
    /// answers at once with a keepalive.
    async fn send_status(
        &mut self,
        peer: &str,
        status: LastStatus,
        reply_requested: bool,
    ) -> Result<(), ReplicationError> {
        self.buf.clear();
        encode_status(
            &mut self.buf,
            status.write,
            status.flush,
            status.apply,
            pg_now_micros(),
            reply_requested,
        );
        self.last_status = status;
        self.flush_buf(peer).await
    }

    async fn send_copy_done(&mut self, peer: &str) -> Result<(), ReplicationError> {
        if !self.copy_done_sent {
            self.buf.clear();
            frontend::copy_done(&mut self.buf);
            self.flush_buf(peer).await?;
            self.copy_done_sent = true;
        }
        Ok(())
    }
}

/// The read side of a started replication: XLogData and keepalives, in order.
pub struct ReplicationStream {
    reader: FrameReader<ReadHalf<PgStream>>,
    writer: Arc<Mutex<CopyWriter>>,
    state: StreamState,
    /// See [`ReplicationStream::set_receive_timeout`].
    receive_timeout: Option<Duration>,
}

impl std::fmt::Debug for ReplicationStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicationStream")
            .field("peer", &self.reader.peer)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl ReplicationStream {
    /// How long [`next`](Self::next) may wait on a server that sends nothing at all before it
    /// fails with [`ReplicationError::ReceiveTimeout`] (`None`: wait forever), like PostgreSQL's
    /// `wal_receiver_timeout`.
    ///
    /// An idle but healthy server may legitimately stay silent: it only sends keepalives when
    /// it has not heard from us for half its `wal_sender_timeout`, and our periodic status
    /// updates keep resetting that. So after half the timeout without a byte, the stream asks
    /// for a keepalive (a status update with the reply flag, repeating the last positions);
    /// a live server answers at once, and only a dead link stays silent for the whole timeout.
    /// The clock restarts with every byte that arrives (a large message trickling in over a
    /// slow link is not silence) and runs only while [`next`](Self::next) waits on the socket:
    /// time spent elsewhere, such as waiting for a slow sink, is not counted as silence.
    pub fn set_receive_timeout(&mut self, timeout: Option<Duration>) {
        self.receive_timeout = timeout.filter(|t| !t.is_zero());
    }

    /// Whether a complete message is already in the read buffer, so [`next`](Self::next) can
    /// return without waiting on the socket.
    pub fn has_buffered_message(&self) -> bool {
        self.reader.has_frame()
    }

    /// Next message; `Ok(None)` once the server ended the COPY (after our CopyDone, or
    /// server-side end) and the command completed. Messages the server sent before its own
    /// CopyDone are still returned after [`StatusSender::finish`], so a transaction may end
    /// half-way; CopyData arriving after the server's CopyDone (PostgreSQL finishes writing the
    /// transaction it was decoding) is discarded. Neither was confirmed, so both stream again
    /// from the slot on the next start.
    pub async fn next(&mut self) -> Result<Option<ReplicationMessage>, ReplicationError> {
        loop {
            if self.state == StreamState::Finished {
                return Ok(None);
            }
            let frame = match self.receive_timeout {
                None => self.reader.next_frame().await?,
                Some(limit) => self.next_frame_within(limit).await?,
            };
            let peer = &self.reader.peer;
            match frame.tag {
                COPY_DATA_TAG if self.state == StreamState::Streaming => {
                    return parse_copy_data(frame.body)
                        .map(Some)
                        .map_err(|e| protocol(peer, e));
                }
                COPY_DONE_TAG if self.state == StreamState::Streaming => {
                    self.state = StreamState::ServerDone;
                    // If the server ended first, it waits for our CopyDone before completing.
                    self.writer.lock().await.send_copy_done(peer).await?;
                }
                // A logical walsender that gets our CopyDone in the middle of a transaction
                // answers with its CopyDone and then still writes the rest of that transaction.
                // Nothing of it can be confirmed any more, so it is dropped; it streams again
                // from the slot next time.
                COPY_DATA_TAG => {}
                COMMAND_COMPLETE_TAG | ROW_DESCRIPTION_TAG | DATA_ROW_TAG
                    if self.state == StreamState::ServerDone => {}
                READY_FOR_QUERY_TAG if self.state == StreamState::ServerDone => {
                    self.state = StreamState::Finished;
                    return Ok(None);
                }
                ERROR_RESPONSE_TAG => return Err(server_error(peer, &frame.body)),
                tag => handle_async_common(peer, tag, &frame.body, "replication streaming")?,
            }
        }
    }
}

impl ReplicationStream {
    /// The next frame, failing when the socket stays silent for `limit` (see
    /// [`set_receive_timeout`](Self::set_receive_timeout)).
    async fn next_frame_within(&mut self, limit: Duration) -> Result<Frame, ReplicationError> {
        // Most frames are already buffered: no clock read for them.
        if let Some(frame) = self.reader.take_buffered()? {
            return Ok(frame);
        }
        let mut quiet_since = Instant::now();
        let mut pinged = false;
        loop {
            if let Some(frame) = self.reader.take_buffered()? {
                return Ok(frame);
            }
            let deadline = quiet_since + limit;
            let wake = if pinged {
                deadline
            } else {
                quiet_since + limit / 2
            };
            match tokio::time::timeout_at(wake, self.reader.fill()).await {
                Ok(read) => {
                    read?;
                    quiet_since = Instant::now();
                    pinged = false;
                }
                Err(_) if pinged => return Err(self.receive_timeout_error(limit)),
                Err(_) => {
                    pinged = true;
                    // Bounded too: a write stuck on a dead link must not hide the silence.
                    match tokio::time::timeout_at(deadline, self.ping()).await {
                        Ok(sent) => sent?,
                        Err(_) => return Err(self.receive_timeout_error(limit)),
                    }
                }
            }
        }
    }

    /// Asks the server for a keepalive, unless our side of the COPY has already ended.
    async fn ping(&mut self) -> Result<(), ReplicationError> {
        let peer = &self.reader.peer;
        let mut writer = self.writer.lock().await;
        if writer.copy_done_sent || self.state != StreamState::Streaming {
            return Ok(());
        }
        tracing::debug!(peer = %peer, "nothing received for a while; asking for a keepalive");
        let status = writer.last_status;
        writer.send_status(peer, status, true).await
    }

    fn receive_timeout_error(&self, timeout: Duration) -> ReplicationError {
        ReplicationError::ReceiveTimeout {
            peer: self.reader.peer.to_string(),
            timeout,
        }
    }
}

/// The write side of a started replication: standby status updates and the final CopyDone.
/// `Send + 'static`, so a status task independent of the reader can own it.
pub struct StatusSender {
    writer: Arc<Mutex<CopyWriter>>,
    peer: Arc<str>,
}

impl std::fmt::Debug for StatusSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusSender")
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

impl StatusSender {
    /// Sends a standby status update ('r') stamped with the current time. `flush` is what the
    /// server may release WAL up to; it must only cover durably processed transactions.
    pub async fn send_status(
        &mut self,
        write: Lsn,
        flush: Lsn,
        apply: Lsn,
        reply_requested: bool,
    ) -> Result<(), ReplicationError> {
        let mut writer = self.writer.lock().await;
        if writer.copy_done_sent {
            return Err(protocol(
                &self.peer,
                "standby status update after finish(); send the final status before finishing",
            ));
        }
        let status = LastStatus {
            write,
            flush,
            apply,
        };
        writer
            .send_status(&self.peer, status, reply_requested)
            .await
    }

    /// Ends streaming from our side (CopyDone). The stream keeps yielding messages the server
    /// had already sent until its own CopyDone, then returns `Ok(None)`. Calling it twice is
    /// harmless.
    pub async fn finish(&mut self) -> Result<(), ReplicationError> {
        self.writer.lock().await.send_copy_done(&self.peer).await
    }
}

/// Encodes a CopyData-wrapped standby status update.
fn encode_status(
    buf: &mut BytesMut,
    write: Lsn,
    flush: Lsn,
    apply: Lsn,
    now_micros: i64,
    reply_requested: bool,
) {
    const PAYLOAD_LEN: i32 = 1 + 8 + 8 + 8 + 8 + 1;
    buf.put_u8(COPY_DATA_TAG);
    buf.put_i32(4 + PAYLOAD_LEN);
    buf.put_u8(STANDBY_STATUS_UPDATE_TAG);
    buf.put_u64(write.0);
    buf.put_u64(flush.0);
    buf.put_u64(apply.0);
    buf.put_i64(now_micros);
    buf.put_u8(u8::from(reply_requested));
}

/// Now, in microseconds since 2000-01-01 UTC (PostgreSQL's epoch).
fn pg_now_micros() -> i64 {
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    unix - PG_EPOCH_OFFSET_MICROS
}

fn single_row<'a>(
    peer: &str,
    command: &str,
    rows: &'a [Vec<Option<String>>],
    min_columns: usize,
) -> Result<&'a [Option<String>], ReplicationError> {
    match rows {
        [row] if row.len() >= min_columns => Ok(row),
        _ => Err(protocol(
            peer,
            format!(
                "{command} returned {} rows, expected one row of at least {min_columns} columns",
                rows.len()
            ),
        )),
    }
}

fn parse_lsn(peer: &str, what: &str, text: Option<&str>) -> Result<Lsn, ReplicationError> {
    text.and_then(|t| t.parse().ok())
        .ok_or_else(|| protocol(peer, format!("{what} is not an LSN")))
}

/// What kind of logical slot a `CREATE_REPLICATION_SLOT` asks for.
#[derive(Clone, Copy, Debug)]
struct SlotKind {
    /// `TEMPORARY`: dropped when the connection ends.
    temporary: bool,
    /// Export a snapshot (for the initial copy) rather than none.
    export_snapshot: bool,
}

/// The `CREATE_REPLICATION_SLOT` text for a server of `server_major`. PostgreSQL 15 introduced
/// the parenthesized option list (`(SNAPSHOT 'export')`); 14 only parses the bare keywords
/// (`EXPORT_SNAPSHOT`), which 15 and later still accept but no longer document. An unknown
/// version gets the current form.
fn create_slot_command(slot: &str, kind: SlotKind, server_major: Option<u32>) -> String {
    let slot = quote_ident(slot);
    let temporary = if kind.temporary { " TEMPORARY" } else { "" };
    let legacy = server_major.is_some_and(|major| major < 15);
    let options = match (legacy, kind.export_snapshot) {
        (true, true) => "EXPORT_SNAPSHOT",
        (true, false) => "NOEXPORT_SNAPSHOT",
        (false, true) => "(SNAPSHOT 'export')",
        (false, false) => "(SNAPSHOT 'nothing')",
    };
    format!("CREATE_REPLICATION_SLOT {slot}{temporary} LOGICAL pgoutput {options}")
}

fn start_replication_command(slot: &str, start: Lsn, options: &[(&str, &str)]) -> String {
    let mut command = format!(
        "START_REPLICATION SLOT {} LOGICAL {start}",
        quote_ident(slot)
    );
    if !options.is_empty() {
        let list: Vec<String> = options
            .iter()
            .map(|(name, value)| format!("{} {}", quote_ident(name), quote_literal(value)))
            .collect();
        command.push_str(" (");
        command.push_str(&list.join(", "));
        command.push(')');
    }
    command
}

#[cfg(test)]
mod tests {
    use super::super::framing::ChunkPool;
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpStream};

    #[test]
    fn status_update_layout() {
        let mut buf = BytesMut::new();
        encode_status(&mut buf, Lsn(1), Lsn(2), Lsn(3), 4, true);
        assert_eq!(buf.len(), 1 + 4 + 34);
        assert_eq!(&buf[..6], &[b'd', 0, 0, 0, 38, b'r']);
        assert_eq!(&buf[6..14], &1u64.to_be_bytes());
        assert_eq!(&buf[14..22], &2u64.to_be_bytes());
        assert_eq!(&buf[22..30], &3u64.to_be_bytes());
        assert_eq!(&buf[30..38], &4i64.to_be_bytes());
        assert_eq!(buf[38], 1);
    }

    #[test]
    fn pg_clock_is_after_2020() {
        // 2020-01-01 is 631_152_000 s after 2000-01-01.
        assert!(pg_now_micros() > 631_152_000_000_000);
    }

    #[test]
    fn commands_quote_identifiers_and_literals() {
        assert_eq!(
            start_replication_command(
                "my\"slot",
                Lsn(0x1_0000_00FF),
                &[("proto_version", "2"), ("publication_names", "\"p'1\"")]
            ),
            "START_REPLICATION SLOT \"my\"\"slot\" LOGICAL 1/FF (\"proto_version\" '2', \
             \"publication_names\" '\"p''1\"')"
        );
        assert_eq!(
            start_replication_command("s", Lsn::ZERO, &[]),
            "START_REPLICATION SLOT \"s\" LOGICAL 0/0"
        );
    }

    #[test]
    fn slot_commands_use_the_syntax_of_the_server_version() {
        let permanent = |export_snapshot| SlotKind {
            temporary: false,
            export_snapshot,
        };
        let temporary = SlotKind {
            temporary: true,
            export_snapshot: true,
        };
        assert_eq!(
            create_slot_command("s", permanent(true), Some(15)),
            "CREATE_REPLICATION_SLOT \"s\" LOGICAL pgoutput (SNAPSHOT 'export')"
        );
        assert_eq!(
            create_slot_command("s", permanent(false), Some(16)),
            "CREATE_REPLICATION_SLOT \"s\" LOGICAL pgoutput (SNAPSHOT 'nothing')"
        );
        assert_eq!(
            create_slot_command("s", permanent(false), Some(14)),
            "CREATE_REPLICATION_SLOT \"s\" LOGICAL pgoutput NOEXPORT_SNAPSHOT"
        );
        assert_eq!(
            create_slot_command("s", temporary, Some(14)),
            "CREATE_REPLICATION_SLOT \"s\" TEMPORARY LOGICAL pgoutput EXPORT_SNAPSHOT"
        );
        assert_eq!(
            create_slot_command("s", temporary, Some(18)),
            "CREATE_REPLICATION_SLOT \"s\" TEMPORARY LOGICAL pgoutput (SNAPSHOT 'export')"
        );
        assert_eq!(
            create_slot_command("s", temporary, None),
            "CREATE_REPLICATION_SLOT \"s\" TEMPORARY LOGICAL pgoutput (SNAPSHOT 'export')"
        );
    }

    /// A stream over a local socket, as if START_REPLICATION had succeeded, and the server's
    /// end of that socket.
    async fn stream_pair(timeout: Duration) -> (ReplicationStream, StatusSender, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let (read_half, write_half) = tokio::io::split(PgStream::Plain(
            super::super::tls::RawTcp::new(client).unwrap(),
        ));
        let peer: Arc<str> = "test:1".into();
        let writer = Arc::new(Mutex::new(CopyWriter {
            io: write_half,
            buf: BytesMut::new(),
            copy_done_sent: false,
            last_status: LastStatus::default(),
        }));
        let mut stream = ReplicationStream {
            reader: FrameReader {
                io: read_half,
                buf: BytesMut::new(),
                peer: peer.clone(),
                gulp: Gulp::Full,
                probe: None,
                chunks: ChunkPool::default(),
            },
            writer: writer.clone(),
            state: StreamState::Streaming,
            receive_timeout: None,
        };
        stream.set_receive_timeout(Some(timeout));
        (stream, StatusSender { writer, peer }, server)
    }

    /// A CopyData-wrapped primary keepalive.
    fn keepalive_frame(wal_end: u64) -> Vec<u8> {
        let mut out = vec![b'd', 0, 0, 0, 4 + 18, b'k'];
        out.extend_from_slice(&wal_end.to_be_bytes());
        out.extend_from_slice(&0i64.to_be_bytes());
        out.push(0);
        out
    }

    #[tokio::test]
    async fn a_silent_server_is_pinged_then_times_out() {
        let (mut stream, mut status, mut server) = stream_pair(Duration::from_millis(400)).await;
        status
            .send_status(Lsn(7), Lsn(5), Lsn(5), false)
            .await
            .unwrap();
        let started = std::time::Instant::now();
        let err = stream.next().await.unwrap_err();
        let waited = started.elapsed();
        assert!(
            matches!(err, ReplicationError::ReceiveTimeout { .. }),
            "{err}"
        );
        assert!(
            err.is_transient() && err.to_string().contains("test:1"),
            "{err}"
        );
        assert!(
            waited >= Duration::from_millis(400) && waited < Duration::from_secs(3),
            "{waited:?}"
        );
        // The server saw our status update, then a ping repeating its positions with the
        // reply flag set.
        let mut got = vec![0u8; 2 * 39];
        server.read_exact(&mut got).await.unwrap();
        assert_eq!(got[38], 0, "the status update asks for no reply");
        assert_eq!(
            &got[39 + 6..39 + 30],
            &got[6..30],
            "the ping repeats the positions"
        );
        assert_eq!(got[39 + 38], 1, "the ping asks for a reply");
    }

    #[tokio::test]
    async fn an_answered_ping_keeps_the_stream_alive() {
        let (mut stream, _status, mut server) = stream_pair(Duration::from_millis(400)).await;
        let answer = tokio::spawn(async move {
            // Answer every ping with a keepalive, three times: 3 × 200 ms of silence each,
            // longer than the timeout in total.
            for wal_end in 1..=3u64 {
                let mut ping = [0u8; 39];
                server.read_exact(&mut ping).await.unwrap();
                assert_eq!(ping[38], 1);
                server.write_all(&keepalive_frame(wal_end)).await.unwrap();
            }
            server
        });
        for want in 1..=3u64 {
            match stream.next().await.unwrap() {
                Some(ReplicationMessage::Keepalive { wal_end, .. }) => {
                    assert_eq!(wal_end, Lsn(want))
                }
                other => panic!("{other:?}"),
            }
        }
        drop(answer.await.unwrap());
    }

    #[tokio::test]
    async fn bytes_trickling_in_restart_the_clock() {
        let (mut stream, _status, mut server) = stream_pair(Duration::from_millis(600)).await;
        let frame = keepalive_frame(9);
        let sender = tokio::spawn(async move {
            // One byte every 100 ms: 2.4 s for the message, far beyond the timeout, but never
            // silent for long. Pings arrive meanwhile and are ignored.
            for byte in frame {
                server.write_all(&[byte]).await.unwrap();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            server
        });
        match stream.next().await.unwrap() {
            Some(ReplicationMessage::Keepalive { wal_end, .. }) => assert_eq!(wal_end, Lsn(9)),
            other => panic!("{other:?}"),
        }
        drop(sender.await.unwrap());
    }

    #[test]
    fn halves_can_move_to_other_tasks() {
        fn assert_send<T: Send + 'static>() {}
        assert_send::<ReplicationClient>();
        assert_send::<ReplicationStream>();
        assert_send::<StatusSender>();
        assert_send::<ReplicationError>();
    }
}
