//! [`LeaseStore`]: the trait a coordinator implements, and the [`ChangeFeed`] it may offer.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::watch;

use crate::error::Result;
use crate::lease::{Acquire, Claim, LeaderInfo, Lease, Release, Renewal};
use crate::name::ElectionName;

/// A coordinator that grants leases: Redis, MySQL, MongoDB, the in-memory store, or yours.
///
/// Backends implement only this trait; the campaign loop ([`Elector`](crate::Elector)) and the
/// read-only [`Observer`](crate::Observer) are written once against it. The trait is object safe:
/// `Arc<dyn LeaseStore>` works, and `Arc<S>` is a `LeaseStore` whenever `S` is.
///
/// # The contract
///
/// Every implementation keeps these rules; `elect_core::conformance` (feature `conformance`)
/// checks them against a real instance.
///
/// - **Exclusion**: at most one candidate holds a live lease per election at any instant of the
///   coordinator's clock.
/// - **Coordinator time**: expiry is decided by the coordinator's own clock (`PX`, `NOW(6)`,
///   `$$NOW`), measured from when it *applied* the request, never from a client's wall clock.
/// - **Terms** ([`Term`](crate::Term)): strictly increasing per election and never reused, even
///   across a restart that lost the coordinator's data and after a foreign write lowered the
///   stored counter. A grant to a claim that does not hold the live lease takes a new term above
///   every term granted before (the built-in coordinators take `max(stored + 1, server clock in
///   µs)`); renewals and re-acquires by the live holder keep it.
/// - **Holders are claims**: the live holder is the [`Claim`] it was granted to, candidate id
///   *and* [`Nonce`](crate::Nonce). A claim with the same id and another nonce is told the
///   election is held, like anyone else.
/// - **Idempotence**: [`try_acquire`](Self::try_acquire) by the live holder's claim renews (same
///   term), so a request whose reply was lost can be retried safely.
/// - **Stale leases change nothing**: [`renew`](Self::renew) and [`release`](Self::release) act
///   only when holder, nonce *and* term match the live lease, and otherwise say so
///   ([`Renewal::Lost`], [`Release::NotHeld`]).
/// - **Release** ends the lease at once (anyone may acquire without waiting) and keeps the term
///   counter.
/// - **Errors**: an unreachable coordinator is [`Error::Unavailable`](crate::Error::Unavailable)
///   (retryable); a record elect did not write is
///   [`Error::CorruptRecord`](crate::Error::CorruptRecord), and nothing is granted over it.
///   Nothing panics on bad data.
///
/// Requests may be abandoned at any `.await` (the elector times them out): an implementation
/// must leave the coordinator consistent whether or not the reply is read.
#[async_trait]
pub trait LeaseStore: fmt::Debug + Send + Sync + 'static {
    /// Grants the lease of `claim.election` to `claim` if the election is vacant or expired (a
    /// new term), renews it if `claim` (same candidate *and* nonce) already holds it live (same
    /// term), and otherwise reports the holder.
    async fn try_acquire(&self, claim: &Claim) -> Result<Acquire>;

    /// Extends `lease` by its TTL from the coordinator's now, if it is still the live lease
    /// (same holder, nonce and term, not expired).
    async fn renew(&self, lease: &Lease) -> Result<Renewal>;

    /// Ends `lease` now if it is still the live lease, keeping the term counter.
    async fn release(&self, lease: &Lease) -> Result<Release>;

    /// The live lease's holder, term and remaining time, or `None` when the election is vacant.
    async fn leader(&self, election: &ElectionName) -> Result<Option<LeaderInfo>>;

    /// A feed that fires when the election may have changed hands — on every release and on
    /// every new grant (not on renewals) — so waiting candidates try at once instead of
    /// sleeping out the TTL, and observers learn of a new leader within milliseconds.
    ///
    /// `Ok(None)` (the default) means the coordinator offers no such feed; candidates then sleep
    /// until the reported expiry. When this returns `Ok(Some(_))`, the subscription must already
    /// be confirmed by the coordinator: a release that completes after this call returns must
    /// wake the feed.
    async fn subscribe(&self, election: &ElectionName) -> Result<Option<ChangeFeed>> {
        let _ = election;
        Ok(None)
    }

    /// Lets the driver close its connections while the runtime still runs (the default does
    /// nothing). Call it once every elector on the store has shut down, before leaving `main`;
    /// the store (and its clones) must not be used afterwards. elect-mongo needs it: mongodb 3.x
    /// panics in a runtime worker when a client's background tasks are dropped by runtime
    /// teardown.
    async fn close(&self) {}

    /// A short name of the coordinator (`"redis"`, `"mysql"`, `"mongo"`, `"memory"`), for logs
    /// and the `store` label of elect's metrics. The default is `"custom"`.
    fn kind(&self) -> &'static str {
        "custom"
    }
}

