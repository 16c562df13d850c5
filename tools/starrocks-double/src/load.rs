//! One Stream Load: its headers, its body, and the rows it turns into.
//!
//! Why split from the HTTP code: StarRocks decides a load in phases, and the client-visible
//! behaviour depends on which phase rejects it (header failures arrive before `100 Continue`
//! and leave no label; plan failures abort the label; data failures count filtered rows).
//!
//! ```text
//! headers ──LoadOptions::from_headers──▶ (begin txn: label) ──plan()──▶ LoadPlan
//! body ─────decode()──▶ rows in order ─▶ RowOp (converted) | Rejected (reason + row text)
//! ```

use serde::Serialize;
use serde_json::Value as Json;

use crate::catalog::TableDef;
use crate::store::{ApplyMode, Op, RowOp};
use crate::types::{Cell, ConvError, SrType};

/// `streaming_load_max_batch_size_mb`: the JSON body limit without `ignore_json_size`.
pub const JSON_MAX_BYTES: u64 = 100 * 1024 * 1024;
/// How many rejected rows an error log keeps.
const ERROR_LOG_MAX_ROWS: usize = 1000;

/// Body format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Json,
}

/// A load's options, read from its headers.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub format: Format,
    pub label: Option<String>,
    pub strip_outer_array: bool,
    pub columns: Option<Vec<ColumnSpec>>,
    pub partial_update: bool,
    pub merge_condition: Option<String>,
    pub max_filter_ratio: f64,
    pub strict_mode: bool,
    pub timeout_s: u64,
    pub column_separator: Vec<u8>,
    pub row_delimiter: Vec<u8>,
    pub skip_header: usize,
    /// The body is gzip-compressed (`compression: gzip` or `Content-Encoding: gzip`, JSON only,
    /// as StarRocks accepts from 3.2.7).
    pub gzip: bool,
    /// DATETIME keeps microseconds (StarRocks 3.3.5+); below, the fraction is cut off.
    pub datetime_micros: bool,
}

/// One entry of the `columns` header.
#[derive(Debug, Clone, PartialEq)]
pub enum ColumnSpec {
    /// A source field named like a table column (or `__op`).
    Name(String),
    /// `target = source_field` or `target = 'constant'`.
    Assign { target: String, value: AssignValue },
}

/// The right side of a `columns` assignment.
#[derive(Debug, Clone, PartialEq)]
pub enum AssignValue {
    Source(String),
    Const(String),
}

/// Reads a header by (case-insensitive) name.
pub trait HeaderSource {
    fn header(&self, name: &str) -> Option<&str>;
}

/// What the header phase can say before the body is read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct HeaderError(pub String);

fn parse_bool(v: Option<&str>, what: &str) -> Result<bool, HeaderError> {
    match v {
        None => Ok(false),
        Some(s) if s.trim().eq_ignore_ascii_case("true") => Ok(true),
        Some(s) if s.trim().eq_ignore_ascii_case("false") => Ok(false),
        Some(_) => Err(HeaderError(format!(
            "Invalid {what} format. Must be bool type"
        ))),
    }
}

/// `\x01`-style hex escapes, as the CSV separator headers allow.
fn unescape_separator(s: &str) -> Vec<u8> {
    let lower = s.to_ascii_lowercase();
    if let Some(hex) = lower.strip_prefix("\\x") {
        let bytes: Option<Vec<u8>> = (0..hex.len())
            .step_by(2)
            .map(|i| {
                hex.get(i..i + 2)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
            })
            .collect();
        if let Some(b) = bytes {
            if !b.is_empty() {
                return b;
            }
        }
    }
    match s {
        "\\t" => b"\t".to_vec(),
        "\\n" => b"\n".to_vec(),
        _ => s.as_bytes().to_vec(),
    }
}

/// Whether a label matches `^[-_A-Za-z0-9]{1,128}$`.
pub fn label_is_valid(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= 128
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Parses the `columns` header: `a, b, c = d, __op = 'delete'`, names may be backticked.
pub fn parse_columns(s: &str) -> Result<Vec<ColumnSpec>, HeaderError> {
    let toks =
        crate::sql::lex(s).map_err(|e| HeaderError(format!("Invalid columns header: {e}")))?;
    let mut out = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        let Some(name) = toks[i].ident() else {
            return Err(HeaderError(format!(
                "Invalid columns header near '{}'",
                toks[i].text()
            )));
        };
        let name = name.to_owned();
        i += 1;
        if toks.get(i).is_some_and(|t| t.is_sym("=")) {
            i += 1;
            let value = match toks.get(i).map(|t| &t.tok) {
                Some(crate::sql::Tok::Str(v)) | Some(crate::sql::Tok::Num(v)) => {
                    AssignValue::Const(v.clone())
                }
                Some(crate::sql::Tok::Word(v)) | Some(crate::sql::Tok::Quoted(v)) => {
                    if toks.get(i + 1).is_some_and(|t| t.is_sym("(")) {
                        return Err(HeaderError(format!(
                            "column expression '{v}(...)' in the columns header is not supported by starrocks-double"
                        )));
                    }
                    AssignValue::Source(v.clone())
                }
                _ => return Err(HeaderError(format!("Invalid columns header near '{name}'"))),
            };
            i += 1;
            out.push(ColumnSpec::Assign {
                target: name,
                value,
            });
        } else {
            out.push(ColumnSpec::Name(name));
        }
        match toks.get(i) {
            None => break,
            Some(t) if t.is_sym(",") => i += 1,
            Some(t) => {
                return Err(HeaderError(format!(
                    "column expression near '{}' in the columns header is not supported by starrocks-double",
                    t.text()
                )))
            }
        }
    }
    Ok(out)
}

