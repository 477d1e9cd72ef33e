//! What the etcd test files share: the conformance settings for etcd's whole-second leases,
//! and a key prefix per test.

use std::time::Duration;

use elect_core::conformance::Settings;
use elect_etcd::{EtcdConfig, EtcdStore, Ttl};

/// etcd keeps lease time in whole seconds and sweeps expired leases every 500 ms: a TTL of
/// whole seconds, failover within the sweep after it, expiry seen up to 1.5 s late (the
/// rounding of `remaining` to a second, and the sweep). The random-fault run lasts ten TTLs, as
/// it does on the other servers (their TTL is 1 s): 10 s is barely three of etcd's, too short
/// to be sure of the three leaderships the check asks for (CI, 2026-12-04: two in five faults).
pub fn settings() -> Settings {
    Settings::real_server()
        .with_ttl(Ttl::new(Duration::from_secs(3)).expect("valid"))
        .with_failover_bound(Duration::from_millis(1500))
        .with_expiry_slack(Duration::from_millis(1500))
        .with_chaos_duration(Duration::from_secs(30))
}

/// A key prefix no other test uses.
pub fn prefix() -> String {
    format!("{}/", elect_tests::unique_name("elect"))
}

/// A store on the etcd `url` (found off the async runtime: it may start one), under a prefix
/// of its own. (Not every test file uses it.)
#[allow(dead_code)]
pub async fn store_on(url: fn() -> String) -> EtcdStore {
    let url = tokio::task::spawn_blocking(url)
        .await
        .expect("the test etcd starts");
    let config = EtcdConfig::from_url(&url)
        .expect("the test etcd's URL")
        .prefix(prefix());
    EtcdStore::connect(config)
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"))
}
