//! TLS for PostgreSQL connections, with libpq's `sslmode` semantics, and [`connect_sql`] for
//! ordinary SQL connections.
//!
//! `tokio-postgres` only decides *whether* TLS is negotiated; what gets verified is up to the
//! `rustls` configuration we hand it. This module builds that configuration once per mode, so the
//! SQL connections and our replication client enforce exactly the same rules:
//!
//! | `sslmode`     | encrypted          | chain checked against `sslrootcert` | host name checked |
//! |---------------|--------------------|-------------------------------------|-------------------|
//! | `disable`     | no                 | –                                   | –                 |
//! | `prefer`      | if the server can  | only if `sslrootcert` is given      | no                |
//! | `require`     | yes                | only if `sslrootcert` is given      | no                |
//! | `verify-ca`   | yes                | yes (default `~/.postgresql/root.crt`) | no             |
//! | `verify-full` | yes                | yes (default `~/.postgresql/root.crt`) | yes            |
//!
//! `require` without a root certificate encrypts but does not authenticate the server: that is
//! libpq's meaning, and the reason production setups should use `verify-full`. The handshake
//! signatures are still checked in every mode, and the `verify-*` modes never use the
//! unverifying verifier. Cryptography comes from the *ring* provider, passed explicitly so that
//! nothing depends on a process-wide default.

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::conninfo::{PgConnInfo, SslMode, TargetSessionAttrs, SESSION_SETTINGS};
use super::sqlstate;

/// Why no TLS configuration could be built for the requested mode.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A `verify-*` mode without a root certificate to verify against.
    #[error(
        "sslmode={mode} needs a root certificate to check the server against, but {} does not \
         exist; set sslrootcert=/path/to/ca.pem in DATABASE_URL", path.display()
    )]
    MissingRootCert {
        /// The mode that needs the certificate.
        mode: SslMode,
        /// The file that was looked for.
        path: PathBuf,
    },
    /// A `verify-*` mode, no `sslrootcert`, and no home directory to find the default in.
    #[error(
        "sslmode={0} needs a root certificate to check the server against; set \
         sslrootcert=/path/to/ca.pem in DATABASE_URL"
    )]
    NoRootCert(SslMode),
    /// The root certificate file could not be read.
    #[error("cannot read sslrootcert {}: {source}", path.display())]
    ReadRootCert {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// The root certificate file holds no usable certificate.
    #[error("sslrootcert {} holds no usable PEM certificate: {reason}", path.display())]
    BadRootCert {
        /// The file.
        path: PathBuf,
        /// What was wrong with it.
        reason: String,
    },
    /// The host cannot be used as a TLS server name.
    #[error("host {0:?} cannot be used as a TLS server name")]
    ServerName(String),
    /// rustls refused the configuration.
    #[error("TLS configuration error: {0}")]
    Config(#[from] rustls::Error),
}

/// How a connection negotiates TLS, derived from [`SslMode`] and `sslrootcert`.
#[derive(Clone)]
pub enum TlsPolicy {
    /// Never send SSLRequest.
    Disabled,
    /// Send SSLRequest; continue in plaintext if the server declines.
    Prefer(Arc<ClientConfig>),
    /// Send SSLRequest; fail if the server declines.
    Require(Arc<ClientConfig>),
}

impl fmt::Debug for TlsPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TlsPolicy::Disabled => "Disabled",
            TlsPolicy::Prefer(_) => "Prefer",
            TlsPolicy::Require(_) => "Require",
        })
    }
}

impl TlsPolicy {
    /// Builds the policy for a connection, reading the root certificate if the mode needs one.
    pub fn for_conninfo(info: &PgConnInfo) -> Result<TlsPolicy, TlsError> {
        let Some(config) = client_config(info.sslmode, info.sslrootcert.as_deref())? else {
            return Ok(TlsPolicy::Disabled);
        };
        let config = Arc::new(config);
        Ok(match info.sslmode {
            SslMode::Prefer => TlsPolicy::Prefer(config),
            _ => TlsPolicy::Require(config),
        })
    }
}

