//! The domain error: what went wrong, in terms a caller can act on.
//!
//! Every layer below the gRPC surface returns [`Error`]; `api::status`
//! turns it into a `tonic::Status` in one place. Validation errors name the
//! field and the offending value.

use diesel::result::{DatabaseErrorKind, Error as DieselError};

/// Result with the domain error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A field has a value that is not allowed.
    #[error("invalid {field} {value:?}: {reason}")]
    InvalidArgument {
        /// The field, as named in the API.
        field: &'static str,
        /// The rejected value.
        value: String,
        /// Why it is rejected.
        reason: String,
    },
    /// The value of a unique field is already taken.
    #[error("{field} {value:?} already exists")]
    AlreadyExists {
        /// The field, as named in the API.
        field: &'static str,
        /// The value already taken.
        value: String,
    },
    /// The object looked up does not exist.
    #[error("no {what} with {field} {value}")]
    NotFound {
        /// The kind of object.
        what: &'static str,
        /// The field used to look it up.
        field: &'static str,
        /// The value looked up.
        value: String,
    },
    /// The object is in a state that forbids the operation (e.g. foreign).
    #[error("{0}")]
    FailedPrecondition(String),
    /// No valid credentials.
    #[error("{0}")]
    Unauthenticated(String),
    /// Valid credentials without the needed role.
    #[error("{0}")]
    PermissionDenied(String),
    /// The operation conflicts with one already running.
    #[error("{0}")]
    Aborted(String),
    /// A dependency (database, peer) cannot be reached.
    #[error("{0}")]
    Unavailable(String),
    /// A limit was reached: the caller's (concurrent streams per token), or
    /// a peer's (a dump larger than allowed).
    #[error("{0}")]
    ResourceExhausted(String),
    /// The caller took too long (a stream it did not read).
    #[error("{0}")]
    DeadlineExceeded(String),
    /// Anything else: a bug or a database failure.
    #[error("{0}")]
    Internal(String),
}

/// Characters of a value that an error quotes; a longer value is cut
/// there and marked, so that a huge input never comes back whole.
pub const QUOTED_CHARS: usize = 40;

/// `value` as an error quotes it: at most [`QUOTED_CHARS`] characters,
/// then `...` when it was longer.
pub fn quoted(value: &str) -> String {
    match value.char_indices().nth(QUOTED_CHARS) {
        Some((cut, _)) => format!("{}...", &value[..cut]),
        None => value.to_owned(),
    }
}

/// An error with its chain of sources, joined with `: ` ("transport
/// error: tcp connect error: Connection refused"): transport errors keep
/// the useful reason at the bottom. A source whose text is already shown
/// is left out.
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let more = e.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = e.source();
    }
    text
}

impl Error {
    /// An [`Error::InvalidArgument`] for `field` with `value` (quoted in
    /// part when long).
    pub fn invalid(field: &'static str, value: impl ToString, reason: impl Into<String>) -> Error {
        Error::InvalidArgument {
            field,
            value: quoted(&value.to_string()),
            reason: reason.into(),
        }
    }

    /// An [`Error::NotFound`] for the `what` whose `field` is `value`.
    pub fn not_found(what: &'static str, field: &'static str, value: impl ToString) -> Error {
        Error::NotFound {
            what,
            field,
            value: quoted(&value.to_string()),
        }
    }

    /// An [`Error::AlreadyExists`] for `field` with `value`.
    pub fn exists(field: &'static str, value: impl ToString) -> Error {
        Error::AlreadyExists {
            field,
            value: quoted(&value.to_string()),
        }
    }
}

impl From<DieselError> for Error {
    fn from(e: DieselError) -> Self {
        match &e {
            // Backstops for races past the explicit checks: the database's own
            // message names the table and column.
            DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, info) => {
                Error::AlreadyExists {
                    field: "unique field",
                    value: info.message().to_owned(),
                }
            }
            DieselError::DatabaseError(DatabaseErrorKind::ForeignKeyViolation, info) => {
                Error::FailedPrecondition(format!(
                    "reference to a missing object: {}",
                    info.message()
                ))
            }
            _ => Error::Internal(format!("database: {e}")),
        }
    }
}
