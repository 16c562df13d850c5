//! The DDL client's schema changes against `tools/starrocks-double`: each ALTER is awaited the
//! way StarRocks needs (a job until FINISHED, a rename at once), refusals come back typed with
//! the statement, and the cluster probe says whether RENAME COLUMN exists.

use dbmazz::secret::Secret;
use dbmazz::starrocks::cluster::Cluster;
use dbmazz::starrocks::ddl::{Ddl, DdlError, TargetTable};

use crate::support::starrocks::Double;

/// One runtime per test: the client's connection pool lives on it, and the double's own
/// helpers (which run a runtime of their own) are called between `block_on`s.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn ddl(rt: &tokio::runtime::Runtime, d: &Double) -> Ddl {
    let url = Secret::new(d.mysql_url());
    rt.block_on(async { Ddl::new(&url, "app").unwrap() })
}

/// `app.t` with one row; `props` are extra table properties.
fn table_with_a_row(d: &Double, props: &str) {
    d.exec(&format!(
        "CREATE TABLE app.t (id BIGINT NOT NULL, q SMALLINT NULL, s VARCHAR(10) NULL, \
         f FLOAT NULL, d DECIMAL(10,2) NULL, gone VARCHAR(8) NULL) PRIMARY KEY(id) \
         DISTRIBUTED BY HASH(id) BUCKETS 1 PROPERTIES(\"replication_num\" = \"1\"{props})"
    ));
    d.exec("INSERT INTO app.t VALUES (1, 7, 'seven', 1.5, 12.34, 'x')");
}

fn types(t: &TargetTable) -> Vec<(&str, &str)> {
    t.columns
        .iter()
        .map(|c| (c.name.as_str(), c.column_type.as_str()))
        .collect()
}

fn jobs(d: &Double) -> Vec<Vec<Option<String>>> {
    d.query("SHOW ALTER TABLE COLUMN FROM app WHERE TableName = 't'")
}

#[test]
fn modify_columns_waits_for_the_job_and_rows_keep_their_values() {
    let d = Double::start("app");
    let rt = runtime();
    table_with_a_row(&d, "");
    let t = rt
        .block_on(ddl(&rt, &d).modify_columns(
            "t",
            &[
                ("q".into(), "INT".into()),
                ("s".into(), "VARCHAR(65533)".into()),
                ("f".into(), "DOUBLE".into()),
                ("d".into(), "DECIMAL(12,2)".into()),
            ],
        ))
        .unwrap();
    let jobs = jobs(&d);
    assert_eq!(jobs.len(), 1, "one statement, one job: {jobs:?}");
    assert_eq!(jobs[0][9].as_deref(), Some("FINISHED"), "awaited: {jobs:?}");
    assert_eq!(
        types(&t)[1..5],
        [
            ("q", "int(11)"),
            ("s", "varchar(65533)"),
            ("f", "double"),
            ("d", "decimal(12,2)")
        ]
    );
    assert_eq!(
        d.query("SELECT id, q, s, d FROM app.t"),
        vec![vec![
            Some("1".into()),
            Some("7".into()),
            Some("seven".into()),
            Some("12.34".into())
        ]]
    );
}

#[test]
fn narrowing_or_a_key_column_is_refused_with_the_statement() {
    let d = Double::start("app");
    let rt = runtime();
    table_with_a_row(&d, "");
    let ddl = ddl(&rt, &d);
    let err = rt
        .block_on(ddl.modify_columns("t", &[("d".into(), "DECIMAL(10,1)".into())]))
        .unwrap_err();
    assert!(!err.is_transient());
    let DdlError::Refused {
        ref table,
        ref statement,
        ref message,
        ..
    } = err
    else {
        panic!("{err:?}")
    };
    assert_eq!(table, "t");
    assert_eq!(
        statement,
        "ALTER TABLE `app`.`t` MODIFY COLUMN `d` DECIMAL(10,1) NULL"
    );
    assert!(message.contains("Can not change"), "{message}");
    let text = err.to_string();
    assert!(
        text.contains("'d'") && text.contains("table 't'") && text.contains(statement),
        "{text}"
    );

    let key = rt
        .block_on(ddl.drop_columns("t", &["id".into()]))
        .unwrap_err();
    assert!(
        key.to_string()
            .contains("Can not drop key column in primary data model table"),
        "{key}"
    );
    assert!(jobs(&d).is_empty(), "nothing ran");
}

