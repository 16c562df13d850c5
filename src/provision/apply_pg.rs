//! Applying a schema to PostgreSQL: the admin connection creates the database owned by
//! `PROVISION_ROLE`, then a connection *as that role* (not `SET ROLE`, which the script could
//! undo) runs the whole file in one transaction, `COPY … FROM stdin` data going through the COPY
//! protocol. Any failure rolls everything back; the job runner then drops the database it
//! created.

use std::pin::Pin;

use bytes::Bytes;
use futures_util::SinkExt;
use tokio_postgres::error::SqlState;
use tokio_postgres::{CopyInSink, Transaction};

use super::applier::{
    Applier, JobProgress, Migrated, Migration, NoProgress, Target, MIGRATIONS_TABLE,
};
use super::config::Bounds;
use super::job::JobStep;
use super::names::quote_ident_pg;
use super::servers::{Admin, ServerDef};
use super::split::{Dialect, Piece};
use super::upload::{PieceError, PieceReader};
use crate::postgres::conninfo::PgConnInfo;
use crate::postgres::tls::{connect_sql, ConnectError};
use crate::secret::Secret;

/// Why applying to (or dropping a database on) PostgreSQL failed; the text is the job's error.
#[derive(Debug, thiserror::Error)]
pub(super) enum PgApplyError {
    /// The admin connection of the server failed.
    #[error("cannot connect to server {server} as its admin: {source}")]
    ConnectAdmin {
        /// The server's name.
        server: String,
        /// The URL without its password.
        place: String,
        /// Why.
        source: ConnectError,
    },
    /// The server refused a query; `line` is where in the file, when a statement of the file
    /// failed.
    #[error("{}", server_error(*.line, .source))]
    Server {
        /// 1-based line in the file.
        line: Option<u64>,
        /// The server's answer.
        source: tokio_postgres::Error,
    },
    /// A statement of the file ran into `SCHEMA_STATEMENT_TIMEOUT_MS` or
    /// `SCHEMA_LOCK_TIMEOUT_MS`.
    #[error("{}; {bound}", server_error(Some(*.line), .source))]
    Bounded {
        /// 1-based line in the file.
        line: u64,
        /// The server's answer.
        source: tokio_postgres::Error,
        /// Which bound, and what to do.
        bound: String,
    },
    /// The database recorded this migration id with another file.
    #[error(
        "migration {id} was applied to this database with another file (SHA-256 {recorded});          a changed migration needs a new migration id"
    )]
    ChecksumMismatch {
        /// The migration id.
        id: String,
        /// The SHA-256 the database recorded.
        recorded: String,
    },
    /// `PROVISION_ROLE` does not exist.
    #[error(
        "PROVISION_ROLE {role} does not exist on the PostgreSQL server; create it with CREATE \
         ROLE {role} LOGIN PASSWORD '…' (not a superuser)"
    )]
    RoleMissing {
        /// `PROVISION_ROLE`.
        role: String,
    },
    /// `PROVISION_ROLE` is a superuser.
    #[error(
        "PROVISION_ROLE {role} is a superuser; schemas must run as a non-superuser role (ALTER \
         ROLE {role} NOSUPERUSER), which is what keeps them away from server files and programs"
    )]
    RoleIsSuperuser {
        /// `PROVISION_ROLE`.
        role: String,
    },
    /// `PROVISION_ROLE` has no LOGIN.
    #[error("PROVISION_ROLE {role} cannot log in; run ALTER ROLE {role} LOGIN")]
    RoleCannotLogIn {
        /// `PROVISION_ROLE`.
        role: String,
    },
    /// The database exists and `SCHEMA_FAIL_IF_DB_EXISTS` is on.
    #[error(
        "database {database} already exists (SCHEMA_FAIL_IF_DB_EXISTS); choose another name, or \
         drop it with SchemaService/DropDatabase"
    )]
    DatabaseExists {
        /// The target database.
        database: String,
    },
    /// CREATE DATABASE failed.
    #[error("cannot create database {database}: {}", db_message(.source))]
    CreateDatabase {
        /// The target database.
        database: String,
        /// The server's answer.
        source: tokio_postgres::Error,
    },
    /// The connection as `PROVISION_ROLE` failed.
    #[error(
        "cannot connect to database {database} of server {server} as PROVISION_ROLE {role}: \
         {source} ({})",
        if unreachable(source) { "is the server up?" } else { "check PROVISION_ROLE_PASSWORD and pg_hba.conf" }
    )]
    ConnectRole {
        /// The server's name.
        server: String,
        /// The target database.
        database: String,
        /// `PROVISION_ROLE`.
        role: String,
        /// Why.
        source: ConnectError,
    },
    /// The stored upload cannot be read back.
    #[error(transparent)]
    Pieces(#[from] PieceError),
    /// COPY data without a `COPY … FROM stdin` before it.
    #[error("COPY data outside of a COPY … FROM stdin")]
    CopyDataOutsideCopy,
    /// A `\.` line without a `COPY … FROM stdin` before it.
    #[error("\\. outside of a COPY … FROM stdin")]
    CopyEndOutsideCopy,
    /// The file ends inside COPY data.
    #[error("line {line}: the file ends inside the data of this COPY (no \\. line)")]
    CopyUnterminated {
        /// Line of the COPY statement.
        line: u64,
    },
    /// COMMIT failed.
    #[error("at COMMIT: {}", db_message(.0))]
    Commit(#[source] tokio_postgres::Error),
    /// Terminating the connections to a database before dropping it failed.
    #[error("cannot terminate the connections to {name}: {}", db_message(.source))]
    TerminateConnections {
        /// The database.
        name: String,
        /// The server's answer.
        source: tokio_postgres::Error,
    },
    /// DROP DATABASE failed.
    #[error("cannot drop database {name}: {}", db_message(.source))]
    DropDatabase {
        /// The database.
        name: String,
        /// The server's answer.
        source: tokio_postgres::Error,
    },
}

fn query_error(source: tokio_postgres::Error) -> PgApplyError {
    PgApplyError::Server { line: None, source }
}

/// Applies uploads to one PostgreSQL server.
pub(super) struct PgApplier {
    /// The server's name.
    server: String,
    /// Its admin connection.
    admin: PgConnInfo,
    /// `PROVISION_ROLE`.
    role: String,
    /// `PROVISION_ROLE_PASSWORD`.
    role_password: Option<Secret>,
    /// `SCHEMA_STATEMENT_TIMEOUT_MS`, `SCHEMA_LOCK_TIMEOUT_MS`.
    bounds: Bounds,
}

impl PgApplier {
    /// The applier for `server` (a PostgreSQL server), or `None` for another engine.
    pub(super) fn new(server: &ServerDef, bounds: Bounds) -> Option<PgApplier> {
        let Admin::Postgres(admin) = &server.admin else {
            return None;
        };
        Some(PgApplier {
            server: server.name.clone(),
            admin: (**admin).clone(),
            role: server.role.clone(),
            role_password: server.role_password.clone(),
            bounds,
        })
    }

    async fn connect_admin(&self) -> Result<tokio_postgres::Client, PgApplyError> {
        connect_sql(&self.admin)
            .await
            .map_err(|source| PgApplyError::ConnectAdmin {
                server: self.server.clone(),
                place: self.admin.redacted(),
                source,
            })
    }

    /// Checks `PROVISION_ROLE`, then creates `database` owned by it unless it exists.
    async fn create_database(
        &self,
        database: &str,
        fail_if_db_exists: bool,
        job: &mut dyn JobProgress,
    ) -> Result<(), PgApplyError> {
        let role = &self.role;
        let admin = self.connect_admin().await?;
        let row = admin
            .query_opt(
                "SELECT rolsuper, rolcanlogin FROM pg_catalog.pg_roles WHERE rolname = $1",
                &[role],
            )
            .await
            .map_err(query_error)?;
        let role = role.clone();
        match row {
            None => return Err(PgApplyError::RoleMissing { role }),
            Some(r) if r.get::<_, bool>(0) => return Err(PgApplyError::RoleIsSuperuser { role }),
            Some(r) if !r.get::<_, bool>(1) => return Err(PgApplyError::RoleCannotLogIn { role }),
            Some(_) => {}
        }
        let exists = admin
            .query_opt(
                "SELECT 1 FROM pg_catalog.pg_database WHERE datname = $1",
                &[&database],
            )
            .await
            .map_err(query_error)?
            .is_some();
        if exists {
            if fail_if_db_exists {
                return Err(PgApplyError::DatabaseExists {
                    database: database.to_owned(),
                });
            }
        } else {
            admin
                .batch_execute(&format!(
                    "CREATE DATABASE {} OWNER {}",
                    quote_ident_pg(database),
                    quote_ident_pg(&role)
                ))
                .await
                .map_err(|source| PgApplyError::CreateDatabase {
                    database: database.to_owned(),
                    source,
                })?;
            job.mark_created();
        }
        Ok(())
    }

    /// Runs the upload in one transaction, connected to `database` as `PROVISION_ROLE`.
    async fn run_file(
        &self,
        target: Target<'_>,
        job: &mut dyn JobProgress,
    ) -> Result<(), PgApplyError> {
        let mut client = self.connect_role(target.database).await?;
        let bounds = bounds_sql(self.bounds);
        let tx = client.transaction().await.map_err(query_error)?;
        let mut reader = PieceReader::open(target.upload, Dialect::Postgres).await?;
        let mut run = Run {
            tx: &tx,
            statements: 0,
            copy: None,
            bounds: bounds.as_deref(),
        };
        while let Some(piece) = reader.next().await? {
            run.piece(piece, job)
                .await
                .map_err(|e| explain_bound(e, self.bounds))?;
        }
        if let Some((_, line)) = run.copy {
            return Err(PgApplyError::CopyUnterminated { line });
        }
        tx.commit().await.map_err(PgApplyError::Commit)
    }
}

/// One file being run in a transaction.
struct Run<'t> {
    tx: &'t Transaction<'t>,
    statements: u64,
    /// The open `COPY … FROM stdin` and its line.
    copy: Option<(Pin<Box<CopyInSink<Bytes>>>, u64)>,
    /// The `SET`s of the bounds, run again after a statement of the file that changes them.
    bounds: Option<&'t str>,
}

