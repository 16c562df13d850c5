//! The FE MySQL-protocol port, on `opensrv-mysql`.
//!
//! Why a protocol crate: handshake, `mysql_native_password`, text and binary result sets and
//! prepared statements are generic MySQL; only the statements are StarRocks-specific, and
//! those live in `query`. Each connection has a [`Session`] (current database); statements
//! run on the blocking pool because they hold the store lock.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use opensrv_mysql::{
    AsyncMysqlIntermediary, AsyncMysqlShim, Column, ColumnFlags, ColumnType, ErrorKind, InitWriter,
    OkResponse, ParamParser, QueryResultWriter, StatementMetaWriter, ValueInner,
};
use sha1::{Digest, Sha1};
use tokio::io::AsyncWrite;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::double::Double;
use crate::query::{self, Outcome, Session};
use crate::sql::SqlError;
use crate::types::Cell;

/// The MySQL server version in the handshake (StarRocks 3.x reports a MySQL 8 version).
const SERVER_VERSION: &str = "8.0.33";

static CONNECTION_IDS: AtomicU32 = AtomicU32::new(1);

pub async fn serve(listener: TcpListener, double: Arc<Double>, shutdown: watch::Receiver<bool>) {
    crate::double::accept_loop(listener, shutdown, "mysql", move |stream| {
        let double = double.clone();
        async move {
            double.stats.update(|s| s.mysql_connections += 1);
            let shim = Shim::new(double);
            let (r, w) = stream.into_split();
            if let Err(e) = AsyncMysqlIntermediary::run_on(shim, r, w).await {
                tracing::debug!(error = %e, "mysql connection ended");
            }
        }
    })
    .await;
}

struct Shim {
    double: Arc<Double>,
    session: Session,
    salt: [u8; 20],
    statements: HashMap<u32, String>,
    next_statement: u32,
}

impl Shim {
    fn new(double: Arc<Double>) -> Shim {
        let mut salt = [0u8; 20];
        for chunk in salt.chunks_mut(8) {
            let r = crate::ids::random_u64().to_le_bytes();
            chunk.copy_from_slice(&r[..chunk.len()]);
        }
        for b in &mut salt {
            // Printable, and never NUL or '$' (they end the scramble in some clients).
            *b = 0x21 + (*b % 0x5d);
            if *b == b'$' {
                *b = b'%';
            }
        }
        let user = double.config.user.clone();
        Shim {
            double,
            session: Session {
                db: None,
                user,
                connection_id: CONNECTION_IDS.fetch_add(1, Ordering::Relaxed),
            },
            salt,
            statements: HashMap::new(),
            next_statement: 1,
        }
    }

    /// Runs a statement on the blocking pool and keeps the session change (USE, DROP).
    async fn run(&mut self, sql: String) -> Result<Outcome, SqlError> {
        self.double.stats.update(|s| s.mysql_statements += 1);
        let double = self.double.clone();
        let mut session = self.session.clone();
        let joined = tokio::task::spawn_blocking(move || {
            let res = query::execute(&double, &mut session, &sql);
            (res, session)
        })
        .await;
        match joined {
            Ok((res, session)) => {
                self.session = session;
                res
            }
            Err(e) => Err(SqlError::new(1105, format!("internal error: {e}"))),
        }
    }
}

/// `mysql_native_password`: SHA1(pw) XOR SHA1(salt + SHA1(SHA1(pw))).
fn native_password_matches(password: &str, salt: &[u8], auth: &[u8]) -> bool {
    if password.is_empty() {
        return auth.is_empty();
    }
    if auth.len() != 20 {
        return false;
    }
    let stage1 = Sha1::digest(password.as_bytes());
    let stage2 = Sha1::digest(stage1);
    let mut h = Sha1::new();
    h.update(salt);
    h.update(stage2);
    let mix = h.finalize();
    stage1
        .iter()
        .zip(mix.iter())
        .zip(auth)
        .all(|((a, b), c)| a ^ b == *c)
}

/// How a result column is sent: chosen from the values it holds.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Int,
    Double,
    Text,
    Blob,
}

