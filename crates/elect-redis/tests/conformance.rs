//! The shared conformance suite against a real Redis (through elect-tests).

async fn store() -> elect_redis::RedisStore {
    let server = elect_tests::redis().await;
    let config = elect_redis::RedisConfig::new(server.url())
        .key_prefix(elect_tests::unique_name("conformance"));
    elect_redis::RedisStore::connect(config)
        .await
        .expect("connect to the test Redis")
}

elect_core::conformance_tests!(
    store: store(),
    settings: elect_core::conformance::Settings::real_server(),
);
