//! `dbmazz schema …`: the command-line client of `dbmazz.SchemaService`, so that provisioning a
//! tenant database is one command in a shell script or a terminal.
//!
//! `upload` streams the file in 1 MiB chunks (never whole in memory) with a progress bar, then
//! follows the job with `WatchJob` and a second bar until it ends. On a terminal the bars are
//! drawn by indicatif; otherwise (pipes, CI logs) one plain line per step of 10 % is printed.
//!
//! Exit codes, for scripts: 0 when the job succeeded, 1 when it failed (its error, with the
//! line number and the server's message, goes to stderr), 2 for bad arguments, an unreadable
//! file, a refused call or an unreachable server.

use std::fmt;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::io::AsyncReadExt;
use tonic::codegen::InterceptedService;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, Endpoint};

mod fleet;
pub use fleet::{databases, migrate, servers, Databases, Migrate};

use crate::control::proto::schema_job::Status as JobStatus;
use crate::control::proto::schema_service_client::SchemaServiceClient;
use crate::control::proto::upload_request::Part;
use crate::control::proto::{
    job_event, DropDatabaseRequest, GetJobRequest, ListJobsRequest, SchemaJob, SqlEngine,
    UploadMetadata, UploadRequest, WatchJobRequest,
};

/// Size of each chunk sent (the service's limit).
pub const CHUNK_BYTES: usize = 1024 * 1024;

/// How a `schema` subcommand ended.
#[derive(Debug)]
pub enum Outcome {
    /// Exit 0.
    Success,
    /// Exit 1: the job failed (already reported).
    JobFailed,
}

/// Why a `schema` subcommand could not do its work: exit 2, with this message.
#[derive(Debug)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

type Result<T> = std::result::Result<T, UsageError>;

fn usage(msg: impl Into<String>) -> UsageError {
    UsageError(msg.into())
}

/// Where the service is and how to authenticate.
#[derive(Clone, Debug)]
pub struct Server {
    /// `http://host:port` (or `host:port`) of dbmazz's gRPC API.
    pub addr: String,
    /// Bearer token (`GRPC_TOKEN`).
    pub token: Option<String>,
}

/// What `dbmazz schema upload` sends (its command-line arguments).
#[derive(Clone, Debug, clap::Args)]
pub struct Upload {
    /// postgres or mysql.
    #[arg(long)]
    pub engine: String,
    /// Database to create (^[a-z_][a-z0-9_]{0,62}$).
    #[arg(long)]
    pub name: String,
    /// The server to create it on [default: the one the registry knows the database on, else
    /// the placement rule].
    #[arg(long)]
    pub server: Option<String>,
    /// Placement: only servers with these labels (k=v[,k2=v2]).
    #[arg(long)]
    pub label: Option<String>,
    /// The .sql file.
    pub file: PathBuf,
    /// A retried upload with the same key returns the first upload's job.
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// Split and guard the file only; create and apply nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the job id after the upload and return.
    #[arg(long)]
    pub no_wait: bool,
    /// Plain progress lines even on a terminal.
    #[arg(long)]
    pub plain: bool,
}

