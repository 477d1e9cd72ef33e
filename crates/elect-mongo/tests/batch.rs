//! The batched path on the MongoDB-wire server (no real `mongod` can be had here): the whole
//! conformance suite through [`Batched`](elect_mongo::batch::Batched), a batch holding one
//! corrupt document, a renewal batch with one lease over and one taken over (the read-back
//! path), the same election twice in one batch, and the requests the driver sends for many
//! elections.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use elect_core::conformance::Settings;
use elect_mongo::batch::{BatchConfig, BatchStore, Batched};
use elect_mongo::mongodb::bson::{doc, DateTime};
use elect_mongo::mongodb::event::command::CommandEvent;
use elect_mongo::mongodb::event::EventHandler;
use elect_mongo::mongodb::options::ClientOptions;
use elect_mongo::{Acquire, Elector, Error, LeaseStore, MongoConfig, MongoStore, Renewal, Ttl};
use elect_tests::{claim, election, unique_name};

async fn fresh() -> MongoStore {
    let server = elect_tests::mongo().await;
    let config = MongoConfig::new(server.url()).database(unique_name("batch"));
    MongoStore::connect(config)
        .await
        .expect("connect to the test MongoDB")
}

async fn store() -> Batched<MongoStore> {
    Batched::new(fresh().await, BatchConfig::default())
}

mod conformance {
    use super::*;
    elect_core::conformance_tests!(store: store(), settings: Settings::real_server());
}

/// One election of a batch holds a document a foreign client wrote (an invalid holder): that
/// election, and only it, gets `CorruptRecord`, the document is left as it was, and the
/// others of the batch are granted and renewed. A forged lease for the junk election renews
/// nothing (`Lost`, through the read-back: the update matched one document fewer than it was
/// given).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_document_fails_its_own_election_and_no_other_in_the_batch() {
    let store = fresh().await;
    let ttl = Ttl::new(Duration::from_secs(5)).unwrap();
    let names: Vec<_> = (0..5)
        .map(|k| election(&format!("{}-{k}", unique_name("e"))))
        .collect();
    let hour = DateTime::from_millis(DateTime::now().timestamp_millis() + 3_600_000);
    let junk =
        doc! { "_id": names[2].as_str(), "holder": "not valid!", "term": 3_i64, "expires": hour };
    store.collection().insert_one(junk.clone()).await.unwrap();

    let claims: Vec<_> = names.iter().map(|e| claim(e, "me", ttl)).collect();
    let answers = store.try_acquire_batch(&claims).await;
    assert_eq!(answers.len(), 5);
    let mut leases = Vec::new();
    for (k, answer) in answers.into_iter().enumerate() {
        match (k, answer) {
            (2, Err(Error::CorruptRecord { key, .. })) => {
                assert!(key.contains(names[2].as_str()), "{key}")
            }
            (2, other) => panic!("the corrupt election answered {other:?}"),
            (_, Ok(Acquire::Granted(lease))) => leases.push(lease),
            (k, other) => panic!("election {k} answered {other:?}"),
        }
    }
    let mut forged = leases[0].clone();
    forged.election = names[2].clone();
    leases.insert(2, forged);
    let answers = store.renew_batch(&leases).await;
    for (k, answer) in answers.into_iter().enumerate() {
        match (k, answer) {
            (2, Ok(Renewal::Lost)) => {}
            (_, Ok(Renewal::Renewed(lease))) => assert_eq!(lease, leases[k]),
            (k, other) => panic!("election {k} answered {other:?}"),
        }
    }
    let kept = store
        .collection()
        .find_one(doc! { "_id": names[2].as_str() })
        .await
        .unwrap();
    assert_eq!(kept, Some(junk));
    for (k, name) in names.iter().enumerate().filter(|(k, _)| *k != 2) {
        let held = store.leader(name).await.unwrap().expect("held");
        assert_eq!(held.term, leases[k].term);
    }
}

