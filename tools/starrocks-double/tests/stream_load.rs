//! Stream Load protocol and primary-key semantics (stream-load.md §14.1–§14.3, §14.5–§14.7).

mod support;

use std::io::Write;
use std::time::Duration;

use serde_json::Value as Json;
use support::*;

fn status(v: &Json) -> &str {
    v["Status"].as_str().unwrap_or("")
}

fn message(v: &Json) -> &str {
    v["Message"].as_str().unwrap_or("")
}

#[tokio::test]
async fn fe_rejects_bad_credentials_with_401_and_www_authenticate() {
    let d = Double::start(&[]);
    let mut h = auth_for("root", "wrong");
    h.push(("Expect".into(), "100-continue".into()));
    let r = put_expecting(d.fe, "/api/d/t/_stream_load", &h, b"[]");
    assert_eq!(r.status, 401);
    assert_eq!(r.header("WWW-Authenticate"), Some("Basic realm=\"\""));
    let body = r.json();
    assert_eq!(body["status"], "FAILED", "lowercase keys: {body}");
    assert!(body.get("Status").is_none());

    let r = put_expecting(
        d.fe,
        "/api/d/t/_stream_load",
        &[("Expect".into(), "100-continue".into())],
        b"[]",
    );
    assert_eq!(r.status, 401, "missing Authorization is a 401 too");
}

