//! The one error type every coordinator maps its failures into.

use std::error::Error as StdError;
use std::sync::Arc;
use std::time::Duration;

/// A shareable, type-erased cause. `Arc` rather than `Box` so that [`Error`] is `Clone` and can
/// be broadcast to every subscriber of an [`Elector`](crate::Elector)'s events.
pub type Source = Arc<dyn StdError + Send + Sync + 'static>;

/// Result alias used throughout elect.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in elect.
///
/// Callers decide whether to retry from [`Error::is_retryable`], never from the message text.
/// Backends keep their driver errors private and map them into the variant that says what
/// happened; the driver error stays reachable through [`std::error::Error::source`].
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An election name or candidate id that breaks the naming rules.
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidName {
        /// What was being named: `"election name"` or `"candidate id"`.
        what: &'static str,
        /// The rejected input (truncated to 160 bytes for display).
        value: String,
        /// Which rule it breaks.
        reason: &'static str,
    },

    /// A lease TTL outside [`Ttl::MIN`](crate::Ttl::MIN)..=[`Ttl::MAX`](crate::Ttl::MAX).
    #[error("invalid TTL {ttl:?}: {reason}")]
    InvalidTtl {
        /// The rejected duration.
        ttl: Duration,
        /// Which bound it breaks.
        reason: &'static str,
    },

    /// A configuration value that cannot work (bad URL, bad table name, contradictory options).
    #[error("invalid configuration: {message}")]
    InvalidConfig {
        /// What is wrong and, where possible, how to fix it.
        message: String,
    },

    /// The coordinator could not be reached or did not answer in time. Temporary: retry.
    #[error("{store} unavailable during {operation}: {message}")]
    Unavailable {
        /// Which coordinator (`"redis"`, `"mysql"`, `"memory"`, …).
        store: &'static str,
        /// The operation that failed (`"try_acquire"`, `"renew"`, …).
        operation: &'static str,
        /// What happened.
        message: String,
        /// The driver's error, when there is one.
        #[source]
        source: Option<Source>,
    },

    /// A record in the coordinator that elect did not write, or that was edited into nonsense
    /// (wrong type, missing or negative fields). Persistent until someone repairs or deletes it.
    #[error("{store}: corrupt lease record at {key}: {message}")]
    CorruptRecord {
        /// Which coordinator.
        store: &'static str,
        /// The key, row or document id holding the record.
        key: String,
        /// What is wrong with it.
        message: String,
    },

    /// The coordinator is reachable but not set up for elect (missing table, missing rights).
    #[error("{store} is not set up: {message}")]
    NotSetUp {
        /// Which coordinator.
        store: &'static str,
        /// What is missing and how to create it.
        message: String,
    },

    /// The [`Elector`](crate::Elector) has stopped (shut down, or aborted by its error policy),
    /// so it will not lead again.
    #[error("the elector for {election} has stopped")]
    Stopped {
        /// The election the elector was campaigning in.
        election: String,
    },

    /// A bug, in elect or in a store: a task panicked, or a store broke the
    /// [`LeaseStore`](crate::LeaseStore) contract. The elector stops rather than guess.
    #[error("internal error: {message}")]
    Internal {
        /// What went wrong.
        message: String,
    },

    /// Any other persistent failure reported by a coordinator.
    #[error("{store}: {message}")]
    Other {
        /// Which coordinator.
        store: &'static str,
        /// What happened.
        message: String,
        /// The underlying error, when there is one.
        #[source]
        source: Option<Source>,
    },
}

impl Error {
    /// A short lower-case name of the variant (`"unavailable"`, `"corrupt_record"`, …), for
    /// logs and metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::InvalidName { .. } => "invalid_name",
            Error::InvalidTtl { .. } => "invalid_ttl",
            Error::InvalidConfig { .. } => "invalid_config",
            Error::Unavailable { .. } => "unavailable",
            Error::CorruptRecord { .. } => "corrupt_record",
            Error::NotSetUp { .. } => "not_set_up",
            Error::Stopped { .. } => "stopped",
            Error::Internal { .. } => "internal",
            Error::Other { .. } => "other",
        }
    }

    /// Whether the same request may succeed if tried again later without anyone changing
    /// anything: true for [`Error::Unavailable`], false for everything else.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Unavailable { .. })
    }

    /// Builds an [`Error::InvalidConfig`].
    pub fn config(message: impl Into<String>) -> Self {
        Error::InvalidConfig {
            message: message.into(),
        }
    }

    /// Builds an [`Error::Unavailable`] from a driver error.
    pub fn unavailable(
        store: &'static str,
        operation: &'static str,
        source: impl StdError + Send + Sync + 'static,
    ) -> Self {
        Error::Unavailable {
            store,
            operation,
            message: source.to_string(),
            source: Some(Arc::new(source)),
        }
    }

    /// Builds an [`Error::Unavailable`] for a request that got no answer within `after`.
    pub fn timeout(store: &'static str, operation: &'static str, after: Duration) -> Self {
        Error::Unavailable {
            store,
            operation,
            message: format!("no answer within {after:?}"),
            source: None,
        }
    }

    /// Builds an [`Error::CorruptRecord`].
    pub fn corrupt(
        store: &'static str,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Error::CorruptRecord {
            store,
            key: key.into(),
            message: message.into(),
        }
    }

    /// Builds an [`Error::Other`] from a driver error.
    pub fn other(store: &'static str, source: impl StdError + Send + Sync + 'static) -> Self {
        Error::Other {
            store,
            message: source.to_string(),
            source: Some(Arc::new(source)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unavailable_is_retryable() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert!(Error::unavailable("redis", "renew", io).is_retryable());
        assert!(Error::timeout("redis", "renew", Duration::from_secs(1)).is_retryable());
        assert!(!Error::corrupt("redis", "k", "junk").is_retryable());
        assert!(!Error::Stopped {
            election: "e".into()
        }
        .is_retryable());
    }

    #[test]
    fn unavailable_keeps_its_source() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let err = Error::unavailable("mysql", "try_acquire", io);
        assert_eq!(
            err.to_string(),
            "mysql unavailable during try_acquire: refused"
        );
        assert!(StdError::source(&err).is_some());
    }
}