/// The `rustls` configuration for a mode, or `None` for `disable`.
///
/// `sslrootcert` is the explicit root certificate file; for `verify-ca` and `verify-full` libpq's
/// default `~/.postgresql/root.crt` is used when it is `None`, and a missing file is an error. For
/// `prefer` and `require` an explicit `sslrootcert` turns on chain verification (libpq does the
/// same), otherwise the server is not authenticated.
pub fn client_config(
    mode: SslMode,
    sslrootcert: Option<&Path>,
) -> Result<Option<ClientConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let mut config = match mode {
        SslMode::Disable => return Ok(None),
        SslMode::Prefer | SslMode::Require => match sslrootcert {
            None => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(EncryptOnly::new(&provider)))
                .with_no_client_auth(),
            Some(path) => {
                let roots = Arc::new(load_roots(path)?);
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(ChainOnly::new(roots, &provider)?))
                    .with_no_client_auth()
            }
        },
        SslMode::VerifyCa => {
            let roots = Arc::new(load_roots(&root_cert_path(mode, sslrootcert)?)?);
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(ChainOnly::new(roots, &provider)?))
                .with_no_client_auth()
        }
        SslMode::VerifyFull => {
            let roots = load_roots(&root_cert_path(mode, sslrootcert)?)?;
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    // What libpq 17 offers; servers before 17 ignore it.
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(Some(config))
}

/// The TLS server name for `host` (a DNS name or an IP address).
pub fn server_name(host: &str) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(host.to_owned()).map_err(|_| TlsError::ServerName(host.to_owned()))
}

/// The explicit `sslrootcert`, or libpq's default `~/.postgresql/root.crt` which must exist.
fn root_cert_path(mode: SslMode, sslrootcert: Option<&Path>) -> Result<PathBuf, TlsError> {
    if let Some(path) = sslrootcert {
        return Ok(path.to_owned());
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .ok_or(TlsError::NoRootCert(mode))?;
    let path = Path::new(&home).join(".postgresql").join("root.crt");
    if path.exists() {
        Ok(path)
    } else {
        Err(TlsError::MissingRootCert { mode, path })
    }
}

fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let pem = std::fs::read(path).map_err(|source| TlsError::ReadRootCert {
        path: path.to_owned(),
        source,
    })?;
    let bad = |reason: String| TlsError::BadRootCert {
        path: path.to_owned(),
        reason,
    };
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| bad(e.to_string()))?;
        roots.add(cert).map_err(|e| bad(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("no CERTIFICATE block found".to_owned()));
    }
    Ok(roots)
}

/// `prefer`/`require` without a root certificate: any server certificate is accepted, but the
/// handshake signatures must still be valid for the certificate presented.
#[derive(Debug)]
struct EncryptOnly {
    algorithms: WebPkiSupportedAlgorithms,
}

impl EncryptOnly {
    fn new(provider: &CryptoProvider) -> Self {
        EncryptOnly {
            algorithms: provider.signature_verification_algorithms,
        }
    }
}

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// `verify-ca`: webpki's full verification, except that a certificate which chains to the
/// trusted roots but does not name the host is accepted. Only the name-mismatch error is
/// forgiven, and only after the chain has been checked again on its own, so the outcome does not
/// depend on the order in which webpki performs its checks.
#[derive(Debug)]
struct ChainOnly {
    inner: Arc<WebPkiServerVerifier>,
    roots: Arc<RootCertStore>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ChainOnly {
    fn new(roots: Arc<RootCertStore>, provider: &Arc<CryptoProvider>) -> Result<Self, TlsError> {
        let inner = WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| TlsError::Config(rustls::Error::General(e.to_string())))?;
        Ok(ChainOnly {
            inner,
            roots,
            algorithms: provider.signature_verification_algorithms,
        })
    }
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => {
                let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
                rustls::client::verify_server_cert_signed_by_trust_anchor(
                    &cert,
                    &self.roots,
                    intermediates,
                    now,
                    self.algorithms.all,
                )?;
                Ok(ServerCertVerified::assertion())
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The `rustls` error inside an error chain, if the failure was a TLS one. tokio-rustls wraps
/// it in an `io::Error`, whose `source()` skips the wrapped error, hence the explicit look.
pub fn find_rustls_error<'a>(err: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(tls) = e
            .downcast_ref::<io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(tls);
        }
        current = e.source();
    }
    None
}

/// What to do about a failed TLS handshake, in words for the operator.
pub fn handshake_advice(err: &rustls::Error, info: &PgConnInfo) -> String {
    let root = info
        .sslrootcert
        .as_deref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "~/.postgresql/root.crt".to_owned());
    match err {
        rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => format!(
            "the server certificate does not name host {:?}; sslmode=verify-full checks the \
             name, so connect using a name the certificate lists, or use sslmode=verify-ca",
            info.host
        ),
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => format!(
            "the server certificate is not signed by the root certificate in {root}; check \
             sslrootcert"
        ),
        rustls::Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        ) => "the server certificate has expired; renew it on the server".to_owned(),
        rustls::Error::InvalidCertificate(_) => format!(
            "the server certificate was rejected; check it and the root certificate in {root}"
        ),
        _ => "check that the server's TLS setup is compatible (TLS 1.2 or 1.3) and sslmode \
              matches it"
            .to_owned(),
    }
}