/// A renewal batch in which one lease ran out (its document still holds it, expired) and
/// another was taken over: those two are `Lost`, the rest `Renewed`, and the lease that ran
/// out is not brought back to life by the batch's update.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_batch_tells_each_lease_apart() {
    let store = fresh().await;
    let long = Ttl::new(Duration::from_secs(10)).unwrap();
    let short = Ttl::new(Duration::from_millis(200)).unwrap();
    let names: Vec<_> = (0..4)
        .map(|k| election(&format!("{}-{k}", unique_name("r"))))
        .collect();
    let mut claims: Vec<_> = names.iter().map(|e| claim(e, "me", long)).collect();
    claims[1] = claim(&names[1], "me", short);
    claims[3] = claim(&names[3], "me", short);
    let leases: Vec<_> = store
        .try_acquire_batch(&claims)
        .await
        .into_iter()
        .map(|a| match a {
            Ok(Acquire::Granted(lease)) => lease,
            other => panic!("not granted: {other:?}"),
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let other = match store.try_acquire(&claim(&names[3], "other", long)).await {
        Ok(Acquire::Granted(lease)) => lease,
        other => panic!("the expired election was not granted to another: {other:?}"),
    };
    let answers = store.renew_batch(&leases).await;
    let renewed: Vec<bool> = answers
        .iter()
        .map(|a| match a {
            Ok(Renewal::Renewed(_)) => true,
            Ok(Renewal::Lost) => false,
            Err(e) => panic!("{e}"),
        })
        .collect();
    assert_eq!(renewed, [true, false, true, false]);
    assert!(store.leader(&names[1]).await.unwrap().is_none());
    let held = store.leader(&names[3]).await.unwrap().expect("held");
    assert_eq!((held.holder, held.term), (other.holder, other.term));
}

/// Two candidates of one process claim the same election in one batch, beside another
/// election: exactly one is granted, the other sees it held by the winner; a renewal batch
/// carrying the winner's lease and a stale lease of the loser renews only the winner's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_election_twice_in_a_batch_is_granted_once() {
    let store = fresh().await;
    let ttl = Ttl::new(Duration::from_secs(5)).unwrap();
    let (jobs, other) = (election("jobs"), election("other"));
    let claims = [
        claim(&jobs, "a", ttl),
        claim(&other, "a", ttl),
        claim(&jobs, "b", ttl),
    ];
    let answers = store.try_acquire_batch(&claims).await;
    let (winner, loser) = match (&answers[0], &answers[2]) {
        (Ok(Acquire::Granted(lease)), Ok(Acquire::Held(info))) => {
            assert_eq!((&info.holder, info.term), (&lease.holder, lease.term));
            (lease.clone(), &claims[2])
        }
        (Ok(Acquire::Held(info)), Ok(Acquire::Granted(lease))) => {
            assert_eq!((&info.holder, info.term), (&lease.holder, lease.term));
            (lease.clone(), &claims[0])
        }
        other => panic!("not one grant and one holder: {other:?}"),
    };
    assert!(matches!(answers[1], Ok(Acquire::Granted(_))), "{answers:?}");
    let stale = loser.granted(winner.term);
    let renewed = store.renew_batch(&[stale, winner.clone()]).await;
    assert!(matches!(renewed[0], Ok(Renewal::Lost)), "{renewed:?}");
    assert!(
        matches!(&renewed[1], Ok(Renewal::Renewed(l)) if *l == winner),
        "{renewed:?}"
    );
}

/// A hundred electors on one `Batched` store, each leading its own election, and a hundred
/// followers on another: the renewals and the followers' claims share a few requests. Counted
/// by the driver's command events (`update` and `aggregate` commands; grants are one
/// `findAndModify` each by design).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_elections_share_a_few_requests() {
    let server = elect_tests::mongo().await;
    let counted = Arc::new(AtomicU64::new(0));
    let count = counted.clone();
    let mut options = ClientOptions::parse(server.url()).await.unwrap();
    options.command_event_handler = Some(EventHandler::callback(move |event: CommandEvent| {
        if let CommandEvent::Started(started) = event {
            if matches!(started.command_name.as_str(), "update" | "aggregate") {
                count.fetch_add(1, Ordering::Relaxed);
            }
        }
    }));
    let client = elect_mongo::mongodb::Client::with_options(options).unwrap();
    let config = MongoConfig::new("").database(unique_name("many"));
    let leaders = MongoStore::from_client(client.clone(), config.clone())
        .await
        .expect("connect");
    let followers = MongoStore::from_client(client, config)
        .await
        .expect("connect");
    // A window of 100 ms: electors that start spread out on a loaded machine still share
    // batches.
    let batch = BatchConfig::default().linger(Duration::from_millis(100));
    let (leaders, followers) = (
        Batched::new(leaders, batch.clone()),
        Batched::new(followers, batch),
    );
    let start = |store: &Batched<MongoStore>, who: &str| -> Vec<Elector> {
        (0..100)
            .map(|k| {
                Elector::builder(store.clone(), election(&format!("shard-{k}")))
                    .candidate(elect_tests::id(who))
                    .ttl(Duration::from_secs(3))
                    .start()
                    .expect("start")
            })
            .collect()
    };
    let leading = start(&leaders, "a");
    for elector in &leading {
        elector.leading().await.expect("leads");
    }
    let following = start(&followers, "b");
    let before = counted.load(Ordering::Relaxed);
    // Three renewal rounds (every TTL/3) of 100 elections each, and the followers' wake-ups.
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    for (a, b) in leading.iter().zip(&following) {
        assert!(a.is_leader() && !b.is_leader());
    }
    let requests = counted.load(Ordering::Relaxed) - before;
    eprintln!(
        "{requests} update/aggregate commands over 3.5 s (300 renewals, the followers' claims)"
    );
    // ≥ 300 renewals and a claim per follower at its expiry: one request each would be 400.
    assert!(
        requests <= 40,
        "{requests} requests for 300 renewals and 100 claims"
    );
    for elector in leading.iter().chain(&following) {
        elector.shutdown().await.expect("shut down");
    }
    leaders.store().close().await;
}
