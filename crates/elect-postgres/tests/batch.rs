//! The batched path on a real PostgreSQL: the whole conformance suite through
//! [`Batched`](elect_postgres::batch::Batched), a batch holding one corrupt row, the same
//! election twice in one batch, and the statements the server sees for many elections.

use std::time::Duration;

use elect_core::conformance::Settings;
use elect_postgres::batch::{BatchConfig, Batched};
use elect_postgres::PostgresStore;
use elect_tests::{election, unique_name, Kind, OwnedServer};

mod conformance_db {
    /// A store on a fresh database of the shared test server, its table created.
    pub async fn store() -> elect_postgres::PostgresStore {
        let url = elect_tests::postgres()
            .await
            .postgres_database()
            .await
            .expect("a fresh test database");
        let store = elect_postgres::PostgresStore::connect_url(&url)
            .await
            .expect("connect to the test PostgreSQL");
        store.migrate().await.expect("create the lease table");
        store
    }
}

async fn store() -> Batched<PostgresStore> {
    Batched::new(conformance_db::store().await, BatchConfig::default())
}

mod conformance {
    use super::*;
    elect_core::conformance_tests!(store: store(), settings: Settings::real_server());
}

/// Runs `sql` on a connection of its own to `url` and returns the first column of the first
/// row, if any, as text.
async fn raw(url: &str, sql: &str) -> Option<String> {
    let (client, connection) =
        elect_postgres::tokio_postgres::connect(url, elect_postgres::tokio_postgres::NoTls)
            .await
            .expect("a raw connection");
    let driving = tokio::spawn(connection);
    let rows = client.simple_query(sql).await.expect("the raw statement");
    drop(client);
    let _ = driving.await;
    rows.into_iter().find_map(|m| match m {
        elect_postgres::tokio_postgres::SimpleQueryMessage::Row(row) => {
            row.get(0).map(str::to_owned)
        }
        _ => None,
    })
}

/// One election of a batch holds a row a foreign client wrote (an invalid holder): that
/// election, and only it, fails, and the others of the same statement are granted and renewed
/// (`elect_core::conformance::a_corrupt_record_fails_only_its_own_election`; its forged renewal
/// matches no row). Nothing is written over the row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_row_fails_its_own_election_and_no_other_in_the_batch() {
    let url = elect_tests::postgres()
        .await
        .postgres_database()
        .await
        .expect("a fresh test database");
    let store = PostgresStore::connect_url(&url).await.expect("connect");
    store.migrate().await.expect("create the lease table");
    let names: Vec<_> = (0..5)
        .map(|k| election(&format!("{}-{k}", unique_name("e"))))
        .collect();
    raw(
        &url,
        &format!(
            "INSERT INTO elect_leases (election, holder, term, expires_at, version) \
             VALUES ('{}', 'not valid!', 5, clock_timestamp() + interval '1 hour', 1)",
            names[2].as_str()
        ),
    )
    .await;
    elect_core::conformance::a_corrupt_record_fails_only_its_own_election(&store, &names, 2).await;
    let kept = raw(
        &url,
        &format!(
            "SELECT holder || ' ' || term || ' ' || version FROM elect_leases \
             WHERE election = '{}'",
            names[2].as_str()
        ),
    )
    .await;
    assert_eq!(kept.as_deref(), Some("not valid! 5 1"));
}

/// A renewal batch with one lease over and one taken over tells each lease apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_batch_tells_each_lease_apart() {
    elect_core::conformance::a_renewal_batch_tells_each_lease_apart(&conformance_db::store().await)
        .await;
}

/// The same election twice in one batch is granted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_election_twice_in_a_batch_is_granted_once() {
    elect_core::conformance::one_election_twice_in_a_batch_is_granted_once(
        &conformance_db::store().await,
    )
    .await;
}

/// A hundred electors on one `Batched` store, each leading its own election: the server sees
/// a few dozen transactions, not one per acquisition and renewal. Counted on a server of the
/// test's own, from `pg_stat_database.xact_commit` (flushed by each backend at most once a
/// second: the count may miss the last second, which can only lower it — one statement each
/// would still be hundreds).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_elections_share_a_few_statements() {
    let server = OwnedServer::start(Kind::Postgres)
        .await
        .expect("a PostgreSQL server");
    let url = server.url();
    let store = PostgresStore::connect_url(&url).await.expect("connect");
    store.migrate().await.expect("create the lease table");
    let commits = || async {
        raw(
            &url,
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()",
        )
        .await
        .and_then(|n| n.parse::<u64>().ok())
        .expect("xact_commit")
    };
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let before = commits().await;
    let batched = Batched::new(store, BatchConfig::default());
    let electors = elect_tests::shards(&batched, 100, None, Duration::from_secs(3));
    for elector in &electors {
        elector.leading().await.expect("leads");
    }
    // Three renewal rounds (every TTL/3) of 100 elections each.
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    for elector in &electors {
        assert!(elector.is_leader());
    }
    let commits = commits().await - before;
    eprintln!("{commits} transactions for 100 elections over 3.5 s");
    // 100 acquisitions + ≥ 300 renewals; one statement each would be ≥ 400 transactions.
    assert!(
        commits <= 60,
        "{commits} transactions for 100 elections over 3.5 s"
    );
    for elector in &electors {
        elector.shutdown().await.expect("shut down");
    }
}

/// Two processes' `Shards` campaign in the same 50 elections through the batch statements: the first leads
/// them all, hands them over whole on shutdown, the second leads each with a higher term.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_hand_over_many_elections() {
    elect_core::conformance::shards_hand_over_many_elections(
        std::sync::Arc::new(conformance_db::store().await),
        Settings::real_server(),
    )
    .await;
}

/// Three processes' balanced `Shards` share 12 elections: 4 each, every hand-over a
/// release; one leaves, the others lead 6 each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_balance_by_release() {
    elect_core::conformance::shards_balance_by_release(
        std::sync::Arc::new(conformance_db::store().await),
        Settings::real_server(),
    )
    .await;
}
