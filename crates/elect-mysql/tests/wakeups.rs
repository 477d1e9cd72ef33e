//! Named-lock wake-ups on a real server: a release wakes a follower in another store at once
//! (with no poll at all), and a wake-up that never comes — a leader without beacons, a
//! foreign session holding the lock's name — costs latency and nothing else: one leader at a
//! time, the lease row deciding.

use std::time::Duration;

use std::future::Future;

use elect_core::{Acquire, Claim, Elector, LeaderGuard, Lease, LeaseStore, Release, Term, Ttl};
use elect_mysql::mysql_async::prelude::Queryable;
use elect_mysql::{MysqlConfig, MysqlStore};
use elect_tests::{election, id};
use tokio::time::{timeout, Instant};

mod support;
use support::{fresh_database, store};

fn elector(store: MysqlStore, name: &str, who: &str, ttl: Duration) -> Elector {
    Elector::builder(store, election(name))
        .candidate(id(who))
        .ttl(ttl)
        .start()
        .unwrap()
}

async fn lead(elector: &Elector, within: Duration) -> LeaderGuard {
    timeout(within, elector.leading())
        .await
        .expect("leads in time")
        .expect("running")
}

/// Runs `release` (the leader letting go) and checks that `b` then leads, in a term above
/// `before`, within a second: woken by the release, not waiting out the lease; `missed` says
/// what it means if not.
async fn woken_by(b: &Elector, before: Term, release: impl Future<Output = ()>, missed: &str) {
    let released = Instant::now();
    release.await;
    let second = lead(b, Duration::from_secs(5)).await;
    let took = released.elapsed();
    assert!(second.term() > before);
    assert!(
        took < Duration::from_secs(1),
        "b led {took:?} after the release: {missed}"
    );
}

/// The server-wide name of an election's lock (as `wake.rs` names it), `?` the election.
const LOCK: &str = "SHA2(CONCAT(DATABASE(), '.elect_leases/', ?), 224)";

/// A foreign session holding election `name`'s lock name.
async fn stranger_holding(url: &str, name: &str) -> elect_mysql::mysql_async::Conn {
    let mut stranger = elect_mysql::mysql_async::Conn::from_url(url).await.unwrap();
    let got: Option<i64> = stranger
        .exec_first(format!("SELECT GET_LOCK({LOCK}, 0)"), (name,))
        .await
        .unwrap();
    assert_eq!(got, Some(1), "the stranger holds the name");
    stranger
}

/// `a` granted election `e` for 20 s straight through its store (nothing renews it), and an
/// elector `b` in another store, 500 ms later: it has read the lease and its waiter blocks on
/// `a`'s beacon.
async fn granted_and_followed(config: MysqlConfig) -> (MysqlStore, Claim, Lease, Elector) {
    let a_store = store(config.clone()).await;
    let claim = Claim::new(
        election("e"),
        id("a"),
        Ttl::new(Duration::from_secs(20)).unwrap(),
    );
    let Acquire::Granted(lease) = a_store.try_acquire(&claim).await.unwrap() else {
        panic!("a is granted the vacant election")
    };
    let b = elector(store(config).await, "e", "b", Duration::from_secs(20));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!b.is_leader());
    (a_store, claim, lease, b)
}

/// Leader `a` in one store, follower `b` in another (two processes, as far as the server can
/// tell), no poll: `a` shuts down (a release), and `b` leads long before the lease it was told
/// of would have ended. Fails with `release_locks(false)`: `b` then waits for the expiry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_wakes_a_follower_in_another_store_without_any_poll() {
    let url = fresh_database().await;
    let config = MysqlConfig::new(&url).release_poll(None);
    let ttl = Duration::from_secs(20);
    let a = elector(store(config.clone()).await, "e", "a", ttl);
    let first = lead(&a, Duration::from_secs(5)).await;
    let b = elector(store(config).await, "e", "b", ttl);
    // b has read the lease and waits; its store blocks on a's lock.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let release = async { a.shutdown().await.expect("a releases") };
    let missed = format!("no wake-up (the lease had {ttl:?})");
    woken_by(&b, first.term(), release, &missed).await;
    b.shutdown().await.unwrap();
}

