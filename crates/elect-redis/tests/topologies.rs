//! The whole conformance suite on the topologies production Redis runs in, started on loopback
//! from the local `redis-server` by the test support (once per test process): a Cluster of
//! three masters with a replica each (`redis-cluster://`), and a master with two replicas
//! behind three Sentinels (`redis-sentinel://`); and the batched path on the Cluster.

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

/// The batched path on a Cluster: a batch is split by slot (each election's keys hash to its
/// own), the parts sent at once.
mod cluster_batched {
    use super::*;
    use elect_redis::batch::{BatchConfig, Batched};

    async fn store() -> Batched<RedisStore> {
        Batched::new(
            store_on(shared_cluster_url, "cluster-batched").await,
            BatchConfig::default(),
        )
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
    // Generous: grants wait for a replica's acknowledgement, on a machine running other tests.
    let first = timeout(Duration::from_secs(30), leader())
        .await
        .expect("one of them leads");
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

/// The restart quarantine covers a failover too: a promoted replica that missed the last grant
/// forgets it as a restarted master without persistence does, while its holder still believes.
/// On a Sentinel topology of the test's own, after `SENTINEL FAILOVER`, the lease is deleted
/// on the new master (the grant that did not replicate); a candidate is then told the election
/// is quarantined for a TTL (the new master has a new `master_replid`), not granted it — and,
/// in the control election without the quarantine, granted it at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_that_lost_the_grant_is_quarantined_like_a_restart() {
    use std::time::Duration;

    use elect_redis::{Acquire, ElectionName, LeaseStore, Ttl, QUARANTINE_HOLDER};
    use elect_tests::topology::command;
    use elect_tests::{claim, id};
    use tokio::time::{sleep, timeout};

    let topology = tokio::task::spawn_blocking(Topology::sentinel)
        .await
        .unwrap()
        .expect("a Sentinel topology of the test's own");
    // Long enough that a still believes when b asks, after the failover and the resync.
    let ttl = Duration::from_secs(10);
    let ttl_ = Ttl::new(ttl).unwrap();
    let prefix = unique_name("fq");
    let connect = |quarantine: bool| {
        let config = RedisConfig::new(&topology.url)
            .key_prefix(&prefix)
            .command_timeout(Duration::from_millis(500))
            .restart_quarantine(quarantine);
        async move { RedisStore::connect(config).await.expect("connect") }
    };
    let guarded = ElectionName::new(unique_name("guarded")).unwrap();
    let control = ElectionName::new(unique_name("control")).unwrap();
    let granted = |store: RedisStore, e: ElectionName, who: &'static str| async move {
        timeout(Duration::from_secs(30), async {
            loop {
                match store.try_acquire(&claim(&e, who, ttl_)).await {
                    Ok(Acquire::Granted(lease)) => break lease,
                    // The fresh master's own quarantine, or a failover still settling.
                    _ => sleep(Duration::from_millis(100)).await,
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{who} is granted {e}"))
    };
    // The new master must have been up for more than a TTL when b asks, so that only its new
    // identity can quarantine the election (its uptime alone would): the nodes started
    // together, so wait for that before the grant, after which only the failover's seconds
    // pass.
    timeout(Duration::from_secs(30), async {
        while !topology
            .nodes
            .iter()
            .all(|n| uptime(n.port) > ttl.as_secs() + 1)
        {
            sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("the nodes' uptime passes a TTL");
    let first = granted(connect(true).await, guarded.clone(), "a").await;
    let first_granted = std::time::Instant::now();
    granted(connect(false).await, control.clone(), "a").await;

    // Both replicas have what the guarded election's grant wrote, the master's identity too.
    let old_master = topology.sentinel_master_port().expect("a master");
    let identity = format!("{prefix}:{{{guarded}}}:master");
    for replica in topology.nodes.iter().filter(|n| n.port != old_master) {
        timeout(Duration::from_secs(10), async {
            while !command(replica.port, &format!("EXISTS {identity}")).contains(":1") {
                sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .expect("the grant reaches the replicas");
    }
    // Until every Sentinel names the new master: a store asking one that does not yet would
    // be sent to the old master. Blocking, off the runtime's workers.
    let new_master = tokio::task::block_in_place(|| {
        topology
            .sentinel_failover(Duration::from_secs(30))
            .expect("Sentinel promotes a replica")
    });
    assert_ne!(new_master, old_master);
    // The grants are lost, as if they had not replicated before the failover; the new master
    // has been up longer than a TTL, so only its new identity can quarantine the election.
    let store = RedisStore::connect(
        RedisConfig::new(&topology.url)
            .key_prefix(&prefix)
            .restart_quarantine(true),
    )
    .await
    .expect("connect");
    assert!(
        first_granted.elapsed() < ttl,
        "a no longer believes: the failover took {:?}",
        first_granted.elapsed()
    );
    for e in [&guarded, &control] {
        let reply = command(new_master, &format!("DEL {}", store.lease_key(e)));
        assert!(reply.contains(":1"), "DEL on the new master: {reply}");
    }
    // The script quarantines on uptime while it is at most the TTL (in whole seconds).
    let up = uptime(new_master);
    assert!(up > ttl.as_secs(), "uptime {up} s");

    let b = claim(&guarded, "b", ttl_);
    let held = match timeout(Duration::from_secs(10), store.try_acquire(&b)).await {
        Ok(Ok(Acquire::Held(info))) => info,
        other => panic!("b must be kept out of a lease a may still believe it holds: {other:?}"),
    };
    assert_eq!(held.holder, id(QUARANTINE_HOLDER));
    assert!(
        held.remaining > Duration::ZERO && held.remaining <= ttl,
        "{:?}",
        held.remaining
    );
    // The control: without the quarantine, b is granted the lost lease at once.
    let control_store = RedisStore::connect(RedisConfig::new(&topology.url).key_prefix(&prefix))
        .await
        .expect("connect");
    match control_store
        .try_acquire(&claim(&control, "b", ttl_))
        .await
        .unwrap()
    {
        Acquire::Granted(_) => {}
        other => panic!("the control election should be granted at once: {other:?}"),
    }
    // Once the quarantine is over, b is granted, in a term above a's.
    sleep(held.remaining).await;
    let second = granted(store.clone(), guarded.clone(), "b").await;
    assert!(
        second.term > first.term,
        "{} after {}",
        second.term,
        first.term
    );
    eprintln!(
        "failover from :{old_master} to :{new_master}: quarantined for {:?}, then term {} → {}",
        held.remaining, first.term, second.term
    );
}

/// A node's `uptime_in_seconds` (0 when it does not answer).
fn uptime(port: u16) -> u64 {
    elect_tests::topology::command(port, "INFO server")
        .lines()
        .find_map(|l| l.strip_prefix("uptime_in_seconds:"))
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}
