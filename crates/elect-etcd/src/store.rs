//! [`EtcdStore`]: the [`LeaseStore`] on etcd.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use elect_core::backend::timed;
use elect_core::{
    async_trait, Acquire, ChangeFeed, Claim, ElectionName, Error, LeaderInfo, Lease, LeaseStore,
    Release, Renewal, Result, Ttl,
};
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, PutOptions, Txn, TxnOp,
};
use etcd_client::{KeyValue, TxnOpResponse};
use tracing::debug;

use crate::config::EtcdConfig;
use crate::error::{map_err, none_if_lease_gone, resending_unsent, STORE};
use crate::feed::Watcher;
use crate::record::{self, Record};
use crate::vacancy::{granted_marker, parse_marker, released_key, Marker, Sightings};

/// A [`LeaseStore`] on etcd v3 (3.5 or newer; see the README for the lease fixes that matter).
///
/// Each election is one key, `prefix + election`, attached to an etcd lease with the claim's
/// TTL rounded up to whole seconds (etcd's resolution; etcd may raise it to its minimum, about
/// 1.5 × its election timeout). etcd deletes the key when the lease expires, by its leader's
/// clock, so client clocks do not matter; the holder's belief ends earlier, at its local
/// deadline computed from the claim's TTL.
///
/// - **Grant**: a lease, then one transaction that puts the key only if it does not exist
///   (`create_revision == 0`), and the election's marker `<key>#released` (`granted <raft term>
///   <ttl ms> <nonce> <holder>`, no lease). The **term is the key's create revision**: etcd's revision
///   counter is global to the cluster, raised by every write, replicated by Raft and kept in
///   every member's backend, so a later grant always gets a larger term, across etcd leader
///   changes and member restarts.
/// - **Renewal**: a lease keep-alive, after checking that the key is still this claim's with
///   this term; a lease that expired or was revoked is [`Renewal::Lost`].
/// - **Release**: one transaction deletes the key if it is still the one this grant created
///   (its mod revision is the term and its value this claim's) and writes the marker
///   `<key>#released` (the released term); the lease, holding nothing then, is revoked in the
///   background.
/// - **A key that vanished** without a release, its lease granted before an etcd leader change
///   (the marker, which every grant writes too, names the Raft term of the grant), may have
///   been revoked early by a stale etcd leader: candidates wait one more of its TTLs before
///   taking the election (see the README, "A stale etcd leader").
/// - **Hand-over**: one watch on the prefix per store wakes waiting candidates on every grant
///   and release; a cancelled or compacted watch ends the feeds.
///
/// Clones share the client and the watch.
#[derive(Clone)]
pub struct EtcdStore {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    config: EtcdConfig,
    watcher: Watcher,
    sightings: Sightings,
}

impl fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdStore")
            .field("config", &self.inner.config)
            .finish()
    }
}

/// The etcd lease TTL for `ttl`: whole seconds, rounded up, so that etcd never ends a lease
/// before its holder stops believing in it.
fn lease_seconds(ttl: Ttl) -> i64 {
    ttl.get().as_millis().div_ceil(1000) as i64
}

impl EtcdStore {
    /// Connects to the cluster `url` names (`etcd://host:port,host:port/prefix`).
    pub async fn connect_url(url: &str) -> Result<EtcdStore> {
        Self::connect(EtcdConfig::from_url(url)?).await
    }

    /// Validates `config`, connects, and checks with one read under the prefix that the
    /// cluster answers and lets this user read there.
    pub async fn connect(config: EtcdConfig) -> Result<EtcdStore> {
        config.validate()?;
        let options = connect_options(&config)?;
        let connected = async {
            let client = timed(STORE, "connect", config.timeout, async {
                Client::connect(&config.endpoints, Some(options))
                    .await
                    .map_err(|e| map_err("connect", e))
            })
            .await?;
            Self::from_client(client, config.clone()).await
        };
        match connected.await {
            #[cfg(feature = "tls")]
            Err(e) if e.is_retryable() && config.tls.is_some() => {
                Err(crate::tls::diagnose(&config).await.unwrap_or(e))
            }
            other => other,
        }
    }

