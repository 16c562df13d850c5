//! What to tell an operator when dbmazz may not create its bookkeeping tables.
//!
//! dbmazz keeps its checkpoint (`dbmazz_checkpoints`), the schema each table had at it
//! (`dbmazz_schemas`) and the initial copy's progress (`dbmazz_snapshot_tables`,
//! `dbmazz_snapshot_chunks`) in the source database, schema `public`.
//! It creates them on first start, which needs `CREATE` on the schema. Since PostgreSQL 15 only
//! the database owner has that on `public` by default, and a managed service's CDC role is rarely
//! the owner, so the first start of a least-privilege role fails there. The message then has to
//! say exactly what an administrator runs: either the `GRANT` that lets dbmazz create them, or
//! the `CREATE TABLE`s themselves plus the table rights dbmazz needs on them.
//!
//! Tables that already exist are never created again, so the second option works without any
//! right on the schema (`CREATE TABLE IF NOT EXISTS` alone would still ask for one).

use tokio_postgres::Client;

use crate::config::quote_ident;

/// The schema the state tables live in.
pub const SCHEMA: &str = "public";

/// The checkpoint table, qualified.
pub const CHECKPOINT_TABLE: &str = "public.dbmazz_checkpoints";

/// The schema log (each table's schema at each checkpoint), qualified.
pub const SCHEMA_LOG_TABLE: &str = "public.dbmazz_schemas";

/// `CREATE TABLE` for the checkpoint table `table` (qualified and quoted as needed).
pub fn checkpoint_ddl(table: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {table} (slot_name text PRIMARY KEY, lsn pg_lsn NOT NULL, \
         updated_at timestamptz NOT NULL DEFAULT now());"
    )
}

/// `CREATE TABLE` for the schema log `table` (qualified and quoted as needed).
pub fn schema_log_ddl(table: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {table} (slot_name text NOT NULL, table_name text NOT NULL, \
         lsn pg_lsn NOT NULL, rel_oid oid NOT NULL, source_name text NOT NULL, \
         columns jsonb NOT NULL, key_columns text[] NOT NULL, replica_identity text NOT NULL, \
         recorded_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (slot_name, table_name, lsn));"
    )
}

/// The initial copy's state tables, qualified as in [`SNAPSHOT_DDL`].
pub const SNAPSHOT_TABLES: [&str; 2] = [
    "public.dbmazz_snapshot_tables",
    "public.dbmazz_snapshot_chunks",
];

/// `CREATE TABLE`s for the initial copy's state tables.
pub const SNAPSHOT_DDL: &str = "CREATE TABLE IF NOT EXISTS public.dbmazz_snapshot_tables (
        slot_name text NOT NULL, table_name text NOT NULL, snapshot_lsn pg_lsn NOT NULL,
        state text NOT NULL, chunks int NOT NULL, updated_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (slot_name, table_name));
    CREATE TABLE IF NOT EXISTS public.dbmazz_snapshot_chunks (
        slot_name text NOT NULL, table_name text NOT NULL, chunk int NOT NULL,
        lower_bound text[], upper_bound text[], done boolean NOT NULL DEFAULT false,
        rows bigint, PRIMARY KEY (slot_name, table_name, chunk));";

/// dbmazz's role can neither use nor create its state tables.
#[derive(Debug, thiserror::Error)]
pub enum StateTablesError {
    /// Some tables are missing and the role may not create them.
    #[error("role {role} may not create dbmazz's state tables ({}) in schema public; {hint}", missing.join(", "))]
    CannotCreate {
        /// dbmazz's role.
        role: String,
        /// The tables that do not exist yet.
        missing: Vec<String>,
        /// The statements to run.
        hint: String,
    },
    /// The tables exist but the role lacks rights on some of them.
    #[error(
        "role {role} lacks rights on dbmazz's state tables {}; as their owner run: GRANT SELECT, \
         INSERT, UPDATE, DELETE ON {} TO {};",
        tables.join(", "), tables.join(", "), quote_ident(role)
    )]
    NoRights {
        /// dbmazz's role.
        role: String,
        /// Tables lacking a right.
        tables: Vec<String>,
    },
    /// The catalog query failed.
    #[error("checking dbmazz's state tables failed: {}", crate::postgres::tls::flatten_chain(.0))]
    Sql(#[source] tokio_postgres::Error),
}

impl StateTablesError {
    /// Whether retrying later may help (connection trouble only).
    pub fn is_transient(&self) -> bool {
        match self {
            StateTablesError::Sql(source) => source.is_closed() || source.code().is_none(),
            _ => false,
        }
    }
}