#[test]
fn drop_columns_returns_once_the_columns_are_gone_and_a_repeat_is_harmless() {
    // Without fast schema evolution the drop is a job (200 ms in the tests' double).
    let d = Double::start("app");
    let rt = runtime();
    table_with_a_row(&d, ", \"fast_schema_evolution\" = \"false\"");
    let ddl = ddl(&rt, &d);
    let t = rt
        .block_on(ddl.drop_columns("t", &["gone".into(), "F".into()]))
        .unwrap();
    let names: Vec<&str> = t.columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, vec!["id", "q", "s", "d"]);
    assert_eq!(jobs(&d)[0][9].as_deref(), Some("FINISHED"));
    assert_eq!(
        d.query("SELECT * FROM app.t")[0],
        vec![
            Some("1".into()),
            Some("7".into()),
            Some("seven".into()),
            Some("12.34".into())
        ]
    );
    let again = rt
        .block_on(ddl.drop_columns("t", &["gone".into()]))
        .unwrap();
    assert_eq!(again, t);
    assert_eq!(jobs(&d).len(), 1, "no second ALTER");
}

#[test]
fn rename_column_is_at_once_and_waits_out_a_running_job() {
    let d = Double::start("app");
    let rt = runtime();
    table_with_a_row(&d, "");
    let ddl = ddl(&rt, &d);
    let cluster = rt
        .block_on(Cluster::probe(&ddl, &d.starrocks_config("app")))
        .unwrap();
    assert!(cluster.supports_rename_column(), "{cluster:?}");

    // A MODIFY job is running: StarRocks refuses the rename until it is FINISHED.
    d.exec("ALTER TABLE app.t MODIFY COLUMN q INT NULL");
    let t = rt.block_on(ddl.rename_column("t", "s", "label")).unwrap();
    assert!(t.has("label") && !t.has("s"), "{t:?}");
    assert_eq!(jobs(&d)[0][9].as_deref(), Some("FINISHED"));
    let t = rt.block_on(ddl.rename_column("t", "id", "key_id")).unwrap();
    assert_eq!(t.columns[0].name, "key_id");
    assert_eq!(
        d.query("SELECT key_id, label FROM app.t"),
        vec![vec![Some("1".into()), Some("seven".into())]]
    );
    // StarRocks keeps a renamed column's old name as its id: a new column may not take it.
    let reuse = rt
        .block_on(ddl.add_columns("t", &[("s".into(), "VARCHAR(10)".into())]))
        .unwrap_err();
    assert!(
        matches!(&reuse, DdlError::Refused { message, .. } if message.contains("already exists in column id: s")),
        "{reuse:?}"
    );
    // Already renamed: nothing to do.
    assert_eq!(
        rt.block_on(ddl.rename_column("t", "s", "label")).unwrap(),
        t
    );
    assert_eq!(jobs(&d).len(), 1, "a rename makes no job");
}

#[test]
fn before_3_3_2_rename_column_is_unsupported_and_refused_with_the_statement() {
    let d = Double::start_with("app", &["--sr-version", "3.3.1"]);
    let rt = runtime();
    table_with_a_row(&d, "");
    let ddl = ddl(&rt, &d);
    let cluster = rt
        .block_on(Cluster::probe(&ddl, &d.starrocks_config("app")))
        .unwrap();
    assert!(!cluster.supports_rename_column(), "{cluster:?}");
    let err = rt
        .block_on(ddl.rename_column("t", "s", "label"))
        .unwrap_err();
    let DdlError::Refused {
        statement, message, ..
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!(
        statement,
        "ALTER TABLE `app`.`t` RENAME COLUMN `s` TO `label`"
    );
    assert!(message.contains("Unexpected input 'TO'"), "{message}");
}
