//! The pure election engine: Raft's leader election without a log.
//!
//! No I/O, no timers, no clock reads: every input carries the current monotonic time, and
//! randomness comes from a seed. Inputs are [`Engine::tick`], [`Engine::receive`] and
//! [`Engine::resign`]; each returns the [`Command`]s the runtime must carry out **in order**
//! (a [`Command::Persist`] must be durable before any later [`Command::Send`] of the same batch
//! leaves the node, which is how a vote is persisted before it is sent).
//!
//! What it implements, and why:
//!
//! - **Terms and one vote per term.** The vote is persisted with the term before the reply
//!   that grants it is sent, so a restart cannot vote twice in one term (goelect keeps both in
//!   memory and grants to any candidate with a term ≥ its own).
//! - **Pre-vote.** A node whose election timeout fires first asks whether it *could* win
//!   (term + 1, nobody's term changes); only with a majority does it start a real election. A
//!   partitioned node therefore cannot raise the cluster's term when it rejoins.
//! - **Leader lease.** A voter that heard from a live leader within the minimum election timeout
//!   refuses (pre-)votes. The leader believes it leads only until the send time of its last
//!   heartbeat acknowledged by a majority (itself included) plus the minimum election timeout ×
//!   (1 − ρ): every majority that could elect someone else contains a voter that received that
//!   heartbeat no earlier than it was sent and refuses votes until a full minimum election
//!   timeout later by its own clock. So no two nodes believe they lead at the same instant.
//! - **Check-quorum.** When the lease runs out (no majority acknowledged recently), the leader
//!   steps down.
//! - **Observers** never vote and never stand, but follow the leader.
//! - **Leadership transfer.** On resign the leader stops believing, then sends `TimeoutNow` to
//!   the voter that acknowledged it most recently; that voter starts an election at once
//!   (skipping pre-vote, marked as a transfer so voters waive the lease of the leader that
//!   handed over), so hand-over takes about one round trip.
//! - **A lost election is retried soon.** A candidate that enough voters refused that it can no
//!   longer reach a majority (a split vote: they voted for a rival) stands again after one
//!   heartbeat interval plus a random part of up to a quarter of the timeout range, instead of
//!   a whole new election timeout. In a split vote nobody leads and every voter that voted
//!   reset its own timer, so Raft's rule cost the cluster a second full timeout: at ten voters
//!   with one dead, timeouts of 100–200 ms and delays up to 5 ms, 5.5 % of simulated crash
//!   failovers took over 200 ms, every one of them a split. Safety does not depend on when anyone stands (one vote per term, leases,
//!   pre-vote): the retry starts with a pre-vote, which a live leader's followers refuse, so it
//!   cannot disrupt a rival that did win.

mod follower;
mod leader;
#[cfg(test)]
mod tests;
mod votes;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use elect_core::{CandidateId, LeaderValue, Term};

use elect_core::rand::Rng;

/// A node's identity: the same validated alphabet as a candidate id.
pub type NodeId = CandidateId;

/// Time as the engine sees it: a monotonic duration since an arbitrary origin.
pub type Time = Duration;

/// Timing and membership of the engine.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// This node.
    pub id: NodeId,
    /// Every voter, this node included if it votes.
    pub voters: BTreeSet<NodeId>,
    /// Non-voting members: they receive heartbeats and follow, never vote, never stand. This
    /// node is an observer when it is not among the voters.
    pub observers: BTreeSet<NodeId>,
    /// How often the leader sends heartbeats.
    pub heartbeat: Duration,
    /// Election timeouts are drawn from `election_timeout_min..=election_timeout_max`.
    pub election_timeout_min: Duration,
    /// See `election_timeout_min`.
    pub election_timeout_max: Duration,
    /// The clock-rate bound ρ between nodes (e.g. 0.01).
    pub clock_drift: f64,
    /// Seed for the election-timeout randomness.
    pub seed: u64,
    /// The value this node publishes while it leads, carried in its heartbeats.
    pub value: Option<LeaderValue>,
}

