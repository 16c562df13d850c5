//! StarRocks column types, and how a loaded value becomes a stored cell.
//!
//! Why this module exists: the double has to accept and reject load values where StarRocks
//! does, because a client that passes against the double must not start losing rows against
//! the real thing. So every conversion answers one of three things:
//!
//! ```text
//! JSON / CSV value ──convert──▶ Ok(Cell)                      stored as is
//!                              Err(ConvError::Invalid)        unqualified value: NULL unless strict_mode
//!                              Err(ConvError::TooLong)        length overflow: the row is always filtered
//! ```
//!
//! Cells are stored in SQLite in a form that round-trips: integers as INTEGER, floating point as
//! REAL, DECIMAL as normalized text with exactly `scale` fraction digits, DATE/DATETIME as
//! `YYYY-MM-DD[ HH:MM:SS[.ffffff]]`, JSON and ARRAY as compact JSON text, VARBINARY as a BLOB.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

/// Bytes in a StarRocks `STRING`, which is a `VARCHAR(65533)`.
pub const STRING_LEN: u32 = 65533;
/// The largest `VARCHAR(n)` StarRocks 3.x accepts.
pub const VARCHAR_MAX: u32 = 1_048_576;

/// A StarRocks column type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SrType {
    Boolean,
    TinyInt,
    SmallInt,
    Int,
    BigInt,
    LargeInt,
    Float,
    Double,
    Decimal { precision: u8, scale: u8 },
    Char(u32),
    Varchar(u32),
    Date,
    DateTime,
    Json,
    Array(Box<SrType>),
    Varbinary(u32),
}

/// Why a value could not become a cell of its column type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvError {
    /// The value does not convert (wrong type, out of range, malformed date, ...). StarRocks
    /// turns it into NULL unless `strict_mode` is on.
    #[error("{0}")]
    Invalid(String),
    /// The value is longer than the column allows; StarRocks filters the row whatever the mode.
    #[error("{0}")]
    TooLong(String),
}

/// One stored value.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

impl rusqlite::ToSql for Cell {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(match self {
            Cell::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Cell::Int(i) => ToSqlOutput::Borrowed(ValueRef::Integer(*i)),
            Cell::Real(f) => ToSqlOutput::Borrowed(ValueRef::Real(*f)),
            Cell::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Cell::Blob(b) => ToSqlOutput::Borrowed(ValueRef::Blob(b)),
        })
    }
}

impl Cell {
    /// Reads a cell back from SQLite.
    pub fn from_sql(v: rusqlite::types::ValueRef<'_>) -> Cell {
        use rusqlite::types::ValueRef;
        match v {
            ValueRef::Null => Cell::Null,
            ValueRef::Integer(i) => Cell::Int(i),
            ValueRef::Real(f) => Cell::Real(f),
            ValueRef::Text(t) => Cell::Text(String::from_utf8_lossy(t).into_owned()),
            ValueRef::Blob(b) => Cell::Blob(b.to_vec()),
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Cell::Null)
    }

    /// The cell as JSON, for ARRAY elements.
    fn to_json(&self) -> Json {
        match self {
            Cell::Null => Json::Null,
            Cell::Int(i) => Json::from(*i),
            Cell::Real(f) => serde_json::Number::from_f64(*f)
                .map(Json::Number)
                .unwrap_or(Json::Null),
            Cell::Text(s) => Json::String(s.clone()),
            Cell::Blob(b) => Json::String(String::from_utf8_lossy(b).into_owned()),
        }
    }
}

impl SrType {
    /// The type as StarRocks prints it in `SHOW CREATE TABLE` and `DESC`.
    pub fn sql(&self) -> String {
        match self {
            SrType::Boolean => "boolean".into(),
            SrType::TinyInt => "tinyint(4)".into(),
            SrType::SmallInt => "smallint(6)".into(),
            SrType::Int => "int(11)".into(),
            SrType::BigInt => "bigint(20)".into(),
            SrType::LargeInt => "largeint(40)".into(),
            SrType::Float => "float".into(),
            SrType::Double => "double".into(),
            SrType::Decimal { precision, scale } => format!("decimal({precision},{scale})"),
            SrType::Char(n) => format!("char({n})"),
            SrType::Varchar(n) => format!("varchar({n})"),
            SrType::Date => "date".into(),
            SrType::DateTime => "datetime".into(),
            SrType::Json => "json".into(),
            SrType::Array(t) => format!("array<{}>", t.sql()),
            SrType::Varbinary(n) => format!("varbinary({n})"),
        }
    }

