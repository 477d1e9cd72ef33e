//! [`RedisStore`]: the [`LeaseStore`] on Redis.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use elect_core::{
    async_trait, Acquire, CandidateId, ChangeFeed, Claim, ElectionName, Error, LeaderInfo, Lease,
    LeaseStore, Release, Renewal, Result, Term,
};
use fred::prelude::*;
use fred::types::Value;
use tracing::debug;

use crate::config::{redact, RedisConfig};
use crate::feed::Feeds;
use crate::scripts::{Script, Scripts};

const STORE: &str = "redis";

/// A [`LeaseStore`] on Redis (standalone, or Cluster: an election's keys share one slot).
///
/// Every operation is one Lua script, so it is atomic on the server; expiry is the server's
/// `PEXPIRE`. Releases publish on a channel that waiting candidates subscribe to, so a
/// hand-over takes a round trip instead of a TTL. Clones share connections.
///
/// See the crate documentation for the key layout and an example.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    config: RedisConfig,
    pool: Pool,
    scripts: Scripts,
    feeds: Feeds,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &redact(&self.inner.config.url))
            .field("key_prefix", &self.inner.config.key_prefix)
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
        config.validate()?;
        let fred_config = fred_config(&config)?;
        let pool = builder(&fred_config, &config)
            .build_pool(config.pool_size)
            .map_err(|e| map_err("connect", e))?;
        match tokio::time::timeout(config.connect_timeout, pool.init()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(map_err("connect", e)),
            Err(_) => return Err(Error::timeout(STORE, "connect", config.connect_timeout)),
        }
        let store = RedisStore {
            inner: Arc::new(Inner {
                feeds: Feeds::new(builder(&fred_config, &config), config.command_timeout),
                config,
                pool,
                scripts: Scripts::new(),
            }),
        };
        for script in store.inner.scripts.all() {
            store.load(script).await?;
        }
        // Open the pub/sub connection now, so that a candidate's first subscribe costs two
        // round trips rather than a connection set-up within its request timeout.
        store.inner.feeds.client().await?;
        Ok(store)
    }

    /// The key of the lease hash of `election`: `{prefix}:{<election>}:lease`.
    pub fn lease_key(&self, election: &ElectionName) -> String {
        format!("{}:{{{election}}}:lease", self.inner.config.key_prefix)
    }

    /// The key of the term counter of `election`: `{prefix}:{<election>}:term`.
    pub fn term_key(&self, election: &ElectionName) -> String {
        format!("{}:{{{election}}}:term", self.inner.config.key_prefix)
    }

    /// The channel releases of `election` are published on: `{prefix}:{<election>}:released`.
    pub fn channel(&self, election: &ElectionName) -> String {
        format!("{}:{{{election}}}:released", self.inner.config.key_prefix)
    }

    /// The connection pool, for callers that want to share it.
    pub fn pool(&self) -> &Pool {
        &self.inner.pool
    }

    async fn load(&self, script: &Script) -> Result<String> {
        let sha: String = self
            .inner
            .pool
            .next()
            .script_load(script.source.as_str())
            .await
            .map_err(|e| map_err("script load", e))?;
        let _ = script.sha.set(sha.clone());
        Ok(sha)
    }

    /// Runs a script by SHA, loading it again when the server lost its script cache
    /// (`NOSCRIPT` after a restart or `SCRIPT FLUSH`).
    async fn run(
        &self,
        operation: &'static str,
        script: &Script,
        keys: Vec<String>,
        args: Vec<String>,
    ) -> Result<Vec<Value>> {
        let client = self.inner.pool.next();
        let sha = match script.sha.get() {
            Some(sha) => sha.clone(),
            None => self.load(script).await?,
        };
        let reply = match client
            .evalsha::<Value, _, _, _>(sha, keys.clone(), args.clone())
            .await
        {
            Err(e) if e.details().starts_with("NOSCRIPT") => {
                debug!(
                    script = script.name,
                    "script cache lost; sending the source"
                );
                client
                    .eval::<Value, _, _, _>(script.source.as_str(), keys, args)
                    .await
            }
            other => other,
        }
        .map_err(|e| map_err(operation, e))?;
        match reply {
            Value::Array(items) => Ok(items),
            other => Err(Error::Other {
                store: STORE,
                message: format!("{operation}: unexpected reply {other:?}"),
                source: None,
            }),
        }
    }
}

#[async_trait]
impl LeaseStore for RedisStore {
    async fn try_acquire(&self, claim: &Claim) -> Result<Acquire> {
        let election = &claim.election;
        let key = self.lease_key(election);
        let reply = self
            .run(
                "try_acquire",
                &self.inner.scripts.acquire,
                vec![
                    key.clone(),
                    self.term_key(election),
                    format!("{}:{{{election}}}:started", self.inner.config.key_prefix),
                ],
                vec![
                    claim.candidate.to_string(),
                    claim.nonce.to_string(),
                    claim.ttl.as_millis().to_string(),
                    if self.inner.config.restart_quarantine {
                        "1"
                    } else {
                        "0"
                    }
                    .to_owned(),
                ],
            )
            .await?;
        let reply = Reply::new(&key, reply);
        match reply.status()? {
            "granted" => Ok(Acquire::Granted(claim.granted(reply.term(1)?))),
            "held" => Ok(Acquire::Held(reply.leader()?)),
            "quarantined" => match reply.items.get(1) {
                Some(Value::Integer(ms)) if *ms >= 0 => Ok(Acquire::Held(LeaderInfo {
                    holder: CandidateId::new(crate::QUARANTINE_HOLDER)
                        .expect("a valid candidate id"),
                    term: Term(0),
                    remaining: Duration::from_millis(*ms as u64),
                })),
                _ => Err(reply.malformed(1)),
            },
            other => Err(reply.unexpected(other)),
        }
    }

