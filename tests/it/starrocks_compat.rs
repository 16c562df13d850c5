//! What a real StarRocks cluster does that a single-node stand-in used to hide: no `@@socket`
//! variable, BEs on other hosts, three replicas by default, case-sensitive JSON keys, array
//! elements nulled when they do not convert, shared-data and version limits, followers that
//! redirect, memory-limit refusals, older ALTER jobs, the primary-key size limit. Each test runs
//! the real binary against `tools/starrocks-double` configured like such a cluster; each failed
//! before the fix it pins. The compatibility matrix runs one core workload against every
//! StarRocks release and run mode the README lists.

use std::time::Duration;

use serde_json::json;

use crate::starrocks::{create_both, wait_converged};
use crate::support::dbmazz::wait_until;
use crate::support::pg::PgCluster;
use crate::support::starrocks::Double;

const MINUTE: Duration = Duration::from_secs(60);

/// Waits for a job that must stop at start, and returns its log.
fn refused(d: &Double, url: &str, tables: &str, env: &[(&str, &str)]) -> String {
    let mut job = d.job(url, tables);
    for (k, v) in env {
        job = job.env(k, v);
    }
    let mut p = job.spawn();
    let status = p.wait(MINUTE);
    let log = p.log();
    assert_eq!(status.code(), Some(1), "{log}");
    log
}

#[test]
fn the_mysql_connection_never_asks_for_socket_even_when_the_url_prefers_it() {
    let pg = PgCluster::start();
    let url = pg.create_database("app");
    let d = Double::start("app");
    // What mysql_async sends on connect with prefer_socket on; StarRocks has no such variable.
    let err = d.try_query("SELECT @@socket").unwrap_err();
    assert!(err.contains("Unknown system variable 'socket'"), "{err}");
    create_both(
        &pg,
        &d,
        "CREATE TABLE t (id int PRIMARY KEY, v text)",
        "CREATE TABLE app.t (id INT NOT NULL, v STRING) PRIMARY KEY(id) DISTRIBUTED BY HASH(id) PROPERTIES('replication_num'='1')",
    );
    let mysql = format!("{}?prefer_socket=true", d.mysql_url());
    let job = d.job(&url, "t").env("STARROCKS_MYSQL_URL", &mysql);
    let mut p = job.spawn_streaming();
    pg.psql("app", "INSERT INTO t VALUES (1, 'a'), (2, 'b')");
    wait_converged(&pg, &d, "t", "id", "v");
    p.terminate();
    assert!(p.wait(MINUTE).success(), "{}", p.log());
}

#[test]
fn loads_follow_the_fe_to_bes_on_other_hosts_unless_an_allowlist_says_otherwise() {
    let pg = PgCluster::start();
    let url = pg.create_database("app");
    let d = Double::start_with("app", &["--be-count", "3"]);
    assert!(
        d.bes.iter().any(|(host, _)| host != "127.0.0.1"),
        "{:?}",
        d.bes
    );
    create_both(
        &pg,
        &d,
        "CREATE TABLE t (id int PRIMARY KEY, v text)",
        "CREATE TABLE app.t (id INT NOT NULL, v STRING) PRIMARY KEY(id) DISTRIBUTED BY HASH(id)",
    );
    // Every load through the FE (no pin): separate transactions, separate loads, spread over
    // the BEs.
    let job = d.job(&url, "t").env("STARROCKS_BE_PIN_MS", "0");
    let mut p = job.spawn_streaming();
    let redirects = || d.stats()["fe_redirects"].as_u64().unwrap();
    let before = redirects();
    for i in 0..6 {
        pg.psql("app", &format!("INSERT INTO t VALUES ({i}, 'v{i}')"));
        wait_converged(&pg, &d, "t", "id", "v");
    }
    assert!(redirects() - before >= 6, "{}", d.stats());
    p.terminate();
    assert!(p.wait(MINUTE).success(), "{}", p.log());

    // An operator who narrows the redirects gets a clear stop, not a silent skip. With the
    // default pin, loads skip the FE for a second after it chose 127.0.0.1, so the stop comes
    // when the FE is next asked and sends a load elsewhere.
    pg.psql(
        "app",
        "INSERT INTO t SELECT g, 'w' FROM generate_series(10, 20) g",
    );
    let mut job = d
        .job(&url, "t")
        .env("STARROCKS_REDIRECT_ALLOW", "127.0.0.1");
    job = job.env("FLUSH_SIZE", "1");
    let mut p = job.spawn_streaming();
    let mut i = 21;
    wait_until(
        MINUTE,
        "the job to stop on a redirect outside the allowlist",
        || {
            if p.exited() {
                return true;
            }
            pg.psql("app", &format!("INSERT INTO t VALUES ({i}, 'x')"));
            i += 1;
            std::thread::sleep(Duration::from_millis(200));
            false
        },
    );
    assert_eq!(p.wait(MINUTE).code(), Some(1), "{}", p.log());
    assert!(
        p.log().contains("which is not in STARROCKS_REDIRECT_ALLOW"),
        "{}",
        p.log()
    );
}

