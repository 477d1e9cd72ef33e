//! [`Elector`]: the campaign loop, written once against [`LeaseStore`].

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::time::{sleep_until, timeout, Instant};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tracing::{debug, error, info, info_span, warn, Instrument};

use crate::error::{Error, Result};
use crate::lease::{Acquire, Claim, LeaderInfo, Lease, Nonce, Release, Renewal, Ttl};
use crate::name::{CandidateId, ElectionName};
use crate::rand::Rng;
use crate::store::{ChangeFeed, LeaseStore};
use crate::term::Term;

/// Default clock-rate bound ρ: local and coordinator clocks may run 1 % apart.
pub const DEFAULT_CLOCK_DRIFT: f64 = 0.01;
/// Default safety margin ε subtracted from every local deadline (coordinator clock granularity).
pub const DEFAULT_SAFETY_MARGIN: Duration = Duration::from_millis(2);
/// Default lease TTL.
pub const DEFAULT_TTL: Duration = Duration::from_secs(10);
/// How long dropping the handle of a driven elector ([`Elector::with_driver`]) waits for its
/// hand-over.
const DRIVER_RELEASE_WAIT: Duration = Duration::from_secs(5);

/// What this candidate currently believes, as published by [`Elector::watch`].
#[derive(Debug, Clone)]
pub enum Leadership {
    /// Not leading. `leader` is who the coordinator last said leads, if anyone (its `remaining`
    /// is as of that answer).
    Follower {
        /// The current leader, as last seen.
        leader: Option<LeaderInfo>,
    },
    /// Leading, until the guard's `lost` signal fires.
    Leader(LeaderGuard),
    /// The elector has stopped and will not lead again: shut down (`None`) or aborted by its
    /// [`ErrorPolicy`] (`Some(error)`).
    Stopped(Option<Error>),
}

impl Leadership {
    /// Whether this candidate leads right now (the guard is live and its deadline not passed).
    pub fn is_leader(&self) -> bool {
        matches!(self, Leadership::Leader(g) if g.is_leading())
    }

    /// The leader's guard, when this candidate leads.
    pub fn guard(&self) -> Option<&LeaderGuard> {
        match self {
            Leadership::Leader(g) => Some(g),
            _ => None,
        }
    }

    fn same_as(&self, other: &Leadership) -> bool {
        match (self, other) {
            (Leadership::Follower { leader: a }, Leadership::Follower { leader: b }) => {
                a.as_ref().map(|i| (&i.holder, i.term)) == b.as_ref().map(|i| (&i.holder, i.term))
            }
            _ => false,
        }
    }
}

/// Proof of leadership for one term, handed out by [`Elector::leading`].
///
/// Leadership ends at the local safety deadline at the latest: the instant before which the
/// coordinator cannot have granted the lease to anyone else. [`lost`](Self::lost) resolves then
/// (or earlier, on resign, shutdown or a refused renewal), and [`is_leading`](Self::is_leading)
/// checks the deadline itself, so it is right even if the campaign task is starved.
///
/// Stamp [`term`](Self::term) on every write the leader makes (a fencing token).
#[derive(Clone)]
pub struct LeaderGuard {
    lease: Lease,
    deadline: watch::Receiver<Instant>,
    token: CancellationToken,
    reason: Arc<OnceLock<StepDown>>,
}

impl LeaderGuard {
    /// The term of this leadership: the fencing token.
    pub fn term(&self) -> Term {
        self.lease.term
    }

    /// The lease this leadership rests on.
    pub fn lease(&self) -> &Lease {
        &self.lease
    }

    /// Whether this leadership is still live: not ended, and its deadline not passed.
    pub fn is_leading(&self) -> bool {
        !self.token.is_cancelled() && Instant::now() < self.deadline()
    }

    /// The current local safety deadline; renewals move it forward.
    pub fn deadline(&self) -> Instant {
        *self.deadline.borrow()
    }

    /// A watch of the deadline: it changes at every renewal. For supervisors that must act
    /// before the deadline passes (`elect run` stops its program a grace period before it, and
    /// hands each new deadline to a watchdog process).
    pub fn deadline_watch(&self) -> watch::Receiver<Instant> {
        self.deadline.clone()
    }

    /// Resolves when this leadership ends, no later than its deadline. Cancellation safe.
    pub fn lost(&self) -> WaitForCancellationFutureOwned {
        self.token.clone().cancelled_owned()
    }

    /// The token behind [`lost`](Self::lost), e.g. to hand to tasks that must stop with it.
    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    /// Why this leadership ended, once it has (`None` while it lasts). A leadership whose driver
    /// vanished without saying why reads [`StepDown::Aborted`].
    pub fn reason(&self) -> Option<StepDown> {
        if !self.token.is_cancelled() {
            return None;
        }
        Some(self.reason.get().copied().unwrap_or(StepDown::Aborted))
    }
}

