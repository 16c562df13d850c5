//! Database names for schema uploads: validation and identifier quoting.
//!
//! A database name comes from the caller and ends up in `CREATE DATABASE`, `DROP DATABASE` and
//! connection strings, so it is held to a deliberately small alphabet,
//! `^[a-z_][a-z0-9_]{0,62}$` (63 bytes is PostgreSQL's identifier limit; MySQL allows 64). Names
//! that belong to the servers themselves or to dbmazz are refused. Valid names are still quoted
//! with [`quote_ident_pg`] / [`quote_ident_mysql`] wherever they reach SQL: validation and
//! quoting are two independent defences.

use std::fmt;

/// Longest accepted name, in bytes (PostgreSQL's `NAMEDATALEN - 1`).
pub const MAX_NAME_LEN: usize = 63;

/// Names that belong to PostgreSQL or MySQL themselves.
pub const RESERVED_NAMES: &[&str] = &[
    "postgres",
    "template0",
    "template1",
    "mysql",
    "information_schema",
    "performance_schema",
    "sys",
];

/// A refused database name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameError {
    /// The name as given, escaped and truncated for display.
    pub shown: String,
    /// Stable kebab-case rule name: `name-empty`, `name-too-long`, `name-first-character`,
    /// `name-characters`, `name-reserved`.
    pub rule: &'static str,
    /// What the rule requires.
    pub reason: &'static str,
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "database name {} is refused (rule {}: {})",
            self.shown, self.rule, self.reason
        )
    }
}

impl std::error::Error for NameError {}

/// Check `name` against `^[a-z_][a-z0-9_]{0,62}$`, [`RESERVED_NAMES`] and `also_reserved`
/// (for example the daemon's own database), compared case-insensitively.
pub fn validate_database_name<S: AsRef<str>>(
    name: &str,
    also_reserved: &[S],
) -> Result<(), NameError> {
    let refuse = |rule, reason| {
        Err(NameError {
            shown: shown(name),
            rule,
            reason,
        })
    };
    const CHARSET: &str = "only lowercase a-z, digits 0-9 and _ are allowed, as in tenant_42";
    let bytes = name.as_bytes();
    let Some(&first) = bytes.first() else {
        return refuse("name-empty", "a database name is required");
    };
    if bytes.len() > MAX_NAME_LEN {
        return refuse("name-too-long", "at most 63 characters");
    }
    if !(first.is_ascii_lowercase() || first == b'_') {
        return refuse(
            "name-first-character",
            "the name must start with a lowercase letter a-z or _",
        );
    }
    if !bytes
        .iter()
        .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_')
    {
        return refuse("name-characters", CHARSET);
    }
    let reserved = RESERVED_NAMES.iter().any(|r| r.eq_ignore_ascii_case(name))
        || also_reserved
            .iter()
            .any(|r| r.as_ref().eq_ignore_ascii_case(name));
    if reserved {
        return refuse(
            "name-reserved",
            "the name belongs to the database server or to dbmazz itself",
        );
    }
    Ok(())
}

/// `name` as a PostgreSQL quoted identifier: `"…"` with `"` doubled.
pub fn quote_ident_pg(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `name` as a MySQL quoted identifier: `` `…` `` with `` ` `` doubled.
pub fn quote_ident_mysql(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// `name` escaped with `{:?}`, cut to about 70 characters so a huge value cannot flood a log.
fn shown(name: &str) -> String {
    const MAX_CHARS: usize = 70;
    if name.chars().count() <= MAX_CHARS {
        format!("{name:?}")
    } else {
        let head: String = name.chars().take(MAX_CHARS).collect();
        format!("{head:?}… ({} bytes)", name.len())
    }
}

/// A PostgreSQL role / MySQL user name dbmazz accepts: 1-63 letters, digits and
/// underscores, not starting with a digit.
pub fn is_role_name(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !s.as_bytes()[0].is_ascii_digit()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONE: &[&str] = &[];

    #[test]
    fn good_names_are_accepted() {
        let max = format!("a{}", "b".repeat(62));
        for name in [
            "tenant_a",
            "_x",
            "a",
            "t1",
            "tenant_0042",
            max.as_str(),
            "a__b",
        ] {
            assert_eq!(validate_database_name(name, NONE), Ok(()), "{name}");
        }
    }

    #[test]
    fn injection_corpus_is_refused() {
        let long = "a".repeat(64);
        let huge = "x".repeat(10_000);
        let corpus = [
            "",
            " ",
            " tenant",
            "tenant ",
            "a b",
            "a;drop database x",
            "a; DROP DATABASE postgres; --",
            "A",
            "Tenant",
            "tenant-1",
            "1tenant",
            "9",
            "x\0",
            "\0",
            "a\nb",
            "a\tb",
            "a\rb",
            "tenаnt",
            "ｔｅｎａｎｔ",
            "tenant\u{200b}",
            "é",
            long.as_str(),
            huge.as_str(),
            "postgres",
            "template0",
            "template1",
            "mysql",
            "information_schema",
            "performance_schema",
            "sys",
            "`a`",
            "a`b",
            "\"a\"",
            "a\"b",
            "a'b",
            "'; select 1; --",
            "..",
            "../etc",
            "a/b",
            "a\\b",
            "a.b",
            "$a",
            "a$b",
            "a%",
            "a*",
            "a--",
            "a/*x*/",
            "dbmazz_ctl",
        ];
        for name in corpus {
            let err = validate_database_name(name, &["dbmazz_ctl"])
                .expect_err(&format!("{name:?} must be refused"));
            let text = err.to_string();
            assert!(text.contains("rule name-"), "{text}");
            assert!(text.len() < 400, "message stays short: {text}");
            assert!(!text.contains('\0') && !text.contains('\n'), "{text}");
        }
    }

    #[test]
    fn errors_name_the_value_and_the_rule() {
        let err = validate_database_name("tenant-1", NONE).unwrap_err();
        assert_eq!(err.rule, "name-characters");
        assert_eq!(
            err.to_string(),
            "database name \"tenant-1\" is refused (rule name-characters: only lowercase a-z, \
             digits 0-9 and _ are allowed, as in tenant_42)"
        );
        assert_eq!(
            validate_database_name("", NONE).unwrap_err().rule,
            "name-empty"
        );
        assert_eq!(
            validate_database_name("Postgres", NONE).unwrap_err().rule,
            "name-first-character"
        );
        assert_eq!(
            validate_database_name("postgres", NONE).unwrap_err().rule,
            "name-reserved"
        );
        assert_eq!(
            validate_database_name("dbmazz", &["DBMAZZ".to_owned()])
                .unwrap_err()
                .rule,
            "name-reserved"
        );
        let long = validate_database_name(&"a".repeat(5000), NONE).unwrap_err();
        assert_eq!(long.rule, "name-too-long");
        assert!(long.shown.ends_with("… (5000 bytes)"), "{}", long.shown);
    }

    #[test]
    fn quoting_doubles_the_quote_character() {
        assert_eq!(quote_ident_pg("tenant_a"), "\"tenant_a\"");
        assert_eq!(quote_ident_pg("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_ident_mysql("tenant_a"), "`tenant_a`");
        assert_eq!(quote_ident_mysql("a`b"), "`a``b`");
    }
}