#[tokio::test]
async fn fe_without_expect_header_fails_and_closes() {
    let d = Double::start(&[]);
    let r = request(
        d.fe,
        "PUT",
        "/api/d/t/_stream_load",
        &auth_headers(),
        Some(b"[]"),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Connection"), Some("close"));
    let body = r.json();
    assert_eq!(body["Status"], "FAILED");
    assert!(
        body["Message"]
            .as_str()
            .unwrap()
            .ends_with("There is no 100-continue header"),
        "{body}"
    );
}

#[tokio::test]
async fn fe_redirects_with_307_to_the_advertised_be_without_reading_the_body() {
    let d = Double::start(&["--advertise-be-host", "be.internal"]);
    let mut s = connect(d.fe);
    let mut h = auth_headers();
    h.push(("Expect".into(), "100-continue".into()));
    h.push(("Content-Length".into(), "1000000".into()));
    write_head(&mut s, "PUT", "/api/d/t/_stream_load?x=1&y=two", &h);
    // No body is sent: the FE must answer from the headers alone.
    let r = read_response(&mut s).expect("307 before any body byte");
    assert_eq!(r.status, 307);
    assert_eq!(
        r.header("Location"),
        Some(format!("http://be.internal:{}/api/d/t/_stream_load?x=1&y=two", d.be).as_str())
    );
    assert_eq!(r.header("Connection"), Some("close"));
    assert!(
        closed_by_peer(&mut s),
        "the FE closes the connection after the redirect"
    );
}

#[tokio::test]
async fn fe_extra_hops_redirect_through_followers_first() {
    let d = Double::start(&["--fe-extra-hops", "2"]);
    let hops: Vec<u64> = d.ports["fe_hops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_u64().unwrap())
        .collect();
    assert_eq!(hops.len(), 2);
    let mut h = auth_headers();
    h.push(("Expect".into(), "100-continue".into()));
    let mut port = d.fe;
    let mut seen = Vec::new();
    for _ in 0..3 {
        let r = put_expecting(port, "/api/d/t/_stream_load", &h, b"[]");
        assert_eq!(r.status, 307);
        let loc = r.header("Location").unwrap().to_string();
        port = loc
            .trim_start_matches("http://127.0.0.1:")
            .split('/')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        seen.push(u64::from(port));
    }
    assert_eq!(seen, vec![hops[0], hops[1], u64::from(d.be)]);
}

#[tokio::test]
async fn be_header_failure_answers_before_100_continue_without_reading_body() {
    let d = Double::start(&[]);
    d.with_pk_table().await;
    let mut s = connect(d.be);
    let mut h = auth_headers();
    h.extend([
        ("Expect".to_string(), "100-continue".to_string()),
        ("Content-Length".to_string(), "500".to_string()),
        ("format".to_string(), "xml".to_string()),
    ]);
    write_head(&mut s, "PUT", "/api/d/t/_stream_load", &h);
    let r = read_response(&mut s).expect("final answer, not 100 Continue");
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(status(&v), "Fail");
    assert_eq!(message(&v), "unknown data format, format=xml");
    assert!(
        closed_by_peer(&mut s),
        "connection closed without reading the body"
    );
}

#[tokio::test]
async fn be_without_authorization_fails_with_no_valid_basic_authorization() {
    let d = Double::start(&[]);
    d.with_pk_table().await;
    let h = vec![("Expect".to_string(), "100-continue".to_string())];
    let r = put_expecting(d.be, "/api/d/t/_stream_load", &h, b"[]");
    assert_eq!(r.status, 200);
    assert_eq!(message(&r.json()), "no valid Basic authorization");
}

#[tokio::test]
async fn be_header_errors_match_starrocks_messages() {
    let d = Double::start(&[]);
    d.with_pk_table().await;
    let mut base = auth_headers();
    base.push(("Expect".into(), "100-continue".into()));
    let try_headers = |extra: &[(&str, &str)]| {
        let mut h = base.clone();
        h.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        put_expecting(d.be, "/api/d/t/_stream_load", &h, b"[]").json()
    };
    assert_eq!(
        message(&try_headers(&[("timeout", "soon")])),
        "Invalid timeout format"
    );
    let both = try_headers(&[("compression", "gzip"), ("Content-Encoding", "gzip")]);
    assert_eq!(status(&both), "Fail");
    assert!(
        message(&both).contains("compression and Content-Encoding"),
        "{both}"
    );
    let bad_label = try_headers(&[("label", "has space!")]);
    assert!(
        message(&bad_label).contains("Label format error"),
        "{bad_label}"
    );
    let strict = try_headers(&[("strict_mode", "maybe")]);
    assert_eq!(
        message(&strict),
        "Invalid strict mode format. Must be bool type"
    );
    let unknown = put_expecting(d.be, "/api/d/nope/_stream_load", &base, b"[]").json();
    assert!(message(&unknown).contains("unknown table"), "{unknown}");

    // A JSON body over 100 MB needs ignore_json_size; the body is never sent.
    let mut s = connect(d.be);
    let mut h = base.clone();
    h.extend([
        ("format".to_string(), "json".to_string()),
        (
            "Content-Length".to_string(),
            (101u64 * 1024 * 1024).to_string(),
        ),
    ]);
    write_head(&mut s, "PUT", "/api/d/t/_stream_load", &h);
    let v = read_response(&mut s).unwrap().json();
    assert!(
        message(&v).contains("exceed the max size [104857600]  of json type data"),
        "{v}"
    );
    assert!(message(&v).contains("ignore_json_size"), "{v}");
}

#[tokio::test]
async fn be_content_length_mismatch_fails_with_receive_body_error() {
    let d = Double::start(&[]);
    d.with_pk_table().await;
    let mut s = connect(d.be);
    let mut h = auth_headers();
    h.extend([
        ("Expect".to_string(), "100-continue".to_string()),
        ("Content-Length".to_string(), "100".to_string()),
        ("format".to_string(), "json".to_string()),
        ("strip_outer_array".to_string(), "true".to_string()),
        ("label".to_string(), "short_body".to_string()),
    ]);
    write_head(&mut s, "PUT", "/api/d/t/_stream_load", &h);
    assert_eq!(read_response(&mut s).unwrap().status, 100);
    s.write_all(br#"[{"id":1}]"#).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let v = read_response(&mut s).unwrap().json();
    assert_eq!(status(&v), "Fail");
    assert_eq!(message(&v), "receive body don't equal with body bytes");
    assert_eq!(d.load_state("d", "short_body"), "ABORTED");
    assert_eq!(d.rows("SELECT count(*) FROM d.t").await[0][0], "0");
}

#[tokio::test]
async fn chunked_body_is_accepted() {
    let d = Double::start(&[]);
    d.with_pk_table().await;
    let mut s = connect(d.be);
    let mut h = auth_headers();
    h.extend([
        ("Expect".to_string(), "100-continue".to_string()),
        ("Transfer-Encoding".to_string(), "chunked".to_string()),
        ("format".to_string(), "json".to_string()),
        ("strip_outer_array".to_string(), "true".to_string()),
    ]);
    write_head(&mut s, "PUT", "/api/d/t/_stream_load", &h);
    assert_eq!(read_response(&mut s).unwrap().status, 100);
    s.write_all(b"a\r\n[{\"id\":1},\r\na\r\n {\"id\":2}]\r\n0\r\n\r\n")
        .unwrap();
    let v = read_response(&mut s).unwrap().json();
    assert_eq!(status(&v), "Success", "{v}");
    assert_eq!(v["NumberLoadedRows"], 2);
}

#[tokio::test]
async fn response_has_every_starrocks_field_pretty_printed() {
    let d = Double::start(&[]);
    d.with_pk_table().await;
    let mut h = auth_headers();
    h.extend([
        ("Expect".to_string(), "100-continue".to_string()),
        ("format".to_string(), "json".to_string()),
        ("strip_outer_array".to_string(), "true".to_string()),
    ]);
    let r = put_expecting(d.be, "/api/d/t/_stream_load", &h, br#"[{"id":1}]"#);
    let text = String::from_utf8(r.body.clone()).unwrap();
    assert!(text.starts_with("{\n    \"TxnId\": "), "{text}");
    let v = r.json();
    for f in [
        "TxnId",
        "Label",
        "Status",
        "Message",
        "NumberTotalRows",
        "NumberLoadedRows",
        "NumberFilteredRows",
        "NumberUnselectedRows",
        "LoadBytes",
        "LoadTimeMs",
        "BeginTxnTimeMs",
        "StreamLoadPlanTimeMs",
        "ReadDataTimeMs",
        "WriteDataTimeMs",
        "CommitAndPublishTimeMs",
    ] {
        assert!(v.get(f).is_some(), "missing {f} in {v}");
    }
    assert_eq!(v["Message"], "OK");
    assert_eq!(
        v["Label"].as_str().unwrap().len(),
        36,
        "a generated UUID label"
    );
}

#[tokio::test]
async fn upsert_replaces_whole_row_and_nulls_omitted_columns() {
    let d = Double::start(&[]);
    d.with_pk_table().await;
    let v = d.load_json("t", "u1", &[], r#"[{"id":1,"name":"a","score":5,"lsn":1}]"#);
    assert_eq!(status(&v), "Success");
    d.load_json(
        "t",
        "u2",
        &[],
        r#"[{"id":1,"name":"b","unknown_key":"ignored"}]"#,
    );
    // score has DEFAULT 7, lsn has none: an omitted column gets its default or NULL.
    assert_eq!(
        d.rows("SELECT id, name, score, lsn FROM d.t").await,
        vec![vec!["1", "b", "7", "NULL"]]
    );
}

#[tokio::test]
async fn delete_op_removes_the_key_and_two_ops_on_one_key_apply_in_order() {
    let d = Double::start(&[]);
    d.with_pk_table().await;
    d.load_json(
        "t",
        "a",
        &[],
        r#"[{"id":1,"name":"x"},{"id":2,"name":"y"}]"#,
    );
    let v = d.load_json(
        "t",
        "b",
        &[],
        r#"[{"id":1,"__op":1},{"id":2,"name":"gone","__op":0},{"id":2,"__op":"delete"},{"id":3,"__op":1},{"id":3,"name":"back","__op":"upsert"}]"#,
    );
    assert_eq!(status(&v), "Success", "{v}");
    assert_eq!(v["NumberLoadedRows"], 5);
    assert_eq!(
        d.rows("SELECT id, name FROM d.t ORDER BY id").await,
        vec![vec!["3", "back"]]
    );
}

#[tokio::test]
async fn partial_update_keeps_unlisted_columns_and_inserts_defaults() {
    let d = Double::start(&[]);
    d.with_pk_table().await;
    d.load_json(
        "t",
        "p0",
        &[],
        r#"[{"id":1,"name":"keep","score":1,"lsn":10}]"#,
    );
    let partial = [
        ("partial_update", "true"),
        ("partial_update_mode", "row"),
        ("columns", "`id`,lsn"),
    ];
    let v = d.load_json(
        "t",
        "p1",
        &partial,
        r#"[{"id":1,"lsn":11},{"id":2,"lsn":20}]"#,
    );
    assert_eq!(status(&v), "Success", "{v}");
    assert_eq!(
        d.rows("SELECT id, name, score, lsn FROM d.t ORDER BY id")
            .await,
        vec![vec!["1", "keep", "1", "11"], vec!["2", "NULL", "7", "20"]]
    );
    let no_key = d.load_json(
        "t",
        "p2",
        &[("partial_update", "true"), ("columns", "lsn")],
        r#"[{"lsn":1}]"#,
    );
    assert_eq!(status(&no_key), "Fail");
    assert!(message(&no_key).contains("primary key"), "{no_key}");
}

#[tokio::test]
async fn partial_update_on_duplicate_key_table_fails_with_exact_message() {
    let d = Double::start(&[]);
    d.ddl(&[
        "CREATE DATABASE d",
        "CREATE TABLE d.events (id BIGINT, payload STRING) DUPLICATE KEY(id) DISTRIBUTED BY HASH(id) PROPERTIES(\"replication_num\" = \"1\")",
    ])
    .await;
    let v = d.load_json(
        "events",
        "dup1",
        &[("partial_update", "true"), ("columns", "id,payload")],
        r#"[{"id":1}]"#,
    );
    assert_eq!(status(&v), "Fail");
    assert_eq!(message(&v), "Only primary key table support partial update");
    assert_eq!(d.load_state("d", "dup1"), "ABORTED");
    // A duplicate-key table appends every row.
    d.load_json(
        "events",
        "dup2",
        &[],
        r#"[{"id":1,"payload":"a"},{"id":1,"payload":"b"}]"#,
    );
    assert_eq!(d.rows("SELECT count(*) FROM d.events").await[0][0], "2");
}

#[tokio::test]
async fn merge_condition_applies_only_greater_or_equal_and_deletes_ignore_it() {
    let d = Double::start(&[]);
    d.with_pk_table().await;
    d.load_json(
        "t",
        "m0",
        &[],
        r#"[{"id":1,"name":"v10","lsn":10},{"id":2,"name":"v10","lsn":10}]"#,
    );
    let mc = [("merge_condition", "lsn")];
    let v = d.load_json(
        "t",
        "m1",
        &mc,
        r#"[{"id":1,"name":"older","lsn":9},{"id":2,"name":"same","lsn":10},{"id":3,"name":"new","lsn":1}]"#,
    );
    assert_eq!(status(&v), "Success");
    assert_eq!(
        v["NumberLoadedRows"], 3,
        "rows skipped by the condition still count as loaded"
    );
    assert_eq!(
        d.rows("SELECT id, name, lsn FROM d.t ORDER BY id").await,
        vec![
            vec!["1", "v10", "10"],
            vec!["2", "same", "10"],
            vec!["3", "new", "1"]
        ]
    );
    d.load_json("t", "m2", &mc, r#"[{"id":1,"lsn":0,"__op":1}]"#);
    assert_eq!(
        d.rows("SELECT count(*) FROM d.t WHERE id = 1").await[0][0],
        "0",
        "delete ignores merge_condition"
    );
    let bad = d.load_json("t", "m3", &[("merge_condition", "nope")], r#"[{"id":1}]"#);
    assert_eq!(status(&bad), "Fail");
    assert!(message(&bad).contains("nope"), "{bad}");
}

#[tokio::test]
async fn duplicate_label_reports_finished_and_loads_nothing_more() {
    let d = Double::start(&[]);
    d.with_pk_table().await;
    assert_eq!(
        status(&d.load_json("t", "batch_1", &[], r#"[{"id":1,"name":"a"}]"#)),
        "Success"
    );
    let again = d.load_json(
        "t",
        "batch_1",
        &[],
        r#"[{"id":1,"name":"CHANGED"},{"id":2}]"#,
    );
    assert_eq!(status(&again), "Label Already Exists");
    assert_eq!(again["ExistingJobStatus"], "FINISHED");
    assert_eq!(message(&again), "Label [batch_1] has already been used.");
    assert_eq!(
        d.rows("SELECT id, name FROM d.t").await,
        vec![vec!["1", "a"]]
    );
    assert_eq!(d.load_state("d", "batch_1"), "VISIBLE");
    assert_eq!(d.load_state("d", "never_used"), "UNKNOWN");
}

#[tokio::test]
async fn aborted_label_can_be_reused() {
    let d = Double::start(&[]);
    d.with_pk_table().await;
    let failed = d.load_json(
        "t",
        "retry_me",
        &[("strict_mode", "true")],
        r#"[{"id":1,"name":"this name is far too long for twenty"}]"#,
    );
    assert_eq!(message(&failed), "too many filtered rows");
    assert_eq!(d.load_state("d", "retry_me"), "ABORTED");
    let ok = d.load_json("t", "retry_me", &[], r#"[{"id":1,"name":"fits"}]"#);
    assert_eq!(status(&ok), "Success");
    assert_eq!(d.load_state("d", "retry_me"), "VISIBLE");
}

#[tokio::test]
async fn label_eviction_by_count_makes_state_unknown_and_label_reusable() {
    let d = Double::start(&["--label-keep-max-num", "2"]);
    d.with_pk_table().await;
    for l in ["e1", "e2", "e3"] {
        assert_eq!(
            status(&d.load_json("t", l, &[], r#"[{"id":1}]"#)),
            "Success"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        d.load_state("d", "e1"),
        "UNKNOWN",
        "oldest label evicted by count"
    );
    assert_eq!(d.load_state("d", "e3"), "VISIBLE");
    assert_eq!(
        status(&d.load_json("t", "e1", &[], r#"[{"id":2}]"#)),
        "Success",
        "evicted label loads again"
    );
}

#[tokio::test]
async fn label_eviction_by_age_makes_state_unknown() {
    let d = Double::start(&["--label-keep-max-second", "1"]);
    d.with_pk_table().await;
    d.load_json("t", "old", &[], r#"[{"id":1}]"#);
    assert_eq!(d.load_state("d", "old"), "VISIBLE");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(d.load_state("d", "old"), "UNKNOWN");
}

#[tokio::test]
async fn filtered_rows_over_ratio_fail_with_error_url_listing_rows() {
    let d = Double::start(&[]);
    d.ddl(&[
        "CREATE DATABASE d",
        "CREATE TABLE d.typed (id BIGINT NOT NULL, s VARCHAR(3), ts DATETIME NOT NULL, n TINYINT NOT NULL, doc JSON) \
         PRIMARY KEY(id) DISTRIBUTED BY HASH(id) PROPERTIES(\"replication_num\" = \"1\")",
    ])
    .await;
    let body = r#"[
        {"id":1,"s":"ok","ts":"2024-01-01 00:00:00","n":1,"doc":{"a":[1,2]}},
        {"id":2,"s":"toolong","ts":"2024-01-01 00:00:00","n":1},
        {"id":3,"s":"ok","ts":"not a date","n":1},
        {"id":4,"s":"ok","ts":"2024-01-01 00:00:00","n":300},
        {"id":5,"s":"ok","ts":"2024-01-01 00:00:00","n":null}
    ]"#;
    let strict = [("strict_mode", "true")];
    let v = d.load_json("typed", "f1", &strict, body);
    assert_eq!(status(&v), "Fail");
    assert_eq!(message(&v), "too many filtered rows");
    assert_eq!(v["NumberTotalRows"], 5);
    assert_eq!(v["NumberFilteredRows"], 4);
    let url = v["ErrorURL"].as_str().expect("ErrorURL");
    let path = url
        .split_once(&format!(":{}", d.be))
        .expect("BE port in ErrorURL")
        .1;
    let log = String::from_utf8(request(d.be, "GET", path, &[], None).body).unwrap();
    assert_eq!(log.lines().count(), 4, "{log}");
    assert!(log.contains("column=s"), "{log}");
    assert!(log.contains("not a date"), "{log}");
    assert!(
        log.contains("NULL value in non-nullable column 'n'"),
        "{log}"
    );
    assert_eq!(
        d.rows("SELECT count(*) FROM d.typed").await[0][0],
        "0",
        "nothing of a failed load is applied"
    );

    let within = d.load_json(
        "typed",
        "f2",
        &[("max_filter_ratio", "0.9"), ("strict_mode", "true")],
        body,
    );
    assert_eq!(status(&within), "Success");
    assert_eq!(within["NumberLoadedRows"], 1);
    assert!(within["ErrorURL"].is_string());
    assert_eq!(
        d.rows("SELECT doc FROM d.typed").await,
        vec![vec![r#"{"a":[1,2]}"#]]
    );

    // Without strict mode the too-long VARCHAR is loaded as NULL; the NOT NULL columns are
    // refused by the sink's NULL check.
    let lax = d.load_json("typed", "f3", &[("max_filter_ratio", "0.9")], body);
    assert_eq!(status(&lax), "Success");
    assert_eq!(lax["NumberFilteredRows"], 3);
    assert_eq!(
        d.rows("SELECT id, s FROM d.typed ORDER BY id").await,
        vec![vec!["1", "ok"], vec!["2", "NULL"]]
    );
    let url = lax["ErrorURL"].as_str().expect("ErrorURL");
    let path = url.split_once(&format!(":{}", d.be)).unwrap().1;
    let log = String::from_utf8(request(d.be, "GET", path, &[], None).body).unwrap();
    assert!(
        log.contains("NULL value in non-nullable column 'ts'"),
        "{log}"
    );
}

#[tokio::test]
async fn string_column_is_varchar_65533_bytes() {
    let d = Double::start(&[]);
    d.ddl(&[
        "CREATE DATABASE d",
        "CREATE TABLE d.s (id INT NOT NULL, body STRING) PRIMARY KEY(id) DISTRIBUTED BY HASH(id) PROPERTIES(\"replication_num\" = \"1\")",
    ])
    .await;
    let fits = format!(r#"[{{"id":1,"body":"{}"}}]"#, "x".repeat(65533));
    let over = format!(r#"[{{"id":2,"body":"{}"}}]"#, "x".repeat(65534));
    assert_eq!(status(&d.load_json("s", "s1", &[], &fits)), "Success");
    let v = d.load_json("s", "s2", &[("strict_mode", "true")], &over);
    assert_eq!(message(&v), "too many filtered rows");
    // Not strict: the value that does not fit is NULL.
    assert_eq!(status(&d.load_json("s", "s3", &[], &over)), "Success");
    assert_eq!(
        d.rows("SELECT body FROM d.s WHERE id = 2").await,
        vec![vec!["NULL"]]
    );
}

#[tokio::test]
async fn strict_mode_filters_values_that_would_become_null() {
    let d = Double::start(&[]);
    d.with_pk_table().await;
    let lax = d.load_json("t", "s1", &[], r#"[{"id":1,"score":"abc"}]"#);
    assert_eq!(status(&lax), "Success");
    assert_eq!(d.rows("SELECT score FROM d.t").await, vec![vec!["NULL"]]);
    let strict = d.load_json(
        "t",
        "s2",
        &[("strict_mode", "true")],
        r#"[{"id":1,"score":"abc"}]"#,
    );
    assert_eq!(message(&strict), "too many filtered rows");
}

#[tokio::test]
async fn json_without_strip_outer_array_is_one_record() {
    let d = Double::start(&[]);
    d.with_pk_table().await;
    let v = d.load(
        "d",
        "t",
        &[("format", "json")],
        br#"{"id":9,"name":"single"}"#,
    );
    assert_eq!(status(&v), "Success");
    assert_eq!(v["NumberTotalRows"], 1);
    let arr = d.load("d", "t", &[("format", "json")], br#"[{"id":10}]"#);
    assert_eq!(status(&arr), "Fail");
    assert!(message(&arr).contains("strip_outer_array"), "{arr}");
}

#[tokio::test]
async fn csv_load_with_separator_null_marker_and_op_column() {
    let d = Double::start(&[]);
    d.with_pk_table().await;
    let v = d.load(
        "d",
        "t",
        &[
            ("column_separator", ","),
            ("columns", "id,name,score,__op"),
            ("label", "csv1"),
        ],
        b"1,a,\\N,0\n2,b,3,0\n2,b,3,1\n",
    );
    assert_eq!(status(&v), "Success", "{v}");
    assert_eq!(
        d.rows("SELECT id, name, score FROM d.t ORDER BY id").await,
        vec![vec!["1", "a", "NULL"]]
    );
}