impl LeaderGuard {
    /// For drivers ([`ElectorDriver`]): a guard for `lease`, believed until `deadline`, and the
    /// control that extends or ends it.
    pub fn new(lease: Lease, deadline: Instant) -> (LeaderGuard, GuardControl) {
        let (deadline_tx, deadline_rx) = watch::channel(deadline);
        let control = GuardControl {
            deadline: Arc::new(deadline_tx),
            token: CancellationToken::new(),
            reason: Arc::default(),
        };
        let guard = LeaderGuard {
            lease,
            deadline: deadline_rx,
            token: control.token.clone(),
            reason: control.reason.clone(),
        };
        (guard, control)
    }
}

impl fmt::Debug for LeaderGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeaderGuard")
            .field("election", &self.lease.election)
            .field("term", &self.lease.term)
            .field("leading", &self.is_leading())
            .finish()
    }
}

/// Why a leadership ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StepDown {
    /// [`Elector::resign`] was called.
    Resigned,
    /// The elector was shut down (or its handle dropped).
    Shutdown,
    /// The coordinator refused a renewal: the lease had expired or changed hands.
    Lost,
    /// Renewals failed until the local safety deadline passed.
    DeadlinePassed,
    /// An error that the [`ErrorPolicy`] says to abort on.
    Aborted,
}

