//! Streaming statement splitter for uploaded schema files.
//!
//! A schema file can be many gigabytes (a pg_dump with data), so it is never held in memory:
//! the caller feeds chunks of any size, cut anywhere (mid-token, mid-UTF-8 character), and gets
//! back [`Piece`]s as soon as they are complete. Memory is bounded by the longest statement
//! ([`Splitter::with_max_statement_bytes`]) plus one COPY data piece (about 1 MiB).
//!
//! The splitter is a byte-level state machine that knows just enough of each dialect's lexer to
//! find statement boundaries: string literals, quoted identifiers, comments, PostgreSQL dollar
//! quotes and `COPY … FROM stdin` data blocks, MySQL backslash escapes, executable `/*! … */`
//! comments and the `DELIMITER` lines mysqldump writes. The lexing rules (where a literal or a
//! comment starts and ends) are [`super::lexer`]'s, the same the SQL guard tokenizes with; this
//! module adds what only a stream of statements has: delimiters, client directives, COPY data. It never executes anything and never
//! guesses: a psql or mysql client command (a backslash outside quotes) is an error, except the
//! `\restrict` / `\unrestrict` lines pg_dump 15.14+ writes and the sandbox-mode line
//! mariadb-dump writes, which come out as [`Piece::Meta`]. MariaDB's `/*M! … */` comments are
//! executable like `/*! … */`, so they are code for the splitter and the guard.
//!
//! Statements keep their text verbatim (including comments inside them) but lose the comments
//! and blank lines *between* statements, so a statement's `line` is the line of its first token.
//! The splitter assumes `standard_conforming_strings = on` for PostgreSQL (what pg_dump sets and
//! the server default) and MySQL's default `sql_mode` (backslash escapes, `"` for strings).

use bytes::{Buf, Bytes, BytesMut};
use memchr::memchr;

pub use super::lexer::Dialect;
use super::lexer::{self, Lex, Match, Opener, Scan};

/// Default for [`Splitter::with_max_statement_bytes`]: 64 MiB.
pub const DEFAULT_MAX_STATEMENT_BYTES: usize = 64 << 20;
/// The first line of mariadb-dump output since 10.5.25 / 10.11.8 starts like this: a
/// `mariadb` client command (`\-`, sandbox mode) hidden in a comment no server executes.
const MARIADB_SANDBOX: &[u8] = b"/*M!999999\\- enable the sandbox mode";
/// Default for [`Splitter::with_copy_chunk_bytes`]: COPY data comes out in pieces of about 1 MiB.
pub const DEFAULT_COPY_CHUNK_BYTES: usize = 1 << 20;

/// One complete unit of the file, in file order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Piece {
    /// One statement, trimmed, without its terminating delimiter.
    Statement {
        /// The statement text, verbatim apart from surrounding whitespace.
        sql: String,
        /// 1-based line of the statement's first token.
        line: u64,
        /// Byte offset in the file just past the statement's delimiter (for progress).
        end: u64,
        /// The statement is `COPY … FROM stdin`: [`Piece::CopyData`] pieces and one
        /// [`Piece::CopyEnd`] follow.
        copy_from_stdin: bool,
    },
    /// Raw data lines of the preceding `COPY … FROM stdin`: whole lines including their `\n`,
    /// never the `\.` line. A big block arrives as several pieces of about
    /// [`DEFAULT_COPY_CHUNK_BYTES`] each, cut at line ends.
    CopyData {
        /// The lines, as raw bytes (not checked for UTF-8: the server does that).
        data: Bytes,
        /// Byte offset in the file just past the last line.
        end: u64,
    },
    /// The `\.` line that ends the COPY data.
    CopyEnd {
        /// 1-based line of the `\.` line.
        line: u64,
        /// Byte offset in the file just past the `\.` line.
        end: u64,
    },
    /// An accepted client directive that is not executed: pg_dump's `\restrict KEY` /
    /// `\unrestrict KEY` lines, mysqldump's `DELIMITER xx` lines (already applied by the
    /// splitter) and mariadb-dump's `/*M!999999\- enable the sandbox mode */` line. Appliers
    /// skip it; it only advances progress.
    Meta {
        /// The line, trimmed.
        text: String,
        /// 1-based line number.
        line: u64,
        /// Byte offset in the file just past the line.
        end: u64,
    },
}

impl Piece {
    /// Byte offset in the file just past this piece: how far the file has been consumed.
    pub fn end(&self) -> u64 {
        match self {
            Piece::Statement { end, .. }
            | Piece::CopyData { end, .. }
            | Piece::CopyEnd { end, .. }
            | Piece::Meta { end, .. } => *end,
        }
    }
}

/// Why the file cannot be split; `line` is where the offending construct starts.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct SplitError {
    /// 1-based line number.
    pub line: u64,
    /// What is wrong and, where it helps, what to do.
    pub message: String,
}

/// What the splitter is reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// SQL statements.
    Sql,
    /// The rest of the `COPY … FROM stdin;` line, which must be blank.
    CopyTail,
    /// COPY data lines up to `\.`.
    CopyData,
}

/// What [`Splitter::scan_normal`] leaves to the scanning loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// Go on scanning at the new position.
    Next,
    /// Stop this scan.
    Stop(Flow),
}

/// Whether a scanning step can go on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flow {
    /// The mode changed; scan again in the new mode.
    Switch,
    /// Every byte that can be decided without more input has been consumed.
    NeedMore,
}

/// A streaming splitter for one file; see the module documentation.
pub struct Splitter {
    dialect: Dialect,
    max_statement_bytes: usize,
    copy_chunk_bytes: usize,
    /// Bytes not yet emitted: the current statement (from `stmt_start`), or COPY data lines.
    buf: BytesMut,
    /// Scan position in `buf`.
    pos: usize,
    /// File offset of `buf[0]`.
    base: u64,
    /// 1-based line number at `pos`.
    line: u64,
    lex: Lex,
    mode: Mode,
    /// Start of the current statement's first token in `buf`; `None` between statements.
    stmt_start: Option<usize>,
    stmt_line: u64,
    /// Line of the last `COPY … FROM stdin` statement, for errors about its data.
    copy_line: u64,
    /// In COPY data: `buf[pos..copy_scanned]` holds no `\n` (resume point for a partial line).
    copy_scanned: usize,
    /// MySQL statement delimiter (`;` unless a `DELIMITER` line changed it).
    delimiter: Vec<u8>,
    /// Inside a MySQL `/*! … */` executable comment.
    exec_comment: bool,
    /// Bytes that need attention in `Lex::Normal` inside a statement.
    interesting: [bool; 256],
    /// The first error, returned again by every later call.
    failed: Option<SplitError>,
}

impl Splitter {
    /// A splitter with the default limits.
    pub fn new(dialect: Dialect) -> Self {
        let mut splitter = Splitter {
            dialect,
            max_statement_bytes: DEFAULT_MAX_STATEMENT_BYTES,
            copy_chunk_bytes: DEFAULT_COPY_CHUNK_BYTES,
            buf: BytesMut::new(),
            pos: 0,
            base: 0,
            line: 1,
            lex: Lex::Normal,
            mode: Mode::Sql,
            stmt_start: None,
            stmt_line: 1,
            copy_line: 0,
            copy_scanned: 0,
            delimiter: b";".to_vec(),
            exec_comment: false,
            interesting: [false; 256],
            failed: None,
        };
        splitter.rebuild_interesting();
        splitter
    }

