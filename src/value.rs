//! PostgreSQL text values to typed JSON, shared by every sink.
//!
//! pgoutput sends each value in its type's text output form, produced under the session
//! settings the replication connection pins (`TimeZone=UTC`, `DateStyle=ISO`,
//! `extra_float_digits=3`, `bytea_output=hex`). This module decides, per column type, how that
//! text becomes JSON, so that every sink writes the same values:
//!
//! | PostgreSQL | JSON |
//! |---|---|
//! | bool | `true` / `false` |
//! | int2, int4, int8, oid | number |
//! | float4, float8 | number; `NaN`, `Infinity`, `-Infinity` as those strings |
//! | numeric, money | exact string (`"12.50"`, `"NaN"`) |
//! | json, jsonb | the nested JSON value |
//! | bytea | lower-case hex string without the `\x` prefix |
//! | timestamptz | UTC ISO-8601 string `2024-01-02T03:04:05.123456Z`; `infinity` stays a string |
//! | timestamp | ISO-8601 string without zone `2024-01-02T03:04:05` |
//! | arrays of the above | JSON arrays (nested for multi-dimensional arrays), NULL elements as `null` |
//! | everything else (text, date, uuid, enums, intervals, …) | string, as PostgreSQL prints it |
//!
//! Conversion is strict: text that does not fit the column's type, or is not UTF-8, is a
//! [`ValueError`] naming what was wrong. It is never silently replaced.
//!
//! [`JsonFlavor::StarRocks`] differs where StarRocks cannot store the value as is, each case a
//! documented mapping that the caller counts ([`Mapped`]):
//!
//! | value | StarRocks JSON |
//! |---|---|
//! | float or numeric `NaN`, `Infinity`, `-Infinity` | `null` (DOUBLE/DECIMAL have no such values) |
//! | timestamp(tz) / date `infinity` | `9999-12-31 23:59:59.999999` / `9999-12-31` |
//! | timestamp(tz) / date `-infinity` | `0000-01-01 00:00:00` / `0000-01-01` |
//! | BC timestamps and dates | error (outside DATETIME's range) |
//! | timestamptz | `YYYY-MM-DD HH:MM:SS[.ffffff]` in UTC (DATETIME has no zone) |
//! | money | the number without currency symbol or separators |

use std::collections::HashMap;

/// The scalar JSON treatment of a PostgreSQL type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scalar {
    /// `true` / `false`.
    Bool,
    /// Integer, written as a JSON number.
    Int,
    /// Floating point, a JSON number except for NaN and the infinities.
    Float,
    /// Arbitrary precision, written as an exact string.
    Numeric,
    /// Already JSON: nested as is.
    Json,
    /// Binary: hex string.
    Bytea,
    /// Timestamp with time zone: UTC ISO-8601.
    Timestamptz,
    /// Timestamp without time zone: ISO-8601 without zone.
    Timestamp,
    /// Date: as PostgreSQL prints it (`2024-02-29`, `infinity`).
    Date,
    /// Anything else: the text as a JSON string.
    Text,
}

/// How a column's values are written as JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ValueKind {
    /// A single value.
    Scalar(Scalar),
    /// An array whose elements are `elem`, separated by `delim` in the text form.
    Array {
        /// Element treatment.
        elem: Scalar,
        /// Element delimiter of the text form (`,` for every type but `box`).
        delim: u8,
    },
}

impl ValueKind {
    /// The kind of a built-in type OID, or `None` for types this table does not know (user
    /// types, which [`crate::postgres::setup`] resolves from the catalog).
    pub fn for_builtin_oid(oid: u32) -> Option<ValueKind> {
        let scalar = |s| Some(ValueKind::Scalar(s));
        let array = |elem| Some(ValueKind::Array { elem, delim: b',' });
        match oid {
            16 => scalar(Scalar::Bool),
            20 | 21 | 23 | 26 => scalar(Scalar::Int),
            700 | 701 => scalar(Scalar::Float),
            1700 | 790 => scalar(Scalar::Numeric),
            114 | 3802 => scalar(Scalar::Json),
            17 => scalar(Scalar::Bytea),
            1184 => scalar(Scalar::Timestamptz),
            1114 => scalar(Scalar::Timestamp),
            1082 => scalar(Scalar::Date),
            25 | 1043 | 1042 | 19 | 18 | 1083 | 1266 | 1186 | 2950 | 869 | 650 | 829 | 774
            | 1560 | 1562 | 142 | 3614 | 3615 | 2249 | 705 => scalar(Scalar::Text),
            1000 => array(Scalar::Bool),
            1005 | 1007 | 1016 | 1028 => array(Scalar::Int),
            1021 | 1022 => array(Scalar::Float),
            1231 | 791 => array(Scalar::Numeric),
            199 | 3807 => array(Scalar::Json),
            1001 => array(Scalar::Bytea),
            1185 => array(Scalar::Timestamptz),
            1115 => array(Scalar::Timestamp),
            1182 => array(Scalar::Date),
            1009 | 1015 | 1014 | 1003 | 1002 | 1183 | 1270 | 1187 | 2951 | 1041 | 651 | 1040 => {
                array(Scalar::Text)
            }
            _ => None,
        }
    }

