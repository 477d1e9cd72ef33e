//! The shared conformance suite against a real MariaDB/MySQL (through elect-tests), each test
//! in a database of its own.

async fn store() -> elect_mysql::MysqlStore {
    let url = elect_tests::mysql()
        .await
        .mysql_database()
        .await
        .expect("a fresh test database");
    let store = elect_mysql::MysqlStore::connect_url(&url)
        .await
        .expect("connect to the test MySQL");
    store.migrate().await.expect("create the lease table");
    store
}

elect_core::conformance_tests!(
    store: store(),
    settings: elect_core::conformance::Settings::real_server(),
);