#[async_trait]
impl<S: LeaseStore + ?Sized> LeaseStore for Arc<S> {
    async fn try_acquire(&self, claim: &Claim) -> Result<Acquire> {
        (**self).try_acquire(claim).await
    }

    async fn renew(&self, lease: &Lease) -> Result<Renewal> {
        (**self).renew(lease).await
    }

    async fn release(&self, lease: &Lease) -> Result<Release> {
        (**self).release(lease).await
    }

    async fn leader(&self, election: &ElectionName) -> Result<Option<LeaderInfo>> {
        (**self).leader(election).await
    }

    async fn subscribe(&self, election: &ElectionName) -> Result<Option<ChangeFeed>> {
        (**self).subscribe(election).await
    }

    async fn close(&self) {
        (**self).close().await
    }

    fn kind(&self) -> &'static str {
        (**self).kind()
    }
}

/// The sending side of a [`ChangeFeed`]: a backend keeps one per election it watches and calls
/// [`notify`](Self::notify) when it learns of a change (a pub/sub message, a change-stream event).
/// Notices coalesce: a burst wakes each feed once.
///
/// When the coordinator's event carries the new lease itself (a MongoDB change stream with the
/// document looked up), [`notify_leader`](Self::notify_leader) passes it along, so that an
/// [`Observer`](crate::Observer) can show the new leader without asking the store first.
#[derive(Debug)]
pub struct ChangeNotifier(watch::Sender<Notice>);

/// The last notice sent on a feed: how many were sent, and the leader the latest one carried.
#[derive(Debug, Clone, Default)]
struct Notice {
    count: u64,
    leader: Option<LeaderInfo>,
}

impl ChangeNotifier {
    /// A notifier with no feeds yet.
    pub fn new() -> Self {
        Self(watch::channel(Notice::default()).0)
    }

    /// Wakes every feed subscribed to this notifier.
    pub fn notify(&self) {
        self.send(None);
    }

    /// Wakes every feed, telling it that `leader` holds the election as of the event (its
    /// `remaining` counted from the event, by the coordinator's clock). Only for a leader the
    /// event itself carried: a hint that is wrong shows a wrong leader until the observer's
    /// next read.
    pub fn notify_leader(&self, leader: LeaderInfo) {
        self.send(Some(leader));
    }

    fn send(&self, leader: Option<LeaderInfo>) {
        self.0.send_modify(|n| {
            n.count = n.count.wrapping_add(1);
            n.leader = leader;
        });
    }

    /// A new feed that wakes on every later [`notify`](Self::notify).
    pub fn subscribe(&self) -> ChangeFeed {
        ChangeFeed(self.0.subscribe())
    }

    /// How many feeds are still listening.
    pub fn feeds(&self) -> usize {
        self.0.receiver_count()
    }
}

impl Default for ChangeNotifier {
    fn default() -> Self {
        Self::new()
    }
}

/// Tells a waiting candidate that an election may have changed hands. See
/// [`LeaseStore::subscribe`].
#[derive(Debug, Clone)]
pub struct ChangeFeed(watch::Receiver<Notice>);

impl ChangeFeed {
    /// Forgets notices received so far; call before asking the store who leads, so that a
    /// release that lands after the question still wakes the next [`changed`](Self::changed).
    pub fn mark_seen(&mut self) {
        self.0.borrow_and_update();
    }

    /// Waits for a notice not yet seen. Returns `false` once the feed has ended (the backend
    /// dropped its notifier, e.g. the subscription connection died); callers then fall back to
    /// sleeping until the reported expiry.
    pub async fn changed(&mut self) -> bool {
        self.0.changed().await.is_ok()
    }

    /// The leader the latest notice carried, when the coordinator's event said who holds the
    /// election after the change ([`ChangeNotifier::notify_leader`]); `None` when it did not
    /// say (most feeds), or said the election is vacant. A hint, not a read: notices are not
    /// ordered with the caller's own reads, so compare terms before trusting it over one.
    pub fn leader_hint(&self) -> Option<LeaderInfo> {
        self.0.borrow().leader.clone()
    }
}
