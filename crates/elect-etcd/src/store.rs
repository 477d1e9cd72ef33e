//! [`EtcdStore`]: the [`LeaseStore`] on etcd.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use elect_core::backend::timed;
use elect_core::{
    async_trait, Acquire, ChangeFeed, Claim, ElectionName, Error, LeaderInfo, Lease, LeaseStore,
    Release, Renewal, Result, Ttl,
};
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, LeaseGrantOptions,
    PutOptions, Txn, TxnOp,
};
use etcd_client::{KeyValue, TxnOpResponse};
use tracing::debug;

use crate::config::EtcdConfig;
use crate::error::{map_err, none_if_lease_exists, none_if_lease_gone, resending_unsent, STORE};
use crate::feed::Watcher;
use crate::record::{self, Record};
use crate::vacancy::{granted_marker, released_key, Marker, Sightings};

/// A [`LeaseStore`] on etcd v3 (3.5 or newer; see the README for the lease fixes that matter).
///
/// Each election is one key, `prefix + election`, attached to an etcd lease with the claim's
/// TTL rounded up to whole seconds (etcd's resolution; etcd may raise it to its minimum, about
/// 1.5 × its election timeout). etcd deletes the key when the lease expires, by its leader's
/// clock, so client clocks do not matter; the holder's belief ends earlier, at its local
/// deadline computed from the claim's TTL.
///
/// - **Grant**: a lease (an ID chosen here) and, sent right behind it in one Raft round, one
///   transaction that puts the key only if it does not exist (`create_revision == 0`), and the election's marker `<key>#released` (`granted <raft term>
///   <ttl ms> <nonce> <holder>`, no lease). The **term is the key's create revision**: etcd's revision
///   counter is global to the cluster, raised by every write, replicated by Raft and kept in
///   every member's backend, so a later grant always gets a larger term, across etcd leader
///   changes and member restarts.
/// - **Renewal**: a lease keep-alive, after checking that the key is still this claim's with
///   this term; a lease that expired or was revoked is [`Renewal::Lost`].
/// - **Release**: one transaction deletes the key if it is still the one this grant created
///   (its mod revision is the term and its value this claim's) and writes the marker
///   `<key>#released` (the released term); the lease is revoked in the background once it
///   holds no key (a [batch grant](elect_core::batch::BatchStore)'s lease is shared by the
///   elections granted together).
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
    /// The highest etcd Raft term in a reply this store has seen: what a grant's marker names
    /// before the grant's own answer is back.
    raft_term: AtomicU64,
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
pub(crate) fn lease_seconds(ttl: Ttl) -> i64 {
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
                raft_term: AtomicU64::new(0),
            }),
        };
        store.ping().await?;
        Ok(store)
    }

    /// What this store remembers of the holders it saw (see [`Sightings`]).
    pub(crate) fn sightings(&self) -> &Sightings {
        &self.inner.sightings
    }

    /// A reply came under etcd Raft term `raft_term`.
    pub(crate) fn saw_raft_term(&self, raft_term: u64) {
        self.inner.raft_term.fetch_max(raft_term, Ordering::Relaxed);
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
        let resp = self
            .request("connect", |mut c| {
                let key = key.clone();
                async move { c.get(key, Some(GetOptions::new().with_count_only())).await }
            })
            .await?;
        let raft_term = resp.header().map_or(0, |h| h.raft_term());
        self.inner.raft_term.fetch_max(raft_term, Ordering::Relaxed);
        Ok(())
    }

    /// One request under the configured timeout, sent again when it reached no member
    /// ([`resending_unsent`]), its driver error mapped.
    pub(crate) async fn request<T, F, Fut>(&self, operation: &'static str, f: F) -> Result<T>
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
        let (mut found, raft_term) = self
            .read_many(operation, std::slice::from_ref(&key.to_owned()), marker)
            .await?;
        let found = found.pop().ok_or_else(|| Error::Internal {
            message: "etcd answered a read without its key".into(),
        })?;
        Ok(Read {
            record: found.record?,
            marker: found.marker,
            raft_term,
        })
    }

    /// How long the etcd lease `id` has left, rounded up to whole seconds and at most its
    /// granted TTL; `None` when it no longer exists.
    pub(crate) async fn remaining(
        &self,
        operation: &'static str,
        id: i64,
    ) -> Result<Option<Duration>> {
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
    pub(crate) async fn keep_alive(&self, operation: &'static str, id: i64) -> Result<bool> {
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
    pub(crate) async fn revoke(&self, operation: &'static str, id: i64) -> Result<bool> {
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

    /// A new lease and a transaction that puts the key only where none exists, sent together.
    ///
    /// The `LeaseGrant` carries a lease ID chosen here and the `Txn` that attaches the key to
    /// it goes right behind it, without waiting for its answer: etcd commits both in one Raft
    /// round (one fsync instead of two, on a hand-over's path). The `Txn` is only ours when
    /// etcd applied it after the grant, which the answers' revisions tell: the grant's header
    /// revision is below the revision the `Txn` wrote. Otherwise (the `Txn` overtook the grant
    /// and found no lease, or — a 63-bit ID collision — found someone else's lease of that ID)
    /// the `Txn` is sent again on its own after the grant's answer, as a sequential grant
    /// would.
    async fn grant(&self, claim: &Claim, key: &str) -> Result<Acquire> {
        let seconds = lease_seconds(claim.ttl);
        let id = lease_id();
        #[cfg(test)]
        let id = tests::NEXT_LEASE_ID.with(|next| next.take()).unwrap_or(id);
        #[cfg(test)]
        let hold_grant = tests::GRANT_DELAY.with(|delay| delay.take());
        // The marker records a Raft term at or before the grant: the last one this store saw
        // (the grant's own answer is not back yet when the `Txn` leaves). A lower term than
        // the grant's only makes the guard wait (see `vacancy`); it is mended below.
        let marker_term = self.inner.raft_term.load(Ordering::Relaxed);
        let txn = create_txn(claim, key, id, marker_term);
        let (lease, put) = tokio::join!(
            self.request("try_acquire", |mut c| async move {
                #[cfg(test)]
                if let Some(delay) = hold_grant {
                    tokio::time::sleep(delay).await;
                }
                none_if_lease_exists(
                    c.lease_grant(seconds, Some(LeaseGrantOptions::new().with_id(id)))
                        .await,
                )
            }),
            async {
                // One turn of the scheduler lets the driver's channel task take the grant
                // first: without it the `Txn` reached etcd first in ~80 % of 100 grants
                // measured here, with it in ~5–10 %. (Correctness does not depend on it.)
                tokio::task::yield_now().await;
                self.request("try_acquire", |mut c| {
                    let txn = txn.clone();
                    async move { none_if_lease_gone(c.txn(txn).await) }
                })
                .await
            },
        );
        // A key the `Txn` put, if the grant turns out not to be ours: taken back.
        let put_revision = match &put {
            Ok(Some(put)) if put.succeeded() => put.header().map(|h| h.revision()),
            _ => None,
        };
        let lease = match lease {
            Ok(Some(lease)) => lease,
            // Another lease has this ID (a 63-bit collision): not ours to revoke. The `Txn`
            // may have put the key under it.
            Ok(None) => {
                if let Some(revision) = put_revision {
                    self.take_back(key, revision);
                }
                return Err(Error::Unavailable {
                    store: STORE,
                    operation: "try_acquire",
                    message: format!("etcd already has a lease with the ID {id}; try again"),
                    source: None,
                });
            }
            Err(e) => {
                // Not granted, or its answer lost: a key the `Txn` may have put is taken
                // back, and a lease that may exist is revoked.
                if let Some(revision) = put_revision {
                    self.take_back(key, revision);
                }
                self.revoke_in_background("try_acquire", id);
                return Err(e);
            }
        };
        let granted_at = lease.header().map_or(i64::MAX, |h| h.revision());
        let raft_term = lease.header().map_or(0, |h| h.raft_term());
        self.inner.raft_term.fetch_max(raft_term, Ordering::Relaxed);
        let short = (lease.ttl() < seconds).then(|| Error::Internal {
            // etcd only ever raises a TTL (to its minimum); a shorter one would break the
            // holder's deadline.
            message: format!(
                "etcd granted a {} s lease for a {} s request",
                lease.ttl(),
                seconds
            ),
        });
        let resp = match put {
            // Not put (the key exists), or put after the grant, on this lease.
            Ok(Some(resp)) if put_revision.is_none_or(|put| put > granted_at) => resp,
            // Applied before the grant: it found no lease, or (a collision) another lease of
            // this ID, which ended before the grant could take its ID, taking the key with it
            // (taken back all the same). Sent again, now that the lease exists.
            Ok(_) => {
                if let Some(revision) = put_revision {
                    self.take_back(key, revision);
                }
                debug!(
                    key,
                    lease = id,
                    "etcd: the transaction overtook its lease; sent again"
                );
                let answer = self
                    .request("try_acquire", |mut c| {
                        let txn = txn.clone();
                        async move { c.txn(txn).await }
                    })
                    .await;
                match answer {
                    Ok(resp) => resp,
                    Err(e) => {
                        self.revoke_in_background("try_acquire", id);
                        return Err(e);
                    }
                }
            }
            Err(e) => {
                self.revoke_in_background("try_acquire", id);
                return Err(e);
            }
        };
        if resp.succeeded() {
            let revision = resp.header().map_or(0, |h| h.revision());
            if let Some(e) = short {
                self.take_back(key, revision);
                self.revoke_in_background("try_acquire", id);
                return Err(e);
            }
            if raft_term != marker_term {
                if let Err(e) = self.mend_marker(claim, key, revision, raft_term).await {
                    self.revoke_in_background("try_acquire", id);
                    return Err(e);
                }
            }
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

    /// Rewrites the marker of the grant that created `key` at `revision` with the Raft term
    /// etcd answered its `LeaseGrant` under, when the marker written beside the key named
    /// another (see [`EtcdStore::grant`]).
    async fn mend_marker(
        &self,
        claim: &Claim,
        key: &str,
        revision: i64,
        raft_term: u64,
    ) -> Result<()> {
        let txn = Txn::new()
            .when([Compare::mod_revision(key, CompareOp::Equal, revision)])
            .and_then([TxnOp::put(
                released_key(key),
                granted_marker(claim, raft_term),
                None,
            )]);
        let resp = self
            .request("try_acquire", |mut c| {
                let txn = txn.clone();
                async move { c.txn(txn).await }
            })
            .await?;
        if resp.succeeded() {
            return Ok(());
        }
        Err(Error::Unavailable {
            store: STORE,
            operation: "try_acquire",
            message: "the election changed hands during the grant; try again".into(),
            source: None,
        })
    }

    /// Deletes `key` if it is still the one a `Txn` of ours wrote at `revision`, without
    /// making the caller wait: a key put under a lease that turned out not to be ours.
    fn take_back(&self, key: &str, revision: i64) {
        let store = self.clone();
        let txn = Txn::new()
            .when([Compare::mod_revision(key, CompareOp::Equal, revision)])
            .and_then([TxnOp::delete(key, None)]);
        tokio::spawn(async move {
            let _ = store
                .request("try_acquire", |mut c| {
                    let txn = txn.clone();
                    async move { c.txn(txn).await }
                })
                .await;
        });
    }

    /// A lease of ours that holds no key: revoked without making the caller wait (it would
    /// expire on its own within its TTL).
    pub(crate) fn revoke_in_background(&self, operation: &'static str, id: i64) {
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

/// A lease ID for a grant: random, positive (etcd's IDs are), never 0 (which asks etcd to
/// choose).
pub(crate) fn lease_id() -> i64 {
    let id = (elect_core::rand::Rng::from_entropy().next_u64() >> 1) as i64;
    id.max(1)
}

/// The grant's transaction: puts `key` for `claim` under the lease `id` and the election's
/// marker (naming Raft term `raft_term`) only if `key` does not exist; else reads `key`.
pub(crate) fn create_txn(claim: &Claim, key: &str, id: i64, raft_term: u64) -> Txn {
    Txn::new()
        .when([Compare::create_revision(key, CompareOp::Equal, 0)])
        .and_then([
            TxnOp::put(
                key,
                record::encode(claim),
                Some(PutOptions::new().with_lease(id)),
            ),
            TxnOp::put(released_key(key), granted_marker(claim, raft_term), None),
        ])
        .or_else([TxnOp::get(key, None)])
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

pub(crate) fn decode(key: &str, kv: &KeyValue) -> Result<Record> {
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
        // Revoked unless a batch grant's siblings still hold keys under it.
        if let Some(id) = held_by.filter(|id| *id != 0) {
            self.revoke_if_empty(id);
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

#[cfg(test)]
mod tests {
    //! The grant's two requests in every order they can be applied in, on a real etcd (the
    //! order is forced here by holding the `LeaseGrant` back).

    use std::cell::Cell;

    use std::time::Instant;

    use elect_core::{CandidateId, Term};
    use etcd_client::LeaseTimeToLiveOptions;

    use super::*;
    use crate::vacancy::parse_marker;

    thread_local! {
        /// The lease ID the next grant on this thread uses instead of a random one.
        pub(super) static NEXT_LEASE_ID: Cell<Option<i64>> = const { Cell::new(None) };
        /// How long the next grant on this thread holds its `LeaseGrant` back.
        pub(super) static GRANT_DELAY: Cell<Option<Duration>> = const { Cell::new(None) };
    }

    async fn store() -> EtcdStore {
        let url = tokio::task::spawn_blocking(elect_tests::etcd::shared_url)
            .await
            .expect("the test etcd starts");
        let prefix = format!("{}/", elect_tests::unique_name("grant"));
        let config = EtcdConfig::from_url(&url).expect("URL").prefix(prefix);
        EtcdStore::connect(config).await.expect("connect")
    }

    fn claim(who: &str) -> Claim {
        Claim::new(
            ElectionName::new("jobs").unwrap(),
            CandidateId::new(who).unwrap(),
            Ttl::from_millis(2000).unwrap(),
        )
    }

    /// The key's value, lease and create revision, if it exists.
    async fn key_of(store: &EtcdStore, claim: &Claim) -> Option<(Vec<u8>, i64, i64)> {
        let key = store.config().key(claim.election.as_str());
        let mut got = store.client().get(key, None).await.expect("get");
        got.take_kvs()
            .into_iter()
            .next()
            .map(|kv| (kv.value().to_vec(), kv.lease(), kv.create_revision()))
    }

    async fn lease_ttl(store: &EtcdStore, id: i64) -> i64 {
        store
            .client()
            .lease_time_to_live(id, Some(LeaseTimeToLiveOptions::new()))
            .await
            .map_or(-1, |r| r.ttl())
    }

    fn granted_term(answer: Acquire) -> u64 {
        match answer {
            Acquire::Granted(lease) => lease.term.0,
            other => panic!("expected a grant, got {other:?}"),
        }
    }

    /// The `Txn` reaches etcd before its lease exists ("lease not found"): it is sent again
    /// once the grant is answered, and the key is ours, under our lease, its term its create
    /// revision. The marker, written with a Raft term older than the grant's, is mended.
    #[tokio::test]
    async fn a_transaction_that_overtakes_its_lease_is_sent_again() {
        let store = store().await;
        let a = claim("a");
        store.inner.raft_term.store(0, Ordering::Relaxed);
        NEXT_LEASE_ID.with(|next| next.set(Some(lease_id())));
        let id = NEXT_LEASE_ID.with(|next| next.get()).unwrap();
        GRANT_DELAY.with(|delay| delay.set(Some(Duration::from_millis(200))));
        let term = granted_term(store.try_acquire(&a).await.expect("granted"));
        let (value, lease, created) = key_of(&store, &a).await.expect("the key is there");
        assert_eq!(value, record::encode(&a));
        assert_eq!((lease, created as u64), (id, term));
        assert!(lease_ttl(&store, id).await >= 1, "our lease lives");
        let key = store.config().key("jobs");
        let mut marker = store.client().get(released_key(&key), None).await.unwrap();
        let raft_term = marker.header().unwrap().raft_term();
        let marker = marker.take_kvs().remove(0);
        assert_eq!(
            parse_marker(marker.value(), marker.mod_revision()),
            parse_marker(granted_marker(&a, raft_term).as_bytes(), term as i64),
            "the marker names the grant's Raft term, not the 0 the store started from"
        );
        let renewed = store.renew(&a.granted(Term(term))).await.unwrap();
        assert!(matches!(renewed, Renewal::Renewed(_)), "{renewed:?}");
    }

    /// Someone else's live lease has the ID the grant chose: the grant fails with a typed
    /// error, the other lease is left alone, the key the `Txn` put under it is taken back,
    /// and the next attempt is granted.
    #[tokio::test]
    async fn a_lease_id_someone_else_holds_is_not_used() {
        let store = store().await;
        let a = claim("a");
        let foreign = lease_id();
        store
            .client()
            .lease_grant(60, Some(LeaseGrantOptions::new().with_id(foreign)))
            .await
            .expect("a foreign lease");
        NEXT_LEASE_ID.with(|next| next.set(Some(foreign)));
        let err = store.try_acquire(&a).await.expect_err("not granted");
        assert!(
            matches!(err, Error::Unavailable { .. })
                && err.to_string().contains("already has a lease"),
            "{err}"
        );
        assert!(
            lease_ttl(&store, foreign).await > 50,
            "the foreign lease lives on"
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        while key_of(&store, &a).await.is_some() {
            assert!(
                Instant::now() < deadline,
                "the key put under the foreign lease stays"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        granted_term(store.try_acquire(&a).await.expect("granted"));
        let (_, lease, _) = key_of(&store, &a).await.unwrap();
        assert_ne!(lease, foreign);
    }

    /// The `Txn` reaches etcd while someone else's lease has the chosen ID and is applied
    /// under it; that lease ends (taking the key) before the grant, which then succeeds. The
    /// revisions show the `Txn` came first: it is sent again, under the lease now ours.
    #[tokio::test]
    async fn a_transaction_applied_under_a_foreign_lease_of_its_id_is_sent_again() {
        let store = store().await;
        let a = claim("a");
        let foreign = lease_id();
        let client = store.client();
        client
            .clone()
            .lease_grant(60, Some(LeaseGrantOptions::new().with_id(foreign)))
            .await
            .expect("a foreign lease");
        NEXT_LEASE_ID.with(|next| next.set(Some(foreign)));
        GRANT_DELAY.with(|delay| delay.set(Some(Duration::from_millis(400))));
        let revoke = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(150)).await;
            client.clone().lease_revoke(foreign).await.expect("revoked");
        });
        let term = granted_term(store.try_acquire(&a).await.expect("granted"));
        revoke.await.unwrap();
        let (_, lease, created) = key_of(&store, &a).await.expect("the key is there");
        assert_eq!((lease, created as u64), (foreign, term));
        assert!(
            lease_ttl(&store, foreign).await >= 1,
            "the lease, ours now, lives"
        );
    }
}