impl Run<'_> {
    async fn piece(&mut self, piece: Piece, job: &mut dyn JobProgress) -> Result<(), PgApplyError> {
        match piece {
            Piece::Statement {
                sql,
                line,
                end,
                copy_from_stdin,
            } => {
                if copy_from_stdin {
                    let sink = self
                        .tx
                        .copy_in::<_, Bytes>(sql.as_str())
                        .await
                        .map_err(|e| statement_error(line, &sql, e))?;
                    self.copy = Some((Box::pin(sink), line));
                } else {
                    self.tx
                        .batch_execute(&sql)
                        .await
                        .map_err(|e| statement_error(line, &sql, e))?;
                    if let Some(bounds) = self.bounds.filter(|_| touches_bounds(&sql)) {
                        // pg_dump files start with SET statement_timeout = 0 and
                        // lock_timeout = 0: the bounds hold for the statements after it.
                        self.tx.batch_execute(bounds).await.map_err(query_error)?;
                    }
                }
                self.statements += 1;
                job.progress(end, self.statements);
            }
            Piece::CopyData { data, end } => {
                let Some((sink, line)) = self.copy.as_mut() else {
                    return Err(PgApplyError::CopyDataOutsideCopy);
                };
                sink.send(data)
                    .await
                    .map_err(|source| PgApplyError::Server {
                        line: Some(*line),
                        source,
                    })?;
                job.progress(end, self.statements);
            }
            Piece::CopyEnd { line: _, end } => {
                let Some((mut sink, line)) = self.copy.take() else {
                    return Err(PgApplyError::CopyEndOutsideCopy);
                };
                sink.as_mut()
                    .finish()
                    .await
                    .map_err(|source| PgApplyError::Server {
                        line: Some(line),
                        source,
                    })?;
                job.progress(end, self.statements);
            }
            Piece::Meta { end, .. } => job.progress(end, self.statements),
        }
        Ok(())
    }
}

