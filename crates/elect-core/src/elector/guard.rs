//! What a candidate believes: [`Leadership`], the [`LeaderGuard`] of a leadership, and the
//! [`GuardControl`] its driver holds.

use std::fmt;
use std::sync::{Arc, OnceLock};

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use super::events::StepDown;
use crate::error::Error;
use crate::lease::{LeaderInfo, Lease};
use crate::term::Term;

/// What this candidate currently believes, as published by [`Elector::watch`](super::Elector::watch).
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
    /// [`ErrorPolicy`](super::ErrorPolicy) (`Some(error)`).
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

/// Proof of leadership for one term, handed out by [`Elector::leading`](super::Elector::leading).
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
    /// A guard for `lease`, believed until `deadline`, and the control that extends or ends it.
    /// Only drivers mint guards: [`crate::driver::guard`].
    pub(crate) fn mint(lease: Lease, deadline: Instant) -> (LeaderGuard, GuardControl) {
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

/// Publishes `state` unless it is the same follower state as now; true when it published.
pub(crate) fn publish(sender: &watch::Sender<Leadership>, state: Leadership) -> bool {
    sender.send_if_modified(|current| {
        if current.same_as(&state) {
            false
        } else {
            *current = state;
            true
        }
    })
}
