//! The batched path on a real Redis: the whole conformance suite through
//! [`Batched`](elect_redis::batch::Batched), a batch holding one corrupt record, a renewal
//! batch telling its leases apart, one election twice in a batch, and the requests the server
//! sees for many elections.

use std::time::Duration;

use elect_core::conformance::Settings;
use elect_redis::batch::{BatchConfig, BatchStore, Batched};
use elect_redis::fred::prelude::*;
use elect_redis::fred::types::InfoKind;
use elect_redis::{Acquire, Error, LeaseStore, RedisConfig, RedisStore, Renewal, Ttl};
use elect_tests::{claim, election, unique_name, Kind, OwnedServer};

async fn store() -> Batched<RedisStore> {
    let server = elect_tests::redis().await;
    let config = RedisConfig::new(server.url()).key_prefix(unique_name("batched"));
    let store = RedisStore::connect(config).await.expect("connect");
    Batched::new(store, BatchConfig::default())
}

mod conformance {
    use super::*;
    elect_core::conformance_tests!(store: store(), settings: Settings::real_server());
}

/// A renewal batch with one lease over and one taken over tells each lease apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_batch_tells_each_lease_apart() {
    elect_core::conformance::a_renewal_batch_tells_each_lease_apart(store().await.store()).await;
}

/// The same election twice in one batch is granted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_election_twice_in_a_batch_is_granted_once() {
    elect_core::conformance::one_election_twice_in_a_batch_is_granted_once(store().await.store())
        .await;
}

async fn raw(url: &str) -> Client {
    let admin = Builder::from_config(Config::from_url(url).expect("a valid URL"))
        .build()
        .expect("a client");
    admin.init().await.expect("connect the raw client");
    admin
}

/// One election of a batch holds junk a foreign client wrote: that election, and only it, gets
/// `CorruptRecord` (for acquisition and renewal), nothing is written over the junk, and the
/// others of the same script call are granted and renewed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_record_fails_its_own_election_and_no_other_in_the_batch() {
    let server = elect_tests::redis().await;
    let store = RedisStore::connect(RedisConfig::new(server.url()).key_prefix(unique_name("junk")))
        .await
        .expect("connect");
    let admin = raw(server.url()).await;
    let ttl = Ttl::new(Duration::from_secs(5)).unwrap();
    let names: Vec<_> = (0..5)
        .map(|k| election(&format!("{}-{k}", unique_name("e"))))
        .collect();
    let junk = store.lease_key(&names[2]);
    let _: () = admin
        .set(&junk, "not a lease", None, None, false)
        .await
        .expect("write the junk");

    let claims: Vec<_> = names.iter().map(|e| claim(e, "me", ttl)).collect();
    let answers = store.try_acquire_batch(&claims).await;
    assert_eq!(answers.len(), 5);
    let mut leases = Vec::new();
    for (k, answer) in answers.into_iter().enumerate() {
        match (k, answer) {
            (2, Err(Error::CorruptRecord { key, .. })) => assert_eq!(key, junk),
            (2, other) => panic!("the corrupt election answered {other:?}"),
            (_, Ok(Acquire::Granted(lease))) => leases.push(lease),
            (k, other) => panic!("election {k} answered {other:?}"),
        }
    }
    // A forged lease for the junk election rides along with the four real ones.
    let mut forged = leases[0].clone();
    forged.election = names[2].clone();
    leases.insert(2, forged);
    let answers = store.renew_batch(&leases).await;
    for (k, answer) in answers.into_iter().enumerate() {
        match (k, answer) {
            (2, Err(Error::CorruptRecord { .. })) => {}
            (_, Ok(Renewal::Renewed(lease))) => assert_eq!(lease, leases[k]),
            (k, other) => panic!("election {k} answered {other:?}"),
        }
    }
    let kept: String = admin.get(&junk).await.expect("read the junk");
    assert_eq!(kept, "not a lease");
    for (k, name) in names.iter().enumerate().filter(|(k, _)| *k != 2) {
        let held = store.leader(name).await.unwrap().expect("held");
        assert_eq!(held.term, leases[k].term);
    }
}

/// A hundred electors on one `Batched` store, each leading its own election: the server sees a
/// handful of script calls, not one per acquisition and renewal. Counted on a server of the
/// test's own, from `INFO commandstats`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_elections_share_a_few_script_calls() {
    let server = OwnedServer::start(Kind::Redis)
        .await
        .expect("a Redis server");
    let admin = raw(&server.url()).await;
    let store = RedisStore::connect(RedisConfig::new(server.url()).key_prefix("many"))
        .await
        .expect("connect");
    let before = script_calls(&admin).await;
    let batched = Batched::new(store, BatchConfig::default());
    let ttl = Duration::from_secs(3);
    let electors = elect_tests::shards(&batched, 100, None, ttl);
    for elector in &electors {
        elector.leading().await.expect("leads");
    }
    // Three renewal rounds (every TTL/3) of 100 elections each.
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    let calls = script_calls(&admin).await - before;
    eprintln!("{calls} script calls for 100 elections over 3.5 s");
    for elector in &electors {
        assert!(elector.is_leader());
    }
    // 100 acquisitions + ≥ 300 renewals; one request each would be ≥ 400 calls.
    assert!(
        calls <= 40,
        "{calls} script calls for 100 elections over 3.5 s"
    );
    for elector in &electors {
        elector.shutdown().await.expect("shut down");
    }
}

/// EVALSHA and EVAL calls so far.
async fn script_calls(admin: &Client) -> u64 {
    let stats: String = admin
        .info(Some(InfoKind::CommandStats))
        .await
        .expect("INFO commandstats");
    stats
        .lines()
        .filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_eval:"))
        .filter_map(|l| {
            l.split("calls=")
                .nth(1)?
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

/// Two processes' `Shards` campaign in the same 50 elections through the batch scripts: the first leads
/// them all, hands them over whole on shutdown, the second leads each with a higher term.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_hand_over_many_elections() {
    let server = elect_tests::redis().await;
    let config = RedisConfig::new(server.url()).key_prefix(unique_name("shards"));
    elect_core::conformance::shards_hand_over_many_elections(
        std::sync::Arc::new(RedisStore::connect(config).await.expect("connect")),
        Settings::real_server(),
    )
    .await;
}

/// Three processes' balanced `Shards` share 12 elections: 4 each, every hand-over a
/// release; one leaves, the others lead 6 each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_balance_by_release() {
    let server = elect_tests::redis().await;
    let config = RedisConfig::new(server.url()).key_prefix(unique_name("shards"));
    elect_core::conformance::shards_balance_by_release(
        std::sync::Arc::new(RedisStore::connect(config).await.expect("connect")),
        Settings::real_server(),
    )
    .await;
}
