//! Throw-away MariaDB servers for integration tests that need a real MySQL-protocol target.
//!
//! Schema provisioning applies files to MySQL/MariaDB, so its tests need a real server, never a
//! mock. As with [`super::pg`], the expensive part runs once per build: `mariadb-install-db`
//! plus the creation of the test users go into a template data directory under cargo's
//! `target/tmp`; each server is a `cp -a` of that template, started with `mariadbd
//! --no-defaults` on a free port of 127.0.0.1 (about a tenth of a second on tmpfs) and killed
//! on drop.
//!
//! Every server has two password-protected users reachable over TCP:
//! - [`ADMIN_USER`]: all privileges with grant option (what `PROVISION_MYSQL_URL` names);
//! - [`PROVISION_USER`]: no privileges at all (what `PROVISION_ROLE` names; the provisioning
//!   engine grants it rights on the databases it creates).
//!
//! Binaries come from `mariadb-server-core` (see scripts/install-deps.sh); `MARIADB_BIN` names
//! the directory holding `mariadbd` when it is elsewhere. As root, the server runs with
//! `--user=root` rather than switching to the `mysql` account.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::pg::{cluster_parent, encode, free_port, run};

/// The administrative user of every test server.
pub const ADMIN_USER: &str = "dbmazz_admin";
/// Its password (contains characters that need URL-encoding, on purpose).
pub const ADMIN_PASSWORD: &str = "adm!n p@ss";
/// The unprivileged provisioning user.
pub const PROVISION_USER: &str = "dbmazz_provision";
/// Its password.
pub const PROVISION_PASSWORD: &str = "prov-pass";

/// Bump when the template's contents change, so stale templates are not reused.
const TEMPLATE_VERSION: u32 = 1;

/// How long a server may take to accept connections on a loaded two-core machine.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running MariaDB server in a temporary directory; killed and removed on drop.
pub struct MariaDb {
    /// TCP port on 127.0.0.1.
    pub port: u16,
    /// The data directory.
    pub data_dir: PathBuf,
    socket: PathBuf,
    child: Child,
    dir: TempDir,
}

