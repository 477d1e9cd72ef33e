//! The shared conformance suite against a real MariaDB/MySQL (through elect-tests), each test
//! in a database of its own, and the checks that need a server of their own (killed and
//! started again, junk rows written with a raw connection).

use std::sync::Arc;
use std::time::Duration;

use elect_core::conformance::{DataLoss, Fixture, Junk, Settings};
use elect_mysql::mysql_async::prelude::Queryable;
use elect_mysql::{ElectionName, Error, LeaseStore, MysqlConfig, MysqlStore};
use elect_tests::{Kind, OwnedServer};

async fn store() -> MysqlStore {
    let url = elect_tests::mysql()
        .await
        .mysql_database()
        .await
        .expect("a fresh test database");
    let store = MysqlStore::connect_url(&url)
        .await
        .expect("connect to the test MySQL");
    store.migrate().await.expect("create the lease table");
    store
}

elect_core::conformance_tests!(store: store(), settings: Settings::real_server());

/// A MariaDB server of the check's own with a database `app` holding elect's table.
struct MysqlFixture {
    server: OwnedServer,
}

impl MysqlFixture {
    async fn start() -> MysqlFixture {
        let server = OwnedServer::start(Kind::Mysql)
            .await
            .expect("a MariaDB server of the test's own");
        let mut admin = elect_mysql::mysql_async::Conn::from_url(format!("{}mysql", server.url()))
            .await
            .expect("connect as the administrator");
        admin
            .query_drop("CREATE DATABASE app")
            .await
            .expect("CREATE DATABASE");
        let fixture = MysqlFixture { server };
        let store = MysqlStore::connect_url(&fixture.url())
            .await
            .expect("connect");
        store.migrate().await.expect("create the lease table");
        fixture
    }

    fn url(&self) -> String {
        format!("{}app", self.server.url())
    }
}

#[elect_core::async_trait]
impl Fixture for MysqlFixture {
    async fn store(&self) -> Arc<dyn LeaseStore> {
        let config = MysqlConfig::new(self.url()).timeout(Duration::from_millis(300));
        Arc::new(MysqlStore::connect(config).await.expect("connect"))
    }

    async fn kill_server(&self) {
        self.server.kill().await.expect("kill the server");
    }

    async fn start_server(&self) {
        self.server.start_again().await.expect("start the server");
    }

    async fn write_junk(&self, election: &ElectionName, junk: Junk) -> bool {
        let (holder, term) = match junk {
            Junk::InvalidHolder => ("'not valid!'", "5"),
            Junk::NonPositiveTerm => ("'a'", "-3"),
            Junk::MissingHolder => ("NULL", "5"),
            // Typed columns cannot hold a value of another shape.
            _ => return false,
        };
        let mut conn = elect_mysql::mysql_async::Conn::from_url(self.url())
            .await
            .expect("a raw connection");
        // Someone loosens elect's schema (still of its shape) to write what it forbids.
        conn.query_drop(
            "ALTER TABLE elect_leases MODIFY holder VARCHAR(128) CHARACTER SET ascii COLLATE ascii_bin \
             NULL, MODIFY term BIGINT NOT NULL",
        )
        .await
        .expect("ALTER TABLE");
        conn.query_drop(format!(
            "INSERT INTO elect_leases (election, holder, term, expires_at, version) \
             VALUES ('{}', {holder}, {term}, UTC_TIMESTAMP(6) + INTERVAL 1 HOUR, 1)",
            election.as_str()
        ))
        .await
        .expect("INSERT");
        true
    }

    async fn lose_data(&self, election: &ElectionName, loss: DataLoss) {
        let mut conn = elect_mysql::mysql_async::Conn::from_url(self.url())
            .await
            .expect("a raw connection");
        match loss {
            DataLoss::Record => {
                conn.exec_drop(
                    "DELETE FROM elect_leases WHERE election = ?",
                    (election.as_str(),),
                )
                .await
                .expect("DELETE");
                assert_eq!(conn.affected_rows(), 1, "the row existed");
            }
            _ => conn
                .query_drop("TRUNCATE TABLE elect_leases")
                .await
                .expect("TRUNCATE"),
        }
    }

    async fn connect(&self, url: &str) -> Result<Arc<dyn LeaseStore>, Error> {
        let store = MysqlStore::connect_url(url).await?;
        Ok(Arc::new(store))
    }

    fn unreachable_url(&self) -> String {
        "mysql://root@127.0.0.1:1/db".into()
    }
}

elect_core::server_conformance_tests!(
    fixture: MysqlFixture::start(),
    settings: Settings::real_server(),
);
