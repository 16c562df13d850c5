//! The MySQL-dialect SQL the double understands: a tokenizer and a statement parser.
//!
//! Why hand-written: StarRocks DDL (`PRIMARY KEY(..) DISTRIBUTED BY HASH(..) PROPERTIES(..)`,
//! `ARRAY<INT>`, `SHOW ALTER TABLE COLUMN`) is not something a generic SQL parser knows, and
//! the double must reject what StarRocks rejects (e.g. `ADD COLUMN IF NOT EXISTS`) with the
//! same kind of message. Plain `SELECT`s are not parsed here: `query` rewrites their tokens
//! and lets SQLite run them.

use crate::catalog::{ColumnDef, DefaultValue, KeysType};
use crate::types::{SrType, STRING_LEN, VARCHAR_MAX};

/// MySQL error numbers the double answers with.
pub mod code {
    pub const DB_CREATE_EXISTS: u16 = 1007;
    pub const DB_DROP_EXISTS: u16 = 1008;
    pub const ACCESS_DENIED: u16 = 1045;
    pub const NO_DB: u16 = 1046;
    pub const BAD_DB: u16 = 1049;
    pub const TABLE_EXISTS: u16 = 1050;
    pub const BAD_TABLE: u16 = 1051;
    pub const DUP_FIELDNAME: u16 = 1060;
    pub const PARSE: u16 = 1064;
    pub const NOT_SUPPORTED: u16 = 1235;
}

/// A statement failure as a MySQL error packet: number and message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SqlError {
    pub code: u16,
    pub message: String,
}

impl SqlError {
    pub fn new(code: u16, message: impl Into<String>) -> SqlError {
        SqlError {
            code,
            message: message.into(),
        }
    }

    /// An analysis error, worded like StarRocks 3.x.
    pub fn analysis(detail: impl std::fmt::Display) -> SqlError {
        SqlError::new(
            code::PARSE,
            format!("Getting analyzing error. Detail message: {detail}."),
        )
    }

    /// Something StarRocks may accept but the double does not implement.
    pub fn unsupported(what: impl std::fmt::Display) -> SqlError {
        SqlError::new(
            code::NOT_SUPPORTED,
            format!("{what} is not supported by starrocks-double"),
        )
    }
}

/// One lexical token.
#[derive(Debug, Clone, PartialEq)]
pub enum Tok {
    /// An unquoted identifier or keyword.
    Word(String),
    /// A back-quoted identifier.
    Quoted(String),
    /// A string literal (single or double quotes: MySQL without ANSI_QUOTES).
    Str(String),
    Num(String),
    Sym(&'static str),
    /// `?` in a prepared statement.
    Param,
    /// `@@name`, with any `session.`/`global.` prefix removed.
    SysVar(String),
    /// `@name`.
    UserVar(String),
}

/// A token and where it starts in the statement text.
#[derive(Debug, Clone, PartialEq)]
pub struct Token {
    pub tok: Tok,
    pub pos: usize,
}

impl Token {
    /// True for an unquoted word equal (case-insensitively) to `kw`.
    pub fn is_kw(&self, kw: &str) -> bool {
        matches!(&self.tok, Tok::Word(w) if w.eq_ignore_ascii_case(kw))
    }

    pub fn is_sym(&self, s: &str) -> bool {
        matches!(&self.tok, Tok::Sym(x) if *x == s)
    }

    /// The identifier text of a word or back-quoted name.
    pub fn ident(&self) -> Option<&str> {
        match &self.tok {
            Tok::Word(w) | Tok::Quoted(w) => Some(w),
            _ => None,
        }
    }

    /// The token as it would appear in SQL text.
    pub fn text(&self) -> String {
        match &self.tok {
            Tok::Word(w) => w.clone(),
            Tok::Quoted(w) => format!("`{w}`"),
            Tok::Str(s) => format!("'{s}'"),
            Tok::Num(n) => n.clone(),
            Tok::Sym(s) => (*s).to_owned(),
            Tok::Param => "?".into(),
            Tok::SysVar(v) => format!("@@{v}"),
            Tok::UserVar(v) => format!("@{v}"),
        }
    }
}

const SYMBOLS: &[&str] = &[
    "<=>", "<=", ">=", "<>", "!=", "||", "&&", ":=", "(", ")", ",", ".", ";", "=", "<", ">", "+",
    "-", "*", "/", "%", "!", "~", "^", "&", "|", ":", "[", "]", "{", "}",
];

/// 1-based line and column of a byte offset, for syntax errors.
pub fn line_col(sql: &str, pos: usize) -> (usize, usize) {
    let before = &sql[..pos.min(sql.len())];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rfind('\n')
        .map_or(before.len(), |i| before.len() - i - 1)
        + 1;
    (line, col)
}

/// A StarRocks-style syntax error at `pos`.
pub fn syntax_error(sql: &str, pos: usize, found: &str, expected: &str) -> SqlError {
    let (line, col) = line_col(sql, pos);
    SqlError::new(
        code::PARSE,
        format!(
            "Getting syntax error at line {line}, column {col}. Detail message: Unexpected input '{found}', the most similar input is {{{expected}}}."
        ),
    )
}

/// Splits SQL text into tokens; comments and whitespace are dropped.
pub fn lex(sql: &str) -> Result<Vec<Token>, SqlError> {
    let b = sql.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if c == b'#'
            || (c == b'-'
                && b.get(i + 1) == Some(&b'-')
                && b.get(i + 2).is_none_or(|x| x.is_ascii_whitespace()))
        {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        if c == b'/' && b.get(i + 1) == Some(&b'*') {
            match sql[i + 2..].find("*/") {
                Some(end) => i = i + 2 + end + 2,
                None => return Err(syntax_error(sql, i, "/*", "*/")),
            }
            continue;
        }
        let start = i;
        if c == b'\'' || c == b'"' {
            let (s, next) = lex_quoted(sql, i, c, true)?;
            out.push(Token {
                tok: Tok::Str(s),
                pos: start,
            });
            i = next;
            continue;
        }
        if c == b'`' {
            let (s, next) = lex_quoted(sql, i, c, false)?;
            out.push(Token {
                tok: Tok::Quoted(s),
                pos: start,
            });
            i = next;
            continue;
        }
        if c.is_ascii_digit() || (c == b'.' && b.get(i + 1).is_some_and(|x| x.is_ascii_digit())) {
            while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.') {
                i += 1;
            }
            if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
                let mut j = i + 1;
                if j < b.len() && (b[j] == b'+' || b[j] == b'-') {
                    j += 1;
                }
                if j < b.len() && b[j].is_ascii_digit() {
                    i = j;
                    while i < b.len() && b[i].is_ascii_digit() {
                        i += 1;
                    }
                }
            }
            // `1abc` is an identifier in MySQL; keep it simple and treat it as one word.
            if i < b.len() && is_ident_byte(b[i]) && !b[i].is_ascii_digit() {
                while i < b.len() && is_ident_byte(b[i]) {
                    i += 1;
                }
                out.push(Token {
                    tok: Tok::Word(sql[start..i].to_owned()),
                    pos: start,
                });
            } else {
                out.push(Token {
                    tok: Tok::Num(sql[start..i].to_owned()),
                    pos: start,
                });
            }
            continue;
        }
        if c == b'@' {
            let sys = b.get(i + 1) == Some(&b'@');
            i += if sys { 2 } else { 1 };
            let name_start = i;
            while i < b.len() && (is_ident_byte(b[i]) || b[i] == b'.') {
                i += 1;
            }
            let mut name = sql[name_start..i].to_owned();
            for prefix in ["session.", "global.", "local."] {
                if name.len() > prefix.len() && name[..prefix.len()].eq_ignore_ascii_case(prefix) {
                    name = name[prefix.len()..].to_owned();
                }
            }
            out.push(Token {
                tok: if sys {
                    Tok::SysVar(name)
                } else {
                    Tok::UserVar(name)
                },
                pos: start,
            });
            continue;
        }
        if is_ident_byte(c) {
            while i < b.len() && is_ident_byte(b[i]) {
                i += 1;
            }
            out.push(Token {
                tok: Tok::Word(sql[start..i].to_owned()),
                pos: start,
            });
            continue;
        }
        if c == b'?' {
            out.push(Token {
                tok: Tok::Param,
                pos: start,
            });
            i += 1;
            continue;
        }
        match SYMBOLS.iter().find(|s| sql[i..].starts_with(**s)) {
            Some(s) => {
                out.push(Token {
                    tok: Tok::Sym(s),
                    pos: start,
                });
                i += s.len();
            }
            None => {
                let ch = sql[i..].chars().next().unwrap_or('?');
                return Err(syntax_error(sql, i, &ch.to_string(), "a legal identifier"));
            }
        }
    }
    Ok(out)
}

