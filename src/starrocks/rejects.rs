//! Rows StarRocks rejects: finding exactly which ones, and setting them aside.
//!
//! Why: every load runs with `strict_mode: true` and `max_filter_ratio: 0`, so a row StarRocks
//! cannot take (a value that does not convert, a string longer than its column, a NULL in a
//! NOT NULL column) fails its whole load and nothing of it is applied; no value silently turns
//! into NULL and no row is silently filtered. The load's error log names the reasons, but its
//! row text is StarRocks' own rendering and it keeps only the first rows, so it cannot say
//! reliably which of the body's rows were refused. The sink therefore isolates them itself:
//!
//! ```text
//! load of n rows rejected ─▶ split the body's records in halves ─▶ load each half
//!                               ▲                                   │ committed: done
//!                               └──── rejected and more than 1 ─────┤
//!                                     rejected and exactly 1 ───────┴▶ a refused row; its own
//!                                                                       error log gives the reason
//! ```
//!
//! k refused rows among n cost about 2·k·log2(n) extra loads, paid only when something is
//! rejected. Each part is loaded under a label derived from the load's label and the part's
//! place in the body, so the same body always splits into the same labelled parts, and a retry
//! after an ambiguous failure finds the parts that committed already.
//!
//! What happens to the refused rows is `ON_REJECT`'s choice: `stop` ends the job naming each
//! row's key, reason and values; `dead_letter` writes each one to [`DEAD_LETTER_TABLE`] in the
//! target database and the job goes on. A dead letter is keyed by slot, source table and row
//! key, so a row refused again updates its letter (`last_seen`, reason, version) and keeps its
//! `first_seen`. It is written before the batch counts as durable, so no refused row is ever
//! dropped without its letter.

use std::collections::HashMap;
use std::ops::Range;

use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use crate::config::StarRocksConfig;
use crate::starrocks::ddl::{ident, literal, Ddl, DdlError};
pub use crate::starrocks::stream_load::Rejection;
use crate::starrocks::stream_load::{self, LoadOutcome, LoadRequest, StreamLoader};

/// The dead-letter table, in `STARROCKS_DB`.
pub const DEAD_LETTER_TABLE: &str = "dbmazz_dead_letters";

/// Longest row text kept in a dead letter (StarRocks' largest VARCHAR is 1 MiB).
const ROW_TEXT_MAX: usize = 1_000_000;

/// Longest reason kept.
const REASON_MAX: usize = 4_000;

/// How a load body holds its rows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BodyFormat {
    /// `[{...},{...}]`.
    Json,
    /// Tab-separated lines, one per row, fields named by the `columns` header.
    Csv {
        /// The header's column names, unquoted.
        columns: Vec<String>,
    },
}

impl BodyFormat {
    /// The format of a body sent with `csv_columns` as its `columns` header (`None`: JSON).
    pub fn of(csv_columns: Option<&str>) -> BodyFormat {
        match csv_columns {
            None => BodyFormat::Json,
            Some(header) => BodyFormat::Csv {
                columns: split_header(header),
            },
        }
    }
}

/// A body could not be split into its rows (it is dbmazz's own encoding, so this is a bug).
#[derive(Debug, thiserror::Error)]
#[error("cannot split a rejected load's body into rows: {0}")]
pub struct SplitError(String);

/// The byte ranges of the rows of `body`, in order.
pub fn records(body: &[u8], format: &BodyFormat) -> Result<Vec<Range<usize>>, SplitError> {
    match format {
        BodyFormat::Json => {
            let rows: Vec<&RawValue> =
                serde_json::from_slice(body).map_err(|e| SplitError(e.to_string()))?;
            let base = body.as_ptr() as usize;
            Ok(rows
                .iter()
                .map(|r| {
                    let start = r.get().as_ptr() as usize - base;
                    start..start + r.get().len()
                })
                .collect())
        }
        BodyFormat::Csv { .. } => {
            let mut out = Vec::new();
            let mut start = 0;
            for end in memchr::memchr_iter(b'\n', body) {
                if end > start {
                    out.push(start..end);
                }
                start = end + 1;
            }
            if start < body.len() {
                out.push(start..body.len());
            }
            Ok(out)
        }
    }
}

