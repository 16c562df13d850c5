//! The tenant registry: which database lives on which server, when and from which upload it
//! was created, and which migrations it has — so that "which tenants are on which version, and
//! which failed" has an answer without asking every server.
//!
//! One JSON file per database, `SCHEMA_REGISTRY_PATH/<server>/<database>.json`, replaced
//! atomically (written to `.tmp`, renamed), so a crash or `kill -9` leaves the old or the new
//! record, never a torn one. The registry is dbmazz's view; the truth of a migration is the row
//! in the database's own `dbmazz_schema_migrations`, written in the migration's transaction.
//! When the two can disagree (dbmazz died between the commit and the registry write), the
//! restart reconciles the registry from the databases ([`super::migrate`]).
//!
//! All records are held in memory too (a few hundred bytes each): listing, placement counts
//! and selectors never touch the disk.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::job::SqlEngine;
use super::store::create_private_dir;

/// Where a tenant database is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TenantState {
    /// Its upload job is creating it or applying its file.
    Creating,
    /// Its file was applied.
    Ready,
    /// Its upload failed and the database was kept (`SCHEMA_DROP_DB_ON_FAILURE=false`, or the
    /// drop failed).
    Failed,
}

impl TenantState {
    /// `creating`, `ready` or `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            TenantState::Creating => "creating",
            TenantState::Ready => "ready",
            TenantState::Failed => "failed",
        }
    }
}

/// A migration applied to a database.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppliedMigration {
    /// The migration id.
    pub id: String,
    /// SHA-256 of its file.
    pub sha256: String,
    /// When it was committed (ms since the Unix epoch; for a reconciled one, when dbmazz
    /// learned of it).
    pub applied_at_ms: u64,
    /// The fan-out job that applied it.
    pub job_id: String,
}

/// The last migration that failed on a database (cleared when that migration succeeds).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MigrationFailure {
    /// The migration id.
    pub id: String,
    /// SHA-256 of its file.
    pub sha256: String,
    /// What went wrong (line and server message).
    pub error: String,
    /// When.
    pub at_ms: u64,
    /// The fan-out job.
    pub job_id: String,
}

/// One tenant database.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TenantDb {
    /// The server it lives on.
    pub server: String,
    /// The server's engine.
    pub engine: SqlEngine,
    /// Its name.
    pub database: String,
    /// Its state.
    pub state: TenantState,
    /// Whether dbmazz created it (false: the upload applied into an existing database).
    pub created_by_dbmazz: bool,
    /// When the upload created (or first applied into) it.
    pub created_at_ms: u64,
    /// The upload job.
    pub job_id: String,
    /// The upload's file name.
    pub file_name: String,
    /// The upload's SHA-256.
    pub sha256: String,
    /// Migrations applied, oldest first.
    #[serde(default)]
    pub migrations: Vec<AppliedMigration>,
    /// The last failed migration, until it succeeds.
    #[serde(default)]
    pub last_failure: Option<MigrationFailure>,
}

impl TenantDb {
    /// Whether migration `id` is recorded as applied.
    pub fn has_migration(&self, id: &str) -> bool {
        self.migrations.iter().any(|m| m.id == id)
    }
}

/// Which tenant databases a listing (or a migration) covers; empty fields match everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only this server.
    pub server: Option<String>,
    /// Only this engine.
    pub engine: Option<SqlEngine>,
    /// Only databases on servers with these labels.
    pub labels: BTreeMap<String, String>,
    /// Only names starting with this.
    pub name_prefix: Option<String>,
    /// Only databases that have not applied this migration.
    pub missing_migration: Option<String>,
    /// Only databases whose last migration failed.
    pub failed_only: bool,
}

/// The registry: records in memory, persisted one file per database.
#[derive(Debug)]
pub struct Registry {
    dir: PathBuf,
    records: Mutex<BTreeMap<(String, String), TenantDb>>,
}

