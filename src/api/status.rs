//! Maps domain errors to gRPC statuses, in one place.

use tonic::{Code, Status};

use crate::error::Error;

impl From<Error> for Status {
    fn from(e: Error) -> Status {
        let code = match &e {
            Error::InvalidArgument { .. } => Code::InvalidArgument,
            Error::AlreadyExists { .. } => Code::AlreadyExists,
            Error::NotFound { .. } => Code::NotFound,
            Error::FailedPrecondition(_) => Code::FailedPrecondition,
            Error::Unauthenticated(_) => Code::Unauthenticated,
            Error::PermissionDenied(_) => Code::PermissionDenied,
            Error::Aborted(_) => Code::Aborted,
            Error::Unavailable(_) => Code::Unavailable,
            Error::ResourceExhausted(_) => Code::ResourceExhausted,
            Error::DeadlineExceeded(_) => Code::DeadlineExceeded,
            Error::Internal(_) => Code::Internal,
        };
        if code == Code::Internal {
            tracing::error!(error = %e, "internal error");
        }
        Status::new(code, e.to_string())
    }
}
