//! The shared conformance suite against the MongoDB-wire server elect-tests provides (a real
//! MongoDB through ELECT_MONGO_URL or testcontainers), each test in a database of its own.

async fn store() -> elect_mongo::MongoStore {
    let server = elect_tests::mongo().await;
    let config = elect_mongo::MongoConfig::new(server.url())
        .database(elect_tests::unique_name("conformance"));
    elect_mongo::MongoStore::connect(config)
        .await
        .expect("connect to the test MongoDB")
}

elect_core::conformance_tests!(
    store: store(),
    settings: elect_core::conformance::Settings::real_server(),
);
