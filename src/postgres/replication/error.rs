//! What can go wrong on a replication connection, and which of it is worth a retry.
//!
//! The client reports one error type, [`ReplicationError`], so that the daemon can make one
//! decision: [`ReplicationError::is_transient`] means reconnect and retry, anything else means
//! stop and tell the operator. This file holds that classification, the ErrorResponse decoding it
//! rests on, and the hints we add for well-known SQLSTATEs; the SQLSTATE retry rule itself is
//! shared with the SQL connections in [`crate::postgres::sqlstate`]. Every error names
//! `host:port`, and none contains the password.

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
use std::time::Duration;

use super::framing::{Cursor, ReadError};
use crate::postgres::sqlstate;

/// What to check when the server rejects the password (SQLSTATE 28P01).
pub(super) const AUTH_PASSWORD_HINT: &str = "check the user and password in DATABASE_URL";
/// What to check for the rest of SQLSTATE class 28 (invalid authorization).
pub(super) const AUTH_HBA_HINT: &str =
    "check that pg_hba.conf lets this user reach this database from this address, and that the \
     role has LOGIN";

/// What went wrong talking to PostgreSQL over a replication connection.
///
/// [`ReplicationError::is_transient`] tells the caller whether to reconnect and retry or to stop
/// and tell the operator.
#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    /// The network failed or the server closed the connection.
    #[error("connection to PostgreSQL at {peer} failed: {source}")]
    Io {
        /// `host:port`.
        peer: String,
        /// The OS error; `UnexpectedEof` when the server closed the connection.
        #[source]
        source: io::Error,
    },
    /// `target_session_attrs=read-write` and the host is read-only (a standby, or a former
    /// primary that came back as one); transient, since a failover may be under way.
    #[error(
        "PostgreSQL at {peer} is read-only and target_session_attrs=read-write asks for the \
         primary; after a failover, the primary should be another host of DATABASE_URL"
    )]
    ReadOnly {
        /// `host:port`.
        peer: String,
    },
    /// Connecting (TCP, TLS and authentication) took longer than `connect_timeout`.
    #[error(
        "connecting to PostgreSQL at {peer} timed out after {}s; check that the host is \
         reachable or raise connect_timeout in DATABASE_URL", timeout.as_secs()
    )]
    Timeout {
        /// `host:port`.
        peer: String,
        /// The limit that was exceeded.
        timeout: Duration,
    },
    /// Streaming, the server sent nothing at all (no data, no keepalive, no answer to our
    /// request for one) for `timeout`: the link is dead or black-holed. Transient: reconnecting
    /// once the network is back resumes from the checkpoint.
    #[error(
        "nothing received from PostgreSQL at {peer} for {} ms, not even a keepalive it was asked \
         for (WAL_RECEIVER_TIMEOUT_MS): the connection is considered dead; check the network \
         path to the server, or raise WAL_RECEIVER_TIMEOUT_MS (0 disables) if the link is only \
         slow", timeout.as_millis()
    )]
    ReceiveTimeout {
        /// `host:port`.
        peer: String,
        /// The limit that was exceeded.
        timeout: Duration,
    },
    /// TLS could not be set up: no root certificate, certificate rejected, server without TLS.
    #[error("TLS with PostgreSQL at {peer} failed: {message}")]
    Tls {
        /// `host:port`.
        peer: String,
        /// What failed and what to do.
        message: String,
    },
    /// The server refused the credentials (or pg_hba.conf refused the connection).
    #[error(
        "authentication failed at PostgreSQL {peer}: {message}{}; {hint}",
        code.as_deref().map(|c| format!(" (SQLSTATE {c})")).unwrap_or_default()
    )]
    Auth {
        /// `host:port`.
        peer: String,
        /// SQLSTATE when the server reported the failure.
        code: Option<String>,
        /// The server's message, e.g. `password authentication failed for user "x"`.
        message: String,
        /// What to check.
        hint: &'static str,
    },
    /// The server asks for a password and the URL has none.
    #[error(
        "PostgreSQL at {peer} asks for a password for user {user:?} but DATABASE_URL has none; \
         write it as postgres://USER:PASSWORD@HOST/DB"
    )]
    PasswordMissing {
        /// `host:port`.
        peer: String,
        /// The role we tried to log in as.
        user: String,
    },
    /// The server asks for an authentication method this client does not implement.
    #[error(
        "PostgreSQL at {peer} asks for {method} authentication, which dbmazz does not support; \
         use scram-sha-256, md5 or password for this user in pg_hba.conf"
    )]
    UnsupportedAuth {
        /// `host:port`.
        peer: String,
        /// The method's name.
        method: String,
    },
    /// The server reported an error (ErrorResponse). Boxed to keep `Result`s small.
    #[error("{0}")]
    Server(Box<ServerError>),
    /// The server sent something this client cannot make sense of, or the caller misused the
    /// protocol. The message names `host:port`.
    #[error("{0}")]
    Protocol(String),
}

