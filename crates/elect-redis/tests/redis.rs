//! Redis-specific behaviour on a real server: terms across a restart without persistence,
//! Redis's own junk at the keys, a blackholed leader, killed subscribers, the restart
//! quarantine and foreign writes. What every store does is in `conformance.rs`.

use std::time::Duration;

use elect_redis::fred::prelude::*;
use elect_redis::{
    Acquire, ElectionName, Elector, Error, LeaseStore, RedisConfig, RedisStore, Release, Renewal,
    Term, Ttl,
};
use elect_tests::proxy::{FaultProxy, Mode};
use elect_tests::{claim, election, id, unique_name, Kind, OwnedServer};
use tokio::time::{timeout, Instant};

async fn connect(url: &str) -> RedisStore {
    RedisStore::connect(RedisConfig::new(url).key_prefix(unique_name("t")))
        .await
        .unwrap()
}

async fn raw(url: &str) -> Client {
    let client = Builder::from_config(Config::from_url(url).unwrap())
        .build()
        .unwrap();
    client.init().await.unwrap();
    client
}

#[tokio::test]
async fn terms_keep_rising_across_a_restart_without_persistence() {
    let server = OwnedServer::start(Kind::Redis).await.unwrap();
    let store = connect(&server.url()).await;
    let e = election("restart");
    let ttl = Ttl::new(Duration::from_secs(5)).unwrap();
    // Bring the counter to 6, so the next grant is term 7 through the INCR path.
    let admin = raw(&server.url()).await;
    let _: () = admin
        .set(store.term_key(&e), 6, None, None, false)
        .await
        .unwrap();
    let a = claim(&e, "a", ttl);
    let Acquire::Granted(lease) = store.try_acquire(&a).await.unwrap() else {
        panic!("vacant election")
    };
    assert!(
        lease.term > Term(7),
        "term {} above the counter 6",
        lease.term
    );
    server.restart().await.unwrap();
    // The store's connections come back by themselves; the data did not.
    let b = claim(&e, "b", ttl);
    let granted = loop {
        match store.try_acquire(&b).await {
            Ok(Acquire::Granted(l)) => break l,
            Ok(other) => panic!("the lease should be gone after the restart: {other:?}"),
            Err(e) if e.is_retryable() => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(e) => panic!("{e}"),
        }
    };
    assert!(
        granted.term > lease.term,
        "term {} after {} and a restart",
        granted.term,
        lease.term
    );
    assert_eq!(store.release(&granted).await.unwrap(), Release::Released);
    let Acquire::Granted(again) = store.try_acquire(&a).await.unwrap() else {
        panic!("released")
    };
    assert!(again.term > granted.term);
}

#[tokio::test]
async fn a_lease_without_expiry_and_a_bad_counter_are_typed_errors_naming_the_key() {
    let url = elect_tests::redis().await.url().to_owned();
    let store = connect(&url).await;
    let admin = raw(&url).await;
    let ttl = Ttl::new(Duration::from_secs(5)).unwrap();
    let lease_of = |e: &ElectionName, term| claim(e, "a", ttl).granted(Term(term));
    // The junk every store must refuse is the conformance check `junk_records_are_typed_errors`;
    // these are the two only Redis has: a lease without an expiry, and a bad term counter.
    let cases = ["no expiry", "bad counter"];
    for (n, what) in cases.into_iter().enumerate() {
        let e = election(&format!("junk{n}"));
        let (lease, term) = (store.lease_key(&e), store.term_key(&e));
        match what {
            "no expiry" => admin
                .hset::<(), _, _>(&lease, [("holder", "a"), ("term", "3")])
                .await
                .unwrap(),
            "bad counter" => admin
                .set::<(), _, _>(&term, "abc", None, None, false)
                .await
                .unwrap(),
            _ => unreachable!(),
        }
        let key = if what == "bad counter" {
            term.clone()
        } else {
            lease.clone()
        };
        let expect_corrupt = |result: Result<String, Error>| match result {
            Err(Error::CorruptRecord {
                key: k, message, ..
            }) => {
                assert_eq!(k, key, "{what}: the error names the key ({message})")
            }
            other => panic!("{what}: expected a corrupt-record error, got {other:?}"),
        };
        expect_corrupt(
            store
                .try_acquire(&claim(&e, "b", ttl))
                .await
                .map(|a| format!("{a:?}")),
        );
        if what != "bad counter" {
            expect_corrupt(store.leader(&e).await.map(|a| format!("{a:?}")));
            expect_corrupt(
                store
                    .renew(&lease_of(&e, 3))
                    .await
                    .map(|a| format!("{a:?}")),
            );
            expect_corrupt(
                store
                    .release(&lease_of(&e, 3))
                    .await
                    .map(|a| format!("{a:?}")),
            );
        }
    }
}

