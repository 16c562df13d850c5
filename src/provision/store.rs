//! The job store: one JSON file per job under `SCHEMA_JOB_STORE_PATH`, so that jobs (and which
//! databases dbmazz created) survive a restart.
//!
//! Files are replaced atomically (write to `<id>.json.tmp`, fsync, rename), so a crash leaves
//! either the old or the new record, never a torn one. Records are written on every change of
//! status or stage, not on every progress tick. A record that cannot be parsed is skipped with a
//! warning naming the file rather than stopping the daemon.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::config::JobOptions;
use super::job::Job;

/// What is persisted of one job: its public view plus the options it runs with.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobRecord {
    /// What clients see.
    pub job: Job,
    /// The resolved options of the job.
    pub options: JobOptions,
}

/// A directory of job records.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// Opens (creating it if needed, mode 0700) the store directory.
    pub fn open(dir: &Path) -> std::io::Result<Store> {
        create_private_dir(dir)?;
        Ok(Store {
            dir: dir.to_owned(),
        })
    }

    /// Every readable record, in no particular order.
    pub fn load(&self) -> std::io::Result<Vec<JobRecord>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let path = entry?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            match std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<JobRecord>(&b).map_err(|e| e.to_string()))
            {
                Ok(r) => out.push(r),
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "skipping unreadable schema job record")
                }
            }
        }
        Ok(out)
    }

    /// Deletes the record of one job (retention).
    pub fn remove(&self, id: &str) -> std::io::Result<()> {
        match std::fs::remove_file(self.dir.join(format!("{id}.json"))) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Writes (replaces) the record of one job.
    pub fn save(&self, record: &JobRecord) -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(record).map_err(std::io::Error::other)?;
        let path = self.dir.join(format!("{}.json", record.job.id));
        let tmp = self.dir.join(format!("{}.json.tmp", record.job.id));
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &path)
    }
}

/// Creates `dir` (and parents) readable only by the daemon's user.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}
