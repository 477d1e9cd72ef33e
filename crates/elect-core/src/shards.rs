//! [`Shards`]: one process campaigning in many elections from **one** task, in batched requests.
//!
//! A sharded service leads thousands of shards. An [`Elector`](crate::Elector) per shard works
//! (through [`Batched`](crate::batch::Batched) its requests are shared), but each elector is two
//! tasks, two channels and a watch: about 10 KB of memory per shard. `Shards` keeps one small
//! record per election instead, and drives all of them from one task with one timer queue:
//! due acquisitions go to the store as one [`BatchStore::try_acquire_batch`], due renewals as
//! one [`BatchStore::renew_batch`], at most one batch of each per [`linger`](ShardsBuilder::linger).
//!
//! ```
//! use std::time::Duration;
//! use elect_core::shards::Shards;
//! use elect_core::{CandidateId, ElectionName, MemoryStore};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap().block_on(async {
//! let names = (0..100).map(|i| ElectionName::new(format!("shard-{i}")));
//! let shards = Shards::builder(MemoryStore::new(), CandidateId::new("worker-1")?)
//!     .ttl(Duration::from_secs(10))
//!     .start(names.collect::<Result<Vec<_>, _>>()?)?;
//! tokio::time::sleep(Duration::from_millis(100)).await;
//! assert_eq!(shards.leaders().len(), 100);
//! let shard = ElectionName::new("shard-7")?;
//! let guard = shards.guard(&shard).expect("leading shard-7");
//! println!("shard-7 with fencing token {}", guard.term());
//! shards.shutdown().await?;
//! # Ok::<(), elect_core::Error>(())
//! # }).unwrap();
//! ```
//!
//! # The same safety as one elector per election
//!
//! Every election keeps its own claim (a new [`Nonce`] after each leadership), lease, term and
//! [`LeaderGuard`]; the coordinator decides each election of a batch on its own
//! ([`BatchStore`]'s contract). An election's local safety deadline counts from the instant
//! *before* its batch was sent: `t_send + TTL·(1 − ρ) − ε`, exactly as an elector's. The
//! deadline is a timer of the driving task, and the guard checks it itself
//! ([`LeaderGuard::is_leading`]), so a late or starved task never stretches a leadership. A
//! batch that fails or times out fails each of its elections on its own: a leader retries with
//! backoff until its deadline, then steps down. A release is sent only once no renewal of that
//! election is in flight, so a late renewal cannot revive a lease this process has let go.
//!
//! # Balancing
//!
//! With [`balance`](ShardsBuilder::balance), `k` processes campaigning in the same N
//! elections each lead ⌊N/k⌋ or ⌈N/k⌉ of them once stable, as Kinesis's lease balancing
//! does, but without its lease stealing: **an election changes hands only by a release**.
//!
//! - *Counting.* Each process holds one *seat*: an election of its own among
//!   `<seats>.0 … <seats>.<max − 1>`, acquired and renewed in the same batches as the others.
//!   Every TTL/2 it reads who holds each seat (a *census*: one [`leader`](crate::LeaseStore::leader)
//!   read per seat, so keep `max_processes` near the most processes you run). `k` is the
//!   number of seats held; a process's share is ⌊N/k⌋, plus one for the first `N mod k`
//!   seats in order, so the shares add up to N. A process that has just started asks for
//!   every election once (as one not counted yet: see *Taking*) and subscribes to the change
//!   feeds of those it follows; only then does it ask for its seat (or a TTL after start, if
//!   its feeds fail), and the others count it at their next census. The others release
//!   their excess at that census, and a newcomer not yet subscribed would not hear of it.
//! - *Taking.* A process below its share asks for a free election at once. One at or above
//!   it (or not counted yet) waits a tenth of the TTL first, leaving the election to one
//!   below; if none has taken it by then, it does. So every election keeps a leader (a
//!   process that dies leaves its elections to the next census's shares, late by at most that
//!   tenth) and shares even out through releases rather than refusals.
//! - *Giving.* At each census a process that leads more than its share resigns the excess:
//!   each is released at once (a follower below its share takes it on the store's change
//!   feed, or at its next poll) and sits out the [resign pause](ShardsBuilder::resign_pause).
//!
//! Balancing decides only *when* a process asks and what it gives up; the coordinator still
//! decides every election on its own, so leases, terms, deadlines and guards are exactly as
//! without it. Views of `k` may differ for a census period while processes join or leave;
//! what that costs is an extra release, never two leaders.
//!
//! # What it does not do
//!
//! - Errors are retried with backoff, never aborted on (there is no [`ErrorPolicy`](crate::ErrorPolicy)):
//!   one election's corrupt record must not stop the others. Failures show in
//!   [`ShardEvent::Error`] and the request metrics.
//! - No metric series per election: a `Shards` records its totals (elections led, transitions,
//!   with balancing the share and the processes counted; see [`metrics`]).
//! - The set of elections is fixed at [`start`](ShardsBuilder::start).
//! - Change feeds: a follower subscribes to its election's feed (when the store has one) and
//!   asks again on a notice, as an elector does; the subscription is a small task per followed
//!   election, so a process that follows many elections pays for them.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::{sleep, sleep_until, timeout, Instant};
use tracing::{debug, info, info_span, warn, Instrument};

use crate::batch::BatchStore;
use crate::elector::{
    GuardControl, LeaderGuard, StepDown, DEFAULT_CLOCK_DRIFT, DEFAULT_SAFETY_MARGIN, DEFAULT_TTL,
};
use crate::error::{Error, Result};
use crate::lease::{Acquire, Claim, Lease, Nonce, Release, Renewal, Ttl};
use crate::metrics;
use crate::name::{CandidateId, ElectionName};
use crate::rand::Rng;
use crate::term::Term;

/// What happened to one election of a [`Shards`], from [`Shards::events`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ShardEvent {
    /// This process leads `election` from now on, until `guard` ends.
    Elected {
        /// The election.
        election: ElectionName,
        /// The leadership's guard (its term is the fencing token).
        guard: LeaderGuard,
    },
    /// This process stopped leading `election`.
    SteppedDown {
        /// The election.
        election: ElectionName,
        /// The term of the leadership that ended.
        term: Term,
        /// Why.
        reason: StepDown,
    },
    /// A request for `election` failed; it is retried with backoff.
    Error {
        /// The election.
        election: ElectionName,
        /// What failed.
        error: Error,
    },
}

/// Where a balanced [`Shards`] stands; from [`Shards::share`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Share {
    /// The processes counted at the last census (seats held), this one included.
    pub processes: usize,
    /// How many of the elections this process should lead: ⌊N/k⌋ or ⌈N/k⌉.
    pub share: usize,
}

