//! Helpers the wake-up and take-over tests share.

use elect_mysql::{MysqlConfig, MysqlStore};

/// A database of its own on the test server, as a URL.
pub async fn fresh_database() -> String {
    elect_tests::mysql().await.mysql_database().await.unwrap()
}

/// A store on `config` with its table created.
pub async fn store(config: MysqlConfig) -> MysqlStore {
    let store = MysqlStore::connect(config).await.unwrap();
    store.migrate().await.unwrap();
    store
}
