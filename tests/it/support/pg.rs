//! Throw-away PostgreSQL clusters for integration tests.
//!
//! Every test gets its own cluster so tests cannot see each other's slots, publications or
//! settings. To keep that affordable on two cores, `initdb` runs once per build (the template
//! lives under cargo's `target/tmp` and is reused by later runs); each cluster is a `cp -a` of
//! the template plus a few appended settings, started with `pg_ctl -w`. Clusters live in
//! `/dev/shm` when it is a roomy tmpfs (see [`cluster_parent`]).
//!
//! When the tests run as root (CI containers), every server-side command runs through
//! `runuser -u postgres --`, since PostgreSQL refuses to run as root; the cluster directories are
//! owned by `postgres`.
//!
//! Which PostgreSQL: Debian's 15 (`/usr/lib/postgresql/15/bin`) by default; `PG_MAJOR=14|16|17|18`
//! picks a build that `scripts/install-pg.sh` put under `.tools/pg/<major>/bin`; `PG_BIN` names
//! any bin directory and wins over both. Those builds ship only the server (`initdb`, `pg_ctl`,
//! `postgres`), so client tools (`psql`) come from the server's directory when it has them and
//! from Debian's 15 otherwise: they speak to newer servers for everything the tests do.

use std::fs;
use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, OnceLock};

use tempfile::TempDir;

/// Where the PostgreSQL binaries are when `PG_BIN` is not set (Debian's postgresql-15).
const DEFAULT_PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// Bump when the template's `initdb` options change, so stale templates are not reused.
const TEMPLATE_VERSION: u32 = 1;

/// How a test cluster is configured.
#[derive(Clone, Debug)]
pub struct PgOptions {
    /// `wal_level`; `logical` unless a test wants to see dbmazz refuse `replica`.
    pub wal_level: &'static str,
    /// Serve TLS with a certificate for `localhost` signed by [`PgCluster::ca_cert`].
    pub ssl: bool,
    /// Extra `postgresql.conf` lines, appended last (they win).
    pub extra_conf: Vec<String>,
    /// `pg_hba.conf` lines placed before the default trust lines (first match wins).
    pub hba: Vec<String>,
    /// The server's bin directory, for a test that needs one particular major whatever the
    /// suite runs on; `None`: [`pg_bin`].
    pub bin: Option<PathBuf>,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            wal_level: "logical",
            ssl: false,
            extra_conf: Vec::new(),
            hba: Vec::new(),
            bin: None,
        }
    }
}

/// A running PostgreSQL server in a temporary directory; stopped and removed on drop.
pub struct PgCluster {
    /// TCP port on 127.0.0.1.
    pub port: u16,
    /// The data directory.
    pub data_dir: PathBuf,
    dir: TempDir,
    bin: PathBuf,
    ssl: bool,
    running: bool,
}

impl PgCluster {
    /// Starts a cluster with the default options.
    pub fn start() -> PgCluster {
        PgCluster::start_with(PgOptions::default())
    }