/// Configures [`Shards`]; from [`Shards::builder`].
#[must_use = "call start() to campaign"]
pub struct ShardsBuilder {
    store: Arc<dyn BatchStore>,
    candidate: CandidateId,
    ttl: Duration,
    clock_drift: f64,
    safety_margin: Duration,
    request_timeout: Option<Duration>,
    resign_pause: Option<Duration>,
    linger: Duration,
    max_batch: usize,
    balance: Option<(ElectionName, usize)>,
}

impl std::fmt::Debug for ShardsBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardsBuilder")
            .field("store", &self.store.kind())
            .field("candidate", &self.candidate)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl ShardsBuilder {
    /// The lease TTL of every election (default 10 s); renewals every TTL/3.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// The clock-rate bound ρ (default 0.01), as [`ElectorBuilder::clock_drift`](crate::ElectorBuilder::clock_drift).
    pub fn clock_drift(mut self, rho: f64) -> Self {
        self.clock_drift = rho;
        self
    }

    /// The safety margin ε (default 2 ms), as [`ElectorBuilder::safety_margin`](crate::ElectorBuilder::safety_margin).
    pub fn safety_margin(mut self, margin: Duration) -> Self {
        self.safety_margin = margin;
        self
    }

    /// How long one batch may take before each of its elections counts it as failed (default
    /// TTL/3).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = Some(timeout);
        self
    }

    /// How long an election stays out of the race after [`Shards::resign`] (default one TTL).
    pub fn resign_pause(mut self, pause: Duration) -> Self {
        self.resign_pause = Some(pause);
        self
    }

    /// The shortest time between two sends (default 20 ms, at most 1 s): due requests wait for
    /// the rest of it, gathering others. At most `2/linger` requests per second, plus one per
    /// [`max_batch`](Self::max_batch) elections.
    pub fn linger(mut self, linger: Duration) -> Self {
        self.linger = linger.min(Duration::from_secs(1));
        self
    }

    /// The most elections in one request (default 500, at least 1).
    pub fn max_batch(mut self, max: usize) -> Self {
        self.max_batch = max.max(1);
        self
    }

    /// Shares the elections evenly among the processes that campaign in them: with `k`
    /// processes each leads ⌊N/k⌋ or ⌈N/k⌉ of the N elections once stable, and an election
    /// changes hands only by a release (a held lease is never taken). Every process must list
    /// the same elections and the same `seats` and `max_processes`. See
    /// [Balancing](self#balancing) for how, and what it costs.
    ///
    /// `seats` names a group of `max_processes` (1 to 1 024) extra elections,
    /// `<seats>.0` … `<seats>.<max_processes − 1>`: each process holds one while it runs, so
    /// that the others can count it before it leads anything. A process that finds every seat
    /// taken is not counted; it still takes elections no one else wants, late.
    ///
    /// ```
    /// use std::time::Duration;
    /// use elect_core::shards::Shards;
    /// use elect_core::{CandidateId, ElectionName, MemoryStore};
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap().block_on(async {
    /// let store = MemoryStore::new(); // two processes sharing one coordinator
    /// let names: Vec<ElectionName> =
    ///     (0..10).map(|i| ElectionName::new(format!("shard-{i}"))).collect::<Result<_, _>>()?;
    /// let worker = |id: &str| -> elect_core::Result<Shards> {
    ///     Shards::builder(store.clone(), CandidateId::new(id)?)
    ///         .ttl(Duration::from_secs(2))
    ///         .balance(ElectionName::new("workers")?, 16)
    ///         .start(names.clone())
    /// };
    /// let (a, b) = (worker("worker-a")?, worker("worker-b")?);
    /// tokio::time::sleep(Duration::from_secs(10)).await;
    /// assert_eq!((a.leaders().len(), b.leaders().len()), (5, 5));
    /// # Ok::<(), elect_core::Error>(())
    /// # }).unwrap();
    /// ```
    pub fn balance(mut self, seats: ElectionName, max_processes: usize) -> Self {
        self.balance = Some((seats, max_processes));
        self
    }

    /// Starts campaigning in `elections` (distinct; at least one), from one task on the
    /// current tokio runtime.
    pub fn start(self, elections: impl IntoIterator<Item = ElectionName>) -> Result<Shards> {
        let ttl = Ttl::new(self.ttl)?;
        if !(0.0..=0.1).contains(&self.clock_drift) || self.clock_drift.is_nan() {
            return Err(Error::config(format!(
                "clock drift {} must be between 0 and 0.1",
                self.clock_drift
            )));
        }
        if self.safety_margin >= ttl.get() / 10 {
            return Err(Error::config(format!(
                "safety margin {:?} must be below a tenth of the TTL {:?}",
                self.safety_margin,
                ttl.get()
            )));
        }
        let request_timeout = self.request_timeout.unwrap_or(ttl.get() / 3);
        if request_timeout.is_zero() || request_timeout > Ttl::MAX {
            return Err(Error::config(format!(
                "request timeout {request_timeout:?} must be above zero and at most one day"
            )));
        }
        let resign_pause = self.resign_pause.unwrap_or(ttl.get());
        if resign_pause > Ttl::MAX {
            return Err(Error::config(format!(
                "resign pause {resign_pause:?} must be at most one day"
            )));
        }
        let mut names: Vec<ElectionName> = elections.into_iter().collect();
        names.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
        if let Some(twice) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(Error::config(format!(
                "election {} is listed twice",
                twice[0]
            )));
        }
        if names.is_empty() {
            return Err(Error::config("Shards needs at least one election"));
        }
        if names.len() > u32::MAX as usize {
            return Err(Error::config("too many elections for one Shards"));
        }
        let seats = match &self.balance {
            None => Vec::new(),
            Some((_, max)) if !(1..=MAX_SEATS).contains(max) => {
                return Err(Error::config(format!(
                    "balance: max_processes {max} must be between 1 and {MAX_SEATS}"
                )));
            }
            Some((prefix, max)) => {
                let seats = (0..*max)
                    .map(|i| ElectionName::new(format!("{prefix}.{i}")))
                    .collect::<Result<Vec<_>>>()
                    .map_err(|e| Error::config(format!("balance: seat names: {e}")))?;
                if let Some(seat) = seats.iter().find(|seat| names.binary_search(seat).is_ok()) {
                    return Err(Error::config(format!(
                        "balance: seat {seat} is also one of the elections"
                    )));
                }
                seats
            }
        };
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| Error::config("Shards::start must be called inside a tokio runtime"))?;
        let n = names.len();
        let all = n + seats.len();
        let (events, _) = broadcast::channel((2 * n).clamp(64, 4096));
        let (commands, command_rx) = mpsc::channel(64);
        let (stopped_tx, stopped) = watch::channel(None);
        let metrics = metrics::ShardsWho::new(
            &self.candidate,
            self.balance.as_ref().map(|(seats, _)| seats),
        );
        let shared = Arc::new(Shared {
            names: names.into_boxed_slice(),
            seats: seats.into_boxed_slice(),
            candidate: self.candidate,
            guards: Mutex::new((0..all).map(|_| None).collect()),
            share: Mutex::new(None),
            events,
            metrics,
        });
        let (done_tx, done) = mpsc::unbounded_channel();
        let (notice_tx, notices) = mpsc::unbounded_channel();
        let now = Instant::now();
        let mut rng = Rng::from_entropy();
        let jitter = (ttl.get() / 400).min(Duration::from_millis(5));
        let balancer = (all > n).then(|| Balancer {
            held: vec![Seat::Free; all - n],
            quota: None,
            defer: (ttl.get() / 10).max(self.linger * 4),
            census: None,
            seating: None,
            warned: false,
            hearing: false,
            unanswered: n,
            subscribing: 0,
            since: now,
        });
        let driver = Driver {
            store: self.store,
            shared: shared.clone(),
            ttl,
            believe: ttl.get().mul_f64(1.0 - self.clock_drift) - self.safety_margin,
            request_timeout,
            resign_pause,
            linger: self.linger,
            max_batch: self.max_batch,
            // Seats (after the elections) wait for the census to pick one.
            slots: (0..all)
                .map(|i| Slot {
                    nonce: Nonce::random(),
                    phase: Phase::Follower,
                    timer: if i < n { now } else { now + Ttl::MAX },
                    busy: false,
                    noticed: false,
                    out: i >= n,
                    deferred: false,
                    failures: 0,
                    feed: None,
                    subscribing: false,
                    answered: i >= n,
                })
                .collect(),
            timers: (0..n as u32)
                .map(|i| Reverse((now + rng.duration_up_to(jitter), i)))
                .collect(),
            due: Vec::new(),
            last_sent: None,
            batches: 0,
            commands: command_rx,
            done_tx,
            done,
            notice_tx,
            notices,
            releasing: HashMap::new(),
            feeds: FeedSupport::Unknown,
            rng,
            stopped: stopped_tx,
            balancer,
            leading: 0,
        };
        // The timers above carry their own jittered instants; make the slots agree.
        let mut driver = driver;
        for Reverse((at, i)) in driver.timers.iter() {
            driver.slots[*i as usize].timer = *at;
        }
        let span = info_span!("shards", candidate = %shared.candidate, elections = n);
        runtime.spawn(driver.run().instrument(span));
        Ok(Shards {
            shared,
            commands,
            stopped,
        })
    }
}

