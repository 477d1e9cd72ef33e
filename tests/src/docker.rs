//! Servers from testcontainers, when a Docker engine answers.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::sync::OnceLock;
use std::time::Duration;

use testcontainers::runners::SyncRunner;
use testcontainers::{Container, ImageExt};
use testcontainers_modules::{mongo::Mongo, mysql::Mysql, postgres::Postgres, redis::Redis};

use crate::Kind;

/// Whether a Docker engine answers `GET /_ping`, asked once per process. Its absence costs a
/// failed connect: microseconds.
pub fn engine_answers() -> bool {
    static ANSWER: OnceLock<bool> = OnceLock::new();
    *ANSWER.get_or_init(|| {
        if std::env::var_os("ELECT_NO_DOCKER").is_some() {
            return false;
        }
        let host = std::env::var("DOCKER_HOST").unwrap_or_default();
        let timeout = Duration::from_millis(500);
        let request = b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n";
        let mut reply = Vec::new();
        let asked = if let Some(addr) = host.strip_prefix("tcp://") {
            addr.parse()
                .ok()
                .and_then(|a| TcpStream::connect_timeout(&a, timeout).ok())
                .and_then(|mut s| {
                    s.set_read_timeout(Some(timeout)).ok()?;
                    s.write_all(request).ok()?;
                    s.read_to_end(&mut reply).ok()
                })
        } else {
            let path = host
                .strip_prefix("unix://")
                .unwrap_or("/var/run/docker.sock")
                .to_owned();
            UnixStream::connect(path).ok().and_then(|mut s| {
                s.set_read_timeout(Some(timeout)).ok()?;
                s.write_all(request).ok()?;
                s.read_to_end(&mut reply).ok()
            })
        };
        asked.is_some() && reply.starts_with(b"HTTP/1.") && reply.windows(3).any(|w| w == b"200")
    })
}

/// A running container and the URL to reach it.
#[derive(Debug)]
pub enum Running {
    /// Redis 7.
    Redis(Container<Redis>),
    /// MySQL 8.
    Mysql(Container<Mysql>),
    /// MongoDB as a one-node replica set (change streams available).
    Mongo(Container<Mongo>),
    /// PostgreSQL (user, password and database `postgres`).
    Postgres(Container<Postgres>),
}

impl Running {
    /// Starts a container of `kind` and waits until it is ready.
    pub fn start(kind: Kind) -> Result<Running, String> {
        let failed = |e: testcontainers::TestcontainersError| format!("testcontainers: {e}");
        Ok(match kind {
            Kind::Redis => {
                Running::Redis(Redis::default().with_tag("7.2").start().map_err(failed)?)
            }
            Kind::Mysql => Running::Mysql(Mysql::default().start().map_err(failed)?),
            Kind::Mongo => Running::Mongo(Mongo::repl_set().start().map_err(failed)?),
            Kind::Postgres => Running::Postgres(Postgres::default().start().map_err(failed)?),
        })
    }

    /// The URL a driver connects with.
    pub fn url(&self) -> Result<String, String> {
        let port = |r: testcontainers::core::error::Result<u16>| r.map_err(|e| e.to_string());
        Ok(match self {
            Running::Redis(c) => format!("redis://127.0.0.1:{}", port(c.get_host_port_ipv4(6379))?),
            Running::Mysql(c) => format!(
                "mysql://root@127.0.0.1:{}/",
                port(c.get_host_port_ipv4(3306))?
            ),
            Running::Mongo(c) => format!(
                "mongodb://127.0.0.1:{}/?directConnection=true",
                port(c.get_host_port_ipv4(27017))?
            ),
            Running::Postgres(c) => format!(
                "postgres://postgres:postgres@127.0.0.1:{}/postgres",
                port(c.get_host_port_ipv4(5432))?
            ),
        })
    }

    /// Stops the container (its data stays).
    pub fn stop(&self) -> Result<(), String> {
        match self {
            Running::Redis(c) => c.stop(),
            Running::Mysql(c) => c.stop(),
            Running::Mongo(c) => c.stop(),
            Running::Postgres(c) => c.stop(),
        }
        .map_err(|e| e.to_string())
    }

    /// Starts a stopped container again (Docker may map it to another host port: read
    /// [`url`](Self::url) again).
    pub fn start_again(&self) -> Result<(), String> {
        match self {
            Running::Redis(c) => c.start(),
            Running::Mysql(c) => c.start(),
            Running::Mongo(c) => c.start(),
            Running::Postgres(c) => c.start(),
        }
        .map_err(|e| e.to_string())
    }

    /// Kills the container at once.
    pub fn kill(&self) -> Result<(), String> {
        match self {
            Running::Redis(c) => c.stop_with_timeout(Some(0)),
            Running::Mysql(c) => c.stop_with_timeout(Some(0)),
            Running::Mongo(c) => c.stop_with_timeout(Some(0)),
            Running::Postgres(c) => c.stop_with_timeout(Some(0)),
        }
        .map_err(|e| e.to_string())
    }
}
