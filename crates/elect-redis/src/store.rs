//! [`RedisStore`]: the [`LeaseStore`] on Redis.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use elect_core::backend;
use elect_core::{
    async_trait, Acquire, CandidateId, ChangeFeed, Claim, ElectionName, Error, LeaderInfo, Lease,
    LeaseStore, Release, Renewal, Result, Term,
};
use fred::prelude::*;
use fred::types::Value;

use crate::client::Client;
use crate::config::{redact, RedisConfig};
use crate::error::STORE;
use crate::feed::Feeds;

/// A [`LeaseStore`] on Redis (standalone, or Cluster: an election's keys share one slot).
///
/// Every operation is one Lua script, so it is atomic on the server; expiry is the server's
/// `PEXPIRE`. Releases publish on a channel that waiting candidates subscribe to, so a
/// hand-over takes a round trip instead of a TTL. Clones share connections.
///
/// See the crate documentation for the key layout and an example.
#[derive(Clone)]
pub struct RedisStore {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) client: Client,
    feeds: Feeds,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &redact(&self.inner.client.config.url))
            .field("key_prefix", &self.inner.client.config.key_prefix)
            .finish()
    }
}

impl RedisStore {
    /// Connects to the server `url` names, with the default configuration.
    pub async fn connect_url(url: &str) -> Result<RedisStore> {
        Self::connect(RedisConfig::new(url)).await
    }

    /// Validates `config`, connects, and loads the scripts.
    pub async fn connect(config: RedisConfig) -> Result<RedisStore> {
        Self::open(Client::connect(config).await?).await
    }

    /// A store on the application's own fred `pool`, which must be connected (`init`ed): the
    /// store's requests go through it, and the pub/sub connection for hand-over notices is
    /// made with the pool's server, credentials and TLS settings. `config` gives the key
    /// prefix, the restart quarantine and the timeouts (for the scripts' loading and the
    /// subscriber); its URL is not used.
    ///
    /// What elect needs of the pool: a connection to a primary (a replica refuses the scripts'
    /// writes), and bounded commands — fred's `default_command_timeout` well under a third of
    /// the TTL, or none, since the elector bounds each request by itself. Retries after a
    /// reconnect (`max_command_attempts` above 1) are safe, because every write is guarded by
    /// the claim's nonce and term, but a retried renewal only lands later; elect's own pools
    /// make one attempt.
    ///
    /// ```no_run
    /// use elect_redis::fred::prelude::*;
    /// use elect_redis::{RedisConfig, RedisStore};
    ///
    /// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
    /// let pool = Builder::from_config(Config::from_url("redis://cache.internal:6379")?)
    ///     .build_pool(4)?;
    /// pool.init().await?;
    /// let store = RedisStore::from_pool(pool.clone(), RedisConfig::new("").key_prefix("billing")).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn from_pool(pool: Pool, config: RedisConfig) -> Result<RedisStore> {
        Self::open(Client::from_pool(pool, config).await?).await
    }

    async fn open(client: Client) -> Result<RedisStore> {
        let store = RedisStore {
            inner: Arc::new(Inner {
                feeds: Feeds::new(client.builder(), client.config.command_timeout),
                client,
            }),
        };
        // Open the pub/sub connection now, so that a candidate's first subscribe costs two
        // round trips rather than a connection set-up within its request timeout.
        store.inner.feeds.client().await?;
        Ok(store)
    }

    /// The key of the lease hash of `election`: `{prefix}:{<election>}:lease`.
    pub fn lease_key(&self, election: &ElectionName) -> String {
        format!(
            "{}:{{{election}}}:lease",
            self.inner.client.config.key_prefix
        )
    }

    /// The key of the term counter of `election`: `{prefix}:{<election>}:term`.
    pub fn term_key(&self, election: &ElectionName) -> String {
        format!(
            "{}:{{{election}}}:term",
            self.inner.client.config.key_prefix
        )
    }

    /// The channel releases of `election` are published on: `{prefix}:{<election>}:released`.
    pub fn channel(&self, election: &ElectionName) -> String {
        format!(
            "{}:{{{election}}}:released",
            self.inner.client.config.key_prefix
        )
    }

    /// The connection pool, for callers that want to share it.
    pub fn pool(&self) -> &Pool {
        &self.inner.client.pool
    }
}

impl RedisStore {
    /// The acquire script's keys and arguments for `claim`.
    pub(crate) fn acquire_items(&self, claim: &Claim) -> (Vec<String>, Vec<String>) {
        let election = &claim.election;
        let prefix = &self.inner.client.config.key_prefix;
        let flag = |on: bool| if on { "1" } else { "0" }.to_owned();
        (
            vec![
                self.lease_key(election),
                self.term_key(election),
                format!("{prefix}:{{{election}}}:started"),
                format!("{prefix}:{{{election}}}:master"),
            ],
            vec![
                claim.candidate.to_string(),
                claim.nonce.to_string(),
                claim.ttl.as_millis().to_string(),
                flag(self.inner.client.config.restart_quarantine),
                self.channel(election),
                claim.value.as_ref().map_or("", |v| v.as_str()).to_owned(),
                flag(claim.value.is_some()),
            ],
        )
    }

    /// The renew script's keys and arguments for `lease`.
    pub(crate) fn renew_items(&self, lease: &Lease) -> (Vec<String>, Vec<String>) {
        (
            vec![self.lease_key(&lease.election)],
            vec![
                lease.holder.to_string(),
                lease.nonce.to_string(),
                lease.term.to_string(),
                lease.ttl.as_millis().to_string(),
            ],
        )
    }
}

