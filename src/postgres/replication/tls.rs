//! The byte stream under the replication protocol, and the SSLRequest that decides whether it
//! is encrypted.
//!
//! What a certificate must satisfy for each `sslmode` is decided once, in
//! [`crate::postgres::tls`], for the SQL connections and this client alike. This file only does
//! what `tokio-postgres` does for the SQL connections: send SSLRequest, read the one-byte answer,
//! and run the handshake under that policy, falling back to plaintext only when the mode allows.

use std::io::{self, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use postgres_protocol::message::backend::ERROR_RESPONSE_TAG;
use postgres_protocol::message::frontend;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, Interest, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::error::{io_error, protocol, startup_error, ReplicationError};
use super::framing::{ChunkPool, FrameReader, Gulp, Probe};
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
    /// The switch the streaming reader uses to look at the socket without waiting on it.
    pub(super) fn probe(&self) -> Arc<Probe> {
        match self {
            PgStream::Plain(s) => s.probe.clone(),
            PgStream::Tls(s) => s.get_ref().0.probe.clone(),
        }
    }
}

/// The socket's file descriptor as tokio's driver registers it; the socket itself is owned by
/// [`RawTcp`], which drops the registration first.
struct SockFd(RawFd);

impl AsRawFd for SockFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// A TCP stream that is known to tokio's driver (epoll) only while a read or a write waits.
///
/// The driver's registration is edge-triggered, and Linux reports an edge for every segment
/// that arrives, whether or not a task waits on the socket. The walsender sends each pgoutput
/// message with its own `send()`, so a registered socket woke the thread parked in the driver
/// once per message while the reader was busy or pausing, and found nothing to do: on the TOAST
/// mix that was 50,000–60,000 `epoll_wait` calls and 25,000–31,000 context switches per
/// catch-up, against ~4,000 and ~5,000 now (BENCHMARKS.md, "Off the driver while not
/// waiting"). Raising `SO_RCVLOWAT` silenced those wake-ups only below the mark, and below it
/// Linux acknowledges every segment at once, which the walsender pays for. So reads and writes
/// go to the socket first; one that would block registers the socket and waits for readiness,
/// and the first read that returns bytes drops the registration again (unless a write is
/// waiting on it). A wait costs two `epoll_ctl` calls, about a microsecond.
pub(super) struct RawTcp {
    /// Declared first so that it is dropped (deregistered) before the socket closes.
    registration: Option<AsyncFd<SockFd>>,
    sock: std::net::TcpStream,
    /// A write returned `Pending` and has not completed since: its waker is in the
    /// registration, which must stay.
    write_waiting: bool,
    probe: Arc<Probe>,
}

impl RawTcp {
    /// Takes `tcp` off tokio's driver; it is registered again only to wait.
    pub(super) fn new(tcp: TcpStream) -> io::Result<RawTcp> {
        Ok(RawTcp {
            registration: None,
            sock: tcp.into_std()?,
            write_waiting: false,
            probe: Arc::default(),
        })
    }

    fn registered(&mut self) -> io::Result<&AsyncFd<SockFd>> {
        let registration = match self.registration.take() {
            Some(registration) => registration,
            // SAFETY: the descriptor is `sock`'s, open for as long as `self` lives; the
            // registration is dropped before `sock` (field order), and `SockFd` always returns
            // that same descriptor.
            None => unsafe {
                AsyncFd::register_with_interest(
                    SockFd(self.sock.as_raw_fd()),
                    Interest::READABLE | Interest::WRITABLE,
                )?
            },
        };
        Ok(self.registration.insert(registration))
    }

    /// Drops the registration unless a write still waits on it.
    fn release(&mut self) {
        if !self.write_waiting {
            self.registration = None;
        }
    }
}

