//! The shared conformance suite against the MongoDB-wire server elect-tests provides (a real
//! MongoDB through ELECT_MONGO_URL or testcontainers), each test in a database of its own, and
//! the checks that need a server of their own (killed and started again, junk documents
//! written with the driver's raw collection).

use std::sync::Arc;
use std::time::Duration;

use elect_core::conformance::{DataLoss, Fixture, Junk, Settings};
use elect_mongo::mongodb::bson::{doc, DateTime};
use elect_mongo::{ElectionName, Error, LeaseStore, MongoConfig, MongoStore};
use elect_tests::{unique_name, Kind, OwnedServer};

async fn store() -> MongoStore {
    let server = elect_tests::mongo().await;
    let config = MongoConfig::new(server.url()).database(unique_name("conformance"));
    MongoStore::connect(config)
        .await
        .expect("connect to the test MongoDB")
}

elect_core::conformance_tests!(store: store(), settings: Settings::real_server());

/// A MongoDB-wire server of the check's own, elect's database `app` on it, and a store whose
/// collection stands for a foreign client's.
struct MongoFixture {
    server: OwnedServer,
    raw: MongoStore,
}

impl MongoFixture {
    async fn start() -> MongoFixture {
        let server = OwnedServer::start(Kind::Mongo)
            .await
            .expect("a MongoDB-wire server of the test's own");
        let raw = MongoStore::connect(MongoConfig::new(server.url()).database("app"))
            .await
            .expect("connect");
        MongoFixture { server, raw }
    }
}

#[elect_core::async_trait]
impl Fixture for MongoFixture {
    async fn store(&self) -> Arc<dyn LeaseStore> {
        let config = MongoConfig::new(self.server.url())
            .database("app")
            .timeout(Duration::from_millis(300));
        Arc::new(MongoStore::connect(config).await.expect("connect"))
    }

    async fn kill_server(&self) {
        self.server.kill().await.expect("kill the server");
    }

    async fn start_server(&self) {
        self.server.start_again().await.expect("start the server");
    }

    async fn write_junk(&self, election: &ElectionName, junk: Junk) -> bool {
        let hour = DateTime::from_millis(DateTime::now().timestamp_millis() + 3_600_000);
        let id = election.as_str();
        let junk = match junk {
            Junk::InvalidHolder => {
                doc! { "_id": id, "holder": "not valid!", "term": 3_i64, "expires": hour }
            }
            Junk::NonPositiveTerm => {
                doc! { "_id": id, "holder": "a", "term": -3_i64, "expires": hour }
            }
            Junk::MissingHolder => doc! { "_id": id, "term": 3_i64, "expires": hour },
            Junk::WrongShape => doc! { "_id": id, "holder": 5, "term": 3_i64, "expires": hour },
            _ => return false,
        };
        self.raw
            .collection()
            .insert_one(junk)
            .await
            .expect("insert the junk");
        true
    }

    async fn lose_data(&self, election: &ElectionName, loss: DataLoss) {
        let leases = self.raw.collection();
        match loss {
            DataLoss::Record => {
                let deleted = leases
                    .delete_one(doc! { "_id": election.as_str() })
                    .await
                    .expect("delete the document");
                assert_eq!(deleted.deleted_count, 1, "the document existed");
            }
            _ => leases.drop().await.expect("drop the collection"),
        }
    }

    async fn connect(&self, url: &str) -> Result<Arc<dyn LeaseStore>, Error> {
        let store = MongoStore::connect_url(url).await?;
        Ok(Arc::new(store))
    }

    fn unreachable_url(&self) -> String {
        "mongodb://127.0.0.1:1/app?directConnection=true&serverSelectionTimeoutMS=2000".into()
    }
}

elect_core::server_conformance_tests!(
    fixture: MongoFixture::start(),
    settings: Settings::real_server(),
);
