//! The batched path on a real MariaDB: the whole conformance suite through
//! [`Batched`](elect_mysql::batch::Batched), a batch holding one corrupt row, a renewal batch
//! with one lease over (the read-back path), the same election twice in one batch, and the
//! statements the server sees for many elections.

use std::time::Duration;

use elect_core::conformance::Settings;
use elect_mysql::batch::{BatchConfig, Batched};
use elect_mysql::mysql_async::prelude::Queryable;
use elect_mysql::{MysqlConfig, MysqlStore};
use elect_tests::{election, unique_name, Kind, OwnedServer};

/// A store on a fresh database of the shared test server, its table created, and its URL.
async fn fresh() -> (MysqlStore, String) {
    let url = elect_tests::mysql()
        .await
        .mysql_database()
        .await
        .expect("a fresh test database");
    let store = MysqlStore::connect_url(&url)
        .await
        .expect("connect to the test MySQL");
    store.migrate().await.expect("create the lease table");
    (store, url)
}

async fn store() -> Batched<MysqlStore> {
    Batched::new(fresh().await.0, BatchConfig::default())
}

mod conformance {
    use super::*;
    elect_core::conformance_tests!(store: store(), settings: Settings::real_server());
}

/// Runs `sql` on a connection of its own to `url`.
async fn raw(url: &str, sql: &str) {
    let mut conn = elect_mysql::mysql_async::Conn::from_url(url)
        .await
        .expect("a raw connection");
    conn.query_drop(sql).await.expect("the raw statement");
    let _ = conn.disconnect().await;
}

/// One election of a batch holds a row a foreign client wrote (an invalid holder): that
/// election, and only it, fails, and the others of the same statements are granted and
/// renewed (`elect_core::conformance::a_corrupt_record_fails_only_its_own_election`; its forged
/// renewal goes through the read-back: the update changed one row fewer than it was given).
/// Nothing is written over the row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_row_fails_its_own_election_and_no_other_in_the_batch() {
    let (store, url) = fresh().await;
    let names: Vec<_> = (0..5)
        .map(|k| election(&format!("{}-{k}", unique_name("e"))))
        .collect();
    raw(
        &url,
        &format!(
            "INSERT INTO elect_leases (election, holder, term, expires_at, version) \
             VALUES ('{}', 'not valid!', 5, UTC_TIMESTAMP(6) + INTERVAL 1 HOUR, 1)",
            names[2].as_str()
        ),
    )
    .await;
    elect_core::conformance::a_corrupt_record_fails_only_its_own_election(&store, &names, 2).await;
    let mut conn = elect_mysql::mysql_async::Conn::from_url(&url)
        .await
        .unwrap();
    let kept: Option<(String, u64, u64)> = conn
        .exec_first(
            "SELECT holder, term, version FROM elect_leases WHERE election = ?",
            (names[2].as_str(),),
        )
        .await
        .unwrap();
    assert_eq!(kept, Some(("not valid!".into(), 5, 1)));
}

/// A renewal batch with one lease over and one taken over tells each lease apart (the
/// read-back path).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_batch_tells_each_lease_apart() {
    elect_core::conformance::a_renewal_batch_tells_each_lease_apart(&fresh().await.0).await;
}

/// The same election twice in one batch is granted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_election_twice_in_a_batch_is_granted_once() {
    elect_core::conformance::one_election_twice_in_a_batch_is_granted_once(&fresh().await.0).await;
}

/// A hundred electors on one `Batched` store, each leading its own election: the server sees
/// a few dozen statements, not several per acquisition and one per renewal. Counted on a
/// server of the test's own (`Questions`: every statement a client sent, this test's own
/// `SHOW STATUS` included).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_elections_share_a_few_statements() {
    let server = OwnedServer::start(Kind::Mysql)
        .await
        .expect("a MariaDB server");
    let mut admin = elect_mysql::mysql_async::Conn::from_url(format!("{}mysql", server.url()))
        .await
        .expect("connect as the administrator");
    admin.query_drop("CREATE DATABASE app").await.unwrap();
    let url = format!("{}app", server.url());
    // No named-lock waiters: a batched grant holds no lock for them to wait on.
    let config = MysqlConfig::new(&url).release_locks(false);
    let store = MysqlStore::connect(config).await.expect("connect");
    store.migrate().await.expect("create the lease table");
    let mut questions = async || -> u64 {
        let row: Option<(String, u64)> = admin
            .query_first("SHOW GLOBAL STATUS LIKE 'Questions'")
            .await
            .unwrap();
        row.expect("Questions").1
    };
    let before = questions().await;
    // A window of 100 ms: electors that start spread out on a loaded machine (each first
    // subscribes, one read each) still share batches.
    let config = BatchConfig::default().linger(Duration::from_millis(100));
    let batched = Batched::new(store, config);
    let electors = elect_tests::shards(&batched, 100, None, Duration::from_secs(3));
    for elector in &electors {
        elector.leading().await.expect("leads");
    }
    let leading = questions().await;
    // Three renewal rounds (every TTL/3) of 100 elections each.
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    for elector in &electors {
        assert!(elector.is_leader());
    }
    let after = questions().await;
    let (start, renewing) = (leading - before, after - leading);
    eprintln!("{start} statements until 100 elections led, {renewing} in the 3.5 s after");
    // Each elector subscribes to its election's feed before its first claim, and the feed
    // reads the row once then (100 statements); the acquisitions, one read and one
    // transaction each alone, share a few batches.
    assert!(start <= 160, "{start} statements until 100 elections led");
    // ≥ 300 renewals: one statement each would be 300.
    assert!(renewing <= 40, "{renewing} statements for 300 renewals");
    for elector in &electors {
        elector.shutdown().await.expect("shut down");
    }
}

/// Two processes' `Shards` campaign in the same 50 elections through the batch statements: the first leads
/// them all, hands them over whole on shutdown, the second leads each with a higher term.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_hand_over_many_elections() {
    elect_core::conformance::shards_hand_over_many_elections(
        std::sync::Arc::new(fresh().await.0),
        Settings::real_server(),
    )
    .await;
}

/// Three processes' balanced `Shards` share 12 elections: 4 each, every hand-over a
/// release; one leaves, the others lead 6 each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_balance_by_release() {
    elect_core::conformance::shards_balance_by_release(
        std::sync::Arc::new(fresh().await.0),
        Settings::real_server(),
    )
    .await;
}