impl AsyncRead for RawTcp {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        use std::task::Poll;
        let this = self.get_mut();
        loop {
            // SAFETY: recv(2) only writes initialized bytes into the spare capacity, and only
            // the `n` it reports are marked initialized and filled below.
            let read = socket2::SockRef::from(&this.sock).recv(unsafe { buf.unfilled_mut() });
            match read {
                Ok(n) => {
                    // SAFETY: recv wrote `n` bytes.
                    unsafe { buf.assume_init(n) };
                    buf.advance(n);
                    this.release();
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if this.probe.is_set() {
                        this.release();
                        return Poll::Pending;
                    }
                    match this.registered()?.poll_read_ready(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Ok(mut ready)) => ready.clear_ready(),
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    }
                }
                Err(e) => return Poll::Ready(Err(e)),
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
        use std::task::Poll;
        let this = self.get_mut();
        loop {
            match (&this.sock).write(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    match this.registered()?.poll_write_ready(cx) {
                        Poll::Pending => {
                            this.write_waiting = true;
                            return Poll::Pending;
                        }
                        Poll::Ready(Ok(mut ready)) => ready.clear_ready(),
                        Poll::Ready(Err(e)) => {
                            this.write_waiting = false;
                            return Poll::Ready(Err(e));
                        }
                    }
                }
                done => {
                    this.write_waiting = false;
                    return Poll::Ready(done);
                }
            }
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::task::Poll::Ready(self.sock.shutdown(std::net::Shutdown::Write))
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
    let raw = |tcp| RawTcp::new(tcp).map_err(|e| io_error(peer, e));
    let (config, required) = match policy {
        TlsPolicy::Disabled => return Ok((PgStream::Plain(raw(tcp)?), false)),
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
                .connect(name, raw(tcp)?)
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
        SSL_REFUSED if !required => Ok((PgStream::Plain(raw(tcp)?), false)),
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
                probe: None,
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

/// Whether `fd` is in an epoll set of this process (tokio's drivers hold the only ones the
/// tests create), read from `/proc/self/fdinfo`.
#[cfg(test)]
pub(super) fn in_an_epoll_set(fd: RawFd) -> bool {
    let epolls = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| {
            std::fs::read_link(e.path())
                .is_ok_and(|target| target.to_string_lossy() == "anon_inode:[eventpoll]")
        });
    epolls
        .filter_map(|e| {
            let name = e.file_name();
            std::fs::read_to_string(format!("/proc/self/fdinfo/{}", name.to_string_lossy())).ok()
        })
        .any(|info| {
            info.lines().any(|line| {
                line.strip_prefix("tfd:")
                    .and_then(|rest| rest.split_whitespace().next())
                    .and_then(|n| n.parse::<RawFd>().ok())
                    == Some(fd)
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A read that returns bytes must not take away the registration a waiting write's
    /// wake-up depends on: the status updates share the socket with the reader.
    #[tokio::test]
    async fn a_read_keeps_the_registration_a_waiting_write_needs() {
        use std::time::Duration;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        let fd = client.as_raw_fd();
        let (mut rh, mut wh) = tokio::io::split(PgStream::Plain(RawTcp::new(client).unwrap()));

        // More than the socket buffers hold while the server reads nothing: the write waits.
        let big = vec![7u8; 64 << 20];
        let mut write = std::pin::pin!(wh.write_all(&big));
        assert!(
            tokio::time::timeout(Duration::from_millis(200), write.as_mut())
                .await
                .is_err(),
            "the write should be waiting for the server to read"
        );
        assert!(in_an_epoll_set(fd));

        // A read that gets its byte while the write still waits.
        server.write_all(b"x").await.unwrap();
        let mut one = [0u8; 1];
        tokio::time::timeout(Duration::from_secs(5), rh.read_exact(&mut one))
            .await
            .unwrap()
            .unwrap();
        assert!(
            in_an_epoll_set(fd),
            "the waiting write lost its registration"
        );

        // The server drains; the write must be woken and finish.
        let drain = tokio::spawn(async move {
            let mut sink = vec![0u8; 1 << 20];
            let mut got = 0usize;
            while got < 64 << 20 {
                let n = server.read(&mut sink).await.unwrap();
                assert!(n > 0);
                got += n;
            }
            server
        });
        tokio::time::timeout(Duration::from_secs(20), write)
            .await
            .expect("the waiting write was never woken")
            .unwrap();
        drop(drain.await.unwrap());
    }
}