impl From<ReadError> for ReplicationError {
    fn from(err: ReadError) -> Self {
        match err {
            ReadError::Io { peer, source } => io_error(&peer, source),
            ReadError::Malformed { peer, source } => protocol(&peer, source),
        }
    }
}

impl ReplicationError {
    /// Whether reconnecting later may succeed: connection loss, timeouts (connecting, or a
    /// silent stream), a server shutting down or starting up, too many connections, a slot still
    /// held by a previous connection (55006).
    /// Authentication, TLS, missing objects (42704), wrong server setup (55000) and protocol
    /// errors are definite: retrying cannot fix them.
    pub fn is_transient(&self) -> bool {
        match self {
            ReplicationError::Io { .. }
            | ReplicationError::ReadOnly { .. }
            | ReplicationError::Timeout { .. }
            | ReplicationError::ReceiveTimeout { .. } => true,
            ReplicationError::Server(err) => sqlstate::is_transient(&err.code),
            ReplicationError::Tls { .. }
            | ReplicationError::Auth { .. }
            | ReplicationError::PasswordMissing { .. }
            | ReplicationError::UnsupportedAuth { .. }
            | ReplicationError::Protocol(_) => false,
        }
    }

    /// The SQLSTATE, when the server reported the error.
    pub fn code(&self) -> Option<&str> {
        match self {
            ReplicationError::Server(err) => Some(&err.code),
            ReplicationError::Auth { code, .. } => code.as_deref(),
            _ => None,
        }
    }
}

/// An ErrorResponse from the server, with the `host:port` it came from.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "PostgreSQL at {peer} reported {severity} {code}: {message}{}{}",
    detail.as_deref().map(|d| format!(" (detail: {d})")).unwrap_or_default(),
    hint.as_deref().map(|h| format!("; hint: {h}")).unwrap_or_default()
)]
pub struct ServerError {
    /// `host:port`.
    pub peer: String,
    /// `ERROR`, `FATAL` or `PANIC`.
    pub severity: String,
    /// SQLSTATE, e.g. `42704`.
    pub code: String,
    /// Primary message.
    pub message: String,
    /// Optional detail.
    pub detail: Option<String>,
    /// Optional hint (the server's, or ours for well-known situations).
    pub hint: Option<String>,
}

/// The fields of an ErrorResponse or NoticeResponse that we use.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct ErrorFields {
    pub(super) severity: String,
    pub(super) code: String,
    pub(super) message: String,
    pub(super) detail: Option<String>,
    pub(super) hint: Option<String>,
}

impl ErrorFields {
    /// Lenient: a truncated message yields the fields seen so far.
    pub(super) fn parse(body: &[u8]) -> ErrorFields {
        let mut fields = ErrorFields::default();
        let mut localized_severity = None;
        let mut cursor = Cursor::new(body);
        while let Some(kind) = cursor.u8() {
            if kind == 0 {
                break;
            }
            let Some(value) = cursor.cstr() else { break };
            let value = String::from_utf8_lossy(value).into_owned();
            match kind {
                b'V' => fields.severity = value,
                b'S' => localized_severity = Some(value),
                b'C' => fields.code = value,
                b'M' => fields.message = value,
                b'D' => fields.detail = Some(value),
                b'H' => fields.hint = Some(value),
                _ => {}
            }
        }
        if fields.severity.is_empty() {
            fields.severity = localized_severity.unwrap_or_else(|| "ERROR".to_owned());
        }
        if fields.code.is_empty() {
            fields.code = "XX000".to_owned();
        }
        fields
    }
}

/// An ErrorResponse as a [`ReplicationError::Server`], with our hint for well-known cases.
pub(super) fn server_error(peer: &str, body: &[u8]) -> ReplicationError {
    let fields = ErrorFields::parse(body);
    let hint = fields.hint.or_else(|| {
        let ours = match fields.code.as_str() {
            "42704" => {
                "the replication slot does not exist; let dbmazz create it or check the slot \
                 name"
            }
            "55006" => {
                "another connection is using the replication slot; it is released when that \
                 connection ends"
            }
            "42501" => "the role needs the REPLICATION attribute: ALTER ROLE … WITH REPLICATION",
            "3D000" => "check the database name in DATABASE_URL",
            "53300" => {
                "the server has no free connection or walsender slot; raise max_connections or \
                 max_wal_senders"
            }
            _ => return None,
        };
        Some(ours.to_owned())
    });
    ReplicationError::Server(Box::new(ServerError {
        peer: peer.to_owned(),
        severity: fields.severity,
        code: fields.code,
        message: fields.message,
        detail: fields.detail,
        hint,
    }))
}

/// An ErrorResponse during startup: class 28 (invalid authorization) becomes
/// [`ReplicationError::Auth`].
pub(super) fn startup_error(peer: &str, body: &[u8]) -> ReplicationError {
    let fields = ErrorFields::parse(body);
    let hint = match fields.code.as_str() {
        "28P01" => AUTH_PASSWORD_HINT,
        code if code.starts_with("28") => AUTH_HBA_HINT,
        _ => return server_error(peer, body),
    };
    ReplicationError::Auth {
        peer: peer.to_owned(),
        code: Some(fields.code),
        message: fields.message,
        hint,
    }
}

