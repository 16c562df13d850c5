//! The replication client against real PostgreSQL: authentication methods, TLS modes, pinned
//! session settings, replication commands, streaming, status updates and shutdown.

use std::time::Duration;

use dbmazz::postgres::conninfo::PgConnInfo;
use dbmazz::postgres::replication::{ReplicationClient, ReplicationError, ReplicationMessage};
use dbmazz::postgres::tls::connect_sql;
use dbmazz::Lsn;

use crate::support::pg::{PgCluster, PgOptions};

/// Upper bound for anything a test waits for; generous for a loaded two-core machine.
const WAIT: Duration = Duration::from_secs(30);

fn conninfo(url: &str) -> PgConnInfo {
    PgConnInfo::parse(url).unwrap_or_else(|e| panic!("bad test URL: {e}"))
}

async fn connect(url: &str) -> Result<ReplicationClient, ReplicationError> {
    tokio::time::timeout(WAIT, ReplicationClient::connect(&conninfo(url)))
        .await
        .expect("connect did not finish in time")
}

/// A cluster where role `alice` (LOGIN REPLICATION, password `pw`) must use `method`.
fn cluster_with_password_user(method: &str, password_encryption: &str) -> PgCluster {
    let cluster = PgCluster::start_with(PgOptions {
        hba: vec![format!("host all alice 127.0.0.1/32 {method}")],
        ..PgOptions::default()
    });
    cluster.psql(
        "postgres",
        &format!(
            "SET password_encryption = '{password_encryption}'; \
             CREATE ROLE alice LOGIN REPLICATION PASSWORD 'pw'"
        ),
    );
    cluster
}

async fn assert_logs_in_as_alice(cluster: &PgCluster) {
    let mut client = connect(&cluster.url_as("alice", "pw", "postgres"))
        .await
        .unwrap_or_else(|e| panic!("alice should log in: {e}"));
    let rows = client.simple_query("SELECT current_user").await.unwrap();
    assert_eq!(rows, vec![vec![Some("alice".to_owned())]]);
}

#[tokio::test]
async fn trust_auth_connects() {
    let cluster = PgCluster::start();
    let mut client = connect(&cluster.url("postgres")).await.unwrap();
    let rows = client.simple_query("SELECT 1, NULL::text").await.unwrap();
    assert_eq!(rows, vec![vec![Some("1".to_owned()), None]]);
    assert!(!client.is_tls());
}

#[tokio::test]
async fn cleartext_password_auth_succeeds() {
    let cluster = cluster_with_password_user("password", "scram-sha-256");
    assert_logs_in_as_alice(&cluster).await;
}

#[tokio::test]
async fn md5_password_auth_succeeds() {
    let cluster = cluster_with_password_user("md5", "md5");
    assert_eq!(
        cluster.psql(
            "postgres",
            "SELECT left(rolpassword, 3) FROM pg_authid WHERE rolname = 'alice'"
        ),
        "md5"
    );
    assert_logs_in_as_alice(&cluster).await;
}

#[tokio::test]
async fn scram_sha_256_auth_succeeds() {
    let cluster = cluster_with_password_user("scram-sha-256", "scram-sha-256");
    assert_logs_in_as_alice(&cluster).await;
}

#[tokio::test]
async fn wrong_password_is_an_auth_error_that_names_the_user_but_not_the_password() {
    let cluster = cluster_with_password_user("scram-sha-256", "scram-sha-256");
    let canary = "Canary-Wrong-Pw-7731";
    let err = connect(&cluster.url_as("alice", canary, "postgres"))
        .await
        .unwrap_err();
    assert!(matches!(err, ReplicationError::Auth { .. }), "{err:?}");
    assert!(!err.is_transient());
    assert_eq!(err.code(), Some("28P01"));
    let text = err.to_string();
    assert!(text.contains("user \"alice\""), "{text}");
    assert!(
        text.contains(&format!("127.0.0.1:{}", cluster.port)),
        "{text}"
    );
    assert!(text.contains("DATABASE_URL"), "{text}");
    assert!(!format!("{text} {err:?}").contains(canary), "{text}");
}

