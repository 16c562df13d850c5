//! The SQL guard: refuses statements that reach outside the database dbmazz created.
//!
//! An uploaded schema runs inside a fresh database, as a non-superuser role where the engine
//! allows it. The guard is a second, friendlier line: it refuses, before anything is executed,
//! the statements that would touch other databases, roles, server settings, server files or
//! replication, and names the line and the rule, so a user learns what to remove from the file.
//!
//! It works on tokens ([`super::lexer`]), never on substrings: words inside string literals,
//! quoted identifiers, dollar-quoted bodies and comments are not keywords, while MySQL's
//! executable comments (`/*! … */`) are code and are checked.
//!
//! What it does **not** catch, by design: SQL built at run time (`EXECUTE 'DROP …'` in a
//! PL/pgSQL body, `PREPARE` from a string in MySQL), statements inside function bodies (they are
//! string data until called), privileges granted by extensions, and anything a trusted function
//! does on the caller's behalf. The database role the schema runs as is the real boundary; the
//! guard only makes the common mistakes and the obvious attacks fail early and clearly. Some
//! patterns are matched anywhere in a statement (so `CREATE DATABASE` inside a MySQL procedure
//! body is refused); an unquoted column named like a keyword can then be refused too (for
//! example `ALTER TABLE t DROP database`): quote it.

use std::collections::VecDeque;
use std::fmt;

use super::lexer::{Dialect, Token, Tokens};

/// A statement the guard refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuardViolation {
    /// 1-based line where the statement starts.
    pub line: u64,
    /// Stable kebab-case rule name (`create-database`, `role-ddl`, …), or `forbidden-keyword`
    /// for the words listed in `SCHEMA_FORBIDDEN_KEYWORDS`.
    pub rule: String,
    /// Why the rule exists, or which configured keyword matched.
    pub reason: String,
    /// The statement's first ~80 characters on one line.
    pub statement: String,
}

impl fmt::Display for GuardViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {}: statement {:?} is refused (rule {}: {})",
            self.line, self.statement, self.rule, self.reason
        )
    }
}

impl std::error::Error for GuardViolation {}

/// One default rule: its name and why it exists.
#[derive(Clone, Copy, Debug)]
struct Rule {
    name: &'static str,
    reason: &'static str,
}

const CREATE_DATABASE: Rule = Rule {
    name: "create-database",
    reason: "uploads run inside the database dbmazz created for them",
};
const ALTER_DATABASE: Rule = Rule {
    name: "alter-database",
    reason: "database-level settings are dbmazz's to manage, not the upload's",
};
const DROP_DATABASE: Rule = Rule {
    name: "drop-database",
    reason: "uploads run inside the database dbmazz created for them; use DropDatabase",
};
const USE_DATABASE: Rule = Rule {
    name: "use-database",
    reason: "uploads run inside the database dbmazz created for them",
};
const ALTER_SYSTEM: Rule = Rule {
    name: "alter-system",
    reason: "server-wide settings are not part of a schema",
};
const ROLE_DDL: Rule = Rule {
    name: "role-ddl",
    reason: "roles, users and their memberships are managed outside schema uploads",
};
const COPY_PROGRAM: Rule = Rule {
    name: "copy-program",
    reason: "COPY may only read FROM STDIN (pg_dump's data blocks), never run a program",
};
const COPY_SERVER_FILE: Rule = Rule {
    name: "copy-server-file",
    reason: "COPY may only use STDIN/STDOUT, never files on the database server",
};
const SET_ROLE: Rule = Rule {
    name: "set-role",
    reason: "the upload runs as the role dbmazz chose and cannot switch to another",
};
const SESSION_AUTHORIZATION: Rule = Rule {
    name: "session-authorization",
    reason: "the upload runs as the role dbmazz chose and cannot switch to another",
};
const LOAD: Rule = Rule {
    name: "load",
    reason: "loading server libraries or server/client files is not part of a schema",
};
const PUBLICATION: Rule = Rule {
    name: "publication",
    reason: "replication publications are managed by dbmazz, not by uploads",
};
const SUBSCRIPTION: Rule = Rule {
    name: "subscription",
    reason: "subscriptions connect to other servers and are not part of a schema",
};
const SERVER_FILE_FUNCTION: Rule = Rule {
    name: "server-file-function",
    reason: "functions that read or write files on the database server are not allowed",
};
const SELECT_INTO_FILE: Rule = Rule {
    name: "select-into-file",
    reason: "writing files on the database server is not allowed",
};

