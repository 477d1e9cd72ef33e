//! MySQL-specific behaviour on a real server: many candidates, a missing table, hostile table
//! names, CLIENT_FOUND_ROWS, pooled connections, tables of another shape and migrations. What
//! every store does (restarts, junk rows, unreachable servers) is in `conformance.rs`.

use std::time::Duration;

use elect_mysql::mysql_async::prelude::Queryable;
use elect_mysql::{
    Acquire, Error, LeaseStore, MysqlConfig, MysqlStore, Release, Renewal, Term, Ttl,
};
use elect_tests::{claim, election, id};
use tokio::time::sleep;

async fn fresh_database() -> String {
    elect_tests::mysql().await.mysql_database().await.unwrap()
}

async fn migrated(url: &str) -> MysqlStore {
    let store = MysqlStore::connect_url(url).await.unwrap();
    store.migrate().await.unwrap();
    store
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_candidates_elect_exactly_one_leader() {
    let store = migrated(&fresh_database().await).await;
    elect_core::conformance::many_candidates_elect_exactly_one(std::sync::Arc::new(store), 50)
        .await;
}

#[tokio::test]
async fn a_missing_table_names_the_ddl_and_migrate() {
    let store = MysqlStore::connect_url(&fresh_database().await)
        .await
        .unwrap();
    let err = store
        .try_acquire(&claim(&election("e"), "a", Ttl::from_millis(1000).unwrap()))
        .await
        .unwrap_err();
    match &err {
        Error::NotSetUp { message, .. } => {
            assert!(message.contains("create_table_sql"), "{message}");
            assert!(message.contains("migrate()"), "{message}");
            assert!(!err.is_retryable());
        }
        other => panic!("expected NotSetUp, got {other:?}"),
    }
    store.migrate().await.unwrap();
    store.migrate().await.expect("migrate is idempotent");
    assert!(matches!(
        store
            .try_acquire(&claim(&election("e"), "a", Ttl::from_millis(1000).unwrap()))
            .await,
        Ok(Acquire::Granted(_))
    ));
}

#[tokio::test]
async fn hostile_table_names_are_refused_before_any_sql() {
    let url = fresh_database().await;
    for table in [
        "x; DROP TABLE y",
        "x` ; DROP TABLE y; --",
        "",
        "1abc",
        "a.b",
    ] {
        match MysqlStore::connect(MysqlConfig::new(&url).table(table)).await {
            Err(Error::InvalidConfig { message }) => assert!(message.contains("table name")),
            other => panic!("{table:?}: {other:?}"),
        }
    }
    let store = MysqlStore::connect(MysqlConfig::new(&url).table("custom_leases"))
        .await
        .unwrap();
    store.migrate().await.unwrap();
    assert!(matches!(
        store
            .try_acquire(&claim(&election("e"), "a", Ttl::from_millis(1000).unwrap()))
            .await,
        Ok(Acquire::Granted(_))
    ));
}

#[tokio::test]
async fn client_found_rows_does_not_change_the_answers() {
    for flag in ["false", "true"] {
        let url = format!("{}?client_found_rows={flag}", fresh_database().await);
        let store = migrated(&url).await;
        let e = election("rows");
        let ttl = Ttl::from_millis(5000).unwrap();
        let Acquire::Granted(lease) = store.try_acquire(&claim(&e, "a", ttl)).await.unwrap() else {
            panic!()
        };
        // Two renewals back to back, possibly within one microsecond of each other.
        assert!(matches!(
            store.renew(&lease).await.unwrap(),
            Renewal::Renewed(_)
        ));
        assert!(matches!(
            store.renew(&lease).await.unwrap(),
            Renewal::Renewed(_)
        ));
        let stale = elect_mysql::Lease {
            term: Term(lease.term.0 + 1),
            ..lease.clone()
        };
        assert_eq!(store.renew(&stale).await.unwrap(), Renewal::Lost, "{flag}");
        assert_eq!(
            store.release(&lease).await.unwrap(),
            Release::Released,
            "{flag}"
        );
        assert_eq!(
            store.release(&lease).await.unwrap(),
            Release::NotHeld,
            "{flag}"
        );
    }
}

/// Requests reuse pooled connections and keep their prepared statements: a follower's polls
/// must not cost a TCP + auth handshake each (mysql_async's default idle-connection TTL of
/// zero closed every returned connection) nor a re-prepare (COM_RESET_CONNECTION drops the
/// statement cache).
#[tokio::test]
async fn requests_reuse_one_connection_and_its_statements() {
    let store = migrated(&fresh_database().await).await;
    let session = async || -> (u64, u64) {
        let mut conn = store.pool().get_conn().await.unwrap();
        let id: Option<u64> = conn.query_first("SELECT CONNECTION_ID()").await.unwrap();
        let prepared: Option<(String, u64)> = conn
            .query_first("SHOW SESSION STATUS LIKE 'Com_stmt_prepare'")
            .await
            .unwrap();
        (id.unwrap(), prepared.unwrap().1)
    };
    let e = election("reuse");
    let mut ids = std::collections::BTreeSet::new();
    let mut prepares = 0;
    for _ in 0..10 {
        for _ in 0..3 {
            store.leader(&e).await.unwrap();
        }
        // Returned connections go back through the pool's recycler task.
        sleep(Duration::from_millis(10)).await;
        let (id, p) = session().await;
        ids.insert(id);
        prepares = prepares.max(p);
        sleep(Duration::from_millis(10)).await;
    }
    assert!(
        ids.len() <= 2,
        "{} connections for 10 sequential sessions",
        ids.len()
    );
    assert!(
        prepares <= 2,
        "{prepares} prepares on one connection for 30 identical reads"
    );
}

/// Issue 14, item 2: a hand-written table whose `expires_at` is a `DATETIME` (whole seconds)
/// cut every expiry by up to a second and gave two leaders; `DATE` gave two leaders for most
/// of every second. Tables elect cannot trust are refused before anything is granted, with
/// what differs and the DDL to use.
#[tokio::test]
async fn tables_not_of_elects_shape_are_refused_naming_what_differs() {
    let url = fresh_database().await;
    let mut conn = elect_mysql::mysql_async::Conn::from_url(&url)
        .await
        .unwrap();
    let ours = elect_mysql::create_table_sql("t");
    let cases: [(&str, String, &str); 6] = [
        (
            "DATETIME",
            ours.replace("DATETIME(6)", "DATETIME"),
            "DATETIME(6)",
        ),
        ("DATE", ours.replace("DATETIME(6)", "DATE"), "DATETIME(6)"),
        (
            "TIMESTAMP(6)",
            ours.replace("DATETIME(6)", "TIMESTAMP(6)"),
            "DATETIME(6)",
        ),
        (
            "case-insensitive names",
            ours.replace(
                "`holder` VARCHAR(128) CHARACTER SET ascii COLLATE ascii_bin",
                "`holder` VARCHAR(128) CHARACTER SET ascii COLLATE ascii_general_ci",
            ),
            "case-sensitive",
        ),
        (
            "no key on election",
            ours.replace("PRIMARY KEY (`election`)", "KEY (`election`)"),
            "key on `election`",
        ),
        (
            "INT term",
            ours.replace("`term` BIGINT UNSIGNED", "`term` INT"),
            "BIGINT",
        ),
    ];
    let ttl = Ttl::from_millis(1000).unwrap();
    for (what, ddl, named) in cases {
        conn.query_drop("DROP TABLE IF EXISTS t").await.unwrap();
        conn.query_drop(&ddl).await.unwrap();
        let store = MysqlStore::connect(MysqlConfig::new(&url).table("t"))
            .await
            .unwrap();
        for result in [
            store
                .try_acquire(&claim(&election("e"), "a", ttl))
                .await
                .map(drop),
            store.leader(&election("e")).await.map(drop),
        ] {
            match result {
                Err(Error::NotSetUp { message, .. }) => {
                    assert!(message.contains(named), "{what}: {message}");
                    assert!(
                        message.contains("create_table_sql(\"t\")"),
                        "{what}: {message}"
                    );
                }
                other => panic!("{what}: expected NotSetUp, got {other:?}"),
            }
        }
        let rows: Option<u64> = conn.query_first("SELECT COUNT(*) FROM t").await.unwrap();
        assert_eq!(rows, Some(0), "{what}: nothing was written");
    }
}

/// A table made from elect-mysql 0.1.0's DDL (no `nonce`) is refused with the way out, and
/// `migrate()` adds the column; rows written before read as nobody's claim.
#[tokio::test]
async fn migrate_adds_the_nonce_column_to_an_older_table() {
    let url = fresh_database().await;
    let mut conn = elect_mysql::mysql_async::Conn::from_url(&url)
        .await
        .unwrap();
    let old = elect_mysql::CREATE_TABLE_SQL
        .replace(",\n  `nonce` BIGINT UNSIGNED NOT NULL DEFAULT 0", "")
        .replace(",\n  `value` VARBINARY(1024) NULL", "");
    assert!(!old.contains("nonce") && !old.contains("value"), "{old}");
    conn.query_drop(old).await.unwrap();
    conn.query_drop(
        "INSERT INTO elect_leases VALUES ('e', 'old', 7, UTC_TIMESTAMP(6) + INTERVAL 1 HOUR, 1)",
    )
    .await
    .unwrap();
    let ttl = Ttl::from_millis(1000).unwrap();
    let store = MysqlStore::connect_url(&url).await.unwrap();
    match store.try_acquire(&claim(&election("e"), "old", ttl)).await {
        Err(Error::NotSetUp { message, .. }) => {
            assert!(message.contains("migrate()"), "{message}");
            assert!(message.contains("ADD COLUMN `nonce`"), "{message}");
        }
        other => panic!("expected NotSetUp, got {other:?}"),
    }
    store.migrate().await.unwrap();
    let store = MysqlStore::connect_url(&url).await.unwrap();
    match store
        .try_acquire(&claim(&election("e"), "old", ttl))
        .await
        .unwrap()
    {
        Acquire::Held(info) => assert_eq!((info.holder, info.term), (id("old"), Term(7))),
        other => panic!("a row of 0.1.0 is nobody's claim: {other:?}"),
    }
    // migrate() added the value column too: values are kept.
    let value = elect_mysql::LeaderValue::new("10.0.0.7:80").unwrap();
    let e = election("with-value");
    let granted = store
        .try_acquire(&claim(&e, "a", ttl).with_value(Some(value.clone())))
        .await
        .unwrap();
    assert!(matches!(granted, Acquire::Granted(_)));
    assert_eq!(store.leader(&e).await.unwrap().unwrap().value, Some(value));
}

/// A table made before the `value` column (with `nonce`) keeps working: leaders' values are not
/// stored (a warning says so once), and nothing else changes.
#[tokio::test]
async fn a_table_without_the_value_column_works_without_values() {
    let url = fresh_database().await;
    let mut conn = elect_mysql::mysql_async::Conn::from_url(&url)
        .await
        .unwrap();
    let ddl = elect_mysql::CREATE_TABLE_SQL.replace(",\n  `value` VARBINARY(1024) NULL", "");
    assert!(!ddl.contains("`value`"));
    conn.query_drop(ddl).await.unwrap();
    let store = MysqlStore::connect_url(&url).await.unwrap();
    let ttl = Ttl::from_millis(5000).unwrap();
    let e = election("no-value");
    let value = elect_mysql::LeaderValue::new("10.0.0.7:80").unwrap();
    let Acquire::Granted(lease) = store
        .try_acquire(&claim(&e, "a", ttl).with_value(Some(value)))
        .await
        .unwrap()
    else {
        panic!("vacant")
    };
    let info = store.leader(&e).await.unwrap().expect("a leads");
    assert_eq!((info.holder, info.value), (id("a"), None));
    match store.try_acquire(&claim(&e, "b", ttl)).await.unwrap() {
        Acquire::Held(info) => assert_eq!(info.value, None),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        store.renew(&lease).await.unwrap(),
        Renewal::Renewed(_)
    ));
    assert_eq!(store.release(&lease).await.unwrap(), Release::Released);
}

