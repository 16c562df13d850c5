//! What differs between PostgreSQL majors, seen from outside: the oldest server dbmazz refuses,
//! and the catalog and replication features that only some majors have. The rest of the suite
//! runs unchanged on whichever major `PG_MAJOR` picks (see `scripts/test.sh` for the matrix).

use std::time::Duration;

use crate::support::dbmazz::Job;
use crate::support::pg::{pinned_bin, PgCluster, PgOptions};

const MINUTE: Duration = Duration::from_secs(60);

#[test]
fn postgresql_13_is_refused_at_start_naming_its_version() {
    let pg = PgCluster::start_with(PgOptions {
        bin: Some(pinned_bin("13")),
        ..PgOptions::default()
    });
    let url = pg.create_database("app");
    pg.psql("app", "CREATE TABLE t (id int PRIMARY KEY)");
    let job = Job::new(&url, "t");
    let mut p = job.spawn();
    let status = p.wait(MINUTE);
    let log = p.log();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("PostgreSQL 13.23"), "{log}");
    assert!(log.contains("needs PostgreSQL 14 or later"), "{log}");
    // Refused before touching anything: no publication, no slot.
    assert_eq!(pg.psql("app", "SELECT count(*) FROM pg_publication"), "0");
    assert_eq!(
        pg.psql("app", "SELECT count(*) FROM pg_replication_slots"),
        "0"
    );
}
