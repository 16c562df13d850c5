//! The MySQL side (stream-load.md §9, §14.10): DDL, information_schema, ALTER jobs, SELECT,
//! prepared statements, restart with `--data-dir`, and clean shutdown.

mod support;

use std::time::Duration;

use mysql_async::prelude::Queryable;
use support::*;

async fn error_of(d: &Double, sql: &str) -> String {
    let mut c = d.mysql().await;
    let err = c.query_drop(sql).await.expect_err(sql);
    let _ = c.disconnect().await;
    err.to_string()
}

#[tokio::test]
async fn version_queries_answer_like_starrocks() {
    let d = Double::start(&[]);
    assert_eq!(
        d.rows("SELECT current_version()").await,
        vec![vec!["3.3.5-double"]]
    );
    assert_eq!(
        d.rows("select @@version_comment limit 1").await,
        vec![vec!["StarRocks version 3.3.5-double"]]
    );
    assert_eq!(d.rows("SELECT @@version").await, vec![vec!["8.0.33"]]);
    let mut c = d.mysql().await;
    c.query_drop("SET NAMES utf8mb4").await.unwrap();
    c.query_drop("SET query_timeout = 60").await.unwrap();
    let _ = c.disconnect().await;
    assert!(error_of(&d, "SELECT @@no_such_variable")
        .await
        .contains("Unknown system variable"));
}

#[tokio::test]
async fn wrong_password_is_refused() {
    let d = Double::start(&["--password", "s3cret"]);
    assert!(d.mysql_as("root", "wrong").await.is_err());
    let mut c = d.mysql_as("root", "s3cret").await.expect("right password");
    let one: Option<i64> = c.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1));
    let _ = c.disconnect().await;
}

#[tokio::test]
async fn create_table_enforces_primary_key_rules() {
    let d = Double::start(&[]);
    d.ddl(&["CREATE DATABASE d", "CREATE DATABASE IF NOT EXISTS d"])
        .await;
    assert!(error_of(&d, "CREATE DATABASE d")
        .await
        .contains("database exists"));
    let not_prefix = error_of(
        &d,
        "CREATE TABLE d.a (v INT, id BIGINT NOT NULL) PRIMARY KEY(id) DISTRIBUTED BY HASH(id)",
    )
    .await;
    assert!(not_prefix.contains("ordered prefix"), "{not_prefix}");
    let decimal = error_of(
        &d,
        "CREATE TABLE d.a (id DECIMAL(10,2) NOT NULL) PRIMARY KEY(id) DISTRIBUTED BY HASH(id)",
    )
    .await;
    assert!(decimal.contains("not supported"), "{decimal}");
    let nullable = error_of(
        &d,
        "CREATE TABLE d.a (id BIGINT) PRIMARY KEY(id) DISTRIBUTED BY HASH(id)",
    )
    .await;
    assert!(nullable.contains("cannot be nullable"), "{nullable}");
    let no_dist = error_of(&d, "CREATE TABLE d.a (id BIGINT NOT NULL) PRIMARY KEY(id)").await;
    assert!(no_dist.contains("DISTRIBUTED BY HASH"), "{no_dist}");
    d.ddl(&[
        "CREATE TABLE IF NOT EXISTS d.a (id BIGINT NOT NULL, tags ARRAY<INT>, b VARBINARY(16), big LARGEINT, \
         f FLOAT, dt DATE, c CHAR(4)) PRIMARY KEY(id) DISTRIBUTED BY HASH(id) BUCKETS 2 PROPERTIES(\"replication_num\" = \"1\")",
        "CREATE TABLE IF NOT EXISTS d.a (id BIGINT NOT NULL) PRIMARY KEY(id) DISTRIBUTED BY HASH(id)",
    ])
    .await;
    assert!(error_of(
        &d,
        "CREATE TABLE d.a (id BIGINT NOT NULL) PRIMARY KEY(id) DISTRIBUTED BY HASH(id)"
    )
    .await
    .contains("already exists"));
    assert!(error_of(&d, "CREATE TABLE nodb.a (id INT)")
        .await
        .contains("Unknown database"));
}

