//! The shared conformance suite against a real PostgreSQL (through elect-tests), each test in
//! a database of its own, and the checks that need a server of their own (killed and started
//! again, junk rows written with a raw connection).

use std::sync::Arc;
use std::time::Duration;

use elect_core::conformance::{DataLoss, Fixture, Junk, Settings};
use elect_postgres::{ElectionName, Error, LeaseStore, PostgresConfig, PostgresStore};
use elect_tests::{Kind, OwnedServer};

async fn store() -> PostgresStore {
    let url = elect_tests::postgres()
        .await
        .postgres_database()
        .await
        .expect("a fresh test database");
    let store = PostgresStore::connect_url(&url)
        .await
        .expect("connect to the test PostgreSQL");
    store.migrate().await.expect("create the lease table");
    store
}

elect_core::conformance_tests!(store: store(), settings: Settings::real_server());

/// Runs `sql` on a connection of its own to `url`.
pub async fn raw(url: &str, sql: &str) -> Result<u64, elect_postgres::tokio_postgres::Error> {
    let (client, connection) =
        elect_postgres::tokio_postgres::connect(url, elect_postgres::tokio_postgres::NoTls).await?;
    let driving = tokio::spawn(connection);
    let rows = client.execute(sql, &[]).await;
    drop(client);
    let _ = driving.await;
    rows
}

/// A PostgreSQL server of the check's own with a database `app` holding elect's table.
struct PostgresFixture {
    server: OwnedServer,
}

impl PostgresFixture {
    async fn start() -> PostgresFixture {
        let server = OwnedServer::start(Kind::Postgres)
            .await
            .expect("a PostgreSQL server of the test's own");
        raw(&server.url(), "CREATE DATABASE app")
            .await
            .expect("CREATE DATABASE");
        let fixture = PostgresFixture { server };
        let store = PostgresStore::connect_url(&fixture.url())
            .await
            .expect("connect");
        store.migrate().await.expect("create the lease table");
        fixture
    }

    fn url(&self) -> String {
        let url = self.server.url();
        let (server, _database) = url.rsplit_once('/').expect("a URL with a database");
        format!("{server}/app")
    }
}

#[elect_core::async_trait]
impl Fixture for PostgresFixture {
    async fn store(&self) -> Arc<dyn LeaseStore> {
        let config = PostgresConfig::new(self.url()).timeout(Duration::from_millis(300));
        Arc::new(PostgresStore::connect(config).await.expect("connect"))
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
        // Someone loosens elect's schema (still of its shape) to write what it forbids.
        raw(
            &self.url(),
            "ALTER TABLE elect_leases ALTER holder DROP NOT NULL",
        )
        .await
        .expect("ALTER TABLE");
        raw(
            &self.url(),
            &format!(
                "INSERT INTO elect_leases (election, holder, term, expires_at, version) \
                 VALUES ('{}', {holder}, {term}, clock_timestamp() + interval '1 hour', 1)",
                election.as_str()
            ),
        )
        .await
        .expect("INSERT");
        true
    }

    async fn lose_data(&self, election: &ElectionName, loss: DataLoss) {
        match loss {
            DataLoss::Record => {
                let deleted = raw(
                    &self.url(),
                    &format!(
                        "DELETE FROM elect_leases WHERE election = '{}'",
                        election.as_str()
                    ),
                )
                .await
                .expect("DELETE");
                assert_eq!(deleted, 1, "the row existed");
            }
            _ => {
                raw(&self.url(), "TRUNCATE TABLE elect_leases")
                    .await
                    .expect("TRUNCATE");
            }
        }
    }

    async fn connect(&self, url: &str) -> Result<Arc<dyn LeaseStore>, Error> {
        let store = PostgresStore::connect_url(url).await?;
        Ok(Arc::new(store))
    }

    fn unreachable_url(&self) -> String {
        "postgres://postgres@127.0.0.1:1/db".into()
    }
}

elect_core::server_conformance_tests!(
    fixture: PostgresFixture::start(),
    settings: Settings::real_server(),
);