/// A [`ReplicationError::Protocol`] naming the peer.
pub(super) fn protocol(peer: &str, what: impl std::fmt::Display) -> ReplicationError {
    ReplicationError::Protocol(format!("protocol error from PostgreSQL at {peer}: {what}"))
}

/// A [`ReplicationError::Io`] naming the peer.
pub(super) fn io_error(peer: &str, source: io::Error) -> ReplicationError {
    ReplicationError::Io {
        peer: peer.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::super::framing::FrameError;
    use super::*;
    use crate::postgres::sqlstate::is_transient as sqlstate_is_transient;

    fn error_body(fields: &[(u8, &str)]) -> Vec<u8> {
        let mut body = Vec::new();
        for (kind, value) in fields {
            body.push(*kind);
            body.extend_from_slice(value.as_bytes());
            body.push(0);
        }
        body.push(0);
        body
    }

    #[test]
    fn read_errors_become_io_or_protocol_errors() {
        let err = ReplicationError::from(ReadError::Malformed {
            peer: "h:1".into(),
            source: FrameError::DataRowTrailingBytes,
        });
        assert!(!err.is_transient());
        assert_eq!(
            err.to_string(),
            "protocol error from PostgreSQL at h:1: trailing bytes after DataRow"
        );
        let err = ReplicationError::from(ReadError::Io {
            peer: "h:1".into(),
            source: io::Error::new(io::ErrorKind::UnexpectedEof, "closed"),
        });
        assert!(err.is_transient());
        assert_eq!(
            err.to_string(),
            "connection to PostgreSQL at h:1 failed: closed"
        );
    }

    #[test]
    fn server_errors_carry_code_hint_and_peer() {
        let body = error_body(&[
            (b'S', "ERREUR"),
            (b'V', "ERROR"),
            (b'C', "42704"),
            (b'M', "replication slot \"s\" does not exist"),
        ]);
        let err = server_error("db:5432", &body);
        assert_eq!(err.code(), Some("42704"));
        assert!(!err.is_transient());
        let text = err.to_string();
        assert!(text.contains("db:5432") && text.contains("42704"), "{text}");
        assert!(
            text.contains("hint: the replication slot does not exist"),
            "{text}"
        );

        let body = error_body(&[
            (b'V', "ERROR"),
            (b'C', "55006"),
            (b'M', "slot active"),
            (b'H', "wait"),
        ]);
        let err = server_error("db:5432", &body);
        assert!(err.is_transient());
        assert!(err.to_string().ends_with("; hint: wait"), "{err}");
    }

    #[test]
    fn startup_auth_failures_become_auth_errors() {
        let body = error_body(&[
            (b'V', "FATAL"),
            (b'C', "28P01"),
            (b'M', "password authentication failed for user \"alice\""),
        ]);
        let err = startup_error("h:1", &body);
        assert!(matches!(err, ReplicationError::Auth { .. }));
        assert!(!err.is_transient());
        let text = err.to_string();
        assert!(text.contains("user \"alice\""), "{text}");
        assert!(
            text.contains("h:1") && text.contains(AUTH_PASSWORD_HINT),
            "{text}"
        );

        let body = error_body(&[(b'V', "FATAL"), (b'C', "57P03"), (b'M', "starting up")]);
        let err = startup_error("h:1", &body);
        assert!(matches!(err, ReplicationError::Server(_)) && err.is_transient());
    }

    #[test]
    fn receive_timeout_is_transient_and_names_server_and_setting() {
        let err = ReplicationError::ReceiveTimeout {
            peer: "db:5432".into(),
            timeout: Duration::from_millis(2500),
        };
        assert!(err.is_transient());
        let text = err.to_string();
        for part in ["db:5432", "2500 ms", "WAL_RECEIVER_TIMEOUT_MS"] {
            assert!(text.contains(part), "{text}");
        }
    }

    #[test]
    fn truncated_error_fields_are_tolerated() {
        let fields = ErrorFields::parse(b"Cxx");
        assert_eq!(fields.code, "XX000");
        assert_eq!(fields.severity, "ERROR");
    }

    #[test]
    fn transient_classification() {
        for code in ["08006", "57P01", "57P03", "53300", "55006", "40P01"] {
            assert!(sqlstate_is_transient(code), "{code}");
        }
        for code in [
            "42704", "55000", "28P01", "42501", "3D000", "XX000", "0A000",
        ] {
            assert!(!sqlstate_is_transient(code), "{code}");
        }
        let io = io_error(
            "h:1",
            io::Error::new(io::ErrorKind::ConnectionReset, "reset"),
        );
        assert!(io.is_transient() && io.to_string().contains("h:1"));
        assert!(!protocol("h:1", "x").is_transient());
    }
}