#[tokio::test]
async fn missing_password_is_reported_when_the_server_asks_for_one() {
    let cluster = cluster_with_password_user("md5", "md5");
    let url = format!(
        "postgres://alice@127.0.0.1:{}/postgres?sslmode=disable",
        cluster.port
    );
    let err = connect(&url).await.unwrap_err();
    assert!(
        matches!(err, ReplicationError::PasswordMissing { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("\"alice\""), "{err}");
}

#[tokio::test]
async fn role_without_replication_attribute_is_told_how_to_fix_it() {
    let cluster = PgCluster::start();
    cluster.psql("postgres", "CREATE ROLE bob LOGIN");
    let url = format!(
        "postgres://bob@127.0.0.1:{}/postgres?sslmode=disable",
        cluster.port
    );
    let err = connect(&url).await.unwrap_err();
    assert_eq!(err.code(), Some("42501"), "{err:?}");
    assert!(!err.is_transient());
    assert!(err.to_string().contains("REPLICATION"), "{err}");
}

fn tls_url(cluster: &PgCluster, host: &str, mode: &str, root: Option<&std::path::Path>) -> String {
    let mut url = format!(
        "postgres://postgres@{host}:{}/postgres?sslmode={mode}",
        cluster.port
    );
    if let Some(root) = root {
        url.push_str(&format!("&sslrootcert={}", root.display()));
    }
    url
}

fn ssl_cluster() -> PgCluster {
    PgCluster::start_with(PgOptions {
        ssl: true,
        ..PgOptions::default()
    })
}

/// Whether the server sees the walsender with this pid as a TLS connection.
fn server_sees_tls(cluster: &PgCluster, pid: i32) -> bool {
    cluster.psql(
        "postgres",
        &format!("SELECT ssl FROM pg_stat_ssl WHERE pid = {pid}"),
    ) == "t"
}

#[tokio::test]
async fn require_encrypts_without_verifying_the_server() {
    let cluster = ssl_cluster();
    let client = connect(&tls_url(&cluster, "127.0.0.1", "require", None))
        .await
        .unwrap();
    assert!(client.is_tls());
    assert!(server_sees_tls(&cluster, client.backend_pid().unwrap()));
}

#[tokio::test]
async fn verify_full_accepts_the_host_name_in_the_certificate() {
    let cluster = ssl_cluster();
    let ca = cluster.ca_cert().unwrap();
    let client = connect(&tls_url(&cluster, "localhost", "verify-full", Some(&ca)))
        .await
        .unwrap();
    assert!(server_sees_tls(&cluster, client.backend_pid().unwrap()));
}

#[tokio::test]
async fn verify_full_checks_the_host_name_but_verify_ca_does_not() {
    let cluster = ssl_cluster();
    let ca = cluster.ca_cert().unwrap();

    let err = connect(&tls_url(&cluster, "127.0.0.1", "verify-full", Some(&ca)))
        .await
        .unwrap_err();
    assert!(matches!(err, ReplicationError::Tls { .. }), "{err:?}");
    assert!(!err.is_transient());
    let text = err.to_string();
    assert!(text.contains("does not name host \"127.0.0.1\""), "{text}");
    assert!(text.contains("verify-ca"), "{text}");

    let client = connect(&tls_url(&cluster, "127.0.0.1", "verify-ca", Some(&ca)))
        .await
        .unwrap();
    assert!(client.is_tls());
}

#[tokio::test]
async fn verify_modes_reject_a_certificate_from_another_ca() {
    let cluster = ssl_cluster();
    let wrong = cluster.unrelated_ca_cert().unwrap();
    for (host, mode) in [("localhost", "verify-full"), ("127.0.0.1", "verify-ca")] {
        let err = connect(&tls_url(&cluster, host, mode, Some(&wrong)))
            .await
            .unwrap_err();
        assert!(matches!(err, ReplicationError::Tls { .. }), "{err:?}");
        let text = err.to_string();
        assert!(
            text.contains("not signed by the root certificate"),
            "{text}"
        );
        assert!(text.contains("other-ca.crt"), "{text}");
    }
    // An explicit sslrootcert makes require verify the chain too, as in libpq.
    let err = connect(&tls_url(&cluster, "127.0.0.1", "require", Some(&wrong)))
        .await
        .unwrap_err();
    assert!(matches!(err, ReplicationError::Tls { .. }), "{err:?}");
}

#[tokio::test]
async fn require_fails_against_a_plaintext_server_while_prefer_falls_back() {
    let cluster = PgCluster::start();
    let err = connect(&tls_url(&cluster, "127.0.0.1", "require", None))
        .await
        .unwrap_err();
    assert!(matches!(err, ReplicationError::Tls { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("does not accept TLS"), "{text}");
    assert!(
        text.contains(&format!("127.0.0.1:{}", cluster.port)),
        "{text}"
    );

    let client = connect(&tls_url(&cluster, "127.0.0.1", "prefer", None))
        .await
        .unwrap();
    assert!(!client.is_tls());
}

#[tokio::test]
async fn connect_sql_uses_the_same_tls_modes_and_session_settings() {
    let cluster = ssl_cluster();
    let ca = cluster.ca_cert().unwrap();

    let client = connect_sql(&conninfo(&tls_url(
        &cluster,
        "localhost",
        "verify-full",
        Some(&ca),
    )))
    .await
    .unwrap();
    let row = client
        .query_one(
            "SELECT ssl, current_setting('TimeZone'), current_setting('application_name') \
             FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0));
    assert_eq!(row.get::<_, String>(1), "UTC");
    assert_eq!(row.get::<_, String>(2), "dbmazz");

    let err = connect_sql(&conninfo(&tls_url(
        &cluster,
        "127.0.0.1",
        "verify-full",
        Some(&ca),
    )))
    .await
    .unwrap_err();
    assert!(!err.is_transient());
    let text = err.to_string();
    assert!(
        text.contains(&format!("127.0.0.1:{}", cluster.port)),
        "{text}"
    );
    assert!(text.contains("does not name host"), "{text}");

    let err = connect_sql(&conninfo(&tls_url(
        &cluster,
        "localhost",
        "verify-full",
        Some(&cluster.unrelated_ca_cert().unwrap()),
    )))
    .await
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("not signed by the root certificate"),
        "{err}"
    );
}

#[tokio::test]
async fn session_settings_are_pinned_whatever_the_server_defaults() {
    let cluster = PgCluster::start_with(PgOptions {
        extra_conf: vec![
            "timezone = 'America/New_York'".to_owned(),
            "datestyle = 'SQL, DMY'".to_owned(),
            "intervalstyle = 'sql_standard'".to_owned(),
            "extra_float_digits = 0".to_owned(),
            "bytea_output = 'escape'".to_owned(),
        ],
        ..PgOptions::default()
    });
    let mut client = connect(&cluster.url("postgres")).await.unwrap();
    for (setting, expected) in [
        ("TimeZone", "UTC"),
        ("DateStyle", "ISO, DMY"),
        ("IntervalStyle", "postgres"),
        ("extra_float_digits", "3"),
        ("bytea_output", "hex"),
        ("client_encoding", "UTF8"),
    ] {
        let rows = client
            .simple_query(&format!("SHOW {setting}"))
            .await
            .unwrap();
        assert_eq!(rows, vec![vec![Some(expected.to_owned())]], "{setting}");
    }
    assert_eq!(client.parameter("TimeZone"), Some("UTC"));
    let rows = client
        .simple_query("SELECT '2024-01-02 03:04:05+00'::timestamptz, '\\x01ff'::bytea")
        .await
        .unwrap();
    assert_eq!(
        rows,
        vec![vec![
            Some("2024-01-02 03:04:05+00".to_owned()),
            Some("\\x01ff".to_owned())
        ]]
    );
}

#[tokio::test]
async fn identify_system_reports_the_cluster_and_database() {
    let cluster = PgCluster::start();
    let mut client = connect(&cluster.url("postgres")).await.unwrap();
    let info = client.identify_system().await.unwrap();
    assert_eq!(
        info.system_id,
        cluster.psql(
            "postgres",
            "SELECT system_identifier FROM pg_control_system()"
        )
    );
    assert_eq!(info.timeline, 1);
    assert!(info.xlogpos > Lsn::ZERO);
    assert_eq!(info.dbname.as_deref(), Some("postgres"));
}

#[tokio::test]
async fn created_slot_exports_a_snapshot_other_connections_can_import() {
    let cluster = PgCluster::start();
    let mut client = connect(&cluster.url("postgres")).await.unwrap();
    let created = client
        .create_logical_slot("with_snapshot", true)
        .await
        .unwrap();
    let snapshot = created.snapshot_name.expect("an exported snapshot");
    assert!(created.consistent_point > Lsn::ZERO);

    let sql = cluster.client("postgres").await;
    sql.batch_execute(&format!(
        "BEGIN ISOLATION LEVEL REPEATABLE READ; SET TRANSACTION SNAPSHOT '{snapshot}'; COMMIT"
    ))
    .await
    .unwrap();

    let plain = client
        .create_logical_slot("without_snapshot", false)
        .await
        .unwrap();
    assert_eq!(plain.snapshot_name, None);
    assert_eq!(
        cluster.psql(
            "postgres",
            "SELECT string_agg(slot_name || ':' || plugin, ',' ORDER BY slot_name) \
             FROM pg_replication_slots"
        ),
        "with_snapshot:pgoutput,without_snapshot:pgoutput"
    );
}

/// Table `t`, publication `p`, slot `s`; returns a started stream and its status sender.
async fn start_streaming(
    cluster: &PgCluster,
) -> (
    dbmazz::postgres::replication::ReplicationStream,
    dbmazz::postgres::replication::StatusSender,
) {
    cluster.psql(
        "postgres",
        "CREATE TABLE t (id int PRIMARY KEY, v text); CREATE PUBLICATION p FOR TABLE t",
    );
    let mut client = connect(&cluster.url("postgres")).await.unwrap();
    client.create_logical_slot("s", false).await.unwrap();
    client
        .start_logical_replication(
            "s",
            Lsn::ZERO,
            &[("proto_version", "1"), ("publication_names", "p")],
        )
        .await
        .unwrap()
}

/// pgoutput messages (XLogData payloads) up to and including the next Commit.
async fn next_transaction(
    stream: &mut dbmazz::postgres::replication::ReplicationStream,
) -> Vec<bytes::Bytes> {
    let mut messages = Vec::new();
    loop {
        let message = tokio::time::timeout(WAIT, stream.next())
            .await
            .expect("no transaction arrived in time")
            .unwrap()
            .expect("stream ended early");
        if let ReplicationMessage::XLogData { data, .. } = message {
            let is_commit = data.first() == Some(&b'C');
            messages.push(data);
            if is_commit {
                return messages;
            }
        }
    }
}

/// The end LSN of a pgoutput Commit message: tag, flags, commit LSN, end LSN, timestamp.
fn commit_end_lsn(commit: &[u8]) -> Lsn {
    assert_eq!(commit.len(), 1 + 1 + 8 + 8 + 8);
    Lsn(u64::from_be_bytes(commit[10..18].try_into().unwrap()))
}

#[tokio::test]
async fn an_insert_arrives_as_begin_relation_insert_commit() {
    let cluster = PgCluster::start();
    let (mut stream, _status) = start_streaming(&cluster).await;
    cluster.psql("postgres", "INSERT INTO t VALUES (1, 'one')");

    let messages = next_transaction(&mut stream).await;
    let tags: Vec<u8> = messages.iter().map(|m| m[0]).collect();
    assert_eq!(tags, b"BRIC".to_vec());
    assert!(
        messages[2].windows(3).any(|w| w == b"one"),
        "the Insert carries the new row"
    );
    assert!(commit_end_lsn(&messages[3]) > Lsn::ZERO);
}

#[tokio::test]
async fn status_update_with_commit_end_advances_confirmed_flush_lsn() {
    let cluster = PgCluster::start();
    let (mut stream, mut status) = start_streaming(&cluster).await;
    cluster.psql("postgres", "INSERT INTO t VALUES (1, 'one')");
    let end = commit_end_lsn(next_transaction(&mut stream).await.last().unwrap());

    let confirmed = || -> Lsn {
        cluster
            .psql(
                "postgres",
                "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = 's'",
            )
            .parse()
            .unwrap()
    };
    assert!(confirmed() < end);
    status.send_status(end, end, end, false).await.unwrap();

    let deadline = tokio::time::Instant::now() + WAIT;
    // The walsender reads status updates while it waits for WAL; keep the stream drained.
    while confirmed() < end {
        assert!(
            tokio::time::Instant::now() < deadline,
            "confirmed_flush_lsn stuck"
        );
        let _ = tokio::time::timeout(Duration::from_millis(200), stream.next()).await;
    }
    assert_eq!(confirmed(), end);
}

#[tokio::test]
async fn keepalives_ask_for_a_reply_before_wal_sender_timeout() {
    let cluster = PgCluster::start_with(PgOptions {
        extra_conf: vec!["wal_sender_timeout = 2s".to_owned()],
        ..PgOptions::default()
    });
    let (mut stream, _status) = start_streaming(&cluster).await;
    let started = std::time::Instant::now();
    loop {
        let message = tokio::time::timeout(WAIT, stream.next())
            .await
            .expect("no keepalive in time")
            .unwrap()
            .expect("stream ended early");
        if let ReplicationMessage::Keepalive {
            reply_requested: true,
            wal_end,
            ..
        } = message
        {
            assert!(wal_end > Lsn::ZERO);
            break;
        }
    }
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn finish_drains_the_stream_to_a_clean_end() {
    let cluster = PgCluster::start();
    let (mut stream, mut status) = start_streaming(&cluster).await;
    cluster.psql(
        "postgres",
        "INSERT INTO t SELECT g, 'x' FROM generate_series(1, 1000) g",
    );
    // Read part of it, then stop while more is still on the way.
    next_transaction(&mut stream).await;
    cluster.psql("postgres", "INSERT INTO t VALUES (0, 'late')");

    status.finish().await.unwrap();
    status.finish().await.unwrap();
    let drained = tokio::time::timeout(WAIT, async {
        let mut after_finish = 0;
        while let Some(_message) = stream.next().await.unwrap() {
            after_finish += 1;
        }
        after_finish
    })
    .await
    .expect("the stream did not end after finish()");
    assert!(drained < 10_000);
    assert!(stream.next().await.unwrap().is_none(), "stays ended");

    let err = status
        .send_status(Lsn(1), Lsn(1), Lsn(1), false)
        .await
        .unwrap_err();
    assert!(matches!(err, ReplicationError::Protocol(_)), "{err:?}");

    let deadline = std::time::Instant::now() + WAIT;
    while cluster.psql(
        "postgres",
        "SELECT active FROM pg_replication_slots WHERE slot_name = 's'",
    ) != "f"
    {
        assert!(std::time::Instant::now() < deadline, "slot still active");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn missing_slot_is_a_definite_error_with_sqlstate_42704() {
    let cluster = PgCluster::start();
    let client = connect(&cluster.url("postgres")).await.unwrap();
    let err = client
        .start_logical_replication(
            "no_such_slot",
            Lsn::ZERO,
            &[("proto_version", "1"), ("publication_names", "p")],
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("42704"), "{err:?}");
    assert!(!err.is_transient());
    let text = err.to_string();
    assert!(text.contains("no_such_slot"), "{text}");
    assert!(
        text.contains(&format!("127.0.0.1:{}", cluster.port)),
        "{text}"
    );
}

#[tokio::test]
async fn a_slot_in_use_by_another_connection_is_a_transient_error() {
    let cluster = PgCluster::start();
    let (_stream, _status) = start_streaming(&cluster).await;
    let second = connect(&cluster.url("postgres")).await.unwrap();
    let err = second
        .start_logical_replication(
            "s",
            Lsn::ZERO,
            &[("proto_version", "1"), ("publication_names", "p")],
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("55006"), "{err:?}");
    assert!(err.is_transient());
}
