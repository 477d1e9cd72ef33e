//! [`PostgresConfig`]: where the coordinator lives, and where its notices come from.

use std::fmt;
use std::time::Duration;

use elect_core::{Error, Result, TlsFiles};

use crate::schema::{valid_table_name, DEFAULT_TABLE};

/// Where hand-over notices (`LISTEN`) come from.
///
/// `LISTEN` needs a session of its own for as long as it listens, which a pooler in
/// transaction mode (PgBouncer's `pool_mode = transaction`) cannot give: behind one, point
/// [`Listen::Url`] at the server itself (or at a session-mode pool), or turn notices off.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Listen {
    /// On a connection of its own to the store's URL (the default: right for a direct
    /// connection to PostgreSQL or a session-mode pool).
    SameUrl,
    /// On a connection of its own to this URL: the server behind a transaction-mode pooler.
    Url(String),
    /// No notices: waiting candidates wake only when the lease they were told of expires, and
    /// observers learn of a new leader when they next read.
    Off,
}

impl fmt::Debug for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Listen::SameUrl => f.write_str("SameUrl"),
            Listen::Url(url) => f.debug_tuple("Url").field(&redact(url)).finish(),
            Listen::Off => f.write_str("Off"),
        }
    }
}

/// How to reach PostgreSQL and which table holds the leases.
///
/// ```
/// use std::time::Duration;
/// use elect_postgres::{Listen, PostgresConfig};
///
/// // Behind PgBouncer in transaction mode, notices come straight from the server.
/// let config = PostgresConfig::new("postgres://app:s3cret@pgbouncer.internal:6432/app")
///     .table("leader_leases")
///     .listen(Listen::Url("postgres://app:s3cret@db.internal:5432/app".into()));
/// assert!(!format!("{config:?}").contains("s3cret"));
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct PostgresConfig {
    /// `postgres://user:password@host:port/database[?options]`, or the key-value form
    /// (`host=… user=… dbname=…`): tokio-postgres' connection strings.
    pub url: String,
    /// The lease table (default `elect_leases`), found through the connection's
    /// `search_path`: 1–63 bytes of `[A-Za-z0-9_]`, not starting with a digit. It is always
    /// quoted, so case matters.
    pub table: String,
    /// Connections in the pool (default 4).
    pub pool_size: usize,
    /// How long connecting and each request may take (default 5 s). A connection whose
    /// request timed out is closed, not returned to the pool.
    pub timeout: Duration,
    /// Where hand-over notices come from (default [`Listen::SameUrl`]).
    pub listen: Listen,
    /// TLS with these certificates (default none: plaintext). Needs the `tls` feature.
    pub tls: Option<TlsFiles>,
}

impl PostgresConfig {
    /// A configuration for `url` with the defaults.
    pub fn new(url: impl Into<String>) -> PostgresConfig {
        PostgresConfig {
            url: url.into(),
            table: DEFAULT_TABLE.into(),
            pool_size: 4,
            timeout: Duration::from_secs(5),
            listen: Listen::SameUrl,
            tls: None,
        }
    }

    /// Sets [`PostgresConfig::table`].
    pub fn table(mut self, table: impl Into<String>) -> Self {
        self.table = table.into();
        self
    }

    /// Sets [`PostgresConfig::pool_size`].
    pub fn pool_size(mut self, size: usize) -> Self {
        self.pool_size = size;
        self
    }

    /// Sets [`PostgresConfig::timeout`].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets [`PostgresConfig::listen`].
    pub fn listen(mut self, listen: Listen) -> Self {
        self.listen = listen;
        self
    }

    /// Sets [`PostgresConfig::tls`].
    pub fn tls(mut self, files: TlsFiles) -> Self {
        self.tls = Some(files);
        self
    }

