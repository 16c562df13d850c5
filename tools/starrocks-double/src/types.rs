//! StarRocks column types, and how a loaded value becomes a stored cell.
//!
//! Why this module exists: the double has to accept and reject load values where StarRocks
//! does, because a client that passes against the double must not start losing rows against
//! the real thing. So every conversion answers one of these:
//!
//! ```text
//! JSON / CSV value ──convert──▶ Ok(Cell)                    stored as is
//!                              Err(ConvError::Invalid)      reader/cast failure: NULL, or filtered in strict mode
//!                              Err(ConvError::TooLong)      length overflow found by the reader: same rule
//!                              Err(ConvError::OutOfBounds)  refused by the table sink: filtered in both modes
//! ```
//!
//! # Strict mode, as StarRocks defines it
//!
//! The documentation (`docs/en/loading/load_concept/strict_mode.md`): a source value that
//! cannot be converted ("unmatched data types", "field length overflows", `abc` or `2000` into
//! TINYINT) becomes NULL when strict mode is off and filters the row when it is on; a source
//! NULL (`\N` in CSV, `null` in JSON) is loaded as NULL in both modes; a NULL headed for a NOT
//! NULL column is an error (the row is filtered) in both modes.
//!
//! The BE code that does it (StarRocks `be/src`, a Stream Load plans its source columns with
//! the table's types, FE `Load.initColumns` with `useVectorizedLoad`):
//!
//! - CSV: `exec/csv_scanner.cpp` passes `invalid_field_as_null = !strict_mode` to the
//!   `formats/csv/*_converter.cpp` readers; a field that does not read is NULL
//!   (`nullable_converter.cpp`) or, in strict mode, filters the row with `The field (name = c,
//!   pos = i) is out of range. Type: T, Value length: n, Value: v`. A VARCHAR(n) field longer
//!   than n bytes is such a field (`string_converter.cpp`): NULL when not strict (StarRocks
//!   issues #15736, #67522; #33747 for the NOT NULL message).
//! - JSON: `exec/json_scanner.cpp` calls `add_adaptive_nullable_column(..., !strict_mode)`
//!   (`formats/json/nullable_column.cpp`): BOOLEAN, TINYINT..BIGINT, FLOAT, DOUBLE, CHAR,
//!   VARCHAR, JSON and ARRAY are read as themselves (`numeric_column.cpp`,
//!   `binary_column.cpp`), an error there filters the row in strict mode with the reader's
//!   message; LARGEINT, DECIMAL, DATE, DATETIME and VARBINARY are read as text and cast, and a
//!   non-null text that casts to NULL filters the row in strict mode with `Value 'v' is out of
//!   range. The type of 'c' is T` (`exec/file_scanner.cpp`, `FileScanner::materialize`).
//! - The table sink (`exec/tablet_sink.cpp`, `OlapTableSink::_validate_data`), whatever the
//!   mode: `NULL value in non-nullable column 'c'`, `Decimal 'v' is out of range...`, `String
//!   'v'(length=n) is too long...`.
//! - Error log lines are `Error: <message>. Row: <row>` (`runtime/runtime_state.cpp`).
//!
//! Per-type rules are on the functions below (`convert_text_for` for CSV fields, `load_json`
//! for JSON values).
//!
//! Cells are stored in SQLite in a form that round-trips: integers as INTEGER, floating point as
//! REAL (NaN as the text `nan`), DECIMAL as normalized text with exactly `scale` fraction
//! digits, DATE/DATETIME as `YYYY-MM-DD[ HH:MM:SS[.ffffff]]`, JSON and ARRAY as compact JSON
//! text, VARBINARY as a BLOB.

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

/// Why a value could not become a cell of its column type, and so what a load does with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvError {
    /// The load's reader (or its cast) cannot convert the value: wrong type, out of range,
    /// malformed date or JSON, not an array. NULL unless `strict_mode`; with it the row is
    /// filtered. A NOT NULL column filters the row either way.
    #[error("{0}")]
    Invalid(String),
    /// Longer than CHAR/VARCHAR/VARBINARY(n) allows, caught by the reader: the same rule as
    /// `Invalid` (NULL unless `strict_mode`).
    #[error("{0}")]
    TooLong(String),
    /// The value converts, but the table sink's own check refuses it (a VARBINARY too long in
    /// a JSON load; a DECIMAL past its precision, which the reader's digit truncation keeps
    /// from happening): filtered in both modes.
    #[error("{0}")]
    OutOfBounds(String),
}

