//! Connection parameters from a `postgres://` URL.
//!
//! Operators hand dbmazz one `DATABASE_URL` in the libpq URL form. [`PgConnInfo::parse`] turns it
//! into typed parameters once, at start, so that every later connection (plain SQL through
//! `tokio-postgres`, replication through our own client) sees the same host, credentials and TLS
//! mode. Parsing is strict: a parameter dbmazz does not understand is an error rather than a
//! silently ignored setting, because an ignored `sslmode`-like typo would weaken security without
//! anyone noticing.
//!
//! The password is held in a [`Secret`] from the moment it is decoded. No error message of this
//! module quotes the URL or the password, and [`PgConnInfo::redacted`] gives the form that may be
//! logged.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::secret::Secret;

/// The TCP port PostgreSQL listens on unless told otherwise.
pub const DEFAULT_PORT: u16 = 5432;

/// The `application_name` dbmazz reports unless the URL sets one; visible in
/// `pg_stat_activity` and `pg_stat_replication`.
pub const DEFAULT_APPLICATION_NAME: &str = "dbmazz";

/// How long connecting (TCP, TLS and authentication) may take when the URL does not say.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Session settings every dbmazz connection starts with, because they change how values are
/// printed as text: pgoutput and `COPY` hand us text, and the sink must see one format whatever
/// the server's or the role's defaults are (`timestamptz` in UTC, ISO dates, round-trip floats,
/// hex `bytea`, UTF-8).
pub const SESSION_SETTINGS: &[(&str, &str)] = &[
    ("client_encoding", "UTF8"),
    ("TimeZone", "UTC"),
    ("DateStyle", "ISO"),
    ("IntervalStyle", "postgres"),
    ("extra_float_digits", "3"),
    ("bytea_output", "hex"),
];

/// TCP keepalive defaults when the URL says nothing: probes after 30 s of silence, every 10 s,
/// and the connection is dropped after 3 unanswered ones, so the kernel notices a vanished peer
/// on an idle connection within about a minute instead of libpq's (the kernel's) two hours.
pub const DEFAULT_KEEPALIVES: Keepalives = Keepalives {
    enabled: true,
    idle: Duration::from_secs(30),
    interval: Duration::from_secs(10),
    count: 3,
};

/// TCP keepalive settings of a connection, from libpq's `keepalives`, `keepalives_idle`,
/// `keepalives_interval` and `keepalives_count` URL parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Keepalives {
    /// `keepalives`: whether the kernel probes an idle connection at all.
    pub enabled: bool,
    /// `keepalives_idle`: silence before the first probe.
    pub idle: Duration,
    /// `keepalives_interval`: time between unanswered probes.
    pub interval: Duration,
    /// `keepalives_count`: unanswered probes before the connection is dropped.
    pub count: u32,
}

impl Default for Keepalives {
    fn default() -> Self {
        DEFAULT_KEEPALIVES
    }
}

