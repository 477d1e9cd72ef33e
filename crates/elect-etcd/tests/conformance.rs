//! The shared conformance suite against a real etcd (one member; through elect-tests), each
//! test process under a key prefix of its own, and the checks that need an etcd of their own
//! (killed and started again, junk written with a raw client, keys deleted behind elect's
//! back).

use std::sync::Arc;
use std::time::Duration;

use elect_core::conformance::{DataLoss, Fixture, Junk};
use elect_etcd::etcd_client::{Client, DeleteOptions};
use elect_etcd::{ElectionName, Error, EtcdConfig, EtcdStore, LeaseStore};
use elect_tests::etcd::OwnedEtcd;

mod common;
use common::{prefix, settings};

async fn store() -> EtcdStore {
    common::store_on(elect_tests::etcd::shared_url).await
}

elect_core::conformance_tests!(store: store(), settings: settings());

/// An etcd of the check's own (in a container with `ELECT_TEST_SERVERS=containers`).
struct EtcdFixture {
    /// Used on blocking threads: a container's controls run a runtime of their own.
    etcd: Arc<std::sync::Mutex<OwnedEtcd>>,
    url: String,
    prefix: String,
}

impl EtcdFixture {
    async fn start() -> EtcdFixture {
        let etcd = tokio::task::spawn_blocking(OwnedEtcd::start)
            .await
            .expect("start-up thread")
            .expect("an etcd of the test's own");
        let url = etcd.url();
        EtcdFixture {
            etcd: Arc::new(std::sync::Mutex::new(etcd)),
            url,
            prefix: prefix(),
        }
    }

    async fn raw(&self) -> Client {
        let endpoint = self.url.trim_start_matches("etcd://").to_owned();
        Client::connect([endpoint], None)
            .await
            .expect("a raw etcd client")
    }

    fn key(&self, election: &ElectionName) -> String {
        format!("{}{}", self.prefix, election.as_str())
    }
}

#[elect_core::async_trait]
impl Fixture for EtcdFixture {
    async fn store(&self) -> Arc<dyn LeaseStore> {
        let config = EtcdConfig::from_url(&self.url)
            .expect("URL")
            .prefix(self.prefix.clone())
            .timeout(Duration::from_millis(500));
        Arc::new(EtcdStore::connect(config).await.expect("connect"))
    }

    async fn kill_server(&self) {
        let etcd = self.etcd.clone();
        tokio::task::spawn_blocking(move || etcd.lock().unwrap().kill())
            .await
            .expect("a blocking thread")
            .expect("kill etcd");
    }

    async fn start_server(&self) {
        let etcd = self.etcd.clone();
        tokio::task::spawn_blocking(move || etcd.lock().unwrap().start_again())
            .await
            .expect("a blocking thread")
            .expect("etcd started again and healthy");
    }

    async fn write_junk(&self, election: &ElectionName, junk: Junk) -> bool {
        let value: &[u8] = match junk {
            Junk::InvalidHolder => b"elect-lease v1\nholder not valid!\nnonce 1\nttl_ms 3000\n",
            Junk::MissingHolder => b"elect-lease v1\nnonce 1\nttl_ms 3000\n",
            Junk::WrongShape => b"{\"leader\": 7}",
            // The term is the key's create revision: etcd makes it, nobody can write a bad
            // one.
            _ => return false,
        };
        self.raw()
            .await
            .put(self.key(election), value, None)
            .await
            .expect("put junk");
        true
    }

    async fn lose_data(&self, election: &ElectionName, loss: DataLoss) {
        let mut raw = self.raw().await;
        match loss {
            DataLoss::Record => {
                let deleted = raw
                    .delete(self.key(election), None)
                    .await
                    .expect("delete the key");
                // A released election has no key left (the release revoked its lease, which
                // deleted it): nothing to lose then.
                assert!(deleted.deleted() <= 1, "one key per election");
            }
            _ => {
                raw.delete(
                    self.prefix.clone(),
                    Some(DeleteOptions::new().with_prefix()),
                )
                .await
                .expect("delete the prefix");
            }
        }
    }

    async fn connect(&self, url: &str) -> Result<Arc<dyn LeaseStore>, Error> {
        let config = EtcdConfig::from_url(url)?.timeout(Duration::from_secs(2));
        Ok(Arc::new(EtcdStore::connect(config).await?))
    }

    fn unreachable_url(&self) -> String {
        "etcd://127.0.0.1:1".into()
    }
}

elect_core::server_conformance_tests!(fixture: EtcdFixture::start(), settings: settings());
