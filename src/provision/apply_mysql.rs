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

use super::applier::{Applier, JobProgress, Target};
use super::config::{Bounds, ProvisionConfig};
use super::job::JobStep;
use super::names::quote_ident_mysql;
use super::split::{Dialect, Piece};
use super::upload::{PieceError, PieceReader};
use crate::secret::Secret;

/// Why applying to (or dropping a database on) MySQL failed; the text is the job's error.
#[derive(Debug, thiserror::Error)]
pub(super) enum MySqlApplyError {
    /// `PROVISION_MYSQL_URL` does not parse as a MySQL URL.
    #[error("PROVISION_MYSQL_URL is not a valid URL")]
    InvalidUrl(#[source] mysql_async::UrlError),
    /// The admin connection (`PROVISION_MYSQL_URL`) failed.
    #[error("cannot connect to PROVISION_MYSQL_URL ({place}): {}", message(.source))]
    ConnectAdmin {
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
        "cannot connect to database {database} as PROVISION_ROLE {role}: {} (check \
         PROVISION_ROLE_PASSWORD and PROVISION_MYSQL_ROLE_HOST)",
        message(.source)
    )]
    ConnectRole {
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
    /// `PROVISION_MYSQL_URL`.
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
    /// The applier for `cfg`, or `None` when `PROVISION_MYSQL_URL` is not set.
    pub(super) fn new(cfg: &ProvisionConfig) -> Option<MySqlApplier> {
        Some(MySqlApplier {
            url: cfg.mysql.clone()?,
            role: cfg.role.clone(),
            role_password: cfg.role_password.clone(),
            role_host: cfg.mysql_role_host.clone(),
            bounds: cfg.bounds,
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
            .map_err(|source| MySqlApplyError::ConnectAdmin { place, source })
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
        opts: Opts,
        target: Target<'_>,
        job: &mut dyn JobProgress,
    ) -> Result<(), MySqlApplyError> {
        let database = target.database;
        let role_opts = OptsBuilder::from_opts(opts)
            .user(Some(self.role.clone()))
            .pass(self.role_password.as_ref().map(|p| p.expose().to_owned()))
            .db_name(Some(database.to_owned()));
        let mut conn =
            Conn::new(role_opts)
                .await
                .map_err(|source| MySqlApplyError::ConnectRole {
                    database: database.to_owned(),
                    role: self.role.clone(),
                    source,
                })?;
        // MySQL bounds lock waits in whole seconds (metadata locks and InnoDB row locks); there
        // is no server-side bound on every kind of statement, so dbmazz times them itself.
        let lock_sql = self.bounds.lock.map(|d| {
            let secs = d.as_millis().div_ceil(1000).max(1);
            format!("SET SESSION lock_wait_timeout = {secs}, innodb_lock_wait_timeout = {secs}")
        });
        let mut reader = PieceReader::open(target.upload, Dialect::MySql).await?;
        let mut statements = 0u64;
        let result = async {
            if let Some(sql) = &lock_sql {
                conn.query_drop(sql)
                    .await
                    .map_err(MySqlApplyError::Server)?;
            }
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

impl Applier for MySqlApplier {
    type Error = MySqlApplyError;

    async fn apply(
        &self,
        target: Target<'_>,
        job: &mut dyn JobProgress,
    ) -> Result<(), MySqlApplyError> {
        job.set_stage(JobStep::CreatingDatabase);
        let opts = self.admin_opts().map_err(MySqlApplyError::InvalidUrl)?;
        self.create_database(target.database, target.fail_if_db_exists, job)
            .await?;
        job.set_stage(JobStep::ApplyingSchema);
        self.run_file(opts, target, job).await
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
