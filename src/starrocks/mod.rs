//! The StarRocks sink: Stream Load over HTTP for rows, the MySQL protocol for DDL.
//!
//! ```text
//! batch of events ──▶ sink: per table, split at truncates and schema changes,
//!                     collapse to the last state per key, group by column set
//!                     ──▶ encode: one JSON array per load (reusable buffer)
//!                     ──▶ stream_load: PUT with a deterministic label, 307 by hand,
//!                         decision table for every outcome
//! ddl: version and table checks, audit columns, ADD COLUMN jobs, CREATE TABLE, TRUNCATE
//! cluster: version, run mode and alive BEs at start; refusals for what the cluster lacks
//! truncates: the LSN of the last truncate applied per table, so a replay never truncates twice
//! rejects: a rejected load split until its refused rows stand alone; dbmazz_dead_letters
//! ```
//!
//! Correctness rests on design invariants 2–4: every row carries `dbmazz_cdc_version` = its
//! commit LSN and every load uses `merge_condition` on it, so replays never regress a row;
//! deletes are soft (a partial update of the key and the audit columns); a change that lacks
//! columns (unchanged TOAST, key-only delete) is a partial update with exactly the columns it
//! has; loads run with `strict_mode` and `max_filter_ratio` 0, so a value StarRocks cannot
//! take is a rejection dbmazz sees (never a silent NULL), and a rejected row either stops the
//! job or lands in `dbmazz_dead_letters` (`ON_REJECT`), never vanishes.

pub mod cluster;
pub mod config;
pub mod ddl;
pub mod encode;
pub mod evolve;
pub mod rejects;
pub mod sink;
pub mod stream_load;
pub mod target;
pub mod truncates;
pub mod types;
