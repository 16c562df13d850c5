//! Behaviours where the double must fail (or succeed) exactly where StarRocks does: system
//! variables, several BEs, run mode, replica placement, version gates, JSON key matching,
//! array conversion, follower FEs, the primary-key size limit, memory-limit failures and fast
//! schema evolution. Each test names the StarRocks behaviour it pins; the README's fidelity
//! table maps them to StarRocks' sources.

mod support;

use std::io::Write;
use std::time::Duration;

use mysql_async::prelude::Queryable;
use support::{auth_headers, eventually, host_port, request, Double};

async fn server_error(d: &Double, sql: &str) -> (u16, String) {
    let mut c = d.mysql().await;
    let err = c.query_drop(sql).await.expect_err(sql);
    let _ = c.disconnect().await;
    match err {
        mysql_async::Error::Server(e) => (e.code, e.message),
        other => panic!("{sql}: not a server error: {other}"),
    }
}

fn pk_table(name: &str, columns: &str, key: &str, props: &str) -> String {
    format!(
        "CREATE TABLE d.{name} ({columns}) PRIMARY KEY({key}) DISTRIBUTED BY HASH({key}) \
         PROPERTIES(\"replication_num\" = \"1\"{props})"
    )
}

#[tokio::test]
async fn unknown_system_variables_fail_as_in_starrocks_and_socket_is_one() {
    let d = Double::start(&[]);
    let mut c = d.mysql().await;
    let row: (i64, i64) = c
        .query_first("SELECT @@max_allowed_packet, @@wait_timeout")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row, (33_554_432, 28_800));
    let read_only: Option<i64> = c
        .query_first("SELECT @@session.transaction_read_only")
        .await
        .unwrap();
    assert_eq!(read_only, Some(0));
    let listed: Vec<(String, String)> = c.query("SHOW VARIABLES LIKE 'socket'").await.unwrap();
    assert!(listed.is_empty(), "{listed:?}");
    let listed: Vec<(String, String)> = c
        .query("SHOW VARIABLES LIKE 'max_allowed_packet'")
        .await
        .unwrap();
    assert_eq!(
        listed,
        vec![("max_allowed_packet".into(), "33554432".into())]
    );
    let _ = c.disconnect().await;
    for sql in [
        "SELECT @@socket",
        "SELECT @@max_allowed_packet,@@wait_timeout,@@socket",
    ] {
        let (code, msg) = server_error(&d, sql).await;
        assert_eq!(code, 1064, "{msg}");
        assert!(
            msg.starts_with(
                "Getting analyzing error. Detail message: Unknown system variable 'socket', the most similar variables are {'"
            ),
            "{msg}"
        );
    }
    // mysql_async's default `prefer_socket` asks for @@socket while connecting, and fails.
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(d.mysql)
        .user(Some("root"))
        .prefer_socket(true);
    let err = mysql_async::Conn::new(opts)
        .await
        .expect_err("connect fails");
    assert!(
        err.to_string().contains("Unknown system variable 'socket'"),
        "{err}"
    );
}

