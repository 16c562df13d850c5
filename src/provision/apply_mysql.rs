//! Applying a schema to MySQL 8 or MariaDB: the admin connection creates the database and
//! grants it to `PROVISION_ROLE`, then a connection *as that account* runs the statements in
//! order. MySQL DDL is not transactional, so a failure is cleaned up by dropping the database
//! (`SCHEMA_DROP_DB_ON_FAILURE`, done by the job runner).
//!
//! `LOAD DATA LOCAL INFILE` cannot read dbmazz's files: no local-infile handler is installed,
//! so the driver answers such a request with an error, and the guard refuses `LOAD` anyway.
//! The account only gets privileges on its own database, never `FILE`, so server files are out
//! of reach too.

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder};

use super::applier::{Applier, JobProgress, Migrated, Migration, Target, MIGRATIONS_TABLE};
use super::config::Bounds;
use super::job::JobStep;
use super::names::quote_ident_mysql;
use super::servers::{Admin, ServerDef};
use super::split::{Dialect, Piece};
use super::upload::{PieceError, PieceReader};
use crate::secret::Secret;

/// Why applying to (or dropping a database on) MySQL failed; the text is the job's error.
#[derive(Debug, thiserror::Error)]
pub(super) enum MySqlApplyError {
    /// `PROVISION_MYSQL_URL` does not parse as a MySQL URL.
    #[error("PROVISION_MYSQL_URL is not a valid URL")]
    InvalidUrl(#[source] mysql_async::UrlError),
    /// The admin connection of the server failed.
    #[error("cannot connect to server {server} ({place}) as its admin: {}", message(.source))]
    ConnectAdmin {
        /// The server's name.
        server: String,
        /// `host:port`.
        place: String,
        /// Why.
        source: mysql_async::Error,
    },
    /// The server refused a query.
    #[error("{}", message(.0))]
    Server(#[source] mysql_async::Error),
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
    #[error("cannot create database {database}: {}", message(.source))]
    CreateDatabase {
        /// The target database.
        database: String,
        /// The server's answer.
        source: mysql_async::Error,
    },
    /// GRANT to the role's account failed.
    #[error(
        "cannot grant database {database} to PROVISION_ROLE {role}: {} (create the account \
         first: CREATE USER {account} IDENTIFIED BY '…')",
        message(.source)
    )]
    Grant {
        /// The target database.
        database: String,
        /// `PROVISION_ROLE`.
        role: String,
        /// `'role'@'host'`.
        account: String,
        /// The server's answer.
        source: mysql_async::Error,
    },
    /// The connection as `PROVISION_ROLE` failed.
    #[error(
        "cannot connect to database {database} of server {server} as PROVISION_ROLE {role}: {} \
         ({})",
        message(.source),
        if matches!(source, mysql_async::Error::Io(_) | mysql_async::Error::Driver(_)) {
            "is the server up?"
        } else {
            "check PROVISION_ROLE_PASSWORD and PROVISION_MYSQL_ROLE_HOST"
        }
    )]
    ConnectRole {
        /// The server's name.
        server: String,
        /// The target database.
        database: String,
        /// `PROVISION_ROLE`.
        role: String,
        /// Why.
        source: mysql_async::Error,
    },
    /// A statement of the file failed.
    #[error("line {line}: {}", message(.source))]
    Statement {
        /// 1-based line of the statement in the file.
        line: u64,
        /// The server's answer.
        source: mysql_async::Error,
    },
    /// A statement of the file waited for a lock longer than `SCHEMA_LOCK_TIMEOUT_MS`.
    #[error(
        "line {line}: {}; the statement waited longer than SCHEMA_LOCK_TIMEOUT_MS ({ms} ms) for \
         a lock another session holds; retry when it is released, or raise \
         SCHEMA_LOCK_TIMEOUT_MS",
        message(.source)
    )]
    LockTimeout {
        /// 1-based line of the statement in the file.
        line: u64,
        /// `SCHEMA_LOCK_TIMEOUT_MS`.
        ms: u128,
        /// The server's answer.
        source: mysql_async::Error,
    },
    /// A statement of the file ran longer than `SCHEMA_STATEMENT_TIMEOUT_MS`; dbmazz killed it.
    #[error(
        "line {line}: the statement ran longer than SCHEMA_STATEMENT_TIMEOUT_MS ({ms} ms) and \
         was killed (KILL QUERY {connection}{}); raise it, or set it to 0 for no bound",
        kill_failure.as_deref().map(|e| format!(", which failed: {e}")).unwrap_or_default()
    )]
    StatementTimeout {
        /// 1-based line of the statement in the file.
        line: u64,
        /// `SCHEMA_STATEMENT_TIMEOUT_MS`.
        ms: u128,
        /// The connection whose query was killed.
        connection: u32,
        /// Why the kill failed, when it did.
        kill_failure: Option<String>,
    },
    /// The database recorded this migration id as applied with another file.
    #[error(
        "migration {id} was applied to this database with another file (SHA-256 {recorded}); \
         a changed migration needs a new migration id"
    )]
    ChecksumMismatch {
        /// The migration id.
        id: String,
        /// The SHA-256 the database recorded.
        recorded: String,
    },
    /// A migration failed after some of its statements ran (MySQL DDL does not roll back).
    #[error(
        "{source}; the {applied} statement(s) before it were applied and stay (MySQL DDL is \
         not transactional)"
    )]
    Partial {
        /// Statements applied before the failure.
        applied: u64,
        /// The failure.
        source: Box<MySqlApplyError>,
    },
    /// The stored upload cannot be read back.
    #[error(transparent)]
    Pieces(#[from] PieceError),
    /// COPY data in a MySQL file.
    #[error("COPY data is PostgreSQL-only")]
    CopyData,
    /// Listing the connections to a database before dropping it failed.
    #[error("cannot list the connections to {name}: {}", message(.source))]
    ListConnections {
        /// The database.
        name: String,
        /// The server's answer.
        source: mysql_async::Error,
    },
    /// DROP DATABASE failed.
    #[error("cannot drop database {name}: {}", message(.source))]
    DropDatabase {
        /// The database.
        name: String,
        /// The server's answer.
        source: mysql_async::Error,
    },
}