/// Adds the bearer token to every call.
#[derive(Clone)]
struct Auth(Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for Auth {
    fn call(
        &mut self,
        mut req: tonic::Request<()>,
    ) -> std::result::Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

type Client = SchemaServiceClient<InterceptedService<Channel, Auth>>;

async fn connect(server: &Server) -> Result<Client> {
    let uri = if server.addr.contains("://") {
        server.addr.clone()
    } else {
        format!("http://{}", server.addr)
    };
    let endpoint = Endpoint::from_shared(uri.clone())
        .map_err(|e| usage(format!("--addr {}: not a URL: {e}", server.addr)))?
        .connect_timeout(Duration::from_secs(5));
    let channel = endpoint.connect().await.map_err(|e| {
        usage(format!(
            "cannot connect to dbmazz at {uri}: {}; is it running with GRPC_PORT set, and is \
             --addr right?",
            source_chain(&e)
        ))
    })?;
    let auth = Auth(
        server
            .token
            .as_deref()
            .map(|t| {
                format!("Bearer {t}")
                    .parse()
                    .map_err(|_| usage("the token is not valid header text"))
            })
            .transpose()?,
    );
    Ok(SchemaServiceClient::with_interceptor(channel, auth)
        .max_decoding_message_size(4 << 20)
        .max_encoding_message_size(4 << 20))
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let more = s.to_string();
        // hyper and tonic repeat their sources' words; keep each piece once.
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cur = s.source();
    }
    text
}

fn refused(what: &str, s: &tonic::Status) -> UsageError {
    usage(format!("{what} refused ({:?}): {}", s.code(), s.message()))
}

fn engine_of(name: &str) -> Result<SqlEngine> {
    match name.to_ascii_lowercase().as_str() {
        "postgres" | "postgresql" | "pg" => Ok(SqlEngine::Postgres),
        "mysql" | "mariadb" => Ok(SqlEngine::Mysql),
        other => Err(usage(format!(
            "--engine {other:?}: expected postgres or mysql"
        ))),
    }
}

/// Progress display: indicatif bars on a terminal, plain lines otherwise.
struct Progress {
    bar: Option<ProgressBar>,
    label: &'static str,
    total: u64,
    last_step: Option<u64>,
}

impl Progress {
    fn new(label: &'static str, total: u64, plain: bool) -> Progress {
        let bar = (!plain && std::io::stdout().is_terminal()).then(|| {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stdout());
            let style = ProgressStyle::with_template(
                "{prefix:>9} [{bar:30}] {percent:>3}% {bytes}/{total_bytes} {bytes_per_sec} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            bar.set_style(style);
            bar.set_prefix(label);
            bar
        });
        Progress {
            bar,
            label,
            total,
            last_step: None,
        }
    }

    fn set(&mut self, done: u64, msg: &str) {
        if let Some(bar) = &self.bar {
            bar.set_position(done);
            bar.set_message(msg.to_owned());
            return;
        }
        let pct = (done.saturating_mul(100))
            .checked_div(self.total)
            .unwrap_or(100)
            .min(100);
        let step = pct / 10;
        if self.last_step != Some(step) {
            self.last_step = Some(step);
            println!(
                "{}: {pct:>3}% ({} of {} bytes){}{msg}",
                self.label,
                done,
                self.total,
                if msg.is_empty() { "" } else { " " }
            );
        }
    }

    fn finish(&mut self, done: u64, msg: &str) {
        self.set(done, msg);
        if let Some(bar) = &self.bar {
            bar.finish();
        }
    }

    fn abandon(&mut self, msg: &str) {
        match &self.bar {
            Some(bar) => bar.abandon_with_message(msg.to_owned()),
            None => println!("{}: {msg}", self.label),
        }
    }
}

/// `dbmazz schema upload`.
pub async fn upload(server: &Server, u: &Upload) -> Result<Outcome> {
    let engine = engine_of(&u.engine)?;
    let placement = match &u.label {
        Some(l) => crate::provision::servers::parse_labels(l)
            .map_err(|e| usage(format!("--label: {e}")))?,
        None => Default::default(),
    };
    let file_name = u
        .file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| usage(format!("{}: not a file name", u.file.display())))?;
    let mut file = tokio::fs::File::open(&u.file)
        .await
        .map_err(|e| usage(format!("cannot open {}: {e}", u.file.display())))?;
    let size = file
        .metadata()
        .await
        .map_err(|e| usage(format!("cannot read {}: {e}", u.file.display())))?
        .len();
    let mut client = connect(server).await?;

    let started = Instant::now();
    let metadata = UploadRequest {
        part: Some(Part::Metadata(UploadMetadata {
            engine: engine as i32,
            database: u.name.clone(),
            file_name,
            idempotency_key: u.idempotency_key.clone(),
            dry_run: u.dry_run.then_some(true),
            server: u.server.clone().unwrap_or_default(),
            placement_labels: placement.into_iter().collect(),
            ..Default::default()
        })),
    };
    let progress = Arc::new(Mutex::new(Progress::new("upload", size, u.plain)));
    // The file is read in a task of its own, so that reading and sending overlap. A read error
    // must not look like the end of the file: the task then keeps the stream open, reports the
    // error, and the call is dropped (cancelled on the wire) below.
    let (tx, rx) = tokio::sync::mpsc::channel::<UploadRequest>(4);
    let (read_err_tx, read_err_rx) = tokio::sync::oneshot::channel::<String>();
    let mut read_err_tx = Some(read_err_tx);
    let reader = {
        let progress = progress.clone();
        let path = u.file.clone();
        tokio::spawn(async move {
            if tx.send(metadata).await.is_err() {
                return;
            }
            let mut sent = 0u64;
            loop {
                let mut buf = vec![0u8; CHUNK_BYTES];
                let mut filled = 0;
                while filled < CHUNK_BYTES {
                    match file.read(&mut buf[filled..]).await {
                        Ok(0) => break,
                        Ok(n) => filled += n,
                        Err(e) => {
                            if let Some(tx) = read_err_tx.take() {
                                let _ = tx.send(format!("reading {} failed: {e}", path.display()));
                            }
                            std::future::pending::<()>().await;
                        }
                    }
                }
                if filled == 0 {
                    return;
                }
                buf.truncate(filled);
                sent += filled as u64;
                let chunk = UploadRequest {
                    part: Some(Part::Chunk(buf)),
                };
                if tx.send(chunk).await.is_err() {
                    return;
                }
                if let Ok(mut p) = progress.lock() {
                    p.set(sent, "");
                }
            }
        })
    };
    let call = client.upload(tokio_stream::wrappers::ReceiverStream::new(rx));
    let response = tokio::select! {
        r = call => r,
        Ok(e) = read_err_rx => {
            reader.abort();
            return Err(usage(e));
        }
    };
    reader.abort();
    let response = match response {
        Ok(r) => r.into_inner(),
        Err(s) => {
            if let Ok(mut p) = progress.lock() {
                p.abandon("refused");
            }
            return Err(refused("upload", &s));
        }
    };
    if let Ok(mut p) = progress.lock() {
        p.finish(response.bytes, "");
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "job {}: {} bytes uploaded in {secs:.1}s, sha256 {}…{}",
        response.job_id,
        response.bytes,
        response.sha256.get(..12).unwrap_or(&response.sha256),
        if response.deduplicated {
            " (an earlier job with the same content or key: upload discarded)"
        } else {
            ""
        },
    );
    if u.no_wait {
        return Ok(Outcome::Success);
    }
    follow(
        &mut client,
        &response.job_id,
        response.bytes,
        u.plain,
        started,
    )
    .await
}