    /// The kind for a type OID: built-in first, then `resolved` (from the catalog), then text.
    pub fn for_oid(oid: u32, resolved: &HashMap<u32, ValueKind>) -> ValueKind {
        Self::for_builtin_oid(oid)
            .or_else(|| resolved.get(&oid).copied())
            .unwrap_or(ValueKind::Scalar(Scalar::Text))
    }
}

/// A value's text does not fit its column type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// The bytes are not UTF-8.
    #[error("value is not valid UTF-8 (check the database encoding; dbmazz needs UTF8)")]
    InvalidUtf8,
    /// The text is not what the type's output function produces. The value itself is not
    /// kept: row values never appear in errors or logs.
    #[error("a {len}-byte value is not a valid {expected}")]
    Malformed {
        /// What was expected.
        expected: &'static str,
        /// Length of the offending text.
        len: usize,
    },
    /// A primary key is longer than the sink takes.
    #[error(transparent)]
    KeyTooLong(#[from] KeyTooLong),
    /// An array nests deeper or shallower than the sink's array column, which would load its
    /// elements as NULL.
    #[error(
        "a {found}-dimensional array does not fit the target's {target}-level ARRAY column \
         (StarRocks would load its elements as NULL); change the target column to {target_hint} \
         or to JSON, then restart"
    )]
    ArrayDepth {
        /// Dimensions of the value.
        found: usize,
        /// ARRAY levels of the target column.
        target: u8,
        /// The nesting the value needs, e.g. `ARRAY<ARRAY<…>>`.
        target_hint: String,
    },
}

/// A primary key too long for the sink (StarRocks' `primary_key_limit_size`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the primary key takes {size} bytes in StarRocks' key encoding, over its \
     primary_key_limit_size of {limit}, and StarRocks would fail the whole load; raise \
     primary_key_limit_size in every BE's be.conf and set STARROCKS_PRIMARY_KEY_LIMIT to match, \
     then restart"
)]
pub struct KeyTooLong {
    /// Encoded size.
    pub size: usize,
    /// The limit.
    pub limit: usize,
}

/// The number of dimensions of a PostgreSQL array literal (`{1,2}` → 1, `{{1},{2}}` → 2,
/// `[0:1]={x,y}` → 1); 0 for an empty array (`{}`), which fits any depth. Elements that start
/// with `{` are always quoted in the text form, so leading braces count dimensions exactly.
pub fn array_dimensions(text: &[u8]) -> usize {
    let body = match text.first() {
        Some(b'[') => memchr::memchr(b'=', text).map_or(text, |eq| &text[eq + 1..]),
        _ => text,
    };
    let depth = body.iter().take_while(|&&b| b == b'{').count();
    if body.get(depth) == Some(&b'}') {
        0
    } else {
        depth
    }
}

/// Checks that an array value's dimensions match a target ARRAY column of `target` levels.
pub fn check_array_depth(text: &[u8], target: u8) -> Result<(), ValueError> {
    let found = array_dimensions(text);
    if found == 0 || found == usize::from(target) {
        return Ok(());
    }
    let mut hint = String::new();
    for _ in 0..found {
        hint.push_str("ARRAY<");
    }
    hint.push('…');
    for _ in 0..found {
        hint.push('>');
    }
    Err(ValueError::ArrayDepth {
        found,
        target,
        target_hint: hint,
    })
}

fn malformed(expected: &'static str, text: &[u8]) -> ValueError {
    ValueError::Malformed {
        expected,
        len: text.len(),
    }
}