    /// Refuse statements (and COPY data lines) longer than `n` bytes, so one runaway quote cannot
    /// exhaust memory. The error names the line where the statement starts.
    pub fn with_max_statement_bytes(mut self, n: usize) -> Self {
        self.max_statement_bytes = n.max(1);
        self
    }

    /// Cut COPY data into pieces of about `n` bytes (at line ends). Default 1 MiB.
    pub fn with_copy_chunk_bytes(mut self, n: usize) -> Self {
        self.copy_chunk_bytes = n.max(1);
        self
    }

    /// The dialect this splitter reads.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Feed the next chunk of the file (any size, any boundaries). Completed pieces are appended
    /// to `out`. After an error, every later call returns the same error.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<Piece>) -> Result<(), SplitError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        self.buf.extend_from_slice(chunk);
        let result = self.run(out, false);
        self.remember(result)
    }

    /// End of file: emits a final statement without terminator if there is one, and fails on an
    /// unterminated string, comment, dollar quote or COPY block, naming the line where it
    /// started. Call it once, after the last [`Splitter::feed`].
    pub fn finish(&mut self, out: &mut Vec<Piece>) -> Result<(), SplitError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        let result = self.run(out, true).and_then(|()| self.finish_inner(out));
        self.remember(result)
    }

    fn remember(&mut self, result: Result<(), SplitError>) -> Result<(), SplitError> {
        if let Err(err) = &result {
            self.failed = Some(err.clone());
        }
        result
    }

    fn finish_inner(&mut self, out: &mut Vec<Piece>) -> Result<(), SplitError> {
        if self.mode != Mode::Sql {
            return Err(SplitError {
                line: self.copy_line,
                message: "the data of this COPY … FROM stdin has no terminating \\. line \
                          (is the file truncated?)"
                    .into(),
            });
        }
        match &self.lex {
            Lex::Normal | Lex::LineComment => {}
            Lex::Quote {
                close, start_line, ..
            } => {
                let what = match close {
                    b'\'' => "string literal",
                    b'"' if self.dialect == Dialect::MySql => "string literal",
                    b'"' | b'`' => "quoted identifier",
                    _ => "quoted text",
                };
                return Err(SplitError {
                    line: *start_line,
                    message: format!(
                        "unterminated {what} starting with {}: the file ends inside it",
                        char::from(*close)
                    ),
                });
            }
            Lex::BlockComment { start_line, .. } => {
                return Err(SplitError {
                    line: *start_line,
                    message: "unterminated /* comment: the file ends inside it".into(),
                });
            }
            Lex::Dollar { tag, start_line } => {
                return Err(SplitError {
                    line: *start_line,
                    message: format!(
                        "unterminated dollar-quoted string {}: the file ends before the closing tag",
                        String::from_utf8_lossy(tag)
                    ),
                });
            }
        }
        if let Some(start) = self.stmt_start {
            let end = self.base + self.buf.len() as u64;
            let piece = self.statement(start, self.buf.len(), end)?;
            out.push(piece);
            self.stmt_start = None;
            self.exec_comment = false;
        }
        Ok(())
    }

    fn run(&mut self, out: &mut Vec<Piece>, eof: bool) -> Result<(), SplitError> {
        loop {
            let flow = match self.mode {
                Mode::Sql => {
                    let flow = self.scan_sql(out, eof)?;
                    self.compact_sql();
                    flow
                }
                Mode::CopyTail => self.scan_copy_tail()?,
                Mode::CopyData => self.scan_copy_data(out, eof)?,
            };
            if flow == Flow::NeedMore {
                break;
            }
        }
        if let Some(start) = self.stmt_start {
            if self.buf.len() - start > self.max_statement_bytes {
                return Err(self.too_long());
            }
        }
        Ok(())
    }

    fn too_long(&self) -> SplitError {
        SplitError {
            line: self.stmt_line,
            message: format!(
                "statement is longer than {} bytes (an unterminated quote?); split it or raise \
                 the limit",
                self.max_statement_bytes
            ),
        }
    }

    /// Drop bytes before the current statement (or before `pos` between statements).
    fn compact_sql(&mut self) {
        let keep = self.stmt_start.unwrap_or(self.pos);
        if keep > 0 {
            self.buf.advance(keep);
            self.base += keep as u64;
            self.pos -= keep;
            if let Some(start) = self.stmt_start.as_mut() {
                *start -= keep;
            }
        }
    }

    fn rebuild_interesting(&mut self) {
        let mut table = [false; 256];
        let common: &[u8] = match self.dialect {
            Dialect::Postgres => b"'\"$-/\\\n",
            Dialect::MySql => b"'\"`-/#*\\\n",
        };
        for &b in common {
            table[b as usize] = true;
        }
        table[self.delimiter[0] as usize] = true;
        self.interesting = table;
    }

    /// Build the statement piece for `buf[start..stop]`.
    fn statement(&self, start: usize, stop: usize, end: u64) -> Result<Piece, SplitError> {
        let raw = trim_end(&self.buf[start..stop]);
        if raw.len() > self.max_statement_bytes {
            return Err(self.too_long());
        }
        let sql = match simdutf8::basic::from_utf8(raw) {
            Ok(s) => s.to_owned(),
            Err(_) => {
                let bad = std::str::from_utf8(raw)
                    .err()
                    .map_or(0, |e| e.valid_up_to());
                let line = self.stmt_line + count_newlines(&raw[..bad]);
                return Err(SplitError {
                    line,
                    message: "invalid UTF-8 in a statement; convert the file to UTF-8".into(),
                });
            }
        };
        let copy_from_stdin = self.dialect == Dialect::Postgres && lexer::is_copy_from_stdin(&sql);
        Ok(Piece::Statement {
            sql,
            line: self.stmt_line,
            end,
            copy_from_stdin,
        })
    }

    /// Scans SQL text from `pos`: the inside of literals and comments through the lexer,
    /// everything between them through [`Splitter::scan_normal`].
    fn scan_sql(&mut self, out: &mut Vec<Piece>, eof: bool) -> Result<Flow, SplitError> {
        let mut pos = self.pos;
        let mut line = self.line;
        let flow = loop {
            if pos >= self.buf.len() {
                break Flow::NeedMore;
            }
            if !matches!(self.lex, Lex::Normal) {
                match self
                    .lex
                    .scan::<true>(&self.buf, &mut pos, &mut line, self.dialect, eof)
                {
                    Scan::Closed => continue,
                    Scan::NeedMore => break Flow::NeedMore,
                }
            }
            if let Step::Stop(flow) = self.scan_normal(out, &mut pos, &mut line, eof)? {
                break flow;
            }
        };
        self.pos = pos;
        self.line = line;
        Ok(flow)
    }

    /// One step outside literals and comments at `*pos`: skips what cannot matter, then acts
    /// on the byte there (the delimiter, a newline, the opening of a literal or comment, a
    /// client directive, or a statement byte).
    #[inline(always)]
    fn scan_normal(
        &mut self,
        out: &mut Vec<Piece>,
        pos: &mut usize,
        line: &mut u64,
        eof: bool,
    ) -> Result<Step, SplitError> {
        let len = self.buf.len();
        if self.stmt_start.is_some() {
            let table = &self.interesting;
            let buf = &self.buf[..];
            let mut p = *pos;
            while p < len && !table[buf[p] as usize] {
                p += 1;
            }
            *pos = p;
            if p >= len {
                return Ok(Step::Stop(Flow::NeedMore));
            }
        } else {
            match self.buf[*pos] {
                b'\n' => {
                    *line += 1;
                    *pos += 1;
                    return Ok(Step::Next);
                }
                b' ' | b'\t' | b'\r' | 0x0b | 0x0c => {
                    *pos += 1;
                    return Ok(Step::Next);
                }
                _ => {}
            }
        }
        let b = self.buf[*pos];
        if b == self.delimiter[0] {
            if let Some(step) = self.at_delimiter(out, pos, eof)? {
                return Ok(step);
            }
        }
        if b == b'\n' {
            *line += 1;
            *pos += 1;
            return Ok(Step::Next);
        }
        let before = match self.stmt_start {
            Some(start) => &self.buf[start..*pos],
            None => &[],
        };
        let opener = lexer::open(
            self.dialect,
            &self.buf[*pos..],
            before,
            self.exec_comment,
            eof,
        );
        match opener {
            Opener::NeedMore => {
                // A `$` that may open a dollar quote belongs to a statement either way.
                if b == b'$' {
                    self.begin_statement(*pos, *line);
                }
                return Ok(Step::Stop(Flow::NeedMore));
            }
            Opener::LineComment(marker) => {
                self.lex = Lex::LineComment;
                *pos += marker;
            }
            Opener::BlockComment => {
                self.lex = Lex::BlockComment {
                    depth: 1,
                    start_line: *line,
                };
                *pos += 2;
            }
            Opener::ExecComment(marker) => {
                return self.open_exec_comment(out, pos, line, marker, eof);
            }
            Opener::ExecCommentEnd => {
                self.exec_comment = false;
                *pos += 2;
            }
            Opener::Quote { close, backslash } => {
                self.begin_statement(*pos, *line);
                self.lex = Lex::Quote {
                    close,
                    backslash,
                    start_line: *line,
                };
                *pos += 1;
            }
            Opener::Dollar(tag_len) => {
                self.begin_statement(*pos, *line);
                self.lex = Lex::Dollar {
                    tag: self.buf[*pos..*pos + tag_len].to_vec(),
                    start_line: *line,
                };
                *pos += tag_len;
            }
            Opener::Plain => return self.plain(out, pos, line, eof),
        }
        Ok(Step::Next)
    }

    /// Starts the current statement at `pos` unless one is under way.
    #[inline(always)]
    fn begin_statement(&mut self, pos: usize, line: u64) {
        if self.stmt_start.is_none() {
            self.stmt_start = Some(pos);
            self.stmt_line = line;
        }
    }

    /// At the delimiter's first byte: ends the statement when the whole delimiter follows.
    /// `None`: it is not the delimiter after all.
    fn at_delimiter(
        &mut self,
        out: &mut Vec<Piece>,
        pos: &mut usize,
        eof: bool,
    ) -> Result<Option<Step>, SplitError> {
        match prefix_match(&self.buf[*pos..], &self.delimiter, eof) {
            Match::NeedMore => Ok(Some(Step::Stop(Flow::NeedMore))),
            Match::No => Ok(None),
            Match::Yes => {
                let dlen = self.delimiter.len();
                let end = self.base + (*pos + dlen) as u64;
                let Some(start) = self.stmt_start else {
                    *pos += dlen;
                    return Ok(Some(Step::Next));
                };
                let piece = self.statement(start, *pos, end)?;
                let copy = matches!(
                    piece,
                    Piece::Statement {
                        copy_from_stdin: true,
                        ..
                    }
                );
                out.push(piece);
                self.stmt_start = None;
                self.exec_comment = false;
                *pos += dlen;
                if copy {
                    self.copy_line = self.stmt_line;
                    self.mode = Mode::CopyTail;
                    return Ok(Some(Step::Stop(Flow::Switch)));
                }
                Ok(Some(Step::Next))
            }
        }
    }

    /// A byte that opens no literal or comment: a client directive, or part of a statement.
    fn plain(
        &mut self,
        out: &mut Vec<Piece>,
        pos: &mut usize,
        line: &mut u64,
        eof: bool,
    ) -> Result<Step, SplitError> {
        match self.buf[*pos] {
            b'\\' => return self.client_command(out, pos, line, eof),
            b'd' | b'D' if self.dialect == Dialect::MySql && self.stmt_start.is_none() => {
                if let Some(step) = self.delimiter_line(out, pos, line, eof)? {
                    return Ok(step);
                }
            }
            _ => {}
        }
        self.begin_statement(*pos, *line);
        *pos += 1;
        Ok(Step::Next)
    }

    /// MySQL's `/*!` or MariaDB's `/*M!`: an executable comment, whose content belongs to a
    /// statement, unless it is mariadb-dump's sandbox-mode line, a directive.
    fn open_exec_comment(
        &mut self,
        out: &mut Vec<Piece>,
        pos: &mut usize,
        line: &mut u64,
        marker: usize,
        eof: bool,
    ) -> Result<Step, SplitError> {
        if marker == 4 && self.stmt_start.is_none() {
            match prefix_match(&self.buf[*pos..], MARIADB_SANDBOX, eof) {
                Match::NeedMore => return Ok(Step::Stop(Flow::NeedMore)),
                Match::No => {}
                Match::Yes => {
                    let Some((text, next)) = self.client_line(*pos, *line, eof)? else {
                        return Ok(Step::Stop(Flow::NeedMore));
                    };
                    if !text.ends_with("*/") {
                        return Err(SplitError {
                            line: *line,
                            message: "unexpected text after mariadb-dump's sandbox-mode line"
                                .into(),
                        });
                    }
                    self.emit_meta(out, text, pos, line, next);
                    return Ok(Step::Next);
                }
            }
        }
        self.begin_statement(*pos, *line);
        self.exec_comment = true;
        *pos += marker;
        Ok(Step::Next)
    }

    /// A backslash outside quotes: a psql or mysql client command. Only pg_dump's `\restrict`
    /// and `\unrestrict` lines between statements are accepted, as [`Piece::Meta`].
    fn client_command(
        &mut self,
        out: &mut Vec<Piece>,
        pos: &mut usize,
        line: &mut u64,
        eof: bool,
    ) -> Result<Step, SplitError> {
        let rest = &self.buf[*pos..];
        let name_len = rest[1..]
            .iter()
            .position(|c| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len() - 1);
        if 1 + name_len == rest.len() && !eof {
            return Ok(Step::Stop(Flow::NeedMore));
        }
        let name = if name_len == 0 {
            rest.get(1..2).unwrap_or_default()
        } else {
            &rest[1..1 + name_len]
        };
        let allowed = self.dialect == Dialect::Postgres
            && self.stmt_start.is_none()
            && (name == b"restrict" || name == b"unrestrict");
        if !allowed {
            let name = String::from_utf8_lossy(name);
            let message = match self.dialect {
                Dialect::Postgres => format!(
                    "psql command \\{name} is not allowed: only SQL statements and pg_dump's \
                     COPY data are accepted"
                ),
                Dialect::MySql => format!(
                    "mysql client command \\{name} is not allowed: only SQL statements and \
                     mysqldump's DELIMITER lines are accepted"
                ),
            };
            return Err(SplitError {
                line: *line,
                message,
            });
        }
        match self.client_line(*pos, *line, eof)? {
            None => Ok(Step::Stop(Flow::NeedMore)),
            Some((text, next)) => {
                self.emit_meta(out, text, pos, line, next);
                Ok(Step::Next)
            }
        }
    }

    /// mysqldump's `DELIMITER xx` line between statements: the new delimiter. `None`: the
    /// word starts an ordinary statement.
    fn delimiter_line(
        &mut self,
        out: &mut Vec<Piece>,
        pos: &mut usize,
        line: &mut u64,
        eof: bool,
    ) -> Result<Option<Step>, SplitError> {
        let rest = &self.buf[*pos..];
        match prefix_match_ci(rest, b"delimiter", eof) {
            Match::NeedMore => Ok(Some(Step::Stop(Flow::NeedMore))),
            Match::Yes if rest.len() > 9 && matches!(rest[9], b' ' | b'\t') => {
                let Some((text, next)) = self.client_line(*pos, *line, eof)? else {
                    return Ok(Some(Step::Stop(Flow::NeedMore)));
                };
                let delimiter: Vec<u8> = text.as_bytes()[9..]
                    .trim_ascii_start()
                    .split(|c| c.is_ascii_whitespace())
                    .next()
                    .unwrap_or_default()
                    .to_vec();
                if delimiter.is_empty() || delimiter.contains(&b'\\') {
                    return Err(SplitError {
                        line: *line,
                        message: "DELIMITER needs a delimiter without backslashes, as in \
                                  DELIMITER ;;"
                            .into(),
                    });
                }
                self.delimiter = delimiter;
                self.rebuild_interesting();
                self.emit_meta(out, text, pos, line, next);
                Ok(Some(Step::Next))
            }
            Match::Yes if rest.len() == 9 && !eof => Ok(Some(Step::Stop(Flow::NeedMore))),
            _ => Ok(None),
        }
    }

    /// Emits the directive line `text` that starts at `*pos` and ends at `next`, and moves
    /// past it.
    fn emit_meta(
        &mut self,
        out: &mut Vec<Piece>,
        text: String,
        pos: &mut usize,
        line: &mut u64,
        next: usize,
    ) {
        out.push(Piece::Meta {
            text,
            line: *line,
            end: self.base + next as u64,
        });
        if next > *pos && self.buf[next - 1] == b'\n' {
            *line += 1;
        }
        *pos = next;
    }

    /// The client directive line starting at `pos`: its trimmed text and the offset just past
    /// it, or `None` when its end is not buffered yet.
    fn client_line(
        &self,
        pos: usize,
        line: u64,
        eof: bool,
    ) -> Result<Option<(String, usize)>, SplitError> {
        let rest = &self.buf[pos..];
        let next = match memchr(b'\n', rest) {
            Some(i) => pos + i + 1,
            None if eof => self.buf.len(),
            None => {
                if rest.len() > self.max_statement_bytes {
                    return Err(SplitError {
                        line,
                        message: format!("line is longer than {} bytes", self.max_statement_bytes),
                    });
                }
                return Ok(None);
            }
        };
        let text = self.buf[pos..next].trim_ascii();
        match std::str::from_utf8(text) {
            Ok(text) => Ok(Some((text.to_owned(), next))),
            Err(_) => Err(SplitError {
                line,
                message: "invalid UTF-8; convert the file to UTF-8".into(),
            }),
        }
    }

    /// After `COPY … FROM stdin;`: the rest of the line must be blank.
    fn scan_copy_tail(&mut self) -> Result<Flow, SplitError> {
        while self.pos < self.buf.len() {
            match self.buf[self.pos] {
                b' ' | b'\t' | b'\r' => self.pos += 1,
                b'\n' => {
                    self.pos += 1;
                    self.line += 1;
                    self.buf.advance(self.pos);
                    self.base += self.pos as u64;
                    self.pos = 0;
                    self.copy_scanned = 0;
                    self.mode = Mode::CopyData;
                    return Ok(Flow::Switch);
                }
                _ => {
                    return Err(SplitError {
                        line: self.line,
                        message: "text after COPY … FROM stdin; on the same line: the COPY data \
                                  must start on the next line"
                            .into(),
                    })
                }
            }
        }
        self.buf.advance(self.pos);
        self.base += self.pos as u64;
        self.pos = 0;
        Ok(Flow::NeedMore)
    }

    /// COPY data: `buf[..pos]` holds complete lines not yet emitted; `pos` is a line start.
    fn scan_copy_data(&mut self, out: &mut Vec<Piece>, eof: bool) -> Result<Flow, SplitError> {
        loop {
            let len = self.buf.len();
            if self.pos >= len {
                return Ok(Flow::NeedMore);
            }
            let rest = &self.buf[self.pos..];
            if rest[0] == b'\\' {
                match end_of_copy(rest, eof) {
                    Match::NeedMore => return Ok(Flow::NeedMore),
                    Match::No => {}
                    Match::Yes => {
                        let marker_len = [&b"\\.\r\n"[..], b"\\.\n", b"\\.\r", b"\\."]
                            .iter()
                            .find(|m| rest.starts_with(m))
                            .map_or(2, |m| m.len());
                        self.emit_copy_data(out);
                        let end = self.base + marker_len as u64;
                        out.push(Piece::CopyEnd {
                            line: self.line,
                            end,
                        });
                        if self.buf[marker_len - 1] == b'\n' {
                            self.line += 1;
                        }
                        self.buf.advance(marker_len);
                        self.base = end;
                        self.mode = Mode::Sql;
                        self.lex = Lex::Normal;
                        return Ok(Flow::Switch);
                    }
                }
            }
            let from = self.pos.max(self.copy_scanned);
            match memchr(b'\n', &self.buf[from..]) {
                Some(i) => {
                    let next = from + i + 1;
                    if next - self.pos > self.max_statement_bytes {
                        return Err(self.copy_line_too_long());
                    }
                    self.pos = next;
                    self.copy_scanned = next;
                    self.line += 1;
                    if self.pos >= self.copy_chunk_bytes {
                        self.emit_copy_data(out);
                    }
                }
                None => {
                    self.copy_scanned = len;
                    if len - self.pos > self.max_statement_bytes {
                        return Err(self.copy_line_too_long());
                    }
                    return Ok(Flow::NeedMore);
                }
            }
        }
    }

    fn copy_line_too_long(&self) -> SplitError {
        SplitError {
            line: self.line,
            message: format!(
                "COPY data line is longer than {} bytes",
                self.max_statement_bytes
            ),
        }
    }

    /// Emit `buf[..pos]` (complete COPY lines) as one piece.
    fn emit_copy_data(&mut self, out: &mut Vec<Piece>) {
        if self.pos == 0 {
            return;
        }
        let data = self.buf.split_to(self.pos).freeze();
        self.base += self.pos as u64;
        self.copy_scanned -= self.pos.min(self.copy_scanned);
        self.pos = 0;
        out.push(Piece::CopyData {
            data,
            end: self.base,
        });
    }
}

