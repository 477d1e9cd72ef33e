//! The batched path on a real etcd: the whole conformance suite through
//! [`Batched`](elect_etcd::batch::Batched), a batch holding one corrupt key, a renewal batch
//! telling its leases apart, one election twice in a batch, the etcd lease a batch grant
//! shares (a release must not end the siblings' keys), and the requests etcd receives for many
//! elections.

use std::time::{Duration, Instant};

use elect_core::conformance::fresh_election;
use elect_etcd::batch::{BatchConfig, BatchStore, Batched};
use elect_etcd::etcd_client::{Client, GetOptions, LeaseTimeToLiveOptions};
use elect_etcd::{
    Acquire, CandidateId, Claim, ElectionName, EtcdConfig, EtcdStore, Lease, LeaseStore, Release,
    Renewal, Ttl,
};
use elect_tests::etcd::OwnedEtcd;

mod common;
use common::{prefix, settings};

async fn fresh() -> EtcdStore {
    common::store_on(elect_tests::etcd::shared_url).await
}

async fn store() -> Batched<EtcdStore> {
    Batched::new(fresh().await, BatchConfig::default())
}

mod conformance {
    use super::*;
    elect_core::conformance_tests!(store: store(), settings: settings());
}

/// A raw client on the store's etcd.
async fn raw(store: &EtcdStore) -> Client {
    store.client()
}

fn ttl(ms: u64) -> Ttl {
    Ttl::new(Duration::from_millis(ms)).unwrap()
}

fn claims(names: &[ElectionName], who: &str, ms: u64) -> Vec<Claim> {
    names
        .iter()
        .map(|e| Claim::new(e.clone(), CandidateId::new(who).unwrap(), ttl(ms)))
        .collect()
}

fn granted(answers: Vec<elect_etcd::Result<Acquire>>) -> Vec<Lease> {
    answers
        .into_iter()
        .map(|a| match a {
            Ok(Acquire::Granted(lease)) => lease,
            other => panic!("not granted: {other:?}"),
        })
        .collect()
}

/// The etcd lease each election's key is attached to (0 where the key is missing).
async fn etcd_leases(store: &EtcdStore, names: &[ElectionName]) -> Vec<i64> {
    let mut client = raw(store).await;
    let mut out = Vec::new();
    for name in names {
        let key = format!("{}{}", store.config().prefix, name.as_str());
        let got = client.get(key, None).await.expect("get");
        out.push(got.kvs().first().map_or(0, |kv| kv.lease()));
    }
    out
}

/// The same election twice in one batch is granted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_election_twice_in_a_batch_is_granted_once() {
    elect_core::conformance::one_election_twice_in_a_batch_is_granted_once(&fresh().await).await;
}

/// One election of a batch holds junk a foreign client wrote: that election, and only it, gets
/// `CorruptRecord`; the others are granted and renewed in the same requests; the junk stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_key_fails_its_own_election_and_no_other_in_the_batch() {
    let store = fresh().await;
    let names: Vec<_> = (0..5)
        .map(|k| fresh_election(&format!("junk-{k}")))
        .collect();
    let key = format!("{}{}", store.config().prefix, names[2].as_str());
    raw(&store)
        .await
        .put(key.as_str(), "not an elect record", None)
        .await
        .expect("junk written");
    elect_core::conformance::a_corrupt_record_fails_only_its_own_election(&store, &names, 2).await;
    let kept = raw(&store).await.get(key, None).await.unwrap();
    assert_eq!(kept.kvs()[0].value(), b"not an elect record");
}

/// A renewal batch in which one lease ran out (its key gone with its etcd lease) and another
/// was taken over by someone else: those two are `Lost`, the others `Renewed` — the shared
/// check, with leases of 1 s for the two that run out (etcd keeps whole seconds).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_batch_tells_each_lease_apart() {
    elect_core::conformance::a_renewal_batch_tells_each_lease_apart_with(
        &fresh().await,
        ttl(1_000),
    )
    .await;
}

