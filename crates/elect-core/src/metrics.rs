//! The metrics elect records, through the [`metrics`](https://docs.rs/metrics) facade: free
//! when the application installs no recorder, exported by whichever recorder it installs
//! (`metrics-exporter-prometheus`, OpenTelemetry, …). `elect run --http` serves them in the
//! Prometheus text format.
//!
//! | name | type | labels | meaning |
//! |---|---|---|---|
//! | `elect_is_leader` | gauge | `election`, `candidate` | 1 while this candidate leads, else 0 |
//! | `elect_term` | gauge | `election`, `candidate` | the term of the current (or last) leadership |
//! | `elect_leadership_transitions_total` | counter | `election`, `candidate`, `transition` | `elected`, or why leadership ended: `resigned`, `shutdown`, `lost`, `deadline_passed`, `aborted` |
//! | `elect_lease_remaining_seconds` | gauge | `election`, `candidate` | time left to the local deadline, as of the last renewal (0 once leadership ends) |
//! | `elect_request_duration_seconds` | histogram | `store`, `operation` | time of each coordinator request (`try_acquire`, `renew`, `release`, `subscribe`), answered or not |
//! | `elect_request_errors_total` | counter | `store`, `operation`, `kind` | failed requests, by [`Error::kind`](crate::Error::kind) |
//! | `elect_callbacks_abandoned_total` | counter | `election`, `callback` | callbacks abandoned at their timeout or that panicked |
//! | `elect_shards_leading` | gauge | `candidate` | how many elections this process's [`Shards`](../shards/struct.Shards.html) lead now (seats not counted); summed over every `Shards` of one candidate id |
//! | `elect_shards_transitions_total` | counter | `candidate`, `transition` | the `Shards`' leaderships begun (`elected`) and ended, by why, as for an elector |
//! | `elect_shards_share` | gauge | `candidate`, `seats` | with [balancing](../shards/struct.ShardsBuilder.html#method.balance): how many elections this process should lead (0 while it is not counted) |
//! | `elect_shards_processes` | gauge | `candidate`, `seats` | with balancing: the processes the last census counted (0 while this one is not counted) |
//! | `elect_raft_messages_sent_total` | counter | `node` | raft messages handed to the transport (elect-raft) |
//! | `elect_raft_frames_dropped_total` | counter | `node` | frames dropped: bad authentication, unknown sender, malformed (elect-raft) |
//!
//! A [`Shards`](../shards/struct.Shards.html) records no per-election series (thousands of elections
//! would be thousands of series): its totals, and its requests under `store`/`operation`.
//! `seats` is the name of the seat elections given to
//! [`balance`](../shards/struct.ShardsBuilder.html#method.balance).
//!
//! `store` is [`LeaseStore::kind`](crate::LeaseStore::kind). Labels hold names only, never a
//! URL or a secret.

use std::time::Duration;

use metrics::{counter, gauge, histogram};

use crate::elector::StepDown;
use crate::error::Error;
use crate::name::{CandidateId, ElectionName};
use crate::term::Term;

/// `elect_is_leader`.
pub const IS_LEADER: &str = "elect_is_leader";
/// `elect_term`.
pub const TERM: &str = "elect_term";
/// `elect_leadership_transitions_total`.
pub const TRANSITIONS: &str = "elect_leadership_transitions_total";
/// `elect_lease_remaining_seconds`.
pub const LEASE_REMAINING: &str = "elect_lease_remaining_seconds";
/// `elect_request_duration_seconds`.
pub const REQUEST_DURATION: &str = "elect_request_duration_seconds";
/// `elect_request_errors_total`.
pub const REQUEST_ERRORS: &str = "elect_request_errors_total";
/// `elect_callbacks_abandoned_total`.
pub const CALLBACKS_ABANDONED: &str = "elect_callbacks_abandoned_total";
/// `elect_shards_leading`.
pub const SHARDS_LEADING: &str = "elect_shards_leading";
/// `elect_shards_transitions_total`.
pub const SHARDS_TRANSITIONS: &str = "elect_shards_transitions_total";
/// `elect_shards_share`.
pub const SHARDS_SHARE: &str = "elect_shards_share";
/// `elect_shards_processes`.
pub const SHARDS_PROCESSES: &str = "elect_shards_processes";
/// `elect_raft_messages_sent_total`.
pub const RAFT_MESSAGES_SENT: &str = "elect_raft_messages_sent_total";
/// `elect_raft_frames_dropped_total`.
pub const RAFT_FRAMES_DROPPED: &str = "elect_raft_frames_dropped_total";