/// The TTL of the candidates behind the fault proxy.
const TTL: Duration = Duration::from_secs(2);

/// Candidate `a` of a fresh election (TTL 2 s) on the shared Redis through a fault proxy, and
/// a store on the same keys that goes straight to the server.
async fn behind_a_proxy(name: &str) -> (FaultProxy, RedisStore, ElectionName, Elector) {
    let url = elect_tests::redis().await.url().to_owned();
    let (proxy, proxied) = FaultProxy::in_front_of(&url).await.unwrap();
    let prefix = unique_name(name);
    let config = RedisConfig::new(&proxied)
        .key_prefix(&prefix)
        .command_timeout(Duration::from_millis(500));
    let store = RedisStore::connect(config).await.unwrap();
    let direct = RedisStore::connect(RedisConfig::new(&url).key_prefix(&prefix))
        .await
        .unwrap();
    let e = election(name);
    let elector = Elector::builder(store, e.clone())
        .candidate(id("a"))
        .ttl(TTL)
        .start()
        .unwrap();
    (proxy, direct, e, elector)
}

#[tokio::test]
async fn a_blackholed_leader_steps_down_before_its_lease_expires_at_the_server() {
    let (proxy, direct, e, elector) = behind_a_proxy("blackhole").await;
    let ttl = TTL;
    let guard = elector.leading().await.unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    proxy.set(Mode::Blackhole);
    let cut = Instant::now();
    let expiry = server_expiry_after_the_cut(&direct, &e).await;
    timeout(ttl * 2, guard.lost()).await.expect("lost fires");
    let lost = Instant::now();
    assert!(
        lost < expiry,
        "lost fired {:?} after the server's expiry",
        lost - expiry
    );
    assert!(
        lost - cut <= ttl,
        "lost fired {:?} after the cut",
        lost - cut
    );
    eprintln!(
        "lost fired {:?} after the cut, at least {:?} before the server's expiry",
        lost - cut,
        expiry - lost
    );
    drop(elector);
}

/// The earliest instant at which `a`'s lease can expire at the server, read straight from the
/// server (not through the proxy) right after the cut: nothing it did after the cut reaches the
/// server, so the lease can only last longer than this (a renewal that passed the proxy just
/// before the cut), never shorter. Comparing with it cannot race the expiry itself.
async fn server_expiry_after_the_cut(direct: &RedisStore, e: &ElectionName) -> Instant {
    let asked = Instant::now();
    let info = direct
        .leader(e)
        .await
        .unwrap()
        .expect("the lease is live at the cut");
    assert_eq!(info.holder, id("a"));
    asked + info.remaining
}

