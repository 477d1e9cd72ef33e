//! What the elector does when a request fails: [`ErrorPolicy`] and its answer [`OnError`].

use std::fmt;
use std::sync::Arc;

use crate::error::Error;

/// The answer of an [`ErrorPolicy`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    /// Keep campaigning, after a jittered backoff.
    Retry,
    /// Step down, release, and stop the elector; `leading()` then returns the error.
    Abort,
}

/// What the elector does when a request to the coordinator fails (the MySQL seed's
/// `WithOnError`). Leadership never outlives the safety deadline, whatever the policy.
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum ErrorPolicy {
    /// Retry errors that can pass without anyone changing this candidate's setup, after a
    /// jittered backoff, reporting each one ([`Event::Error`](super::Event::Error), a warning in the log): an
    /// unreachable coordinator ([retryable](Error::is_retryable)) and a lease record it cannot
    /// read ([`Error::CorruptRecord`]: a foreign write may expire or be repaired, and nothing is
    /// granted over it meanwhile — one junk write must not stop a whole group for good). Abort on
    /// the others (missing table, rights, bad configuration): those need a person. The default.
    #[default]
    RetryTransient,
    /// Retry every error, forever (the seed's `ContinueOnError`).
    RetryAll,
    /// Abort on the first error (the seed's `AbortOnError`).
    Abort,
    /// Ask a function.
    Custom(Arc<dyn Fn(&Error) -> OnError + Send + Sync>),
}

impl ErrorPolicy {
    /// A policy that asks `decide` about each error.
    pub fn custom(decide: impl Fn(&Error) -> OnError + Send + Sync + 'static) -> Self {
        ErrorPolicy::Custom(Arc::new(decide))
    }

    pub(crate) fn decide(&self, error: &Error) -> OnError {
        match self {
            ErrorPolicy::RetryTransient
                if error.is_retryable() || matches!(error, Error::CorruptRecord { .. }) =>
            {
                OnError::Retry
            }
            ErrorPolicy::RetryTransient | ErrorPolicy::Abort => OnError::Abort,
            ErrorPolicy::RetryAll => OnError::Retry,
            ErrorPolicy::Custom(decide) => decide(error),
        }
    }
}

impl fmt::Debug for ErrorPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorPolicy::RetryTransient => f.write_str("RetryTransient"),
            ErrorPolicy::RetryAll => f.write_str("RetryAll"),
            ErrorPolicy::Abort => f.write_str("Abort"),
            ErrorPolicy::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}