/// Applies uploads to the MySQL or MariaDB server of `PROVISION_MYSQL_URL`.
pub(super) struct MySqlApplier {
    /// The server's name.
    server: String,
    /// Its admin URL.
    url: Secret,
    /// `PROVISION_ROLE`.
    role: String,
    /// `PROVISION_ROLE_PASSWORD`.
    role_password: Option<Secret>,
    /// `PROVISION_MYSQL_ROLE_HOST`.
    role_host: String,
    /// `SCHEMA_STATEMENT_TIMEOUT_MS`, `SCHEMA_LOCK_TIMEOUT_MS`.
    bounds: Bounds,
}

impl MySqlApplier {
    /// The applier for `server` (a MySQL server), or `None` for another engine.
    pub(super) fn new(server: &ServerDef, bounds: Bounds) -> Option<MySqlApplier> {
        let Admin::Mysql(url) = &server.admin else {
            return None;
        };
        Some(MySqlApplier {
            server: server.name.clone(),
            url: url.clone(),
            role: server.role.clone(),
            role_password: server.role_password.clone(),
            role_host: server.mysql_role_host.clone(),
            bounds,
        })
    }

    fn admin_opts(&self) -> Result<Opts, mysql_async::UrlError> {
        Opts::from_url(self.url.expose())
    }

    async fn connect_admin(&self) -> Result<Conn, MySqlApplyError> {
        let opts = self.admin_opts().map_err(MySqlApplyError::InvalidUrl)?;
        let place = format!("{}:{}", opts.ip_or_hostname(), opts.tcp_port());
        Conn::new(opts)
            .await
            .map_err(|source| MySqlApplyError::ConnectAdmin {
                server: self.server.clone(),
                place,
                source,
            })
    }

    /// `'role'@'host'`.
    fn account(&self) -> String {
        format!("'{}'@'{}'", self.role, self.role_host)
    }

    /// Creates `database` unless it exists, and grants it to the role's account.
    async fn create_database(
        &self,
        database: &str,
        fail_if_db_exists: bool,
        job: &mut dyn JobProgress,
    ) -> Result<(), MySqlApplyError> {
        let mut admin = self.connect_admin().await?;
        let exists: Option<String> = admin
            .exec_first(
                "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?",
                (database,),
            )
            .await
            .map_err(MySqlApplyError::Server)?;
        if exists.is_some() {
            if fail_if_db_exists {
                return Err(MySqlApplyError::DatabaseExists {
                    database: database.to_owned(),
                });
            }
        } else {
            admin
                .query_drop(format!(
                    "CREATE DATABASE {} CHARACTER SET utf8mb4",
                    quote_ident_mysql(database)
                ))
                .await
                .map_err(|source| MySqlApplyError::CreateDatabase {
                    database: database.to_owned(),
                    source,
                })?;
            job.mark_created();
        }
        admin
            .query_drop(format!(
                "GRANT ALL PRIVILEGES ON {}.* TO {}",
                quote_ident_mysql(database),
                self.account()
            ))
            .await
            .map_err(|source| MySqlApplyError::Grant {
                database: database.to_owned(),
                role: self.role.clone(),
                account: self.account(),
                source,
            })?;
        let _ = admin.disconnect().await;
        Ok(())
    }