/// On a server of its own: `CLIENT KILL TYPE pubsub` kills every subscriber of the server, and on
/// the shared one that ended the feeds of the tests running beside it (CI, 2026-12-03: the
/// follower of `a_store_on_the_applications_own_pool…` slept through a resignation).
#[tokio::test]
async fn feeds_end_when_the_subscriber_connection_is_killed() {
    let server = OwnedServer::start(Kind::Redis).await.unwrap();
    let url = server.url();
    let store = connect(&url).await;
    let e = election("feed");
    let mut feed = store
        .subscribe(&e)
        .await
        .unwrap()
        .expect("redis offers a feed");
    feed.mark_seen();
    let admin = raw(&url).await;
    let killed: i64 = admin
        .custom(
            elect_redis::fred::types::CustomCommand::new_static("CLIENT", None, false),
            vec!["KILL", "TYPE", "pubsub"],
        )
        .await
        .unwrap();
    assert!(killed >= 1, "the subscriber connection was killed");
    let ended = timeout(Duration::from_secs(10), async {
        while feed.changed().await {}
    })
    .await;
    assert!(
        ended.is_ok(),
        "the feed must end so waiters fall back to precise sleeps"
    );
    // Subscribing again, once the subscriber has reconnected (its reconnect also ends feeds),
    // works and confirms again.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut again = store.subscribe(&e).await.unwrap().unwrap();
    again.mark_seen();
    let Acquire::Granted(lease) = store
        .try_acquire(&claim(&e, "a", Ttl::new(Duration::from_secs(5)).unwrap()))
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(store.release(&lease).await.unwrap(), Release::Released);
    assert!(timeout(Duration::from_secs(2), again.changed())
        .await
        .unwrap());
}

/// Unreachable servers and URLs of other schemes are the conformance check
/// `unreachable_servers_and_bad_urls_are_typed_errors`; these URLs are Redis's own mistakes.
#[tokio::test]
async fn bad_redis_urls_are_config_errors() {
    let mut bad_urls = vec!["redis://h:notaport"];
    if !cfg!(feature = "tls") {
        bad_urls.push("rediss://h:1");
    }
    for bad in bad_urls {
        match RedisStore::connect_url(bad).await {
            Err(Error::InvalidConfig { .. }) => {}
            other => panic!("{bad}: {other:?}"),
        }
    }
}

/// A restart without persistence forgets the lease. Without the quarantine a second candidate
/// is granted it at once, while the first still believes (its deadline is up to a TTL away);
/// with it, the second leads only after the first's deadline, in a higher term.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_restart_quarantine_keeps_a_forgotten_lease_closed_until_the_old_deadline() {
    let ttl = Duration::from_secs(2);
    for quarantine in [false, true] {
        let server = OwnedServer::start(Kind::Redis).await.unwrap();
        let connect = async || {
            let config = RedisConfig::new(server.url())
                .key_prefix("q")
                .restart_quarantine(quarantine);
            RedisStore::connect(config).await.unwrap()
        };
        // Let the fresh server's own quarantine pass first.
        tokio::time::sleep(ttl + Duration::from_millis(1100)).await;
        let e = election("quarantine");
        // a holds the lease and believes until its local deadline: sent + TTL·(1 − 1 %).
        let sent = Instant::now();
        let ttl_ = Ttl::new(ttl).unwrap();
        let Acquire::Granted(first) = connect()
            .await
            .try_acquire(&claim(&e, "a", ttl_))
            .await
            .unwrap()
        else {
            panic!("vacant election")
        };
        let a_deadline = sent + ttl.mul_f64(0.99);
        server.restart().await.unwrap();
        let b = Elector::builder(connect().await, e.clone())
            .candidate(id("b"))
            .ttl(ttl)
            .start()
            .unwrap();
        let second = timeout(Duration::from_secs(10), b.leading())
            .await
            .unwrap()
            .unwrap();
        let elected = Instant::now();
        assert!(second.term() > first.term, "terms must keep rising");
        if quarantine {
            assert!(
                elected >= a_deadline,
                "b was elected {:?} before a's deadline",
                a_deadline - elected
            );
        } else {
            // The control: the hazard is real (so the check above can fail).
            assert!(
                elected < a_deadline,
                "without the quarantine b should have been elected while a still believed"
            );
        }
        b.shutdown().await.unwrap();
    }
}