/// A batch grant puts its elections' keys under one etcd lease, and one renewal batch keeps
/// them with one keep-alive. A release deletes its own key and leaves the lease to the
/// siblings (the single path's release revoked its key's lease, which here would end the
/// siblings' keys under holders that still believe); once every key is released the lease is
/// revoked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_leaves_the_shared_lease_to_the_others_of_its_batch() {
    let store = fresh().await;
    let names: Vec<_> = (0..4)
        .map(|k| fresh_election(&format!("shared-{k}")))
        .collect();
    let leases = granted(store.try_acquire_batch(&claims(&names, "me", 2_000)).await);
    let ids = etcd_leases(&store, &names).await;
    assert!(ids[0] != 0 && ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    let id = ids[0];
    assert_eq!(store.release(&leases[0]).await.unwrap(), Release::Released);
    // Past the lease's whole TTL, renewing the other three: they stay, on the same lease.
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let renewed = store.renew_batch(&leases[1..]).await;
        assert!(
            renewed.iter().all(|r| matches!(r, Ok(Renewal::Renewed(_)))),
            "{renewed:?}"
        );
    }
    let now = etcd_leases(&store, &names).await;
    assert_eq!(now, [0, id, id, id]);
    for lease in &leases[1..] {
        assert_eq!(store.release(lease).await.unwrap(), Release::Released);
    }
    // The last release finds the lease empty and revokes it (long before its 2 s would end).
    let mut client = raw(&store).await;
    let revoked = Instant::now() + Duration::from_millis(1_500);
    loop {
        let ttl = client
            .lease_time_to_live(id, Some(LeaseTimeToLiveOptions::new()))
            .await
            .map_or(-1, |r| r.ttl());
        if ttl < 0 {
            break;
        }
        assert!(Instant::now() < revoked, "the empty lease was not revoked");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A hundred elections led through `Batched` and a hundred followers on another store: the
/// grants, renewals and the followers' claims share a few requests. Counted by the gRPC
/// messages an etcd of the test's own received (`/metrics`; a keep-alive or watch message on a
/// stream counts as one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_elections_share_a_few_requests() {
    let etcd = tokio::task::spawn_blocking(OwnedEtcd::start)
        .await
        .unwrap()
        .expect("an etcd of the test's own");
    let url = etcd.url();
    let config = EtcdConfig::from_url(&url).unwrap().prefix(prefix());
    let batch = BatchConfig::default().linger(Duration::from_millis(100));
    let leaders = Batched::new(
        EtcdStore::connect(config.clone()).await.unwrap(),
        batch.clone(),
    );
    let followers = Batched::new(EtcdStore::connect(config).await.unwrap(), batch);
    let received = async || {
        elect_tests::etcd::messages_received(&url)
            .await
            .expect("etcd's /metrics")
    };
    let start = |store: &Batched<EtcdStore>, who: &str| {
        elect_tests::shards(store, 100, Some(who), Duration::from_secs(3))
    };
    let before = received().await;
    let leading = start(&leaders, "a");
    for elector in &leading {
        elector.leading().await.expect("leads");
    }
    let led = received().await;
    let following = start(&followers, "b");
    let settled = received().await;
    // Three renewal rounds (every TTL/3) of 100 elections each, and the followers' claims.
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    for (a, b) in leading.iter().zip(&following) {
        assert!(a.is_leader() && !b.is_leader());
    }
    let after = received().await;
    eprintln!(
        "etcd messages: {} until 100 led, {} for the followers' start, {} over 3.5 s (300 renewals, 100 claims)",
        led - before,
        settled - led,
        after - settled
    );
    // One request each would be ≥ 100 grants (≥ 200 messages: lease, txn) until all led, and
    // ≥ 300 renewals (600: read, keep-alive) + 100 claims in the 3.5 s.
    assert!(led - before <= 100, "{} messages until led", led - before);
    assert!(
        after - settled <= 150,
        "{} messages in 3.5 s",
        after - settled
    );
    let count = raw(leaders.store())
        .await
        .get(
            leaders.store().config().prefix.as_str(),
            Some(GetOptions::new().with_prefix().with_count_only()),
        )
        .await
        .unwrap()
        .count();
    assert!(count >= 100, "{count} keys");
    for elector in leading.iter().chain(&following) {
        elector.shutdown().await.expect("shut down");
    }
    drop(etcd);
}

/// Two processes' `Shards` campaign in the same 50 elections through the batch transactions and shared etcd leases: the first leads
/// them all, hands them over whole on shutdown, the second leads each with a higher term.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_hand_over_many_elections() {
    elect_core::conformance::shards_hand_over_many_elections(
        std::sync::Arc::new(fresh().await),
        settings(),
    )
    .await;
}

/// Three processes' balanced `Shards` share 12 elections: 4 each, every hand-over a
/// release; one leaves, the others lead 6 each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_balance_by_release() {
    elect_core::conformance::shards_balance_by_release(
        std::sync::Arc::new(fresh().await),
        settings(),
    )
    .await;
}