fn replication_num(d: &Double, table: &str) -> String {
    let ddl = d.query(&format!("SHOW CREATE TABLE app.{table}"));
    let text = ddl[0][1].clone().unwrap_or_default();
    let at = text
        .find("\"replication_num\"")
        .unwrap_or_else(|| panic!("no replication_num in {text}"));
    text[at..].split('"').nth(3).unwrap_or_default().to_owned()
}

#[test]
fn create_tables_asks_for_as_many_replicas_as_there_are_alive_bes_at_most_three() {
    for (bes, expected) in [("1", "1"), ("3", "3")] {
        let pg = PgCluster::start();
        let url = pg.create_database("app");
        let d = Double::start_with(
            "app",
            &["--be-count", bes, "--default-replication-num", "3"],
        );
        pg.psql("app", "CREATE TABLE t (id int PRIMARY KEY, v text)");
        let job = d.job(&url, "t").env("CREATE_TABLES", "true");
        let mut p = job.spawn_streaming();
        pg.psql("app", "INSERT INTO t VALUES (1, 'a')");
        wait_converged(&pg, &d, "t", "id", "v");
        assert_eq!(replication_num(&d, "t"), expected, "{bes} BEs");
        p.terminate();
        assert!(p.wait(MINUTE).success(), "{}", p.log());
    }
}

#[test]
fn multi_dimensional_arrays_load_whole_or_stop_the_job() {
    let pg = PgCluster::start();
    let url = pg.create_database("app");
    let d = Double::start("app");
    pg.psql(
        "app",
        "CREATE TABLE grid (id int PRIMARY KEY, m int[][], v int[]);
         INSERT INTO grid VALUES (1, '{{1,2},{3,4}}', '{5,6}'), (2, '{}', '{}')",
    );
    let job = d.job(&url, "grid").env("CREATE_TABLES", "true");
    let mut p = job.spawn_streaming();
    pg.psql("app", "INSERT INTO grid VALUES (3, '{{7},{NULL}}', '{8}')");
    wait_converged(&pg, &d, "grid", "id", "v");
    let types: Vec<String> = d
        .query("SELECT COLUMN_TYPE FROM information_schema.columns WHERE TABLE_NAME = 'grid' AND COLUMN_NAME = 'm'")
        .into_iter()
        .map(|r| r[0].clone().unwrap())
        .collect();
    assert_eq!(types, ["array<array<int(11)>>"]);
    let m = d.query("SELECT m FROM app.grid ORDER BY id");
    let m: Vec<String> = m
        .into_iter()
        .map(|r| r[0].clone().unwrap_or_default().replace(' ', ""))
        .collect();
    assert_eq!(m, ["[[1,2],[3,4]]", "[]", "[[7],[null]]"]);
    p.terminate();
    assert!(p.wait(MINUTE).success(), "{}", p.log());

    // A pre-created one-level ARRAY would load [[1,2]] as [null]: the job stops instead.
    let pg = PgCluster::start();
    let url = pg.create_database("app");
    let d = Double::start("app");
    create_both(
        &pg,
        &d,
        "CREATE TABLE a (id int PRIMARY KEY, v int[])",
        "CREATE TABLE app.a (id INT NOT NULL, v ARRAY<INT>) PRIMARY KEY(id) DISTRIBUTED BY HASH(id) PROPERTIES('replication_num'='1')",
    );
    let job = d.job(&url, "a");
    let mut p = job.spawn_streaming();
    pg.psql("app", "INSERT INTO a VALUES (1, '{1}')");
    wait_converged(&pg, &d, "a", "id", "v");
    pg.psql("app", "INSERT INTO a VALUES (2, '{{1,2}}')");
    assert_eq!(p.wait(MINUTE).code(), Some(1), "{}", p.log());
    let log = p.log();
    assert!(
        log.contains("column \"v\"") && log.contains("2-dimensional"),
        "{log}"
    );
    assert_eq!(
        d.query("SELECT count(*) FROM app.a")[0][0].as_deref(),
        Some("1"),
        "nothing of the row was loaded"
    );
}

