//! Everything measured for one contender, and its JSON.

use elect_bench::report::Json;

use crate::contenders::Contender;
use crate::frozen::Frozen;
use crate::load::Load;

/// Everything measured for one contender.
#[derive(Default)]
pub(crate) struct Outcome {
    pub(crate) failover: Vec<f64>,
    pub(crate) remaining: Vec<f64>,
    pub(crate) slack: Vec<f64>,
    pub(crate) handover: Vec<f64>,
    /// elect only: ms from a new leader's election to an observer's notice of it (an
    /// `Observer` process on the stores, the third node on raft).
    pub(crate) notice: Vec<f64>,
    /// One server only: the requests it counted in each hand-over round (see
    /// [`crate::handover::SETTLED`]).
    pub(crate) handover_requests: Vec<f64>,
    /// One server only: the requests it counted in each crash round, from the kill until
    /// [`crate::handover::SETTLED`] after the next election.
    pub(crate) failover_requests: Vec<f64>,
    pub(crate) frozen: Vec<Frozen>,
    /// Replicated Redis only: ms from the SIGKILL of the election's master until a candidate
    /// is elected again.
    pub(crate) master_failover: Vec<f64>,
    pub(crate) load: Load,
    pub(crate) errors: Vec<String>,
}

impl Outcome {
    pub(crate) fn frozen_failover(&self) -> Vec<f64> {
        self.frozen.iter().filter_map(|f| f.failover).collect()
    }

    pub(crate) fn overlap_max(&self) -> Option<f64> {
        self.frozen.iter().map(|f| f.overlap_ms).reduce(f64::max)
    }

    pub(crate) fn stale_work(&self) -> usize {
        self.frozen.iter().map(|f| f.stale_work).sum()
    }

    pub(crate) fn loss_first(&self) -> String {
        let said = self
            .frozen
            .iter()
            .filter(|f| f.loss_first == Some(true))
            .count();
        format!("{said}/{}", self.frozen.len())
    }

    pub(crate) fn json(&self, c: &Contender) -> Json {
        let num = |v: Option<f64>| v.map_or(Json::Null, Json::Num);
        Json::Obj(vec![
            ("name".into(), Json::Str(c.name())),
            ("library".into(), Json::Str(c.library().into())),
            ("coordinator".into(), Json::Str(c.coordinator())),
            ("settings".into(), Json::Str(c.settings())),
            ("crash_failover_ms".into(), Json::stats(&self.failover)),
            (
                "remaining_lease_at_kill_ms".into(),
                Json::stats(&self.remaining),
            ),
            ("detection_slack_ms".into(), Json::stats(&self.slack)),
            ("handover_ms".into(), Json::stats(&self.handover)),
            ("notice_ms".into(), Json::stats(&self.notice)),
            (
                "requests_per_crash_failover".into(),
                Json::stats(&self.failover_requests),
            ),
            (
                "requests_per_handover".into(),
                Json::stats(&self.handover_requests),
            ),
            (
                "frozen_leader".into(),
                Json::Obj(vec![
                    ("rounds".into(), Json::Num(self.frozen.len() as f64)),
                    ("failover_ms".into(), Json::stats(&self.frozen_failover())),
                    (
                        "rounds_without_failover".into(),
                        Json::Num(
                            self.frozen.iter().filter(|f| f.failover.is_none()).count() as f64
                        ),
                    ),
                    ("overlap_ms_max".into(), num(self.overlap_max())),
                    (
                        "stale_work_lines".into(),
                        Json::Num(self.stale_work() as f64),
                    ),
                    ("loss_reported_first".into(), Json::Str(self.loss_first())),
                ]),
            ),
            (
                "master_crash_next_election_ms".into(),
                Json::stats(&self.master_failover),
            ),
            ("load_requests_per_s".into(), num(self.load.requests)),
            (
                "load_commands_executed_per_s_incl_scripts".into(),
                num(self.load.executed),
            ),
            ("raft_messages_per_s".into(), num(self.load.messages)),
            (
                "errors".into(),
                Json::Arr(self.errors.iter().cloned().map(Json::Str).collect()),
            ),
        ])
    }
}
