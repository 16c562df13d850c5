//! Every refusal of a control call, and the one place where it becomes a gRPC status.
//!
//! A call that does not fit the job's state (Resume while running, Pause while paused) is
//! `FAILED_PRECONDITION`; a bad argument is `INVALID_ARGUMENT`. The messages say what to do.

use tonic::{Code, Status};

use crate::job::{ControlError, RunState};
use crate::replay::ReplayError;

/// Why a control call was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RpcError {
    /// The job refused the command.
    #[error(transparent)]
    Job(#[from] ControlError),
    /// `ReloadConfig` asked for another table list, which only a restart can apply.
    #[error(
        "the table list cannot change while running (running: {running}; requested: {requested}); \
         restart dbmazz with TABLES={requested}"
    )]
    TablesNeedRestart {
        /// The tables being replicated.
        running: String,
        /// The tables asked for.
        requested: String,
    },
    /// `ReloadConfig` named a table that is not a valid name.
    #[error("tables: {0}")]
    BadTables(#[from] crate::ident::TableListError),
    /// A dead-letter call failed.
    #[error(transparent)]
    Replay(#[from] crate::replay::ReplayError),
}

impl RpcError {
    /// The gRPC status code of this refusal.
    pub(crate) fn code(&self) -> Code {
        match self {
            RpcError::Job(ControlError::WrongState { .. }) => Code::FailedPrecondition,
            RpcError::Job(ControlError::InvalidArgument(_)) => Code::InvalidArgument,
            RpcError::Job(ControlError::DrainTimeout { .. }) => Code::DeadlineExceeded,
            RpcError::TablesNeedRestart { .. } => Code::FailedPrecondition,
            RpcError::BadTables(_) => Code::InvalidArgument,
            RpcError::Replay(e) => match e {
                ReplayError::NoStarRocks | ReplayError::NotReady => Code::FailedPrecondition,
                ReplayError::Invalid(_) => Code::InvalidArgument,
                ReplayError::StarRocks(_) | ReplayError::Source { .. } => Code::Unavailable,
            },
        }
    }
}

impl RpcError {
    /// What to do instead, for refusals where that is not obvious from the message.
    fn hint(&self) -> Option<&'static str> {
        let RpcError::Job(ControlError::WrongState { action, state }) = self else {
            return None;
        };
        Some(match (*action, state) {
            (_, RunState::Failed) => "the job failed: see HealthService/Check for what to do",
            (_, RunState::Stopped | RunState::Draining) => "the job is stopping",
            ("Pause", RunState::Paused) => "it is already paused",
            ("Pause", _) => "only a RUNNING job can be paused; retry once it streams",
            ("Resume", _) => "only a PAUSED job can be resumed",
            _ => return None,
        })
    }
}

impl From<RpcError> for Status {
    fn from(err: RpcError) -> Status {
        let message = match err.hint() {
            Some(hint) => format!("{err}; {hint}"),
            None => err.to_string(),
        };
        Status::new(err.code(), message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_state_is_a_failed_precondition_and_bad_values_invalid_arguments() {
        let s: Status = RpcError::from(ControlError::WrongState {
            action: "Resume",
            state: RunState::Running,
        })
        .into();
        assert_eq!(s.code(), Code::FailedPrecondition);
        assert!(s.message().contains("only a PAUSED job"), "{}", s.message());
        let s: Status = RpcError::from(ControlError::InvalidArgument("flush_size 0".into())).into();
        assert_eq!(s.code(), Code::InvalidArgument);
        let s: Status = RpcError::TablesNeedRestart {
            running: "orders".into(),
            requested: "orders,items".into(),
        }
        .into();
        assert_eq!(s.code(), Code::FailedPrecondition);
        assert!(
            s.message().contains("TABLES=orders,items"),
            "{}",
            s.message()
        );
    }
}
