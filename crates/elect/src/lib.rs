#![doc = include_str!("../README.md")]
//!
//! # Layout
//!
//! - the root: everything from `elect-core`, [`connect`], [`open`], [`Coordinator`],
//!   [`Options`];
//! - `redis`, `mysql`, `mongo`, `postgres`, `etcd`, `raft`: the coordinator crates, each behind its
//!   feature.
#![deny(missing_docs)]
#![warn(missing_debug_implementations, unreachable_pub)]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

use std::sync::Arc;

pub use elect_core::*;

/// The Redis coordinator (feature `redis`).
#[cfg(feature = "redis")]
pub use elect_redis as redis;

/// The MySQL/MariaDB coordinator (feature `mysql`).
#[cfg(feature = "mysql")]
pub use elect_mysql as mysql;

/// The MongoDB coordinator (feature `mongo`).
#[cfg(feature = "mongo")]
pub use elect_mongo as mongo;

/// The PostgreSQL coordinator (feature `postgres`).
#[cfg(feature = "postgres")]
pub use elect_postgres as postgres;

/// The etcd coordinator (feature `etcd`).
#[cfg(feature = "etcd")]
pub use elect_etcd as etcd;

/// Election among peers without a shared store (feature `raft`).
#[cfg(feature = "raft")]
pub use elect_raft as raft;

/// How [`open`] sets up a coordinator beyond what its URL says.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Options {
    /// Redis: [`RedisConfig::restart_quarantine`](elect_redis::RedisConfig::restart_quarantine)
    /// (Redis without persistence). Refused for other schemes.
    pub restart_quarantine: bool,
    /// Every store: TLS with these certificates (a CA of your own, a client certificate).
    pub tls: Option<TlsFiles>,
    /// Redis: replicas that must acknowledge each grant and renewal, and how long to wait
    /// ([`RedisConfig::wait_for_replicas`](elect_redis::RedisConfig::wait_for_replicas)).
    /// Refused for other schemes.
    pub wait_for_replicas: Option<(u32, std::time::Duration)>,
    /// PostgreSQL: where hand-over notices (`LISTEN`) come from when not from the store's own
    /// URL — behind a transaction-mode pooler such as PgBouncer, which cannot keep a
    /// listening session (`elect_postgres::Listen`). `None`: the store's URL. Refused for
    /// other schemes.
    pub postgres_listen: Option<PostgresListen>,
}

/// Where a PostgreSQL store listens for hand-over notices ([`Options::postgres_listen`]).
#[derive(Clone, PartialEq, Eq)]
pub enum PostgresListen {
    /// On a connection of its own to this URL: the server itself, or a session-mode pool.
    Url(String),
    /// No notices: waiting candidates wake when the lease they were told of expires.
    Off,
}

impl std::fmt::Debug for PostgresListen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PostgresListen::Url(url) => f.debug_tuple("Url").field(&redact_url(url)).finish(),
            PostgresListen::Off => f.write_str("Off"),
        }
    }
}

impl Options {
    /// Sets [`Options::restart_quarantine`].
    pub fn restart_quarantine(mut self, on: bool) -> Self {
        self.restart_quarantine = on;
        self
    }

    /// Sets [`Options::tls`].
    pub fn tls(mut self, files: TlsFiles) -> Self {
        self.tls = Some(files);
        self
    }

    /// Sets [`Options::wait_for_replicas`].
    pub fn wait_for_replicas(mut self, replicas: u32, timeout: std::time::Duration) -> Self {
        self.wait_for_replicas = Some((replicas, timeout));
        self
    }

    /// Sets [`Options::postgres_listen`].
    pub fn postgres_listen(mut self, listen: PostgresListen) -> Self {
        self.postgres_listen = Some(listen);
        self
    }
}

/// A connected coordinator, as [`open`] made it: the concrete store, for callers that need its
/// driver (a pool, a collection) besides the [`LeaseStore`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Coordinator {
    /// `redis://`, `rediss://`, `redis-cluster://`, `rediss-cluster://`, `redis-sentinel://`.
    #[cfg(feature = "redis")]
    Redis(elect_redis::RedisStore),
    /// `mysql://`.
    #[cfg(feature = "mysql")]
    Mysql(elect_mysql::MysqlStore),
    /// `mongodb://`, `mongodb+srv://`.
    #[cfg(feature = "mongo")]
    Mongo(elect_mongo::MongoStore),
    /// `postgres://`, `postgresql://`.
    #[cfg(feature = "postgres")]
    Postgres(elect_postgres::PostgresStore),
    /// `etcd://`, `etcds://`.
    #[cfg(feature = "etcd")]
    Etcd(elect_etcd::EtcdStore),
    #[doc(hidden)]
    /// Keeps every `match` exhaustive in a build with no coordinator feature.
    __Never(std::convert::Infallible),
}

