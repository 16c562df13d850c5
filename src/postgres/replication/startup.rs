//! Opening a replication connection: TCP, TLS, the StartupMessage and authentication.
//!
//! Everything before the first ReadyForQuery happens here, under one `connect_timeout`, on a
//! socket with the URL's (or dbmazz's default) TCP keepalives and `tcp_user_timeout`. The
//! StartupMessage asks for `replication=database` and carries the session settings every
//! dbmazz connection uses, so the walsender formats values the way the rest of the pipeline
//! expects. Authentication speaks trust, cleartext password, md5 and SCRAM-SHA-256 (without
//! channel binding); anything else is refused with advice rather than attempted.

use std::collections::HashMap;
use std::io;
use std::sync::Arc;

use bytes::BytesMut;
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256, SCRAM_SHA_256};
use postgres_protocol::message::backend::{
    AUTHENTICATION_TAG, BACKEND_KEY_DATA_TAG, ERROR_RESPONSE_TAG, READY_FOR_QUERY_TAG,
};
use postgres_protocol::message::frontend;
use tokio::net::TcpStream;

use super::client::ReplicationClient;
use super::error::{io_error, protocol, startup_error, ReplicationError};
use super::framing::{ChunkPool, Cursor, FrameReader, Gulp};
use super::tls::negotiate_tls;
use crate::postgres::conninfo::{Keepalives, PgConnInfo, TargetSessionAttrs, SESSION_SETTINGS};
use crate::postgres::tls::TlsPolicy;

impl ReplicationClient {
    /// Opens a `replication=database` connection: TLS per `sslmode`, authentication (trust,
    /// password, md5, SCRAM-SHA-256), and the session settings of
    /// [`SESSION_SETTINGS`] as startup parameters.
    /// The whole attempt is bounded by `connect_timeout`.
    ///
    /// With several hosts, each is tried in turn, and with `target_session_attrs=read-write`
    /// one whose `transaction_read_only` is on is skipped; the last host's error is returned.
    pub async fn connect(info: &PgConnInfo) -> Result<ReplicationClient, ReplicationError> {
        let mut last = None;
        for candidate in info.candidates() {
            let err = match Self::connect_one(&candidate).await {
                Ok(client) if candidate.target_session_attrs == TargetSessionAttrs::Any => {
                    return Ok(client)
                }
                Ok(mut client) => match client.simple_query("SHOW transaction_read_only").await {
                    Ok(rows)
                        if rows.first().and_then(|r| r.first()).cloned().flatten()
                            == Some("off".to_owned()) =>
                    {
                        return Ok(client)
                    }
                    Ok(_) => ReplicationError::ReadOnly {
                        peer: candidate.host_port(),
                    },
                    Err(err) => err,
                },
                Err(err) => err,
            };
            tracing::debug!(peer = %candidate.host_port(), error = %err, "host skipped");
            last = Some(err);
        }
        Err(last.expect("a connection URL names at least one host"))
    }

    /// [`ReplicationClient::connect`] to `info.host` only.
    async fn connect_one(info: &PgConnInfo) -> Result<ReplicationClient, ReplicationError> {
        let peer: Arc<str> = info.host_port().into();
        let policy = TlsPolicy::for_conninfo(info).map_err(|e| ReplicationError::Tls {
            peer: peer.to_string(),
            message: e.to_string(),
        })?;
        match tokio::time::timeout(info.connect_timeout, connect_inner(info, policy, &peer)).await {
            Ok(result) => result,
            Err(_) => Err(ReplicationError::Timeout {
                peer: peer.to_string(),
                timeout: info.connect_timeout,
            }),
        }
    }
}