/// What happened, in order, for subscribers of [`Elector::events`] — the equivalent of
/// go-master's start/stop hooks and go-leader's promoted/demoted/errored channels.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event {
    /// This candidate became leader.
    Elected {
        /// The new term.
        term: Term,
        /// When leadership began (monotonic clock).
        at: Instant,
    },
    /// This candidate stopped leading.
    SteppedDown {
        /// The term that ended.
        term: Term,
        /// When leadership ended: the earlier of the moment the elector noticed and the safety
        /// deadline (monotonic clock).
        at: Instant,
        /// Why.
        reason: StepDown,
    },
    /// A request to the coordinator failed. Emitted after the matching `SteppedDown`, if any.
    Error(Error),
    /// The elector stopped for good.
    Stopped,
}

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
    /// jittered backoff, reporting each one ([`Event::Error`], a warning in the log): an
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

    fn decide(&self, error: &Error) -> OnError {
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

/// Configures and starts an [`Elector`]. Made by [`Elector::builder`].
#[derive(Debug)]
#[must_use = "call start() to campaign"]
pub struct ElectorBuilder {
    store: Arc<dyn LeaseStore>,
    election: ElectionName,
    candidate: Option<CandidateId>,
    ttl: Duration,
    clock_drift: f64,
    safety_margin: Duration,
    request_timeout: Option<Duration>,
    resign_pause: Option<Duration>,
    policy: ErrorPolicy,
    events: broadcast::Sender<Event>,
}

impl ElectorBuilder {
    /// Subscribes to the elector's [`Event`]s before it starts, so not even the first one can be
    /// missed (see [`Elector::events`]).
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// This candidate's id; default [`CandidateId::generate`] (the go-master/tomcz
    /// `WithNodeName`). It names the candidate for people; it need not be unique: two electors
    /// with one id are still two holders (each claim carries its own [`Nonce`]), so one leads
    /// and the other follows, with a warning in the log.
    pub fn candidate(mut self, id: CandidateId) -> Self {
        self.candidate = Some(id);
        self
    }

    /// The lease TTL (default 10 s; between [`Ttl::MIN`] and [`Ttl::MAX`]): how long a crashed
    /// leader blocks the election. The leader renews every third of it.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// The clock-rate bound ρ between this host and the coordinator (default 1 %, at most 10 %).
    pub fn clock_drift(mut self, rho: f64) -> Self {
        self.clock_drift = rho;
        self
    }

    /// The margin ε subtracted from each deadline (default 2 ms; below a tenth of the TTL).
    pub fn safety_margin(mut self, margin: Duration) -> Self {
        self.safety_margin = margin;
        self
    }

    /// How long one request may take before it counts as failed (default TTL / 3; above zero,
    /// at most one day). A renewal is also abandoned at the safety deadline, whichever comes
    /// first.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = Some(timeout);
        self
    }

    /// How long a candidate that resigned stays out of the race, so another can take over
    /// (default: one TTL; at most one day).
    pub fn resign_pause(mut self, pause: Duration) -> Self {
        self.resign_pause = Some(pause);
        self
    }

    /// What to do when a request fails (default [`ErrorPolicy::RetryTransient`]).
    pub fn on_error(mut self, policy: ErrorPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Validates the configuration and spawns the campaign on the current tokio runtime.
    pub fn start(self) -> Result<Elector> {
        let invalid = |message: String| Err(Error::InvalidConfig { message });
        let ttl = Ttl::new(self.ttl)?;
        if !(0.0..=0.1).contains(&self.clock_drift) || self.clock_drift.is_nan() {
            return invalid(format!(
                "clock drift {} must be between 0 and 0.1",
                self.clock_drift
            ));
        }
        if self.safety_margin >= ttl.get() / 10 {
            return invalid(format!(
                "safety margin {:?} must be below a tenth of the TTL {:?}",
                self.safety_margin,
                ttl.get()
            ));
        }
        let request_timeout = self.request_timeout.unwrap_or(ttl.get() / 3);
        if request_timeout.is_zero() || request_timeout > Ttl::MAX {
            return invalid(format!(
                "request timeout {request_timeout:?} must be above zero and at most one day"
            ));
        }
        let resign_pause = self.resign_pause.unwrap_or(ttl.get());
        if resign_pause > Ttl::MAX {
            return invalid(format!(
                "resign pause {resign_pause:?} must be at most one day"
            ));
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::InvalidConfig {
            message: "Elector::start must be called inside a tokio runtime".into(),
        })?;
        let candidate = self.candidate.unwrap_or_else(CandidateId::generate);
        let (state_tx, state_rx) = watch::channel(Leadership::Follower { leader: None });
        let state = Arc::new(state_tx);
        let events = self.events;
        let (commands, command_rx) = mpsc::channel(8);
        let campaign = Campaign {
            store: self.store,
            claim: Claim::new(self.election.clone(), candidate.clone(), ttl),
            last_term: None,
            warned_duplicate: None,
            believe: ttl.get().mul_f64(1.0 - self.clock_drift) - self.safety_margin,
            request_timeout,
            resign_pause,
            policy: self.policy,
            state: state.clone(),
            events: events.clone(),
            commands: command_rx,
            feed: FeedState::Unknown,
            rng: Rng::from_entropy(),
        };
        let span = info_span!("elector", election = %self.election, candidate = %candidate);
        let task = runtime.spawn(campaign.run().instrument(span.clone()));
        runtime.spawn(supervise(task, state, events.clone()).instrument(span));
        Ok(Elector {
            election: self.election,
            candidate,
            state: state_rx,
            events,
            commands,
            // The release is one request: give it its timeout (at most a TTL) and a little more.
            release_wait: request_timeout.min(ttl.get()) + Duration::from_millis(100),
        })
    }
}

/// Waits for a campaign task and reports a panic as the elector's end, so that no campaign can
/// die unseen: `leading()` returns the error and the state reads `Stopped`.
async fn supervise(
    task: tokio::task::JoinHandle<()>,
    state: Arc<watch::Sender<Leadership>>,
    events: broadcast::Sender<Event>,
) {
    let Err(failure) = task.await else {
        return;
    };
    if !failure.is_panic() {
        return; // Cancelled: the runtime is shutting down.
    }
    let payload = failure.into_panic();
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into());
    error!(%message, "the campaign task panicked; the elector has stopped");
    let error = Error::Internal {
        message: format!("the campaign task panicked: {message}"),
    };
    let _ = events.send(Event::Error(error.clone()));
    state.send_replace(Leadership::Stopped(Some(error)));
    let _ = events.send(Event::Stopped);
}

/// A candidate campaigning in one election: the campaign loop runs as a tokio task.
///
/// It acquires the lease when it can, renews it every TTL/3, and believes it leads only until
/// `t_send + TTL·(1 − ρ) − ε`, where `t_send` is the monotonic instant *before* the last
/// successful acquire or renew was sent: the coordinator cannot grant the lease to anyone else
/// before then, so no two candidates ever believe they lead at the same instant. As a follower
/// it sleeps until the lease it was told about expires, or until the coordinator's change feed
/// says the lease was released.
///
/// Call [`shutdown`](Self::shutdown) to hand over and stop. Dropping the handle stops the
/// campaign too, and a leader releases its lease: on a multi-thread runtime the drop waits (up
/// to the request timeout) until the release is answered, so an elector dropped at the end of
/// `#[tokio::main]` hands over at once; on a current-thread runtime the release is sent in the
/// background and is lost if the runtime stops first (the lease then expires after its TTL).
///
/// ```
/// use std::time::Duration;
/// use elect_core::{Elector, ElectionName, MemoryStore};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap().block_on(async {
/// let store = MemoryStore::new();
/// let elector = Elector::builder(store, ElectionName::new("nightly-mail")?)
///     .ttl(Duration::from_secs(5))
///     .start()?;
/// let leader = elector.leading().await?;
/// println!("leading with fencing token {}", leader.term());
/// tokio::select! {
///     _ = leader.lost() => println!("lost leadership"),
///     _ = tokio::time::sleep(Duration::from_secs(1)) => println!("work done"),
/// }
/// elector.shutdown().await?;
/// # Ok::<(), elect_core::Error>(())
/// # }).unwrap();
/// ```
#[derive(Debug)]
pub struct Elector {
    election: ElectionName,
    candidate: CandidateId,
    state: watch::Receiver<Leadership>,
    events: broadcast::Sender<Event>,
    commands: mpsc::Sender<ElectorCommand>,
    /// How long a drop waits for the release.
    release_wait: Duration,
}