    /// A store on the application's own etcd `client`. `config` gives the prefix and the
    /// request timeout; its endpoints, user and TLS settings are not used.
    ///
    /// What elect needs of the client: permission to read, write and watch under the prefix
    /// and to grant, keep alive and revoke leases. A client made with
    /// `ConnectOptions::with_require_leader(true)` lets a partitioned member cancel elect's
    /// watch at once instead of leaving it silent.
    pub async fn from_client(client: Client, config: EtcdConfig) -> Result<EtcdStore> {
        let watcher = Watcher::new(client.clone(), config.clone());
        let store = EtcdStore {
            inner: Arc::new(Inner {
                client,
                config,
                watcher,
                sightings: Sightings::default(),
            }),
        };
        store.ping().await?;
        Ok(store)
    }

    /// The configuration (endpoints, prefix, timeout).
    pub fn config(&self) -> &EtcdConfig {
        &self.inner.config
    }

    /// The etcd client this store uses (clones share its connections).
    pub fn client(&self) -> Client {
        self.inner.client.clone()
    }

    async fn ping(&self) -> Result<()> {
        let key = self.inner.config.key("");
        self.request("connect", |mut c| {
            let key = key.clone();
            async move {
                c.get(key, Some(GetOptions::new().with_count_only()))
                    .await
                    .map(drop)
            }
        })
        .await
    }

    /// One request under the configured timeout, sent again when it reached no member
    /// ([`resending_unsent`]), its driver error mapped.
    async fn request<T, F, Fut>(&self, operation: &'static str, f: F) -> Result<T>
    where
        F: Fn(Client) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        let client = &self.inner.client;
        timed(STORE, operation, self.inner.config.timeout, async move {
            resending_unsent(|| f(client.clone()))
                .await
                .map_err(|e| map_err(operation, e))
        })
        .await
    }

    /// The record at `key`, if any, and with `marker` the election's marker (its last grant
    /// or release), if any, from one read; a record seen is remembered (see [`Sightings`]).
    /// Only a candidate about to take a missing key needs the marker: renewals and observers
    /// read the key alone.
    async fn read(&self, operation: &'static str, key: &str, marker: bool) -> Result<Read> {
        let mut gets = vec![TxnOp::get(key, None)];
        if marker {
            gets.push(TxnOp::get(released_key(key), None));
        }
        let txn = Txn::new().and_then(gets);
        let resp = self
            .request(operation, |mut c| {
                let txn = txn.clone();
                async move { c.txn(txn).await }
            })
            .await?;
        let raft_term = resp.header().map_or(0, |h| h.raft_term());
        let mut gets = resp.op_responses().into_iter().filter_map(|r| match r {
            TxnOpResponse::Get(mut get) => Some(get.take_kvs().into_iter().next()),
            _ => None,
        });
        let record = gets
            .next()
            .flatten()
            .map(|kv| decode(key, &kv))
            .transpose()?;
        let marker = gets
            .next()
            .flatten()
            .map(|kv| parse_marker(kv.value(), kv.mod_revision()));
        if let Some(record) = &record {
            self.inner.sightings.saw(key, record);
        }
        Ok(Read {
            record,
            marker,
            raft_term,
        })
    }

    /// How long the etcd lease `id` has left, rounded up to whole seconds and at most its
    /// granted TTL; `None` when it no longer exists.
    async fn remaining(&self, operation: &'static str, id: i64) -> Result<Option<Duration>> {
        let resp = self
            .request(operation, |mut c| async move {
                none_if_lease_gone(c.lease_time_to_live(id, None).await)
            })
            .await?;
        Ok(resp.filter(|resp| resp.ttl() >= 0).map(|resp| {
            // etcd truncates to whole seconds: the lease has [ttl, ttl + 1) s left.
            Duration::from_secs((resp.ttl() + 1).min(resp.granted_ttl().max(1)) as u64)
        }))
    }

    /// Extends the etcd lease `id` by its TTL; `false` when it no longer exists.
    async fn keep_alive(&self, operation: &'static str, id: i64) -> Result<bool> {
        // The first answer was read inside `lease_keep_alive`: an answer means the lease
        // lives on.
        let answer = self
            .request(operation, |mut c| async move {
                none_if_lease_gone(c.lease_keep_alive(id).await)
            })
            .await?;
        Ok(answer.is_some())
    }

    /// Revokes the etcd lease `id` (deleting its keys); `false` when it no longer exists.
    async fn revoke(&self, operation: &'static str, id: i64) -> Result<bool> {
        let answer = self
            .request(operation, |mut c| async move {
                none_if_lease_gone(c.lease_revoke(id).await)
            })
            .await?;
        Ok(answer.is_some())
    }

    async fn held(&self, record: Record) -> Result<Option<LeaderInfo>> {
        Ok(self
            .remaining("try_acquire", record.lease)
            .await?
            .map(|remaining| record.leader(remaining)))
    }

