//! Many elections on one store in few requests: [`BatchStore`] and [`Batched`].
//!
//! A sharded service leads thousands of shards. Each shard is its own election with its own
//! [`Elector`](crate::Elector), lease, term, local safety deadline and guard; what they can
//! share is the request. [`Batched`] is a [`LeaseStore`] that gathers the acquisitions and
//! renewals its electors send within a short window and hands them to the coordinator as
//! **one** request per kind ([`BatchStore`]: one Lua script on Redis), then gives each
//! elector its own answer. For thousands of elections in one process, `shards::Shards`
//! drives them all from one task over the same [`BatchStore`] (a small record per election
//! instead of an elector each).
//!
//! ```
//! use elect_core::batch::{BatchConfig, Batched};
//! use elect_core::{ElectionName, Elector, MemoryStore};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> elect_core::Result<()> {
//! let store = Batched::new(MemoryStore::new(), BatchConfig::default());
//! let mut shards = Vec::new();
//! for shard in 0..100 {
//!     let election = ElectionName::new(format!("shard-{shard}"))?;
//!     shards.push(Elector::builder(store.clone(), election).start()?);
//! }
//! let guard = shards[7].leading().await?;
//! assert!(guard.term().get() > 0);
//! # Ok(())
//! # }
//! ```
//!
//! # Why it is as safe as one request per election
//!
//! - Every election in a batch is decided on its own by the coordinator: the same checks of
//!   holder, nonce and term as the single request (the Redis batch script calls the very
//!   function the single script calls), each with its own answer. A record elect did not write
//!   fails that election with [`Error::CorruptRecord`] and no
//!   other; a batch that fails as a whole (connection lost) fails each of its elections with
//!   the same retryable error.
//! - An elector's local safety deadline counts from when *it* asked, which is before the batch
//!   left (it waited in the queue) and so before the coordinator applied it: waiting in the
//!   queue shortens a leadership, never lengthens it.
//! - A caller that gave up (its request timed out) is dropped from the batch if the batch has
//!   not left; if it has, its answer is thrown away. Both are the lost reply every store must
//!   already survive: the request may or may not have landed.
//! - Releases and reads go out at once, on their own: a release is a hand-over that a window
//!   would only delay.
//!
//! # What it costs
//!
//! An acquisition or renewal waits for the window when a batch left less than
//! [`BatchConfig::linger`] ago, and goes out at once otherwise: at most one request per kind
//! per `linger` (plus one per [`BatchConfig::max_batch`] elections), and no added latency for
//! an election that asks alone.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{timeout_at, Instant};
use tracing::debug;

use crate::error::{Error, Result};
use crate::lease::{Acquire, Claim, LeaderInfo, Lease, Release, Renewal};
use crate::name::ElectionName;
use crate::store::{ChangeFeed, LeaseStore};

/// A [`LeaseStore`] that can also decide many elections in one request.
///
/// Each answer is the answer the single request would have given for that election:
/// `try_acquire_batch(claims)[i]` is `try_acquire(&claims[i])`, decided on its own, with its own
/// error. The answers come back in the order of the input, one per item; a store that returns
/// another number breaks the contract, and [`Batched`] then fails every item of that batch
/// with [`Error::Internal`]. The elections of a batch are distinct.
///
/// There is no default implementation: a store that would send the items one by one should not
/// pretend to batch.
#[async_trait]
pub trait BatchStore: LeaseStore {
    /// [`LeaseStore::try_acquire`] for every claim, in one request where the coordinator allows.
    async fn try_acquire_batch(&self, claims: &[Claim]) -> Vec<Result<Acquire>>;

    /// [`LeaseStore::renew`] for every lease, in one request where the coordinator allows.
    async fn renew_batch(&self, leases: &[Lease]) -> Vec<Result<Renewal>>;
}

#[async_trait]
impl<S: BatchStore + ?Sized> BatchStore for Arc<S> {
    async fn try_acquire_batch(&self, claims: &[Claim]) -> Vec<Result<Acquire>> {
        (**self).try_acquire_batch(claims).await
    }

    async fn renew_batch(&self, leases: &[Lease]) -> Vec<Result<Renewal>> {
        (**self).renew_batch(leases).await
    }
}

/// How [`Batched`] gathers requests.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BatchConfig {
    /// The shortest time between two batches of one kind (default 20 ms): a request that
    /// arrives sooner after the last batch waits for the rest of it, gathering others. The
    /// most added latency, and `1/linger` the most requests per second per kind.
    pub linger: Duration,
    /// The most elections in one request (default 500): larger batches are split.
    pub max_batch: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            linger: Duration::from_millis(20),
            max_batch: 500,
        }
    }
}

