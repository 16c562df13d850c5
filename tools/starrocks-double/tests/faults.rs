//! Fault switches (stream-load.md §14.4, §14.7, §14.8), admin stats and `--discard`.

mod support;

use std::io::Write;
use std::time::{Duration, Instant};

use serde_json::{json, Value as Json};
use support::*;

/// A load sent straight to the BE; `Err` when the connection ends without an answer.
fn be_load(be: u16, label: &str, body: &str, read_timeout: Duration) -> std::io::Result<Resp> {
    let mut s = connect(be);
    s.set_read_timeout(Some(read_timeout)).unwrap();
    let mut h = auth_headers();
    h.extend([
        ("Expect".to_string(), "100-continue".to_string()),
        ("format".to_string(), "json".to_string()),
        ("strip_outer_array".to_string(), "true".to_string()),
        ("label".to_string(), label.to_string()),
        ("Content-Length".to_string(), body.len().to_string()),
    ]);
    write_head(&mut s, "PUT", "/api/d/t/_stream_load", &h);
    let first = read_response(&mut s)?;
    if first.status != 100 {
        return Ok(first);
    }
    s.write_all(body.as_bytes())?;
    read_response(&mut s)
}

fn status(v: &Json) -> &str {
    v["Status"].as_str().unwrap_or("")
}

async fn count(d: &Double) -> String {
    d.rows("SELECT count(*) FROM d.t").await[0][0].clone()
}