impl Drop for Elector {
    fn drop(&mut self) {
        let leading = matches!(&*self.state.borrow(), Leadership::Leader(_));
        // Closing the command channel tells the campaign to step down, release and stop.
        drop(std::mem::replace(&mut self.commands, mpsc::channel(1).0));
        if !leading {
            return;
        }
        // Waiting is possible only where blocking this thread does not stop the tasks that do
        // the release: on a multi-thread runtime, after handing this thread's work to others.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if runtime.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
            debug!("elector dropped on a current-thread runtime; releasing in the background");
            return;
        }
        let (mut state, wait) = (self.state.clone(), self.release_wait);
        tokio::task::block_in_place(|| {
            runtime.block_on(async {
                let stopped = state.wait_for(|s| matches!(s, Leadership::Stopped(_)));
                let _ = timeout(wait, stopped).await;
            })
        });
    }
}

impl Elector {
    /// Starts configuring a candidate for `election` on `store`.
    pub fn builder(store: impl LeaseStore, election: ElectionName) -> ElectorBuilder {
        Self::builder_dyn(Arc::new(store), election)
    }

    /// Like [`builder`](Self::builder), for a store already behind an `Arc<dyn LeaseStore>`.
    pub fn builder_dyn(store: Arc<dyn LeaseStore>, election: ElectionName) -> ElectorBuilder {
        ElectorBuilder {
            store,
            election,
            candidate: None,
            ttl: DEFAULT_TTL,
            clock_drift: DEFAULT_CLOCK_DRIFT,
            safety_margin: DEFAULT_SAFETY_MARGIN,
            request_timeout: None,
            resign_pause: None,
            policy: ErrorPolicy::default(),
            events: broadcast::channel(256).0,
        }
    }

    /// An elector that leads at once and always (the MySQL seed's `AlwaysLeader`): for a single
    /// replica or development, where no coordinator is needed. It keeps the same API, so code
    /// written against a real election runs unchanged. Resigning starts a new term at once.
    pub fn always_leader(election: ElectionName) -> Result<Elector> {
        Self::builder(crate::memory::MemoryStore::new(), election)
            .ttl(Ttl::MAX)
            .resign_pause(Duration::ZERO)
            .start()
    }

    /// A handle driven by something other than the built-in lease loop: the returned
    /// [`ElectorDriver`] publishes leadership and serves `resign` and `shutdown`. elect-raft
    /// builds its `Elector` this way, so applications switch between a store and Raft by
    /// changing only the constructor.
    pub fn with_driver(election: ElectionName, candidate: CandidateId) -> (Elector, ElectorDriver) {
        let (state, state_rx) = watch::channel(Leadership::Follower { leader: None });
        let events = broadcast::channel(256).0;
        let (commands, command_rx) = mpsc::channel(8);
        let elector = Elector {
            election,
            candidate,
            state: state_rx,
            events: events.clone(),
            commands,
            release_wait: DRIVER_RELEASE_WAIT,
        };
        let driver = ElectorDriver {
            state,
            events,
            commands: command_rx,
        };
        (elector, driver)
    }

    /// The election this candidate campaigns in.
    pub fn election(&self) -> &ElectionName {
        &self.election
    }

    /// This candidate's id.
    pub fn candidate(&self) -> &CandidateId {
        &self.candidate
    }

    /// What this candidate believes now.
    pub fn leadership(&self) -> Leadership {
        self.state.borrow().clone()
    }

    /// Whether this candidate leads right now (the tomcz `IsLeader`).
    pub fn is_leader(&self) -> bool {
        self.state.borrow().is_leader()
    }

    /// A watch of [`Leadership`], updated on every change.
    pub fn watch(&self) -> watch::Receiver<Leadership> {
        self.state.clone()
    }

