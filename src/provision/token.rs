//! Tokens of one complete statement, for the SQL guard and for spotting `COPY … FROM stdin`.
//!
//! The guard must work on tokens, never on substrings: a keyword inside a string literal, a
//! quoted identifier, a dollar-quoted body or a comment is not a keyword. These lexing rules
//! mirror the splitter's ([`super::split`]), on a whole statement instead of a stream, so no
//! "need more bytes" state is needed. MySQL's executable comments (`/*! … */`, `/*!50003 … */`,
//! MariaDB's `/*M!100100 … */`) are code: their markers are skipped and their content is
//! tokenized like the rest.

use super::split::{is_ident_cont, is_ident_start, Dialect};

/// One token; comments and whitespace produce none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Token<'a> {
    /// An unquoted identifier or keyword, as written.
    Word(&'a str),
    /// A quoted identifier (`"x"`, MySQL `` `x` ``), content without the quotes, escapes intact.
    QuotedIdent(&'a str),
    /// A string literal or dollar-quoted string, content without the quotes, escapes intact.
    Str(&'a str),
    /// A number or a PostgreSQL `$1` parameter.
    Number,
    /// Any other single byte (operators, punctuation).
    Punct(u8),
}

impl Token<'_> {
    /// Whether this is the unquoted word `keyword` (ASCII case-insensitive).
    pub(crate) fn is_word(&self, keyword: &str) -> bool {
        matches!(self, Token::Word(w) if w.eq_ignore_ascii_case(keyword))
    }
}

/// Iterator over the tokens of `sql`.
pub(crate) struct Tokens<'a> {
    src: &'a str,
    pos: usize,
    dialect: Dialect,
    exec_comment: bool,
}

impl<'a> Tokens<'a> {
    pub(crate) fn new(src: &'a str, dialect: Dialect) -> Self {
        Tokens {
            src,
            pos: 0,
            dialect,
            exec_comment: false,
        }
    }

    fn bytes(&self) -> &'a [u8] {
        self.src.as_bytes()
    }

    fn at(&self, i: usize) -> Option<u8> {
        self.bytes().get(i).copied()
    }

    /// Skip a quoted run starting after the opening quote; returns the content end.
    fn skip_quoted(&mut self, close: u8, backslash: bool) -> usize {
        let b = self.bytes();
        let mut i = self.pos;
        while i < b.len() {
            let found = if backslash {
                memchr::memchr2(close, b'\\', &b[i..])
            } else {
                memchr::memchr(close, &b[i..])
            };
            let Some(skip) = found else {
                break;
            };
            i += skip;
            let c = b[i];
            if c == b'\\' {
                i += 2;
            } else if c == close {
                if b.get(i + 1) == Some(&close) {
                    i += 2;
                } else {
                    self.pos = i + 1;
                    return i;
                }
            }
        }
        self.pos = b.len();
        b.len()
    }

    fn slice(&self, start: usize, end: usize) -> &'a str {
        self.src.get(start..end.min(self.src.len())).unwrap_or("")
    }

    fn quoted(&mut self, close: u8, backslash: bool) -> &'a str {
        let start = self.pos;
        let end = self.skip_quoted(close, backslash);
        self.slice(start, end)
    }
}

impl<'a> Iterator for Tokens<'a> {
    type Item = Token<'a>;