/// TCP, TLS, the StartupMessage, authentication and the wait for ReadyForQuery; the caller
/// bounds the whole with `connect_timeout`.
async fn connect_inner(
    info: &PgConnInfo,
    policy: TlsPolicy,
    peer: &Arc<str>,
) -> Result<ReplicationClient, ReplicationError> {
    let tcp = TcpStream::connect((info.host.as_str(), info.port))
        .await
        .map_err(|e| io_error(peer, e))?;
    // Status updates are small and must not wait for Nagle.
    tcp.set_nodelay(true).map_err(|e| io_error(peer, e))?;
    set_keepalives(&tcp, &info.keepalives).map_err(|e| io_error(peer, e))?;
    if let Some(timeout) = info.tcp_user_timeout {
        socket2::SockRef::from(&tcp)
            .set_tcp_user_timeout(Some(timeout))
            .map_err(|e| io_error(peer, e))?;
    }

    let (stream, tls) = negotiate_tls(tcp, info, policy, peer).await?;
    let mut client = ReplicationClient {
        reader: FrameReader {
            io: stream,
            buf: BytesMut::with_capacity(16 * 1024),
            peer: peer.clone(),
            gulp: Gulp::Off,
            probe: None,
            chunks: ChunkPool::default(),
        },
        wbuf: BytesMut::with_capacity(1024),
        params: HashMap::new(),
        backend_pid: None,
        tls,
    };

    let mut startup: Vec<(&str, &str)> = vec![
        ("user", info.user.as_str()),
        ("database", info.dbname.as_str()),
        ("replication", "database"),
        ("application_name", info.application_name.as_str()),
    ];
    startup.extend_from_slice(SESSION_SETTINGS);
    frontend::startup_message(startup, &mut client.wbuf).map_err(|_| {
        protocol(
            peer,
            "user, database or application_name contains a NUL byte",
        )
    })?;
    client.send().await?;

    authenticate(&mut client, info).await?;
    wait_until_ready(&mut client).await?;
    tracing::debug!(
        peer = %peer,
        tls,
        backend_pid = client.backend_pid,
        "replication connection established"
    );
    Ok(client)
}

/// TCP keepalives as `tokio-postgres` sets them on the SQL connections, so that the kernel
/// drops an idle replication connection whose peer vanished.
fn set_keepalives(tcp: &TcpStream, keepalives: &Keepalives) -> io::Result<()> {
    let socket = socket2::SockRef::from(tcp);
    if !keepalives.enabled {
        return socket.set_keepalive(false);
    }
    socket.set_tcp_keepalive(
        &socket2::TcpKeepalive::new()
            .with_time(keepalives.idle)
            .with_interval(keepalives.interval)
            .with_retries(keepalives.count),
    )
}

/// Answers the server's authentication requests until AuthenticationOk.
async fn authenticate(
    client: &mut ReplicationClient,
    info: &PgConnInfo,
) -> Result<(), ReplicationError> {
    let peer = client.reader.peer.clone();
    let password = || {
        info.password
            .as_ref()
            .map(|p| p.expose().as_bytes())
            .ok_or_else(|| ReplicationError::PasswordMissing {
                peer: peer.to_string(),
                user: info.user.clone(),
            })
    };
    let mut scram: Option<ScramSha256> = None;
    // Once SCRAM started, only a server that proved it knows the password may let us in.
    let mut scram_verified = false;
    loop {
        let frame = client.reader.next_frame().await?;
        match frame.tag {
            AUTHENTICATION_TAG => {}
            ERROR_RESPONSE_TAG => return Err(startup_error(&peer, &frame.body)),
            tag => {
                client.handle_async(tag, &frame.body, "authentication")?;
                continue;
            }
        }
        let mut body = Cursor::new(&frame.body);
        let kind = body
            .i32()
            .ok_or_else(|| protocol(&peer, "truncated authentication request"))?;
        client.wbuf.clear();
        match kind {
            AUTH_OK if scram.is_some() && !scram_verified => {
                return Err(scram_failure(
                    &peer,
                    io::Error::other("the server ended SCRAM before proving its identity"),
                ))
            }
            AUTH_OK => return Ok(()),
            AUTH_CLEARTEXT => frontend::password_message(password()?, &mut client.wbuf)
                .map_err(|_| protocol(&peer, "the password contains a NUL byte"))?,
            AUTH_MD5 => {
                let salt: [u8; 4] = body
                    .take(4)
                    .and_then(|s| s.try_into().ok())
                    .ok_or_else(|| protocol(&peer, "truncated md5 salt"))?;
                let hash = md5_hash(info.user.as_bytes(), password()?, salt);
                frontend::password_message(hash.as_bytes(), &mut client.wbuf)
                    .map_err(|_| protocol(&peer, "md5 hash contains a NUL byte"))?;
            }
            AUTH_SASL => {
                require_scram(&peer, &mut body)?;
                scram = Some(scram_start(&peer, password()?, &mut client.wbuf)?);
            }
            AUTH_SASL_CONTINUE => {
                let exchange = scram
                    .as_mut()
                    .ok_or_else(|| protocol(&peer, "SASL continue without SASL start"))?;
                exchange
                    .update(body.rest())
                    .map_err(|e| scram_failure(&peer, e))?;
                frontend::sasl_response(exchange.message(), &mut client.wbuf)
                    .map_err(|e| protocol(&peer, format!("cannot encode SCRAM message: {e}")))?;
            }
            AUTH_SASL_FINAL => {
                let exchange = scram
                    .as_mut()
                    .ok_or_else(|| protocol(&peer, "SASL final without SASL start"))?;
                exchange
                    .finish(body.rest())
                    .map_err(|e| scram_failure(&peer, e))?;
                scram_verified = true;
                continue;
            }
            other => {
                return Err(ReplicationError::UnsupportedAuth {
                    peer: peer.to_string(),
                    method: unsupported_method(other),
                });
            }
        }
        client.send().await?;
    }
}

