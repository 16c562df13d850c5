//! Schema provisioning: turning an uploaded `.sql` file into a database.
//!
//! Users upload a schema file (pg_dump or mysqldump output, or hand-written DDL); dbmazz creates
//! a database for it and applies the file statement by statement. This module holds the pure,
//! I/O-free pieces that decide *what* gets executed:
//!
//! ```text
//! file bytes ──chunks──▶ split::Splitter ──Piece::Statement──▶ guard::Guard ──▶ applier
//!                              │  Piece::CopyData / CopyEnd ────────────────────▶ COPY protocol
//!                              └  Piece::Meta (pg_dump's \restrict, DELIMITER): never executed
//! names: database-name validation and identifier quoting, before anything touches a server.
//! ```

pub mod guard;
pub mod names;
pub mod split;
mod token;