#[tokio::test]
async fn loads_are_spread_over_every_be_on_its_own_loopback_host() {
    let d = Double::start(&["--be-count", "3"]);
    assert_eq!(
        d.bes.iter().map(|(h, _)| h.as_str()).collect::<Vec<_>>(),
        vec!["127.0.0.1", "127.0.0.2", "127.0.0.3"]
    );
    assert_eq!(d.bes[0].1, d.be, "`be` stays BE 0");
    d.with_pk_table().await;
    let mut hosts = Vec::new();
    for i in 0..3 {
        let path = "/api/d/t/_stream_load";
        let mut h = auth_headers();
        h.push(("Expect".into(), "100-continue".into()));
        let r = request(d.fe, "PUT", path, &h, None);
        assert_eq!(r.status, 307);
        hosts.push(host_port(r.header("location").unwrap()).0);
        let v = d.load_json("t", &format!("l{i}"), &[], &format!(r#"[{{"id":{i}}}]"#));
        assert_eq!(v["Status"], "Success", "{v}");
    }
    hosts.sort();
    hosts.dedup();
    assert_eq!(hosts.len(), 3, "every BE gets loads: {hosts:?}");
    assert_eq!(d.rows("SELECT count(*) FROM d.t").await[0][0], "3");
    let mut c = d.mysql().await;
    let backends: Vec<mysql_async::Row> = c.query("SHOW BACKENDS").await.unwrap();
    assert_eq!(backends.len(), 3);
    for (i, b) in backends.iter().enumerate() {
        assert_eq!(b.get::<String, _>("Alive").unwrap(), "true");
        assert_eq!(b.get::<String, _>("IP").unwrap(), d.bes[i].0);
        assert_eq!(b.get::<u16, _>("HttpPort").unwrap(), d.bes[i].1);
    }
    let cns: Vec<mysql_async::Row> = c.query("SHOW COMPUTE NODES").await.unwrap();
    assert!(cns.is_empty());
    let mode: Vec<mysql_async::Row> = c
        .query("ADMIN SHOW FRONTEND CONFIG LIKE 'run_mode'")
        .await
        .unwrap();
    assert_eq!(mode[0].get::<String, _>("Value").unwrap(), "shared_nothing");
    let _ = c.disconnect().await;
}

#[tokio::test]
async fn shared_data_has_compute_nodes_and_no_backends() {
    let d = Double::start(&["--run-mode", "shared_data", "--be-count", "2"]);
    let mut c = d.mysql().await;
    let backends: Vec<mysql_async::Row> = c.query("SHOW BACKENDS").await.unwrap();
    assert!(backends.is_empty());
    let cns: Vec<mysql_async::Row> = c.query("SHOW COMPUTE NODES").await.unwrap();
    assert_eq!(cns.len(), 2);
    assert_eq!(cns[1].get::<String, _>("IP").unwrap(), "127.0.0.2");
    assert_eq!(cns[1].get::<String, _>("Alive").unwrap(), "true");
    assert_eq!(
        cns[1].get::<String, _>("WarehouseName").unwrap(),
        "default_warehouse"
    );
    let mode: Vec<mysql_async::Row> = c
        .query("ADMIN SHOW FRONTEND CONFIG LIKE 'run_mode'")
        .await
        .unwrap();
    assert_eq!(mode.len(), 1);
    assert_eq!(mode[0].get::<String, _>("Key").unwrap(), "run_mode");
    assert_eq!(mode[0].get::<String, _>("Value").unwrap(), "shared_data");
    assert_eq!(mode[0].get::<String, _>("IsMutable").unwrap(), "false");
    let _ = c.disconnect().await;
    // Shared-data tables default to one replica and the count is not checked against CNs.
    d.ddl(&[
        "CREATE DATABASE d",
        "CREATE TABLE d.a (id BIGINT NOT NULL) PRIMARY KEY(id) DISTRIBUTED BY HASH(id)",
        "CREATE TABLE d.b (id BIGINT NOT NULL) PRIMARY KEY(id) DISTRIBUTED BY HASH(id) PROPERTIES(\"replication_num\" = \"3\")",
    ])
    .await;
    let create = d.rows("SHOW CREATE TABLE d.a").await;
    assert!(
        create[0][1].contains("\"replication_num\" = \"1\""),
        "{create:?}"
    );
}

#[tokio::test]
async fn create_table_needs_as_many_alive_bes_as_replicas() {
    let d = Double::start(&[]);
    d.ddl(&["CREATE DATABASE d"]).await;
    let (code, msg) = server_error(
        &d,
        "CREATE TABLE d.t (id BIGINT NOT NULL) PRIMARY KEY(id) DISTRIBUTED BY HASH(id)",
    )
    .await;
    assert_eq!(code, 1064);
    assert_eq!(
        msg,
        "Table replication num should be less than or equal to the number of available BE nodes. \
         You can change this default by setting the replication_num table properties. \
         Current alive backend is [10001]. , table=t, default_replication_num=3"
    );
    d.ddl(&[&pk_table("t", "id BIGINT NOT NULL", "id", "")])
        .await;
    let create = d.rows("SHOW CREATE TABLE d.t").await;
    assert!(
        create[0][1].contains("\"replication_num\" = \"1\""),
        "{create:?}"
    );

    let three = Double::start(&["--be-count", "3"]);
    three
        .ddl(&[
            "CREATE DATABASE d",
            "CREATE TABLE d.t (id BIGINT NOT NULL) PRIMARY KEY(id) DISTRIBUTED BY HASH(id)",
        ])
        .await;
    let create = three.rows("SHOW CREATE TABLE d.t").await;
    assert!(
        create[0][1].contains("\"replication_num\" = \"3\""),
        "{create:?}"
    );
    let (_, msg) = server_error(
        &three,
        "CREATE TABLE d.u (id BIGINT NOT NULL) PRIMARY KEY(id) DISTRIBUTED BY HASH(id) PROPERTIES(\"replication_num\" = \"4\")",
    )
    .await;
    assert!(
        msg.contains("Current alive backend is [10001,10002,10003]. , table=u"),
        "{msg}"
    );
    let one = Double::start(&["--default-replication-num", "1"]);
    one.ddl(&[
        "CREATE DATABASE d",
        "CREATE TABLE d.t (id BIGINT NOT NULL) PRIMARY KEY(id) DISTRIBUTED BY HASH(id)",
    ])
    .await;
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[tokio::test]
async fn gzipped_json_needs_3_2_7() {
    let body = gzip(br#"[{"id":1,"name":"zipped"}]"#);
    let headers = [
        ("format", "json"),
        ("strip_outer_array", "true"),
        ("compression", "gzip"),
    ];
    let new = Double::start(&["--sr-version", "3.2.7"]);
    new.with_pk_table().await;
    let v = new.load("d", "t", &headers, &body);
    assert_eq!(v["Status"], "Success", "{v}");
    let old = Double::start(&["--sr-version", "3.2.6"]);
    old.with_pk_table().await;
    let v = old.load("d", "t", &headers, &body);
    assert_eq!(v["Status"], "Fail", "an older BE ignores the header: {v}");
    assert!(v["Message"].as_str().unwrap().contains("parse json"), "{v}");
    assert_eq!(old.rows("SELECT count(*) FROM d.t").await[0][0], "0");
}

#[tokio::test]
async fn datetime_microseconds_are_kept_from_3_3_5() {
    for (version, expected) in [
        ("3.3.5", "2024-01-02 03:04:05.123456"),
        ("3.3.4", "2024-01-02 03:04:05"),
    ] {
        let d = Double::start(&["--sr-version", version]);
        d.ddl(&[
            "CREATE DATABASE d",
            &pk_table("e", "id INT NOT NULL, ts DATETIME", "id", ""),
        ])
        .await;
        let v = d.load_json(
            "e",
            "dt",
            &[],
            r#"[{"id":1,"ts":"2024-01-02 03:04:05.123456"}]"#,
        );
        assert_eq!(v["Status"], "Success", "{v}");
        assert_eq!(
            d.rows("SELECT ts FROM d.e").await[0][0],
            expected,
            "{version}"
        );
    }
}

#[tokio::test]
async fn shared_data_partial_update_with_merge_condition_needs_3_4_1() {
    let headers = [
        ("partial_update", "true"),
        ("partial_update_mode", "row"),
        ("columns", "id,lsn"),
        ("merge_condition", "lsn"),
    ];
    let body = r#"[{"id":1,"lsn":5}]"#;
    for (args, ok) in [
        (
            vec!["--run-mode", "shared_data", "--sr-version", "3.3.5"],
            false,
        ),
        (
            vec!["--run-mode", "shared_data", "--sr-version", "3.4.1"],
            true,
        ),
        (vec!["--sr-version", "3.3.5"], true),
    ] {
        let d = Double::start(&args);
        d.with_pk_table().await;
        let v = d.load_json("t", "pm", &headers, body);
        if ok {
            assert_eq!(v["Status"], "Success", "{args:?}: {v}");
        } else {
            assert_eq!(v["Status"], "Fail", "{args:?}: {v}");
            assert_eq!(
                v["Message"],
                "partial update and condition update at the same time"
            );
            assert_eq!(d.load_state("d", "pm"), "ABORTED");
        }
    }
}

#[tokio::test]
async fn json_keys_match_column_names_case_sensitively() {
    let d = Double::start(&[]);
    d.ddl(&[
        "CREATE DATABASE d",
        &pk_table("c", "id INT NOT NULL, customerid VARCHAR(20)", "id", ""),
    ])
    .await;
    let v = d.load_json("c", "k1", &[], r#"[{"id":1,"customerId":"ignored"}]"#);
    assert_eq!(v["Status"], "Success", "{v}");
    // `columns` names match table columns case-insensitively, and the JSON key must then be
    // spelled as in the header.
    let v = d.load_json(
        "c",
        "k2",
        &[("columns", "id,customerId")],
        r#"[{"id":2,"customerId":"kept"},{"id":3,"customerid":"ignored"}]"#,
    );
    assert_eq!(v["Status"], "Success", "{v}");
    assert_eq!(
        d.rows("SELECT id, customerid FROM d.c ORDER BY id").await,
        vec![vec!["1", "NULL"], vec!["2", "kept"], vec!["3", "NULL"]]
    );
}

#[tokio::test]
async fn array_elements_that_do_not_convert_become_null_even_in_strict_mode() {
    let d = Double::start(&[]);
    d.ddl(&[
        "CREATE DATABASE d",
        &pk_table(
            "a",
            "id INT NOT NULL, xs ARRAY<INT>, xss ARRAY<ARRAY<INT>>",
            "id",
            "",
        ),
    ])
    .await;
    let v = d.load_json(
        "a",
        "arr",
        &[("strict_mode", "true")],
        r#"[{"id":1,"xs":[[1,2]],"xss":[[1,2],[3]]},{"id":2,"xs":[1,"x",3],"xss":[]}]"#,
    );
    assert_eq!(v["Status"], "Success", "{v}");
    assert_eq!(v["NumberFilteredRows"], 0);
    assert_eq!(
        d.rows("SELECT id, xs, xss FROM d.a ORDER BY id").await,
        vec![
            vec!["1", "[null]", "[[1,2],[3]]"],
            vec!["2", "[1,null,3]", "[]"]
        ]
    );
}

#[tokio::test]
async fn follower_fe_redirects_get_load_state_to_the_leader() {
    let d = Double::start(&["--fe-extra-hops", "1"]);
    d.with_pk_table().await;
    let path = "/api/d/get_load_state?label=nope";
    let r = request(d.fe, "GET", path, &auth_headers(), None);
    assert_eq!(r.status, 307);
    let (host, port) = host_port(r.header("location").unwrap());
    assert_eq!(host, "127.0.0.1");
    assert_ne!(port, d.fe);
    assert!(r.header("location").unwrap().ends_with(path));
    let leader = request(port, "GET", path, &auth_headers(), None);
    assert_eq!(leader.status, 200);
    assert_eq!(leader.json()["state"], "UNKNOWN");
}

#[tokio::test]
async fn a_primary_key_over_the_size_limit_fails_the_load() {
    let d = Double::start(&[]);
    d.ddl(&[
        "CREATE DATABASE d",
        &pk_table("k", "k VARCHAR(300) NOT NULL, v INT", "k", ""),
        &pk_table(
            "c",
            "a INT NOT NULL, b VARCHAR(300) NOT NULL, v INT",
            "a, b",
            "",
        ),
    ])
    .await;
    let at = format!(r#"[{{"k":"{}"}}]"#, "x".repeat(128));
    assert_eq!(d.load_json("k", "k128", &[], &at)["Status"], "Success");
    let over = format!(r#"[{{"k":"ok"}},{{"k":"{}"}}]"#, "x".repeat(129));
    let v = d.load_json("k", "k129", &[], &over);
    assert_eq!(v["Status"], "Fail", "{v}");
    assert_eq!(v["Message"], "primary key size exceed the limit.");
    assert_eq!(d.load_state("d", "k129"), "ABORTED");
    assert_eq!(d.rows("SELECT count(*) FROM d.k").await[0][0], "1");
    // Composite key: INT (4 bytes) + a last VARCHAR of 124 fits, 125 does not.
    let fits = format!(r#"[{{"a":1,"b":"{}"}}]"#, "y".repeat(124));
    assert_eq!(d.load_json("c", "c124", &[], &fits)["Status"], "Success");
    let over = format!(r#"[{{"a":1,"b":"{}"}}]"#, "y".repeat(125));
    assert_eq!(d.load_json("c", "c125", &[], &over)["Status"], "Fail");

    let big = Double::start(&["--primary-key-limit-size", "256"]);
    big.ddl(&[
        "CREATE DATABASE d",
        &pk_table("k", "k VARCHAR(300) NOT NULL, v INT", "k", ""),
    ])
    .await;
    let v = big.load_json(
        "k",
        "k200",
        &[],
        &format!(r#"[{{"k":"{}"}}]"#, "z".repeat(200)),
    );
    assert_eq!(v["Status"], "Success", "{v}");
}

#[tokio::test]
async fn mem_limit_fault_fails_with_the_be_memory_message() {
    let d = Double::start(&[]);
    d.with_pk_table().await;
    d.fault(serde_json::json!({"kind": "mem_limit", "count": 1}));
    let v = d.load_json("t", "m1", &[], r#"[{"id":1}]"#);
    assert_eq!(v["Status"], "Fail");
    let msg = v["Message"].as_str().unwrap();
    assert!(
        msg.starts_with("Memory of process exceed limit. Start execute plan fragment. Backend: 127.0.0.1, Used: "),
        "{msg}"
    );
    assert!(
        msg.ends_with("Mem usage has exceed the limit of BE"),
        "{msg}"
    );
    assert_eq!(d.load_state("d", "m1"), "ABORTED");
    d.fault(serde_json::json!({"kind": "mem_limit", "tracker": "load", "count": 1}));
    let v = d.load_json("t", "m2", &[], r#"[{"id":1}]"#);
    assert!(
        v["Message"]
            .as_str()
            .unwrap()
            .starts_with("Memory of load exceed limit."),
        "{v}"
    );
    let v = d.load_json("t", "m3", &[], r#"[{"id":1}]"#);
    assert_eq!(
        v["Status"], "Success",
        "a retry with a new label succeeds: {v}"
    );
}

#[tokio::test]
async fn stream_load_never_answers_status_ok() {
    let d = Double::start(&[]);
    d.with_pk_table().await;
    let v = d.load_json("t", "s1", &[], r#"[{"id":1}]"#);
    assert_eq!(v["Status"], "Success");
    assert_eq!(v["Message"], "OK");
    let v = d.load_json("t", "s1", &[], r#"[{"id":1}]"#);
    assert_eq!(v["Status"], "Label Already Exists");
}

async fn newest_alter_row(d: &Double, table: &str) -> Vec<String> {
    d.rows(&format!(
        "SHOW ALTER TABLE COLUMN FROM d WHERE TableName = '{table}' ORDER BY CreateTime DESC, JobId DESC LIMIT 1"
    ))
    .await
    .remove(0)
}

#[tokio::test]
async fn fast_schema_evolution_add_column_is_finished_at_once() {
    let d = Double::start(&["--alter-duration-ms", "800"]);
    d.ddl(&[
        "CREATE DATABASE d",
        &pk_table("fast", "id INT NOT NULL", "id", ""),
        &pk_table(
            "slow",
            "id INT NOT NULL",
            "id",
            ", \"fast_schema_evolution\" = \"false\"",
        ),
    ])
    .await;
    d.ddl(&["ALTER TABLE d.fast ADD COLUMN extra INT NULL"])
        .await;
    let row = newest_alter_row(&d, "fast").await;
    assert_eq!(row[9], "FINISHED", "{row:?}");
    assert_eq!(row[2], row[3], "FinishTime = CreateTime: {row:?}");
    assert_eq!(row[12], "1000", "{row:?}");
    assert_eq!(d.rows("DESC d.fast").await.len(), 2);
    // The table stays NORMAL: a second ALTER right away is accepted.
    d.ddl(&["ALTER TABLE d.fast ADD COLUMN more INT NULL"])
        .await;
    assert_eq!(
        d.rows("SHOW ALTER TABLE COLUMN FROM d WHERE TableName = 'fast'")
            .await
            .len(),
        2,
        "older jobs stay listed"
    );
    d.ddl(&["ALTER TABLE d.slow ADD COLUMN extra INT NULL"])
        .await;
    let row = newest_alter_row(&d, "slow").await;
    assert_ne!(row[9], "FINISHED", "{row:?}");
    assert_eq!(row[12], "86400", "{row:?}");
    assert!(
        eventually(Duration::from_secs(5), || async {
            newest_alter_row(&d, "slow").await[9] == "FINISHED"
        })
        .await
    );
}

#[tokio::test]
async fn fast_schema_evolution_needs_3_2_or_4_0_in_shared_data() {
    for args in [
        vec!["--sr-version", "3.1.11"],
        vec!["--run-mode", "shared_data", "--sr-version", "3.5.0"],
    ] {
        let mut all = args.clone();
        all.extend(["--alter-duration-ms", "800"]);
        let d = Double::start(&all);
        d.with_pk_table().await;
        d.ddl(&["ALTER TABLE d.t ADD COLUMN extra INT NULL"]).await;
        let row = newest_alter_row(&d, "t").await;
        assert_ne!(row[9], "FINISHED", "{args:?}: {row:?}");
    }
    let d = Double::start(&["--run-mode", "shared_data", "--sr-version", "4.0.0"]);
    d.with_pk_table().await;
    d.ddl(&["ALTER TABLE d.t ADD COLUMN extra INT NULL"]).await;
    assert_eq!(newest_alter_row(&d, "t").await[9], "FINISHED");
}

#[tokio::test]
async fn modify_column_is_metadata_only_only_in_shared_data() {
    // Shared-nothing, fast_schema_evolution on: MODIFY COLUMN is still a rewriting job.
    let d = Double::start(&["--sr-version", "4.0.0", "--alter-duration-ms", "800"]);
    d.with_pk_table().await;
    d.ddl(&["ALTER TABLE d.t MODIFY COLUMN score BIGINT NULL DEFAULT \"7\""])
        .await;
    assert_ne!(newest_alter_row(&d, "t").await[9], "FINISHED");
    // Shared-data 4.0 with fast_schema_evolution: an integer widening of a value column
    // changes only metadata, finished at once; a change that breaks zone maps is a job.
    let d = Double::start(&[
        "--run-mode",
        "shared_data",
        "--sr-version",
        "4.0.0",
        "--alter-duration-ms",
        "800",
    ]);
    d.with_pk_table().await;
    d.ddl(&["ALTER TABLE d.t MODIFY COLUMN score BIGINT NULL DEFAULT \"7\""])
        .await;
    let row = newest_alter_row(&d, "t").await;
    assert_eq!(row[9], "FINISHED", "{row:?}");
    assert_eq!(row[12], "1000", "{row:?}");
    assert_eq!(
        d.rows("SELECT DATA_TYPE FROM information_schema.columns WHERE TABLE_NAME = 't' AND COLUMN_NAME = 'score'")
            .await,
        vec![vec!["bigint"]]
    );
    d.ddl(&["ALTER TABLE d.t MODIFY COLUMN lsn VARCHAR(30) NULL"])
        .await;
    assert_ne!(newest_alter_row(&d, "t").await[9], "FINISHED");
}