    /// Starts a cluster with the given options.
    pub fn start_with(opts: PgOptions) -> PgCluster {
        let bin = opts.bin.clone().unwrap_or_else(pg_bin);
        let template = template_data_dir(&bin);
        let dir = tempfile::Builder::new()
            .prefix("dbmazz-pg-")
            .tempdir_in(cluster_parent())
            .expect("create the cluster directory");
        make_traversable(dir.path());
        let data_dir = dir.path().join("data");
        run(
            Command::new("cp").arg("-a").arg(template).arg(&data_dir),
            "copy the template cluster",
        );

        let mut conf = vec![
            "listen_addresses = '127.0.0.1'".to_owned(),
            format!("unix_socket_directories = '{}'", data_dir.display()),
            format!("wal_level = {}", opts.wal_level),
            "max_replication_slots = 20".to_owned(),
            "max_wal_senders = 20".to_owned(),
            "max_prepared_transactions = 10".to_owned(),
            "fsync = off".to_owned(),
            "full_page_writes = off".to_owned(),
            "shared_buffers = 32MB".to_owned(),
            "wal_sender_timeout = 60s".to_owned(),
            "log_min_messages = warning".to_owned(),
            "logging_collector = off".to_owned(),
        ];
        if opts.ssl {
            make_certificates(dir.path(), &data_dir);
            conf.push("ssl = on".to_owned());
            conf.push("ssl_cert_file = 'server.crt'".to_owned());
            conf.push("ssl_key_file = 'server.key'".to_owned());
        }
        conf.extend(opts.extra_conf);
        append_lines(&data_dir.join("postgresql.conf"), &conf);

        let mut hba = opts.hba;
        hba.extend([
            "local all all trust".to_owned(),
            "host all all 127.0.0.1/32 trust".to_owned(),
            "host replication all 127.0.0.1/32 trust".to_owned(),
        ]);
        fs::write(data_dir.join("pg_hba.conf"), hba.join("\n") + "\n").expect("write pg_hba.conf");
        chown_to_postgres(dir.path());

        let mut cluster = PgCluster {
            port: 0,
            data_dir,
            dir,
            bin,
            ssl: opts.ssl,
            running: false,
        };
        // Another test may grab the port between free_port() and the server's bind: retry.
        for attempt in 1..=5 {
            cluster.port = free_port();
            append_lines(
                &cluster.data_dir.join("postgresql.conf"),
                &[format!("port = {}", cluster.port)],
            );
            match cluster.pg_ctl_start() {
                Ok(()) => {
                    cluster.running = true;
                    return cluster;
                }
                Err(log) if attempt < 5 && log.contains("could not bind") => continue,
                Err(log) => panic!("PostgreSQL did not start:\n{log}"),
            }
        }
        unreachable!("the loop returns or panics")
    }