/// The labels of one candidate in one election.
#[derive(Debug, Clone)]
pub(crate) struct Who {
    election: String,
    candidate: String,
}

impl Who {
    pub(crate) fn new(election: &ElectionName, candidate: &CandidateId) -> Who {
        Who {
            election: election.to_string(),
            candidate: candidate.to_string(),
        }
    }

    fn labels(&self) -> [(&'static str, String); 2] {
        [
            ("election", self.election.clone()),
            ("candidate", self.candidate.clone()),
        ]
    }

    pub(crate) fn elected(&self, term: Term, remaining: Duration) {
        gauge!(IS_LEADER, &self.labels()).set(1.0);
        gauge!(TERM, &self.labels()).set(term.get() as f64);
        self.transition("elected");
        self.remaining(remaining);
    }

    pub(crate) fn stepped_down(&self, why: &'static str) {
        gauge!(IS_LEADER, &self.labels()).set(0.0);
        gauge!(LEASE_REMAINING, &self.labels()).set(0.0);
        self.transition(why);
    }

    pub(crate) fn remaining(&self, remaining: Duration) {
        gauge!(LEASE_REMAINING, &self.labels()).set(remaining.as_secs_f64());
    }

    fn transition(&self, what: &'static str) {
        let [e, c] = self.labels();
        counter!(TRANSITIONS, &[e, c, ("transition", what.to_string())]).increment(1);
    }

    pub(crate) fn callback_abandoned(&self, callback: &'static str) {
        counter!(
            CALLBACKS_ABANDONED,
            "election" => self.election.clone(),
            "callback" => callback
        )
        .increment(1);
    }
}

/// The labels of one `Shards`.
#[derive(Debug, Clone)]
pub(crate) struct ShardsWho {
    candidate: String,
    /// With balancing, the seats' name.
    seats: Option<String>,
}

impl ShardsWho {
    pub(crate) fn new(candidate: &CandidateId, seats: Option<&ElectionName>) -> ShardsWho {
        ShardsWho {
            candidate: candidate.to_string(),
            seats: seats.map(ToString::to_string),
        }
    }

    /// One election more is led. `leading` counts up and down (not set) so that two `Shards`
    /// of one candidate id in a process add up rather than overwrite each other.
    pub(crate) fn elected(&self) {
        gauge!(SHARDS_LEADING, "candidate" => self.candidate.clone()).increment(1.0);
        self.transition("elected");
    }

    /// One election fewer is led, for `why`.
    pub(crate) fn stepped_down(&self, why: StepDown) {
        gauge!(SHARDS_LEADING, "candidate" => self.candidate.clone()).decrement(1.0);
        self.transition(why.as_str());
    }

    fn transition(&self, what: &'static str) {
        counter!(
            SHARDS_TRANSITIONS,
            "candidate" => self.candidate.clone(),
            "transition" => what
        )
        .increment(1);
    }

    /// Balancing's census: this process's share and the processes counted (`None`: not
    /// counted).
    pub(crate) fn share(&self, share: Option<(usize, usize)>) {
        let Some(seats) = &self.seats else {
            return;
        };
        let (processes, share) = share.unwrap_or_default();
        let labels = [
            ("candidate", self.candidate.clone()),
            ("seats", seats.clone()),
        ];
        gauge!(SHARDS_SHARE, &labels).set(share as f64);
        gauge!(SHARDS_PROCESSES, &labels).set(processes as f64);
    }
}

/// Records one coordinator request.
pub(crate) fn request(
    store: &'static str,
    operation: &'static str,
    took: Duration,
    error: Option<&Error>,
) {
    histogram!(REQUEST_DURATION, "store" => store, "operation" => operation)
        .record(took.as_secs_f64());
    if let Some(error) = error {
        counter!(REQUEST_ERRORS, "store" => store, "operation" => operation, "kind" => error.kind())
            .increment(1);
    }
}

/// Counts one raft message handed to the transport by `node` (for elect-raft).
pub fn raft_message_sent(node: &CandidateId) {
    counter!(RAFT_MESSAGES_SENT, "node" => node.to_string()).increment(1);
}

/// Counts one frame `node` dropped (for elect-raft).
pub fn raft_frame_dropped(node: &CandidateId) {
    counter!(RAFT_FRAMES_DROPPED, "node" => node.to_string()).increment(1);
}
