//! PostgreSQL-specific behaviour on a real server: many candidates, missing and foreign
//! tables, foreign writes (some through `psql`, the way an operator would make them), the
//! store's connections terminated mid-campaign, a blackholed connection, the listening
//! connection terminated, the application's own pool and client, bad credentials. What every
//! store does (restarts, junk rows, unreachable servers, data loss) is in `conformance.rs`.

use std::sync::Arc;
use std::time::Duration;

use elect_core::conformance::{Recorder, Settings};
use elect_postgres::tokio_postgres::NoTls;
use elect_postgres::{
    Acquire, Elector, Error, LeaseStore, Listen, PostgresConfig, PostgresStore, Release, Renewal,
    Term, Ttl,
};
use elect_tests::proxy::{FaultProxy, Mode};
use elect_tests::{claim, election, id};
use tokio::time::{sleep, timeout, Instant};

async fn fresh_database() -> String {
    elect_tests::postgres()
        .await
        .postgres_database()
        .await
        .unwrap()
}

async fn migrated(url: &str) -> PostgresStore {
    let store = PostgresStore::connect_url(url).await.unwrap();
    store.migrate().await.unwrap();
    store
}

/// A connection of the test's own (driven until the client is dropped).
async fn raw(url: &str) -> elect_postgres::tokio_postgres::Client {
    let (client, connection) = elect_postgres::tokio_postgres::connect(url, NoTls)
        .await
        .expect("a raw connection");
    tokio::spawn(connection);
    client
}