impl MariaDb {
    /// Starts a server from the template.
    pub fn start() -> MariaDb {
        let template = template_data_dir();
        let dir = tempfile::Builder::new()
            .prefix("dbmazz-mariadb-")
            .tempdir_in(cluster_parent())
            .expect("create the MariaDB directory");
        let data_dir = dir.path().join("data");
        run(
            Command::new("cp").arg("-a").arg(template).arg(&data_dir),
            "copy the template MariaDB data directory",
        );
        let socket = dir.path().join("mysqld.sock");
        // Another test may grab the port between free_port() and the server's bind: retry.
        for attempt in 1..=5 {
            let port = free_port();
            let log = dir.path().join(format!("error-{port}.log"));
            let mut child = spawn_server(&data_dir, &socket, Some(port), &log);
            match wait_ready(&mut child, &socket, &log) {
                Ok(()) => {
                    return MariaDb {
                        port,
                        data_dir,
                        socket,
                        child,
                        dir,
                    }
                }
                Err(text) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let _ = fs::remove_file(&socket);
                    if attempt == 5 || !text.contains("Address already in use") {
                        panic!("MariaDB did not start:\n{text}");
                    }
                }
            }
        }
        unreachable!("the loop returns or panics")
    }

    /// `mysql://` URL of `db` (empty: no default database) as the administrative user.
    pub fn admin_url(&self, db: &str) -> String {
        self.url_as(ADMIN_USER, ADMIN_PASSWORD, db)
    }

    /// `mysql://` URL of `db` as the unprivileged provisioning user.
    pub fn provision_url(&self, db: &str) -> String {
        self.url_as(PROVISION_USER, PROVISION_PASSWORD, db)
    }

    /// `mysql://` URL of `db` as `user` with `password` (percent-encoded).
    pub fn url_as(&self, user: &str, password: &str, db: &str) -> String {
        format!(
            "mysql://{}:{}@127.0.0.1:{}/{db}",
            encode(user),
            encode(password),
            self.port
        )
    }

    /// Runs SQL through the `mariadb` client as root over the server's socket; panics with the
    /// client's stderr on failure; returns the trimmed, tab-separated output without headers.
    pub fn query(&self, sql: &str) -> String {
        let output = self.client(sql);
        if !output.status.success() {
            panic!(
                "mariadb failed on {sql:?}:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    /// Like [`MariaDb::query`], but returns the client's stderr as `Err` instead of panicking.
    pub fn try_query(&self, sql: &str) -> Result<String, String> {
        let output = self.client(sql);
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
        } else {
            Err(String::from_utf8_lossy(&output.stderr).trim().to_owned())
        }
    }

    /// Whether database `name` exists.
    pub fn database_exists(&self, name: &str) -> bool {
        let sql = format!(
            "SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name = '{}'",
            name.replace('\'', "''")
        );
        self.query(&sql) == "1"
    }

    /// The server's error log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join(format!("error-{}.log", self.port)))
            .unwrap_or_default()
    }

    fn client(&self, sql: &str) -> std::process::Output {
        client_command(&self.socket)
            .args(["--batch", "--skip-column-names", "-e", sql])
            .output()
            .expect("run the mariadb client")
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until the server answers a query on its socket; `Err` carries the error log.
fn wait_ready(child: &mut Child, socket: &Path, log: &Path) -> Result<(), String> {
    let log_text = || fs::read_to_string(log).unwrap_or_default();
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("mariadbd exited ({status}):\n{}", log_text()));
        }
        if socket.exists() {
            let ok = client_command(socket)
                .args(["-e", "SELECT 1"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            return Err(format!(
                "mariadbd not ready after {START_TIMEOUT:?}:\n{}",
                log_text()
            ));
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn bin_dir() -> Option<PathBuf> {
    std::env::var_os("MARIADB_BIN").map(PathBuf::from)
}

fn program(name: &str, default_dir: &str) -> PathBuf {
    bin_dir().map_or_else(|| Path::new(default_dir).join(name), |d| d.join(name))
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// `mariadbd` on `data_dir`, listening on `socket` and (with `port`) on 127.0.0.1:`port`,
/// tuned for throw-away use: small buffers, no durability, no binary log.
fn spawn_server(data_dir: &Path, socket: &Path, port: Option<u16>, log: &Path) -> Child {
    let mariadbd = program("mariadbd", "/usr/sbin");
    assert!(
        mariadbd.exists(),
        "{} not found: run scripts/install-deps.sh (package mariadb-server-core) or set \
         MARIADB_BIN to the directory holding mariadbd",
        mariadbd.display()
    );
    let mut cmd = Command::new(mariadbd);
    cmd.arg("--no-defaults")
        .arg(format!("--datadir={}", data_dir.display()))
        .arg(format!("--socket={}", socket.display()))
        .arg(format!(
            "--pid-file={}",
            data_dir.join("mariadbd.pid").display()
        ))
        .arg(format!("--log-error={}", log.display()))
        .args([
            "--bind-address=127.0.0.1",
            "--skip-name-resolve",
            "--skip-log-bin",
            "--innodb-buffer-pool-size=32M",
            "--innodb-log-file-size=8M",
            "--innodb-flush-log-at-trx-commit=0",
            "--innodb-doublewrite=0",
            "--max-connections=100",
            "--character-set-server=utf8mb4",
            "--collation-server=utf8mb4_unicode_ci",
        ]);
    match port {
        Some(port) => cmd.arg(format!("--port={port}")),
        None => cmd.arg("--skip-networking"),
    };
    if is_root() {
        cmd.arg("--user=root");
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn mariadbd")
}

fn client_command(socket: &Path) -> Command {
    let mut cmd = Command::new(program("mariadb", "/usr/bin"));
    cmd.arg("--no-defaults")
        .arg(format!("--socket={}", socket.display()))
        .args(["--protocol=socket", "-uroot", "--connect-timeout=5"]);
    cmd
}

/// The template data directory: `mariadb-install-db` and the test users, once per build,
/// reused by every server (and by later test runs).
fn template_data_dir() -> &'static Path {
    static TEMPLATE: OnceLock<PathBuf> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let uid = unsafe { libc::geteuid() };
        let parent = template_parent();
        let final_dir = parent.join(format!("mariadb-template-v{TEMPLATE_VERSION}-{uid}"));
        let data = final_dir.join("data");
        let ready_marker = final_dir.join("ready");
        if ready_marker.exists() {
            return data;
        }

        let staging = parent.join(format!(
            "mariadb-template-staging-{}-{uid}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&staging);
        fs::create_dir_all(&staging).expect("create the template staging directory");
        let staging_data = staging.join("data");
        let install_db = program("mariadb-install-db", "/usr/bin");
        assert!(
            install_db.exists(),
            "{} not found: run scripts/install-deps.sh (package mariadb-server-core) or set \
             MARIADB_BIN",
            install_db.display()
        );
        let mut install = Command::new(install_db);
        install
            .arg("--no-defaults")
            .arg(format!("--datadir={}", staging_data.display()))
            .args([
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                "--innodb-log-file-size=8M",
            ]);
        if let Some(dir) = bin_dir() {
            install.arg(format!("--basedir={}", dir.display()));
        }
        if is_root() {
            install.arg("--user=root");
        }
        run(&mut install, "mariadb-install-db");

        // Create the users once, then shut down cleanly so the copy needs no crash recovery.
        let socket = staging.join("setup.sock");
        let log = staging.join("setup.log");
        let mut child = spawn_server(&staging_data, &socket, None, &log);
        if let Err(text) = wait_ready(&mut child, &socket, &log) {
            let _ = child.kill();
            panic!("mariadbd (template setup) did not start:\n{text}");
        }
        let sql = format!(
            "CREATE USER '{ADMIN_USER}'@'%' IDENTIFIED BY '{ADMIN_PASSWORD}';\
             GRANT ALL PRIVILEGES ON *.* TO '{ADMIN_USER}'@'%' WITH GRANT OPTION;\
             CREATE USER '{PROVISION_USER}'@'%' IDENTIFIED BY '{PROVISION_PASSWORD}';\
             FLUSH PRIVILEGES;"
        );
        let out = client_command(&socket).args(["-e", &sql]).output();
        if !out.as_ref().is_ok_and(|o| o.status.success()) {
            let _ = child.kill();
            panic!(
                "could not create the MariaDB test users: {:?}",
                out.map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
            );
        }
        run(
            Command::new(program("mariadb-admin", "/usr/bin"))
                .arg("--no-defaults")
                .arg(format!("--socket={}", socket.display()))
                .args(["-uroot", "shutdown"]),
            "shut down the template server",
        );
        let _ = child.wait();
        fs::write(staging.join("ready"), b"").expect("mark the template ready");
        // Publish atomically; if another test process won the race, use its template.
        if fs::rename(&staging, &final_dir).is_err() {
            let _ = fs::remove_dir_all(&staging);
        }
        assert!(
            ready_marker.exists(),
            "template MariaDB data directory missing at {}",
            data.display()
        );
        data
    })
}

/// cargo's per-target scratch directory, else the system temp dir.
fn template_parent() -> PathBuf {
    let target_tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    if fs::create_dir_all(&target_tmp).is_ok() {
        target_tmp
    } else {
        std::env::temp_dir()
    }
}
