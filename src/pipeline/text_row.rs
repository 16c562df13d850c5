//! Rows as lines of text: tab-separated fields with backslash escapes and `\N` for NULL
//! (PostgreSQL's COPY text format).
//!
//! This is the form in which a source hands snapshot rows to a sink's encoder
//! ([`crate::pipeline::sink::SnapshotEncoder`]): the source reads them in bulk this way, and a
//! sink can often copy most fields into its own format as they are. The helpers here split a line
//! into fields, decode a field's escapes, and parse a line into a [`Tuple`].

use bytes::Bytes;

use crate::pipeline::change::{Tuple, Value};

/// A line is not a valid text row.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextRowError {
    /// The line's field count is not the table's column count.
    #[error("a COPY line has {fields} fields, the table has {columns} columns")]
    FieldCount {
        /// Fields in the line.
        fields: usize,
        /// Columns of the table.
        columns: usize,
    },
    /// A field ends with an escape character.
    #[error("a COPY field ends with a lone backslash")]
    LoneBackslash,
}

/// The tab-separated fields of one line of COPY text format (without its newline), escapes
/// left as they are.
pub fn copy_fields(line: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut start = 0;
    memchr::memchr_iter(b'\t', line)
        .chain(std::iter::once(line.len()))
        .map(move |end| {
            let field = &line[start..end];
            start = end + 1;
            field
        })
}

/// The error for a line whose field count is not the table's column count.
pub fn check_field_count(fields: usize, columns: usize) -> Result<(), TextRowError> {
    if fields == columns {
        Ok(())
    } else {
        Err(TextRowError::FieldCount { fields, columns })
    }
}

/// Parses one line of COPY text format into values (zero-copy unless a field has escapes).
pub fn parse_copy_line(line: &Bytes, columns: usize) -> Result<Tuple, TextRowError> {
    let mut values = Vec::with_capacity(columns);
    for field in copy_fields(line) {
        values.push(if field == b"\\N" {
            Value::Null
        } else if memchr::memchr(b'\\', field).is_some() {
            let mut out = Vec::with_capacity(field.len());
            unescape_into(field, &mut out)?;
            Value::Text(Bytes::from(out))
        } else {
            Value::Text(line.slice_ref(field))
        });
    }
    check_field_count(values.len(), columns)?;
    Ok(Tuple { values })
}

/// Decodes the backslash escapes of one COPY text field, appending to `out`.
pub fn unescape_into(field: &[u8], out: &mut Vec<u8>) -> Result<(), TextRowError> {
    let mut i = 0;
    while i < field.len() {
        let b = field[i];
        if b != b'\\' {
            out.push(b);
            i += 1;
            continue;
        }
        let Some(&c) = field.get(i + 1) else {
            return Err(TextRowError::LoneBackslash);
        };
        i += 2;
        let decoded = match c {
            b'b' => 8,
            b'f' => 12,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'v' => 11,
            b'0'..=b'7' => {
                let mut v = u32::from(c - b'0');
                for _ in 0..2 {
                    match field.get(i) {
                        Some(d @ b'0'..=b'7') => {
                            v = v * 8 + u32::from(d - b'0');
                            i += 1;
                        }
                        _ => break,
                    }
                }
                (v & 0xFF) as u8
            }
            b'x' => {
                let mut v = 0u32;
                let mut n = 0;
                while n < 2 {
                    match field.get(i).and_then(|d| char::from(*d).to_digit(16)) {
                        Some(d) => {
                            v = v * 16 + d;
                            i += 1;
                            n += 1;
                        }
                        None => break,
                    }
                }
                v as u8
            }
            other => other,
        };
        out.push(decoded);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_lines_parse_nulls_escapes_and_zero_copy_fields() {
        let line = Bytes::from_static(b"1\t\\N\ta\\tb\\\\c\\n\tplain\t\\101\\x42");
        let t = parse_copy_line(&line, 5).unwrap();
        assert_eq!(t.values[0], Value::Text(Bytes::from_static(b"1")));
        assert_eq!(t.values[1], Value::Null);
        assert_eq!(t.values[2], Value::Text(Bytes::from_static(b"a\tb\\c\n")));
        assert_eq!(t.values[4], Value::Text(Bytes::from_static(b"AB")));
        if let Value::Text(b) = &t.values[3] {
            assert_eq!(
                b.as_ptr(),
                line[15..].as_ptr(),
                "unescaped fields are slices"
            );
        } else {
            panic!()
        }
        assert!(parse_copy_line(&line, 6).is_err());
        assert!(parse_copy_line(&Bytes::from_static(b"a\\"), 1).is_err());
        assert_eq!(
            parse_copy_line(&Bytes::from_static(b""), 1)
                .unwrap()
                .values
                .len(),
            1
        );
    }
}