impl BatchConfig {
    /// Sets [`BatchConfig::linger`] (at most one second; zero sends whatever is queued at once).
    pub fn linger(mut self, linger: Duration) -> Self {
        self.linger = linger.min(Duration::from_secs(1));
        self
    }

    /// Sets [`BatchConfig::max_batch`] (at least 1).
    pub fn max_batch(mut self, max: usize) -> Self {
        self.max_batch = max.max(1);
        self
    }
}

/// One queued request and where its answer goes.
enum Op {
    Acquire(Claim, oneshot::Sender<Result<Acquire>>),
    Renew(Lease, oneshot::Sender<Result<Renewal>>),
}

/// A [`LeaseStore`] that sends acquisitions and renewals in batches through a [`BatchStore`].
/// Clones share the queue; give the same `Batched` to every elector of the process. See the
/// [module documentation](self).
pub struct Batched<S> {
    inner: Arc<Inner<S>>,
}

struct Inner<S> {
    store: Arc<S>,
    config: BatchConfig,
    queue: mpsc::UnboundedSender<Op>,
    /// Taken by the request that starts the task that sends the batches (so that
    /// [`Batched::new`] needs no runtime); put back when that task ends — its runtime shut
    /// down — so that a request on another runtime starts it again.
    pending: Arc<Mutex<Option<mpsc::UnboundedReceiver<Op>>>>,
}

/// The gathering task's hold on the queue, put back where [`Batched::enqueue`] finds it when
/// the task ends or is dropped with its runtime. The requests it had gathered and not sent
/// are answered with an error (their senders drop); those still queued wait for the next task.
struct Held {
    queue: Option<mpsc::UnboundedReceiver<Op>>,
    slot: Arc<Mutex<Option<mpsc::UnboundedReceiver<Op>>>>,
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(queue) = self.queue.take() {
            *self.slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(queue);
        }
    }
}

impl<S> Clone for Batched<S> {
    fn clone(&self) -> Self {
        Batched {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for Batched<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batched")
            .field("store", &self.inner.store)
            .field("config", &self.inner.config)
            .finish()
    }
}

impl<S: BatchStore> Batched<S> {
    /// Batches the requests sent to `store`. The task that sends batches starts with the first
    /// request, on its runtime, and ends when the last clone is dropped; if that runtime shuts
    /// down first, the next request (on another runtime) starts it again.
    pub fn new(store: S, config: BatchConfig) -> Batched<S> {
        let (queue, pending) = mpsc::unbounded_channel();
        Batched {
            inner: Arc::new(Inner {
                store: Arc::new(store),
                config,
                queue,
                pending: Arc::new(Mutex::new(Some(pending))),
            }),
        }
    }

    /// The store the batches go to.
    pub fn store(&self) -> &S {
        &self.inner.store
    }

    fn enqueue(&self, op: Op) {
        let pending = self
            .inner
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(pending) = pending {
            let store = Arc::clone(&self.inner.store);
            let held = Held {
                queue: Some(pending),
                slot: Arc::clone(&self.inner.pending),
            };
            tokio::spawn(gather(store, self.inner.config.clone(), held));
        }
        // The gathering task ends only when every sender is gone; this one is still here.
        let _ = self.inner.queue.send(op);
    }

    async fn ask<T>(&self, op: impl FnOnce(oneshot::Sender<Result<T>>) -> Op) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        self.enqueue(op(tx));
        rx.await.unwrap_or_else(|_| {
            Err(Error::Internal {
                message: "the batch task ended without answering".to_owned(),
            })
        })
    }
}

/// Gathers requests into batches, at most one batch per `linger` (a request after a quiet
/// spell goes at once), and sends each batch from a task of its own so that a slow batch does
/// not hold up the next.
async fn gather<S: BatchStore>(store: Arc<S>, config: BatchConfig, mut held: Held) {
    let Some(queue) = held.queue.as_mut() else {
        return;
    };
    let mut last_sent: Option<Instant> = None;
    while let Some(first) = queue.recv().await {
        let mut acquires = Vec::new();
        let mut renewals = Vec::new();
        let mut push = |op| match op {
            Op::Acquire(claim, tx) => acquires.push((claim, tx)),
            Op::Renew(lease, tx) => renewals.push((lease, tx)),
        };
        push(first);
        let until = match last_sent {
            Some(at) => (at + config.linger).max(Instant::now()),
            None => Instant::now(),
        };
        let mut open = true;
        // Everything already queued goes with this batch (`try_recv`, which tokio's cooperative
        // budget does not cut short as it does `recv` under a burst), then wait out the window.
        loop {
            match queue.try_recv() {
                Ok(op) => {
                    push(op);
                    continue;
                }
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
                Err(mpsc::error::TryRecvError::Empty) => {}
            }
            match timeout_at(until, queue.recv()).await {
                Ok(Some(op)) => push(op),
                Ok(None) => {
                    open = false;
                    break;
                }
                Err(_) => break,
            }
        }
        last_sent = Some(Instant::now());
        send(&store, &config, acquires, renewals);
        if !open {
            break;
        }
    }
}