/// Follows a job to its end with a bar of the bytes applied.
async fn follow(
    client: &mut Client,
    id: &str,
    total: u64,
    plain: bool,
    started: Instant,
) -> Result<Outcome> {
    let mut stream = client
        .watch_job(WatchJobRequest { id: id.to_owned() })
        .await
        .map_err(|s| refused("WatchJob", &s))?
        .into_inner();
    let mut bar = Progress::new("apply", total.max(1), plain);
    while let Some(event) = stream.next().await {
        let event =
            event.map_err(|s| usage(format!("lost the job's event stream: {}", s.message())))?;
        let Some(job) = event.job else { continue };
        match job_event::Type::try_from(event.r#type) {
            Ok(job_event::Type::Done) => {
                bar.finish(job.bytes_applied.max(total), "done");
                println!("{}", summary(&job, started));
                return Ok(Outcome::Success);
            }
            Ok(job_event::Type::Failed) => {
                bar.abandon("failed");
                eprintln!("dbmazz schema: job {} FAILED: {}", job.id, job.error);
                return Ok(Outcome::JobFailed);
            }
            _ => bar.set(job.bytes_applied, &job.stage),
        }
    }
    Err(usage(format!(
        "the job's event stream ended before the job did; see dbmazz schema status {id}"
    )))
}

