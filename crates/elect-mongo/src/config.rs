//! [`MongoConfig`]: where the coordinator lives.

use std::fmt;
use std::time::Duration;

use elect_core::{Error, Result, TlsFiles};
use mongodb::options::WriteConcern;

/// How to reach MongoDB and where to keep leases.
///
/// ```
/// use elect_mongo::MongoConfig;
///
/// let config = MongoConfig::new("mongodb://app:s3cret@db1,db2,db3/?replicaSet=rs0")
///     .database("app")
///     .collection("leader_leases");
/// assert!(!format!("{config:?}").contains("s3cret"));
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct MongoConfig {
    /// A `mongodb://` or `mongodb+srv://` connection string.
    pub url: String,
    /// The database: the one the URL names (`mongodb://host/app` → `app`), else `elect`.
    pub database: String,
    /// The collection (default `leases`): one document per election.
    pub collection: String,
    /// Write concern of every write (default majority, so a granted lease survives a failover).
    pub write_concern: WriteConcern,
    /// How long connecting and each request may take (default 5 s; the first request after
    /// connecting gets a second more, so that the driver, which gives up after this long too,
    /// can say why it could not connect).
    pub timeout: Duration,
    /// TLS with these certificates (default none: the URL's `tls`, `tlsCAFile` and
    /// `tlsCertificateKeyFile` options decide). Setting it turns TLS on. The driver reads the
    /// client certificate and its key from one PEM file: give the same path for both.
    pub tls: Option<TlsFiles>,
}

impl MongoConfig {
    /// A configuration for `url` with the defaults; the database is the one the URL names, if
    /// any.
    ///
    /// ```
    /// use elect_mongo::MongoConfig;
    /// assert_eq!(MongoConfig::new("mongodb://db1,db2/app?replicaSet=rs0").database, "app");
    /// assert_eq!(MongoConfig::new("mongodb://db1:27017/?directConnection=true").database, "elect");
    /// ```
    pub fn new(url: impl Into<String>) -> MongoConfig {
        let url = url.into();
        MongoConfig {
            database: database_in(&url).unwrap_or_else(|| "elect".into()),
            url,
            collection: "leases".into(),
            write_concern: WriteConcern::majority(),
            timeout: Duration::from_secs(5),
            tls: None,
        }
    }

    /// Sets [`MongoConfig::tls`].
    pub fn tls(mut self, files: TlsFiles) -> Self {
        self.tls = Some(files);
        self
    }

    /// Sets [`MongoConfig::database`].
    pub fn database(mut self, database: impl Into<String>) -> Self {
        self.database = database.into();
        self
    }

    /// Sets [`MongoConfig::collection`].
    pub fn collection(mut self, collection: impl Into<String>) -> Self {
        self.collection = collection.into();
        self
    }

    /// Sets [`MongoConfig::write_concern`].
    pub fn write_concern(mut self, write_concern: WriteConcern) -> Self {
        self.write_concern = write_concern;
        self
    }

    /// Sets [`MongoConfig::timeout`].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Checks everything, the URL included.
    pub(crate) fn validate(&self) -> Result<()> {
        self.validate_options()?;
        if !self.url.starts_with("mongodb://") && !self.url.starts_with("mongodb+srv://") {
            return Err(Error::config(format!(
                "{} is not a mongodb:// URL",
                redact(&self.url)
            )));
        }
        Ok(())
    }

    /// Checks all but the URL (a store made from a client of the application's has no use for
    /// it).
    pub(crate) fn validate_options(&self) -> Result<()> {
        let db = &self.database;
        if db.is_empty()
            || db.len() > 63
            || db.contains([
                '/', '\\', '.', ' ', '"', '$', '*', '<', '>', ':', '|', '?', '\0',
            ])
        {
            return Err(Error::config(format!(
                "database name {db:?} is not valid in MongoDB"
            )));
        }
        let coll = &self.collection;
        if coll.is_empty()
            || coll.len() > 200
            || coll.contains(['$', '\0'])
            || coll.starts_with("system.")
        {
            return Err(Error::config(format!(
                "collection name {coll:?} is not valid in MongoDB"
            )));
        }
        if self.timeout.is_zero() {
            return Err(Error::config("timeout must not be zero"));
        }
        if let Some(tls) = &self.tls {
            tls.validate()?;
            if tls.client_cert_file != tls.client_key_file {
                return Err(Error::config(
                    "MongoDB's driver reads the TLS client certificate and its key from one PEM \
                     file: put both in one file and give its path twice",
                ));
            }
        }
        Ok(())
    }
}

/// The database a connection string names: the path after the host list, before the options
/// (`mongodb://[user:pass@]hosts/DATABASE?options`), percent-decoded.
fn database_in(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let rest = &rest[..rest.find(['?', '#']).unwrap_or(rest.len())];
    // The user part may hold a `/` (an unescaped password); the host list holds none.
    let hosts_start = rest.rfind('@').map_or(0, |at| at + 1);
    let path = &rest[hosts_start..];
    let name = &path[path.find('/')? + 1..];
    if name.is_empty() {
        return None;
    }
    let bytes = name.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

impl fmt::Debug for MongoConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MongoConfig")
            .field("url", &redact(&self.url))
            .field("database", &self.database)
            .field("collection", &self.collection)
            .field("write_concern", &self.write_concern)
            .field("timeout", &self.timeout)
            .field("tls", &self.tls)
            .finish()
    }
}

pub(crate) use elect_core::redact_url as redact;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_password_and_bad_names_are_refused() {
        let c = MongoConfig::new("mongodb://u:pw@h:1/?x=1");
        assert!(format!("{c:?}").contains("mongodb://u:***@h:1/?x=1"));
        for c in [
            MongoConfig::new("mongodb://h").database("a.b"),
            MongoConfig::new("mongodb://h").database(""),
            MongoConfig::new("mongodb://h").collection("x$y"),
            MongoConfig::new("mongodb://h").collection("system.users"),
            MongoConfig::new("mongodb://h").timeout(Duration::ZERO),
            MongoConfig::new("redis://h"),
        ] {
            assert!(
                matches!(c.validate(), Err(Error::InvalidConfig { .. })),
                "{c:?}"
            );
        }
        assert!(MongoConfig::new("mongodb://h").validate().is_ok());
    }

    #[test]
    fn the_database_comes_from_the_url() {
        // Issue 14, item 15: `mongodb://h/app` wrote to `elect.leases`.
        for (url, db) in [
            ("mongodb://h/app", "app"),
            ("mongodb://h:1,h2:2/app?replicaSet=rs", "app"),
            ("mongodb://u:p/w@h/app", "app"),
            ("mongodb+srv://u:pw@cluster.example/prod", "prod"),
            ("mongodb://h/my%2Ddb", "my-db"),
            ("mongodb://h", "elect"),
            ("mongodb://h/", "elect"),
            ("mongodb://h/?directConnection=true", "elect"),
        ] {
            assert_eq!(MongoConfig::new(url).database, db, "{url}");
        }
        assert_eq!(
            MongoConfig::new("mongodb://h/app")
                .database("other")
                .database,
            "other"
        );
    }
}
