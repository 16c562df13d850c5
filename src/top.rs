//! `dbmazz top`: a terminal dashboard of one running job, fed by its gRPC API.
//!
//! Three background tasks keep a shared [`State`] fresh: the `StreamMetrics` stream (throughput,
//! lag, totals, per-table counters, memory), a poller of `HealthService/Check` and
//! `CdcStatusService/GetStatus` (stage, state, errors, LSNs), and, when a source and a sink are
//! known, live row counts of both sides every few seconds ([`crate::verify::counts`]). The
//! dashboard draws that state with ratatui (which only rewrites changed cells, so no flicker).
//! Keys: `p` pause/resume, `t` runs `DBMAZZ_TOP_BURST_CMD` (a traffic burst, set by the demo),
//! `q`/Esc/Ctrl+C quit. When stdout is not a terminal (or with `--plain`) it prints one summary
//! line per interval instead, and a final `total_events=` line on exit.

use std::collections::VecDeque;
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use crossterm::terminal::{self, EnterAlternateScreen, LeaveAlternateScreen};
use ratatui::backend::CrosstermBackend;
use ratatui::layout::{Constraint, Direction, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row, Sparkline, Table};
use ratatui::{Frame, Terminal};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::control::proto::cdc_control_service_client::CdcControlServiceClient;
use crate::control::proto::cdc_metrics_service_client::CdcMetricsServiceClient;
use crate::control::proto::cdc_status_service_client::CdcStatusServiceClient;
use crate::control::proto::health_service_client::HealthServiceClient;
use crate::control::proto::{
    health_check_response::ServingStatus, CdcState, HealthCheckRequest, MetricsRequest,
    MetricsResponse, PauseRequest, ResumeRequest, Stage, StatusRequest,
};
use crate::verify::{self, Counts, Target};

/// Options of `dbmazz top`.
#[derive(Clone, Debug)]
pub struct Options {
    /// `host:port` of the gRPC API.
    pub grpc: String,
    /// `GRPC_TOKEN`, sent as `authorization: Bearer …`.
    pub token: Option<String>,
    /// Where to count rows (source vs sink panel); `None` hides the counts.
    pub counts: Option<Target>,
    /// Refresh interval.
    pub interval: Duration,
    /// Row-count refresh interval.
    pub counts_interval: Duration,
    /// Print lines even on a terminal.
    pub plain: bool,
    /// Quit after this long.
    pub duration: Option<Duration>,
}

/// What `dbmazz health` found: the daemon's answer to `dbmazz.HealthService/Check`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    /// SERVING.
    pub serving: bool,
    /// One line: status, stage detail, and the error detail when there is one.
    pub line: String,
}

/// `dbmazz health`: asks the daemon at `grpc` for its Health within `timeout`.
pub fn probe_health(grpc: &str, token: Option<&str>, timeout: Duration) -> Result<Probe> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut clients = Clients::new(grpc, token)?;
        let answer = tokio::time::timeout(
            timeout,
            clients
                .health
                .check(crate::control::proto::HealthCheckRequest::default()),
        )
        .await
        .map_err(|_| anyhow!("no answer from {grpc} within {} ms", timeout.as_millis()))?
        .map_err(|s| anyhow!("{grpc}: {} ({:?})", s.message(), s.code()))?
        .into_inner();
        let serving = answer.status
            == crate::control::proto::health_check_response::ServingStatus::Serving as i32;
        let mut line = format!(
            "{} {}",
            if serving { "SERVING" } else { "NOT_SERVING" },
            answer.stage_detail
        );
        if !answer.error_detail.is_empty() {
            line.push_str(&format!(": {}", answer.error_detail));
        }
        Ok(Probe { serving, line })
    })
}