impl Coordinator {
    /// The store, for [`Elector::builder_dyn`] and [`Observer`].
    pub fn lease_store(&self) -> Arc<dyn LeaseStore> {
        match self {
            #[cfg(feature = "redis")]
            Coordinator::Redis(s) => Arc::new(s.clone()),
            #[cfg(feature = "mysql")]
            Coordinator::Mysql(s) => Arc::new(s.clone()),
            #[cfg(feature = "mongo")]
            Coordinator::Mongo(s) => Arc::new(s.clone()),
            #[cfg(feature = "postgres")]
            Coordinator::Postgres(s) => Arc::new(s.clone()),
            #[cfg(feature = "etcd")]
            Coordinator::Etcd(s) => Arc::new(s.clone()),
            Coordinator::__Never(never) => match *never {},
        }
    }

    /// The store behind a [`Batched`](elect_core::batch::Batched) queue, for a process that
    /// campaigns in many elections, each with its own [`Elector`]: their
    /// acquisitions and renewals share requests. `None` where [`batch_store`](Self::batch_store)
    /// is `None`.
    pub fn batched(&self, config: elect_core::batch::BatchConfig) -> Option<Arc<dyn LeaseStore>> {
        let store = self.batch_store()?;
        Some(Arc::new(elect_core::batch::Batched::new(store, config)))
    }

    /// The store as a [`BatchStore`](elect_core::batch::BatchStore), for
    /// [`Shards`](elect_core::shards::Shards) (one task campaigning in many elections) or
    /// [`batched`](Self::batched). `None` for a coordinator that cannot yet decide a batch in a
    /// few requests (Redis, PostgreSQL, MySQL, Mongo and etcd can — Mongo's grants still go
    /// one by one; etcd's batch grants share an etcd lease).
    pub fn batch_store(&self) -> Option<Arc<dyn elect_core::batch::BatchStore>> {
        match self {
            #[cfg(feature = "redis")]
            Coordinator::Redis(s) => Some(Arc::new(s.clone())),
            #[cfg(feature = "postgres")]
            Coordinator::Postgres(s) => Some(Arc::new(s.clone())),
            #[cfg(feature = "mysql")]
            Coordinator::Mysql(s) => Some(Arc::new(s.clone())),
            #[cfg(feature = "mongo")]
            Coordinator::Mongo(s) => Some(Arc::new(s.clone())),
            #[cfg(feature = "etcd")]
            Coordinator::Etcd(s) => Some(Arc::new(s.clone())),
            #[allow(unreachable_patterns)]
            _ => None,
        }
    }

    /// Lets the driver close its connections while the runtime still runs (see
    /// [`LeaseStore::close`]).
    pub async fn close(&self) {
        self.lease_store().close().await
    }
}

/// The schemes each feature brings, for messages.
const SCHEMES: &str = "redis://, rediss://, redis-cluster://, rediss-cluster:// and \
     redis-sentinel:// (feature redis), mysql:// (feature mysql), mongodb:// (feature mongo), \
     postgres:// and postgresql:// (feature postgres), etcd:// and etcds:// (feature etcd)";

/// The Redis schemes: standalone, Cluster and Sentinel, with TLS.
const REDIS_SCHEMES: [&str; 5] = [
    "redis",
    "rediss",
    "redis-cluster",
    "rediss-cluster",
    "redis-sentinel",
];

/// Connects to the coordinator `url` names, picking it by scheme, with default settings.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// // A scheme no feature provides is a configuration error naming what to enable.
/// let err = elect::connect("zookeeper://db:2181").await.unwrap_err();
/// assert!(err.to_string().contains("zookeeper"), "{err}");
/// # });
/// ```
pub async fn connect(url: &str) -> Result<Arc<dyn LeaseStore>> {
    Ok(open(url, &Options::default()).await?.lease_store())
}