fn is_ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

/// Reads a quoted string starting at `start`; returns the unescaped text and the next offset.
fn lex_quoted(
    sql: &str,
    start: usize,
    q: u8,
    backslash: bool,
) -> Result<(String, usize), SqlError> {
    let b = sql.as_bytes();
    let mut out: Vec<u8> = Vec::new();
    let mut i = start + 1;
    while i < b.len() {
        let c = b[i];
        if c == q {
            if b.get(i + 1) == Some(&q) {
                out.push(q);
                i += 2;
                continue;
            }
            return Ok((String::from_utf8_lossy(&out).into_owned(), i + 1));
        }
        if backslash && c == b'\\' && i + 1 < b.len() {
            let e = b[i + 1];
            // MySQL keeps the backslash for \% and \_ (they matter to LIKE).
            if e == b'%' || e == b'_' {
                out.push(b'\\');
            }
            out.push(match e {
                b'n' => b'\n',
                b't' => b'\t',
                b'r' => b'\r',
                b'0' => 0,
                b'Z' => 0x1a,
                other => other,
            });
            i += 2;
            continue;
        }
        out.push(c);
        i += 1;
    }
    Err(syntax_error(
        sql,
        start,
        &(q as char).to_string(),
        "a closing quote",
    ))
}

/// A literal in an `INSERT ... VALUES` row.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Null,
    Text(String),
}

/// Where `ALTER TABLE ... ADD COLUMN` puts the column.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Position {
    First,
    After(String),
}

/// One `ADD COLUMN`.
#[derive(Debug, Clone, PartialEq)]
pub struct AddColumn {
    pub column: ColumnDef,
    pub position: Option<Position>,
}

/// One `MODIFY COLUMN`: the column's full new definition, and where it moves to.
#[derive(Debug, Clone, PartialEq)]
pub struct ModifyColumn {
    pub column: ColumnDef,
    pub position: Option<Position>,
}

/// A parsed CREATE TABLE.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateTable {
    pub db: Option<String>,
    pub name: String,
    pub if_not_exists: bool,
    pub columns: Vec<ColumnDef>,
    pub keys: Option<(KeysType, Vec<String>)>,
    /// None when there is no DISTRIBUTED BY; `Some(vec![])` for DISTRIBUTED BY RANDOM.
    pub distribution: Option<Vec<String>>,
    pub buckets: Option<u32>,
    pub properties: Vec<(String, String)>,
    pub comment: String,
}

/// A statement the double executes.
#[derive(Debug, Clone, PartialEq)]
pub enum Statement {
    /// SELECT / WITH / VALUES: rewritten by `query` and run by SQLite.
    Query(Vec<Token>),
    Insert {
        db: Option<String>,
        table: String,
        columns: Option<Vec<String>>,
        rows: Vec<Vec<Literal>>,
    },
    Delete {
        db: Option<String>,
        table: String,
        where_tokens: Vec<Token>,
    },
    ShowDatabases {
        like: Option<String>,
    },
    ShowTables {
        db: Option<String>,
        full: bool,
        like: Option<String>,
    },
    ShowCreateTable {
        db: Option<String>,
        table: String,
    },
    Describe {
        db: Option<String>,
        table: String,
    },
    ShowAlterColumn {
        db: Option<String>,
        tail: Vec<Token>,
    },
    /// `CANCEL ALTER TABLE COLUMN FROM [db.]t`: cancels the table's running schema change.
    CancelAlterColumn {
        db: Option<String>,
        table: String,
    },
    ShowVariables {
        like: Option<String>,
    },
    ShowBackends,
    ShowComputeNodes,
    /// `ADMIN SHOW FRONTEND CONFIG [LIKE 'pattern']`.
    AdminShowFrontendConfig {
        like: Option<String>,
    },
    /// SHOW WARNINGS / ERRORS / STATUS ...: answered with an empty result.
    ShowEmpty,
    CreateDatabase {
        name: String,
        if_not_exists: bool,
    },
    DropDatabase {
        name: String,
        if_exists: bool,
    },
    CreateTable(CreateTable),
    DropTable {
        db: Option<String>,
        table: String,
        if_exists: bool,
    },
    TruncateTable {
        db: Option<String>,
        table: String,
    },
    AlterAddColumns {
        db: Option<String>,
        table: String,
        columns: Vec<AddColumn>,
    },
    /// `ALTER TABLE t MODIFY COLUMN ...[, MODIFY COLUMN ...]`.
    AlterModifyColumns {
        db: Option<String>,
        table: String,
        columns: Vec<ModifyColumn>,
    },
    /// `ALTER TABLE t DROP COLUMN a[, DROP COLUMN b]`.
    AlterDropColumns {
        db: Option<String>,
        table: String,
        columns: Vec<String>,
    },
    /// `ALTER TABLE t RENAME COLUMN a [TO] b`, parsed with and without `TO`: which form the
    /// FE accepts depends on its version, so `query` decides (the tokens are kept for the
    /// syntax error an older grammar gives).
    AlterRenameColumn {
        db: Option<String>,
        table: String,
        from: String,
        to: String,
        /// The `TO` keyword, if written.
        to_keyword: Option<Token>,
        /// The token holding the new name.
        new_name: Token,
    },
    Use(String),
    /// SET, BEGIN, COMMIT, ROLLBACK: accepted, no effect.
    NoOp,
}