/// libpq never waits less than two seconds, whatever `connect_timeout` says; neither do we.
const MIN_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether and how TLS is used, with the meanings libpq gives to `sslmode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum SslMode {
    /// Plaintext only.
    Disable,
    /// TLS when the server offers it, plaintext otherwise; the server is not authenticated.
    #[default]
    Prefer,
    /// TLS or fail; the traffic is encrypted but the server is not authenticated (unless
    /// `sslrootcert` is given, which makes it behave like [`SslMode::VerifyCa`], as in libpq).
    Require,
    /// TLS, and the server certificate must chain to the trusted root certificate.
    VerifyCa,
    /// Like [`SslMode::VerifyCa`], and the certificate must also name the host we connect to.
    VerifyFull,
}

impl SslMode {
    /// The libpq spelling, e.g. `verify-full`.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// Parses the libpq spelling. `allow` is refused: it would try plaintext first, and dbmazz
    /// never prefers plaintext over TLS.
    pub fn parse(value: &str) -> Result<SslMode, ConnInfoError> {
        match value {
            "disable" => Ok(SslMode::Disable),
            "prefer" => Ok(SslMode::Prefer),
            "require" => Ok(SslMode::Require),
            "verify-ca" => Ok(SslMode::VerifyCa),
            "verify-full" => Ok(SslMode::VerifyFull),
            _ => Err(ConnInfoError::InvalidValue {
                param: "sslmode",
                value: value.to_owned(),
                expected: "one of disable, prefer, require, verify-ca, verify-full",
            }),
        }
    }

    /// Whether the server's certificate chain is checked against a root certificate.
    pub fn verifies_chain(self) -> bool {
        matches!(self, SslMode::VerifyCa | SslMode::VerifyFull)
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// libpq's `target_session_attrs`, as far as dbmazz needs it: after a failover the old primary
/// may come back as a read-only standby, and a list of hosts must skip it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TargetSessionAttrs {
    /// `any` (the default): the first host that answers.
    #[default]
    Any,
    /// `read-write` or `primary`: the first host whose `transaction_read_only` is off.
    ReadWrite,
}

impl TargetSessionAttrs {
    fn parse(value: &str) -> Result<TargetSessionAttrs, ConnInfoError> {
        match value {
            "any" => Ok(TargetSessionAttrs::Any),
            "read-write" | "primary" => Ok(TargetSessionAttrs::ReadWrite),
            _ => Err(ConnInfoError::InvalidValue {
                param: "target_session_attrs",
                value: value.to_owned(),
                expected: "any, read-write or primary",
            }),
        }
    }
}

/// Everything needed to open a connection to PostgreSQL.
///
/// `Debug` is safe to log: the password prints as `***`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PgConnInfo {
    /// DNS name or IP address of the server (never a unix-socket directory); with several
    /// hosts, the one this value connects to (see [`PgConnInfo::candidates`]).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Every `host:port` of the URL in order (libpq's list, `postgres://u@h1,h2:5433/db`);
    /// one entry for a single host.
    pub hosts: Vec<(String, u16)>,
    /// `target_session_attrs`: whether a host must accept writes to be used.
    pub target_session_attrs: TargetSessionAttrs,
    /// Role to log in as.
    pub user: String,
    /// Password, if the URL has one.
    pub password: Option<Secret>,
    /// Database to connect to; the user name when the URL names none (libpq's rule).
    pub dbname: String,
    /// TLS policy.
    pub sslmode: SslMode,
    /// Root certificate(s) that the server's certificate must chain to.
    pub sslrootcert: Option<PathBuf>,
    /// Name reported to the server.
    pub application_name: String,
    /// Limit for TCP connect, TLS handshake and authentication together.
    pub connect_timeout: Duration,
    /// TCP keepalives on every connection, SQL and replication alike.
    pub keepalives: Keepalives,
    /// `tcp_user_timeout`: how long sent data may stay unacknowledged before the kernel drops
    /// the connection (`TCP_USER_TIMEOUT`); `None` leaves the system default (about 15 minutes
    /// of retransmissions on Linux).
    pub tcp_user_timeout: Option<Duration>,
}

/// Why a connection URL was rejected. Messages never contain the URL or its password.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConnInfoError {
    /// Not a `postgres://` or `postgresql://` URL.
    #[error("the database URL must start with postgres:// or postgresql://")]
    Scheme,
    /// The host is a unix-socket directory.
    #[error("unix-socket hosts are not supported; use a TCP host such as 127.0.0.1 or a DNS name")]
    UnixSocket,
    /// The `port` list does not match the host list.
    #[error(
        "the database URL names {hosts} hosts but {ports} ports: give one port for all, or one \
         per host"
    )]
    PortCount {
        /// Hosts named.
        hosts: usize,
        /// Ports named.
        ports: usize,
    },
    /// The URL has no user name.
    #[error("the database URL has no user name; write postgres://USER@HOST/DB")]
    MissingUser,
    /// A part of the URL is malformed.
    #[error("malformed database URL: {0}")]
    Malformed(&'static str),
    /// Percent-decoding failed (bad `%XY` escape or not UTF-8) in the named part.
    #[error("malformed database URL: invalid percent-encoding in the {0}")]
    PercentEncoding(&'static str),
    /// The port is not a number between 1 and 65535.
    #[error("invalid port {0:?} in the database URL: expected a number from 1 to 65535")]
    Port(String),
    /// A query parameter dbmazz does not know.
    #[error(
        "unsupported parameter {0:?} in the database URL; supported: sslmode, sslrootcert, \
         application_name, connect_timeout, keepalives, keepalives_idle, keepalives_interval, \
         keepalives_count, tcp_user_timeout, target_session_attrs, replication, host, port, user, \
         password, dbname"
    )]
    UnknownParam(String),
    /// A known parameter with a value it cannot take.
    #[error("invalid value {value:?} for {param} in the database URL: expected {expected}")]
    InvalidValue {
        /// The parameter name.
        param: &'static str,
        /// The rejected value (never a password).
        value: String,
        /// What would have been accepted.
        expected: &'static str,
    },
}

