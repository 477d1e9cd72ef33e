//! [`FaultyStore`]: a [`LeaseStore`] wrapper that injects the failures real networks produce.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::lease::{Acquire, Claim, LeaderInfo, Lease, Release, Renewal};
use crate::name::ElectionName;
use crate::rand::Rng;
use crate::store::{ChangeFeed, LeaseStore};

/// What a [`FaultyStore`] does to the requests passing through it. Switch at run time with
/// [`FaultyStore::set`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Faults {
    /// Pass every request through untouched.
    None,
    /// Fail every request with [`Error::Unavailable`] without reaching the store.
    FailAll,
    /// Hold every request forever without reaching the store: a crashed, frozen or partitioned
    /// process, as the coordinator sees it.
    Blackhole,
    /// Apply every request at the store, then lose the reply ([`Error::Unavailable`]).
    LoseReplies,
    /// Delay each request on its way to the store, and its reply on the way back.
    Delay {
        /// Before the store applies the request.
        request: Duration,
        /// After the store applied it, before the caller sees the reply.
        reply: Duration,
    },
    /// Per request, drawn from a seeded generator: fail it (before the store) with probability
    /// `fail`, lose its reply (after the store) with probability `lose_reply`, and delay each
    /// direction by up to `max_delay`.
    Random {
        /// Seed, so a failing run can be replayed.
        seed: u64,
        /// Probability of failing before the store.
        fail: f64,
        /// Probability of losing the reply after the store applied the request.
        lose_reply: f64,
        /// Upper bound of each direction's delay.
        max_delay: Duration,
    },
}

/// A [`LeaseStore`] wrapper that injects [`Faults`] and records when requests reached the store.
///
/// Wrap one per simulated process: its faults are that process's view of the network. The
/// conformance suite uses it on every backend; use it in your own tests the same way.
#[derive(Clone)]
pub struct FaultyStore<S> {
    inner: S,
    state: Arc<State>,
}

struct State {
    faults: Mutex<(Faults, Option<Rng>)>,
    requests: AtomicU64,
    last_renew_forwarded: Mutex<Option<Instant>>,
}

enum Plan {
    Pass {
        before: Duration,
        after: Duration,
        lose: bool,
    },
    Fail,
    Hang,
}

impl<S: LeaseStore + Clone> FaultyStore<S> {
    /// Wraps `inner`, passing everything through until [`set`](Self::set) says otherwise.
    pub fn new(inner: S) -> Self {
        FaultyStore {
            inner,
            state: Arc::new(State {
                faults: Mutex::new((Faults::None, None)),
                requests: AtomicU64::new(0),
                last_renew_forwarded: Mutex::new(None),
            }),
        }
    }

    /// Switches the faults applied to requests from now on (requests already held keep theirs).
    pub fn set(&self, faults: Faults) {
        let rng = match &faults {
            Faults::Random { seed, .. } => Some(Rng::seeded(*seed)),
            _ => None,
        };
        *self.state.faults.lock().unwrap_or_else(|p| p.into_inner()) = (faults, rng);
    }

    /// How many requests callers have sent through this wrapper (including failed ones).
    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::Relaxed)
    }

    /// When the last `renew` was handed to the inner store. Its lease cannot expire at the store
    /// before this instant plus the TTL.
    pub fn last_renew_forwarded(&self) -> Option<Instant> {
        *self
            .state
            .last_renew_forwarded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    fn plan(&self) -> Plan {
        self.state.requests.fetch_add(1, Ordering::Relaxed);
        let mut guard = self.state.faults.lock().unwrap_or_else(|p| p.into_inner());
        let (faults, rng) = &mut *guard;
        match faults {
            Faults::None => Plan::Pass {
                before: Duration::ZERO,
                after: Duration::ZERO,
                lose: false,
            },
            Faults::FailAll => Plan::Fail,
            Faults::Blackhole => Plan::Hang,
            Faults::LoseReplies => Plan::Pass {
                before: Duration::ZERO,
                after: Duration::ZERO,
                lose: true,
            },
            Faults::Delay { request, reply } => Plan::Pass {
                before: *request,
                after: *reply,
                lose: false,
            },
            Faults::Random {
                fail,
                lose_reply,
                max_delay,
                ..
            } => {
                let rng = rng.get_or_insert_with(Rng::from_entropy);
                if rng.unit() < *fail {
                    Plan::Fail
                } else {
                    Plan::Pass {
                        before: rng.duration_up_to(*max_delay),
                        after: rng.duration_up_to(*max_delay),
                        lose: rng.unit() < *lose_reply,
                    }
                }
            }
        }
    }

    /// Runs one request as the network would: once sent, it is applied at the store even if
    /// the caller stops waiting (the request runs on its own task), so abandoned requests that
    /// land late are part of what the suite exercises.
    async fn run<T, F>(&self, operation: &'static str, request: impl FnOnce(S) -> F) -> Result<T>
    where
        T: Send + 'static,
        F: std::future::Future<Output = Result<T>> + Send + 'static,
    {
        let (before, after, lose) = match self.plan() {
            Plan::Fail => return Err(injected(operation, "request failed")),
            Plan::Hang => return std::future::pending().await,
            Plan::Pass {
                before,
                after,
                lose,
            } => (before, after, lose),
        };
        let request = request(self.inner.clone());
        let state = self.state.clone();
        let applied = tokio::spawn(async move {
            tokio::time::sleep(before).await;
            if operation == "renew" {
                *state
                    .last_renew_forwarded
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
            }
            request.await
        });
        let reply = match applied.await {
            Ok(reply) => reply,
            Err(e) => Err(injected(operation, &format!("store task failed: {e}"))),
        };
        tokio::time::sleep(after).await;
        if lose {
            Err(injected(operation, "reply lost after the store applied it"))
        } else {
            reply
        }
    }
}

fn injected(operation: &'static str, message: &str) -> Error {
    Error::Unavailable {
        store: "faulty",
        operation,
        message: format!("injected fault: {message}"),
        source: None,
    }
}

impl<S: fmt::Debug> fmt::Debug for FaultyStore<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let faults = self.state.faults.lock().unwrap_or_else(|p| p.into_inner());
        f.debug_struct("FaultyStore")
            .field("inner", &self.inner)
            .field("faults", &faults.0)
            .finish()
    }
}

#[async_trait]
impl<S: LeaseStore + Clone> LeaseStore for FaultyStore<S> {
    async fn try_acquire(&self, claim: &Claim) -> Result<Acquire> {
        let claim = claim.clone();
        self.run("try_acquire", move |s| async move {
            s.try_acquire(&claim).await
        })
        .await
    }

    async fn renew(&self, lease: &Lease) -> Result<Renewal> {
        let lease = lease.clone();
        self.run("renew", move |s| async move { s.renew(&lease).await })
            .await
    }

    async fn release(&self, lease: &Lease) -> Result<Release> {
        let lease = lease.clone();
        self.run("release", move |s| async move { s.release(&lease).await })
            .await
    }

    async fn leader(&self, election: &ElectionName) -> Result<Option<LeaderInfo>> {
        let election = election.clone();
        self.run("leader", move |s| async move { s.leader(&election).await })
            .await
    }

    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    async fn close(&self) {
        self.inner.close().await
    }

    async fn subscribe(&self, election: &ElectionName) -> Result<Option<ChangeFeed>> {
        let election = election.clone();
        self.run(
            "subscribe",
            move |s| async move { s.subscribe(&election).await },
        )
        .await
    }
}
