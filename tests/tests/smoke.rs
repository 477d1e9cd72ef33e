//! Each real server answers its real driver, and owned servers restart and are reached again.

use std::time::Duration;

use elect_tests::{unique_name, Kind, OwnedServer};
use fred::prelude::*;
use mongodb::bson::doc;
use mysql_async::prelude::Queryable;

async fn redis_client(url: &str) -> Client {
    let client = Builder::from_config(Config::from_url(url).expect("valid URL"))
        .with_connection_config(|c| c.connection_timeout = Duration::from_secs(5))
        .set_policy(ReconnectPolicy::new_constant(0, 50))
        .build()
        .expect("client");
    client.init().await.expect("connect to Redis");
    client
}

async fn mongo_client(url: &str) -> mongodb::Client {
    let mut options = mongodb::options::ClientOptions::parse(url)
        .await
        .expect("valid URL");
    options.server_selection_timeout = Some(Duration::from_secs(20));
    mongodb::Client::with_options(options).expect("client")
}

#[tokio::test]
async fn redis_answers_through_fred() {
    let server = elect_tests::redis().await;
    let client = redis_client(server.url()).await;
    let key = unique_name("smoke");
    let _: () = client.set(&key, "v", None, None, false).await.unwrap();
    let value: Option<String> = client.get(&key).await.unwrap();
    assert_eq!(value.as_deref(), Some("v"));
}

#[tokio::test]
async fn mysql_answers_through_mysql_async_in_its_own_database() {
    let server = elect_tests::mysql().await;
    let url = server.mysql_database().await.unwrap();
    let mut conn = mysql_async::Conn::from_url(&url).await.unwrap();
    let db: Option<String> = conn.query_first("SELECT DATABASE()").await.unwrap();
    assert!(
        db.unwrap().starts_with("elect_"),
        "a fresh database is selected"
    );
    conn.query_drop("CREATE TABLE t (n INT)").await.unwrap();
    conn.query_drop("INSERT INTO t VALUES (41), (1)")
        .await
        .unwrap();
    let sum: Option<i64> = conn.query_first("SELECT SUM(n) FROM t").await.unwrap();
    assert_eq!(sum, Some(42));
}

/// A MySQL connection through the fault proxy is cut by it: mysql_async's default would move
/// it to the server's Unix socket right after the TCP handshake (see `FaultProxy::in_front_of`),
/// and every MySQL partition of the chaos tests cut nothing.
#[tokio::test]
async fn a_mysql_connection_through_the_fault_proxy_is_cut_by_it() {
    let url = elect_tests::mysql().await.mysql_database().await.unwrap();
    let (proxy, proxied) = elect_tests::proxy::FaultProxy::in_front_of(&url)
        .await
        .unwrap();
    let mut conn = mysql_async::Conn::from_url(&proxied).await.unwrap();
    let one: Option<i64> = conn.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1));
    proxy.set(elect_tests::proxy::Mode::Blackhole);
    let cut = tokio::time::timeout(
        Duration::from_secs(1),
        conn.query_first::<i64, _>("SELECT 2"),
    )
    .await;
    assert!(
        cut.is_err(),
        "a query answered through a blackholed proxy: {cut:?}"
    );
    assert!(proxy.bytes().1 > 0, "the proxy dropped nothing");
}

#[tokio::test]
async fn mongo_answers_through_the_mongodb_driver() {
    let server = elect_tests::mongo().await;
    let client = mongo_client(server.url()).await;
    let coll = client
        .database("elect_smoke")
        .collection::<mongodb::bson::Document>(&unique_name("c"));
    coll.insert_one(doc! { "_id": "x", "n": 42 }).await.unwrap();
    let found = coll.find_one(doc! { "_id": "x" }).await.unwrap().unwrap();
    assert_eq!(found.get_i32("n").unwrap(), 42);
}

#[tokio::test]
async fn redis_restarts_without_persistence_and_fred_reconnects() {
    let server = OwnedServer::start(Kind::Redis).await.unwrap();
    let client = redis_client(&server.url()).await;
    let _: () = client.set("k", "v", None, None, false).await.unwrap();
    let pid = server.pid();
    server.restart().await.unwrap();
    assert_ne!(server.pid(), pid, "a new process");
    // The same client reconnects by itself; the data is gone (no persistence).
    let mut value = Err(None);
    for _ in 0..100 {
        match client.get::<Option<String>, _>("k").await {
            Ok(v) => {
                value = Ok(v);
                break;
            }
            Err(e) => value = Err(Some(e)),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        value.expect("reconnected"),
        None,
        "a restart without persistence loses data"
    );
}

#[tokio::test]
async fn mariadb_is_killed_and_started_again_with_its_data() {
    let server = OwnedServer::start(Kind::Mysql).await.unwrap();
    let url = format!("{}mysql", server.url());
    let mut conn = mysql_async::Conn::from_url(&url).await.unwrap();
    conn.query_drop("CREATE DATABASE keep").await.unwrap();
    conn.query_drop("CREATE TABLE keep.t (n INT)")
        .await
        .unwrap();
    conn.query_drop("INSERT INTO keep.t VALUES (7)")
        .await
        .unwrap();
    drop(conn);
    server.kill().await.unwrap();
    assert!(mysql_async::Conn::from_url(&url).await.is_err(), "killed");
    server.start_again().await.unwrap();
    let mut conn = mysql_async::Conn::from_url(&url).await.unwrap();
    let n: Option<i32> = conn.query_first("SELECT n FROM keep.t").await.unwrap();
    assert_eq!(n, Some(7), "data survives a kill (InnoDB recovery)");
}

#[tokio::test]
async fn mongo_wire_server_restarts_and_the_driver_reconnects() {
    let server = OwnedServer::start(Kind::Mongo).await.unwrap();
    let client = mongo_client(&server.url()).await;
    let coll = client
        .database("d")
        .collection::<mongodb::bson::Document>("c");
    coll.insert_one(doc! { "_id": 1 }).await.unwrap();
    server.restart().await.unwrap();
    let found = coll.find_one(doc! { "_id": 1 }).await.unwrap();
    assert!(
        found.is_some(),
        "the same client reads the persisted document after a restart"
    );
}

/// A commit PostgreSQL acknowledged survives a kill right after it: the servers run with
/// `fsync=off` (the WAL reaches the kernel at commit, which a killed process does not undo) but
/// not `synchronous_commit=off`, which acknowledges before the WAL is written at all and lost
/// the conformance fixture's freshly created table when the restart check killed the server
/// within the WAL writer's delay (CI, 2026-12-05).
#[tokio::test]
async fn postgres_is_killed_right_after_a_commit_and_keeps_it() {
    let server = OwnedServer::start(Kind::Postgres).await.unwrap();
    let url = server.url();
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    let driving = tokio::spawn(connection);
    client
        .batch_execute("CREATE TABLE keep (n INT); INSERT INTO keep VALUES (7)")
        .await
        .unwrap();
    server.kill().await.unwrap();
    let _ = driving.await;
    assert!(
        tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .is_err(),
        "killed"
    );
    server.start_again().await.unwrap();
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let n: i32 = client
        .query_one("SELECT n FROM keep", &[])
        .await
        .expect("the table created before the kill")
        .get(0);
    assert_eq!(n, 7, "an acknowledged commit survives a kill");
}