#[test]
fn json_keys_carry_the_starrocks_spelling_of_each_column() {
    let pg = PgCluster::start();
    let url = pg.create_database("app");
    let d = Double::start("app");
    create_both(
        &pg,
        &d,
        "CREATE TABLE c (id int PRIMARY KEY, \"customerId\" int, \"Name\" text)",
        "CREATE TABLE app.c (id INT NOT NULL, customerid INT, NAME STRING) PRIMARY KEY(id) DISTRIBUTED BY HASH(id) PROPERTIES('replication_num'='1')",
    );
    pg.psql("app", "INSERT INTO c VALUES (1, 10, 'x')");
    let job = d.job(&url, "c");
    let mut p = job.spawn_streaming();
    pg.psql(
        "app",
        "INSERT INTO c VALUES (2, 20, 'y'); UPDATE c SET \"customerId\" = 11 WHERE id = 1",
    );
    let want = "1|11|x,2|20|y";
    wait_until(MINUTE, "the rows under StarRocks' own column names", || {
        let rows = d
            .try_query("SELECT id, customerid, name FROM app.c ORDER BY id")
            .unwrap_or_default();
        let got: Vec<String> = rows
            .iter()
            .map(|r| {
                r.iter()
                    .map(|v| v.clone().unwrap_or_default())
                    .collect::<Vec<_>>()
                    .join("|")
            })
            .collect();
        got.join(",") == want
    });
    p.terminate();
    assert!(p.wait(MINUTE).success(), "{}", p.log());
}

#[test]
fn shared_data_before_3_4_1_is_refused_at_start_and_works_from_it() {
    let pg = PgCluster::start();
    let url = pg.create_database("app");
    pg.psql("app", "CREATE TABLE t (id int PRIMARY KEY, v text)");
    let d = Double::start_with(
        "app",
        &["--run-mode", "shared_data", "--sr-version", "3.3.9"],
    );
    let log = refused(&d, &url, "t", &[("CREATE_TABLES", "true")]);
    assert!(
        log.contains("StarRocks 3.3.9 (shared_data)") && log.contains("3.4.1"),
        "{log}"
    );
    assert!(
        d.try_query("SELECT * FROM app.t").is_err(),
        "nothing was created before the refusal"
    );

    let d = Double::start_with(
        "app",
        &["--run-mode", "shared_data", "--sr-version", "3.4.1"],
    );
    let job = d.job(&url, "t").env("CREATE_TABLES", "true");
    let mut p = job.spawn_streaming();
    // A key-only delete is a row-mode partial update with merge_condition.
    pg.psql(
        "app",
        "INSERT INTO t VALUES (1, 'a'), (2, 'b'); DELETE FROM t WHERE id = 1",
    );
    wait_converged(&pg, &d, "t", "id", "v");
    p.terminate();
    assert!(p.wait(MINUTE).success(), "{}", p.log());
}