#[tokio::test]
async fn information_schema_columns_shows_types_keys_and_boolean_as_tinyint() {
    let d = Double::start(&[]);
    d.ddl(&[
        "CREATE DATABASE d",
        "CREATE TABLE d.t (id BIGINT NOT NULL, flag BOOLEAN, amount DECIMAL(12,3), name VARCHAR(40), body STRING) \
         PRIMARY KEY(id) DISTRIBUTED BY HASH(id) PROPERTIES(\"replication_num\" = \"1\")",
    ])
    .await;
    let rows = d
        .rows(
            "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, ORDINAL_POSITION, IS_NULLABLE, COLUMN_KEY, COLUMN_SIZE, DECIMAL_DIGITS \
             FROM information_schema.columns WHERE table_schema = 'd' AND table_name = 't' ORDER BY ORDINAL_POSITION",
        )
        .await;
    assert_eq!(
        rows,
        vec![
            vec!["id", "bigint", "bigint(20)", "1", "NO", "PRI", "19", "0"],
            vec![
                "flag",
                "tinyint",
                "tinyint(1)",
                "2",
                "YES",
                "",
                "NULL",
                "NULL"
            ],
            vec![
                "amount",
                "decimal",
                "decimal(12,3)",
                "3",
                "YES",
                "",
                "12",
                "3"
            ],
            vec![
                "name",
                "varchar",
                "varchar(40)",
                "4",
                "YES",
                "",
                "40",
                "NULL"
            ],
            vec![
                "body",
                "varchar",
                "varchar(65533)",
                "5",
                "YES",
                "",
                "65533",
                "NULL"
            ],
        ]
    );
}

#[tokio::test]
async fn information_schema_tables_and_tables_config_answer_filtered_queries() {
    let d = Double::start(&[]);
    d.ddl(&[
        "CREATE DATABASE d",
        "CREATE TABLE d.pk (id INT NOT NULL) PRIMARY KEY(id) DISTRIBUTED BY HASH(id) PROPERTIES(\"fast_schema_evolution\" = \"true\", \"replication_num\" = \"1\")",
        "CREATE TABLE d.dup (id INT) DUPLICATE KEY(id) DISTRIBUTED BY HASH(id) PROPERTIES(\"replication_num\" = \"1\")",
    ])
    .await;
    let mut c = d.mysql().await;
    let exists: Option<i64> = c
        .exec_first(
            "SELECT 1 FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
            ("d", "pk"),
        )
        .await
        .unwrap();
    assert_eq!(exists, Some(1));
    let missing: Option<i64> = c
        .exec_first(
            "SELECT 1 FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
            ("d", "nope"),
        )
        .await
        .unwrap();
    assert_eq!(missing, None);
    let _ = c.disconnect().await;
    let cfg = d
        .rows("SELECT TABLE_NAME, TABLE_MODEL, PRIMARY_KEY, PROPERTIES FROM information_schema.tables_config WHERE TABLE_SCHEMA = 'd' ORDER BY TABLE_NAME")
        .await;
    assert_eq!(cfg[0][0], "dup");
    assert_eq!(cfg[0][1], "DUP_KEYS");
    assert_eq!(cfg[1][1], "PRIMARY_KEYS");
    assert_eq!(cfg[1][2], "`id`");
    let props: serde_json::Value = serde_json::from_str(&cfg[1][3]).unwrap();
    assert_eq!(props["fast_schema_evolution"], "true");
    let kinds = d.rows("SELECT TABLE_TYPE FROM information_schema.tables WHERE TABLE_SCHEMA = 'd' AND TABLE_NAME = 'dup'").await;
    assert_eq!(kinds, vec![vec!["BASE TABLE"]]);
}

#[tokio::test]
async fn show_statements_describe_the_schema() {
    let d = Double::start(&[]);
    d.with_pk_table().await;
    let mut c = d.mysql().await;
    c.query_drop("USE d").await.unwrap();
    let tables: Vec<String> = c.query("SHOW TABLES").await.unwrap();
    assert_eq!(tables, vec!["t"]);
    let create: Vec<(String, String)> = c.query("SHOW CREATE TABLE t").await.unwrap();
    assert!(create[0].1.contains("PRIMARY KEY(`id`)"), "{}", create[0].1);
    assert!(
        create[0].1.contains("\"replication_num\" = \"1\""),
        "{}",
        create[0].1
    );
    let desc: Vec<mysql_async::Row> = c.query("DESC t").await.unwrap();
    assert_eq!(desc.len(), 4);
    let dbs: Vec<String> = c.query("SHOW DATABASES").await.unwrap();
    assert!(dbs.contains(&"d".to_string()) && dbs.contains(&"information_schema".to_string()));
    let _ = c.disconnect().await;
}