/// A body holding only the rows at `ranges` of `body`.
pub fn sub_body(body: &[u8], ranges: &[Range<usize>], format: &BodyFormat) -> Vec<u8> {
    let mut out = Vec::with_capacity(ranges.iter().map(|r| r.len() + 1).sum::<usize>() + 2);
    match format {
        BodyFormat::Json => {
            out.push(b'[');
            for (i, r) in ranges.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(&body[r.clone()]);
            }
            out.push(b']');
        }
        BodyFormat::Csv { .. } => {
            for r in ranges {
                out.extend_from_slice(&body[r.clone()]);
                out.push(b'\n');
            }
        }
    }
    out
}

/// The label of the part `first..first + len` of the rows of the load labelled `label`:
/// deterministic, distinct per part, and within StarRocks' 128 characters.
pub fn part_label(label: &str, first: usize, len: usize) -> String {
    let mut h = Sha256::new();
    h.update(label.as_bytes());
    h.update((first as u64).to_le_bytes());
    h.update((len as u64).to_le_bytes());
    let digest = h.finalize();
    let prefix: String = label.chars().take(100).collect();
    format!("{prefix}_p{:x}", u64_prefix(&digest))
}

fn u64_prefix(digest: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(b)
}

/// What isolating the refused rows of a load found.
#[derive(Debug, Default)]
pub struct Isolated {
    /// The refused rows.
    pub refused: Vec<Refused>,
    /// Parts that committed.
    pub parts_loaded: u64,
    /// A part that failed otherwise than by a rejection (its outcome, label and rows): the
    /// isolation stopped there, and the caller decides (retry the batch, or stop).
    pub failed: Option<(LoadOutcome, String, usize)>,
}

/// Rows `first..first + len` of a rejected load, still to be loaded or split.
struct Part {
    first: usize,
    len: usize,
    /// How the part was rejected, when it is known to be.
    rejection: Option<Rejection>,
}

/// Loads every row of the rejected load `meta` (`body`, rejected as `rejection` says) that
/// StarRocks takes, in parts, and returns the rows it refuses, each with its reason.
/// `table` names the source table, `key_names` the target's key columns; `snapshot` says the
/// rows are copied ones.
#[allow(clippy::too_many_arguments)]
pub async fn isolate(
    loader: &StreamLoader,
    cfg: &std::sync::Arc<StarRocksConfig>,
    meta: &LoadRequest,
    body: &[u8],
    table: &str,
    key_names: &[String],
    snapshot: bool,
    rejection: Rejection,
) -> Isolated {
    let mut out = Isolated::default();
    let format = BodyFormat::of(meta.csv_columns.as_deref());
    let records = match records(body, &format) {
        Ok(r) => r,
        Err(e) => {
            out.failed = Some((LoadOutcome::Definite(e.to_string()), meta.label.clone(), 0));
            return out;
        }
    };
    tracing::warn!(
        table,
        label = %meta.label,
        rows = records.len(),
        error = %rejection.message,
        "StarRocks rejected a load; loading its rows in parts to find the refused ones"
    );
    let mut todo = vec![Part {
        first: 0,
        len: records.len(),
        rejection: Some(rejection),
    }];
    while let Some(Part {
        first,
        len,
        rejection: known,
    }) = todo.pop()
    {
        let label = part_label(&meta.label, first, len);
        let rejection = match known {
            Some(r) => r,
            None => {
                let req = LoadRequest {
                    label: label.clone(),
                    body: sub_body(body, &records[first..first + len], &format).into(),
                    ..meta.clone()
                };
                match loader.load(req).await.0 {
                    LoadOutcome::Committed { .. } => {
                        out.parts_loaded += 1;
                        continue;
                    }
                    LoadOutcome::Rejected(r) => r,
                    other => {
                        out.failed = Some((other, label, len));
                        return out;
                    }
                }
            }
        };
        // Every row of the part refused (a target that no row fits, say): no need to split
        // it further; each row takes its reason from the part's error log.
        if len > 1 && !rejection.all {
            let half = len / 2;
            todo.push(Part {
                first: first + half,
                len: len - half,
                rejection: None,
            });
            todo.push(Part {
                first,
                len: half,
                rejection: None,
            });
            continue;
        }
        let reasons = match &rejection.error_url {
            Some(url) => read_reasons(cfg, url).await.unwrap_or_else(|e| {
                vec![format!(
                    "{} (its error log {url} could not be read: {e})",
                    rejection.message
                )]
            }),
            None => vec![rejection.message.clone()],
        };
        for i in 0..len {
            // The log lists the refused rows in order; when it holds fewer lines than the part
            // has rows (StarRocks keeps only the first ones), the first reason stands for all.
            let reason = if reasons.len() == len {
                reasons[i].clone()
            } else if len == 1 {
                reasons.first().cloned().unwrap_or_default()
            } else {
                format!(
                    "{} (every row of its load of {len} was refused)",
                    reasons.first().cloned().unwrap_or_default()
                )
            };
            let (key, row, op, version) = describe(
                &body[records[first + i].clone()],
                &format,
                key_names,
                snapshot,
            );
            out.refused.push(Refused {
                table: table.to_owned(),
                key,
                row,
                op,
                version,
                reason,
                label: if records.len() == len {
                    meta.label.clone()
                } else {
                    label.clone()
                },
            });
        }
    }
    tracing::info!(
        table,
        refused = out.refused.len(),
        parts_loaded = out.parts_loaded,
        "isolated the rows StarRocks refuses; every other row of the load is loaded"
    );
    out
}