/// A cursor over the tokens of one statement.
struct Parser<'a> {
    sql: &'a str,
    toks: &'a [Token],
    i: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<&'a Token> {
        self.toks.get(self.i)
    }

    fn next(&mut self) -> Option<&'a Token> {
        let t = self.toks.get(self.i);
        if t.is_some() {
            self.i += 1;
        }
        t
    }

    fn at_kw(&self, kw: &str) -> bool {
        self.peek().is_some_and(|t| t.is_kw(kw))
    }

    fn at_sym(&self, s: &str) -> bool {
        self.peek().is_some_and(|t| t.is_sym(s))
    }

    fn eat_kw(&mut self, kw: &str) -> bool {
        if self.at_kw(kw) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn eat_sym(&mut self, s: &str) -> bool {
        if self.at_sym(s) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn at_end(&self) -> bool {
        self.toks[self.i..].iter().all(|t| t.is_sym(";"))
    }

    fn error(&self, expected: &str) -> SqlError {
        match self.peek() {
            Some(t) => syntax_error(self.sql, t.pos, &t.text(), expected),
            None => syntax_error(self.sql, self.sql.trim_end().len(), "<EOF>", expected),
        }
    }

    fn expect_kw(&mut self, kw: &str) -> Result<(), SqlError> {
        if self.eat_kw(kw) {
            Ok(())
        } else {
            Err(self.error(kw))
        }
    }

    fn expect_sym(&mut self, s: &str) -> Result<(), SqlError> {
        if self.eat_sym(s) {
            Ok(())
        } else {
            Err(self.error(&format!("'{s}'")))
        }
    }

    fn expect_end(&self) -> Result<(), SqlError> {
        if self.at_end() {
            Ok(())
        } else {
            Err(self.error("<EOF>, ';'"))
        }
    }

    fn ident(&mut self) -> Result<String, SqlError> {
        match self.peek().and_then(|t| t.ident()) {
            Some(s) => {
                self.i += 1;
                Ok(s.to_owned())
            }
            None => Err(self.error("a legal identifier")),
        }
    }

    /// `name` or `db.name`.
    fn qualified(&mut self) -> Result<(Option<String>, String), SqlError> {
        let first = self.ident()?;
        if self.eat_sym(".") {
            let second = self.ident()?;
            Ok((Some(first), second))
        } else {
            Ok((None, first))
        }
    }

    fn string(&mut self) -> Result<String, SqlError> {
        match self.peek().map(|t| &t.tok) {
            Some(Tok::Str(s)) => {
                self.i += 1;
                Ok(s.clone())
            }
            _ => Err(self.error("a string literal")),
        }
    }

    fn number(&mut self) -> Result<u64, SqlError> {
        match self.peek().map(|t| &t.tok) {
            Some(Tok::Num(n)) => {
                let v = n.parse().map_err(|_| self.error("an integer"))?;
                self.i += 1;
                Ok(v)
            }
            _ => Err(self.error("an integer")),
        }
    }

    fn ident_list(&mut self) -> Result<Vec<String>, SqlError> {
        self.expect_sym("(")?;
        let mut out = vec![self.ident()?];
        while self.eat_sym(",") {
            out.push(self.ident()?);
        }
        self.expect_sym(")")?;
        Ok(out)
    }

    /// Skips one balanced parenthesised group starting at `(`.
    fn skip_group(&mut self) -> Result<(), SqlError> {
        self.expect_sym("(")?;
        let mut depth = 1;
        while depth > 0 {
            match self.next() {
                Some(t) if t.is_sym("(") => depth += 1,
                Some(t) if t.is_sym(")") => depth -= 1,
                Some(_) => {}
                None => return Err(self.error("')'")),
            }
        }
        Ok(())
    }

    fn rest(&self) -> Vec<Token> {
        self.toks[self.i..]
            .iter()
            .filter(|t| !t.is_sym(";"))
            .cloned()
            .collect()
    }

    fn like(&mut self) -> Result<Option<String>, SqlError> {
        if self.eat_kw("LIKE") {
            Ok(Some(self.string()?))
        } else {
            Ok(None)
        }
    }
}

/// Parses one statement.
pub fn parse(sql: &str) -> Result<Statement, SqlError> {
    let toks = lex(sql)?;
    let mut p = Parser {
        sql,
        toks: &toks,
        i: 0,
    };
    let Some(first) = p.peek() else {
        return Ok(Statement::NoOp);
    };
    if first.is_sym("(") || first.is_kw("SELECT") || first.is_kw("WITH") || first.is_kw("VALUES") {
        return Ok(Statement::Query(p.rest()));
    }
    if p.eat_kw("SET")
        || p.eat_kw("BEGIN")
        || p.eat_kw("COMMIT")
        || p.eat_kw("ROLLBACK")
        || p.eat_kw("START")
    {
        return Ok(Statement::NoOp);
    }
    if p.eat_kw("USE") {
        let db = p.ident()?;
        p.expect_end()?;
        return Ok(Statement::Use(db));
    }
    if p.eat_kw("SHOW") {
        return parse_show(&mut p);
    }
    if p.eat_kw("ADMIN") {
        p.expect_kw("SHOW")?;
        p.expect_kw("FRONTEND")?;
        p.expect_kw("CONFIG")?;
        let like = p.like()?;
        p.expect_end()?;
        return Ok(Statement::AdminShowFrontendConfig { like });
    }
    if p.eat_kw("DESC") || p.eat_kw("DESCRIBE") || p.eat_kw("EXPLAIN") {
        if p.at_kw("SELECT") {
            return Err(SqlError::unsupported("EXPLAIN"));
        }
        let (db, table) = p.qualified()?;
        p.eat_kw("ALL");
        p.expect_end()?;
        return Ok(Statement::Describe { db, table });
    }
    if p.eat_kw("CREATE") {
        if p.eat_kw("DATABASE") || p.eat_kw("SCHEMA") {
            let if_not_exists = eat_if_not_exists(&mut p)?;
            let name = p.ident()?;
            // PROPERTIES on CREATE DATABASE are accepted and ignored.
            if p.eat_kw("PROPERTIES") {
                p.skip_group()?;
            }
            p.expect_end()?;
            return Ok(Statement::CreateDatabase {
                name,
                if_not_exists,
            });
        }
        p.eat_kw("EXTERNAL");
        if p.eat_kw("TABLE") {
            return parse_create_table(&mut p).map(Statement::CreateTable);
        }
        return Err(p.error("DATABASE, TABLE"));
    }
    if p.eat_kw("DROP") {
        if p.eat_kw("DATABASE") || p.eat_kw("SCHEMA") {
            let if_exists = eat_if_exists(&mut p)?;
            let name = p.ident()?;
            p.eat_kw("FORCE");
            p.expect_end()?;
            return Ok(Statement::DropDatabase { name, if_exists });
        }
        if p.eat_kw("TABLE") {
            let if_exists = eat_if_exists(&mut p)?;
            let (db, table) = p.qualified()?;
            p.eat_kw("FORCE");
            p.expect_end()?;
            return Ok(Statement::DropTable {
                db,
                table,
                if_exists,
            });
        }
        return Err(p.error("DATABASE, TABLE"));
    }
    if p.eat_kw("CANCEL") {
        p.expect_kw("ALTER")?;
        p.expect_kw("TABLE")?;
        p.expect_kw("COLUMN")?;
        p.expect_kw("FROM")?;
        let (db, table) = p.qualified()?;
        p.expect_end()?;
        return Ok(Statement::CancelAlterColumn { db, table });
    }
    if p.eat_kw("TRUNCATE") {
        p.eat_kw("TABLE");
        let (db, table) = p.qualified()?;
        p.expect_end()?;
        return Ok(Statement::TruncateTable { db, table });
    }
    if p.eat_kw("ALTER") {
        p.expect_kw("TABLE")?;
        return parse_alter(&mut p);
    }
    if p.eat_kw("INSERT") {
        return parse_insert(&mut p);
    }
    if p.eat_kw("DELETE") {
        p.expect_kw("FROM")?;
        let (db, table) = p.qualified()?;
        let where_tokens = if p.eat_kw("WHERE") {
            p.rest()
        } else {
            Vec::new()
        };
        if where_tokens.is_empty() {
            // StarRocks requires a WHERE on DELETE.
            return Err(p.error("WHERE"));
        }
        return Ok(Statement::Delete {
            db,
            table,
            where_tokens,
        });
    }
    Err(SqlError::unsupported(format!(
        "the statement starting with '{}'",
        first.text()
    )))
}

fn eat_if_not_exists(p: &mut Parser<'_>) -> Result<bool, SqlError> {
    if p.eat_kw("IF") {
        p.expect_kw("NOT")?;
        p.expect_kw("EXISTS")?;
        Ok(true)
    } else {
        Ok(false)
    }
}

fn eat_if_exists(p: &mut Parser<'_>) -> Result<bool, SqlError> {
    if p.eat_kw("IF") {
        p.expect_kw("EXISTS")?;
        Ok(true)
    } else {
        Ok(false)
    }
}

fn parse_show(p: &mut Parser<'_>) -> Result<Statement, SqlError> {
    if p.eat_kw("DATABASES") || p.eat_kw("SCHEMAS") {
        let like = p.like()?;
        p.expect_end()?;
        return Ok(Statement::ShowDatabases { like });
    }
    let full = p.eat_kw("FULL");
    if p.eat_kw("TABLES") {
        let db = if p.eat_kw("FROM") || p.eat_kw("IN") {
            Some(p.ident()?)
        } else {
            None
        };
        let like = p.like()?;
        p.expect_end()?;
        return Ok(Statement::ShowTables { db, full, like });
    }
    if p.eat_kw("COLUMNS") || p.eat_kw("FIELDS") {
        if !(p.eat_kw("FROM") || p.eat_kw("IN")) {
            return Err(p.error("FROM"));
        }
        let (mut db, table) = p.qualified()?;
        if p.eat_kw("FROM") || p.eat_kw("IN") {
            db = Some(p.ident()?);
        }
        p.expect_end()?;
        return Ok(Statement::Describe { db, table });
    }
    if p.eat_kw("CREATE") {
        p.expect_kw("TABLE")?;
        let (db, table) = p.qualified()?;
        p.expect_end()?;
        return Ok(Statement::ShowCreateTable { db, table });
    }
    if p.eat_kw("ALTER") {
        p.expect_kw("TABLE")?;
        if !p.eat_kw("COLUMN") {
            return Err(SqlError::unsupported("SHOW ALTER TABLE other than COLUMN"));
        }
        let db = if p.eat_kw("FROM") || p.eat_kw("IN") {
            Some(p.ident()?)
        } else {
            None
        };
        return Ok(Statement::ShowAlterColumn { db, tail: p.rest() });
    }
    let _ = p.eat_kw("SESSION") || p.eat_kw("GLOBAL");
    if p.eat_kw("VARIABLES") {
        let like = p.like()?;
        return Ok(Statement::ShowVariables { like });
    }
    if p.eat_kw("BACKENDS") {
        p.expect_end()?;
        return Ok(Statement::ShowBackends);
    }
    if p.eat_kw("COMPUTE") {
        p.expect_kw("NODES")?;
        p.expect_end()?;
        return Ok(Statement::ShowComputeNodes);
    }
    if p.eat_kw("WARNINGS")
        || p.eat_kw("ERRORS")
        || p.eat_kw("STATUS")
        || p.eat_kw("PROCESSLIST")
        || p.eat_kw("ENGINES")
    {
        return Ok(Statement::ShowEmpty);
    }
    Err(SqlError::unsupported(format!(
        "SHOW {}",
        p.peek().map(|t| t.text()).unwrap_or_default()
    )))
}

/// Parses a StarRocks type name: `BIGINT`, `VARCHAR(10)`, `DECIMAL(10,2)`, `ARRAY<INT>`, ...
fn parse_type(p: &mut Parser<'_>) -> Result<SrType, SqlError> {
    let Some(tok) = p.peek() else {
        return Err(p.error("a type"));
    };
    let Some(name) = tok.ident().map(|s| s.to_ascii_uppercase()) else {
        return Err(p.error("a type"));
    };
    let pos = tok.pos;
    p.next();
    let mut args: Vec<u64> = Vec::new();
    if name != "ARRAY" && p.eat_sym("(") {
        args.push(p.number()?);
        while p.eat_sym(",") {
            args.push(p.number()?);
        }
        p.expect_sym(")")?;
    }
    let len_arg = |default: u64| args.first().copied().unwrap_or(default);
    let ty = match name.as_str() {
        "BOOLEAN" | "BOOL" => SrType::Boolean,
        "TINYINT" => SrType::TinyInt,
        "SMALLINT" => SrType::SmallInt,
        "INT" | "INTEGER" => SrType::Int,
        "BIGINT" => SrType::BigInt,
        "LARGEINT" => SrType::LargeInt,
        "FLOAT" => SrType::Float,
        "DOUBLE" => SrType::Double,
        "DECIMAL" | "DECIMALV2" | "DECIMALV3" | "DECIMAL32" | "DECIMAL64" | "DECIMAL128"
        | "NUMERIC" => {
            let precision = len_arg(10);
            let scale = args.get(1).copied().unwrap_or(0);
            if !(1..=38).contains(&precision) {
                return Err(SqlError::analysis(format!(
                    "DECIMAL's precision should range from 1 to 38, but got {precision}"
                )));
            }
            if scale > precision {
                return Err(SqlError::analysis(format!(
                    "DECIMAL's scale should be less than or equal to precision, but scale={scale}, precision={precision}"
                )));
            }
            SrType::Decimal {
                precision: precision as u8,
                scale: scale as u8,
            }
        }
        "CHAR" => {
            let n = len_arg(1);
            if !(1..=255).contains(&n) {
                return Err(SqlError::analysis(format!(
                    "Char size must between 1 and 255, but got {n}"
                )));
            }
            SrType::Char(n as u32)
        }
        "VARCHAR" => {
            let n = len_arg(1);
            if !(1..=u64::from(VARCHAR_MAX)).contains(&n) {
                return Err(SqlError::analysis(format!(
                    "Varchar size must between 1 and {VARCHAR_MAX}, but got {n}"
                )));
            }
            SrType::Varchar(n as u32)
        }
        "STRING" | "TEXT" => SrType::Varchar(STRING_LEN),
        "DATE" => SrType::Date,
        "DATETIME" => SrType::DateTime,
        "JSON" => SrType::Json,
        "VARBINARY" | "BINARY" => {
            let n = len_arg(u64::from(VARCHAR_MAX));
            if !(1..=u64::from(VARCHAR_MAX)).contains(&n) {
                return Err(SqlError::analysis(format!(
                    "VARBINARY size must between 1 and {VARCHAR_MAX}, but got {n}"
                )));
            }
            SrType::Varbinary(n as u32)
        }
        "ARRAY" => {
            p.expect_sym("<")?;
            let inner = parse_type(p)?;
            p.expect_sym(">")?;
            SrType::Array(Box::new(inner))
        }
        other => {
            return Err(syntax_error(
                p.sql,
                pos,
                &other.to_ascii_lowercase(),
                "a legal type",
            ));
        }
    };
    Ok(ty)
}

/// A DEFAULT literal as text: strings, numbers (with sign), NULL, CURRENT_TIMESTAMP.
fn parse_default(p: &mut Parser<'_>) -> Result<Option<DefaultValue>, SqlError> {
    let negative = p.eat_sym("-");
    let Some(tok) = p.next() else {
        return Err(p.error("a default value"));
    };
    match &tok.tok {
        Tok::Str(s) if !negative => Ok(Some(DefaultValue::Literal(s.clone()))),
        Tok::Num(n) => Ok(Some(DefaultValue::Literal(if negative {
            format!("-{n}")
        } else {
            n.clone()
        }))),
        Tok::Word(w) if w.eq_ignore_ascii_case("NULL") && !negative => Ok(None),
        Tok::Word(w) if w.eq_ignore_ascii_case("CURRENT_TIMESTAMP") && !negative => {
            if p.eat_sym("(") {
                p.expect_sym(")")?;
            }
            Ok(Some(DefaultValue::CurrentTimestamp))
        }
        Tok::Word(w)
            if (w.eq_ignore_ascii_case("true") || w.eq_ignore_ascii_case("false")) && !negative =>
        {
            Ok(Some(DefaultValue::Literal(w.to_ascii_lowercase())))
        }
        Tok::Sym("(") => Err(SqlError::unsupported("a DEFAULT expression")),
        _ => Err(syntax_error(p.sql, tok.pos, &tok.text(), "a literal")),
    }
}

/// `name TYPE [NULL | NOT NULL] [DEFAULT x] [COMMENT 'c']` (plus ignorable CHARSET/COLLATE/KEY).
fn parse_column(p: &mut Parser<'_>) -> Result<ColumnDef, SqlError> {
    let name = p.ident()?;
    let ty = parse_type(p)?;
    let mut col = ColumnDef {
        name,
        ty,
        nullable: true,
        default: None,
        comment: String::new(),
        is_key: false,
        column_id: None,
    };
    loop {
        if p.eat_kw("NOT") {
            p.expect_kw("NULL")?;
            col.nullable = false;
        } else if p.eat_kw("NULL") {
            col.nullable = true;
        } else if p.eat_kw("DEFAULT") {
            col.default = parse_default(p)?;
        } else if p.eat_kw("COMMENT") {
            col.comment = p.string()?;
        } else if p.eat_kw("KEY") {
            col.is_key = true;
        } else if p.eat_kw("CHARSET") || p.eat_kw("COLLATE") {
            p.ident()?;
        } else if p.at_kw("CHARACTER") {
            p.next();
            p.expect_kw("SET")?;
            p.ident()?;
        } else if p.at_kw("AUTO_INCREMENT") {
            return Err(SqlError::unsupported("AUTO_INCREMENT"));
        } else if p.at_kw("AS") {
            return Err(SqlError::unsupported("a generated column"));
        } else {
            break;
        }
    }
    Ok(col)
}

fn parse_properties(p: &mut Parser<'_>) -> Result<Vec<(String, String)>, SqlError> {
    p.expect_sym("(")?;
    let mut props = Vec::new();
    if p.eat_sym(")") {
        return Ok(props);
    }
    loop {
        let k = p.string()?;
        p.expect_sym("=")?;
        let v = p.string()?;
        props.push((k, v));
        if p.eat_sym(")") {
            return Ok(props);
        }
        p.expect_sym(",")?;
    }
}

fn parse_create_table(p: &mut Parser<'_>) -> Result<CreateTable, SqlError> {
    let if_not_exists = eat_if_not_exists(p)?;
    let (db, name) = p.qualified()?;
    if p.at_kw("AS") || p.at_kw("LIKE") {
        return Err(SqlError::unsupported("CREATE TABLE AS / LIKE"));
    }
    p.expect_sym("(")?;
    let mut columns = Vec::new();
    loop {
        if p.at_kw("INDEX") {
            // Bitmap / n-gram indexes: accepted and ignored.
            p.next();
            p.ident()?;
            p.skip_group()?;
            while !p.at_sym(",") && !p.at_sym(")") && p.peek().is_some() {
                p.next();
            }
        } else {
            columns.push(parse_column(p)?);
        }
        if p.eat_sym(")") {
            break;
        }
        p.expect_sym(",")?;
    }
    let mut t = CreateTable {
        db,
        name,
        if_not_exists,
        columns,
        keys: None,
        distribution: None,
        buckets: None,
        properties: Vec::new(),
        comment: String::new(),
    };
    while !p.at_end() {
        if p.eat_kw("ENGINE") {
            p.expect_sym("=")?;
            let engine = p.ident()?;
            if !engine.eq_ignore_ascii_case("OLAP") {
                return Err(SqlError::unsupported(format!("ENGINE={engine}")));
            }
        } else if p.eat_kw("PRIMARY") {
            p.expect_kw("KEY")?;
            t.keys = Some((KeysType::PrimaryKeys, p.ident_list()?));
        } else if p.eat_kw("DUPLICATE") {
            p.expect_kw("KEY")?;
            t.keys = Some((KeysType::DupKeys, p.ident_list()?));
        } else if p.at_kw("UNIQUE") || p.at_kw("AGGREGATE") {
            return Err(SqlError::unsupported("UNIQUE KEY and AGGREGATE KEY tables"));
        } else if p.eat_kw("COMMENT") {
            t.comment = p.string()?;
        } else if p.eat_kw("PARTITION") {
            // Partitioning changes nothing in the double: skip to the next clause.
            p.expect_kw("BY")?;
            while !p.at_end()
                && !p.at_kw("DISTRIBUTED")
                && !p.at_kw("PROPERTIES")
                && !p.at_kw("ORDER")
            {
                if p.at_sym("(") {
                    p.skip_group()?;
                } else {
                    p.next();
                }
            }
        } else if p.eat_kw("DISTRIBUTED") {
            p.expect_kw("BY")?;
            if p.eat_kw("HASH") {
                t.distribution = Some(p.ident_list()?);
            } else if p.eat_kw("RANDOM") {
                t.distribution = Some(Vec::new());
            } else {
                return Err(p.error("HASH, RANDOM"));
            }
            if p.eat_kw("BUCKETS") {
                if p.eat_kw("AUTO") {
                    t.buckets = None;
                } else {
                    t.buckets = Some(p.number()? as u32);
                }
            }
        } else if p.eat_kw("ORDER") {
            p.expect_kw("BY")?;
            p.ident_list()?;
        } else if p.eat_kw("PROPERTIES") {
            t.properties = parse_properties(p)?;
        } else {
            return Err(p.error("PRIMARY KEY, DUPLICATE KEY, DISTRIBUTED BY, PROPERTIES"));
        }
    }
    Ok(t)
}

/// `ALTER TABLE [db.]t` followed by ADD COLUMN, MODIFY COLUMN or DROP COLUMN clauses,
/// comma-separated, or by one RENAME COLUMN.
///
/// StarRocks' grammar (`StarRocks.g4`): `ADD COLUMN columnDesc (FIRST | AFTER id)?
/// ((TO | IN) rollup)? properties?`, `ADD COLUMN '(' columnDesc, ... ')'`, `MODIFY COLUMN
/// columnDesc (FIRST | AFTER id)? (FROM rollup)? properties?`, `DROP COLUMN identifier (FROM
/// rollup)? properties?` and `RENAME COLUMN oldColumn=identifier TO newColumn=identifier`
/// (before the rename feature: `RENAME COLUMN identifier identifier`). The double takes one
/// kind of clause per statement; a statement mixing kinds is refused as unsupported.
fn parse_alter(p: &mut Parser<'_>) -> Result<Statement, SqlError> {
    let (db, table) = p.qualified()?;
    if p.eat_kw("RENAME") {
        if !p.eat_kw("COLUMN") {
            return Err(SqlError::unsupported(
                "ALTER TABLE RENAME other than COLUMN",
            ));
        }
        let from = p.ident()?;
        let to_keyword = if p.at_kw("TO") {
            p.next().cloned()
        } else {
            None
        };
        let Some(new_name) = p.peek().cloned() else {
            return Err(p.error("a legal identifier"));
        };
        let to = p.ident()?;
        p.expect_end()?;
        return Ok(Statement::AlterRenameColumn {
            db,
            table,
            from,
            to,
            to_keyword,
            new_name,
        });
    }
    let mut columns = Vec::new();
    let mut modified = Vec::new();
    let mut dropped = Vec::new();
    loop {
        if p.eat_kw("MODIFY") {
            if !p.eat_kw("COLUMN") {
                return Err(SqlError::unsupported(format!(
                    "ALTER TABLE MODIFY {}",
                    p.peek().map(|t| t.text()).unwrap_or_default()
                )));
            }
            let column = parse_column(p)?;
            let position = parse_position(p)?;
            if p.at_kw("FROM") {
                return Err(SqlError::unsupported("MODIFY COLUMN ... FROM a rollup"));
            }
            if p.eat_kw("PROPERTIES") {
                parse_properties(p)?;
            }
            modified.push(ModifyColumn { column, position });
        } else if p.eat_kw("DROP") {
            if !p.eat_kw("COLUMN") {
                return Err(SqlError::unsupported(format!(
                    "ALTER TABLE DROP {}",
                    p.peek().map(|t| t.text()).unwrap_or_default()
                )));
            }
            dropped.push(p.ident()?);
            if p.at_kw("FROM") {
                return Err(SqlError::unsupported("DROP COLUMN ... FROM a rollup"));
            }
            if p.eat_kw("PROPERTIES") {
                parse_properties(p)?;
            }
        } else if p.eat_kw("ADD") {
            if !p.eat_kw("COLUMN") {
                return Err(SqlError::unsupported("ALTER TABLE ADD other than COLUMN"));
            }
            if p.at_kw("IF") {
                // StarRocks' grammar has no IF NOT EXISTS on ADD COLUMN.
                return Err(p.error("a legal identifier"));
            }
            if p.eat_sym("(") {
                loop {
                    columns.push(AddColumn {
                        column: parse_column(p)?,
                        position: None,
                    });
                    if p.eat_sym(")") {
                        break;
                    }
                    p.expect_sym(",")?;
                }
            } else {
                let column = parse_column(p)?;
                let position = parse_position(p)?;
                if p.eat_kw("TO") || p.eat_kw("IN") {
                    p.ident()?;
                }
                columns.push(AddColumn { column, position });
            }
        } else if p.at_kw("PROPERTIES") {
            break;
        } else {
            return Err(SqlError::unsupported(format!(
                "ALTER TABLE {}",
                p.peek().map(|t| t.text()).unwrap_or_default()
            )));
        }
        if !p.eat_sym(",") {
            break;
        }
    }
    if p.eat_kw("PROPERTIES") {
        parse_properties(p)?;
    }
    p.expect_end()?;
    let kinds = [
        !columns.is_empty(),
        !modified.is_empty(),
        !dropped.is_empty(),
    ];
    match kinds {
        [_, false, false] => Ok(Statement::AlterAddColumns { db, table, columns }),
        [false, true, false] => Ok(Statement::AlterModifyColumns {
            db,
            table,
            columns: modified,
        }),
        [false, false, true] => Ok(Statement::AlterDropColumns {
            db,
            table,
            columns: dropped,
        }),
        _ => Err(SqlError::unsupported(
            "ALTER TABLE mixing ADD, MODIFY and DROP COLUMN clauses",
        )),
    }
}

/// `FIRST | AFTER col`, if present.
fn parse_position(p: &mut Parser<'_>) -> Result<Option<Position>, SqlError> {
    Ok(if p.eat_kw("FIRST") {
        Some(Position::First)
    } else if p.eat_kw("AFTER") {
        Some(Position::After(p.ident()?))
    } else {
        None
    })
}

fn parse_insert(p: &mut Parser<'_>) -> Result<Statement, SqlError> {
    if !p.eat_kw("INTO") && !p.eat_kw("OVERWRITE") {
        return Err(p.error("INTO"));
    }
    p.eat_kw("TABLE");
    let (db, table) = p.qualified()?;
    if p.eat_kw("WITH") {
        p.expect_kw("LABEL")?;
        p.ident()?;
    }
    let columns = if p.at_sym("(") {
        Some(p.ident_list()?)
    } else {
        None
    };
    if !(p.eat_kw("VALUES") || p.eat_kw("VALUE")) {
        return Err(SqlError::unsupported("INSERT ... SELECT"));
    }
    let mut rows = Vec::new();
    loop {
        p.expect_sym("(")?;
        let mut row = Vec::new();
        loop {
            let negative = p.eat_sym("-");
            let Some(tok) = p.next() else {
                return Err(p.error("a literal"));
            };
            let lit = match &tok.tok {
                Tok::Str(s) if !negative => Literal::Text(s.clone()),
                Tok::Num(n) => Literal::Text(if negative { format!("-{n}") } else { n.clone() }),
                Tok::Word(w) if w.eq_ignore_ascii_case("NULL") && !negative => Literal::Null,
                Tok::Word(w)
                    if (w.eq_ignore_ascii_case("true") || w.eq_ignore_ascii_case("false"))
                        && !negative =>
                {
                    Literal::Text(w.to_ascii_lowercase())
                }
                _ => return Err(syntax_error(p.sql, tok.pos, &tok.text(), "a literal")),
            };
            row.push(lit);
            if p.eat_sym(")") {
                break;
            }
            p.expect_sym(",")?;
        }
        rows.push(row);
        if !p.eat_sym(",") {
            break;
        }
    }
    p.expect_end()?;
    Ok(Statement::Insert {
        db,
        table,
        columns,
        rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lexer_handles_quotes_comments_and_variables() {
        let toks = lex(
            "SELECT `a b`, 'it''s', \"x\\\"y\" -- c\n FROM t /* z */ WHERE @@version_comment = ?",
        )
        .unwrap();
        let kinds: Vec<Tok> = toks.into_iter().map(|t| t.tok).collect();
        assert_eq!(kinds[1], Tok::Quoted("a b".into()));
        assert_eq!(kinds[3], Tok::Str("it's".into()));
        assert_eq!(kinds[5], Tok::Str("x\"y".into()));
        assert!(kinds.contains(&Tok::SysVar("version_comment".into())));
        assert_eq!(kinds.last(), Some(&Tok::Param));
    }

    #[test]
    fn create_primary_key_table_parses_types_and_properties() {
        let s = parse(
            "CREATE TABLE IF NOT EXISTS d.t (id BIGINT NOT NULL, v DECIMAL(10,2) NULL DEFAULT \"1.5\" COMMENT 'x', \
             tags ARRAY<VARCHAR(10)>, doc JSON) PRIMARY KEY(id) DISTRIBUTED BY HASH(id) BUCKETS 4 \
             PROPERTIES(\"replication_num\" = \"1\")",
        )
        .unwrap();
        let Statement::CreateTable(t) = s else {
            panic!("not a create table")
        };
        assert!(t.if_not_exists);
        assert_eq!(t.db.as_deref(), Some("d"));
        assert_eq!(t.columns.len(), 4);
        assert_eq!(
            t.columns[1].ty,
            SrType::Decimal {
                precision: 10,
                scale: 2
            }
        );
        assert_eq!(
            t.columns[2].ty,
            SrType::Array(Box::new(SrType::Varchar(10)))
        );
        assert_eq!(
            t.keys,
            Some((KeysType::PrimaryKeys, vec!["id".to_string()]))
        );
        assert_eq!(t.buckets, Some(4));
        assert_eq!(
            t.properties,
            vec![("replication_num".to_string(), "1".to_string())]
        );
    }

    #[test]
    fn add_column_if_not_exists_is_a_syntax_error() {
        let err = parse("ALTER TABLE t ADD COLUMN IF NOT EXISTS c INT").unwrap_err();
        assert_eq!(err.code, code::PARSE);
        assert!(
            err.message.contains("Unexpected input 'IF'"),
            "{}",
            err.message
        );
    }

    #[test]
    fn alter_accepts_several_add_columns() {
        let s = parse(
            "ALTER TABLE d.t ADD COLUMN a INT NULL DEFAULT \"0\", ADD COLUMN b STRING AFTER a",
        )
        .unwrap();
        let Statement::AlterAddColumns { columns, .. } = s else {
            panic!("not an alter")
        };
        assert_eq!(columns.len(), 2);
        assert_eq!(columns[1].position, Some(Position::After("a".into())));
    }

    #[test]
    fn modify_column_parses_definition_position_and_properties() {
        let s = parse(
            "ALTER TABLE app.t MODIFY COLUMN v VARCHAR(64) NULL DEFAULT \"x\" COMMENT 'c' AFTER id \
             PROPERTIES (\"timeout\" = \"10\"), MODIFY COLUMN n INT FIRST",
        )
        .unwrap();
        let Statement::AlterModifyColumns { db, table, columns } = s else {
            panic!("not a modify")
        };
        assert_eq!((db.as_deref(), table.as_str()), (Some("app"), "t"));
        assert_eq!(columns.len(), 2);
        let v = &columns[0];
        assert_eq!(v.column.ty, SrType::Varchar(64));
        assert!(v.column.nullable);
        assert_eq!(v.column.default, Some(DefaultValue::Literal("x".into())));
        assert_eq!(v.column.comment, "c");
        assert_eq!(v.position, Some(Position::After("id".into())));
        assert_eq!(columns[1].column.ty, SrType::Int);
        assert_eq!(columns[1].position, Some(Position::First));
    }

    #[test]
    fn modify_column_keeps_not_null_and_key() {
        let s = parse("ALTER TABLE t MODIFY COLUMN m INT NOT NULL").unwrap();
        let Statement::AlterModifyColumns { columns, .. } = s else {
            panic!("not a modify")
        };
        assert!(!columns[0].column.nullable);
        let s = parse("ALTER TABLE t MODIFY COLUMN k BIGINT KEY NOT NULL").unwrap();
        let Statement::AlterModifyColumns { columns, .. } = s else {
            panic!("not a modify")
        };
        assert!(columns[0].column.is_key);
    }

    #[test]
    fn modify_needs_column_keyword_and_a_type() {
        let no_type = parse("ALTER TABLE t MODIFY COLUMN v").unwrap_err();
        assert_eq!(no_type.code, code::PARSE, "{no_type:?}");
        let other = parse("ALTER TABLE t MODIFY PARTITION p SET (\"a\" = \"b\")").unwrap_err();
        assert_eq!(other.code, code::NOT_SUPPORTED, "{other:?}");
        let mixed = parse("ALTER TABLE t ADD COLUMN a INT, MODIFY COLUMN b INT").unwrap_err();
        assert_eq!(mixed.code, code::NOT_SUPPORTED, "{mixed:?}");
        let rollup = parse("ALTER TABLE t MODIFY COLUMN b INT FROM r").unwrap_err();
        assert_eq!(rollup.code, code::NOT_SUPPORTED, "{rollup:?}");
    }

    #[test]
    fn drop_column_clauses_parse_and_need_the_column_keyword() {
        let s = parse("ALTER TABLE d.t DROP COLUMN a, DROP COLUMN `b c`").unwrap();
        let Statement::AlterDropColumns { db, table, columns } = s else {
            panic!("not a drop")
        };
        assert_eq!((db.as_deref(), table.as_str()), (Some("d"), "t"));
        assert_eq!(columns, vec!["a".to_string(), "b c".to_string()]);
        let other = parse("ALTER TABLE t DROP PARTITION p").unwrap_err();
        assert_eq!(other.code, code::NOT_SUPPORTED, "{other:?}");
        let mixed = parse("ALTER TABLE t DROP COLUMN a, ADD COLUMN b INT").unwrap_err();
        assert_eq!(mixed.code, code::NOT_SUPPORTED, "{mixed:?}");
    }

    #[test]
    fn rename_column_keeps_the_to_keyword_for_the_version_check() {
        let s = parse("ALTER TABLE d.t RENAME COLUMN a TO `b`").unwrap();
        let Statement::AlterRenameColumn {
            from,
            to,
            to_keyword,
            new_name,
            ..
        } = s
        else {
            panic!("not a rename")
        };
        assert_eq!((from.as_str(), to.as_str()), ("a", "b"));
        assert_eq!(to_keyword.map(|t| t.pos), Some(32));
        assert_eq!(new_name.pos, 35);
        let bare = parse("ALTER TABLE t RENAME COLUMN a b").unwrap();
        assert!(matches!(
            bare,
            Statement::AlterRenameColumn {
                to_keyword: None,
                ..
            }
        ));
        let table = parse("ALTER TABLE t RENAME t2").unwrap_err();
        assert_eq!(table.code, code::NOT_SUPPORTED, "{table:?}");
    }

    #[test]
    fn insert_values_parses_literals() {
        let s = parse("INSERT INTO t (a, b) VALUES (1, 'x'), (-2, NULL)").unwrap();
        let Statement::Insert { rows, .. } = s else {
            panic!("not an insert")
        };
        assert_eq!(rows[1], vec![Literal::Text("-2".into()), Literal::Null]);
    }
}