/// Runs `sql` with `psql`, as an operator would (and fails the test if psql fails).
fn psql(url: &str, sql: &str) -> String {
    let psql = elect_tests::local::find_postgres_binary("psql").expect("psql (postgresql-client)");
    let out = std::process::Command::new(psql)
        .args([url, "-v", "ON_ERROR_STOP=1", "-tAc", sql])
        .output()
        .expect("run psql");
    assert!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_candidates_elect_exactly_one_leader() {
    let store = migrated(&fresh_database().await).await;
    elect_core::conformance::many_candidates_elect_exactly_one(Arc::new(store), 50).await;
}

#[tokio::test]
async fn a_missing_table_names_the_ddl_and_migrate() {
    let url = fresh_database().await;
    let store = PostgresStore::connect_url(&url).await.unwrap();
    assert!(!store.table_exists().await.unwrap());
    let c = claim(
        &election("missing"),
        "a",
        Ttl::new(Duration::from_secs(2)).unwrap(),
    );
    match store.try_acquire(&c).await {
        Err(Error::NotSetUp { message, .. }) => {
            assert!(message.contains("does not exist"), "{message}");
            assert!(message.contains("create_table_sql"), "{message}");
            assert!(message.contains("migrate()"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    // migrate() creates it, and is idempotent, also when run side by side.
    let again = PostgresStore::connect_url(&url).await.unwrap();
    let (a, b) = tokio::join!(store.migrate(), again.migrate());
    a.unwrap();
    b.unwrap();
    store.migrate().await.unwrap();
    assert!(store.table_exists().await.unwrap());
    let fresh = PostgresStore::connect_url(&url).await.unwrap();
    assert!(matches!(
        fresh.try_acquire(&c).await.unwrap(),
        Acquire::Granted(_)
    ));
}

#[tokio::test]
async fn tables_not_of_elects_shape_are_refused_naming_what_differs() {
    let url = fresh_database().await;
    let client = raw(&url).await;
    let base = |expires: &str, key: &str| {
        format!(
            "(election TEXT NOT NULL {key}, holder TEXT NOT NULL, nonce BIGINT NOT NULL DEFAULT 0, \
             term BIGINT NOT NULL, expires_at {expires} NOT NULL, version BIGINT NOT NULL DEFAULT 0, \
             value BYTEA)"
        )
    };
    for (name, shape, expect) in [
        (
            "t_secs",
            base("TIMESTAMPTZ(0)", "PRIMARY KEY"),
            "fewer than 6 fractional digits",
        ),
        (
            "t_local",
            base("TIMESTAMP", "PRIMARY KEY"),
            "not TIMESTAMPTZ",
        ),
        (
            "t_nokey",
            base("TIMESTAMPTZ", ""),
            "no primary key or unique index",
        ),
        (
            "t_int",
            "(election TEXT PRIMARY KEY, holder TEXT NOT NULL, nonce BIGINT NOT NULL DEFAULT 0, \
             term INTEGER NOT NULL, expires_at TIMESTAMPTZ NOT NULL, version BIGINT NOT NULL \
             DEFAULT 0, value BYTEA)"
                .to_owned(),
            "\"term\" is integer",
        ),
        (
            "t_extra",
            "(election TEXT PRIMARY KEY, holder TEXT NOT NULL, nonce BIGINT NOT NULL DEFAULT 0, \
             term BIGINT NOT NULL, expires_at TIMESTAMPTZ NOT NULL, version BIGINT NOT NULL \
             DEFAULT 0, value BYTEA, owner TEXT NOT NULL)"
                .to_owned(),
            "extra column \"owner\"",
        ),
        (
            "t_novalue",
            "(election TEXT PRIMARY KEY, holder TEXT NOT NULL)".to_owned(),
            "\"value\" is missing",
        ),
    ] {
        client
            .batch_execute(&format!("CREATE TABLE \"{name}\" {shape}"))
            .await
            .unwrap();
        let store = PostgresStore::connect(PostgresConfig::new(&url).table(name))
            .await
            .unwrap();
        let c = claim(
            &election("shape"),
            "a",
            Ttl::new(Duration::from_secs(2)).unwrap(),
        );
        match store.try_acquire(&c).await {
            Err(Error::NotSetUp { message, .. }) => {
                assert!(message.contains(expect), "{name}: {message}")
            }
            other => panic!("{name}: {other:?}"),
        }
        assert!(
            matches!(store.migrate().await, Err(Error::NotSetUp { .. })),
            "{name}: migrate must not accept (nor alter) a foreign table"
        );
    }
    // A VARCHAR(255) holder and a renamed table of elect's shape are fine.
    client
        .batch_execute(
            &elect_postgres::create_table_sql("Renamed")
                .replace("\"holder\" TEXT", "\"holder\" VARCHAR(255)"),
        )
        .await
        .unwrap();
    let store = PostgresStore::connect(PostgresConfig::new(&url).table("Renamed"))
        .await
        .unwrap();
    let c = claim(
        &election("renamed"),
        "a",
        Ttl::new(Duration::from_secs(2)).unwrap(),
    );
    assert!(matches!(
        store.try_acquire(&c).await.unwrap(),
        Acquire::Granted(_)
    ));
}

/// Foreign `UPDATE`s (lowering terms, rewriting the holder, ending the lease) never take terms
/// back and end leases within a renewal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_writes_never_take_terms_back_and_end_leases_within_a_renewal() {
    use elect_core::conformance::{foreign_writes_are_bounded, ForeignWrite};
    let url = fresh_database().await;
    let store = migrated(&url).await;
    let client = Arc::new(raw(&url).await);
    foreign_writes_are_bounded(Arc::new(store), Settings::real_server(), |e, what| {
        let client = client.clone();
        async move {
            let set = match what {
                ForeignWrite::LowerLiveTerm | ForeignWrite::LowerStoredTerm => {
                    "term = 1".to_owned()
                }
                ForeignWrite::RewriteHolder(who) => format!("holder = '{who}'"),
                ForeignWrite::EndLease => {
                    "expires_at = clock_timestamp() - interval '1 second'".to_owned()
                }
                other => panic!("{other:?}"),
            };
            let n = client
                .execute(
                    &format!("UPDATE elect_leases SET {set} WHERE election = $1"),
                    &[&e.as_str()],
                )
                .await
                .unwrap();
            assert_eq!(n, 1, "{set}");
        }
    })
    .await;
}

/// Rows an operator writes with `psql` that elect cannot read are typed errors naming the row;
/// a term at BIGINT's limit is "exhausted", not a wrapped term; foreign notices on the channel
/// are ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_and_notices_written_with_psql_are_typed_errors_or_ignored() {
    let url = fresh_database().await;
    let store = migrated(&url).await;
    let ttl = Ttl::new(Duration::from_secs(2)).unwrap();
    psql(&url, "ALTER TABLE elect_leases ALTER holder DROP NOT NULL");
    for (name, values) in [
        (
            "bad-holder",
            "'not valid!', 0, 5, clock_timestamp() + interval '1 hour'",
        ),
        (
            "null-holder",
            "NULL, 0, 5, clock_timestamp() + interval '1 hour'",
        ),
        (
            "zero-term",
            "'a', 0, 0, clock_timestamp() + interval '1 hour'",
        ),
        (
            "long-value",
            "'a', 0, 5, clock_timestamp() + interval '1 hour'",
        ),
        (
            "max-term",
            "'a', 0, 9223372036854775807, clock_timestamp() - interval '1 hour'",
        ),
    ] {
        psql(
            &url,
            &format!(
                "INSERT INTO elect_leases (election, holder, nonce, term, expires_at) \
                 VALUES ('{name}', {values})"
            ),
        );
    }
    psql(
        &url,
        "UPDATE elect_leases SET value = convert_to(repeat('v', 2000), 'UTF8') \
         WHERE election = 'long-value'",
    );
    for name in [
        "bad-holder",
        "null-holder",
        "zero-term",
        "long-value",
        "max-term",
    ] {
        let e = election(name);
        match store.try_acquire(&claim(&e, "b", ttl)).await {
            Err(Error::CorruptRecord { key, message, .. }) => {
                assert!(key.contains(name), "{name}: {key}");
                if name == "max-term" {
                    assert!(message.contains("exhausted"), "{message}");
                }
            }
            other => panic!("{name}: {other:?}"),
        }
        if name != "max-term" {
            assert!(
                matches!(store.leader(&e).await, Err(Error::CorruptRecord { .. })),
                "{name}"
            );
        }
    }
    // A foreign NOTIFY on elect's channel: a waiter's feed is not woken for nothing, and
    // elect's own notices still arrive.
    let e = election("notices");
    let granted = match store.try_acquire(&claim(&e, "a", ttl)).await.unwrap() {
        Acquire::Granted(lease) => lease,
        other => panic!("{other:?}"),
    };
    let mut feed = store.subscribe(&e).await.unwrap().expect("a feed");
    for junk in [
        "hello",
        "r notices extra",
        "g notices 0 a 5",
        "r not valid!",
    ] {
        psql(&url, &format!("NOTIFY elect_leases, '{junk}'"));
    }
    assert!(
        timeout(Duration::from_millis(500), feed.changed())
            .await
            .is_err(),
        "a foreign notice woke the feed"
    );
    assert_eq!(store.release(&granted).await.unwrap(), Release::Released);
    assert!(timeout(Duration::from_secs(5), feed.changed())
        .await
        .unwrap());
}

/// Every connection of the campaign (pooled ones and the listener) terminated by an operator,
/// again and again: the leader may lose its lease, but leadership never overlaps, terms rise,
/// and someone leads again within a few TTLs of the last termination.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_backends_mid_campaign_are_survived() {
    let url = fresh_database().await;
    let store = migrated(&url).await;
    let admin = raw(&url).await;
    let ttl = Duration::from_secs(2);
    let e = election("terminated");
    let recorder = Recorder::new();
    let mut electors = Vec::new();
    for who in ["a", "b", "c"] {
        // Each its own store: its own pool and listener, as separate processes have.
        let store =
            PostgresStore::connect(PostgresConfig::new(&url).timeout(Duration::from_millis(500)))
                .await
                .unwrap();
        let builder = Elector::builder(store, e.clone())
            .candidate(id(who))
            .ttl(ttl);
        recorder.track(id(who), builder.events());
        electors.push(builder.start().unwrap());
    }
    recorder
        .elected_since(0, None, ttl * 3)
        .await
        .expect("someone leads");
    let terminate = "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                     WHERE datname = current_database() AND application_name = 'elect' \
                     AND pid <> pg_backend_pid()";
    let mut killed = 0i64;
    for _ in 0..6 {
        let rows = admin.query(terminate, &[]).await.unwrap();
        killed += rows[0].get::<_, i64>(0);
        sleep(ttl / 2).await;
    }
    assert!(killed >= 6, "only {killed} backends were terminated");
    let mark = recorder.mark();
    sleep(ttl * 2).await;
    let leaders = electors.iter().filter(|e| e.is_leader()).count();
    assert_eq!(leaders, 1, "one leader after the terminations");
    for elector in electors {
        let _ = elector.shutdown().await;
    }
    eprintln!(
        "{killed} backends terminated; {} leaderships since",
        recorder.intervals().len().saturating_sub(mark)
    );
    recorder.check();
    drop(store);
}

/// A leader whose connection is blackholed (through a fault proxy: no FIN, no RST, no bytes)
/// steps down while its lease is still live on the server: before anyone else can be granted
/// it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blackholed_leader_steps_down_before_the_server_side_expiry() {
    let url = fresh_database().await;
    migrated(&url).await;
    let (proxy, via) = FaultProxy::in_front_of(&url).await.unwrap();
    let store =
        PostgresStore::connect(PostgresConfig::new(&via).timeout(Duration::from_millis(500)))
            .await
            .unwrap();
    let direct = raw(&url).await;
    let ttl = Duration::from_secs(2);
    let e = election("blackholed");
    let elector = Elector::builder(store, e.clone())
        .candidate(id("a"))
        .ttl(ttl)
        .start()
        .unwrap();
    let guard = timeout(ttl * 3, elector.leading()).await.unwrap().unwrap();
    sleep(ttl / 2).await;
    proxy.set(Mode::Blackhole);
    let cut = Instant::now();
    // No renewal reaches the server from now on: its expiry is fixed. Read it as time left
    // by the server's clock; the expiry comes no earlier than the query's start plus that.
    sleep(Duration::from_millis(100)).await;
    let asked = Instant::now();
    let rows = direct
        .query(
            "SELECT (extract(epoch FROM expires_at - clock_timestamp()) * 1000000)::bigint, holder \
             FROM elect_leases WHERE election = $1",
            &[&e.as_str()],
        )
        .await
        .unwrap();
    let left_us: i64 = rows[0].get(0);
    let holder: String = rows[0].get(1);
    assert_eq!(holder, "a");
    let server_expiry = asked + Duration::from_micros(left_us.max(0) as u64);
    timeout(ttl * 2, guard.lost())
        .await
        .expect("the leader steps down");
    // The guard's deadline is when it stopped believing (`is_leading()` answers false from
    // then on, whenever the step-down is reported).
    let deadline = guard.deadline();
    assert!(
        deadline < server_expiry,
        "the leader believed until {:?} after the cut, the server's lease ended {:?} after it",
        deadline - cut,
        server_expiry - cut
    );
    eprintln!(
        "believed until {:?} after the cut, {:?} before the server's expiry",
        deadline - cut,
        server_expiry - deadline
    );
    proxy.set(Mode::Pass);
    let _ = elector.shutdown().await;
}

/// The listening connection terminated by an operator ends the feed (waiters fall back to
/// their expiry); a new subscription listens again and sees releases.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_listener_ends_its_feeds_and_a_new_one_listens() {
    let url = fresh_database().await;
    let store = migrated(&url).await;
    let admin = raw(&url).await;
    let e = election("listener");
    let mut feed = store.subscribe(&e).await.unwrap().expect("a feed");
    let rows = admin
        .query(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname = current_database() AND query LIKE 'LISTEN%'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows[0].get::<_, i64>(0), 1, "one listening connection");
    let ended = timeout(Duration::from_secs(10), async {
        while feed.changed().await {}
    })
    .await;
    assert!(ended.is_ok(), "the feed did not end");
    let mut again = store.subscribe(&e).await.unwrap().expect("a feed");
    let ttl = Ttl::new(Duration::from_secs(5)).unwrap();
    let Acquire::Granted(lease) = store.try_acquire(&claim(&e, "a", ttl)).await.unwrap() else {
        panic!("granted")
    };
    again.mark_seen();
    assert_eq!(store.release(&lease).await.unwrap(), Release::Released);
    assert!(
        timeout(Duration::from_secs(5), again.changed())
            .await
            .unwrap(),
        "the new listener hears the release"
    );
}

