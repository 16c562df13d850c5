//! `dbmazz verify`: compares the source tables with their copies in StarRocks.
//!
//! For each table it compares the number of live rows (sink rows with `dbmazz_is_deleted = true`
//! are soft deletes and do not count) and, key by key, a SHA-256 hash of every source column's
//! value. Values are read as text on both sides and normalized first, so that PostgreSQL's text
//! form and StarRocks' (or the double's) compare equal:
//!
//! | PostgreSQL type | normalized to |
//! |---|---|
//! | `int2`, `int4`, `int8`, `oid` | the integer in decimal |
//! | `numeric` | decimal without a leading `+`, trailing fractional zeros or `-0` (`12.50` = `12.5`) |
//! | `float4`, `float8` | the value rounded to 6 (float4) or 15 (float8) significant digits |
//! | `bool` | `true` / `false` (`t`, `1`, `true` and `f`, `0`, `false`) |
//! | `timestamptz` | UTC `YYYY-MM-DD HH:MM:SS[.f]` without trailing fractional zeros (the session runs in UTC) |
//! | `timestamp` | the same, without a zone |
//! | `json`, `jsonb` | re-serialized compactly with keys sorted |
//! | anything else | the text as is |
//!
//! NULL is distinct from every text. Only the source's columns are compared: the audit columns
//! dbmazz adds in the sink are ignored. Tables are read whole, so this is meant for demos, tests
//! and modest tables, not for comparing billions of rows.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use mysql_async::prelude::Queryable;
use sha2::{Digest, Sha256};

use crate::config::{parse_tables, quote_ident, quote_literal, TableName};
use crate::postgres::conninfo::PgConnInfo;
use crate::postgres::tls::connect_sql;

/// Where to compare.
#[derive(Clone, Debug)]
pub struct Target {
    /// `DATABASE_URL`.
    pub source_url: String,
    /// `STARROCKS_MYSQL_URL`.
    pub sink_mysql_url: String,
    /// `STARROCKS_DB`.
    pub sink_db: String,
    /// `TABLES`.
    pub tables: Vec<TableName>,
}

impl Target {
    /// Builds a target from the daemon's variables; `None` values fall back to the environment.
    pub fn resolve(
        source_url: Option<String>,
        sink_mysql_url: Option<String>,
        sink_db: Option<String>,
        tables: Option<String>,
    ) -> Result<Target> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let source_url = source_url
            .or_else(|| env("DATABASE_URL"))
            .ok_or_else(|| anyhow!("no source: pass --source-url or set DATABASE_URL"))?;
        let sink_mysql_url = sink_mysql_url
            .or_else(|| env("STARROCKS_MYSQL_URL"))
            .ok_or_else(|| anyhow!("no sink: pass --sink-mysql-url or set STARROCKS_MYSQL_URL"))?;
        let sink_db = sink_db
            .or_else(|| env("STARROCKS_DB"))
            .ok_or_else(|| anyhow!("no sink database: pass --sink-db or set STARROCKS_DB"))?;
        let tables = tables
            .or_else(|| env("TABLES"))
            .ok_or_else(|| anyhow!("no tables: pass --tables or set TABLES"))?;
        let tables = parse_tables(&tables).map_err(|e| anyhow!("TABLES: {e}"))?;
        Ok(Target {
            source_url,
            sink_mysql_url,
            sink_db,
            tables,
        })
    }
}

/// Open connections to both sides.
pub struct Conns {
    source: tokio_postgres::Client,
    sink: mysql_async::Conn,
}

impl Conns {
    /// Connects to the source and the sink.
    pub async fn open(target: &Target) -> Result<Conns> {
        let info = PgConnInfo::parse(&target.source_url).context("source URL")?;
        let source = connect_sql(&info)
            .await
            .with_context(|| format!("connect to {}", info.redacted()))?;
        let opts = crate::starrocks::ddl::mysql_opts(&target.sink_mysql_url).ok_or_else(|| {
            anyhow!(
                "the sink MySQL URL is not valid (expected mysql://user:password@fe-host:9030/)"
            )
        })?;
        let sink = mysql_async::Conn::new(opts)
            .await
            .context("connect to the sink's MySQL port")?;
        Ok(Conns { source, sink })
    }
}

/// Live row counts of one table on both sides (`None` where the count failed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Counts {
    /// `schema.table`.
    pub table: String,
    pub source: Option<u64>,
    pub sink: Option<u64>,
}

fn sink_name(db: &str, table: &TableName) -> String {
    format!(
        "`{}`.`{}`",
        db.replace('`', "``"),
        table.name.replace('`', "``")
    )
}

fn sink_ident(col: &str) -> String {
    format!("`{}`", col.replace('`', "``"))
}