/// Connects to the coordinator `url` names, picking it by scheme, with `options`; the store
/// keeps its concrete type. An unknown scheme, or one whose feature is off, is
/// [`Error::InvalidConfig`] naming the feature to enable; no URL is ever shown with its password.
pub async fn open(url: &str, options: &Options) -> Result<Coordinator> {
    let shown = redact_url(url);
    let Some((scheme, _)) = url.split_once("://") else {
        return Err(Error::config(format!(
            "store {shown:?} is not a URL: use {SCHEMES}"
        )));
    };
    let redis = REDIS_SCHEMES.contains(&scheme);
    if options.restart_quarantine && !redis {
        return Err(Error::config(format!(
            "the restart quarantine is for Redis stores, not {scheme}://"
        )));
    }
    if options.wait_for_replicas.is_some() && !redis {
        return Err(Error::config(format!(
            "waiting for replicas is for Redis stores, not {scheme}://"
        )));
    }
    if options.postgres_listen.is_some() && !matches!(scheme, "postgres" | "postgresql") {
        return Err(Error::config(format!(
            "a separate LISTEN connection is for PostgreSQL stores, not {scheme}://"
        )));
    }
    match scheme {
        _ if redis => open_redis(url, options).await,
        "mysql" => open_mysql(url, options).await,
        "mongodb" | "mongodb+srv" => open_mongo(url, options).await,
        "postgres" | "postgresql" => open_postgres(url, options).await,
        "etcd" | "etcds" => open_etcd(url, options).await,
        other => Err(Error::config(format!(
            "store scheme {other:?} is not supported: use {SCHEMES}"
        ))),
    }
}

/// The error for a scheme whose feature this build lacks.
#[allow(dead_code)]
fn disabled(url: &str, feature: &str) -> Error {
    let scheme = url.split("://").next().unwrap_or(url);
    Error::config(format!(
        "{scheme}:// needs elect's `{feature}` feature, which this build does not have"
    ))
}

#[cfg(feature = "redis")]
async fn open_redis(url: &str, options: &Options) -> Result<Coordinator> {
    let mut config =
        elect_redis::RedisConfig::new(url).restart_quarantine(options.restart_quarantine);
    if let Some(files) = &options.tls {
        config = config.tls(files.clone());
    }
    if let Some((replicas, timeout)) = options.wait_for_replicas {
        config = config.wait_for_replicas(replicas, timeout);
    }
    Ok(Coordinator::Redis(
        elect_redis::RedisStore::connect(config).await?,
    ))
}

#[cfg(not(feature = "redis"))]
async fn open_redis(url: &str, _: &Options) -> Result<Coordinator> {
    Err(disabled(url, "redis"))
}

#[cfg(feature = "mysql")]
async fn open_mysql(url: &str, options: &Options) -> Result<Coordinator> {
    let mut config = elect_mysql::MysqlConfig::new(url);
    if let Some(files) = &options.tls {
        config = config.tls(files.clone());
    }
    Ok(Coordinator::Mysql(
        elect_mysql::MysqlStore::connect(config).await?,
    ))
}

#[cfg(not(feature = "mysql"))]
async fn open_mysql(url: &str, _: &Options) -> Result<Coordinator> {
    Err(disabled(url, "mysql"))
}

#[cfg(feature = "mongo")]
async fn open_mongo(url: &str, options: &Options) -> Result<Coordinator> {
    let mut config = elect_mongo::MongoConfig::new(url);
    if let Some(files) = &options.tls {
        config = config.tls(files.clone());
    }
    Ok(Coordinator::Mongo(
        elect_mongo::MongoStore::connect(config).await?,
    ))
}

#[cfg(not(feature = "mongo"))]
async fn open_mongo(url: &str, _: &Options) -> Result<Coordinator> {
    Err(disabled(url, "mongo"))
}

#[cfg(feature = "postgres")]
async fn open_postgres(url: &str, options: &Options) -> Result<Coordinator> {
    let mut config = elect_postgres::PostgresConfig::new(url);
    if let Some(files) = &options.tls {
        config = config.tls(files.clone());
    }
    match &options.postgres_listen {
        Some(PostgresListen::Url(listen)) => {
            config = config.listen(elect_postgres::Listen::Url(listen.clone()))
        }
        Some(PostgresListen::Off) => config = config.listen(elect_postgres::Listen::Off),
        None => {}
    }
    Ok(Coordinator::Postgres(
        elect_postgres::PostgresStore::connect(config).await?,
    ))
}

#[cfg(not(feature = "postgres"))]
async fn open_postgres(url: &str, _: &Options) -> Result<Coordinator> {
    Err(disabled(url, "postgres"))
}

#[cfg(feature = "etcd")]
async fn open_etcd(url: &str, options: &Options) -> Result<Coordinator> {
    let mut config = elect_etcd::EtcdConfig::from_url(url)?;
    if let Some(files) = &options.tls {
        config = config.tls(files.clone());
    }
    Ok(Coordinator::Etcd(
        elect_etcd::EtcdStore::connect(config).await?,
    ))
}

#[cfg(not(feature = "etcd"))]
async fn open_etcd(url: &str, _: &Options) -> Result<Coordinator> {
    Err(disabled(url, "etcd"))
}