/// Functions that read, list or write server files (PostgreSQL and MySQL).
const SERVER_FILE_FUNCTIONS: &[&str] = &[
    "pg_read_file",
    "pg_read_binary_file",
    "pg_ls_dir",
    "pg_stat_file",
    "pg_ls_logdir",
    "pg_ls_waldir",
    "pg_ls_tmpdir",
    "pg_ls_archive_statusdir",
    "pg_file_write",
    "pg_file_rename",
    "pg_file_unlink",
    "lo_import",
    "lo_export",
    "load_file",
];

/// The words that can complete a default rule; any other word cannot, which keeps the guard
/// cheap on the many `NULL`s and names of a big INSERT.
const PATTERN_ENDS: &[&str] = &[
    "database",
    "schema",
    "role",
    "user",
    "group",
    "publication",
    "subscription",
    "system",
    "owned",
    "outfile",
    "dumpfile",
    "data",
    "xml",
    "authorization",
    "session_authorization",
    "password",
    "global",
    "persist",
    "persist_only",
    "on",
    "load",
    "use",
];

fn is_pattern_end(token: Token<'_>) -> bool {
    match token {
        Token::Word(w) | Token::QuotedIdent(w) => {
            PATTERN_ENDS.iter().any(|p| w.eq_ignore_ascii_case(p))
        }
        _ => false,
    }
}

/// How many recent tokens the pattern matcher looks back over (default patterns need 3).
const DEFAULT_WINDOW: usize = 3;

/// Checks statements against the default rules and the configured extra keywords.
#[derive(Clone, Debug)]
pub struct Guard {
    dialect: Dialect,
    /// Extra phrases: the phrase as configured (for messages) and its lowercase words.
    extra: Vec<(String, Vec<String>)>,
    window: usize,
}

impl Guard {
    /// A guard for `dialect` with the default rules plus `extra_forbidden`: words or phrases
    /// (`"TRUNCATE"`, `"DROP TABLE"`) matched case-insensitively as consecutive unquoted words
    /// anywhere in a statement. Blank entries are ignored.
    pub fn new(dialect: Dialect, extra_forbidden: &[String]) -> Self {
        let extra: Vec<(String, Vec<String>)> = extra_forbidden
            .iter()
            .map(|phrase| {
                let words: Vec<String> = phrase
                    .split_whitespace()
                    .map(str::to_ascii_lowercase)
                    .collect();
                (words.join(" ").to_ascii_uppercase(), words)
            })
            .filter(|(_, words)| !words.is_empty())
            .collect();
        let window = extra
            .iter()
            .map(|(_, words)| words.len())
            .max()
            .unwrap_or(0)
            .max(DEFAULT_WINDOW);
        Guard {
            dialect,
            extra,
            window,
        }
    }

    /// Parse `SCHEMA_FORBIDDEN_KEYWORDS`-style text: comma-separated words or phrases.
    pub fn parse_keywords(list: &str) -> Vec<String> {
        list.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// Check one statement (as produced by the splitter) that starts on `line`.
    pub fn check(&self, sql: &str, line: u64) -> Result<(), GuardViolation> {
        self.check_inner(sql)
            .map_err(|(rule, reason)| GuardViolation {
                line,
                rule,
                reason,
                statement: preview(sql),
            })
    }

    fn check_inner(&self, sql: &str) -> Result<(), Refusal> {
        let mut scan = Scan::new(self);
        for token in Tokens::new(sql, self.dialect) {
            scan.token(token)?;
        }
        scan.finish()
    }
}

/// A refusal: the rule's name and its reason.
type Refusal = (String, String);

fn refuse(rule: Rule) -> Result<(), Refusal> {
    Err((rule.name.to_owned(), rule.reason.to_owned()))
}

/// The guard's walk over one statement's tokens: each token is checked against the rules in a
/// fixed order, the first rule that matches refuses the statement.
struct Scan<'g, 'a> {
    guard: &'g Guard,
    mysql: bool,
    /// The last `guard.window` tokens.
    recent: VecDeque<Token<'a>>,
    first: Option<Token<'a>>,
    /// 1-based index of the current token.
    index: usize,
    /// COPY: parenthesis depth, and whether the previous token was FROM/TO at depth 0.
    depth: i32,
    copy_target_next: bool,
    copy_checked: bool,
    /// GRANT/REVOKE without ON grant role membership.
    saw_on: bool,
    /// set_config( 'role' …): 1 after the name, 2 after the parenthesis, 3 after the setting.
    set_config: u8,
}

impl<'g, 'a> Scan<'g, 'a> {
    fn new(guard: &'g Guard) -> Self {
        Scan {
            guard,
            mysql: guard.dialect == Dialect::MySql,
            recent: VecDeque::with_capacity(guard.window + 1),
            first: None,
            index: 0,
            depth: 0,
            copy_target_next: false,
            copy_checked: false,
            saw_on: false,
            set_config: 0,
        }
    }