    async fn renew(&self, lease: &Lease) -> Result<Renewal> {
        let key = self.lease_key(&lease.election);
        let reply = self
            .run(
                "renew",
                &self.inner.scripts.renew,
                vec![key.clone()],
                vec![
                    lease.holder.to_string(),
                    lease.nonce.to_string(),
                    lease.term.to_string(),
                    lease.ttl.as_millis().to_string(),
                ],
            )
            .await?;
        let reply = Reply::new(&key, reply);
        match reply.status()? {
            "renewed" => Ok(Renewal::Renewed(lease.clone())),
            "lost" => Ok(Renewal::Lost),
            other => Err(reply.unexpected(other)),
        }
    }

    async fn release(&self, lease: &Lease) -> Result<Release> {
        let key = self.lease_key(&lease.election);
        let reply = self
            .run(
                "release",
                &self.inner.scripts.release,
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
            .run(
                "leader",
                &self.inner.scripts.leader,
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
            .subscribe(&channel, self.inner.pool.next())
            .await
            .map(Some)
    }
}

/// A script's reply, read with the key it concerns for error messages.
struct Reply<'a> {
    key: &'a str,
    items: Vec<Value>,
}

impl<'a> Reply<'a> {
    fn new(key: &'a str, items: Vec<Value>) -> Self {
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
        match text.parse::<u64>() {
            Ok(t) if t > 0 => Ok(Term(t)),
            _ => Err(Error::corrupt(
                STORE,
                self.key,
                format!("term {text:?} is not a positive integer"),
            )),
        }
    }

    /// `{'held', holder, term, pttl}` as a [`LeaderInfo`].
    fn leader(&self) -> Result<LeaderInfo> {
        let holder = self.string(1)?;
        let holder = CandidateId::new(holder).map_err(|_| {
            Error::corrupt(
                STORE,
                self.key,
                format!("holder {holder:?} is not a valid candidate id"),
            )
        })?;
        let term = self.term(2)?;
        let pttl = match self.items.get(3) {
            Some(Value::Integer(ms)) if *ms >= 0 => *ms as u64,
            _ => return Err(self.malformed(3)),
        };
        Ok(LeaderInfo {
            holder,
            term,
            remaining: Duration::from_millis(pttl),
        })
    }

    fn malformed(&self, n: usize) -> Error {
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

pub(crate) fn fred_config(config: &RedisConfig) -> Result<Config> {
    Config::from_url(&config.url).map_err(|e| Error::InvalidConfig {
        message: format!("{}: {}", redact(&config.url), e.details()),
    })
}

pub(crate) fn builder(fred_config: &Config, config: &RedisConfig) -> Builder {
    let mut builder = Builder::from_config(fred_config.clone());
    let (connect, command) = (config.connect_timeout, config.command_timeout);
    builder
        .with_connection_config(move |c| {
            c.connection_timeout = connect;
            c.internal_command_timeout = command;
            // Never resend a command behind the caller's back after a reconnect: the elector
            // decides what to retry, and knows which requests may have landed.
            c.max_command_attempts = 1;
        })
        .with_performance_config(move |p| p.default_command_timeout = command)
        .set_policy(ReconnectPolicy::new_exponential(0, 50, 2_000, 2));
    builder
}

/// Maps a fred error: connection trouble and server states that pass (loading, failover) are
/// retryable; bad credentials and configuration are not.
pub(crate) fn map_err(operation: &'static str, e: fred::error::Error) -> Error {
    use fred::error::ErrorKind as K;
    let transient_reply = [
        "LOADING",
        "BUSY",
        "TRYAGAIN",
        "CLUSTERDOWN",
        "MASTERDOWN",
        "READONLY",
    ]
    .iter()
    .any(|p| e.details().starts_with(p));
    match e.kind() {
        K::IO
        | K::Timeout
        | K::Canceled
        | K::Backpressure
        | K::Cluster
        | K::Routing
        | K::Sentinel => Error::unavailable(STORE, operation, e),
        _ if transient_reply => Error::unavailable(STORE, operation, e),
        // fred reports "no connection to route this command to" (while it reconnects) as
        // `Unknown`; it is as transient as the IO error that caused it. Taken for fatal, it
        // stopped electors for good in the chaos tests.
        K::Unknown if e.details().starts_with("Failed to route command") => {
            Error::unavailable(STORE, operation, e)
        }
        K::Auth => Error::NotSetUp {
            store: STORE,
            message: format!("authentication failed: {}", e.details()),
        },
        K::Config | K::Url => Error::InvalidConfig {
            message: format!("redis: {}", e.details()),
        },
        _ => Error::other(STORE, e),
    }
}

#[cfg(test)]
mod tests {
    use super::map_err;
    use fred::error::{Error as FredError, ErrorKind};

    #[test]
    fn fred_routing_failures_while_reconnecting_are_retryable() {
        // What fred returns when no connection is up to take a command (seen in the chaos
        // tests after a connection reset): it must not stop the elector.
        let e = map_err(
            "renew",
            FredError::new(ErrorKind::Unknown, "Failed to route command."),
        );
        assert!(e.is_retryable(), "{e}");
        let other = map_err(
            "renew",
            FredError::new(ErrorKind::Unknown, "something else"),
        );
        assert!(!other.is_retryable(), "{other}");
        assert!(map_err("renew", FredError::new(ErrorKind::IO, "reset")).is_retryable());
    }
}
