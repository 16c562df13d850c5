//! What StarRocks cluster dbmazz loads into, read once at start: its version, its run mode and
//! its alive nodes; and the refusals that follow from them.
//!
//! Some of what dbmazz's loads rely on exists only from a given StarRocks release or in one run
//! mode. A job that would fail at its first delete, or change values without a word, is refused
//! before any row moves instead, with the version, the run mode and what to do.
//!
//! | needs | from | else |
//! |---|---|---|
//! | `compression: gzip` on JSON loads (`STARROCKS_COMPRESS=gzip`) | 3.2.7 | refused at start |
//! | shared-data: row-mode partial update together with `merge_condition` (key-only deletes, unchanged TOAST) | 3.4.1 | refused at start |
//! | DATETIME with microseconds, for `timestamp(tz)` columns with fractional seconds | 3.3.5 | refused at start, unless `STARROCKS_DATETIME_FRACTION=drop` accepts whole seconds |
//! | `CREATE TABLE` replicas ≤ alive BEs | — | `replication_num` = alive BEs, at most 3 |
//! | `ALTER TABLE … RENAME COLUMN a TO b`, for a renamed source column | 3.3.2 | [`Cluster::supports_rename_column`] is false: the schema-change planner stops with the statement |
//!
//! The run mode comes from `ADMIN SHOW FRONTEND CONFIG LIKE 'run_mode'` and the nodes from
//! `SHOW BACKENDS` / `SHOW COMPUTE NODES`. Both need the `OPERATE` (or `NODE`) privilege; without
//! it `STARROCKS_RUN_MODE` and `STARROCKS_REPLICATION_NUM` say what dbmazz cannot read.

use std::fmt;

use crate::pipeline::change::CatalogColumn;
use crate::starrocks::config::{RunMode, StarRocksConfig};
use crate::starrocks::ddl::{Ddl, DdlError};

/// A StarRocks release number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    /// Major.
    pub major: u32,
    /// Minor.
    pub minor: u32,
    /// Patch.
    pub patch: u32,
}

impl Version {
    /// A version.
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        Version {
            major,
            minor,
            patch,
        }
    }

    /// Parses the leading `X.Y[.Z]` of `current_version()` (`3.3.5-abc1234`, `3.4.1-ee`).
    pub fn parse(text: &str) -> Option<Version> {
        let text = text.trim();
        let end = text
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(text.len());
        let mut parts = text[..end].split('.').filter(|p| !p.is_empty());
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        let patch = parts.next().map_or(Some(0), |p| p.parse().ok())?;
        Some(Version::new(major, minor, patch))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// What dbmazz knows of the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cluster {
    /// `current_version()` as the FE says it.
    pub version_text: String,
    /// Its release number, when it has one.
    pub version: Option<Version>,
    /// The run mode, when it could be read or was configured.
    pub run_mode: Option<RunMode>,
    /// Alive, not decommissioned BEs, when they could be listed.
    pub alive_backends: Option<usize>,
}

/// The cluster cannot run this job as configured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("StarRocks {version} ({run_mode}): {what}")]
pub struct Refusal {
    /// The version text.
    pub version: String,
    /// The run mode, or "run mode unknown".
    pub run_mode: String,
    /// What cannot work, and what to do.
    pub what: String,
}

/// JSON loads with `compression: gzip`.
pub const GZIP_JSON: Version = Version::new(3, 2, 7);
/// Row-mode partial updates with `merge_condition` on shared-data clusters.
pub const SHARED_DATA_PARTIAL_MERGE: Version = Version::new(3, 4, 1);
/// DATETIME with millisecond and microsecond precision.
pub const DATETIME_MICROS: Version = Version::new(3, 3, 5);
/// `ALTER TABLE … RENAME COLUMN` (docs ALTER_TABLE, "Rename a column": "From v3.3.2
/// onwards"); older releases answer with a syntax error.
pub const RENAME_COLUMN: Version = Version::new(3, 3, 2);

/// Whether a PostgreSQL column holds timestamps with fractional seconds (`timestamp`,
/// `timestamptz` and their arrays, unless declared with precision 0).
pub fn has_fractional_seconds(col: &CatalogColumn) -> bool {
    let oid = if col.elem_oid != 0 {
        col.elem_oid
    } else {
        col.type_oid
    };
    matches!(oid, 1114 | 1184) && col.type_modifier != 0
}

