//! The shared conformance suite against a real Redis (through elect-tests), and the checks
//! that need a server of their own (killed and started again, junk written with a raw client).

use std::sync::Arc;
use std::time::Duration;

use elect_core::conformance::{DataLoss, Fixture, Junk, Settings};
use elect_redis::fred::prelude::*;
use elect_redis::{ElectionName, Error, LeaseStore, RedisConfig, RedisStore};
use elect_tests::{unique_name, Kind, OwnedServer};

async fn store() -> RedisStore {
    let server = elect_tests::redis().await;
    let config = RedisConfig::new(server.url()).key_prefix(unique_name("conformance"));
    RedisStore::connect(config)
        .await
        .expect("connect to the test Redis")
}

elect_core::conformance_tests!(store: store(), settings: Settings::real_server());

/// A Redis server of the check's own (no persistence: a kill forgets every lease), the store's
/// key prefix, and a raw client for junk.
struct RedisFixture {
    server: OwnedServer,
    prefix: String,
    keys: RedisStore,
    admin: Client,
}

impl RedisFixture {
    async fn start() -> RedisFixture {
        let server = OwnedServer::start(Kind::Redis)
            .await
            .expect("a Redis server of the test's own");
        let prefix = unique_name("fixture");
        let keys = RedisStore::connect(RedisConfig::new(server.url()).key_prefix(&prefix))
            .await
            .expect("connect");
        let admin = Builder::from_config(Config::from_url(&server.url()).expect("a valid URL"))
            .build()
            .expect("a client");
        admin.init().await.expect("connect the raw client");
        RedisFixture {
            server,
            prefix,
            keys,
            admin,
        }
    }
}

#[elect_core::async_trait]
impl Fixture for RedisFixture {
    async fn store(&self) -> Arc<dyn LeaseStore> {
        let config = RedisConfig::new(self.server.url())
            .key_prefix(&self.prefix)
            .command_timeout(Duration::from_millis(250));
        Arc::new(RedisStore::connect(config).await.expect("connect"))
    }

    async fn kill_server(&self) {
        self.server.kill().await.expect("kill the server");
    }

    async fn start_server(&self) {
        self.server.start_again().await.expect("start the server");
    }

    async fn write_junk(&self, election: &ElectionName, junk: Junk) -> bool {
        let key = self.keys.lease_key(election);
        let hour = Some(Expiration::PX(3_600_000));
        let fields: &[(&str, &str)] = match junk {
            Junk::InvalidHolder => &[("holder", "not valid!"), ("term", "3"), ("nonce", "1")],
            Junk::NonPositiveTerm => &[("holder", "x"), ("term", "-4"), ("nonce", "1")],
            Junk::MissingHolder => &[("term", "3"), ("nonce", "1")],
            Junk::WrongShape => {
                let _: () = self
                    .admin
                    .set(&key, "junk", hour, None, false)
                    .await
                    .expect("SET");
                return true;
            }
            _ => return false,
        };
        let _: () = self.admin.hset(&key, fields.to_vec()).await.expect("HSET");
        let _: () = self
            .admin
            .pexpire(&key, 3_600_000, None)
            .await
            .expect("PEXPIRE");
        true
    }

    async fn lose_data(&self, election: &ElectionName, loss: DataLoss) {
        match loss {
            DataLoss::Record => {
                let keys = vec![self.keys.lease_key(election), self.keys.term_key(election)];
                let deleted: i64 = self.admin.del(keys).await.expect("DEL");
                assert!(deleted >= 1, "the term counter at least existed");
            }
            _ => {
                let _: () = self.admin.flushall(false).await.expect("FLUSHALL");
            }
        }
    }

    async fn connect(&self, url: &str) -> Result<Arc<dyn LeaseStore>, Error> {
        let store = RedisStore::connect_url(url).await?;
        Ok(Arc::new(store))
    }

    fn unreachable_url(&self) -> String {
        "redis://127.0.0.1:1".into()
    }
}

elect_core::server_conformance_tests!(
    fixture: RedisFixture::start(),
    settings: Settings::real_server(),
);