impl LoadOptions {
    /// The BE header phase up to (not including) begin-txn: format, sizes, timeout, flags.
    ///
    /// `json_compression`: whether the BE knows the `compression` / `Content-Encoding` headers
    /// (3.2.7+). An older BE ignores them, so a gzipped body then fails to parse as JSON.
    pub fn from_headers(
        h: &dyn HeaderSource,
        content_length: Option<u64>,
        default_timeout_s: u64,
        json_compression: bool,
    ) -> Result<LoadOptions, HeaderError> {
        let format = match h.header("format").map(|s| s.trim().to_ascii_lowercase()) {
            None => Format::Csv,
            Some(f) if f.is_empty() || f == "csv" => Format::Csv,
            Some(f) if f == "json" => Format::Json,
            Some(f) if ["gzip", "bzip2", "lz4", "deflate", "zstd"].contains(&f.as_str()) => {
                return Err(HeaderError(format!(
                    "compressed CSV (format={f}) is not supported by starrocks-double"
                )))
            }
            Some(_) => {
                return Err(HeaderError(format!(
                    "unknown data format, format={}",
                    h.header("format").unwrap_or_default()
                )))
            }
        };
        if format == Format::Json {
            let ignore = h
                .header("ignore_json_size")
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
            if let Some(len) = content_length {
                if !ignore && len > JSON_MAX_BYTES {
                    return Err(HeaderError(format!(
                        "The size of this batch exceed the max size [{JSON_MAX_BYTES}]  of json type data  data [ {len} ]. Set ignore_json_size to skip the check, although it may lead huge memory consuming."
                    )));
                }
            }
        }
        let timeout_s = match h.header("timeout") {
            None => default_timeout_s,
            Some(t) => match t.trim().parse::<u32>() {
                Ok(v) => u64::from(v),
                Err(_) => return Err(HeaderError("Invalid timeout format".into())),
            },
        };
        let compression = |name: &str| h.header(name).filter(|_| json_compression);
        if compression("compression").is_some() && compression("content-encoding").is_some() {
            return Err(HeaderError(
                "Only one of compression and Content-Encoding can be set, but both are set".into(),
            ));
        }
        let mut gzip = false;
        if let Some(c) = compression("compression").or_else(|| compression("content-encoding")) {
            let c = c.trim();
            if c.eq_ignore_ascii_case("gzip") {
                gzip = true;
            } else if !c.eq_ignore_ascii_case("identity") && !c.is_empty() {
                return Err(HeaderError(format!(
                    "compression '{c}' is not supported by starrocks-double (gzip is)"
                )));
            }
        }
        for unsupported in [
            "jsonpaths",
            "json_root",
            "where",
            "envelope",
            "enable_merge_commit",
        ] {
            if h.header(unsupported)
                .is_some_and(|v| !v.trim().is_empty() && !v.trim().eq_ignore_ascii_case("false"))
            {
                return Err(HeaderError(format!(
                    "the '{unsupported}' header is not supported by starrocks-double"
                )));
            }
        }
        let max_filter_ratio = match h.header("max_filter_ratio") {
            None => 0.0,
            Some(v) => v.trim().parse::<f64>().unwrap_or(0.0),
        };
        let skip_header = match h.header("skip_header") {
            None => 0,
            Some(v) => v
                .trim()
                .parse::<usize>()
                .map_err(|_| HeaderError("Invalid csv load skip_header format".into()))?,
        };
        Ok(LoadOptions {
            format,
            label: h
                .header("label")
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty()),
            strip_outer_array: h
                .header("strip_outer_array")
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("true")),
            columns: None,
            partial_update: false,
            merge_condition: None,
            max_filter_ratio,
            strict_mode: false,
            timeout_s,
            column_separator: h
                .header("column_separator")
                .map(unescape_separator)
                .unwrap_or_else(|| b"\t".to_vec()),
            row_delimiter: h
                .header("row_delimiter")
                .map(unescape_separator)
                .unwrap_or_else(|| b"\n".to_vec()),
            skip_header,
            gzip,
            datetime_micros: true,
        })
    }

    /// The plan-phase flags (after begin-txn: a failure here aborts the label).
    pub fn read_plan_headers(&mut self, h: &dyn HeaderSource) -> Result<(), HeaderError> {
        self.strict_mode = parse_bool(h.header("strict_mode"), "strict mode")?;
        self.partial_update = parse_bool(h.header("partial_update"), "partial update flag")?;
        if let Some(mode) = h.header("partial_update_mode") {
            if !["row", "column", "auto"].contains(&mode.trim()) {
                return Err(HeaderError(format!("Invalid partial update mode: {mode}")));
            }
        }
        self.merge_condition = h
            .header("merge_condition")
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty());
        self.columns = match h.header("columns") {
            Some(c) if !c.trim().is_empty() => Some(parse_columns(c)?),
            _ => None,
        };
        if h.header("partitions").is_some() && h.header("temporary_partitions").is_some() {
            return Err(HeaderError(
                "Can not specify both partitions and temporary partitions".into(),
            ));
        }
        Ok(())
    }
}

/// Where one table column's value comes from.
#[derive(Debug, Clone)]
enum Source {
    /// A JSON key or a CSV field position.
    Field(usize),
    Const(String),
}

/// Where the op of each row comes from.
#[derive(Debug, Clone)]
enum OpSource {
    Upsert,
    Field(usize),
    Const(Op),
}

/// How a load maps source fields onto the table, decided before the body is read.
#[derive(Debug, Clone)]
pub struct LoadPlan {
    /// Source field names: JSON keys, or CSV positions' names.
    fields: Vec<String>,
    /// For each table column, its source; None = not listed.
    sources: Vec<Option<Source>>,
    op: OpSource,
    pub mode: ApplyMode,
}

/// Builds the plan; the errors are the FE's plan-phase messages.
pub fn plan(opts: &LoadOptions, table: &TableDef) -> Result<LoadPlan, HeaderError> {
    let width = table.columns.len();
    let mut fields: Vec<String> = Vec::new();
    let mut sources: Vec<Option<Source>> = vec![None; width];
    let mut op = OpSource::Upsert;
    let field_index = |fields: &mut Vec<String>, name: &str| -> usize {
        if let Some(i) = fields.iter().position(|f| f.eq_ignore_ascii_case(name)) {
            i
        } else {
            fields.push(name.to_owned());
            fields.len() - 1
        }
    };
    let unknown = |name: &str| HeaderError(format!("Unknown column '{name}' in '{}'", table.name));
    match &opts.columns {
        None => {
            for (i, c) in table.columns.iter().enumerate() {
                let f = field_index(&mut fields, &c.name);
                sources[i] = Some(Source::Field(f));
            }
            if table.is_primary() {
                // `__op` is projected from JSON automatically (SR >= 2.x); CSV must list it.
                if opts.format == Format::Json {
                    op = OpSource::Field(field_index(&mut fields, "__op"));
                }
            }
        }
        Some(specs) => {
            // CSV positions follow the order of plain names and assignment sources.
            let assigned_sources: Vec<&str> = specs
                .iter()
                .filter_map(|s| match s {
                    ColumnSpec::Assign {
                        value: AssignValue::Source(src),
                        ..
                    } => Some(src.as_str()),
                    _ => None,
                })
                .collect();
            for spec in specs {
                match spec {
                    ColumnSpec::Name(name) => {
                        let f = field_index(&mut fields, name);
                        if name.eq_ignore_ascii_case("__op") {
                            op = OpSource::Field(f);
                        } else if let Some((i, _)) = table.column(name) {
                            sources[i] = Some(Source::Field(f));
                        } else if !assigned_sources
                            .iter()
                            .any(|s| s.eq_ignore_ascii_case(name))
                        {
                            return Err(unknown(name));
                        }
                    }
                    ColumnSpec::Assign { target, value } => {
                        if target.eq_ignore_ascii_case("__op") {
                            op = match value {
                                AssignValue::Const(v) => OpSource::Const(parse_op_text(v).ok_or_else(|| {
                                    HeaderError(format!("Invalid __op value '{v}': expected 0, 1, 'upsert' or 'delete'"))
                                })?),
                                AssignValue::Source(src) => OpSource::Field(field_index(&mut fields, src)),
                            };
                            continue;
                        }
                        let Some((i, _)) = table.column(target) else {
                            return Err(unknown(target));
                        };
                        sources[i] = Some(match value {
                            AssignValue::Const(v) => Source::Const(v.clone()),
                            AssignValue::Source(src) => {
                                Source::Field(field_index(&mut fields, src))
                            }
                        });
                    }
                }
            }
        }
    }
    if !table.is_primary() {
        op = OpSource::Upsert;
    }
    let listed: Vec<bool> = sources.iter().map(|s| s.is_some()).collect();
    let mut mode = ApplyMode::default();
    if opts.partial_update {
        if !table.is_primary() {
            return Err(HeaderError(
                "Only primary key table support partial update".into(),
            ));
        }
        if opts.columns.is_none() {
            return Err(HeaderError(
                "partial update requires the columns header listing the updated columns".into(),
            ));
        }
        for k in &table.key_columns {
            let (i, _) = table.column(k).ok_or_else(|| unknown(k))?;
            if !listed[i] {
                return Err(HeaderError(format!(
                    "partial update must include all primary key columns, missing key column: {k}"
                )));
            }
        }
        mode.partial = Some((0..width).filter(|&i| listed[i]).collect());
    }
    if let Some(mc) = &opts.merge_condition {
        if !table.is_primary() {
            return Err(HeaderError(
                "Conditional update only support primary key table".into(),
            ));
        }
        let Some((i, col)) = table.column(mc) else {
            return Err(HeaderError(format!(
                "Merge condition column {mc} does not exist in table {}",
                table.name
            )));
        };
        if col.is_key {
            return Err(HeaderError(format!(
                "Merge condition column {mc} should not be a primary key column"
            )));
        }
        mode.merge = Some(i);
    }
    Ok(LoadPlan {
        fields,
        sources,
        op,
        mode,
    })
}