impl ConvError {
    /// The message.
    pub fn message(&self) -> &str {
        match self {
            ConvError::Invalid(m) | ConvError::TooLong(m) | ConvError::OutOfBounds(m) => m,
        }
    }
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

    /// The type as the BE names it in load error messages (`TypeDescriptor::debug_string`):
    /// `INT`, `VARCHAR(5)`, `DECIMAL64(10, 2)`, `ARRAY<INT>`.
    pub fn debug_name(&self) -> String {
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
                    19..=38 => 128,
                    _ => 256,
                };
                format!("DECIMAL{width}({precision}, {scale})")
            }
            SrType::Char(n) => format!("CHAR({n})"),
            SrType::Varchar(n) => format!("VARCHAR({n})"),
            SrType::Date => "DATE".into(),
            SrType::DateTime => "DATETIME".into(),
            SrType::Json => "JSON".into(),
            SrType::Array(t) => format!("ARRAY<{}>", t.debug_name()),
            SrType::Varbinary(n) => format!("VARBINARY({n})"),
        }
    }

    /// Converts one value of a JSON-format load into the column `column`, as the BE's JSON
    /// reader does (see the module doc). `Json::Null` becomes `Cell::Null`. The error messages
    /// are the reader's (`Status::to_string()`, so with its `Invalid argument: ` prefix) or,
    /// for the types read as text and then cast, the scanner's strict-mode message.
    pub fn load_json(&self, v: &Json, column: &str) -> Result<Cell, ConvError> {
        if v.is_null() {
            return Ok(Cell::Null);
        }
        match self {
            SrType::Boolean => json_boolean(v, column),
            SrType::TinyInt => json_int(v, column, -128, 127),
            SrType::SmallInt => json_int(v, column, -32768, 32767),
            SrType::Int => json_int(v, column, i64::from(i32::MIN), i64::from(i32::MAX)),
            SrType::BigInt => json_int(v, column, i64::MIN, i64::MAX),
            SrType::Float => json_float(v, column, true),
            SrType::Double => json_float(v, column, false),
            SrType::Json => Ok(Cell::Text(v.to_string())),
            SrType::Char(n) | SrType::Varchar(n) => {
                let text = json_as_text(v);
                if text.len() > *n as usize {
                    Err(ConvError::TooLong(format!(
                        "Invalid argument: Value length is beyond the capacity. column={column}, capacity={n}"
                    )))
                } else {
                    Ok(Cell::Text(text))
                }
            }
            // `add_nullable_array_column` converts the elements with invalid-as-null always
            // on, so a bad element (`[1,2]` in an ARRAY<INT> included) becomes null and strict
            // mode never sees it; only a value that is not an array at all is an error.
            SrType::Array(elem) => match v {
                Json::Array(items) => {
                    let out = items
                        .iter()
                        .map(|item| match elem.load_json(item, column) {
                            Ok(c) => elem.cell_to_json(c),
                            Err(_) => Json::Null,
                        })
                        .collect();
                    Ok(Cell::Text(Json::Array(out).to_string()))
                }
                _ => Err(ConvError::Invalid(format!(
                    "Invalid argument: Failed to parse value as array, column={column}"
                ))),
            },
            // Read as VARCHAR, cast to VARBINARY (no length check there), and measured by
            // the table sink, which filters whatever the mode.
            SrType::Varbinary(n) => {
                let text = json_as_text(v);
                if text.len() > *n as usize {
                    Err(ConvError::OutOfBounds(format!(
                        "String '{}'(length={}) is too long. The max length of '{column}' is {n}",
                        clip_at(&text, 100),
                        text.len()
                    )))
                } else {
                    Ok(Cell::Blob(text.into_bytes()))
                }
            }
            // LARGEINT, DECIMAL, DATE, DATETIME: read as VARCHAR(65533) (`construct_json_type`)
            // and cast; a cast that gives NULL for a non-null source is the scanner's
            // strict-mode filter (`FileScanner::materialize`).
            SrType::LargeInt | SrType::Decimal { .. } | SrType::Date | SrType::DateTime => {
                let text = json_as_text(v);
                // The cast of a string to LARGEINT: integer text only (the stricter reading;
                // the CSV reader's decimal fallback is not assumed for the cast).
                let converted = match self {
                    SrType::LargeInt => match sr_int(&text, i128::MIN, i128::MAX) {
                        IntText::Ok(i) => Ok(large_int_cell(i)),
                        _ => Err(ConvError::Invalid(String::new())),
                    },
                    _ => self.convert_text_for(&text, column),
                };
                match converted {
                    Err(ConvError::Invalid(_)) | Err(ConvError::TooLong(_)) => {
                        Err(ConvError::Invalid(format!(
                            "Value '{}' is out of range. The type of '{column}' is {}",
                            clip(&text),
                            self.debug_name()
                        )))
                    }
                    other => other,
                }
            }
        }
    }

    /// Converts one JSON value of a load (no column name in the messages).
    pub fn convert_json(&self, v: &Json) -> Result<Cell, ConvError> {
        self.load_json(v, "")
    }

    /// A converted cell as an ARRAY element.
    fn cell_to_json(&self, c: Cell) -> Json {
        match (self, c) {
            (SrType::Array(_) | SrType::Json, Cell::Text(t)) => {
                serde_json::from_str(&t).unwrap_or(Json::Null)
            }
            (_, c) => c.to_json(),
        }
    }

    /// Converts one text value: a CSV field (the BE's CSV converters, `be/src/formats/csv/`),
    /// a SQL literal or a DEFAULT.
    pub fn convert_text(&self, s: &str) -> Result<Cell, ConvError> {
        self.convert_text_for(s, "")
    }

    /// [`SrType::convert_text`] for the column `column` (named in the sink's messages).
    pub fn convert_text_for(&self, s: &str, column: &str) -> Result<Cell, ConvError> {
        match self {
            SrType::Boolean => csv_boolean(s).ok_or_else(|| invalid_text(s, self)),
            SrType::TinyInt => csv_narrow_int(s, -128, 127).ok_or_else(|| invalid_text(s, self)),
            SrType::SmallInt => {
                csv_narrow_int(s, -32768, 32767).ok_or_else(|| invalid_text(s, self))
            }
            SrType::Int => csv_narrow_int(s, i64::from(i32::MIN), i64::from(i32::MAX))
                .ok_or_else(|| invalid_text(s, self)),
            SrType::BigInt => csv_wide_int(s, i128::from(i64::MIN), i128::from(i64::MAX))
                .ok_or_else(|| invalid_text(s, self)),
            SrType::LargeInt => {
                csv_wide_int(s, i128::MIN, i128::MAX).ok_or_else(|| invalid_text(s, self))
            }
            SrType::Float => sr_float(s)
                .map(|f| real_cell(f64::from(f as f32)))
                .ok_or_else(|| invalid_text(s, self)),
            SrType::Double => sr_float(s)
                .map(real_cell)
                .ok_or_else(|| invalid_text(s, self)),
            SrType::Decimal { precision, scale } => {
                parse_decimal_for(s, *precision, *scale, column).map(Cell::Text)
            }
            SrType::Char(n) | SrType::Varchar(n) => {
                if s.len() > *n as usize {
                    Err(too_long(s.len(), *n))
                } else {
                    Ok(Cell::Text(s.to_owned()))
                }
            }
            // Bytes as sent (StarRocks 3.4+ first tries to base64-decode a CSV field; not
            // modelled, see the README).
            SrType::Varbinary(n) => {
                if s.len() > *n as usize {
                    Err(too_long(s.len(), *n))
                } else {
                    Ok(Cell::Blob(s.as_bytes().to_vec()))
                }
            }
            SrType::Date => parse_datetime(s)
                .map(|dt| Cell::Text(dt.date_string()))
                .ok_or_else(|| invalid_text(s, self)),
            SrType::DateTime => parse_datetime(s)
                .map(|dt| Cell::Text(dt.to_string()))
                .ok_or_else(|| invalid_text(s, self)),
            SrType::Json => serde_json::from_str::<Json>(s)
                .map(|v| Cell::Text(v.to_string()))
                .map_err(|_| invalid_text(s, self)),
            SrType::Array(elem) => csv_array(elem, s).ok_or_else(|| invalid_text(s, self)),
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
    clip_at(s, 64)
}

/// The first `max` bytes of `s` (on a character boundary) followed by `...` when cut.
fn clip_at(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

fn invalid_text(s: &str, ty: &SrType) -> ConvError {
    ConvError::Invalid(format!(
        "Value '{}' can not be converted to {}",
        clip(s),
        ty.sql()
    ))
}

fn too_long(len: usize, capacity: u32) -> ConvError {
    ConvError::TooLong(format!(
        "Value length is beyond the capacity. length={len}, capacity={capacity}"
    ))
}

/// `StringParser::is_whitespace`.
fn sr_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\u{0b}' | '\u{0c}' | '\r')
}

/// What `StringParser::string_to_int` makes of a text.
#[derive(Debug, PartialEq)]
enum IntText {
    Ok(i128),
    /// Digits, but beyond the type's range (`PARSE_OVERFLOW`/`PARSE_UNDERFLOW`).
    Overflow,
    Fail,
}

/// `StringParser::string_to_int` (`be/src/util/string_parser.hpp`): whitespace around the
/// number, an optional sign, decimal digits. A lone sign is refused (the parser's fast path
/// turns `-` into 0; the stricter reading is kept).
fn sr_int(s: &str, min: i128, max: i128) -> IntText {
    let t = s.trim_matches(sr_space);
    let (negative, digits) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return IntText::Fail;
    }
    let mut v: i128 = 0;
    for b in digits.bytes() {
        let d = i128::from(b - b'0');
        let next = v.checked_mul(10).and_then(|x| {
            if negative {
                x.checked_sub(d)
            } else {
                x.checked_add(d)
            }
        });
        match next {
            Some(x) => v = x,
            None => return IntText::Overflow,
        }
    }
    if v < min || v > max {
        IntText::Overflow
    } else {
        IntText::Ok(v)
    }
}

