//! A small client for PostgreSQL's streaming-replication protocol.
//!
//! Why our own: the released `tokio-postgres` (0.7) cannot enter `CopyBoth` mode, which
//! `START_REPLICATION` requires, and the published replication crates either hard-code protocol
//! version 1 or need system libpq. The protocol part we need is small, so this module speaks it
//! directly on top of `postgres-protocol`'s message encoders and its SCRAM/MD5 helpers:
//!
//! ```text
//!  connect ──TCP──▶ SSLRequest ─'S'─▶ TLS (postgres::tls) ─▶ StartupMessage (replication=database,
//!                      └─'N'─▶ plaintext (prefer only)        TimeZone=UTC, DateStyle=ISO, …)
//!                                                            ─▶ trust | password | md5 | SCRAM
//!  ReplicationClient ── simple_query / IDENTIFY_SYSTEM / CREATE_REPLICATION_SLOT
//!        │ start_logical_replication (CopyBothResponse)
//!        ├──▶ ReplicationStream  (read half)   next() → XLogData | Keepalive … Ok(None)
//!        └──▶ StatusSender       (write half)  send_status('r'), finish() = CopyDone
//! ```
//!
//! The read path is built for throughput: the socket is read in chunks of at least
//! [`READ_CHUNK`] bytes into one `BytesMut`, many frames are parsed per wake-up, and the payload
//! of an XLogData message is a zero-copy [`Bytes`](bytes::Bytes) slice of that buffer. Letting
//! the socket fill up also lets the walsender coalesce its sends, which matters more on small
//! machines than any parsing trick; so once streaming, a read that found little is followed by
//! a 1 ms pause before the next (`framing::Gulp`). The socket is registered with tokio's
//! driver only while a read or write waits (`tls::RawTcp`): registered, every segment the
//! walsender sends would wake the driver's thread whether or not anyone waits. A slice keeps
//! its whole read chunk alive, so consumers should not hold on to payloads longer than needed;
//! the reader reads into a chunk again once nothing points into it (`framing::ChunkPool`),
//! instead of mapping a new one.
//!
//! Nothing here panics on what the server sends: malformed bytes become
//! [`ReplicationError::Protocol`]. Every error names `host:port` and none contains the password.
//!
//! A network can fail without closing anything. Connecting is bounded by `connect_timeout`, the
//! socket has TCP keepalives, and a started stream may be given a receive timeout
//! ([`ReplicationStream::set_receive_timeout`], PostgreSQL's `wal_receiver_timeout`): it asks
//! the server for a keepalive after half of it and fails with the transient
//! [`ReplicationError::ReceiveTimeout`] when even that gets no answer.
//!
//! The files follow the diagram:
//!
//! - `tls.rs`: the TCP or TLS byte stream and the SSLRequest that picks one;
//! - `startup.rs`: the StartupMessage, authentication and the wait for ReadyForQuery;
//! - `client.rs`: [`ReplicationClient`] and, once streaming, [`ReplicationStream`] and
//!   [`StatusSender`];
//! - `framing.rs`: backend messages and CopyData payloads, pure decoders that never panic;
//! - `error.rs`: [`ReplicationError`] and which errors are worth a retry.

mod client;
mod error;
mod framing;
mod startup;
mod tls;

pub use client::{CreatedSlot, ReplicationClient, ReplicationStream, StatusSender, SystemInfo};
pub use error::{ReplicationError, ServerError};
pub use framing::{ReplicationMessage, READ_CHUNK};

/// Whether an error with this SQLSTATE may go away by itself, so that reconnecting is worth it.
/// Kept under this name for existing callers; the rule lives in [`crate::postgres::sqlstate`].
pub use crate::postgres::sqlstate::is_transient as sqlstate_is_transient;

#[cfg(test)]
mod tests {
    use super::error::ErrorFields;
    use super::framing::{parse_copy_data, parse_data_row, parse_parameter_status, take_frame};
    use bytes::{Bytes, BytesMut};
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn arbitrary_server_bytes_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..512)
        ) {
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(frame)) = take_frame(&mut buf) {
                let _ = parse_copy_data(frame.body.clone());
                let _ = parse_data_row(&frame.body);
                let _ = parse_parameter_status(&frame.body);
                let _ = ErrorFields::parse(&frame.body);
            }
            let _ = parse_copy_data(Bytes::from(bytes.clone()));
            let _ = parse_data_row(&bytes);
            let _ = ErrorFields::parse(&bytes);
        }
    }
}