/// A message between nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// "Could I win an election for `term`?" Changes nobody's term.
    PreVote {
        /// The term the sender would stand in (its term + 1).
        term: Term,
    },
    /// The answer to a pre-vote.
    PreVoteReply {
        /// The term asked about.
        term: Term,
        /// Whether the sender would vote.
        granted: bool,
    },
    /// A real vote request.
    RequestVote {
        /// The candidate's new term.
        term: Term,
        /// Sent because the leader handed over: voters waive that leader's lease.
        transfer: bool,
    },
    /// The answer to a vote request.
    Vote {
        /// The voter's term.
        term: Term,
        /// Whether it voted for the candidate.
        granted: bool,
    },
    /// The leader's heartbeat; `seq` lets it match acknowledgements to send times.
    Heartbeat {
        /// The leader's term.
        term: Term,
        /// Per-leadership sequence number.
        seq: u64,
        /// The value the leader publishes, in every heartbeat (so a follower that joins or
        /// restarts learns it from the next one).
        value: Option<LeaderValue>,
    },
    /// A follower's acknowledgement of a heartbeat (or a refusal carrying a higher term).
    HeartbeatAck {
        /// The follower's term.
        term: Term,
        /// The heartbeat acknowledged.
        seq: u64,
    },
    /// The leader hands over: start an election now.
    TimeoutNow {
        /// The leader's term.
        term: Term,
    },
}

/// What the runtime must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Persist term and vote durably before carrying out the commands after this one.
    Persist {
        /// The current term.
        term: Term,
        /// Whom this node voted for in it.
        voted_for: Option<NodeId>,
    },
    /// Send a message.
    Send {
        /// The recipient.
        to: NodeId,
        /// The message.
        message: Message,
    },
    /// This node now leads in `term`, until `until` unless the lease is extended.
    BecameLeader {
        /// The term.
        term: Term,
        /// The lease's current end.
        until: Time,
    },
    /// The lease was extended.
    LeaseExtended {
        /// The term.
        term: Term,
        /// The lease's new end.
        until: Time,
    },
    /// This node no longer leads in `term`.
    SteppedDown {
        /// The term that ended.
        term: Term,
        /// Why.
        reason: StepDownReason,
    },
    /// Who this node believes leads, or the value it publishes, changed.
    LeaderChanged {
        /// The new leader, if known.
        leader: Option<NodeId>,
        /// Its term.
        term: Term,
        /// The value it publishes (none when unknown or unset).
        value: Option<LeaderValue>,
    },
}

/// Why a leader stepped down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepDownReason {
    /// No majority acknowledged a heartbeat within the lease (check-quorum).
    LeaseExpired,
    /// It saw a higher term.
    HigherTerm,
    /// It resigned (leadership transfer).
    Resigned,
}

/// A node's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Following (or waiting for) a leader.
    Follower,
    /// Asking for pre-votes.
    PreCandidate,
    /// Asking for votes.
    Candidate,
    /// Leading.
    Leader,
    /// Never votes, never stands.
    Observer,
}

/// The election state machine of one node.
#[derive(Debug)]
pub struct Engine {
    config: EngineConfig,
    rng: Rng,
    role: Role,
    term: Term,
    voted_for: Option<NodeId>,
    leader: Option<NodeId>,
    /// The value the leader publishes, as its last heartbeat carried it.
    leader_value: Option<LeaderValue>,
    /// When this node last heard from a live leader (for the vote-refusing lease).
    heard_leader_at: Option<Time>,
    election_deadline: Time,
    /// Pre-votes or votes received in the current attempt (self included).
    granted: BTreeSet<NodeId>,
    /// Voters that refused this node's vote request in its current term.
    refused: BTreeSet<NodeId>,
    // Leader state.
    seq: u64,
    sent_at: BTreeMap<u64, Time>,
    acked: BTreeMap<NodeId, u64>,
    lease_until: Time,
    /// Whether `BecameLeader` was emitted in this leadership.
    announced: bool,
    /// When this node won its election (it must reach a majority within an election timeout).
    elected_at: Time,
    next_heartbeat: Time,
}