impl PgApplier {
    /// The server's version (`SHOW server_version`), through the admin connection.
    pub(super) async fn version(&self) -> Result<String, PgApplyError> {
        let admin = self.connect_admin().await?;
        let row = admin
            .query_one("SHOW server_version", &[])
            .await
            .map_err(query_error)?;
        Ok(format!("PostgreSQL {}", row.get::<_, String>(0)))
    }

    /// Connects to `database` as `PROVISION_ROLE`, with the bounds in force.
    async fn connect_role(&self, database: &str) -> Result<tokio_postgres::Client, PgApplyError> {
        let mut info = self.admin.clone();
        info.user = self.role.clone();
        info.password = self.role_password.clone();
        info.dbname = database.to_owned();
        let client = connect_sql(&info)
            .await
            .map_err(|source| PgApplyError::ConnectRole {
                server: self.server.clone(),
                database: database.to_owned(),
                role: self.role.clone(),
                source,
            })?;
        if let Some(sql) = bounds_sql(self.bounds) {
            client.batch_execute(&sql).await.map_err(query_error)?;
        }
        Ok(client)
    }

    /// Applies migration `m` to `database` in one transaction, as `PROVISION_ROLE`: the file's
    /// statements and the row in `dbmazz_schema_migrations` commit together, or nothing does.
    /// A database that has the migration id with the same SHA-256 is skipped; with another
    /// SHA-256 it is an error (a changed file needs a new id).
    pub(super) async fn migrate(
        &self,
        database: &str,
        m: Migration<'_>,
    ) -> Result<Migrated, PgApplyError> {
        let mut client = self.connect_role(database).await?;
        client
            .batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} (id text PRIMARY KEY, \
                 sha256 text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now(), \
                 job_id text NOT NULL, statements bigint NOT NULL)"
            ))
            .await
            .map_err(query_error)?;
        let tx = client.transaction().await.map_err(query_error)?;
        // Two appliers of the same database (two dbmazz) take turns.
        tx.batch_execute(&format!(
            "LOCK TABLE {MIGRATIONS_TABLE} IN SHARE ROW EXCLUSIVE MODE"
        ))
        .await
        .map_err(|e| explain_bound(statement_error(0, "", e), self.bounds))?;
        let recorded = tx
            .query_opt(
                &format!("SELECT sha256 FROM {MIGRATIONS_TABLE} WHERE id = $1"),
                &[&m.id],
            )
            .await
            .map_err(query_error)?;
        if let Some(row) = recorded {
            let sha: String = row.get(0);
            if sha == m.sha256 {
                return Ok(Migrated::Skipped);
            }
            return Err(PgApplyError::ChecksumMismatch {
                id: m.id.to_owned(),
                recorded: sha,
            });
        }
        let bounds = bounds_sql(self.bounds);
        let mut reader = PieceReader::open(m.upload, Dialect::Postgres).await?;
        let mut run = Run {
            tx: &tx,
            statements: 0,
            copy: None,
            bounds: bounds.as_deref(),
        };
        while let Some(piece) = reader.next().await? {
            run.piece(piece, &mut NoProgress)
                .await
                .map_err(|e| explain_bound(e, self.bounds))?;
        }
        if let Some((_, line)) = run.copy {
            return Err(PgApplyError::CopyUnterminated { line });
        }
        let statements = run.statements;
        tx.execute(
            &format!(
                "INSERT INTO {MIGRATIONS_TABLE} (id, sha256, job_id, statements) \
                 VALUES ($1, $2, $3, $4)"
            ),
            &[&m.id, &m.sha256, &m.job_id, &(statements as i64)],
        )
        .await
        .map_err(query_error)?;
        tx.commit().await.map_err(PgApplyError::Commit)?;
        Ok(Migrated::Applied { statements })
    }

    /// The SHA-256 `database` records for migration `id`, if any (what a restart reconciles
    /// the registry with).
    pub(super) async fn recorded_migration(
        &self,
        database: &str,
        id: &str,
    ) -> Result<Option<String>, PgApplyError> {
        let client = self.connect_role(database).await?;
        let exists = client
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&MIGRATIONS_TABLE])
            .await
            .map_err(query_error)?
            .get::<_, bool>(0);
        if !exists {
            return Ok(None);
        }
        Ok(client
            .query_opt(
                &format!("SELECT sha256 FROM {MIGRATIONS_TABLE} WHERE id = $1"),
                &[&id],
            )
            .await
            .map_err(query_error)?
            .map(|r| r.get(0)))
    }
}