    /// URL of database `db` as the superuser `postgres` (trust auth), TLS disabled.
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{db}?sslmode=disable",
            self.port
        )
    }

    /// URL of database `db` as `user` with `password` (percent-encoded), TLS disabled.
    pub fn url_as(&self, user: &str, password: &str, db: &str) -> String {
        format!(
            "postgres://{}:{}@127.0.0.1:{}/{db}?sslmode=disable",
            encode(user),
            encode(password),
            self.port
        )
    }

    /// Creates database `name` and returns its [`PgCluster::url`].
    pub fn create_database(&self, name: &str) -> String {
        self.psql("postgres", &format!("CREATE DATABASE \"{name}\""));
        self.url(name)
    }

    /// Runs SQL through `psql` as `postgres`; panics with psql's stderr on failure; returns the
    /// trimmed, unaligned, tuples-only output.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let output = Command::new(client_bin().join("psql"))
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1"])
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-U", "postgres", "-d", db, "-c", sql])
            .env("PGSSLMODE", "disable")
            .env("PGCONNECT_TIMEOUT", "10")
            .env_remove("PGPASSWORD")
            .env_remove("PGSERVICE")
            .output()
            .expect("run psql");
        if !output.status.success() {
            panic!(
                "psql failed on {sql:?}:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    /// A `tokio-postgres` client for `db` as `postgres`, without TLS; the connection runs on a
    /// spawned task.
    pub async fn client(&self, db: &str) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(&self.url(db), tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("connect to test cluster port {}: {e}", self.port));
        tokio::spawn(async move {
            let _ = connection.await;
        });
        client
    }

    /// With `ssl`, the CA certificate that signed the server certificate. The server
    /// certificate names `localhost` only (not `127.0.0.1`), so `verify-full` succeeds with
    /// host `localhost` and fails with `127.0.0.1`, where `verify-ca` succeeds.
    pub fn ca_cert(&self) -> Option<PathBuf> {
        self.ssl.then(|| self.dir.path().join("ca.crt"))
    }

    /// With `ssl`, a CA certificate that did *not* sign the server certificate.
    pub fn unrelated_ca_cert(&self) -> Option<PathBuf> {
        self.ssl.then(|| self.dir.path().join("other-ca.crt"))
    }

    /// The server log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Kills the server as a crash would (`pg_ctl stop -m immediate`).
    pub fn stop_immediate(&mut self) {
        let output = self.pg_ctl(&["-m", "immediate", "-w", "stop"]);
        if !output.status.success() {
            panic!(
                "pg_ctl stop failed: {}\n{}",
                String::from_utf8_lossy(&output.stderr),
                self.log_tail()
            );
        }
        self.running = false;
    }

    /// Stops the server as an operator would (`pg_ctl stop -m fast`): it waits for walsenders
    /// to send what they have, so a client holding a replication connection can hold it up.
    pub fn stop_fast(&mut self) {
        let output = self.pg_ctl(&["-m", "fast", "-w", "-t", "60", "stop"]);
        if !output.status.success() {
            panic!(
                "pg_ctl stop -m fast failed: {}\n{}",
                String::from_utf8_lossy(&output.stderr),
                self.log_tail()
            );
        }
        self.running = false;
    }

    /// Starts the server again on the same port (after [`PgCluster::stop_immediate`]), or
    /// restarts a running one.
    pub fn restart(&mut self) {
        if self.running {
            self.stop_immediate();
        }
        if let Err(log) = self.pg_ctl_start() {
            panic!("PostgreSQL did not restart:\n{log}");
        }
        self.running = true;
    }

    /// A streaming standby of this server that uses the physical slot `slot` (created here),
    /// with `extra_conf` appended to its settings. It is seeded by a cold copy: this server is
    /// stopped (fast), its data directory copied, and it is started again on the same port.
    /// `pg_basebackup` would avoid the stop, but the pinned server builds do not ship it and
    /// Debian's 15 client refuses newer servers.
    pub fn start_standby(&mut self, slot: &str, extra_conf: &[&str]) -> PgCluster {
        self.psql(
            "postgres",
            &format!("SELECT 1 FROM pg_create_physical_replication_slot('{slot}')"),
        );
        self.stop_fast();
        let dir = tempfile::Builder::new()
            .prefix("dbmazz-pg-standby-")
            .tempdir_in(cluster_parent())
            .expect("create the standby directory");
        make_traversable(dir.path());
        let data_dir = dir.path().join("data");
        run(
            Command::new("cp")
                .arg("-a")
                .arg(&self.data_dir)
                .arg(&data_dir),
            "copy the primary's data directory",
        );
        let _ = fs::remove_file(data_dir.join("server.log"));
        let mut conf = vec![
            format!("unix_socket_directories = '{}'", data_dir.display()),
            format!(
                "primary_conninfo = 'host=127.0.0.1 port={} user=postgres dbname=postgres \
                 application_name=standby'",
                self.port
            ),
            format!("primary_slot_name = '{slot}'"),
            "hot_standby = on".to_owned(),
        ];
        conf.extend(extra_conf.iter().map(|line| (*line).to_owned()));
        append_lines(&data_dir.join("postgresql.conf"), &conf);
        fs::write(data_dir.join("standby.signal"), "").expect("write standby.signal");
        chown_to_postgres(dir.path());
        self.restart();

        let mut standby = PgCluster {
            port: 0,
            data_dir,
            dir,
            bin: self.bin.clone(),
            ssl: false,
            running: false,
        };
        for attempt in 1..=5 {
            standby.port = free_port();
            append_lines(
                &standby.data_dir.join("postgresql.conf"),
                &[format!("port = {}", standby.port)],
            );
            match standby.pg_ctl_start() {
                Ok(()) => {
                    standby.running = true;
                    return standby;
                }
                Err(log) if attempt < 5 && log.contains("could not bind") => continue,
                Err(log) => panic!("the standby did not start:\n{log}"),
            }
        }
        unreachable!("the loop returns or panics")
    }

    /// Promotes a standby to primary and waits until it accepts writes.
    pub fn promote(&self) {
        let output = self.pg_ctl(&["-w", "-t", "60", "promote"]);
        if !output.status.success() {
            panic!(
                "pg_ctl promote failed: {}\n{}",
                String::from_utf8_lossy(&output.stderr),
                self.log_tail()
            );
        }
    }

    fn log_path(&self) -> PathBuf {
        self.data_dir.join("server.log")
    }

    fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        let start = lines.len().saturating_sub(40);
        format!("--- server log tail ---\n{}", lines[start..].join("\n"))
    }

    fn pg_ctl(&self, args: &[&str]) -> Output {
        as_postgres(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&self.data_dir)
            .arg("-l")
            .arg(self.log_path())
            .args(args)
            .output()
            .expect("run pg_ctl")
    }

    /// `Err` carries pg_ctl's output and the log tail.
    fn pg_ctl_start(&self) -> Result<(), String> {
        let output = self.pg_ctl(&["-w", "-t", "60", "start"]);
        if output.status.success() {
            return Ok(());
        }
        Err(format!(
            "{}{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            self.log_tail()
        ))
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if self.running {
            let _ = self.pg_ctl(&["-m", "immediate", "-w", "stop"]);
        }
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("find a free port")
}