/// Issue 14, items 5 and 9, with `UPDATE`s from a connection of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_writes_never_take_terms_back_and_end_leases_within_a_renewal() {
    use elect_core::conformance::{foreign_writes_are_bounded, ForeignWrite, Settings};
    let url = fresh_database().await;
    let store = migrated(&url).await;
    let pool = elect_mysql::mysql_async::Pool::new(url.as_str());
    foreign_writes_are_bounded(
        std::sync::Arc::new(store),
        Settings::real_server(),
        |e, what| {
            let pool = pool.clone();
            async move {
                let set = match what {
                    ForeignWrite::LowerLiveTerm | ForeignWrite::LowerStoredTerm => {
                        "term = 1".to_owned()
                    }
                    ForeignWrite::RewriteHolder(who) => format!("holder = '{who}'"),
                    ForeignWrite::EndLease => {
                        "expires_at = UTC_TIMESTAMP(6) - INTERVAL 1 SECOND, version = version + 1"
                            .to_owned()
                    }
                    other => panic!("{other:?}"),
                };
                let mut conn = pool.get_conn().await.unwrap();
                conn.exec_drop(
                    format!("UPDATE elect_leases SET {set} WHERE election = ?"),
                    (e.as_str(),),
                )
                .await
                .unwrap();
                assert_eq!(conn.affected_rows(), 1, "{set}");
            }
        },
    )
    .await;
}