fn column_kinds(rows: &[Vec<Cell>], width: usize) -> Vec<Kind> {
    (0..width)
        .map(|i| {
            let mut kind: Option<Kind> = None;
            for row in rows {
                let k = match &row[i] {
                    Cell::Null => continue,
                    Cell::Int(_) => Kind::Int,
                    Cell::Real(_) => Kind::Double,
                    Cell::Text(_) => Kind::Text,
                    Cell::Blob(_) => Kind::Blob,
                };
                kind = Some(match (kind, k) {
                    (None, k) => k,
                    (Some(a), b) if a == b => a,
                    (Some(Kind::Int), Kind::Double) | (Some(Kind::Double), Kind::Int) => {
                        Kind::Double
                    }
                    _ => Kind::Text,
                });
            }
            kind.unwrap_or(Kind::Text)
        })
        .collect()
}

fn cell_text(c: &Cell) -> String {
    match c {
        Cell::Null => String::new(),
        Cell::Int(i) => i.to_string(),
        Cell::Real(f) => f.to_string(),
        Cell::Text(s) => s.clone(),
        Cell::Blob(b) => String::from_utf8_lossy(b).into_owned(),
    }
}

async fn write_outcome<W: AsyncWrite + Send + Unpin>(
    results: QueryResultWriter<'_, W>,
    outcome: Result<Outcome, SqlError>,
) -> io::Result<()> {
    match outcome {
        Err(e) => {
            results
                .error(ErrorKind::from(e.code), e.message.as_bytes())
                .await
        }
        Ok(Outcome::Done { affected }) => {
            // No info text: opensrv writes it as string<EOF> while clients disagree on its
            // form (mysql_async reads string<lenenc>), so an OK with info breaks one of them.
            results
                .completed(OkResponse {
                    affected_rows: affected,
                    ..OkResponse::default()
                })
                .await
        }
        Ok(Outcome::Rows(rs)) => {
            let width = rs.columns.len();
            let kinds = column_kinds(&rs.rows, width);
            let cols: Vec<Column> = rs
                .columns
                .iter()
                .zip(&kinds)
                .map(|(name, k)| Column {
                    table: String::new(),
                    column: name.clone(),
                    coltype: match k {
                        Kind::Int => ColumnType::MYSQL_TYPE_LONGLONG,
                        Kind::Double => ColumnType::MYSQL_TYPE_DOUBLE,
                        Kind::Text => ColumnType::MYSQL_TYPE_VAR_STRING,
                        Kind::Blob => ColumnType::MYSQL_TYPE_BLOB,
                    },
                    colflags: ColumnFlags::empty(),
                })
                .collect();
            let mut w = results.start(&cols).await?;
            for row in &rs.rows {
                for (cell, kind) in row.iter().zip(&kinds) {
                    match (kind, cell) {
                        (_, Cell::Null) => w.write_col(None::<i64>)?,
                        (Kind::Int, Cell::Int(i)) => w.write_col(*i)?,
                        (Kind::Double, Cell::Real(f)) => w.write_col(*f)?,
                        (Kind::Double, Cell::Int(i)) => w.write_col(*i as f64)?,
                        (Kind::Blob, Cell::Blob(b)) => w.write_col(&b[..])?,
                        (_, other) => w.write_col(cell_text(other))?,
                    }
                }
                w.end_row().await?;
            }
            w.finish().await
        }
    }
}

/// A bound parameter as a SQL literal.
fn param_literal(v: ValueInner<'_>) -> Option<String> {
    let quote = |s: &str| format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"));
    Some(match v {
        ValueInner::NULL => return None,
        ValueInner::Bytes(b) => quote(&String::from_utf8_lossy(b)),
        ValueInner::Int(i) => i.to_string(),
        ValueInner::UInt(u) => u.to_string(),
        ValueInner::Double(f) => f.to_string(),
        ValueInner::Date(b) | ValueInner::Datetime(b) => {
            let year = b
                .get(..2)
                .map(|y| u16::from_le_bytes([y[0], y[1]]))
                .unwrap_or(0);
            let at = |i: usize| b.get(i).copied().unwrap_or(0);
            let micros = b
                .get(7..11)
                .map(|m| u32::from_le_bytes([m[0], m[1], m[2], m[3]]))
                .unwrap_or(0);
            let mut s = format!("{year:04}-{:02}-{:02}", at(2), at(3));
            if b.len() > 4 {
                s.push_str(&format!(" {:02}:{:02}:{:02}", at(4), at(5), at(6)));
                if micros != 0 {
                    s.push_str(&format!(".{micros:06}"));
                }
            }
            quote(&s)
        }
        ValueInner::Time(_) => return None,
    })
}

