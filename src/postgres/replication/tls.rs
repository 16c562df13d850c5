//! The byte stream under the replication protocol, and the SSLRequest that decides whether it
//! is encrypted.
//!
//! What a certificate must satisfy for each `sslmode` is decided once, in
//! [`crate::postgres::tls`], for the SQL connections and this client alike. This file only does
//! what `tokio-postgres` does for the SQL connections: send SSLRequest, read the one-byte answer,
//! and run the handshake under that policy, falling back to plaintext only when the mode allows.

use std::io;
use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use postgres_protocol::message::backend::ERROR_RESPONSE_TAG;
use postgres_protocol::message::frontend;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::error::{io_error, protocol, startup_error, ReplicationError};
use super::framing::{ChunkPool, FrameReader, Gulp};
use crate::postgres::conninfo::PgConnInfo;
use crate::postgres::tls::{find_rustls_error, handshake_advice, server_name, TlsPolicy};

/// The server's one-byte answers to SSLRequest.
const SSL_ACCEPTED: u8 = b'S';
const SSL_REFUSED: u8 = b'N';

/// The byte stream under the protocol: TCP, possibly wrapped in TLS.
pub(super) enum PgStream {
    Plain(RawTcp),
    Tls(Box<TlsStream<RawTcp>>),
}

impl PgStream {
    /// The TCP socket under it (for its low-water mark).
    pub(super) fn raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        match self {
            PgStream::Plain(s) => s.0.as_raw_fd(),
            PgStream::Tls(s) => s.get_ref().0 .0.as_raw_fd(),
        }
    }
}

/// A TCP stream whose reads try the socket first, whatever tokio's cached readiness says.
/// tokio marks a socket readable only when epoll reports it, and with a raised `SO_RCVLOWAT`
/// epoll stays silent until that many bytes are queued: the gulp reader must still be able to
/// take the few bytes that arrived during its pause. A read that finds nothing falls back to
/// tokio's, which registers for readiness as usual.
pub(super) struct RawTcp(TcpStream);

impl RawTcp {
    /// Wraps a connected stream.
    #[cfg(test)]
    pub(super) fn new(tcp: TcpStream) -> RawTcp {
        RawTcp(tcp)
    }
}

impl AsyncRead for RawTcp {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        let this = self.get_mut();
        let sock = socket2::SockRef::from(&this.0);
        loop {
            // SAFETY: recv(2) only writes initialized bytes into the spare capacity, and only
            // the `n` it reports are marked initialized and filled below.
            let read = sock.recv(unsafe { buf.unfilled_mut() });
            match read {
                Ok(n) => {
                    // SAFETY: recv wrote `n` bytes.
                    unsafe { buf.assume_init(n) };
                    buf.advance(n);
                    return std::task::Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return std::pin::Pin::new(&mut this.0).poll_read(cx, buf)
                }
                Err(e) => return std::task::Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for RawTcp {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

impl AsyncRead for PgStream {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        match self.get_mut() {
            PgStream::Plain(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            PgStream::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for PgStream {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        match self.get_mut() {
            PgStream::Plain(s) => std::pin::Pin::new(s).poll_write(cx, buf),
            PgStream::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        match self.get_mut() {
            PgStream::Plain(s) => std::pin::Pin::new(s).poll_flush(cx),
            PgStream::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        match self.get_mut() {
            PgStream::Plain(s) => std::pin::Pin::new(s).poll_shutdown(cx),
            PgStream::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// SSLRequest and the TLS handshake, per the policy.
pub(super) async fn negotiate_tls(
    mut tcp: TcpStream,
    info: &PgConnInfo,
    policy: TlsPolicy,
    peer: &Arc<str>,
) -> Result<(PgStream, bool), ReplicationError> {
    let (config, required) = match policy {
        TlsPolicy::Disabled => return Ok((PgStream::Plain(RawTcp(tcp)), false)),
        TlsPolicy::Prefer(config) => (config, false),
        TlsPolicy::Require(config) => (config, true),
    };
    let mut request = BytesMut::with_capacity(8);
    frontend::ssl_request(&mut request);
    tcp.write_all(&request)
        .await
        .map_err(|e| io_error(peer, e))?;
    let answer = tcp.read_u8().await.map_err(|e| io_error(peer, e))?;
    match answer {
        SSL_ACCEPTED => {
            let name = server_name(&info.host).map_err(|e| ReplicationError::Tls {
                peer: peer.to_string(),
                message: e.to_string(),
            })?;
            let stream = TlsConnector::from(config)
                .connect(name, RawTcp(tcp))
                .await
                .map_err(|e| match find_rustls_error(&e) {
                    Some(tls) => ReplicationError::Tls {
                        peer: peer.to_string(),
                        message: format!("{tls}; {}", handshake_advice(tls, info)),
                    },
                    None => io_error(peer, e),
                })?;
            Ok((PgStream::Tls(Box::new(stream)), true))
        }
        SSL_REFUSED if !required => Ok((PgStream::Plain(RawTcp(tcp)), false)),
        SSL_REFUSED => Err(ReplicationError::Tls {
            peer: peer.to_string(),
            message: format!(
                "the server does not accept TLS connections but sslmode={} requires TLS; enable \
                 ssl on the server, or use sslmode=prefer or disable on a trusted network",
                info.sslmode
            ),
        }),
        ERROR_RESPONSE_TAG => {
            // Servers that fail early answer with an ErrorResponse instead of one byte.
            let mut buf = BytesMut::with_capacity(1024);
            buf.put_u8(answer);
            let mut reader = FrameReader {
                io: tcp,
                buf,
                peer: peer.clone(),
                gulp: Gulp::Off,
                low_water: None,
                chunks: ChunkPool::default(),
            };
            let frame = reader.next_frame().await?;
            Err(startup_error(peer, &frame.body))
        }
        other => Err(protocol(
            peer,
            format!("unexpected answer {other:#04x} to SSLRequest"),
        )),
    }
}