impl Registry {
    /// Opens (creating it, mode 0700) the registry directory and loads every record. A record
    /// that cannot be read is skipped with a warning naming the file.
    pub fn open(dir: &Path) -> std::io::Result<Registry> {
        create_private_dir(dir)?;
        let mut records = BTreeMap::new();
        for server in std::fs::read_dir(dir)? {
            let server = server?.path();
            if !server.is_dir() {
                continue;
            }
            for entry in std::fs::read_dir(&server)? {
                let path = entry?.path();
                if path.extension().and_then(|e| e.to_str()) != Some("json") {
                    continue;
                }
                match std::fs::read(&path)
                    .map_err(|e| e.to_string())
                    .and_then(|b| serde_json::from_slice::<TenantDb>(&b).map_err(|e| e.to_string()))
                {
                    Ok(r) => {
                        records.insert((r.server.clone(), r.database.clone()), r);
                    }
                    Err(e) => {
                        tracing::warn!(file = %path.display(), error = %e, "skipping unreadable tenant registry record")
                    }
                }
            }
        }
        Ok(Registry {
            dir: dir.to_owned(),
            records: Mutex::new(records),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, String), TenantDb>> {
        self.records.lock().expect("tenant registry")
    }

    /// One database's record.
    pub fn get(&self, server: &str, database: &str) -> Option<TenantDb> {
        self.lock()
            .get(&(server.to_owned(), database.to_owned()))
            .cloned()
    }

    /// Writes (replaces) a record.
    pub fn put(&self, record: TenantDb) -> std::io::Result<()> {
        self.write(&record)?;
        self.lock()
            .insert((record.server.clone(), record.database.clone()), record);
        Ok(())
    }

    /// Changes a record in place (nothing when it does not exist); the new record.
    pub fn update(
        &self,
        server: &str,
        database: &str,
        change: impl FnOnce(&mut TenantDb),
    ) -> std::io::Result<Option<TenantDb>> {
        let mut records = self.lock();
        let Some(rec) = records.get_mut(&(server.to_owned(), database.to_owned())) else {
            return Ok(None);
        };
        let mut next = rec.clone();
        change(&mut next);
        self.write(&next)?;
        *rec = next.clone();
        Ok(Some(next))
    }

    /// Forgets a database (it was dropped).
    pub fn remove(&self, server: &str, database: &str) -> std::io::Result<()> {
        let path = self.path(server, database);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        self.lock()
            .remove(&(server.to_owned(), database.to_owned()));
        Ok(())
    }

    /// The records `filter` selects, by server then name; `server_labels` gives a server's
    /// labels (servers no longer configured have none).
    pub fn list(
        &self,
        filter: &Filter,
        server_labels: impl Fn(&str) -> Option<BTreeMap<String, String>>,
    ) -> Vec<TenantDb> {
        self.lock()
            .values()
            .filter(|r| {
                filter.server.as_ref().is_none_or(|s| *s == r.server)
                    && filter.engine.is_none_or(|e| e == r.engine)
                    && filter
                        .name_prefix
                        .as_ref()
                        .is_none_or(|p| r.database.starts_with(p.as_str()))
                    && filter
                        .missing_migration
                        .as_ref()
                        .is_none_or(|m| !r.has_migration(m))
                    && (!filter.failed_only || r.last_failure.is_some())
                    && (filter.labels.is_empty()
                        || server_labels(&r.server).is_some_and(|l| {
                            filter.labels.iter().all(|(k, v)| l.get(k) == Some(v))
                        }))
            })
            .cloned()
            .collect()
    }

    /// Tenant databases on `server` (placement and capacity).
    pub fn count(&self, server: &str) -> u64 {
        self.lock().keys().filter(|(s, _)| s == server).count() as u64
    }

    fn path(&self, server: &str, database: &str) -> PathBuf {
        self.dir.join(server).join(format!("{database}.json"))
    }

    /// Writes one record: `.tmp`, then rename. Not fsynced: a record survives `kill -9` (the
    /// page cache does), and after a power loss the restart's reconciliation reads the truth
    /// back from the databases.
    fn write(&self, record: &TenantDb) -> std::io::Result<()> {
        let dir = self.dir.join(&record.server);
        create_private_dir(&dir)?;
        let bytes = serde_json::to_vec_pretty(record).map_err(std::io::Error::other)?;
        let path = dir.join(format!("{}.json", record.database));
        let tmp = dir.join(format!("{}.json.tmp", record.database));
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
        }
        std::fs::rename(&tmp, &path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(server: &str, db: &str) -> TenantDb {
        TenantDb {
            server: server.into(),
            engine: SqlEngine::Postgres,
            database: db.into(),
            state: TenantState::Ready,
            created_by_dbmazz: true,
            created_at_ms: 1,
            job_id: "j".into(),
            file_name: "s.sql".into(),
            sha256: "00".into(),
            migrations: vec![],
            last_failure: None,
        }
    }

    #[test]
    fn records_survive_a_reopen_and_filters_select() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::open(dir.path()).unwrap();
        reg.put(tenant("a", "t1")).unwrap();
        reg.put(tenant("a", "t2")).unwrap();
        reg.put(tenant("b", "x1")).unwrap();
        reg.update("a", "t2", |r| {
            r.migrations.push(AppliedMigration {
                id: "m1".into(),
                sha256: "ff".into(),
                applied_at_ms: 2,
                job_id: "k".into(),
            })
        })
        .unwrap();
        reg.remove("b", "x1").unwrap();
        reg.put(tenant("b", "x2")).unwrap();
        // A torn temporary file from a crash is ignored.
        std::fs::write(dir.path().join("a").join("t3.json.tmp"), b"{").unwrap();
        drop(reg);

        let reg = Registry::open(dir.path()).unwrap();
        assert_eq!((reg.count("a"), reg.count("b")), (2, 1));
        assert!(reg.get("a", "t2").unwrap().has_migration("m1"));
        let labels = |s: &str| (s == "b").then(|| [("tier".to_owned(), "gold".to_owned())].into());
        let names = |f: Filter| -> Vec<String> {
            reg.list(&f, labels)
                .into_iter()
                .map(|r| format!("{}/{}", r.server, r.database))
                .collect()
        };
        assert_eq!(names(Filter::default()), ["a/t1", "a/t2", "b/x2"]);
        assert_eq!(
            names(Filter {
                missing_migration: Some("m1".into()),
                ..Filter::default()
            }),
            ["a/t1", "b/x2"]
        );
        assert_eq!(
            names(Filter {
                labels: [("tier".to_owned(), "gold".to_owned())].into(),
                ..Filter::default()
            }),
            ["b/x2"]
        );
        assert_eq!(
            names(Filter {
                server: Some("a".into()),
                name_prefix: Some("t1".into()),
                ..Filter::default()
            }),
            ["a/t1"]
        );
    }
}