impl PgApplyError {
    /// Whether the server could not be reached at all (connection refused, timed out, no
    /// route): the other databases of that server would fail the same way.
    pub(super) fn is_unreachable(&self) -> bool {
        match self {
            PgApplyError::ConnectAdmin { source, .. }
            | PgApplyError::ConnectRole { source, .. } => {
                matches!(
                    source,
                    ConnectError::Timeout { .. } | ConnectError::Connect { code: None, .. }
                )
            }
            _ => false,
        }
    }

    /// The line of the file a failure is at, if a statement failed.
    pub(super) fn line(&self) -> Option<u64> {
        match self {
            PgApplyError::Server { line, .. } => line.filter(|l| *l > 0),
            PgApplyError::Bounded { line, .. } | PgApplyError::CopyUnterminated { line } => {
                Some(*line)
            }
            _ => None,
        }
    }
}

impl Applier for PgApplier {
    type Error = PgApplyError;

    async fn apply(
        &self,
        target: Target<'_>,
        job: &mut dyn JobProgress,
    ) -> Result<(), PgApplyError> {
        job.set_stage(JobStep::CreatingDatabase);
        self.create_database(target.database, target.fail_if_db_exists, job)
            .await?;
        job.set_stage(JobStep::ApplyingSchema);
        self.run_file(target, job).await
    }