/// One process campaigning in many elections from one task; see the [module documentation](self).
///
/// Dropping it stops the campaign and releases every lease it holds (in the background).
#[derive(Debug)]
pub struct Shards {
    shared: Arc<Shared>,
    commands: mpsc::Sender<Command>,
    stopped: watch::Receiver<Option<Result<()>>>,
}

#[derive(Debug)]
struct Shared {
    /// Sorted: an election's position is its slot.
    names: Box<[ElectionName]>,
    /// With balancing, the seats: slot `names.len() + j` is seat `j`.
    seats: Box<[ElectionName]>,
    candidate: CandidateId,
    /// The guard of each election this process leads.
    guards: Mutex<Vec<Option<LeaderGuard>>>,
    /// Balancing: this process's share, while it is counted.
    share: Mutex<Option<Share>>,
    events: broadcast::Sender<ShardEvent>,
    metrics: metrics::ShardsWho,
}

impl Shared {
    /// The name of slot `i`: an election, or (after them) a seat.
    fn name(&self, i: usize) -> &ElectionName {
        self.names
            .get(i)
            .unwrap_or_else(|| &self.seats[i - self.names.len()])
    }

    fn slot(&self, election: &ElectionName) -> Option<usize> {
        self.names
            .binary_search_by(|n| n.as_str().cmp(election.as_str()))
            .ok()
    }

    /// Sets what [`Shards::share`] says and the share metrics show.
    fn set_share(&self, share: Option<Share>) {
        *self.share.lock().unwrap_or_else(|p| p.into_inner()) = share;
        self.metrics.share(share.map(|s| (s.processes, s.share)));
    }

    fn guards(&self) -> std::sync::MutexGuard<'_, Vec<Option<LeaderGuard>>> {
        self.guards.lock().unwrap_or_else(|p| p.into_inner())
    }
}

enum Command {
    Resign(usize, oneshot::Sender<Result<()>>),
    Shutdown,
}

impl Shards {
    /// Starts configuring a process's campaign in many elections on `store`, as `candidate`.
    pub fn builder(store: impl BatchStore, candidate: CandidateId) -> ShardsBuilder {
        ShardsBuilder {
            store: Arc::new(store),
            candidate,
            ttl: DEFAULT_TTL,
            clock_drift: DEFAULT_CLOCK_DRIFT,
            safety_margin: DEFAULT_SAFETY_MARGIN,
            request_timeout: None,
            resign_pause: None,
            linger: Duration::from_millis(20),
            max_batch: 500,
            balance: None,
        }
    }

    /// This process's candidate id in every election.
    pub fn candidate(&self) -> &CandidateId {
        &self.shared.candidate
    }

    /// The elections campaigned in, sorted.
    pub fn elections(&self) -> &[ElectionName] {
        &self.shared.names
    }

    /// The guard of `election`'s leadership when this process leads it now.
    pub fn guard(&self, election: &ElectionName) -> Option<LeaderGuard> {
        let slot = self.shared.slot(election)?;
        self.shared.guards()[slot]
            .as_ref()
            .filter(|g| g.is_leading())
            .cloned()
    }

    /// Whether this process leads `election` now.
    pub fn is_leader(&self, election: &ElectionName) -> bool {
        self.guard(election).is_some()
    }

