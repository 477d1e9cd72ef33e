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

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use elect_core::{CandidateId, Term};

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
    /// Who this node believes leads changed.
    LeaderChanged {
        /// The new leader, if known.
        leader: Option<NodeId>,
        /// Its term.
        term: Term,
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
    /// When this node last heard from a live leader (for the vote-refusing lease).
    heard_leader_at: Option<Time>,
    election_deadline: Time,
    /// Pre-votes or votes received in the current attempt (self included).
    granted: BTreeSet<NodeId>,
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
            heard_leader_at: None,
            election_deadline: now,
            granted: BTreeSet::new(),
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

    fn set_leader(&mut self, leader: Option<NodeId>, out: &mut Vec<Command>) {
        if self.leader != leader {
            self.leader = leader.clone();
            out.push(Command::LeaderChanged {
                leader,
                term: self.term,
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
        self.set_leader(None, out);
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
            out.push(Command::LeaderChanged {
                leader: None,
                term: self.term,
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

    fn start_pre_vote(&mut self, now: Time, out: &mut Vec<Command>) {
        self.reset_election_timer(now);
        self.role = Role::PreCandidate;
        self.granted = BTreeSet::from([self.config.id.clone()]);
        if self.granted.len() >= self.quorum() {
            self.start_election(now, false, out);
            return;
        }
        let term = Term(self.term.0 + 1);
        let peers: Vec<NodeId> = self.others().cloned().collect();
        for to in peers {
            out.push(Command::Send {
                to,
                message: Message::PreVote { term },
            });
        }
    }

    fn start_election(&mut self, now: Time, transfer: bool, out: &mut Vec<Command>) {
        self.reset_election_timer(now);
        self.role = Role::Candidate;
        self.term = Term(self.term.0 + 1);
        self.voted_for = Some(self.config.id.clone());
        self.granted = BTreeSet::from([self.config.id.clone()]);
        self.set_leader(None, out);
        self.persist(out);
        if self.granted.len() >= self.quorum() {
            self.become_leader(now, out);
            return;
        }
        let term = self.term;
        let peers: Vec<NodeId> = self.others().cloned().collect();
        for to in peers {
            out.push(Command::Send {
                to,
                message: Message::RequestVote { term, transfer },
            });
        }
    }

    fn become_leader(&mut self, now: Time, out: &mut Vec<Command>) {
        self.role = Role::Leader;
        self.seq = 0;
        self.sent_at.clear();
        self.acked.clear();
        // Votes do not make voters refuse others' votes, so leadership is believed only from
        // the first heartbeat a majority acknowledges: one round trip after the election.
        self.lease_until = now;
        self.announced = false;
        self.elected_at = now;
        let id = self.config.id.clone();
        self.set_leader(Some(id), out);
        self.send_heartbeats(now, out);
    }

    fn send_heartbeats(&mut self, now: Time, out: &mut Vec<Command>) {
        self.seq += 1;
        self.sent_at.insert(self.seq, now);
        self.acked.insert(self.config.id.clone(), self.seq);
        self.next_heartbeat = now + self.config.heartbeat;
        let (term, seq) = (self.term, self.seq);
        let peers: Vec<NodeId> = self
            .others()
            .chain(
                self.config
                    .observers
                    .iter()
                    .filter(|o| **o != self.config.id),
            )
            .cloned()
            .collect();
        for to in peers {
            out.push(Command::Send {
                to,
                message: Message::Heartbeat { term, seq },
            });
        }
        // A cluster of one is its own majority.
        self.recompute_lease(out);
    }

    /// The lease from the newest heartbeat acknowledged by a majority (this node included).
    fn recompute_lease(&mut self, out: &mut Vec<Command>) {
        let mut acks: Vec<u64> = self
            .config
            .voters
            .iter()
            .filter_map(|v| self.acked.get(v).copied())
            .collect();
        if acks.len() < self.quorum() {
            return;
        }
        acks.sort_unstable_by(|a, b| b.cmp(a));
        let majority_seq = acks[self.quorum() - 1];
        let Some(&sent) = self.sent_at.get(&majority_seq) else {
            return;
        };
        // Older send times can no longer matter.
        self.sent_at = self.sent_at.split_off(&majority_seq);
        let until = sent + self.lease_span();
        if until <= self.lease_until {
            return;
        }
        self.lease_until = until;
        let term = self.term;
        out.push(if self.announced {
            Command::LeaseExtended { term, until }
        } else {
            self.announced = true;
            Command::BecameLeader { term, until }
        });
    }

    /// Handles a message from `from`.
    pub fn receive(&mut self, now: Time, from: &NodeId, message: Message) -> Vec<Command> {
        let mut out = Vec::new();
        let known = self.config.voters.contains(from);
        // Only voters take part in elections and only voters lead; anything else from a node
        // that is not a voter (an observer's acks, an unknown id) changes nothing.
        if !known {
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
            Message::PreVote { term } => {
                // Grant when the asker could win: its proposed term is ahead of ours and we
                // are not inside a live leader's lease. Nobody's term changes.
                let granted = self.role != Role::Observer
                    && known
                    && term > self.term
                    && !self.in_leader_lease(now);
                out.push(Command::Send {
                    to: from.clone(),
                    message: Message::PreVoteReply { term, granted },
                });
            }
            Message::PreVoteReply { term, granted } => {
                if self.role == Role::PreCandidate && term == Term(self.term.0 + 1) && granted {
                    self.granted.insert(from.clone());
                    if self.granted.len() >= self.quorum() {
                        self.start_election(now, false, &mut out);
                    }
                }
            }
            Message::RequestVote { term, transfer } => {
                if self.role == Role::Observer || !known {
                    out.push(Command::Send {
                        to: from.clone(),
                        message: Message::Vote {
                            term: self.term,
                            granted: false,
                        },
                    });
                    return out;
                }
                // A live leader's lease is waived only for a hand-over it started itself.
                if term < self.term || (!transfer && self.in_leader_lease(now)) {
                    out.push(Command::Send {
                        to: from.clone(),
                        message: Message::Vote {
                            term: self.term,
                            granted: false,
                        },
                    });
                    return out;
                }
                if term > self.term {
                    self.adopt_term(term, &mut out);
                }
                let granted = match &self.voted_for {
                    None => true,
                    Some(v) => v == from,
                };
                if granted && self.voted_for.is_none() {
                    self.voted_for = Some(from.clone());
                    // Durable before the vote leaves this node.
                    self.persist(&mut out);
                    self.reset_election_timer(now);
                }
                out.push(Command::Send {
                    to: from.clone(),
                    message: Message::Vote {
                        term: self.term,
                        granted,
                    },
                });
            }
            Message::Vote { term, granted } => {
                if term > self.term {
                    self.adopt_term(term, &mut out);
                } else if self.role == Role::Candidate && term == self.term && granted {
                    self.granted.insert(from.clone());
                    if self.granted.len() >= self.quorum() {
                        self.become_leader(now, &mut out);
                    }
                }
            }
            Message::Heartbeat { term, seq } => {
                if term < self.term {
                    // A stale leader: tell it the current term so it steps down.
                    out.push(Command::Send {
                        to: from.clone(),
                        message: Message::HeartbeatAck {
                            term: self.term,
                            seq,
                        },
                    });
                    return out;
                }
                if term > self.term {
                    self.adopt_term(term, &mut out);
                }
                if self.role == Role::Leader {
                    // Two leaders in one term cannot happen (one vote per term); ignore.
                    return out;
                }
                if self.role != Role::Observer {
                    self.role = Role::Follower;
                }
                self.heard_leader_at = Some(now);
                self.reset_election_timer(now);
                self.set_leader(Some(from.clone()), &mut out);
                out.push(Command::Send {
                    to: from.clone(),
                    message: Message::HeartbeatAck { term, seq },
                });
            }
            Message::HeartbeatAck { term, seq } => {
                if term > self.term {
                    self.adopt_term(term, &mut out);
                    self.reset_election_timer(now);
                } else if self.role == Role::Leader && term == self.term && known {
                    let entry = self.acked.entry(from.clone()).or_insert(0);
                    *entry = (*entry).max(seq);
                    self.recompute_lease(&mut out);
                }
            }
            Message::TimeoutNow { term } => {
                if self.role != Role::Observer && known && term == self.term {
                    self.start_election(now, true, &mut out);
                }
            }
        }
        out
    }

    /// Hands leadership over: stops believing at once, then asks the voter that acknowledged
    /// most recently to start an election now. A no-op when not leading.
    pub fn resign(&mut self, now: Time) -> Vec<Command> {
        let mut out = Vec::new();
        if self.role != Role::Leader {
            return out;
        }
        let target = self
            .acked
            .iter()
            .filter(|(id, _)| **id != self.config.id)
            .max_by_key(|(_, seq)| **seq)
            .map(|(id, _)| id.clone());
        let term = self.term;
        self.lease_until = now;
        self.step_down(StepDownReason::Resigned, &mut out);
        // Give the target a head start: do not stand again for a full election timeout.
        self.reset_election_timer(now);
        if let Some(to) = target {
            out.push(Command::Send {
                to,
                message: Message::TimeoutNow { term },
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn id(s: &str) -> NodeId {
        NodeId::new(s).unwrap()
    }

    fn config(me: &str, voters: &[&str]) -> EngineConfig {
        EngineConfig {
            id: id(me),
            voters: voters.iter().map(|v| id(v)).collect(),
            observers: BTreeSet::from([id("o")]),
            heartbeat: 20 * MS,
            election_timeout_min: 150 * MS,
            election_timeout_max: 300 * MS,
            clock_drift: 0.01,
            seed: 1,
        }
    }

    fn node(me: &str) -> Engine {
        Engine::new(config(me, &["a", "b", "c"]), Time::ZERO, Term::ZERO, None)
    }

    fn sends(commands: &[Command]) -> Vec<(String, Message)> {
        commands
            .iter()
            .filter_map(|c| match c {
                Command::Send { to, message } => Some((to.to_string(), message.clone())),
                _ => None,
            })
            .collect()
    }

    /// Drives `a` to leadership with b's votes and acks; returns it at time 10 ms.
    fn leader_a() -> Engine {
        let mut a = node("a");
        a.tick(300 * MS);
        a.receive(
            300 * MS,
            &id("b"),
            Message::PreVoteReply {
                term: Term(1),
                granted: true,
            },
        );
        let out = a.receive(
            301 * MS,
            &id("b"),
            Message::Vote {
                term: Term(1),
                granted: true,
            },
        );
        assert_eq!(a.role(), Role::Leader);
        assert!(
            !out.iter()
                .any(|c| matches!(c, Command::BecameLeader { .. })),
            "not before a majority ack"
        );
        let out = a.receive(
            302 * MS,
            &id("b"),
            Message::HeartbeatAck {
                term: Term(1),
                seq: 1,
            },
        );
        assert!(out
            .iter()
            .any(|c| matches!(c, Command::BecameLeader { term: Term(1), .. })));
        a
    }

    #[test]
    fn an_election_timeout_starts_a_pre_vote_that_changes_no_term() {
        let mut a = node("a");
        assert!(
            a.tick(100 * MS).is_empty(),
            "before the minimum election timeout"
        );
        let out = a.tick(300 * MS);
        assert_eq!(a.role(), Role::PreCandidate);
        assert_eq!(a.term(), Term::ZERO);
        assert_eq!(
            sends(&out),
            vec![
                ("b".into(), Message::PreVote { term: Term(1) }),
                ("c".into(), Message::PreVote { term: Term(1) }),
            ]
        );
        assert!(!out.iter().any(|c| matches!(c, Command::Persist { .. })));
    }

    #[test]
    fn pre_votes_are_refused_inside_a_live_leaders_lease() {
        let mut b = node("b");
        b.receive(
            10 * MS,
            &id("a"),
            Message::Heartbeat {
                term: Term(1),
                seq: 1,
            },
        );
        let out = b.receive(100 * MS, &id("c"), Message::PreVote { term: Term(2) });
        assert_eq!(
            sends(&out),
            vec![(
                "c".into(),
                Message::PreVoteReply {
                    term: Term(2),
                    granted: false
                }
            )]
        );
        let out = b.receive(161 * MS, &id("c"), Message::PreVote { term: Term(2) });
        assert_eq!(
            sends(&out),
            vec![(
                "c".into(),
                Message::PreVoteReply {
                    term: Term(2),
                    granted: true
                }
            )]
        );
        assert_eq!(b.term(), Term(1), "a pre-vote changes no term");
    }

    #[test]
    fn a_vote_is_persisted_before_it_is_sent_and_given_once_per_term() {
        let mut b = node("b");
        let out = b.receive(
            MS,
            &id("a"),
            Message::RequestVote {
                term: Term(1),
                transfer: false,
            },
        );
        let persist = out
            .iter()
            .rposition(|c| matches!(c, Command::Persist { term: Term(1), voted_for: Some(v) } if v.as_str() == "a"))
            .expect("the vote is persisted");
        let send = out
            .iter()
            .position(|c| {
                matches!(
                    c,
                    Command::Send {
                        message: Message::Vote { granted: true, .. },
                        ..
                    }
                )
            })
            .expect("the vote is sent");
        assert!(persist < send, "persisted before it is sent: {out:?}");
        let out = b.receive(
            2 * MS,
            &id("c"),
            Message::RequestVote {
                term: Term(1),
                transfer: false,
            },
        );
        assert_eq!(
            sends(&out),
            vec![(
                "c".into(),
                Message::Vote {
                    term: Term(1),
                    granted: false
                }
            )]
        );
        // Asking again (a duplicate) gets the same answer.
        let out = b.receive(
            3 * MS,
            &id("a"),
            Message::RequestVote {
                term: Term(1),
                transfer: false,
            },
        );
        assert_eq!(
            sends(&out),
            vec![(
                "a".into(),
                Message::Vote {
                    term: Term(1),
                    granted: true
                }
            )]
        );
    }

    #[test]
    fn a_restarted_node_keeps_its_vote() {
        let mut b = Engine::new(
            config("b", &["a", "b", "c"]),
            Time::ZERO,
            Term(4),
            Some(id("a")),
        );
        let out = b.receive(
            MS,
            &id("c"),
            Message::RequestVote {
                term: Term(4),
                transfer: false,
            },
        );
        assert_eq!(
            sends(&out),
            vec![(
                "c".into(),
                Message::Vote {
                    term: Term(4),
                    granted: false
                }
            )]
        );
    }

    #[test]
    fn the_lease_runs_from_the_majority_acknowledged_send_time() {
        let mut a = leader_a();
        // Heartbeat 1 was sent at 301 ms (on winning) and acknowledged by b.
        let until = 301 * MS + (150 * MS).mul_f64(0.99);
        assert_eq!(a.lease_until(), until);
        assert!(a.is_leading(until - MS));
        assert!(!a.is_leading(until));
        // A late ack of an old heartbeat does not extend it; a new one does.
        let out = a.tick(321 * MS);
        assert_eq!(
            sends(&out).len(),
            3,
            "heartbeats to b, c and the observer o"
        );
        a.receive(
            322 * MS,
            &id("c"),
            Message::HeartbeatAck {
                term: Term(1),
                seq: 1,
            },
        );
        assert_eq!(a.lease_until(), until);
        let out = a.receive(
            323 * MS,
            &id("c"),
            Message::HeartbeatAck {
                term: Term(1),
                seq: 2,
            },
        );
        assert!(matches!(out[..], [Command::LeaseExtended { .. }]));
        assert_eq!(a.lease_until(), 321 * MS + (150 * MS).mul_f64(0.99));
    }

    #[test]
    fn a_leader_without_a_majority_steps_down_when_its_lease_ends() {
        let mut a = leader_a();
        let end = a.lease_until();
        let mut stepped = None;
        while stepped.is_none() && a.role() == Role::Leader {
            let now = a.next_deadline();
            assert!(now <= end, "no deadline past the lease's end");
            let out = a.tick(now);
            if out.iter().any(|c| {
                matches!(
                    c,
                    Command::SteppedDown {
                        reason: StepDownReason::LeaseExpired,
                        ..
                    }
                )
            }) {
                stepped = Some(now);
                break;
            }
        }
        assert_eq!(stepped, Some(end), "steps down exactly at the lease's end");
        assert_eq!(a.role(), Role::Follower);
    }

    #[test]
    fn a_higher_term_in_an_ack_makes_the_leader_step_down() {
        let mut a = leader_a();
        let out = a.receive(
            310 * MS,
            &id("c"),
            Message::HeartbeatAck {
                term: Term(5),
                seq: 1,
            },
        );
        assert!(out.iter().any(|c| matches!(
            c,
            Command::SteppedDown {
                reason: StepDownReason::HigherTerm,
                ..
            }
        )));
        assert!(!a.is_leading(310 * MS));
        assert_eq!(a.term(), Term(5));
    }

    #[test]
    fn resign_stops_believing_then_hands_over_to_the_most_recent_acker() {
        let mut a = leader_a();
        a.tick(321 * MS);
        a.receive(
            322 * MS,
            &id("c"),
            Message::HeartbeatAck {
                term: Term(1),
                seq: 2,
            },
        );
        let out = a.resign(323 * MS);
        assert!(!a.is_leading(323 * MS));
        let stepped = out.iter().position(|c| {
            matches!(
                c,
                Command::SteppedDown {
                    reason: StepDownReason::Resigned,
                    ..
                }
            )
        });
        let sent = out.iter().position(|c| matches!(c, Command::Send { .. }));
        assert!(stepped < sent, "steps down before sending: {out:?}");
        assert_eq!(
            sends(&out),
            vec![("c".into(), Message::TimeoutNow { term: Term(1) })]
        );

        // c starts an election at once, marked as a transfer; b waives a's lease for it.
        let mut c = node("c");
        c.receive(
            300 * MS,
            &id("a"),
            Message::Heartbeat {
                term: Term(1),
                seq: 1,
            },
        );
        let out = c.receive(324 * MS, &id("a"), Message::TimeoutNow { term: Term(1) });
        assert_eq!(c.role(), Role::Candidate);
        assert!(sends(&out).contains(&(
            "b".into(),
            Message::RequestVote {
                term: Term(2),
                transfer: true
            }
        )));
        let mut b = node("b");
        b.receive(
            322 * MS,
            &id("a"),
            Message::Heartbeat {
                term: Term(1),
                seq: 2,
            },
        );
        let out = b.receive(
            325 * MS,
            &id("c"),
            Message::RequestVote {
                term: Term(2),
                transfer: true,
            },
        );
        assert_eq!(
            sends(&out),
            vec![(
                "c".into(),
                Message::Vote {
                    term: Term(2),
                    granted: true
                }
            )]
        );
        let out = b.receive(
            325 * MS,
            &id("a"),
            Message::RequestVote {
                term: Term(3),
                transfer: false,
            },
        );
        assert_eq!(
            sends(&out),
            vec![(
                "a".into(),
                Message::Vote {
                    term: Term(2),
                    granted: false
                }
            )],
            "no lease waiver without a transfer"
        );
    }

    #[test]
    fn observers_never_stand_or_vote_but_follow() {
        let mut o = Engine::new(config("o", &["a", "b", "c"]), Time::ZERO, Term::ZERO, None);
        assert_eq!(o.role(), Role::Observer);
        assert!(o.tick(Duration::from_secs(10)).is_empty());
        let out = o.receive(
            MS,
            &id("a"),
            Message::RequestVote {
                term: Term(1),
                transfer: false,
            },
        );
        assert_eq!(
            sends(&out),
            vec![(
                "a".into(),
                Message::Vote {
                    term: Term::ZERO,
                    granted: false
                }
            )]
        );
        let out = o.receive(MS, &id("a"), Message::PreVote { term: Term(1) });
        assert_eq!(
            sends(&out),
            vec![(
                "a".into(),
                Message::PreVoteReply {
                    term: Term(1),
                    granted: false
                }
            )]
        );
        o.receive(
            2 * MS,
            &id("a"),
            Message::Heartbeat {
                term: Term(1),
                seq: 1,
            },
        );
        assert_eq!(o.leader().map(|l| l.as_str()), Some("a"));
        assert_eq!(o.role(), Role::Observer);
    }

    #[test]
    fn messages_from_unknown_nodes_change_nothing() {
        let mut b = node("b");
        let out = b.receive(
            MS,
            &id("intruder"),
            Message::RequestVote {
                term: Term(9),
                transfer: false,
            },
        );
        assert_eq!(
            sends(&out),
            vec![(
                "intruder".into(),
                Message::Vote {
                    term: Term::ZERO,
                    granted: false
                }
            )]
        );
        assert_eq!(b.term(), Term::ZERO);
        b.receive(MS, &id("intruder"), Message::PreVote { term: Term(9) });
        assert_eq!(b.term(), Term::ZERO);
    }
}
