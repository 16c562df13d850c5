//! The one SQL lexer, shared by the statement splitter and the SQL guard.
//!
//! The splitter ([`super::split`]) decides which bytes form a statement; the guard
//! ([`super::guard`]) decides whether that statement may run. Both must agree on where a string
//! literal, a quoted identifier, a comment or a dollar quote begins and ends: if they did not, a
//! keyword could hide from the guard in text the server executes. So the rules live here, once:
//!
//! ```text
//!               open(): what starts at a token boundary      Lex::scan(): the inside of it
//! splitter ──▶  (chunks, eof = false: "need more" allowed) ─▶ (counting lines, resumable)
//! Tokens   ──▶  (a whole statement, eof = true)            ─▶ (same code, one call)
//! ```
//!
//! The splitter calls them on a stream cut anywhere, so every rule can answer "need more
//! input"; [`Tokens`] calls them on one complete statement (`eof = true`) and turns what they
//! find into [`Token`]s. MySQL's executable comments (`/*! … */`, `/*!50003 … */`, MariaDB's
//! `/*M!100100 … */`) are code for both: only their markers are skipped.
//!
//! What the two callers still decide themselves is the context a rule looks at: [`open`] takes
//! the text `before` the byte, and the splitter passes the statement so far while [`Tokens`]
//! passes the current word (or nothing). That keeps each caller's long-standing answer on two
//! inputs no dump contains (`$e'…'`, and a dollar quote right after another one's closing tag);
//! the tests of both callers pin that behaviour.

use memchr::{memchr, memchr2, memchr3};

/// Which client's file format the upload follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// psql scripts: pg_dump's plain format or hand-written DDL.
    Postgres,
    /// mysql client scripts: mysqldump output or hand-written DDL (MySQL 8, MariaDB).
    MySql,
}

/// Bytes that may start a PostgreSQL identifier (any non-ASCII byte counts, as in the lexer).
pub(crate) fn is_ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c >= 0x80
}

/// Bytes that may continue a PostgreSQL or MySQL identifier.
pub(crate) fn is_ident_cont(c: u8) -> bool {
    is_ident_start(c) || c.is_ascii_digit() || c == b'$'
}

/// Result of comparing buffered bytes with an expected form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Match {
    Yes,
    No,
    /// The buffered bytes are a strict prefix of the form and more input may follow.
    NeedMore,
}

/// What starts at a token boundary outside any literal or comment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Opener {
    /// An ordinary byte: nothing opens here.
    Plain,
    /// The bytes buffered so far cannot decide; more input may follow.
    NeedMore,
    /// A line comment (`--`, MySQL's `#`) whose marker is this many bytes.
    LineComment(usize),
    /// A block comment `/*`.
    BlockComment,
    /// MySQL's executable comment `/*!` or MariaDB's `/*M!`, a marker of this many bytes
    /// (version digits not included); its content is code.
    ExecComment(usize),
    /// The `*/` that ends an executable comment.
    ExecCommentEnd,
    /// A quoted string or identifier closed by `close`; `backslash`: backslash escapes apply.
    Quote { close: u8, backslash: bool },
    /// A dollar quote whose tag (both `$` included) is this many bytes.
    Dollar(usize),
}

/// Classifies the byte `rest[0]` at a token boundary outside any literal or comment.
///
/// `before` is the text just before it that decides two rules: an `E` right before `'` makes a
/// backslash-escape string, and a `$` that continues an identifier opens no dollar quote.
/// `exec_comment` says whether a MySQL executable comment is open; `eof` whether `rest` runs
/// to the end of the input (otherwise [`Opener::NeedMore`] may come back).
#[inline(always)]
pub(crate) fn open(
    dialect: Dialect,
    rest: &[u8],
    before: &[u8],
    exec_comment: bool,
    eof: bool,
) -> Opener {
    let mysql = dialect == Dialect::MySql;
    match rest[0] {
        b'-' => match rest.get(1) {
            None if !eof => Opener::NeedMore,
            Some(b'-') if !mysql => Opener::LineComment(2),
            // MySQL needs a space (or control character, or the end) after `--`.
            Some(b'-') => match rest.get(2) {
                None if !eof => Opener::NeedMore,
                None => Opener::LineComment(2),
                Some(&c) if c <= b' ' => Opener::LineComment(2),
                Some(_) => Opener::Plain,
            },
            _ => Opener::Plain,
        },
        b'#' if mysql => Opener::LineComment(1),
        b'/' => match rest.get(1) {
            None if !eof => Opener::NeedMore,
            Some(b'*') if mysql => {
                // `/*!` (MySQL and MariaDB) and `/*M!` (MariaDB) are executable.
                match (rest.get(2), rest.get(3)) {
                    (None, _) | (Some(b'M'), None) if !eof => Opener::NeedMore,
                    (Some(b'!'), _) => Opener::ExecComment(3),
                    (Some(b'M'), Some(b'!')) => Opener::ExecComment(4),
                    _ => Opener::BlockComment,
                }
            }
            Some(b'*') => Opener::BlockComment,
            _ => Opener::Plain,
        },
        b'*' if mysql && exec_comment => match rest.get(1) {
            None if !eof => Opener::NeedMore,
            Some(b'/') => Opener::ExecCommentEnd,
            _ => Opener::Plain,
        },
        b'\'' => Opener::Quote {
            close: b'\'',
            backslash: mysql || escape_string_prefix(before),
        },
        b'"' => Opener::Quote {
            close: b'"',
            backslash: mysql,
        },
        b'`' if mysql => Opener::Quote {
            close: b'`',
            backslash: false,
        },
        b'$' if !mysql && !continues_identifier(before) => match dollar_tag(rest, eof) {
            Match::NeedMore => Opener::NeedMore,
            Match::No => Opener::Plain,
            Match::Yes => {
                Opener::Dollar(1 + rest[1..].iter().position(|&c| c == b'$').unwrap_or(0) + 1)
            }
        },
        _ => Opener::Plain,
    }
}