impl PgConnInfo {
    /// Parses a libpq-style URL:
    /// `postgres[ql]://[user[:password]@][host][:port][/dbname][?k=v&…]`.
    ///
    /// User, password, database name, host and parameter values are percent-decoded. Defaults
    /// follow libpq: host `localhost`, port 5432, database = user, `sslmode=prefer`; but
    /// `connect_timeout` and the TCP keepalives have dbmazz's own defaults
    /// ([`DEFAULT_CONNECT_TIMEOUT`], [`DEFAULT_KEEPALIVES`]), because libpq's (wait forever, the
    /// kernel's two hours) suit no daemon. The `replication` parameter is accepted and ignored,
    /// since dbmazz asks for a replication connection itself where it needs one.
    pub fn parse(url: &str) -> Result<PgConnInfo, ConnInfoError> {
        let rest = url
            .strip_prefix("postgresql://")
            .or_else(|| url.strip_prefix("postgres://"))
            .ok_or(ConnInfoError::Scheme)?;
        let rest = match rest.find('#') {
            Some(i) => &rest[..i],
            None => rest,
        };
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, after) = rest.split_at(authority_end);
        let (path, query) = match after.find('?') {
            Some(i) => (&after[..i], Some(&after[i + 1..])),
            None => (after, None),
        };

        let (userinfo, hostport) = match authority.rfind('@') {
            Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
            None => (None, authority),
        };

        let mut user = None;
        let mut password = None;
        if let Some(userinfo) = userinfo {
            let (u, p) = match userinfo.find(':') {
                Some(i) => (&userinfo[..i], Some(&userinfo[i + 1..])),
                None => (userinfo, None),
            };
            if !u.is_empty() {
                user = Some(percent_decode(u, "user name")?);
            }
            if let Some(p) = p {
                password = Some(Secret::new(percent_decode(p, "password")?));
            }
        }

        let mut hosts: Vec<(Option<String>, Option<u16>)> = hostport
            .split(',')
            .map(split_host_port)
            .collect::<Result<_, _>>()?;
        let mut port_param: Option<Vec<u16>> = None;
        let mut target_session_attrs = TargetSessionAttrs::Any;

        let mut dbname = match path.strip_prefix('/') {
            Some(db) if !db.is_empty() => Some(percent_decode(db, "database name")?),
            _ => None,
        };