/// The acquire script's reply for `claim`, as the store's answer.
pub(crate) fn acquired(claim: &Claim, reply: Reply<'_>) -> Result<Acquire> {
    match reply.status()? {
        "granted" => Ok(Acquire::Granted(claim.granted(reply.term(1)?))),
        "held" => Ok(Acquire::Held(reply.leader()?)),
        "quarantined" => match reply.items.get(1) {
            Some(Value::Integer(ms)) if *ms >= 0 => Ok(Acquire::Held(LeaderInfo {
                holder: CandidateId::new(crate::QUARANTINE_HOLDER).expect("a valid candidate id"),
                term: Term(0),
                remaining: Duration::from_millis(*ms as u64),
                value: None,
            })),
            _ => Err(reply.malformed(1)),
        },
        other => Err(reply.unexpected(other)),
    }
}

/// The renew script's reply for `lease`, as the store's answer.
pub(crate) fn renewed(lease: &Lease, reply: Reply<'_>) -> Result<Renewal> {
    match reply.status()? {
        "renewed" => Ok(Renewal::Renewed(lease.clone())),
        "lost" => Ok(Renewal::Lost),
        other => Err(reply.unexpected(other)),
    }
}

#[async_trait]
impl LeaseStore for RedisStore {
    fn kind(&self) -> &'static str {
        STORE
    }

    async fn try_acquire(&self, claim: &Claim) -> Result<Acquire> {
        self.one(claim).await
    }

    async fn renew(&self, lease: &Lease) -> Result<Renewal> {
        self.one(lease).await
    }

    async fn release(&self, lease: &Lease) -> Result<Release> {
        let key = self.lease_key(&lease.election);
        let reply = self
            .inner
            .client
            .run(
                "release",
                &self.inner.client.scripts.release,
                vec![key.clone()],
                vec![
                    lease.holder.to_string(),
                    lease.nonce.to_string(),
                    lease.term.to_string(),
                    self.channel(&lease.election),
                ],
            )
            .await?;
        let reply = Reply::new(&key, reply);
        match reply.status()? {
            "released" => Ok(Release::Released),
            "not_held" => Ok(Release::NotHeld),
            other => Err(reply.unexpected(other)),
        }
    }

    async fn leader(&self, election: &ElectionName) -> Result<Option<LeaderInfo>> {
        let key = self.lease_key(election);
        let reply = self
            .inner
            .client
            .run(
                "leader",
                &self.inner.client.scripts.leader,
                vec![key.clone()],
                vec![],
            )
            .await?;
        let reply = Reply::new(&key, reply);
        match reply.status()? {
            "none" => Ok(None),
            "held" => Ok(Some(reply.leader()?)),
            other => Err(reply.unexpected(other)),
        }
    }

    async fn subscribe(&self, election: &ElectionName) -> Result<Option<ChangeFeed>> {
        let channel = self.channel(election);
        self.inner
            .feeds
            .subscribe(&channel, self.inner.client.pool.next())
            .await
            .map(Some)
    }
}

/// A script's reply, read with the key it concerns for error messages.
pub(crate) struct Reply<'a> {
    key: &'a str,
    items: Vec<Value>,
}

impl<'a> Reply<'a> {
    pub(crate) fn new(key: &'a str, items: Vec<Value>) -> Self {
        Reply { key, items }
    }

    /// The status word; a `corrupt` reply becomes [`Error::CorruptRecord`] naming the key.
    fn status(&self) -> Result<&str> {
        let status = self.string(0)?;
        if status == "corrupt" {
            let key = self.string(1)?;
            let why = self.string(2)?;
            return Err(Error::corrupt(STORE, key, why));
        }
        Ok(status)
    }

    fn string(&self, n: usize) -> Result<&str> {
        self.items
            .get(n)
            .and_then(Value::as_str_ref)
            .ok_or_else(|| self.malformed(n))
    }

    fn term(&self, n: usize) -> Result<Term> {
        let text = self.string(n)?;
        backend::term(
            STORE,
            self.key,
            text.parse().ok(),
            &format_args!("{text:?}"),
        )
    }

    /// `{'held', holder, term, pttl[, value]}` as a [`LeaderInfo`].
    fn leader(&self) -> Result<LeaderInfo> {
        let text = self.string(1)?;
        let holder = backend::holder(STORE, self.key, Some(text), &format_args!("{text:?}"))?;
        let term = self.term(2)?;
        let pttl = match self.items.get(3) {
            Some(Value::Integer(ms)) if *ms >= 0 => *ms as u64,
            _ => return Err(self.malformed(3)),
        };
        let value = match self.items.get(4) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.as_bytes()),
            Some(Value::Bytes(b)) => Some(&b[..]),
            Some(_) => return Err(self.malformed(4)),
        };
        Ok(LeaderInfo {
            holder,
            term,
            remaining: Duration::from_millis(pttl),
            value: backend::value(STORE, self.key, value)?,
        })
    }

    pub(crate) fn malformed(&self, n: usize) -> Error {
        Error::Other {
            store: STORE,
            message: format!(
                "malformed script reply for {} (item {n}): {:?}",
                self.key, self.items
            ),
            source: None,
        }
    }

    fn unexpected(&self, status: &str) -> Error {
        Error::Other {
            store: STORE,
            message: format!("unexpected script reply {status:?} for {}", self.key),
            source: None,
        }
    }
}

/// Reading a string item without allocating.
trait AsStrRef {
    fn as_str_ref(&self) -> Option<&str>;
}

impl AsStrRef for Value {
    fn as_str_ref(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            Value::Bytes(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }
}
