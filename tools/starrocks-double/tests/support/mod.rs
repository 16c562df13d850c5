//! Test support: runs the real `starrocks-double` binary on port 0 and talks to it with a
//! hand-written HTTP/1.1 client (so `Expect`, `Content-Length` and early answers stay under
//! the test's control) and with `mysql_async`.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use mysql_async::prelude::Queryable;
use serde_json::Value as Json;

/// A running double; killed when dropped.
pub struct Double {
    pub child: Child,
    pub fe: u16,
    pub be: u16,
    pub mysql: u16,
    pub admin: u16,
    pub ports: Json,
    /// Every BE as (host, port), from the ports line's `bes`.
    pub bes: Vec<(String, u16)>,
}

impl Double {
    /// Starts the binary with every port 0 plus `args`.
    pub fn start(args: &[&str]) -> Double {
        let mut child = Command::new(env!("CARGO_BIN_EXE_starrocks-double"))
            .args([
                "--fe-port",
                "0",
                "--be-port",
                "0",
                "--mysql-port",
                "0",
                "--admin-port",
                "0",
            ])
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn starrocks-double");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("ports line");
        let ports: Json =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad ports line {line:?}: {e}"));
        let port = |k: &str| ports[k].as_u64().unwrap_or(0) as u16;
        Double {
            fe: port("fe"),
            be: port("be"),
            mysql: port("mysql"),
            admin: port("admin"),
            bes: ports["bes"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|b| {
                            (
                                b["host"].as_str().unwrap_or_default().to_owned(),
                                b["port"].as_u64().unwrap_or(0) as u16,
                            )
                        })
                        .collect()
                })
                .unwrap_or_default(),
            ports: ports.clone(),
            child,
        }
    }

    /// Sends SIGTERM and waits; returns whether the process exited successfully.
    pub fn terminate(&mut self) -> bool {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// A MySQL connection as root.
    pub async fn mysql(&self) -> mysql_async::Conn {
        self.mysql_as("root", "").await.expect("mysql connect")
    }

    pub async fn mysql_as(&self, user: &str, pass: &str) -> mysql_async::Result<mysql_async::Conn> {
        let opts = mysql_async::OptsBuilder::default()
            .ip_or_hostname("127.0.0.1")
            .tcp_port(self.mysql)
            .user(Some(user))
            .pass(Some(pass))
            .prefer_socket(false);
        mysql_async::Conn::new(opts).await
    }

    /// Runs DDL statements, panicking on error.
    pub async fn ddl(&self, statements: &[&str]) {
        let mut c = self.mysql().await;
        for s in statements {
            c.query_drop(*s)
                .await
                .unwrap_or_else(|e| panic!("{s}: {e}"));
        }
        let _ = c.disconnect().await;
    }

    /// Creates database `d` and the primary-key table `d.t(id, name, score, lsn)`.
    pub async fn with_pk_table(&self) {
        self.with_pk_table_props("\"replication_num\" = \"1\"")
            .await;
    }

    /// Same as [`Double::with_pk_table`], with more table properties (`"k" = "v", ...`).
    pub async fn with_pk_table_props(&self, props: &str) {
        let props = if props.contains("replication_num") {
            props.to_owned()
        } else {
            format!("\"replication_num\" = \"1\", {props}")
        };
        let create = format!(
            "CREATE TABLE d.t (id BIGINT NOT NULL, name VARCHAR(20) NULL, score INT NULL DEFAULT \"7\", lsn BIGINT NULL) \
             PRIMARY KEY(id) DISTRIBUTED BY HASH(id) BUCKETS 1 PROPERTIES({props})"
        );
        self.ddl(&["CREATE DATABASE IF NOT EXISTS d", &create])
            .await;
    }

    /// Rows of a query as strings (NULL as "NULL").
    pub async fn rows(&self, sql: &str) -> Vec<Vec<String>> {
        let mut c = self.mysql().await;
        let rows: Vec<mysql_async::Row> =
            c.query(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
        let _ = c.disconnect().await;
        rows.into_iter()
            .map(|r| {
                (0..r.len())
                    .map(|i| match r.as_ref(i) {
                        Some(mysql_async::Value::NULL) | None => "NULL".to_string(),
                        Some(mysql_async::Value::Bytes(b)) => {
                            String::from_utf8_lossy(b).into_owned()
                        }
                        Some(mysql_async::Value::Int(v)) => v.to_string(),
                        Some(mysql_async::Value::UInt(v)) => v.to_string(),
                        Some(mysql_async::Value::Double(v)) => v.to_string(),
                        Some(other) => format!("{other:?}"),
                    })
                    .collect()
            })
            .collect()
    }

    /// The state `get_load_state` reports for a label.
    pub fn load_state(&self, db: &str, label: &str) -> String {
        let r = request(
            self.fe,
            "GET",
            &format!("/api/{db}/get_load_state?label={label}"),
            &auth_headers(),
            None,
        );
        let v: Json = serde_json::from_slice(&r.body).expect("load state json");
        v["state"].as_str().unwrap_or("").to_string()
    }

    /// POSTs faults to the admin port.
    pub fn fault(&self, spec: Json) {
        let r = request(
            self.admin,
            "POST",
            "/admin/faults",
            &[],
            Some(spec.to_string().as_bytes()),
        );
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    }

    pub fn stats(&self) -> Json {
        let r = request(self.admin, "GET", "/admin/stats", &[], None);
        serde_json::from_slice(&r.body).expect("stats json")
    }

    /// A full Stream Load through the FE: 307, then Expect/100-continue at the BE.
    pub fn load(&self, db: &str, table: &str, headers: &[(&str, &str)], body: &[u8]) -> Json {
        let path = format!("/api/{db}/{table}/_stream_load");
        let mut h = auth_headers();
        h.extend(headers.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        h.push(("Expect".into(), "100-continue".into()));
        let fe = put_expecting(self.fe, &path, &h, body);
        assert_eq!(
            fe.status,
            307,
            "FE answered {} {}",
            fe.status,
            String::from_utf8_lossy(&fe.body)
        );
        let location = fe.header("location").expect("Location");
        let (host, port) = host_port(location);
        let be = put_expecting_at(&host, port, &path, &h, body);
        assert_eq!(
            be.status,
            200,
            "BE answered {} {}",
            be.status,
            String::from_utf8_lossy(&be.body)
        );
        serde_json::from_slice(&be.body).unwrap_or_else(|e| {
            panic!(
                "BE body not JSON ({e}): {}",
                String::from_utf8_lossy(&be.body)
            )
        })
    }

    /// A JSON-array load with a label.
    pub fn load_json(&self, table: &str, label: &str, extra: &[(&str, &str)], body: &str) -> Json {
        let mut h = vec![
            ("format", "json"),
            ("strip_outer_array", "true"),
            ("label", label),
        ];
        h.extend_from_slice(extra);
        self.load("d", table, &h, body.as_bytes())
    }
}

impl Drop for Double {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn auth_headers() -> Vec<(String, String)> {
    auth_for("root", "")
}

pub fn auth_for(user: &str, pass: &str) -> Vec<(String, String)> {
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
    vec![("Authorization".into(), format!("Basic {token}"))]
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Json {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

/// The host and port of an `http://host:port/...` URL.
pub fn host_port(url: &str) -> (String, u16) {
    let hp = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap_or_default();
    let (host, port) = hp.rsplit_once(':').expect("host:port in URL");
    (host.to_owned(), port.parse().expect("port in URL"))
}

pub fn connect(port: u16) -> TcpStream {
    connect_to("127.0.0.1", port)
}

pub fn connect_to(host: &str, port: u16) -> TcpStream {
    let s = TcpStream::connect((host, port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// Writes a request head (the caller adds Content-Length etc.).
pub fn write_head(s: &mut TcpStream, method: &str, path: &str, headers: &[(String, String)]) {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
}

/// Reads one response (status line, headers, Content-Length body). `Err` on EOF or reset.
pub fn read_response(s: &mut TcpStream) -> std::io::Result<Resp> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = s.read(&mut byte)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "eof in head",
            ));
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = text.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| {
            l.split_once(':')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        })
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body)?;
    Ok(Resp {
        status,
        headers,
        body,
    })
}

/// A request with an optional body, sent at once (no Expect handshake).
pub fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: Option<&[u8]>,
) -> Resp {
    let mut s = connect(port);
    let mut h = headers.to_vec();
    h.push((
        "Content-Length".into(),
        body.map_or(0, |b| b.len()).to_string(),
    ));
    write_head(&mut s, method, path, &h);
    if let Some(b) = body {
        s.write_all(b).unwrap();
    }
    read_response(&mut s).expect("response")
}

/// A PUT that waits for `100 Continue` before sending the body, like curl.
pub fn put_expecting(port: u16, path: &str, headers: &[(String, String)], body: &[u8]) -> Resp {
    put_expecting_at("127.0.0.1", port, path, headers, body)
}

/// [`put_expecting`] to another host (a BE on 127.0.0.2, ...).
pub fn put_expecting_at(
    host: &str,
    port: u16,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Resp {
    let mut s = connect_to(host, port);
    let mut h = headers.to_vec();
    h.push(("Content-Length".into(), body.len().to_string()));
    write_head(&mut s, "PUT", path, &h);
    let first = read_response(&mut s).expect("first response");
    if first.status != 100 {
        return first;
    }
    s.write_all(body).unwrap();
    read_response(&mut s).expect("final response")
}

/// True when the peer closed the connection (EOF or reset) within the timeout.
pub fn closed_by_peer(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => matches!(
            e.kind(),
            std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::ConnectionAborted
                | std::io::ErrorKind::BrokenPipe
        ),
    }
}

/// Polls `f` until it returns true or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// A scratch directory for `--data-dir`.
pub fn data_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("sr-double")
        .tempdir()
        .expect("tempdir")
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf8 path")
}