/// Opening an ordinary SQL connection failed. The message names `host:port`, says what to do,
/// and never contains the password.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// No TLS configuration could be built (root certificate missing or unreadable).
    #[error("cannot connect to PostgreSQL at {peer}: {source}")]
    Tls {
        /// `host:port`.
        peer: String,
        /// What was wrong.
        source: TlsError,
    },
    /// Connecting, the TLS handshake, authentication and session start together took longer
    /// than `connect_timeout` (a server that accepts the connection and then says nothing, or a
    /// link that swallows the handshake).
    #[error(
        "connecting to PostgreSQL at {peer} timed out after {}s; check that the host is \
         reachable and answers, or raise connect_timeout in DATABASE_URL", timeout.as_secs()
    )]
    Timeout {
        /// `host:port`.
        peer: String,
        /// The limit that was exceeded.
        timeout: std::time::Duration,
    },
    /// `target_session_attrs=read-write` and the host is read-only (a standby, or a former
    /// primary that came back as one): the next host of the list is tried, and the whole list
    /// again later, since a failover may be under way.
    #[error(
        "PostgreSQL at {peer} is read-only and target_session_attrs=read-write asks for the \
         primary; after a failover, the primary should be another host of DATABASE_URL"
    )]
    ReadOnly {
        /// `host:port`.
        peer: String,
    },
    /// Connecting, the TLS handshake, authentication or session start failed.
    #[error(
        "cannot connect to PostgreSQL at {peer}: {detail}{}{advice}",
        if advice.is_empty() { "" } else { "; " }
    )]
    Connect {
        /// `host:port`.
        peer: String,
        /// The error chain, flattened to one line.
        detail: String,
        /// What to check, possibly empty.
        advice: String,
        /// The SQLSTATE when the server reported the error.
        code: Option<String>,
        /// Whether retrying later may succeed.
        transient: bool,
        /// The original error.
        #[source]
        source: tokio_postgres::Error,
    },
}

impl ConnectError {
    /// Whether retrying later may succeed (network trouble, server starting or overloaded), as
    /// opposed to a configuration problem that needs a human.
    pub fn is_transient(&self) -> bool {
        match self {
            ConnectError::Tls { .. } => false,
            ConnectError::Timeout { .. } | ConnectError::ReadOnly { .. } => true,
            ConnectError::Connect { transient, .. } => *transient,
        }
    }

    /// The SQLSTATE when the server reported the error.
    pub fn code(&self) -> Option<&str> {
        match self {
            ConnectError::Tls { .. }
            | ConnectError::Timeout { .. }
            | ConnectError::ReadOnly { .. } => None,
            ConnectError::Connect { code, .. } => code.as_deref(),
        }
    }

    fn from_postgres(err: tokio_postgres::Error, info: &PgConnInfo) -> ConnectError {
        let detail = flatten_chain(&err);
        let db = err.as_db_error();
        let code = db.map(|db| db.code().code().to_owned());
        let tls = find_rustls_error(&err);
        let io_kind = io_error_kind(&err);
        let transient = match (&code, tls, io_kind) {
            (Some(code), _, _) => sqlstate::is_transient(code),
            (None, Some(_), _) => false,
            (None, None, Some(_)) => true,
            (None, None, None) => err.is_closed(),
        };
        let advice = match (code.as_deref(), tls, io_kind) {
            (Some("28P01"), _, _) => "check the user and password in DATABASE_URL".to_owned(),
            (Some("28000"), _, _) => {
                "check that pg_hba.conf lets this user reach this database from this host"
                    .to_owned()
            }
            (Some("3D000"), _, _) => "check the database name in DATABASE_URL".to_owned(),
            (Some(_), _, _) => String::new(),
            (None, Some(tls), _) => handshake_advice(tls, info),
            (None, None, Some(io::ErrorKind::ConnectionRefused)) => {
                "check the host and port, and that PostgreSQL is running and accepts TCP \
                 connections"
                    .to_owned()
            }
            (None, None, Some(io::ErrorKind::TimedOut)) => {
                "check that the host is reachable (firewall, routing) or raise connect_timeout"
                    .to_owned()
            }
            _ if detail.contains("server does not support TLS") => {
                "enable ssl on the server or use sslmode=prefer or disable".to_owned()
            }
            _ if detail.contains("password missing") => {
                "the server asks for a password: add it to DATABASE_URL".to_owned()
            }
            _ => String::new(),
        };
        ConnectError::Connect {
            peer: info.host_port(),
            detail,
            advice,
            code,
            transient,
            source: err,
        }
    }
}