/// The size of a row's primary key as the BE encodes it, for `primary_key_limit_size`
/// (StarRocks `PrimaryKeyEncoder::encode_exceed_limit`): a single key column counts only if
/// it is a VARCHAR (its length); a composite key counts each fixed-width column at its width,
/// each VARCHAR before the last column at length + NUL bytes + 2, and a last VARCHAR at its
/// length.
pub fn encoded_key_size(table: &TableDef, values: &[Cell]) -> usize {
    let keys: Vec<(usize, &SrType)> = table
        .columns
        .iter()
        .enumerate()
        .filter(|(_, c)| c.is_key)
        .map(|(i, c)| (i, &c.ty))
        .collect();
    let text_len = |i: usize| match values.get(i) {
        Some(Cell::Text(t)) => (t.len(), t.bytes().filter(|b| *b == 0).count()),
        Some(Cell::Int(v)) => (v.to_string().len(), 0),
        _ => (0, 0),
    };
    if let [(i, ty)] = keys.as_slice() {
        return match ty {
            SrType::Varchar(_) | SrType::Char(_) => text_len(*i).0,
            _ => 0,
        };
    }
    let last = keys.len().saturating_sub(1);
    keys.iter()
        .enumerate()
        .map(|(k, (i, ty))| match ty {
            SrType::Boolean | SrType::TinyInt => 1,
            SrType::SmallInt => 2,
            SrType::Int | SrType::Date => 4,
            SrType::BigInt | SrType::DateTime => 8,
            SrType::LargeInt => 16,
            SrType::Varchar(_) | SrType::Char(_) => {
                let (len, nuls) = text_len(*i);
                if k == last {
                    len
                } else {
                    len + nuls + 2
                }
            }
            _ => 8,
        })
        .sum()
}

/// The checks the BE makes while writing a load's rows; an error fails the whole load and
/// applies nothing. A primary key whose encoded size exceeds `pk_limit` cancels the memtable
/// flush: `primary key size exceed the limit.` (StarRocks `MemTableForPrimaryKey`,
/// BE config `primary_key_limit_size`).
pub fn write_check(table: &TableDef, rows: &[RowOp], pk_limit: usize) -> Result<(), String> {
    if table.is_primary()
        && rows
            .iter()
            .any(|r| encoded_key_size(table, &r.values) > pk_limit)
    {
        return Err("primary key size exceed the limit.".into());
    }
    Ok(())
}

fn parse_op_text(s: &str) -> Option<Op> {
    match s.trim().to_ascii_lowercase().as_str() {
        "0" | "upsert" => Some(Op::Upsert),
        "1" | "delete" => Some(Op::Delete),
        _ => None,
    }
}

fn op_from_json(v: &Json) -> Option<Op> {
    match v {
        Json::Null => Some(Op::Upsert),
        Json::Number(n) => match n.as_i64() {
            Some(0) => Some(Op::Upsert),
            Some(1) => Some(Op::Delete),
            _ => None,
        },
        Json::String(s) => parse_op_text(s),
        _ => None,
    }
}

/// A row StarRocks would filter: why, and the row as text.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    pub reason: String,
    pub row: String,
}

/// The decoded body.
#[derive(Debug, Default)]
pub struct Decoded {
    pub total: u64,
    pub rows: Vec<RowOp>,
    pub rejected: Vec<Rejected>,
    /// Rejected rows beyond the error-log cap are only counted.
    pub rejected_count: u64,
}

/// A body StarRocks refuses as a whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BodyError(pub String);

/// One source value.
enum Raw<'a> {
    Missing,
    Json(&'a Json),
    Text(&'a str),
    Null,
}

/// Why a row is filtered, and whether its error-log line shows the row (the table sink's
/// decimal and length checks log an empty `Row:`).
struct RowError {
    reason: String,
    show_row: bool,
}

impl From<String> for RowError {
    fn from(reason: String) -> RowError {
        RowError {
            reason,
            show_row: true,
        }
    }
}

/// Conversion settings shared by every row of a load.
struct Converter<'a> {
    table: &'a TableDef,
    plan: &'a LoadPlan,
    strict: bool,
    strict_delete_rows: bool,
    datetime_micros: bool,
}

impl Converter<'_> {
    /// Converts one source row; `get` looks a source field up by index.
    fn row<'r>(&self, get: impl Fn(usize) -> Raw<'r>) -> Result<RowOp, RowError> {
        let op = match &self.plan.op {
            OpSource::Upsert => Op::Upsert,
            OpSource::Const(op) => *op,
            OpSource::Field(f) => match get(*f) {
                Raw::Missing | Raw::Null => Op::Upsert,
                Raw::Json(v) => op_from_json(v)
                    .ok_or_else(|| RowError::from(format!("Invalid __op value {v}")))?,
                Raw::Text(t) => parse_op_text(t)
                    .ok_or_else(|| RowError::from(format!("Invalid __op value '{t}'")))?,
            },
        };
        let partial = self.plan.mode.partial.is_some();
        let mut values = Vec::with_capacity(self.table.columns.len());
        for (i, col) in self.table.columns.iter().enumerate() {
            let check = op == Op::Upsert || col.is_key || self.strict_delete_rows;
            let raw = match &self.plan.sources[i] {
                None => {
                    values.push(if partial {
                        col.fill_cell()
                    } else {
                        col.default_cell()
                    });
                    if check && values[i].is_null() && !col.nullable && !partial {
                        return Err(
                            format!("NULL value in non-nullable column '{}'", col.name).into()
                        );
                    }
                    continue;
                }
                Some(Source::Const(c)) => Raw::Text(c.as_str()),
                Some(Source::Field(f)) => get(*f),
            };
            // A CSV field is named by its position in strict-mode messages.
            let csv_pos = match (&self.plan.sources[i], &raw) {
                (Some(Source::Field(f)), Raw::Text(_)) => Some(*f),
                _ => None,
            };
            let converted = match raw {
                Raw::Missing => Ok(if partial {
                    Cell::Null
                } else {
                    col.default_cell()
                }),
                Raw::Null => Ok(Cell::Null),
                Raw::Json(v) => col.ty.load_json(v, &col.name),
                Raw::Text(t) => col.ty.convert_text_for(t, &col.name).map_err(|e| match e {
                    ConvError::OutOfBounds(m) => ConvError::OutOfBounds(m),
                    other => match csv_pos {
                        // `make_value_type_not_matched_error_message` (exec/csv_scanner.cpp).
                        Some(pos) => ConvError::Invalid(format!(
                            "The field (name = {}, pos = {pos}) is out of range. Type: {}, Value length: {}, Value: {t}",
                            self.plan.fields[pos],
                            col.ty.debug_name(),
                            t.len()
                        )),
                        None => ConvError::Invalid(format!(
                            "{}, column={}",
                            other.message(),
                            col.name
                        )),
                    },
                }),
            };
            let cell = match converted {
                Ok(c) => c,
                Err(_) if !check => Cell::Null,
                // The sink's own checks filter whatever the mode; its log line has no row.
                Err(ConvError::OutOfBounds(m)) => {
                    return Err(RowError {
                        reason: m,
                        show_row: false,
                    })
                }
                // The reader's failure: filtered in strict mode, otherwise NULL (and a NULL
                // for a NOT NULL column is the sink's error just below).
                Err(e) => {
                    if self.strict {
                        return Err(e.message().to_owned().into());
                    }
                    Cell::Null
                }
            };
            if check && cell.is_null() && !col.nullable {
                return Err(format!("NULL value in non-nullable column '{}'", col.name).into());
            }
            let cell = match cell {
                Cell::Text(t) if !self.datetime_micros && col.ty == SrType::DateTime => {
                    Cell::Text(t.split('.').next().unwrap_or_default().to_owned())
                }
                other => other,
            };
            values.push(cell);
        }
        Ok(RowOp { op, values })
    }
}