    /// A stream of [`Event`]s from now on. Slow readers miss events rather than slowing the
    /// campaign (`broadcast` semantics: `recv` reports how many were skipped).
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Waits until this candidate leads and returns the guard of that leadership, or the error
    /// that stopped the elector ([`Error::Stopped`] after a shutdown). Cancellation safe.
    pub async fn leading(&self) -> Result<LeaderGuard> {
        let mut state = self.state.clone();
        loop {
            match &*state.borrow_and_update() {
                Leadership::Leader(guard) if guard.is_leading() => return Ok(guard.clone()),
                Leadership::Stopped(Some(error)) => return Err(error.clone()),
                Leadership::Stopped(None) => return Err(self.stopped()),
                _ => {}
            }
            if state.changed().await.is_err() {
                return Err(self.stopped());
            }
        }
    }

    /// Steps down now if leading and releases the lease so another candidate takes over at
    /// once, then stays out of the race for the resign pause (default one TTL) before
    /// campaigning again. Returns once the release was answered; a no-op when not leading.
    pub async fn resign(&self) -> Result<()> {
        self.command(ElectorCommand::Resign).await
    }

    /// Steps down, releases the lease, and stops campaigning. Returns the release's outcome, or
    /// the error that had already stopped the elector.
    pub async fn shutdown(self) -> Result<()> {
        let released = self.command(ElectorCommand::Shutdown).await;
        // Return only once the campaign has stopped for good, so the state says so.
        let mut state = self.state.clone();
        let _ = state
            .wait_for(|s| matches!(s, Leadership::Stopped(_)))
            .await;
        match released {
            Err(Error::Stopped { .. }) => match &*self.state.borrow() {
                Leadership::Stopped(Some(error)) => Err(error.clone()),
                _ => Ok(()),
            },
            other => other,
        }
    }

    async fn command(&self, make: fn(Reply) -> ElectorCommand) -> Result<()> {
        let (reply, answer) = oneshot::channel();
        if self.commands.send(make(Reply(reply))).await.is_err() {
            return Err(self.stopped());
        }
        answer.await.unwrap_or_else(|_| Err(self.stopped()))
    }

    fn stopped(&self) -> Error {
        Error::Stopped {
            election: self.election.to_string(),
        }
    }
}

/// A request from an [`Elector`] handle to the task that drives it.
#[derive(Debug)]
#[non_exhaustive]
pub enum ElectorCommand {
    /// Stop leading now and hand over; answer once done.
    Resign(Reply),
    /// Stop leading, hand over, and stop campaigning; answer once done.
    Shutdown(Reply),
}

/// Where the driving task answers an [`ElectorCommand`].
#[derive(Debug)]
pub struct Reply(oneshot::Sender<Result<()>>);

impl Reply {
    /// Answers the caller of [`Elector::resign`] or [`Elector::shutdown`].
    pub fn send(self, result: Result<()>) {
        let _ = self.0.send(result);
    }
}

/// The driving side of an [`Elector`], for campaigns other than the built-in lease loop
/// (elect-raft's runtime drives one from Raft's election). It publishes [`Leadership`] and
/// [`Event`]s, and serves the [`ElectorCommand`]s that the handle's `resign` and `shutdown`
/// send. Dropping it stops the elector: `leading()` then returns [`Error::Stopped`].
#[derive(Debug)]
pub struct ElectorDriver {
    state: watch::Sender<Leadership>,
    events: broadcast::Sender<Event>,
    commands: mpsc::Receiver<ElectorCommand>,
}

impl ElectorDriver {
    /// Publishes what the candidate now believes (unchanged follower states are not re-sent).
    pub fn publish(&self, state: Leadership) {
        publish(&self.state, state);
    }

    /// Emits an event to the subscribers of [`Elector::events`].
    pub fn emit(&self, event: Event) {
        let _ = self.events.send(event);
    }

    /// Subscribes to the events, e.g. before the driver starts, so none is missed.
    pub fn subscribe_events(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// The next command from the handle; `None` once the handle was dropped (a shutdown).
    /// Cancellation safe.
    pub async fn next_command(&mut self) -> Option<ElectorCommand> {
        self.commands.recv().await
    }
}

/// Publishes `state` unless it is the same follower state as now.
fn publish(sender: &watch::Sender<Leadership>, state: Leadership) {
    sender.send_if_modified(|current| {
        if current.same_as(&state) {
            false
        } else {
            *current = state;
            true
        }
    });
}

/// The driver's side of a [`LeaderGuard`]: moves its deadline and ends it.
#[derive(Debug, Clone)]
pub struct GuardControl {
    deadline: Arc<watch::Sender<Instant>>,
    token: CancellationToken,
    reason: Arc<OnceLock<StepDown>>,
}

impl GuardControl {
    /// Moves the guard's deadline (renewals).
    pub fn extend(&self, deadline: Instant) {
        self.deadline.send_replace(deadline);
    }

