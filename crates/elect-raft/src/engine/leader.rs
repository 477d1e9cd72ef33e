//! Leading: heartbeats, the lease from majority-acknowledged heartbeats (and check-quorum in
//! `tick`), and leadership transfer on resign.

use super::{Command, Engine, Message, NodeId, Role, StepDownReason, Time};
use elect_core::Term;

impl Engine {
    pub(super) fn become_leader(&mut self, now: Time, out: &mut Vec<Command>) {
        self.role = Role::Leader;
        self.seq = 0;
        self.sent_at.clear();
        self.acked.clear();
        // Votes do not make voters refuse others' votes, so leadership is believed only from
        // the first heartbeat a majority acknowledges: one round trip after the election.
        self.lease_until = now;
        self.announced = false;
        self.elected_at = now;
        let (id, value) = (self.config.id.clone(), self.config.value.clone());
        self.set_leader(Some(id), value, out);
        self.send_heartbeats(now, out);
    }

    pub(super) fn send_heartbeats(&mut self, now: Time, out: &mut Vec<Command>) {
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
                message: Message::Heartbeat {
                    term,
                    seq,
                    value: self.config.value.clone(),
                },
            });
        }
        // A cluster of one is its own majority.
        self.recompute_lease(out);
    }

    /// The lease from the newest heartbeat acknowledged by a majority (this node included).
    pub(super) fn recompute_lease(&mut self, out: &mut Vec<Command>) {
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

    /// A heartbeat's acknowledgement: a higher term ends this leadership; an ack of this term
    /// may extend the lease.
    pub(super) fn on_heartbeat_ack(
        &mut self,
        now: Time,
        from: &NodeId,
        term: Term,
        seq: u64,
        out: &mut Vec<Command>,
    ) {
        if term > self.term {
            self.adopt_term(term, out);
            self.reset_election_timer(now);
        } else if self.role == Role::Leader && term == self.term {
            let entry = self.acked.entry(from.clone()).or_insert(0);
            *entry = (*entry).max(seq);
            self.recompute_lease(out);
        }
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