    /// The URL notices are listened on, if any.
    pub(crate) fn listen_url(&self) -> Option<&str> {
        match &self.listen {
            Listen::SameUrl => Some(&self.url),
            Listen::Url(url) => Some(url),
            Listen::Off => None,
        }
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if !valid_table_name(&self.table) {
            return Err(Error::config(format!(
                "table name {:?} must be 1 to 63 bytes of [A-Za-z0-9_], not starting with a digit",
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
        if self.timeout > Duration::from_secs(3600) {
            return Err(Error::config("timeout must be at most an hour"));
        }
        if let Some(tls) = &self.tls {
            if !cfg!(feature = "tls") {
                return Err(Error::config(
                    "TLS files are set: enable the `tls` feature of elect-postgres",
                ));
            }
            tls.validate()?;
        }
        Ok(())
    }
}

impl fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("url", &redact(&self.url))
            .field("table", &self.table)
            .field("pool_size", &self.pool_size)
            .field("timeout", &self.timeout)
            .field("listen", &self.listen)
            .field("tls", &self.tls)
            .finish()
    }
}

/// `url` with any password hidden: the URL form's user part, and `password=` in the URL's
/// query or in the key-value form.
pub(crate) fn redact(url: &str) -> String {
    let url = elect_core::redact_url(url);
    hide_password_pairs(&url)
}

/// Hides the value of every `password=` pair (`&`- or space-separated).
fn hide_password_pairs(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("password=") {
        let starts_pair = at == 0 || matches!(rest.as_bytes()[at - 1], b'?' | b'&' | b' ');
        out.push_str(&rest[..at + "password=".len()]);
        rest = &rest[at + "password=".len()..];
        if starts_pair {
            let end = if let Some(quoted) = rest.strip_prefix('\'') {
                // The key-value form quotes values with spaces: 'a b', with \' inside.
                let mut escaped = false;
                quoted
                    .char_indices()
                    .find(|&(_, c)| {
                        let end = c == '\'' && !escaped;
                        escaped = c == '\\' && !escaped;
                        end
                    })
                    .map_or(rest.len(), |(i, _)| i + 2)
            } else {
                rest.find(['&', ' ']).unwrap_or(rest.len())
            };
            out.push_str("***");
            rest = &rest[end..];
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_passwords_in_every_form() {
        let c = PostgresConfig::new("postgres://u:pw@h:1/db?sslmode=disable")
            .listen(Listen::Url("postgresql://u:other@h:2/db".into()));
        let shown = format!("{c:?}");
        assert!(
            shown.contains("postgres://u:***@h:1/db?sslmode=disable"),
            "{shown}"
        );
        assert!(
            !shown.contains("pw@") && !shown.contains("other"),
            "{shown}"
        );
        assert_eq!(
            redact("postgres://h/db?user=u&password=s3cret&sslmode=require"),
            "postgres://h/db?user=u&password=***&sslmode=require"
        );
        assert_eq!(
            redact("host=h user=u password=s3cret dbname=d"),
            "host=h user=u password=*** dbname=d"
        );
        assert_eq!(
            redact("host=h password='a b\\' c' dbname=d"),
            "host=h password=*** dbname=d"
        );
        assert_eq!(redact("host=h oldpassword=x"), "host=h oldpassword=x");
    }

    #[test]
    fn bad_settings_are_typed_errors() {
        for c in [
            PostgresConfig::new("postgres://h/db").table("x\"; DROP TABLE y; --"),
            PostgresConfig::new("postgres://h/db").table(""),
            PostgresConfig::new("postgres://h/db").table("x".repeat(64)),
            PostgresConfig::new("postgres://h/db").pool_size(0),
            PostgresConfig::new("postgres://h/db").timeout(Duration::ZERO),
            PostgresConfig::new("postgres://h/db").timeout(Duration::from_secs(1 << 40)),
        ] {
            assert!(
                matches!(c.validate(), Err(Error::InvalidConfig { .. })),
                "{c:?}"
            );
        }
    }
}
