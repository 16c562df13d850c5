//! dbmazz as managed services run it: a role with `REPLICATION` and `SELECT` on the tables, no
//! superuser, owner of nothing, and (as on PostgreSQL 15+ by default) no `CREATE` on `public`.
//! Every refusal must print the statement an administrator runs, and the tests run exactly that
//! statement, as the administrator, before expecting dbmazz to start.

use std::time::Duration;

use crate::support::dbmazz::{final_state, wait_until, Job};
use crate::support::pg::PgCluster;

const MINUTE: Duration = Duration::from_secs(60);

/// A cluster whose `app` database has two tables owned by `postgres`, one row each, and a role
/// `cdc` with `LOGIN REPLICATION` and `SELECT` on them; nobody but the owner may create in
/// `public`. Returns the cluster and `cdc`'s URL.
fn managed_cluster() -> (PgCluster, String) {
    let pg = PgCluster::start();
    pg.create_database("app");
    pg.psql(
        "app",
        "CREATE ROLE cdc LOGIN REPLICATION PASSWORD 'cdc-pw';
         CREATE TABLE orders (id int PRIMARY KEY, note text);
         CREATE TABLE items (id int PRIMARY KEY, qty int);
         INSERT INTO orders VALUES (1, 'before'); INSERT INTO items VALUES (1, 5);
         GRANT SELECT ON orders, items TO cdc;
         REVOKE CREATE ON SCHEMA public FROM PUBLIC;",
    );
    assert_eq!(
        pg.psql("app", "SELECT rolsuper FROM pg_roles WHERE rolname = 'cdc'"),
        "f"
    );
    let url = pg.url_as("cdc", "cdc-pw", "app");
    (pg, url)
}

/// Runs the job until it exits, expecting exit code 1; returns its log.
fn refused(job: &Job) -> String {
    let mut p = job.spawn();
    let status = p.wait(MINUTE);
    let log = p.log();
    assert_eq!(status.code(), Some(1), "{log}");
    log
}

/// The text between `start` and the next `end` in `log`, e.g. the statement after "run: ".
fn between<'a>(log: &'a str, start: &str, end: &str) -> &'a str {
    let from = log
        .find(start)
        .unwrap_or_else(|| panic!("{start:?} not in:\n{log}"))
        + start.len();
    let len = log[from..]
        .find(end)
        .unwrap_or_else(|| panic!("{end:?} not after {start:?} in:\n{log}"));
    &log[from..from + len]
}

fn slots(pg: &PgCluster) -> String {
    pg.psql("app", "SELECT count(*) FROM pg_replication_slots")
}

#[test]
fn a_role_without_create_rights_is_told_each_statement_to_run_and_then_streams() {
    let (pg, url) = managed_cluster();
    let job = Job::new(&url, "orders,items");

    // 1. It may not create the publication (it owns neither the tables nor the database).
    let log = refused(&job);
    assert!(
        log.contains("role cdc may not create publication dbmazz_pub"),
        "{log}"
    );
    let create_pub = between(&log, "(or a superuser) run: ", " and dbmazz will use it");
    assert_eq!(
        create_pub,
        "CREATE PUBLICATION \"dbmazz_pub\" FOR TABLE \"public\".\"orders\", \"public\".\"items\";"
    );
    pg.psql("app", create_pub);

    // 2. It may not create its state tables: one error names all four and both ways out.
    let log = refused(&job);
    assert!(
        log.contains("role cdc may not create dbmazz's state tables"),
        "{log}"
    );
    for table in [
        "public.dbmazz_checkpoints",
        "public.dbmazz_schemas",
        "public.dbmazz_snapshot_tables",
        "public.dbmazz_snapshot_chunks",
    ] {
        assert!(log.contains(table), "{table} not named:\n{log}");
    }
    assert!(
        log.contains("GRANT CREATE ON SCHEMA \"public\" TO \"cdc\";"),
        "{log}"
    );
    assert_eq!(slots(&pg), "0", "no slot before setup can finish");
    // The administrator picks the second way: create the tables and grant rights on them.
    let create_tables = format!(
        "{} TO \"cdc\";",
        between(&log, "or create the tables yourself: ", " TO \"cdc\";")
    );
    pg.psql("app", &create_tables);

    // 3. Now it copies and streams, still without any right on the schema.
    let mut p = job.spawn_streaming();
    pg.psql(
        "app",
        "UPDATE orders SET note = 'after' WHERE id = 1; INSERT INTO items VALUES (2, 7);",
    );
    wait_until(MINUTE, "the copy and two changes", || {
        let state = final_state(&job.lines());
        state.len() == 3
            && state
                .values()
                .any(|row| row.get("note").and_then(|v| v.as_str()) == Some("after"))
    });
    p.terminate();
    assert!(p.wait(MINUTE).success(), "{}", p.log());
    let state = final_state(&job.lines());
    let qty: Vec<i64> = state
        .iter()
        .filter(|((t, _), _)| t == "public.items")
        .map(|(_, row)| row["qty"].as_i64().unwrap())
        .collect();
    assert_eq!(qty, vec![5, 7]);
    assert_eq!(
        pg.psql(
            "app",
            "SELECT has_schema_privilege('cdc', 'public', 'CREATE')"
        ),
        "f"
    );
    assert_eq!(
        pg.psql(
            "app",
            "SELECT pg_get_userbyid(pubowner) FROM pg_publication WHERE pubname = 'dbmazz_pub'"
        ),
        "postgres"
    );
}

#[test]
fn a_publication_owned_by_someone_else_is_used_when_it_covers_the_tables_and_named_when_not() {
    let (pg, url) = managed_cluster();
    pg.psql(
        "app",
        "CREATE PUBLICATION dbmazz_pub FOR TABLE orders; GRANT CREATE ON SCHEMA public TO cdc;",
    );
    let job = Job::new(&url, "orders,items");
    let log = refused(&job);
    assert!(
        log.contains("publication dbmazz_pub (owned by postgres) does not publish public.items"),
        "{log}"
    );
    let statement = between(&log, "as its owner run: ", " or set PUBLICATION_NAME");
    assert_eq!(
        statement,
        "ALTER PUBLICATION \"dbmazz_pub\" ADD TABLE \"public\".\"items\";"
    );
    assert_eq!(slots(&pg), "0");
    pg.psql("app", statement);

    let mut p = job.spawn_streaming();
    pg.psql(
        "app",
        "INSERT INTO items VALUES (2, 7); DELETE FROM orders;",
    );
    wait_until(MINUTE, "the copy and two changes", || {
        let state = final_state(&job.lines());
        state.len() == 2 && state.keys().all(|(t, _)| t == "public.items")
    });
    p.terminate();
    assert!(p.wait(MINUTE).success(), "{}", p.log());
    // dbmazz used the publication as it was: still the administrator's.
    assert_eq!(
        pg.psql(
            "app",
            "SELECT pg_get_userbyid(pubowner) || ' ' || count(*) FROM pg_publication p \
             JOIN pg_publication_tables t USING (pubname) WHERE pubname = 'dbmazz_pub' \
             GROUP BY pubowner"
        ),
        "postgres 2"
    );
}