    /// Runs the upload's statements in order, connected to the database as `PROVISION_ROLE`.
    async fn run_file(
        &self,
        target: Target<'_>,
        job: &mut dyn JobProgress,
    ) -> Result<(), MySqlApplyError> {
        let mut conn = self.connect_role(target.database).await?;
        let lock_sql = self.lock_sql();
        let mut reader = PieceReader::open(target.upload, Dialect::MySql).await?;
        let mut statements = 0u64;
        let result = async {
            while let Some(piece) = reader.next().await? {
                match piece {
                    Piece::Statement { sql, line, end, .. } => {
                        self.statement(&mut conn, &sql, line).await?;
                        if let Some(bound) = lock_sql
                            .as_deref()
                            .filter(|_| sql.to_ascii_lowercase().contains("lock_wait_timeout"))
                        {
                            conn.query_drop(bound)
                                .await
                                .map_err(MySqlApplyError::Server)?;
                        }
                        statements += 1;
                        job.progress(end, statements);
                    }
                    Piece::Meta { end, .. } => job.progress(end, statements),
                    Piece::CopyData { .. } | Piece::CopyEnd { .. } => {
                        return Err(MySqlApplyError::CopyData)
                    }
                }
            }
            Ok(())
        }
        .await;
        let _ = conn.disconnect().await;
        result
    }
}

impl MySqlApplier {
    /// Runs one statement of the file within `SCHEMA_STATEMENT_TIMEOUT_MS` (killing it through
    /// the admin connection when it runs over), naming `SCHEMA_LOCK_TIMEOUT_MS` when a lock
    /// wait ended it.
    async fn statement(
        &self,
        conn: &mut Conn,
        sql: &str,
        line: u64,
    ) -> Result<(), MySqlApplyError> {
        let id = conn.id();
        let run = conn.query_drop(sql);
        let result = match self.bounds.statement {
            None => run.await,
            Some(limit) => match tokio::time::timeout(limit, run).await {
                Ok(r) => r,
                Err(_) => {
                    let kill = async {
                        let mut admin = self.connect_admin().await?;
                        let killed = admin.query_drop(format!("KILL QUERY {id}")).await;
                        let _ = admin.disconnect().await;
                        killed.map_err(MySqlApplyError::Server)
                    };
                    return Err(MySqlApplyError::StatementTimeout {
                        line,
                        ms: limit.as_millis(),
                        connection: id,
                        kill_failure: kill.await.err().map(|e| e.to_string()),
                    });
                }
            },
        };
        result.map_err(|source| match (&source, self.bounds.lock) {
            // ER_LOCK_WAIT_TIMEOUT: both lock_wait_timeout and innodb_lock_wait_timeout.
            (mysql_async::Error::Server(e), Some(d)) if e.code == 1205 => {
                MySqlApplyError::LockTimeout {
                    line,
                    ms: d.as_millis(),
                    source,
                }
            }
            _ => MySqlApplyError::Statement { line, source },
        })
    }
}

impl MySqlApplier {
    /// The server's version (`SELECT VERSION()`), through the admin connection.
    pub(super) async fn version(&self) -> Result<String, MySqlApplyError> {
        let mut admin = self.connect_admin().await?;
        let v: Option<String> = admin
            .query_first("SELECT VERSION()")
            .await
            .map_err(MySqlApplyError::Server)?;
        let _ = admin.disconnect().await;
        let v = v.unwrap_or_default();
        let kind = if v.to_ascii_lowercase().contains("mariadb") {
            "MariaDB"
        } else {
            "MySQL"
        };
        Ok(format!("{kind} {v}"))
    }