impl Engine {
    /// A node starting at `now` with the term and vote it persisted (zero and none if new).
    pub fn new(config: EngineConfig, now: Time, term: Term, voted_for: Option<NodeId>) -> Engine {
        let observer = !config.voters.contains(&config.id);
        let mut engine = Engine {
            rng: Rng::seeded(config.seed),
            config,
            role: if observer {
                Role::Observer
            } else {
                Role::Follower
            },
            term,
            voted_for,
            leader: None,
            leader_value: None,
            heard_leader_at: None,
            election_deadline: now,
            granted: BTreeSet::new(),
            refused: BTreeSet::new(),
            seq: 0,
            sent_at: BTreeMap::new(),
            acked: BTreeMap::new(),
            lease_until: now,
            announced: false,
            elected_at: now,
            next_heartbeat: now,
        };
        engine.reset_election_timer(now);
        engine
    }

    /// This node's id.
    pub fn id(&self) -> &NodeId {
        &self.config.id
    }

    /// The current role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The current term.
    pub fn term(&self) -> Term {
        self.term
    }

    /// Who this node believes leads.
    pub fn leader(&self) -> Option<&NodeId> {
        self.leader.as_ref()
    }

    /// The value the believed leader publishes, as its last heartbeat carried it.
    pub fn leader_value(&self) -> Option<&LeaderValue> {
        self.leader_value.as_ref()
    }

    /// Whether this node believes it leads at `now`: leader, and its lease not run out.
    pub fn is_leading(&self, now: Time) -> bool {
        self.role == Role::Leader && now < self.lease_until
    }

    /// The end of the current lease (meaningful while leading).
    pub fn lease_until(&self) -> Time {
        self.lease_until
    }

    /// When the engine next needs a [`tick`](Self::tick), at the latest.
    pub fn next_deadline(&self) -> Time {
        match self.role {
            Role::Leader => self.next_heartbeat.min(self.quorum_deadline()),
            Role::Observer => Time::MAX,
            _ => self.election_deadline,
        }
    }

    /// When a leader without a fresh majority must step down (check-quorum): at the end of its
    /// lease, or, before the first majority acknowledgement, an election timeout after winning.
    fn quorum_deadline(&self) -> Time {
        if self.announced {
            self.lease_until
        } else {
            self.elected_at + self.config.election_timeout_min
        }
    }

    fn quorum(&self) -> usize {
        self.config.voters.len() / 2 + 1
    }

    fn lease_span(&self) -> Duration {
        self.config
            .election_timeout_min
            .mul_f64(1.0 - self.config.clock_drift)
    }

    fn reset_election_timer(&mut self, now: Time) {
        let (min, max) = (
            self.config.election_timeout_min,
            self.config.election_timeout_max,
        );
        self.election_deadline = now + min + self.rng.duration_up_to(max.saturating_sub(min));
    }

    /// When this node last heard from a live leader (its heartbeat or its vote request on a
    /// hand-over), if it ever did: what a node that stands or grants a vote can say about why.
    pub fn heard_leader_at(&self) -> Option<Time> {
        self.heard_leader_at
    }

    /// Whether this node is inside a live leader's lease (and so refuses votes).
    fn in_leader_lease(&self, now: Time) -> bool {
        self.role == Role::Leader
            || self
                .heard_leader_at
                .is_some_and(|at| now < at + self.config.election_timeout_min)
    }

