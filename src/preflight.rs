//! `dbmazz check`: the preflight an operator runs before the first start, or in a deploy
//! pipeline. It reads the same environment as the daemon, then looks at PostgreSQL and the sink
//! without changing anything (no publication, slot, table or column is created), and prints one
//! line per check, each failed one with the fix. Exit 0 when every check passes, 1 otherwise.

use std::process::ExitCode;

use tokio_postgres::Client;

use crate::config::{Config, ReplicaIdentityPolicy, SinkConfig, TableName};
use crate::postgres::setup::matching_tables;
use crate::postgres::tls::connect_sql;
use crate::starrocks::cluster::Cluster;
use crate::starrocks::ddl::Ddl;

/// One check's outcome.
struct Report {
    failed: usize,
}

impl Report {
    fn ok(&mut self, what: impl AsRef<str>) {
        println!("✓ {}", what.as_ref());
    }

    fn fail(&mut self, what: impl AsRef<str>, fix: impl AsRef<str>) {
        self.failed += 1;
        println!("✗ {}\n    fix: {}", what.as_ref(), fix.as_ref());
    }
}

/// Runs every check; prints the lines and returns the exit code.
pub fn main() -> ExitCode {
    let mut r = Report { failed: 0 };
    let config = match Config::from_env() {
        Ok(c) => {
            r.ok("configuration: every variable is valid");
            c
        }
        Err(e) => {
            r.fail(
                format!("configuration: {e}"),
                "set the variable as it says (dbmazz --help lists them all)",
            );
            return ExitCode::FAILURE;
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("dbmazz check: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async {
        let tables = postgres(&config, &mut r).await;
        match &config.sink {
            SinkConfig::StarRocks(sr) => starrocks(sr, &tables, &mut r).await,
            SinkConfig::Ndjson { path: Some(path) } => {
                let dir = path
                    .parent()
                    .filter(|d| !d.as_os_str().is_empty())
                    .unwrap_or(std::path::Path::new("."));
                if dir.is_dir() {
                    r.ok(format!(
                        "NDJSON: {} is a directory to write into",
                        dir.display()
                    ));
                } else {
                    r.fail(
                        format!("NDJSON: {} does not exist", dir.display()),
                        "create it, or change NDJSON_PATH",
                    );
                }
            }
            SinkConfig::Ndjson { path: None } => r.ok("NDJSON: writes to stdout"),
        }
    });
    if r.failed == 0 {
        println!("every check passed");
        ExitCode::SUCCESS
    } else {
        println!("{} check(s) failed", r.failed);
        ExitCode::FAILURE
    }
}

async fn one_text(client: &Client, sql: &str) -> Result<String, tokio_postgres::Error> {
    Ok(client.query_one(sql, &[]).await?.get::<_, String>(0))
}

/// PostgreSQL's checks; returns the tables that exist (for the sink's checks).
async fn postgres(config: &Config, r: &mut Report) -> Vec<TableName> {
    let source = config.database.redacted();
    let client = match connect_sql(&config.database).await {
        Ok(c) => {
            r.ok(format!("PostgreSQL: connected to {source}"));
            c
        }
        Err(e) => {
            r.fail(
                format!("PostgreSQL: cannot connect to {source}: {e}"),
                "check DATABASE_URL, the network and pg_hba.conf",
            );
            return Vec::new();
        }
    };
    match one_text(&client, "SELECT current_setting('server_version_num')").await {
        Ok(v) if v.parse::<u32>().unwrap_or(0) >= 140_000 => {
            r.ok(format!("PostgreSQL: version {v} (14 or later)"))
        }
        Ok(v) => r.fail(
            format!("PostgreSQL: version {v} is older than 14"),
            "upgrade PostgreSQL to 14 or later",
        ),
        Err(e) => r.fail(
            format!("PostgreSQL: cannot read the version: {e}"),
            "see the error",
        ),
    }
    match one_text(&client, "SELECT current_setting('wal_level')").await {
        Ok(l) if l == "logical" => r.ok("PostgreSQL: wal_level = logical"),
        Ok(l) => r.fail(
            format!("PostgreSQL: wal_level = {l}"),
            "ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL",
        ),
        Err(e) => r.fail(
            format!("PostgreSQL: cannot read wal_level: {e}"),
            "see the error",
        ),
    }
    match client
        .query_one(
            "SELECT current_user::text, rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
    {
        Ok(row) if row.get::<_, bool>(1) => {
            r.ok(format!("PostgreSQL: role {} may replicate", row.get::<_, String>(0)))
        }
        Ok(row) => {
            let user: String = row.get(0);
            r.fail(
                format!("PostgreSQL: role {user} has no REPLICATION attribute"),
                format!("ALTER ROLE {} REPLICATION;", crate::config::quote_ident(&user)),
            )
        }
        Err(e) => r.fail(format!("PostgreSQL: cannot read the role: {e}"), "see the error"),
    }
    match client
        .query_one(
            "SELECT current_setting('max_replication_slots')::int - \
                    (SELECT count(*) FROM pg_replication_slots)::int, \
                    EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)",
            &[&config.slot_name],
        )
        .await
    {
        Ok(row) if row.get::<_, bool>(1) => r.ok(format!(
            "PostgreSQL: slot {} exists (streaming resumes from it)",
            config.slot_name
        )),
        Ok(row) if row.get::<_, i32>(0) > 0 => r.ok(format!(
            "PostgreSQL: slot {} will be created ({} free of max_replication_slots)",
            config.slot_name,
            row.get::<_, i32>(0)
        )),
        Ok(_) => r.fail(
            "PostgreSQL: every replication slot is taken (max_replication_slots)",
            "drop an unused slot (pg_drop_replication_slot) or raise max_replication_slots and restart PostgreSQL",
        ),
        Err(e) => r.fail(format!("PostgreSQL: cannot list the slots: {e}"), "see the error"),
    }
    match client
        .query_one(
            "SELECT to_regclass('public.dbmazz_checkpoints') IS NOT NULL \
                 OR has_schema_privilege('public', 'CREATE')",
            &[],
        )
        .await
    {
        Ok(row) if row.get::<_, bool>(0) => {
            r.ok("PostgreSQL: the checkpoint table exists or may be created in schema public")
        }
        Ok(_) => r.fail(
            "PostgreSQL: the role may not create dbmazz_checkpoints in schema public",
            "GRANT CREATE ON SCHEMA public TO the replication role, or create dbmazz's tables as the README's \"What setup does\" says",
        ),
        Err(e) => r.fail(format!("PostgreSQL: cannot check schema rights: {e}"), "see the error"),
    }

    let mut tables = config.tables.clone();
    match matching_tables(&client, &config.table_patterns).await {
        Ok(found) => {
            for p in &config.table_patterns {
                let n = found.iter().filter(|t| p.matches(t)).count();
                if n == 0 {
                    r.fail(
                        format!("PostgreSQL: TABLES pattern {p} matches no table yet"),
                        "create a table it matches, or fix TABLES",
                    );
                } else {
                    r.ok(format!(
                        "PostgreSQL: TABLES pattern {p} matches {n} table(s)"
                    ));
                }
            }
            for t in found {
                if !tables.contains(&t) {
                    tables.push(t);
                }
            }
        }
        Err(e) => r.fail(
            format!("PostgreSQL: cannot list tables: {e}"),
            "see the error",
        ),
    }
    let mut present = Vec::new();
    for t in &tables {
        let row = client
            .query_opt(
                "SELECT c.relkind::text, c.relreplident::text, \
                        EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary) \
                   FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                  WHERE n.nspname = $1 AND c.relname = $2",
                &[&t.schema, &t.name],
            )
            .await;
        match row {
            Ok(None) => r.fail(
                format!("PostgreSQL: table {t} not found"),
                "create it, or fix TABLES",
            ),
            Ok(Some(row)) => {
                let (kind, identity, pk): (String, String, bool) =
                    (row.get(0), row.get(1), row.get(2));
                if kind != "r" {
                    r.fail(
                        format!("PostgreSQL: {t} is not an ordinary table (relkind {kind})"),
                        "list ordinary tables only (the partitions of a partitioned table)",
                    );
                } else if !pk {
                    r.fail(
                        format!("PostgreSQL: table {t} has no primary key"),
                        format!("ALTER TABLE {} ADD PRIMARY KEY (...);", t.quoted()),
                    );
                } else if !matches!(identity.as_str(), "d" | "f")
                    && config.replica_identity == ReplicaIdentityPolicy::Default
                {
                    r.fail(
                        format!(
                            "PostgreSQL: table {t} has a replica identity without its primary key"
                        ),
                        format!("ALTER TABLE {} REPLICA IDENTITY DEFAULT;", t.quoted()),
                    );
                } else {
                    r.ok(format!("PostgreSQL: table {t} has a primary key"));
                    present.push(t.clone());
                }
            }
            Err(e) => r.fail(
                format!("PostgreSQL: cannot look up {t}: {e}"),
                "see the error",
            ),
        }
    }
    match client
        .query_opt(
            "SELECT pubinsert AND pubupdate AND pubdelete AND pubtruncate, puballtables, \
                    (SELECT coalesce(array_agg(schemaname || '.' || tablename), '{}') \
                       FROM pg_publication_tables pt WHERE pt.pubname = p.pubname)::text[] \
               FROM pg_publication p WHERE pubname = $1",
            &[&config.publication_name],
        )
        .await
    {
        Ok(None) => r.ok(format!(
            "PostgreSQL: publication {} will be created",
            config.publication_name
        )),
        Ok(Some(row)) if !row.get::<_, bool>(0) => r.fail(
            format!(
                "PostgreSQL: publication {} does not publish inserts, updates, deletes and truncates",
                config.publication_name
            ),
            format!(
                "ALTER PUBLICATION {} SET (publish = 'insert, update, delete, truncate');",
                crate::config::quote_ident(&config.publication_name)
            ),
        ),
        Ok(Some(row)) => {
            let all: bool = row.get(1);
            let listed: Vec<String> = row.get(2);
            let missing: Vec<String> = present
                .iter()
                .filter(|t| !all && !listed.contains(&t.to_string()))
                .map(ToString::to_string)
                .collect();
            if missing.is_empty() {
                r.ok(format!(
                    "PostgreSQL: publication {} covers the tables",
                    config.publication_name
                ));
            } else {
                r.ok(format!(
                    "PostgreSQL: publication {} exists; dbmazz will add {}",
                    config.publication_name,
                    missing.join(", ")
                ));
            }
        }
        Err(e) => r.fail(format!("PostgreSQL: cannot read the publication: {e}"), "see the error"),
    }
    present
}

async fn starrocks(cfg: &crate::config::StarRocksConfig, tables: &[TableName], r: &mut Report) {
    let ddl = match Ddl::new(&cfg.mysql_url, &cfg.database) {
        Ok(d) => d,
        Err(e) => {
            r.fail(format!("StarRocks: {e}"), "check STARROCKS_MYSQL_URL");
            return;
        }
    };
    let cluster = match Cluster::probe(&ddl, cfg).await {
        Ok(c) => c,
        Err(e) => {
            r.fail(
                format!("StarRocks: cannot reach the FE: {e}"),
                "check STARROCKS_URL / STARROCKS_MYSQL_URL, the user and the network",
            );
            return;
        }
    };
    match cluster.check(cfg) {
        Ok(()) => r.ok(format!("StarRocks: version {}", cluster.version_text)),
        Err(e) => r.fail(format!("StarRocks: {e}"), "see the error"),
    }
    for t in tables {
        match ddl.table(&t.name).await {
            Ok(Some(target)) => match target.model.as_deref() {
                Some(m) if m != "PRIMARY_KEYS" => r.fail(
                    format!("StarRocks: table {} is a {m} table", t.name),
                    "recreate it as a primary-key table (PRIMARY KEY(...))",
                ),
                _ => r.ok(format!("StarRocks: table {} exists", t.name)),
            },
            Ok(None) if cfg.create_tables => r.ok(format!(
                "StarRocks: table {} will be created (CREATE_TABLES=true)",
                t.name
            )),
            Ok(None) => r.fail(
                format!("StarRocks: table {} not found in {}", t.name, cfg.database),
                "create it, or set CREATE_TABLES=true",
            ),
            Err(e) => r.fail(
                format!("StarRocks: cannot look up {}: {e}", t.name),
                "see the error",
            ),
        }
    }
}