#[async_trait]
impl<W: AsyncWrite + Send + Unpin> AsyncMysqlShim<W> for Shim {
    type Error = io::Error;

    fn version(&self) -> String {
        SERVER_VERSION.to_owned()
    }

    fn connect_id(&self) -> u32 {
        self.session.connection_id
    }

    fn salt(&self) -> [u8; 20] {
        self.salt
    }

    async fn authenticate(
        &self,
        _plugin: &str,
        username: &[u8],
        salt: &[u8],
        auth_data: &[u8],
    ) -> bool {
        let user = String::from_utf8_lossy(username);
        let ok = user == self.double.config.user
            && native_password_matches(&self.double.config.password, salt, auth_data);
        if !ok {
            tracing::info!(user = %user, "mysql authentication failed");
        }
        ok
    }

    async fn on_prepare<'a>(
        &'a mut self,
        query: &'a str,
        info: StatementMetaWriter<'a, W>,
    ) -> io::Result<()> {
        let n = query::count_params(query);
        let id = self.next_statement;
        self.next_statement += 1;
        self.statements.insert(id, query.to_owned());
        let params: Vec<Column> = (0..n)
            .map(|i| Column {
                table: String::new(),
                column: format!("?{i}"),
                coltype: ColumnType::MYSQL_TYPE_VAR_STRING,
                colflags: ColumnFlags::empty(),
            })
            .collect();
        let columns: Vec<Column> = Vec::new();
        info.reply(id, params.iter(), columns.iter()).await
    }

    async fn on_execute<'a>(
        &'a mut self,
        id: u32,
        params: ParamParser<'a>,
        results: QueryResultWriter<'a, W>,
    ) -> io::Result<()> {
        let Some(sql) = self.statements.get(&id).cloned() else {
            return results
                .error(
                    ErrorKind::ER_UNKNOWN_STMT_HANDLER,
                    format!("Unknown prepared statement handler ({id})").as_bytes(),
                )
                .await;
        };
        let literals: Vec<Option<String>> = params
            .into_iter()
            .map(|p| param_literal(p.value.into_inner()))
            .collect();
        let outcome = match query::bind_params(&sql, &literals) {
            Ok(bound) => self.run(bound).await,
            Err(e) => Err(e),
        };
        write_outcome(results, outcome).await
    }

    async fn on_close<'a>(&'a mut self, stmt: u32)
    where
        W: 'async_trait,
    {
        self.statements.remove(&stmt);
    }

    async fn on_query<'a>(
        &'a mut self,
        query: &'a str,
        results: QueryResultWriter<'a, W>,
    ) -> io::Result<()> {
        let outcome = self.run(query.to_owned()).await;
        write_outcome(results, outcome).await
    }

    async fn on_init<'a>(&'a mut self, db: &'a str, writer: InitWriter<'a, W>) -> io::Result<()> {
        let db = db
            .trim()
            .trim_end_matches(';')
            .trim()
            .trim_matches('`')
            .to_owned();
        match self.run(format!("USE `{}`", db.replace('`', "``"))).await {
            Ok(_) => writer.ok().await,
            Err(e) => {
                writer
                    .error(ErrorKind::from(e.code), e.message.as_bytes())
                    .await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_password_accepts_the_right_scramble_only() {
        let salt = b"01234567890123456789";
        let stage1 = Sha1::digest(b"secret");
        let stage2 = Sha1::digest(stage1);
        let mut h = Sha1::new();
        h.update(salt);
        h.update(stage2);
        let mix = h.finalize();
        let auth: Vec<u8> = stage1.iter().zip(mix.iter()).map(|(a, b)| a ^ b).collect();
        assert!(native_password_matches("secret", salt, &auth));
        assert!(!native_password_matches("other", salt, &auth));
        assert!(native_password_matches("", salt, b""));
        assert!(!native_password_matches("", salt, &auth));
    }
}