/// Whose conventions to follow where a value has no direct JSON form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JsonFlavor {
    /// The NDJSON sink: keep PostgreSQL's meaning as text.
    Ndjson,
    /// StarRocks Stream Load: values StarRocks column types can hold.
    StarRocks,
}

/// Mappings applied while writing one value (each counted by the caller).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Mapped {
    /// `NaN` or an infinity written as `null`.
    pub non_finite_to_null: u32,
    /// An infinite date or timestamp clamped to the end of the range.
    pub infinity_clamped: u32,
}

impl std::ops::AddAssign for Mapped {
    fn add_assign(&mut self, other: Mapped) {
        self.non_finite_to_null += other.non_finite_to_null;
        self.infinity_clamped += other.infinity_clamped;
    }
}

impl Mapped {
    /// Whether anything was mapped.
    pub fn any(&self) -> bool {
        self.non_finite_to_null > 0 || self.infinity_clamped > 0
    }
}

/// Writes the JSON for one value's text, the NDJSON way.
pub fn write_json(out: &mut Vec<u8>, kind: ValueKind, text: &[u8]) -> Result<(), ValueError> {
    write_json_as(out, kind, text, JsonFlavor::Ndjson).map(|_| ())
}

/// Writes the JSON for one value's text in `flavor`, reporting the mappings applied.
pub fn write_json_as(
    out: &mut Vec<u8>,
    kind: ValueKind,
    text: &[u8],
    flavor: JsonFlavor,
) -> Result<Mapped, ValueError> {
    let mut mapped = Mapped::default();
    match kind {
        ValueKind::Scalar(s) => write_scalar(out, s, text, flavor, &mut mapped)?,
        ValueKind::Array { elem, delim } => {
            write_array(out, elem, delim, text, flavor, &mut mapped)?
        }
    }
    Ok(mapped)
}

/// Whether values of `kind` can be written as plain StarRocks CSV fields by
/// [`write_starrocks_csv`]. JSON and arrays cannot: their StarRocks text forms are JSON, which
/// CSV would carry only as opaque text.
pub fn csv_capable(kind: ValueKind) -> bool {
    matches!(kind, ValueKind::Scalar(s) if s != Scalar::Json)
}

/// Writes one value's text as a StarRocks CSV field (tab-separated, `\N` for NULL, no quoting):
/// the same value [`write_json_as`] writes in [`JsonFlavor::StarRocks`], without JSON's quotes.
///
/// `text` must hold no tab, newline, carriage return or backslash (COPY text escapes those, so
/// the caller sends such rows as JSON instead) and must be valid UTF-8 (the caller checks the
/// whole line once). A value that would need escaping in CSV therefore never reaches here.
/// Booleans are written `1`/`0`, the form StarRocks' BOOLEAN (a TINYINT) always accepts.
pub fn write_starrocks_csv(
    out: &mut Vec<u8>,
    kind: Scalar,
    text: &[u8],
    scratch: &mut Vec<u8>,
) -> Result<Mapped, ValueError> {
    let mut mapped = Mapped::default();
    match kind {
        Scalar::Text => out.extend_from_slice(text),
        Scalar::Int => {
            let digits = text.strip_prefix(b"-").unwrap_or(text);
            if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
                return Err(malformed("integer", text));
            }
            out.extend_from_slice(text);
        }
        Scalar::Float | Scalar::Numeric if is_json_number(text) => out.extend_from_slice(text),
        Scalar::Bool => match text {
            b"t" => out.push(b'1'),
            b"f" => out.push(b'0'),
            _ => return Err(malformed("boolean", text)),
        },
        Scalar::Bytea => return Err(malformed("bytea in hex format", text)),
        _ => {
            // Everything else goes through the JSON writer, whose StarRocks output for these
            // kinds is `null`, a number, or a string of ASCII without escapes.
            scratch.clear();
            write_scalar(scratch, kind, text, JsonFlavor::StarRocks, &mut mapped)?;
            match scratch.as_slice() {
                b"null" => out.extend_from_slice(b"\\N"),
                [b'"', inner @ .., b'"'] if !inner.contains(&b'\\') => out.extend_from_slice(inner),
                [b'"', ..] => return Err(malformed("a value CSV can carry unescaped", text)),
                other => out.extend_from_slice(other),
            }
        }
    }
    Ok(mapped)
}