/// Counts live rows on both sides.
pub async fn counts(conns: &mut Conns, target: &Target) -> Vec<Counts> {
    let mut out = Vec::new();
    for table in &target.tables {
        let source = conns
            .source
            .query_one(&format!("SELECT count(*) FROM {}", table.quoted()), &[])
            .await
            .ok()
            .map(|r| r.get::<_, i64>(0) as u64);
        let sql = format!(
            "SELECT COUNT(*) FROM {} WHERE dbmazz_is_deleted IS NULL OR dbmazz_is_deleted = 0",
            sink_name(&target.sink_db, table)
        );
        let sink: Option<u64> = conns.sink.query_first::<u64, _>(sql).await.ok().flatten();
        out.push(Counts {
            table: format!("{}.{}", table.schema, table.name),
            source,
            sink,
        });
    }
    out
}

/// How a column's text is normalized.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Int,
    Numeric,
    Float4,
    Float8,
    Bool,
    Timestamp,
    Json,
    Text,
}

impl Kind {
    fn of(typname: &str) -> Kind {
        match typname {
            "int2" | "int4" | "int8" | "oid" => Kind::Int,
            "numeric" => Kind::Numeric,
            "float4" => Kind::Float4,
            "float8" => Kind::Float8,
            "bool" => Kind::Bool,
            "timestamptz" | "timestamp" => Kind::Timestamp,
            "json" | "jsonb" => Kind::Json,
            _ => Kind::Text,
        }
    }
}

/// Normalizes one value's text (see the module documentation).
fn normalize(kind: Kind, text: &str) -> String {
    let t = text.trim();
    match kind {
        Kind::Int => t
            .parse::<i128>()
            .map(|v| v.to_string())
            .unwrap_or_else(|_| t.to_owned()),
        Kind::Numeric => normalize_decimal(t),
        Kind::Float4 | Kind::Float8 => match t.parse::<f64>() {
            Ok(v) if v.is_finite() => {
                let digits = if kind == Kind::Float4 { 5 } else { 14 };
                format!("{v:.digits$e}")
            }
            _ => t.to_ascii_lowercase(),
        },
        Kind::Bool => match t.to_ascii_lowercase().as_str() {
            "t" | "true" | "1" => "true".into(),
            "f" | "false" | "0" => "false".into(),
            other => other.to_owned(),
        },
        Kind::Timestamp => normalize_timestamp(t),
        Kind::Json => serde_json::from_str::<serde_json::Value>(t)
            .map(|v| v.to_string())
            .unwrap_or_else(|_| t.to_owned()),
        Kind::Text => text.to_owned(),
    }
}

fn normalize_decimal(t: &str) -> String {
    let t = t.strip_prefix('+').unwrap_or(t);
    let (neg, digits) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t),
    };
    if !digits.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return t.to_owned();
    }
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let int = int.trim_start_matches('0');
    let frac = frac.trim_end_matches('0');
    let int = if int.is_empty() { "0" } else { int };
    let mut out = String::new();
    if neg && !(int == "0" && frac.is_empty()) {
        out.push('-');
    }
    out.push_str(int);
    if !frac.is_empty() {
        out.push('.');
        out.push_str(frac);
    }
    out
}

fn normalize_timestamp(t: &str) -> String {
    let mut s = t.replacen('T', " ", 1);
    if let Some(rest) = s.strip_suffix('Z') {
        s = rest.to_owned();
    }
    for zone in ["+00:00", "+00"] {
        if let Some(rest) = s.strip_suffix(zone) {
            s = rest.to_owned();
            break;
        }
    }
    if let Some((whole, frac)) = s.split_once('.') {
        let frac = frac.trim_end_matches('0');
        s = if frac.is_empty() {
            whole.to_owned()
        } else {
            format!("{whole}.{frac}")
        };
    }
    s
}

/// One source column.
struct Column {
    name: String,
    kind: Kind,
    /// Position in the primary key, if it is part of it.
    key_pos: Option<i32>,
}

async fn columns(source: &tokio_postgres::Client, table: &TableName) -> Result<Vec<Column>> {
    let sql = format!(
        "SELECT a.attname::text, t.typname::text, array_position(i.indkey::int2[], a.attnum)
           FROM pg_attribute a
           JOIN pg_type t ON t.oid = a.atttypid
           LEFT JOIN pg_index i ON i.indrelid = a.attrelid AND i.indisprimary
          WHERE a.attrelid = {}::regclass AND a.attnum > 0 AND NOT a.attisdropped
          ORDER BY a.attnum",
        quote_literal(&table.quoted())
    );
    let rows = source
        .query(&sql, &[])
        .await
        .with_context(|| format!("read the columns of {}", table.quoted()))?;
    let cols: Vec<Column> = rows
        .iter()
        .map(|r| Column {
            name: r.get(0),
            kind: Kind::of(r.get::<_, &str>(1)),
            key_pos: r.get(2),
        })
        .collect();
    if !cols.iter().any(|c| c.key_pos.is_some()) {
        bail!("{} has no primary key", table.quoted());
    }
    Ok(cols)
}

