//! MongoDB-specific behaviour on a real wire server: racing upserts, change-stream hand-over,
//! the standalone fallback, a restart mid-lease, and nonsense documents.

use std::time::Duration;

use elect_mongo::mongodb::bson::{doc, DateTime};
use elect_mongo::{
    Acquire, CandidateId, ElectionName, Elector, Error, LeaseStore, MongoConfig, MongoStore, Ttl,
};
use elect_tests::{unique_name, Kind, OwnedServer};
use tokio::time::{sleep, timeout, Instant};

fn id(s: &str) -> CandidateId {
    CandidateId::new(s).unwrap()
}

fn election(s: &str) -> ElectionName {
    ElectionName::new(s).unwrap()
}

async fn store_at(url: &str) -> MongoStore {
    MongoStore::connect(MongoConfig::new(url).database(unique_name("t")))
        .await
        .unwrap()
}

async fn shared_store() -> MongoStore {
    store_at(elect_tests::mongo().await.url()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_upserts_of_a_new_election_grant_exactly_once() {
    let store = shared_store().await;
    let e = election("race");
    let ttl = Ttl::new(Duration::from_secs(10)).unwrap();
    let tasks: Vec<_> = (0..16)
        .map(|n| {
            let (store, e) = (store.clone(), e.clone());
            tokio::spawn(async move { store.try_acquire(&e, &id(&format!("c{n}")), ttl).await })
        })
        .collect();
    let mut granted = Vec::new();
    let mut held = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(Acquire::Granted(l)) => granted.push(l),
            Ok(Acquire::Held(_)) => held += 1,
            Err(e) => panic!("a racing upsert failed instead of finding the lease held: {e}"),
        }
    }
    assert_eq!(granted.len(), 1, "{granted:?}");
    assert_eq!(held, 15);
}

async fn handover(store: MongoStore, ttl: Duration) -> Duration {
    let e = election("handover");
    let a = Elector::builder(store.clone(), e.clone())
        .candidate(id("a"))
        .ttl(ttl)
        .start()
        .unwrap();
    a.leading().await.unwrap();
    let b = Elector::builder(store.clone(), e.clone())
        .candidate(id("b"))
        .ttl(ttl)
        .start()
        .unwrap();
    sleep(Duration::from_millis(300)).await;
    let resigned = Instant::now();
    a.resign().await.unwrap();
    timeout(ttl * 2, b.leading())
        .await
        .expect("b leads")
        .unwrap();
    let took = resigned.elapsed();
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
    took
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_change_streams_a_resign_hands_over_within_100_ms_at_ttl_10_s() {
    let store = shared_store().await;
    let feed = store.subscribe(&election("probe")).await.unwrap();
    assert!(
        feed.is_some(),
        "the test server is a replica set with change streams"
    );
    let took = handover(store, Duration::from_secs(10)).await;
    eprintln!("hand-over with a change stream took {took:?}");
    assert!(took < Duration::from_millis(100), "hand-over took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_standalone_server_waiters_fall_back_to_the_expiry() {
    let server = OwnedServer::start_with_args(Kind::Mongo, &["--standalone"])
        .await
        .unwrap();
    let store = store_at(&server.url()).await;
    assert!(
        store.subscribe(&election("probe")).await.unwrap().is_none(),
        "no change stream on a standalone server, and no error"
    );
    let ttl = Duration::from_secs(2);
    let took = handover(store, ttl).await;
    eprintln!("hand-over on a standalone server took {took:?}");
    // b was told of a full lease ~300 ms before the resign, and sleeps until it expires.
    assert!(took >= ttl - Duration::from_millis(400), "took {took:?}");
    assert!(took <= ttl + Duration::from_millis(500), "took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terms_continue_above_the_last_across_a_restart() {
    let server = OwnedServer::start(Kind::Mongo).await.unwrap();
    let store = MongoStore::connect(
        MongoConfig::new(server.url())
            .database("app")
            .timeout(Duration::from_millis(500)),
    )
    .await
    .unwrap();
    let ttl = Duration::from_secs(2);
    let a = Elector::builder(store.clone(), election("restart"))
        .candidate(id("a"))
        .ttl(ttl)
        .start()
        .unwrap();
    let guard = a.leading().await.unwrap();
    sleep(Duration::from_millis(300)).await;
    server.kill().await.unwrap();
    let killed = Instant::now();
    timeout(ttl * 2, guard.lost()).await.expect("lost fires");
    assert!(
        killed.elapsed() <= ttl,
        "stepped down {:?} after the kill",
        killed.elapsed()
    );
    sleep(ttl).await;
    server.start_again().await.unwrap();
    let again = timeout(Duration::from_secs(30), a.leading())
        .await
        .expect("leads again after the restart")
        .unwrap();
    assert!(
        again.term() > guard.term(),
        "term {} after {}",
        again.term(),
        guard.term()
    );
    a.shutdown().await.unwrap();
}

#[tokio::test]
async fn nonsense_documents_are_typed_errors_and_left_alone() {
    let store = shared_store().await;
    let far = DateTime::from_millis(DateTime::now().timestamp_millis() + 3_600_000);
    let cases = [
        doc! { "_id": "holder-number", "holder": 5, "term": 3_i64, "expires": far },
        doc! { "_id": "negative-term", "holder": "a", "term": -3_i64, "expires": far },
        doc! { "_id": "string-expiry", "holder": "a", "term": 3_i64, "expires": "soon" },
        doc! { "_id": "bad-holder", "holder": "not valid!", "term": 3_i64, "expires": far },
    ];
    for case in cases {
        let name = case.get_str("_id").unwrap().to_owned();
        store.collection().insert_one(case.clone()).await.unwrap();
        let e = election(&name);
        for result in [
            store
                .try_acquire(&e, &id("b"), Ttl::new(Duration::from_secs(5)).unwrap())
                .await
                .map(drop),
            store.leader(&e).await.map(drop),
        ] {
            match result {
                Err(Error::CorruptRecord { key, .. }) => {
                    assert!(key.ends_with(&format!("[{name}]")), "{key}")
                }
                other => panic!("{name}: expected a corrupt-record error, got {other:?}"),
            }
        }
        let after = store
            .collection()
            .find_one(doc! { "_id": &name })
            .await
            .unwrap();
        assert_eq!(
            after.as_ref(),
            Some(&case),
            "{name}: the document was changed"
        );
    }
}

#[tokio::test]
async fn unreachable_servers_and_bad_settings_are_typed_errors() {
    let err = MongoStore::connect(
        MongoConfig::new("mongodb://127.0.0.1:1/?directConnection=true")
            .timeout(Duration::from_secs(1)),
    )
    .await
    .unwrap_err();
    assert!(err.is_retryable(), "{err}");
    for config in [
        MongoConfig::new("mongodb://h").database("bad.name"),
        MongoConfig::new("mysql://h"),
        MongoConfig::new("mongodb://h:notaport"),
    ] {
        match MongoStore::connect(config.clone()).await {
            Err(Error::InvalidConfig { .. }) => {}
            other => panic!("{config:?}: {other:?}"),
        }
    }
}