#[test]
fn load_state_is_asked_of_the_leader_through_a_follower_fe() {
    let d = Double::start_with("app", &["--fe-extra-hops", "1"]);
    d.exec("CREATE TABLE app.t (id INT NOT NULL, dbmazz_cdc_version BIGINT) PRIMARY KEY(id) DISTRIBUTED BY HASH(id) PROPERTIES('replication_num'='1')");
    let cfg = d.starrocks_config("app");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let loader =
        dbmazz::starrocks::stream_load::StreamLoader::new(std::sync::Arc::new(cfg.clone()));
    let (outcome, _) = rt.block_on(loader.load(dbmazz::starrocks::stream_load::LoadRequest {
        table: "t".into(),
        label: "through_a_follower".into(),
        partial_columns: None,
        csv_columns: None,
        body: bytes::Bytes::from_static(br#"[{"id":1,"dbmazz_cdc_version":1}]"#),
    }));
    assert!(
        matches!(
            outcome,
            dbmazz::starrocks::stream_load::LoadOutcome::Committed { .. }
        ),
        "{outcome:?}"
    );
    let state = dbmazz::starrocks::stream_load::load_state(&cfg, "through_a_follower")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(state, "VISIBLE");
}

#[test]
fn memory_limit_refusals_are_retried_until_the_load_goes_through() {
    let pg = PgCluster::start();
    let url = pg.create_database("app");
    let d = Double::start("app");
    create_both(
        &pg,
        &d,
        "CREATE TABLE t (id int PRIMARY KEY, v text)",
        "CREATE TABLE app.t (id INT NOT NULL, v STRING) PRIMARY KEY(id) DISTRIBUTED BY HASH(id) PROPERTIES('replication_num'='1')",
    );
    d.fault(json!({"kind": "mem_limit", "count": 2}));
    let job = d.job(&url, "t");
    let mut p = job.spawn_streaming();
    pg.psql(
        "app",
        "INSERT INTO t SELECT g, 'v' FROM generate_series(1, 10) g",
    );
    wait_converged(&pg, &d, "t", "id", "v");
    assert!(p.log().contains("exceed"), "{}", p.log());
    p.terminate();
    assert!(p.wait(MINUTE).success(), "{}", p.log());
}

#[test]
fn version_limits_refuse_at_start_with_the_version_and_what_to_do() {
    let pg = PgCluster::start();
    let url = pg.create_database("app");
    pg.psql(
        "app",
        "CREATE TABLE t (id int PRIMARY KEY, at timestamptz, d date)",
    );
    let d = Double::start_with("app", &["--sr-version", "3.2.6"]);
    let log = refused(
        &d,
        &url,
        "t",
        &[
            ("CREATE_TABLES", "true"),
            ("STARROCKS_COMPRESS", "gzip"),
            ("STARROCKS_DATETIME_FRACTION", "drop"),
        ],
    );
    assert!(log.contains("3.2.6") && log.contains("3.2.7"), "{log}");
    assert!(log.contains("STARROCKS_COMPRESS"), "{log}");

    let d = Double::start_with("app", &["--sr-version", "3.3.4"]);
    let log = refused(&d, &url, "t", &[("CREATE_TABLES", "true")]);
    assert!(
        log.contains("column \"at\"") && log.contains("3.3.5"),
        "{log}"
    );
    let job = d
        .job(&url, "t")
        .env("CREATE_TABLES", "true")
        .env("STARROCKS_DATETIME_FRACTION", "drop");
    let mut p = job.spawn_streaming();
    pg.psql(
        "app",
        "INSERT INTO t VALUES (1, '2024-01-02 03:04:05+00', '2024-01-02')",
    );
    wait_until(MINUTE, "the row", || {
        d.try_query("SELECT count(*) FROM app.t")
            .is_ok_and(|r| r[0][0].as_deref() == Some("1"))
    });
    p.terminate();
    assert!(p.wait(MINUTE).success(), "{}", p.log());
}

#[test]
fn an_older_cancelled_alter_job_does_not_fail_a_new_column() {
    let pg = PgCluster::start();
    let url = pg.create_database("app");
    let d = Double::start("app");
    create_both(
        &pg,
        &d,
        "CREATE TABLE t (id int PRIMARY KEY, a text)",
        "CREATE TABLE app.t (id INT NOT NULL, a STRING) PRIMARY KEY(id) DISTRIBUTED BY HASH(id) PROPERTIES('replication_num'='1', 'fast_schema_evolution'='false')",
    );
    // An earlier schema change someone cancelled, still listed by SHOW ALTER TABLE COLUMN.
    d.exec("ALTER TABLE app.t ADD COLUMN old_try INT");
    d.exec("CANCEL ALTER TABLE COLUMN FROM app.t");
    let states = d.query("SHOW ALTER TABLE COLUMN FROM app");
    assert!(
        states
            .iter()
            .any(|r| r.iter().any(|v| v.as_deref() == Some("CANCELLED"))),
        "{states:?}"
    );
    let job = d.job(&url, "t");
    let mut p = job.spawn_streaming();
    pg.psql(
        "app",
        "INSERT INTO t VALUES (1, 'x'); ALTER TABLE t ADD COLUMN extra int; INSERT INTO t VALUES (2, 'y', 5);",
    );
    wait_converged(&pg, &d, "t", "id", "a, extra");
    p.terminate();
    assert!(p.wait(MINUTE).success(), "{}", p.log());
}

#[test]
fn a_primary_key_over_the_limit_stops_the_job_naming_it_and_the_setting() {
    let pg = PgCluster::start();
    let url = pg.create_database("app");
    let d = Double::start("app");
    pg.psql("app", "CREATE TABLE k (name text PRIMARY KEY, v int)");
    let job = d.job(&url, "k").env("CREATE_TABLES", "true");
    let mut p = job.spawn_streaming();
    pg.psql("app", "INSERT INTO k VALUES ('short', 1)");
    wait_converged(&pg, &d, "k", "name", "v");
    pg.psql("app", "INSERT INTO k VALUES (repeat('k', 129), 2)");
    assert_eq!(p.wait(MINUTE).code(), Some(1), "{}", p.log());
    let log = p.log();
    assert!(
        log.contains("\"name\"")
            && log.contains("129 bytes")
            && log.contains("STARROCKS_PRIMARY_KEY_LIMIT"),
        "{log}"
    );
    assert!(
        !log.contains(&"k".repeat(129)),
        "key values stay out of logs"
    );

    // With the BEs' limit raised and dbmazz told so, the same row loads.
    let d = Double::start_with("app", &["--primary-key-limit-size", "256"]);
    pg.psql("app", "DELETE FROM k WHERE v = 1");
    let job = d
        .job(&url, "k")
        .env("CREATE_TABLES", "true")
        .env("STARROCKS_PRIMARY_KEY_LIMIT", "256")
        .env("SNAPSHOT_MODE", "always");
    let mut p = job.spawn_streaming();
    wait_converged(&pg, &d, "k", "name", "v");
    p.terminate();
    assert!(p.wait(MINUTE).success(), "{}", p.log());
}

/// The core of what a job does, into a double configured as `flags`: a snapshot, inserts,
/// updates, deletes (key-only, so partial updates), unchanged TOAST, a new column,
/// `CREATE_TABLES`.
fn core_workload(flags: &[&str]) {
    let pg = PgCluster::start();
    let url = pg.create_database("app");
    let d = Double::start_with("app", flags);
    pg.psql(
        "app",
        "CREATE TABLE orders (id bigint PRIMARY KEY, status text, amount int, doc text);
         ALTER TABLE orders ALTER COLUMN doc SET STORAGE EXTERNAL;
         INSERT INTO orders SELECT g, 'new', g * 3, repeat(md5(g::text), 100) FROM generate_series(1, 300) g;",
    );
    let job = d.job(&url, "orders").env("CREATE_TABLES", "true");
    let mut p = job.spawn_streaming();
    pg.psql(
        "app",
        "INSERT INTO orders SELECT g, 'new', 1, 'd' FROM generate_series(301, 400) g;
         UPDATE orders SET status = 'paid' WHERE id % 3 = 0;
         DELETE FROM orders WHERE id % 7 = 0;
         ALTER TABLE orders ADD COLUMN note text;
         UPDATE orders SET note = 'n' WHERE id % 5 = 0;",
    );
    wait_converged(&pg, &d, "orders", "id", "status, amount, length(doc), note");
    p.terminate();
    assert!(p.wait(MINUTE).success(), "{flags:?}: {}", p.log());
}

/// The releases and run modes in the README's compatibility table.
const MATRIX: [&str; 4] = ["3.2.15", "3.3.5", "3.4.1", "3.5.0"];

#[test]
fn compatibility_matrix_shared_nothing_one_be() {
    for version in MATRIX {
        core_workload(&["--sr-version", version, "--default-replication-num", "3"]);
    }
}

#[test]
fn compatibility_matrix_shared_nothing_three_bes() {
    for version in MATRIX {
        core_workload(&[
            "--sr-version",
            version,
            "--be-count",
            "3",
            "--default-replication-num",
            "3",
        ]);
    }
}

#[test]
fn compatibility_matrix_shared_data() {
    for version in MATRIX {
        let flags = [
            "--sr-version",
            version,
            "--run-mode",
            "shared_data",
            "--be-count",
            "2",
        ];
        if version < "3.4.1" {
            let pg = PgCluster::start();
            let url = pg.create_database("app");
            pg.psql("app", "CREATE TABLE orders (id bigint PRIMARY KEY)");
            let d = Double::start_with("app", &flags);
            let log = refused(&d, &url, "orders", &[("CREATE_TABLES", "true")]);
            assert!(log.contains("shared_data"), "{version}: {log}");
        } else {
            core_workload(&flags);
        }
    }
}

/// Loads one row `{id, dbmazz_cdc_version: 1}` under label `pin_{id}`; the outcome.
fn load_one(
    rt: &tokio::runtime::Runtime,
    loader: &dbmazz::starrocks::stream_load::StreamLoader,
    id: u32,
) -> dbmazz::starrocks::stream_load::LoadOutcome {
    let body = format!(r#"[{{"id":{id},"dbmazz_cdc_version":1}}]"#);
    rt.block_on(loader.load(dbmazz::starrocks::stream_load::LoadRequest {
        table: "t".into(),
        label: format!("pin_{id}"),
        partial_columns: None,
        csv_columns: None,
        body: bytes::Bytes::from(body),
    }))
    .0
}

#[test]
fn loads_skip_the_fes_redirect_for_the_be_it_chose_until_the_pin_expires_or_the_be_is_gone() {
    use crate::support::fault_proxy::{FaultProxy, Mode};
    use dbmazz::starrocks::stream_load::{LoadOutcome, StreamLoader};
    // Two BEs. BE 0 registers as 127.0.0.3 on its port, where a proxy forwards to where it
    // listens, so the test can take that BE away; BE 1 is 127.0.0.2.
    let be_port = crate::support::pg::free_port().to_string();
    let d = Double::start_with(
        "app",
        &[
            "--be-count",
            "2",
            "--be-port",
            &be_port,
            "--advertise-be-host",
            "127.0.0.3",
        ],
    );
    let be_port: u16 = be_port.parse().unwrap();
    let be0 = FaultProxy::start_on(
        &format!("127.0.0.3:{be_port}"),
        std::net::SocketAddr::from(([127, 0, 0, 1], be_port)),
    );
    d.exec("CREATE TABLE app.t (id INT NOT NULL, dbmazz_cdc_version BIGINT) PRIMARY KEY(id) DISTRIBUTED BY HASH(id) PROPERTIES('replication_num'='1')");
    let redirects = || d.stats()["fe_redirects"].as_u64().unwrap();
    let committed = |o: &LoadOutcome| matches!(o, LoadOutcome::Committed { loaded_rows: 1 });
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut cfg = d.starrocks_config("app");
    assert_eq!(cfg.be_pin, Duration::from_millis(1000), "the default");

    // A long pin: only the first load asks the FE, which sends it to BE 0 (round-robin).
    cfg.be_pin = Duration::from_secs(600);
    let loader = StreamLoader::new(std::sync::Arc::new(cfg.clone()));
    for id in 0..10 {
        let outcome = load_one(&rt, &loader, id);
        assert!(committed(&outcome), "load {id}: {outcome:?}");
    }
    assert_eq!(redirects(), 1, "{}", d.stats());
    assert!(be0.accepted() >= 1, "the loads did not reach BE 0");

    // BE 0 goes away: the next load finds no one there and goes through the FE at once, which
    // sends it to BE 1; the loads after it stay on BE 1.
    be0.set(Mode::Refuse);
    be0.reset_all();
    for id in 10..14 {
        let outcome = load_one(&rt, &loader, id);
        assert!(committed(&outcome), "load {id}: {outcome:?}");
    }
    assert_eq!(redirects(), 2, "{}", d.stats());

    // A pinned load commits but its answer is lost: the FE is asked at once, and the label
    // says the load is done. Nothing is applied twice.
    be0.set(Mode::PassThrough);
    d.fault(json!({"kind": "commit_then_drop", "count": 1, "table": "t"}));
    let outcome = load_one(&rt, &loader, 14);
    assert_eq!(outcome, LoadOutcome::Committed { loaded_rows: 0 });
    assert_eq!(redirects(), 3, "{}", d.stats());

    // A pin of 0 asks the FE for every load.
    cfg.be_pin = Duration::ZERO;
    let loader = StreamLoader::new(std::sync::Arc::new(cfg.clone()));
    for id in 15..18 {
        let outcome = load_one(&rt, &loader, id);
        assert!(committed(&outcome), "load {id}: {outcome:?}");
    }
    assert_eq!(redirects(), 6, "{}", d.stats());

    // A short pin expires: the load after it asks the FE again.
    cfg.be_pin = Duration::from_millis(300);
    let loader = StreamLoader::new(std::sync::Arc::new(cfg));
    for id in 18..20 {
        let outcome = load_one(&rt, &loader, id);
        assert!(committed(&outcome), "load {id}: {outcome:?}");
    }
    let before = redirects();
    assert!(before <= 8, "{}", d.stats());
    std::thread::sleep(Duration::from_millis(400));
    let outcome = load_one(&rt, &loader, 20);
    assert!(committed(&outcome), "{outcome:?}");
    assert_eq!(redirects(), before + 1, "{}", d.stats());

    let rows = d.query("SELECT count(*) FROM app.t");
    assert_eq!(rows[0][0].as_deref(), Some("21"));
}
