//! The shared conformance suite through a real PgBouncer (Debian's) in transaction mode, in
//! front of the tests' PostgreSQL: every statement may run on another server connection, so
//! anything elect kept in a session (a prepared statement, a setting, an advisory lock) would
//! break here. Notices come from a direct connection to the server (`Listen::Url`), as the
//! README tells users behind such a pooler to do; one check runs with notices off.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use elect_core::conformance::Settings;
use elect_postgres::tokio_postgres::NoTls;
use elect_postgres::{Acquire, LeaseStore, Listen, PostgresConfig, PostgresStore, Ttl};
use elect_tests::pgbouncer::PgBouncer;

/// One PgBouncer per test process, in front of the shared server.
fn bouncer(upstream: &str) -> &'static PgBouncer {
    static BOUNCER: OnceLock<PgBouncer> = OnceLock::new();
    BOUNCER.get_or_init(|| PgBouncer::start(upstream).expect("PgBouncer in transaction mode"))
}

/// A fresh database, and URLs for it through PgBouncer and direct.
async fn database() -> (String, String) {
    let direct = elect_tests::postgres()
        .await
        .postgres_database()
        .await
        .expect("a fresh test database");
    let upstream = direct.clone();
    let through = tokio::task::spawn_blocking(move || bouncer(&upstream).url_for(&upstream))
        .await
        .unwrap();
    (through, direct)
}

async fn store() -> PostgresStore {
    let (through, direct) = database().await;
    let config = PostgresConfig::new(&through).listen(Listen::Url(direct));
    let store = PostgresStore::connect(config)
        .await
        .expect("connect through PgBouncer");
    store.migrate().await.expect("create the lease table");
    store
}

elect_core::conformance_tests!(store: store(), settings: Settings::real_server());

/// PgBouncer really pools by transaction here (its admin console says so), and a store with
/// notices off works through it alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbouncer_pools_by_transaction_and_a_store_without_notices_works_through_it() {
    let (through, _) = database().await;
    let admin = through.rsplit_once('/').unwrap().0.to_owned() + "/pgbouncer";
    let (client, connection) = elect_postgres::tokio_postgres::connect(&admin, NoTls)
        .await
        .expect("PgBouncer's admin console");
    tokio::spawn(connection);
    let config = client.simple_query("SHOW CONFIG").await.unwrap();
    let pool_mode = config.iter().find_map(|m| match m {
        elect_postgres::tokio_postgres::SimpleQueryMessage::Row(r)
            if r.get(0) == Some("pool_mode") =>
        {
            r.get(1).map(str::to_owned)
        }
        _ => None,
    });
    assert_eq!(pool_mode.as_deref(), Some("transaction"));
    let store = PostgresStore::connect(PostgresConfig::new(&through).listen(Listen::Off))
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let e = elect_tests::election("quiet");
    assert!(store.subscribe(&e).await.unwrap().is_none());
    let ttl = Ttl::new(Duration::from_secs(2)).unwrap();
    let store: Arc<dyn LeaseStore> = Arc::new(store);
    assert!(matches!(
        store
            .try_acquire(&elect_tests::claim(&e, "a", ttl))
            .await
            .unwrap(),
        Acquire::Granted(_)
    ));
}
