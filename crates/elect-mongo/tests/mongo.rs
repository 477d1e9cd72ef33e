//! MongoDB-specific behaviour on a real wire server: racing upserts, the standalone fallback,
//! BSON's own nonsense documents, and a dropped collection. What every store does (restarts,
//! junk, unreachable servers, hand-over at a long TTL) is in `conformance.rs`.

use std::time::Duration;

use elect_mongo::mongodb::bson::{doc, DateTime};
use elect_mongo::{Acquire, Elector, Error, LeaseStore, MongoConfig, MongoStore, Ttl};
use elect_tests::{claim, election, id, unique_name, Kind, OwnedServer};
use tokio::time::{sleep, timeout, Instant};

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
            tokio::spawn(async move { store.try_acquire(&claim(&e, &format!("c{n}"), ttl)).await })
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

#[tokio::test]
async fn nonsense_documents_are_typed_errors_and_left_alone() {
    let store = shared_store().await;
    let far = DateTime::from_millis(DateTime::now().timestamp_millis() + 3_600_000);
    // The junk every store must refuse is the conformance check `junk_records_are_typed_errors`;
    // these are BSON's own, and each must be left as it was.
    let cases = [
        doc! { "_id": "string-expiry", "holder": "a", "term": 3_i64, "expires": "soon" },
        doc! {
            "_id": "binary-holder",
            "holder": { "x": elect_mongo::mongodb::bson::Binary {
                subtype: elect_mongo::mongodb::bson::spec::BinarySubtype::Generic,
                bytes: vec![7; 200],
            } },
            "term": 3_i64,
            "expires": far,
        },
        doc! { "_id": "long-term", "holder": "a", "term": "x".repeat(300), "expires": far },
    ];
    for case in cases {
        let name = case.get_str("_id").unwrap().to_owned();
        store.collection().insert_one(case.clone()).await.unwrap();
        let e = election(&name);
        for result in [
            store
                .try_acquire(&claim(&e, "b", Ttl::new(Duration::from_secs(5)).unwrap()))
                .await
                .map(drop),
            store.leader(&e).await.map(drop),
        ] {
            match result {
                Err(Error::CorruptRecord { key, message, .. }) => {
                    assert!(key.ends_with(&format!("[{name}]")), "{key}");
                    // Issue 14, item 17: readable, not a dump of raw document bytes.
                    assert!(
                        message.len() < 120 && !message.contains("bytes"),
                        "{name}: {message}"
                    );
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
async fn bad_mongo_settings_are_typed_errors() {
    // Unreachable servers and other schemes: the conformance check
    // `unreachable_servers_and_bad_urls_are_typed_errors`.
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

/// A grant's change-stream notice carries the new leader (the document looked up with the
/// event), so an observer need not read the lease first; a release's carries none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_notice_carries_the_new_leader_and_a_release_notice_none() {
    let store = shared_store().await;
    let e = election("hinted");
    let ttl = Ttl::new(Duration::from_secs(5)).unwrap();
    let mut feed = store.subscribe(&e).await.unwrap().expect("change streams");
    let value = elect_mongo::LeaderValue::new("10.0.0.7:8080").unwrap();
    let claim = claim(&e, "a", ttl).with_value(Some(value.clone()));
    let Acquire::Granted(lease) = store.try_acquire(&claim).await.unwrap() else {
        panic!("vacant")
    };
    timeout(Duration::from_secs(5), feed.changed())
        .await
        .expect("a notice of the grant");
    let hint = feed.leader_hint().expect("the notice names the leader");
    assert_eq!(hint.holder, id("a"));
    assert_eq!(hint.term, lease.term);
    assert_eq!(hint.value, Some(value));
    assert!(
        hint.remaining > Duration::from_secs(4) && hint.remaining <= Duration::from(ttl),
        "remaining {:?}, counted from the event on the server's clock",
        hint.remaining
    );

    // Renewals wake nobody; a release wakes the feed with no leader named.
    feed.mark_seen();
    assert!(matches!(
        store.renew(&lease).await.unwrap(),
        elect_mongo::Renewal::Renewed(_)
    ));
    assert_eq!(
        store.release(&lease).await.unwrap(),
        elect_mongo::Release::Released
    );
    timeout(Duration::from_secs(5), feed.changed())
        .await
        .expect("a notice of the release");
    assert_eq!(feed.leader_hint(), None);
}

/// Issue 14, item 1: a foreign `drop()` of the leases collection made the change-stream task
/// loop on a dead stream without yielding: on a one-thread runtime nothing else ran (no
/// renewal, no step-down, no signal handling). The feed must end and the runtime stay live.
#[test]
fn dropping_the_collection_ends_the_feed_without_starving_the_runtime() {
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let outcome = runtime.block_on(async {
            let store = shared_store().await;
            let e = election("dropped");
            let ttl = Ttl::new(Duration::from_secs(5)).unwrap();
            let Acquire::Granted(_) = store.try_acquire(&claim(&e, "a", ttl)).await.unwrap() else {
                panic!("vacant")
            };
            let mut feed = store.subscribe(&e).await.unwrap().expect("change streams");
            feed.mark_seen();
            // A timer on the same thread: it only fires if the feed task yields.
            let ticks = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
            let counter = ticks.clone();
            tokio::spawn(async move {
                loop {
                    sleep(Duration::from_millis(50)).await;
                    counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            });
            store.collection().drop().await.unwrap();
            let dropped = Instant::now();
            let ended = timeout(Duration::from_secs(10), async {
                while feed.changed().await {}
            })
            .await;
            let ended_after = dropped.elapsed();
            sleep(Duration::from_millis(500)).await;
            let ticks = ticks.load(std::sync::atomic::Ordering::Relaxed);
            // A new feed works again (a new stream on the recreated collection).
            let again = store.subscribe(&e).await.unwrap().is_some();
            (ended.is_ok(), ended_after, ticks, again)
        });
        let _ = done.send(outcome);
    });
    let (ended, after, ticks, again) = finished
        .recv_timeout(Duration::from_secs(30))
        .expect("the runtime thread is stuck: a task busy-loops after the drop");
    assert!(
        ended,
        "the feed never ended after the collection was dropped"
    );
    eprintln!("feed ended {after:?} after the drop; timer ticks {ticks}");
    assert!(
        ticks >= 5,
        "the timer ran {ticks} times: the runtime was starved"
    );
    assert!(again, "subscribing again after the drop gives a feed");
}

/// Issue 14, items 5 and 9, with a client of its own (`$set` updates).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_writes_never_take_terms_back_and_end_leases_within_a_renewal() {
    use elect_core::conformance::{foreign_writes_are_bounded, ForeignWrite, Settings};
    let store = shared_store().await;
    let leases = store.collection().clone();
    foreign_writes_are_bounded(
        std::sync::Arc::new(store),
        Settings::real_server(),
        |e, what| {
            let leases = leases.clone();
            async move {
                let update = match what {
                    ForeignWrite::LowerLiveTerm | ForeignWrite::LowerStoredTerm => {
                        doc! { "$set": { "term": 1_i64 } }
                    }
                    ForeignWrite::RewriteHolder(who) => doc! { "$set": { "holder": who.as_str() } },
                    ForeignWrite::EndLease => {
                        leases.delete_one(doc! { "_id": e.as_str() }).await.unwrap();
                        return;
                    }
                    other => panic!("{other:?}"),
                };
                let result = leases
                    .update_one(doc! { "_id": e.as_str() }, update)
                    .await
                    .unwrap();
                assert_eq!(result.matched_count, 1);
            }
        },
    )
    .await;
}

/// Issue 14, item 15: `mongodb://host/app` used to write to `elect.leases`.
#[tokio::test]
async fn the_url_names_the_database() {
    let server = elect_tests::mongo().await;
    let db = unique_name("urldb");
    let url = server.url().replacen("/?", &format!("/{db}?"), 1);
    assert!(url.contains(&format!("/{db}?")), "{url}");
    let store = MongoStore::connect_url(&url).await.unwrap();
    let e = election("where");
    let Acquire::Granted(_) = store
        .try_acquire(&claim(&e, "a", Ttl::new(Duration::from_secs(5)).unwrap()))
        .await
        .unwrap()
    else {
        panic!("vacant")
    };
    let namespace = store.collection().namespace();
    assert_eq!(
        (namespace.db.as_str(), namespace.coll.as_str()),
        (db.as_str(), "leases")
    );
    let found = store
        .collection()
        .client()
        .database(&db)
        .collection::<elect_mongo::mongodb::bson::Document>("leases")
        .find_one(doc! { "_id": "where" })
        .await
        .unwrap();
    assert!(found.is_some(), "the lease is in {db}.leases");
}

/// A store on the application's own driver client: the suite's feed and value checks pass.
/// (The MongoDB-wire server, not a real mongod.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_on_the_applications_own_client_passes_the_feed_and_value_checks() {
    use elect_core::conformance::{self, Settings};
    let client = elect_mongo::mongodb::Client::with_uri_str(elect_tests::mongo().await.url())
        .await
        .unwrap();
    let store = || async {
        let config = MongoConfig::new("").database(unique_name("byo"));
        std::sync::Arc::new(
            MongoStore::from_client(client.clone(), config)
                .await
                .unwrap(),
        ) as std::sync::Arc<dyn LeaseStore>
    };
    conformance::checks_for_another_path(store, Settings::real_server()).await;
    let bad = MongoConfig::new("").database("no/slashes");
    assert!(matches!(
        MongoStore::from_client(client.clone(), bad).await,
        Err(Error::InvalidConfig { .. })
    ));
    client.shutdown().immediate(true).await;
}

type Commands = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

/// A store on its own client whose lease commands (not the change stream's `getMore`s, nor
/// the driver's own) are written down as they start.
async fn counted_store(url: &str, database: &str) -> (MongoStore, Commands) {
    use elect_mongo::mongodb::event::{command::CommandEvent, EventHandler};
    let mut options = elect_mongo::mongodb::options::ClientOptions::parse(url)
        .await
        .unwrap();
    let commands = Commands::default();
    let log = commands.clone();
    options.command_event_handler = Some(EventHandler::callback(move |event: CommandEvent| {
        if let CommandEvent::Started(started) = event {
            let driver_own = ["getMore", "killCursors", "endSessions", "hello", "isMaster"];
            if !driver_own.contains(&started.command_name.as_str()) {
                log.lock().unwrap().push(started.command_name);
            }
        }
    }));
    let client = elect_mongo::mongodb::Client::with_options(options).unwrap();
    let store = MongoStore::from_client(client, MongoConfig::new("").database(database))
        .await
        .unwrap();
    (store, commands)
}

fn taken(commands: &Commands) -> Vec<String> {
    std::mem::take(&mut *commands.lock().unwrap())
}

/// A candidate woken by a release notice goes straight to its acquiring update: one round trip.
/// A store that knows nothing yet of the server's clock (no grant, no read) reads first and
/// writes nothing. (The MongoDB-wire server, not a real mongod.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_candidate_woken_by_a_release_takes_the_lease_in_one_round_trip() {
    let server = elect_tests::mongo().await;
    let url = server.url();
    let database = unique_name("rtt");
    let a = MongoStore::connect(MongoConfig::new(url).database(&database))
        .await
        .unwrap();
    let (b, b_commands) = counted_store(url, &database).await;
    let (c, c_commands) = counted_store(url, &database).await;
    let e = election("rtt");
    let ttl = Ttl::new(Duration::from_secs(10)).unwrap();
    let Acquire::Granted(lease) = a.try_acquire(&claim(&e, "a", ttl)).await.unwrap() else {
        panic!("a takes the new election");
    };
    let mut b_feed = b.subscribe(&e).await.unwrap().expect("a change stream");
    let mut c_feed = c.subscribe(&e).await.unwrap().expect("a change stream");
    taken(&b_commands);
    taken(&c_commands);

    // Held and never released: a read, no update.
    let held = b.try_acquire(&claim(&e, "b", ttl)).await.unwrap();
    assert!(
        matches!(held, Acquire::Held(ref l) if l.holder.as_str() == "a"),
        "{held:?}"
    );
    assert_eq!(taken(&b_commands), ["aggregate"]);

    // Woken by the release: the update alone, and it takes the lease.
    let released = a.release(&lease).await.unwrap();
    assert!(
        matches!(released, elect_mongo::Release::Released),
        "{released:?}"
    );
    for feed in [&mut b_feed, &mut c_feed] {
        assert!(timeout(Duration::from_secs(10), feed.changed())
            .await
            .unwrap());
    }
    let granted = b.try_acquire(&claim(&e, "b", ttl)).await.unwrap();
    assert!(matches!(granted, Acquire::Granted(_)), "{granted:?}");
    assert_eq!(taken(&b_commands), ["findAndModify"]);

    // c saw the release too, and then b's grant: it reads first again and finds b.
    assert!(timeout(Duration::from_secs(10), c_feed.changed())
        .await
        .unwrap());
    let held = c.try_acquire(&claim(&e, "c", ttl)).await.unwrap();
    assert!(
        matches!(held, Acquire::Held(ref l) if l.holder.as_str() == "b"),
        "{held:?}"
    );
    assert_eq!(taken(&c_commands), ["aggregate"]);

    for store in [a, b, c] {
        store.close().await;
    }
}

/// A follower woken at the expiry it was told of costs one request, whether the holder renewed
/// meanwhile (the update writes nothing and its record, with the store's estimate of the
/// server's clock, tells the new remaining time) or died (the update takes the lease). Before
/// the estimate, that was a read and then, when the lease had ended, the update. (The
/// MongoDB-wire server, not a real mongod.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_woken_at_the_expiry_it_was_told_of_needs_one_round_trip() {
    let server = elect_tests::mongo().await;
    let url = server.url();
    let database = unique_name("expiry");
    let a = MongoStore::connect(MongoConfig::new(url).database(&database))
        .await
        .unwrap();
    let (b, b_commands) = counted_store(url, &database).await;
    let e = election("expiry");
    let ttl = Ttl::new(Duration::from_millis(1500)).unwrap();
    let Acquire::Granted(lease) = a.try_acquire(&claim(&e, "a", ttl)).await.unwrap() else {
        panic!("a takes the new election");
    };
    taken(&b_commands);

    // No estimate yet: a read.
    let Acquire::Held(told) = b.try_acquire(&claim(&e, "b", ttl)).await.unwrap() else {
        panic!("a holds the lease");
    };
    assert_eq!(taken(&b_commands), ["aggregate"]);
    let woken = Instant::now() + told.remaining;

    // a renews; b wakes at the old expiry and learns the new one from the update alone.
    sleep(Duration::from_millis(300)).await;
    assert!(matches!(
        a.renew(&lease).await.unwrap(),
        elect_mongo::Renewal::Renewed(_)
    ));
    tokio::time::sleep_until(woken).await;
    let Acquire::Held(renewed) = b.try_acquire(&claim(&e, "b", ttl)).await.unwrap() else {
        panic!("a renewed its lease");
    };
    assert_eq!(taken(&b_commands), ["findAndModify"]);
    assert_eq!(renewed.holder.as_str(), "a");
    let read = b.leader(&e).await.unwrap().expect("a leads");
    taken(&b_commands);
    // Renewed 300 ms into a 1.5 s lease and read ~1.2 s later: ~300 ms left. The estimate is
    // within the round trips and the server's millisecond of the read that followed it.
    let (estimated, read) = (renewed.remaining.as_millis(), read.remaining.as_millis());
    assert!(
        estimated + 2 >= read && estimated <= read + 20,
        "estimated {estimated} ms left, read {read} ms"
    );

    // a dies (no renewal, no release); b wakes at the expiry it was told of and takes the
    // lease with the update alone.
    sleep(renewed.remaining + Duration::from_millis(5)).await;
    let granted = b.try_acquire(&claim(&e, "b", ttl)).await.unwrap();
    assert!(matches!(granted, Acquire::Granted(_)), "{granted:?}");
    assert_eq!(taken(&b_commands), ["findAndModify"]);

    for store in [a, b] {
        store.close().await;
    }
}
