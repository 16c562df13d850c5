//! Helpers shared by the integration tests.
//!
//! - [`pg`]: throw-away PostgreSQL clusters, one per test, started from a template made once.
//! - [`mariadb`]: throw-away MariaDB servers, one per test, started from a template made once.
//! - [`dbmazz`]: the real `dbmazz` binary as a child process.
//! - [`grpcurl`]: the real `grpcurl` binary, as operators script the control plane.
//! - [`tls_proxy`]: a TLS-terminating proxy in front of the double, for `https://` addresses.
//! - [`fault_proxy`]: a TCP proxy that black-holes, resets, slows or refuses on command.

#![allow(dead_code)] // each test file uses a different subset of the helpers

pub mod dbmazz;
pub mod fault_proxy;
pub mod grpcurl;
pub mod mariadb;
pub mod pg;
pub mod starrocks;
pub mod tls_proxy;
