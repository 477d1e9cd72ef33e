//! What happened, for subscribers: [`Event`], and why a leadership ended: [`StepDown`].

use tokio::time::Instant;

use crate::error::Error;
use crate::lease::LeaderInfo;
use crate::term::Term;

/// Why a leadership ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StepDown {
    /// [`Elector::resign`](super::Elector::resign) was called.
    Resigned,
    /// The elector was shut down (or its handle dropped).
    Shutdown,
    /// The coordinator refused a renewal: the lease had expired or changed hands.
    Lost,
    /// Renewals failed until the local safety deadline passed.
    DeadlinePassed,
    /// An error that the [`ErrorPolicy`](super::ErrorPolicy) says to abort on.
    Aborted,
}

impl StepDown {
    /// A short lower-case name (`"resigned"`, `"deadline_passed"`, …), for logs and metric
    /// labels.
    pub fn as_str(self) -> &'static str {
        match self {
            StepDown::Resigned => "resigned",
            StepDown::Shutdown => "shutdown",
            StepDown::Lost => "lost",
            StepDown::DeadlinePassed => "deadline_passed",
            StepDown::Aborted => "aborted",
        }
    }
}

/// What happened, in order, for subscribers of [`Elector::events`](super::Elector::events) —
/// the equivalent of go-master's start/stop hooks and go-leader's promoted/demoted/errored
/// channels. For callbacks that must see every event, use
/// [`Callbacks`](super::Callbacks): the broadcast drops events for a reader that falls 256
/// behind.
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
    /// As a follower, this candidate learned of a leader other than the one it knew (another
    /// holder, or another term).
    LeaderObserved(LeaderInfo),
    /// A request to the coordinator failed. Emitted after the matching `SteppedDown`, if any.
    Error(Error),
    /// The elector stopped for good.
    Stopped,
}