impl Decoded {
    fn reject(&mut self, reason: String, row: String) {
        self.rejected_count += 1;
        if self.rejected.len() < ERROR_LOG_MAX_ROWS {
            self.rejected.push(Rejected { reason, row });
        }
    }

    fn reject_row(&mut self, e: RowError, row: String) {
        let row = if e.show_row { row } else { String::new() };
        self.reject(e.reason, row);
    }

    pub fn filtered(&self) -> u64 {
        self.rejected_count
    }
}

/// Decodes and converts a whole body, keeping the row order.
pub fn decode(
    body: &[u8],
    opts: &LoadOptions,
    plan: &LoadPlan,
    table: &TableDef,
    strict_delete_rows: bool,
) -> Result<Decoded, BodyError> {
    let conv = Converter {
        table,
        plan,
        strict: opts.strict_mode,
        strict_delete_rows,
        datetime_micros: opts.datetime_micros,
    };
    let mut out = Decoded::default();
    match opts.format {
        Format::Json => {
            if body.iter().all(|b| b.is_ascii_whitespace()) {
                return Ok(out);
            }
            let doc: Json = serde_json::from_slice(body)
                .map_err(|e| BodyError(format!("Failed to parse json data: {e}")))?;
            let objects: Vec<&Json> = match (&doc, opts.strip_outer_array) {
                (Json::Array(items), true) => items.iter().collect(),
                (Json::Array(_), false) => {
                    return Err(BodyError(
                        "JSON data is an array, strip_outer_array must be set true".into(),
                    ))
                }
                (Json::Object(_), true) => {
                    return Err(BodyError(
                        "JSON data is an object, strip_outer_array must be set false".into(),
                    ))
                }
                (Json::Object(_), false) => vec![&doc],
                _ => return Err(BodyError("JSON data is not an object or an array".into())),
            };
            for obj in objects {
                out.total += 1;
                let Json::Object(map) = obj else {
                    out.reject("JSON data is not an object".into(), obj.to_string());
                    continue;
                };
                // A key fills the source slot of exactly that name: the BE's JSON reader looks
                // keys up in a hash map of slot names, so `customerId` does not fill
                // `customerid` (StarRocks `JsonReader::_construct_row_without_jsonpath`).
                let keyed: Vec<Option<&Json>> =
                    plan.fields.iter().map(|f| map.get(f.as_str())).collect();
                match conv.row(|i| match keyed.get(i).copied().flatten() {
                    None => Raw::Missing,
                    Some(Json::Null) => Raw::Null,
                    Some(v) => Raw::Json(v),
                }) {
                    Ok(r) => out.rows.push(r),
                    Err(e) => out.reject_row(e, obj.to_string()),
                }
            }
        }
        Format::Csv => {
            let text = String::from_utf8_lossy(body);
            let sep = String::from_utf8_lossy(&opts.column_separator).into_owned();
            let delim = String::from_utf8_lossy(&opts.row_delimiter).into_owned();
            let mut lines: Vec<&str> = text.split(delim.as_str()).collect();
            if lines.last().is_some_and(|l| l.is_empty()) {
                lines.pop();
            }
            for line in lines.into_iter().skip(opts.skip_header) {
                // The BE's CSV reader skips empty records.
                if line.is_empty() {
                    continue;
                }
                out.total += 1;
                let fields: Vec<&str> = line.split(sep.as_str()).collect();
                if fields.len() != plan.fields.len() {
                    out.reject(
                        format!(
                            "Value count does not match column count. Expect {}, but got {}",
                            plan.fields.len(),
                            fields.len()
                        ),
                        line.to_owned(),
                    );
                    continue;
                }
                match conv.row(|i| match fields.get(i) {
                    None => Raw::Missing,
                    Some(&"\\N") => Raw::Null,
                    Some(f) => Raw::Text(f),
                }) {
                    Ok(r) => out.rows.push(r),
                    Err(e) => out.reject_row(e, line.to_owned()),
                }
            }
        }
    }
    Ok(out)
}

/// Counts rows without converting them (`--discard`): JSON is still fully parsed, and every
/// CSV row is split into fields and checked against the plan's field count (what a BE checks
/// before converting; a row that fails is filtered, as in [`decode`]).
pub fn count_only(body: &[u8], opts: &LoadOptions, plan: &LoadPlan) -> Result<Decoded, BodyError> {
    let total = match opts.format {
        Format::Json => {
            if body.iter().all(|b| b.is_ascii_whitespace()) {
                return Ok(Decoded::default());
            }
            let mut de = serde_json::Deserializer::from_slice(body);
            let shape = serde::Deserializer::deserialize_any(&mut de, CountVisitor)
                .map_err(|e| BodyError(format!("Failed to parse json data: {e}")))?;
            de.end()
                .map_err(|e| BodyError(format!("Failed to parse json data: {e}")))?;
            match (shape, opts.strip_outer_array) {
                (Shape::Array(n), true) => n,
                (Shape::Object, false) => 1,
                (Shape::Array(_), false) => {
                    return Err(BodyError(
                        "JSON data is an array, strip_outer_array must be set true".into(),
                    ))
                }
                (Shape::Object, true) => {
                    return Err(BodyError(
                        "JSON data is an object, strip_outer_array must be set false".into(),
                    ))
                }
                (Shape::Other, _) => {
                    return Err(BodyError("JSON data is not an object or an array".into()))
                }
            }
        }
        Format::Csv => {
            let (delim, sep) = (&opts.row_delimiter, &opts.column_separator);
            if delim.is_empty() || sep.is_empty() {
                return Ok(Decoded::default());
            }
            let rows = memchr::memmem::Finder::new(delim);
            let fields = memchr::memmem::Finder::new(sep);
            let mut out = Decoded::default();
            let mut seen = 0usize;
            let mut rest = body;
            while !rest.is_empty() {
                let (line, next) = match rows.find(rest) {
                    Some(pos) => (&rest[..pos], &rest[pos + delim.len()..]),
                    None => (rest, &rest[rest.len()..]),
                };
                rest = next;
                seen += 1;
                if seen <= opts.skip_header || line.is_empty() {
                    continue;
                }
                out.total += 1;
                let count = fields.find_iter(line).count() + 1;
                if count != plan.fields.len() {
                    out.reject(
                        format!(
                            "Value count does not match column count. Expect {}, but got {count}",
                            plan.fields.len()
                        ),
                        String::from_utf8_lossy(line).into_owned(),
                    );
                }
            }
            return Ok(out);
        }
    };
    Ok(Decoded {
        total,
        ..Decoded::default()
    })
}

enum Shape {
    Array(u64),
    Object,
    Other,
}

struct CountVisitor;