/// Stores on the application's own pool and client pass the feed and value checks; with
/// notices off there is no feed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_on_the_applications_own_pool_and_client_pass_the_feed_and_value_checks() {
    use elect_core::conformance::checks_for_another_path;
    use elect_postgres::deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
    let url = fresh_database().await;
    migrated(&url).await;
    let manager = Manager::from_config(
        url.parse().unwrap(),
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let pool = Pool::builder(manager).max_size(2).build().unwrap();
    let from_pool = || async {
        Arc::new(
            PostgresStore::from_pool(pool.clone(), PostgresConfig::new(&url))
                .await
                .unwrap(),
        ) as Arc<dyn LeaseStore>
    };
    checks_for_another_path(from_pool, Settings::real_server()).await;
    let client = Arc::new(raw(&url).await);
    let from_client = || async {
        Arc::new(
            PostgresStore::from_client(client.clone(), PostgresConfig::new(&url))
                .await
                .unwrap(),
        ) as Arc<dyn LeaseStore>
    };
    checks_for_another_path(from_client, Settings::real_server()).await;
    let quiet =
        PostgresStore::from_client(client.clone(), PostgresConfig::new("").listen(Listen::Off))
            .await
            .unwrap();
    assert!(quiet.subscribe(&election("quiet")).await.unwrap().is_none());
    // A stale lease changes nothing on the application's client either.
    let ttl = Ttl::new(Duration::from_secs(2)).unwrap();
    let lease = claim(&election("stale"), "a", ttl).granted(Term(1));
    assert_eq!(quiet.renew(&lease).await.unwrap(), Renewal::Lost);
    assert_eq!(quiet.release(&lease).await.unwrap(), Release::NotHeld);
}