/// The reasons in the error log at `url`, one per refused row.
async fn read_reasons(
    cfg: &std::sync::Arc<StarRocksConfig>,
    url: &str,
) -> Result<Vec<String>, String> {
    let cfg = cfg.clone();
    let url = url.to_owned();
    let log = tokio::task::spawn_blocking(move || stream_load::error_log(&cfg, &url))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let reasons = reasons_from_error_log(&log);
    if reasons.is_empty() {
        return Err("it is empty".to_owned());
    }
    Ok(reasons)
}

/// The reasons in a BE error log, one per line: without the `Error: ` prefix and the row
/// StarRocks appends after `. Row: `.
pub fn reasons_from_error_log(log: &str) -> Vec<String> {
    log.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|line| {
            let line = line.strip_prefix("Error: ").unwrap_or(line);
            let reason = match line.find(". Row: ") {
                Some(i) => &line[..i],
                None => line,
            };
            clip(reason, REASON_MAX)
        })
        .collect()
}

/// One refused row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused {
    /// `schema.table` in PostgreSQL.
    pub table: String,
    /// The key as a JSON object (target column names).
    pub key: String,
    /// The row as sent, as a JSON object.
    pub row: String,
    /// `insert`, `update`, `delete` or `snapshot`.
    pub op: &'static str,
    /// `dbmazz_cdc_version` of the row.
    pub version: u64,
    /// Why StarRocks refused it.
    pub reason: String,
    /// The label of the load that refused it alone.
    pub label: String,
}

/// The key, row text, operation and version of one record of a body.
pub fn describe(
    record: &[u8],
    format: &BodyFormat,
    key_names: &[String],
    snapshot: bool,
) -> (String, String, &'static str, u64) {
    let fields: Vec<(String, String)> = match format {
        BodyFormat::Json => {
            serde_json::from_slice::<std::collections::BTreeMap<String, &RawValue>>(record)
                .map(|m| {
                    m.into_iter()
                        .map(|(k, raw)| (k, raw.get().to_owned()))
                        .collect()
                })
                .unwrap_or_default()
        }
        BodyFormat::Csv { columns } => columns
            .iter()
            .zip(record.split(|b| *b == b'\t'))
            .map(|(name, field)| {
                let json = if field == b"\\N" {
                    "null".to_owned()
                } else {
                    serde_json::Value::String(String::from_utf8_lossy(field).into_owned())
                        .to_string()
                };
                (name.clone(), json)
            })
            .collect(),
    };
    let get = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| v);
    let object = |pairs: Vec<(&String, &String)>| {
        let mut s = String::from("{");
        for (i, (k, v)) in pairs.into_iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            s.push_str(&serde_json::Value::String(k.clone()).to_string());
            s.push(':');
            s.push_str(v);
        }
        s.push('}');
        s
    };
    // Key values are written as JSON strings of their text (or null), whatever the body's
    // format, so that one key always reads the same (and gets the same letter).
    let key_values: Vec<(&String, String)> = key_names
        .iter()
        .filter_map(|k| fields.iter().find(|(n, _)| n == k))
        .map(|(n, v)| (n, canonical_key_value(v)))
        .collect();
    let key = object(key_values.iter().map(|(n, v)| (*n, v)).collect());
    let row = match format {
        BodyFormat::Json => String::from_utf8_lossy(record).into_owned(),
        BodyFormat::Csv { .. } => object(fields.iter().map(|(k, v)| (k, v)).collect()),
    };
    let version = get("dbmazz_cdc_version")
        .and_then(|v| v.trim_matches('"').parse::<u64>().ok())
        .unwrap_or(0);
    let deleted = get("dbmazz_is_deleted").is_some_and(|v| v == "true" || v == "1" || v == "\"1\"");
    let op = if snapshot {
        "snapshot"
    } else if deleted {
        "delete"
    } else {
        match get("dbmazz_op_type").map(|v| v.trim_matches('"')) {
            Some("1") => "update",
            Some("2") => "delete",
            _ => "insert",
        }
    };
    (key, row, op, version)
}

