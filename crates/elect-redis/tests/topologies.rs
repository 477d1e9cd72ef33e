//! The whole conformance suite on the topologies production Redis runs in, started on loopback
//! from the local `redis-server` by the test support (once per test process): a Cluster of
//! three masters with a replica each (`redis-cluster://`), and a master with two replicas
//! behind three Sentinels (`redis-sentinel://`).

use elect_core::conformance::Settings;
use elect_redis::{RedisConfig, RedisStore};
use elect_tests::topology::{shared_cluster, shared_sentinel, Topology};
use elect_tests::unique_name;

async fn store_on(topology: fn() -> &'static Topology, prefix: &str) -> RedisStore {
    let topology = tokio::task::spawn_blocking(topology)
        .await
        .expect("the topology starts");
    RedisStore::connect(RedisConfig::new(&topology.url).key_prefix(unique_name(prefix)))
        .await
        .unwrap_or_else(|e| panic!("connect to {}: {e}", topology.url))
}

mod cluster {
    use super::*;

    async fn store() -> RedisStore {
        store_on(shared_cluster, "cluster").await
    }

    elect_core::conformance_tests!(store: store(), settings: Settings::real_server());
}

mod sentinel {
    use super::*;

    async fn store() -> RedisStore {
        store_on(shared_sentinel, "sentinel").await
    }

    elect_core::conformance_tests!(store: store(), settings: Settings::real_server());
}