/// Bad credentials and a missing database are `NotSetUp` (the elector does not retry them as if
/// the server were down), and no password is ever shown.
#[tokio::test]
async fn bad_credentials_and_missing_databases_are_not_set_up_and_never_show_the_password() {
    let url = fresh_database().await;
    let (server, _) = url.rsplit_once('/').unwrap();
    let port = server.rsplit(':').next().unwrap();
    for bad in [
        format!("postgres://nobody:s3cretpw@127.0.0.1:{port}/postgres"),
        format!("postgres://postgres:s3cretpw@127.0.0.1:{port}/no_such_database"),
        format!("host=127.0.0.1 port={port} user=nobody password=s3cretpw dbname=postgres"),
    ] {
        let error = PostgresStore::connect_url(&bad).await.unwrap_err();
        assert!(matches!(error, Error::NotSetUp { .. }), "{error:?}");
        assert!(!error.to_string().contains("s3cretpw"), "{error}");
        assert!(!format!("{error:?}").contains("s3cretpw"), "{error:?}");
    }
    let error = PostgresStore::connect_url("postgres://u:s3cretpw@/db")
        .await
        .unwrap_err();
    assert!(matches!(error, Error::InvalidConfig { .. }), "{error:?}");
    assert!(!error.to_string().contains("s3cretpw"), "{error}");
    let config = PostgresConfig::new(format!("postgres://u:s3cretpw@127.0.0.1:{port}/db"));
    assert!(!format!("{config:?}").contains("s3cretpw"));
}