impl Cluster {
    /// Reads version, run mode and nodes through `ddl`. Only the version is required; what
    /// needs privileges the user lacks stays unknown (with a warning), unless configured.
    pub async fn probe(ddl: &Ddl, cfg: &StarRocksConfig) -> Result<Cluster, DdlError> {
        let version_text = ddl.version().await?;
        let version = Version::parse(&version_text);
        if version.is_none() {
            tracing::warn!(
                version = %version_text,
                "cannot read a release number from StarRocks' current_version(); \
                 version checks are skipped"
            );
        }
        let run_mode = match cfg.run_mode {
            Some(mode) => Some(mode),
            None => match ddl.frontend_config("run_mode").await {
                Ok(Some(v)) if v.eq_ignore_ascii_case("shared_data") => Some(RunMode::SharedData),
                Ok(Some(v)) if v.eq_ignore_ascii_case("shared_nothing") => {
                    Some(RunMode::SharedNothing)
                }
                Ok(other) => {
                    tracing::warn!(
                        value = ?other,
                        "StarRocks did not say its run_mode; set STARROCKS_RUN_MODE"
                    );
                    None
                }
                Err(e) => {
                    tracing::warn!(
                        error = %e,
                        "cannot read StarRocks' run mode (ADMIN SHOW FRONTEND CONFIG needs the \
                         OPERATE privilege); set STARROCKS_RUN_MODE=shared_nothing|shared_data"
                    );
                    None
                }
            },
        };
        let alive_backends = match ddl.alive_backends().await {
            Ok(n) => Some(n),
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    "cannot list StarRocks' nodes (SHOW BACKENDS needs the OPERATE or NODE \
                     privilege); set STARROCKS_REPLICATION_NUM for the tables dbmazz creates"
                );
                None
            }
        };
        Ok(Cluster {
            version_text,
            version,
            run_mode,
            alive_backends,
        })
    }

    fn refusal(&self, what: String) -> Refusal {
        Refusal {
            version: self.version_text.clone(),
            run_mode: self
                .run_mode
                .map_or_else(|| "run mode unknown".to_owned(), |m| m.to_string()),
            what,
        }
    }

    fn older_than(&self, v: Version) -> bool {
        self.version.is_some_and(|have| have < v)
    }

    /// Whether this StarRocks renames columns ([`RENAME_COLUMN`] and later). A version dbmazz
    /// cannot read counts as no: a rename is then left to a person, with the statement.
    pub fn supports_rename_column(&self) -> bool {
        self.version.is_some_and(|have| have >= RENAME_COLUMN)
    }

    /// Refuses a job that cannot work on this cluster.
    pub fn check(&self, cfg: &StarRocksConfig) -> Result<(), Refusal> {
        if cfg.gzip && self.older_than(GZIP_JSON) {
            return Err(self.refusal(format!(
                "STARROCKS_COMPRESS=gzip needs StarRocks {GZIP_JSON} or later, where JSON \
                 Stream Loads take `compression: gzip`; unset STARROCKS_COMPRESS or upgrade"
            )));
        }
        if self.run_mode == Some(RunMode::SharedData) && self.older_than(SHARED_DATA_PARTIAL_MERGE)
        {
            return Err(self.refusal(format!(
                "shared-data clusters take a row-mode partial update together with \
                 merge_condition only from {SHARED_DATA_PARTIAL_MERGE}, and dbmazz sends one for \
                 every key-only delete and every update that leaves a TOASTed value unchanged; \
                 upgrade to {SHARED_DATA_PARTIAL_MERGE} or later, or load into a shared-nothing \
                 cluster"
            )));
        }
        Ok(())
    }

    /// Refuses fractional-second columns on a cluster whose DATETIME keeps whole seconds, unless
    /// `STARROCKS_DATETIME_FRACTION=drop` accepts that.
    pub fn check_columns<'a>(
        &self,
        cfg: &StarRocksConfig,
        table: &str,
        columns: impl IntoIterator<Item = &'a CatalogColumn>,
    ) -> Result<(), Refusal> {
        if cfg.datetime_fraction_drop || !self.older_than(DATETIME_MICROS) {
            return Ok(());
        }
        match columns.into_iter().find(|c| has_fractional_seconds(c)) {
            Some(col) => Err(self.refusal(format!(
                "column {:?} of table {table} holds timestamps with fractional seconds, and \
                 StarRocks keeps DATETIME microseconds only from {DATETIME_MICROS}; upgrade, \
                 or declare the column timestamp(0) in PostgreSQL, or set \
                 STARROCKS_DATETIME_FRACTION=drop to accept whole seconds in StarRocks",
                col.name
            ))),
            None => Ok(()),
        }
    }

    /// `replication_num` for a table dbmazz creates: `STARROCKS_REPLICATION_NUM`, else the alive
    /// BEs at most 3 on a shared-nothing cluster; `None` leaves it to StarRocks (shared-data
    /// keeps one copy in object storage; an unknown node count keeps the cluster's default).
    pub fn replication_num(&self, cfg: &StarRocksConfig) -> Option<u32> {
        if cfg.replication_num.is_some() {
            return cfg.replication_num;
        }
        match (self.run_mode, self.alive_backends) {
            (Some(RunMode::SharedData), _) | (_, None) => None,
            (_, Some(n)) => Some(n.clamp(1, 3) as u32),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_from_what_current_version_says() {
        assert_eq!(Version::parse("3.3.5-abc1234"), Some(Version::new(3, 3, 5)));
        assert_eq!(Version::parse("3.4.1-ee"), Some(Version::new(3, 4, 1)));
        assert_eq!(Version::parse("3.2"), Some(Version::new(3, 2, 0)));
        assert_eq!(Version::parse(" 4.0.0 "), Some(Version::new(4, 0, 0)));
        assert_eq!(Version::parse("main-abc"), None);
        assert!(Version::new(3, 3, 10) > Version::new(3, 3, 9));
    }

    fn cluster(version: &str, run_mode: Option<RunMode>, alive: Option<usize>) -> Cluster {
        Cluster {
            version_text: version.into(),
            version: Version::parse(version),
            run_mode,
            alive_backends: alive,
        }
    }

    fn cfg() -> StarRocksConfig {
        crate::starrocks::config::tests_support::starrocks_config()
    }

    #[test]
    fn refusals_name_version_run_mode_and_remedy() {
        let mut c = cfg();
        c.gzip = true;
        let e = cluster("3.2.6", Some(RunMode::SharedNothing), Some(1))
            .check(&c)
            .unwrap_err()
            .to_string();
        assert!(e.contains("3.2.6") && e.contains("shared_nothing"), "{e}");
        assert!(e.contains("STARROCKS_COMPRESS"), "{e}");
        assert!(cluster("3.2.7", None, None).check(&c).is_ok());

        let c = cfg();
        let e = cluster("3.3.9", Some(RunMode::SharedData), Some(2))
            .check(&c)
            .unwrap_err()
            .to_string();
        assert!(e.contains("shared_data") && e.contains("3.4.1"), "{e}");
        assert!(cluster("3.4.1", Some(RunMode::SharedData), None)
            .check(&c)
            .is_ok());
        assert!(cluster("3.3.9", Some(RunMode::SharedNothing), None)
            .check(&c)
            .is_ok());
    }

    #[test]
    fn fractional_timestamps_need_3_3_5_or_consent() {
        let col = |type_oid, type_modifier, elem_oid| CatalogColumn {
            name: "at".into(),
            type_oid,
            type_modifier,
            elem_oid,
            not_null: false,
            array_dims: 0,
        };
        let mut c = cfg();
        let old = cluster("3.3.4", Some(RunMode::SharedNothing), Some(1));
        let e = old
            .check_columns(&c, "public.t", [&col(1184, -1, 0)])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("\"at\"") && e.contains("3.3.4") && e.contains("3.3.5"),
            "{e}"
        );
        assert!(old.check_columns(&c, "t", [&col(1115, -1, 1114)]).is_err());
        assert!(old.check_columns(&c, "t", [&col(1114, 0, 0)]).is_ok());
        assert!(old.check_columns(&c, "t", [&col(1082, -1, 0)]).is_ok());
        let new = cluster("3.3.5", Some(RunMode::SharedNothing), Some(1));
        assert!(new.check_columns(&c, "t", [&col(1184, -1, 0)]).is_ok());
        c.datetime_fraction_drop = true;
        assert!(old.check_columns(&c, "t", [&col(1184, 3, 0)]).is_ok());
    }

    #[test]
    fn rename_column_needs_3_3_2_and_a_readable_version() {
        let sn = Some(RunMode::SharedNothing);
        assert!(!cluster("3.3.1", sn, None).supports_rename_column());
        assert!(!cluster("3.2.15-ee", sn, None).supports_rename_column());
        assert!(cluster("3.3.2", sn, None).supports_rename_column());
        assert!(cluster("3.4.0-abc", Some(RunMode::SharedData), None).supports_rename_column());
        assert!(cluster("4.0.1", sn, None).supports_rename_column());
        assert!(!cluster("main-abc1234", sn, None).supports_rename_column());
    }

    #[test]
    fn replication_follows_alive_backends_capped_at_three() {
        let mut c = cfg();
        let sn = Some(RunMode::SharedNothing);
        assert_eq!(cluster("3.3.5", sn, Some(1)).replication_num(&c), Some(1));
        assert_eq!(cluster("3.3.5", sn, Some(2)).replication_num(&c), Some(2));
        assert_eq!(cluster("3.3.5", sn, Some(7)).replication_num(&c), Some(3));
        assert_eq!(cluster("3.3.5", sn, None).replication_num(&c), None);
        assert_eq!(
            cluster("3.4.1", Some(RunMode::SharedData), Some(4)).replication_num(&c),
            None
        );
        c.replication_num = Some(2);
        assert_eq!(cluster("3.3.5", sn, Some(1)).replication_num(&c), Some(2));
    }
}