    /// `information_schema.columns.DATA_TYPE`; BOOLEAN shows as `tinyint` like in StarRocks.
    pub fn data_type(&self) -> &'static str {
        match self {
            SrType::Boolean | SrType::TinyInt => "tinyint",
            SrType::SmallInt => "smallint",
            SrType::Int => "int",
            SrType::BigInt => "bigint",
            SrType::LargeInt => "bigint unsigned",
            SrType::Float => "float",
            SrType::Double => "double",
            SrType::Decimal { .. } => "decimal",
            SrType::Char(_) => "char",
            SrType::Varchar(_) => "varchar",
            SrType::Date => "date",
            SrType::DateTime => "datetime",
            SrType::Json => "json",
            SrType::Array(_) => "array",
            SrType::Varbinary(_) => "varbinary",
        }
    }

    /// `information_schema.columns.COLUMN_TYPE`.
    pub fn column_type(&self) -> String {
        match self {
            SrType::Boolean => "tinyint(1)".into(),
            other => other.sql(),
        }
    }

    /// `information_schema.columns.COLUMN_SIZE`: precision for numbers, length for strings,
    /// NULL for BOOLEAN (the Flink catalog tells BOOLEAN from TINYINT by this).
    pub fn column_size(&self) -> Option<i64> {
        match self {
            SrType::Boolean => None,
            SrType::TinyInt => Some(3),
            SrType::SmallInt => Some(5),
            SrType::Int => Some(10),
            SrType::BigInt => Some(19),
            SrType::LargeInt => Some(39),
            SrType::Float => Some(12),
            SrType::Double => Some(22),
            SrType::Decimal { precision, .. } => Some(i64::from(*precision)),
            SrType::Char(n) | SrType::Varchar(n) | SrType::Varbinary(n) => Some(i64::from(*n)),
            SrType::Date => Some(10),
            SrType::DateTime => Some(19),
            SrType::Json | SrType::Array(_) => None,
        }
    }

    /// `information_schema.columns.DECIMAL_DIGITS`.
    pub fn decimal_digits(&self) -> Option<i64> {
        match self {
            SrType::TinyInt
            | SrType::SmallInt
            | SrType::Int
            | SrType::BigInt
            | SrType::LargeInt => Some(0),
            SrType::Decimal { scale, .. } => Some(i64::from(*scale)),
            SrType::DateTime => Some(0),
            _ => None,
        }
    }

    /// `information_schema.columns.CHARACTER_MAXIMUM_LENGTH`.
    pub fn char_max_len(&self) -> Option<i64> {
        match self {
            SrType::Char(n) | SrType::Varchar(n) | SrType::Varbinary(n) => Some(i64::from(*n)),
            _ => None,
        }
    }

    /// `NUMERIC_PRECISION` / `NUMERIC_SCALE`.
    pub fn numeric_precision_scale(&self) -> (Option<i64>, Option<i64>) {
        match self {
            SrType::Boolean => (None, None),
            SrType::Float | SrType::Double => (self.column_size(), None),
            SrType::TinyInt
            | SrType::SmallInt
            | SrType::Int
            | SrType::BigInt
            | SrType::LargeInt
            | SrType::Decimal { .. } => (self.column_size(), self.decimal_digits()),
            _ => (None, None),
        }
    }

    /// The SQLite declared type: chosen for its affinity, so values keep their stored form.
    pub fn sqlite_decl(&self) -> &'static str {
        match self {
            SrType::Boolean | SrType::TinyInt | SrType::SmallInt | SrType::Int | SrType::BigInt => {
                "INTEGER"
            }
            SrType::Float | SrType::Double => "REAL",
            // LARGEINT keeps i64 values as integers and wider ones as text: no affinity.
            SrType::LargeInt | SrType::Varbinary(_) => "BLOB",
            _ => "TEXT",
        }
    }

    /// The type as StarRocks' FE names it in schema-change errors (`ScalarType.toString`):
    /// upper case, no display width, DECIMAL with its storage width (decimal v3).
    pub fn fe_name(&self) -> String {
        match self {
            SrType::Boolean => "BOOLEAN".into(),
            SrType::TinyInt => "TINYINT".into(),
            SrType::SmallInt => "SMALLINT".into(),
            SrType::Int => "INT".into(),
            SrType::BigInt => "BIGINT".into(),
            SrType::LargeInt => "LARGEINT".into(),
            SrType::Float => "FLOAT".into(),
            SrType::Double => "DOUBLE".into(),
            SrType::Decimal { precision, scale } => {
                let width = match precision {
                    0..=9 => 32,
                    10..=18 => 64,
                    _ => 128,
                };
                format!("DECIMAL{width}({precision},{scale})")
            }
            SrType::Char(n) => format!("CHAR({n})"),
            SrType::Varchar(n) => format!("VARCHAR({n})"),
            SrType::Date => "DATE".into(),
            SrType::DateTime => "DATETIME".into(),
            SrType::Json => "JSON".into(),
            SrType::Array(t) => format!("ARRAY<{}>", t.fe_name()),
            SrType::Varbinary(n) => format!("VARBINARY({n})"),
        }
    }

    /// Whether `ALTER TABLE ... MODIFY COLUMN` may change a column from this type to `to`.
    ///
    /// StarRocks' FE keeps this as a matrix over primitive types
    /// (`fe/fe-core/src/main/java/com/starrocks/catalog/SchemaChangeTypeCompatibility.java`,
    /// formerly `ColumnType.java`): a type may always "change" to its own primitive type, plus
    /// the widenings and string conversions listed below. DECIMAL (v3) follows its own rule:
    /// to a DECIMAL whose scale and integer digits are both at least as large, or to a VARCHAR
    /// long enough for its text; a VARCHAR may become any DECIMAL. Lengths are checked
    /// separately ([`crate::catalog::modify_columns`]: "Cannot shorten string length").
    /// ARRAY is not a scalar type; the double lets only an unchanged ARRAY type through
    /// (a nullability or comment change), which StarRocks' matrix does not spell out.
    pub fn schema_change_allowed(&self, to: &SrType) -> bool {
        use SrType::*;
        match (self, to) {
            (
                Decimal {
                    precision: p1,
                    scale: s1,
                },
                Decimal {
                    precision: p2,
                    scale: s2,
                },
            ) => s1 <= s2 && (p1 - s1) <= (p2 - s2),
            // The VARCHAR must hold the decimal's MySQL field length: its digits, the point
            // and the sign (approximation of `getMysqlResultSetFieldLength`).
            (Decimal { precision, .. }, Varchar(n)) => u32::from(*precision) + 2 <= *n,
            (Varchar(_), Decimal { .. }) => true,
            (Decimal { .. }, _) | (_, Decimal { .. }) => false,
            (Array(a), Array(b)) => a == b,
            (Array(_), _) | (_, Array(_)) => false,
            (a, b) if std::mem::discriminant(a) == std::mem::discriminant(b) => true,
            (TinyInt, SmallInt | Int | BigInt | LargeInt | Double | Varchar(_)) => true,
            (SmallInt, Int | BigInt | LargeInt | Double | Varchar(_)) => true,
            (Int, BigInt | LargeInt | Double | Date | Varchar(_)) => true,
            (BigInt, LargeInt | Double | Varchar(_)) => true,
            (LargeInt, Varchar(_)) => true,
            (Float, Double | Varchar(_)) => true,
            (Double, Varchar(_)) => true,
            (Char(_), Varchar(_)) => true,
            (Json, Varchar(_)) => true,
            (
                Varchar(_),
                Json | TinyInt | SmallInt | Int | BigInt | LargeInt | Float | Double | Date,
            ) => true,
            (DateTime, Date) | (Date, DateTime) => true,
            _ => false,
        }
    }

    /// Whether a change from this type to `to` keeps min/max zone maps valid, the condition
    /// for a metadata-only (fast schema evolution) MODIFY COLUMN in shared-data
    /// (`SchemaChangeTypeCompatibility.canReuseZonemapIndex`): the same primitive type, an
    /// integer widening (DOUBLE included), FLOAT to DOUBLE, DATE to DATETIME, CHAR to VARCHAR.
    pub fn zonemap_reusable(&self, to: &SrType) -> bool {
        use SrType::*;
        match (self, to) {
            (a, b) if std::mem::discriminant(a) == std::mem::discriminant(b) => true,
            (TinyInt, SmallInt | Int | BigInt | LargeInt | Double) => true,
            (SmallInt, Int | BigInt | LargeInt | Double) => true,
            (Int, BigInt | LargeInt | Double) => true,
            (BigInt, LargeInt | Double) => true,
            (Float, Double) => true,
            (Date, DateTime) => true,
            (Char(_), Varchar(_)) => true,
            _ => false,
        }
    }

    /// Converts a stored cell of type `from` into this type, as a schema change rewrites it.
    /// NULL stays NULL; anything else goes through its text form.
    pub fn convert_stored(&self, from: &SrType, cell: &Cell) -> Result<Cell, ConvError> {
        if from == self {
            return Ok(cell.clone());
        }
        let text = match cell {
            Cell::Null => return Ok(Cell::Null),
            Cell::Int(i) if *from == SrType::Boolean => (if *i != 0 { "1" } else { "0" }).into(),
            Cell::Int(i) => i.to_string(),
            Cell::Real(f) => f.to_string(),
            Cell::Text(s) => s.clone(),
            Cell::Blob(b) => String::from_utf8_lossy(b).into_owned(),
        };
        self.convert_text(&text)
    }

    /// Whether StarRocks allows the type in a primary key.
    pub fn allowed_in_primary_key(&self) -> bool {
        matches!(
            self,
            SrType::Boolean
                | SrType::TinyInt
                | SrType::SmallInt
                | SrType::Int
                | SrType::BigInt
                | SrType::LargeInt
                | SrType::Date
                | SrType::DateTime
                | SrType::Varchar(_)
        )
    }

    /// The value a NOT NULL column without a default gets when a partial update inserts a new
    /// row that does not list it (StarRocks fills the type's zero value).
    pub fn zero_value(&self) -> Cell {
        match self {
            SrType::Boolean
            | SrType::TinyInt
            | SrType::SmallInt
            | SrType::Int
            | SrType::BigInt
            | SrType::LargeInt => Cell::Int(0),
            SrType::Float | SrType::Double => Cell::Real(0.0),
            SrType::Decimal { scale, .. } => {
                Cell::Text(format_decimal(false, "0", &"0".repeat(usize::from(*scale))))
            }
            SrType::Char(_) | SrType::Varchar(_) => Cell::Text(String::new()),
            SrType::Date => Cell::Text("1970-01-01".into()),
            SrType::DateTime => Cell::Text("1970-01-01 00:00:00".into()),
            SrType::Json => Cell::Text("null".into()),
            SrType::Array(_) => Cell::Text("[]".into()),
            SrType::Varbinary(_) => Cell::Blob(Vec::new()),
        }
    }

    /// Converts one JSON value of a load. `Json::Null` becomes `Cell::Null`.
    pub fn convert_json(&self, v: &Json) -> Result<Cell, ConvError> {
        match v {
            Json::Null => Ok(Cell::Null),
            Json::String(s) => match self {
                SrType::Json => Ok(Cell::Text(v.to_string())),
                // The JSON reader wants a JSON array for an ARRAY column; a string (even one
                // holding an array) is "Failed to parse value as array".
                SrType::Array(_) => Err(ConvError::Invalid(format!(
                    "Failed to parse value as array: '{}'",
                    clip(s)
                ))),
                _ => self.convert_text(s),
            },
            Json::Bool(b) => match self {
                SrType::Boolean => Ok(Cell::Int(i64::from(*b))),
                SrType::Json => Ok(Cell::Text(v.to_string())),
                SrType::Char(_) | SrType::Varchar(_) | SrType::Varbinary(_) => {
                    self.convert_text(if *b { "true" } else { "false" })
                }
                _ => Err(invalid(v, self)),
            },
            Json::Number(n) => match self {
                SrType::Json => Ok(Cell::Text(v.to_string())),
                SrType::Float | SrType::Double => match n.as_f64() {
                    Some(f) => self.convert_f64(f),
                    None => Err(invalid(v, self)),
                },
                SrType::Array(_) | SrType::Date | SrType::DateTime => Err(invalid(v, self)),
                _ => self.convert_text(&n.to_string()),
            },
            Json::Array(items) => match self {
                SrType::Json => Ok(Cell::Text(v.to_string())),
                // Elements are converted with invalid-as-null always on (StarRocks
                // `add_nullable_array_column` passes `invalid_as_null = true`), so a bad
                // element, `[1,2]` in an ARRAY<INT> included, becomes null and strict mode
                // never sees it. ARRAY<ARRAY<T>> recurses.
                SrType::Array(elem) => {
                    let out = items
                        .iter()
                        .map(|item| match (elem.as_ref(), elem.convert_json(item)) {
                            (SrType::Array(_) | SrType::Json, Ok(Cell::Text(t))) => {
                                serde_json::from_str(&t).unwrap_or(Json::Null)
                            }
                            (_, Ok(c)) => c.to_json(),
                            (_, Err(_)) => Json::Null,
                        })
                        .collect();
                    Ok(Cell::Text(Json::Array(out).to_string()))
                }
                SrType::Char(_) | SrType::Varchar(_) => self.convert_text(&v.to_string()),
                _ => Err(invalid(v, self)),
            },
            Json::Object(_) => match self {
                SrType::Json => Ok(Cell::Text(v.to_string())),
                SrType::Char(_) | SrType::Varchar(_) => self.convert_text(&v.to_string()),
                _ => Err(invalid(v, self)),
            },
        }
    }

    fn convert_f64(&self, f: f64) -> Result<Cell, ConvError> {
        if !f.is_finite() {
            return Err(ConvError::Invalid(format!(
                "Value '{f}' is not a finite number"
            )));
        }
        match self {
            SrType::Float => Ok(Cell::Real(f64::from(f as f32))),
            _ => Ok(Cell::Real(f)),
        }
    }

    /// Converts one text value (a CSV field, a JSON string, a SQL literal, a DEFAULT).
    pub fn convert_text(&self, s: &str) -> Result<Cell, ConvError> {
        match self {
            SrType::Boolean => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "1" => Ok(Cell::Int(1)),
                "false" | "0" => Ok(Cell::Int(0)),
                _ => Err(invalid_text(s, self)),
            },
            SrType::TinyInt => int_in(s, -128, 127, self),
            SrType::SmallInt => int_in(s, -32768, 32767, self),
            SrType::Int => int_in(s, i64::from(i32::MIN), i64::from(i32::MAX), self),
            SrType::BigInt => int_in(s, i64::MIN, i64::MAX, self),
            SrType::LargeInt => {
                let t = s.trim();
                let v = parse_integer_text(t)
                    .and_then(|t| t.parse::<i128>().ok())
                    .ok_or_else(|| invalid_text(s, self))?;
                Ok(match i64::try_from(v) {
                    Ok(i) => Cell::Int(i),
                    Err(_) => Cell::Text(v.to_string()),
                })
            }
            SrType::Float | SrType::Double => {
                let t = s.trim();
                match t.parse::<f64>() {
                    Ok(f) if t.chars().all(|c| c.is_ascii_digit() || "+-.eE".contains(c)) => {
                        self.convert_f64(f)
                    }
                    _ => Err(invalid_text(s, self)),
                }
            }
            SrType::Decimal { precision, scale } => {
                parse_decimal(s.trim(), *precision, *scale).map(Cell::Text)
            }
            SrType::Char(n) | SrType::Varchar(n) => {
                if s.len() > *n as usize {
                    Err(ConvError::TooLong(format!(
                        "Value length is beyond the capacity. length={}, capacity={n}",
                        s.len()
                    )))
                } else {
                    Ok(Cell::Text(s.to_owned()))
                }
            }
            SrType::Varbinary(n) => {
                if s.len() > *n as usize {
                    Err(ConvError::TooLong(format!(
                        "Value length is beyond the capacity. length={}, capacity={n}",
                        s.len()
                    )))
                } else {
                    Ok(Cell::Blob(s.as_bytes().to_vec()))
                }
            }
            SrType::Date => parse_datetime(s.trim())
                .map(|dt| Cell::Text(dt.date_string()))
                .ok_or_else(|| invalid_text(s, self)),
            SrType::DateTime => parse_datetime(s.trim())
                .map(|dt| Cell::Text(dt.to_string()))
                .ok_or_else(|| invalid_text(s, self)),
            SrType::Json => serde_json::from_str::<Json>(s)
                .map(|v| Cell::Text(v.to_string()))
                .map_err(|_| invalid_text(s, self)),
            SrType::Array(_) => {
                let v: Json = serde_json::from_str(s).map_err(|_| invalid_text(s, self))?;
                if v.is_array() {
                    self.convert_json(&v)
                } else {
                    Err(invalid_text(s, self))
                }
            }
        }
    }

    /// Orders two stored cells of this type, NULL first (used by `merge_condition`).
    pub fn compare(&self, a: &Cell, b: &Cell) -> Ordering {
        match (a, b) {
            (Cell::Null, Cell::Null) => Ordering::Equal,
            (Cell::Null, _) => Ordering::Less,
            (_, Cell::Null) => Ordering::Greater,
            (Cell::Int(x), Cell::Int(y)) => x.cmp(y),
            (Cell::Real(x), Cell::Real(y)) => x.partial_cmp(y).unwrap_or(Ordering::Equal),
            _ => match self {
                SrType::LargeInt => big_int(a).cmp(&big_int(b)),
                SrType::Decimal { .. } => compare_decimal_text(&text_of(a), &text_of(b)),
                _ => text_of(a).cmp(&text_of(b)),
            },
        }
    }
}

