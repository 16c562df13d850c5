//! Runs `tools/starrocks-double` as a child process, and talks to it: SQL over its MySQL port,
//! fault switches over its admin port.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use mysql_async::prelude::Queryable;
use serde_json::Value as Json;

/// A running StarRocks double.
pub struct Double {
    child: Child,
    /// FE HTTP port.
    pub fe: u16,
    /// MySQL port.
    pub mysql: u16,
    /// Admin port.
    pub admin: u16,
    /// Every BE HTTP listener as (host, port): BE i is 127.0.0.(i+1) (`--be-count`).
    pub bes: Vec<(String, u16)>,
    args: Vec<String>,
    _dir: tempfile::TempDir,
}

/// Runs the double on `dir` with `ports` and `args`; returns it and the ports it printed.
fn spawn(dir: &std::path::Path, ports: &[&str], args: &[&str]) -> (Child, Json) {
    // A port the caller sets in `args` wins over the one in `ports`.
    let ports: Vec<&str> = ports
        .chunks(2)
        .filter(|pair| !args.contains(&pair[0]))
        .flatten()
        .copied()
        .collect();
    let mut child = Command::new(binary())
        .args(ports)
        .arg("--data-dir")
        .arg(dir)
        .args(["--alter-duration-ms", "200"])
        // Like the all-in-one image, which sets default_replication_num=1, unless the test
        // configures a cluster of its own.
        .args(
            (!args.contains(&"--default-replication-num"))
                .then_some(["--default-replication-num", "1"])
                .into_iter()
                .flatten(),
        )
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join("double.log"))
                .unwrap(),
        )
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let ports: Json = serde_json::from_str(&line)
        .unwrap_or_else(|e| panic!("double did not print its ports ({e}): {line:?}"));
    (child, ports)
}