/// Adds the bearer token to every call.
#[derive(Clone)]
struct Auth(Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

type Svc = InterceptedService<Channel, Auth>;

#[derive(Clone)]
struct Clients {
    health: HealthServiceClient<Svc>,
    status: CdcStatusServiceClient<Svc>,
    metrics: CdcMetricsServiceClient<Svc>,
    control: CdcControlServiceClient<Svc>,
}

impl Clients {
    fn new(grpc: &str, token: Option<&str>) -> Result<Clients> {
        let uri = if grpc.contains("://") {
            grpc.to_owned()
        } else {
            format!("http://{grpc}")
        };
        let channel = Endpoint::from_shared(uri)
            .map_err(|e| anyhow!("--grpc {grpc}: {e}"))?
            .connect_timeout(Duration::from_secs(3))
            .connect_lazy();
        let auth = Auth(
            token
                .map(|t| {
                    format!("Bearer {t}")
                        .parse()
                        .map_err(|_| anyhow!("the token is not valid header text"))
                })
                .transpose()?,
        );
        Ok(Clients {
            health: HealthServiceClient::with_interceptor(channel.clone(), auth.clone()),
            status: CdcStatusServiceClient::with_interceptor(channel.clone(), auth.clone()),
            metrics: CdcMetricsServiceClient::with_interceptor(channel.clone(), auth.clone()),
            control: CdcControlServiceClient::with_interceptor(channel, auth),
        })
    }
}

/// Samples kept for the sparkline.
const HISTORY: usize = 120;

/// Everything the dashboard shows.
#[derive(Default)]
struct State {
    metrics: Option<MetricsResponse>,
    events_history: VecDeque<u64>,
    stage: Option<Stage>,
    stage_detail: String,
    state: Option<CdcState>,
    serving: Option<ServingStatus>,
    health_error: String,
    conn_error: String,
    confirmed_lsn: String,
    current_lsn: String,
    pending: u64,
    slot: String,
    counts: Vec<Counts>,
    counts_error: String,
    message: String,
}

/// Runs the dashboard until `q` (or the duration ends).
pub fn run(opts: Options) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let clients = {
        let _guard = rt.enter();
        Clients::new(&opts.grpc, opts.token.as_deref())?
    };
    let state = Arc::new(Mutex::new(State::default()));
    rt.spawn(stream_metrics(
        clients.clone(),
        state.clone(),
        opts.interval,
    ));
    rt.spawn(poll_status(clients.clone(), state.clone(), opts.interval));
    if let Some(target) = opts.counts.clone() {
        rt.spawn(poll_counts(target, state.clone(), opts.counts_interval));
    }
    let started = Instant::now();
    let result = if opts.plain || !std::io::stdout().is_terminal() {
        run_plain(&opts, &state, started)
    } else {
        run_tui(&opts, &rt, &clients, &state, started)
    };
    let s = state.lock().expect("state");
    let m = s.metrics.clone().unwrap_or_default();
    println!(
        "dbmazz top: final: elapsed_s={} state={} total_events={} total_bytes={} total_batches={} confirmed_lsn={}",
        started.elapsed().as_secs(),
        state_name(s.state),
        m.total_events_processed,
        m.total_bytes,
        m.total_batches_sent,
        if s.confirmed_lsn.is_empty() { "-" } else { &s.confirmed_lsn },
    );
    drop(s);
    rt.shutdown_timeout(Duration::from_millis(200));
    result
}