    async fn drop_database(&self, name: &str) -> Result<(bool, u32), PgApplyError> {
        let admin = self.connect_admin().await?;
        let exists = admin
            .query_opt(
                "SELECT 1 FROM pg_catalog.pg_database WHERE datname = $1",
                &[&name],
            )
            .await
            .map_err(query_error)?
            .is_some();
        if !exists {
            return Ok((false, 0));
        }
        let terminated: i64 = admin
            .query_one(
                "SELECT count(*) FILTER (WHERE pg_catalog.pg_terminate_backend(pid)) \
                 FROM pg_catalog.pg_stat_activity WHERE datname = $1 AND pid <> pg_catalog.pg_backend_pid()",
                &[&name],
            )
            .await
            .map_err(|source| PgApplyError::TerminateConnections {
                name: name.to_owned(),
                source,
            })?
            .get(0);
        admin
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                quote_ident_pg(name)
            ))
            .await
            .map_err(|source| PgApplyError::DropDatabase {
                name: name.to_owned(),
                source,
            })?;
        Ok((true, terminated.max(0) as u32))
    }
}

/// Whether a connection failed before reaching the server (refused, timed out, no route), as
/// opposed to the server refusing it.
fn unreachable(e: &ConnectError) -> bool {
    matches!(
        e,
        ConnectError::Timeout { .. } | ConnectError::Connect { code: None, .. }
    )
}