    fn next(&mut self) -> Option<Token<'a>> {
        let b = self.bytes();
        let mysql = self.dialect == Dialect::MySql;
        loop {
            let c = *b.get(self.pos)?;
            let next = self.at(self.pos + 1);
            match c {
                c if c.is_ascii_whitespace() || c == 0x0b => self.pos += 1,
                b'-' if next == Some(b'-')
                    && (!mysql || self.at(self.pos + 2).is_none_or(|c| c <= b' ')) =>
                {
                    self.pos =
                        memchr::memchr(b'\n', &b[self.pos..]).map_or(b.len(), |i| self.pos + i);
                }
                b'#' if mysql => {
                    self.pos =
                        memchr::memchr(b'\n', &b[self.pos..]).map_or(b.len(), |i| self.pos + i);
                }
                b'/' if next == Some(b'*') => {
                    let marker = match (self.at(self.pos + 2), self.at(self.pos + 3)) {
                        (Some(b'!'), _) => 3,
                        (Some(b'M'), Some(b'!')) => 4,
                        _ => 0,
                    };
                    if mysql && marker > 0 {
                        self.exec_comment = true;
                        self.pos += marker;
                        while self.at(self.pos).is_some_and(|c| c.is_ascii_digit()) {
                            self.pos += 1;
                        }
                        continue;
                    }
                    let mut depth = 1u32;
                    let mut i = self.pos + 2;
                    while i < b.len() && depth > 0 {
                        if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                            depth -= 1;
                            i += 2;
                        } else if !mysql && b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                            depth += 1;
                            i += 2;
                        } else {
                            i += 1;
                        }
                    }
                    self.pos = i;
                }
                b'*' if mysql && self.exec_comment && next == Some(b'/') => {
                    self.exec_comment = false;
                    self.pos += 2;
                }
                b'\'' => {
                    self.pos += 1;
                    return Some(Token::Str(self.quoted(b'\'', mysql)));
                }
                b'"' => {
                    self.pos += 1;
                    return Some(if mysql {
                        Token::Str(self.quoted(b'"', true))
                    } else {
                        Token::QuotedIdent(self.quoted(b'"', false))
                    });
                }
                b'`' if mysql => {
                    self.pos += 1;
                    return Some(Token::QuotedIdent(self.quoted(b'`', false)));
                }
                b'$' if !mysql => {
                    let start = self.pos;
                    let rest = &b[start..];
                    if rest.len() > 1 && rest[1].is_ascii_digit() {
                        self.pos += 1;
                        while self.at(self.pos).is_some_and(|c| c.is_ascii_digit()) {
                            self.pos += 1;
                        }
                        return Some(Token::Number);
                    }
                    let tag_len = rest[1..]
                        .iter()
                        .position(|&c| !(is_ident_start(c) || c.is_ascii_digit()))
                        .filter(|&i| rest[1 + i] == b'$' && (i == 0 || is_ident_start(rest[1])))
                        .map(|i| i + 2);
                    let Some(tag_len) = tag_len else {
                        self.pos += 1;
                        return Some(Token::Punct(b'$'));
                    };
                    let tag = &rest[..tag_len];
                    let body = start + tag_len;
                    let end = memchr::memmem::find(&b[body..], tag).map_or(b.len(), |i| body + i);
                    self.pos = (end + tag_len).min(b.len());
                    return Some(Token::Str(self.slice(body, end)));
                }
                c if is_ident_start(c) => {
                    let start = self.pos;
                    while self.at(self.pos).is_some_and(is_ident_cont) {
                        self.pos += 1;
                    }
                    let word = self.slice(start, self.pos);
                    // String prefixes: E'…' (backslash escapes), B'…', X'…', N'…', U&'…'.
                    match (word.as_bytes(), self.at(self.pos)) {
                        ([p], Some(b'\'')) if b"eEbBxXnN".contains(p) => {
                            self.pos += 1;
                            let backslash = mysql || p.eq_ignore_ascii_case(&b'e');
                            return Some(Token::Str(self.quoted(b'\'', backslash)));
                        }
                        ([b'u' | b'U'], Some(b'&')) if !mysql => match self.at(self.pos + 1) {
                            Some(b'\'') => {
                                self.pos += 2;
                                return Some(Token::Str(self.quoted(b'\'', false)));
                            }
                            Some(b'"') => {
                                self.pos += 2;
                                return Some(Token::QuotedIdent(self.quoted(b'"', false)));
                            }
                            _ => {}
                        },
                        _ => {}
                    }
                    return Some(Token::Word(word));
                }
                c if c.is_ascii_digit() => {
                    while self
                        .at(self.pos)
                        .is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'.')
                    {
                        self.pos += 1;
                    }
                    return Some(Token::Number);
                }
                c => {
                    self.pos += 1;
                    return Some(Token::Punct(c));
                }
            }
        }
    }
}

/// Whether a PostgreSQL statement is `COPY … FROM stdin` (the FROM at parenthesis depth 0).
pub(crate) fn is_copy_from_stdin(sql: &str) -> bool {
    let mut tokens = Tokens::new(sql, Dialect::Postgres);
    if !tokens.next().is_some_and(|t| t.is_word("copy")) {
        return false;
    }
    let mut depth = 0i32;
    let mut after_from = false;
    for token in tokens {
        match token {
            Token::Punct(b'(') => depth += 1,
            Token::Punct(b')') => depth -= 1,
            _ => {}
        }
        if after_from {
            return token.is_word("stdin");
        }
        after_from = depth == 0 && token.is_word("from");
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(sql: &str, dialect: Dialect) -> Vec<String> {
        Tokens::new(sql, dialect)
            .filter_map(|t| match t {
                Token::Word(w) => Some(w.to_ascii_lowercase()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn literals_comments_and_quoted_identifiers_hold_no_words() {
        let sql = "select 'drop database' , \"drop\" , $f$ drop $f$, E'\\' drop', /* drop /* x */ drop */ 1 -- drop\n from t";
        assert_eq!(words(sql, Dialect::Postgres), ["select", "from", "t"]);
        let sql =
            "select 'a\\' drop', \"b\\\" drop\", `drop`, 1 # drop\n, 2 -- drop\n, 3--4 from t";
        assert_eq!(words(sql, Dialect::MySql), ["select", "from", "t"]);
    }

    #[test]
    fn mysql_executable_comments_are_code() {
        let sql = "/*!40101 SET NAMES utf8 */ /* plain comment */ /*!50003 DROP DATABASE x*/";
        assert_eq!(
            words(sql, Dialect::MySql),
            ["set", "names", "utf8", "drop", "database", "x"]
        );
    }

    #[test]
    fn dollar_signs_that_do_not_open_quotes() {
        let sql = "select $1, a$b$, $ from t";
        let tokens: Vec<_> = Tokens::new(sql, Dialect::Postgres).collect();
        assert!(tokens.contains(&Token::Word("a$b$")));
        assert!(tokens.contains(&Token::Word("from")));
    }

    #[test]
    fn copy_from_stdin_is_recognised_only_at_depth_zero() {
        assert!(is_copy_from_stdin("COPY public.t (a, b) FROM stdin"));
        assert!(is_copy_from_stdin("copy t from STDIN with (format csv)"));
        assert!(!is_copy_from_stdin("COPY (select 1 from stdin) TO STDOUT"));
        assert!(!is_copy_from_stdin("COPY t FROM '/tmp/x'"));
        assert!(!is_copy_from_stdin("SELECT 1 FROM stdin"));
    }
}
