//! Table names and SQL quoting: one identifier type for the whole program.
//!
//! `TABLES`, the control plane's table lists, the source's catalog, the checkpoints and the sinks
//! all name tables the same way: schema and name, with unquoted parts folded to lower case as
//! PostgreSQL does. Quoting for SQL lives here too, so that every statement dbmazz builds quotes
//! names and literals the same way.

use std::fmt;

/// A schema-qualified table name, as given in `TABLES` (unquoted parts are folded to lower case,
/// as PostgreSQL does).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableName {
    /// Schema, `public` when `TABLES` named none.
    pub schema: String,
    /// Table name.
    pub name: String,
}

impl TableName {
    /// Builds a name from its parts.
    pub fn new(schema: impl Into<String>, name: impl Into<String>) -> Self {
        TableName {
            schema: schema.into(),
            name: name.into(),
        }
    }

    /// The name quoted for SQL: `"schema"."name"`.
    pub fn quoted(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.schema, self.name)
    }
}

/// Quotes an SQL identifier, doubling embedded quotes.
pub fn quote_ident(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// Quotes an SQL string literal, doubling embedded single quotes.
pub fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// A table list (`TABLES`, or a list given over the control plane) cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TableListError {
    /// Two commas with nothing between them.
    #[error("{0:?} has an empty entry; remove the extra comma")]
    EmptyEntry(String),
    /// More than schema and name.
    #[error("{0:?} is not a table name; expected table or schema.table")]
    NotATable(String),
    /// A double quote that is never closed.
    #[error("{0:?} has an unclosed double quote")]
    UnclosedQuote(String),
    /// A quoted part that is empty or too long.
    #[error("{0} must be 1-63 bytes long")]
    Length(String),
    /// An unquoted part with characters an identifier cannot have.
    #[error("{0:?} is not a valid identifier; double-quote names with other characters")]
    Invalid(String),
}

/// Parses `TABLES`: a comma list of `table` or `schema.table`, where a part may be
/// double-quoted to keep its case or contain dots.
pub fn parse_tables(raw: &str) -> Result<Vec<TableName>, TableListError> {
    let mut out: Vec<TableName> = Vec::new();
    for item in split_outside_quotes(raw, ',')? {
        let item = item.trim();
        if item.is_empty() {
            return Err(TableListError::EmptyEntry(raw.to_owned()));
        }
        let parts = split_outside_quotes(item, '.')?;
        let parts: Vec<String> = parts
            .iter()
            .map(|p| parse_ident(p.trim()))
            .collect::<Result<_, _>>()?;
        let table = match parts.as_slice() {
            [name] => TableName::new("public", name.clone()),
            [schema, name] => TableName::new(schema.clone(), name.clone()),
            _ => return Err(TableListError::NotATable(item.to_owned())),
        };
        if !out.contains(&table) {
            out.push(table);
        }
    }
    Ok(out)
}

/// A `TABLES` entry with `*` in an unquoted part (`public.*`, `sales.order_*`): it selects every
/// ordinary table whose schema and name match, now and created later.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TablePattern {
    /// Schema glob (`*` matches any run of characters).
    pub schema: String,
    /// Name glob.
    pub name: String,
}

impl TablePattern {
    /// Whether `table` matches.
    pub fn matches(&self, table: &TableName) -> bool {
        glob(&self.schema, &table.schema) && glob(&self.name, &table.name)
    }
}

impl fmt::Display for TablePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.schema, self.name)
    }
}

/// `*`-only glob matching (no other metacharacter: `?`, `[` and `_` are literal).
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    // Classic two-pointer wildcard match with backtracking to the last star.
    let (mut i, mut j) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while j < t.len() {
        if i < p.len() && p[i] != '*' && p[i] == t[j] {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some(i);
            mark = j;
            i += 1;
        } else if let Some(s) = star {
            i = s + 1;
            mark += 1;
            j = mark;
        } else {
            return false;
        }
    }
    p[i..].iter().all(|c| *c == '*')
}