    fn others(&self) -> impl Iterator<Item = &NodeId> + '_ {
        self.config
            .voters
            .iter()
            .filter(move |v| **v != self.config.id)
    }

    fn persist(&self, out: &mut Vec<Command>) {
        out.push(Command::Persist {
            term: self.term,
            voted_for: self.voted_for.clone(),
        });
    }

    fn set_leader(
        &mut self,
        leader: Option<NodeId>,
        value: Option<LeaderValue>,
        out: &mut Vec<Command>,
    ) {
        if self.leader != leader || self.leader_value != value {
            self.leader = leader.clone();
            self.leader_value = value.clone();
            out.push(Command::LeaderChanged {
                leader,
                term: self.term,
                value,
            });
        }
    }

    /// Moves to a higher term as a follower (stepping down if leading).
    fn adopt_term(&mut self, term: Term, out: &mut Vec<Command>) {
        if self.role == Role::Leader {
            self.step_down(StepDownReason::HigherTerm, out);
        }
        self.term = term;
        self.voted_for = None;
        if self.role != Role::Observer {
            self.role = Role::Follower;
        }
        self.set_leader(None, None, out);
        self.persist(out);
    }

    fn step_down(&mut self, reason: StepDownReason, out: &mut Vec<Command>) {
        if self.role == Role::Leader {
            self.role = Role::Follower;
            out.push(Command::SteppedDown {
                term: self.term,
                reason,
            });
            self.sent_at.clear();
            self.acked.clear();
            self.leader = None;
            self.leader_value = None;
            out.push(Command::LeaderChanged {
                leader: None,
                term: self.term,
                value: None,
            });
        }
    }

    /// Advances timers: starts a pre-vote when the election timeout fired, sends heartbeats,
    /// and steps down when the lease ran out.
    pub fn tick(&mut self, now: Time) -> Vec<Command> {
        let mut out = Vec::new();
        match self.role {
            Role::Observer => {}
            Role::Leader => {
                if now >= self.quorum_deadline() {
                    self.step_down(StepDownReason::LeaseExpired, &mut out);
                    self.reset_election_timer(now);
                } else if now >= self.next_heartbeat {
                    self.send_heartbeats(now, &mut out);
                }
            }
            Role::Follower | Role::PreCandidate | Role::Candidate => {
                if now >= self.election_deadline {
                    self.start_pre_vote(now, &mut out);
                }
            }
        }
        out
    }

    /// Handles a message from `from`: one handler per message kind (`votes`, `leader`,
    /// `follower`).
    pub fn receive(&mut self, now: Time, from: &NodeId, message: Message) -> Vec<Command> {
        let mut out = Vec::new();
        // Only voters take part in elections and only voters lead; anything else from a node
        // that is not a voter (an observer's acks, an unknown id) changes nothing.
        if !self.config.voters.contains(from) {
            match message {
                Message::RequestVote { .. } => out.push(Command::Send {
                    to: from.clone(),
                    message: Message::Vote {
                        term: self.term,
                        granted: false,
                    },
                }),
                Message::PreVote { term } => out.push(Command::Send {
                    to: from.clone(),
                    message: Message::PreVoteReply {
                        term,
                        granted: false,
                    },
                }),
                _ => {}
            }
            return out;
        }
        match message {
            Message::PreVote { term } => self.on_pre_vote(now, from, term, &mut out),
            Message::PreVoteReply { term, granted } => {
                self.on_pre_vote_reply(now, from, term, granted, &mut out)
            }
            Message::RequestVote { term, transfer } => {
                self.on_request_vote(now, from, term, transfer, &mut out)
            }
            Message::Vote { term, granted } => self.on_vote(now, from, term, granted, &mut out),
            Message::Heartbeat { term, seq, value } => {
                self.on_heartbeat(now, from, term, seq, value, &mut out)
            }
            Message::HeartbeatAck { term, seq } => {
                self.on_heartbeat_ack(now, from, term, seq, &mut out)
            }
            Message::TimeoutNow { term } => self.on_timeout_now(now, term, &mut out),
        }
        out
    }
}