/// The leader's store takes no beacon (`release_locks(false)`): the follower's lock is free
/// every time it asks, so it paces itself and reads the row instead, and still takes over
/// within about a second of the release — never while `a` leads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_without_beacons_is_followed_by_reads_not_by_a_spin() {
    let url = fresh_database().await;
    let ttl = Duration::from_secs(20);
    let a = elector(
        store(
            MysqlConfig::new(&url)
                .release_poll(None)
                .release_locks(false),
        )
        .await,
        "e",
        "a",
        ttl,
    );
    let first = lead(&a, Duration::from_secs(5)).await;
    let b = elector(
        store(MysqlConfig::new(&url).release_poll(None)).await,
        "e",
        "b",
        ttl,
    );
    // Long enough for b's pause to grow to its longest (1 s).
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!b.is_leader(), "b leads while a does");
    let released = Instant::now();
    a.shutdown().await.expect("a releases");
    assert!(!first.is_leading(), "a believes after its release");
    let second = lead(&b, Duration::from_secs(5)).await;
    let took = released.elapsed();
    assert!(second.term() > first.term());
    assert!(
        took < Duration::from_millis(2500),
        "b led {took:?} after the release: the paced reads did not see it"
    );
    b.shutdown().await.unwrap();
}

/// A foreign session holds the election's lock name: the leader gets no beacon and the
/// follower blocks on the stranger, so no wake-up comes. The follower leads at the expiry it
/// was told of (TTL 1 s), not before `a` released, and not never.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_session_on_the_lock_name_costs_latency_only() {
    let url = fresh_database().await;
    let foreign = stranger_holding(&url, "e").await;
    let ttl = Duration::from_secs(1);
    let config = MysqlConfig::new(&url).release_poll(None);
    let a = elector(store(config.clone()).await, "e", "a", ttl);
    let first = lead(&a, Duration::from_secs(5)).await;
    let b = elector(store(config).await, "e", "b", ttl);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!b.is_leader(), "b leads while a does");
    a.shutdown().await.expect("a releases");
    let second = lead(&b, ttl * 3).await;
    assert!(second.term() > first.term());
    b.shutdown().await.unwrap();
    foreign.disconnect().await.unwrap();
}

/// The leader "crashes" while its lease runs: its renewals stop (blackholed) and the server
/// drops its beacon's connection (`KILL`), freeing the lock. The follower's waiter wakes, reads
/// the row once, finds the lease live, looks twice whether anyone takes the lock again, and
/// sleeps the lease out instead of reading at a pace (before: ~2 reads per 10, 20, 40 …
/// 1000 ms step); the follower leads after the expiry, not before.
/// On a server of the test's own, so that its statement counters are this test's alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_leader_is_slept_out_not_polled() {
    use elect_core::conformance::{Faults, FaultyStore};
    use elect_tests::{Kind, OwnedServer};

    let server = OwnedServer::start(Kind::Mysql)
        .await
        .expect("a MariaDB server of the test's own");
    let url = server.mysql_database().await.unwrap();
    let mut admin = elect_mysql::mysql_async::Conn::from_url(&url)
        .await
        .unwrap();
    let config = MysqlConfig::new(&url).release_poll(None);
    let ttl = Duration::from_secs(4);
    let a_net = FaultyStore::new(store(config.clone()).await);
    let a = Elector::builder(a_net.clone(), election("e"))
        .candidate(id("a"))
        .ttl(ttl)
        .start()
        .unwrap();
    let first = lead(&a, Duration::from_secs(5)).await;
    let b = elector(store(config).await, "e", "b", ttl);
    // b has read the lease and its waiter blocks on a's beacon.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!b.is_leader());

    a_net.set(Faults::Blackhole);
    let beacon: Option<u64> = admin
        .exec_first(format!("SELECT IS_USED_LOCK({LOCK})"), ("e",))
        .await
        .unwrap();
    let beacon = beacon.expect("a holds its beacon");
    let selects = |rows: Vec<(String, u64)>| rows.into_iter().map(|(_, n)| n).sum::<u64>();
    let before: Vec<(String, u64)> = admin
        .query("SHOW GLOBAL STATUS WHERE Variable_name IN ('Com_select', 'Com_do')")
        .await
        .unwrap();
    let crashed = Instant::now();
    admin.query_drop(format!("KILL {beacon}")).await.unwrap();
    // Well inside a's lease (its last renewal was at most TTL/3 before the crash).
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    let after: Vec<(String, u64)> = admin
        .query("SHOW GLOBAL STATUS WHERE Variable_name IN ('Com_select', 'Com_do')")
        .await
        .unwrap();
    let statements = selects(after) - selects(before);
    assert!(!b.is_leader(), "b leads while a's lease runs");
    // Per waiting store (a's own store waits on the election too): the read after the
    // wake-up, the lock's release, and two looks for a new holder (`wake.rs`'s SETTLE); a's
    // blackholed renewals never reach the server. Paced reads would be ~2 per 10, 20, 40 …
    // 1000 ms step: 14 or more per store.
    assert!(
        statements <= 8,
        "{statements} SELECT/DO statements in the 2 s after the crash: the waiter polls"
    );
    let second = lead(&b, ttl * 2).await;
    assert!(second.term() > first.term());
    assert!(crashed.elapsed() > Duration::from_secs(2));
    b.shutdown().await.unwrap();
    a_net.set(Faults::None);
    drop(a);
}