        let mut sslmode = SslMode::default();
        let mut sslrootcert = None;
        let mut application_name = DEFAULT_APPLICATION_NAME.to_owned();
        let mut connect_timeout = DEFAULT_CONNECT_TIMEOUT;
        let mut keepalives = DEFAULT_KEEPALIVES;
        let mut tcp_user_timeout = None;

        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (key, raw) = pair
                .split_once('=')
                .ok_or(ConnInfoError::Malformed("query parameter without '='"))?;
            let key = percent_decode(key, "parameter name")?;
            if key == "password" {
                password = Some(Secret::new(percent_decode(raw, "password")?));
                continue;
            }
            let value = percent_decode(raw, "parameter value")?;
            match key.as_str() {
                "sslmode" => sslmode = SslMode::parse(&value)?,
                "sslrootcert" => {
                    if value == "system" {
                        return Err(ConnInfoError::InvalidValue {
                            param: "sslrootcert",
                            value,
                            expected: "the path of a PEM file (\"system\" is not supported)",
                        });
                    }
                    sslrootcert = (!value.is_empty()).then(|| PathBuf::from(value));
                }
                "application_name" => application_name = value,
                "connect_timeout" => connect_timeout = parse_connect_timeout(&value)?,
                "keepalives" => keepalives.enabled = parse_keepalives(&value)?,
                "keepalives_idle" => {
                    keepalives.idle = Duration::from_secs(positive("keepalives_idle", &value)?)
                }
                "keepalives_interval" => {
                    keepalives.interval =
                        Duration::from_secs(positive("keepalives_interval", &value)?)
                }
                "tcp_user_timeout" => tcp_user_timeout = parse_tcp_user_timeout(&value)?,
                "keepalives_count" => {
                    keepalives.count = u32::try_from(positive("keepalives_count", &value)?)
                        .map_err(|_| ConnInfoError::InvalidValue {
                            param: "keepalives_count",
                            value: value.clone(),
                            expected: "a positive whole number",
                        })?
                }
                "replication" => check_replication(&value)?,
                "host" => {
                    hosts = value
                        .split(',')
                        .map(|h| ((!h.is_empty()).then(|| h.to_owned()), None))
                        .collect()
                }
                "port" => {
                    port_param = Some(value.split(',').map(parse_port).collect::<Result<_, _>>()?)
                }
                "target_session_attrs" => target_session_attrs = TargetSessionAttrs::parse(&value)?,
                "user" => user = (!value.is_empty()).then_some(value),
                "dbname" => dbname = (!value.is_empty()).then_some(value),
                _ => return Err(ConnInfoError::UnknownParam(key)),
            }
        }

        if let Some(ports) = &port_param {
            if ports.len() != 1 && ports.len() != hosts.len() {
                return Err(ConnInfoError::PortCount {
                    hosts: hosts.len(),
                    ports: ports.len(),
                });
            }
        }
        let mut resolved = Vec::with_capacity(hosts.len());
        for (i, (host, port)) in hosts.into_iter().enumerate() {
            let host = host.unwrap_or_else(|| "localhost".to_owned());
            if host.starts_with('/') || host.starts_with('@') {
                return Err(ConnInfoError::UnixSocket);
            }
            let port = match &port_param {
                Some(ports) if ports.len() == 1 => ports[0],
                Some(ports) => ports[i],
                None => port.unwrap_or(DEFAULT_PORT),
            };
            resolved.push((host, port));
        }
        let (host, port) = resolved[0].clone();
        let user = user.ok_or(ConnInfoError::MissingUser)?;
        let dbname = dbname.unwrap_or_else(|| user.clone());
        let password = password.filter(|p| !p.is_empty());

        Ok(PgConnInfo {
            host,
            port,
            hosts: resolved,
            target_session_attrs,
            user,
            password,
            dbname,
            sslmode,
            sslrootcert,
            application_name,
            connect_timeout,
            keepalives,
            tcp_user_timeout,
        })
    }

    /// One connection target per host, in the URL's order, each with its own `host`/`port`:
    /// connecting tries them in turn (libpq's rule), and with
    /// [`TargetSessionAttrs::ReadWrite`] skips read-only ones.
    pub fn candidates(&self) -> Vec<PgConnInfo> {
        self.hosts
            .iter()
            .map(|(host, port)| PgConnInfo {
                host: host.clone(),
                port: *port,
                ..self.clone()
            })
            .collect()
    }

    /// A form of the URL that is safe to log: no password, only the parameters that matter.
    pub fn redacted(&self) -> String {
        let hosts: Vec<String> = self
            .candidates()
            .iter()
            .map(PgConnInfo::host_port)
            .collect();
        let mut out = format!(
            "postgres://{}@{}/{}?sslmode={}",
            self.user,
            hosts.join(","),
            self.dbname,
            self.sslmode
        );
        if self.target_session_attrs == TargetSessionAttrs::ReadWrite {
            out.push_str("&target_session_attrs=read-write");
        }
        if let Some(root) = &self.sslrootcert {
            out.push_str("&sslrootcert=");
            out.push_str(&root.display().to_string());
        }
        out
    }

    /// `host:port`, with IPv6 addresses in brackets; the peer name used in every error.
    pub fn host_port(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Splits `host[:port]`, `[v6addr][:port]` or an empty string.
fn split_host_port(hostport: &str) -> Result<(Option<String>, Option<u16>), ConnInfoError> {
    if hostport.is_empty() {
        return Ok((None, None));
    }
    let (host, port) = if let Some(rest) = hostport.strip_prefix('[') {
        let close = rest
            .find(']')
            .ok_or(ConnInfoError::Malformed("unterminated '[' in the host"))?;
        let after = &rest[close + 1..];
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':').ok_or(ConnInfoError::Malformed(
                "unexpected text after ']' in the host",
            ))?),
        };
        (rest[..close].to_owned(), port)
    } else {
        match hostport.rfind(':') {
            Some(i) => (
                percent_decode(&hostport[..i], "host")?,
                Some(&hostport[i + 1..]),
            ),
            None => (percent_decode(hostport, "host")?, None),
        }
    };
    let port = match port {
        None | Some("") => None,
        Some(p) => Some(parse_port(p)?),
    };
    Ok(((!host.is_empty()).then_some(host), port))
}

