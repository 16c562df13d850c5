//! A TCP proxy that misbehaves on command, to test how dbmazz survives a real network.
//!
//! [`FaultProxy::start`] listens on `127.0.0.1:0` and forwards every connection to an upstream
//! port (PostgreSQL, say); tests point `DATABASE_URL` at [`FaultProxy::port`] and switch the
//! proxy's [`Mode`] while dbmazz runs. A mode applies at once to every open connection and to
//! the ones accepted later:
//!
//! - [`Mode::PassThrough`]: bytes flow unchanged.
//! - [`Mode::BlackHole`]: bytes read from either side are thrown away and nothing is closed, as
//!   on a link that silently drops every packet. New connections are accepted and then get the
//!   same treatment forever (no upstream connection is ever made for them). A side that closes
//!   during the black hole is not told to the other side until the proxy leaves this mode.
//!   Unlike a real partition, where TCP would retransmit after the link heals, the bytes are
//!   gone: a connection that lived through a black hole is broken for good, the worst case a
//!   client has to survive.
//! - [`Mode::Latency`]: each chunk read is held back this long before it is forwarded.
//! - [`Mode::Bandwidth`]: each direction of each connection is limited to this many bytes per
//!   second.
//! - [`Mode::Refuse`]: open connections keep working; new ones are accepted and at once reset
//!   (the client sees ECONNRESET rather than ECONNREFUSED: the proxy keeps its port, so that no
//!   other test can take it meanwhile).
//!
//! [`FaultProxy::reset_all`] closes every open connection with a TCP reset (`SO_LINGER` 0) on
//! both sides, whatever the mode. The proxy runs on its own thread and runtime, so it works
//! from synchronous tests, and stops (closing everything) when dropped.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// How the proxy treats the bytes it forwards; see the module documentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Forward unchanged.
    PassThrough,
    /// Drop every byte both ways, close nothing; new connections are accepted but dead.
    BlackHole,
    /// Hold each chunk back this long before forwarding it.
    Latency(Duration),
    /// At most this many bytes per second, per connection and direction.
    Bandwidth(u64),
    /// Reset new connections at once; open ones keep working.
    Refuse,
}

/// What the proxy's tasks share with the test.
struct Shared {
    mode: watch::Sender<Mode>,
    /// Bumped by [`FaultProxy::reset_all`]; each connection resets when it changes.
    resets: watch::Sender<u64>,
    accepted: AtomicUsize,
    open: AtomicUsize,
}