    fn starts(&self, keyword: &str) -> bool {
        self.first.is_some_and(|t| t.is_word(keyword))
    }

    fn ends(&self, pattern: &[&str]) -> bool {
        ends_with(&self.recent, pattern)
    }

    fn token(&mut self, token: Token<'a>) -> Result<(), Refusal> {
        self.index += 1;
        if self.recent.len() == self.guard.window {
            self.recent.pop_front();
        }
        self.recent.push_back(token);
        self.first.get_or_insert(token);

        self.server_file_function(token)?;
        self.set_config(token)?;
        // Everything below the COPY and set_config state machines matches words: literals,
        // numbers and punctuation (most of a big INSERT) cannot complete a pattern.
        let is_name = matches!(token, Token::Word(_) | Token::QuotedIdent(_));
        if !self.mysql && self.starts("copy") && !self.copy_checked {
            self.copy_target(token)?;
        }
        if !is_name || (self.guard.extra.is_empty() && !is_pattern_end(token)) {
            return Ok(());
        }
        self.object_ddl()?;
        self.set_statement(token)?;
        // Whole-statement rules decided by the first word.
        if self.index == 1 {
            if token.is_word("load") {
                return refuse(LOAD);
            }
            if self.mysql && token.is_word("use") {
                return refuse(USE_DATABASE);
            }
        }
        if self.starts("grant") || self.starts("revoke") {
            self.saw_on |= token.is_word("on");
        }
        for (phrase, words) in &self.guard.extra {
            if ends_with(&self.recent, words) {
                return Err((
                    "forbidden-keyword".to_owned(),
                    format!("{phrase} is listed in SCHEMA_FORBIDDEN_KEYWORDS"),
                ));
            }
        }
        Ok(())
    }

    /// Server-file functions, by bare or quoted name (PostgreSQL quoted names are exact).
    fn server_file_function(&self, token: Token<'a>) -> Result<(), Refusal> {
        let file_function = match token {
            Token::Word(w) => SERVER_FILE_FUNCTIONS
                .iter()
                .any(|f| w.eq_ignore_ascii_case(f)),
            Token::QuotedIdent(q) if self.mysql => SERVER_FILE_FUNCTIONS
                .iter()
                .any(|f| q.eq_ignore_ascii_case(f)),
            Token::QuotedIdent(q) => SERVER_FILE_FUNCTIONS.contains(&q),
            _ => false,
        };
        if file_function {
            return refuse(SERVER_FILE_FUNCTION);
        }
        Ok(())
    }

    /// set_config('role', …) is SET ROLE in function form.
    fn set_config(&mut self, token: Token<'a>) -> Result<(), Refusal> {
        match (self.set_config, token) {
            (_, Token::Word(w)) if w.eq_ignore_ascii_case("set_config") => self.set_config = 1,
            (1, Token::Punct(b'(')) => self.set_config = 2,
            (2, Token::Str(setting)) => {
                let setting = setting.trim().to_ascii_lowercase();
                let plain = setting
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'.');
                if !plain || setting == "role" {
                    return refuse(SET_ROLE);
                }
                if setting == "session_authorization" {
                    return refuse(SESSION_AUTHORIZATION);
                }
                self.set_config = 3;
            }
            // The setting name must be one plain literal, not an expression.
            (3, Token::Punct(b',')) => self.set_config = 0,
            (2 | 3, _) => return refuse(SET_ROLE),
            _ => self.set_config = 0,
        }
        Ok(())
    }