/// Before anything is created: either every state table exists and dbmazz's role may read and
/// write it, or the role may create the missing ones. Otherwise one error says everything an
/// administrator has to run, for all four tables at once.
pub async fn preflight(client: &Client) -> Result<(), StateTablesError> {
    let mut tables = vec![CHECKPOINT_TABLE, SCHEMA_LOG_TABLE];
    tables.extend(SNAPSHOT_TABLES);
    let rows = client
        .query(
            "SELECT t, to_regclass(t) IS NOT NULL, \
                    to_regclass(t) IS NOT NULL \
                        AND has_table_privilege(to_regclass(t), 'SELECT') \
                        AND has_table_privilege(to_regclass(t), 'INSERT') \
                        AND has_table_privilege(to_regclass(t), 'UPDATE') \
                        AND has_table_privilege(to_regclass(t), 'DELETE'), \
                    has_schema_privilege($2::text, 'CREATE'), current_user::text \
               FROM unnest($1::text[]) t",
            &[&tables, &SCHEMA],
        )
        .await
        .map_err(StateTablesError::Sql)?;
    let Some(first) = rows.first() else {
        return Ok(());
    };
    let may_create: bool = first.get(3);
    let role: String = first.get(4);
    let missing: Vec<String> = rows
        .iter()
        .filter(|r| !r.get::<_, bool>(1))
        .map(|r| r.get(0))
        .collect();
    let no_rights: Vec<String> = rows
        .iter()
        .filter(|r| r.get::<_, bool>(1) && !r.get::<_, bool>(2))
        .map(|r| r.get(0))
        .collect();
    if !no_rights.is_empty() {
        return Err(StateTablesError::NoRights {
            role,
            tables: no_rights,
        });
    }
    if !missing.is_empty() && !may_create {
        let mut ddl = String::new();
        if missing.iter().any(|t| t == CHECKPOINT_TABLE) {
            ddl.push_str(&checkpoint_ddl(CHECKPOINT_TABLE));
        }
        if missing.iter().any(|t| t == SCHEMA_LOG_TABLE) {
            ddl.push(' ');
            ddl.push_str(&schema_log_ddl(SCHEMA_LOG_TABLE));
        }
        if missing
            .iter()
            .any(|t| SNAPSHOT_TABLES.contains(&t.as_str()))
        {
            ddl.push(' ');
            ddl.push_str(SNAPSHOT_DDL);
        }
        let names: Vec<&str> = missing.iter().map(String::as_str).collect();
        return Err(StateTablesError::CannotCreate {
            hint: create_refused_hint(&role, SCHEMA, &ddl, &names),
            role,
            missing,
        });
    }
    Ok(())
}

/// The statements that unblock `role` when it may not create `tables` in `schema`: one
/// `GRANT CREATE ON SCHEMA`, or `ddl` (the `CREATE TABLE`s, ending with `;`) followed by the
/// grants on the tables.
pub fn create_refused_hint(role: &str, schema: &str, ddl: &str, tables: &[&str]) -> String {
    let role = quote_ident(role);
    let ddl = ddl.split_whitespace().collect::<Vec<_>>().join(" ");
    format!(
        "as an administrator run either: GRANT CREATE ON SCHEMA {} TO {role}; or create the \
         tables yourself: {ddl} GRANT SELECT, INSERT, UPDATE, DELETE ON {} TO {role};",
        quote_ident(schema),
        tables.join(", ")
    )
}

/// Reads `current_user`, for the hint; `None` if the connection cannot even do that.
pub async fn current_role(client: &tokio_postgres::Client) -> Option<String> {
    client
        .query_one("SELECT current_user::text", &[])
        .await
        .ok()
        .map(|row| row.get(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hint_names_the_role_the_schema_and_every_table() {
        let hint = create_refused_hint(
            "cdc user",
            "public",
            "CREATE TABLE public.a (x int);\n   CREATE TABLE public.b (y int);",
            &["public.a", "public.b"],
        );
        assert_eq!(
            hint,
            "as an administrator run either: GRANT CREATE ON SCHEMA \"public\" TO \"cdc user\"; \
             or create the tables yourself: CREATE TABLE public.a (x int); CREATE TABLE public.b \
             (y int); GRANT SELECT, INSERT, UPDATE, DELETE ON public.a, public.b TO \"cdc user\";"
        );
    }
}