fn parse_port(text: &str) -> Result<u16, ConnInfoError> {
    match text.parse::<u16>() {
        Ok(p) if p != 0 => Ok(p),
        _ => Err(ConnInfoError::Port(text.to_owned())),
    }
}

/// `connect_timeout` in whole seconds, as libpq reads it. libpq's `0` (wait forever) is refused:
/// a daemon that hangs forever on a black-holed address is worse than one that retries.
fn parse_connect_timeout(value: &str) -> Result<Duration, ConnInfoError> {
    match value.trim().parse::<u64>() {
        Ok(secs) if secs > 0 => Ok(Duration::from_secs(secs).max(MIN_CONNECT_TIMEOUT)),
        _ => Err(ConnInfoError::InvalidValue {
            param: "connect_timeout",
            value: value.to_owned(),
            expected: "a positive number of seconds",
        }),
    }
}

/// `keepalives`: libpq reads an integer, non-zero meaning on.
fn parse_keepalives(value: &str) -> Result<bool, ConnInfoError> {
    value
        .trim()
        .parse::<i64>()
        .map(|v| v != 0)
        .map_err(|_| ConnInfoError::InvalidValue {
            param: "keepalives",
            value: value.to_owned(),
            expected: "1 (on) or 0 (off)",
        })
}

/// `tcp_user_timeout` in milliseconds, as libpq reads it; 0 means the system default.
fn parse_tcp_user_timeout(value: &str) -> Result<Option<Duration>, ConnInfoError> {
    match value.trim().parse::<u64>() {
        Ok(0) => Ok(None),
        Ok(ms) if ms <= 86_400_000 => Ok(Some(Duration::from_millis(ms))),
        _ => Err(ConnInfoError::InvalidValue {
            param: "tcp_user_timeout",
            value: value.to_owned(),
            expected: "milliseconds from 0 (the system default) to 86400000",
        }),
    }
}

/// A positive whole number of seconds (or probes). libpq's 0, "the system default", is
/// refused: dbmazz has its own defaults, and the system's two hours are what they replace.
fn positive(param: &'static str, value: &str) -> Result<u64, ConnInfoError> {
    match value.trim().parse::<u64>() {
        Ok(v) if v > 0 && v <= 86_400 => Ok(v),
        _ => Err(ConnInfoError::InvalidValue {
            param,
            value: value.to_owned(),
            expected: "a whole number from 1 to 86400",
        }),
    }
}

/// Accepts every value libpq accepts for `replication`; dbmazz decides per connection anyway.
fn check_replication(value: &str) -> Result<(), ConnInfoError> {
    match value.to_ascii_lowercase().as_str() {
        "database" | "true" | "on" | "yes" | "1" | "false" | "off" | "no" | "0" => Ok(()),
        _ => Err(ConnInfoError::InvalidValue {
            param: "replication",
            value: value.to_owned(),
            expected: "database, true or false (dbmazz opens its replication connection itself)",
        }),
    }
}

