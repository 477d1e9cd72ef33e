//! fred's failures, classified by kind and by the Redis error code (the first word of an
//! error reply: `LOADING`, `READONLY`, …) into [`elect_core::Error`].

use elect_core::Error;

/// How errors and logs name this coordinator.
pub(crate) const STORE: &str = "redis";

/// The Redis error code of an error reply: its first word, when that is an upper-case word
/// (`NOSCRIPT`, `LOADING`, …). Redis's replies carry their code this way.
pub(crate) fn code(e: &fred::error::Error) -> Option<&str> {
    let word = e.details().split_whitespace().next()?;
    (!word.is_empty() && word.bytes().all(|b| b.is_ascii_uppercase() || b == b'_')).then_some(word)
}

/// Maps a fred error: connection trouble and server states that pass (loading, failover) are
/// retryable; bad credentials and configuration are not.
pub(crate) fn map_err(operation: &'static str, e: fred::error::Error) -> Error {
    use fred::error::ErrorKind as K;
    const TRANSIENT: [&str; 6] = [
        "LOADING",
        "BUSY",
        "TRYAGAIN",
        "CLUSTERDOWN",
        "MASTERDOWN",
        "READONLY",
    ];
    let transient_reply = code(&e).is_some_and(|c| TRANSIENT.contains(&c));
    if let Some(refused) = elect_core::backend::tls_refusal(STORE, e.details()) {
        return refused;
    }
    match e.kind() {
        K::IO
        | K::Timeout
        | K::Canceled
        | K::Backpressure
        | K::Cluster
        | K::Routing
        | K::Sentinel => Error::unavailable(STORE, operation, e),
        _ if transient_reply => Error::unavailable(STORE, operation, e),
        // fred 10 reports "no connection to route this command to" (while it reconnects,
        // router/commands.rs) as `Unknown`, with nothing but its message to tell it apart.
        // Taken for fatal, it stopped electors for good in the chaos tests. Every `Unknown` is
        // taken as transient: retrying is always safe (leadership still ends at its deadline),
        // and each failure is reported.
        K::Unknown => Error::unavailable(STORE, operation, e),
        K::Auth => Error::NotSetUp {
            store: STORE,
            message: format!("authentication failed: {}", e.details()),
        },
        K::Config | K::Url => Error::InvalidConfig {
            message: format!("redis: {}", e.details()),
        },
        _ => Error::other(STORE, e),
    }
}

#[cfg(test)]
mod tests {
    use super::{code, map_err};
    use fred::error::{Error as FredError, ErrorKind};

    #[test]
    fn fred_routing_failures_while_reconnecting_are_retryable() {
        // What fred returns when no connection is up to take a command (seen in the chaos
        // tests after a connection reset): it must not stop the elector.
        let e = map_err(
            "renew",
            FredError::new(ErrorKind::Unknown, "Failed to route command."),
        );
        assert!(e.is_retryable(), "{e}");
        assert!(map_err("renew", FredError::new(ErrorKind::IO, "reset")).is_retryable());
        for transient in ["LOADING Redis is loading", "READONLY You can't write"] {
            let e = map_err("renew", FredError::new(ErrorKind::Unknown, transient));
            assert!(e.is_retryable(), "{e}");
        }
        let auth = map_err(
            "renew",
            FredError::new(ErrorKind::Auth, "WRONGPASS invalid"),
        );
        assert!(!auth.is_retryable(), "{auth}");
        let script = map_err(
            "renew",
            FredError::new(ErrorKind::Unknown, "ERR wrong number"),
        );
        assert!(script.is_retryable(), "fred's Unknown is retried: {script}");
        assert_eq!(
            code(&FredError::new(ErrorKind::Unknown, "NOSCRIPT No matching")),
            Some("NOSCRIPT")
        );
        assert_eq!(
            code(&FredError::new(ErrorKind::Unknown, "Failed to route")),
            None
        );
    }
}