    /// The elections this process leads now, sorted.
    pub fn leaders(&self) -> Vec<ElectionName> {
        let guards = self.shared.guards();
        self.shared
            .names
            .iter()
            .zip(guards.iter())
            .filter(|(_, g)| g.as_ref().is_some_and(LeaderGuard::is_leading))
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// With [`balance`](ShardsBuilder::balance): how many processes the last census counted
    /// and this process's share of the elections. `None` without balancing, and while this
    /// process is not counted (before it holds a seat, or when every seat is taken).
    pub fn share(&self) -> Option<Share> {
        *self.shared.share.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A stream of [`ShardEvent`]s from now on. A slow reader misses events (`broadcast`
    /// semantics: `recv` says how many); read [`leaders`](Self::leaders) to catch up.
    pub fn events(&self) -> broadcast::Receiver<ShardEvent> {
        self.shared.events.subscribe()
    }

    /// Steps down in `election` now if leading, releases its lease so another process takes
    /// over at once, and stays out of it for the resign pause. Returns once the release was
    /// answered; a no-op when not leading.
    pub async fn resign(&self, election: &ElectionName) -> Result<()> {
        let slot = self
            .shared
            .slot(election)
            .ok_or_else(|| Error::config(format!("{election} is not one of these shards")))?;
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Resign(slot, tx)).await.is_err() {
            return Err(self.stopped_error());
        }
        rx.await.unwrap_or_else(|_| Err(self.stopped_error()))
    }

    /// Steps down everywhere, releases every lease held and stops. Returns once the releases
    /// were answered: `Err` with the first failed release (that lease expires after its TTL).
    pub async fn shutdown(&self) -> Result<()> {
        let _ = self.commands.send(Command::Shutdown).await;
        let mut stopped = self.stopped.clone();
        let outcome = stopped.wait_for(Option::is_some).await;
        match outcome {
            Ok(outcome) => outcome.clone().unwrap_or(Ok(())),
            Err(_) => Err(self.stopped_error()),
        }
    }

    fn stopped_error(&self) -> Error {
        Error::Stopped {
            election: format!("{} shards", self.shared.names.len()),
        }
    }
}

/// Where an election stands in the driving task.
enum Phase {
    /// Not leading: acquire at the slot's timer.
    Follower,
    /// Leading until `deadline`; renew at `renew_at`.
    Leader {
        control: GuardControl,
        deadline: Instant,
        renew_at: Instant,
    },
}

struct Slot {
    /// The nonce of this election's current claim; replaced after every leadership.
    nonce: Nonce,
    phase: Phase,
    /// The instant of this slot's live timer entry (others in the queue are stale).
    timer: Instant,
    /// A request for it is in flight.
    busy: bool,
    /// A change notice arrived while an acquisition was in flight: ask again at once.
    noticed: bool,
    /// Sitting out after a resign: notices do not wake it.
    out: bool,
    /// Balancing: this election's acquisition was put off once already (the process had its
    /// share); the next one goes.
    deferred: bool,
    failures: u8,
    feed: Option<AbortHandle>,
    /// Its feed task's subscribe has not answered yet.
    subscribing: bool,
    /// Its first acquisition has been answered.
    answered: bool,
}

#[derive(PartialEq)]
enum FeedSupport {
    Unknown,
    Unsupported,
    Supported,
}

/// The answer to one batch.
enum Done {
    Acquired(Instant, Vec<u32>, Vec<Result<Acquire>>),
    Renewed(Instant, Vec<u32>, Vec<Result<Renewal>>),
    /// Slot's feed task's subscribe answered: `Some(true)` subscribed, `Some(false)` the
    /// store offers no feeds, `None` it failed (a later follow subscribes again).
    Subscribed(u32, Option<bool>),
    /// A resigned leadership's release was answered (`true`: released or already gone).
    Released(u32, bool),
    /// Balancing: each seat as read (`None`: not read, the store unavailable).
    Census(Vec<Option<Seat>>),
}

/// A seat as the census read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seat {
    Free,
    /// Held by a live process: counted.
    Taken,
    /// Its record is not elect's (a foreign write, a corrupt row): nobody sits there, and
    /// nobody can; not counted, not asked for.
    Unusable,
}

/// The most seats [`ShardsBuilder::balance`] takes.
const MAX_SEATS: usize = 1024;

/// Balancing's state: who sits in the seats, and this process's share.
struct Balancer {
    /// Each seat, as the census last read it (this process's own always `Taken`).
    held: Vec<Seat>,
    /// How many of the elections this process should lead: `None` until it holds a seat and
    /// has counted the others.
    quota: Option<usize>,
    /// How long a process with its share waits before taking a free election: time for one
    /// below its share to take it first.
    defer: Duration,
    /// Asks the census task for a count now; and the task, aborted at shutdown.
    census: Option<(mpsc::UnboundedSender<()>, AbortHandle)>,
    /// The seat being acquired, if any.
    seating: Option<usize>,
    /// Warned that every seat was taken.
    warned: bool,
    /// Whether this process hears of the elections' releases: every election's first
    /// acquisition answered and every follower's feed subscribed (or the store has none), or
    /// a TTL since start. Until then it does not ask for its first seat (see [`Driver::hears`]).
    hearing: bool,
    /// Elections whose first acquisition has not been answered.
    unanswered: usize,
    /// Feed tasks whose subscribe has not answered.
    subscribing: usize,
    /// When the campaign started.
    since: Instant,
}

struct Driver {
    store: Arc<dyn BatchStore>,
    shared: Arc<Shared>,
    ttl: Ttl,
    believe: Duration,
    request_timeout: Duration,
    resign_pause: Duration,
    linger: Duration,
    max_batch: usize,
    slots: Vec<Slot>,
    timers: BinaryHeap<Reverse<(Instant, u32)>>,
    /// Slots whose request is due, waiting for the next send.
    due: Vec<u32>,
    last_sent: Option<Instant>,
    /// Batches in flight.
    batches: usize,
    commands: mpsc::Receiver<Command>,
    done_tx: mpsc::UnboundedSender<Done>,
    done: mpsc::UnboundedReceiver<Done>,
    notice_tx: mpsc::UnboundedSender<u32>,
    notices: mpsc::UnboundedReceiver<u32>,
    /// Leaderships ended by a resign, released once no renewal of theirs is in flight.
    releasing: HashMap<u32, (Lease, oneshot::Sender<Result<()>>)>,
    feeds: FeedSupport,
    rng: Rng,
    stopped: watch::Sender<Option<Result<()>>>,
    balancer: Option<Balancer>,
    /// How many of the elections (not seats) this process leads.
    leading: usize,
}

impl Driver {
    async fn run(mut self) {
        debug!("shards campaign started");
        self.start_census();
        loop {
            self.fire_timers();
            let send_at = self.send_at();
            if send_at.is_some_and(|at| at <= Instant::now()) {
                self.send();
                continue;
            }
            let next_timer = self.timers.peek().map(|Reverse((at, _))| *at);
            let wake = match (send_at, next_timer) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let sleep = async {
                match wake {
                    Some(at) => sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                () = sleep => {}
                Some(done) = self.done.recv() => self.apply(done),
                Some(slot) = self.notices.recv() => self.notice(slot),
                command = self.commands.recv() => match command {
                    Some(Command::Resign(slot, reply)) => self.resign(slot, reply),
                    Some(Command::Shutdown) | None => break,
                },
            }
        }
        let outcome = self.stop().await;
        info!("shards campaign stopped");
        self.stopped.send_replace(Some(outcome));
    }

    fn schedule(&mut self, slot: usize, at: Instant) {
        self.slots[slot].timer = at;
        self.timers.push(Reverse((at, slot as u32)));
    }

    /// Pops every timer that is due: deadlines end leaderships at once, requests become due.
    fn fire_timers(&mut self) {
        let now = Instant::now();
        while let Some(&Reverse((at, i))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            let slot = &self.slots[i as usize];
            if slot.timer != at {
                continue; // stale
            }
            match &slot.phase {
                Phase::Leader { deadline, .. } if now >= *deadline => {
                    self.step_down(i as usize, StepDown::DeadlinePassed);
                }
                Phase::Leader { deadline, .. } => {
                    let deadline = *deadline;
                    if !slot.busy {
                        self.slots[i as usize].busy = true;
                        self.due.push(i);
                    }
                    // The deadline still ends it should no answer come in time.
                    self.schedule(i as usize, deadline);
                }
                Phase::Follower => {
                    if !slot.busy && !self.put_off(i as usize) {
                        self.slots[i as usize].busy = true;
                        self.slots[i as usize].out = false;
                        self.due.push(i);
                    }
                }
            }
        }
    }

    fn send_at(&self) -> Option<Instant> {
        if self.due.is_empty() {
            return None;
        }
        Some(match self.last_sent {
            Some(at) => at + self.linger,
            None => Instant::now(),
        })
    }

    /// Sends what is due: one acquisition and one renewal batch (split at `max_batch`).
    fn send(&mut self) {
        let sent = Instant::now();
        self.last_sent = Some(sent);
        let (mut acquire, mut renew) = (Vec::new(), Vec::new());
        let guards = self.shared.guards();
        for i in self.due.drain(..) {
            match &self.slots[i as usize].phase {
                Phase::Leader { .. } => match &guards[i as usize] {
                    Some(guard) => renew.push((i, guard.lease().clone())),
                    None => self.slots[i as usize].busy = false,
                },
                Phase::Follower => {
                    let claim = Claim {
                        election: self.shared.name(i as usize).clone(),
                        candidate: self.shared.candidate.clone(),
                        nonce: self.slots[i as usize].nonce,
                        ttl: self.ttl,
                        value: None,
                    };
                    acquire.push((i, claim));
                }
            }
        }
        drop(guards);
        let timeout_after = self.request_timeout;
        let kind = self.store.kind();
        while !renew.is_empty() {
            let rest = renew.split_off(renew.len().min(self.max_batch));
            let (slots, leases): (Vec<u32>, Vec<Lease>) =
                std::mem::replace(&mut renew, rest).into_iter().unzip();
            let (store, done) = (self.store.clone(), self.done_tx.clone());
            self.batches += 1;
            tokio::spawn(async move {
                debug!(size = leases.len(), "renewal batch");
                let answers = within(
                    timeout_after,
                    kind,
                    "renew",
                    leases.len(),
                    store.renew_batch(&leases),
                )
                .await;
                let _ = done.send(Done::Renewed(sent, slots, answers));
            });
        }
        while !acquire.is_empty() {
            let rest = acquire.split_off(acquire.len().min(self.max_batch));
            let (slots, claims): (Vec<u32>, Vec<Claim>) =
                std::mem::replace(&mut acquire, rest).into_iter().unzip();
            let (store, done) = (self.store.clone(), self.done_tx.clone());
            self.batches += 1;
            tokio::spawn(async move {
                debug!(size = claims.len(), "acquisition batch");
                let answers = within(
                    timeout_after,
                    kind,
                    "try_acquire",
                    claims.len(),
                    store.try_acquire_batch(&claims),
                )
                .await;
                let _ = done.send(Done::Acquired(sent, slots, answers));
            });
        }
    }

    fn apply(&mut self, done: Done) {
        match done {
            Done::Acquired(sent, slots, answers) => {
                self.batches -= 1;
                for (i, answer) in slots.into_iter().zip(answers) {
                    let slot = &mut self.slots[i as usize];
                    if !std::mem::replace(&mut slot.answered, true) {
                        if let Some(b) = self.balancer.as_mut() {
                            b.unanswered -= 1;
                        }
                    }
                    self.acquired(i as usize, sent, answer);
                }
                self.sit_when_hearing();
            }
            Done::Renewed(sent, slots, answers) => {
                self.batches -= 1;
                for (i, answer) in slots.into_iter().zip(answers) {
                    self.renewed(i as usize, sent, answer);
                }
            }
            Done::Released(i, ok) => self.released(i as usize, ok),
            Done::Census(seats) => self.counted(seats),
            Done::Subscribed(i, answer) => {
                if let (FeedSupport::Unknown, Some(supported)) = (&self.feeds, answer) {
                    self.feeds = if supported {
                        FeedSupport::Supported
                    } else {
                        FeedSupport::Unsupported
                    };
                }
                self.subscribe_answered(i as usize);
                self.sit_when_hearing();
            }
        }
    }

    fn acquired(&mut self, i: usize, sent: Instant, answer: Result<Acquire>) {
        let n = self.shared.names.len();
        if i >= n {
            match &answer {
                Ok(Acquire::Held(_)) => return self.seat_lost(i - n, Seat::Taken),
                Err(e) if !e.is_retryable() => {
                    warn!(seat = %self.shared.name(i), error = %e, "balance: seat unusable; trying the next");
                    return self.seat_lost(i - n, Seat::Unusable);
                }
                _ => {}
            }
        }
        let slot = &mut self.slots[i];
        slot.busy = false;
        let noticed = std::mem::take(&mut slot.noticed);
        let now = Instant::now();
        let deadline = sent + self.believe;
        match answer {
            Ok(Acquire::Granted(lease))
                if lease.holder == self.shared.candidate
                    && lease.nonce == slot.nonce
                    && lease.election == *self.shared.name(i) =>
            {
                slot.failures = 0;
                if now >= deadline {
                    // Granted too late to act on: ask again (idempotent for the live holder).
                    self.schedule(i, now);
                    return;
                }
                self.unfollow(i);
                let slot = &mut self.slots[i];
                let term = lease.term;
                let (guard, control) = LeaderGuard::mint(lease, deadline);
                slot.phase = Phase::Leader {
                    control,
                    deadline,
                    renew_at: sent + self.ttl.get() / 3,
                };
                let renew_at = sent + self.ttl.get() / 3;
                self.schedule(i, renew_at);
                self.shared.guards()[i] = Some(guard.clone());
                debug!(election = %self.shared.name(i), %term, "elected");
                if i < n {
                    self.leading += 1;
                    self.shared.metrics.elected();
                    let _ = self.shared.events.send(ShardEvent::Elected {
                        election: self.shared.name(i).clone(),
                        guard,
                    });
                } else if self.seats_led().nth(1).is_some() {
                    // One seat per process (one is asked for at a time, so this is a late
                    // answer): give this one back.
                    let (reply, _) = oneshot::channel();
                    self.resign(i, reply);
                } else {
                    info!(seat = %self.shared.name(i), "seated: counted by the others");
                    if let Some(b) = self.balancer.as_mut() {
                        b.seating = None;
                        b.held[i - n] = Seat::Taken;
                    }
                    self.count_now();
                }
            }
            Ok(Acquire::Granted(lease)) => {
                let error = Error::Internal {
                    message: format!("the store granted {lease:?} to another claim"),
                };
                self.failed(i, error);
            }
            Ok(Acquire::Held(info)) => {
                slot.failures = 0;
                let wait = if noticed {
                    Duration::ZERO
                } else {
                    info.remaining
                        + self
                            .rng
                            .duration_up_to((self.ttl.get() / 400).min(Duration::from_millis(5)))
                };
                self.schedule(i, now + wait.max(Duration::from_millis(1)));
                self.follow(i);
            }
            Err(error) => self.failed(i, error),
        }
    }

    fn renewed(&mut self, i: usize, sent: Instant, answer: Result<Renewal>) {
        self.slots[i].busy = false;
        if let Some((lease, reply)) = self.releasing.remove(&(i as u32)) {
            // Resigned while this renewal was in flight: now the release can go.
            self.release(i, lease, reply);
            return;
        }
        if !matches!(self.slots[i].phase, Phase::Leader { .. }) {
            // The leadership ended meanwhile (its deadline passed): campaign again.
            self.schedule(i, Instant::now());
            return;
        }
        match answer {
            Ok(Renewal::Renewed(_)) => {
                let believe = self.believe;
                let every = self.ttl.get() / 3;
                let slot = &mut self.slots[i];
                slot.failures = 0;
                if let Phase::Leader {
                    control,
                    deadline,
                    renew_at,
                } = &mut slot.phase
                {
                    *deadline = sent + believe;
                    *renew_at = sent + every;
                    control.extend(*deadline);
                }
                self.schedule(i, sent + every);
            }
            Ok(Renewal::Lost) => {
                self.step_down(i, StepDown::Lost);
            }
            Err(error) => {
                let slot = &mut self.slots[i];
                slot.failures = slot.failures.saturating_add(1);
                let retry = Instant::now() + self.backoff(i);
                if let Phase::Leader {
                    deadline, renew_at, ..
                } = &mut self.slots[i].phase
                {
                    *renew_at = retry;
                    let at = retry.min(*deadline);
                    self.schedule(i, at);
                }
                self.report(i, error);
            }
        }
    }

    fn failed(&mut self, i: usize, error: Error) {
        let slot = &mut self.slots[i];
        slot.failures = slot.failures.saturating_add(1);
        let at = Instant::now() + self.backoff(i);
        self.schedule(i, at);
        self.report(i, error);
    }

    fn report(&self, i: usize, error: Error) {
        debug!(election = %self.shared.name(i), error = %error, "request failed; retrying");
        if self.slots[i].failures == 1 {
            warn!(election = %self.shared.name(i), error = %error, "request failed; retrying with backoff");
        }
        if i < self.shared.names.len() {
            let _ = self.shared.events.send(ShardEvent::Error {
                election: self.shared.name(i).clone(),
                error,
            });
        }
    }

    /// Ends `i`'s leadership (before anything else is sent) and makes it a follower with a new
    /// claim. Returns the lease it held.
    fn step_down(&mut self, i: usize, reason: StepDown) -> Option<Lease> {
        let slot = &mut self.slots[i];
        let Phase::Leader { control, .. } = std::mem::replace(&mut slot.phase, Phase::Follower)
        else {
            return None;
        };
        control.end(reason);
        slot.nonce = Nonce::random();
        let guard = self.shared.guards()[i].take();
        let lease = guard.map(|g| g.lease().clone());
        let term = lease.as_ref().map(|l| l.term).unwrap_or_default();
        info!(election = %self.shared.name(i), %term, ?reason, "stepped down");
        let n = self.shared.names.len();
        if i < n {
            self.leading -= 1;
            self.shared.metrics.stepped_down(reason);
            let _ = self.shared.events.send(ShardEvent::SteppedDown {
                election: self.shared.name(i).clone(),
                term,
                reason,
            });
        } else if let Some(b) = self.balancer.as_mut() {
            // Not counted any more: no share until seated again (the same seat, at once).
            b.quota = None;
            self.shared.set_share(None);
            if matches!(reason, StepDown::Lost | StepDown::DeadlinePassed) {
                b.seating = Some(i - n);
            }
            self.count_now();
        }
        if matches!(reason, StepDown::Lost | StepDown::DeadlinePassed) {
            let now = Instant::now();
            self.schedule(i, now);
        }
        lease
    }

    fn resign(&mut self, i: usize, reply: oneshot::Sender<Result<()>>) {
        let Some(lease) = self.step_down(i, StepDown::Resigned) else {
            let _ = reply.send(Ok(()));
            return;
        };
        let slot = &mut self.slots[i];
        slot.out = true;
        // No timer until the release is answered.
        slot.timer = Instant::now() + Ttl::MAX;
        if slot.busy {
            self.releasing.insert(i as u32, (lease, reply));
        } else {
            self.release(i, lease, reply);
        }
    }

    /// Releases a resigned leadership's lease, then sits out the pause (a TTL if the release's
    /// outcome is unknown: a late release must not end a re-grant of the same term).
    fn release(&mut self, i: usize, lease: Lease, reply: oneshot::Sender<Result<()>>) {
        let (store, done, wait) = (
            self.store.clone(),
            self.done_tx.clone(),
            self.request_timeout,
        );
        self.slots[i].busy = true;
        tokio::spawn(async move {
            let released = release_one(store.as_ref(), &lease, wait).await;
            let _ = done.send(Done::Released(i as u32, released.is_ok()));
            let _ = reply.send(released);
        });
    }

    fn released(&mut self, i: usize, ok: bool) {
        self.slots[i].busy = false;
        if i >= self.shared.names.len() {
            // A seat given back (a second one): the census picks seats, not a timer.
            self.slots[i].out = true;
            self.slots[i].timer = Instant::now() + Ttl::MAX;
            return;
        }
        let pause = if ok {
            self.resign_pause
        } else {
            self.resign_pause.max(self.ttl.get())
        };
        self.schedule(i, Instant::now() + pause);
    }

    fn notice(&mut self, i: u32) {
        let idx = i as usize;
        // A put-off acquisition waits its turn, unless this process is below its share now.
        if self.slots[idx].deferred && !self.below_share() {
            return;
        }
        let slot = &mut self.slots[idx];
        if !matches!(slot.phase, Phase::Follower) || slot.out {
            return;
        }
        slot.deferred = false;
        if slot.busy {
            slot.noticed = true;
        } else {
            let now = Instant::now();
            self.schedule(idx, now);
        }
    }

    /// Subscribes a follower to its election's change feed, if the store has feeds and it is
    /// not subscribed yet.
    fn follow(&mut self, i: usize) {
        if self.feeds == FeedSupport::Unsupported || i >= self.shared.names.len() {
            return;
        }
        let slot = &mut self.slots[i];
        if slot.feed.as_ref().is_some_and(|f| !f.is_finished()) {
            return;
        }
        let (store, notices, done) = (
            self.store.clone(),
            self.notice_tx.clone(),
            self.done_tx.clone(),
        );
        let election = self.shared.name(i).clone();
        let wait = self.request_timeout;
        let slot_no = i as u32;
        let task = tokio::spawn(async move {
            let feed = match timeout(wait, store.subscribe(&election)).await {
                Ok(Ok(Some(feed))) => feed,
                Ok(Ok(None)) => {
                    let _ = done.send(Done::Subscribed(slot_no, Some(false)));
                    return;
                }
                _ => {
                    let _ = done.send(Done::Subscribed(slot_no, None));
                    return;
                }
            };
            let _ = done.send(Done::Subscribed(slot_no, Some(true)));
            let mut feed = feed;
            // A release may have landed between the read that made this a follower and the
            // subscription: look once more.
            if notices.send(i as u32).is_err() {
                return;
            }
            while feed.changed().await {
                if notices.send(i as u32).is_err() {
                    return;
                }
            }
        });
        slot.feed = Some(task.abort_handle());
        slot.subscribing = true;
        if let Some(b) = self.balancer.as_mut() {
            b.subscribing += 1;
        }
    }

    /// Ends election `i`'s feed task, if it runs.
    fn unfollow(&mut self, i: usize) {
        if let Some(feed) = self.slots[i].feed.take() {
            feed.abort();
        }
        self.subscribe_answered(i);
    }

    /// Election `i`'s subscribe answered, or its task was ended before it did.
    fn subscribe_answered(&mut self, i: usize) {
        if std::mem::take(&mut self.slots[i].subscribing) {
            if let Some(b) = self.balancer.as_mut() {
                b.subscribing -= 1;
            }
        }
    }

    /// Balancing: whether this process hears of the elections' releases yet — every
    /// election's first acquisition answered and every follower's feed subscribed (or the
    /// store has no feeds, or a TTL has passed since start: a store whose feeds fail must
    /// not keep the process out for good). It asks for its first seat only then: the seat
    /// makes the others release their excess at their next census, and a newcomer not yet
    /// subscribed to an election hears nothing of its release, so one of the others, at its
    /// share, took it after its wait and gave it back a census later (measured: 1 000
    /// elections on Redis, a third process joining moved 386–392 elections instead of 333;
    /// its 1 000 subscriptions took ~1.5 s in a debug build).
    fn hears(&mut self) -> bool {
        let unsupported = self.feeds == FeedSupport::Unsupported;
        let Some(b) = self.balancer.as_mut() else {
            return true;
        };
        if !b.hearing {
            b.hearing = unsupported
                || (b.unanswered == 0 && b.subscribing == 0)
                || b.since.elapsed() >= self.ttl.get();
        }
        b.hearing
    }

    /// Balancing: asks for the first seat as soon as this process hears (see [`Self::hears`]).
    fn sit_when_hearing(&mut self) {
        let Some(b) = self.balancer.as_ref() else {
            return;
        };
        if b.hearing || b.seating.is_some() || self.seat().is_some() {
            return;
        }
        if self.hears() {
            self.ask_for_a_seat();
        }
    }

    /// Balancing: whether election `i`'s due acquisition waits, because this process has its
    /// share (or is not counted yet). It waits once, for the balancer's `defer`: a process
    /// below its share takes a free election first; if none does, this one takes it then
    /// (every election keeps a leader; the census evens the shares out later).
    fn put_off(&mut self, i: usize) -> bool {
        let Some(b) = &self.balancer else {
            return false;
        };
        if i >= self.shared.names.len() || std::mem::take(&mut self.slots[i].deferred) {
            return false;
        }
        if self.below_share() {
            return false;
        }
        let at = Instant::now() + b.defer;
        self.slots[i].deferred = true;
        self.schedule(i, at);
        true
    }

    /// Balancing: this process is counted and leads fewer elections than its share.
    fn below_share(&self) -> bool {
        self.balancer
            .as_ref()
            .and_then(|b| b.quota)
            .is_some_and(|quota| self.leading < quota)
    }

    /// The seats this process holds (one, but for a late second grant it gives back).
    fn seats_led(&self) -> impl Iterator<Item = usize> + '_ {
        let n = self.shared.names.len();
        (n..self.slots.len())
            .filter(|&i| matches!(self.slots[i].phase, Phase::Leader { .. }))
            .map(move |i| i - n)
    }

