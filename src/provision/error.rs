//! Why a provisioning call was refused, and why the service could not start.
//!
//! [`ProvisionError`] is the answer every way in gives its caller: its text is what users read,
//! and [`ProvisionError::grpc_code`] / [`ProvisionError::http_status`] map it to each protocol,
//! so the gRPC, REST and CLI surfaces agree.

use std::path::PathBuf;

use super::job::SqlEngine;

/// Why a provisioning call was refused. [`ProvisionError::grpc_code`] and
/// [`ProvisionError::http_status`] give the status for each way in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProvisionError {
    /// Neither engine is configured.
    #[error(
        "schema provisioning is not enabled on this dbmazz: set PROVISION_POSTGRES_URL and/or \
         PROVISION_MYSQL_URL (and PROVISION_ROLE), then restart it"
    )]
    Disabled,
    /// The requested engine is not configured.
    #[error("{engine} provisioning is not enabled on this dbmazz: set {var} (and PROVISION_ROLE), then restart it")]
    EngineDisabled {
        /// The engine asked for.
        engine: SqlEngine,
        /// Its variable.
        var: &'static str,
    },
    /// A bad argument.
    #[error("{0}")]
    InvalidArgument(String),
    /// The call does not fit the current state (busy database, database exists, not created
    /// by dbmazz).
    #[error("{0}")]
    FailedPrecondition(String),
    /// The upload exceeds `SCHEMA_MAX_BYTES`.
    #[error("{0}")]
    TooLarge(String),
    /// `RATE_LIMIT_MAX` uploads were made within `RATE_LIMIT_WINDOW_MS`.
    #[error("rate limit: at most {max} uploads per {window_ms} ms per client (RATE_LIMIT_MAX, RATE_LIMIT_WINDOW_MS); retry in {retry_after_ms} ms")]
    RateLimited {
        /// `RATE_LIMIT_MAX`.
        max: u32,
        /// `RATE_LIMIT_WINDOW_MS`.
        window_ms: u64,
        /// When the window ends.
        retry_after_ms: u64,
    },
    /// An idempotency key was reused for a different request.
    #[error("{0}")]
    AlreadyExists(String),
    /// No such job.
    #[error("no schema job {0:?}; list them with SchemaService/ListJobs")]
    NotFound(String),
    /// The upload stream broke off.
    #[error("the upload was interrupted: {0}")]
    Interrupted(String),
    /// dbmazz itself failed (disk, store).
    #[error("{0}")]
    Internal(String),
}

impl ProvisionError {
    /// The gRPC status code.
    pub fn grpc_code(&self) -> tonic::Code {
        use tonic::Code;
        match self {
            ProvisionError::Disabled | ProvisionError::EngineDisabled { .. } => {
                Code::FailedPrecondition
            }
            ProvisionError::InvalidArgument(_) => Code::InvalidArgument,
            ProvisionError::FailedPrecondition(_) => Code::FailedPrecondition,
            ProvisionError::TooLarge(_) | ProvisionError::RateLimited { .. } => {
                Code::ResourceExhausted
            }
            ProvisionError::AlreadyExists(_) => Code::AlreadyExists,
            ProvisionError::NotFound(_) => Code::NotFound,
            ProvisionError::Interrupted(_) => Code::Cancelled,
            ProvisionError::Internal(_) => Code::Internal,
        }
    }

    /// The HTTP status for the REST way in.
    pub fn http_status(&self) -> u16 {
        match self {
            ProvisionError::Disabled | ProvisionError::EngineDisabled { .. } => 503,
            ProvisionError::InvalidArgument(_) | ProvisionError::Interrupted(_) => 400,
            ProvisionError::FailedPrecondition(_) | ProvisionError::AlreadyExists(_) => 409,
            ProvisionError::TooLarge(_) => 413,
            ProvisionError::RateLimited { .. } => 429,
            ProvisionError::NotFound(_) => 404,
            ProvisionError::Internal(_) => 500,
        }
    }
}

impl From<ProvisionError> for tonic::Status {
    fn from(e: ProvisionError) -> tonic::Status {
        tonic::Status::new(e.grpc_code(), e.to_string())
    }
}

/// The engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A directory could not be created or read.
    #[error("{var}: cannot use {path}: {source}")]
    Dir {
        /// The variable naming it.
        var: &'static str,
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}
