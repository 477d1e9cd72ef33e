//! [`RaftConfig`]: one node's membership, timing and state directory, validated.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use elect_core::{ElectionName, Error, LeaderValue, Result, Ttl};

use crate::engine::NodeId;

/// One node's configuration.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RaftConfig {
    /// This node.
    pub id: NodeId,
    /// The name leases and events carry (default `raft`).
    pub election: ElectionName,
    /// The voters (this node too, unless it is an observer).
    pub voters: Vec<NodeId>,
    /// Non-voting members: they follow, never vote, never lead.
    pub observers: Vec<NodeId>,
    /// Heartbeat interval (default 50 ms); at most half the minimum election timeout.
    ///
    /// Half is the Raft paper's setting (Ongaro & Ousterhout 2014, §9.3): it is safe — the
    /// lease counts from each heartbeat's send time, whatever the interval — but then a single
    /// lost or late heartbeat round ends the leader's lease (it steps down by check-quorum)
    /// and may start an election. The default (a sixth) rides out several.
    pub heartbeat: Duration,
    /// Minimum election timeout (default 300 ms, at least [`Ttl::MIN`], 10 ms); also the leader
    /// lease.
    ///
    /// Under 100 ms assumes a LAN: round trips, scheduling delays and process pauses well
    /// under the heartbeat, every time (the paper's 12–24 ms setting ran on dedicated servers).
    /// On a loaded host or across a WAN such timeouts turn every hiccup into a leader change;
    /// they never make two leaders (the lease is bounded by send times on each node's own
    /// monotonic clock and ρ).
    pub election_timeout_min: Duration,
    /// Maximum election timeout (default 600 ms).
    pub election_timeout_max: Duration,
    /// Clock-rate bound ρ between nodes (default 1 %).
    pub clock_drift: f64,
    /// Where term and vote are persisted (fsynced before a vote is sent). Without it a
    /// restarted node forgets its vote, and could vote twice in one term.
    pub state_dir: Option<PathBuf>,
    /// Seed for election-timeout randomness (default: from entropy).
    pub seed: Option<u64>,
    /// The value this node publishes while it leads (its address, say), carried in every
    /// heartbeat: followers and observers see it in [`LeaderInfo::value`](elect_core::LeaderInfo)
    /// (default none). It costs its length in every heartbeat to every peer.
    pub value: Option<LeaderValue>,
}

impl RaftConfig {
    /// A configuration for node `id` among `voters`, with the defaults.
    pub fn new(id: NodeId, voters: impl IntoIterator<Item = NodeId>) -> RaftConfig {
        RaftConfig {
            id,
            election: ElectionName::new("raft").expect("valid"),
            voters: voters.into_iter().collect(),
            observers: Vec::new(),
            heartbeat: Duration::from_millis(50),
            election_timeout_min: Duration::from_millis(300),
            election_timeout_max: Duration::from_millis(600),
            clock_drift: 0.01,
            state_dir: None,
            seed: None,
            value: None,
        }
    }

    /// Sets the observers.
    pub fn observers(mut self, observers: impl IntoIterator<Item = NodeId>) -> Self {
        self.observers = observers.into_iter().collect();
        self
    }

    /// Sets the heartbeat interval and the election timeout range.
    pub fn timing(mut self, heartbeat: Duration, min: Duration, max: Duration) -> Self {
        self.heartbeat = heartbeat;
        self.election_timeout_min = min;
        self.election_timeout_max = max;
        self
    }

    /// Sets the state directory.
    pub fn state_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.state_dir = Some(dir.into());
        self
    }

    /// Sets the election name.
    pub fn election(mut self, election: ElectionName) -> Self {
        self.election = election;
        self
    }

    /// Sets the value this node publishes while it leads.
    pub fn value(mut self, value: LeaderValue) -> Self {
        self.value = Some(value);
        self
    }

    /// Sets the seed.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Checks the configuration: unique ids, at least one voter, this node a member, and a
    /// heartbeat of at most half the minimum election timeout.
    pub fn validate(&self) -> Result<()> {
        let voters: BTreeSet<_> = self.voters.iter().collect();
        let observers: BTreeSet<_> = self.observers.iter().collect();
        if voters.is_empty() {
            return Err(Error::config("at least one voter is needed"));
        }
        if voters.len() != self.voters.len() || observers.len() != self.observers.len() {
            return Err(Error::config("node ids must be unique"));
        }
        if let Some(both) = voters.intersection(&observers).next() {
            return Err(Error::config(format!(
                "{both} is both a voter and an observer"
            )));
        }
        if !voters.contains(&self.id) && !observers.contains(&self.id) {
            return Err(Error::config(format!(
                "this node ({}) is neither a voter nor an observer",
                self.id
            )));
        }
        if self.election_timeout_min < Ttl::MIN {
            return Err(Error::config(format!(
                "the minimum election timeout {:?} must be at least {:?}",
                self.election_timeout_min,
                Ttl::MIN
            )));
        }
        if self.election_timeout_max < self.election_timeout_min {
            return Err(Error::config("the election timeout range is empty"));
        }
        if self.heartbeat.is_zero() || self.heartbeat * 2 > self.election_timeout_min {
            return Err(Error::config(format!(
                "the heartbeat {:?} must be at most half the minimum election timeout {:?}",
                self.heartbeat, self.election_timeout_min
            )));
        }
        if !(0.0..=0.1).contains(&self.clock_drift) || self.clock_drift.is_nan() {
            return Err(Error::config(format!(
                "clock drift {} must be between 0 and 0.1",
                self.clock_drift
            )));
        }
        Ok(())
    }
}