/// A lease whose term is above BIGINT's range was never granted by the table: renewing or
/// releasing it changes nothing, even against a row at BIGINT's limit with the same holder and
/// nonce (a saturating conversion would have matched that row).
#[tokio::test]
async fn a_lease_with_a_term_beyond_bigint_matches_no_row() {
    let url = fresh_database().await;
    let store = migrated(&url).await;
    let nonce = elect_postgres::Nonce::new(42).unwrap();
    psql(
        &url,
        "INSERT INTO elect_leases (election, holder, nonce, term, expires_at) \
         VALUES ('edge', 'a', 42, 9223372036854775807, clock_timestamp() + interval '1 hour')",
    );
    let mut c = claim(
        &election("edge"),
        "a",
        Ttl::new(Duration::from_secs(2)).unwrap(),
    );
    c.nonce = nonce;
    let forged = c.granted(Term(u64::MAX));
    assert_eq!(store.renew(&forged).await.unwrap(), Renewal::Lost);
    assert_eq!(store.release(&forged).await.unwrap(), Release::NotHeld);
    let left = psql(
        &url,
        "SELECT expires_at > clock_timestamp() + interval '50 minutes' FROM elect_leases \
         WHERE election = 'edge'",
    );
    assert_eq!(left.trim(), "t", "the row was not touched");
    // The real lease (its term as stored) is this claim's: renewing it works.
    let real = c.granted(Term(i64::MAX as u64));
    assert!(matches!(
        store.renew(&real).await.unwrap(),
        Renewal::Renewed(_)
    ));
}

