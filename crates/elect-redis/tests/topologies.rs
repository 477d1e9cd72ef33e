//! The whole conformance suite on the topologies production Redis runs in, started on loopback
//! from the local `redis-server` by the test support (once per test process): a Cluster of
//! three masters with a replica each (`redis-cluster://`), and a master with two replicas
//! behind three Sentinels (`redis-sentinel://`).

use elect_core::conformance::Settings;
use elect_redis::{RedisConfig, RedisStore};
use elect_tests::topology::{shared_cluster_url, shared_sentinel_url, Topology};
use elect_tests::unique_name;

async fn store_on(url: fn() -> String, prefix: &str) -> RedisStore {
    let url = tokio::task::spawn_blocking(url)
        .await
        .expect("the topology starts");
    RedisStore::connect(RedisConfig::new(&url).key_prefix(unique_name(prefix)))
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"))
}

mod cluster {
    use super::*;

    async fn store() -> RedisStore {
        store_on(shared_cluster_url, "cluster").await
    }

    elect_core::conformance_tests!(store: store(), settings: Settings::real_server());
}

mod sentinel {
    use super::*;

    async fn store() -> RedisStore {
        store_on(shared_sentinel_url, "sentinel").await
    }

    elect_core::conformance_tests!(store: store(), settings: Settings::real_server());
}

/// Failover safety behind Sentinels, on a topology of the test's own: with `WAIT` for both
/// replicas, a leader whose renewals reach only one replica (the other frozen) steps down by
/// its deadline and nobody leads until the replica is back; then, with `WAIT` for one replica,
/// the master is killed: the leader steps down by its deadline, Sentinel promotes a replica
/// that has the lease and the term counter, and leadership resumes there in a higher term.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_failover_with_wait_for_replicas() {
    use std::time::Duration;

    use elect_redis::{ElectionName, Elector};
    use tokio::time::{sleep, timeout, Instant};

    let topology = tokio::task::spawn_blocking(Topology::sentinel)
        .await
        .unwrap()
        .expect("a Sentinel topology of the test's own");
    let ttl = Duration::from_secs(2);
    let prefix = unique_name("failover");
    let connect = |replicas: u32| {
        let config = RedisConfig::new(&topology.url)
            .key_prefix(&prefix)
            .command_timeout(Duration::from_millis(500))
            .wait_for_replicas(replicas, Duration::from_millis(100));
        async move { RedisStore::connect(config).await.expect("connect") }
    };
    let election = ElectionName::new(unique_name("failover")).unwrap();
    let start = |store: RedisStore, who: &str| {
        Elector::builder(store, election.clone())
            .candidate(elect_redis::CandidateId::new(who).unwrap())
            .ttl(ttl)
            .start()
            .unwrap()
    };

    // Phase 1: WAIT 2, one replica frozen.
    let a = start(connect(2).await, "a");
    let guard = timeout(ttl * 3, a.leading())
        .await
        .expect("leads while both replicas acknowledge")
        .unwrap();
    let first_term = guard.term();
    sleep(ttl / 4).await;
    topology.nodes[1].signal("STOP");
    let frozen = Instant::now();
    timeout(ttl * 2, guard.lost())
        .await
        .expect("the leader steps down when a replica stops acknowledging");
    assert!(
        Instant::now() <= guard.deadline() + Duration::from_millis(100),
        "stepped down {:?} after its deadline",
        Instant::now() - guard.deadline()
    );
    eprintln!(
        "stepped down {:?} after the replica froze",
        frozen.elapsed()
    );
    let b = start(connect(2).await, "b");
    sleep(ttl * 2).await;
    assert!(
        !a.is_leader() && !b.is_leader(),
        "nobody may lead on writes that reach one replica of two"
    );
    topology.nodes[1].signal("CONT");
    let resumed = timeout(ttl * 5, async {
        tokio::select! {
            g = a.leading() => g.unwrap(),
            g = b.leading() => g.unwrap(),
        }
    })
    .await
    .expect("someone leads once the replica is back");
    assert!(resumed.term() > first_term);
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();

    // Phase 2: WAIT 1, the master killed.
    let c = start(connect(1).await, "c");
    let guard = timeout(ttl * 3, c.leading()).await.expect("leads").unwrap();
    let before = guard.term();
    let old_master = topology
        .sentinel_master_port()
        .expect("the Sentinels name a master");
    let master = topology
        .nodes
        .iter()
        .find(|n| n.port == old_master)
        .expect("the master is one of the nodes");
    sleep(ttl / 4).await;
    master.signal("KILL");
    let killed = Instant::now();
    timeout(ttl * 2, guard.lost())
        .await
        .expect("the leader steps down while its master is dead");
    let lost = Instant::now();
    assert!(lost <= guard.deadline() + Duration::from_millis(100));
    let again = timeout(Duration::from_secs(60), c.leading())
        .await
        .expect("leads again on the promoted replica")
        .unwrap();
    assert!(
        again.term() > before,
        "term {} after {}",
        again.term(),
        before
    );
    let new_master = topology.sentinel_master_port().unwrap();
    assert_ne!(new_master, old_master, "Sentinel promoted a replica");
    eprintln!(
        "master killed: stepped down after {:?}, leading again on :{new_master} after {:?}, \
         term {} → {}",
        lost - killed,
        killed.elapsed(),
        before,
        again.term()
    );
    c.shutdown().await.unwrap();
}