fn binary() -> PathBuf {
    // tests run from target/<profile>/deps/it-<hash>; the double sits in target/<profile>/.
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("starrocks-double");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p starrocks-double` (scripts/test.sh does)",
        bin.display()
    );
    bin
}

impl Double {
    /// Starts a double on free ports with a data dir, and creates database `db`.
    pub fn start(db: &str) -> Double {
        Double::start_with(db, &[])
    }

    /// Starts with extra flags.
    pub fn start_with(db: &str, args: &[&str]) -> Double {
        let dir = tempfile::Builder::new()
            .prefix("sr-double")
            .tempdir()
            .unwrap();
        let ports = [
            "--fe-port",
            "0",
            "--be-port",
            "0",
            "--mysql-port",
            "0",
            "--admin-port",
            "0",
        ];
        let (child, ports) = spawn(dir.path(), &ports, args);
        let port = |k: &str| ports[k].as_u64().unwrap() as u16;
        let d = Double {
            child,
            fe: port("fe"),
            mysql: port("mysql"),
            admin: port("admin"),
            bes: ports["bes"]
                .as_array()
                .map(|bes| {
                    bes.iter()
                        .map(|b| {
                            (
                                b["host"].as_str().unwrap_or_default().to_owned(),
                                b["port"].as_u64().unwrap_or(0) as u16,
                            )
                        })
                        .collect()
                })
                .unwrap_or_default(),
            args: args.iter().map(|a| a.to_string()).collect(),
            _dir: dir,
        };
        d.exec(&format!("CREATE DATABASE IF NOT EXISTS {db}"));
        d
    }

    /// Kills the double as a crash would: its ports refuse connections until [`Self::restart`].
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the double again on the same ports and data directory (one BE only).
    pub fn restart(&mut self) {
        self.kill();
        let (fe, be, mysql, admin) = (
            self.fe.to_string(),
            self.bes.first().map_or(0, |b| b.1).to_string(),
            self.mysql.to_string(),
            self.admin.to_string(),
        );
        let ports = [
            "--fe-port",
            &fe,
            "--be-port",
            &be,
            "--mysql-port",
            &mysql,
            "--admin-port",
            &admin,
        ];
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        self.child = spawn(self._dir.path(), &ports, &args).0;
    }

    /// `STARROCKS_URL`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.fe)
    }

    /// A dbmazz job streaming `tables` from `pg_url` into this double's database `app`,
    /// flushing every 100 ms.
    pub fn job(&self, pg_url: &str, tables: &str) -> crate::support::dbmazz::Job {
        crate::support::dbmazz::Job::new(pg_url, tables)
            .env("SINK_TYPE", "starrocks")
            .env("STARROCKS_URL", &self.url())
            .env("STARROCKS_MYSQL_URL", &self.mysql_url())
            .env("STARROCKS_DB", "app")
            .env("FLUSH_INTERVAL_MS", "100")
    }

    /// The sink's configuration for this double's database `db`, every option at its default.
    pub fn starrocks_config(&self, db: &str) -> dbmazz::config::StarRocksConfig {
        let vars: std::collections::HashMap<String, String> = [
            ("DATABASE_URL", "postgres://u@127.0.0.1/x"),
            ("SINK_TYPE", "starrocks"),
            ("TABLES", "t"),
            ("STARROCKS_URL", &self.url()),
            ("STARROCKS_MYSQL_URL", &self.mysql_url()),
            ("STARROCKS_DB", db),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        match dbmazz::config::Config::from_vars(&vars).unwrap().sink {
            dbmazz::config::SinkConfig::StarRocks(c) => *c,
            other => panic!("{other:?}"),
        }
    }

    /// `STARROCKS_MYSQL_URL`.
    pub fn mysql_url(&self) -> String {
        format!("mysql://root:@127.0.0.1:{}/", self.mysql)
    }

    fn with_conn<T>(&self, f: impl AsyncFnOnce(&mut mysql_async::Conn) -> T) -> T {
        let url = self.mysql_url();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            // StarRocks has no `socket` variable, so mysql_async must not ask for it.
            let opts =
                mysql_async::OptsBuilder::from_opts(mysql_async::Opts::from_url(&url).unwrap())
                    .prefer_socket(false);
            let mut conn = mysql_async::Conn::new(opts).await.unwrap();
            let out = f(&mut conn).await;
            let _ = conn.disconnect().await;
            out
        })
    }

    /// Runs a statement.
    pub fn exec(&self, sql: &str) {
        let sql = sql.to_owned();
        self.with_conn(async move |c: &mut mysql_async::Conn| {
            c.query_drop(&sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"))
        })
    }

    /// Runs a query; every value as text (NULL as `None`).
    pub fn query(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        self.try_query(sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// Runs a query, returning the server's error instead of panicking.
    pub fn try_query(&self, sql: &str) -> Result<Vec<Vec<Option<String>>>, String> {
        let sql = sql.to_owned();
        self.with_conn(async move |c: &mut mysql_async::Conn| {
            let rows: Vec<mysql_async::Row> = c.query(&sql).await.map_err(|e| e.to_string())?;
            Ok(rows
                .into_iter()
                .map(|r| {
                    (0..r.len())
                        .map(|i| match r.as_ref(i) {
                            Some(mysql_async::Value::NULL) | None => None,
                            Some(mysql_async::Value::Bytes(b)) => {
                                Some(String::from_utf8_lossy(b).into_owned())
                            }
                            Some(v) => Some(v.as_sql(true).trim_matches('\'').to_owned()),
                        })
                        .collect()
                })
                .collect())
        })
    }

    /// Sends a request to the admin port; returns the JSON answer.
    pub fn admin(&self, method: &str, path: &str, body: &str) -> Json {
        let mut s = TcpStream::connect(("127.0.0.1", self.admin)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        let json = resp.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        serde_json::from_str(json).unwrap_or(Json::Null)
    }

    /// Adds a fault switch (see tools/starrocks-double/README.md).
    pub fn fault(&self, spec: Json) {
        self.admin("POST", "/admin/faults", &spec.to_string());
    }

    /// Load counters.
    pub fn stats(&self) -> Json {
        self.admin("GET", "/admin/stats", "")
    }
}

impl Drop for Double {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
