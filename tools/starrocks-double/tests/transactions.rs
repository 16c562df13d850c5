//! The Stream Load transaction interface (stream-load.md §7, §14.9).

mod support;

use std::time::Duration;

use serde_json::Value as Json;
use support::*;

/// One transaction call through the FE: 307, then the BE.
fn txn(d: &Double, op: &str, label: &str, extra: &[(&str, &str)], body: Option<&str>) -> Json {
    let path = format!("/api/transaction/{op}");
    let mut h = auth_headers();
    h.extend([
        ("label".to_string(), label.to_string()),
        ("db".to_string(), "d".to_string()),
        ("table".to_string(), "t".to_string()),
        ("Expect".to_string(), "100-continue".to_string()),
    ]);
    h.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let method = if op == "load" { "PUT" } else { "POST" };
    let fe = if method == "PUT" {
        put_expecting(d.fe, &path, &h, body.unwrap_or("").as_bytes())
    } else {
        request(d.fe, method, &path, &h, None)
    };
    assert_eq!(fe.status, 307, "{}", String::from_utf8_lossy(&fe.body));
    assert!(fe
        .header("Location")
        .unwrap()
        .ends_with(&format!(":{}{path}", d.be)));
    let r = if method == "PUT" {
        put_expecting(d.be, &path, &h, body.unwrap_or("").as_bytes())
    } else {
        request(d.be, method, &path, &h, None)
    };
    r.json()
}

const JSON_ROWS: &[(&str, &str)] = &[("format", "json"), ("strip_outer_array", "true")];

#[tokio::test]
async fn begin_load_prepare_commit_makes_rows_visible_only_at_commit() {
    let d = Double::start(&[]);
    d.with_pk_table().await;
    let b = txn(&d, "begin", "tx1", &[], None);
    assert_eq!(b["Status"], "OK", "{b}");
    assert!(b["TxnId"].as_i64().unwrap() > 0);
    let l1 = txn(
        &d,
        "load",
        "tx1",
        JSON_ROWS,
        Some(r#"[{"id":1,"name":"a"}]"#),
    );
    assert_eq!(l1["Status"], "OK", "{l1}");
    assert_eq!(l1["Seq"], 1);
    let l2 = txn(
        &d,
        "load",
        "tx1",
        JSON_ROWS,
        Some(r#"[{"id":2,"name":"b"},{"id":1,"__op":1}]"#),
    );
    assert_eq!(l2["Seq"], 2);
    assert_eq!(
        d.rows("SELECT count(*) FROM d.t").await[0][0],
        "0",
        "nothing visible before commit"
    );
    let p = txn(&d, "prepare", "tx1", &[], None);
    assert_eq!(p["Status"], "OK");
    assert_eq!(p["NumberTotalRows"], 3);
    assert_eq!(d.load_state("d", "tx1"), "PREPARED");
    let more = txn(&d, "load", "tx1", JSON_ROWS, Some(r#"[{"id":3}]"#));
    assert_eq!(more["Status"], "FAILED", "no load after prepare: {more}");
    let c = txn(&d, "commit", "tx1", &[], None);
    assert_eq!(c["Status"], "OK", "{c}");
    assert_eq!(
        d.rows("SELECT id, name FROM d.t").await,
        vec![vec!["2", "b"]],
        "chunks applied in order"
    );
    assert_eq!(d.load_state("d", "tx1"), "VISIBLE");
    let again = txn(&d, "commit", "tx1", &[], None);
    assert_eq!(again["Status"], "OK");
    assert_eq!(again["Message"], "Transaction already commited");
}

#[tokio::test]
async fn unknown_transactions_and_duplicate_begins_are_reported() {
    let d = Double::start(&[]);
    d.with_pk_table().await;
    assert_eq!(
        txn(&d, "commit", "nope", &[], None)["Status"],
        "TXN_NOT_EXISTS"
    );
    assert_eq!(
        txn(&d, "load", "nope", JSON_ROWS, Some("[]"))["Status"],
        "TXN_NOT_EXISTS"
    );
    txn(&d, "begin", "tx2", &[], None);
    let dup = txn(&d, "begin", "tx2", &[], None);
    assert_eq!(dup["Status"], "LABEL_ALREADY_EXISTS");
    assert_eq!(dup["ExistingJobStatus"], "RUNNING");
}

#[tokio::test]
async fn rollback_aborts_and_the_label_is_reusable() {
    let d = Double::start(&[]);
    d.with_pk_table().await;
    txn(&d, "begin", "tx3", &[], None);
    txn(&d, "load", "tx3", JSON_ROWS, Some(r#"[{"id":1}]"#));
    assert_eq!(txn(&d, "rollback", "tx3", &[], None)["Status"], "OK");
    assert_eq!(d.load_state("d", "tx3"), "ABORTED");
    assert_eq!(d.rows("SELECT count(*) FROM d.t").await[0][0], "0");
    assert_eq!(txn(&d, "begin", "tx3", &[], None)["Status"], "OK");
}

#[tokio::test]
async fn too_many_filtered_rows_fail_the_prepare() {
    let d = Double::start(&[]);
    d.with_pk_table().await;
    txn(&d, "begin", "tx4", &[], None);
    txn(
        &d,
        "load",
        "tx4",
        &[
            ("format", "json"),
            ("strip_outer_array", "true"),
            ("strict_mode", "true"),
        ],
        Some(r#"[{"id":1,"name":"a name much longer than twenty bytes"}]"#),
    );
    let p = txn(&d, "prepare", "tx4", &[], None);
    assert_eq!(p["Status"], "FAILED");
    assert_eq!(p["Message"], "too many filtered rows");
    assert!(p["ErrorURL"].is_string());
    assert_eq!(d.load_state("d", "tx4"), "ABORTED");
}

#[tokio::test]
async fn open_transactions_expire_after_their_timeout() {
    let d = Double::start(&[]);
    d.with_pk_table().await;
    txn(&d, "begin", "tx5", &[("timeout", "1")], None);
    txn(&d, "begin", "tx6", &[], None);
    txn(&d, "prepare", "tx6", &[("prepared_timeout", "1")], None);
    assert_eq!(d.load_state("d", "tx6"), "PREPARED");
    let expired = eventually(Duration::from_secs(4), || async {
        d.load_state("d", "tx5") == "ABORTED" && d.load_state("d", "tx6") == "ABORTED"
    })
    .await;
    assert!(expired);
    assert_eq!(
        txn(&d, "commit", "tx6", &[], None)["Status"],
        "TXN_NOT_EXISTS"
    );
}
