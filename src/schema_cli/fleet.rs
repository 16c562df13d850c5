//! `dbmazz schema migrate|databases|servers`: the fleet side of the provisioning client — a
//! migration fanned out to tenant databases with a progress bar over them and a summary table,
//! the tenant registry, and the servers with their health.
//!
//! Exit codes as for the rest of `dbmazz schema`: `migrate` exits 0 only when every selected
//! database applied the migration or had it already, 1 when any failed or was not attempted,
//! 2 for bad arguments, a refused call or an unreachable dbmazz; `servers` exits 1 when a
//! server is unreachable.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Instant;

use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::{
    connect, engine_name, engine_of, refused, status_name, usage, Outcome, Result, Server,
    CHUNK_BYTES,
};
use crate::control::proto::migrate_request::Part;
use crate::control::proto::migration_target::State;
use crate::control::proto::{
    job_event, ListDatabasesRequest, ListServersRequest, MigrateMetadata, MigrateRequest,
    MigrationJob, OnFailure, WatchJobRequest,
};
use crate::provision::servers::parse_labels;

/// What `dbmazz schema migrate` sends (its command-line arguments).
#[derive(Clone, Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("which").required(true).multiple(false)))]
pub struct Migrate {
    /// The .sql file.
    pub file: PathBuf,
    /// The file's dialect: postgres or mysql; only tenant databases of this engine are
    /// selected.
    #[arg(long, default_value = "postgres")]
    pub engine: String,
    /// Every tenant database.
    #[arg(long, group = "which")]
    pub all: bool,
    /// Every tenant database on this server.
    #[arg(long, group = "which")]
    pub server: Option<String>,
    /// Every tenant database on servers with these labels (k=v[,k2=v2]).
    #[arg(long, group = "which")]
    pub label: Option<String>,
    /// These databases (name, or server/name); repeat it for several.
    #[arg(long = "database", group = "which")]
    pub databases: Vec<String>,
    /// The migration id recorded in each database [default: the file name without .sql].
    #[arg(long)]
    pub id: Option<String>,
    /// continue (apply to every other database anyway) or stop (start no further database).
    #[arg(long, default_value = "continue")]
    pub on_failure: String,
    /// Print the job id and return.
    #[arg(long)]
    pub no_wait: bool,
    /// Plain progress lines even on a terminal.
    #[arg(long)]
    pub plain: bool,
}

/// `dbmazz schema migrate`.
pub async fn migrate(server: &Server, m: &Migrate) -> Result<Outcome> {
    let engine = engine_of(&m.engine)?;
    let on_failure = match m.on_failure.as_str() {
        "continue" => OnFailure::Continue,
        "stop" => OnFailure::Stop,
        other => {
            return Err(usage(format!(
                "--on-failure {other:?}: expected continue or stop"
            )))
        }
    };
    let labels = match &m.label {
        Some(l) => parse_labels(l).map_err(|e| usage(format!("--label: {e}")))?,
        None => Default::default(),
    };
    let file_name = m
        .file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| usage(format!("{}: not a file name", m.file.display())))?;
    // Migration files are small; the service still takes them in chunks of at most 1 MiB.
    let bytes = tokio::fs::read(&m.file)
        .await
        .map_err(|e| usage(format!("cannot read {}: {e}", m.file.display())))?;
    let mut messages = vec![MigrateRequest {
        part: Some(Part::Metadata(MigrateMetadata {
            engine: engine as i32,
            migration_id: m.id.clone().unwrap_or_default(),
            file_name,
            all: m.all,
            server: m.server.clone().unwrap_or_default(),
            labels: labels.into_iter().collect(),
            databases: m.databases.clone(),
            on_failure: on_failure as i32,
        })),
    }];
    messages.extend(bytes.chunks(CHUNK_BYTES).map(|c| MigrateRequest {
        part: Some(Part::Chunk(c.to_vec())),
    }));
    let started = Instant::now();
    let mut client = connect(server).await?;
    let response = client
        .migrate_databases(futures_util::stream::iter(messages))
        .await
        .map_err(|s| refused("MigrateDatabases", &s))?
        .into_inner();
    println!(
        "job {}: migration {} (sha256 {}…) on {} databases",
        response.job_id,
        response.migration_id,
        response.sha256.get(..12).unwrap_or(&response.sha256),
        response.databases
    );
    if m.no_wait {
        return Ok(Outcome::Success);
    }
    let mut events = client
        .watch_job(WatchJobRequest {
            id: response.job_id.clone(),
        })
        .await
        .map_err(|s| refused("WatchJob", &s))?
        .into_inner();
    let mut bar = Bar::new(u64::from(response.databases), m.plain);
    while let Some(event) = events.next().await {
        let event =
            event.map_err(|s| usage(format!("lost the job's event stream: {}", s.message())))?;
        let Some(job) = event.migration else { continue };
        let done = job.applied + job.skipped + job.failed + job.not_attempted;
        let msg = format!(
            "applied {} · skipped {} · failed {} · running {}",
            job.applied, job.skipped, job.failed, job.running
        );
        match job_event::Type::try_from(event.r#type) {
            Ok(job_event::Type::Done | job_event::Type::Failed) => {
                bar.finish(u64::from(done), &msg);
                print_report(&job, started);
                return Ok(
                    if job.status == crate::control::proto::schema_job::Status::Success as i32 {
                        Outcome::Success
                    } else {
                        Outcome::JobFailed
                    },
                );
            }
            _ => bar.set(u64::from(done), &msg),
        }
    }
    Err(usage(format!(
        "the job's event stream ended before the job did; follow it with WatchJob {}",
        response.job_id
    )))
}