/// The server's bin directory: `PG_BIN`, else `PG_MAJOR`'s build under `.tools/pg`, else
/// Debian's 15. Panics on a `PG_MAJOR` that is not installed, naming the command that installs it.
pub fn pg_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("PG_BIN").filter(|b| !b.is_empty()) {
            return PathBuf::from(bin);
        }
        match std::env::var("PG_MAJOR").ok().filter(|m| !m.is_empty()) {
            None => PathBuf::from(DEFAULT_PG_BIN),
            Some(major) if major == "15" && Path::new(DEFAULT_PG_BIN).exists() => {
                PathBuf::from(DEFAULT_PG_BIN)
            }
            Some(major) => pinned_bin(&major),
        }
    })
    .clone()
}

/// The bin directory of the build `scripts/install-pg.sh <major>` installed; panics, naming
/// that command, when it is not there.
pub fn pinned_bin(major: &str) -> PathBuf {
    let bin = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(".tools/pg")
        .join(major)
        .join("bin");
    assert!(
        bin.join("postgres").exists(),
        "PostgreSQL {major}: {} not found; run scripts/install-pg.sh {major}",
        bin.display()
    );
    bin
}

/// Where `psql` is: beside the server when its build has one, else Debian's 15 clients.
pub fn client_bin() -> PathBuf {
    let bin = pg_bin();
    if bin.join("psql").exists() {
        bin
    } else {
        PathBuf::from(DEFAULT_PG_BIN)
    }
}