#[tokio::test]
async fn alter_add_column_is_an_async_job_and_refuses_a_concurrent_alter() {
    let d = Double::start(&["--alter-duration-ms", "600"]);
    d.with_pk_table_props("\"fast_schema_evolution\" = \"false\"")
        .await;
    d.ddl(&["ALTER TABLE d.t ADD COLUMN extra INT NULL DEFAULT \"3\""])
        .await;
    let state = d
        .rows(
            "SHOW ALTER TABLE COLUMN FROM d WHERE TableName = 't' ORDER BY CreateTime DESC LIMIT 1",
        )
        .await;
    assert_ne!(
        state[0][9], "FINISHED",
        "still running right after the statement: {state:?}"
    );
    assert_eq!(state[0][3], "NULL", "FinishTime is NULL until done");
    let refused = error_of(&d, "ALTER TABLE d.t ADD COLUMN other INT NULL").await;
    assert!(
        refused.contains("Table[t]'s state is not NORMAL. Do not allow doing ALTER ops"),
        "{refused}"
    );
    let finished = eventually(Duration::from_secs(5), || async {
        d.rows(
            "SHOW ALTER TABLE COLUMN FROM d WHERE TableName = 't' ORDER BY CreateTime DESC LIMIT 1",
        )
        .await[0][9]
            == "FINISHED"
    })
    .await;
    assert!(finished);
    let columns = d.rows("SELECT COLUMN_NAME FROM information_schema.columns WHERE table_name = 't' ORDER BY ORDINAL_POSITION").await;
    assert_eq!(columns.last().unwrap()[0], "extra");
    d.ddl(&["ALTER TABLE d.t ADD COLUMN other INT NULL"]).await;
    let jobs = d
        .rows("SHOW ALTER TABLE COLUMN FROM d ORDER BY CreateTime DESC")
        .await;
    assert_eq!(jobs.len(), 2);
    assert!(jobs[0][0] > jobs[1][0], "newest job first: {jobs:?}");
}

#[tokio::test]
async fn alter_add_column_if_not_exists_is_rejected() {
    let d = Double::start(&[]);
    d.with_pk_table().await;
    let err = error_of(&d, "ALTER TABLE d.t ADD COLUMN IF NOT EXISTS extra INT").await;
    assert!(err.contains("Unexpected input 'IF'"), "{err}");
    let dup = error_of(&d, "ALTER TABLE d.t ADD COLUMN name INT").await;
    assert!(dup.contains("already exists"), "{dup}");
}