    /// Ends the leadership for `reason`: `lost()` resolves, `is_leading()` turns false and
    /// `reason()` says why. Later calls change nothing.
    pub fn end(&self, reason: StepDown) {
        let _ = self.reason.set(reason);
        self.token.cancel();
    }

    /// The current deadline.
    pub fn deadline(&self) -> Instant {
        *self.deadline.borrow()
    }

    /// Ends the leadership (as [`StepDown::Aborted`]) when dropped, unless it already ended:
    /// hold it across code that might panic, so a guard never outlives its driver unended.
    pub fn end_on_drop(&self) -> impl Drop + '_ {
        struct EndOnDrop<'a>(&'a GuardControl);
        impl Drop for EndOnDrop<'_> {
            fn drop(&mut self) {
                self.0.end(StepDown::Aborted);
            }
        }
        EndOnDrop(self)
    }
}

enum FeedState {
    /// Not asked yet, or the last attempt failed.
    Unknown,
    /// The store offers no feed.
    Unsupported,
    Live(ChangeFeed),
}

/// What the candidate phase or the leader phase tells the loop to do next.
enum Next {
    Campaign,
    Lead(Lease, Instant),
    Stop(Option<Error>),
}

struct Campaign {
    store: Arc<dyn LeaseStore>,
    /// What this candidate asks for; its nonce is replaced after every leadership, so a
    /// leadership that ended is never re-entered (a new one takes a new term).
    claim: Claim,
    /// The term of this candidate's last leadership: a lease held under its own id in that term
    /// is its own old claim, any other is a duplicate id.
    last_term: Option<Term>,
    /// The term a duplicate-id warning was last given for.
    warned_duplicate: Option<Term>,
    /// `TTL·(1 − ρ) − ε`: how long after sending a successful request leadership is believed.
    believe: Duration,
    request_timeout: Duration,
    resign_pause: Duration,
    policy: ErrorPolicy,
    state: Arc<watch::Sender<Leadership>>,
    events: broadcast::Sender<Event>,
    commands: mpsc::Receiver<ElectorCommand>,
    feed: FeedState,
    rng: Rng,
}

impl Campaign {
    async fn run(mut self) {
        debug!(ttl = ?self.claim.ttl.get(), "campaign started");
        let mut next = Next::Campaign;
        let error = loop {
            next = match next {
                Next::Campaign => self.campaign().await,
                Next::Lead(lease, sent) => self.lead(lease, sent).await,
                Next::Stop(error) => break error,
            };
        };
        match &error {
            Some(e) => warn!(error = %e, "campaign aborted"),
            None => info!("campaign stopped"),
        }
        self.publish(Leadership::Stopped(error));
        let _ = self.events.send(Event::Stopped);
    }

    /// Not leading: try to acquire, and sleep until the reported expiry, a change notice, or a
    /// backoff after an error.
    async fn campaign(&mut self) -> Next {
        let mut failures = 0u32;
        loop {
            self.ensure_feed().await;
            if let FeedState::Live(feed) = &mut self.feed {
                feed.mark_seen();
            }
            let sent = Instant::now();
            let answer = self
                .request("try_acquire", self.store.try_acquire(&self.claim))
                .await;
            let wait = match answer {
                Ok(Acquire::Granted(lease)) if self.claim.owns(&lease) => {
                    return Next::Lead(lease, sent)
                }
                Ok(Acquire::Granted(lease)) => {
                    // A store bug; believing it could make two leaders.
                    failures += 1;
                    let error = Error::Internal {
                        message: format!(
                            "the store granted {lease:?} in answer to {:?}",
                            self.claim
                        ),
                    };
                    if let Some(next) = self.on_error(error) {
                        return next;
                    }
                    self.backoff(failures)
                }
                Ok(Acquire::Held(info)) => {
                    failures = 0;
                    debug!(holder = %info.holder, term = %info.term, remaining = ?info.remaining, "held");
                    self.warn_if_duplicate(&info);
                    let wait = info.remaining + self.jitter();
                    self.publish(Leadership::Follower { leader: Some(info) });
                    wait
                }
                Err(error) => {
                    failures += 1;
                    if let Some(next) = self.on_error(error) {
                        return next;
                    }
                    self.backoff(failures)
                }
            };
            match self
                .wait_as_follower(wait.max(Duration::from_millis(1)))
                .await
            {
                Some(ElectorCommand::Resign(reply)) => {
                    reply.send(Ok(()));
                }
                Some(ElectorCommand::Shutdown(reply)) => {
                    reply.send(Ok(()));
                    return Next::Stop(None);
                }
                None => {}
            }
        }
    }