/// Issue 14, items 5 and 9: `HSET … term 1`, a holder rewritten to a follower, a counter set to
/// 1 and a deleted lease, each written by a client of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_writes_never_take_terms_back_and_end_leases_within_a_renewal() {
    use elect_core::conformance::{foreign_writes_are_bounded, ForeignWrite, Settings};
    let url = elect_tests::redis().await.url().to_owned();
    let store = connect(&url).await;
    let admin = raw(&url).await;
    let keys = store.clone();
    foreign_writes_are_bounded(
        std::sync::Arc::new(store),
        Settings::real_server(),
        |e, what| {
            let (admin, lease, counter) = (admin.clone(), keys.lease_key(&e), keys.term_key(&e));
            async move {
                let _: () = match what {
                    ForeignWrite::LowerLiveTerm => admin.hset(lease, ("term", "1")).await,
                    ForeignWrite::RewriteHolder(who) => {
                        admin.hset(lease, ("holder", who.as_str())).await
                    }
                    ForeignWrite::LowerStoredTerm => admin.set(counter, 1, None, None, false).await,
                    ForeignWrite::EndLease => admin.del(lease).await,
                    other => panic!("{other:?}"),
                }
                .unwrap();
            }
        },
    )
    .await;
}

/// Issue 14, item 3, at the store: a second claim with the same id is told the lease is held,
/// and a lease hash written by elect 0.1.0 (no nonce) is nobody's claim.
#[tokio::test]
async fn the_nonce_tells_apart_two_claims_with_one_id() {
    let url = elect_tests::redis().await.url().to_owned();
    let store = connect(&url).await;
    let e = election("twins");
    let ttl = Ttl::new(Duration::from_secs(5)).unwrap();
    let one = claim(&e, "same", ttl);
    let two = claim(&e, "same", ttl);
    let Acquire::Granted(lease) = store.try_acquire(&one).await.unwrap() else {
        panic!("vacant")
    };
    match store.try_acquire(&two).await.unwrap() {
        Acquire::Held(info) => assert_eq!((info.holder, info.term), (id("same"), lease.term)),
        other => panic!("the second claim must find it held: {other:?}"),
    }
    // Written by an older elect: holder and term, no nonce.
    let admin = raw(&url).await;
    let _: () = admin.hdel(store.lease_key(&e), "nonce").await.unwrap();
    assert!(matches!(
        store.try_acquire(&one).await.unwrap(),
        Acquire::Held(_)
    ));
    assert_eq!(store.renew(&lease).await.unwrap(), Renewal::Lost);
}