/// Checks that the SASL mechanisms the server offers include SCRAM-SHA-256.
fn require_scram(peer: &str, body: &mut Cursor<'_>) -> Result<(), ReplicationError> {
    let mut offered = Vec::new();
    while let Some(mechanism) = body.cstr() {
        if mechanism.is_empty() {
            break;
        }
        offered.push(String::from_utf8_lossy(mechanism).into_owned());
    }
    if offered.iter().any(|m| m == SCRAM_SHA_256) {
        return Ok(());
    }
    Err(ReplicationError::UnsupportedAuth {
        peer: peer.to_owned(),
        method: format!("SASL ({})", offered.join(", ")),
    })
}

/// Starts a SCRAM-SHA-256 exchange and writes its first message into `wbuf`.
fn scram_start(
    peer: &str,
    password: &[u8],
    wbuf: &mut BytesMut,
) -> Result<ScramSha256, ReplicationError> {
    // "n": this client does not do channel binding. ("y" would make a server that offers
    // SCRAM-SHA-256-PLUS over TLS suspect a downgrade and refuse.)
    let exchange = ScramSha256::new(password, ChannelBinding::unsupported());
    frontend::sasl_initial_response(SCRAM_SHA_256, exchange.message(), wbuf)
        .map_err(|e| protocol(peer, format!("cannot encode SCRAM message: {e}")))?;
    Ok(exchange)
}

/// The name of an authentication method dbmazz does not implement, by its request code.
fn unsupported_method(code: i32) -> String {
    match code {
        2 => "Kerberos V5".to_owned(),
        6 => "SCM credential".to_owned(),
        7 | 8 => "GSSAPI".to_owned(),
        9 => "SSPI".to_owned(),
        n => format!("unknown method {n}"),
    }
}

/// AuthenticationRequest codes: the Int32 after the 'R' tag.
const AUTH_OK: i32 = 0;
const AUTH_CLEARTEXT: i32 = 3;
const AUTH_MD5: i32 = 5;
const AUTH_SASL: i32 = 10;
const AUTH_SASL_CONTINUE: i32 = 11;
const AUTH_SASL_FINAL: i32 = 12;

/// A SCRAM exchange the server could not complete, or did not prove it knows the password in.
fn scram_failure(peer: &str, err: io::Error) -> ReplicationError {
    ReplicationError::Auth {
        peer: peer.to_owned(),
        code: None,
        message: format!("SCRAM exchange failed: {err}"),
        hint: "the server could not prove it knows the password; check DATABASE_URL points at \
               the intended server",
    }
}

/// After AuthenticationOk: parameters, backend key, then ReadyForQuery.
async fn wait_until_ready(client: &mut ReplicationClient) -> Result<(), ReplicationError> {
    let peer = client.reader.peer.clone();
    loop {
        let frame = client.reader.next_frame().await?;
        match frame.tag {
            READY_FOR_QUERY_TAG => return Ok(()),
            BACKEND_KEY_DATA_TAG => client.backend_pid = Cursor::new(&frame.body).i32(),
            ERROR_RESPONSE_TAG => return Err(startup_error(&peer, &frame.body)),
            tag => client.handle_async(tag, &frame.body, "session start")?,
        }
    }
}