    /// A new lease and a transaction that puts the key only where none exists.
    async fn grant(&self, claim: &Claim, key: &str) -> Result<Acquire> {
        let seconds = lease_seconds(claim.ttl);
        let lease = self
            .request("try_acquire", |mut c| async move {
                c.lease_grant(seconds, None).await
            })
            .await?;
        if lease.ttl() < seconds {
            // etcd only ever raises a TTL (to its minimum); a shorter one would break the
            // holder's deadline.
            return Err(Error::Internal {
                message: format!(
                    "etcd granted a {} s lease for a {} s request",
                    lease.ttl(),
                    seconds
                ),
            });
        }
        let id = lease.id();
        // The marker records the grant with the Raft term etcd answered the lease grant under
        // (the transaction's can only be the same or later): see `vacancy`.
        let raft_term = lease.header().map_or(0, |h| h.raft_term());
        let txn = Txn::new()
            .when([Compare::create_revision(key, CompareOp::Equal, 0)])
            .and_then([
                TxnOp::put(
                    key,
                    record::encode(claim),
                    Some(PutOptions::new().with_lease(id)),
                ),
                TxnOp::put(released_key(key), granted_marker(claim, raft_term), None),
            ])
            .or_else([TxnOp::get(key, None)]);
        let answer = self
            .request("try_acquire", |mut c| {
                let txn = txn.clone();
                async move { c.txn(txn).await }
            })
            .await;
        let resp = match answer {
            Ok(resp) => resp,
            Err(e) => {
                self.revoke_in_background("try_acquire", id);
                return Err(e);
            }
        };
        if resp.succeeded() {
            let revision = resp.header().map_or(0, |h| h.revision());
            let term = elect_core::backend::term(
                STORE,
                key,
                Some(revision as i128),
                &format!("revision {revision}"),
            )?;
            self.inner.sightings.forget(key);
            debug!(key, term = term.0, lease = id, "etcd: granted");
            return Ok(Acquire::Granted(claim.granted(term)));
        }
        self.revoke_in_background("try_acquire", id);
        let kv = resp.op_responses().into_iter().find_map(|r| match r {
            TxnOpResponse::Get(mut get) => get.take_kvs().into_iter().next(),
            _ => None,
        });
        match kv {
            // Someone granted it between our read and our transaction: a fresh lease, whose
            // remaining time is its whole TTL.
            Some(kv) => {
                let record = decode(key, &kv)?;
                self.inner.sightings.saw(key, &record);
                Ok(Acquire::Held(record.just_granted()))
            }
            // Taken and gone again: let the caller ask again.
            None => Err(Error::Unavailable {
                store: STORE,
                operation: "try_acquire",
                message: "the election changed hands during the grant; try again".into(),
                source: None,
            }),
        }
    }

    /// A lease of ours that holds no key: revoked without making the caller wait (it would
    /// expire on its own within its TTL).
    fn revoke_in_background(&self, operation: &'static str, id: i64) {
        let store = self.clone();
        tokio::spawn(async move {
            let _ = store.revoke(operation, id).await;
        });
    }
}

/// What one read of an election found.
struct Read {
    record: Option<Record>,
    /// The election's marker (the last grant or release), if there is one and it was asked
    /// for.
    marker: Option<Marker>,
    /// etcd's Raft term in the reply.
    raft_term: u64,
}

fn connect_options(config: &EtcdConfig) -> Result<ConnectOptions> {
    let mut options = ConnectOptions::new()
        .with_connect_timeout(config.timeout)
        .with_timeout(config.timeout)
        // HTTP/2 pings find a dead connection (a watch would otherwise wait on it forever).
        .with_keep_alive(Duration::from_secs(1), config.timeout)
        .with_keep_alive_while_idle(true)
        // A member cut off from its leader cancels our watch instead of going quiet.
        .with_require_leader(true);
    if let Some((name, password)) = &config.user {
        options = options.with_user(name.clone(), password.clone());
    }
    #[cfg(feature = "tls")]
    if let Some(files) = &config.tls {
        options = options.with_tls(crate::tls::options(files)?);
    }
    Ok(options)
}

fn decode(key: &str, kv: &KeyValue) -> Result<Record> {
    record::decode(key, kv.value(), kv.create_revision(), kv.lease())
}