/// The first `io::Error` kind in an error chain.
fn io_error_kind(err: &(dyn StdError + 'static)) -> Option<io::ErrorKind> {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            return Some(io.kind());
        }
        current = e.source();
    }
    None
}

/// `outer: inner: innermost` on one line (server DETAIL/HINT lines included).
pub(crate) fn flatten_chain(err: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current = Some(err);
    while let Some(e) = current {
        let text = e.to_string().replace('\n', "; ");
        if !parts.last().is_some_and(|last| last.ends_with(&text)) {
            parts.push(text);
        }
        current = e.source();
    }
    parts.join(": ")
}

/// Opens an ordinary SQL connection with the TLS semantics of `info.sslmode`, the session
/// settings dbmazz relies on ([`SESSION_SETTINGS`]), `application_name`, the TCP keepalives of
/// `info.keepalives` and `info.tcp_user_timeout`. TCP connect, TLS, authentication and session
/// start together are bounded by `connect_timeout`. The connection future runs on a spawned
/// tokio task; it ends when the returned client is dropped.
pub async fn connect_sql(info: &PgConnInfo) -> Result<tokio_postgres::Client, ConnectError> {
    connect_sql_with(info, None).await
}

/// [`connect_sql`] for dbmazz's own bookkeeping sessions (setup, checkpoints): each statement
/// is bounded by `statement_timeout` on the server (`None`: no bound), so a statement stuck
/// behind a lock ends with SQLSTATE 57014, which is transient, instead of holding the job.
/// Never for the snapshot's COPY, `verify` or provisioning, whose statements may run long.
pub async fn connect_sql_bounded(
    info: &PgConnInfo,
    statement_timeout: Option<std::time::Duration>,
) -> Result<tokio_postgres::Client, ConnectError> {
    connect_sql_with(info, statement_timeout).await
}

/// Tries each host of `info` in turn (libpq's rule for a host list); returns the first
/// connection that suits `target_session_attrs`, else the last host's error.
async fn connect_sql_with(
    info: &PgConnInfo,
    statement_timeout: Option<std::time::Duration>,
) -> Result<tokio_postgres::Client, ConnectError> {
    let mut last = None;
    for candidate in info.candidates() {
        match connect_sql_one(&candidate, statement_timeout).await {
            Ok(client) if candidate.target_session_attrs == TargetSessionAttrs::Any => {
                return Ok(client)
            }
            Ok(client) => match client.query_one("SHOW transaction_read_only", &[]).await {
                Ok(row) if row.get::<_, String>(0) == "off" => return Ok(client),
                Ok(_) => {
                    last = Some(ConnectError::ReadOnly {
                        peer: candidate.host_port(),
                    })
                }
                Err(err) => last = Some(ConnectError::from_postgres(err, &candidate)),
            },
            Err(err) => last = Some(err),
        }
        if let Some(err) = &last {
            tracing::debug!(peer = %candidate.host_port(), error = %err, "host skipped");
        }
    }
    Err(last.expect("a connection URL names at least one host"))
}

async fn connect_sql_one(
    info: &PgConnInfo,
    statement_timeout: Option<std::time::Duration>,
) -> Result<tokio_postgres::Client, ConnectError> {
    // tokio-postgres bounds only the TCP connect by connect_timeout; the handshake after it
    // could wait forever on a link that swallows it. The replication client bounds the whole.
    tokio::time::timeout(
        info.connect_timeout,
        connect_sql_inner(info, statement_timeout),
    )
    .await
    .unwrap_or_else(|_| {
        Err(ConnectError::Timeout {
            peer: info.host_port(),
            timeout: info.connect_timeout,
        })
    })
}

