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
//! ```
//!
//! Correctness rests on design invariants 2–4: every row carries `dbmazz_cdc_version` = its
//! commit LSN and every load uses `merge_condition` on it, so replays never regress a row;
//! deletes are soft (a partial update of the key and the audit columns); a change that lacks
//! columns (unchanged TOAST, key-only delete) is a partial update with exactly the columns it
//! has; `max_filter_ratio` is 0, so a rejected row stops the job instead of vanishing.

pub mod cluster;
pub mod config;
pub mod ddl;
pub mod encode;
pub mod sink;
pub mod stream_load;
pub mod target;
pub mod truncates;
pub mod types;