    /// Connects to `database` as `PROVISION_ROLE`, with the lock bound in force.
    async fn connect_role(&self, database: &str) -> Result<Conn, MySqlApplyError> {
        let opts = self.admin_opts().map_err(MySqlApplyError::InvalidUrl)?;
        let role_opts = OptsBuilder::from_opts(opts)
            .user(Some(self.role.clone()))
            .pass(self.role_password.as_ref().map(|p| p.expose().to_owned()))
            .db_name(Some(database.to_owned()));
        let mut conn =
            Conn::new(role_opts)
                .await
                .map_err(|source| MySqlApplyError::ConnectRole {
                    server: self.server.clone(),
                    database: database.to_owned(),
                    role: self.role.clone(),
                    source,
                })?;
        if let Some(sql) = self.lock_sql() {
            conn.query_drop(sql)
                .await
                .map_err(MySqlApplyError::Server)?;
        }
        Ok(conn)
    }

    /// The `SET` of `SCHEMA_LOCK_TIMEOUT_MS`. MySQL bounds lock waits in whole seconds
    /// (metadata locks and InnoDB row locks); there is no server-side bound on every kind of
    /// statement, so dbmazz times them itself ([`MySqlApplier::statement`]).
    fn lock_sql(&self) -> Option<String> {
        self.bounds.lock.map(|d| {
            let secs = d.as_millis().div_ceil(1000).max(1);
            format!("SET SESSION lock_wait_timeout = {secs}, innodb_lock_wait_timeout = {secs}")
        })
    }

    /// Applies migration `m` to `database` statement by statement, as `PROVISION_ROLE`. MySQL
    /// DDL is not transactional: a failure leaves the statements before it applied, and the
    /// error says how many; `dbmazz_schema_migrations` records the migration as failed (a
    /// re-run runs the whole file again) or, at the end, as applied. A database that applied
    /// this id with the same SHA-256 is skipped; with another SHA-256 it is an error.
    pub(super) async fn migrate(
        &self,
        database: &str,
        m: Migration<'_>,
    ) -> Result<Migrated, MySqlApplyError> {
        let mut conn = self.connect_role(database).await?;
        let result = self.migrate_on(&mut conn, m).await;
        let _ = conn.disconnect().await;
        result
    }

    async fn migrate_on(
        &self,
        conn: &mut Conn,
        m: Migration<'_>,
    ) -> Result<Migrated, MySqlApplyError> {
        conn.query_drop(format!(
            "CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} (id VARCHAR(128) NOT NULL PRIMARY KEY, \
             sha256 CHAR(64) NOT NULL, status VARCHAR(16) NOT NULL, statements INT NOT NULL, \
             applied_at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3), \
             job_id VARCHAR(64) NOT NULL, error TEXT)"
        ))
        .await
        .map_err(MySqlApplyError::Server)?;
        let recorded: Option<(String, String)> = conn
            .exec_first(
                format!("SELECT sha256, status FROM {MIGRATIONS_TABLE} WHERE id = ?"),
                (m.id,),
            )
            .await
            .map_err(MySqlApplyError::Server)?;
        if let Some((sha, status)) = recorded {
            if status == "applied" {
                if sha == m.sha256 {
                    return Ok(Migrated::Skipped);
                }
                return Err(MySqlApplyError::ChecksumMismatch {
                    id: m.id.to_owned(),
                    recorded: sha,
                });
            }
        }
        let record = |status: &'static str, statements: u64, error: Option<String>| {
            (
                format!(
                    "REPLACE INTO {MIGRATIONS_TABLE} (id, sha256, status, statements, job_id, \
                     error) VALUES (?, ?, ?, ?, ?, ?)"
                ),
                (
                    m.id.to_owned(),
                    m.sha256.to_owned(),
                    status,
                    statements,
                    m.job_id.to_owned(),
                    error,
                ),
            )
        };
        let mut reader = PieceReader::open(m.upload, Dialect::MySql).await?;
        let mut statements = 0u64;
        let failure = loop {
            let piece = match reader.next().await {
                Ok(Some(p)) => p,
                Ok(None) => break None,
                Err(e) => break Some(MySqlApplyError::from(e)),
            };
            match piece {
                Piece::Statement { sql, line, .. } => {
                    if let Err(e) = self.statement(conn, &sql, line).await {
                        break Some(e);
                    }
                    statements += 1;
                }
                Piece::Meta { .. } => {}
                Piece::CopyData { .. } | Piece::CopyEnd { .. } => {
                    break Some(MySqlApplyError::CopyData)
                }
            }
        };
        match failure {
            None => {
                let (sql, params) = record("applied", statements, None);
                conn.exec_drop(sql, params)
                    .await
                    .map_err(MySqlApplyError::Server)?;
                Ok(Migrated::Applied { statements })
            }
            Some(e) => {
                let e = MySqlApplyError::Partial {
                    applied: statements,
                    source: Box::new(e),
                };
                // A killed statement may leave the connection unusable: the record is best
                // effort, the job reports the failure either way.
                let (sql, params) = record("failed", statements, Some(e.to_string()));
                let _ = conn.exec_drop(sql, params).await;
                Err(e)
            }
        }
    }

    /// The SHA-256 `database` records as applied for migration `id`, if any.
    pub(super) async fn recorded_migration(
        &self,
        database: &str,
        id: &str,
    ) -> Result<Option<String>, MySqlApplyError> {
        let mut conn = self.connect_role(database).await?;
        let found: Result<Option<String>, _> = conn
            .exec_first(
                format!(
                    "SELECT sha256 FROM {MIGRATIONS_TABLE} WHERE id = ? AND status = 'applied'"
                ),
                (id,),
            )
            .await;
        let _ = conn.disconnect().await;
        match found {
            Ok(v) => Ok(v),
            // ER_NO_SUCH_TABLE: no migration ever ran there.
            Err(mysql_async::Error::Server(e)) if e.code == 1146 => Ok(None),
            Err(e) => Err(MySqlApplyError::Server(e)),
        }
    }
}