/// A key value (raw JSON) as a JSON string of its text: `13` → `"13"`, `"a"` stays.
fn canonical_key_value(raw: &str) -> String {
    let raw = raw.trim();
    if raw.starts_with('"') || raw == "null" {
        raw.to_owned()
    } else {
        serde_json::Value::String(raw.to_owned()).to_string()
    }
}

/// The column names of a `columns` header (names may be backquoted, with `` ` `` doubled).
fn split_header(header: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = header.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '`' if quoted && chars.peek() == Some(&'`') => {
                chars.next();
                cur.push('`');
            }
            '`' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    out
}

/// `s` cut to at most `max` bytes on a character boundary, saying how much was cut.
pub fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes in all)", &s[..end], s.len())
}

/// Reading or writing the dead letters failed.
#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    /// The table could not be created or read.
    #[error(
        "cannot create or read {db}.{DEAD_LETTER_TABLE}, where dbmazz sets aside the rows \
         StarRocks rejects (ON_REJECT=dead_letter): {source}; grant CREATE TABLE, SELECT and \
         INSERT on database {db} to the StarRocks user, or set ON_REJECT=stop"
    )]
    Open {
        /// Target database.
        db: String,
        /// Cause.
        source: DdlError,
    },
    /// Writing letters failed; the batch is retried (its refused rows are found again).
    #[error(
        "writing {count} dead letter(s) of table {table} to {db}.{DEAD_LETTER_TABLE} failed: \
         {source}; the batch is retried and nothing is confirmed until they are written"
    )]
    Write {
        /// Target database.
        db: String,
        /// Source table.
        table: String,
        /// Letters in the write.
        count: usize,
        /// Cause.
        source: DdlError,
    },
}

impl DeadLetterError {
    /// Whether trying again may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            DeadLetterError::Open { source, .. } | DeadLetterError::Write { source, .. } => {
                source.is_transient()
            }
        }
    }
}

/// One row of [`DEAD_LETTER_TABLE`].
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct DeadLetter {
    /// Hex digest of slot, table and key.
    pub id: String,
    /// `schema.table` in PostgreSQL.
    pub source_table: String,
    /// The key as a JSON object.
    pub key: String,
    /// The row as sent.
    pub row: String,
    /// `insert`, `update`, `delete` or `snapshot`.
    pub op: String,
    /// `dbmazz_cdc_version` of the refused row.
    pub version: u64,
    /// Why it was refused (or why its replay failed).
    pub reason: String,
    /// Label of the load that refused it.
    pub label: String,
    /// `open` or `resolved`.
    pub status: String,
    /// When it was first refused.
    pub first_seen: String,
    /// When it was last refused.
    pub last_seen: String,
    /// When a replay loaded it.
    pub resolved_at: Option<String>,
}

/// Which letters to list or replay.
#[derive(Clone, Debug, Default)]
pub struct LetterFilter {
    /// Source tables (`schema.table`); empty: all.
    pub tables: Vec<String>,
    /// Keys as `row_key` holds them; empty: all.
    pub keys: Vec<String>,
    /// `open` or `resolved`; `None`: both.
    pub status: Option<String>,
    /// Most letters listed.
    pub limit: u32,
}