/// The summary table: every database that did not simply apply the migration, then the
/// totals.
fn print_report(job: &MigrationJob, started: Instant) {
    let mut rows: Vec<[String; 4]> = job
        .targets
        .iter()
        .filter(|t| t.state != State::Applied as i32 || job.targets.len() <= 40)
        .map(|t| {
            [
                t.server.clone(),
                t.database.clone(),
                state_name(t.state).to_owned(),
                t.error.clone(),
            ]
        })
        .collect();
    if !rows.is_empty() {
        rows.insert(
            0,
            ["SERVER", "DATABASE", "RESULT", "ERROR"].map(str::to_owned),
        );
        let w0 = rows.iter().map(|r| r[0].len()).max().unwrap_or(0);
        let w1 = rows.iter().map(|r| r[1].len()).max().unwrap_or(0);
        for r in &rows {
            let line = format!(
                "{:w0$}  {:w1$}  {:13}  {}",
                r[0],
                r[1],
                r[2],
                r[3].lines().next().unwrap_or("")
            );
            println!("{}", line.trim_end());
        }
    }
    println!(
        "{}: migration {} on {} databases: {} applied, {} skipped (already applied), {} failed, \
         {} not attempted in {:.1}s",
        status_name(job.status),
        job.migration_id,
        job.total,
        job.applied,
        job.skipped,
        job.failed,
        job.not_attempted,
        started.elapsed().as_secs_f64()
    );
}

fn state_name(s: i32) -> &'static str {
    match State::try_from(s) {
        Ok(State::Pending) => "pending",
        Ok(State::Running) => "running",
        Ok(State::Applied) => "applied",
        Ok(State::Skipped) => "skipped",
        Ok(State::Failed) => "FAILED",
        Ok(State::NotAttempted) => "not attempted",
        _ => "unknown",
    }
}

/// Progress over databases: a bar on a terminal, a line per 10 % otherwise.
struct Bar {
    bar: Option<ProgressBar>,
    total: u64,
    last_step: Option<u64>,
}

impl Bar {
    fn new(total: u64, plain: bool) -> Bar {
        let bar = (!plain && std::io::stdout().is_terminal()).then(|| {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stdout());
            if let Ok(style) =
                ProgressStyle::with_template("  migrate [{bar:30}] {pos}/{len} databases {msg}")
            {
                bar.set_style(style.progress_chars("=> "));
            }
            bar
        });
        Bar {
            bar,
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
        let pct = (done * 100).checked_div(self.total).unwrap_or(100).min(100);
        if self.last_step != Some(pct / 10) {
            self.last_step = Some(pct / 10);
            println!(
                "migrate: {pct:>3}% ({done} of {} databases) {msg}",
                self.total
            );
        }
    }