/// Writes a bytea field of COPY text (`\\x0aff`: COPY doubles the backslash) as the lower-case
/// hex StarRocks receives in JSON too.
pub fn write_starrocks_csv_bytea(out: &mut Vec<u8>, copy_field: &[u8]) -> Result<(), ValueError> {
    let hex = copy_field
        .strip_prefix(b"\\\\x")
        .ok_or_else(|| malformed("bytea in hex format", copy_field))?;
    if hex.len() % 2 != 0 || !hex.iter().all(u8::is_ascii_hexdigit) {
        return Err(malformed("bytea in hex format", copy_field));
    }
    out.extend(hex.iter().map(u8::to_ascii_lowercase));
    Ok(())
}

/// Writes binary-format value bytes as a hex JSON string (dbmazz asks for text format, so this
/// only happens if a server sends binary anyway).
pub fn write_hex_string(out: &mut Vec<u8>, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    for b in bytes {
        out.push(HEX[usize::from(b >> 4)]);
        out.push(HEX[usize::from(b & 15)]);
    }
    out.push(b'"');
}

fn write_scalar(
    out: &mut Vec<u8>,
    kind: Scalar,
    text: &[u8],
    flavor: JsonFlavor,
    mapped: &mut Mapped,
) -> Result<(), ValueError> {
    let non_finite = matches!(text, b"NaN" | b"Infinity" | b"-Infinity");
    if flavor == JsonFlavor::StarRocks
        && non_finite
        && matches!(kind, Scalar::Float | Scalar::Numeric)
    {
        mapped.non_finite_to_null += 1;
        out.extend_from_slice(b"null");
        return Ok(());
    }
    match kind {
        Scalar::Bool => match text {
            b"t" => out.extend_from_slice(b"true"),
            b"f" => out.extend_from_slice(b"false"),
            _ => return Err(malformed("boolean", text)),
        },
        Scalar::Int => {
            let digits = text.strip_prefix(b"-").unwrap_or(text);
            if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
                return Err(malformed("integer", text));
            }
            out.extend_from_slice(text);
        }
        Scalar::Float => {
            if is_json_number(text) {
                out.extend_from_slice(text);
            } else if matches!(text, b"NaN" | b"Infinity" | b"-Infinity") {
                write_ascii_string(out, text);
            } else {
                return Err(malformed("floating-point number", text));
            }
        }
        Scalar::Numeric => {
            if is_json_number(text) || non_finite {
                write_string(out, text)?;
            } else if is_money(text) {
                if flavor == JsonFlavor::StarRocks {
                    let plain: Vec<u8> = text
                        .iter()
                        .copied()
                        .filter(|b| b.is_ascii_digit() || *b == b'.' || *b == b'-')
                        .collect();
                    let negative = text.contains(&b'(');
                    out.push(b'"');
                    if negative && !plain.starts_with(b"-") {
                        out.push(b'-');
                    }
                    out.extend_from_slice(&plain);
                    out.push(b'"');
                } else {
                    write_string(out, text)?;
                }
            } else {
                return Err(malformed("numeric", text));
            }
        }
        Scalar::Json => {
            // json/jsonb output functions only produce valid JSON; it is nested as is after a
            // UTF-8 check.
            validate_utf8(text)?;
            if text.is_empty() {
                return Err(malformed("json", text));
            }
            out.extend_from_slice(text);
        }
        Scalar::Bytea => {
            let hex = text
                .strip_prefix(b"\\x")
                .ok_or_else(|| malformed("bytea in hex format", text))?;
            if hex.len() % 2 != 0 || !hex.iter().all(u8::is_ascii_hexdigit) {
                return Err(malformed("bytea in hex format", text));
            }
            out.push(b'"');
            out.extend(hex.iter().map(u8::to_ascii_lowercase));
            out.push(b'"');
        }
        Scalar::Timestamptz => write_timestamp(out, text, true, flavor, mapped)?,
        Scalar::Timestamp => write_timestamp(out, text, false, flavor, mapped)?,
        Scalar::Date => write_date(out, text, flavor, mapped)?,
        Scalar::Text => write_string(out, text)?,
    }
    Ok(())
}

