//! [`Health`]: what a health check or a dashboard needs to know about an elector.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::term::Term;

/// A snapshot of an elector's health, from [`Elector::health`](super::Elector::health).
///
/// `reachable` is the one to alert on: the coordinator has not answered a request within a
/// TTL, so this candidate can neither lead nor take over (a leader steps down at its deadline
/// before that). A follower that sleeps until a lease's expiry sends no request for up to a
/// TTL: its last reply can be that old while all is well.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Health {
    /// Whether this candidate leads now.
    pub leading: bool,
    /// The term it leads in, if it does.
    pub term: Option<Term>,
    /// How long ago the coordinator last answered a request (any answer, a refusal included);
    /// `None` before the first answer.
    pub last_reply: Option<Duration>,
    /// Requests that failed in a row since the last answer.
    pub consecutive_failures: u32,
    /// Whether the coordinator answered within the last TTL plus the request timeout (the
    /// longest a healthy follower waits between requests).
    pub reachable: bool,
    /// Callbacks abandoned at their timeout (or that panicked) since the elector started.
    pub callbacks_abandoned: u64,
    /// Whether the elector has stopped for good.
    pub stopped: bool,
}

/// What the campaign (or a driver) records, shared with the handle.
#[derive(Debug)]
pub(crate) struct HealthCell {
    inner: Mutex<Counters>,
    /// How old the last reply may be while the coordinator counts as reachable.
    patience: Duration,
}

#[derive(Debug, Default)]
struct Counters {
    last_reply: Option<Instant>,
    failures: u32,
    abandoned: u64,
}

impl HealthCell {
    pub(crate) fn new(patience: Duration) -> Arc<HealthCell> {
        Arc::new(HealthCell {
            inner: Mutex::default(),
            patience,
        })
    }

    pub(crate) fn replied(&self) {
        let mut c = self.lock();
        c.last_reply = Some(Instant::now());
        c.failures = 0;
    }

    pub(crate) fn failed(&self) {
        let mut c = self.lock();
        c.failures = c.failures.saturating_add(1);
    }

    pub(crate) fn failures(&self) -> u32 {
        self.lock().failures
    }

    pub(crate) fn abandoned(&self) {
        self.lock().abandoned += 1;
    }

    pub(crate) fn snapshot(&self, leading: bool, term: Option<Term>, stopped: bool) -> Health {
        let c = self.lock();
        let last_reply = c.last_reply.map(|at| at.elapsed());
        Health {
            leading,
            term,
            last_reply,
            consecutive_failures: c.failures,
            reachable: !stopped && last_reply.is_some_and(|age| age <= self.patience),
            callbacks_abandoned: c.abandoned,
            stopped,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counters> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}
