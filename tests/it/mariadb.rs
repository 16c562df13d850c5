//! The MariaDB test support itself: a server starts from the template, the admin and the
//! unprivileged provisioning users connect over TCP with their passwords through the same
//! `mysql_async` client the daemon uses, and each server is isolated from the others.

use mysql_async::prelude::Queryable;

use crate::support::mariadb::MariaDb;

#[tokio::test]
async fn admin_and_provision_users_connect_over_tcp() {
    let db = MariaDb::start();

    let mut admin = mysql_async::Conn::from_url(db.admin_url(""))
        .await
        .unwrap_or_else(|e| panic!("admin connect: {e}\n{}", db.log()));
    admin.query_drop("CREATE DATABASE probe").await.unwrap();
    admin
        .query_drop("CREATE TABLE probe.t (id INT PRIMARY KEY, v TEXT)")
        .await
        .unwrap();
    admin
        .query_drop("INSERT INTO probe.t VALUES (1, 'a'), (2, 'b'), (3, 'c')")
        .await
        .unwrap();
    let (count, version): (i64, String) = admin
        .query_first("SELECT COUNT(*), VERSION() FROM probe.t")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(count, 3);
    assert!(version.contains("MariaDB"), "version {version}");
    // The socket client used by the helpers sees the same data.
    assert_eq!(
        db.query("SELECT GROUP_CONCAT(v ORDER BY id) FROM probe.t"),
        "a,b,c"
    );
    assert!(db.database_exists("probe"));

    // The provisioning user logs in but has no rights until someone grants them.
    let mut prov = mysql_async::Conn::from_url(db.provision_url(""))
        .await
        .unwrap_or_else(|e| panic!("provision connect: {e}\n{}", db.log()));
    let denied = prov.query_drop("SELECT * FROM probe.t").await;
    let err = denied.expect_err("the provisioning user must not read probe.t");
    assert!(err.to_string().contains("denied"), "{err}");
    admin
        .query_drop("GRANT ALL ON probe.* TO 'dbmazz_provision'@'%'")
        .await
        .unwrap();
    let n: Option<i64> = prov
        .query_first("SELECT COUNT(*) FROM probe.t")
        .await
        .unwrap();
    assert_eq!(n, Some(3));

    // A second server is a separate copy of the template: it has no `probe`.
    let other = MariaDb::start();
    assert_ne!(other.port, db.port);
    assert!(!other.database_exists("probe"));
    assert!(other.try_query("SELECT * FROM probe.t").is_err());
    admin.disconnect().await.unwrap();
    prov.disconnect().await.unwrap();
}
