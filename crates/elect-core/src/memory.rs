//! [`MemoryStore`]: an in-process [`LeaseStore`] on tokio's clock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use tokio::time::Instant;

use crate::backend::FeedRegistry;
use crate::error::{Error, Result};
use crate::lease::{Acquire, Claim, LeaderInfo, LeaderValue, Lease, Nonce, Release, Renewal};
use crate::name::{CandidateId, ElectionName};
use crate::store::{ChangeFeed, LeaseStore};
use crate::term::Term;

/// An in-process [`LeaseStore`] that keeps every election in a map and measures time on tokio's
/// clock, so tests can run under `tokio::time::pause` and campaigns of many TTLs finish
/// instantly.
///
/// It coordinates the tasks of *one process* only: it is for unit tests (ours and yours) and for
/// demos, never a substitute for a real coordinator. Clones share the same elections.
///
/// ```
/// use std::time::Duration;
/// use elect_core::{Acquire, CandidateId, Claim, ElectionName, LeaseStore, MemoryStore, Ttl};
///
/// # tokio_test_block_on(async {
/// let store = MemoryStore::new();
/// let election = ElectionName::new("jobs")?;
/// let ttl = Ttl::new(Duration::from_secs(5))?;
/// let a = Claim::new(election.clone(), CandidateId::new("a")?, ttl);
/// let b = Claim::new(election.clone(), CandidateId::new("b")?, ttl);
/// let Acquire::Granted(lease) = store.try_acquire(&a).await? else { panic!() };
/// assert!(matches!(store.try_acquire(&b).await?, Acquire::Held(_)));
/// assert_eq!(store.leader(&election).await?.unwrap().holder, a.candidate);
/// # drop(lease);
/// # Ok::<(), elect_core::Error>(())
/// # });
/// # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
/// # }
/// ```
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    elections: Arc<Mutex<HashMap<ElectionName, Slot>>>,
    feeds: Arc<FeedRegistry<ElectionName>>,
}

#[derive(Debug)]
struct Slot {
    holder: Option<(CandidateId, Nonce)>,
    term: Term,
    expires: Instant,
    value: Option<LeaderValue>,
}

impl Slot {
    fn vacant() -> Self {
        Slot {
            holder: None,
            term: Term::ZERO,
            expires: Instant::now(),
            value: None,
        }
    }

    fn live_holder(&self, now: Instant) -> Option<&(CandidateId, Nonce)> {
        self.holder.as_ref().filter(|_| now < self.expires)
    }

    fn holds(&self, lease: &Lease, now: Instant) -> bool {
        self.live_holder(now) == Some(&(lease.holder.clone(), lease.nonce))
            && self.term == lease.term
    }