fn write_date(
    out: &mut Vec<u8>,
    text: &[u8],
    flavor: JsonFlavor,
    mapped: &mut Mapped,
) -> Result<(), ValueError> {
    if flavor == JsonFlavor::StarRocks {
        let clamped: Option<&[u8]> = match text {
            b"infinity" => Some(b"9999-12-31"),
            b"-infinity" => Some(b"0000-01-01"),
            _ => None,
        };
        if let Some(c) = clamped {
            mapped.infinity_clamped += 1;
            write_ascii_string(out, c);
            return Ok(());
        }
        if text.ends_with(b" BC") || text.len() != 10 {
            return Err(malformed(
                "date within 0000-9999 (StarRocks DATE range)",
                text,
            ));
        }
    }
    write_string(out, text)
}

/// `YYYY-MM-DD HH:MM:SS[.ffffff][+00]` → ISO-8601 (NDJSON) or StarRocks DATETIME text.
/// For NDJSON, infinite and BC values keep PostgreSQL's text, as strings.
fn write_timestamp(
    out: &mut Vec<u8>,
    text: &[u8],
    with_zone: bool,
    flavor: JsonFlavor,
    mapped: &mut Mapped,
) -> Result<(), ValueError> {
    let expected = if with_zone {
        "timestamptz (is the session TimeZone UTC?)"
    } else {
        "timestamp"
    };
    let infinite = matches!(text, b"infinity" | b"-infinity");
    match flavor {
        JsonFlavor::Ndjson if infinite || text.ends_with(b" BC") => return write_string(out, text),
        JsonFlavor::StarRocks if infinite => {
            mapped.infinity_clamped += 1;
            let c: &[u8] = if text == b"infinity" {
                b"9999-12-31 23:59:59.999999"
            } else {
                b"0000-01-01 00:00:00"
            };
            write_ascii_string(out, c);
            return Ok(());
        }
        JsonFlavor::StarRocks if text.ends_with(b" BC") => {
            return Err(malformed(
                "timestamp within 0000-9999 (StarRocks DATETIME range)",
                text,
            ))
        }
        _ => {}
    }
    let (body, zone_ok) = if with_zone {
        match text.strip_suffix(b"+00") {
            Some(b) => (b, true),
            None => (text, false),
        }
    } else {
        (text, true)
    };
    let shape_ok = body.len() >= 19
        && body[4] == b'-'
        && body[7] == b'-'
        && body[10] == b' '
        && body[13] == b':'
        && body[16] == b':'
        && body
            .iter()
            .all(|b| b.is_ascii_digit() || b"-: .".contains(b));
    if !zone_ok || !shape_ok {
        return Err(malformed(expected, text));
    }
    out.push(b'"');
    if flavor == JsonFlavor::StarRocks {
        out.extend_from_slice(body);
    } else {
        out.extend_from_slice(&body[..10]);
        out.push(b'T');
        out.extend_from_slice(&body[11..]);
        if with_zone {
            out.push(b'Z');
        }
    }
    out.push(b'"');
    Ok(())
}

fn is_money(text: &[u8]) -> bool {
    // money prints with a currency symbol and group separators, e.g. "$1,234.50" or "-$1.00".
    !text.is_empty()
        && text
            .iter()
            .all(|b| b.is_ascii_digit() || b"$.,-() ".contains(b) || !b.is_ascii())
        && text.iter().any(u8::is_ascii_digit)
}

/// Whether `text` is a JSON number (RFC 8259 grammar).
fn is_json_number(text: &[u8]) -> bool {
    let mut i = 0;
    let n = text.len();
    if i < n && text[i] == b'-' {
        i += 1;
    }
    let int_start = i;
    while i < n && text[i].is_ascii_digit() {
        i += 1;
    }
    let int_len = i - int_start;
    if int_len == 0 || (int_len > 1 && text[int_start] == b'0') {
        return false;
    }
    if i < n && text[i] == b'.' {
        i += 1;
        let s = i;
        while i < n && text[i].is_ascii_digit() {
            i += 1;
        }
        if i == s {
            return false;
        }
    }
    if i < n && (text[i] == b'e' || text[i] == b'E') {
        i += 1;
        if i < n && (text[i] == b'+' || text[i] == b'-') {
            i += 1;
        }
        let s = i;
        while i < n && text[i].is_ascii_digit() {
            i += 1;
        }
        if i == s {
            return false;
        }
    }
    i == n
}