fn big_int(c: &Cell) -> i128 {
    match c {
        Cell::Int(i) => i128::from(*i),
        Cell::Text(s) => s.parse().unwrap_or(0),
        _ => 0,
    }
}

fn text_of(c: &Cell) -> String {
    match c {
        Cell::Null => String::new(),
        Cell::Int(i) => i.to_string(),
        Cell::Real(f) => f.to_string(),
        Cell::Text(s) => s.clone(),
        Cell::Blob(b) => String::from_utf8_lossy(b).into_owned(),
    }
}

fn clip(s: &str) -> String {
    if s.len() <= 64 {
        return s.to_owned();
    }
    let mut end = 64;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

fn invalid(v: &Json, ty: &SrType) -> ConvError {
    ConvError::Invalid(format!(
        "Value '{}' can not be converted to {}",
        clip(&v.to_string()),
        ty.sql()
    ))
}

fn invalid_text(s: &str, ty: &SrType) -> ConvError {
    ConvError::Invalid(format!(
        "Value '{}' can not be converted to {}",
        clip(s),
        ty.sql()
    ))
}

/// Accepts `[+-]digits` and returns the text without a leading `+`.
fn parse_integer_text(t: &str) -> Option<&str> {
    let body = t.strip_prefix('+').unwrap_or(t);
    let digits = body.strip_prefix('-').unwrap_or(body);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(body)
}

fn int_in(s: &str, min: i64, max: i64, ty: &SrType) -> Result<Cell, ConvError> {
    let t = s.trim();
    let v: i128 = if let Some(body) = parse_integer_text(t) {
        body.parse().map_err(|_| out_of_range(s, ty))?
    } else {
        // JSON numbers such as 3.0 or 1e3 are integral values written as floats.
        match t.parse::<f64>() {
            Ok(f) if f.is_finite() && f.fract() == 0.0 && t.bytes().any(|b| b.is_ascii_digit()) => {
                f as i128
            }
            _ => return Err(invalid_text(s, ty)),
        }
    };
    if v < i128::from(min) || v > i128::from(max) {
        return Err(out_of_range(s, ty));
    }
    Ok(Cell::Int(v as i64))
}

fn out_of_range(s: &str, ty: &SrType) -> ConvError {
    ConvError::Invalid(format!(
        "Value '{}' is out of range of {}",
        clip(s),
        ty.sql()
    ))
}

fn format_decimal(negative: bool, int: &str, frac: &str) -> String {
    let zero = int.bytes().all(|b| b == b'0') && frac.bytes().all(|b| b == b'0');
    let sign = if negative && !zero { "-" } else { "" };
    if frac.is_empty() {
        format!("{sign}{int}")
    } else {
        format!("{sign}{int}.{frac}")
    }
}

/// Parses decimal text (with an optional exponent, as JSON numbers may carry) into the
/// normalized form with exactly `scale` fraction digits, rounding half up.
pub fn parse_decimal(t: &str, precision: u8, scale: u8) -> Result<String, ConvError> {
    let bad = || {
        ConvError::Invalid(format!(
            "Value '{}' can not be converted to decimal({precision},{scale})",
            clip(t)
        ))
    };
    let (negative, body) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let (mantissa, exp) = match body.find(['e', 'E']) {
        Some(i) => (&body[..i], body[i + 1..].parse::<i32>().map_err(|_| bad())?),
        None => (body, 0),
    };
    let (int_part, frac_part) = match mantissa.find('.') {
        Some(i) => (&mantissa[..i], &mantissa[i + 1..]),
        None => (mantissa, ""),
    };
    if (int_part.is_empty() && frac_part.is_empty())
        || !int_part.bytes().all(|b| b.is_ascii_digit())
        || !frac_part.bytes().all(|b| b.is_ascii_digit())
        || exp.abs() > 400
    {
        return Err(bad());
    }
    // Shift the decimal point by the exponent.
    let mut digits: Vec<u8> = int_part.bytes().chain(frac_part.bytes()).collect();
    let mut point = int_part.len() as i64 + i64::from(exp);
    if point < 0 {
        let pad = (-point) as usize;
        digits.splice(0..0, std::iter::repeat_n(b'0', pad));
        point = 0;
    }
    let point = point as usize;
    if digits.len() < point {
        digits.resize(point, b'0');
    }
    let scale = usize::from(scale);
    let mut int_digits: Vec<u8> = digits[..point].to_vec();
    let mut frac_digits: Vec<u8> = digits[point..].to_vec();
    let round_up = frac_digits.len() > scale && frac_digits[scale] >= b'5';
    frac_digits.truncate(scale);
    frac_digits.resize(scale, b'0');
    if round_up {
        let mut carry = true;
        for d in frac_digits
            .iter_mut()
            .rev()
            .chain(int_digits.iter_mut().rev())
        {
            if *d == b'9' {
                *d = b'0';
            } else {
                *d += 1;
                carry = false;
                break;
            }
        }
        if carry {
            int_digits.insert(0, b'1');
        }
    }
    while int_digits.len() > 1 && int_digits[0] == b'0' {
        int_digits.remove(0);
    }
    if int_digits.is_empty() {
        int_digits.push(b'0');
    }
    let int_len = if int_digits == b"0" {
        0
    } else {
        int_digits.len()
    };
    if int_len + scale > usize::from(precision) {
        return Err(ConvError::Invalid(format!(
            "Value '{}' is out of range of decimal({precision},{scale})",
            clip(t)
        )));
    }
    let int_s = String::from_utf8(int_digits).map_err(|_| bad())?;
    let frac_s = String::from_utf8(frac_digits).map_err(|_| bad())?;
    Ok(format_decimal(negative, &int_s, &frac_s))
}

/// Compares two normalized decimal texts numerically.
fn compare_decimal_text(a: &str, b: &str) -> Ordering {
    let split = |s: &str| -> (bool, String, String) {
        let (neg, body) = match s.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let (i, f) = body.split_once('.').unwrap_or((body, ""));
        (
            neg,
            i.trim_start_matches('0').to_owned(),
            f.trim_end_matches('0').to_owned(),
        )
    };
    let (an, ai, af) = split(a);
    let (bn, bi, bf) = split(b);
    let magnitude = ai
        .len()
        .cmp(&bi.len())
        .then_with(|| ai.cmp(&bi))
        .then_with(|| af.cmp(&bf));
    let a_zero = ai.is_empty() && af.is_empty();
    let b_zero = bi.is_empty() && bf.is_empty();
    match (an && !a_zero, bn && !b_zero) {
        (false, false) => magnitude,
        (true, true) => magnitude.reverse(),
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
    }
}

/// A calendar date and time of day with microseconds, no zone (StarRocks DATETIME).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateTime {
    pub year: u32,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    pub micros: u32,
}