async fn connect_sql_inner(
    info: &PgConnInfo,
    statement_timeout: Option<std::time::Duration>,
) -> Result<tokio_postgres::Client, ConnectError> {
    let peer = info.host_port();
    let policy = TlsPolicy::for_conninfo(info).map_err(|source| ConnectError::Tls {
        peer: peer.clone(),
        source,
    })?;

    let mut config = tokio_postgres::Config::new();
    config
        .host(&info.host)
        .port(info.port)
        .user(&info.user)
        .dbname(&info.dbname)
        .application_name(&info.application_name)
        .connect_timeout(info.connect_timeout)
        .keepalives(info.keepalives.enabled)
        .keepalives_idle(info.keepalives.idle)
        .keepalives_interval(info.keepalives.interval)
        .keepalives_retries(info.keepalives.count)
        .options(session_options(statement_timeout));
    if let Some(timeout) = info.tcp_user_timeout {
        config.tcp_user_timeout(timeout);
    }
    if let Some(password) = &info.password {
        config.password(password.expose());
    }

    let client = match policy {
        TlsPolicy::Disabled => {
            config.ssl_mode(tokio_postgres::config::SslMode::Disable);
            let (client, connection) = config
                .connect(tokio_postgres::NoTls)
                .await
                .map_err(|e| ConnectError::from_postgres(e, info))?;
            spawn_connection(connection, peer);
            client
        }
        TlsPolicy::Prefer(tls) | TlsPolicy::Require(tls) => {
            config.ssl_mode(if info.sslmode == SslMode::Prefer {
                tokio_postgres::config::SslMode::Prefer
            } else {
                tokio_postgres::config::SslMode::Require
            });
            let connector = MakeRustlsConnect::new(ClientConfig::clone(&tls));
            let (client, connection) = config
                .connect(connector)
                .await
                .map_err(|e| ConnectError::from_postgres(e, info))?;
            spawn_connection(connection, peer);
            client
        }
    };
    Ok(client)
}

/// The `options` startup parameter carrying [`SESSION_SETTINGS`] (and `statement_timeout`,
/// in milliseconds, when given) as `-c name=value` switches.
fn session_options(statement_timeout: Option<std::time::Duration>) -> String {
    let mut options = SESSION_SETTINGS
        .iter()
        .map(|(name, value)| format!("-c {name}={value}"))
        .collect::<Vec<_>>()
        .join(" ");
    if let Some(t) = statement_timeout {
        options.push_str(&format!(" -c statement_timeout={}", t.as_millis()));
    }
    options
}

fn spawn_connection<F>(connection: F, peer: String)
where
    F: std::future::Future<Output = Result<(), tokio_postgres::Error>> + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            let error = flatten_chain(&err);
            tracing::warn!(peer = %peer, error = %error, "sql connection ended with an error");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disable_builds_no_config() {
        assert!(client_config(SslMode::Disable, None).unwrap().is_none());
    }

    #[test]
    fn require_and_prefer_work_without_a_root_certificate() {
        for mode in [SslMode::Prefer, SslMode::Require] {
            let config = client_config(mode, None).unwrap().unwrap();
            assert_eq!(config.alpn_protocols, vec![b"postgresql".to_vec()]);
        }
    }

    #[test]
    fn verify_modes_name_the_missing_root_certificate() {
        let missing = Path::new("/nonexistent/dbmazz/ca.pem");
        for mode in [SslMode::VerifyCa, SslMode::VerifyFull] {
            let err = client_config(mode, Some(missing)).unwrap_err();
            let text = err.to_string();
            assert!(text.contains("sslrootcert"), "{text}");
            assert!(text.contains("/nonexistent/dbmazz/ca.pem"), "{text}");
        }
    }

    #[test]
    fn default_root_certificate_is_looked_up_in_home() {
        let path = root_cert_path(SslMode::VerifyFull, Some(Path::new("/x.pem"))).unwrap();
        assert_eq!(path, Path::new("/x.pem"));
        if let Err(err) = root_cert_path(SslMode::VerifyCa, None) {
            let text = err.to_string();
            assert!(text.contains("sslrootcert"), "{text}");
        }
    }

    #[test]
    fn a_file_without_certificates_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.pem");
        std::fs::write(&path, "not a certificate\n").unwrap();
        let err = client_config(SslMode::VerifyFull, Some(&path)).unwrap_err();
        assert!(matches!(err, TlsError::BadRootCert { .. }), "{err}");
        assert!(err.to_string().contains("empty.pem"));
    }

    #[test]
    fn server_names_accept_dns_names_and_addresses() {
        assert!(server_name("localhost").is_ok());
        assert!(server_name("127.0.0.1").is_ok());
        assert!(server_name("::1").is_ok());
        assert!(server_name("bad name").is_err());
    }

    #[test]
    fn session_options_are_c_switches() {
        let options = session_options(None);
        assert!(options.contains("-c TimeZone=UTC"), "{options}");
        assert!(options.contains("-c DateStyle=ISO"), "{options}");
    }
}