/// A running proxy; it stops, closing every connection, when dropped.
pub struct FaultProxy {
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl FaultProxy {
    /// Listens on a free port and forwards each connection to `127.0.0.1:upstream`, passing
    /// bytes through until told otherwise.
    pub fn start(upstream: u16) -> FaultProxy {
        let upstream = SocketAddr::from(([127, 0, 0, 1], upstream));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared {
            mode: watch::channel(Mode::PassThrough).0,
            resets: watch::channel(0).0,
            accepted: AtomicUsize::new(0),
            open: AtomicUsize::new(0),
        });
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let tasks = shared.clone();
        let thread = thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = TcpListener::from_std(listener).unwrap();
                loop {
                    let (socket, _) = tokio::select! {
                        r = listener.accept() => match r { Ok(s) => s, Err(_) => continue },
                        _ = &mut stopped => return,
                    };
                    tasks.accepted.fetch_add(1, Ordering::SeqCst);
                    tokio::spawn(serve(socket, upstream, tasks.clone()));
                }
            });
        });
        FaultProxy {
            port,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Switches every open connection and the ones to come to `mode`.
    pub fn set(&self, mode: Mode) {
        self.shared.mode.send_replace(mode);
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        *self.shared.mode.borrow()
    }

    /// Closes every open connection with a TCP reset on both sides.
    pub fn reset_all(&self) {
        self.shared.resets.send_modify(|n| *n += 1);
    }

    /// Connections accepted since the start (including refused and black-holed ones).
    pub fn accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Connections open right now.
    pub fn open(&self) -> usize {
        self.shared.open.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Counts an open connection for as long as it lives.
struct OpenGuard(Arc<Shared>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Closes with a reset instead of a FIN.
fn reset(socket: &TcpStream) {
    let _ = socket2::SockRef::from(socket).set_linger(Some(Duration::ZERO));
}

/// One accepted connection, from accept to close.
async fn serve(mut client: TcpStream, upstream: SocketAddr, shared: Arc<Shared>) {
    shared.open.fetch_add(1, Ordering::SeqCst);
    let _guard = OpenGuard(shared.clone());
    let mut resets = shared.resets.subscribe();
    resets.mark_unchanged();
    let mode = shared.mode.subscribe();
    let _ = client.set_nodelay(true);
    let at_accept = *mode.borrow();
    match at_accept {
        Mode::Refuse => return reset(&client),
        Mode::BlackHole => {
            // Dead from the start: swallow what the client sends until it gives up.
            tokio::select! {
                _ = swallow(&mut client) => {}
                _ = resets.changed() => reset(&client),
            }
            return;
        }
        _ => {}
    }
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return reset(&client);
    };
    let _ = server.set_nodelay(true);
    let was_reset = {
        let (client_read, client_write) = client.split();
        let (server_read, server_write) = server.split();
        let up = pump(client_read, server_write, mode.clone());
        let down = pump(server_read, client_write, mode);
        tokio::pin!(up, down);
        let (mut up_done, mut down_done) = (false, false);
        loop {
            tokio::select! {
                r = &mut up, if !up_done => match r {
                    Ok(()) => up_done = true,
                    Err(_) => break true,
                },
                r = &mut down, if !down_done => match r {
                    Ok(()) => down_done = true,
                    Err(_) => break true,
                },
                _ = resets.changed() => break true,
            }
            if up_done && down_done {
                break false;
            }
        }
    };
    if was_reset {
        reset(&client);
        reset(&server);
    }
}

/// Reads and discards until the peer closes.
async fn swallow(socket: &mut TcpStream) {
    let mut buf = vec![0u8; 16 * 1024];
    while let Ok(n) = socket.read(&mut buf).await {
        if n == 0 {
            return;
        }
    }
}

/// One direction of a connection, under the current mode. `Ok` once `src` closed and the
/// close was passed on; `Err` when either side failed.
async fn pump<R, W>(mut src: R, mut dst: W, mut mode: watch::Receiver<Mode>) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = src.read(&mut buf).await?;
        if n == 0 {
            // A close during a black hole is lost with everything else, until the link heals.
            let _ = mode.wait_for(|m| *m != Mode::BlackHole).await;
            return dst.shutdown().await;
        }
        let current = *mode.borrow_and_update();
        match current {
            Mode::BlackHole => continue,
            Mode::PassThrough | Mode::Refuse => dst.write_all(&buf[..n]).await?,
            Mode::Latency(delay) => {
                tokio::time::sleep(delay).await;
                dst.write_all(&buf[..n]).await?;
            }
            Mode::Bandwidth(bytes_per_s) => {
                // Pieces of a tenth of a second each, so the rate is smooth at any size.
                let piece = usize::try_from(bytes_per_s / 10)
                    .unwrap_or(usize::MAX)
                    .max(1);
                for part in buf[..n].chunks(piece) {
                    let secs = part.len() as f64 / bytes_per_s.max(1) as f64;
                    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
                    dst.write_all(part).await?;
                }
            }
        }
        dst.flush().await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{ErrorKind, Read, Write};
    use std::net::TcpStream as StdStream;
    use std::time::Instant;

    /// An echo server on a free port, for as long as the test runs.
    fn echo_server() -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                thread::spawn(move || {
                    let mut buf = [0u8; 16 * 1024];
                    while let Ok(n) = conn.read(&mut buf) {
                        if n == 0 || conn.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        port
    }

    fn connect(proxy: &FaultProxy) -> StdStream {
        let s = StdStream::connect(("127.0.0.1", proxy.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s
    }

    /// Sends `data` and reads back as many bytes.
    fn round_trip(s: &mut StdStream, data: &[u8]) -> Vec<u8> {
        s.write_all(data).unwrap();
        let mut back = vec![0u8; data.len()];
        s.read_exact(&mut back).unwrap();
        back
    }

    /// Whether nothing arrives within `wait`, with the socket still open.
    fn silent_for(s: &mut StdStream, wait: Duration) -> bool {
        s.set_read_timeout(Some(wait)).unwrap();
        let mut byte = [0u8; 1];
        let silent = matches!(
            s.read(&mut byte),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
        );
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        silent
    }

    #[test]
    fn fault_proxy_passes_bytes_through() {
        let proxy = FaultProxy::start(echo_server());
        let mut s = connect(&proxy);
        assert_eq!(round_trip(&mut s, b"hello"), b"hello");
        assert_eq!(proxy.accepted(), 1);
        assert_eq!(proxy.mode(), Mode::PassThrough);
    }

    #[test]
    fn fault_proxy_black_hole_drops_bytes_keeps_sockets_and_heals() {
        let proxy = FaultProxy::start(echo_server());
        let mut s = connect(&proxy);
        assert_eq!(round_trip(&mut s, b"a"), b"a");
        proxy.set(Mode::BlackHole);
        s.write_all(b"lost").unwrap();
        assert!(silent_for(&mut s, Duration::from_millis(300)));
        // New connections are accepted, and dead too.
        let mut late = connect(&proxy);
        late.write_all(b"x").unwrap();
        assert!(silent_for(&mut late, Duration::from_millis(300)));
        assert_eq!(proxy.accepted(), 2);
        // The open connection works again afterwards, without what was dropped.
        proxy.set(Mode::PassThrough);
        assert_eq!(round_trip(&mut s, b"b"), b"b");
        assert!(silent_for(&mut s, Duration::from_millis(100)));
    }

    #[test]
    fn fault_proxy_reset_closes_open_connections_with_rst() {
        let proxy = FaultProxy::start(echo_server());
        let mut s = connect(&proxy);
        assert_eq!(round_trip(&mut s, b"a"), b"a");
        proxy.reset_all();
        let mut buf = [0u8; 1];
        let err = s.read(&mut buf).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ConnectionReset, "{err}");
        // The proxy itself keeps serving.
        let mut again = connect(&proxy);
        assert_eq!(round_trip(&mut again, b"c"), b"c");
    }

    #[test]
    fn fault_proxy_latency_delays_each_chunk() {
        let proxy = FaultProxy::start(echo_server());
        let mut s = connect(&proxy);
        proxy.set(Mode::Latency(Duration::from_millis(150)));
        let started = Instant::now();
        assert_eq!(round_trip(&mut s, b"slow"), b"slow");
        // Held back once on the way in and once on the way out.
        assert!(
            started.elapsed() >= Duration::from_millis(300),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn fault_proxy_bandwidth_limits_throughput() {
        let proxy = FaultProxy::start(echo_server());
        let mut s = connect(&proxy);
        proxy.set(Mode::Bandwidth(100_000));
        let data = vec![7u8; 50_000];
        let started = Instant::now();
        let writer = {
            let mut w = s.try_clone().unwrap();
            let data = data.clone();
            thread::spawn(move || w.write_all(&data).unwrap())
        };
        let mut back = vec![0u8; data.len()];
        s.read_exact(&mut back).unwrap();
        writer.join().unwrap();
        assert_eq!(back, data);
        // 50 kB at 100 kB/s: half a second at least (the two directions overlap).
        assert!(
            started.elapsed() >= Duration::from_millis(450),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn fault_proxy_refuse_resets_new_connections_only() {
        let proxy = FaultProxy::start(echo_server());
        let mut open = connect(&proxy);
        // Served (not only queued in the kernel) before the switch.
        assert_eq!(round_trip(&mut open, b"up"), b"up");
        proxy.set(Mode::Refuse);
        // The reset may hit any of connect's follow-ups; the connection must not work.
        let mut buf = [0u8; 1];
        let result = StdStream::connect(("127.0.0.1", proxy.port)).and_then(|mut refused| {
            refused.set_read_timeout(Some(Duration::from_secs(5)))?;
            refused.write_all(b"x")?;
            refused.read(&mut buf)
        });
        assert!(
            matches!(&result, Err(e) if e.kind() == ErrorKind::ConnectionReset)
                || matches!(result, Ok(0)),
            "{result:?}"
        );
        assert_eq!(round_trip(&mut open, b"still"), b"still");
        proxy.set(Mode::PassThrough);
        let mut fresh = connect(&proxy);
        assert_eq!(round_trip(&mut fresh, b"ok"), b"ok");
    }
}
