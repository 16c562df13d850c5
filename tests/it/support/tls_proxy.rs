//! A TLS-terminating TCP proxy, so `https://` StarRocks addresses can be tested against the
//! double, which speaks plain HTTP. It serves a certificate for `localhost` signed by a
//! throwaway CA and forwards the decrypted bytes to a local port.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};

/// A running proxy; it stops when dropped.
pub struct TlsProxy {
    /// The port it accepts TLS on (127.0.0.1).
    pub port: u16,
    dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl TlsProxy {
    /// Accepts TLS on a free port and forwards each connection to `127.0.0.1:target`.
    pub fn start(target: u16) -> TlsProxy {
        let dir = tempfile::Builder::new()
            .prefix("tls-proxy")
            .tempdir()
            .unwrap();
        crate::support::pg::make_test_certificates(dir.path());
        let certs = CertificateDer::pem_file_iter(dir.path().join("server.crt"))
            .expect("read server.crt")
            .collect::<Result<Vec<_>, _>>()
            .expect("parse server.crt");
        let key = PrivateKeyDer::from_pem_file(dir.path().join("server.key")).expect("server.key");
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server certificate");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));

        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
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
                    let acceptor = acceptor.clone();
                    tokio::spawn(async move {
                        // A client that rejects the certificate aborts the handshake: fine.
                        let Ok(mut tls) = acceptor.accept(socket).await else {
                            return;
                        };
                        let Ok(mut plain) = TcpStream::connect(("127.0.0.1", target)).await else {
                            return;
                        };
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                    });
                }
            });
        });
        TlsProxy {
            port,
            dir,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// The CA that signed the proxy's certificate.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// A CA that did not sign it.
    pub fn other_ca_cert(&self) -> PathBuf {
        self.dir.path().join("other-ca.crt")
    }

    /// Where the certificates live.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