fn prefix_match(rest: &[u8], pattern: &[u8], eof: bool) -> Match {
    if rest.starts_with(pattern) {
        Match::Yes
    } else if rest.len() < pattern.len() && pattern.starts_with(rest) && !eof {
        Match::NeedMore
    } else {
        Match::No
    }
}

fn prefix_match_ci(rest: &[u8], pattern: &[u8], eof: bool) -> Match {
    let n = rest.len().min(pattern.len());
    if !rest[..n].eq_ignore_ascii_case(&pattern[..n]) {
        Match::No
    } else if n == pattern.len() {
        Match::Yes
    } else if eof {
        Match::No
    } else {
        Match::NeedMore
    }
}

/// Whether `rest` (starting at a line start with `\`) is the `\.` end-of-data line.
fn end_of_copy(rest: &[u8], eof: bool) -> Match {
    for marker in [&b"\\.\n"[..], b"\\.\r\n"] {
        match prefix_match(rest, marker, eof) {
            Match::Yes => return Match::Yes,
            Match::NeedMore => return Match::NeedMore,
            Match::No => {}
        }
    }
    if eof && (rest == b"\\." || rest == b"\\.\r") {
        Match::Yes
    } else {
        Match::No
    }
}

fn trim_end(bytes: &[u8]) -> &[u8] {
    bytes.trim_ascii_end()
}

