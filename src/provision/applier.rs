//! The contract between the job runner and the servers a schema is applied to.
//!
//! The runner ([`super::runner`]) owns a job's life: its worker permit, its record, what is
//! cleaned up when it fails. An applier ([`super::apply_pg`], [`super::apply_mysql`]) owns one
//! kind of server: how a database is created for `PROVISION_ROLE` and how the file's pieces run
//! there. They meet here, so that neither imports the other:
//!
//! ```text
//! runner ──▶ Applier (this module) ◀── apply_pg, apply_mysql
//!   └──────▶ JobProgress, implemented by the runner, called by the appliers
//! ```

use std::future::Future;
use std::path::Path;

use super::job::JobStep;

/// What an applier reports while it works; the runner records it in the job.
pub(super) trait JobProgress: Send {
    /// Moves the job to `stage` (persisted at once).
    fn set_stage(&mut self, stage: JobStep);
    /// Records that the applier created the database. Called the moment it exists, so a
    /// failure (or a crash of dbmazz) can drop it per `SCHEMA_DROP_DB_ON_FAILURE`.
    fn mark_created(&mut self);
    /// The file is applied up to byte `applied`, with `statements` run.
    fn progress(&mut self, applied: u64, statements: u64);
}

/// What one job asks of an applier.
#[derive(Clone, Copy, Debug)]
pub(super) struct Target<'a> {
    /// The database to create and apply the file to.
    pub(super) database: &'a str,
    /// `SCHEMA_FAIL_IF_DB_EXISTS`: refuse a database that exists already.
    pub(super) fail_if_db_exists: bool,
    /// The stored upload.
    pub(super) upload: &'a Path,
}

/// Applies uploads to one kind of server.
///
/// `apply` creates the database (reporting [`JobProgress::mark_created`]) unless it exists,
/// then runs the upload's pieces in file order as `PROVISION_ROLE`, reporting the stages
/// [`JobStep::CreatingDatabase`] and [`JobStep::ApplyingSchema`] and the progress. It never drops
/// what it created: on failure the runner decides, and calls [`Applier::drop_database`]. The
/// error's text is what the job reports.
pub(super) trait Applier: Send + Sync {
    /// Why an apply or a drop failed.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Creates the target database and applies the upload to it.
    fn apply(
        &self,
        target: Target<'_>,
        job: &mut dyn JobProgress,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Terminates the connections to `name`, then drops it: (existed, connections
    /// terminated).
    fn drop_database(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<(bool, u32), Self::Error>> + Send;
}

/// One migration, as an applier runs it on one tenant database.
#[derive(Clone, Copy, Debug)]
pub(super) struct Migration<'a> {
    /// The migration id, recorded in the database's `dbmazz_schema_migrations`.
    pub(super) id: &'a str,
    /// SHA-256 of the file, recorded next to the id.
    pub(super) sha256: &'a str,
    /// The fan-out job, recorded too.
    pub(super) job_id: &'a str,
    /// The stored file.
    pub(super) upload: &'a Path,
}

/// What a migration did on one database.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Migrated {
    /// Applied and recorded, with this many statements.
    Applied {
        /// Statements run.
        statements: u64,
    },
    /// The database had this migration id with the same SHA-256 already.
    Skipped,
}

/// The name of the table each tenant database records its migrations in.
pub(super) const MIGRATIONS_TABLE: &str = "dbmazz_schema_migrations";

/// A [`JobProgress`] that records nothing: migrations report per database, not per byte.
pub(super) struct NoProgress;

impl JobProgress for NoProgress {
    fn set_stage(&mut self, _: JobStep) {}
    fn mark_created(&mut self) {}
    fn progress(&mut self, _: u64, _: u64) {}
}
