//! Applying a schema to MySQL 8 or MariaDB: the admin connection creates the database and
//! grants it to `PROVISION_ROLE`, then a connection *as that account* runs the statements in
//! order. MySQL DDL is not transactional, so a failure is cleaned up by dropping the database
//! (`SCHEMA_DROP_DB_ON_FAILURE`, done by the engine).
//!
//! `LOAD DATA LOCAL INFILE` cannot read dbmazz's files: no local-infile handler is installed,
//! so the driver answers such a request with an error, and the guard refuses `LOAD` anyway.
//! The account only gets privileges on its own database, never `FILE`, so server files are out
//! of reach too.

use std::path::Path;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder};

use super::config::ProvisionConfig;
use super::engine::{JobCtx, Stage};
use super::names::quote_ident_mysql;
use super::split::{Dialect, Piece};
use super::upload::PieceReader;

fn admin_opts(cfg: &ProvisionConfig) -> Result<Opts, String> {
    let url = cfg
        .mysql
        .as_ref()
        .ok_or_else(|| "PROVISION_MYSQL_URL is not set".to_owned())?;
    Opts::from_url(url.expose()).map_err(|_| "PROVISION_MYSQL_URL is not a valid URL".to_owned())
}

async fn connect_admin(cfg: &ProvisionConfig) -> Result<Conn, String> {
    let opts = admin_opts(cfg)?;
    let place = format!("{}:{}", opts.ip_or_hostname(), opts.tcp_port());
    Conn::new(opts).await.map_err(|e| {
        format!(
            "cannot connect to PROVISION_MYSQL_URL ({place}): {}",
            message(&e)
        )
    })
}

/// `'role'@'host'`.
fn account(cfg: &ProvisionConfig) -> String {
    format!("'{}'@'{}'", cfg.role, cfg.mysql_role_host)
}

/// Creates the database, grants it to the role, applies the file at `path`.
pub(super) async fn apply(ctx: &mut JobCtx, path: &Path) -> Result<(), String> {
    let inner = ctx.inner.clone();
    let cfg = &inner.cfg;
    let database = ctx.database();
    ctx.set_stage(Stage::CreatingDatabase);
    let opts = admin_opts(cfg)?;
    {
        let mut admin = connect_admin(cfg).await?;
        let exists: Option<String> = admin
            .exec_first(
                "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?",
                (database.as_str(),),
            )
            .await
            .map_err(|e| message(&e))?;
        if exists.is_some() {
            if ctx.options().fail_if_db_exists {
                return Err(format!(
                    "database {database} already exists (SCHEMA_FAIL_IF_DB_EXISTS); choose \
                     another name, or drop it with SchemaService/DropDatabase"
                ));
            }
        } else {
            admin
                .query_drop(format!(
                    "CREATE DATABASE {} CHARACTER SET utf8mb4",
                    quote_ident_mysql(&database)
                ))
                .await
                .map_err(|e| format!("cannot create database {database}: {}", message(&e)))?;
            ctx.mark_created();
        }
        admin
            .query_drop(format!(
                "GRANT ALL PRIVILEGES ON {}.* TO {}",
                quote_ident_mysql(&database),
                account(cfg)
            ))
            .await
            .map_err(|e| {
                format!(
                    "cannot grant database {database} to PROVISION_ROLE {}: {} (create the \
                     account first: CREATE USER {} IDENTIFIED BY '…')",
                    cfg.role,
                    message(&e),
                    account(cfg)
                )
            })?;
        let _ = admin.disconnect().await;
    }

    ctx.set_stage(Stage::ApplyingSchema);
    let role_opts = OptsBuilder::from_opts(opts)
        .user(Some(cfg.role.clone()))
        .pass(cfg.role_password.as_ref().map(|p| p.expose().to_owned()))
        .db_name(Some(database.clone()));
    let mut conn = Conn::new(role_opts).await.map_err(|e| {
        format!(
            "cannot connect to database {database} as PROVISION_ROLE {}: {} (check \
             PROVISION_ROLE_PASSWORD and PROVISION_MYSQL_ROLE_HOST)",
            cfg.role,
            message(&e)
        )
    })?;
    let mut reader = PieceReader::open(path, Dialect::MySql)
        .await
        .map_err(|e| e.to_string())?;
    let mut statements = 0u64;
    let result = async {
        while let Some(piece) = reader.next().await.map_err(|e| e.to_string())? {
            match piece {
                Piece::Statement { sql, line, end, .. } => {
                    conn.query_drop(sql.as_str())
                        .await
                        .map_err(|e| format!("line {line}: {}", message(&e)))?;
                    statements += 1;
                    ctx.progress(end, statements);
                }
                Piece::Meta { end, .. } => ctx.progress(end, statements),
                Piece::CopyData { .. } | Piece::CopyEnd { .. } => {
                    return Err("COPY data is PostgreSQL-only".to_owned())
                }
            }
        }
        Ok(())
    }
    .await;
    let _ = conn.disconnect().await;
    result
}

/// Kills the connections using `name`, then drops it: (existed, terminated).
pub(super) async fn drop_database(
    cfg: &ProvisionConfig,
    name: &str,
) -> Result<(bool, u32), String> {
    let mut admin = connect_admin(cfg).await?;
    let exists: Option<String> = admin
        .exec_first(
            "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?",
            (name,),
        )
        .await
        .map_err(|e| message(&e))?;
    if exists.is_none() {
        return Ok((false, 0));
    }
    let own: u64 = admin
        .query_first("SELECT CONNECTION_ID()")
        .await
        .map_err(|e| message(&e))?
        .unwrap_or(0);
    let ids: Vec<u64> = admin
        .exec(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = ?",
            (name,),
        )
        .await
        .map_err(|e| format!("cannot list the connections to {name}: {}", message(&e)))?;
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
        .map_err(|e| format!("cannot drop database {name}: {}", message(&e)))?;
    let _ = admin.disconnect().await;
    Ok((true, terminated))
}

/// The server's message with its code, or the client error.
fn message(e: &mysql_async::Error) -> String {
    match e {
        mysql_async::Error::Server(s) => format!("{} (ERROR {} ({}))", s.message, s.code, s.state),
        other => other.to_string(),
    }
}
