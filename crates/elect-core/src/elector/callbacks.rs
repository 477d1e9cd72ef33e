//! [`Callbacks`]: async hooks on leadership changes, each under a timeout, run in order on a
//! task of their own so that no callback can delay the campaign.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::timeout;
use tracing::{debug, warn};

use super::emitter::Notice;
use super::events::{Event, StepDown};
use super::guard::LeaderGuard;
use super::health::HealthCell;
use crate::error::Error;
use crate::lease::LeaderInfo;
use crate::metrics::Who;
use crate::term::Term;

type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send>>;
type Hook<A> = Arc<dyn Fn(A) -> BoxFuture + Send + Sync>;

/// The default time a callback may run before it is abandoned.
pub const DEFAULT_CALLBACK_TIMEOUT: Duration = Duration::from_secs(5);

/// Async callbacks on what an elector does — client-go's `OnStartedLeading`,
/// `OnStoppedLeading` and `OnNewLeader`, goelect's state callbacks with their
/// `CallBackTimeout`, go-master's start/stop hooks.
///
/// Given to [`ElectorBuilder::callbacks`](super::ElectorBuilder::callbacks), they run one at a
/// time, in the order of the events, on a task of their own: the campaign only queues them, so
/// a slow callback never delays a renewal or a step-down. Each runs under
/// [`timeout`](Self::timeout) (default 5 s); one that overruns is abandoned (its future is
/// dropped), logged at `warn` and counted in [`Health::callbacks_abandoned`](super::Health);
/// a panicking one is counted the same way. None is ever lost: `on_stopped_leading` always
/// follows the `on_elected` of its term.
///
/// goelect's states map onto elect's as follows: its *leader* is
/// [`Leadership::Leader`](super::Leadership) (`on_elected` on entry, `on_stopped_leading` on
/// exit); its *follower* and *candidate* are both [`Leadership::Follower`](super::Leadership)
/// — an elect candidate asks the coordinator for the lease and follows the holder it is told
/// of, with no separate voting state (`on_new_leader` when the holder or term it follows
/// changes).
///
/// A callback that starts work for the leadership should hand that work the guard (and stop
/// with [`LeaderGuard::lost`]) rather than run it inside the callback, or use
/// [`Elector::run`](super::Elector::run).
///
/// ```
/// use std::time::Duration;
/// use elect_core::{Callbacks, Elector, ElectionName, MemoryStore};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap().block_on(async {
/// let callbacks = Callbacks::new()
///     .on_elected(|guard| async move { println!("leading in term {}", guard.term()) })
///     .on_stopped_leading(|term, why| async move { println!("term {term} ended: {why:?}") })
///     .on_new_leader(|leader| async move { println!("{} leads", leader.holder) })
///     .timeout(Duration::from_secs(2));
/// let elector = Elector::builder(MemoryStore::new(), ElectionName::new("mail")?)
///     .callbacks(callbacks)
///     .start()?;
/// elector.leading().await?;
/// elector.shutdown().await?;
/// # Ok::<(), elect_core::Error>(())
/// # }).unwrap();
/// ```
#[derive(Clone)]
pub struct Callbacks {
    elected: Option<Hook<LeaderGuard>>,
    stopped: Option<Hook<(Term, StepDown)>>,
    new_leader: Option<Hook<LeaderInfo>>,
    error: Option<Hook<Error>>,
    timeout: Duration,
}

impl Default for Callbacks {
    fn default() -> Self {
        Callbacks::new()
    }
}

impl fmt::Debug for Callbacks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Callbacks")
            .field("on_elected", &self.elected.is_some())
            .field("on_stopped_leading", &self.stopped.is_some())
            .field("on_new_leader", &self.new_leader.is_some())
            .field("on_error", &self.error.is_some())
            .field("timeout", &self.timeout)
            .finish()
    }
}

fn hook<A, F, Fut>(f: F) -> Hook<A>
where
    F: Fn(A) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    Arc::new(move |a| Box::pin(f(a)))
}

impl Callbacks {
    /// No callbacks, the default timeout.
    pub fn new() -> Self {
        Callbacks {
            elected: None,
            stopped: None,
            new_leader: None,
            error: None,
            timeout: DEFAULT_CALLBACK_TIMEOUT,
        }
    }

    /// Called when this candidate becomes leader, with the guard of that leadership.
    pub fn on_elected<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(LeaderGuard) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.elected = Some(hook(f));
        self
    }

    /// Called when this candidate stops leading, with the term that ended and why.
    pub fn on_stopped_leading<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(Term, StepDown) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.stopped = Some(hook(move |(term, why)| f(term, why)));
        self
    }

    /// Called when this candidate, following, learns of another leader (holder or term).
    pub fn on_new_leader<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(LeaderInfo) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.new_leader = Some(hook(f));
        self
    }

    /// Called when a request to the coordinator fails.
    pub fn on_error<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(Error) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.error = Some(hook(f));
        self
    }

    /// How long each callback may run before it is abandoned (default 5 s; at least 1 ms).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout.max(Duration::from_millis(1));
        self
    }

    fn call(&self, notice: Notice) -> Option<(&'static str, BoxFuture)> {
        match notice.event {
            Event::Elected { .. } => {
                let guard = notice.guard?;
                Some(("on_elected", self.elected.as_ref()?(guard)))
            }
            Event::SteppedDown { term, reason, .. } => {
                Some(("on_stopped_leading", self.stopped.as_ref()?((term, reason))))
            }
            Event::LeaderObserved(info) => Some(("on_new_leader", self.new_leader.as_ref()?(info))),
            Event::Error(error) => Some(("on_error", self.error.as_ref()?(error))),
            _ => None,
        }
    }

    /// Runs the callbacks for every notice, in order, until the elector stops.
    pub(crate) async fn deliver(
        self,
        mut notices: mpsc::UnboundedReceiver<Notice>,
        health: Arc<HealthCell>,
        who: Who,
    ) {
        while let Some(notice) = notices.recv().await {
            let Some((name, future)) = self.call(notice) else {
                continue;
            };
            // On a task of its own, so that a panic is caught and an overrun can be aborted.
            let mut task = tokio::spawn(future);
            match timeout(self.timeout, &mut task).await {
                Ok(Ok(())) => debug!(callback = name, "callback done"),
                Ok(Err(failure)) => {
                    health.abandoned();
                    who.callback_abandoned(name);
                    warn!(callback = name, %failure, "callback panicked");
                }
                Err(_) => {
                    task.abort();
                    health.abandoned();
                    who.callback_abandoned(name);
                    warn!(callback = name, timeout = ?self.timeout, "callback abandoned at its timeout");
                }
            }
        }
    }
}