fn validate_utf8(text: &[u8]) -> Result<&str, ValueError> {
    simdutf8::basic::from_utf8(text).map_err(|_| ValueError::InvalidUtf8)
}

fn write_ascii_string(out: &mut Vec<u8>, text: &[u8]) {
    out.push(b'"');
    out.extend_from_slice(text);
    out.push(b'"');
}

/// Writes `text` as a JSON string, escaping quotes, backslashes and control characters.
pub fn write_string(out: &mut Vec<u8>, text: &[u8]) -> Result<(), ValueError> {
    validate_utf8(text)?;
    write_escaped(out, text);
    Ok(())
}

/// Appends `v` in decimal, without going through the formatting machinery (hot per row).
pub fn write_u64(out: &mut Vec<u8>, mut v: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// Writes already-validated UTF-8 as a JSON string.
pub fn write_escaped(out: &mut Vec<u8>, text: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.reserve(text.len() + 2);
    out.push(b'"');
    // Most values need no escape; this check is branch-free, so it vectorizes.
    if !text.iter().fold(false, |any, &b| {
        any | (b < 0x20) | (b == b'"') | (b == b'\\')
    }) {
        out.extend_from_slice(text);
        out.push(b'"');
        return;
    }
    let mut start = 0;
    for (i, &b) in text.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&text[start..i]);
        if esc.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 15)]);
        } else {
            out.extend_from_slice(esc);
        }
        start = i + 1;
    }
    out.extend_from_slice(&text[start..]);
    out.push(b'"');
}

/// Writes a PostgreSQL array literal (`{1,2,NULL}`, `{{"a b",c},{d,e}}`, `[0:1]={x,y}`) as a
/// JSON array.
fn write_array(
    out: &mut Vec<u8>,
    elem: Scalar,
    delim: u8,
    text: &[u8],
    flavor: JsonFlavor,
    mapped: &mut Mapped,
) -> Result<(), ValueError> {
    let body = match text.first() {
        Some(b'[') => {
            // Explicit bounds decoration: "[lo:hi]={...}".
            let eq = memchr::memchr(b'=', text).ok_or_else(|| malformed("array", text))?;
            &text[eq + 1..]
        }
        _ => text,
    };
    let mut parser = ArrayParser {
        text: body,
        pos: 0,
        delim,
        elem,
        scratch: Vec::new(),
        flavor,
        mapped,
    };
    parser.parse_level(out)?;
    if parser.pos != body.len() {
        return Err(malformed("array", text));
    }
    Ok(())
}

struct ArrayParser<'a> {
    text: &'a [u8],
    pos: usize,
    delim: u8,
    elem: Scalar,
    scratch: Vec<u8>,
    flavor: JsonFlavor,
    mapped: &'a mut Mapped,
}