/// The major version of the servers the tests start (from `postgres --version`), e.g. 17.
pub fn server_major() -> u32 {
    static MAJOR: OnceLock<u32> = OnceLock::new();
    *MAJOR.get_or_init(|| {
        let output = run(
            Command::new(pg_bin().join("postgres")).arg("--version"),
            "postgres --version",
        );
        let text = String::from_utf8_lossy(&output.stdout);
        // "postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)", "postgres (PostgreSQL) 18.4"
        text.split_whitespace()
            .skip_while(|word| *word != "(PostgreSQL)")
            .nth(1)
            .and_then(|v| v.split('.').next())
            .and_then(|m| m.parse().ok())
            .unwrap_or_else(|| panic!("cannot read a major version from {text:?}"))
    })
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// A command that runs as `postgres` when we are root, as ourselves otherwise.
fn as_postgres(program: &Path) -> Command {
    if is_root() {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

/// Runs `cmd` to completion; panics with its output when it fails.
pub fn run(cmd: &mut Command, what: &str) -> Output {
    let output = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run {cmd:?}: {e}"));
    if !output.status.success() {
        panic!(
            "{what} failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    output
}

fn chown_to_postgres(path: &Path) {
    if is_root() {
        run(
            Command::new("chown")
                .arg("-R")
                .arg("postgres:postgres")
                .arg(path),
            "chown the cluster directory",
        );
    }
}

/// Lets the `postgres` user enter a directory created by root with mode 0700.
fn make_traversable(path: &Path) {
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).expect("chmod the directory");
}

fn append_lines(path: &Path, lines: &[String]) {
    let mut file = fs::OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    for line in lines {
        writeln!(file, "{line}").expect("append a config line");
    }
}

/// The template data directory for the server in `bin`: `initdb` once per build, reused by every
/// cluster (and by later test runs, since it lives under cargo's target/tmp).
fn template_data_dir(bin: &Path) -> PathBuf {
    static TEMPLATES: Mutex<Vec<(PathBuf, PathBuf)>> = Mutex::new(Vec::new());
    let mut templates = TEMPLATES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, data)) = templates.iter().find(|(b, _)| b == bin) {
        return data.clone();
    }
    let data = make_template(bin);
    templates.push((bin.to_owned(), data.clone()));
    data
}

/// `initdb` into cargo's target/tmp (once per bin directory and `TEMPLATE_VERSION`).
fn make_template(bin: &Path) -> PathBuf {
    {
        let initdb = bin.join("initdb");
        assert!(
            initdb.exists(),
            "{} not found: install postgresql-15, run scripts/install-pg.sh with PG_MAJOR, or set \
             PG_BIN to the directory holding initdb",
            initdb.display()
        );
        // SAFETY: geteuid has no preconditions and cannot fail.
        let uid = unsafe { libc::geteuid() };
        let bin_tag: String = bin
            .to_string_lossy()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let parent = template_parent();
        let final_dir = parent.join(format!("pg-template-v{TEMPLATE_VERSION}-{uid}-{bin_tag}"));
        let data = final_dir.join("data");
        if data.join("PG_VERSION").exists() {
            return data;
        }

        let staging = parent.join(format!(
            "pg-template-staging-{}-{}",
            std::process::id(),
            uid
        ));
        let _ = fs::remove_dir_all(&staging);
        fs::create_dir_all(&staging).expect("create the template staging directory");
        make_traversable(&staging);
        chown_to_postgres(&staging);
        run(
            as_postgres(&initdb)
                .args([
                    "-N",
                    "-A",
                    "trust",
                    "-U",
                    "postgres",
                    "-E",
                    "UTF8",
                    "--locale=C",
                ])
                .arg("-D")
                .arg(staging.join("data")),
            "initdb",
        );
        // Publish atomically; if another test process won the race, use its template.
        if fs::rename(&staging, &final_dir).is_err() {
            let _ = fs::remove_dir_all(&staging);
        }
        if data.join("PG_VERSION").exists() {
            data
        } else {
            panic!("template cluster missing at {}", data.display())
        }
    }
}

/// Where cluster directories go: `DBMAZZ_TEST_TMPDIR` if set, else `/dev/shm` when it is a
/// roomy tmpfs (copying the template there takes a tenth of the time it takes on ext4), else the
/// system temp dir.
pub fn cluster_parent() -> &'static Path {
    static PARENT: OnceLock<PathBuf> = OnceLock::new();
    PARENT.get_or_init(|| {
        if let Some(dir) = std::env::var_os("DBMAZZ_TEST_TMPDIR") {
            return PathBuf::from(dir);
        }
        let shm = Path::new("/dev/shm");
        if available_bytes(shm).is_some_and(|free| free >= SHM_MIN_FREE) {
            shm.to_owned()
        } else {
            std::env::temp_dir()
        }
    })
}

/// Below this much free space (Docker's default /dev/shm is 64 MiB) clusters go to disk.
const SHM_MIN_FREE: u64 = 2 << 30;

fn available_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs only writes into the zeroed struct we pass, and c_path is NUL-terminated.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) };
    (rc == 0).then(|| stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// cargo's per-target scratch directory when usable (root: `postgres` can reach it; otherwise:
/// we can write there), else the system temp dir.
fn template_parent() -> PathBuf {
    let target_tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    if fs::create_dir_all(&target_tmp).is_err() {
        return std::env::temp_dir();
    }
    let usable = if is_root() {
        Command::new("runuser")
            .args(["-u", "postgres", "--", "test", "-x"])
            .arg(&target_tmp)
            .status()
            .is_ok_and(|s| s.success())
    } else {
        Command::new("test")
            .arg("-w")
            .arg(&target_tmp)
            .status()
            .is_ok_and(|s| s.success())
    };
    if usable {
        target_tmp
    } else {
        std::env::temp_dir()
    }
}

/// A CA, a server certificate for DNS name `localhost` signed by it (key in the data dir,
/// mode 0600), and an unrelated second CA.
fn make_certificates(dir: &Path, data_dir: &Path) {
    make_test_certificates(dir);
    for file in ["server.crt", "server.key"] {
        fs::copy(dir.join(file), data_dir.join(file)).expect("copy the server certificate");
    }
    fs::set_permissions(
        data_dir.join("server.key"),
        fs::Permissions::from_mode(0o600),
    )
    .expect("chmod the server key");
}

/// Writes `ca.crt` (a throwaway CA), `other-ca.crt` (an unrelated CA) and `server.crt` /
/// `server.key` (for `localhost` only, signed by `ca.crt`) into `dir`, with the openssl CLI.
pub fn make_test_certificates(dir: &Path) {
    let openssl = |args: &[&str], what: &str| {
        run(Command::new("openssl").current_dir(dir).args(args), what);
    };
    let new_ca = |key: &str, cert: &str, cn: &str| {
        openssl(
            &[
                "req",
                "-x509",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                key,
                "-out",
                cert,
                "-days",
                "3650",
                "-subj",
                cn,
            ],
            "create a test CA",
        );
    };
    new_ca("ca.key", "ca.crt", "/CN=dbmazz test CA");
    new_ca("other-ca.key", "other-ca.crt", "/CN=dbmazz unrelated CA");
    fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost\nbasicConstraints=critical,CA:FALSE\n\
         keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .expect("write the certificate extensions");
    openssl(
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
        "create the server key",
    );
    openssl(
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "3650",
            "-extfile",
            "server.ext",
        ],
        "sign the server certificate",
    );
}