    /// The seat this process holds, if any.
    fn seat(&self) -> Option<usize> {
        self.seats_led().next()
    }

    /// Balancing: asks for the first free seat now, if there is one and none is being asked
    /// for. Returns whether it did.
    fn ask_for_a_seat(&mut self) -> bool {
        let n = self.shared.names.len();
        let Some(b) = self.balancer.as_mut() else {
            return false;
        };
        let Some(seat) = b.held.iter().position(|s| *s == Seat::Free) else {
            return false;
        };
        b.seating = Some(seat);
        self.slots[n + seat].out = false;
        self.schedule(n + seat, Instant::now());
        true
    }

    /// Asks the census task for a count now.
    fn count_now(&self) {
        if let Some((census, _)) = self.balancer.as_ref().and_then(|b| b.census.as_ref()) {
            let _ = census.send(());
        }
    }

    /// Balancing: reads every seat's holder, every TTL/2 and when asked, and sends the
    /// census to the driving task. A seat whose record is not elect's is unusable; after a
    /// read the store did not answer, the rest of that round counts as unread (the previous
    /// census stands for them).
    fn start_census(&mut self) {
        let every = self.ttl.get() / 2;
        let (store, done, wait) = (
            self.store.clone(),
            self.done_tx.clone(),
            self.request_timeout,
        );
        let seats = self.shared.seats.to_vec();
        let Some(b) = self.balancer.as_mut() else {
            return;
        };
        let (asks, mut asked) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                let mut read = Vec::with_capacity(seats.len());
                for seat in &seats {
                    if read.last().is_some_and(Option::is_none) {
                        read.push(None);
                        continue;
                    }
                    read.push(match timeout(wait, store.leader(seat)).await {
                        Ok(Ok(Some(_))) => Some(Seat::Taken),
                        Ok(Ok(None)) => Some(Seat::Free),
                        Ok(Err(e)) if !e.is_retryable() => Some(Seat::Unusable),
                        _ => None,
                    });
                }
                if done.send(Done::Census(read)).is_err() {
                    return;
                }
                tokio::select! {
                    () = sleep(every) => {}
                    ask = asked.recv() => if ask.is_none() {
                        return;
                    },
                }
                while asked.try_recv().is_ok() {}
            }
        });
        b.census = Some((asks, task.abort_handle()));
    }

    /// Balancing: a census arrived. Counts the processes (the seats held), works out this
    /// process's share — ⌊N/k⌋, or ⌈N/k⌉ for the first `N mod k` seats in order — resigns
    /// what it leads beyond it, and asks for a free seat when it has none.
    fn counted(&mut self, seats: Vec<Option<Seat>>) {
        let n = self.shared.names.len();
        let mine = self.seat();
        let Some(b) = self.balancer.as_mut() else {
            return;
        };
        for (held, read) in b.held.iter_mut().zip(seats) {
            if let Some(read) = read {
                *held = read;
            }
        }
        if let Some(seat) = mine {
            b.held[seat] = Seat::Taken;
        }
        let taken = |seats: &[Seat]| seats.iter().filter(|s| **s == Seat::Taken).count();
        let k = taken(&b.held);
        b.quota = mine.map(|seat| {
            let rank = taken(&b.held[..seat]);
            n / k + usize::from(rank < n % k)
        });
        debug!(processes = k, share = ?b.quota, leading = self.leading, "census");
        let quota = b.quota;
        self.shared.set_share(quota.map(|share| Share {
            processes: k,
            share,
        }));
        let seatless = mine.is_none() && b.seating.is_none();
        if seatless && self.hears() && !self.ask_for_a_seat() {
            if let Some(b) = self.balancer.as_mut().filter(|b| !b.warned) {
                b.warned = true;
                warn!(
                    seats = b.held.len(),
                    "balance: no seat is free; this process is not counted and takes only \
                     elections no one else wants"
                );
            }
        }
        let excess = quota.map_or(0, |quota| self.leading.saturating_sub(quota));
        if excess > 0 {
            info!(
                excess,
                "balance: resigning what is beyond this process's share"
            );
            let leaders: Vec<usize> = (0..n)
                .rev()
                .filter(|&i| matches!(self.slots[i].phase, Phase::Leader { .. }))
                .take(excess)
                .collect();
            for i in leaders {
                let (reply, _) = oneshot::channel();
                self.resign(i, reply);
            }
        }
    }

    /// Balancing: the seat asked for is someone else's (`Taken`) or cannot be had
    /// (`Unusable`); ask for the next free one.
    fn seat_lost(&mut self, seat: usize, now: Seat) {
        let n = self.shared.names.len();
        let slot = &mut self.slots[n + seat];
        slot.busy = false;
        slot.out = true;
        slot.timer = Instant::now() + Ttl::MAX;
        let Some(b) = self.balancer.as_mut() else {
            return;
        };
        b.held[seat] = now;
        b.seating = None;
        self.ask_for_a_seat();
    }

    fn backoff(&mut self, i: usize) -> Duration {
        let failures = u32::from(self.slots[i].failures);
        let cap = self.ttl.get() / 4;
        let full = Duration::from_millis(25)
            .saturating_mul(1u32 << failures.min(16))
            .min(cap);
        full / 2 + self.rng.duration_up_to(full / 2)
    }

    /// Shutdown: every leadership ends now; once no batch is in flight (a late renewal could
    /// otherwise follow the release), every lease held is released.
    async fn stop(&mut self) -> Result<()> {
        if let Some((_, census)) = self.balancer.as_mut().and_then(|b| b.census.take()) {
            census.abort();
        }
        let mut held = Vec::new();
        for i in 0..self.slots.len() {
            if let Some(lease) = self.step_down(i, StepDown::Shutdown) {
                held.push(lease);
            }
            self.unfollow(i);
        }
        held.extend(self.releasing.drain().map(|(_, (lease, reply))| {
            let _ = reply.send(Err(Error::Stopped {
                election: lease.election.to_string(),
            }));
            lease
        }));
        while self.batches > 0 {
            let Some(done) = self.done.recv().await else {
                break;
            };
            match done {
                Done::Acquired(_, slots, answers) => {
                    self.batches -= 1;
                    for (i, answer) in slots.into_iter().zip(answers) {
                        // A grant that arrives now is released at once, never believed.
                        if let Ok(Acquire::Granted(lease)) = answer {
                            if lease.nonce == self.slots[i as usize].nonce {
                                held.push(lease);
                            }
                        }
                    }
                }
                Done::Renewed(..) => self.batches -= 1,
                Done::Subscribed(..) | Done::Released(..) | Done::Census(_) => {}
            }
        }
        let mut outcome = Ok(());
        let mut tasks = JoinSet::new();
        let wait = self.request_timeout;
        for chunk in held.chunks(64) {
            for lease in chunk {
                let (store, lease) = (self.store.clone(), lease.clone());
                tasks.spawn(async move { release_one(store.as_ref(), &lease, wait).await });
            }
            while let Some(result) = tasks.join_next().await {
                if let (Ok(Err(e)), Ok(())) = (result, &outcome) {
                    outcome = Err(e);
                }
            }
        }
        outcome
    }
}