/// `StringParser::string_to_float`: whitespace around, a sign, then `inf...`/`nan` (any case)
/// or digits with `.` and one exponent. A value beyond `f64` is an overflow (None). The BE
/// accepts the longest number prefix (`1.2.3` reads as 1.2); the whole text must be a number
/// here (stricter reading).
fn sr_float(s: &str) -> Option<f64> {
    let t = s.trim_matches(sr_space);
    let (negative, body) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    if body.is_empty() {
        return None;
    }
    let lower = body.to_ascii_lowercase();
    if let Some(k) = lower.find(['i', 'n']) {
        let v = if lower[k..].starts_with("inf") {
            f64::INFINITY
        } else if lower[k..].starts_with("nan") {
            f64::NAN
        } else {
            return None;
        };
        return Some(if negative { -v } else { v });
    }
    let ok_chars = body.bytes().enumerate().all(|(k, b)| {
        b.is_ascii_digit()
            || b == b'.'
            || b == b'e'
            || b == b'E'
            || ((b == b'-' || b == b'+') && k > 0 && matches!(body.as_bytes()[k - 1], b'e' | b'E'))
    });
    if !ok_chars {
        return None;
    }
    let v: f64 = body.parse().ok()?;
    if v.is_infinite() {
        return None;
    }
    Some(if negative { -v } else { v })
}

