//! [`Elector`]: a candidate campaigning in one election, and the handle's API.
//!
//! - `builder`: [`ElectorBuilder`], validation, and the start of the campaign task.
//! - `campaign`: the campaign loop (all the timing logic).
//! - `guard`: [`Leadership`], [`LeaderGuard`] and its [`GuardControl`].
//! - `events`: [`Event`] and [`StepDown`].
//! - `emitter`: sends events to subscribers and callbacks, and records leadership metrics.
//! - `callbacks`: [`Callbacks`] and the task that runs them.
//! - `run`: [`Elector::run`], work that runs only while leading.
//! - `health`: [`Health`].
//! - `policy`: [`ErrorPolicy`] and [`OnError`].
//! - `command`: what the handle asks of the task that drives it.

mod builder;
mod callbacks;
mod campaign;
mod command;
mod emitter;
mod events;
mod guard;
mod health;
mod policy;
mod run;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::time::timeout;
use tracing::debug;

pub use builder::ElectorBuilder;
pub use callbacks::{Callbacks, DEFAULT_CALLBACK_TIMEOUT};
pub use command::{ElectorCommand, Reply};
pub(crate) use emitter::Emitter;
pub use events::{Event, StepDown};
pub use guard::{GuardControl, LeaderGuard, Leadership};
pub use health::Health;
pub(crate) use health::HealthCell;
pub use policy::{ErrorPolicy, OnError};
pub use run::{AfterWork, RunError, RunPolicy};

use crate::error::{Error, Result};
use crate::lease::Ttl;
use crate::name::{CandidateId, ElectionName};
use crate::store::LeaseStore;

/// Default clock-rate bound ρ: local and coordinator clocks may run 1 % apart.
pub const DEFAULT_CLOCK_DRIFT: f64 = 0.01;
/// Default safety margin ε subtracted from every local deadline (coordinator clock granularity).
pub const DEFAULT_SAFETY_MARGIN: Duration = Duration::from_millis(2);
/// Default lease TTL.
pub const DEFAULT_TTL: Duration = Duration::from_secs(10);
/// How long dropping the handle of a driven elector ([`Elector::with_driver`]) waits for its
/// hand-over.
pub(crate) const DRIVER_RELEASE_WAIT: Duration = Duration::from_secs(5);

/// A candidate campaigning in one election: the campaign loop runs as a tokio task.
///
/// It acquires the lease when it can, renews it every TTL/3, and believes it leads only until
/// `t_send + TTL·(1 − ρ) − ε`, where `t_send` is the monotonic instant *before* the last
/// successful acquire or renew was sent: the coordinator cannot grant the lease to anyone else
/// before then, so no two candidates ever believe they lead at the same instant. As a follower
/// it sleeps until the lease it was told about expires, or until the coordinator's change feed
/// says the lease was released.
///
/// The handle is cheap to clone: a health handler, the main task and a signal handler can each
/// hold one. Call [`shutdown`](Self::shutdown) on any of them to hand over and stop. Dropping
/// the *last* handle stops the campaign too, and a leader releases its lease: on a
/// multi-thread runtime the drop waits (up to the request timeout) until the release is
/// answered, so an elector dropped at the end of `#[tokio::main]` hands over at once; on a
/// current-thread runtime the release is sent in the background and is lost if the runtime
/// stops first. A process that exits without either (`std::process::exit`, a signal's default
/// action, a crash) releases nothing: the lease expires after its TTL, and nobody else leads
/// before then.
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
#[derive(Debug, Clone)]
pub struct Elector {
    pub(crate) inner: Arc<Handle>,
}

/// What every clone of an [`Elector`] shares; dropping the last one stops the campaign.
#[derive(Debug)]
pub(crate) struct Handle {
    pub(crate) election: ElectionName,
    pub(crate) candidate: CandidateId,
    pub(crate) state: watch::Receiver<Leadership>,
    pub(crate) events: Emitter,
    pub(crate) commands: mpsc::Sender<ElectorCommand>,
    /// How long a drop waits for the release.
    pub(crate) release_wait: Duration,
    pub(crate) health: Arc<HealthCell>,
}

impl Drop for Handle {
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
            events: Emitter::new(),
            callbacks: None,
            value: None,
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

    /// The election this candidate campaigns in.
    pub fn election(&self) -> &ElectionName {
        &self.inner.election
    }

    /// This candidate's id.
    pub fn candidate(&self) -> &CandidateId {
        &self.inner.candidate
    }

    /// What this candidate believes now.
    pub fn leadership(&self) -> Leadership {
        self.inner.state.borrow().clone()
    }

    /// Whether this candidate leads right now (the tomcz `IsLeader`).
    pub fn is_leader(&self) -> bool {
        self.inner.state.borrow().is_leader()
    }

    /// A watch of [`Leadership`], updated on every change.
    pub fn watch(&self) -> watch::Receiver<Leadership> {
        self.inner.state.clone()
    }

    /// A stream of [`Event`]s from now on. Slow readers miss events rather than slowing the
    /// campaign (`broadcast` semantics: `recv` reports how many were skipped); for hooks that
    /// must see every event, use [`Callbacks`].
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    /// This elector's [`Health`] now: leading or not, the term, the age of the coordinator's
    /// last answer, failures in a row, whether the coordinator is reachable.
    pub fn health(&self) -> Health {
        let (leading, term, stopped) = match &*self.inner.state.borrow() {
            Leadership::Leader(g) => (g.is_leading(), Some(g.term()), false),
            Leadership::Stopped(_) => (false, None, true),
            Leadership::Follower { .. } => (false, None, false),
        };
        self.inner
            .health
            .snapshot(leading, term.filter(|_| leading), stopped)
    }

    /// Waits until this candidate leads and returns the guard of that leadership, or the error
    /// that stopped the elector ([`Error::Stopped`] after a shutdown). Cancellation safe.
    pub async fn leading(&self) -> Result<LeaderGuard> {
        let mut state = self.inner.state.clone();
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

    /// Steps down, releases the lease, and stops campaigning, for every clone of this handle.
    /// Returns the release's outcome, or the error that had already stopped the elector.
    pub async fn shutdown(&self) -> Result<()> {
        let released = self.command(ElectorCommand::Shutdown).await;
        // Return only once the campaign has stopped for good, so the state says so.
        let mut state = self.inner.state.clone();
        let _ = state
            .wait_for(|s| matches!(s, Leadership::Stopped(_)))
            .await;
        match released {
            Err(Error::Stopped { .. }) => match &*self.inner.state.borrow() {
                Leadership::Stopped(Some(error)) => Err(error.clone()),
                _ => Ok(()),
            },
            other => other,
        }
    }

    async fn command(&self, make: fn(Reply) -> ElectorCommand) -> Result<()> {
        let (reply, answer) = oneshot::channel();
        if self.inner.commands.send(make(Reply(reply))).await.is_err() {
            return Err(self.stopped());
        }
        answer.await.unwrap_or_else(|_| Err(self.stopped()))
    }

    fn stopped(&self) -> Error {
        Error::Stopped {
            election: self.inner.election.to_string(),
        }
    }
}