/// One statement per question: a candidate that asks after the lease ended takes it in one
/// round trip, and one that asks while it is held is told in one — with no row lock taken (a
/// foreign transaction holding the row locked does not hold the question up). Counted by
/// `pg_stat_statements` in a database of the test's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ended_lease_is_taken_in_one_statement_and_a_live_one_read_without_a_row_lock() {
    let url = fresh_database().await;
    let (a, b) = (migrated(&url).await, migrated(&url).await);
    let counter = raw(&url).await;
    counter
        .batch_execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .await
        .unwrap();
    let statements = || async {
        counter
            .query_one(
                "SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_statements \
                 WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) \
                 AND query ILIKE '%elect_leases%' AND query NOT ILIKE '%pg_stat_statements%'",
                &[],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
    };
    let e = election("one-statement");
    let (short, long) = (
        Ttl::new(Duration::from_millis(300)).unwrap(),
        Ttl::new(Duration::from_secs(10)).unwrap(),
    );
    let granted = a.try_acquire(&claim(&e, "a", short)).await.unwrap();
    assert!(matches!(granted, Acquire::Granted(_)), "{granted:?}");
    // b's first question also checks the table's shape, once.
    let held = b.try_acquire(&claim(&e, "b", long)).await.unwrap();
    assert!(matches!(held, Acquire::Held(_)), "{held:?}");

    let before = statements().await;
    let held = b.try_acquire(&claim(&e, "b", long)).await.unwrap();
    assert!(
        matches!(held, Acquire::Held(ref l) if l.holder.as_str() == "a"),
        "{held:?}"
    );
    assert_eq!(
        statements().await - before,
        1,
        "a held lease is told in one statement"
    );

    let locker = raw(&url).await;
    locker
        .batch_execute("BEGIN; SELECT * FROM elect_leases FOR UPDATE")
        .await
        .unwrap();
    let held = timeout(Duration::from_secs(2), b.try_acquire(&claim(&e, "b", long)))
        .await
        .expect("a question about a held lease waited for a row lock")
        .unwrap();
    assert!(matches!(held, Acquire::Held(_)), "{held:?}");
    locker.batch_execute("ROLLBACK").await.unwrap();

    sleep(Duration::from_millis(400)).await;
    let before = statements().await;
    let granted = b.try_acquire(&claim(&e, "b", long)).await.unwrap();
    assert!(matches!(granted, Acquire::Granted(_)), "{granted:?}");
    assert_eq!(
        statements().await - before,
        1,
        "an ended lease is taken in one statement"
    );
}