/// `Elector::run` on a real server behind the TCP fault proxy: when the store is blackholed,
/// the work is cancelled (dropped) no later than the leadership's local deadline, while the
/// lease is still live at the server; after healing, the work runs again in a higher term.
#[tokio::test]
async fn run_cancels_the_work_by_the_deadline_when_the_store_is_blackholed() {
    use std::sync::{Arc, Mutex};

    /// One run of the work: its term, its guard, and when it was dropped.
    struct Run {
        term: Term,
        guard: elect_redis::LeaderGuard,
        dropped: Option<Instant>,
    }
    /// Marks its run dropped when the work's future is dropped (cancelled).
    struct OnDrop(Arc<Mutex<Vec<Run>>>, usize);
    impl Drop for OnDrop {
        fn drop(&mut self) {
            self.0.lock().unwrap()[self.1].dropped = Some(Instant::now());
        }
    }

    let (proxy, direct, e, elector) = behind_a_proxy("run-blackhole").await;
    let ttl = TTL;
    let runs: Arc<Mutex<Vec<Run>>> = Arc::default();
    let task = {
        let (elector, runs) = (elector.clone(), runs.clone());
        tokio::spawn(async move {
            elector
                .run(move |guard| {
                    let runs = runs.clone();
                    async move {
                        let k = {
                            let mut runs = runs.lock().unwrap();
                            runs.push(Run {
                                term: guard.term(),
                                guard: guard.clone(),
                                dropped: None,
                            });
                            runs.len() - 1
                        };
                        let _mark = OnDrop(runs, k);
                        std::future::pending::<Result<(), std::io::Error>>().await
                    }
                })
                .await
        })
    };
    let started = |n: usize| {
        let runs = runs.clone();
        async move {
            while runs.lock().unwrap().len() < n {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    timeout(ttl * 3, started(1)).await.expect("the work starts");
    tokio::time::sleep(Duration::from_millis(700)).await;
    proxy.set(Mode::Blackhole);
    let cut = Instant::now();
    let expiry = server_expiry_after_the_cut(&direct, &e).await;
    let dropped = timeout(ttl * 2, async {
        loop {
            if let Some(at) = runs.lock().unwrap()[0].dropped {
                break at;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .expect("the work is cancelled");
    let deadline = runs.lock().unwrap()[0].guard.deadline();
    assert!(
        dropped <= deadline + Duration::from_millis(20),
        "the work outlived its leadership: dropped {:?} after the deadline",
        dropped - deadline
    );
    // The lease was still live at the server: nobody else could lead yet.
    assert!(
        dropped < expiry,
        "the work was cancelled {:?} after the server's expiry",
        dropped - expiry
    );
    eprintln!(
        "work cancelled {:?} after the cut, at least {:?} before the server's expiry",
        dropped - cut,
        expiry - dropped
    );
    assert_eq!(
        runs.lock().unwrap().len(),
        1,
        "no second run while blackholed"
    );
    // Heal (the blackhole dropped bytes of open connections: reset them), and the work runs
    // again, in a higher term, once the old lease has expired at the server.
    proxy.set(Mode::Pass);
    proxy.reset_all();
    timeout(ttl * 4, started(2))
        .await
        .expect("the work runs again after healing");
    let (first, second) = {
        let runs = runs.lock().unwrap();
        (runs[0].term, runs[1].term)
    };
    assert!(second > first, "term {second} after {first}");
    elector.shutdown().await.unwrap();
    let result = timeout(Duration::from_secs(5), task)
        .await
        .expect("run returns after shutdown")
        .unwrap();
    assert!(
        matches!(result, Err(elect_redis::RunError::Elector(_))),
        "{result:?}"
    );
    assert!(
        runs.lock().unwrap()[1].dropped.is_some(),
        "shutdown cancels the work"
    );
}

/// A store on the application's own fred pool: requests go through it, hand-over notices
/// through a subscriber made with its settings, values travel (checks from the suite).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_on_the_applications_own_pool_passes_the_feed_and_value_checks() {
    use elect_core::conformance::{self, Settings};
    let url = elect_tests::redis().await.url().to_owned();
    let pool = Builder::from_config(Config::from_url(&url).unwrap())
        .build_pool(2)
        .unwrap();
    pool.init().await.unwrap();
    let store = || async {
        let config = RedisConfig::new("").key_prefix(unique_name("byo"));
        std::sync::Arc::new(RedisStore::from_pool(pool.clone(), config).await.unwrap())
            as std::sync::Arc<dyn LeaseStore>
    };
    conformance::checks_for_another_path(store, Settings::real_server()).await;
    // Options are still checked; the URL is not used.
    let bad = RedisConfig::new("").key_prefix("no spaces");
    assert!(matches!(
        RedisStore::from_pool(pool.clone(), bad).await,
        Err(Error::InvalidConfig { .. })
    ));
    // An application's pool that is not connected: a typed error in bounded time, no hang.
    let idle = Builder::from_config(Config::from_url("redis://127.0.0.1:1").unwrap())
        .build_pool(1)
        .unwrap();
    let config = RedisConfig::new("").connect_timeout(Duration::from_millis(500));
    let result = timeout(Duration::from_secs(5), RedisStore::from_pool(idle, config))
        .await
        .expect("bounded");
    assert!(
        result.is_err(),
        "a pool that is not connected cannot load scripts"
    );
}