    fn info(&self, now: Instant) -> Option<LeaderInfo> {
        self.live_holder(now).map(|(holder, _)| LeaderInfo {
            holder: holder.clone(),
            term: self.term,
            remaining: self.expires - now,
            value: self.value.clone(),
        })
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<ElectionName, Slot>> {
        // A panic while holding the lock cannot leave a slot half-written (every update is a
        // plain assignment), so a poisoned map is still consistent.
        self.elections.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Each item on its own, in order: the map is in memory, so a batch saves nothing but lets
/// users' tests and the conformance suite run [`Batched`](crate::batch::Batched) on it.
#[async_trait]
impl crate::batch::BatchStore for MemoryStore {
    async fn try_acquire_batch(&self, claims: &[Claim]) -> Vec<Result<Acquire>> {
        let mut out = Vec::with_capacity(claims.len());
        for claim in claims {
            out.push(self.try_acquire(claim).await);
        }
        out
    }

    async fn renew_batch(&self, leases: &[Lease]) -> Vec<Result<Renewal>> {
        let mut out = Vec::with_capacity(leases.len());
        for lease in leases {
            out.push(self.renew(lease).await);
        }
        out
    }
}

#[async_trait]
impl LeaseStore for MemoryStore {
    fn kind(&self) -> &'static str {
        "memory"
    }

    async fn try_acquire(&self, claim: &Claim) -> Result<Acquire> {
        let now = Instant::now();
        let mut elections = self.lock();
        let slot = elections
            .entry(claim.election.clone())
            .or_insert_with(Slot::vacant);
        match slot.live_holder(now) {
            Some((holder, nonce)) if *holder == claim.candidate && *nonce == claim.nonce => {}
            Some(_) => return Ok(Acquire::Held(slot.info(now).expect("live"))),
            None => {
                slot.term = slot.term.next().ok_or_else(|| {
                    Error::corrupt("memory", claim.election.as_str(), "term counter exhausted")
                })?;
                slot.holder = Some((claim.candidate.clone(), claim.nonce));
                slot.value = claim.value.clone();
                self.feeds.notify(&claim.election);
            }
        }
        slot.expires = now + claim.ttl.get();
        Ok(Acquire::Granted(claim.granted(slot.term)))
    }

    async fn renew(&self, lease: &Lease) -> Result<Renewal> {
        let now = Instant::now();
        let mut elections = self.lock();
        match elections.get_mut(&lease.election) {
            Some(slot) if slot.holds(lease, now) => {
                slot.expires = now + lease.ttl.get();
                Ok(Renewal::Renewed(lease.clone()))
            }
            _ => Ok(Renewal::Lost),
        }
    }

    async fn release(&self, lease: &Lease) -> Result<Release> {
        let now = Instant::now();
        let mut elections = self.lock();
        match elections.get_mut(&lease.election) {
            Some(slot) if slot.holds(lease, now) => {
                slot.holder = None;
                slot.expires = now;
                self.feeds.notify(&lease.election);
                Ok(Release::Released)
            }
            _ => Ok(Release::NotHeld),
        }
    }

    async fn leader(&self, election: &ElectionName) -> Result<Option<LeaderInfo>> {
        let now = Instant::now();
        let elections = self.lock();
        Ok(elections.get(election).and_then(|slot| slot.info(now)))
    }

    async fn subscribe(&self, election: &ElectionName) -> Result<Option<ChangeFeed>> {
        Ok(Some(self.feeds.subscribe(election)))
    }
}

#[cfg(test)]
mod flaky {
    //! Issue 14, item 18: a store that refuses a fifth of its requests with a legal, transient
    //! `Unavailable` — before or after applying them — still passes every store-level check.
    use std::sync::Arc;
    use std::time::Duration;

    use crate::conformance::{self, Faults, FaultyStore, Settings};
    use crate::LeaseStore;

    fn store(seed: u64, fail: f64, lose_reply: f64) -> Arc<dyn LeaseStore> {
        let store = FaultyStore::new(crate::MemoryStore::new());
        store.set(Faults::Random {
            seed,
            fail,
            lose_reply,
            max_delay: Duration::ZERO,
        });
        Arc::new(store)
    }

    macro_rules! flaky_checks {
        ($($check:ident)*) => {$(
            #[tokio::test(start_paused = true)]
            async fn $check() {
                for seed in 0..20 {
                    conformance::$check(store(seed, 0.2, 0.0), Settings::in_memory()).await;
                }
            }
        )*};
    }

    // The checks whose assertions do not hang on a fraction of the 1 s TTL (a retried request
    // on the in-memory settings eats into it).
    flaky_checks!(
        first_acquire_is_granted
        exclusion_under_concurrent_acquirers
        reacquire_by_holder_keeps_term
        same_id_with_another_nonce_is_held
        new_grant_increments_term
        stale_renew_is_refused
        stale_release_is_refused
        forged_lease_is_refused
        release_frees_at_once_and_keeps_term
        leader_reports_the_truth
        elections_are_independent
        names_and_ttls_are_validated
    );

    /// Replies lost after the store applied the request: a retried release then finds the
    /// lease gone, which the checks accept as the release it was.
    #[tokio::test(start_paused = true)]
    async fn release_checks_survive_lost_replies() {
        for seed in 0..20 {
            conformance::release_frees_at_once_and_keeps_term(
                store(seed, 0.1, 0.2),
                Settings::in_memory(),
            )
            .await;
            conformance::stale_release_is_refused(store(seed, 0.1, 0.2), Settings::in_memory())
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    crate::conformance_tests!(
        store: async { crate::MemoryStore::new() },
        settings: crate::conformance::Settings::in_memory(),
        attr: tokio::test(start_paused = true),
    );
}

/// The whole suite on the batched path: every acquisition and renewal goes through
/// [`Batched`](crate::batch::Batched)'s queue.
#[cfg(test)]
mod batched_tests {
    crate::conformance_tests!(
        store: async {
            crate::batch::Batched::new(
                crate::MemoryStore::new(),
                crate::batch::BatchConfig::default(),
            )
        },
        settings: crate::conformance::Settings::in_memory(),
        attr: tokio::test(start_paused = true),
    );
}