async fn stream_metrics(mut c: Clients, state: Arc<Mutex<State>>, interval: Duration) {
    loop {
        let req = MetricsRequest {
            interval_ms: interval.as_millis().clamp(100, u32::MAX as u128) as u32,
        };
        match c.metrics.stream_metrics(req).await {
            Ok(resp) => {
                let mut stream = resp.into_inner();
                loop {
                    match stream.message().await {
                        Ok(Some(m)) => {
                            let mut s = state.lock().expect("state");
                            s.conn_error.clear();
                            s.events_history
                                .push_back(m.events_per_second.round() as u64);
                            while s.events_history.len() > HISTORY {
                                s.events_history.pop_front();
                            }
                            s.metrics = Some(m);
                        }
                        Ok(None) => break,
                        Err(e) => {
                            state.lock().expect("state").conn_error =
                                format!("metrics stream: {}", e.message());
                            break;
                        }
                    }
                }
            }
            Err(e) => {
                state.lock().expect("state").conn_error =
                    format!("cannot reach dbmazz: {}", e.message());
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn poll_status(mut c: Clients, state: Arc<Mutex<State>>, interval: Duration) {
    loop {
        let health = c
            .health
            .check(HealthCheckRequest::default())
            .await
            .map(|r| r.into_inner());
        let status = c
            .status
            .get_status(StatusRequest {})
            .await
            .map(|r| r.into_inner());
        {
            let mut s = state.lock().expect("state");
            match health {
                Ok(h) => {
                    s.serving = ServingStatus::try_from(h.status).ok();
                    s.stage = Stage::try_from(h.stage).ok();
                    s.stage_detail = h.stage_detail;
                    s.health_error = h.error_detail;
                }
                Err(e) => s.conn_error = format!("cannot reach dbmazz: {}", e.message()),
            }
            if let Ok(st) = status {
                s.state = CdcState::try_from(st.state).ok();
                s.confirmed_lsn = st.confirmed_lsn_text;
                s.current_lsn = st.current_lsn_text;
                s.pending = st.pending_events;
                s.slot = st.slot_name;
            }
        }
        tokio::time::sleep(interval).await;
    }
}

async fn poll_counts(target: Target, state: Arc<Mutex<State>>, every: Duration) {
    let mut conns = None;
    loop {
        if conns.is_none() {
            match verify::Conns::open(&target).await {
                Ok(c) => conns = Some(c),
                Err(e) => state.lock().expect("state").counts_error = format!("{e:#}"),
            }
        }
        if let Some(c) = conns.as_mut() {
            let counts = verify::counts(c, &target).await;
            let mut s = state.lock().expect("state");
            s.counts_error.clear();
            s.counts = counts;
        }
        tokio::time::sleep(every).await;
    }
}

fn state_name(s: Option<CdcState>) -> &'static str {
    match s {
        Some(CdcState::Running) => "RUNNING",
        Some(CdcState::Paused) => "PAUSED",
        Some(CdcState::Draining) => "DRAINING",
        Some(CdcState::Stopped) => "STOPPED",
        Some(CdcState::Failed) => "FAILED",
        Some(CdcState::Starting) => "STARTING",
        _ => "?",
    }
}

fn stage_name(s: Option<Stage>) -> &'static str {
    match s {
        Some(Stage::Init) => "INIT",
        Some(Stage::Setup) => "SETUP",
        Some(Stage::Cdc) => "CDC",
        Some(Stage::Snapshot) => "SNAPSHOT",
        _ => "?",
    }
}

/// `1234567` → `1.2M`.
fn si(v: f64) -> String {
    let a = v.abs();
    if a >= 1e9 {
        format!("{:.1}G", v / 1e9)
    } else if a >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

/// Bytes with binary units.
fn bytes(v: f64) -> String {
    let a = v.abs();
    if a >= 1024.0 * 1024.0 * 1024.0 {
        format!("{:.1} GiB", v / (1024.0 * 1024.0 * 1024.0))
    } else if a >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", v / (1024.0 * 1024.0))
    } else if a >= 1024.0 {
        format!("{:.1} KiB", v / 1024.0)
    } else {
        format!("{v:.0} B")
    }
}

fn count(v: Option<u64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// The one-line summary printed per interval without a terminal.
fn summary_line(s: &State, elapsed: Duration) -> String {
    let m = s.metrics.clone().unwrap_or_default();
    let mut line = format!(
        "[{:>4}s] {} {} | {} ev/s {}/s | lag {} {} ms | total {} events {} batches | mem {} | confirmed {}",
        elapsed.as_secs(),
        stage_name(s.stage),
        state_name(s.state),
        si(m.events_per_second),
        bytes(m.bytes_per_second),
        bytes(m.lag_bytes as f64),
        m.replication_lag_ms,
        m.total_events_processed,
        m.total_batches_sent,
        bytes(m.memory_bytes as f64),
        if s.confirmed_lsn.is_empty() { "-" } else { &s.confirmed_lsn },
    );
    if m.rows_rejected > 0 || m.dead_letters_open > 0 {
        line.push_str(&format!(
            " | refused {} dead letters {}",
            m.rows_rejected, m.dead_letters_open
        ));
    }
    if !s.counts.is_empty() {
        line.push_str(" | rows src/sink");
        for c in &s.counts {
            let name = c.table.rsplit('.').next().unwrap_or(&c.table);
            line.push_str(&format!(" {name} {}/{}", count(c.source), count(c.sink)));
        }
    }
    for e in [&s.conn_error, &s.health_error] {
        if !e.is_empty() {
            line.push_str(&format!(" | error: {e}"));
        }
    }
    line
}

fn run_plain(opts: &Options, state: &Mutex<State>, started: Instant) -> Result<()> {
    let mut next = started + opts.interval;
    loop {
        let now = Instant::now();
        if let Some(d) = opts.duration {
            if now >= started + d {
                return Ok(());
            }
        }
        if now < next {
            std::thread::sleep((next - now).min(Duration::from_millis(200)));
            continue;
        }
        next += opts.interval;
        let line = summary_line(&state.lock().expect("state"), started.elapsed());
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}")?;
        out.flush()?;
    }
}

/// Restores the terminal even when drawing fails or panics.
struct TermGuard;

impl Drop for TermGuard {
    fn drop(&mut self) {
        let _ = terminal::disable_raw_mode();
        let _ = crossterm::execute!(
            std::io::stdout(),
            LeaveAlternateScreen,
            crossterm::cursor::Show
        );
    }
}

fn run_tui(
    opts: &Options,
    rt: &tokio::runtime::Runtime,
    clients: &Clients,
    state: &Arc<Mutex<State>>,
    started: Instant,
) -> Result<()> {
    terminal::enable_raw_mode()?;
    let _guard = TermGuard;
    crossterm::execute!(std::io::stdout(), EnterAlternateScreen)?;
    let mut term = Terminal::new(CrosstermBackend::new(std::io::stdout()))?;
    term.clear()?;
    let burst = std::env::var("DBMAZZ_TOP_BURST_CMD")
        .ok()
        .filter(|c| !c.is_empty());
    loop {
        if let Some(d) = opts.duration {
            if started.elapsed() >= d {
                return Ok(());
            }
        }
        {
            let s = state.lock().expect("state");
            term.draw(|f| draw(f, &s, &opts.grpc, burst.is_some()))?;
        }
        if !event::poll(Duration::from_millis(250))? {
            continue;
        }
        let Event::Key(key) = event::read()? else {
            continue;
        };
        if key.kind != KeyEventKind::Press {
            continue;
        }
        match key.code {
            KeyCode::Char('q') | KeyCode::Esc => return Ok(()),
            KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => return Ok(()),
            KeyCode::Char('p') => {
                let paused = state.lock().expect("state").state == Some(CdcState::Paused);
                state.lock().expect("state").message =
                    if paused { "resuming…" } else { "pausing…" }.into();
                let mut control = clients.control.clone();
                let state = state.clone();
                rt.spawn(async move {
                    let r = if paused {
                        control.resume(ResumeRequest {}).await
                    } else {
                        control.pause(PauseRequest {}).await
                    };
                    let mut s = state.lock().expect("state");
                    match r {
                        Ok(r) => {
                            let r = r.into_inner();
                            s.state = CdcState::try_from(r.state).ok();
                            s.message = r.message;
                        }
                        Err(e) => {
                            s.message = format!(
                                "{}: {}",
                                if paused { "Resume" } else { "Pause" },
                                e.message()
                            )
                        }
                    }
                });
            }
            KeyCode::Char('t') => {
                let msg = match &burst {
                    None => "no burst command: DBMAZZ_TOP_BURST_CMD is not set".to_owned(),
                    Some(cmd) => match std::process::Command::new("sh")
                        .args(["-c", cmd])
                        .stdin(std::process::Stdio::null())
                        .stdout(std::process::Stdio::null())
                        .stderr(std::process::Stdio::null())
                        .spawn()
                    {
                        Ok(mut child) => {
                            // Reap it in the background so no zombie is left.
                            std::thread::spawn(move || child.wait());
                            "traffic burst started".to_owned()
                        }
                        Err(e) => format!("burst failed: {e}"),
                    },
                };
                state.lock().expect("state").message = msg;
            }
            _ => {}
        }
    }
}

fn draw(f: &mut Frame, s: &State, grpc: &str, burst: bool) {
    let m = s.metrics.clone().unwrap_or_default();
    let rows = Layout::default()
        .direction(Direction::Vertical)
        .constraints([
            Constraint::Length(1),
            Constraint::Length(1),
            Constraint::Length(5),
            Constraint::Length(7),
            Constraint::Min(4),
            Constraint::Length(1),
        ])
        .split(f.area());
    draw_header(f, s, grpc, &rows[..2]);
    draw_throughput(f, s, &m, rows[2]);
    draw_lag_and_totals(f, s, &m, rows[3]);
    draw_tables(f, s, &m, rows[4]);
    draw_footer(f, s, burst, rows[5]);
}

/// The title line (address, stage, state, Health) and the error or stage detail under it.
fn draw_header(f: &mut Frame, s: &State, grpc: &str, rows: &[Rect]) {
    let bold = Style::default().add_modifier(Modifier::BOLD);
    let state_color = match s.state {
        Some(CdcState::Running) => Color::Green,
        Some(CdcState::Paused) => Color::Yellow,
        Some(CdcState::Failed) => Color::Red,
        _ => Color::Gray,
    };
    let serving = match s.serving {
        Some(ServingStatus::Serving) => "SERVING",
        Some(ServingStatus::NotServing) => "NOT_SERVING",
        _ => "?",
    };
    let title = Line::from(vec![
        Span::styled(" dbmazz top ", bold.fg(Color::Black).bg(Color::Cyan)),
        Span::raw(format!(" {grpc}  stage ")),
        Span::styled(stage_name(s.stage), bold),
        Span::raw("  state "),
        Span::styled(state_name(s.state), bold.fg(state_color)),
        Span::raw(format!("  {serving}")),
    ]);
    f.render_widget(Paragraph::new(title), rows[0]);

    let error = [&s.conn_error, &s.health_error]
        .into_iter()
        .find(|e| !e.is_empty())
        .map(|e| Span::styled(format!("error: {e}"), Style::default().fg(Color::Red)))
        .unwrap_or_else(|| Span::raw(s.stage_detail.clone()));
    f.render_widget(Paragraph::new(Line::from(error)), rows[1]);
}

/// Events/s, bytes/s and CPU, with the events/s sparkline.
fn draw_throughput(f: &mut Frame, s: &State, m: &MetricsResponse, area: Rect) {
    let tp = Layout::default()
        .direction(Direction::Horizontal)
        .constraints([Constraint::Length(26), Constraint::Min(10)])
        .split(area);
    let rate = Paragraph::new(vec![
        Line::from(format!("events/s {:>12}", si(m.events_per_second))),
        Line::from(format!("bytes/s  {:>12}", bytes(m.bytes_per_second))),
        Line::from(format!("cpu      {:>10} m", m.cpu_millicores)),
    ])
    .block(Block::default().borders(Borders::ALL).title(" throughput "));
    f.render_widget(rate, tp[0]);
    let hist: Vec<u64> = s.events_history.iter().copied().collect();
    let width = tp[1].width.saturating_sub(2) as usize;
    let spark = Sparkline::default()
        .block(Block::default().borders(Borders::ALL).title(" events/s "))
        .data(&hist[hist.len().saturating_sub(width)..])
        .style(Style::default().fg(Color::Cyan));
    f.render_widget(spark, tp[1]);
}

/// Lag in bytes and time, pending changes; totals, memory and the LSNs.
fn draw_lag_and_totals(f: &mut Frame, s: &State, m: &MetricsResponse, area: Rect) {
    let mid = Layout::default()
        .direction(Direction::Horizontal)
        .constraints([Constraint::Percentage(50), Constraint::Percentage(50)])
        .split(area);
    let lag = Paragraph::new(vec![
        Line::from(format!("lag        {:>12}", bytes(m.lag_bytes as f64))),
        Line::from(format!("lag        {:>9} ms", m.replication_lag_ms)),
        Line::from(format!("slot lag   {:>12}", bytes(m.slot_lag_bytes as f64))),
        Line::from(format!("pending    {:>12}", s.pending)),
        Line::from(format!("dead letters {:>10}", m.dead_letters_open)),
    ])
    .block(Block::default().borders(Borders::ALL).title(" lag "));
    f.render_widget(lag, mid[0]);
    let lsn = |t: &str| {
        if t.is_empty() {
            "-".to_owned()
        } else {
            t.to_owned()
        }
    };
    let totals = Paragraph::new(vec![
        Line::from(format!(
            "events {:>9}  batches {:>6}",
            si(m.total_events_processed as f64),
            si(m.total_batches_sent as f64)
        )),
        Line::from(format!(
            "bytes {:>10}  mem {:>10}",
            bytes(m.total_bytes as f64),
            bytes(m.memory_bytes as f64)
        )),
        Line::from(format!("confirmed {}", lsn(&s.confirmed_lsn))),
        Line::from(format!("received  {}", lsn(&s.current_lsn))),
    ])
    .block(Block::default().borders(Borders::ALL).title(" totals "));
    f.render_widget(totals, mid[1]);
}

/// Per-table counters, joined with the live row counts of source and sink.
fn draw_tables(f: &mut Frame, s: &State, m: &MetricsResponse, area: Rect) {
    let bold = Style::default().add_modifier(Modifier::BOLD);
    let mut names: Vec<String> = m.tables.iter().map(|t| t.table.clone()).collect();
    for c in &s.counts {
        if !names.contains(&c.table) {
            names.push(c.table.clone());
        }
    }
    let table_rows: Vec<Row> = names
        .iter()
        .map(|name| {
            let t = m.tables.iter().find(|t| &t.table == name);
            let c = s.counts.iter().find(|c| &c.table == name);
            let (src, snk) = (c.and_then(|c| c.source), c.and_then(|c| c.sink));
            let diff = match (src, snk) {
                (Some(a), Some(b)) => (a as i64 - b as i64).to_string(),
                _ => "-".into(),
            };
            let short = name.strip_prefix("public.").unwrap_or(name).to_owned();
            Row::new(vec![
                Cell::from(short),
                Cell::from(si(t.map_or(0, |t| t.inserts) as f64)),
                Cell::from(si(t.map_or(0, |t| t.updates) as f64)),
                Cell::from(si(t.map_or(0, |t| t.deletes) as f64)),
                Cell::from(count(src)),
                Cell::from(count(snk)),
                Cell::from(diff),
            ])
        })
        .collect();
    let mut title = " tables: changes | live rows source vs sink ".to_owned();
    if !s.counts_error.is_empty() {
        title = format!(" tables (row counts: {}) ", s.counts_error);
    }
    let table = Table::new(
        table_rows,
        [
            Constraint::Length(14),
            Constraint::Length(8),
            Constraint::Length(8),
            Constraint::Length(8),
            Constraint::Length(10),
            Constraint::Length(10),
            Constraint::Length(7),
        ],
    )
    .header(Row::new(vec!["table", "ins", "upd", "del", "source", "sink", "diff"]).style(bold))
    .block(Block::default().borders(Borders::ALL).title(title));
    f.render_widget(table, area);
}

/// The keys, and the last command's message.
fn draw_footer(f: &mut Frame, s: &State, burst: bool, area: Rect) {
    let bold = Style::default().add_modifier(Modifier::BOLD);
    let mut footer = vec![
        Span::styled(" p ", bold.fg(Color::Black).bg(Color::Gray)),
        Span::raw(" pause/resume "),
    ];
    if burst {
        footer.push(Span::styled(" t ", bold.fg(Color::Black).bg(Color::Gray)));
        footer.push(Span::raw(" burst "));
    }
    footer.push(Span::styled(" q ", bold.fg(Color::Black).bg(Color::Gray)));
    footer.push(Span::raw(" quit  "));
    footer.push(Span::styled(
        s.message.clone(),
        Style::default().fg(Color::Yellow),
    ));
    f.render_widget(Paragraph::new(Line::from(footer)), area);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plain_line_shows_refused_rows_once_there_are_any() {
        let mut s = State {
            metrics: Some(MetricsResponse::default()),
            ..Default::default()
        };
        assert!(!summary_line(&s, Duration::ZERO).contains("refused"));
        s.metrics = Some(MetricsResponse {
            rows_rejected: 4,
            dead_letters_open: 3,
            ..Default::default()
        });
        assert!(summary_line(&s, Duration::ZERO).contains("| refused 4 dead letters 3"));
    }
}
