//! What happened, for subscribers: [`Event`], and why a leadership ended: [`StepDown`].

use tokio::time::Instant;

use crate::error::Error;
use crate::term::Term;

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
