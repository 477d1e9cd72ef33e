//! [`RedisConfig`]: where the coordinator lives and how to talk to it.

use std::fmt;
use std::time::Duration;

use elect_core::{Error, Result, TlsFiles};

/// How to reach Redis and where to keep leases.
///
/// ```
/// use std::time::Duration;
/// use elect_redis::RedisConfig;
///
/// let config = RedisConfig::new("redis://:s3cret@127.0.0.1:6379/0")
///     .key_prefix("myapp")
///     .pool_size(2)
///     .command_timeout(Duration::from_secs(2));
/// // Debug output never shows the password.
/// assert!(!format!("{config:?}").contains("s3cret"));
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct RedisConfig {
    /// `redis://[user][:password@]host:port[/db]`, or `rediss://` with the `tls` feature; a
    /// Cluster: `redis-cluster://host:port?node=host:port&node=…` (`rediss-cluster://`); behind
    /// Sentinels: `redis-sentinel://sentinel:port?sentinelServiceName=NAME&node=sentinel:port`.
    pub url: String,
    /// Prefix of every key and channel (default `elect`): 1–64 bytes of `[A-Za-z0-9._:/-]`.
    pub key_prefix: String,
    /// Connections for requests (default 2); pub/sub uses one more, opened on first use.
    pub pool_size: usize,
    /// How long connecting may take (default 5 s).
    pub connect_timeout: Duration,
    /// How long one command may take before it fails as unavailable (default 5 s).
    pub command_timeout: Duration,
    /// Refuse to grant a vacant lease until a TTL has passed since the server (re)started
    /// (default off). Turn it on when Redis runs without persistence (or with snapshots that
    /// may be older than the last grant): a restart forgets the lease, and without the
    /// quarantine a candidate could be granted it while the previous leader still believes,
    /// for up to one TTL. With it, while `INFO`'s uptime is within a TTL, the first request
    /// of an election marks the time in memory (`{prefix}:{E}:started`, lost with the lease on
    /// a restart) and candidates are told the election is held by
    /// [`QUARANTINE_HOLDER`](crate::QUARANTINE_HOLDER) until a TTL after that mark —
    /// Redlock's "delayed restart", enforced by the clients. The same applies after a
    /// failover: each grant remembers the master's replication id (`{prefix}:{E}:master`), and
    /// the first request on a master with another id (a promoted replica) starts the
    /// quarantine. The cost: an election first used within a TTL of the server's start, or
    /// vacant after a failover, waits out a TTL.
    pub restart_quarantine: bool,
    /// The CA and client certificate of `rediss://` connections (default: the platform's
    /// roots, no client certificate). Needs the `tls` feature and a `rediss://` URL.
    pub tls: Option<TlsFiles>,
    /// Replicas that must acknowledge a grant or a renewal (Redis `WAIT`) before the candidate
    /// believes it (default 0: off). Replication is asynchronous: without it, a failover can
    /// promote a replica that never saw the latest grant, and another candidate is granted
    /// the lease while its holder still believes. With it, a write acknowledged by fewer
    /// replicas within [`wait_timeout`](Self::wait_timeout) is an error (retryable): no
    /// leadership starts and no deadline moves on it. Set it to the number of replicas a
    /// failover may promote (all of them, to close the window entirely).
    pub wait_replicas: u32,
    /// How long `WAIT` may take (default 100 ms); well under a third of the TTL.
    pub wait_timeout: Duration,
}

/// The URL schemes a store accepts: standalone, Cluster and Sentinel (fred's), with TLS.
const SCHEMES: [&str; 5] = [
    "redis://",
    "rediss://",
    "redis-cluster://",
    "rediss-cluster://",
    "redis-sentinel://",
];

impl RedisConfig {
    /// A configuration for `url` with the defaults.
    pub fn new(url: impl Into<String>) -> RedisConfig {
        RedisConfig {
            url: url.into(),
            key_prefix: "elect".into(),
            pool_size: 2,
            connect_timeout: Duration::from_secs(5),
            command_timeout: Duration::from_secs(5),
            restart_quarantine: false,
            tls: None,
            wait_replicas: 0,
            wait_timeout: Duration::from_millis(100),
        }
    }