/// Failover in a Cluster of the test's own: with `WAIT` for one replica (each master has one),
/// a forced failover (`CLUSTER FAILOVER FORCE` on the replica of the election's master) moves
/// the slot under a live leader; leadership never overlaps, and it resumes (the old leader or
/// another) with terms that keep rising.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_failover_with_wait_for_replicas() {
    use std::time::Duration;

    use elect_core::conformance::Recorder;
    use elect_redis::{CandidateId, ElectionName, Elector};
    use elect_tests::topology::command;
    use tokio::time::{sleep, timeout};

    let topology = tokio::task::spawn_blocking(Topology::cluster)
        .await
        .unwrap()
        .expect("a Cluster of the test's own");
    let ttl = Duration::from_secs(2);
    let prefix = unique_name("cfailover");
    let election = ElectionName::new(unique_name("cfailover")).unwrap();
    let recorder = Recorder::new();
    let mut electors = Vec::new();
    for who in ["a", "b"] {
        let config = RedisConfig::new(&topology.url)
            .key_prefix(&prefix)
            .command_timeout(Duration::from_millis(500))
            .wait_for_replicas(1, Duration::from_millis(100));
        let store = RedisStore::connect(config).await.expect("connect");
        let id = CandidateId::new(who).unwrap();
        let builder = Elector::builder(store.clone(), election.clone())
            .candidate(id.clone())
            .ttl(ttl);
        recorder.track(id, builder.events());
        electors.push((builder.start().unwrap(), store));
    }
    let leader = || async {
        tokio::select! {
            g = electors[0].0.leading() => g.unwrap(),
            g = electors[1].0.leading() => g.unwrap(),
        }
    };
    let first = timeout(ttl * 3, leader()).await.expect("one of them leads");
    let before = first.term();
    // The master of the election's slot, and its replica.
    let key = electors[0].1.lease_key(&election);
    let slot = command(topology.nodes[0].port, &format!("CLUSTER KEYSLOT {key}"));
    let slot: u16 = slot.trim().trim_start_matches(':').parse().expect("a slot");
    let owner = |port: u16| {
        let nodes = command(port, "CLUSTER NODES");
        nodes
            .lines()
            .filter(|l| l.contains("master") && !l.contains("fail"))
            .find_map(|l| {
                let fields: Vec<&str> = l.split_whitespace().collect();
                let covers = fields[8..].iter().any(|range| {
                    let (lo, hi) = range.split_once('-').unwrap_or((range, range));
                    matches!((lo.parse::<u16>(), hi.parse::<u16>()), (Ok(lo), Ok(hi)) if lo <= slot && slot <= hi)
                });
                covers.then(|| (fields[0].to_owned(), fields[1].to_owned()))
            })
    };
    let (master_id, master_addr) = owner(topology.nodes[0].port).expect("a master owns the slot");
    let replica = topology
        .nodes
        .iter()
        .find(|n| {
            command(n.port, "ROLE").contains("slave")
                && command(n.port, "CLUSTER NODES")
                    .lines()
                    .any(|l| l.contains("myself") && l.contains(&master_id))
        })
        .expect("the master's replica");
    sleep(ttl / 4).await;
    let reply = command(replica.port, "CLUSTER FAILOVER FORCE");
    assert!(reply.contains("OK"), "CLUSTER FAILOVER FORCE: {reply}");
    let moved = timeout(Duration::from_secs(30), async {
        loop {
            match owner(replica.port) {
                Some((_, addr)) if addr != master_addr => break addr,
                _ => sleep(Duration::from_millis(100)).await,
            }
        }
    })
    .await
    .expect("the replica takes the slot over");
    // Leadership after the failover: whoever leads, in a term above the first.
    let mark = recorder.mark();
    sleep(ttl * 2).await;
    let after = timeout(ttl * 5, leader())
        .await
        .expect("someone leads after the failover");
    assert!(
        after.term() >= before,
        "term {} after {}",
        after.term(),
        before
    );
    eprintln!(
        "slot {slot} moved from {master_addr} to {moved}; leading in term {} (first {}), \
         {} leaderships since the failover",
        after.term(),
        before,
        recorder.intervals().len().saturating_sub(mark)
    );
    for (elector, _) in electors {
        elector.shutdown().await.unwrap();
    }
    // No two leaders at once, terms rising across leaderships.
    recorder.check();
}