/// Normalized rows of one side: key text → (row hash, per-column hashes).
type Side = BTreeMap<String, ([u8; 32], Vec<u64>)>;

fn digest_row(cols: &[Column], values: &[Option<&str>]) -> (String, [u8; 32], Vec<u64>) {
    let mut keys: Vec<(i32, String)> = Vec::new();
    let mut row = Sha256::new();
    let mut per_col = Vec::with_capacity(cols.len());
    for (col, value) in cols.iter().zip(values) {
        let norm = value.map(|v| normalize(col.kind, v));
        let mut h = Sha256::new();
        match &norm {
            None => h.update([0u8]),
            Some(v) => {
                h.update([1u8]);
                h.update((v.len() as u64).to_le_bytes());
                h.update(v.as_bytes());
            }
        }
        let d = h.finalize();
        row.update(d);
        per_col.push(u64::from_le_bytes(d[..8].try_into().expect("8 bytes")));
        if let Some(pos) = col.key_pos {
            keys.push((
                pos,
                format!("{}={}", col.name, norm.as_deref().unwrap_or("NULL")),
            ));
        }
    }
    keys.sort();
    let key = keys
        .into_iter()
        .map(|(_, k)| k)
        .collect::<Vec<_>>()
        .join(",");
    (key, row.finalize().into(), per_col)
}

async fn source_side(
    source: &tokio_postgres::Client,
    table: &TableName,
    cols: &[Column],
) -> Result<Side> {
    let list = cols
        .iter()
        .map(|c| quote_ident(&c.name))
        .collect::<Vec<_>>()
        .join(", ");
    let msgs = source
        .simple_query(&format!("SELECT {list} FROM {}", table.quoted()))
        .await
        .with_context(|| format!("read {}", table.quoted()))?;
    let mut side = Side::new();
    for msg in msgs {
        if let tokio_postgres::SimpleQueryMessage::Row(r) = msg {
            let values: Vec<Option<&str>> = (0..cols.len()).map(|i| r.get(i)).collect();
            let (key, hash, per_col) = digest_row(cols, &values);
            side.insert(key, (hash, per_col));
        }
    }
    Ok(side)
}

async fn sink_side(
    sink: &mut mysql_async::Conn,
    db: &str,
    table: &TableName,
    cols: &[Column],
) -> Result<Side> {
    let list = cols
        .iter()
        .map(|c| sink_ident(&c.name))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "SELECT {list}, dbmazz_is_deleted FROM {}",
        sink_name(db, table)
    );
    let rows: Vec<mysql_async::Row> = sink
        .query(sql)
        .await
        .with_context(|| format!("read {} from the sink", sink_name(db, table)))?;
    let mut side = Side::new();
    for r in rows {
        let texts: Vec<Option<String>> = (0..r.len())
            .map(|i| match r.as_ref(i) {
                Some(mysql_async::Value::NULL) | None => None,
                Some(mysql_async::Value::Bytes(b)) => Some(String::from_utf8_lossy(b).into_owned()),
                Some(v) => Some(v.as_sql(true).trim_matches('\'').to_owned()),
            })
            .collect();
        let deleted = matches!(
            texts.last().and_then(|v| v.as_deref()),
            Some("1" | "true" | "TRUE")
        );
        if deleted {
            continue;
        }
        let values: Vec<Option<&str>> = texts[..cols.len()].iter().map(|v| v.as_deref()).collect();
        let (key, hash, per_col) = digest_row(cols, &values);
        side.insert(key, (hash, per_col));
    }
    Ok(side)
}

/// What differs for one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Difference {
    /// The key is live in the source but missing (or soft-deleted) in the sink.
    MissingInSink,
    /// The key is live in the sink but not in the source.
    ExtraInSink,
    /// Both have the key; these columns differ.
    Columns(Vec<String>),
}

/// The comparison of one table.
#[derive(Clone, Debug, Default)]
pub struct TableReport {
    /// `schema.table`.
    pub table: String,
    pub source_rows: u64,
    pub sink_rows: u64,
    /// How many keys differ in total.
    pub differing_keys: u64,
    /// The first differing keys (up to the report limit).
    pub differences: Vec<(String, Difference)>,
    /// Set when the table could not be compared.
    pub error: Option<String>,
}

impl TableReport {
    /// Equal row counts and no differing key.
    pub fn is_equal(&self) -> bool {
        self.error.is_none() && self.differing_keys == 0 && self.source_rows == self.sink_rows
    }
}