/// Sends the batches, split at `max_batch`, each in a task of its own.
fn send<S: BatchStore>(
    store: &Arc<S>,
    config: &BatchConfig,
    acquires: Vec<(Claim, oneshot::Sender<Result<Acquire>>)>,
    renewals: Vec<(Lease, oneshot::Sender<Result<Renewal>>)>,
) {
    // A caller that gave up is not sent for.
    let renewals = live(renewals);
    let acquires = live(acquires);
    for chunk in chunks(renewals, config.max_batch) {
        let store = Arc::clone(store);
        tokio::spawn(async move {
            let (leases, txs): (Vec<_>, Vec<_>) = chunk.into_iter().unzip();
            debug!(size = leases.len(), "renewal batch");
            answer(txs, store.renew_batch(&leases).await);
        });
    }
    for chunk in chunks(acquires, config.max_batch) {
        let store = Arc::clone(store);
        tokio::spawn(async move {
            let (claims, txs): (Vec<_>, Vec<_>) = chunk.into_iter().unzip();
            debug!(size = claims.len(), "acquisition batch");
            answer(txs, store.try_acquire_batch(&claims).await);
        });
    }
}

fn live<T, A>(items: Vec<(T, oneshot::Sender<A>)>) -> Vec<(T, oneshot::Sender<A>)> {
    items
        .into_iter()
        .filter(|(_, tx)| !tx.is_closed())
        .collect()
}

fn chunks<T>(mut items: Vec<T>, max: usize) -> Vec<Vec<T>> {
    let mut out = Vec::with_capacity(items.len().div_ceil(max.max(1)));
    while items.len() > max {
        let rest = items.split_off(max);
        out.push(std::mem::replace(&mut items, rest));
    }
    if !items.is_empty() {
        out.push(items);
    }
    out
}

/// Gives each caller its answer; a store that answered a different number of items broke the
/// contract, and no item's answer can be trusted.
fn answer<T>(txs: Vec<oneshot::Sender<Result<T>>>, answers: Vec<Result<T>>) {
    if answers.len() != txs.len() {
        let message = format!(
            "the store answered {} items of a batch of {}",
            answers.len(),
            txs.len()
        );
        for tx in txs {
            let _ = tx.send(Err(Error::Internal {
                message: message.clone(),
            }));
        }
        return;
    }
    for (tx, answer) in txs.into_iter().zip(answers) {
        // The caller may have given up meanwhile: the lost reply every store survives.
        let _ = tx.send(answer);
    }
}

#[async_trait]
impl<S: BatchStore> LeaseStore for Batched<S> {
    async fn try_acquire(&self, claim: &Claim) -> Result<Acquire> {
        let claim = claim.clone();
        self.ask(|tx| Op::Acquire(claim, tx)).await
    }

    async fn renew(&self, lease: &Lease) -> Result<Renewal> {
        let lease = lease.clone();
        self.ask(|tx| Op::Renew(lease, tx)).await
    }

    async fn release(&self, lease: &Lease) -> Result<Release> {
        self.inner.store.release(lease).await
    }

    async fn leader(&self, election: &ElectionName) -> Result<Option<LeaderInfo>> {
        self.inner.store.leader(election).await
    }

    async fn subscribe(&self, election: &ElectionName) -> Result<Option<ChangeFeed>> {
        self.inner.store.subscribe(election).await
    }

    async fn close(&self) {
        self.inner.store.close().await
    }

    fn kind(&self) -> &'static str {
        self.inner.store.kind()
    }
}