/// `StringParser::string_to_bool`: `1`, `0`, or `true`/`false` in any case, with whitespace
/// before and after the words.
fn sr_bool(s: &str) -> Option<bool> {
    let t = s.trim_start_matches(sr_space);
    if t == "1" {
        return Some(true);
    }
    if t == "0" {
        return Some(false);
    }
    let word = t.trim_end_matches(sr_space).to_ascii_lowercase();
    match word.as_str() {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

/// A stored DOUBLE/FLOAT; NaN is kept as the text `nan` (SQLite would store NULL).
fn real_cell(f: f64) -> Cell {
    if f.is_nan() {
        Cell::Text("nan".into())
    } else {
        Cell::Real(f)
    }
}

fn large_int_cell(v: i128) -> Cell {
    match i64::try_from(v) {
        Ok(i) => Cell::Int(i),
        Err(_) => Cell::Text(v.to_string()),
    }
}

/// CSV BOOLEAN (`csv/boolean_converter.cpp`): `string_to_bool`, else any number (non-zero is
/// true, NaN included).
fn csv_boolean(s: &str) -> Option<Cell> {
    let b = match sr_bool(s) {
        Some(b) => b,
        None => sr_float(s)? != 0.0,
    };
    Some(Cell::Int(i64::from(b)))
}

/// CSV TINYINT/SMALLINT/INT (`csv/numeric_converter.cpp`): an integer in range; digits out of
/// range fail; anything else is read as a DOUBLE and truncated toward zero, and must then fit.
fn csv_narrow_int(s: &str, min: i64, max: i64) -> Option<Cell> {
    match sr_int(s, i128::from(min), i128::from(max)) {
        IntText::Ok(v) => Some(Cell::Int(v as i64)),
        IntText::Overflow => None,
        IntText::Fail => {
            let t = sr_float(s)?.trunc();
            (t.is_finite() && t >= min as f64 && t <= max as f64).then_some(Cell::Int(t as i64))
        }
    }
}

/// CSV BIGINT/LARGEINT: an integer in range; otherwise a DECIMALV2 text whose integer part is
/// kept (`DecimalV2Value::int_value`, so it must fit a BIGINT). Exponents are not assumed to
/// be accepted by that fallback (stricter reading).
fn csv_wide_int(s: &str, min: i128, max: i128) -> Option<Cell> {
    match sr_int(s, min, max) {
        IntText::Ok(v) => Some(large_int_cell(v)),
        IntText::Overflow => None,
        IntText::Fail => {
            let t = s.trim_matches(sr_space);
            let (negative, body) = match t.as_bytes().first() {
                Some(b'-') => (true, &t[1..]),
                Some(b'+') => (false, &t[1..]),
                _ => (false, t),
            };
            let (int, frac) = body.split_once('.')?;
            if (int.is_empty() && frac.is_empty())
                || !int.bytes().all(|b| b.is_ascii_digit())
                || !frac.bytes().all(|b| b.is_ascii_digit())
            {
                return None;
            }
            let int = int.trim_start_matches('0');
            let v: i64 = if int.is_empty() { 0 } else { int.parse().ok()? };
            let v = i128::from(if negative { -v } else { v });
            (v >= min && v <= max).then(|| large_int_cell(v))
        }
    }
}

/// A CSV ARRAY field (`csv/array_converter.cpp`): `[e1,e2,...]`, each element read with its
/// converter's quoted-string rules and invalid-as-null off, so one bad element fails the
/// whole field. Strings, dates, JSON and binaries must be quoted; numbers, decimals and
/// booleans must not; `null` is a null element.
fn csv_array(elem: &SrType, s: &str) -> Option<Cell> {
    if !(s.starts_with('[') && s.ends_with(']')) {
        return None;
    }
    let Ok(Json::Array(items)) = serde_json::from_str::<Json>(s) else {
        return None;
    };
    let out = items
        .iter()
        .map(|item| csv_array_element(elem, item))
        .collect::<Option<Vec<Json>>>()?;
    Some(Cell::Text(Json::Array(out).to_string()))
}

fn csv_array_element(elem: &SrType, item: &Json) -> Option<Json> {
    let cell = match (item, elem) {
        (Json::Null, _) => return Some(Json::Null),
        (Json::Array(_), SrType::Array(inner)) => csv_array(inner, &item.to_string())?,
        (
            Json::Number(_) | Json::Bool(_),
            SrType::Boolean
            | SrType::TinyInt
            | SrType::SmallInt
            | SrType::Int
            | SrType::BigInt
            | SrType::LargeInt
            | SrType::Float
            | SrType::Double
            | SrType::Decimal { .. },
        ) => elem.convert_text(&item.to_string()).ok()?,
        (
            Json::String(t),
            SrType::Char(_)
            | SrType::Varchar(_)
            | SrType::Varbinary(_)
            | SrType::Date
            | SrType::DateTime
            | SrType::Json,
        ) => elem.convert_text(t).ok()?,
        _ => return None,
    };
    Some(elem.cell_to_json(cell))
}

/// The text the JSON reader hands a column it reads as VARCHAR (`json/binary_column.cpp`): a
/// string's content, a number as written, `1`/`0` for a boolean, an array or object minified.
/// (A number is re-printed by serde_json, so `1e2` becomes `100.0`.)
fn json_as_text(v: &Json) -> String {
    match v {
        Json::String(s) => s.clone(),
        Json::Bool(b) => (if *b { "1" } else { "0" }).to_owned(),
        other => other.to_string(),
    }
}

fn json_type_name(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "boolean",
        Json::Number(_) => "number",
        Json::String(_) => "string",
        Json::Array(_) => "array",
        Json::Object(_) => "object",
    }
}

/// JSON BOOLEAN (`json/nullable_column.cpp`, `add_boolean_column`): a boolean; any number
/// (non-zero is true); a string that is an INT (non-zero is true) or `true`/`false`/`1`/`0`.
fn json_boolean(v: &Json, column: &str) -> Result<Cell, ConvError> {
    let b = match v {
        Json::Bool(b) => *b,
        Json::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Json::String(s) => match sr_int(s, i128::from(i32::MIN), i128::from(i32::MAX)) {
            IntText::Ok(i) => i != 0,
            _ => sr_bool(s).ok_or_else(|| {
                ConvError::Invalid(format!(
                    "Invalid argument: Failed to parse string value as boolean. column={column}, value={s}"
                ))
            })?,
        },
        other => {
            return Err(ConvError::Invalid(format!(
                "Invalid argument: Unsupported value type to boolean. column={column}, type={}",
                json_type_name(other)
            )))
        }
    };
    Ok(Cell::Int(i64::from(b)))
}

fn json_overflow(column: &str, value: impl std::fmt::Display) -> ConvError {
    ConvError::Invalid(format!(
        "Invalid argument: Value is overflow. column={column}, value={value}"
    ))
}

fn json_not_a_number(column: &str, s: &str) -> ConvError {
    ConvError::Invalid(format!(
        "Invalid argument: Unable to cast string value to BIGINT. value={s}, column={column}"
    ))
}

fn json_unsupported_numeric(column: &str) -> ConvError {
    ConvError::Invalid(format!(
        "Invalid argument: Unsupported value type. Numeric type is required. column={column}"
    ))
}

/// JSON TINYINT..BIGINT (`json/numeric_column.cpp`): an integer in range; a fraction is
/// truncated toward zero after the range check; a string is an integer text, else a DOUBLE
/// text handled like a number; booleans, arrays and objects are refused. A NaN or infinite
/// string is refused (the BE's cast of it is undefined; stricter reading).
fn json_int(v: &Json, column: &str, min: i64, max: i64) -> Result<Cell, ConvError> {
    let from_f64 = |f: f64, shown: &dyn std::fmt::Display| {
        if !f.is_finite() || f < min as f64 || f > max as f64 {
            Err(json_overflow(column, shown))
        } else {
            Ok(Cell::Int(f.trunc() as i64))
        }
    };
    match v {
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                if i < min || i > max {
                    return Err(json_overflow(column, i));
                }
                Ok(Cell::Int(i))
            } else if let Some(u) = n.as_u64() {
                Err(json_overflow(column, u))
            } else {
                let f = n.as_f64().unwrap_or(f64::NAN);
                from_f64(f, &f)
            }
        }
        Json::String(s) => match sr_int(s, i128::from(min), i128::from(max)) {
            IntText::Ok(i) => Ok(Cell::Int(i as i64)),
            _ => match sr_float(s) {
                Some(f) => from_f64(f, &f),
                None => Err(json_not_a_number(column, s)),
            },
        },
        _ => Err(json_unsupported_numeric(column)),
    }
}