#[async_trait]
impl LeaseStore for EtcdStore {
    async fn try_acquire(&self, claim: &Claim) -> Result<Acquire> {
        let key = self.inner.config.key(claim.election.as_str());
        // Woken by a release the watch saw: straight to the grant, without a read (the
        // grant's transaction still takes only a vacant key).
        if let Some(term) = self.inner.watcher.released(claim.election.as_str()) {
            if self.inner.sightings.released(&key, term) {
                return self.grant(claim, &key).await;
            }
        }
        let mut read = self.read("try_acquire", &key, true).await?;
        if let Some(record) = read.record.take() {
            if record.granted_to(claim) {
                if self.keep_alive("try_acquire", record.lease).await? {
                    return Ok(Acquire::Granted(claim.granted(record.term)));
                }
                // Expired while we looked (this claim's own: nobody else believes in it).
                return self.grant(claim, &key).await;
            }
            if let Some(info) = self.held(record).await? {
                return Ok(Acquire::Held(info));
            }
            // The holder's lease ended between the read and the question, and its key with
            // it. Not granted at once: the lease may have been revoked early by a stale etcd
            // leader while its holder keeps it alive (a 10-minute chaos run found this path
            // bypassing the guard, twice: 340–370 ms of two believers). Read again, and let
            // the marker and etcd's Raft term decide as for any missing key.
            read = self.read("try_acquire", &key, true).await?;
            if let Some(record) = read.record {
                // Someone was granted it meanwhile: a fresh lease.
                return Ok(Acquire::Held(record.just_granted()));
            }
        }
        let now = std::time::Instant::now();
        if let Some(old) =
            self.inner
                .sightings
                .vacant(&key, claim, read.marker.as_ref(), read.raft_term, now)
        {
            return Ok(Acquire::Held(old));
        }
        self.grant(claim, &key).await
    }

    async fn renew(&self, lease: &Lease) -> Result<Renewal> {
        let key = self.inner.config.key(lease.election.as_str());
        let Some(record) = self.read("renew", &key, false).await?.record else {
            return Ok(Renewal::Lost);
        };
        if record.holder != lease.holder
            || record.nonce != lease.nonce.get()
            || record.term != lease.term
        {
            return Ok(Renewal::Lost);
        }
        Ok(if self.keep_alive("renew", record.lease).await? {
            Renewal::Renewed(lease.clone())
        } else {
            Renewal::Lost
        })
    }

    async fn release(&self, lease: &Lease) -> Result<Release> {
        let key = self.inner.config.key(lease.election.as_str());
        let Ok(revision) = i64::try_from(lease.term.0) else {
            return Ok(Release::NotHeld);
        };
        // One transaction: delete the key only if it is the one this lease's grant created
        // (it was written at revision `term` and never since) and holds this claim. The
        // deletion is the hand-over notice; the lease, holding nothing now, is revoked after
        // the caller has its answer (it would expire within its TTL anyway).
        let txn = Txn::new()
            .when([
                Compare::mod_revision(key.as_str(), CompareOp::Equal, revision),
                Compare::value(key.as_str(), CompareOp::Equal, record::encode_lease(lease)),
            ])
            .and_then([
                TxnOp::delete(key.as_str(), Some(DeleteOptions::new().with_prev_key())),
                TxnOp::put(released_key(&key), revision.to_string(), None),
            ]);
        let resp = self
            .request("release", |mut c| {
                let txn = txn.clone();
                async move { c.txn(txn).await }
            })
            .await?;
        if !resp.succeeded() {
            return Ok(Release::NotHeld);
        }
        let held_by = resp.op_responses().into_iter().find_map(|r| match r {
            TxnOpResponse::Delete(delete) => delete.prev_kvs().first().map(KeyValue::lease),
            _ => None,
        });
        if let Some(id) = held_by.filter(|id| *id != 0) {
            self.revoke_in_background("release", id);
        }
        debug!(key, term = lease.term.0, "etcd: released");
        Ok(Release::Released)
    }

    async fn leader(&self, election: &ElectionName) -> Result<Option<LeaderInfo>> {
        let key = self.inner.config.key(election.as_str());
        let Some(record) = self.read("leader", &key, false).await?.record else {
            return Ok(None);
        };
        Ok(self
            .remaining("leader", record.lease)
            .await?
            .map(|remaining| record.leader(remaining)))
    }

    async fn subscribe(&self, election: &ElectionName) -> Result<Option<ChangeFeed>> {
        self.inner.watcher.subscribe(election).await.map(Some)
    }

    fn kind(&self) -> &'static str {
        "etcd"
    }
}