fn summary(job: &SchemaJob, started: Instant) -> String {
    let secs = started.elapsed().as_secs_f64();
    format!(
        "SUCCESS: {} {} into {} database {:?}{}: {} statements, {} bytes in {secs:.1}s ({:.1} MB/s)",
        if job.dry_run { "validated" } else { "applied" },
        job.file_name,
        engine_name(job.engine),
        job.database,
        if job.server.is_empty() || job.server == engine_name(job.engine) {
            String::new()
        } else {
            format!(" on server {}", job.server)
        },
        job.statements,
        job.bytes,
        job.bytes as f64 / 1e6 / secs.max(1e-3)
    )
}

fn engine_name(e: i32) -> &'static str {
    match SqlEngine::try_from(e) {
        Ok(SqlEngine::Postgres) => "postgres",
        Ok(SqlEngine::Mysql) => "mysql",
        _ => "unknown",
    }
}

fn status_name(s: i32) -> &'static str {
    match JobStatus::try_from(s) {
        Ok(JobStatus::Queued) => "QUEUED",
        Ok(JobStatus::Running) => "RUNNING",
        Ok(JobStatus::Success) => "SUCCESS",
        Ok(JobStatus::Failed) => "FAILED",
        _ => "UNKNOWN",
    }
}

/// `dbmazz schema status ID`: one line per field; exit 1 when the job failed.
pub async fn status(server: &Server, id: &str) -> Result<Outcome> {
    let mut client = connect(server).await?;
    let job = client
        .get_job(GetJobRequest { id: id.to_owned() })
        .await
        .map_err(|s| refused("GetJob", &s))?
        .into_inner();
    println!("id:         {}", job.id);
    println!("status:     {}", status_name(job.status));
    println!("stage:      {}", job.stage);
    println!("progress:   {}%", job.progress);
    println!("engine:     {}", engine_name(job.engine));
    println!("database:   {}", job.database);
    println!(
        "file:       {} ({} bytes, sha256 {})",
        job.file_name, job.bytes, job.sha256
    );
    println!("statements: {}", job.statements);
    if !job.error.is_empty() {
        println!("error:      {}", job.error);
    }
    Ok(if job.status == JobStatus::Failed as i32 {
        Outcome::JobFailed
    } else {
        Outcome::Success
    })
}

/// `dbmazz schema list`: one line per job, newest first.
pub async fn list(server: &Server, limit: u32) -> Result<Outcome> {
    let mut client = connect(server).await?;
    let jobs = client
        .list_jobs(ListJobsRequest { limit })
        .await
        .map_err(|s| refused("ListJobs", &s))?
        .into_inner()
        .jobs;
    println!(
        "{:<36}  {:<8}  {:>4}  {:<8}  {:<24}  ERROR",
        "ID", "STATUS", "PCT", "ENGINE", "DATABASE"
    );
    for j in jobs {
        println!(
            "{:<36}  {:<8}  {:>3}%  {:<8}  {:<24}  {}",
            j.id,
            status_name(j.status),
            j.progress,
            engine_name(j.engine),
            j.database,
            j.error
        );
    }
    Ok(Outcome::Success)
}

/// `dbmazz schema drop`.
pub async fn drop_database(
    server: &Server,
    engine: &str,
    on: Option<&str>,
    name: &str,
    force: bool,
) -> Result<Outcome> {
    let engine = engine_of(engine)?;
    let mut client = connect(server).await?;
    let r = client
        .drop_database(DropDatabaseRequest {
            engine: engine as i32,
            name: name.to_owned(),
            force,
            server: on.unwrap_or_default().to_owned(),
        })
        .await
        .map_err(|s| refused("DropDatabase", &s))?
        .into_inner();
    println!("{}", r.message);
    Ok(Outcome::Success)
}

/// Reads the token of `--token-file` (trailing newline removed).
pub fn read_token_file(path: &Path) -> Result<String> {
    std::fs::read_to_string(path)
        .map(|t| t.trim_end_matches(['\n', '\r']).to_owned())
        .map_err(|e| usage(format!("--token-file {}: {e}", path.display())))
}
