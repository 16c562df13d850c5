//! Command-line configuration.
//!
//! Why these flags: each one is a StarRocks setting a client can observe (ports, the BE host
//! in redirects, label retention, load timeout, schema-change duration) or a test need
//! (`--data-dir` for restarts, `--discard` for benchmarks). Port 0 binds a free port; the
//! bound ports are printed as one JSON line on stdout.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

/// A port, or `off` for a listener that is not started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionalPort(pub Option<u16>);

/// Parses a port, or `off`.
fn port_or_off(s: &str) -> Result<OptionalPort, String> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(OptionalPort(None));
    }
    s.parse::<u16>()
        .map(|p| OptionalPort(Some(p)))
        .map_err(|e| format!("not a port or 'off': {e}"))
}

/// A faithful StarRocks stand-in: Stream Load over HTTP (FE and BE) and the MySQL protocol.
#[derive(Debug, Clone, Parser)]
#[command(name = "starrocks-double", version)]
pub struct Config {
    /// FE HTTP port (Stream Load entry point, answers 307 to the BE).
    #[arg(long, default_value_t = 8030)]
    pub fe_port: u16,
    /// BE HTTP port (takes the load body).
    #[arg(long, default_value_t = 8040)]
    pub be_port: u16,
    /// FE MySQL-protocol port.
    #[arg(long, default_value_t = 9030)]
    pub mysql_port: u16,
    /// Admin HTTP port for fault switches and stats, or `off`.
    #[arg(long, default_value = "8099", value_parser = port_or_off)]
    pub admin_port: OptionalPort,
    /// Address every listener binds.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: String,
    /// Host the FE puts in the 307 `Location` (the address the BE "registered" under).
    #[arg(long, default_value = "127.0.0.1")]
    pub advertise_be_host: String,
    /// Extra FE hops before the BE: the FE first redirects to N more FE listeners in turn,
    /// like a follower FE redirecting to the leader.
    #[arg(long, default_value_t = 0)]
    pub fe_extra_hops: u32,
    /// User for HTTP Basic auth and MySQL.
    #[arg(long, default_value = "root")]
    pub user: String,
    /// Password (empty by default, like a fresh StarRocks).
    #[arg(long, default_value = "")]
    pub password: String,
    /// Keep data, schema and labels in SQLite under this directory (default: in memory).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Parse and count rows but store nothing (benchmarks).
    #[arg(long)]
    pub discard: bool,
    /// FE `label_keep_max_second`: how long finished labels are remembered.
    #[arg(long, default_value_t = 259_200)]
    pub label_keep_max_second: u64,
    /// FE `label_keep_max_num`: how many finished labels each database remembers.
    #[arg(long, default_value_t = 1000)]
    pub label_keep_max_num: usize,
    /// How long an ADD COLUMN job stays PENDING/WAITING_TXN/RUNNING before FINISHED.
    #[arg(long, default_value_t = 300)]
    pub alter_duration_ms: u64,
    /// FE `stream_load_default_timeout_second`: load timeout without a `timeout` header.
    #[arg(long, default_value_t = 600)]
    pub load_timeout_second: u64,
    /// BE `streaming_load_max_mb`: the largest body accepted.
    #[arg(long, default_value_t = 10_240)]
    pub streaming_load_max_mb: u64,
    /// Validate non-key columns of delete rows too (NOT NULL columns must then be present).
    #[arg(long)]
    pub strict_delete_rows: bool,
    /// The StarRocks version to be: what `SELECT current_version()` returns, and the X.Y.Z
    /// that gates version-dependent behaviour (a suffix such as `-double` is kept for display).
    #[arg(long, default_value = "3.3.5-double", value_parser = SrVersion::parse)]
    pub sr_version: SrVersion,
    /// How many BE (or CN) HTTP listeners: BE i binds 127.0.0.(i+1); BE 0 keeps `--bind` and
    /// `--advertise-be-host`.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=200))]
    pub be_count: u32,
    /// FE `run_mode`: `shared_nothing` (BEs) or `shared_data` (compute nodes).
    #[arg(long, value_enum, default_value_t = RunMode::SharedNothing)]
    pub run_mode: RunMode,
    /// FE `default_replication_num`: the replica count of a table created without
    /// `replication_num` (shared-nothing only; shared-data tables have one).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..))]
    pub default_replication_num: u16,
    /// BE `primary_key_limit_size`: the largest encoded primary key, in bytes.
    #[arg(long, default_value_t = 128)]
    pub primary_key_limit_size: usize,
}

/// FE `run_mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum RunMode {
    SharedNothing,
    SharedData,
}

impl RunMode {
    /// The value StarRocks prints for `run_mode`.
    pub fn name(self) -> &'static str {
        match self {
            RunMode::SharedNothing => "shared_nothing",
            RunMode::SharedData => "shared_data",
        }
    }
}

/// A StarRocks version: the text as given (`3.3.5-double`) and its numeric X.Y.Z.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrVersion {
    pub text: String,
    pub number: (u32, u32, u32),
}

impl SrVersion {
    /// Parses `X.Y.Z` with an optional suffix after `-`, `+` or a space (`3.3.5-double`).
    pub fn parse(s: &str) -> Result<SrVersion, String> {
        let core = s.trim().split(['-', '+', ' ']).next().unwrap_or_default();
        let parts: Vec<&str> = core.split('.').collect();
        let num = |i: usize| -> Result<u32, String> {
            parts
                .get(i)
                .ok_or_else(|| format!("'{s}' is not a version like 3.3.5"))?
                .parse::<u32>()
                .map_err(|_| format!("'{s}' is not a version like 3.3.5"))
        };
        if parts.len() != 3 {
            return Err(format!("'{s}' is not a version like 3.3.5"));
        }
        Ok(SrVersion {
            text: s.trim().to_owned(),
            number: (num(0)?, num(1)?, num(2)?),
        })
    }

    /// Whether this version is at least `major.minor.patch`.
    pub fn at_least(&self, major: u32, minor: u32, patch: u32) -> bool {
        self.number >= (major, minor, patch)
    }
}

impl std::fmt::Display for SrVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl Config {
    /// Whether the FE runs in shared-data mode (compute nodes instead of BEs).
    pub fn shared_data(&self) -> bool {
        self.run_mode == RunMode::SharedData
    }

    /// A host clients can reach the listeners on: the bind address, or loopback for a
    /// wildcard bind.
    pub fn bind_host(&self) -> &str {
        match self.bind.as_str() {
            "0.0.0.0" | "::" | "[::]" => "127.0.0.1",
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sr_version_keeps_its_text_and_compares_numerically() {
        let v = SrVersion::parse("3.3.5-double").unwrap();
        assert_eq!(v.to_string(), "3.3.5-double");
        assert_eq!(v.number, (3, 3, 5));
        assert!(v.at_least(3, 2, 7) && v.at_least(3, 3, 5) && !v.at_least(3, 4, 1));
        assert!(SrVersion::parse("3.10.0").unwrap().at_least(3, 9, 9));
        assert!(SrVersion::parse("3.3").is_err());
        assert!(SrVersion::parse("banana").is_err());
    }
}