/// The `SET`s that put `bounds` in force in a session; `None` when neither is set.
fn bounds_sql(bounds: Bounds) -> Option<String> {
    let mut sql = String::new();
    if let Some(d) = bounds.statement {
        sql.push_str(&format!("SET statement_timeout = {};", d.as_millis()));
    }
    if let Some(d) = bounds.lock {
        sql.push_str(&format!("SET lock_timeout = {};", d.as_millis()));
    }
    (!sql.is_empty()).then_some(sql)
}

/// Whether a statement may change the bounds of the session: it names either setting
/// (`SET`, `set_config`, `ALTER ROLE … SET`) or resets settings.
fn touches_bounds(sql: &str) -> bool {
    let lower = sql.trim_start().to_ascii_lowercase();
    lower.starts_with("reset")
        || lower.contains("statement_timeout")
        || lower.contains("lock_timeout")
}

/// Names the bound a statement ran into, when the server cancelled it for one.
fn explain_bound(e: PgApplyError, bounds: Bounds) -> PgApplyError {
    let PgApplyError::Server {
        line: Some(line),
        source,
    } = e
    else {
        return e;
    };
    let code = source.as_db_error().map(|db| db.code().clone());
    let bound = match (code, bounds.statement, bounds.lock) {
        (Some(c), Some(d), _) if c == SqlState::QUERY_CANCELED => format!(
            "the statement ran longer than SCHEMA_STATEMENT_TIMEOUT_MS ({} ms); raise it, or \
             set it to 0 for no bound",
            d.as_millis()
        ),
        (Some(c), _, Some(d)) if c == SqlState::LOCK_NOT_AVAILABLE => format!(
            "the statement waited longer than SCHEMA_LOCK_TIMEOUT_MS ({} ms) for a lock another \
             session holds; retry when it is released, or raise SCHEMA_LOCK_TIMEOUT_MS",
            d.as_millis()
        ),
        _ => {
            return PgApplyError::Server {
                line: Some(line),
                source,
            }
        }
    };
    PgApplyError::Bounded {
        line,
        source,
        bound,
    }
}

/// A statement's failure: the line of the error within the file (from the server's position
/// when it gives one), the server's message, detail, hint and context.
fn statement_error(line: u64, sql: &str, source: tokio_postgres::Error) -> PgApplyError {
    let mut at = line;
    if let Some(db) = source.as_db_error() {
        if let Some(tokio_postgres::error::ErrorPosition::Original(pos)) = db.position() {
            let upto: String = sql
                .chars()
                .take((*pos as usize).saturating_sub(1))
                .collect();
            at += upto.matches('\n').count() as u64;
        }
    }
    PgApplyError::Server {
        line: Some(at),
        source,
    }
}

/// The text of [`PgApplyError::Server`]: the line, when there is one, and the server's message.
fn server_error(line: Option<u64>, e: &tokio_postgres::Error) -> String {
    match line {
        Some(line) => format!("line {line}: {}", db_message(e)),
        None => db_message(e),
    }
}

/// The server's message with its detail, hint and context, or the client error.
fn db_message(e: &tokio_postgres::Error) -> String {
    let Some(db) = e.as_db_error() else {
        return e.to_string();
    };
    let mut extra = Vec::new();
    if let Some(d) = db.detail() {
        extra.push(format!("DETAIL: {d}"));
    }
    if let Some(h) = db.hint() {
        extra.push(format!("HINT: {h}"));
    }
    if let Some(w) = db.where_() {
        extra.push(format!("CONTEXT: {}", w.replace('\n', "; ")));
    }
    if extra.is_empty() {
        format!("{} (SQLSTATE {})", db.message(), db.code().code())
    } else {
        format!(
            "{} ({}; SQLSTATE {})",
            db.message(),
            extra.join("; "),
            db.code().code()
        )
    }
}