impl<'de> serde::de::Visitor<'de> for CountVisitor {
    type Value = Shape;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON array or object")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Shape, A::Error> {
        let mut n = 0u64;
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {
            n += 1;
        }
        Ok(Shape::Array(n))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Shape, A::Error> {
        while map
            .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
            .is_some()
        {}
        Ok(Shape::Object)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Shape, E> {
        Ok(Shape::Other)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Shape, E> {
        Ok(Shape::Other)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Shape, E> {
        Ok(Shape::Other)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Shape, E> {
        Ok(Shape::Other)
    }
    fn visit_str<E>(self, _: &str) -> Result<Shape, E> {
        Ok(Shape::Other)
    }
    fn visit_unit<E>(self) -> Result<Shape, E> {
        Ok(Shape::Other)
    }
}

/// The BE's answer to a load: field names, order and pretty printing as in StarRocks.
#[derive(Debug, Clone, Serialize, Default)]
pub struct LoadResult {
    #[serde(rename = "TxnId")]
    pub txn_id: i64,
    #[serde(rename = "Label")]
    pub label: String,
    #[serde(rename = "Status")]
    pub status: &'static str,
    #[serde(rename = "ExistingJobStatus", skip_serializing_if = "Option::is_none")]
    pub existing_job_status: Option<&'static str>,
    #[serde(rename = "Message")]
    pub message: String,
    #[serde(rename = "NumberTotalRows")]
    pub number_total_rows: u64,
    #[serde(rename = "NumberLoadedRows")]
    pub number_loaded_rows: u64,
    #[serde(rename = "NumberFilteredRows")]
    pub number_filtered_rows: u64,
    #[serde(rename = "NumberUnselectedRows")]
    pub number_unselected_rows: u64,
    #[serde(rename = "LoadBytes")]
    pub load_bytes: u64,
    #[serde(rename = "LoadTimeMs")]
    pub load_time_ms: u64,
    #[serde(rename = "BeginTxnTimeMs")]
    pub begin_txn_time_ms: u64,
    #[serde(rename = "StreamLoadPlanTimeMs")]
    pub stream_load_plan_time_ms: u64,
    #[serde(rename = "ReadDataTimeMs")]
    pub read_data_time_ms: u64,
    #[serde(rename = "WriteDataTimeMs")]
    pub write_data_time_ms: u64,
    #[serde(rename = "CommitAndPublishTimeMs")]
    pub commit_and_publish_time_ms: u64,
    #[serde(rename = "ErrorURL", skip_serializing_if = "Option::is_none")]
    pub error_url: Option<String>,
}

/// The four statuses a load can end in.
pub mod status {
    pub const SUCCESS: &str = "Success";
    pub const PUBLISH_TIMEOUT: &str = "Publish Timeout";
    pub const LABEL_ALREADY_EXISTS: &str = "Label Already Exists";
    pub const FAIL: &str = "Fail";
}

impl LoadResult {
    /// A `Fail` with a message; txn id -1 when no transaction was begun.
    pub fn fail(label: &str, txn_id: i64, message: impl Into<String>) -> LoadResult {
        LoadResult {
            txn_id,
            label: label.to_owned(),
            status: status::FAIL,
            message: message.into(),
            ..LoadResult::default()
        }
    }
}

/// JSON pretty-printed with four-space indentation, like the BE's rapidjson writer.
pub fn pretty_json<T: Serialize>(v: &T) -> Vec<u8> {
    let mut out = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    if v.serialize(&mut ser).is_err() {
        return b"{}".to_vec();
    }
    out
}

/// Converts the literal rows of `INSERT ... VALUES` like a strict load.
pub fn convert_literals(
    table: &TableDef,
    columns: &[usize],
    rows: &[Vec<crate::sql::Literal>],
) -> Result<Vec<RowOp>, String> {
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        if row.len() != columns.len() {
            return Err(format!(
                "Column count doesn't match value count. Expect {}, but got {}",
                columns.len(),
                row.len()
            ));
        }
        let mut values: Vec<Cell> = table.columns.iter().map(|c| c.default_cell()).collect();
        for (lit, &ci) in row.iter().zip(columns) {
            let col = &table.columns[ci];
            values[ci] = match lit {
                crate::sql::Literal::Null => Cell::Null,
                crate::sql::Literal::Text(t) => col.ty.convert_text(t).map_err(|e| {
                    format!(
                        "Insert has filtered data in strict mode: {e}, column={}",
                        col.name
                    )
                })?,
            };
        }
        for (c, v) in table.columns.iter().zip(&values) {
            if v.is_null() && !c.nullable {
                return Err(format!(
                    "Insert has filtered data in strict mode: NULL value in non-nullable column '{}'",
                    c.name
                ));
            }
        }
        out.push(RowOp {
            op: Op::Upsert,
            values,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{ColumnDef, KeysType};
    use crate::types::SrType;
    use std::collections::HashMap;

    struct H(HashMap<String, String>);
    impl HeaderSource for H {
        fn header(&self, name: &str) -> Option<&str> {
            self.0.get(&name.to_ascii_lowercase()).map(|s| s.as_str())
        }
    }
    fn headers(pairs: &[(&str, &str)]) -> H {
        H(pairs
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
            .collect())
    }

    fn table() -> TableDef {
        let col = |name: &str, ty: SrType, nullable: bool, key: bool| ColumnDef {
            name: name.into(),
            ty,
            nullable,
            default: None,
            comment: String::new(),
            is_key: key,
            column_id: None,
        };
        TableDef {
            id: 1,
            db: "d".into(),
            name: "t".into(),
            columns: vec![
                col("id", SrType::BigInt, false, true),
                col("name", SrType::Varchar(5), true, false),
                col("n", SrType::Int, true, false),
            ],
            keys: KeysType::PrimaryKeys,
            key_columns: vec!["id".into()],
            distribution: vec!["id".into()],
            buckets: None,
            properties: vec![],
            comment: String::new(),
            created_at: 0,
        }
    }

    fn opts(pairs: &[(&str, &str)]) -> LoadOptions {
        let h = headers(pairs);
        let mut o = LoadOptions::from_headers(&h, None, 600, true).unwrap();
        o.read_plan_headers(&h).unwrap();
        o
    }

    #[test]
    fn label_regex_matches_starrocks() {
        assert!(label_is_valid("batch_orders-0-1A"));
        assert!(!label_is_valid("has space"));
        assert!(!label_is_valid(""));
        assert!(!label_is_valid(&"x".repeat(129)));
    }

    #[test]
    fn columns_header_accepts_backticks_and_constants() {
        let c = parse_columns("`id`, name, __op = 'delete'").unwrap();
        assert_eq!(c[0], ColumnSpec::Name("id".into()));
        assert_eq!(
            c[2],
            ColumnSpec::Assign {
                target: "__op".into(),
                value: AssignValue::Const("delete".into())
            }
        );
    }

    #[test]
    fn json_rows_keep_order_and_ops() {
        let t = table();
        let o = opts(&[
            ("format", "json"),
            ("strip_outer_array", "true"),
            ("strict_mode", "true"),
        ]);
        let p = plan(&o, &t).unwrap();
        let body = br#"[{"id":1,"name":"a","__op":0},{"id":1,"__op":1},{"id":2,"name":"toolong"}]"#;
        let d = decode(body, &o, &p, &t, false).unwrap();
        assert_eq!(d.total, 3);
        assert_eq!(d.rows.len(), 2);
        assert_eq!(d.rows[1].op, Op::Delete);
        assert_eq!(d.filtered(), 1);
        assert!(
            d.rejected[0].reason.contains("column=name"),
            "{}",
            d.rejected[0].reason
        );
    }

    #[test]
    fn non_strict_mode_turns_bad_values_into_null() {
        let t = table();
        let o = opts(&[("format", "json"), ("strip_outer_array", "true")]);
        let p = plan(&o, &t).unwrap();
        let d = decode(br#"[{"id":1,"n":"abc"}]"#, &o, &p, &t, false).unwrap();
        assert_eq!(d.rows[0].values[2], Cell::Null);
        let o = opts(&[
            ("format", "json"),
            ("strip_outer_array", "true"),
            ("strict_mode", "true"),
        ]);
        let d = decode(br#"[{"id":1,"n":"abc"}]"#, &o, &p, &t, false).unwrap();
        assert_eq!(d.filtered(), 1);
    }

    #[test]
    fn partial_update_needs_key_columns() {
        let t = table();
        let o = opts(&[("partial_update", "true"), ("columns", "name")]);
        assert!(plan(&o, &t).unwrap_err().0.contains("primary key"));
    }

    #[test]
    fn unknown_column_in_columns_header_is_an_error() {
        let t = table();
        let o = opts(&[("columns", "id,nope")]);
        assert!(plan(&o, &t)
            .unwrap_err()
            .0
            .contains("Unknown column 'nope'"));
    }

    #[test]
    fn csv_maps_fields_by_position_and_null_marker() {
        let t = table();
        let o = opts(&[("column_separator", ","), ("columns", "id,name,n,__op")]);
        let p = plan(&o, &t).unwrap();
        let d = decode(b"1,a,\\N,0\n2,b,3,1\n", &o, &p, &t, false).unwrap();
        assert_eq!(d.rows.len(), 2);
        assert_eq!(d.rows[0].values[2], Cell::Null);
        assert_eq!(d.rows[1].op, Op::Delete);
    }

    #[test]
    fn discard_counting_matches_decoding() {
        let t = table();
        let o = opts(&[("format", "json"), ("strip_outer_array", "true")]);
        let p = plan(&o, &t).unwrap();
        assert_eq!(
            count_only(br#"[{"a":1},{"b":[1,2]},{}]"#, &o, &p)
                .unwrap()
                .total,
            3
        );
        assert!(count_only(b"[{", &o, &p).is_err());
        let o = opts(&[("column_separator", "\\x09"), ("columns", "id,name,n,__op")]);
        let p = plan(&o, &t).unwrap();
        let body = b"1\ta\t\\N\t0\n\n2\tb\t3\t1\n";
        assert_eq!(
            count_only(body, &o, &p).unwrap().total,
            2,
            "empty lines are skipped"
        );
        assert_eq!(decode(body, &o, &p, &t, false).unwrap().rows.len(), 2);
        let no_final = count_only(&body[..body.len() - 1], &o, &p).unwrap();
        assert_eq!(no_final.total, 2, "no final delimiter");
        let short: &[u8] = b"1\ta\t\\N\t0\n2\tb\n";
        let counted = count_only(short, &o, &p).unwrap();
        let decoded = decode(short, &o, &p, &t, false).unwrap();
        assert_eq!((counted.total, counted.filtered()), (2, 1));
        assert_eq!((decoded.total, decoded.filtered()), (2, 1));
        assert!(counted.rejected[0].reason.contains("Expect 4, but got 2"));
    }

    #[test]
    fn load_result_prints_starrocks_field_order() {
        let r = LoadResult::fail("l", -1, "boom");
        let s = String::from_utf8(pretty_json(&r)).unwrap();
        assert!(
            s.starts_with("{\n    \"TxnId\": -1,\n    \"Label\": \"l\",\n    \"Status\": \"Fail\""),
            "{s}"
        );
        assert!(!s.contains("ErrorURL"));
    }
}

/// Strict versus non-strict mode, per type, through the load's decode path (JSON and CSV).
///
/// The rules (see `types.rs` for the StarRocks sources): a value the reader cannot convert is
/// NULL when strict mode is off and filters the row when it is on; a NOT NULL column filters
/// it either way (`NULL value in non-nullable column` when strict mode is off); the table
/// sink's own checks filter in both modes; a source NULL is NULL in both modes.
#[cfg(test)]
mod strict_mode_tests {
    use super::*;
    use crate::catalog::{ColumnDef, KeysType};
    use crate::types::SrType;
    use std::collections::HashMap;

    struct H(HashMap<String, String>);
    impl HeaderSource for H {
        fn header(&self, name: &str) -> Option<&str> {
            self.0.get(&name.to_ascii_lowercase()).map(|s| s.as_str())
        }
    }

    fn table(ty: &SrType, nullable: bool) -> TableDef {
        let col = |name: &str, ty: SrType, nullable: bool, key: bool| ColumnDef {
            name: name.into(),
            ty,
            nullable,
            default: None,
            comment: String::new(),
            is_key: key,
            column_id: None,
        };
        TableDef {
            id: 1,
            db: "d".into(),
            name: "t".into(),
            columns: vec![
                col("id", SrType::BigInt, false, true),
                col("v", ty.clone(), nullable, false),
            ],
            keys: KeysType::PrimaryKeys,
            key_columns: vec!["id".into()],
            distribution: vec!["id".into()],
            buckets: None,
            properties: vec![],
            comment: String::new(),
            created_at: 0,
        }
    }

    #[derive(Clone, Copy, PartialEq, Debug)]
    enum Fmt {
        Json,
        Csv,
    }

    /// Loads one row `id=1, v=<value>` (`value` is JSON text, or the CSV field).
    fn load(fmt: Fmt, ty: &SrType, nullable: bool, strict: bool, value: &str) -> Decoded {
        let mut h: Vec<(&str, &str)> = vec![("strict_mode", if strict { "true" } else { "false" })];
        if fmt == Fmt::Json {
            h.extend([("format", "json"), ("strip_outer_array", "true")]);
        }
        let h = H(h
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect());
        let mut o = LoadOptions::from_headers(&h, None, 600, true).unwrap();
        o.read_plan_headers(&h).unwrap();
        let t = table(ty, nullable);
        let p = plan(&o, &t).unwrap();
        let body = match fmt {
            Fmt::Json => format!(r#"[{{"id":1,"v":{value}}}]"#),
            Fmt::Csv => format!("1\t{value}\n"),
        };
        decode(body.as_bytes(), &o, &p, &t, false).unwrap()
    }

    /// What a value does.
    enum Expect {
        /// Converts: loaded as this cell in both modes.
        Loads(Cell),
        /// The reader refuses it: NULL, or filtered in strict mode with a reason containing
        /// this text.
        Invalid(&'static str),
        /// The sink refuses it: filtered in both modes, with this reason and no row.
        Sink(&'static str),
    }
    use Expect::*;

    fn check(fmt: Fmt, ty: &SrType, value: &str, expect: &Expect) {
        let ctx = format!("{fmt:?} {} <- {value}", ty.sql());
        for nullable in [true, false] {
            for strict in [false, true] {
                let d = load(fmt, ty, nullable, strict, value);
                let ctx = format!("{ctx} (nullable={nullable}, strict={strict})");
                assert_eq!(d.total, 1, "{ctx}");
                let reason = d.rejected.first().map(|r| r.reason.as_str());
                match expect {
                    Loads(cell) => {
                        assert_eq!(d.filtered(), 0, "{ctx}: {reason:?}");
                        assert_eq!(&d.rows[0].values[1], cell, "{ctx}");
                    }
                    Invalid(why) => match (strict, nullable) {
                        (false, true) => {
                            assert_eq!(d.filtered(), 0, "{ctx}: {reason:?}");
                            assert_eq!(d.rows[0].values[1], Cell::Null, "{ctx}");
                        }
                        (false, false) => assert_eq!(
                            reason,
                            Some("NULL value in non-nullable column 'v'"),
                            "{ctx}"
                        ),
                        (true, _) => {
                            let r = reason.unwrap_or_else(|| panic!("{ctx}: not filtered"));
                            assert!(r.contains(why), "{ctx}: {r}");
                            assert!(!d.rejected[0].row.is_empty(), "{ctx}");
                        }
                    },
                    Sink(why) => {
                        let r = reason.unwrap_or_else(|| panic!("{ctx}: not filtered"));
                        assert!(r.contains(why), "{ctx}: {r}");
                        assert_eq!(d.rejected[0].row, "", "{ctx}");
                    }
                }
            }
        }
    }

    fn text(s: &str) -> Cell {
        Cell::Text(s.into())
    }

    fn dec(p: u8, s: u8) -> SrType {
        SrType::Decimal {
            precision: p,
            scale: s,
        }
    }

    #[test]
    fn json_values_per_type_in_both_modes() {
        let arr_int = SrType::Array(Box::new(SrType::Int));
        let cases: Vec<(SrType, &str, Expect)> = vec![
            // BOOLEAN: booleans, any number, an INT or true/false string.
            (SrType::Boolean, "true", Loads(Cell::Int(1))),
            (SrType::Boolean, "0", Loads(Cell::Int(0))),
            (SrType::Boolean, "2", Loads(Cell::Int(1))),
            (SrType::Boolean, "0.5", Loads(Cell::Int(1))),
            (SrType::Boolean, r#""2""#, Loads(Cell::Int(1))),
            (SrType::Boolean, r#""TRUE""#, Loads(Cell::Int(1))),
            (SrType::Boolean, r#""yes""#, Invalid("Invalid argument: Failed to parse string value as boolean. column=v, value=yes")),
            (SrType::Boolean, "[1]", Invalid("Unsupported value type to boolean. column=v")),
            // Integers: range checked, fractions truncated, numeric strings read.
            (SrType::TinyInt, "127", Loads(Cell::Int(127))),
            (SrType::TinyInt, "300", Invalid("Invalid argument: Value is overflow. column=v, value=300")),
            (SrType::TinyInt, "-129", Invalid("Value is overflow. column=v, value=-129")),
            (SrType::TinyInt, r#""12""#, Loads(Cell::Int(12))),
            (SrType::TinyInt, r#""300""#, Invalid("Value is overflow. column=v, value=300")),
            (SrType::TinyInt, "3.7", Loads(Cell::Int(3))),
            (SrType::TinyInt, "-3.7", Loads(Cell::Int(-3))),
            (SrType::TinyInt, r#""3.7""#, Loads(Cell::Int(3))),
            (SrType::TinyInt, r#""abc""#, Invalid("Invalid argument: Unable to cast string value to BIGINT. value=abc, column=v")),
            (SrType::TinyInt, "true", Invalid("Invalid argument: Unsupported value type. Numeric type is required. column=v")),
            (SrType::SmallInt, "32768", Invalid("Value is overflow")),
            (SrType::Int, r#"" 42 ""#, Loads(Cell::Int(42))),
            (SrType::Int, r#""1e3""#, Loads(Cell::Int(1000))),
            (SrType::Int, "2147483648", Invalid("Value is overflow")),
            (SrType::Int, "{}", Invalid("Numeric type is required")),
            (SrType::BigInt, "9223372036854775807", Loads(Cell::Int(i64::MAX))),
            (SrType::BigInt, "9223372036854775808", Invalid("Value is overflow")),
            // LARGEINT is read as text and cast.
            (SrType::LargeInt, r#""170141183460469231731687303715884105727""#, Loads(text("170141183460469231731687303715884105727"))),
            (SrType::LargeInt, "123", Loads(Cell::Int(123))),
            (SrType::LargeInt, "true", Loads(Cell::Int(1))),
            (SrType::LargeInt, r#""1.5""#, Invalid("Value '1.5' is out of range. The type of 'v' is LARGEINT")),
            // FLOAT / DOUBLE: nan and inf strings load; numbers beyond FLOAT overflow.
            (SrType::Float, "1.5", Loads(Cell::Real(1.5))),
            (SrType::Float, "1e40", Invalid("Value is overflow. column=v")),
            (SrType::Float, r#""NaN""#, Loads(text("nan"))),
            (SrType::Float, r#""abc""#, Invalid("Unable to cast string value to BIGINT. value=abc")),
            (SrType::Double, r#""-Infinity""#, Loads(Cell::Real(f64::NEG_INFINITY))),
            (SrType::Double, r#""1e400""#, Invalid("Unable to cast string value")),
            (SrType::Double, "false", Invalid("Numeric type is required")),
            // DECIMAL: cast from text; extra fraction digits rounded half up; too many
            // integer digits do not convert; a rounding past the precision is the sink's.
            (dec(5, 2), r#""1.005""#, Loads(text("1.01"))),
            (dec(5, 2), "1.234", Loads(text("1.23"))),
            (dec(5, 2), r#"" 7 ""#, Loads(text("7.00"))),
            (dec(5, 2), r#""1e2""#, Loads(text("100.00"))),
            (dec(5, 2), r#""." "#, Loads(text("0.00"))),
            (dec(5, 2), "true", Loads(text("1.00"))),
            (dec(5, 2), r#""1234.5""#, Invalid("Value '1234.5' is out of range. The type of 'v' is DECIMAL32(5, 2)")),
            (dec(5, 2), r#""abc""#, Invalid("Value 'abc' is out of range. The type of 'v' is DECIMAL32(5, 2)")),
            // Only the first `precision` significant digits count: 999.995 has six, so the 5
            // is dropped before rounding (no carry past the precision).
            (dec(5, 2), r#""999.995""#, Loads(text("999.99"))),
            (dec(5, 2), r#""99.995""#, Loads(text("100.00"))),
            (dec(3, 2), r#""1.23999""#, Loads(text("1.23"))),
            (dec(12, 2), "1e20", Invalid("is DECIMAL64(12, 2)")),
            // CHAR / VARCHAR: byte length over n does not convert.
            (SrType::Varchar(3), r#""abc""#, Loads(text("abc"))),
            (SrType::Varchar(3), r#""abcd""#, Invalid("Invalid argument: Value length is beyond the capacity. column=v, capacity=3")),
            (SrType::Varchar(3), r#""ééé""#, Invalid("capacity=3")),
            (SrType::Varchar(3), "true", Loads(text("1"))),
            (SrType::Varchar(3), "12", Loads(text("12"))),
            (SrType::Varchar(10), r#"{"a":1}"#, Loads(text(r#"{"a":1}"#))),
            (SrType::Char(2), r#""abc""#, Invalid("capacity=2")),
            // DATE / DATETIME: MySQL-style parsing of the text.
            (SrType::Date, r#""2024-01-02""#, Loads(text("2024-01-02"))),
            (SrType::Date, r#""2024/1/2""#, Loads(text("2024-01-02"))),
            (SrType::Date, "20240102", Loads(text("2024-01-02"))),
            (SrType::Date, r#""2024-01-02 10:11:12""#, Loads(text("2024-01-02"))),
            (SrType::Date, r#""2024-02-30""#, Invalid("Value '2024-02-30' is out of range. The type of 'v' is DATE")),
            (SrType::Date, r#""yesterday""#, Invalid("Value 'yesterday' is out of range")),
            (SrType::DateTime, r#""2024-01-02T03:04:05.5""#, Loads(text("2024-01-02 03:04:05.500000"))),
            (SrType::DateTime, r#""24-01-02 03:04:05""#, Loads(text("2024-01-02 03:04:05"))),
            (SrType::DateTime, r#""2024-01-02 10:11""#, Loads(text("2024-01-02 10:11:00"))),
            (SrType::DateTime, r#""2024-01-02 24:00:00""#, Invalid("The type of 'v' is DATETIME")),
            // JSON keeps any value.
            (SrType::Json, r#""text""#, Loads(text(r#""text""#))),
            (SrType::Json, r#"{"a":[1,2]}"#, Loads(text(r#"{"a":[1,2]}"#))),
            // ARRAY: bad elements become null in both modes; a non-array does not convert.
            (arr_int.clone(), r#"[1,"x",3]"#, Loads(text("[1,null,3]"))),
            (arr_int.clone(), r#""[1,2]""#, Invalid("Invalid argument: Failed to parse value as array, column=v")),
            (arr_int, "5", Invalid("Failed to parse value as array")),
            // VARBINARY is read as text; its length is the sink's check.
            (SrType::Varbinary(3), r#""abc""#, Loads(Cell::Blob(b"abc".to_vec()))),
            (SrType::Varbinary(3), r#""abcd""#, Sink("String 'abcd'(length=4) is too long. The max length of 'v' is 3")),
        ];
        for (ty, value, expect) in &cases {
            check(Fmt::Json, ty, value, expect);
        }
    }

    #[test]
    fn csv_fields_per_type_in_both_modes() {
        let arr_int = SrType::Array(Box::new(SrType::Int));
        let arr_str = SrType::Array(Box::new(SrType::Varchar(5)));
        let cases: Vec<(SrType, &str, Expect)> = vec![
            (SrType::Boolean, "true", Loads(Cell::Int(1))),
            (SrType::Boolean, "FALSE ", Loads(Cell::Int(0))),
            (SrType::Boolean, "2", Loads(Cell::Int(1))),
            (SrType::Boolean, "0.0", Loads(Cell::Int(0))),
            (SrType::Boolean, "yes", Invalid("The field (name = v, pos = 1) is out of range. Type: BOOLEAN, Value length: 3, Value: yes")),
            (SrType::TinyInt, "127", Loads(Cell::Int(127))),
            (SrType::TinyInt, " 12 ", Loads(Cell::Int(12))),
            (SrType::TinyInt, "3.9", Loads(Cell::Int(3))),
            (SrType::TinyInt, "-3.9", Loads(Cell::Int(-3))),
            (SrType::TinyInt, "127.5", Loads(Cell::Int(127))),
            (SrType::TinyInt, "300", Invalid("The field (name = v, pos = 1) is out of range. Type: TINYINT, Value length: 3, Value: 300")),
            (SrType::TinyInt, "128.5", Invalid("Type: TINYINT")),
            (SrType::TinyInt, "abc", Invalid("Type: TINYINT, Value length: 3, Value: abc")),
            (SrType::TinyInt, "", Invalid("Type: TINYINT, Value length: 0, Value: ")),
            (SrType::Int, "2147483648", Invalid("Type: INT")),
            (SrType::BigInt, "1.9", Loads(Cell::Int(1))),
            (SrType::BigInt, "9223372036854775808", Invalid("Type: BIGINT")),
            (SrType::LargeInt, "-170141183460469231731687303715884105728", Loads(text("-170141183460469231731687303715884105728"))),
            (SrType::LargeInt, "2.5", Loads(Cell::Int(2))),
            (SrType::Float, "1.5", Loads(Cell::Real(1.5))),
            (SrType::Float, "1e40", Loads(Cell::Real(f64::INFINITY))),
            (SrType::Float, "NaN", Loads(text("nan"))),
            (SrType::Float, "1.2.3", Invalid("Type: FLOAT")),
            (SrType::Double, "-inf", Loads(Cell::Real(f64::NEG_INFINITY))),
            (SrType::Double, "1e400", Invalid("Type: DOUBLE")),
            (dec(5, 2), "1.005", Loads(text("1.01"))),
            (dec(5, 2), " 7 ", Loads(text("7.00"))),
            (dec(5, 2), "1234.5", Invalid("Type: DECIMAL32(5, 2), Value length: 6, Value: 1234.5")),
            (dec(5, 2), "999.995", Loads(text("999.99"))),
            (SrType::Varchar(3), "", Loads(text(""))),
            (SrType::Varchar(3), "abcd", Invalid("Type: VARCHAR(3), Value length: 4, Value: abcd")),
            (SrType::Varchar(3), "ééé", Invalid("Value length: 6")),
            (SrType::Char(2), "abc", Invalid("Type: CHAR(2)")),
            (SrType::Date, "2024-1-2", Loads(text("2024-01-02"))),
            (SrType::Date, "240102", Loads(text("2024-01-02"))),
            (SrType::Date, "2024 01 02", Invalid("Type: DATE")),
            (SrType::Date, "2024-02-30", Invalid("Type: DATE")),
            (SrType::DateTime, "20240102030405", Loads(text("2024-01-02 03:04:05"))),
            (SrType::DateTime, "2024-01-02 03:04:60", Invalid("Type: DATETIME")),
            (SrType::Json, r#"{"a":1}"#, Loads(text(r#"{"a":1}"#))),
            (SrType::Json, "{bad", Invalid("Type: JSON")),
            // A CSV ARRAY fails as a whole when one element does not read.
            (arr_int.clone(), "[1,2,null]", Loads(text("[1,2,null]"))),
            (arr_int.clone(), r#"[1,"x"]"#, Invalid("Type: ARRAY<INT>")),
            (arr_int.clone(), r#"["1"]"#, Invalid("Type: ARRAY<INT>")),
            (arr_int, "1,2", Invalid("Type: ARRAY<INT>")),
            (arr_str.clone(), r#"["a","b"]"#, Loads(text(r#"["a","b"]"#))),
            (arr_str, r#"["toolong"]"#, Invalid("Type: ARRAY<VARCHAR(5)>")),
            (SrType::Varbinary(3), "abcd", Invalid("Type: VARBINARY(3)")),
        ];
        for (ty, value, expect) in &cases {
            check(Fmt::Csv, ty, value, expect);
        }
    }

    #[test]
    fn source_null_is_not_affected_by_strict_mode() {
        for (fmt, null) in [(Fmt::Json, "null"), (Fmt::Csv, "\\N")] {
            for ty in [SrType::Int, dec(5, 2), SrType::Date, SrType::Varchar(1)] {
                for strict in [false, true] {
                    let d = load(fmt, &ty, true, strict, null);
                    assert_eq!(d.filtered(), 0, "{fmt:?} {ty:?} strict={strict}");
                    assert_eq!(d.rows[0].values[1], Cell::Null);
                    let d = load(fmt, &ty, false, strict, null);
                    assert_eq!(
                        d.rejected[0].reason, "NULL value in non-nullable column 'v'",
                        "{fmt:?} {ty:?} strict={strict}"
                    );
                }
            }
        }
    }

    #[test]
    fn error_log_row_is_the_source_row() {
        let d = load(Fmt::Csv, &SrType::TinyInt, true, true, "300");
        assert_eq!(d.rejected[0].row, "1\t300");
        let d = load(Fmt::Json, &SrType::TinyInt, true, true, "300");
        assert_eq!(d.rejected[0].row, r#"{"id":1,"v":300}"#);
    }
}
