//! For coordinator authors: the pieces every [`LeaseStore`](crate::LeaseStore) backend needs —
//! a registry of change feeds per key, a timed request, and parsers for the fields of a lease
//! record with one error message each.
//!
//! The built-in stores (Redis, MySQL, MongoDB, the in-memory one) are written with these; a
//! store of yours can be too.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::lease::{LeaderInfo, LeaderValue};
use crate::name::CandidateId;
use crate::store::{ChangeFeed, ChangeNotifier};
use crate::term::Term;

/// The change feeds a backend hands out, one [`ChangeNotifier`] per key (an election, a
/// channel): subscribe, wake the feeds of one key or of all, end them all, forget the keys
/// nobody listens to any more.
///
/// ```
/// use elect_core::backend::FeedRegistry;
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let feeds: FeedRegistry<String> = FeedRegistry::new();
/// let mut feed = feeds.subscribe("jobs");
/// feeds.notify("jobs");
/// assert!(feed.changed().await, "a notice");
/// feeds.end_all();
/// assert!(feed.changed().await, "ending wakes the waiter once more");
/// assert!(!feed.changed().await, "then the feed has ended");
/// # });
/// ```
pub struct FeedRegistry<K = String> {
    feeds: Mutex<HashMap<K, ChangeNotifier>>,
}

impl<K> FeedRegistry<K> {
    /// A registry with no feeds.
    pub fn new() -> Self {
        FeedRegistry {
            feeds: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<K, ChangeNotifier>> {
        // Every update is one map operation: a poisoned map is still consistent.
        self.feeds.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wakes every feed of every key (e.g. when notices may have been lost and every waiter
    /// should ask again).
    pub fn notify_all(&self) {
        for notifier in self.lock().values() {
            notifier.notify();
        }
    }

    /// Ends every feed: each waiter wakes once more, then its feed reports that it has ended
    /// (the backend lost the connection its notices came from). Waiters fall back to the expiry
    /// they were told of and subscribe again.
    pub fn end_all(&self) {
        let ended: Vec<ChangeNotifier> = self.lock().drain().map(|(_, n)| n).collect();
        for notifier in ended {
            notifier.notify();
        }
    }

    /// Whether no key has a notifier.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
}

impl<K: Eq + Hash + Clone> FeedRegistry<K> {
    /// A new feed for `key` (its notifier made on first use).
    pub fn subscribe<Q>(&self, key: &Q) -> ChangeFeed
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let mut feeds = self.lock();
        match feeds.get(key) {
            Some(notifier) => notifier.subscribe(),
            None => {
                let notifier = ChangeNotifier::new();
                let feed = notifier.subscribe();
                feeds.insert(key.to_owned(), notifier);
                feed
            }
        }
    }

    /// Whether `key` has a notifier (a feed was handed out and not pruned since).
    pub fn contains<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.lock().contains_key(key)
    }

    /// Wakes the feeds of `key`; a key whose feeds are all gone is forgotten.
    pub fn notify<Q>(&self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.send(key, ChangeNotifier::notify);
    }

    /// Wakes the feeds of `key` with the leader the coordinator's event carried (see
    /// [`ChangeNotifier::notify_leader`]); a key whose feeds are all gone is forgotten.
    pub fn notify_leader<Q>(&self, key: &Q, leader: LeaderInfo)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.send(key, |n| n.notify_leader(leader));
    }

    fn send<Q>(&self, key: &Q, send: impl FnOnce(&ChangeNotifier))
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let mut feeds = self.lock();
        if let Some(notifier) = feeds.get(key) {
            send(notifier);
            if notifier.feeds() == 0 {
                feeds.remove(key);
            }
        }
    }

    /// Forgets the keys nobody listens to any more; returns those still listened to.
    pub fn prune(&self) -> Vec<K> {
        let mut feeds = self.lock();
        feeds.retain(|_, n| n.feeds() > 0);
        feeds.keys().cloned().collect()
    }

    /// Moves `key`'s notifier (with its feeds) into `other`, e.g. from a registry of
    /// subscriptions being confirmed into the registry of confirmed ones.
    pub fn move_to<Q>(&self, key: &Q, other: &FeedRegistry<K>)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let moved = self.lock().remove(key);
        if let Some(notifier) = moved {
            other.lock().insert(key.to_owned(), notifier);
        }
    }

    /// Forgets `key` without waking or ending its feeds' wait for a notice: they end.
    pub fn remove<Q>(&self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.lock().remove(key);
    }
}