    fn finish(&mut self, done: u64, msg: &str) {
        self.set(done, msg);
        if let Some(bar) = &self.bar {
            bar.finish();
        }
    }
}

/// What `dbmazz schema databases` asks for.
#[derive(Clone, Debug, clap::Args)]
pub struct Databases {
    /// Only this server.
    #[arg(long)]
    pub server: Option<String>,
    /// Only databases on servers with these labels (k=v[,k2=v2]).
    #[arg(long)]
    pub label: Option<String>,
    /// Only this engine: postgres or mysql.
    #[arg(long)]
    pub engine: Option<String>,
    /// Only databases that have not applied this migration id.
    #[arg(long)]
    pub missing: Option<String>,
    /// Only databases whose last migration failed.
    #[arg(long)]
    pub failed: bool,
}

/// `dbmazz schema databases`: the tenant registry, one line per database.
pub async fn databases(server: &Server, d: &Databases) -> Result<Outcome> {
    let labels = match &d.label {
        Some(l) => parse_labels(l).map_err(|e| usage(format!("--label: {e}")))?,
        None => Default::default(),
    };
    let engine = match &d.engine {
        Some(e) => engine_of(e)? as i32,
        None => 0,
    };
    let mut client = connect(server).await?;
    let r = client
        .list_databases(ListDatabasesRequest {
            server: d.server.clone().unwrap_or_default(),
            engine,
            labels: labels.into_iter().collect::<HashMap<_, _>>(),
            name_prefix: String::new(),
            missing_migration: d.missing.clone().unwrap_or_default(),
            failed_only: d.failed,
            limit: 0,
        })
        .await
        .map_err(|s| refused("ListDatabases", &s))?
        .into_inner();
    let mut rows = vec![[
        "SERVER",
        "DATABASE",
        "ENGINE",
        "STATE",
        "MIGRATIONS",
        "LAST",
        "LAST FAILURE",
    ]
    .map(str::to_owned)];
    for t in &r.databases {
        rows.push([
            t.server.clone(),
            t.database.clone(),
            engine_name(t.engine).to_owned(),
            t.state.clone(),
            t.migrations.len().to_string(),
            t.migrations
                .last()
                .map(|m| m.id.clone())
                .unwrap_or_else(|| "-".into()),
            t.last_failure
                .as_ref()
                .map(|f| format!("{}: {}", f.id, f.error.lines().next().unwrap_or("")))
                .unwrap_or_default(),
        ]);
    }
    print_table(&rows);
    println!("{} databases", r.total);
    Ok(Outcome::Success)
}

/// `dbmazz schema servers`: each server checked now; exit 1 when one is unreachable.
pub async fn servers(server: &Server) -> Result<Outcome> {
    let mut client = connect(server).await?;
    let r = client
        .list_servers(ListServersRequest {})
        .await
        .map_err(|s| refused("ListServers", &s))?
        .into_inner();
    let mut rows = vec![[
        "NAME", "ENGINE", "ADDRESS", "STATUS", "TENANTS", "FREE", "LABELS",
    ]
    .map(str::to_owned)];
    let mut down = Vec::new();
    for s in &r.servers {
        if !s.reachable {
            down.push(format!("{}: {}", s.name, s.error));
        }
        let mut labels: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        labels.sort();
        rows.push([
            s.name.clone(),
            engine_name(s.engine).to_owned(),
            s.address.clone(),
            if s.reachable {
                format!("up ({})", s.version)
            } else {
                "DOWN (below)".to_owned()
            },
            s.tenants.to_string(),
            s.free.map(|f| f.to_string()).unwrap_or_else(|| "-".into()),
            labels.join(","),
        ]);
    }
    print_table(&rows);
    for d in &down {
        println!("{d}");
    }
    Ok(if down.is_empty() {
        Outcome::Success
    } else {
        Outcome::JobFailed
    })
}

fn print_table<const N: usize>(rows: &[[String; N]]) {
    let widths: Vec<usize> = (0..N)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if i + 1 == N {
                    c.clone()
                } else {
                    format!("{c:w$}", w = widths[i])
                }
            })
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
}