fn count_newlines(bytes: &[u8]) -> u64 {
    memchr::memchr_iter(b'\n', bytes).count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Split `input` fed in chunks whose sizes cycle through `sizes` (whole when empty).
    fn split_chunked(
        splitter: Splitter,
        input: &[u8],
        sizes: &[usize],
    ) -> (Vec<Piece>, Option<SplitError>) {
        let mut splitter = splitter;
        let mut out = Vec::new();
        let mut rest = input;
        let mut i = 0;
        while !rest.is_empty() {
            let n = if sizes.is_empty() {
                rest.len()
            } else {
                sizes[i % sizes.len()].clamp(1, rest.len())
            };
            i += 1;
            if let Err(err) = splitter.feed(&rest[..n], &mut out) {
                return (out, Some(err));
            }
            rest = &rest[n..];
        }
        let err = splitter.finish(&mut out).err();
        (out, err)
    }

    fn split(dialect: Dialect, input: &str) -> Vec<Piece> {
        let (pieces, err) = split_chunked(Splitter::new(dialect), input.as_bytes(), &[]);
        assert_eq!(err, None, "{input}");
        // Every chunking gives the same pieces, including one byte at a time.
        for sizes in [&[1usize][..], &[2, 3], &[7]] {
            let again = split_chunked(Splitter::new(dialect), input.as_bytes(), sizes);
            assert_eq!(again, (pieces.clone(), None), "chunks {sizes:?}");
        }
        pieces
    }

    fn split_err(dialect: Dialect, input: &str) -> SplitError {
        let (_, err) = split_chunked(Splitter::new(dialect), input.as_bytes(), &[]);
        let err = err.unwrap_or_else(|| panic!("{input:?} must fail"));
        let (_, chunked) = split_chunked(Splitter::new(dialect), input.as_bytes(), &[1]);
        assert_eq!(chunked.as_ref(), Some(&err), "byte by byte");
        err
    }

    /// (sql, line) of every statement.
    fn statements(pieces: &[Piece]) -> Vec<(&str, u64)> {
        pieces
            .iter()
            .filter_map(|p| match p {
                Piece::Statement { sql, line, .. } => Some((sql.as_str(), *line)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn postgres_quotes_comments_and_dollar_quotes_hide_semicolons() {
        let input = "-- header; comment\n\
            SELECT 'a;b', 'it''s;', E'x\\';y', U&'d;' FROM \"t;x\";\n\
            /* block; /* nested; */ still; */\n\
            CREATE FUNCTION f() RETURNS int AS $body$ SELECT 1; $x$ ; $x$ $body$ LANGUAGE sql;\n\
            SELECT $$a;$$, $1, a$b$c;\n\
            SELECT 1 /* trailing; */ ;;\n\
            select e'\\\\';select x;";
        let pieces = split(Dialect::Postgres, input);
        assert_eq!(
            statements(&pieces),
            [
                ("SELECT 'a;b', 'it''s;', E'x\\';y', U&'d;' FROM \"t;x\"", 2),
                (
                    "CREATE FUNCTION f() RETURNS int AS $body$ SELECT 1; $x$ ; $x$ $body$ LANGUAGE sql",
                    4
                ),
                ("SELECT $$a;$$, $1, a$b$c", 5),
                ("SELECT 1 /* trailing; */", 6),
                ("select e'\\\\'", 7),
                ("select x", 7),
            ]
        );
        assert_eq!(pieces.last().map(Piece::end), Some(input.len() as u64));
    }

    #[test]
    fn an_identifier_ending_in_e_does_not_start_an_escape_string() {
        let pieces = split(Dialect::Postgres, "select somee'\\'; select 2;");
        assert_eq!(
            statements(&pieces),
            [("select somee'\\'", 1), ("select 2", 1)]
        );
    }

    #[test]
    fn copy_data_passes_through_untouched_with_exact_lines() {
        let input = "SET x = 1;\n\
            COPY public.t (a, b) FROM stdin;\n\
            1\t'quote;\n\
            2\t\\N; -- not a comment\n\
            \\.\n\
            SELECT 1;\n";
        let pieces = split(Dialect::Postgres, input);
        assert_eq!(
            pieces,
            [
                Piece::Statement {
                    sql: "SET x = 1".into(),
                    line: 1,
                    end: 10,
                    copy_from_stdin: false
                },
                Piece::Statement {
                    sql: "COPY public.t (a, b) FROM stdin".into(),
                    line: 2,
                    end: 43,
                    copy_from_stdin: true
                },
                Piece::CopyData {
                    data: Bytes::from_static(b"1\t'quote;\n2\t\\N; -- not a comment\n"),
                    end: 77,
                },
                Piece::CopyEnd { line: 5, end: 80 },
                Piece::Statement {
                    sql: "SELECT 1".into(),
                    line: 6,
                    end: 89,
                    copy_from_stdin: false
                },
            ]
        );
        assert_eq!(&input[77..80], "\\.\n");
    }

    #[test]
    fn big_copy_blocks_come_out_in_bounded_pieces() {
        let mut input = String::from("COPY t FROM stdin;\n");
        for i in 0..1000 {
            input.push_str(&format!("{i}\tvalue {i}\n"));
        }
        input.push_str("\\.\n");
        let splitter = || Splitter::new(Dialect::Postgres).with_copy_chunk_bytes(256);
        let (pieces, err) = split_chunked(splitter(), input.as_bytes(), &[]);
        assert_eq!(err, None);
        let data: Vec<&Bytes> = pieces
            .iter()
            .filter_map(|p| match p {
                Piece::CopyData { data, .. } => Some(data),
                _ => None,
            })
            .collect();
        assert!(data.len() > 20, "{} pieces", data.len());
        for d in &data {
            assert!(d.len() < 256 + 20 && d.ends_with(b"\n"), "{}", d.len());
        }
        let joined: Vec<u8> = data.iter().flat_map(|d| d.iter().copied()).collect();
        assert_eq!(joined.len(), input.len() - 19 - 3);
        assert_eq!(
            pieces.last(),
            Some(&Piece::CopyEnd {
                line: 1002,
                end: input.len() as u64
            })
        );
        for sizes in [&[1usize][..], &[100], &[4095]] {
            assert_eq!(
                split_chunked(splitter(), input.as_bytes(), sizes),
                (pieces.clone(), None)
            );
        }
    }

    #[test]
    fn crlf_files_split_like_lf_files() {
        let input = "SELECT 1;\r\nCOPY t FROM stdin;\r\na\r\n\\.\r\n-- c\r\nSELECT 'x\r\ny';\r\n";
        let pieces = split(Dialect::Postgres, input);
        assert_eq!(statements(&pieces)[2], ("SELECT 'x\r\ny'", 6));
        assert!(pieces.contains(&Piece::CopyData {
            data: Bytes::from_static(b"a\r\n"),
            end: 34
        }));
        assert!(pieces.contains(&Piece::CopyEnd { line: 4, end: 38 }));
    }

    #[test]
    fn pg_dump_restrict_lines_are_meta_and_other_psql_commands_fail() {
        let input = "\\restrict abc123\n\nSELECT 1;\n\\unrestrict abc123\n";
        let pieces = split(Dialect::Postgres, input);
        assert_eq!(
            pieces[0],
            Piece::Meta {
                text: "\\restrict abc123".into(),
                line: 1,
                end: 17
            }
        );
        assert_eq!(
            pieces[2],
            Piece::Meta {
                text: "\\unrestrict abc123".into(),
                line: 4,
                end: input.len() as u64
            }
        );
        for cmd in [
            "\\! rm -rf /",
            "\\i /etc/passwd",
            "\\connect other",
            "\\c other",
            "\\set x 1",
            "\\copy t from '/x'",
            "\\o /tmp/out",
            "\\gexec",
            "\\.",
        ] {
            let err = split_err(
                Dialect::Postgres,
                &format!("SELECT 1;\n\n{cmd}\nSELECT 2;\n"),
            );
            let name = cmd.split(' ').next().unwrap_or_default();
            assert_eq!(err.line, 3, "{cmd}");
            assert_eq!(
                err.to_string(),
                format!(
                    "line 3: psql command {name} is not allowed: only SQL statements and \
                     pg_dump's COPY data are accepted"
                )
            );
        }
        // Mid-statement and after a statement on the same line too.
        assert_eq!(split_err(Dialect::Postgres, "SELECT 1\n\\gexec\n").line, 2);
        assert_eq!(split_err(Dialect::Postgres, "SELECT 1; \\! id\n").line, 1);
        assert_eq!(
            split_err(Dialect::Postgres, "SELECT 1\n\\restrict x\n").line,
            2
        );
    }

    #[test]
    fn mysql_quotes_comments_and_executable_comments() {
        let input = "/*!40101 SET @OLD=@@CHARACTER_SET_CLIENT */;\n\
            # hash comment;\n\
            -- dash comment;\n\
            INSERT INTO `t;` VALUES (1,'it\\'s; here','a''b;',\"dq;\\\"\"),(2,'\\\\',NULL);\n\
            SELECT 3--1;\n\
            /* plain; */ SELECT 4;";
        let pieces = split(Dialect::MySql, input);
        assert_eq!(
            statements(&pieces),
            [
                ("/*!40101 SET @OLD=@@CHARACTER_SET_CLIENT */", 1),
                (
                    "INSERT INTO `t;` VALUES (1,'it\\'s; here','a''b;',\"dq;\\\"\"),(2,'\\\\',NULL)",
                    4
                ),
                ("SELECT 3--1", 5),
                ("SELECT 4", 6),
            ]
        );
    }

    #[test]
    fn mysqldump_delimiter_blocks() {
        let input = "DELIMITER ;;\n\
            /*!50003 CREATE*/ /*!50017 DEFINER=`root`@`%`*/ /*!50003 TRIGGER tr BEFORE INSERT ON t \
            FOR EACH ROW BEGIN\n  SET NEW.a = 1;\n  SET NEW.b = ';;';\nEND */;;\n\
            delimiter ;\n\
            SELECT 1;\n\
            DELIMITER //\nCREATE PROCEDURE p() BEGIN SELECT 1; END//\nDELIMITER ;\nSELECT 2;";
        let pieces = split(Dialect::MySql, input);
        let stmts = statements(&pieces);
        assert_eq!(stmts.len(), 4);
        assert!(stmts[0].0.starts_with("/*!50003 CREATE*/"));
        assert!(stmts[0].0.ends_with("SET NEW.b = ';;';\nEND */"));
        assert_eq!(stmts[0].1, 2);
        assert_eq!(stmts[1], ("SELECT 1", 7));
        assert_eq!(stmts[2], ("CREATE PROCEDURE p() BEGIN SELECT 1; END", 9));
        assert_eq!(stmts[3], ("SELECT 2", 11));
        let metas: Vec<_> = pieces
            .iter()
            .filter_map(|p| match p {
                Piece::Meta { text, line, .. } => Some((text.as_str(), *line)),
                _ => None,
            })
            .collect();
        assert_eq!(
            metas,
            [
                ("DELIMITER ;;", 1),
                ("delimiter ;", 6),
                ("DELIMITER //", 8),
                ("DELIMITER ;", 10)
            ]
        );
        assert_eq!(split_err(Dialect::MySql, "DELIMITER \n").line, 1);
        assert_eq!(split_err(Dialect::MySql, "SELECT 1;\n\\! id\n").line, 2);
    }

    #[test]
    fn unterminated_constructs_name_their_starting_line() {
        let cases = [
            (
                Dialect::Postgres,
                "SELECT 1;\nSELECT 'abc\n\n",
                2,
                "string literal",
            ),
            (
                Dialect::Postgres,
                "SELECT 1;\n\nSELECT \"abc;\n",
                3,
                "quoted identifier",
            ),
            (
                Dialect::Postgres,
                "SELECT 1;\nSELECT $f$ abc; $g$\n",
                2,
                "$f$",
            ),
            (
                Dialect::Postgres,
                "SELECT 1;\n/* a /* b */\n;\n",
                2,
                "comment",
            ),
            (
                Dialect::Postgres,
                "SELECT 1;\nCOPY t FROM stdin;\n1\n2\n",
                2,
                "\\.",
            ),
            (Dialect::Postgres, "COPY t FROM stdin;\n1\n\\.x\n", 1, "\\."),
            (
                Dialect::MySql,
                "SELECT 1;\nSELECT 'a\\'\n",
                2,
                "string literal",
            ),
            (Dialect::MySql, "SELECT `a\n", 1, "quoted identifier"),
            (Dialect::MySql, "DELIMITER ;;\nSELECT 1;\n", 2, ""),
        ];
        for (dialect, input, line, needle) in cases {
            let (pieces, err) = split_chunked(Splitter::new(dialect), input.as_bytes(), &[]);
            if needle.is_empty() {
                // An unterminated statement under DELIMITER ;; is emitted at the end of file.
                assert_eq!(err, None);
                assert_eq!(statements(&pieces).last(), Some(&("SELECT 1;", line)));
                continue;
            }
            let err = split_err(dialect, input);
            assert_eq!(err.line, line, "{input:?}: {err}");
            assert!(err.message.contains(needle), "{input:?}: {err}");
        }
    }

    #[test]
    fn invalid_utf8_and_overlong_statements_are_errors() {
        let (_, err) = split_chunked(
            Splitter::new(Dialect::Postgres),
            b"SELECT 1;\nSELECT '\xff';",
            &[],
        );
        assert_eq!(err.map(|e| e.line), Some(2));
        let (_, err) = split_chunked(
            Splitter::new(Dialect::Postgres).with_max_statement_bytes(10),
            b"SELECT 1;\n\nSELECT 'long long long",
            &[3],
        );
        assert_eq!(err.map(|e| e.line), Some(3));
        // COPY data is raw bytes: no UTF-8 check.
        let (pieces, err) = split_chunked(
            Splitter::new(Dialect::Postgres),
            b"COPY t FROM stdin;\n\xff\xfe\n\\.\n",
            &[],
        );
        assert_eq!(err, None);
        assert!(pieces.contains(&Piece::CopyData {
            data: Bytes::from_static(b"\xff\xfe\n"),
            end: 22
        }));
    }

    #[test]
    fn text_after_copy_on_its_line_is_refused() {
        let err = split_err(Dialect::Postgres, "COPY t FROM stdin; SELECT 1;\n\\.\n");
        assert_eq!(err.line, 1);
    }

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!(
            "{}/tests/fixtures/provision/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// Data lines per COPY statement: (COPY line, rows).
    fn copy_blocks(pieces: &[Piece]) -> Vec<(u64, usize)> {
        let mut blocks = Vec::new();
        for piece in pieces {
            match piece {
                Piece::Statement {
                    line,
                    copy_from_stdin: true,
                    ..
                } => blocks.push((*line, 0)),
                Piece::CopyData { data, .. } => {
                    if let Some(last) = blocks.last_mut() {
                        last.1 += memchr::memchr_iter(b'\n', data).count();
                    }
                }
                _ => {}
            }
        }
        blocks
    }

    #[test]
    fn real_pg_dump_of_a_pgbench_database_splits_like_psql() {
        let input = fixture("pg_dump_pgbench.sql");
        let whole = split_chunked(Splitter::new(Dialect::Postgres), &input, &[]);
        assert_eq!(whole.1, None);
        for sizes in [&[1usize][..], &[4096], &[13, 1000, 1]] {
            assert_eq!(
                split_chunked(Splitter::new(Dialect::Postgres), &input, sizes),
                whole
            );
        }
        let pieces = whole.0;
        // psql sent 56 statements for this file (server log with log_statement=all; see README).
        assert_eq!(statements(&pieces).len(), 56);
        let metas: Vec<_> = pieces
            .iter()
            .filter_map(|p| match p {
                Piece::Meta { text, line, .. } => Some((text.split(' ').next(), *line)),
                _ => None,
            })
            .collect();
        assert_eq!(
            metas,
            [(Some("\\restrict"), 5), (Some("\\unrestrict"), 663)]
        );
        assert_eq!(
            copy_blocks(&pieces),
            [
                (242, 1),
                (251, 6),
                (265, 300),
                (573, 1),
                (582, 2),
                (592, 10)
            ]
        );
        let text = String::from_utf8_lossy(&input);
        for (sql, line) in statements(&pieces) {
            // Each statement starts on the line the file has it on.
            let first = sql.lines().next().unwrap_or_default();
            let file_line = text.lines().nth(line as usize - 1).unwrap_or_default();
            assert!(
                file_line.starts_with(first),
                "line {line}: {first:?} vs {file_line:?}"
            );
            let guard = crate::provision::guard::Guard::new(Dialect::Postgres, &[]);
            guard.check(sql, line).unwrap();
        }
        let trigger_fn = statements(&pieces)
            .into_iter()
            .find(|(sql, _)| sql.starts_with("CREATE FUNCTION public.notes_touch()"))
            .map(|(sql, _)| sql)
            .unwrap_or_default();
        assert!(trigger_fn.contains("RAISE EXCEPTION 'empty body; refused';"));
        assert!(trigger_fn.ends_with("END;\n$$"), "{trigger_fn}");
        // The escaped "\\." value inside COPY data is data, not the end marker.
        let all_data: Vec<u8> = pieces
            .iter()
            .filter_map(|p| match p {
                Piece::CopyData { data, .. } => Some(data.to_vec()),
                _ => None,
            })
            .flatten()
            .collect();
        assert!(memchr::memmem::find(&all_data, b"4\t\\\\.\t").is_some());
        // The last piece is the \unrestrict line; only a blank line follows it.
        assert_eq!(pieces.last().map(Piece::end), Some(input.len() as u64 - 1));
    }

    #[test]
    fn mysqldump_file_with_delimiter_triggers_and_procedures() {
        let input = fixture("mysqldump_shop.sql");
        let whole = split_chunked(Splitter::new(Dialect::MySql), &input, &[]);
        assert_eq!(whole.1, None);
        for sizes in [&[1usize][..], &[4096], &[13, 1000, 1]] {
            assert_eq!(
                split_chunked(Splitter::new(Dialect::MySql), &input, sizes),
                whole
            );
        }
        let pieces = whole.0;
        // Independent count: in this file every statement ends a line with the delimiter.
        let text = String::from_utf8_lossy(&input);
        let mut delimiter = ";";
        let mut expected = 0;
        for l in text.lines() {
            if let Some(d) = l.strip_prefix("DELIMITER ") {
                delimiter = if d == ";;" { ";;" } else { ";" };
            } else if !l.starts_with("--") && l.trim_end().ends_with(delimiter) {
                expected += 1;
            }
        }
        let stmts = statements(&pieces);
        assert_eq!(stmts.len(), expected);
        let guard = crate::provision::guard::Guard::new(Dialect::MySql, &[]);
        for (sql, line) in &stmts {
            guard.check(sql, *line).unwrap();
        }
        let trigger = stmts
            .iter()
            .find(|(sql, _)| sql.contains("TRIGGER `orders_count`"))
            .expect("trigger");
        assert!(trigger.0.starts_with("/*!50003 CREATE*/"));
        assert!(trigger.0.ends_with("END */"));
        let procedure = stmts
            .iter()
            .find(|(sql, _)| sql.starts_with("CREATE DEFINER=`root`@`localhost` PROCEDURE"))
            .expect("procedure");
        assert!(procedure.0.contains("SET msg = \"it's \\\"zero\\\";\";\n"));
        assert!(procedure.0.ends_with("END"));
        let insert = stmts
            .iter()
            .find(|(sql, _)| sql.starts_with("INSERT INTO `customers`"))
            .expect("insert");
        assert!(insert.0.ends_with("(5,'ünïcödé 🐧','',3)"));
        let metas = pieces
            .iter()
            .filter(|p| matches!(p, Piece::Meta { .. }))
            .count();
        assert_eq!(metas, 4);
    }

    #[test]
    fn real_mariadb_dump_splits_like_the_mariadb_client() {
        let input = fixture("mariadb_dump_shop.sql");
        let whole = split_chunked(Splitter::new(Dialect::MySql), &input, &[]);
        assert_eq!(whole.1, None);
        for sizes in [&[1usize][..], &[4096], &[13, 1000, 1]] {
            assert_eq!(
                split_chunked(Splitter::new(Dialect::MySql), &input, sizes),
                whole
            );
        }
        let pieces = whole.0;
        // The mariadb client sent 96 queries for this file (server general log; see README).
        let stmts = statements(&pieces);
        assert_eq!(stmts.len(), 96);
        let metas: Vec<(&str, u64)> = pieces
            .iter()
            .filter_map(|p| match p {
                Piece::Meta { text, line, .. } => Some((text.as_str(), *line)),
                _ => None,
            })
            .collect();
        assert_eq!(metas[0], ("/*M!999999\\- enable the sandbox mode */", 1));
        assert_eq!(metas.len(), 1 + 6, "{metas:?}");
        let guard = crate::provision::guard::Guard::new(Dialect::MySql, &[]);
        for (sql, line) in &stmts {
            guard.check(sql, *line).unwrap();
        }
        let find = |prefix: &str| {
            stmts
                .iter()
                .find(|(sql, _)| sql.starts_with(prefix))
                .unwrap_or_else(|| panic!("no statement starts with {prefix}"))
        };
        let trigger = find("/*!50003 CREATE*/ /*!50017 DEFINER");
        assert_eq!(trigger.1, 107);
        assert!(trigger.0.ends_with("WHERE id = NEW.customer_id;\nEND */"));
        let procedure = find("CREATE DEFINER=`root`@`localhost` PROCEDURE");
        assert!(procedure.0.ends_with("END IF;\nEND"), "{}", procedure.0);
        let function = find("CREATE DEFINER=`root`@`localhost` FUNCTION");
        assert!(function
            .0
            .ends_with("RETURN CONCAT('order #', p_id, '; ok')"));
        let insert = find("INSERT INTO `customers`");
        assert_eq!(insert.1, 55);
        assert!(insert
            .0
            .contains("(4,'DROP DATABASE shop;','it\\'s ;; fine',0)"));
    }

    #[test]
    fn mariadb_executable_comments_are_code_and_only_the_sandbox_line_is_meta() {
        let pieces = split(
            Dialect::MySql,
            "/*M!999999\\- enable the sandbox mode */ \nSELECT 1 /*M!100000 , 2 */;\n",
        );
        assert_eq!(statements(&pieces), [("SELECT 1 /*M!100000 , 2 */", 2)]);
        let err = split_err(
            Dialect::MySql,
            "SELECT 1;\n/*M!999999\\- enable */ SELECT 2;\n",
        );
        assert_eq!(err.line, 2);
    }

    /// Fragments that exercise every lexer state when concatenated at random.
    fn fragment(dialect: Dialect) -> impl Strategy<Value = &'static str> {
        let common = [
            "a", "e", "E", " ", "\n", "\r\n", ";", "'", "''", "\"", "--", "- ", "/*", "*/", "/",
            "*", "x'", "1", "'a;b'", "(", ")",
        ];
        let extra: &[&'static str] = match dialect {
            Dialect::Postgres => &[
                "$",
                "$$",
                "$t$",
                "$1",
                "E'\\''",
                "\\",
                "\\restrict k\n",
                "COPY t FROM stdin;\n",
                "\\.\n",
                "x\t1\n",
            ],
            Dialect::MySql => &[
                "`",
                "#",
                "\\",
                "'\\''",
                "/*!",
                "/*!5000",
                "DELIMITER ;;\n",
                "DELIMITER ;\n",
                ";;",
                "-- x\n",
            ],
        };
        let all: Vec<&'static str> = common.iter().chain(extra).copied().collect();
        proptest::sample::select(all)
    }

    fn input(dialect: Dialect) -> impl Strategy<Value = String> {
        proptest::collection::vec(fragment(dialect), 0..60).prop_map(|v| v.concat())
    }

    /// A statement that splits to itself: words, literals and comments, never blank.
    fn statement(dialect: Dialect) -> impl Strategy<Value = String> {
        let parts: Vec<&'static str> = match dialect {
            Dialect::Postgres => vec![
                "select",
                "x",
                "'a;b'",
                "'it''s'",
                "E'\\';'",
                "\"q;\"",
                "$$;$$",
                "$f$ ; $$ $f$",
                "/* ; /* ; */ */",
                "-- ;\n",
                "\n",
                " ",
                "1",
                "$1",
                "a$b",
                "U&'\\0041;'",
            ],
            Dialect::MySql => vec![
                "select",
                "x",
                "'a;b'",
                "'it\\'s;'",
                "\"d\\\";\"",
                "`b;`",
                "/* ; */",
                "# ;\n",
                "-- ;\n",
                "\n",
                " ",
                "1",
                "/*!40101 SET x=1 */",
                "3--4",
            ],
        };
        (
            proptest::sample::select(vec!["select", "insert", "x"]),
            proptest::collection::vec(proptest::sample::select(parts), 0..12),
        )
            .prop_map(|(head, rest)| {
                let mut s = head.to_owned();
                for p in rest {
                    s.push(' ');
                    s.push_str(p);
                }
                s.push_str(" end");
                s
            })
    }

    fn chunk_sizes() -> impl Strategy<Value = Vec<usize>> {
        proptest::collection::vec(1usize..24, 1..8)
    }

    fn dialect() -> impl Strategy<Value = Dialect> {
        prop_oneof![Just(Dialect::Postgres), Just(Dialect::MySql)]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn any_chunking_gives_the_same_pieces(
            (dialect, input) in dialect().prop_flat_map(|d| (Just(d), input(d))),
            sizes in chunk_sizes(),
        ) {
            let splitter = || Splitter::new(dialect).with_copy_chunk_bytes(8);
            let whole = split_chunked(splitter(), input.as_bytes(), &[]);
            prop_assert_eq!(&split_chunked(splitter(), input.as_bytes(), &sizes), &whole);
            prop_assert_eq!(&split_chunked(splitter(), input.as_bytes(), &[1]), &whole);
            // Pieces cover the file in order; offsets only grow.
            let ends: Vec<u64> = whole.0.iter().map(Piece::end).collect();
            prop_assert!(ends.windows(2).all(|w| w[0] <= w[1]));
            prop_assert!(ends.iter().all(|&e| e <= input.len() as u64));
        }

        #[test]
        fn arbitrary_bytes_never_panic_and_split_the_same_in_any_chunks(
            dialect in dialect(),
            input in proptest::collection::vec(any::<u8>(), 0..300),
            sizes in chunk_sizes(),
        ) {
            let splitter = || Splitter::new(dialect).with_copy_chunk_bytes(8);
            let whole = split_chunked(splitter(), &input, &[]);
            prop_assert_eq!(&split_chunked(splitter(), &input, &sizes), &whole);
            // Whatever is refused, the line named exists in the input.
            if let Some(err) = &whole.1 {
                let lines = 1 + memchr::memchr_iter(b'\n', &input).count() as u64;
                prop_assert!(err.line >= 1 && err.line <= lines, "{}", err);
            }
            // The guard never panics on what the splitter lets through.
            let guard = crate::provision::guard::Guard::new(dialect, &["drop table".into()]);
            for piece in &whole.0 {
                if let Piece::Statement { sql, line, .. } = piece {
                    let _ = guard.check(sql, *line);
                }
            }
        }

        #[test]
        fn joined_statements_split_back_with_exact_lines(
            (dialect, stmts) in dialect().prop_flat_map(|d| {
                (Just(d), proptest::collection::vec(statement(d), 1..8))
            }),
            seps in proptest::collection::vec(
                proptest::sample::select(vec![";", ";\n", " ;\r\n\n", ";\n-- c\n", ";/* c */"]),
                8,
            ),
            sizes in chunk_sizes(),
        ) {
            let mut input = String::new();
            let mut expected = Vec::new();
            for (i, stmt) in stmts.iter().enumerate() {
                let line = 1 + input.matches('\n').count() as u64;
                expected.push((stmt.clone(), line));
                input.push_str(stmt);
                input.push_str(seps[i]);
            }
            let (pieces, err) = split_chunked(Splitter::new(dialect), input.as_bytes(), &sizes);
            prop_assert_eq!(err, None);
            let got: Vec<(String, u64)> = statements(&pieces)
                .into_iter()
                .map(|(s, l)| (s.to_owned(), l))
                .collect();
            prop_assert_eq!(got, expected);
        }
    }
}
