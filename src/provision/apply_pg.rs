//! Applying a schema to PostgreSQL: the admin connection creates the database owned by
//! `PROVISION_ROLE`, then a connection *as that role* (not `SET ROLE`, which the script could
//! undo) runs the whole file in one transaction, `COPY … FROM stdin` data going through the COPY
//! protocol. Any failure rolls everything back; the engine then drops the database it created.

use std::path::Path;
use std::pin::Pin;

use bytes::Bytes;
use futures_util::SinkExt;
use tokio_postgres::CopyInSink;

use super::config::ProvisionConfig;
use super::engine::{JobCtx, Stage};
use super::names::quote_ident_pg;
use super::split::{Dialect, Piece};
use super::upload::PieceReader;
use crate::postgres::conninfo::PgConnInfo;
use crate::postgres::tls::connect_sql;

fn admin(cfg: &ProvisionConfig) -> Result<&PgConnInfo, String> {
    cfg.postgres
        .as_ref()
        .ok_or_else(|| "PROVISION_POSTGRES_URL is not set".to_owned())
}

async fn connect_admin(cfg: &ProvisionConfig) -> Result<tokio_postgres::Client, String> {
    let info = admin(cfg)?;
    connect_sql(info).await.map_err(|e| {
        format!(
            "cannot connect to PROVISION_POSTGRES_URL ({}): {e}",
            info.redacted()
        )
    })
}

/// Creates the database and applies the stored file at `path`. `Err` is the job's error.
pub(super) async fn apply(ctx: &mut JobCtx, path: &Path) -> Result<(), String> {
    let inner = ctx.inner.clone();
    let cfg = &inner.cfg;
    let database = ctx.database();
    let role = cfg.role.clone();
    ctx.set_stage(Stage::CreatingDatabase);
    {
        let admin = connect_admin(cfg).await?;
        let row = admin
            .query_opt(
                "SELECT rolsuper, rolcanlogin FROM pg_catalog.pg_roles WHERE rolname = $1",
                &[&role],
            )
            .await
            .map_err(|e| server_error(None, &e))?;
        match row {
            None => {
                return Err(format!(
                    "PROVISION_ROLE {role} does not exist on the PostgreSQL server; create it \
                     with CREATE ROLE {role} LOGIN PASSWORD '…' (not a superuser)"
                ))
            }
            Some(r) if r.get::<_, bool>(0) => {
                return Err(format!(
                    "PROVISION_ROLE {role} is a superuser; schemas must run as a non-superuser \
                     role (ALTER ROLE {role} NOSUPERUSER), which is what keeps them away from \
                     server files and programs"
                ))
            }
            Some(r) if !r.get::<_, bool>(1) => {
                return Err(format!(
                    "PROVISION_ROLE {role} cannot log in; run ALTER ROLE {role} LOGIN"
                ))
            }
            Some(_) => {}
        }
        let exists = admin
            .query_opt(
                "SELECT 1 FROM pg_catalog.pg_database WHERE datname = $1",
                &[&database],
            )
            .await
            .map_err(|e| server_error(None, &e))?
            .is_some();
        if exists {
            if ctx.options().fail_if_db_exists {
                return Err(format!(
                    "database {database} already exists (SCHEMA_FAIL_IF_DB_EXISTS); choose \
                     another name, or drop it with SchemaService/DropDatabase"
                ));
            }
        } else {
            admin
                .batch_execute(&format!(
                    "CREATE DATABASE {} OWNER {}",
                    quote_ident_pg(&database),
                    quote_ident_pg(&role)
                ))
                .await
                .map_err(|e| format!("cannot create database {database}: {}", db_message(&e)))?;
            ctx.mark_created();
        }
    }

    ctx.set_stage(Stage::ApplyingSchema);
    let mut info = admin(cfg)?.clone();
    info.user = role.clone();
    info.password = cfg.role_password.clone();
    info.dbname = database.clone();
    let mut client = connect_sql(&info).await.map_err(|e| {
        format!(
            "cannot connect to database {database} as PROVISION_ROLE {role}: {e} (check \
             PROVISION_ROLE_PASSWORD and pg_hba.conf)"
        )
    })?;
    let tx = client
        .transaction()
        .await
        .map_err(|e| server_error(None, &e))?;
    let mut reader = PieceReader::open(path, Dialect::Postgres)
        .await
        .map_err(|e| e.to_string())?;
    let mut statements = 0u64;
    let mut copy: Option<(Pin<Box<CopyInSink<Bytes>>>, u64)> = None;
    while let Some(piece) = reader.next().await.map_err(|e| e.to_string())? {
        match piece {
            Piece::Statement {
                sql,
                line,
                end,
                copy_from_stdin,
            } => {
                if copy_from_stdin {
                    let sink = tx
                        .copy_in::<_, Bytes>(sql.as_str())
                        .await
                        .map_err(|e| statement_error(line, &sql, &e))?;
                    copy = Some((Box::pin(sink), line));
                } else {
                    tx.batch_execute(&sql)
                        .await
                        .map_err(|e| statement_error(line, &sql, &e))?;
                }
                statements += 1;
                ctx.progress(end, statements);
            }
            Piece::CopyData { data, end } => {
                let Some((sink, line)) = copy.as_mut() else {
                    return Err("COPY data outside of a COPY … FROM stdin".into());
                };
                sink.send(data)
                    .await
                    .map_err(|e| server_error(Some(*line), &e))?;
                ctx.progress(end, statements);
            }
            Piece::CopyEnd { line: _, end } => {
                let Some((mut sink, line)) = copy.take() else {
                    return Err("\\. outside of a COPY … FROM stdin".into());
                };
                sink.as_mut()
                    .finish()
                    .await
                    .map_err(|e| server_error(Some(line), &e))?;
                ctx.progress(end, statements);
            }
            Piece::Meta { end, .. } => ctx.progress(end, statements),
        }
    }
    if let Some((_, line)) = copy {
        return Err(format!(
            "line {line}: the file ends inside the data of this COPY (no \\. line)"
        ));
    }
    tx.commit()
        .await
        .map_err(|e| format!("at COMMIT: {}", db_message(&e)))?;
    Ok(())
}

/// Terminates the connections to `name`, then drops it: (existed, terminated).
pub(super) async fn drop_database(
    cfg: &ProvisionConfig,
    name: &str,
) -> Result<(bool, u32), String> {
    let admin = connect_admin(cfg).await?;
    let exists = admin
        .query_opt(
            "SELECT 1 FROM pg_catalog.pg_database WHERE datname = $1",
            &[&name],
        )
        .await
        .map_err(|e| db_message(&e))?
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
        .map_err(|e| format!("cannot terminate the connections to {name}: {}", db_message(&e)))?
        .get(0);
    admin
        .batch_execute(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            quote_ident_pg(name)
        ))
        .await
        .map_err(|e| format!("cannot drop database {name}: {}", db_message(&e)))?;
    Ok((true, terminated.max(0) as u32))
}

/// A statement's failure: the line of the error within the file (from the server's position
/// when it gives one), the server's message, detail, hint and context.
fn statement_error(line: u64, sql: &str, e: &tokio_postgres::Error) -> String {
    let mut at = line;
    if let Some(db) = e.as_db_error() {
        if let Some(tokio_postgres::error::ErrorPosition::Original(pos)) = db.position() {
            let upto: String = sql
                .chars()
                .take((*pos as usize).saturating_sub(1))
                .collect();
            at += upto.matches('\n').count() as u64;
        }
    }
    server_error(Some(at), e)
}

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