async fn release_one(store: &dyn BatchStore, lease: &Lease, wait: Duration) -> Result<()> {
    let answer = timeout(wait, store.release(lease))
        .await
        .unwrap_or_else(|_| Err(Error::timeout("coordinator", "release", wait)));
    match answer {
        Ok(Release::Released | Release::NotHeld) => Ok(()),
        Err(e) => {
            warn!(election = %lease.election, error = %e, "release failed; the lease will expire at the coordinator");
            Err(e)
        }
    }
}

/// A batch under the request timeout, with one answer per item whatever happens.
async fn within<T>(
    wait: Duration,
    kind: &'static str,
    operation: &'static str,
    n: usize,
    batch: impl std::future::Future<Output = Vec<Result<T>>>,
) -> Vec<Result<T>> {
    let started = Instant::now();
    let answers = match timeout(wait, batch).await {
        Ok(answers) if answers.len() == n => answers,
        Ok(answers) => {
            let e = Error::Internal {
                message: format!(
                    "the store answered {} items of a batch of {n}",
                    answers.len()
                ),
            };
            (0..n).map(|_| Err(e.clone())).collect()
        }
        Err(_) => {
            let e = Error::timeout("coordinator", operation, wait);
            (0..n).map(|_| Err(e.clone())).collect()
        }
    };
    let error = answers.iter().find_map(|a| a.as_ref().err());
    metrics::request(kind, operation, started.elapsed(), error);
    answers
}
