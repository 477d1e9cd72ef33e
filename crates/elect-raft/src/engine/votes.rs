//! Elections: pre-votes and votes, asked for and answered.

use std::collections::BTreeSet;

use super::{Command, Engine, Message, NodeId, Role, Time};
use elect_core::Term;

impl Engine {
    pub(super) fn start_pre_vote(&mut self, now: Time, out: &mut Vec<Command>) {
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

    pub(super) fn start_election(&mut self, now: Time, transfer: bool, out: &mut Vec<Command>) {
        self.reset_election_timer(now);
        self.role = Role::Candidate;
        self.term = Term(self.term.0 + 1);
        self.voted_for = Some(self.config.id.clone());
        self.granted = BTreeSet::from([self.config.id.clone()]);
        self.refused.clear();
        self.set_leader(None, None, out);
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

    /// A pre-vote: grant when the asker could win — its proposed term is ahead of ours and we
    /// are not inside a live leader's lease. Nobody's term changes.
    pub(super) fn on_pre_vote(
        &mut self,
        now: Time,
        from: &NodeId,
        term: Term,
        out: &mut Vec<Command>,
    ) {
        let granted = self.role != Role::Observer && term > self.term && !self.in_leader_lease(now);
        out.push(Command::Send {
            to: from.clone(),
            message: Message::PreVoteReply { term, granted },
        });
    }

    pub(super) fn on_pre_vote_reply(
        &mut self,
        now: Time,
        from: &NodeId,
        term: Term,
        granted: bool,
        out: &mut Vec<Command>,
    ) {
        if self.role == Role::PreCandidate && term == Term(self.term.0 + 1) && granted {
            self.granted.insert(from.clone());
            if self.granted.len() >= self.quorum() {
                self.start_election(now, false, out);
            }
        }
    }

    /// A vote request: one vote per term, persisted before it is sent; refused inside a live
    /// leader's lease unless the request is a hand-over that leader started.
    pub(super) fn on_request_vote(
        &mut self,
        now: Time,
        from: &NodeId,
        term: Term,
        transfer: bool,
        out: &mut Vec<Command>,
    ) {
        let refuse = |engine: &Engine, out: &mut Vec<Command>| {
            out.push(Command::Send {
                to: from.clone(),
                message: Message::Vote {
                    term: engine.term,
                    granted: false,
                },
            })
        };
        if self.role == Role::Observer {
            return refuse(self, out);
        }
        // A live leader's lease is waived only for a hand-over it started itself.
        if term < self.term || (!transfer && self.in_leader_lease(now)) {
            return refuse(self, out);
        }
        if term > self.term {
            self.adopt_term(term, out);
        }
        let granted = match &self.voted_for {
            None => true,
            Some(v) => v == from,
        };
        if granted && self.voted_for.is_none() {
            self.voted_for = Some(from.clone());
            // Durable before the vote leaves this node.
            self.persist(out);
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

    pub(super) fn on_vote(
        &mut self,
        now: Time,
        from: &NodeId,
        term: Term,
        granted: bool,
        out: &mut Vec<Command>,
    ) {
        if term > self.term {
            self.adopt_term(term, out);
        } else if self.role == Role::Candidate && term == self.term {
            if granted {
                self.granted.insert(from.clone());
                if self.granted.len() >= self.quorum() {
                    self.become_leader(now, out);
                }
            } else if !self.granted.contains(from) && self.refused.insert(from.clone()) {
                // A refusal in this term is final for it: the voter either voted for a rival
                // or is inside a live leader's lease (then the retry's pre-vote is refused).
                if self.config.voters.len() - self.refused.len() < self.quorum() {
                    self.lost_election(now);
                }
            }
        }
    }

    /// This term's election can no longer be won: stand again soon (see the module docs).
    fn lost_election(&mut self, now: Time) {
        let spread = self
            .config
            .election_timeout_max
            .saturating_sub(self.config.election_timeout_min);
        let retry = now + self.config.heartbeat + self.rng.duration_up_to(spread / 4);
        self.election_deadline = self.election_deadline.min(retry);
    }
}