#[tokio::test]
async fn http_5xx_fault_answers_503_before_loading_then_clears() {
    let d = Double::start(&[]);
    d.with_pk_table().await;
    d.fault(json!({"kind": "http_5xx", "count": 1}));
    let r = be_load(d.be, "h1", r#"[{"id":1}]"#, Duration::from_secs(5)).unwrap();
    assert_eq!(r.status, 503);
    assert_eq!(count(&d).await, "0");
    assert_eq!(
        d.load_state("d", "h1"),
        "UNKNOWN",
        "no transaction was begun"
    );
    let r = be_load(d.be, "h1", r#"[{"id":1}]"#, Duration::from_secs(5)).unwrap();
    assert_eq!(
        status(&r.json()),
        "Success",
        "count 1: the next load is normal"
    );
}

#[tokio::test]
async fn http_5xx_after_commit_has_committed_the_rows() {
    let d = Double::start(&[]);
    d.with_pk_table().await;
    d.fault(json!({"kind": "http_5xx", "status": 500, "after_commit": true, "count": 1}));
    let r = be_load(d.be, "h2", r#"[{"id":1}]"#, Duration::from_secs(5)).unwrap();
    assert_eq!(r.status, 500);
    assert_eq!(count(&d).await, "1");
    let retry = be_load(d.be, "h2", r#"[{"id":1}]"#, Duration::from_secs(5))
        .unwrap()
        .json();
    assert_eq!(status(&retry), "Label Already Exists");
    assert_eq!(retry["ExistingJobStatus"], "FINISHED");
}

#[tokio::test]
async fn commit_then_drop_commits_and_closes_without_an_answer() {
    let d = Double::start(&[]);
    d.with_pk_table().await;
    d.fault(json!({"kind": "commit_then_drop", "table": "d.t", "count": 1}));
    let r = be_load(
        d.be,
        "drop1",
        r#"[{"id":1,"name":"x"}]"#,
        Duration::from_secs(5),
    );
    assert!(r.is_err(), "no response expected, got {r:?}");
    assert_eq!(count(&d).await, "1");
    assert_eq!(d.load_state("d", "drop1"), "VISIBLE");
    let retry = be_load(
        d.be,
        "drop1",
        r#"[{"id":1,"name":"x"}]"#,
        Duration::from_secs(5),
    )
    .unwrap()
    .json();
    assert_eq!(retry["ExistingJobStatus"], "FINISHED");
    assert_eq!(d.stats()["connections_dropped"], 1);
}

#[tokio::test]
async fn delay_after_commit_outlasts_the_client_timeout_but_commits() {
    let d = Double::start(&[]);
    d.with_pk_table().await;
    d.fault(json!({"kind": "delay_ms", "ms": 1500, "after_commit": true, "count": 1}));
    let started = Instant::now();
    let r = be_load(d.be, "slow1", r#"[{"id":1}]"#, Duration::from_millis(300));
    assert!(r.is_err(), "client gave up first");
    assert!(started.elapsed() < Duration::from_millis(1400));
    assert_eq!(
        d.load_state("d", "slow1"),
        "VISIBLE",
        "committed before the delay"
    );
}

#[tokio::test]
async fn a_load_in_flight_across_a_drop_and_a_rename_lands_by_column_id() {
    let d = Double::start(&[]);
    d.with_pk_table().await;
    d.fault(json!({"kind": "delay_ms", "ms": 800, "count": 1}));
    let be = d.be;
    let slow = std::thread::spawn(move || {
        be_load(
            be,
            "inflight",
            r#"[{"id":1,"name":"a","score":5,"lsn":9}]"#,
            Duration::from_secs(5),
        )
        .map(|r| r.json())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Planned against (id, name, score, lsn); committed after both changes.
    d.ddl(&[
        "ALTER TABLE d.t DROP COLUMN lsn",
        "ALTER TABLE d.t RENAME COLUMN name TO label",
    ])
    .await;
    let v = slow.join().unwrap().unwrap();
    assert_eq!(status(&v), "Success", "{v}");
    assert_eq!(
        d.rows("SELECT id, label, score FROM d.t").await,
        vec![vec!["1", "a", "5"]]
    );
}

#[tokio::test]
async fn delay_before_commit_keeps_the_label_running() {
    let d = Double::start(&[]);
    d.with_pk_table().await;
    d.fault(json!({"kind": "delay_ms", "ms": 800, "count": 1}));
    let be = d.be;
    let slow = std::thread::spawn(move || {
        be_load(be, "run1", r#"[{"id":1}]"#, Duration::from_secs(5)).map(|r| r.json())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(d.load_state("d", "run1"), "PREPARE");
    let dup = be_load(d.be, "run1", r#"[{"id":1}]"#, Duration::from_secs(5))
        .unwrap()
        .json();
    assert_eq!(status(&dup), "Label Already Exists");
    assert_eq!(dup["ExistingJobStatus"], "RUNNING");
    let first = slow.join().unwrap().unwrap();
    assert_eq!(status(&first), "Success");
    assert_eq!(d.load_state("d", "run1"), "VISIBLE");
}

#[tokio::test]
async fn publish_timeout_commits_and_becomes_visible_later() {
    let d = Double::start(&[]);
    d.with_pk_table().await;
    d.fault(json!({"kind": "publish_timeout", "visible_after_ms": 400, "count": 1}));
    let v = be_load(d.be, "pt1", r#"[{"id":1}]"#, Duration::from_secs(5))
        .unwrap()
        .json();
    assert_eq!(status(&v), "Publish Timeout");
    assert_eq!(d.load_state("d", "pt1"), "COMMITTED");
    let dup = be_load(d.be, "pt1", r#"[{"id":1}]"#, Duration::from_secs(5))
        .unwrap()
        .json();
    assert_eq!(dup["ExistingJobStatus"], "FINISHED");
    assert!(
        eventually(Duration::from_secs(3), || async {
            d.load_state("d", "pt1") == "VISIBLE"
        })
        .await
    );
}

#[tokio::test]
async fn failure_faults_answer_with_starrocks_messages() {
    let d = Double::start(&[]);
    d.with_pk_table().await;
    let cases = [
        ("too_many_versions", "too many versions", "ABORTED"),
        (
            "concurrency_limit",
            "Stream Load exceed http cuncurrent limit",
            "UNKNOWN",
        ),
        ("running_txn_limit", "larger than limit", "UNKNOWN"),
        ("shutting_down", "Service is shutting down", "UNKNOWN"),
    ];
    for (i, (kind, text, state)) in cases.iter().enumerate() {
        d.fault(json!({"kind": kind, "count": 1}));
        let label = format!("f{i}");
        let v = be_load(d.be, &label, r#"[{"id":1}]"#, Duration::from_secs(5))
            .unwrap()
            .json();
        assert_eq!(status(&v), "Fail", "{kind}: {v}");
        assert!(v["Message"].as_str().unwrap().contains(text), "{kind}: {v}");
        assert_eq!(d.load_state("d", &label), *state, "{kind}");
    }
    assert_eq!(count(&d).await, "0");

    d.fault(json!({"kind": "txn_status_unknown", "count": 1}));
    let v = be_load(d.be, "tsu", r#"[{"id":1}]"#, Duration::from_secs(5))
        .unwrap()
        .json();
    assert_eq!(
        v["Message"],
        "Transaction status unknown, you can retry with same label"
    );
    assert_eq!(count(&d).await, "1", "committed despite the answer");
    let retry = be_load(d.be, "tsu", r#"[{"id":1}]"#, Duration::from_secs(5))
        .unwrap()
        .json();
    assert_eq!(retry["ExistingJobStatus"], "FINISHED");
}

#[tokio::test]
async fn stall_before_continue_delays_the_interim_response() {
    let d = Double::start(&[]);
    d.with_pk_table().await;
    d.fault(json!({"kind": "stall_before_continue_ms", "ms": 500, "count": 1}));
    let mut s = connect(d.be);
    let mut h = auth_headers();
    h.extend([
        ("Expect".to_string(), "100-continue".to_string()),
        ("format".to_string(), "json".to_string()),
        ("strip_outer_array".to_string(), "true".to_string()),
        ("Content-Length".to_string(), "10".to_string()),
    ]);
    let started = Instant::now();
    write_head(&mut s, "PUT", "/api/d/t/_stream_load", &h);
    assert_eq!(read_response(&mut s).unwrap().status, 100);
    assert!(
        started.elapsed() >= Duration::from_millis(450),
        "{:?}",
        started.elapsed()
    );
    s.write_all(br#"[{"id":1}]"#).unwrap();
    assert_eq!(status(&read_response(&mut s).unwrap().json()), "Success");
}

#[tokio::test]
async fn stall_body_read_sends_continue_then_waits_before_reading() {
    let d = Double::start(&[]);
    d.with_pk_table().await;
    d.fault(json!({"kind": "stall_body_read_ms", "ms": 400, "count": 1}));
    let started = Instant::now();
    let v = be_load(d.be, "sb", r#"[{"id":1}]"#, Duration::from_secs(5))
        .unwrap()
        .json();
    assert_eq!(status(&v), "Success");
    assert!(
        started.elapsed() >= Duration::from_millis(350),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn reject_rows_fault_filters_rows_like_bad_data() {
    let d = Double::start(&[]);
    d.with_pk_table().await;
    d.fault(json!({"kind": "reject_rows", "every": 2, "count": 1}));
    let v = be_load(
        d.be,
        "rr",
        r#"[{"id":1},{"id":2},{"id":3},{"id":4}]"#,
        Duration::from_secs(5),
    )
    .unwrap()
    .json();
    assert_eq!(v["Message"], "too many filtered rows");
    assert_eq!(v["NumberFilteredRows"], 2);
    assert!(v["ErrorURL"].is_string());
}

#[tokio::test]
async fn fault_table_filter_and_listing() {
    let d = Double::start(&[]);
    d.with_pk_table().await;
    d.fault(json!([{"kind": "http_5xx", "table": "other"}, {"kind": "too_many_versions", "table": "d.other", "count": 3}]));
    let listed = request(d.admin, "GET", "/admin/faults", &[], None).json();
    assert_eq!(listed.as_array().unwrap().len(), 2);
    let v = be_load(d.be, "tf", r#"[{"id":1}]"#, Duration::from_secs(5))
        .unwrap()
        .json();
    assert_eq!(
        status(&v),
        "Success",
        "faults for another table do not fire"
    );
    assert_eq!(
        request(d.admin, "DELETE", "/admin/faults", &[], None).status,
        200
    );
    assert!(request(d.admin, "GET", "/admin/faults", &[], None)
        .json()
        .as_array()
        .unwrap()
        .is_empty());
    let bad = request(
        d.admin,
        "POST",
        "/admin/faults",
        &[],
        Some(br#"{"kind":"nonsense"}"#),
    );
    assert_eq!(bad.status, 400);
}

#[tokio::test]
async fn stats_count_loads_by_status_and_reset_clears_them() {
    let d = Double::start(&[]);
    d.with_pk_table().await;
    d.load_json("t", "s1", &[], r#"[{"id":1},{"id":2}]"#);
    d.load_json("t", "s1", &[], r#"[{"id":1}]"#);
    let s = d.stats();
    assert_eq!(s["loads"], 2);
    assert_eq!(s["loads_by_status"]["Success"], 1);
    assert_eq!(s["loads_by_status"]["Label Already Exists"], 1);
    assert_eq!(s["rows_loaded"], 2);
    assert_eq!(s["fe_redirects"], 2);
    assert_eq!(
        request(d.admin, "POST", "/admin/reset?data=true", &[], None).status,
        200
    );
    assert_eq!(d.stats()["loads"], 0);
    let dbs = d.rows("SHOW DATABASES").await;
    assert_eq!(dbs, vec![vec!["information_schema"]]);
}

#[tokio::test]
async fn discard_mode_counts_rows_without_storing_them() {
    let d = Double::start(&["--discard"]);
    d.with_pk_table().await;
    let mut body = String::from("[");
    for i in 0..10_000 {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&format!(r#"{{"id":{i},"name":"n{i}"}}"#));
    }
    body.push(']');
    let v = d.load_json("t", "bench1", &[], &body);
    assert_eq!(status(&v), "Success");
    assert_eq!(v["NumberTotalRows"], 10_000);
    assert_eq!(v["NumberLoadedRows"], 10_000);
    assert_eq!(count(&d).await, "0");
    assert_eq!(d.load_state("d", "bench1"), "VISIBLE");
    assert_eq!(d.stats()["discard"], true);
    let broken = d.load_json("t", "bench2", &[], "[{\"id\":1},");
    assert_eq!(status(&broken), "Fail", "discard still parses the JSON");
}