    /// The target after COPY's FROM or TO (at parenthesis depth 0): only STDIN or STDOUT.
    fn copy_target(&mut self, token: Token<'a>) -> Result<(), Refusal> {
        match token {
            Token::Punct(b'(') => self.depth += 1,
            Token::Punct(b')') => self.depth -= 1,
            _ => {}
        }
        if self.copy_target_next {
            self.copy_checked = true;
            if token.is_word("program") {
                return refuse(COPY_PROGRAM);
            }
            if !(token.is_word("stdin") || token.is_word("stdout")) {
                return refuse(COPY_SERVER_FILE);
            }
        }
        self.copy_target_next =
            self.index > 1 && self.depth == 0 && (token.is_word("from") || token.is_word("to"));
        Ok(())
    }

    /// DDL on databases, roles, publications, subscriptions, the system, server files.
    fn object_ddl(&self) -> Result<(), Refusal> {
        let mysql = self.mysql;
        for verb in ["create", "alter", "drop"] {
            let (database, role) = (
                self.ends(&[verb, "database"]) || (mysql && self.ends(&[verb, "schema"])),
                self.ends(&[verb, "role"])
                    || self.ends(&[verb, "user"])
                    || self.ends(&[verb, "group"]),
            );
            if database {
                return refuse(match verb {
                    "create" => CREATE_DATABASE,
                    "alter" => ALTER_DATABASE,
                    _ => DROP_DATABASE,
                });
            }
            if role {
                return refuse(ROLE_DDL);
            }
            if self.ends(&[verb, "publication"]) {
                return refuse(PUBLICATION);
            }
            if self.ends(&[verb, "subscription"]) {
                return refuse(SUBSCRIPTION);
            }
        }
        if self.ends(&["alter", "system"]) {
            return refuse(ALTER_SYSTEM);
        }
        if self.ends(&["rename", "user"])
            || self.ends(&["drop", "owned"])
            || self.ends(&["reassign", "owned"])
            || self.ends(&["default", "role"]) && self.starts("set")
        {
            return refuse(ROLE_DDL);
        }
        if mysql && (self.ends(&["into", "outfile"]) || self.ends(&["into", "dumpfile"])) {
            return refuse(SELECT_INTO_FILE);
        }
        if mysql && (self.ends(&["load", "data"]) || self.ends(&["load", "xml"])) {
            return refuse(LOAD);
        }
        Ok(())
    }

    /// SET / RESET statements: ROLE, SESSION AUTHORIZATION, PASSWORD, MySQL globals.
    fn set_statement(&self, token: Token<'a>) -> Result<(), Refusal> {
        if !(self.starts("set") || self.starts("reset")) {
            return Ok(());
        }
        let recent = &self.recent;
        let head = self.index <= 3;
        let role_word = token.is_word("role")
            || matches!(token, Token::QuotedIdent(q) if q.eq_ignore_ascii_case("role"));
        let after_set = recent.len() >= 2
            && ["set", "reset", "session", "local"]
                .iter()
                .any(|w| recent[recent.len() - 2].is_word(w));
        if head && role_word && after_set {
            return refuse(SET_ROLE);
        }
        if self.ends(&["session", "authorization"])
            || (head && token.is_word("session_authorization"))
        {
            return refuse(SESSION_AUTHORIZATION);
        }
        if self.mysql && self.starts("set") {
            if self.ends(&["set", "password"]) {
                return refuse(ROLE_DDL);
            }
            // `GLOBAL x`, `@@global.x`, but not the user variable `@global`.
            let n = recent.len();
            let user_variable = n >= 2
                && recent[n - 2] == Token::Punct(b'@')
                && (n < 3 || recent[n - 3] != Token::Punct(b'@'));
            let global = ["global", "persist", "persist_only"]
                .iter()
                .any(|g| token.is_word(g));
            if global && !user_variable {
                return refuse(ALTER_SYSTEM);
            }
        }
        Ok(())
    }