/// Decodes `%XY` escapes; the result must be UTF-8. `what` names the part for the error, which
/// never repeats the input (it may be a password).
fn percent_decode(text: &str, what: &'static str) -> Result<String, ConnInfoError> {
    if !text.contains('%') {
        return Ok(text.to_owned());
    }
    // libpq refuses a `%` not followed by two hex digits; the crate would pass it through.
    let bytes = text.as_bytes();
    let well_formed = bytes.iter().enumerate().all(|(i, &b)| {
        b != b'%'
            || bytes
                .get(i + 1..i + 3)
                .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
    });
    if !well_formed {
        return Err(ConnInfoError::PercentEncoding(what));
    }
    percent_encoding::percent_decode(bytes)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| ConnInfoError::PercentEncoding(what))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> PgConnInfo {
        PgConnInfo::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"))
    }

    #[test]
    fn full_url_is_parsed() {
        let info = parse(
            "postgres://alice:s3cret@db.example.com:6543/shop?sslmode=verify-full\
             &sslrootcert=/etc/ca.pem&application_name=cdc&connect_timeout=7",
        );
        assert_eq!(info.host, "db.example.com");
        assert_eq!(info.port, 6543);
        assert_eq!(info.user, "alice");
        assert_eq!(info.password.as_ref().map(Secret::expose), Some("s3cret"));
        assert_eq!(info.dbname, "shop");
        assert_eq!(info.sslmode, SslMode::VerifyFull);
        assert_eq!(info.sslrootcert, Some(PathBuf::from("/etc/ca.pem")));
        assert_eq!(info.application_name, "cdc");
        assert_eq!(info.connect_timeout, Duration::from_secs(7));
    }

    #[test]
    fn keepalive_parameters_are_understood() {
        let info = parse("postgres://u@h/d");
        assert_eq!(info.keepalives, DEFAULT_KEEPALIVES);
        assert!(info.keepalives.enabled);
        let info = parse(
            "postgres://u@h/d?keepalives=1&keepalives_idle=5&keepalives_interval=2\
             &keepalives_count=4",
        );
        assert_eq!(
            info.keepalives,
            Keepalives {
                enabled: true,
                idle: Duration::from_secs(5),
                interval: Duration::from_secs(2),
                count: 4,
            }
        );
        assert!(!parse("postgres://u@h/d?keepalives=0").keepalives.enabled);
        assert_eq!(parse("postgres://u@h/d").tcp_user_timeout, None);
        assert_eq!(
            parse("postgres://u@h/d?tcp_user_timeout=20000").tcp_user_timeout,
            Some(Duration::from_secs(20))
        );
        assert_eq!(
            parse("postgres://u@h/d?tcp_user_timeout=0").tcp_user_timeout,
            None
        );
        for (param, bad) in [
            ("keepalives", "yes"),
            ("keepalives_idle", "0"),
            ("keepalives_idle", "-3"),
            ("keepalives_interval", "1.5"),
            ("keepalives_count", "0"),
            ("keepalives_count", "x"),
            ("tcp_user_timeout", "-1"),
            ("tcp_user_timeout", "10s"),
        ] {
            let err = PgConnInfo::parse(&format!("postgres://u@h/d?{param}={bad}")).unwrap_err();
            assert!(
                matches!(&err, ConnInfoError::InvalidValue { param: p, .. } if p == &param),
                "{param}={bad}: {err}"
            );
        }
    }

    #[test]
    fn defaults_follow_libpq() {
        let info = parse("postgresql://bob@");
        assert_eq!(info.host, "localhost");
        assert_eq!(info.port, 5432);
        assert_eq!(info.dbname, "bob");
        assert_eq!(info.password, None);
        assert_eq!(info.sslmode, SslMode::Prefer);
        assert_eq!(info.sslrootcert, None);
        assert_eq!(info.application_name, "dbmazz");
        assert_eq!(info.connect_timeout, DEFAULT_CONNECT_TIMEOUT);

        let info = parse("postgres://bob@db/");
        assert_eq!((info.host.as_str(), info.dbname.as_str()), ("db", "bob"));
    }

    #[test]
    fn percent_escapes_are_decoded() {
        let info = parse("postgres://us%40er:p%3Aa%2Fs%40s%25@h/my%20db");
        assert_eq!(info.user, "us@er");
        assert_eq!(info.password.unwrap().expose(), "p:a/s@s%");
        assert_eq!(info.dbname, "my db");
        let info = parse("postgres://u@h/d?application_name=a%26b%3Dc");
        assert_eq!(info.application_name, "a&b=c");
        let info = parse("postgres://%C3%A9t%C3%A9@h/d");
        assert_eq!(info.user, "été");
    }

    #[test]
    fn unencoded_at_in_password_is_tolerated() {
        let info = parse("postgres://u:p@ss@h:1/d");
        assert_eq!(info.password.unwrap().expose(), "p@ss");
        assert_eq!((info.host.as_str(), info.port), ("h", 1));
    }

    #[test]
    fn every_sslmode_is_understood() {
        for (text, mode) in [
            ("disable", SslMode::Disable),
            ("prefer", SslMode::Prefer),
            ("require", SslMode::Require),
            ("verify-ca", SslMode::VerifyCa),
            ("verify-full", SslMode::VerifyFull),
        ] {
            let info = parse(&format!("postgres://u@h/d?sslmode={text}"));
            assert_eq!(info.sslmode, mode);
            assert_eq!(mode.as_str(), text);
            assert!(info.redacted().ends_with(&format!("sslmode={text}")));
        }
        for bad in ["allow", "VERIFY-FULL", "", "on"] {
            let err = PgConnInfo::parse(&format!("postgres://u@h/d?sslmode={bad}")).unwrap_err();
            assert!(err.to_string().contains("sslmode"), "{err}");
        }
    }

    #[test]
    fn several_hosts_are_tried_in_order_with_their_ports() {
        let info = PgConnInfo::parse(
            "postgres://u@db1:5433,db2,[::1]:6000/app?target_session_attrs=read-write",
        )
        .unwrap();
        assert_eq!(
            info.hosts,
            vec![
                ("db1".to_owned(), 5433),
                ("db2".to_owned(), DEFAULT_PORT),
                ("::1".to_owned(), 6000)
            ]
        );
        assert_eq!((info.host.as_str(), info.port), ("db1", 5433));
        assert_eq!(info.target_session_attrs, TargetSessionAttrs::ReadWrite);
        let hosts: Vec<String> = info.candidates().iter().map(|c| c.host_port()).collect();
        assert_eq!(hosts, ["db1:5433", "db2:5432", "[::1]:6000"]);
        assert!(info.redacted().contains("db1:5433,db2:5432,[::1]:6000"));

        let info = PgConnInfo::parse("postgres://u@/app?host=a,b&port=7000").unwrap();
        assert_eq!(
            info.hosts,
            vec![("a".to_owned(), 7000), ("b".to_owned(), 7000)]
        );
        assert_eq!(
            PgConnInfo::parse("postgres://u@h/d?target_session_attrs=standby"),
            Err(ConnInfoError::InvalidValue {
                param: "target_session_attrs",
                value: "standby".into(),
                expected: "any, read-write or primary",
            })
        );
        assert_eq!(
            PgConnInfo::parse("postgres://u@h/d")
                .unwrap()
                .target_session_attrs,
            TargetSessionAttrs::Any
        );
    }

    #[test]
    fn ipv6_hosts_are_bracketed() {
        let info = parse("postgres://u@[::1]:5433/d");
        assert_eq!((info.host.as_str(), info.port), ("::1", 5433));
        assert_eq!(info.host_port(), "[::1]:5433");
        assert_eq!(parse("postgres://u@[fe80::1]/d").port, 5432);
    }

    #[test]
    fn query_can_supply_host_port_user_and_password() {
        let info = parse("postgres:///d?host=db&port=7&user=u&password=pw");
        assert_eq!((info.host.as_str(), info.port), ("db", 7));
        assert_eq!(info.user, "u");
        assert_eq!(info.password.unwrap().expose(), "pw");
        assert_eq!(info.dbname, "d");
    }

    #[test]
    fn replication_parameter_is_accepted_and_ignored() {
        for v in ["database", "true", "on", "1", "false", "0"] {
            parse(&format!("postgres://u@h/d?replication={v}"));
        }
        let err = PgConnInfo::parse("postgres://u@h/d?replication=physical").unwrap_err();
        assert!(err.to_string().contains("replication"), "{err}");
    }

    #[test]
    fn unknown_parameters_are_named_in_the_error() {
        for param in ["options", "sslcert", "sslmod"] {
            let err = PgConnInfo::parse(&format!("postgres://u@h/d?{param}=x")).unwrap_err();
            assert_eq!(err, ConnInfoError::UnknownParam(param.to_owned()));
            assert!(err.to_string().contains(param), "{err}");
        }
    }

    #[test]
    fn malformed_urls_are_rejected() {
        let cases = [
            ("mysql://u@h/d", ConnInfoError::Scheme),
            ("u@h/d", ConnInfoError::Scheme),
            ("postgres://h/d", ConnInfoError::MissingUser),
            ("postgres://u@h:0/d", ConnInfoError::Port("0".into())),
            (
                "postgres://u@h:99999/d",
                ConnInfoError::Port("99999".into()),
            ),
            ("postgres://u@h:x/d", ConnInfoError::Port("x".into())),
            (
                "postgres://u@h1,h2/d?port=1,2,3",
                ConnInfoError::PortCount { hosts: 2, ports: 3 },
            ),
            (
                "postgres://u@h/d%zz",
                ConnInfoError::PercentEncoding("database name"),
            ),
            (
                "postgres://u@h/d%ff",
                ConnInfoError::PercentEncoding("database name"),
            ),
            (
                "postgres://u@h/d?sslmode",
                ConnInfoError::Malformed("query parameter without '='"),
            ),
            (
                "postgres://u@[::1/d",
                ConnInfoError::Malformed("unterminated '[' in the host"),
            ),
        ];
        for (url, want) in cases {
            assert_eq!(PgConnInfo::parse(url).unwrap_err(), want, "{url}");
        }
        for bad in ["0", "-1", "soon", ""] {
            let url = format!("postgres://u@h/d?connect_timeout={bad}");
            let err = PgConnInfo::parse(&url).unwrap_err();
            assert!(err.to_string().contains("connect_timeout"), "{err}");
        }
        assert_eq!(
            parse("postgres://u@h/d?connect_timeout=1").connect_timeout,
            MIN_CONNECT_TIMEOUT
        );
    }

    #[test]
    fn unix_socket_hosts_are_refused_clearly() {
        for url in [
            "postgres://u@%2Fvar%2Frun%2Fpostgresql/d",
            "postgres://u@/d?host=/var/run/postgresql",
        ] {
            let err = PgConnInfo::parse(url).unwrap_err();
            assert_eq!(err, ConnInfoError::UnixSocket);
            assert!(err.to_string().contains("use a TCP host"));
        }
    }

    #[test]
    fn password_never_appears_in_debug_redacted_or_errors() {
        let pw = "Canary%2Fpw";
        let decoded = "Canary/pw";
        let info = parse(&format!("postgres://u:{pw}@h/d?sslrootcert=/ca.pem"));
        let shown = format!("{info:?} {}", info.redacted());
        assert!(!shown.contains("Canary"), "{shown}");
        assert_eq!(
            info.redacted(),
            "postgres://u@h:5432/d?sslmode=prefer&sslrootcert=/ca.pem"
        );

        let bad_urls = [
            format!("postgres://u:{pw}%zz@h/d"),
            format!("postgres://u:{pw}@h/d?sslmode=bogus"),
            format!("postgres://u:{pw}@h/d?nope=1"),
            format!("postgres://u:{pw}@h:bad/d"),
            format!("postgres://u@h/d?password={decoded}%"),
            format!("mysql://u:{pw}@h/d"),
        ];
        for url in bad_urls {
            let err = PgConnInfo::parse(&url).unwrap_err();
            let shown = format!("{err} {err:?}");
            assert!(!shown.contains("Canary"), "{shown}");
        }
    }

    #[test]
    fn empty_password_means_none() {
        assert_eq!(parse("postgres://u:@h/d").password, None);
    }
}