#[tokio::test]
async fn new_column_is_ignored_by_loads_until_the_job_finishes() {
    let d = Double::start(&["--alter-duration-ms", "700"]);
    d.with_pk_table_props("\"fast_schema_evolution\" = \"false\"")
        .await;
    d.ddl(&["ALTER TABLE d.t ADD COLUMN extra VARCHAR(10) NULL"])
        .await;
    let v = d.load_json("t", "during", &[], r#"[{"id":1,"extra":"dropped"}]"#);
    assert_eq!(v["Status"], "Success", "{v}");
    let named = d.load_json(
        "t",
        "during2",
        &[("columns", "id,extra")],
        r#"[{"id":2,"extra":"x"}]"#,
    );
    assert_eq!(named["Status"], "Fail");
    assert!(
        named["Message"]
            .as_str()
            .unwrap()
            .contains("Unknown column 'extra'"),
        "{named}"
    );
    assert!(
        eventually(Duration::from_secs(5), || async {
            d.rows("DESC d.t").await.len() == 5
        })
        .await
    );
    d.load_json("t", "after", &[], r#"[{"id":3,"extra":"kept"}]"#);
    assert_eq!(
        d.rows("SELECT id, extra FROM d.t ORDER BY id").await,
        vec![vec!["1", "NULL"], vec!["3", "kept"]]
    );
}

/// The table dbmazz's dead-letter tests fix by hand: a short VARCHAR, a TINYINT and a NOT
/// NULL INT, each able to refuse a row under `strict_mode`.
async fn with_narrow_table(d: &Double) {
    d.ddl(&[
        "CREATE DATABASE IF NOT EXISTS d",
        "CREATE TABLE d.m (id BIGINT NOT NULL, v VARCHAR(4) NULL, n TINYINT NOT NULL, m INT NOT NULL) \
         PRIMARY KEY(id) DISTRIBUTED BY HASH(id) BUCKETS 1 PROPERTIES(\"replication_num\" = \"1\")",
    ])
    .await;
}

async fn newest_job(d: &Double) -> Vec<String> {
    d.rows(
        "SHOW ALTER TABLE COLUMN FROM d WHERE TableName = 'm' ORDER BY CreateTime DESC, JobId DESC LIMIT 1",
    )
    .await
    .remove(0)
}

async fn job_finishes(d: &Double) -> bool {
    eventually(Duration::from_secs(5), || async {
        newest_job(d).await[9] == "FINISHED"
    })
    .await
}

#[tokio::test]
async fn modify_column_is_a_job_and_then_refused_rows_load() {
    let d = Double::start(&["--alter-duration-ms", "600"]);
    with_narrow_table(&d).await;
    let strict = [("strict_mode", "true")];
    let ok = d.load_json(
        "m",
        "first",
        &strict,
        r#"[{"id":1,"v":"abcd","n":5,"m":1}]"#,
    );
    assert_eq!(ok["Status"], "Success", "{ok}");
    for (label, row) in [
        ("long", r#"[{"id":2,"v":"abcdefgh","n":1,"m":1}]"#),
        ("big", r#"[{"id":3,"v":"x","n":300,"m":1}]"#),
        ("null", r#"[{"id":4,"v":"x","n":1,"m":null}]"#),
    ] {
        let refused = d.load_json("m", label, &strict, row);
        assert_eq!(refused["Status"], "Fail", "{label}: {refused}");
    }

    // What StarRocks refuses, with its words.
    for (sql, words) in [
        (
            "ALTER TABLE d.m MODIFY COLUMN id LARGEINT NOT NULL",
            "Can not modify key column: id for primary key table",
        ),
        (
            "ALTER TABLE d.m MODIFY COLUMN v VARCHAR(2)",
            "Cannot shorten string length",
        ),
        (
            "ALTER TABLE d.m MODIFY COLUMN n DATE NOT NULL",
            "Can not change TINYINT to DATE",
        ),
        (
            "ALTER TABLE d.m MODIFY COLUMN m SMALLINT",
            "Can not change INT to SMALLINT",
        ),
        (
            "ALTER TABLE d.m MODIFY COLUMN v VARCHAR(64) NOT NULL",
            "Can not change from nullable to non-nullable",
        ),
        (
            "ALTER TABLE d.m MODIFY COLUMN m INT NULL DEFAULT \"0\"",
            "Can not change default value",
        ),
        (
            "ALTER TABLE d.m MODIFY COLUMN nope INT",
            "Column[nope] does not exists",
        ),
        (
            "ALTER TABLE d.m MODIFY COLUMN v VARCHAR(4) NULL",
            "Nothing is changed. please check your alter stmt.",
        ),
    ] {
        let err = error_of(&d, sql).await;
        assert!(err.contains(words), "{sql}: {err}");
    }
    assert!(d.rows("SHOW ALTER TABLE COLUMN FROM d").await.is_empty());

    // fast_schema_evolution is on (the default) and this is shared-nothing: still a job.
    d.ddl(&["ALTER TABLE d.m MODIFY COLUMN v VARCHAR(64)"])
        .await;
    let running = newest_job(&d).await;
    assert_ne!(running[9], "FINISHED", "a schema-change job: {running:?}");
    assert_eq!(
        running[12], "86400",
        "Timeout of a rewriting job: {running:?}"
    );
    let busy = error_of(&d, "ALTER TABLE d.m MODIFY COLUMN n INT NOT NULL").await;
    assert!(busy.contains("Table[m]'s state is not NORMAL"), "{busy}");
    let during = d.load_json(
        "m",
        "during",
        &strict,
        r#"[{"id":2,"v":"abcdefgh","n":1,"m":1}]"#,
    );
    assert_eq!(
        during["Status"], "Fail",
        "the old type holds until FINISHED: {during}"
    );
    assert!(job_finishes(&d).await);
    d.ddl(&["ALTER TABLE d.m MODIFY COLUMN n INT NOT NULL"])
        .await;
    assert!(job_finishes(&d).await);
    d.ddl(&["ALTER TABLE d.m MODIFY COLUMN m INT NULL"]).await;
    assert!(job_finishes(&d).await);

    let desc = d.rows("DESC d.m").await;
    let types: Vec<(&str, &str, &str)> = desc
        .iter()
        .map(|r| (r[0].as_str(), r[1].as_str(), r[2].as_str()))
        .collect();
    assert_eq!(
        types,
        vec![
            ("id", "bigint(20)", "NO"),
            ("v", "varchar(64)", "YES"),
            ("n", "int(11)", "NO"),
            ("m", "int(11)", "YES"),
        ]
    );
    let info = d
        .rows(
            "SELECT COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE, CHARACTER_MAXIMUM_LENGTH FROM information_schema.columns \
             WHERE TABLE_SCHEMA = 'd' AND TABLE_NAME = 'm' ORDER BY ORDINAL_POSITION",
        )
        .await;
    assert_eq!(info[1], vec!["v", "varchar(64)", "YES", "64"]);
    assert_eq!(info[2], vec!["n", "int(11)", "NO", "NULL"]);
    assert_eq!(info[3], vec!["m", "int(11)", "YES", "NULL"]);

    // The rows refused before now load; the stored row kept its values.
    for (label, row) in [
        ("long2", r#"[{"id":2,"v":"abcdefgh","n":1,"m":1}]"#),
        ("big2", r#"[{"id":3,"v":"x","n":300,"m":1}]"#),
        ("null2", r#"[{"id":4,"v":"x","n":1,"m":null}]"#),
    ] {
        let v = d.load_json("m", label, &strict, row);
        assert_eq!(v["Status"], "Success", "{label}: {v}");
    }
    assert_eq!(
        d.rows("SELECT id, v, n, m FROM d.m ORDER BY id").await,
        vec![
            vec!["1", "abcd", "5", "1"],
            vec!["2", "abcdefgh", "1", "1"],
            vec!["3", "x", "300", "1"],
            vec!["4", "x", "1", "NULL"],
        ]
    );
    let jobs = d
        .rows("SHOW ALTER TABLE COLUMN FROM d WHERE TableName = 'm'")
        .await;
    assert_eq!(jobs.len(), 3);
    assert!(jobs.iter().all(|j| j[9] == "FINISHED"), "{jobs:?}");
}

#[tokio::test]
async fn modify_column_job_is_cancelled_when_a_stored_value_does_not_convert() {
    let d = Double::start(&["--alter-duration-ms", "300"]);
    with_narrow_table(&d).await;
    d.load_json(
        "m",
        "text",
        &[],
        r#"[{"id":1,"v":"12","n":1,"m":1},{"id":2,"v":"abc","n":1,"m":1}]"#,
    );
    d.ddl(&["ALTER TABLE d.m MODIFY COLUMN v INT"]).await;
    let done = eventually(Duration::from_secs(5), || async {
        newest_job(&d).await[9] == "CANCELLED"
    })
    .await;
    assert!(done);
    let job = newest_job(&d).await;
    assert!(job[10].contains("failed to convert column v"), "{job:?}");
    assert_eq!(d.rows("DESC d.m").await[1][1], "varchar(4)");
    assert_eq!(
        d.rows("SELECT id, v FROM d.m ORDER BY id").await,
        vec![vec!["1", "12"], vec!["2", "abc"]]
    );
}

#[tokio::test]
async fn modify_column_survives_a_restart() {
    let dir = data_dir();
    let args = [
        "--data-dir",
        path_str(dir.path()),
        "--alter-duration-ms",
        "300",
    ];
    {
        let mut d = Double::start(&args);
        with_narrow_table(&d).await;
        d.load_json("m", "before", &[], r#"[{"id":1,"v":"ab","n":7,"m":2}]"#);
        d.ddl(&["ALTER TABLE d.m MODIFY COLUMN n BIGINT NOT NULL AFTER id"])
            .await;
        assert!(job_finishes(&d).await);
        // A second job is still running when the double stops; it finishes after the restart.
        d.ddl(&["ALTER TABLE d.m MODIFY COLUMN v VARCHAR(30)"])
            .await;
        assert!(d.terminate(), "SIGTERM exits cleanly");
    }
    let d = Double::start(&args);
    assert!(job_finishes(&d).await);
    let desc = d.rows("DESC d.m").await;
    let types: Vec<(&str, &str)> = desc
        .iter()
        .map(|r| (r[0].as_str(), r[1].as_str()))
        .collect();
    assert_eq!(
        types,
        vec![
            ("id", "bigint(20)"),
            ("n", "bigint(20)"),
            ("v", "varchar(30)"),
            ("m", "int(11)"),
        ]
    );
    let v = d.load_json(
        "m",
        "after",
        &[("strict_mode", "true")],
        r#"[{"id":2,"v":"a much longer value","n":5000000000,"m":3}]"#,
    );
    assert_eq!(v["Status"], "Success", "{v}");
    assert_eq!(
        d.rows("SELECT id, n, v, m FROM d.m ORDER BY id").await,
        vec![
            vec!["1", "7", "ab", "2"],
            vec!["2", "5000000000", "a much longer value", "3"],
        ]
    );
}

#[tokio::test]
async fn drop_column_of_a_value_is_metadata_only_and_its_values_are_gone() {
    let d = Double::start(&["--alter-duration-ms", "600"]);
    with_narrow_table(&d).await;
    let v = d.load_json("m", "before", &[], r#"[{"id":1,"v":"ab","n":7,"m":2}]"#);
    assert_eq!(v["Status"], "Success", "{v}");
    for (sql, words) in [
        (
            "ALTER TABLE d.m DROP COLUMN id",
            "Can not drop key column in primary data model table",
        ),
        (
            "ALTER TABLE d.m DROP COLUMN nope",
            "Column does not exists: nope",
        ),
        (
            "ALTER TABLE d.m DROP COLUMN v, DROP COLUMN v",
            "Column does not exists: v",
        ),
    ] {
        let err = error_of(&d, sql).await;
        assert!(err.contains(words), "{sql}: {err}");
    }
    assert!(d.rows("SHOW ALTER TABLE COLUMN FROM d").await.is_empty());

    // fast_schema_evolution (the default) in shared-nothing 3.3: FINISHED at once.
    d.ddl(&["ALTER TABLE d.m DROP COLUMN v"]).await;
    let job = newest_job(&d).await;
    assert_eq!(job[9], "FINISHED", "{job:?}");
    assert_eq!(job[12], "1000", "Timeout of a fast schema change: {job:?}");
    let names: Vec<String> = d
        .rows("DESC d.m")
        .await
        .into_iter()
        .map(|r| r[0].clone())
        .collect();
    assert_eq!(names, vec!["id", "n", "m"]);
    let err = error_of(&d, "SELECT v FROM d.m").await;
    assert!(err.contains("v"), "{err}");

    // A load naming the dropped column: the key matches no column and is ignored.
    let v = d.load_json(
        "m",
        "after",
        &[("strict_mode", "true")],
        r#"[{"id":2,"v":"zz","n":1,"m":3}]"#,
    );
    assert_eq!(v["Status"], "Success", "{v}");
    assert_eq!(
        d.rows("SELECT * FROM d.m ORDER BY id").await,
        vec![vec!["1", "7", "2"], vec!["2", "1", "3"]]
    );
    // Adding it back gives an empty column: the old values are gone.
    d.ddl(&["ALTER TABLE d.m ADD COLUMN v VARCHAR(4) NULL"])
        .await;
    assert!(job_finishes(&d).await);
    assert_eq!(
        d.rows("SELECT id, v FROM d.m ORDER BY id").await,
        vec![vec!["1", "NULL"], vec!["2", "NULL"]]
    );
}

#[tokio::test]
async fn drop_column_without_fast_schema_evolution_is_a_job() {
    let d = Double::start(&["--alter-duration-ms", "600"]);
    d.with_pk_table_props("\"fast_schema_evolution\" = \"false\"")
        .await;
    d.load_json("t", "one", &[], r#"[{"id":1,"name":"a","score":3}]"#);
    d.ddl(&["ALTER TABLE d.t DROP COLUMN lsn"]).await;
    let job = d
        .rows("SHOW ALTER TABLE COLUMN FROM d WHERE TableName = 't'")
        .await
        .remove(0);
    assert_ne!(job[9], "FINISHED", "a rewriting job: {job:?}");
    assert_eq!(job[12], "86400", "{job:?}");
    let busy = error_of(&d, "ALTER TABLE d.t DROP COLUMN score").await;
    assert!(busy.contains("Table[t]'s state is not NORMAL"), "{busy}");
    let rename = error_of(&d, "ALTER TABLE d.t RENAME COLUMN name TO label").await;
    assert!(
        rename.contains("Can not rename column of table in SCHEMA_CHANGE state"),
        "{rename}"
    );
    // The column stays until the job is FINISHED.
    assert_eq!(d.rows("DESC d.t").await.len(), 4);
    let done = eventually(Duration::from_secs(5), || async {
        d.rows("SHOW ALTER TABLE COLUMN FROM d WHERE TableName = 't'")
            .await[0][9]
            == "FINISHED"
    })
    .await;
    assert!(done);
    assert_eq!(d.rows("SELECT * FROM d.t").await, vec![vec!["1", "a", "3"]]);
}

#[tokio::test]
async fn rename_column_is_synchronous_and_rows_keep_their_values() {
    let d = Double::start(&[]);
    with_narrow_table(&d).await;
    d.load_json("m", "before", &[], r#"[{"id":1,"v":"ab","n":7,"m":2}]"#);
    for (sql, words) in [
        (
            "ALTER TABLE d.m RENAME COLUMN nope TO x",
            "ERROR 1054 (42S22): Unknown column 'nope' in 'm'",
        ),
        (
            "ALTER TABLE d.m RENAME COLUMN v TO M",
            "ERROR 1060 (42S21): Duplicate column name 'M'",
        ),
        (
            "ALTER TABLE d.m RENAME COLUMN v label",
            "Unexpected input 'label', the most similar input is {TO}",
        ),
    ] {
        let err = error_of(&d, sql).await;
        assert!(err.contains(words), "{sql}: {err}");
    }
    d.ddl(&[
        "ALTER TABLE d.m RENAME COLUMN v TO label",
        "ALTER TABLE d.m RENAME COLUMN id TO `key id`",
    ])
    .await;
    assert!(
        d.rows("SHOW ALTER TABLE COLUMN FROM d").await.is_empty(),
        "a rename is not a schema-change job"
    );
    // The renamed column keeps its old name as its id: a new column may not take it.
    let reuse = error_of(&d, "ALTER TABLE d.m ADD COLUMN v VARCHAR(4) NULL").await;
    assert!(
        reuse.contains("Can not add column which already exists in column id: v"),
        "{reuse}"
    );
    let info = d
        .rows(
            "SELECT COLUMN_NAME, COLUMN_KEY FROM information_schema.columns \
             WHERE TABLE_SCHEMA = 'd' AND TABLE_NAME = 'm' ORDER BY ORDINAL_POSITION",
        )
        .await;
    assert_eq!(info[0], vec!["key id", "PRI"]);
    assert_eq!(info[1][0], "label");
    let create = d.rows("SHOW CREATE TABLE d.m").await.remove(0).remove(1);
    assert!(
        create.contains("PRIMARY KEY(`key id`)") && create.contains("HASH(`key id`)"),
        "{create}"
    );
    // Loads use the new names; an upsert on the renamed key replaces the stored row.
    let v = d.load_json(
        "m",
        "after",
        &[("strict_mode", "true")],
        r#"[{"key id":1,"label":"cd","n":8,"m":2},{"key id":2,"label":"ef","n":1,"m":1}]"#,
    );
    assert_eq!(v["Status"], "Success", "{v}");
    assert_eq!(
        d.rows("SELECT `key id`, label, n FROM d.m ORDER BY `key id`")
            .await,
        vec![vec!["1", "cd", "8"], vec!["2", "ef", "1"]]
    );
}

#[tokio::test]
async fn rename_column_before_3_3_2_is_the_old_grammar_s_syntax_error() {
    let d = Double::start(&["--sr-version", "3.3.1"]);
    with_narrow_table(&d).await;
    let err = error_of(&d, "ALTER TABLE d.m RENAME COLUMN v TO label").await;
    assert!(
        err.contains("Getting syntax error at line 1, column 33. Detail message: Unexpected input 'TO', the most similar input is {a legal identifier}."),
        "{err}"
    );
    assert_eq!(d.rows("DESC d.m").await[1][0], "v");
}

#[tokio::test]
async fn select_filters_orders_and_counts_stored_rows() {
    let d = Double::start(&[]);
    d.with_pk_table().await;
    d.load_json("t", "s", &[], r#"[{"id":3,"name":"c","score":30},{"id":1,"name":"a","score":10},{"id":2,"name":"b","score":20}]"#);
    let mut c = d.mysql().await;
    c.query_drop("USE d").await.unwrap();
    let names: Vec<String> = c
        .query("SELECT name FROM t WHERE score >= 20 ORDER BY id DESC")
        .await
        .unwrap();
    assert_eq!(names, vec!["c", "b"]);
    let n: Option<i64> = c.query_first("SELECT count(*) FROM d.t").await.unwrap();
    assert_eq!(n, Some(3));
    let total: Option<i64> = c
        .query_first("SELECT sum(x.score) FROM d.t AS x WHERE x.id IN (1, 2)")
        .await
        .unwrap();
    assert_eq!(total, Some(30));
    let by_param: Vec<(i64, String)> = c
        .exec("SELECT id, name FROM t WHERE id = ?", (2,))
        .await
        .unwrap();
    assert_eq!(by_param, vec![(2, "b".to_string())]);
    let cols = c
        .query_iter("SELECT count(*), max(score) AS top FROM t")
        .await
        .unwrap();
    let names: Vec<String> = cols
        .columns_ref()
        .iter()
        .map(|c| c.name_str().to_string())
        .collect();
    assert_eq!(names, vec!["count(*)", "top"]);
    drop(cols);
    let _ = c.disconnect().await;
}

#[tokio::test]
async fn insert_and_delete_statements_change_rows() {
    let d = Double::start(&[]);
    d.with_pk_table().await;
    let mut c = d.mysql().await;
    let inserted = c
        .query_iter("INSERT INTO d.t (id, name) VALUES (1, 'a'), (2, 'b')")
        .await
        .unwrap();
    assert_eq!(inserted.affected_rows(), 2);
    inserted.drop_result().await.unwrap();
    c.query_drop("DELETE FROM d.t WHERE id = 1").await.unwrap();
    let _ = c.disconnect().await;
    assert_eq!(
        d.rows("SELECT id, name, score FROM d.t").await,
        vec![vec!["2", "b", "7"]]
    );
    d.ddl(&["TRUNCATE TABLE d.t"]).await;
    assert_eq!(d.rows("SELECT count(*) FROM d.t").await[0][0], "0");
    d.ddl(&["DROP TABLE d.t"]).await;
    assert!(error_of(&d, "SELECT * FROM d.t")
        .await
        .contains("Unknown table"));
}

#[tokio::test]
async fn unsupported_sql_returns_an_error_and_the_connection_survives() {
    let d = Double::start(&[]);
    let mut c = d.mysql().await;
    for bad in [
        "GRANT ALL ON *.* TO x",
        "SELECT * FROM",
        "CREATE TABLE",
        "SHOW PROC '/backends'",
        "SELECT 'unterminated",
    ] {
        assert!(c.query_drop(bad).await.is_err(), "{bad} should fail");
    }
    let one: Option<i64> = c.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1));
    assert!(
        c.query_drop("SELECT * FROM t").await.is_err(),
        "no database selected"
    );
    let _ = c.disconnect().await;
}

#[tokio::test]
async fn restart_with_data_dir_keeps_rows_schema_and_labels() {
    let dir = data_dir();
    let args = ["--data-dir", path_str(dir.path())];
    {
        let mut d = Double::start(&args);
        d.with_pk_table().await;
        d.load_json("t", "persisted", &[], r#"[{"id":1,"name":"kept"}]"#);
        assert!(d.terminate(), "SIGTERM exits cleanly");
    }
    let d = Double::start(&args);
    assert_eq!(
        d.rows("SELECT id, name FROM d.t").await,
        vec![vec!["1", "kept"]]
    );
    assert_eq!(d.load_state("d", "persisted"), "VISIBLE");
    let again = d.load_json("t", "persisted", &[], r#"[{"id":2}]"#);
    assert_eq!(again["Status"], "Label Already Exists");
    let cols = d
        .rows("SELECT count(*) FROM information_schema.columns WHERE table_name = 't'")
        .await;
    assert_eq!(cols[0][0], "4");
}

#[tokio::test]
async fn sigterm_exits_cleanly() {
    let mut d = Double::start(&[]);
    assert!(d.terminate());
}
