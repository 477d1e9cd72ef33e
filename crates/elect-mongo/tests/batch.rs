//! The batched path on the MongoDB-wire server (no real `mongod` can be had here): the whole
//! conformance suite through [`Batched`](elect_mongo::batch::Batched), a batch holding one
//! corrupt document, a renewal batch with one lease over and one taken over (the read-back
//! path), the same election twice in one batch, and the requests the driver sends for many
//! elections.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use elect_core::conformance::Settings;
use elect_mongo::batch::{BatchConfig, Batched};
use elect_mongo::mongodb::bson::{doc, DateTime};
use elect_mongo::mongodb::event::command::CommandEvent;
use elect_mongo::mongodb::event::EventHandler;
use elect_mongo::mongodb::options::ClientOptions;
use elect_mongo::{MongoConfig, MongoStore};
use elect_tests::{election, unique_name};

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
/// election, and only it, fails, and the others of the batch are granted and renewed
/// (`elect_core::conformance::a_corrupt_record_fails_only_its_own_election`; its forged renewal
/// goes through the read-back: the update matched one document fewer than it was given). The
/// document is left as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_document_fails_its_own_election_and_no_other_in_the_batch() {
    let store = fresh().await;
    let names: Vec<_> = (0..5)
        .map(|k| election(&format!("{}-{k}", unique_name("e"))))
        .collect();
    let hour = DateTime::from_millis(DateTime::now().timestamp_millis() + 3_600_000);
    let junk =
        doc! { "_id": names[2].as_str(), "holder": "not valid!", "term": 3_i64, "expires": hour };
    store.collection().insert_one(junk.clone()).await.unwrap();
    elect_core::conformance::a_corrupt_record_fails_only_its_own_election(&store, &names, 2).await;
    let kept = store
        .collection()
        .find_one(doc! { "_id": names[2].as_str() })
        .await
        .unwrap();
    assert_eq!(kept, Some(junk));
}

/// A renewal batch with one lease over and one taken over tells each lease apart (the
/// read-back path).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_batch_tells_each_lease_apart() {
    elect_core::conformance::a_renewal_batch_tells_each_lease_apart(&fresh().await).await;
}

/// The same election twice in one batch is granted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_election_twice_in_a_batch_is_granted_once() {
    elect_core::conformance::one_election_twice_in_a_batch_is_granted_once(&fresh().await).await;
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
    let start = |store: &Batched<MongoStore>, who: &str| {
        elect_tests::shards(store, 100, Some(who), Duration::from_secs(3))
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

/// Two processes' `Shards` campaign in the same 50 elections through the bulk writes (on the MongoDB-wire server secantusdb, not a real mongod): the first leads
/// them all, hands them over whole on shutdown, the second leads each with a higher term.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_hand_over_many_elections() {
    elect_core::conformance::shards_hand_over_many_elections(
        std::sync::Arc::new(fresh().await),
        Settings::real_server(),
    )
    .await;
}

/// Three processes' balanced `Shards` share 12 elections (on the MongoDB-wire server secantusdb, not a real mongod): 4 each, every hand-over a
/// release; one leaves, the others lead 6 each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_balance_by_release() {
    elect_core::conformance::shards_balance_by_release(
        std::sync::Arc::new(fresh().await),
        Settings::real_server(),
    )
    .await;
}
