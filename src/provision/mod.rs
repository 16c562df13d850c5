//! Database provisioning: upload a `.sql` file, dbmazz creates the database and applies the file
//! in the background (PostgreSQL or MySQL/MariaDB), with live progress.
//!
//! ```text
//! gRPC SchemaService / REST / CLI ──▶ engine (jobs, store, workers)
//!                                        │ split (statements, COPY data) + guard + names
//!                                        ├─▶ apply_pg    (one transaction, as PROVISION_ROLE)
//!                                        └─▶ apply_mysql (statements in order, as PROVISION_ROLE)
//! ```
//!
//! - [`config`]: `PROVISION_*` and `SCHEMA_*` settings.
//! - [`engine`]: the job engine every way in shares.
//! - [`store`]: job records on disk (`SCHEMA_JOB_STORE_PATH`).
//! - `split`, `guard`, `names`: the pure parsing parts.

mod apply_mysql;
mod apply_pg;
pub mod config;
pub mod engine;
mod pending;
pub mod store;

pub use pending::{guard, names, split};
