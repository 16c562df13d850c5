//! Backend message framing and the replication sub-protocol's CopyData payloads.
//!
//! Everything here is a pure decoder over bytes the server sent, apart from [`FrameReader`],
//! which only moves bytes from the socket into the buffer the decoders read. It is kept apart
//! from the client so the one rule that matters most can be checked on its own: nothing here
//! panics on what the server sends. A truncated, oversized or unknown message is an error, and
//! the lints below (the same as the pgoutput decoder's) keep indexing, `unwrap` and lossy casts
//! out of the non-test code.
//!
//! [`take_frame`] returns `Ok(None)` until a whole message is buffered, and the XLogData payload
//! is a zero-copy [`Bytes`] slice of the read buffer (the throughput notes are in the
//! [`replication`](super) module documentation).

#![deny(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unreachable,
    clippy::todo,
    clippy::unimplemented,
    clippy::cast_sign_loss,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap
)]

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use postgres_protocol::message::backend::Header;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::lsn::Lsn;

/// Minimum free space offered to each socket read. Large reads let the walsender batch its sends.
pub const READ_CHUNK: usize = 256 * 1024;

/// When less than this is free in the read buffer, a fresh [`READ_CHUNK`] is reserved.
const MIN_SPARE: usize = 64 * 1024;

/// When everything readable at once came to less than this, the socket was drained before much
/// had arrived: the streaming reader then pauses [`GULP_PAUSE`] before the next read (see
/// [`Gulp`]). Against 32 KiB, 64 KiB took 21–28 % of dbmazz's CPU off the 1M-row transaction
/// and up to 19 % off the TOAST mix, with peak RSS unchanged; 128 KiB saved no more and put the
/// 1M-row transaction's peak RSS over 20 MB (BENCHMARKS.md, "Where dbmazz sleeps and wakes").
pub const GULP_BYTES: usize = 64 * 1024;

/// How long the streaming reader lets the socket fill after a small read.
pub const GULP_PAUSE: std::time::Duration = std::time::Duration::from_millis(1);

/// Largest backend message accepted. PostgreSQL caps a message near 1 GiB; anything bigger is a
/// corrupt length that must not turn into a huge allocation.
const MAX_MESSAGE_LEN: usize = (1 << 30) + (1 << 20);

/// CopyData payload kinds of the replication sub-protocol.
pub(super) const XLOG_DATA_TAG: u8 = b'w';
pub(super) const PRIMARY_KEEPALIVE_TAG: u8 = b'k';

/// XLogData header after the kind byte: start LSN, end LSN, send time.
pub(super) const XLOG_DATA_HEADER_LEN: usize = 1 + 8 + 8 + 8;
/// Keepalive after the kind byte: end LSN, send time, reply flag.
const KEEPALIVE_LEN: usize = 1 + 8 + 8 + 1;

/// One message from the walsender.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplicationMessage {
    /// A chunk of output-plugin data (one pgoutput message).
    XLogData {
        /// WAL position the data starts at (0 for some pgoutput messages).
        wal_start: Lsn,
        /// The server's current end of WAL.
        wal_end: Lsn,
        /// Server clock, microseconds since 2000-01-01 UTC.
        send_time: i64,
        /// The pgoutput message, a zero-copy slice of the read buffer.
        data: Bytes,
    },
    /// Primary keepalive.
    Keepalive {
        /// The server's current end of WAL.
        wal_end: Lsn,
        /// Server clock, microseconds since 2000-01-01 UTC.
        send_time: i64,
        /// The server wants a status update now, or it will eventually drop the connection
        /// (`wal_sender_timeout`).
        reply_requested: bool,
    },
}