    /// Sets [`RedisConfig::wait_replicas`] and [`RedisConfig::wait_timeout`].
    pub fn wait_for_replicas(mut self, replicas: u32, timeout: Duration) -> Self {
        self.wait_replicas = replicas;
        self.wait_timeout = timeout;
        self
    }

    /// Sets [`RedisConfig::tls`].
    pub fn tls(mut self, files: TlsFiles) -> Self {
        self.tls = Some(files);
        self
    }

    /// Sets [`RedisConfig::restart_quarantine`].
    pub fn restart_quarantine(mut self, on: bool) -> Self {
        self.restart_quarantine = on;
        self
    }

    /// Sets [`RedisConfig::key_prefix`].
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = prefix.into();
        self
    }

    /// Sets [`RedisConfig::pool_size`].
    pub fn pool_size(mut self, size: usize) -> Self {
        self.pool_size = size;
        self
    }

    /// Sets [`RedisConfig::connect_timeout`].
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets [`RedisConfig::command_timeout`].
    pub fn command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = timeout;
        self
    }

    /// Checks everything, the URL included.
    pub(crate) fn validate(&self) -> Result<()> {
        self.validate_options()?;
        let Some(scheme) = SCHEMES.iter().find(|s| self.url.starts_with(**s)) else {
            return Err(Error::config(format!(
                "{} is not a redis://, rediss://, redis-cluster://, rediss-cluster:// or \
                 redis-sentinel:// URL",
                redact(&self.url)
            )));
        };
        let tls = scheme.starts_with("rediss");
        if tls && !cfg!(feature = "tls") {
            return Err(Error::config(format!(
                "{} needs TLS: enable the `tls` feature of elect-redis",
                redact(&self.url)
            )));
        }
        if self.tls.is_some() && !tls {
            return Err(Error::config(format!(
                "TLS files are set but {} is plaintext: use a rediss:// or rediss-cluster:// URL",
                redact(&self.url)
            )));
        }
        Ok(())
    }

    /// Checks all but the URL (a store made from a pool of the application's has no use for it).
    pub(crate) fn validate_options(&self) -> Result<()> {
        let prefix = &self.key_prefix;
        if prefix.is_empty()
            || prefix.len() > 64
            || !prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._:/-".contains(&b))
        {
            return Err(Error::config(format!(
                "key prefix {prefix:?} must be 1 to 64 bytes of [A-Za-z0-9._:/-]"
            )));
        }
        if !(1..=64).contains(&self.pool_size) {
            return Err(Error::config(format!(
                "pool size {} must be 1 to 64",
                self.pool_size
            )));
        }
        if self.connect_timeout.is_zero() || self.command_timeout.is_zero() {
            return Err(Error::config("timeouts must not be zero"));
        }
        if self.wait_replicas > 0
            && (self.wait_timeout.is_zero() || self.wait_timeout >= self.command_timeout)
        {
            return Err(Error::config(format!(
                "the replica wait {:?} must be above zero and below the command timeout {:?}",
                self.wait_timeout, self.command_timeout
            )));
        }
        if let Some(tls) = &self.tls {
            if !cfg!(feature = "tls") {
                return Err(Error::config(
                    "TLS files are set: enable the `tls` feature of elect-redis",
                ));
            }
            tls.validate()?;
        }
        Ok(())
    }
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &redact(&self.url))
            .field("key_prefix", &self.key_prefix)
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("command_timeout", &self.command_timeout)
            .field("restart_quarantine", &self.restart_quarantine)
            .field("tls", &self.tls)
            .field("wait_replicas", &self.wait_replicas)
            .field("wait_timeout", &self.wait_timeout)
            .finish()
    }
}

pub(crate) use elect_core::redact_url as redact;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_settings_are_typed_errors() {
        for config in [
            RedisConfig::new("redis://h").key_prefix(""),
            RedisConfig::new("redis://h").key_prefix("{tag}"),
            RedisConfig::new("redis://h").key_prefix("x".repeat(65)),
            RedisConfig::new("redis://h").pool_size(0),
            RedisConfig::new("redis://h").command_timeout(Duration::ZERO),
            RedisConfig::new("http://h"),
            RedisConfig::new(""),
        ] {
            assert!(
                matches!(config.validate(), Err(Error::InvalidConfig { .. })),
                "{config:?}"
            );
        }
        assert!(RedisConfig::new("redis://h").validate().is_ok());
    }
}