    /// Leading: renew every TTL/3 until a command, a refusal, an abort or the deadline.
    async fn lead(&mut self, mut lease: Lease, sent: Instant) -> Next {
        let mut deadline = sent + self.believe;
        if Instant::now() >= deadline {
            // The grant took so long to arrive that it is already unsafe to act on; ask again
            // (acquire is idempotent for the live holder, and measures from a fresh send).
            return Next::Campaign;
        }
        let (guard, control) = LeaderGuard::new(lease.clone(), deadline);
        // Should anything below panic, the guard still ends (the supervisor reports the rest).
        let _end_on_panic = control.end_on_drop();
        let term = lease.term;
        info!(%term, "elected");
        self.publish(Leadership::Leader(guard.clone()));
        let _ = self.events.send(Event::Elected {
            term,
            at: Instant::now(),
        });
        let renew_every = self.claim.ttl.get() / 3;
        let mut next_renew = sent + renew_every;
        let mut failures = 0u32;
        let mut pending_error = None;
        let (reason, command) = loop {
            tokio::select! {
                biased;
                _ = sleep_until(deadline) => break (StepDown::DeadlinePassed, None),
                command = self.commands.recv() => match command {
                    Some(ElectorCommand::Resign(reply)) => break (StepDown::Resigned, Some(ElectorCommand::Resign(reply))),
                    Some(command) => break (StepDown::Shutdown, Some(command)),
                    None => break (StepDown::Shutdown, None),
                },
                _ = sleep_until(next_renew) => {}
            }
            let sent = Instant::now();
            let answer = tokio::select! {
                biased;
                _ = sleep_until(deadline) => break (StepDown::DeadlinePassed, None),
                answer = self.request("renew", self.store.renew(&lease)) => answer,
            };
            match answer {
                Ok(Renewal::Renewed(renewed)) => {
                    failures = 0;
                    lease = renewed;
                    deadline = sent + self.believe;
                    control.extend(deadline);
                    next_renew = sent + renew_every;
                }
                Ok(Renewal::Lost) => break (StepDown::Lost, None),
                Err(error) => {
                    failures += 1;
                    if self.policy.decide(&error) == OnError::Abort {
                        pending_error = Some(error);
                        break (StepDown::Aborted, None);
                    }
                    warn!(error = %error, "renew failed; retrying until the deadline");
                    let _ = self.events.send(Event::Error(error));
                    next_renew = Instant::now() + self.backoff(failures);
                }
            }
        };
        // Stop believing *before* anything else is sent, so the release below can never let
        // another candidate lead while this one still thinks it does.
        control.end(reason);
        // This leadership is over for good: the next one is a new claim, so it can only be a
        // new grant with a new term, never a re-entry into this lease (whose record a foreign
        // write may have changed, or whose renewal may still land).
        self.claim.nonce = Nonce::random();
        self.last_term = Some(term);
        let at = Instant::now().min(deadline);
        info!(%term, ?reason, "stepped down");
        self.publish(Leadership::Follower { leader: None });
        let _ = self.events.send(Event::SteppedDown { term, at, reason });
        match reason {
            StepDown::Lost | StepDown::DeadlinePassed => Next::Campaign,
            StepDown::Aborted => {
                let error = pending_error.expect("set with Aborted");
                let _ = self.release(&lease).await;
                let _ = self.events.send(Event::Error(error.clone()));
                Next::Stop(Some(error))
            }
            StepDown::Resigned | StepDown::Shutdown => {
                let released = self.release(&lease).await;
                match command {
                    Some(ElectorCommand::Resign(reply)) => {
                        // A release whose outcome is unknown may still land later. Had this
                        // candidate meanwhile re-acquired the same term (acquire is idempotent
                        // for the live holder), that late release would end a lease it
                        // believes in. Sitting out a full TTL rules it out: by then the lease
                        // was released or expired, so any re-grant takes a new term.
                        let pause = if released.is_ok() {
                            self.resign_pause
                        } else {
                            self.resign_pause.max(self.claim.ttl.get())
                        };
                        reply.send(released);
                        self.sit_out(pause).await
                    }
                    Some(ElectorCommand::Shutdown(reply)) => {
                        reply.send(released);
                        Next::Stop(None)
                    }
                    None => Next::Stop(None),
                }
            }
        }
    }

