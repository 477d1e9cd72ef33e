//! The driver's failures, classified by the server's error codes and the driver's error kinds
//! into [`elect_core::Error`].

use elect_core::Error;

/// How errors and logs name this coordinator.
pub(crate) const STORE: &str = "mongo";

/// The server's error code, where the driver error carries one.
pub(crate) fn code(e: &mongodb::error::Error) -> Option<i32> {
    use mongodb::error::{ErrorKind as K, WriteFailure};
    match &*e.kind {
        K::Command(c) => Some(c.code),
        K::Write(WriteFailure::WriteError(w)) => Some(w.code),
        _ => None,
    }
}

/// Whether `e` came from a duplicate-key error (code 11000), by the driver error's code.
pub(crate) fn is_duplicate_key(e: &Error) -> bool {
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<mongodb::error::Error>())
        .is_some_and(|e| code(e) == Some(11000))
}

/// Maps a driver error by what it means for the caller. (The driver keeps `Error::code()`
/// private, so the code is read from the error kind.)
pub(crate) fn map_err(operation: &'static str, e: mongodb::error::Error) -> Error {
    use mongodb::error::{ErrorKind as K, WriteFailure};
    const TRANSIENT: &[i32] = &[
        6, 7, 50, 89, 91, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436,
    ];
    // Server selection reports the handshake's failure only in its message.
    if let Some(refused) = elect_core::backend::tls_refusal(STORE, &e.to_string()) {
        return refused;
    }
    let code = code(&e);
    let transient = e.contains_label("RetryableWriteError")
        || e.contains_label("TransientTransactionError")
        || code.is_some_and(|c| TRANSIENT.contains(&c))
        || matches!(
            &*e.kind,
            K::Io(_)
                | K::ServerSelection { .. }
                | K::ConnectionPoolCleared { .. }
                | K::DnsResolve { .. }
                | K::Write(WriteFailure::WriteConcernError(_))
                | K::Shutdown
        );
    if transient {
        return Error::unavailable(STORE, operation, e);
    }
    match &*e.kind {
        K::Authentication { message, .. } => Error::NotSetUp {
            store: STORE,
            message: format!("authentication failed: {message}"),
        },
        K::Command(c) if c.code == 13 => Error::NotSetUp {
            store: STORE,
            message: format!("not authorized: {}", c.message),
        },
        K::InvalidArgument { message, .. } | K::InvalidTlsConfig { message, .. } => {
            Error::InvalidConfig {
                message: format!("mongo: {message}"),
            }
        }
        _ => Error::other(STORE, e),
    }
}
