//! `dbmazz verify` as an oracle: equal after replication (ints, text, numeric, bool,
//! timestamptz, jsonb, a TOASTed value, soft deletes), and it names the key and column of a row
//! changed by hand in the sink.

use std::process::{Command, Output};
use std::time::Duration;

use crate::support::dbmazz::{wait_until, Job};
use crate::support::pg::PgCluster;
use crate::support::starrocks::Double;

fn verify(pg: &PgCluster, d: &Double, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dbmazz"))
        .arg("verify")
        .args(extra)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", pg.url("app"))
        .env("TABLES", "items,docs")
        .env("STARROCKS_MYSQL_URL", d.mysql_url())
        .env("STARROCKS_DB", "app")
        .output()
        .expect("run dbmazz verify")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn verify_is_equal_after_replication_and_catches_a_hand_edit() {
    let pg = PgCluster::start();
    pg.create_database("app");
    pg.psql(
        "app",
        "CREATE TABLE items (id bigint PRIMARY KEY, name text, price numeric(10,2), ok boolean,
           at timestamptz, n int);
         CREATE TABLE docs (k1 int, k2 text, body jsonb, PRIMARY KEY (k1, k2));",
    );
    let d = Double::start("app");
    let job = Job::new(&pg.url("app"), "items,docs")
        .env("SINK_TYPE", "starrocks")
        .env("STARROCKS_URL", &d.url())
        .env("STARROCKS_MYSQL_URL", &d.mysql_url())
        .env("STARROCKS_DB", "app")
        .env("CREATE_TABLES", "true");
    let _p = job.spawn_streaming();
    pg.psql(
        "app",
        "INSERT INTO items SELECT g, 'item ' || g, g * 1.5, g % 2 = 0,
           '2024-01-02 03:04:05.12+02'::timestamptz + g * interval '1 second', NULL
         FROM generate_series(1, 200) g;
         INSERT INTO docs VALUES (1, 'a', '{\"b\": [1, 2.5, null], \"a\": \"x\"}'),
           (2, 'b', jsonb_build_object('big', (SELECT string_agg(md5(g::text), '') FROM generate_series(1, 200) g)));
         UPDATE items SET price = 10.10, n = 7 WHERE id <= 20;
         DELETE FROM items WHERE id > 190;
         UPDATE docs SET k2 = 'c' WHERE k1 = 1;",
    );
    let out = verify(&pg, &d, &["--wait", "60"]);
    assert!(out.status.success(), "verify failed:\n{}", text(&out));
    let t = text(&out);
    assert!(
        t.contains("public.items: source 190 rows, sink 190 rows, 0 differing keys: OK"),
        "{t}"
    );
    assert!(t.contains("public.docs: source 2 rows, sink 2 rows"), "{t}");

    // A row changed by hand in the sink (an upsert through the MySQL port), one deleted.
    d.exec("INSERT INTO app.items (id, name, price, ok, at, n) VALUES (5, 'hacked', 7.50, 1, '2024-01-02 01:04:10.12', NULL)");
    d.exec("DELETE FROM app.items WHERE id = 6");
    let out = verify(&pg, &d, &[]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("public.items: id=5: differs in name"), "{t}");
    assert!(t.contains("public.items: id=6: only in source"), "{t}");
    assert!(
        t.contains("source 190 rows, sink 189 rows, 2 differing keys: DIFFERENT"),
        "{t}"
    );
    assert!(
        t.contains("public.docs: source 2 rows, sink 2 rows, 0 differing keys: OK"),
        "{t}"
    );
    assert!(t.contains("verify: source and sink differ"), "{t}");

    // A change in the source that replication brings over is seen too.
    pg.psql("app", "UPDATE items SET name = 'fixed' WHERE id = 7");
    wait_until(
        Duration::from_secs(30),
        "the update to reach the sink",
        || {
            d.query("SELECT name FROM app.items WHERE id = 7")
                .first()
                .and_then(|r| r[0].clone())
                .as_deref()
                == Some("fixed")
        },
    );
    let t = text(&verify(&pg, &d, &[]));
    assert!(t.contains("2 differing keys"), "{t}");

    // Missing configuration is a usage error (exit 2).
    let out = Command::new(env!("CARGO_BIN_EXE_dbmazz"))
        .arg("verify")
        .env_clear()
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("DATABASE_URL"), "{}", text(&out));
}