/// The id of the letter of `key` in `table` for `slot`.
pub fn letter_id(slot: &str, table: &str, key: &str) -> String {
    let mut h = Sha256::new();
    for part in [slot, table, key] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    let digest = h.finalize();
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// Letters written per `INSERT`.
const INSERT_CHUNK: usize = 200;

const COLUMNS: &str = "id, slot_name, source_table, row_key, row_data, op, dbmazz_cdc_version, \
                       reason, label, status, first_seen, last_seen, resolved_at";

/// The dead letters of one slot in the target database.
pub struct DeadLetters {
    slot: String,
}

impl DeadLetters {
    /// Creates the table when it does not exist.
    pub async fn open(
        ddl: &Ddl,
        slot: &str,
        replication_num: Option<u32>,
    ) -> Result<DeadLetters, DeadLetterError> {
        let replicas = replication_num
            .map(|n| format!(" PROPERTIES(\"replication_num\" = \"{n}\")"))
            .unwrap_or_default();
        let sql = format!(
            "CREATE TABLE IF NOT EXISTS {}.{} (id VARCHAR(64) NOT NULL, \
             slot_name VARCHAR(128) NOT NULL, source_table VARCHAR(256) NOT NULL, \
             row_key VARCHAR(65533) NOT NULL, row_data VARCHAR(1048576) NULL, \
             op VARCHAR(16) NOT NULL, dbmazz_cdc_version BIGINT NOT NULL, \
             reason VARCHAR(65533) NOT NULL, label VARCHAR(128) NOT NULL, \
             status VARCHAR(16) NOT NULL, first_seen DATETIME NOT NULL, \
             last_seen DATETIME NOT NULL, resolved_at DATETIME NULL) \
             PRIMARY KEY(id) DISTRIBUTED BY HASH(id){replicas}",
            ident(ddl.db()),
            ident(DEAD_LETTER_TABLE),
        );
        ddl.exec(&format!("CREATE TABLE '{DEAD_LETTER_TABLE}'"), &sql)
            .await
            .map_err(|source| DeadLetterError::Open {
                db: ddl.db().to_owned(),
                source,
            })?;
        Ok(DeadLetters {
            slot: slot.to_owned(),
        })
    }

    /// The letters of `slot`, without creating the table.
    pub fn for_slot(slot: &str) -> DeadLetters {
        DeadLetters {
            slot: slot.to_owned(),
        }
    }

    /// The slot whose letters these are.
    pub fn slot(&self) -> &str {
        &self.slot
    }

    /// Writes (or refreshes) the letters of `refused`, all of one table, at `now`.
    pub async fn write(
        &self,
        ddl: &Ddl,
        refused: &[Refused],
        now: &str,
    ) -> Result<(), DeadLetterError> {
        let Some(first) = refused.first() else {
            return Ok(());
        };
        let err = |source| DeadLetterError::Write {
            db: ddl.db().to_owned(),
            table: first.table.clone(),
            count: refused.len(),
            source,
        };
        for chunk in refused.chunks(INSERT_CHUNK) {
            let ids: Vec<String> = chunk
                .iter()
                .map(|r| letter_id(&self.slot, &r.table, &r.key))
                .collect();
            let seen = self.first_seen(ddl, &ids).await.map_err(err)?;
            let mut sql = format!(
                "INSERT INTO {}.{} ({COLUMNS}) VALUES ",
                ident(ddl.db()),
                ident(DEAD_LETTER_TABLE)
            );
            for (i, (r, id)) in chunk.iter().zip(&ids).enumerate() {
                if i > 0 {
                    sql.push(',');
                }
                let first_seen = seen.get(id).map_or(now, String::as_str);
                sql.push_str(&format!(
                    "({}, {}, {}, {}, {}, {}, {}, {}, {}, 'open', {}, {}, NULL)",
                    literal(id),
                    literal(&self.slot),
                    literal(&r.table),
                    literal(&clip(&r.key, 60_000)),
                    literal(&clip(&r.row, ROW_TEXT_MAX)),
                    literal(r.op),
                    r.version.min(i64::MAX as u64),
                    literal(&clip(&r.reason, REASON_MAX)),
                    literal(&r.label),
                    literal(first_seen),
                    literal(now),
                ));
            }
            ddl.exec(&format!("write to '{DEAD_LETTER_TABLE}'"), &sql)
                .await
                .map_err(err)?;
        }
        Ok(())
    }

    /// How many letters of the slot are open.
    pub async fn count_open(&self, ddl: &Ddl) -> Result<u64, DdlError> {
        let rows = ddl
            .rows(
                &format!("count of '{DEAD_LETTER_TABLE}'"),
                &format!(
                    "SELECT COUNT(*) FROM {}.{} WHERE slot_name = {} AND status = 'open'",
                    ident(ddl.db()),
                    ident(DEAD_LETTER_TABLE),
                    literal(&self.slot)
                ),
            )
            .await?;
        Ok(rows
            .first()
            .and_then(|r| r.get::<Option<String>, _>(0).flatten())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0))
    }

    /// The letters of the slot that `filter` selects, newest first, and how many it selects
    /// in all (`filter.limit` bounds only the list).
    pub async fn list(
        &self,
        ddl: &Ddl,
        filter: &LetterFilter,
    ) -> Result<(Vec<DeadLetter>, u64), DdlError> {
        let mut cond = format!("slot_name = {}", literal(&self.slot));
        let any_of = |col: &str, values: &[String]| {
            let list: Vec<String> = values.iter().map(|v| literal(v)).collect();
            format!(" AND {col} IN ({})", list.join(", "))
        };
        if !filter.tables.is_empty() {
            cond.push_str(&any_of("source_table", &filter.tables));
        }
        if !filter.keys.is_empty() {
            cond.push_str(&any_of("row_key", &filter.keys));
        }
        if let Some(status) = &filter.status {
            cond.push_str(&format!(" AND status = {}", literal(status)));
        }
        let table = format!("{}.{}", ident(ddl.db()), ident(DEAD_LETTER_TABLE));
        let total = ddl
            .rows(
                &format!("count of '{DEAD_LETTER_TABLE}'"),
                &format!("SELECT COUNT(*) FROM {table} WHERE {cond}"),
            )
            .await?
            .first()
            .and_then(|r| r.get::<Option<String>, _>(0).flatten())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let rows = ddl
            .rows(
                &format!("read of '{DEAD_LETTER_TABLE}'"),
                &format!(
                    "SELECT id, source_table, row_key, row_data, op, dbmazz_cdc_version, reason, \
                     label, status, first_seen, last_seen, resolved_at FROM {table} WHERE {cond} \
                     ORDER BY last_seen DESC, id LIMIT {}",
                    filter.limit.max(1)
                ),
            )
            .await?;
        let letters = rows
            .into_iter()
            .map(|r| {
                let text = |i: usize| r.get::<Option<String>, _>(i).flatten();
                DeadLetter {
                    id: text(0).unwrap_or_default(),
                    source_table: text(1).unwrap_or_default(),
                    key: text(2).unwrap_or_default(),
                    row: text(3).unwrap_or_default(),
                    op: text(4).unwrap_or_default(),
                    version: text(5).and_then(|v| v.parse().ok()).unwrap_or(0),
                    reason: text(6).unwrap_or_default(),
                    label: text(7).unwrap_or_default(),
                    status: text(8).unwrap_or_default(),
                    first_seen: text(9).unwrap_or_default(),
                    last_seen: text(10).unwrap_or_default(),
                    resolved_at: text(11),
                }
            })
            .collect();
        Ok((letters, total))
    }

    /// Writes `letters` back as they are (a replay's outcome: resolved, or a new reason).
    pub async fn update(&self, ddl: &Ddl, letters: &[DeadLetter]) -> Result<(), DdlError> {
        for chunk in letters.chunks(INSERT_CHUNK) {
            let mut sql = format!(
                "INSERT INTO {}.{} ({COLUMNS}) VALUES ",
                ident(ddl.db()),
                ident(DEAD_LETTER_TABLE)
            );
            for (i, l) in chunk.iter().enumerate() {
                if i > 0 {
                    sql.push(',');
                }
                sql.push_str(&format!(
                    "({}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {})",
                    literal(&l.id),
                    literal(&self.slot),
                    literal(&l.source_table),
                    literal(&l.key),
                    literal(&l.row),
                    literal(&l.op),
                    l.version.min(i64::MAX as u64),
                    literal(&clip(&l.reason, REASON_MAX)),
                    literal(&l.label),
                    literal(&l.status),
                    literal(&l.first_seen),
                    literal(&l.last_seen),
                    l.resolved_at.as_deref().map_or("NULL".to_owned(), literal),
                ));
            }
            ddl.exec(&format!("update of '{DEAD_LETTER_TABLE}'"), &sql)
                .await?;
        }
        Ok(())
    }

    /// `first_seen` of the letters among `ids` that exist.
    async fn first_seen(
        &self,
        ddl: &Ddl,
        ids: &[String],
    ) -> Result<HashMap<String, String>, DdlError> {
        let list: Vec<String> = ids.iter().map(|i| literal(i)).collect();
        let rows = ddl
            .rows(
                &format!("read of '{DEAD_LETTER_TABLE}'"),
                &format!(
                    "SELECT id, first_seen FROM {}.{} WHERE id IN ({})",
                    ident(ddl.db()),
                    ident(DEAD_LETTER_TABLE),
                    list.join(", ")
                ),
            )
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|r| {
                let id = r.get::<Option<String>, _>(0).flatten()?;
                let seen = r.get::<Option<String>, _>(1).flatten()?;
                Some((id, seen))
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_bodies_split_into_their_objects_and_back() {
        let body = br#"[{"id":1,"s":"a,}]"},{"id":2,"s":"\"{"},{"id":3,"a":[1,{"x":2}]}]"#;
        let recs = records(body, &BodyFormat::Json).unwrap();
        assert_eq!(recs.len(), 3);
        assert_eq!(&body[recs[1].clone()], br#"{"id":2,"s":"\"{"}"#);
        let sub = sub_body(body, &recs[1..], &BodyFormat::Json);
        assert_eq!(
            sub,
            br#"[{"id":2,"s":"\"{"},{"id":3,"a":[1,{"x":2}]}]"#.to_vec()
        );
        assert!(records(b"[{", &BodyFormat::Json).is_err());
    }

    #[test]
    fn csv_bodies_split_into_lines() {
        let f = BodyFormat::of(Some("id,`we,ird`,dbmazz_cdc_version"));
        assert_eq!(
            f,
            BodyFormat::Csv {
                columns: vec!["id".into(), "we,ird".into(), "dbmazz_cdc_version".into()]
            }
        );
        let body = b"1\ta\t7\n2\t\\N\t7\n";
        let recs = records(body, &f).unwrap();
        assert_eq!(recs, vec![0..5, 6..12]);
        assert_eq!(sub_body(body, &recs[1..], &f), b"2\t\\N\t7\n".to_vec());
        let (key, row, op, version) = describe(&body[recs[1].clone()], &f, &["id".into()], true);
        assert_eq!(key, r#"{"id":"2"}"#);
        assert_eq!(row, r#"{"id":"2","we,ird":null,"dbmazz_cdc_version":"7"}"#);
        assert_eq!((op, version), ("snapshot", 7));
    }

    #[test]
    fn json_records_give_key_op_and_version() {
        let rec = br#"{"b":"x","a":5,"dbmazz_op_type":1,"dbmazz_is_deleted":false,"dbmazz_cdc_version":42}"#;
        let (key, row, op, version) =
            describe(rec, &BodyFormat::Json, &["a".into(), "b".into()], false);
        assert_eq!(key, r#"{"a":"5","b":"x"}"#);
        assert_eq!(row.as_bytes(), rec);
        assert_eq!((op, version), ("update", 42));
        let del = br#"{"a":5,"dbmazz_op_type":2,"dbmazz_is_deleted":true,"dbmazz_cdc_version":43}"#;
        assert_eq!(describe(del, &BodyFormat::Json, &[], false).2, "delete");
    }

    #[test]
    fn part_labels_are_distinct_deterministic_and_bounded() {
        let base = "x".repeat(128);
        let a = part_label(&base, 0, 4);
        assert_eq!(a, part_label(&base, 0, 4));
        assert_ne!(a, part_label(&base, 4, 4));
        assert_ne!(a, part_label(&base, 0, 2));
        assert!(a.len() <= 128, "{}", a.len());
        assert_ne!(part_label("l1", 0, 1), part_label("l2", 0, 1));
    }

    #[test]
    fn error_log_reasons_drop_the_row() {
        assert_eq!(
            reasons_from_error_log(
                "Error: Value too long, column=s. Row: {\"s\":\"xx\"}\n\nError: other\n"
            ),
            vec!["Value too long, column=s".to_owned(), "other".to_owned()]
        );
        assert!(reasons_from_error_log("\n").is_empty());
        assert!(clip(&"é".repeat(10), 5).starts_with("éé…"));
    }

    #[test]
    fn letter_ids_separate_their_parts() {
        assert_ne!(letter_id("s", "a.b", "{}"), letter_id("s", "a", ".b{}"));
        assert_eq!(letter_id("s", "t", "k").len(), 32);
    }
}
