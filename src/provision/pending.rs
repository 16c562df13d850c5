//! Placeholder for the parsing modules that land from the `schema-split` branch (`split`,
//! `guard`, `names`): the same public API, so that the engine compiles against it before they
//! arrive. Replaced by the real modules at the merge; nothing here is meant to run.

/// The statement splitter's API.
pub mod split {
    use bytes::Bytes;

    /// Which SQL dialect the file is written in.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Dialect {
        /// PostgreSQL (`pg_dump`).
        Postgres,
        /// MySQL / MariaDB (`mysqldump`).
        MySql,
    }

    /// One piece of the file.
    #[derive(Debug)]
    pub enum Piece {
        /// A statement.
        Statement {
            /// Its text.
            sql: String,
            /// First line (1-based).
            line: u64,
            /// File offset just past it.
            end: u64,
            /// Whether it is `COPY … FROM stdin`.
            copy_from_stdin: bool,
        },
        /// Rows of a COPY.
        CopyData {
            /// Raw bytes.
            data: Bytes,
            /// File offset just past them.
            end: u64,
        },
        /// The `\.` ending a COPY.
        CopyEnd {
            /// Its line.
            line: u64,
            /// File offset just past it.
            end: u64,
        },
        /// A skipped meta line.
        Meta {
            /// Its text.
            text: String,
            /// Its line.
            line: u64,
            /// File offset just past it.
            end: u64,
        },
    }

    /// The file cannot be split.
    #[derive(Debug, thiserror::Error)]
    #[error("line {line}: {message}")]
    pub struct SplitError {
        /// Where.
        pub line: u64,
        /// What.
        pub message: String,
    }

    /// Streaming splitter.
    pub struct Splitter {
        _dialect: Dialect,
    }

    impl Splitter {
        /// A splitter for `dialect`.
        pub fn new(dialect: Dialect) -> Splitter {
            Splitter { _dialect: dialect }
        }

        /// Feeds the next bytes.
        pub fn feed(&mut self, _chunk: &[u8], _out: &mut Vec<Piece>) -> Result<(), SplitError> {
            unimplemented!("the splitter lands from the schema-split branch")
        }

        /// Ends the input.
        pub fn finish(&mut self, _out: &mut Vec<Piece>) -> Result<(), SplitError> {
            unimplemented!("the splitter lands from the schema-split branch")
        }
    }
}

/// The SQL guard's API.
pub mod guard {
    use super::split::Dialect;

    /// A refused statement.
    #[derive(Debug, thiserror::Error)]
    #[error("line {line}: {rule}: {statement}")]
    pub struct GuardViolation {
        /// Line of the statement.
        pub line: u64,
        /// The rule.
        pub rule: String,
        /// Why.
        pub reason: String,
        /// The statement (shortened).
        pub statement: String,
    }

    /// The guard.
    pub struct Guard;

    impl Guard {
        /// A guard for `dialect` plus extra forbidden keywords.
        pub fn new(_dialect: Dialect, _extra_forbidden: &[String]) -> Guard {
            Guard
        }

        /// Checks one statement.
        pub fn check(&self, _sql: &str, _line: u64) -> Result<(), GuardViolation> {
            unimplemented!("the guard lands from the schema-split branch")
        }
    }
}

/// Database-name rules.
pub mod names {
    /// A refused name.
    #[derive(Debug, thiserror::Error)]
    #[error("{0}")]
    pub struct NameError(pub String);

    /// Checks a database name.
    pub fn validate_database_name<S: AsRef<str>>(_name: &str, _reserved: &[S]) -> Result<(), NameError> {
        unimplemented!("names lands from the schema-split branch")
    }

    /// `"name"`.
    pub fn quote_ident_pg(_name: &str) -> String {
        unimplemented!("names lands from the schema-split branch")
    }

    /// `` `name` ``.
    pub fn quote_ident_mysql(_name: &str) -> String {
        unimplemented!("names lands from the schema-split branch")
    }
}
