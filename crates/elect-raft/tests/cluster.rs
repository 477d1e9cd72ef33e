//! A cluster of runtimes in one process, over the in-process network, on paused time: the
//! same Elector API and the same interval checker as the lease stores' conformance suite.

use std::time::Duration;

use elect_core::conformance::Recorder;
use elect_raft::{
    CandidateId, Elector, Leadership, LocalNetwork, RaftConfig, StateFile, StepDown, Term,
};
use tokio::time::{sleep, timeout, Instant};

const MS: Duration = Duration::from_millis(1);

fn id(s: &str) -> CandidateId {
    CandidateId::new(s).unwrap()
}

struct Cluster {
    net: LocalNetwork,
    ids: Vec<CandidateId>,
    observers: Vec<CandidateId>,
    nodes: Vec<Option<Elector>>,
    recorder: Recorder,
    state_root: Option<std::path::PathBuf>,
}

impl Cluster {
    fn new(voters: usize, observers: usize, persistent: bool) -> Cluster {
        let state_root = persistent.then(|| {
            let dir = std::env::temp_dir().join(format!(
                "elect-raft-cluster-{}-{:x}",
                std::process::id(),
                elect_core::rand::Rng::from_entropy().next_u64()
            ));
            std::fs::create_dir_all(&dir).unwrap();
            dir
        });
        let mut cluster = Cluster {
            net: LocalNetwork::new(),
            ids: (0..voters).map(|i| id(&format!("v{i}"))).collect(),
            observers: (0..observers).map(|i| id(&format!("o{i}"))).collect(),
            nodes: Vec::new(),
            recorder: Recorder::new(),
            state_root,
        };
        cluster.net.set_delay(MS);
        let all: Vec<_> = cluster
            .ids
            .iter()
            .chain(&cluster.observers)
            .cloned()
            .collect();
        for (k, node) in all.iter().enumerate() {
            let elector = cluster.start(node, k as u64);
            cluster.nodes.push(Some(elector));
        }
        cluster
    }

    fn config(&self, node: &CandidateId, seed: u64) -> RaftConfig {
        let mut config = RaftConfig::new(node.clone(), self.ids.clone())
            .observers(self.observers.clone())
            .timing(20 * MS, 150 * MS, 300 * MS)
            .seed(seed);
        if let Some(root) = &self.state_root {
            config = config.state_dir(root.join(node.as_str()));
        }
        config
    }

    fn start(&self, node: &CandidateId, seed: u64) -> Elector {
        let (transport, inbox) = self.net.attach(node);
        let config = self.config(node, seed);
        let elector = elect_raft::start(config, transport, inbox).unwrap();
        self.recorder.track(node.clone(), elector.events());
        elector
    }

    fn leader(&self) -> Option<usize> {
        self.nodes
            .iter()
            .position(|n| n.as_ref().is_some_and(Elector::is_leader))
    }

    async fn wait_for_leader(&self, within: Duration) -> usize {
        let until = Instant::now() + within;
        loop {
            if let Some(k) = self.leader() {
                return k;
            }
            assert!(Instant::now() < until, "no leader within {within:?}");
            sleep(MS).await;
        }
    }

    async fn finish(mut self) {
        for node in self.nodes.iter_mut() {
            if let Some(elector) = node.take() {
                elector.shutdown().await.unwrap();
            }
        }
        sleep(10 * MS).await;
        self.recorder.check();
        if let Some(root) = &self.state_root {
            let _ = std::fs::remove_dir_all(root);
        }
    }
}

#[tokio::test(start_paused = true)]
async fn three_voters_and_an_observer_elect_exactly_one_leader() {
    let cluster = Cluster::new(3, 1, false);
    let leader = cluster.wait_for_leader(Duration::from_secs(2)).await;
    assert!(leader < 3, "an observer never leads");
    for _ in 0..100 {
        sleep(10 * MS).await;
        let leaders = cluster
            .nodes
            .iter()
            .flatten()
            .filter(|n| n.is_leader())
            .count();
        assert_eq!(leaders, 1);
    }
    // Everyone, the observer included, knows who leads.
    for (k, node) in cluster
        .nodes
        .iter()
        .enumerate()
        .filter(|(k, _)| *k != leader)
    {
        match node.as_ref().unwrap().leadership() {
            Leadership::Follower { leader: Some(info) } => {
                assert_eq!(info.holder, cluster.ids[leader], "node {k}")
            }
            other => panic!("node {k}: {other:?}"),
        }
    }
    cluster.finish().await;
}

#[tokio::test(start_paused = true)]
async fn an_isolated_leader_steps_down_and_the_rest_elect_another() {
    let cluster = Cluster::new(3, 0, false);
    let old = cluster.wait_for_leader(Duration::from_secs(2)).await;
    let guard = cluster.nodes[old]
        .as_ref()
        .unwrap()
        .leading()
        .await
        .unwrap();
    let cut = Instant::now();
    cluster.net.isolate(&cluster.ids[old], true);
    timeout(Duration::from_secs(1), guard.lost())
        .await
        .expect("lost fires");
    assert!(
        cut.elapsed() <= 150 * MS,
        "stepped down {:?} after the cut",
        cut.elapsed()
    );
    let mark = cluster.recorder.mark();
    let next = cluster
        .recorder
        .elected_since(mark, Some(&cluster.ids[old]), Duration::from_secs(2))
        .await
        .expect("another leader");
    let took = next.start - cut;
    eprintln!("failover after isolating the leader: {took:?}");
    assert!(
        took <= 300 * MS + 150 * MS + 20 * MS,
        "failover took {took:?}"
    );
    // The old leader rejoins; pre-vote keeps it from raising the term.
    let term = next.term;
    cluster.net.isolate(&cluster.ids[old], false);
    sleep(Duration::from_secs(2)).await;
    let leader = cluster.leader().expect("still a leader");
    assert_eq!(
        cluster.ids[leader], next.candidate,
        "the rejoining node did not disrupt"
    );
    let now_term = cluster.nodes[leader]
        .as_ref()
        .unwrap()
        .leading()
        .await
        .unwrap()
        .term();
    assert_eq!(now_term, term, "the term did not rise");
    cluster.finish().await;
}