    /// After a resign: stay out of the race so another candidate takes over.
    async fn sit_out(&mut self, pause: Duration) -> Next {
        let until = Instant::now() + pause;
        loop {
            tokio::select! {
                _ = sleep_until(until) => return Next::Campaign,
                command = self.commands.recv() => match command {
                    Some(ElectorCommand::Resign(reply)) => { reply.send(Ok(())); }
                    Some(ElectorCommand::Shutdown(reply)) => { reply.send(Ok(())); return Next::Stop(None); }
                    None => return Next::Stop(None),
                },
            }
        }
    }

    async fn release(&mut self, lease: &Lease) -> Result<()> {
        match self.request("release", self.store.release(lease)).await {
            Ok(Release::Released) => {
                debug!(term = %lease.term, "released");
                Ok(())
            }
            Ok(Release::NotHeld) => {
                debug!(term = %lease.term, "release found the lease already gone");
                Ok(())
            }
            Err(error) => {
                warn!(error = %error, "release failed; the lease will expire at the coordinator");
                let _ = self.events.send(Event::Error(error.clone()));
                Err(error)
            }
        }
    }

    /// Sleeps as a follower; wakes early on a change notice or a command. A closed command
    /// channel (handle dropped) is returned as a shutdown.
    async fn wait_as_follower(&mut self, wait: Duration) -> Option<ElectorCommand> {
        let until = Instant::now() + wait;
        loop {
            let (feed, commands) = (&mut self.feed, &mut self.commands);
            let notice = async {
                match feed {
                    FeedState::Live(feed) => feed.changed().await,
                    _ => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = sleep_until(until) => return None,
                alive = notice => {
                    if alive {
                        return None;
                    }
                    debug!("change feed ended; sleeping until expiry");
                    self.feed = FeedState::Unknown;
                }
                command = commands.recv() => {
                    return Some(command.unwrap_or_else(|| ElectorCommand::Shutdown(Reply(oneshot::channel().0))));
                }
            }
        }
    }

    async fn ensure_feed(&mut self) {
        if !matches!(self.feed, FeedState::Unknown) {
            return;
        }
        self.feed = match self
            .request("subscribe", self.store.subscribe(&self.claim.election))
            .await
        {
            Ok(Some(feed)) => FeedState::Live(feed),
            Ok(None) => FeedState::Unsupported,
            Err(error) => {
                debug!(error = %error, "subscribe failed; will retry");
                FeedState::Unknown
            }
        };
    }

    /// Runs one request under the request timeout.
    async fn request<T>(
        &self,
        operation: &'static str,
        request: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        timeout(self.request_timeout, request)
            .await
            .unwrap_or_else(|_| {
                Err(Error::timeout(
                    "coordinator",
                    operation,
                    self.request_timeout,
                ))
            })
    }

    /// Applies the error policy outside leadership: `Some(stop)` to abort.
    fn on_error(&mut self, error: Error) -> Option<Next> {
        match self.policy.decide(&error) {
            OnError::Retry => {
                warn!(error = %error, "request failed; retrying");
                let _ = self.events.send(Event::Error(error));
                None
            }
            OnError::Abort => {
                let _ = self.events.send(Event::Error(error.clone()));
                Some(Next::Stop(Some(error)))
            }
        }
    }

    fn publish(&self, state: Leadership) {
        publish(&self.state, state);
    }

    /// Warns once per term when the lease is held under this candidate's own id by a claim
    /// that is not its own last one: another elector was started with the same id.
    fn warn_if_duplicate(&mut self, info: &LeaderInfo) {
        if info.holder != self.claim.candidate
            || Some(info.term) == self.last_term
            || Some(info.term) == self.warned_duplicate
        {
            return;
        }
        self.warned_duplicate = Some(info.term);
        warn!(
            term = %info.term,
            "another elector with this candidate id holds the lease (ids must be unique); \
             following it until its lease ends"
        );
    }

    /// A small random delay added to follower sleeps so followers do not stampede.
    /// A follower's wake-up jitter: up to TTL/400, at most 5 ms. Enough to spread followers
    /// that were told the same expiry over a few milliseconds; small enough that crash
    /// failover stays within a few milliseconds of the expiry (acquire is atomic on every
    /// store, so followers arriving together cost requests, never safety).
    fn jitter(&mut self) -> Duration {
        self.rng
            .duration_up_to((self.claim.ttl.get() / 400).min(Duration::from_millis(5)))
    }

    /// Exponential backoff with equal jitter: 25 ms · 2ⁿ, capped at TTL/4.
    fn backoff(&mut self, failures: u32) -> Duration {
        let cap = self.claim.ttl.get() / 4;
        let full = Duration::from_millis(25)
            .saturating_mul(1u32 << failures.min(16))
            .min(cap);
        full / 2 + self.rng.duration_up_to(full / 2)
    }
}