/// For [`BatchStore`] implementations: decides `claims` with `many` where it can, and with the
/// single [`LeaseStore::try_acquire`] where it cannot.
///
/// `many` gets the positions in `claims` of the first claim for each election (a statement may
/// not touch one row twice) and answers each of them, in that order, with its answer or `None`
/// where the single request must decide (say, the claim's own live lease, or a race it lost).
/// When `many` fails, every claim it was given fails with that error; the second and later
/// claims for an election, and the undecided ones, go the single way, one after another.
pub async fn acquire_each<S: LeaseStore + ?Sized>(
    store: &S,
    claims: &[Claim],
    many: impl AsyncFnOnce(&[usize]) -> Result<Vec<Option<Result<Acquire>>>>,
) -> Vec<Result<Acquire>> {
    let mut seen = std::collections::HashSet::new();
    let first: Vec<usize> = (0..claims.len())
        .filter(|&i| seen.insert(claims[i].election.as_str()))
        .collect();
    let mut answers: Vec<Option<Result<Acquire>>> = claims.iter().map(|_| None).collect();
    match many(&first).await {
        Ok(decided) => {
            for (i, answer) in first.iter().zip(decided) {
                answers[*i] = answer;
            }
        }
        Err(e) => {
            for i in &first {
                answers[*i] = Some(Err(e.clone()));
            }
        }
    }
    let mut out = Vec::with_capacity(claims.len());
    for (claim, answer) in claims.iter().zip(answers) {
        out.push(match answer {
            Some(answer) => answer,
            None => store.try_acquire(claim).await,
        });
    }
    out
}

/// For [`BatchStore`] implementations: renews `leases` through `many`, at most `chunk` of them
/// per call, which answers per lease of its chunk whether it was renewed (in order). A call
/// that fails fails the leases of its chunk, and no other, with its error.
pub async fn renew_in_chunks<'a, F, Fut>(
    leases: &'a [Lease],
    chunk: usize,
    mut many: F,
) -> Vec<Result<Renewal>>
where
    F: FnMut(&'a [Lease]) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<bool>>>,
{
    let mut out = Vec::with_capacity(leases.len());
    for part in leases.chunks(chunk.max(1)) {
        match many(part).await {
            Ok(renewed) if renewed.len() == part.len() => {
                out.extend(part.iter().zip(renewed).map(|(lease, renewed)| {
                    Ok(if renewed {
                        Renewal::Renewed(lease.clone())
                    } else {
                        Renewal::Lost
                    })
                }))
            }
            Ok(renewed) => {
                let e = Error::Internal {
                    message: format!(
                        "a batch renewal answered {} of {} leases",
                        renewed.len(),
                        part.len()
                    ),
                };
                out.extend(part.iter().map(|_| Err(e.clone())));
            }
            Err(e) => out.extend(part.iter().map(|_| Err(e.clone()))),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_split_at_the_maximum_and_keep_the_order() {
        let split = chunks((0..7).collect(), 3);
        assert_eq!(split, vec![vec![0, 1, 2], vec![3, 4, 5], vec![6]]);
        assert_eq!(chunks(Vec::<u8>::new(), 3), Vec::<Vec<u8>>::new());
        assert_eq!(chunks(vec![1], 1), vec![vec![1]]);
    }

    /// One `Batched` used from two runtimes in turn (as by two `#[tokio::test]`s sharing a
    /// store): the second runtime's requests are answered although the first runtime, which
    /// ran the batch task, is gone.
    #[test]
    fn a_batched_store_outlives_the_runtime_that_first_used_it() {
        use crate::lease::Ttl;
        use crate::name::CandidateId;
        let store = Batched::new(crate::MemoryStore::new(), BatchConfig::default());
        for round in 0..3 {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let claim = Claim::new(
                ElectionName::new(format!("round-{round}")).unwrap(),
                CandidateId::new("a").unwrap(),
                Ttl::new(Duration::from_secs(1)).unwrap(),
            );
            let answer = runtime.block_on(store.try_acquire(&claim));
            assert!(
                matches!(answer, Ok(Acquire::Granted(_))),
                "round {round}: {answer:?}"
            );
        }
    }

    #[test]
    fn a_wrong_number_of_answers_fails_every_item() {
        let (a, ra) = oneshot::channel::<Result<u8>>();
        let (b, rb) = oneshot::channel::<Result<u8>>();
        answer(vec![a, b], vec![Ok(1)]);
        for mut rx in [ra, rb] {
            assert!(matches!(rx.try_recv(), Ok(Err(Error::Internal { .. }))));
        }
    }

    #[tokio::test]
    async fn the_memory_store_decides_each_election_of_a_batch_on_its_own() {
        let store = crate::MemoryStore::new();
        crate::conformance::one_election_twice_in_a_batch_is_granted_once(&store).await;
        crate::conformance::a_renewal_batch_tells_each_lease_apart(&store).await;
    }
}
