//! The elector-level conformance checks — the same ones every lease store passes — on a raft
//! cluster in one process.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use elect_core::conformance::{candidate_value, Harness, Recorder, Settings};
use elect_raft::{CandidateId, Elector, LocalNetwork, RaftConfig, Ttl};

const MS: Duration = Duration::from_millis(1);

/// Voters on an in-process network with 1 ms links; cutting one isolates it both ways.
#[derive(Default)]
struct RaftHarness {
    net: LocalNetwork,
    ids: Mutex<Vec<CandidateId>>,
}

impl Harness for RaftHarness {
    fn start(&self, _check: &str, n: usize, _pause: Duration, recorder: &Recorder) -> Vec<Elector> {
        self.net.set_delay(MS);
        let ids: Vec<CandidateId> = (0..n)
            .map(|k| CandidateId::new(format!("node-{k}")).unwrap())
            .collect();
        *self.ids.lock().unwrap() = ids.clone();
        ids.iter()
            .enumerate()
            .map(|(k, id)| {
                let (transport, inbox) = self.net.attach(id);
                let config = RaftConfig::new(id.clone(), ids.clone())
                    .timing(20 * MS, 150 * MS, 300 * MS)
                    .seed(k as u64)
                    .value(candidate_value(k));
                let elector = elect_raft::start(config, transport, inbox).unwrap();
                // Subscribing right after start misses nothing: no node can be elected before
                // its first election timeout (150 ms) has passed.
                recorder.track(id.clone(), elector.events());
                elector
            })
            .collect()
    }

    fn cut(&self, k: usize, cut: bool) {
        let id = self.ids.lock().unwrap()[k].clone();
        self.net.isolate(&id, cut);
    }
}

fn harness() -> Arc<dyn Harness> {
    Arc::new(RaftHarness::default())
}

fn settings() -> Settings {
    // "TTL" here is the minimum election timeout, which is also the leader lease.
    Settings::in_memory()
        .with_ttl(Ttl::new(300 * MS).unwrap())
        .with_failover_bound(200 * MS)
        .with_handover_bound(50 * MS)
}

elect_core::cluster_conformance_tests!(
    harness: harness(),
    settings: settings(),
    attr: tokio::test(start_paused = true),
);

/// The same checks on real time and a multi-threaded runtime.
mod real_time {
    use super::{harness, settings};

    elect_core::cluster_conformance_tests!(harness: harness(), settings: settings());
}