/// Percent-encodes everything but unreserved characters, for URL user/password parts.
pub fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// A `psql` session kept open on stdin, for a transaction that spans other actions.
pub struct PsqlSession {
    child: std::process::Child,
    app: String,
    port: u16,
    db: String,
    sent: usize,
}

impl PgCluster {
    /// Opens a `psql` session on `db` that runs what [`PsqlSession::send`] writes to it.
    pub fn session(&self, db: &str) -> PsqlSession {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let app = format!(
            "session_{}",
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let child = Command::new(client_bin().join("psql"))
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-U"])
            .args(["postgres", "-d", db, "-p"])
            .arg(self.port.to_string())
            .env("PGSSLMODE", "disable")
            .env("PGAPPNAME", &app)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        PsqlSession {
            child,
            app,
            port: self.port,
            db: db.to_owned(),
            sent: 0,
        }
    }
}

impl PsqlSession {
    /// Sends SQL; it runs once psql reads it.
    pub fn send(&mut self, sql: &str) {
        use std::io::Write;
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{sql}").unwrap();
        stdin.flush().unwrap();
    }

    /// Sends SQL and waits until it has run (the session is idle again, in or out of a
    /// transaction).
    pub fn run(&mut self, pg: &PgCluster, sql: &str) {
        assert_eq!(pg.port, self.port, "a session of another cluster");
        self.sent += 1;
        let marker = format!("done_{}_{}", self.app, self.sent);
        self.send(&format!("{sql}\nSELECT '{marker}';"));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
        loop {
            let seen = pg.psql(
                &self.db,
                &format!(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = '{}' \
                     AND state LIKE 'idle%' AND query LIKE '%{marker}%'",
                    self.app
                ),
            );
            if seen.trim() == "1" {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the psql session ended ({status}) before its SQL completed");
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the session's SQL did not complete in 300 s"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// Ends the session; its SQL must have succeeded.
    pub fn close(mut self) {
        drop(self.child.stdin.take());
        assert!(
            self.child.wait().unwrap().success(),
            "the session's SQL failed"
        );
    }
}