/// Whether `before` ends with a lone `E` that makes the next `'…'` a PostgreSQL escape string.
#[inline]
fn escape_string_prefix(before: &[u8]) -> bool {
    matches!(before.last(), Some(b'e' | b'E'))
        && (before.len() == 1 || !is_ident_cont(before[before.len() - 2]))
}

/// Whether `rest` (starting with `$`) opens a dollar quote: `$$` or `$tag$` with a tag made of
/// identifier characters not starting with a digit.
fn dollar_tag(rest: &[u8], eof: bool) -> Match {
    let more = if eof { Match::No } else { Match::NeedMore };
    let Some(&first) = rest.get(1) else {
        return more;
    };
    if first == b'$' {
        return Match::Yes;
    }
    if !is_ident_start(first) {
        return Match::No;
    }
    for &c in &rest[2..] {
        if c == b'$' {
            return Match::Yes;
        }
        if !is_ident_start(c) && !c.is_ascii_digit() {
            return Match::No;
        }
    }
    more
}

/// Whether a `$` right after `before` continues an identifier (`a$b`) rather than opening a
/// dollar quote: the run of identifier characters before it must start like an identifier.
fn continues_identifier(before: &[u8]) -> bool {
    let run = before
        .iter()
        .rev()
        .take_while(|&&c| is_ident_cont(c))
        .count();
    run > 0 && is_ident_start(before[before.len() - run])
}

/// Where the lexer is in SQL text; kept between chunks by the splitter.
#[derive(Clone, Debug)]
pub(crate) enum Lex {
    /// Plain SQL between tokens of interest.
    Normal,
    /// Inside a quoted string or identifier closed by `close`; a doubled `close` continues it.
    Quote {
        close: u8,
        backslash: bool,
        start_line: u64,
    },
    /// Inside a line comment, up to the next `\n`.
    LineComment,
    /// Inside a block comment (nested in PostgreSQL).
    BlockComment { depth: u32, start_line: u64 },
    /// Inside a dollar-quoted string; `tag` includes both `$`.
    Dollar { tag: Vec<u8>, start_line: u64 },
}

/// How a [`Lex::scan`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scan {
    /// The literal or comment ended; the state is [`Lex::Normal`] again.
    Closed,
    /// Every byte that can be decided without more input has been consumed (at `eof`: the
    /// input ended inside the literal or comment).
    NeedMore,
}

impl Lex {
    /// Consumes `buf[*pos..]` inside the current literal or comment, up to and including its
    /// closing delimiter. With `LINES`, the newlines it passes are added to `line`; without, a
    /// quoted run is searched for its closing quote alone (the tokenizer needs no line numbers,
    /// and a three-byte search is measurably slower on quote-heavy dumps). In [`Lex::Normal`]
    /// it does nothing and says [`Scan::Closed`].
    #[inline(always)]
    pub(crate) fn scan<const LINES: bool>(
        &mut self,
        buf: &[u8],
        pos: &mut usize,
        line: &mut u64,
        dialect: Dialect,
        eof: bool,
    ) -> Scan {
        let scan = match self {
            Lex::Normal => return Scan::Closed,
            Lex::Quote {
                close, backslash, ..
            } => scan_quote::<LINES>(buf, pos, line, *close, *backslash, eof),
            Lex::LineComment => scan_line_comment(buf, pos, line),
            Lex::BlockComment { depth, .. } => {
                scan_block_comment(buf, pos, line, depth, dialect, eof)
            }
            Lex::Dollar { tag, .. } => scan_dollar(buf, pos, line, tag, eof),
        };
        if scan == Scan::Closed {
            *self = Lex::Normal;
        }
        scan
    }
}