impl MySqlApplyError {
    /// Whether the server could not be reached at all (the other databases of that server
    /// would fail the same way).
    pub(super) fn is_unreachable(&self) -> bool {
        match self {
            MySqlApplyError::ConnectAdmin { source, .. }
            | MySqlApplyError::ConnectRole { source, .. } => {
                matches!(
                    source,
                    mysql_async::Error::Io(_) | mysql_async::Error::Driver(_)
                )
            }
            _ => false,
        }
    }

    /// The line of the file a failure is at, if a statement failed.
    pub(super) fn line(&self) -> Option<u64> {
        match self {
            MySqlApplyError::Statement { line, .. }
            | MySqlApplyError::LockTimeout { line, .. }
            | MySqlApplyError::StatementTimeout { line, .. } => Some(*line),
            MySqlApplyError::Partial { source, .. } => source.line(),
            _ => None,
        }
    }
}

impl Applier for MySqlApplier {
    type Error = MySqlApplyError;

    async fn apply(
        &self,
        target: Target<'_>,
        job: &mut dyn JobProgress,
    ) -> Result<(), MySqlApplyError> {
        job.set_stage(JobStep::CreatingDatabase);
        self.create_database(target.database, target.fail_if_db_exists, job)
            .await?;
        job.set_stage(JobStep::ApplyingSchema);
        self.run_file(target, job).await
    }

    async fn drop_database(&self, name: &str) -> Result<(bool, u32), MySqlApplyError> {
        let mut admin = self.connect_admin().await?;
        let exists: Option<String> = admin
            .exec_first(
                "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?",
                (name,),
            )
            .await
            .map_err(MySqlApplyError::Server)?;
        if exists.is_none() {
            return Ok((false, 0));
        }
        let own: u64 = admin
            .query_first("SELECT CONNECTION_ID()")
            .await
            .map_err(MySqlApplyError::Server)?
            .unwrap_or(0);
        let ids: Vec<u64> = admin
            .exec(
                "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = ?",
                (name,),
            )
            .await
            .map_err(|source| MySqlApplyError::ListConnections {
                name: name.to_owned(),
                source,
            })?;
        let mut terminated = 0u32;
        for id in ids.into_iter().filter(|id| *id != own) {
            if admin
                .query_drop(format!("KILL CONNECTION {id}"))
                .await
                .is_ok()
            {
                terminated += 1;
            }
        }
        admin
            .query_drop(format!(
                "DROP DATABASE IF EXISTS {}",
                quote_ident_mysql(name)
            ))
            .await
            .map_err(|source| MySqlApplyError::DropDatabase {
                name: name.to_owned(),
                source,
            })?;
        let _ = admin.disconnect().await;
        Ok((true, terminated))
    }
}

/// The server's message with its code, or the client error.
fn message(e: &mysql_async::Error) -> String {
    match e {
        mysql_async::Error::Server(s) => format!("{} (ERROR {} ({}))", s.message, s.code, s.state),
        other => other.to_string(),
    }
}
