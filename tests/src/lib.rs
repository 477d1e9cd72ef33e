//! Cross-crate tests and test support for elect (not published).
//!
//! - [`servers`]: real Redis, MySQL/MariaDB and MongoDB-wire servers for tests — from
//!   `ELECT_<KIND>_URL`, else testcontainers when a Docker engine answers, else started from
//!   this machine's binaries — plus servers a test owns and can stop, kill and restart.
//! - [`proxy`]: a TCP fault proxy (delay, blackhole, reset, refuse) switchable at run time.
//! - [`id`], [`election`], [`claim`]: the names the backends' tests share.

#![warn(missing_docs, missing_debug_implementations)]

pub mod docker;
pub mod etcd;
mod etcd_http;
mod keeper;
pub mod local;
pub mod pgbouncer;
pub mod proxy;
pub mod servers;
pub mod tls;
pub mod topology;

use std::path::PathBuf;

pub use servers::{mongo, mysql, postgres, redis, unique_name, Mode, Origin, OwnedServer, Server};

use elect_core::{CandidateId, Claim, ElectionName, Elector, LeaseStore, Ttl};

/// A candidate id for tests; panics on an invalid one.
pub fn id(name: &str) -> CandidateId {
    CandidateId::new(name).expect("a valid candidate id")
}

/// An election name for tests; panics on an invalid one.
pub fn election(name: &str) -> ElectionName {
    ElectionName::new(name).expect("a valid election name")
}

/// A fresh claim (random nonce) of `who` on `election`.
pub fn claim(election: &ElectionName, who: &str, ttl: Ttl) -> Claim {
    Claim::new(election.clone(), id(who), ttl)
}

/// `n` electors on clones of `store`, one per election `shard-0` … `shard-{n-1}`, each with
/// `ttl` (and candidate id `who` when given), started: the many-elections tests' process.
pub fn shards<S: LeaseStore + Clone>(
    store: &S,
    n: usize,
    who: Option<&str>,
    ttl: std::time::Duration,
) -> Vec<Elector> {
    (0..n)
        .map(|k| {
            let mut builder = Elector::builder(store.clone(), election(&format!("shard-{k}")));
            if let Some(who) = who {
                builder = builder.candidate(id(who));
            }
            builder.ttl(ttl).start().expect("start")
        })
        .collect()
}

/// A kind of server the tests need.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Redis (Debian `redis-server`).
    Redis,
    /// MySQL or MariaDB (Debian `mariadb-server`).
    Mysql,
    /// A MongoDB-wire server (PyPI `secantusdb`, or a real `mongod` through a URL or Docker).
    Mongo,
    /// PostgreSQL (Debian `postgresql`).
    Postgres,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 4] = [Kind::Redis, Kind::Mysql, Kind::Mongo, Kind::Postgres];

    /// `redis`, `mysql`, `mongo` or `postgres`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Redis => "redis",
            Kind::Mysql => "mysql",
            Kind::Mongo => "mongo",
            Kind::Postgres => "postgres",
        }
    }

    /// The environment variable naming a server to use: `ELECT_REDIS_URL`, ….
    pub fn url_env(self) -> &'static str {
        match self {
            Kind::Redis => "ELECT_REDIS_URL",
            Kind::Mysql => "ELECT_MYSQL_URL",
            Kind::Mongo => "ELECT_MONGO_URL",
            Kind::Postgres => "ELECT_POSTGRES_URL",
        }
    }

    /// The environment variable naming the server binary to start: `ELECT_REDIS_SERVER_BIN`, ….
    pub fn bin_env(self) -> &'static str {
        match self {
            Kind::Redis => "ELECT_REDIS_SERVER_BIN",
            Kind::Mysql => "ELECT_MYSQL_SERVER_BIN",
            Kind::Mongo => "ELECT_MONGO_SERVER_BIN",
            Kind::Postgres => "ELECT_POSTGRES_SERVER_BIN",
        }
    }

    /// The server binary's name.
    pub fn binary(self) -> &'static str {
        match self {
            Kind::Redis => "redis-server",
            Kind::Mysql => "mariadbd",
            Kind::Mongo => "secantusd-py",
            Kind::Postgres => "postgres",
        }
    }

    /// How to install the binary.
    pub fn install_hint(self) -> &'static str {
        match self {
            Kind::Redis => "apt-get install redis-server",
            Kind::Mysql => "apt-get install mariadb-server",
            Kind::Mongo => {
                "python3 -m venv target/elect-venv && target/elect-venv/bin/pip install secantusdb"
            }
            Kind::Postgres => "apt-get install postgresql",
        }
    }
}

/// The workspace root (the parent of this crate's directory).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives in the workspace")
        .to_path_buf()
}

async fn mysql_database(url: &str) -> Result<String, String> {
    use mysql_async::prelude::Queryable;
    let name = unique_name("elect");
    let opts = mysql_async::Opts::from_url(url).map_err(|e| format!("bad MySQL URL {url}: {e}"))?;
    let mut conn = mysql_async::Conn::new(opts.clone())
        .await
        .map_err(|e| format!("connect to {url}: {e}"))?;
    conn.query_drop(format!("CREATE DATABASE `{name}`"))
        .await
        .map_err(|e| format!("CREATE DATABASE {name}: {e}"))?;
    let _ = conn.disconnect().await;
    Ok(with_database(url, &name))
}

async fn postgres_database(url: &str) -> Result<String, String> {
    let name = unique_name("elect");
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .map_err(|e| format!("connect to {url}: {e}"))?;
    let driving = tokio::spawn(connection);
    client
        .batch_execute(&format!("CREATE DATABASE \"{name}\""))
        .await
        .map_err(|e| format!("CREATE DATABASE {name}: {e}"))?;
    drop(client);
    let _ = driving.await;
    Ok(with_database(url, &name))
}

/// `url` with its path (the database) replaced by `/{database}`; user, password, host and query
/// are kept.
fn with_database(url: &str, database: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("mysql", url));
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let query = tail.find('?').map_or("", |i| &tail[i..]);
    format!("{scheme}://{authority}/{database}{query}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn with_database_replaces_only_the_path() {
        use super::with_database as w;
        assert_eq!(w("mysql://root@h:1/", "d"), "mysql://root@h:1/d");
        assert_eq!(w("mysql://u:p@h:1", "d"), "mysql://u:p@h:1/d");
        assert_eq!(w("mysql://u:p@h:1/old?x=1", "d"), "mysql://u:p@h:1/d?x=1");
        assert_eq!(w("mysql://h?x=1", "d"), "mysql://h/d?x=1");
    }
}