/// The leader is granted its own lease again (as after a lost answer): its old beacon lets
/// the lock go and a new one takes it, while the lease runs on. The follower's waiter, woken by
/// the let-go, reads a live lease, sees the lock taken again and waits on the new beacon, so
/// the leader's later release wakes it at once. (Before 2026-12-07 it took any let-go under a
/// live lease for a crash and slept the 20 s lease out; the poll found the release ~2 s on.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_granted_its_own_lease_again_still_wakes_its_follower() {
    let url = fresh_database().await;
    let (a_store, claim, lease, b) =
        granted_and_followed(MysqlConfig::new(&url).release_poll(None)).await;
    // a asks again for its own lease: granted, same term, a new beacon.
    let Acquire::Granted(again) = a_store.try_acquire(&claim).await.unwrap() else {
        panic!("a is granted its own lease again")
    };
    assert_eq!(again.term, lease.term);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!b.is_leader(), "b leads while a does");
    let release = async { assert_eq!(a_store.release(&again).await.unwrap(), Release::Released) };
    woken_by(&b, lease.term, release, "the new beacon was not waited on").await;
    b.shutdown().await.unwrap();
}

/// The leader's beacon loses its connection (`KILL`) while the leader lives on: the lock is
/// let go, nobody takes it again, and the follower's waiter sleeps the lease out, as after a
/// crash. Then the leader releases: that wake-up is missed, so the poll (default 2 s with
/// wake-ups on) must cover the election meanwhile: the follower leads within a few seconds,
/// not at the 20 s lease's end. (Before 2026-12-06: the waiter kept saying it watched the
/// election, the poll skipped it, and the follower slept ~20 s.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_while_the_waiter_sleeps_out_a_lease_is_found_by_the_poll() {
    let url = fresh_database().await;
    let mut admin = elect_mysql::mysql_async::Conn::from_url(&url)
        .await
        .unwrap();
    let (a_store, _, lease, b) = granted_and_followed(MysqlConfig::new(&url)).await;
    let beacon: Option<u64> = admin
        .exec_first(format!("SELECT IS_USED_LOCK({LOCK})"), ("e",))
        .await
        .unwrap();
    let beacon = beacon.expect("a holds its beacon");
    admin.query_drop(format!("KILL {beacon}")).await.unwrap();
    // b's waiter reads the live lease, looks twice for a new holder, sleeps the lease out.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!b.is_leader(), "b leads while a does");
    let released = Instant::now();
    assert_eq!(a_store.release(&lease).await.unwrap(), Release::Released);
    let second = lead(&b, Duration::from_secs(8)).await;
    assert!(second.term() > lease.term);
    eprintln!("b led {:?} after the release", released.elapsed());
    b.shutdown().await.unwrap();
}

/// An idle follower whose waiter blocks on the leader's beacon sends the poll's statement
/// neither during its first wait nor after: with a poll every 500 ms, a leader renewing every
/// 20/3 s and the follower told of an expiry 20 s away, the follower's store sends nothing in
/// 4 s. Before, the poll ran until the first blocking `GET_LOCK` answered (30 s): 8 polls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_follower_is_not_polled_during_its_first_wait() {
    // A server of its own: the count is the server's.
    let server = elect_tests::OwnedServer::start(elect_tests::Kind::Mysql)
        .await
        .expect("a MariaDB server");
    let mut admin = elect_mysql::mysql_async::Conn::from_url(format!("{}mysql", server.url()))
        .await
        .unwrap();
    admin.query_drop("CREATE DATABASE app").await.unwrap();
    let url = format!("{}app", server.url());
    let ttl = Duration::from_secs(20);
    let a = elector(store(MysqlConfig::new(&url)).await, "e", "a", ttl);
    lead(&a, Duration::from_secs(5)).await;
    let config = MysqlConfig::new(&url).release_poll(Some(Duration::from_millis(500)));
    let b = elector(store(config).await, "e", "b", ttl);
    // b reads the lease, subscribes, and its waiter probes the lock and blocks on it.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let selects = async |admin: &mut elect_mysql::mysql_async::Conn| -> u64 {
        let row: Option<(String, u64)> = admin
            .query_first("SHOW GLOBAL STATUS LIKE 'Com_select'")
            .await
            .unwrap();
        row.unwrap().1
    };
    let before = selects(&mut admin).await;
    tokio::time::sleep(Duration::from_millis(4_000)).await;
    let sent = selects(&mut admin).await - before;
    assert!(!b.is_leader() && a.is_leader());
    // A renewal of a is an UPDATE; b reads nothing before the expiry it was told of.
    assert!(
        sent <= 1,
        "{sent} SELECTs in 4 s from an idle follower blocked on the beacon"
    );
    b.shutdown().await.unwrap();
    a.shutdown().await.unwrap();
}