/// Parses a `TABLES` value that may hold patterns: the exact names, and the patterns.
pub fn parse_table_selection(
    raw: &str,
) -> Result<(Vec<TableName>, Vec<TablePattern>), TableListError> {
    let mut exact = Vec::new();
    let mut patterns: Vec<TablePattern> = Vec::new();
    let mut plain = Vec::new();
    for item in split_outside_quotes(raw, ',')? {
        let item = item.trim();
        if item.is_empty() {
            return Err(TableListError::EmptyEntry(raw.to_owned()));
        }
        let parts = split_outside_quotes(item, '.')?;
        let wild = |p: &str| !p.trim().starts_with('"') && p.contains('*');
        if !parts.iter().any(|p| wild(p)) {
            plain.push(item);
            continue;
        }
        let part = |p: &str| -> Result<String, TableListError> {
            let p = p.trim();
            if wild(p) {
                // Checked as an identifier with each `*` standing for a letter.
                let probe = p.replace('*', "x");
                parse_ident(&probe)?;
                Ok(p.to_lowercase())
            } else {
                parse_ident(p)
            }
        };
        let pattern = match parts.as_slice() {
            [name] => TablePattern {
                schema: "public".into(),
                name: part(name)?,
            },
            [schema, name] => TablePattern {
                schema: part(schema)?,
                name: part(name)?,
            },
            _ => return Err(TableListError::NotATable(item.to_owned())),
        };
        if !patterns.contains(&pattern) {
            patterns.push(pattern);
        }
    }
    if !plain.is_empty() {
        exact = parse_tables(&plain.join(","))?;
    }
    Ok((exact, patterns))
}

fn split_outside_quotes(s: &str, sep: char) -> Result<Vec<&str>, TableListError> {
    let mut parts = Vec::new();
    let mut in_quotes = false;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        if c == '"' {
            in_quotes = !in_quotes;
        } else if c == sep && !in_quotes {
            parts.push(&s[start..i]);
            start = i + 1;
        }
    }
    if in_quotes {
        return Err(TableListError::UnclosedQuote(s.to_owned()));
    }
    parts.push(&s[start..]);
    Ok(parts)
}

fn parse_ident(part: &str) -> Result<String, TableListError> {
    if let Some(inner) = part.strip_prefix('"').and_then(|p| p.strip_suffix('"')) {
        let name = inner.replace("\"\"", "\"");
        if name.is_empty() || name.len() > 63 {
            return Err(TableListError::Length(part.to_owned()));
        }
        return Ok(name);
    }
    let valid = !part.is_empty()
        && part.len() <= 63
        && part
            .chars()
            .next()
            .is_some_and(|c| c.is_alphabetic() || c == '_')
        && part
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '$');
    if !valid {
        return Err(TableListError::Invalid(part.to_owned()));
    }
    Ok(part.to_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_are_told_from_names_and_match_by_glob() {
        let (exact, patterns) =
            parse_table_selection(r#"orders, sales.order_*, "Weird*".x, *"#).unwrap();
        assert_eq!(
            exact,
            vec![
                TableName::new("public", "orders"),
                TableName::new("Weird*", "x")
            ]
        );
        assert_eq!(patterns.len(), 2);
        let p = &patterns[0];
        assert!(p.matches(&TableName::new("sales", "order_items")));
        assert!(p.matches(&TableName::new("sales", "order_")));
        assert!(!p.matches(&TableName::new("sales", "orders")));
        assert!(!p.matches(&TableName::new("public", "order_items")));
        let all_public = &patterns[1];
        assert!(all_public.matches(&TableName::new("public", "anything")));
        assert!(!all_public.matches(&TableName::new("other", "anything")));
        assert!(glob("a*b*c", "axxbyyc") && !glob("a*b*c", "axxbyy") && glob("**", ""));
        assert!(parse_table_selection("sales.or-der*").is_err());
    }
}