impl DateTime {
    fn date_string(&self) -> String {
        format!("{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

impl std::fmt::Display for DateTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {:02}:{:02}:{:02}",
            self.date_string(),
            self.hour,
            self.minute,
            self.second
        )?;
        if self.micros != 0 {
            write!(f, ".{:06}", self.micros)?;
        }
        Ok(())
    }
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        _ => 0,
    }
}

fn num(s: &str, len: usize) -> Option<u32> {
    if s.len() == len && s.bytes().all(|b| b.is_ascii_digit()) {
        s.parse().ok()
    } else {
        None
    }
}

/// Parses `YYYY-MM-DD`, `YYYYMMDD`, and either followed by ` ` or `T` and
/// `HH:MM[:SS[.f{1,9}]]`. Returns None for anything else or an impossible date.
pub fn parse_datetime(s: &str) -> Option<DateTime> {
    if !s.is_ascii() {
        return None;
    }
    let (date, time) = match s.find([' ', 'T']) {
        Some(i) => (&s[..i], Some(s[i + 1..].trim_start())),
        None => (s, None),
    };
    let (year, month, day) = if date.len() == 8 && !date.contains('-') {
        (
            num(&date[0..4], 4)?,
            num(&date[4..6], 2)?,
            num(&date[6..8], 2)?,
        )
    } else {
        let mut parts = date.split('-');
        let y = parts.next()?;
        let m = parts.next()?;
        let d = parts.next()?;
        if parts.next().is_some()
            || y.len() != 4
            || m.is_empty()
            || m.len() > 2
            || d.is_empty()
            || d.len() > 2
        {
            return None;
        }
        (num(y, 4)?, num(m, m.len())?, num(d, d.len())?)
    };
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    let mut dt = DateTime {
        year,
        month,
        day,
        hour: 0,
        minute: 0,
        second: 0,
        micros: 0,
    };
    if let Some(time) = time {
        let (hms, frac) = match time.split_once('.') {
            Some((a, b)) => (a, Some(b)),
            None => (time, None),
        };
        let mut parts = hms.split(':');
        let h = parts.next()?;
        let m = parts.next()?;
        let sec = parts.next();
        if parts.next().is_some() || h.is_empty() || h.len() > 2 || m.len() != 2 {
            return None;
        }
        dt.hour = num(h, h.len())?;
        dt.minute = num(m, 2)?;
        dt.second = match sec {
            Some(sec) => num(sec, 2)?,
            None => 0,
        };
        if dt.hour > 23 || dt.minute > 59 || dt.second > 59 {
            return None;
        }
        if let Some(frac) = frac {
            if frac.is_empty() || frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let mut six: String = frac.chars().take(6).collect();
            while six.len() < 6 {
                six.push('0');
            }
            dt.micros = six.parse().ok()?;
        }
    }
    Some(dt)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_change_matrix_follows_starrocks() {
        use SrType::*;
        assert!(TinyInt.schema_change_allowed(&Int));
        assert!(Int.schema_change_allowed(&LargeInt));
        assert!(Int.schema_change_allowed(&Varchar(11)));
        assert!(
            Varchar(8).schema_change_allowed(&Varchar(4)),
            "length is checked apart"
        );
        assert!(Date.schema_change_allowed(&DateTime));
        assert!(!Int.schema_change_allowed(&SmallInt));
        assert!(!LargeInt.schema_change_allowed(&BigInt));
        assert!(!Boolean.schema_change_allowed(&Int));
        assert!(!Double.schema_change_allowed(&Float));
        let d = |precision, scale| Decimal { precision, scale };
        assert!(d(10, 2).schema_change_allowed(&d(12, 3)));
        assert!(
            !d(10, 2).schema_change_allowed(&d(10, 3)),
            "integer digits shrink"
        );
        assert!(!Int.schema_change_allowed(&d(18, 0)));
        assert_eq!(d(10, 2).fe_name(), "DECIMAL64(10,2)");
    }

    #[test]
    fn stored_cells_convert_to_the_new_type() {
        use SrType::*;
        assert_eq!(
            Int.convert_stored(&TinyInt, &Cell::Int(5)),
            Ok(Cell::Int(5))
        );
        assert_eq!(
            Varchar(10).convert_stored(&Int, &Cell::Int(-7)),
            Ok(Cell::Text("-7".into()))
        );
        assert_eq!(
            Double.convert_stored(&Int, &Cell::Int(2)),
            Ok(Cell::Real(2.0))
        );
        assert_eq!(
            DateTime.convert_stored(&Date, &Cell::Text("2024-01-02".into())),
            Ok(Cell::Text("2024-01-02 00:00:00".into()))
        );
        assert_eq!(Int.convert_stored(&Varchar(5), &Cell::Null), Ok(Cell::Null));
        assert!(Int
            .convert_stored(&Varchar(5), &Cell::Text("abc".into()))
            .is_err());
    }

    #[test]
    fn varchar_counts_bytes_not_characters() {
        let t = SrType::Varchar(3);
        assert_eq!(t.convert_text("abc"), Ok(Cell::Text("abc".into())));
        assert!(matches!(t.convert_text("ééé"), Err(ConvError::TooLong(_))));
    }

    #[test]
    fn tinyint_out_of_range_is_invalid() {
        assert!(matches!(
            SrType::TinyInt.convert_json(&Json::from(200)),
            Err(ConvError::Invalid(_))
        ));
        assert_eq!(
            SrType::TinyInt.convert_json(&Json::from(-128)),
            Ok(Cell::Int(-128))
        );
    }

    #[test]
    fn non_numeric_int_is_invalid() {
        assert!(SrType::Int.convert_text("abc").is_err());
        assert_eq!(SrType::BigInt.convert_text(" 42 "), Ok(Cell::Int(42)));
    }

    #[test]
    fn decimal_is_normalized_to_scale_with_half_up_rounding() {
        assert_eq!(parse_decimal("12.345", 10, 2).unwrap(), "12.35");
        assert_eq!(parse_decimal("-0.001", 10, 2).unwrap(), "0.00");
        assert_eq!(parse_decimal("7", 10, 2).unwrap(), "7.00");
        assert_eq!(parse_decimal("1e2", 10, 0).unwrap(), "100");
        assert_eq!(parse_decimal("9.999", 4, 2).unwrap(), "10.00");
        assert!(parse_decimal("123.4", 4, 2).is_err());
        assert!(parse_decimal("1.2.3", 10, 2).is_err());
    }

    #[test]
    fn decimal_text_compares_numerically() {
        assert_eq!(compare_decimal_text("10.00", "9.99"), Ordering::Greater);
        assert_eq!(compare_decimal_text("-10.00", "-9.99"), Ordering::Less);
        assert_eq!(compare_decimal_text("0.00", "-0.00"), Ordering::Equal);
    }

    #[test]
    fn datetime_accepts_iso_forms_and_rejects_impossible_dates() {
        assert_eq!(
            parse_datetime("2024-02-29 10:11:12.5").unwrap().to_string(),
            "2024-02-29 10:11:12.500000"
        );
        assert_eq!(
            parse_datetime("2024-01-02T03:04:05").unwrap().to_string(),
            "2024-01-02 03:04:05"
        );
        assert_eq!(
            parse_datetime("2024-01-02").unwrap().to_string(),
            "2024-01-02 00:00:00"
        );
        assert!(parse_datetime("2023-02-29").is_none());
        assert!(parse_datetime("2024-13-01").is_none());
        assert!(parse_datetime("2024-01-01 24:00:00").is_none());
        assert!(parse_datetime("yesterday").is_none());
        assert!(parse_datetime("2024é1").is_none());
        assert!(parse_datetime("20é4-01-01").is_none());
    }

    #[test]
    fn json_column_keeps_nested_values() {
        let v: Json = serde_json::from_str(r#"{"a":[1,2]}"#).unwrap();
        assert_eq!(
            SrType::Json.convert_json(&v),
            Ok(Cell::Text(r#"{"a":[1,2]}"#.into()))
        );
    }

    #[test]
    fn array_elements_are_converted_by_element_type() {
        let t = SrType::Array(Box::new(SrType::Int));
        let v: Json = serde_json::from_str("[1, null, 3]").unwrap();
        assert_eq!(t.convert_json(&v), Ok(Cell::Text("[1,null,3]".into())));
        let bad: Json = serde_json::from_str(r#"["x", [1, 2], 4]"#).unwrap();
        assert_eq!(t.convert_json(&bad), Ok(Cell::Text("[null,null,4]".into())));
        let nested = SrType::Array(Box::new(t));
        let v: Json = serde_json::from_str("[[1,2],[3]]").unwrap();
        assert_eq!(
            nested.convert_json(&v),
            Ok(Cell::Text("[[1,2],[3]]".into()))
        );
    }

    #[test]
    fn boolean_accepts_json_bools_and_zero_one() {
        assert_eq!(
            SrType::Boolean.convert_json(&Json::Bool(true)),
            Ok(Cell::Int(1))
        );
        assert_eq!(
            SrType::Boolean.convert_json(&Json::from(0)),
            Ok(Cell::Int(0))
        );
    }
}