/// Another store's waiter may hold the lock for a moment — woken by an earlier let-go, it
/// holds the lock for one read — while the lease it read is a new grant whose beacon has not
/// taken the lock yet. A waiter blocked behind that moment must not take its end for a crashed
/// leader. Here a foreign session stands in for that waiter: it holds the name while `a` is
/// granted (`a`'s beacon queues behind it, again every second) and while `b`'s waiter blocks
/// on it; when it lets go, `b`'s waiter gets the lock first, reads `a`'s live lease, and must
/// then wait on `a`'s beacon, so that `a`'s release wakes `b` at once. (Before, `b` slept out
/// the 20 s lease and, with no poll, led at its end: seen in the bench as 2 hand-overs in 30
/// taking 0.9–1.2 s, with three waiters on one name.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moment_another_waiter_held_the_lock_is_not_taken_for_a_crash() {
    let url = fresh_database().await;
    let mut stranger = stranger_holding(&url, "e").await;
    let config = MysqlConfig::new(&url).release_poll(None);
    let ttl = Duration::from_secs(20);
    let a = elector(store(config.clone()).await, "e", "a", ttl);
    let first = lead(&a, Duration::from_secs(5)).await;
    let b = elector(store(config).await, "e", "b", ttl);
    // b reads the lease and its waiter blocks behind the stranger; a's beacon asks again
    // every second, so by now b's waiter is ahead of it in the lock's queue.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(!b.is_leader());
    stranger
        .exec_drop(format!("DO RELEASE_LOCK({LOCK})"), ("e",))
        .await
        .unwrap();
    // b's waiter gets the lock, reads a's live lease, lets go; a's beacon takes it.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let holder: Option<u64> = stranger
        .exec_first(format!("SELECT IS_USED_LOCK({LOCK})"), ("e",))
        .await
        .unwrap();
    assert!(holder.is_some(), "a's beacon holds the lock");
    assert!(!b.is_leader(), "b leads while a does");
    let release = async { a.shutdown().await.expect("a releases") };
    let missed = format!("its waiter slept the lease out (the lease had {ttl:?})");
    woken_by(&b, first.term(), release, &missed).await;
    b.shutdown().await.unwrap();
    stranger.disconnect().await.unwrap();
}

/// A release runs on the beacon's connection and lets the lock go in the same round trip, the
/// server freeing it right after the release commits: when `release` returns, the lock is
/// free. (Before, the store's beacon task let it go a task wake-up and a round trip after the
/// release's answer, ~0.8 ms of a 3 ms hand-over on the bench; here the check's own question
/// reached the server first.) Five rounds, each a new grant and beacon.
#[tokio::test]
async fn a_release_returns_with_its_lock_let_go() {
    let url = fresh_database().await;
    let a = store(MysqlConfig::new(&url).release_poll(None)).await;
    let mut admin = elect_mysql::mysql_async::Conn::from_url(&url)
        .await
        .unwrap();
    let holder = async |admin: &mut elect_mysql::mysql_async::Conn| -> Option<u64> {
        admin
            .exec_first::<Option<u64>, _, _>(format!("SELECT IS_USED_LOCK({LOCK})"), ("e",))
            .await
            .unwrap()
            .flatten()
    };
    for round in 0..5 {
        let claim = Claim::new(
            election("e"),
            id("a"),
            Ttl::new(Duration::from_secs(20)).unwrap(),
        );
        let Acquire::Granted(lease) = a.try_acquire(&claim).await.unwrap() else {
            panic!("round {round}: a is granted the vacant election")
        };
        let taken = Instant::now();
        while holder(&mut admin).await.is_none() {
            assert!(
                taken.elapsed() < Duration::from_secs(5),
                "round {round}: no beacon took the lock"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(a.release(&lease).await.unwrap(), Release::Released);
        assert_eq!(
            holder(&mut admin).await,
            None,
            "round {round}: the lock was still held when the release returned"
        );
    }
}