impl ArrayParser<'_> {
    fn err(&self) -> ValueError {
        malformed("array", self.text)
    }

    fn peek(&self) -> Option<u8> {
        self.text.get(self.pos).copied()
    }

    fn parse_level(&mut self, out: &mut Vec<u8>) -> Result<(), ValueError> {
        if self.peek() != Some(b'{') {
            return Err(self.err());
        }
        self.pos += 1;
        out.push(b'[');
        if self.peek() == Some(b'}') {
            self.pos += 1;
            out.push(b']');
            return Ok(());
        }
        let mut first = true;
        loop {
            if !first {
                out.push(b',');
            }
            first = false;
            match self.peek() {
                Some(b'{') => self.parse_level(out)?,
                Some(b'"') => self.parse_quoted(out)?,
                Some(_) => self.parse_unquoted(out)?,
                None => return Err(self.err()),
            }
            match self.peek() {
                Some(b'}') => {
                    self.pos += 1;
                    out.push(b']');
                    return Ok(());
                }
                Some(d) if d == self.delim => self.pos += 1,
                _ => return Err(self.err()),
            }
        }
    }

    fn parse_quoted(&mut self, out: &mut Vec<u8>) -> Result<(), ValueError> {
        self.pos += 1;
        self.scratch.clear();
        loop {
            match self.peek() {
                Some(b'\\') => {
                    let c = *self.text.get(self.pos + 1).ok_or_else(|| self.err())?;
                    self.scratch.push(c);
                    self.pos += 2;
                }
                Some(b'"') => {
                    self.pos += 1;
                    break;
                }
                Some(c) => {
                    self.scratch.push(c);
                    self.pos += 1;
                }
                None => return Err(self.err()),
            }
        }
        let item = std::mem::take(&mut self.scratch);
        let r = write_scalar(out, self.elem, &item, self.flavor, self.mapped);
        self.scratch = item;
        r
    }

    fn parse_unquoted(&mut self, out: &mut Vec<u8>) -> Result<(), ValueError> {
        let start = self.pos;
        while let Some(c) = self.peek() {
            if c == self.delim || c == b'}' {
                break;
            }
            self.pos += 1;
        }
        let item = &self.text[start..self.pos];
        if item.eq_ignore_ascii_case(b"NULL") {
            out.extend_from_slice(b"null");
            Ok(())
        } else if item.is_empty() {
            Err(self.err())
        } else {
            write_scalar(out, self.elem, item, self.flavor, self.mapped)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_u64_matches_display() {
        for v in [0u64, 1, 9, 10, 99, 100, 4_294_967_295, 1 << 53, u64::MAX] {
            let mut out = b"x".to_vec();
            write_u64(&mut out, v);
            assert_eq!(out, format!("x{v}").into_bytes());
        }
    }

    fn json(kind: ValueKind, text: &str) -> Result<String, ValueError> {
        let mut out = Vec::new();
        write_json(&mut out, kind, text.as_bytes())?;
        Ok(String::from_utf8(out).unwrap())
    }

    fn s(k: Scalar) -> ValueKind {
        ValueKind::Scalar(k)
    }

    fn arr(k: Scalar) -> ValueKind {
        ValueKind::Array {
            elem: k,
            delim: b',',
        }
    }

    #[test]
    fn scalars_become_typed_json() {
        assert_eq!(json(s(Scalar::Bool), "t").unwrap(), "true");
        assert_eq!(json(s(Scalar::Int), "-42").unwrap(), "-42");
        assert_eq!(json(s(Scalar::Float), "1.5e+30").unwrap(), "1.5e+30");
        assert_eq!(json(s(Scalar::Float), "NaN").unwrap(), "\"NaN\"");
        assert_eq!(
            json(s(Scalar::Float), "-Infinity").unwrap(),
            "\"-Infinity\""
        );
        assert_eq!(
            json(
                s(Scalar::Numeric),
                "12345678901234567890.12345678901234567890"
            )
            .unwrap(),
            "\"12345678901234567890.12345678901234567890\""
        );
        assert_eq!(
            json(s(Scalar::Json), r#"{"a": [1]}"#).unwrap(),
            r#"{"a": [1]}"#
        );
        assert_eq!(json(s(Scalar::Bytea), "\\xDEad").unwrap(), "\"dead\"");
        assert_eq!(
            json(s(Scalar::Timestamptz), "2024-01-02 03:04:05.123456+00").unwrap(),
            "\"2024-01-02T03:04:05.123456Z\""
        );
        assert_eq!(
            json(s(Scalar::Timestamp), "2024-01-02 03:04:05").unwrap(),
            "\"2024-01-02T03:04:05\""
        );
        assert_eq!(
            json(s(Scalar::Timestamptz), "infinity").unwrap(),
            "\"infinity\""
        );
        assert_eq!(
            json(s(Scalar::Text), "a\"b\\c\n\u{1}😀").unwrap(),
            r#""a\"b\\c\n\u0001😀""#
        );
    }

    #[test]
    fn malformed_values_are_errors_not_guesses() {
        assert!(json(s(Scalar::Int), "12a").is_err());
        assert!(json(s(Scalar::Int), "").is_err());
        assert!(json(s(Scalar::Bool), "yes").is_err());
        assert!(json(s(Scalar::Float), "1.").is_err());
        assert!(json(s(Scalar::Bytea), "\\x0").is_err());
        assert!(json(s(Scalar::Timestamptz), "2024-01-02 03:04:05+02").is_err());
        let mut out = Vec::new();
        assert_eq!(
            write_json(&mut out, s(Scalar::Text), b"\xff\xfe"),
            Err(ValueError::InvalidUtf8)
        );
    }

    #[test]
    fn arrays_become_json_arrays() {
        assert_eq!(json(arr(Scalar::Int), "{1,2,NULL}").unwrap(), "[1,2,null]");
        assert_eq!(json(arr(Scalar::Int), "{}").unwrap(), "[]");
        assert_eq!(
            json(arr(Scalar::Text), r#"{"a b","q\"x",NULL,"NULL",c}"#).unwrap(),
            r#"["a b","q\"x",null,"NULL","c"]"#
        );
        assert_eq!(
            json(arr(Scalar::Int), "{{1,2},{3,4}}").unwrap(),
            "[[1,2],[3,4]]"
        );
        assert_eq!(json(arr(Scalar::Int), "[0:1]={7,8}").unwrap(), "[7,8]");
        assert_eq!(
            json(arr(Scalar::Json), r#"{"{\"a\": 1}",null}"#).unwrap(),
            r#"[{"a": 1},null]"#
        );
        assert!(json(arr(Scalar::Int), "{1,2").is_err());
        assert!(json(arr(Scalar::Int), "{1,x}").is_err());
        assert!(json(arr(Scalar::Int), "{1,2}x").is_err());
    }

    #[test]
    fn array_dimensions_come_from_the_leading_braces() {
        assert_eq!(array_dimensions(b"{1,2}"), 1);
        assert_eq!(array_dimensions(b"{{1,2},{3,4}}"), 2);
        assert_eq!(array_dimensions(br#"{"{not nested}",b}"#), 1);
        assert_eq!(array_dimensions(b"[0:1][1:1]={{7},{8}}"), 2);
        assert_eq!(array_dimensions(b"{}"), 0);
        assert!(check_array_depth(b"{}", 3).is_ok());
        assert!(check_array_depth(b"{{1}}", 2).is_ok());
        let e = check_array_depth(b"{{{1}}}", 1).unwrap_err().to_string();
        assert!(
            e.contains("3-dimensional") && e.contains("ARRAY<ARRAY<ARRAY<…>>>"),
            "{e}"
        );
    }

    #[test]
    fn starrocks_dialect_maps_what_starrocks_cannot_hold() {
        let sr = |k: ValueKind, t: &str| {
            let mut out = Vec::new();
            let m = write_json_as(&mut out, k, t.as_bytes(), JsonFlavor::StarRocks);
            m.map(|m| (String::from_utf8(out).unwrap(), m))
        };
        let (v, m) = sr(s(Scalar::Float), "NaN").unwrap();
        assert_eq!((v.as_str(), m.non_finite_to_null), ("null", 1));
        let (v, m) = sr(s(Scalar::Numeric), "-Infinity").unwrap();
        assert_eq!((v.as_str(), m.non_finite_to_null), ("null", 1));
        let (v, m) = sr(s(Scalar::Timestamptz), "infinity").unwrap();
        assert_eq!(
            (v.as_str(), m.infinity_clamped),
            ("\"9999-12-31 23:59:59.999999\"", 1)
        );
        let (v, _) = sr(s(Scalar::Timestamptz), "2024-01-02 03:04:05.5+00").unwrap();
        assert_eq!(v, "\"2024-01-02 03:04:05.5\"");
        let (v, m) = sr(s(Scalar::Date), "-infinity").unwrap();
        assert_eq!((v.as_str(), m.infinity_clamped), ("\"0000-01-01\"", 1));
        let (v, m) = sr(arr(Scalar::Float), "{1,NaN}").unwrap();
        assert_eq!((v.as_str(), m.non_finite_to_null), ("[1,null]", 1));
        let (v, _) = sr(s(Scalar::Numeric), "-$1,234.50").unwrap();
        assert_eq!(v, "\"-1234.50\"");
        assert!(sr(s(Scalar::Date), "0044-03-15 BC").is_err());
        assert!(sr(s(Scalar::Timestamp), "0044-03-15 12:00:00 BC").is_err());
        // NDJSON keeps PostgreSQL's meaning.
        assert_eq!(json(s(Scalar::Date), "infinity").unwrap(), "\"infinity\"");
    }

    #[test]
    fn json_number_grammar() {
        for ok in ["0", "-0", "1.25", "1e5", "1E-7", "-12.5e+3"] {
            assert!(is_json_number(ok.as_bytes()), "{ok}");
        }
        for bad in ["", "-", "01", "1.", ".5", "1e", "+1", "1.2.3"] {
            assert!(!is_json_number(bad.as_bytes()), "{bad}");
        }
    }
}
