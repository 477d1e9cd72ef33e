//! [`MysqlConfig`]: where the coordinator lives.

use std::fmt;
use std::time::Duration;

use elect_core::{Error, Result, TlsFiles};

use crate::schema::{valid_table_name, DEFAULT_TABLE};

/// How to reach MySQL/MariaDB and which table holds the leases.
///
/// ```
/// use std::time::Duration;
/// use elect_mysql::MysqlConfig;
///
/// let config = MysqlConfig::new("mysql://app:s3cret@db.internal:3306/app")
///     .table("leader_leases")
///     .release_poll(Some(Duration::from_millis(100)));
/// assert!(!format!("{config:?}").contains("s3cret"));
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct MysqlConfig {
    /// `mysql://user:password@host:port/database[?options]` (mysql_async's URL options, e.g.
    /// `require_ssl=true` with the `tls` feature).
    pub url: String,
    /// The lease table (default `elect_leases`): 1–64 bytes of `[A-Za-z0-9_]`.
    pub table: String,
    /// Connections in the pool (default 4).
    pub pool_size: usize,
    /// How long connecting and each request may take (default 5 s).
    pub timeout: Duration,
    /// How often waiting candidates' elections are checked for a release and a new grant
    /// (default 2 s; one query per store for all its elections). With
    /// [`release_locks`](Self::release_locks) it is only the fallback; without them, set it
    /// short (100 ms was the default before them). `None` turns the poll off: waiters then
    /// wake by the named locks alone, or, without them too, only when the lease they were
    /// told of expires.
    pub release_poll: Option<Duration>,
    /// Release wake-ups by named locks (default on): the leader holds its election's
    /// `GET_LOCK` on a connection of its own, and each store with candidates waiting blocks
    /// in `GET_LOCK` on it (one connection per election), so a release or a dead leader's
    /// connection wakes them at once. The lease still decides who leads; a missed wake-up only
    /// costs latency. Costs one connection per election led and one per election waited on
    /// (outside the pool; on a pool given to [`MysqlStore::from_pool`](crate::MysqlStore::from_pool),
    /// from that pool).
    pub release_locks: bool,
    /// TLS with these certificates (default none: the URL's options decide, e.g.
    /// `require_ssl=true` trusts the platform's roots). Setting it turns TLS on and requires
    /// it; needs the `tls` feature.
    pub tls: Option<TlsFiles>,
}

impl MysqlConfig {
    /// A configuration for `url` with the defaults.
    pub fn new(url: impl Into<String>) -> MysqlConfig {
        MysqlConfig {
            url: url.into(),
            table: DEFAULT_TABLE.into(),
            pool_size: 4,
            timeout: Duration::from_secs(5),
            release_poll: Some(Duration::from_secs(2)),
            release_locks: true,
            tls: None,
        }
    }

    /// Sets [`MysqlConfig::tls`].
    pub fn tls(mut self, files: TlsFiles) -> Self {
        self.tls = Some(files);
        self
    }

    /// Sets [`MysqlConfig::table`].
    pub fn table(mut self, table: impl Into<String>) -> Self {
        self.table = table.into();
        self
    }

    /// Sets [`MysqlConfig::pool_size`].
    pub fn pool_size(mut self, size: usize) -> Self {
        self.pool_size = size;
        self
    }

    /// Sets [`MysqlConfig::timeout`].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets [`MysqlConfig::release_locks`].
    pub fn release_locks(mut self, on: bool) -> Self {
        self.release_locks = on;
        self
    }

    /// Sets [`MysqlConfig::release_poll`].
    pub fn release_poll(mut self, interval: Option<Duration>) -> Self {
        self.release_poll = interval;
        self
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if !valid_table_name(&self.table) {
            return Err(Error::config(format!(
                "table name {:?} must be 1 to 64 bytes of [A-Za-z0-9_], not starting with a digit",
                self.table
            )));
        }
        if !(1..=256).contains(&self.pool_size) {
            return Err(Error::config(format!(
                "pool size {} must be 1 to 256",
                self.pool_size
            )));
        }
        if self.timeout.is_zero() {
            return Err(Error::config("timeout must not be zero"));
        }
        if self
            .release_poll
            .is_some_and(|p| p < Duration::from_millis(10))
        {
            return Err(Error::config(
                "release poll interval must be at least 10 ms",
            ));
        }
        if let Some(tls) = &self.tls {
            if !cfg!(feature = "tls") {
                return Err(Error::config(
                    "TLS files are set: enable the `tls` feature of elect-mysql",
                ));
            }
            tls.validate()?;
        }
        Ok(())
    }
}

impl fmt::Debug for MysqlConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MysqlConfig")
            .field("url", &redact(&self.url))
            .field("table", &self.table)
            .field("pool_size", &self.pool_size)
            .field("timeout", &self.timeout)
            .field("release_poll", &self.release_poll)
            .field("release_locks", &self.release_locks)
            .field("tls", &self.tls)
            .finish()
    }
}

pub(crate) use elect_core::redact_url as redact;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_password() {
        let c = MysqlConfig::new("mysql://u:pw@h:1/db?x=1");
        assert!(format!("{c:?}").contains("mysql://u:***@h:1/db?x=1"));
        assert_eq!(redact("mysql://u@h/db"), "mysql://u@h/db");
    }

    #[test]
    fn bad_settings_are_typed_errors() {
        for c in [
            MysqlConfig::new("mysql://h/db").table("x`; DROP TABLE y; --"),
            MysqlConfig::new("mysql://h/db").table(""),
            MysqlConfig::new("mysql://h/db").pool_size(0),
            MysqlConfig::new("mysql://h/db").timeout(Duration::ZERO),
            MysqlConfig::new("mysql://h/db").release_poll(Some(Duration::from_millis(1))),
        ] {
            assert!(
                matches!(c.validate(), Err(Error::InvalidConfig { .. })),
                "{c:?}"
            );
        }
    }
}