/// Why bytes from the server do not form the message they claim to be. Each one is a protocol
/// error: the same bytes would fail again, so none is worth a retry. The messages are the text
/// that follows "protocol error from PostgreSQL at host:port: " in the caller's error.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(super) enum FrameError {
    /// The header's length is smaller than the length field itself.
    #[error("message length below 4")]
    LengthBelowFour,
    /// The header claims more than PostgreSQL ever sends: a corrupt length.
    #[error(
        "message {:?} claims {len} bytes, more than PostgreSQL ever sends",
        char::from(*tag)
    )]
    TooLong {
        /// The message's tag.
        tag: u8,
        /// Tag byte plus the claimed length.
        len: usize,
    },
    /// An XLogData payload shorter than its fixed header.
    #[error("XLogData of {len} bytes is truncated")]
    XLogDataTooShort {
        /// The payload's length, kind byte included.
        len: usize,
    },
    /// The XLogData header could not be read.
    #[error("XLogData header is truncated")]
    XLogDataHeaderTruncated,
    /// A keepalive payload shorter than its fixed layout.
    #[error("keepalive of {len} bytes is truncated")]
    KeepaliveTooShort {
        /// The payload's length, kind byte included.
        len: usize,
    },
    /// The keepalive fields could not be read.
    #[error("keepalive is truncated")]
    KeepaliveTruncated,
    /// A CopyData payload of a kind the replication protocol does not define.
    #[error("unknown replication message kind {:?}", char::from(*kind))]
    UnknownCopyDataKind {
        /// The payload's first byte.
        kind: u8,
    },
    /// A CopyData message without payload.
    #[error("empty CopyData message")]
    EmptyCopyData,
    /// A DataRow ends before its column count or a value length.
    #[error("truncated DataRow")]
    DataRowTruncated,
    /// A DataRow with a negative column count.
    #[error("negative DataRow column count")]
    DataRowNegativeCount,
    /// A DataRow value length below -1 (-1 is NULL).
    #[error("negative DataRow value length")]
    DataRowNegativeLength,
    /// A DataRow value shorter than its length says.
    #[error("truncated DataRow value")]
    DataRowValueTruncated,
    /// A text-format DataRow value that is not UTF-8.
    #[error("DataRow value is not UTF-8")]
    DataRowNotUtf8,
    /// Bytes left after the last DataRow column.
    #[error("trailing bytes after DataRow")]
    DataRowTrailingBytes,
    /// A ParameterStatus without both NUL-terminated strings.
    #[error("truncated ParameterStatus")]
    ParameterStatusTruncated,
}

/// Why [`FrameReader::next_frame`] returned no frame, with the `host:port` it was reading from.
/// The replication client turns it into a [`ReplicationError`](super::ReplicationError).
#[derive(Debug, thiserror::Error)]
pub(super) enum ReadError {
    /// The socket failed, or the server closed the connection (`UnexpectedEof`): transient.
    #[error("reading from PostgreSQL at {peer} failed: {source}")]
    Io {
        /// `host:port`.
        peer: Arc<str>,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The bytes do not form a backend message: definite.
    #[error("malformed message from PostgreSQL at {peer}: {source}")]
    Malformed {
        /// `host:port`.
        peer: Arc<str>,
        /// What is wrong with the bytes.
        #[source]
        source: FrameError,
    },
}

/// One backend message: its tag and its body (without the 5-byte header).
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Frame {
    pub(super) tag: u8,
    pub(super) body: Bytes,
}

/// Takes one whole backend message off the front of `buf`. `Ok(None)` means more bytes are
/// needed; room for the rest of a partly received message is reserved in one go.
pub(super) fn take_frame(buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
    let header = match Header::parse(buf) {
        Ok(Some(header)) => header,
        Ok(None) => return Ok(None),
        Err(_) => return Err(FrameError::LengthBelowFour),
    };
    // Header::parse guarantees len >= 4, so the conversion cannot fail.
    let Ok(len) = usize::try_from(header.len()) else {
        return Err(FrameError::LengthBelowFour);
    };
    let total = 1 + len;
    if total > MAX_MESSAGE_LEN {
        return Err(FrameError::TooLong {
            tag: header.tag(),
            len: total,
        });
    }
    if buf.len() < total {
        // A message larger than a read chunk gets its room in one go; smaller ones finish in
        // the next chunk (`FrameReader::reserve_spare`), which is usually a reused one.
        if total > READ_CHUNK {
            buf.reserve(total - buf.len());
        }
        return Ok(None);
    }
    let mut frame = buf.split_to(total).freeze();
    let body = frame.split_off(5);
    Ok(Some(Frame {
        tag: header.tag(),
        body,
    }))
}

/// Reads frames from one side of the connection, in large chunks.
pub(super) struct FrameReader<R> {
    pub(super) io: R,
    pub(super) buf: BytesMut,
    pub(super) peer: Arc<str>,
    pub(super) gulp: Gulp,
    /// The streaming reader's switch for reads that must not wait (see [`Gulp`] and
    /// `tls::RawTcp`); `None` elsewhere.
    pub(super) probe: Option<Arc<Probe>>,
    /// Read chunks to reuse once the pipeline has dropped their frames.
    pub(super) chunks: ChunkPool,
}

/// How many spent read chunks a reader keeps for reuse: about what the pipeline holds in
/// flight with the default budget, so that a steady stream reads into reused memory. When all
/// of them are idle that is `SPENT_CHUNKS` × ([`READ_CHUNK`] + [`MIN_SPARE`]) resident.
const SPENT_CHUNKS: usize = 4;

/// Spent read chunks, kept for reuse. Every frame is a slice of the chunk it was read into, so
/// a chunk is freed when the pipeline drops the last event that points into it: with each
/// chunk its own mapping (above glibc's mmap threshold), that was a `munmap` per chunk and a
/// page fault per 4 KiB of the next one, 17 % of dbmazz's CPU on the TOAST mix
/// (`benches/e2e.sh`, `perf`). A reader instead keeps its last few chunks and reads into the
/// first whose frames are all gone.
#[derive(Debug, Default)]
pub(super) struct ChunkPool {
    spent: Vec<BytesMut>,
    /// Where the chunk being read into starts and how large it is, when this pool handed it
    /// out. Room reserved for one large message (`take_frame`) is another allocation, which
    /// is not kept: it would hold up to a gigabyte for a one-off.
    current: Option<(usize, usize)>,
    /// Chunks allocated rather than reused, for the tests.
    allocated: usize,
}

impl ChunkPool {
    /// Moves `buf`'s unread bytes to a chunk with at least [`READ_CHUNK`] free: a spent chunk
    /// nobody points into any more if there is one, else a new one. `buf`'s old chunk joins the
    /// spent ones (the oldest is let go when there are [`SPENT_CHUNKS`] already).
    fn renew(&mut self, buf: &mut BytesMut) {
        let at = buf.as_ptr().addr();
        let ours = self
            .current
            .is_some_and(|(start, len)| start <= at && at <= start + len);
        let need = buf.len() + READ_CHUNK;
        let mut fresh = match self.spent.iter_mut().position(|c| c.try_reclaim(need)) {
            Some(i) => self.spent.remove(i),
            None => {
                self.allocated += 1;
                BytesMut::with_capacity(need.max(READ_CHUNK + MIN_SPARE))
            }
        };
        fresh.extend_from_slice(buf);
        self.current = Some((fresh.as_ptr().addr(), fresh.capacity()));
        let mut old = std::mem::replace(buf, fresh);
        if !ours {
            return;
        }
        old.clear();
        if self.spent.len() == SPENT_CHUNKS {
            self.spent.remove(0);
        }
        self.spent.push(old);
    }
}

/// Set by the streaming reader around a read that must not wait (see `tls::RawTcp`): a socket
/// with nothing to read then answers `Pending` without registering for readiness, and drops a
/// registration left over from an abandoned wait. Only a caller that drops the read at once
/// may set it, since no wake-up is arranged.
#[derive(Debug, Default)]
pub(super) struct Probe(AtomicBool);

impl Probe {
    pub(super) fn set(&self, probing: bool) {
        self.0.store(probing, Ordering::Relaxed);
    }

