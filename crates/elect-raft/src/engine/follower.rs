//! Following: heartbeats from the leader, and the leader's request to stand now (transfer).

use super::{Command, Engine, Message, NodeId, Role, Time};
use elect_core::{LeaderValue, Term};

impl Engine {
    /// A leader's heartbeat: a stale leader is told the current term; otherwise this node
    /// follows it, restarts its election timer and acknowledges.
    pub(super) fn on_heartbeat(
        &mut self,
        now: Time,
        from: &NodeId,
        term: Term,
        seq: u64,
        value: Option<LeaderValue>,
        out: &mut Vec<Command>,
    ) {
        if term < self.term {
            // A stale leader: tell it the current term so it steps down.
            out.push(Command::Send {
                to: from.clone(),
                message: Message::HeartbeatAck {
                    term: self.term,
                    seq,
                },
            });
            return;
        }
        if term > self.term {
            self.adopt_term(term, out);
        }
        if self.role == Role::Leader {
            // Two leaders in one term cannot happen (one vote per term); ignore.
            return;
        }
        if self.role != Role::Observer {
            self.role = Role::Follower;
        }
        self.heard_leader_at = Some(now);
        self.reset_election_timer(now);
        self.set_leader(Some(from.clone()), value, out);
        out.push(Command::Send {
            to: from.clone(),
            message: Message::HeartbeatAck { term, seq },
        });
    }

    /// The leader hands over: stand now, skipping pre-vote.
    pub(super) fn on_timeout_now(&mut self, now: Time, term: Term, out: &mut Vec<Command>) {
        if self.role != Role::Observer && term == self.term {
            self.start_election(now, true, out);
        }
    }
}