/// Compares every table; `limit` caps the differences listed per table.
pub async fn compare(conns: &mut Conns, target: &Target, limit: usize) -> Vec<TableReport> {
    let mut reports = Vec::new();
    for table in &target.tables {
        let mut report = TableReport {
            table: format!("{}.{}", table.schema, table.name),
            ..TableReport::default()
        };
        match compare_table(conns, target, table, limit, &mut report).await {
            Ok(()) => {}
            Err(e) => report.error = Some(format!("{e:#}")),
        }
        reports.push(report);
    }
    reports
}

async fn compare_table(
    conns: &mut Conns,
    target: &Target,
    table: &TableName,
    limit: usize,
    report: &mut TableReport,
) -> Result<()> {
    let cols = columns(&conns.source, table).await?;
    let source = source_side(&conns.source, table, &cols).await?;
    let sink = sink_side(&mut conns.sink, &target.sink_db, table, &cols).await?;
    report.source_rows = source.len() as u64;
    report.sink_rows = sink.len() as u64;
    let mut note = |key: &str, d: Difference| {
        report.differing_keys += 1;
        if report.differences.len() < limit {
            report.differences.push((key.to_owned(), d));
        }
    };
    for (key, (hash, per_col)) in &source {
        match sink.get(key) {
            None => note(key, Difference::MissingInSink),
            Some((h, _)) if h == hash => {}
            Some((_, other)) => {
                let names = cols
                    .iter()
                    .zip(per_col.iter().zip(other))
                    .filter(|(_, (a, b))| a != b)
                    .map(|(c, _)| c.name.clone())
                    .collect();
                note(key, Difference::Columns(names));
            }
        }
    }
    for key in sink.keys() {
        if !source.contains_key(key) {
            note(key, Difference::ExtraInSink);
        }
    }
    Ok(())
}

/// Renders reports as the lines `dbmazz verify` prints.
pub fn render(reports: &[TableReport]) -> String {
    let mut out = String::new();
    for r in reports {
        if let Some(e) = &r.error {
            let _ = writeln!(out, "{}: ERROR {e}", r.table);
            continue;
        }
        let verdict = if r.is_equal() { "OK" } else { "DIFFERENT" };
        let _ = writeln!(
            out,
            "{}: source {} rows, sink {} rows, {} differing keys: {verdict}",
            r.table, r.source_rows, r.sink_rows, r.differing_keys
        );
        for (key, d) in &r.differences {
            let what = match d {
                Difference::MissingInSink => "only in source".to_owned(),
                Difference::ExtraInSink => "only in sink".to_owned(),
                Difference::Columns(c) => format!("differs in {}", c.join(", ")),
            };
            let _ = writeln!(out, "  {}: {key}: {what}", r.table);
        }
        if r.differing_keys > r.differences.len() as u64 {
            let _ = writeln!(
                out,
                "  {}: ... and {} more",
                r.table,
                r.differing_keys - r.differences.len() as u64
            );
        }
    }
    out
}

/// `dbmazz verify`: compares, retrying every second for up to `wait` while they differ. Prints
/// the last comparison; true when everything is equal.
pub async fn run(target: &Target, limit: usize, wait: Duration) -> Result<bool> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut conns = Conns::open(target).await?;
    loop {
        let reports = compare(&mut conns, target, limit).await;
        let equal = reports.iter().all(TableReport::is_equal);
        if equal || tokio::time::Instant::now() >= deadline {
            print!("{}", render(&reports));
            println!(
                "verify: {}",
                if equal {
                    "source and sink are equal"
                } else {
                    "source and sink differ"
                }
            );
            return Ok(equal);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_like_both_sides_print() {
        assert_eq!(
            normalize(Kind::Numeric, "12.50"),
            normalize(Kind::Numeric, "12.5")
        );
        assert_eq!(normalize(Kind::Numeric, "-0.00"), "0");
        assert_eq!(normalize(Kind::Numeric, "007"), "7");
        assert_eq!(normalize(Kind::Bool, "t"), normalize(Kind::Bool, "1"));
        assert_eq!(
            normalize(Kind::Timestamp, "2024-01-02 03:04:05.120+00"),
            normalize(Kind::Timestamp, "2024-01-02T03:04:05.12")
        );
        assert_eq!(
            normalize(Kind::Timestamp, "2024-01-02 03:04:05+00"),
            "2024-01-02 03:04:05"
        );
        assert_eq!(
            normalize(Kind::Json, r#"{"b": 1, "a": [true, null]}"#),
            normalize(Kind::Json, r#"{"a":[true,null],"b":1}"#)
        );
        assert_eq!(
            normalize(Kind::Float8, "0.1"),
            normalize(Kind::Float8, "0.10000000000000001")
        );
        assert_ne!(normalize(Kind::Text, "a "), normalize(Kind::Text, "a"));
    }
}