    /// The rules that need the whole statement.
    fn finish(self) -> Result<(), Refusal> {
        if (self.first).is_some_and(|t| t.is_word("grant") || t.is_word("revoke")) && !self.saw_on {
            return refuse(ROLE_DDL);
        }
        if !self.mysql && self.starts("copy") && !self.copy_checked {
            return refuse(COPY_SERVER_FILE);
        }
        Ok(())
    }
}

/// Whether the most recent tokens are the unquoted words of `pattern`.
fn ends_with<S: AsRef<str>>(recent: &VecDeque<Token<'_>>, pattern: &[S]) -> bool {
    pattern.len() <= recent.len()
        && recent
            .iter()
            .skip(recent.len() - pattern.len())
            .zip(pattern)
            .all(|(token, word)| token.is_word(word.as_ref()))
}

/// The statement's first ~80 characters, whitespace runs collapsed to one space.
fn preview(sql: &str) -> String {
    const MAX: usize = 80;
    let mut out = String::new();
    for (n, word) in sql.split_whitespace().enumerate() {
        if n > 0 {
            out.push(' ');
        }
        out.push_str(word);
        if out.chars().count() > MAX {
            break;
        }
    }
    if out.chars().count() > MAX {
        out = out.chars().take(MAX).collect::<String>() + "…";
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pg() -> Guard {
        Guard::new(Dialect::Postgres, &[])
    }

    fn my() -> Guard {
        Guard::new(Dialect::MySql, &[])
    }

    fn refused(guard: &Guard, sql: &str) -> String {
        match guard.check(sql, 42) {
            Ok(()) => panic!("{sql:?} must be refused"),
            Err(v) => {
                assert_eq!(v.line, 42);
                v.rule
            }
        }
    }

    fn allowed(guard: &Guard, sql: &str) {
        if let Err(v) = guard.check(sql, 1) {
            panic!("{sql:?} must pass: {v}");
        }
    }

    #[test]
    fn each_default_rule_refuses_with_its_name() {
        let pg_cases = [
            ("CREATE DATABASE x", "create-database"),
            (
                "create database \"x\" template template0",
                "create-database",
            ),
            ("ALTER DATABASE x SET work_mem = '1GB'", "alter-database"),
            ("DROP DATABASE IF EXISTS x", "drop-database"),
            ("ALTER SYSTEM SET fsync = off", "alter-system"),
            ("CREATE ROLE admin SUPERUSER", "role-ddl"),
            ("CREATE USER u PASSWORD 'p'", "role-ddl"),
            ("ALTER ROLE app SUPERUSER", "role-ddl"),
            ("ALTER USER app WITH PASSWORD 'x'", "role-ddl"),
            ("DROP ROLE app", "role-ddl"),
            ("CREATE GROUP g", "role-ddl"),
            ("DROP OWNED BY app", "role-ddl"),
            ("REASSIGN OWNED BY app TO postgres", "role-ddl"),
            ("GRANT pg_read_server_files TO app", "role-ddl"),
            ("REVOKE admin FROM app", "role-ddl"),
            ("COPY t FROM PROGRAM 'id'", "copy-program"),
            ("COPY (SELECT 1) TO PROGRAM 'curl x'", "copy-program"),
            ("COPY t FROM '/etc/passwd'", "copy-server-file"),
            ("COPY t TO '/tmp/x' WITH (FORMAT csv)", "copy-server-file"),
            ("SET ROLE postgres", "set-role"),
            ("SET LOCAL ROLE postgres", "set-role"),
            ("SET SESSION ROLE postgres", "set-role"),
            ("set role = 'postgres'", "set-role"),
            ("SET \"role\" TO postgres", "set-role"),
            ("RESET ROLE", "set-role"),
            ("SELECT set_config('role', 'postgres', false)", "set-role"),
            (
                "SELECT pg_catalog.set_config('ro' || 'le', 'postgres', false)",
                "set-role",
            ),
            (
                "SELECT set_config(E'\\x72ole', 'postgres', false)",
                "set-role",
            ),
            (
                "SET SESSION AUTHORIZATION postgres",
                "session-authorization",
            ),
            (
                "SET LOCAL SESSION AUTHORIZATION postgres",
                "session-authorization",
            ),
            ("RESET SESSION AUTHORIZATION", "session-authorization"),
            ("LOAD 'auto_explain'", "load"),
            ("CREATE PUBLICATION p FOR ALL TABLES", "publication"),
            ("ALTER PUBLICATION p ADD TABLE t", "publication"),
            ("DROP PUBLICATION p", "publication"),
            (
                "CREATE SUBSCRIPTION s CONNECTION 'host=x' PUBLICATION p",
                "subscription",
            ),
            ("DROP SUBSCRIPTION s", "subscription"),
            ("SELECT pg_read_file('/etc/passwd')", "server-file-function"),
            (
                "SELECT pg_catalog.pg_read_binary_file('x')",
                "server-file-function",
            ),
            ("SELECT * FROM pg_ls_dir('.')", "server-file-function"),
            ("SELECT lo_import('/etc/passwd')", "server-file-function"),
            ("SELECT lo_export(1, '/tmp/x')", "server-file-function"),
            (
                "SELECT \"pg_read_file\"('/etc/passwd')",
                "server-file-function",
            ),
        ];
        for (sql, rule) in pg_cases {
            assert_eq!(refused(&pg(), sql), rule, "{sql}");
        }
        let my_cases = [
            ("CREATE DATABASE x", "create-database"),
            ("CREATE SCHEMA x", "create-database"),
            (
                "CREATE DATABASE /*!32312 IF NOT EXISTS*/ `x`",
                "create-database",
            ),
            ("ALTER SCHEMA x READ ONLY = 1", "alter-database"),
            ("DROP SCHEMA x", "drop-database"),
            ("/*!40000 DROP DATABASE x */", "drop-database"),
            ("USE other", "use-database"),
            ("CREATE USER 'u'@'%' IDENTIFIED BY 'p'", "role-ddl"),
            ("RENAME USER a TO b", "role-ddl"),
            ("SET PASSWORD FOR root = 'x'", "role-ddl"),
            ("DROP USER root", "role-ddl"),
            ("GRANT admin TO app", "role-ddl"),
            ("SET DEFAULT ROLE ALL TO app", "role-ddl"),
            ("SET ROLE admin", "set-role"),
            ("SET GLOBAL max_connections = 1", "alter-system"),
            ("SET PERSIST max_connections = 1", "alter-system"),
            ("SET @@global.max_connections = 1", "alter-system"),
            (
                "SET @@GLOBAL.GTID_PURGED=/*!80000 '+'*/ 'x'",
                "alter-system",
            ),
            ("LOAD DATA INFILE '/etc/passwd' INTO TABLE t", "load"),
            ("LOAD DATA LOCAL INFILE 'x' INTO TABLE t", "load"),
            ("LOAD XML INFILE 'x' INTO TABLE t", "load"),
            ("SELECT LOAD_FILE('/etc/passwd')", "server-file-function"),
            ("SELECT * FROM t INTO OUTFILE '/tmp/x'", "select-into-file"),
            ("SELECT 1 INTO DUMPFILE '/tmp/x'", "select-into-file"),
            (
                "SELECT 1 /*M!100000 , LOAD_FILE('/etc/passwd') */",
                "server-file-function",
            ),
            (
                "CREATE PROCEDURE p() BEGIN DROP DATABASE other; END",
                "drop-database",
            ),
        ];
        for (sql, rule) in my_cases {
            assert_eq!(refused(&my(), sql), rule, "{sql}");
        }
    }

    #[test]
    fn keywords_inside_literals_identifiers_and_comments_are_allowed() {
        for sql in [
            "SELECT 'CREATE DATABASE x; DROP ROLE y'",
            "SELECT E'ALTER SYSTEM\\' SET'",
            "COMMENT ON TABLE t IS 'COPY t FROM PROGRAM ''id'''",
            "CREATE TABLE \"drop database\" (\"create role\" int, \"load\" int)",
            "CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $$ BEGIN EXECUTE 'x'; \
             DROP DATABASE y; END $$",
            "SELECT 1 /* CREATE DATABASE /* nested DROP ROLE */ LOAD */ -- SET ROLE x\n",
            "UPDATE users SET role = 'admin'",
            "SELECT $tag$ SET SESSION AUTHORIZATION x $tag$",
        ] {
            allowed(&pg(), sql);
        }
        for sql in [
            "SELECT 'CREATE DATABASE x', \"DROP USER y\"",
            "CREATE TABLE `create database` (`load` int)",
            "SELECT 1 # DROP DATABASE x\n",
            "SELECT 1 -- LOAD DATA INFILE\n",
            "SELECT 1 /* SET GLOBAL x=1 */",
            "SET @global = 1",
            "SET @role = 'x'",
            "INSERT INTO t VALUES ('it\\'s DROP DATABASE x')",
        ] {
            allowed(&my(), sql);
        }
    }

    #[test]
    fn pg_dump_and_mysqldump_boilerplate_passes() {
        for sql in [
            "SET statement_timeout = 0",
            "SET client_encoding = 'UTF8'",
            "SELECT pg_catalog.set_config('search_path', '', false)",
            "CREATE SCHEMA audit",
            "ALTER SCHEMA audit OWNER TO postgres",
            "ALTER TABLE public.t OWNER TO app",
            "GRANT SELECT ON TABLE public.t TO reader",
            "REVOKE ALL ON SCHEMA public FROM PUBLIC",
            "ALTER DEFAULT PRIVILEGES FOR ROLE app IN SCHEMA public GRANT SELECT ON TABLES TO r",
            "COPY public.t (a, b) FROM stdin",
            "COPY (SELECT a FROM t) TO STDOUT",
            "COMMENT ON COLUMN t.a IS 'x'",
            "SELECT pg_catalog.setval('public.t_id_seq', 5, true)",
            "CREATE TRIGGER tr BEFORE UPDATE ON t FOR EACH ROW EXECUTE FUNCTION f()",
        ] {
            allowed(&pg(), sql);
        }
        for sql in [
            "/*!40101 SET @OLD_CHARACTER_SET_CLIENT=@@CHARACTER_SET_CLIENT */",
            "/*!40014 SET @OLD_UNIQUE_CHECKS=@@UNIQUE_CHECKS, UNIQUE_CHECKS=0 */",
            "/*!50503 SET NAMES utf8mb4 */",
            "LOCK TABLES `t` WRITE",
            "UNLOCK TABLES",
            "/*!40000 ALTER TABLE `t` DISABLE KEYS */",
            "DROP TABLE IF EXISTS `t`",
            "/*!50003 CREATE*/ /*!50017 DEFINER=`root`@`localhost`*/ /*!50003 TRIGGER tr \
             AFTER INSERT ON t FOR EACH ROW BEGIN UPDATE c SET n = n + 1; END */",
            "GRANT SELECT ON shop.* TO 'r'@'%'",
        ] {
            allowed(&my(), sql);
        }
    }

    #[test]
    fn extra_keywords_match_consecutive_words_case_insensitively() {
        let list = Guard::parse_keywords(" TRUNCATE, drop   table ,, ");
        assert_eq!(list, ["TRUNCATE", "drop   table"]);
        let guard = Guard::new(Dialect::Postgres, &list);
        let v = guard.check("truncate t", 7).unwrap_err();
        assert_eq!((v.line, v.rule.as_str()), (7, "forbidden-keyword"));
        assert_eq!(
            v.to_string(),
            "line 7: statement \"truncate t\" is refused (rule forbidden-keyword: TRUNCATE is \
             listed in SCHEMA_FORBIDDEN_KEYWORDS)"
        );
        assert!(guard.check("DROP  /* x */ TABLE t", 1).is_err());
        guard.check("DROP INDEX t", 1).unwrap();
        guard.check("SELECT 'drop table'", 1).unwrap();
        guard.check("DROP \"table\"", 1).unwrap();
    }

    #[test]
    fn violation_message_names_line_statement_and_rule() {
        let v = pg().check("CREATE   DATABASE\n  x", 42).unwrap_err();
        assert_eq!(
            v.to_string(),
            "line 42: statement \"CREATE DATABASE x\" is refused (rule create-database: uploads \
             run inside the database dbmazz created for them)"
        );
        let long = format!("SELECT pg_read_file('{}')", "x".repeat(500));
        let v = pg().check(&long, 1).unwrap_err();
        assert!(v.statement.chars().count() <= 81, "{}", v.statement);
    }
}
