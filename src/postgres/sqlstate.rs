//! SQLSTATE rules shared by every PostgreSQL connection we open.
//!
//! Both the replication client ([`super::replication`]) and the SQL connections of
//! [`super::tls::connect_sql`] must agree on which server errors are worth a reconnect. The rule
//! lives here, below both, so neither has to import the other to apply it.

/// Whether an error with this SQLSTATE may go away by itself, so that reconnecting is worth it.
pub fn is_transient(code: &str) -> bool {
    code.starts_with("08") // connection exception
        || code.starts_with("53") // insufficient resources: too many connections, disk full
        || matches!(
            code,
            "55006" // object in use: slot active for another walsender
                | "55P03" // lock not available
                | "57014" // query canceled
                | "57P01" // admin shutdown
                | "57P02" // crash shutdown
                | "57P03" // cannot connect now (starting up, recovery)
                | "57P05" // idle session timeout
                | "40001" // serialization failure
                | "40P01" // deadlock detected
                | "58030" // I/O error on the server
        )
}
