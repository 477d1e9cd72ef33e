//! [`MongoConfig`]: where the coordinator lives.

use std::fmt;
use std::time::Duration;

use elect_core::{Error, Result};
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
    /// The database (default `elect`).
    pub database: String,
    /// The collection (default `leases`): one document per election.
    pub collection: String,
    /// Write concern of every write (default majority, so a granted lease survives a failover).
    pub write_concern: WriteConcern,
    /// How long connecting and each request may take (default 5 s).
    pub timeout: Duration,
}

impl MongoConfig {
    /// A configuration for `url` with the defaults.
    pub fn new(url: impl Into<String>) -> MongoConfig {
        MongoConfig {
            url: url.into(),
            database: "elect".into(),
            collection: "leases".into(),
            write_concern: WriteConcern::majority(),
            timeout: Duration::from_secs(5),
        }
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

    pub(crate) fn validate(&self) -> Result<()> {
        let invalid = |message: String| Err(Error::InvalidConfig { message });
        let db = &self.database;
        if db.is_empty()
            || db.len() > 63
            || db.contains([
                '/', '\\', '.', ' ', '"', '$', '*', '<', '>', ':', '|', '?', '\0',
            ])
        {
            return invalid(format!("database name {db:?} is not valid in MongoDB"));
        }
        let coll = &self.collection;
        if coll.is_empty()
            || coll.len() > 200
            || coll.contains(['$', '\0'])
            || coll.starts_with("system.")
        {
            return invalid(format!("collection name {coll:?} is not valid in MongoDB"));
        }
        if self.timeout.is_zero() {
            return invalid("timeout must not be zero".into());
        }
        if !self.url.starts_with("mongodb://") && !self.url.starts_with("mongodb+srv://") {
            return invalid(format!("{} is not a mongodb:// URL", redact(&self.url)));
        }
        Ok(())
    }
}

impl fmt::Debug for MongoConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MongoConfig")
            .field("url", &redact(&self.url))
            .field("database", &self.database)
            .field("collection", &self.collection)
            .field("write_concern", &self.write_concern)
            .field("timeout", &self.timeout)
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
}