    pub(super) fn is_set(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Reading in gulps. The walsender sends every pgoutput message with its own `send()`. A reader
/// that drains the socket each time something arrives sleeps and is woken once per few
/// messages, and on loopback the walsender pays for each wake-up too (`benches/e2e.sh`: the
/// walsender spent twice the CPU on the same WAL when its consumer was always waiting). After
/// a small read the streaming reader waits a millisecond for the socket to fill, so a busy
/// stream is read in a few large reads and a quiet one costs a millisecond of latency (against
/// a flush interval of seconds). The startup exchange reads eagerly ([`Gulp::Off`]).
///
/// While it pauses, and while the caller works on what it read, the socket is not registered
/// with tokio's driver, so the segments arriving meanwhile wake nobody (`tls::RawTcp`). The
/// reads after a pause only look ([`Probe`]); only a read that finds nothing waits, and it
/// waits for the first byte, so a lone keepalive is never left unread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Gulp {
    /// Read as soon as anything is there.
    Off,
    /// Streaming: the last fill found [`GULP_BYTES`] or more readable.
    Full,
    /// Streaming: the last fill found less; pause before the next one.
    Small,
}

impl<R> FrameReader<R> {
    /// Whether a complete message is already in the buffer, so that
    /// [`next_frame`](Self::next_frame) returns without waiting on the socket.
    pub(super) fn has_frame(&self) -> bool {
        first_message_len(&self.buf).is_some_and(|total| total <= self.buf.len())
    }
}

/// The whole length (tag byte included) of the message at the front of `buf`, once its header
/// is there; `None` before that or for a header `take_frame` will refuse.
fn first_message_len(buf: &[u8]) -> Option<usize> {
    // As in take_frame: the length counts itself but not the tag byte.
    match Header::parse(buf) {
        Ok(Some(h)) => usize::try_from(h.len()).ok().map(|len| len + 1),
        _ => None,
    }
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// The next whole message, reading from the socket as often as needed.
    pub(super) async fn next_frame(&mut self) -> Result<Frame, ReadError> {
        loop {
            if let Some(frame) = self.take_buffered()? {
                return Ok(frame);
            }
            self.fill().await?;
        }
    }

    /// The next whole message if it is already buffered, without touching the socket.
    pub(super) fn take_buffered(&mut self) -> Result<Option<Frame>, ReadError> {
        take_frame(&mut self.buf).map_err(|source| ReadError::Malformed {
            peer: self.peer.clone(),
            source,
        })
    }

    /// One read from the socket into the buffer; an error when the server closed the
    /// connection. Cancel-safe: dropping the future loses no bytes, so a caller may bound it
    /// with a timeout and call it again.
    pub(super) async fn fill(&mut self) -> Result<(), ReadError> {
        let mut total = match self.gulp {
            Gulp::Off => self.read_waiting().await?,
            Gulp::Small | Gulp::Full => {
                if self.gulp == Gulp::Small {
                    // Cancel-safe as well: nothing is read before the pause ends.
                    tokio::time::sleep(GULP_PAUSE).await;
                }
                match self.read_ready().await? {
                    Some(n) => n,
                    None => {
                        // Nothing there: wait for the next byte, whatever its size.
                        self.read_waiting().await?
                    }
                }
            }
        };
        if self.gulp != Gulp::Off {
            // Then what is already there, without waiting: a TLS stream hands over about a
            // record per read, so one read alone does not say how full the socket was. No await
            // point here can be left pending, so the whole stays cancel-safe.
            while total < GULP_BYTES {
                match self.read_ready().await? {
                    Some(n) => total += n,
                    None => break,
                }
            }
            self.gulp = if total < GULP_BYTES {
                Gulp::Small
            } else {
                Gulp::Full
            };
        }
        Ok(())
    }

    fn reserve_spare(&mut self) {
        let spare = self.buf.capacity() - self.buf.len();
        if spare >= MIN_SPARE {
            return;
        }
        // A partly received message that already has room for its rest stays where it is.
        let rest = first_message_len(&self.buf).and_then(|total| total.checked_sub(self.buf.len()));
        if rest.is_some_and(|rest| rest <= spare) {
            return;
        }
        self.chunks.renew(&mut self.buf);
    }

    /// One read, waiting for the socket if nothing is there.
    async fn read_waiting(&mut self) -> Result<usize, ReadError> {
        self.reserve_spare();
        let read = self.io.read_buf(&mut self.buf).await;
        self.read_outcome(read)
    }

    /// One read if the socket has something now; `None` if it would wait. On the streaming
    /// socket this leaves nothing registered with tokio's driver ([`Probe`]).
    async fn read_ready(&mut self) -> Result<Option<usize>, ReadError> {
        self.reserve_spare();
        if let Some(probe) = &self.probe {
            probe.set(true);
        }
        let polled = {
            let mut read = std::pin::pin!(self.io.read_buf(&mut self.buf));
            std::future::poll_fn(|cx| {
                std::task::Poll::Ready(std::future::Future::poll(read.as_mut(), cx))
            })
            .await
        };
        if let Some(probe) = &self.probe {
            probe.set(false);
        }
        match polled {
            std::task::Poll::Pending => Ok(None),
            std::task::Poll::Ready(read) => self.read_outcome(read).map(Some),
        }
    }

    /// The bytes a read returned; the server closing the connection is an error.
    fn read_outcome(&self, read: io::Result<usize>) -> Result<usize, ReadError> {
        match read {
            Ok(0) => Err(ReadError::Io {
                peer: self.peer.clone(),
                source: io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed the connection",
                ),
            }),
            Ok(n) => Ok(n),
            Err(source) => Err(ReadError::Io {
                peer: self.peer.clone(),
                source,
            }),
        }
    }
}

/// Decodes the payload of a CopyData message in a replication stream.
pub(super) fn parse_copy_data(body: Bytes) -> Result<ReplicationMessage, FrameError> {
    let mut cursor = Cursor::new(&body);
    match cursor.u8() {
        Some(XLOG_DATA_TAG) => {
            if body.len() < XLOG_DATA_HEADER_LEN {
                return Err(FrameError::XLogDataTooShort { len: body.len() });
            }
            let wal_start = cursor.u64().map(Lsn);
            let wal_end = cursor.u64().map(Lsn);
            let send_time = cursor.i64();
            match (wal_start, wal_end, send_time) {
                (Some(wal_start), Some(wal_end), Some(send_time)) => {
                    Ok(ReplicationMessage::XLogData {
                        wal_start,
                        wal_end,
                        send_time,
                        data: body.slice(XLOG_DATA_HEADER_LEN..),
                    })
                }
                _ => Err(FrameError::XLogDataHeaderTruncated),
            }
        }
        Some(PRIMARY_KEEPALIVE_TAG) => {
            if body.len() < KEEPALIVE_LEN {
                return Err(FrameError::KeepaliveTooShort { len: body.len() });
            }
            match (cursor.u64(), cursor.i64(), cursor.u8()) {
                (Some(wal_end), Some(send_time), Some(reply)) => {
                    Ok(ReplicationMessage::Keepalive {
                        wal_end: Lsn(wal_end),
                        send_time,
                        reply_requested: reply != 0,
                    })
                }
                _ => Err(FrameError::KeepaliveTruncated),
            }
        }
        Some(kind) => Err(FrameError::UnknownCopyDataKind { kind }),
        None => Err(FrameError::EmptyCopyData),
    }
}

/// Decodes a DataRow into text columns.
pub(super) fn parse_data_row(body: &[u8]) -> Result<Vec<Option<String>>, FrameError> {
    let mut cursor = Cursor::new(body);
    let count = cursor.i16().ok_or(FrameError::DataRowTruncated)?;
    let count = usize::try_from(count).map_err(|_| FrameError::DataRowNegativeCount)?;
    let mut row = Vec::with_capacity(count.min(body.len() / 4));
    for _ in 0..count {
        let len = cursor.i32().ok_or(FrameError::DataRowTruncated)?;
        if len == -1 {
            row.push(None);
            continue;
        }
        let len = usize::try_from(len).map_err(|_| FrameError::DataRowNegativeLength)?;
        let value = cursor.take(len).ok_or(FrameError::DataRowValueTruncated)?;
        let text = std::str::from_utf8(value).map_err(|_| FrameError::DataRowNotUtf8)?;
        row.push(Some(text.to_owned()));
    }
    if !cursor.rest().is_empty() {
        return Err(FrameError::DataRowTrailingBytes);
    }
    Ok(row)
}

pub(super) fn parse_parameter_status(body: &[u8]) -> Result<(String, String), FrameError> {
    let mut cursor = Cursor::new(body);
    match (cursor.cstr(), cursor.cstr()) {
        (Some(name), Some(value)) => Ok((
            String::from_utf8_lossy(name).into_owned(),
            String::from_utf8_lossy(value).into_owned(),
        )),
        _ => Err(FrameError::ParameterStatusTruncated),
    }
}

/// Bounds-checked big-endian reads over a message body.
pub(super) struct Cursor<'a> {
    buf: &'a [u8],
}