/// Issue 14, item 17: a URL without a database is a configuration error (exit 3 in the CLI),
/// not a failure at the first request.
#[tokio::test]
async fn a_url_without_a_database_is_a_configuration_error() {
    let server = elect_tests::mysql().await;
    let base = server.url().trim_end_matches('/').to_owned();
    for url in [
        base.clone(),
        format!("{base}/"),
        format!("{base}/?pool_min=1"),
    ] {
        match MysqlStore::connect_url(&url).await {
            Err(Error::InvalidConfig { message }) => {
                assert!(message.contains("names no database"), "{url}: {message}")
            }
            other => panic!("{url}: {other:?}"),
        }
    }
}

/// A store on the application's own mysql_async pool: the suite's feed and value checks pass,
/// and a pool whose connections select no database is a configuration error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_on_the_applications_own_pool_passes_the_feed_and_value_checks() {
    use elect_core::conformance::{self, Settings};
    use elect_mysql::mysql_async::{Opts, Pool};
    let url = fresh_database().await;
    migrated(&url).await;
    let pool = Pool::new(Opts::from_url(&url).unwrap());
    let store = || async {
        std::sync::Arc::new(
            MysqlStore::from_pool(pool.clone(), MysqlConfig::new(""))
                .await
                .unwrap(),
        ) as std::sync::Arc<dyn LeaseStore>
    };
    conformance::checks_for_another_path(store, Settings::real_server()).await;
    let server = elect_tests::mysql().await;
    let no_database = Pool::new(Opts::from_url(server.url()).unwrap());
    let error = MysqlStore::from_pool(no_database, MysqlConfig::new(""))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, Error::InvalidConfig { message } if message.contains("no database")),
        "{error}"
    );
}