#[inline(always)]
fn scan_quote<const LINES: bool>(
    buf: &[u8],
    pos: &mut usize,
    line: &mut u64,
    close: u8,
    backslash: bool,
    eof: bool,
) -> Scan {
    let len = buf.len();
    while *pos < len {
        let hay = &buf[*pos..];
        let found = match (LINES, backslash) {
            (true, true) => memchr3(close, b'\\', b'\n', hay),
            (true, false) => memchr2(close, b'\n', hay),
            (false, true) => memchr2(close, b'\\', hay),
            (false, false) => memchr(close, hay),
        };
        let Some(i) = found else {
            *pos = len;
            return Scan::NeedMore;
        };
        *pos += i;
        let c = buf[*pos];
        if c == b'\n' {
            *line += 1;
            *pos += 1;
        } else if c == b'\\' {
            if *pos + 1 >= len {
                if eof {
                    *pos += 1;
                    continue;
                }
                return Scan::NeedMore;
            }
            if buf[*pos + 1] == b'\n' {
                *line += 1;
            }
            *pos += 2;
        } else if *pos + 1 >= len && !eof {
            return Scan::NeedMore;
        } else if *pos + 1 < len && buf[*pos + 1] == close {
            *pos += 2;
        } else {
            *pos += 1;
            return Scan::Closed;
        }
    }
    Scan::NeedMore
}

#[inline]
fn scan_line_comment(buf: &[u8], pos: &mut usize, line: &mut u64) -> Scan {
    match memchr(b'\n', &buf[*pos..]) {
        Some(i) => {
            *pos += i + 1;
            *line += 1;
            Scan::Closed
        }
        None => {
            *pos = buf.len();
            Scan::NeedMore
        }
    }
}

fn scan_block_comment(
    buf: &[u8],
    pos: &mut usize,
    line: &mut u64,
    depth: &mut u32,
    dialect: Dialect,
    eof: bool,
) -> Scan {
    let len = buf.len();
    while *pos < len {
        let Some(i) = memchr3(b'*', b'/', b'\n', &buf[*pos..]) else {
            *pos = len;
            return Scan::NeedMore;
        };
        *pos += i;
        let c = buf[*pos];
        if c == b'\n' {
            *line += 1;
            *pos += 1;
            continue;
        }
        if *pos + 1 >= len {
            if eof {
                *pos += 1;
                continue;
            }
            return Scan::NeedMore;
        }
        let next = buf[*pos + 1];
        if c == b'*' && next == b'/' {
            *pos += 2;
            *depth -= 1;
            if *depth == 0 {
                return Scan::Closed;
            }
        } else if c == b'/' && next == b'*' && dialect == Dialect::Postgres {
            *pos += 2;
            *depth += 1;
        } else {
            *pos += 1;
        }
    }
    Scan::NeedMore
}

fn scan_dollar(buf: &[u8], pos: &mut usize, line: &mut u64, tag: &[u8], eof: bool) -> Scan {
    let len = buf.len();
    while *pos < len {
        let Some(i) = memchr2(b'$', b'\n', &buf[*pos..]) else {
            *pos = len;
            return Scan::NeedMore;
        };
        *pos += i;
        if buf[*pos] == b'\n' {
            *line += 1;
            *pos += 1;
            continue;
        }
        let rest = &buf[*pos..];
        if rest.starts_with(tag) {
            *pos += tag.len();
            return Scan::Closed;
        } else if rest.len() < tag.len() && tag.starts_with(rest) && !eof {
            return Scan::NeedMore;
        } else {
            *pos += 1;
        }
    }
    Scan::NeedMore
}

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