impl<'a> Cursor<'a> {
    pub(super) fn new(buf: &'a [u8]) -> Self {
        Cursor { buf }
    }

    pub(super) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.buf.len() < n {
            return None;
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Some(head)
    }

    pub(super) fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N).and_then(|s| s.try_into().ok())
    }

    pub(super) fn u8(&mut self) -> Option<u8> {
        self.array::<1>().map(|[b]| b)
    }

    pub(super) fn i16(&mut self) -> Option<i16> {
        self.array().map(i16::from_be_bytes)
    }

    pub(super) fn i32(&mut self) -> Option<i32> {
        self.array().map(i32::from_be_bytes)
    }

    pub(super) fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_be_bytes)
    }

    pub(super) fn i64(&mut self) -> Option<i64> {
        self.array().map(i64::from_be_bytes)
    }

    /// A NUL-terminated string, without the NUL.
    pub(super) fn cstr(&mut self) -> Option<&'a [u8]> {
        let end = memchr::memchr(0, self.buf)?;
        let (s, nul_and_rest) = self.buf.split_at_checked(end)?;
        let (_nul, rest) = nul_and_rest.split_first()?;
        self.buf = rest;
        Some(s)
    }

    pub(super) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::indexing_slicing,
        clippy::panic,
        clippy::cast_possible_truncation,
        clippy::cast_possible_wrap
    )]

    use super::*;
    use bytes::BufMut;

    fn message(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        out.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    fn xlog(start: u64, end: u64, time: i64, data: &[u8]) -> Vec<u8> {
        let mut body = vec![XLOG_DATA_TAG];
        body.extend_from_slice(&start.to_be_bytes());
        body.extend_from_slice(&end.to_be_bytes());
        body.extend_from_slice(&time.to_be_bytes());
        body.extend_from_slice(data);
        body
    }

    #[test]
    fn frames_are_split_only_when_complete() {
        let mut wire = message(b'd', b"hello");
        wire.extend_from_slice(&message(b'Z', b"I"));
        let mut buf = BytesMut::new();
        for (i, byte) in wire.iter().enumerate() {
            buf.put_u8(*byte);
            let frame = take_frame(&mut buf).unwrap();
            if i + 1 == 10 {
                assert_eq!(
                    frame,
                    Some(Frame {
                        tag: b'd',
                        body: Bytes::from_static(b"hello")
                    })
                );
            } else if i + 1 == wire.len() {
                assert_eq!(
                    frame,
                    Some(Frame {
                        tag: b'Z',
                        body: Bytes::from_static(b"I")
                    })
                );
            } else {
                assert_eq!(frame, None, "after {} bytes", i + 1);
            }
        }
        assert!(buf.is_empty());
    }

    #[test]
    fn many_frames_come_out_of_one_buffer() {
        let mut buf = BytesMut::new();
        for i in 0..100u8 {
            buf.extend_from_slice(&message(b'd', &[i; 3]));
        }
        let mut seen = 0;
        while let Some(frame) = take_frame(&mut buf).unwrap() {
            assert_eq!(frame.body.as_ref(), &[seen; 3]);
            seen += 1;
        }
        assert_eq!(seen, 100);
    }

    #[test]
    fn bad_lengths_are_errors_not_panics() {
        let mut buf = BytesMut::from(&[b'd', 0, 0, 0, 3][..]);
        assert!(take_frame(&mut buf).is_err());
        let mut buf = BytesMut::from(&[b'd', 0x7f, 0xff, 0xff, 0xff][..]);
        assert!(take_frame(&mut buf)
            .unwrap_err()
            .to_string()
            .contains("more than"));
        let mut buf = BytesMut::from(&[b'd', 0xff, 0xff, 0xff, 0xff][..]);
        assert!(take_frame(&mut buf).is_err());
    }

    #[test]
    fn partial_large_frame_reserves_room_once() {
        let mut buf = BytesMut::from(&[b'd', 0, 0x10, 0, 4][..]);
        assert_eq!(take_frame(&mut buf).unwrap(), None);
        assert!(buf.capacity() > 0x10_0004);
    }

    #[test]
    fn xlogdata_payload_is_a_zero_copy_slice() {
        let wire = message(b'd', &xlog(0x10, 0x20, 7, b"BEGIN"));
        let mut buf = BytesMut::from(&wire[..]);
        let base = buf.as_ptr() as usize;
        let frame = take_frame(&mut buf).unwrap().unwrap();
        let msg = parse_copy_data(frame.body).unwrap();
        let ReplicationMessage::XLogData {
            wal_start,
            wal_end,
            send_time,
            data,
        } = msg
        else {
            panic!("expected XLogData");
        };
        assert_eq!((wal_start, wal_end, send_time), (Lsn(0x10), Lsn(0x20), 7));
        assert_eq!(data.as_ref(), b"BEGIN");
        assert_eq!(data.as_ptr() as usize, base + 5 + XLOG_DATA_HEADER_LEN);
    }

    #[test]
    fn keepalives_decode() {
        let mut body = vec![PRIMARY_KEEPALIVE_TAG];
        body.extend_from_slice(&0x1_0000_0002u64.to_be_bytes());
        body.extend_from_slice(&(-5i64).to_be_bytes());
        body.push(1);
        assert_eq!(
            parse_copy_data(Bytes::from(body)).unwrap(),
            ReplicationMessage::Keepalive {
                wal_end: Lsn(0x1_0000_0002),
                send_time: -5,
                reply_requested: true
            }
        );
    }

    #[test]
    fn truncated_or_unknown_copy_data_is_rejected() {
        assert!(parse_copy_data(Bytes::new()).is_err());
        assert!(parse_copy_data(Bytes::from_static(b"w\0\0")).is_err());
        assert!(parse_copy_data(Bytes::from_static(b"k\0\0\0\0\0\0\0\0")).is_err());
        assert!(parse_copy_data(Bytes::from_static(b"x"))
            .unwrap_err()
            .to_string()
            .contains("'x'"));
    }

    #[test]
    fn malformed_messages_keep_their_wording() {
        let mut buf = BytesMut::from(&[b'd', 0x7f, 0xff, 0xff, 0xff][..]);
        assert_eq!(
            take_frame(&mut buf).unwrap_err().to_string(),
            "message 'd' claims 2147483648 bytes, more than PostgreSQL ever sends"
        );
        assert_eq!(
            parse_copy_data(Bytes::from_static(b"x"))
                .unwrap_err()
                .to_string(),
            "unknown replication message kind 'x'"
        );
        assert_eq!(
            parse_copy_data(Bytes::from_static(b"w\0\0"))
                .unwrap_err()
                .to_string(),
            "XLogData of 3 bytes is truncated"
        );
    }

    #[test]
    fn data_rows_decode_text_and_nulls() {
        let mut body = 3i16.to_be_bytes().to_vec();
        body.extend_from_slice(&2i32.to_be_bytes());
        body.extend_from_slice(b"hi");
        body.extend_from_slice(&(-1i32).to_be_bytes());
        body.extend_from_slice(&0i32.to_be_bytes());
        assert_eq!(
            parse_data_row(&body).unwrap(),
            vec![Some("hi".to_owned()), None, Some(String::new())]
        );
        let mut bad = 1i16.to_be_bytes().to_vec();
        bad.extend_from_slice(&100i32.to_be_bytes());
        assert!(parse_data_row(&bad).is_err());
        let mut bad = 1i16.to_be_bytes().to_vec();
        bad.extend_from_slice(&(-7i32).to_be_bytes());
        assert!(parse_data_row(&bad).is_err());
        assert!(parse_data_row(&(-1i16).to_be_bytes()).is_err());
    }

    fn reader<R>(io: R, gulp: Gulp) -> FrameReader<R> {
        FrameReader {
            io,
            buf: BytesMut::new(),
            peer: Arc::from("test"),
            gulp,
            probe: None,
            chunks: ChunkPool::default(),
        }
    }

    /// Over a real TCP socket: what arrived during a pause is read after it without the socket
    /// ever being registered with tokio's driver; a pause that finds nothing registers it and
    /// waits for the next byte, and the read that gets that byte takes the registration away.
    #[tokio::test]
    async fn the_socket_is_registered_only_while_a_read_waits_and_no_small_message_is_stranded() {
        use super::super::tls::{in_an_epoll_set, PgStream, RawTcp};
        use std::os::fd::AsRawFd;
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        let fd = client.as_raw_fd();
        assert!(in_an_epoll_set(fd), "tokio registers a connected stream");
        let stream = PgStream::Plain(RawTcp::new(client).unwrap());
        let probe = stream.probe();
        let mut r = reader(stream, Gulp::Small);
        r.probe = Some(probe);
        assert!(!in_an_epoll_set(fd));

        server.write_all(&message(b'd', b"small")).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        r.fill().await.unwrap();
        assert_eq!(r.buf.len(), 10);
        assert_eq!(r.gulp, Gulp::Small);
        assert!(!in_an_epoll_set(fd), "a read after a pause only looks");

        // The next message comes while the reader waits: its pause finds nothing, so it
        // registers and waits, and the message wakes it.
        let writer = tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            server.write_all(&message(b'd', b"again")).await.unwrap();
            server
        });
        let registered_while_waiting = async {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            in_an_epoll_set(fd)
        };
        let (filled, registered_while_waiting) = tokio::join!(
            tokio::time::timeout(std::time::Duration::from_secs(5), r.fill()),
            registered_while_waiting
        );
        filled
            .unwrap_or_else(|_| panic!("a small message was left unread"))
            .unwrap();
        assert!(registered_while_waiting);
        assert_eq!(r.buf.len(), 20);
        assert!(
            !in_an_epoll_set(fd),
            "the read that got the byte keeps no registration"
        );
        drop(writer.await.unwrap());
    }

    #[tokio::test]
    async fn after_a_small_read_the_streaming_reader_lets_the_socket_fill() {
        use tokio::io::AsyncWriteExt;
        let (mut server, client) = tokio::io::duplex(1 << 20);
        let mut r = reader(client, Gulp::Full);
        server.write_all(&message(b'd', b"small")).await.unwrap();
        r.fill().await.unwrap();
        assert_eq!(r.gulp, Gulp::Small);
        // More than a gulp is waiting, yet the reader first pauses, then takes it in one read.
        server.write_all(&vec![7u8; GULP_BYTES + 1]).await.unwrap();
        let started = tokio::time::Instant::now();
        r.fill().await.unwrap();
        assert!(started.elapsed() >= GULP_PAUSE, "{:?}", started.elapsed());
        assert_eq!(r.buf.len(), 10 + GULP_BYTES + 1);
        assert_eq!(r.gulp, Gulp::Full);
    }

    /// Hands over at most one queued chunk per read, as a TLS stream hands over about a record;
    /// pending once empty.
    struct Trickle(std::collections::VecDeque<Vec<u8>>);

    impl AsyncRead for Trickle {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            match self.0.pop_front() {
                Some(chunk) => {
                    buf.put_slice(&chunk);
                    std::task::Poll::Ready(Ok(()))
                }
                None => std::task::Poll::Pending,
            }
        }
    }

    fn trickle(chunks: usize) -> Trickle {
        Trickle((0..chunks).map(|_| vec![1u8; 4096]).collect())
    }

    #[tokio::test]
    async fn a_full_socket_read_a_record_at_a_time_still_counts_as_full() {
        // More 4 KiB records queued than a gulp holds.
        let mut r = reader(trickle(GULP_BYTES / 4096 + 2), Gulp::Small);
        r.fill().await.unwrap();
        // What is already there is read on, up to a gulp, and then counts as a full socket.
        assert_eq!(r.buf.len(), GULP_BYTES);
        assert_eq!(r.gulp, Gulp::Full);

        let mut r = reader(trickle(3), Gulp::Full);
        r.fill().await.unwrap();
        assert_eq!(r.buf.len(), 3 * 4096);
        assert_eq!(r.gulp, Gulp::Small);
    }

    /// A reader whose peer sends one message per body, from a task that hands the peer back.
    fn serving(
        bodies: Vec<Vec<u8>>,
    ) -> (
        FrameReader<tokio::io::DuplexStream>,
        tokio::task::JoinHandle<tokio::io::DuplexStream>,
    ) {
        use tokio::io::AsyncWriteExt;
        let (mut server, client) = tokio::io::duplex(8 << 20);
        let writer = tokio::spawn(async move {
            for b in bodies {
                server.write_all(&message(b'd', &b)).await.unwrap();
            }
            server
        });
        (reader(client, Gulp::Off), writer)
    }

    /// Frames held by the pipeline keep their chunk: it is read into again only once every
    /// frame in it is gone, and then no new chunk is allocated.
    #[tokio::test]
    async fn a_read_chunk_is_reused_only_once_its_frames_are_gone() {
        fn body(i: usize) -> Vec<u8> {
            let mut b = vec![u8::try_from(i % 251).unwrap(); 3300];
            b[..8].copy_from_slice(&(i as u64).to_be_bytes());
            b
        }
        let first = 5 * READ_CHUNK / 3300;
        let second = 2 * READ_CHUNK / 3300;
        let (mut r, writer) = serving((0..first + second).map(body).collect());

        let mut held = Vec::new();
        for _ in 0..first {
            held.push(r.next_frame().await.unwrap().body);
        }
        // Five chunks' worth read while every frame is alive: each is still what was sent.
        for (i, frame) in held.iter().enumerate() {
            assert_eq!(&frame[..], &body(i)[..], "frame {i} was overwritten");
        }
        let allocated = r.chunks.allocated;
        assert!(allocated >= 4, "{allocated}");

        drop(held);
        for i in first..first + second {
            let frame = r.next_frame().await.unwrap().body;
            assert_eq!(&frame[..], &body(i)[..]);
        }
        assert_eq!(
            r.chunks.allocated, allocated,
            "spent chunks were not reused"
        );
        drop(writer.await.unwrap());
    }

    /// The room reserved for a message larger than a chunk is not kept once it is spent.
    #[tokio::test]
    async fn room_for_a_large_message_is_not_kept_for_reuse() {
        let mut bodies = vec![vec![1u8; 3300], vec![2u8; 4 * READ_CHUNK]];
        bodies.extend((0..3 * READ_CHUNK / 3300).map(|_| vec![1u8; 3300]));
        let (mut r, writer) = serving(bodies);
        assert_eq!(r.next_frame().await.unwrap().body.len(), 3300);
        assert_eq!(r.next_frame().await.unwrap().body.len(), 4 * READ_CHUNK);
        for _ in 0..3 * READ_CHUNK / 3300 {
            assert_eq!(r.next_frame().await.unwrap().body.len(), 3300);
        }
        // Several chunks were spent after the large message; neither the one being read
        // into nor a kept one is the large message's room.
        assert!(r.chunks.allocated >= 2 && !r.chunks.spent.is_empty());
        let (_, current) = r.chunks.current.unwrap();
        assert!(
            current <= READ_CHUNK + MIN_SPARE,
            "reading into {current} bytes"
        );
        assert!(
            !r.chunks
                .spent
                .iter_mut()
                .any(|c| c.try_reclaim(2 * READ_CHUNK)),
            "the large message's room is kept"
        );
        drop(writer.await.unwrap());
    }

    #[tokio::test]
    async fn the_startup_reader_never_pauses() {
        use tokio::io::AsyncWriteExt;
        let (mut server, client) = tokio::io::duplex(1 << 20);
        let mut r = reader(client, Gulp::Off);
        for _ in 0..3 {
            server.write_all(&message(b'd', b"small")).await.unwrap();
            r.fill().await.unwrap();
            assert_eq!(r.gulp, Gulp::Off);
        }
        assert_eq!(r.buf.len(), 30);
    }
}