#[tokio::test(start_paused = true)]
async fn resign_transfers_leadership_in_a_few_milliseconds() {
    let cluster = Cluster::new(3, 0, false);
    let old = cluster.wait_for_leader(Duration::from_secs(2)).await;
    sleep(100 * MS).await;
    let mark = cluster.recorder.mark();
    let resigned = Instant::now();
    cluster.nodes[old].as_ref().unwrap().resign().await.unwrap();
    let next = cluster
        .recorder
        .elected_since(mark, Some(&cluster.ids[old]), Duration::from_secs(1))
        .await
        .expect("another leader");
    let took = next.start - resigned;
    eprintln!("transfer: {took:?}");
    assert!(took <= 10 * MS, "transfer took {took:?}");
    let intervals = cluster.recorder.intervals();
    assert_eq!(intervals[0].reason, Some(StepDown::Resigned));
    cluster.finish().await;
}

#[tokio::test(start_paused = true)]
async fn a_restarted_node_keeps_its_term_and_vote() {
    let mut cluster = Cluster::new(3, 0, true);
    let leader = cluster.wait_for_leader(Duration::from_secs(2)).await;
    let term = cluster.nodes[leader]
        .as_ref()
        .unwrap()
        .leading()
        .await
        .unwrap()
        .term();
    let follower = (leader + 1) % 3;
    let node = cluster.ids[follower].clone();
    let dir = cluster.state_root.as_ref().unwrap().join(node.as_str());
    let (persisted_term, _) = StateFile::open(&dir).unwrap().load().unwrap();
    assert_eq!(
        persisted_term, term,
        "the follower persisted the leader's term"
    );
    // Crash: cut it off, drop its handle; then restart from the state directory.
    cluster.net.detach(&node);
    cluster.nodes[follower]
        .take()
        .unwrap()
        .shutdown()
        .await
        .unwrap();
    sleep(500 * MS).await;
    let restarted = cluster.start(&node, 99);
    cluster.nodes[follower] = Some(restarted);
    sleep(Duration::from_secs(1)).await;
    let (after, _) = StateFile::open(&dir).unwrap().load().unwrap();
    assert!(after >= term, "restarted below its persisted term");
    assert!(cluster.leader().is_some());
    let leader_term = {
        let k = cluster.leader().unwrap();
        cluster.nodes[k]
            .as_ref()
            .unwrap()
            .leading()
            .await
            .unwrap()
            .term()
    };
    assert_eq!(
        leader_term, term,
        "a restarted follower does not disrupt a live leader"
    );
    cluster.finish().await;
}

#[tokio::test(start_paused = true)]
async fn believed_leadership_never_overlaps_under_churn() {
    let cluster = Cluster::new(5, 0, false);
    let mut rng = elect_core::rand::Rng::seeded(42);
    for _ in 0..60 {
        sleep(50 * MS + rng.duration_up_to(200 * MS)).await;
        let k = (rng.next_u64() % 5) as usize;
        match rng.next_u64() % 4 {
            0 => cluster.net.isolate(&cluster.ids[k], true),
            1 => cluster.net.heal(),
            2 => {
                if let Some(l) = cluster.leader() {
                    let _ = cluster.nodes[l].as_ref().unwrap().resign().await;
                }
            }
            _ => {
                let to = (k + 1 + (rng.next_u64() % 4) as usize) % 5;
                cluster
                    .net
                    .set_link(&cluster.ids[k], &cluster.ids[to], true);
            }
        }
    }
    cluster.net.heal();
    cluster.wait_for_leader(Duration::from_secs(3)).await;
    let leaderships = cluster.recorder.intervals().len();
    assert!(leaderships >= 5, "only {leaderships} leaderships");
    cluster.finish().await;
}

#[test]
fn bad_configurations_are_typed_errors() {
    let a = id("a");
    let cases = [
        RaftConfig::new(a.clone(), []),
        RaftConfig::new(a.clone(), [id("b")]),
        RaftConfig::new(a.clone(), [a.clone(), a.clone()]),
        RaftConfig::new(a.clone(), [a.clone()]).observers([a.clone()]),
        RaftConfig::new(a.clone(), [a.clone()]).timing(76 * MS, 150 * MS, 155 * MS),
        RaftConfig::new(a.clone(), [a.clone()]).timing(Duration::ZERO, 150 * MS, 300 * MS),
        RaftConfig::new(a.clone(), [a.clone()]).timing(4 * MS, 9 * MS, 300 * MS),
        RaftConfig::new(a.clone(), [a.clone()]).timing(20 * MS, 300 * MS, 200 * MS),
    ];
    for config in cases {
        assert!(
            matches!(
                config.validate(),
                Err(elect_raft::Error::InvalidConfig { .. })
            ),
            "{config:?}"
        );
    }
    assert!(RaftConfig::new(a.clone(), [a.clone()]).validate().is_ok());
    // The Raft paper's settings (§9.3): a heartbeat of half the minimum timeout, and 12 ms.
    for (heartbeat, min, max) in [(75, 150, 155), (75, 150, 200), (6, 12, 24)] {
        let config =
            RaftConfig::new(a.clone(), [a.clone()]).timing(heartbeat * MS, min * MS, max * MS);
        assert!(config.validate().is_ok(), "{config:?}");
    }
    let _ = Term::ZERO;
}