/// Iterator over the tokens of one complete statement (as the splitter produced it), for the
/// guard and for spotting `COPY … FROM stdin`. Words inside literals and comments are not
/// tokens.
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

    fn slice(&self, start: usize, end: usize) -> &'a str {
        self.src.get(start..end.min(self.src.len())).unwrap_or("")
    }

    /// Runs `lex` from the current position to its end (or the statement's); returns where
    /// its content ends: before a closing delimiter of `closing` bytes, or at the end.
    fn skip(&mut self, mut lex: Lex, closing: usize) -> usize {
        let mut lines = 0;
        let scan = lex.scan::<false>(self.bytes(), &mut self.pos, &mut lines, self.dialect, true);
        match scan {
            Scan::Closed => self.pos - closing,
            Scan::NeedMore => self.bytes().len(),
        }
    }

    /// The token for the literal or comment `opener` starts at the current position, or
    /// `None` when it produces no token (a comment, an executable comment's marker).
    fn opened(&mut self, opener: Opener) -> Option<Token<'a>> {
        match opener {
            Opener::Plain | Opener::NeedMore => None,
            Opener::LineComment(marker) => {
                self.pos += marker;
                self.skip(Lex::LineComment, 0);
                None
            }
            Opener::BlockComment => {
                self.pos += 2;
                let lex = Lex::BlockComment {
                    depth: 1,
                    start_line: 0,
                };
                self.skip(lex, 0);
                None
            }
            Opener::ExecComment(marker) => {
                self.exec_comment = true;
                self.pos += marker;
                while self.at(self.pos).is_some_and(|c| c.is_ascii_digit()) {
                    self.pos += 1;
                }
                None
            }
            Opener::ExecCommentEnd => {
                self.exec_comment = false;
                self.pos += 2;
                None
            }
            Opener::Quote { close, backslash } => {
                self.pos += 1;
                let start = self.pos;
                let lex = Lex::Quote {
                    close,
                    backslash,
                    start_line: 0,
                };
                let end = self.skip(lex, 1);
                let text = self.slice(start, end);
                let string = close == b'\'' || (close == b'"' && self.dialect == Dialect::MySql);
                Some(if string {
                    Token::Str(text)
                } else {
                    Token::QuotedIdent(text)
                })
            }
            Opener::Dollar(tag_len) => {
                let tag = self.bytes()[self.pos..self.pos + tag_len].to_vec();
                self.pos += tag_len;
                let start = self.pos;
                let lex = Lex::Dollar { tag, start_line: 0 };
                let end = self.skip(lex, tag_len);
                Some(Token::Str(self.slice(start, end)))
            }
        }
    }

    /// A word starting at the current position, or the string it prefixes (`E'…'`, `B'…'`,
    /// `X'…'`, `N'…'`, PostgreSQL's `U&'…'` and `U&"…"`).
    fn word(&mut self) -> Token<'a> {
        let start = self.pos;
        while self.at(self.pos).is_some_and(is_ident_cont) {
            self.pos += 1;
        }
        let word = self.slice(start, self.pos);
        let quote_at = match (word.as_bytes(), self.at(self.pos)) {
            ([p], Some(b'\'')) if b"eEbBxXnN".contains(p) => Some(self.pos),
            ([b'u' | b'U'], Some(b'&')) if self.dialect == Dialect::Postgres => {
                matches!(self.at(self.pos + 1), Some(b'\'' | b'"')).then_some(self.pos + 1)
            }
            _ => None,
        };
        let Some(quote_at) = quote_at else {
            return Token::Word(word);
        };
        let opener = open(
            self.dialect,
            &self.bytes()[quote_at..],
            &self.bytes()[start..quote_at],
            false,
            true,
        );
        self.pos = quote_at;
        self.opened(opener).unwrap_or(Token::Word(word))
    }
}

impl<'a> Iterator for Tokens<'a> {
    type Item = Token<'a>;

    fn next(&mut self) -> Option<Token<'a>> {
        let b = self.bytes();
        loop {
            let c = *b.get(self.pos)?;
            if c.is_ascii_whitespace() || c == 0x0b {
                self.pos += 1;
                continue;
            }
            // A PostgreSQL parameter (`$1`), which no dollar quote starts like.
            if c == b'$'
                && self.dialect == Dialect::Postgres
                && self.at(self.pos + 1).is_some_and(|c| c.is_ascii_digit())
            {
                self.pos += 1;
                while self.at(self.pos).is_some_and(|c| c.is_ascii_digit()) {
                    self.pos += 1;
                }
                return Some(Token::Number);
            }
            // No literal or comment starts with a letter or a digit: words and numbers first,
            // they are most of a statement.
            if is_ident_start(c) {
                return Some(self.word());
            }
            if c.is_ascii_digit() {
                while self
                    .at(self.pos)
                    .is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'.')
                {
                    self.pos += 1;
                }
                return Some(Token::Number);
            }
            // Words take in every `$` that continues them, so nothing comes `before` here.
            let opener = open(self.dialect, &b[self.pos..], &[], self.exec_comment, true);
            if !matches!(opener, Opener::Plain | Opener::NeedMore) {
                match self.opened(opener) {
                    Some(token) => return Some(token),
                    None => continue,
                }
            }
            self.pos += 1;
            return Some(Token::Punct(c));
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