impl<K> Default for FeedRegistry<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: fmt::Debug> fmt::Debug for FeedRegistry<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FeedRegistry")
            .field("keys", &self.lock().keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Runs one request to `store` under `after`: its own answer, or [`Error::Unavailable`] for
/// `operation` when it did not answer in time (the request is dropped: see
/// [`LeaseStore`](crate::LeaseStore) on abandoned requests).
pub async fn timed<T>(
    store: &'static str,
    operation: &'static str,
    after: Duration,
    request: impl Future<Output = Result<T>>,
) -> Result<T> {
    tokio::time::timeout(after, request)
        .await
        .unwrap_or_else(|_| Err(Error::timeout(store, operation, after)))
}

/// The holder field of the lease record at `key`: `text` when it is a valid candidate id, else
/// [`Error::CorruptRecord`] showing `shown` (how the backend describes the field's value).
pub fn holder(
    store: &'static str,
    key: &str,
    text: Option<&str>,
    shown: &dyn fmt::Display,
) -> Result<CandidateId> {
    text.and_then(|t| CandidateId::new(t).ok()).ok_or_else(|| {
        Error::corrupt(
            store,
            key,
            format!("holder is {shown}, not a valid candidate id"),
        )
    })
}

/// The term field of the lease record at `key`: `value` when it is a positive integer below
/// 2⁶⁴, else [`Error::CorruptRecord`] showing `shown`.
pub fn term(
    store: &'static str,
    key: &str,
    value: Option<i128>,
    shown: &dyn fmt::Display,
) -> Result<Term> {
    match value {
        Some(t) if t >= 1 && t <= u64::MAX as i128 => Ok(Term(t as u64)),
        _ => Err(Error::corrupt(
            store,
            key,
            format!("term is {shown}, not a positive integer"),
        )),
    }
}

/// The value field of the lease record at `key`: `None` when absent (or empty bytes stored as
/// "no value" by a store that cannot tell them apart), else valid UTF-8 of at most
/// [`LeaderValue::MAX_LEN`] bytes, else [`Error::CorruptRecord`].
pub fn value(store: &'static str, key: &str, bytes: Option<&[u8]>) -> Result<Option<LeaderValue>> {
    let Some(bytes) = bytes else {
        return Ok(None);
    };
    let text = std::str::from_utf8(bytes)
        .map_err(|_| Error::corrupt(store, key, "the leader value is not UTF-8"))?;
    LeaderValue::new(text).map(Some).map_err(|_| {
        Error::corrupt(
            store,
            key,
            format!(
                "the leader value has {} bytes, over {}",
                bytes.len(),
                LeaderValue::MAX_LEN
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_fields_have_one_message_each() {
        assert_eq!(
            holder("s", "k", Some("a"), &"\"a\"").unwrap(),
            CandidateId::new("a").unwrap()
        );
        let err = holder("s", "k", Some("not valid!"), &"\"not valid!\"").unwrap_err();
        assert_eq!(
            err.to_string(),
            "s: corrupt lease record at k: holder is \"not valid!\", not a valid candidate id"
        );
        assert_eq!(term("s", "k", Some(7), &7).unwrap(), Term(7));
        for bad in [None, Some(0), Some(-3), Some(u64::MAX as i128 + 1)] {
            let err = term("s", "k", bad, &"junk").unwrap_err();
            assert!(matches!(err, Error::CorruptRecord { .. }), "{err}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_registry_prunes_keys_nobody_listens_to() {
        let feeds: FeedRegistry<String> = FeedRegistry::new();
        let kept = feeds.subscribe("kept");
        drop(feeds.subscribe("gone"));
        assert_eq!(feeds.prune(), vec!["kept".to_string()]);
        feeds.notify("kept");
        drop(kept);
        feeds.notify("kept");
        assert!(feeds.is_empty(), "notifying a key without feeds forgets it");
        let timed_out = timed(
            "s",
            "op",
            Duration::from_millis(5),
            std::future::pending::<Result<()>>(),
        )
        .await;
        assert!(timed_out.unwrap_err().is_retryable());
    }
}

/// [`Error::NotSetUp`] when a driver's error `text` (its message, or its debug form) is
/// rustls refusing the other side's certificate — a CA that did not sign the server's
/// certificate, an expired one, a name that does not match — or the server refusing this
/// client's (none offered, or one it does not trust). Such a failure does not pass by
/// retrying: it needs the right CA file or client certificate
/// ([`TlsFiles`](crate::TlsFiles)). `None` when the text is not a certificate failure.
pub fn tls_refusal(store: &'static str, text: &str) -> Option<Error> {
    // rustls' own names for these (`rustls::Error`, `CertificateError`, alert descriptions).
    const SERVER: [&str; 3] = [
        "InvalidCertificate",
        "invalid peer certificate",
        "UnknownIssuer",
    ];
    const CLIENT: [&str; 4] = [
        "CertificateRequired",
        "certificate required",
        "BadCertificate",
        "UnknownCA",
    ];
    let found = |markers: &[&str]| markers.iter().find_map(|m| text.find(m));
    let (hint, at) = if let Some(at) = found(&SERVER) {
        (
            "the server's certificate was refused: is the CA file (TlsFiles::ca_file) the one \
             that signed it, and does it name the host in the URL?",
            at,
        )
    } else if let Some(at) = found(&CLIENT) {
        (
            "the server refused this client's certificate, or wants one: set \
             TlsFiles::client_identity to a certificate its CA signed",
            at,
        )
    } else {
        return None;
    };
    // The driver's words around the marker: its message can be long (a whole topology).
    let start = (0..=at.saturating_sub(60))
        .rev()
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(0);
    let end = (at + 100..=text.len())
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(text.len());
    let detail = format!(
        "{}{}{}",
        if start > 0 { "…" } else { "" },
        &text[start..end],
        if end < text.len() { "…" } else { "" }
    );
    Some(Error::NotSetUp {
        store,
        message: format!("TLS: {hint} ({detail})"),
    })
}

#[cfg(test)]
mod tls_tests {
    use super::tls_refusal;
    use crate::Error;

    #[test]
    fn certificate_refusals_are_named_and_other_errors_are_not() {
        let long = format!(
            "{}invalid peer certificate: UnknownIssuer{}",
            "x".repeat(500),
            "é".repeat(300)
        );
        let Some(Error::NotSetUp { message, .. }) = tls_refusal("mongo", &long) else {
            panic!("a refused server certificate");
        };
        assert!(
            message.contains("CA file") && message.contains("UnknownIssuer"),
            "{message}"
        );
        assert!(
            message.len() < 600,
            "the driver's text is cut to the part that matters"
        );
        assert!(matches!(
            tls_refusal("redis", "AlertReceived(CertificateRequired)"),
            Some(Error::NotSetUp { message, .. }) if message.contains("client_identity")
        ));
        assert!(tls_refusal("redis", "Connection refused (os error 111)").is_none());
        assert!(tls_refusal("redis", "").is_none());
    }
}