/// JSON FLOAT/DOUBLE: a number (for FLOAT, beyond its range is an overflow); a string read by
/// `string_to_float` (`nan`, `inf` accepted; a FLOAT text beyond its range becomes infinity).
fn json_float(v: &Json, column: &str, float: bool) -> Result<Cell, ConvError> {
    let narrow = |f: f64| if float { f64::from(f as f32) } else { f };
    match v {
        Json::Number(n) => {
            let f = n.as_f64().unwrap_or(f64::NAN);
            if float && f.is_finite() && f.abs() > f64::from(f32::MAX) {
                return Err(json_overflow(column, f));
            }
            Ok(real_cell(narrow(f)))
        }
        Json::String(s) => sr_float(s)
            .map(|f| real_cell(narrow(f)))
            .ok_or_else(|| json_not_a_number(column, s)),
        _ => Err(json_unsupported_numeric(column)),
    }
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

/// Parses decimal text into the normalized form with exactly `scale` fraction digits.
pub fn parse_decimal(t: &str, precision: u8, scale: u8) -> Result<String, ConvError> {
    parse_decimal_for(t, precision, scale, "")
}

/// `StringParser::string_to_decimal` then the table sink's precision check:
///
/// - whitespace around is ignored; a sign; digits with one `.` (`.` alone is 0, `5.` is 5);
///   an exponent `e[+-]d` that fits a TINYINT;
/// - more integer digits than `precision - scale` is an overflow: the value does not convert
///   (`Invalid`: NULL unless strict);
/// - only the first `precision` significant digits are kept (later ones are dropped, not
///   rounded: `9.999` into DECIMAL(3,2) is 9.99); fraction digits beyond `scale` are then
///   rounded half up (`1.005` into DECIMAL(5,2) is 1.01);
/// - a value past the precision after rounding would be refused by the sink
///   (`OlapTableSink::_validate_decimal`, `OutOfBounds`); the truncation above keeps a
///   rounding from carrying that far, so this is a backstop.
pub fn parse_decimal_for(
    t: &str,
    precision: u8,
    scale: u8,
    column: &str,
) -> Result<String, ConvError> {
    let bad = || {
        ConvError::Invalid(format!(
            "Value '{}' can not be converted to decimal({precision},{scale})",
            clip(t)
        ))
    };
    let s = t.trim_matches(sr_space);
    let (negative, body) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let (mantissa, exp) = match body.find(['e', 'E']) {
        Some(i) => match sr_int(&body[i + 1..], -128, 127) {
            IntText::Ok(e) => (&body[..i], e as i64),
            _ => return Err(bad()),
        },
        None => (body, 0),
    };
    let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let has_dot = mantissa.contains('.');
    if (int_part.is_empty() && frac_part.is_empty() && !has_dot)
        || !int_part.bytes().all(|b| b.is_ascii_digit())
        || !frac_part.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    // All digits, and where the point falls among them once the exponent is applied.
    let digits: Vec<u8> = int_part.bytes().chain(frac_part.bytes()).collect();
    let point = int_part.len() as i64 + exp;
    // Significant digits start at the first non-zero one.
    let first_sig = digits.iter().position(|&d| d != b'0');
    let int_digits = match first_sig {
        Some(f) => (point - f as i64).max(0),
        None => 0,
    };
    let (precision_u, scale_u) = (i64::from(precision), i64::from(scale));
    if int_digits > precision_u - scale_u {
        return Err(ConvError::Invalid(format!(
            "Value '{}' is out of range of decimal({precision},{scale})",
            clip(t)
        )));
    }
    // Keep the first `precision` significant digits, drop the rest.
    let mut kept = digits;
    if let Some(f) = first_sig {
        let end = f + usize::from(precision);
        if end < kept.len() {
            kept.truncate(end);
        }
    }
    // Digit at position p (0 = first digit of `kept`) has weight 10^(point - 1 - p). Build
    // the integer part and the fraction to `scale` digits, rounding half up on the next one.
    let digit_at = |pos: i64| -> u8 {
        if pos < 0 || pos as usize >= kept.len() {
            0
        } else {
            kept[pos as usize] - b'0'
        }
    };
    let mut int_out: Vec<u8> = (0..point.max(0)).map(digit_at).collect();
    let mut frac_out: Vec<u8> = (point..point + scale_u).map(digit_at).collect();
    if digit_at(point + scale_u) >= 5 {
        let mut carry = true;
        for d in frac_out.iter_mut().rev().chain(int_out.iter_mut().rev()) {
            if *d == 9 {
                *d = 0;
            } else {
                *d += 1;
                carry = false;
                break;
            }
        }
        if carry {
            int_out.insert(0, 1);
        }
    }
    while int_out.len() > 1 && int_out[0] == 0 {
        int_out.remove(0);
    }
    if int_out.is_empty() {
        int_out.push(0);
    }
    let to_text = |v: &[u8]| v.iter().map(|d| char::from(b'0' + d)).collect::<String>();
    let text = format_decimal(negative, &to_text(&int_out), &to_text(&frac_out));
    let int_len = if int_out == [0] {
        0
    } else {
        int_out.len() as i64
    };
    if int_len > precision_u - scale_u {
        return Err(ConvError::OutOfBounds(format!(
            "Decimal '{text}' is out of range. The type of '{column}' is {}'",
            SrType::Decimal { precision, scale }.debug_name()
        )));
    }
    Ok(text)
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

/// `date::from_string`, the BE's MySQL-style date parser (`be/src/types/date_value.cpp`,
/// used for CSV DATE/DATETIME fields and for the cast of a JSON value read as text):
///
/// - leading whitespace is skipped and the text must start with a digit;
/// - numbers separated by punctuation (`2024-01-02`, `2024/1/2 3:4:5`), a space allowed only
///   after the day and after the seconds' fraction, `T` between date and time; the fields are
///   year, month, day, hour, minute, second and, after `.`, up to six fraction digits;
/// - all digits (`20240102`, `20240102101112`): fixed widths, a 4-digit year for 8 or 14+
///   digits, otherwise a 2-digit year (`240102`); a 2-digit year is 20yy below 70, else 19yy;
/// - at least year, month and day; each in range (a time only if given); what follows the
///   last field is ignored (`2024-01-02Z`).
///
/// Newer BEs first try a fast path that takes a date with an unreadable time as a date at
/// midnight (`2024-01-02 25:00:00`); the older, stricter reading is kept: refused.
pub fn parse_datetime(s: &str) -> Option<DateTime> {
    const MAX_PARTS: usize = 7;
    let b = s.as_bytes();
    let is_space = |c: u8| c == b' ' || (9..=13).contains(&c);
    let mut p = 0;
    while p < b.len() && is_space(b[p]) {
        p += 1;
    }
    if p == b.len() || !b[p].is_ascii_digit() {
        return None;
    }
    let mut scan = p;
    while scan < b.len() && (b[scan].is_ascii_digit() || b[scan] == b'T') {
        scan += 1;
    }
    let run = scan - p;
    let compact = scan == b.len() || b[scan] == b'.';
    let mut year_len = if compact && !(run == 4 || run == 8 || run >= 14) {
        2
    } else {
        4
    };
    let mut vals = [0u64; MAX_PARTS];
    let mut lens = [0usize; MAX_PARTS];
    let mut idx = 0;
    let mut width = year_len;
    while p < b.len() && b[p].is_ascii_digit() && idx < MAX_PARTS {
        let start = p;
        let mut v: u64 = 0;
        let to_delimiter = !compact && idx != 6;
        while p < b.len() && b[p].is_ascii_digit() && (to_delimiter || p - start < width) {
            v = v.saturating_mul(10).saturating_add(u64::from(b[p] - b'0'));
            p += 1;
        }
        if v > 999_999 {
            return None;
        }
        vals[idx] = v;
        lens[idx] = p - start;
        width = 2;
        if p == b.len() {
            idx += 1;
            break;
        }
        if idx == 2 && b[p] == b'T' {
            p += 1;
            idx += 1;
            continue;
        }
        if idx == 5 {
            if b[p] == b'.' {
                p += 1;
                width = 6;
            } else if b[p].is_ascii_digit() {
                idx += 1;
                break;
            }
            idx += 1;
            continue;
        }
        while p < b.len() && (b[p].is_ascii_punctuation() || is_space(b[p])) {
            if is_space(b[p]) && idx != 2 && idx != 6 {
                return None;
            }
            p += 1;
        }
        idx += 1;
    }
    if idx < 3 {
        return None;
    }
    if !compact {
        year_len = lens[0];
    }
    let mut year = vals[0];
    if year_len == 2 {
        year += if year < 70 { 2000 } else { 1900 };
    }
    let mut micros = vals[6];
    if micros != 0 && lens[6] < 6 {
        micros *= 10u64.pow((6 - lens[6]) as u32);
    }
    let (month, day) = (vals[1], vals[2]);
    if year > 9999
        || !(1..=12).contains(&month)
        || day == 0
        || day > u64::from(days_in_month(year as u32, month as u32))
    {
        return None;
    }
    let (hour, minute, second) = (vals[3], vals[4], vals[5]);
    if idx > 3 && (hour > 23 || minute > 59 || second > 59 || micros >= 1_000_000) {
        return None;
    }
    Some(DateTime {
        year: year as u32,
        month: month as u32,
        day: day as u32,
        hour: hour as u32,
        minute: minute as u32,
        second: second as u32,
        micros: micros as u32,
    })
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
