//! [`BatchStore`] for [`EtcdStore`]: many elections in a few requests.
//!
//! - **Reads**: one `Txn` of gets reads the batch's keys (and, for acquisitions, their
//!   markers), at most [`CHUNK`] elections per `Txn` (etcd's `--max-txn-ops` is 128 by
//!   default).
//! - **Grants**: the vacant elections of a batch whose TTLs round to the same whole seconds
//!   share **one etcd lease**: one `LeaseGrant`, then one `Txn` holding a nested `Txn` per
//!   election — put the key under that lease and the marker only if the key does not exist,
//!   else read it — so that each election is decided on its own, as the single grant decides
//!   it. The term is the key's create revision, as for a single grant (the keys of one `Txn`
//!   share it: terms are per election).
//! - **Renewals**: one `Txn` reads the batch's keys; the keys that are still each lease's own
//!   (holder, claim and term) are kept alive with one keep-alive per etcd lease among them:
//!   one per batch of grants, not one per election.
//! - Elections held by others are answered with the time their etcd lease has left, one
//!   `LeaseTimeToLive` per distinct etcd lease. An election's own live key, a key whose lease
//!   ended while the batch looked, and an election twice in a batch go the single way.
//!
//! # A shared etcd lease
//!
//! A keep-alive sent for one election of a shared lease keeps its siblings' keys too. That
//! never shortens what etcd holds, so it costs no safety: each holder still believes only until
//! its own local deadline, counted from its own renewal. What it costs is liveness for an
//! election whose holder stopped renewing without releasing (its elector dropped while the
//! store was unreachable): etcd keeps that key while the process keeps any sibling alive. A
//! release deletes the key and revokes the etcd lease only when no key is attached to it any
//! more (a lease's keys are all attached by the one `Txn` of its grant, so a lease found
//! empty stays empty); otherwise the lease lives on for the siblings and ends with them.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use elect_core::batch::{acquire_each, BatchStore};
use elect_core::{async_trait, Acquire, Claim, Error, Lease, Renewal, Result};
use etcd_client::{KeyValue, TxnOpResponse};
use etcd_client::{LeaseGrantOptions, LeaseTimeToLiveOptions, Txn, TxnOp};
use tracing::debug;

use crate::error::{none_if_lease_exists, none_if_lease_gone, STORE};
use crate::record::Record;
use crate::store::{create_txn, decode, lease_id, lease_seconds, EtcdStore};
use crate::vacancy::{parse_marker, released_key, Marker};

/// The most elections in one `Txn`: two reads each (key and marker) stay within etcd's
/// default `--max-txn-ops` of 128.
pub(crate) const CHUNK: usize = 64;

/// What one batch read found at an election's key.
pub(crate) struct Found {
    /// The record, `None` where the key does not exist, or the error for a record elect did
    /// not write.
    pub(crate) record: Result<Option<Record>>,
    /// The election's marker, when asked for and present.
    pub(crate) marker: Option<Marker>,
}

#[async_trait]
impl BatchStore for EtcdStore {
    async fn try_acquire_batch(&self, claims: &[Claim]) -> Vec<Result<Acquire>> {
        acquire_each(self, claims, async |first| {
            let mut answers = Vec::with_capacity(first.len());
            let mut grants: Vec<usize> = Vec::new();
            for chunk in first.chunks(CHUNK) {
                let part: Vec<&Claim> = chunk.iter().map(|&i| &claims[i]).collect();
                let (decided, vacant) = self.decide_many(&part).await?;
                grants.extend(vacant.into_iter().map(|k| answers.len() + k));
                answers.extend(decided);
            }
            // The vacant ones, granted together (per TTL in whole seconds).
            let mut by_seconds: HashMap<i64, Vec<usize>> = HashMap::new();
            for k in grants {
                by_seconds
                    .entry(lease_seconds(claims[first[k]].ttl))
                    .or_default()
                    .push(k);
            }
            for (seconds, group) in by_seconds {
                for part in group.chunks(CHUNK) {
                    let part_claims: Vec<&Claim> =
                        part.iter().map(|&k| &claims[first[k]]).collect();
                    let granted = self.grant_many(seconds, &part_claims).await;
                    for (&k, answer) in part.iter().zip(granted) {
                        answers[k] = Some(answer);
                    }
                }
            }
            Ok(answers)
        })
        .await
    }

    async fn renew_batch(&self, leases: &[Lease]) -> Vec<Result<Renewal>> {
        let mut out = Vec::with_capacity(leases.len());
        for part in leases.chunks(2 * CHUNK) {
            match self.renew_many(part).await {
                Ok(answers) => out.extend(answers),
                Err(e) => out.extend(part.iter().map(|_| Err(e.clone()))),
            }
        }
        out
    }
}

impl EtcdStore {
    /// The keys `keys` (and with `markers` their markers) in one `Txn`, each record validated
    /// on its own (a record seen is remembered, see `Sightings`); with etcd's Raft term in the
    /// reply. The single read is this with one key.
    pub(crate) async fn read_many(
        &self,
        operation: &'static str,
        keys: &[String],
        markers: bool,
    ) -> Result<(Vec<Found>, u64)> {
        let mut gets = Vec::with_capacity(keys.len() * 2);
        for key in keys {
            gets.push(TxnOp::get(key.as_str(), None));
            if markers {
                gets.push(TxnOp::get(released_key(key), None));
            }
        }
        let txn = Txn::new().and_then(gets);
        let resp = self
            .request(operation, |mut c| {
                let txn = txn.clone();
                async move { c.txn(txn).await }
            })
            .await?;
        let raft_term = resp.header().map_or(0, |h| h.raft_term());
        self.saw_raft_term(raft_term);
        let mut gets = resp.op_responses().into_iter().map(|r| match r {
            TxnOpResponse::Get(mut get) => get.take_kvs().into_iter().next(),
            _ => None,
        });
        let mut found = Vec::with_capacity(keys.len());
        for key in keys {
            let record = gets.next().flatten().map(|kv| decode(key, &kv)).transpose();
            let marker = if markers {
                gets.next()
                    .flatten()
                    .map(|kv| parse_marker(kv.value(), kv.mod_revision()))
            } else {
                None
            };
            if let Ok(Some(record)) = &record {
                self.sightings().saw(key, record);
            }
            found.push(Found { record, marker });
        }
        Ok((found, raft_term))
    }

    /// One chunk of claims (distinct elections): the answers decided by the read (held by
    /// others, corrupt, or a vacancy the guard keeps closed), `None` where the single
    /// acquisition decides, and the positions of the vacant ones to grant.
    async fn decide_many(
        &self,
        claims: &[&Claim],
    ) -> Result<(Vec<Option<Result<Acquire>>>, Vec<usize>)> {
        let keys: Vec<String> = claims
            .iter()
            .map(|c| self.config().key(c.election.as_str()))
            .collect();
        let (found, raft_term) = self.read_many("try_acquire", &keys, true).await?;
        let now = Instant::now();
        let mut answers: Vec<Option<Result<Acquire>>> = Vec::with_capacity(claims.len());
        let mut held: Vec<(usize, Record)> = Vec::new();
        let mut vacant = Vec::new();
        for (k, ((claim, key), found)) in claims.iter().zip(&keys).zip(found).enumerate() {
            answers.push(match found.record {
                Err(corrupt) => Some(Err(corrupt)),
                // Its own key: the single path keeps it alive.
                Ok(Some(record)) if record.granted_to(claim) => None,
                Ok(Some(record)) => {
                    held.push((k, record));
                    None
                }
                Ok(None) => {
                    match self
                        .sightings()
                        .vacant(key, claim, found.marker.as_ref(), raft_term, now)
                    {
                        Some(old) => Some(Ok(Acquire::Held(old))),
                        None => {
                            vacant.push(k);
                            None
                        }
                    }
                }
            });
        }
        // What each etcd lease of another holder has left: one question per lease.
        let mut remaining: HashMap<i64, Option<Duration>> = HashMap::new();
        for (_, record) in &held {
            if let Entry::Vacant(slot) = remaining.entry(record.lease) {
                slot.insert(self.remaining("try_acquire", record.lease).await?);
            }
        }
        for (k, record) in held {
            // A lease that ended while we looked: the single path reads again and decides.
            if let Some(Some(left)) = remaining.get(&record.lease) {
                answers[k] = Some(Ok(Acquire::Held(record.leader(*left))));
            }
        }
        Ok((answers, vacant))
    }

    /// Grants `claims` (distinct elections, vacant when read, their TTLs `seconds` in whole
    /// seconds) under one new etcd lease, in one `Txn` of a nested `Txn` per election.
    async fn grant_many(&self, seconds: i64, claims: &[&Claim]) -> Vec<Result<Acquire>> {
        let fail =
            |e: Error| -> Vec<Result<Acquire>> { claims.iter().map(|_| Err(e.clone())).collect() };
        let id = lease_id();
        let lease = self
            .request("try_acquire", |mut c| async move {
                none_if_lease_exists(
                    c.lease_grant(seconds, Some(LeaseGrantOptions::new().with_id(id)))
                        .await,
                )
            })
            .await;
        let lease = match lease {
            Ok(Some(lease)) => lease,
            Ok(None) => {
                return fail(Error::Unavailable {
                    store: STORE,
                    operation: "try_acquire",
                    message: format!("etcd already has a lease with the ID {id}; try again"),
                    source: None,
                })
            }
            Err(e) => {
                self.revoke_in_background("try_acquire", id);
                return fail(e);
            }
        };
        let raft_term = lease.header().map_or(0, |h| h.raft_term());
        self.saw_raft_term(raft_term);
        if lease.ttl() < seconds {
            self.revoke_in_background("try_acquire", id);
            return fail(Error::Internal {
                message: format!(
                    "etcd granted a {} s lease for a {} s request",
                    lease.ttl(),
                    seconds
                ),
            });
        }
        let keys: Vec<String> = claims
            .iter()
            .map(|c| self.config().key(c.election.as_str()))
            .collect();
        let txn = Txn::new().and_then(
            claims
                .iter()
                .zip(&keys)
                .map(|(claim, key)| TxnOp::txn(create_txn(claim, key, id, raft_term)))
                .collect::<Vec<_>>(),
        );
        let resp = self
            .request("try_acquire", |mut c| {
                let txn = txn.clone();
                async move { none_if_lease_gone(c.txn(txn).await) }
            })
            .await;
        let resp = match resp {
            Ok(Some(resp)) => resp,
            // The lease ended before its keys were put (etcd raised no TTL this short): nothing
            // was put.
            Ok(None) => {
                return fail(Error::Unavailable {
                    store: STORE,
                    operation: "try_acquire",
                    message: "the batch's etcd lease ended before its grant; try again".into(),
                    source: None,
                })
            }
            // Applied or not, its answer lost: the lease is revoked, taking any key it put.
            Err(e) => {
                self.revoke_in_background("try_acquire", id);
                return fail(e);
            }
        };
        let revision = resp.header().map_or(0, |h| h.revision());
        let mut answers = Vec::with_capacity(claims.len());
        let mut any = false;
        let mut nested = resp.op_responses().into_iter();
        for (claim, key) in claims.iter().zip(&keys) {
            let answer = match nested.next() {
                Some(TxnOpResponse::Txn(inner)) if inner.succeeded() => {
                    any = true;
                    elect_core::backend::term(
                        STORE,
                        key,
                        Some(revision as i128),
                        &format!("revision {revision}"),
                    )
                    .map(|term| {
                        self.sightings().forget(key);
                        Acquire::Granted(claim.granted(term))
                    })
                }
                Some(TxnOpResponse::Txn(inner)) => {
                    let kv: Option<KeyValue> =
                        inner.op_responses().into_iter().find_map(|r| match r {
                            TxnOpResponse::Get(mut get) => get.take_kvs().into_iter().next(),
                            _ => None,
                        });
                    match kv {
                        // Granted to someone else since the read: a fresh lease.
                        Some(kv) => decode(key, &kv).map(|record| {
                            self.sightings().saw(key, &record);
                            Acquire::Held(record.just_granted())
                        }),
                        None => Err(Error::Unavailable {
                            store: STORE,
                            operation: "try_acquire",
                            message: "the election changed hands during the grant; try again"
                                .into(),
                            source: None,
                        }),
                    }
                }
                _ => Err(Error::Internal {
                    message: "etcd answered a batch grant without a reply per election".into(),
                }),
            };
            answers.push(answer);
        }
        if !any {
            self.revoke_in_background("try_acquire", id);
        }
        debug!(
            lease = id,
            elections = claims.len(),
            granted = answers
                .iter()
                .filter(|a| matches!(a, Ok(Acquire::Granted(_))))
                .count(),
            "etcd: batch grant"
        );
        answers
    }

    /// One chunk of renewals: one read of the keys, one keep-alive per etcd lease among the
    /// keys that are still each lease's own.
    async fn renew_many(&self, leases: &[Lease]) -> Result<Vec<Result<Renewal>>> {
        let keys: Vec<String> = leases
            .iter()
            .map(|l| self.config().key(l.election.as_str()))
            .collect();
        let (found, _) = self.read_many("renew", &keys, false).await?;
        let owned: Vec<Option<i64>> = leases
            .iter()
            .zip(found)
            .map(|(lease, found)| match found.record {
                Ok(Some(r))
                    if r.holder == lease.holder
                        && r.nonce == lease.nonce.get()
                        && r.term == lease.term =>
                {
                    Some(r.lease)
                }
                // Gone, someone else's, or junk: not this lease's any more.
                _ => None,
            })
            .collect();
        // One keep-alive per etcd lease, all at once (dropped with this future if it is).
        let mut ids: Vec<i64> = owned.iter().flatten().copied().collect();
        ids.sort_unstable();
        ids.dedup();
        let mut alive = tokio::task::JoinSet::new();
        for id in ids {
            let store = self.clone();
            alive.spawn(async move { (id, store.keep_alive("renew", id).await) });
        }
        let mut kept: HashMap<i64, Result<bool>> = HashMap::new();
        while let Some(done) = alive.join_next().await {
            let (id, answer) = done.map_err(|e| Error::Internal {
                message: format!("an etcd keep-alive task ended: {e}"),
            })?;
            kept.insert(id, answer);
        }
        Ok(leases
            .iter()
            .zip(owned)
            .map(|(lease, id)| match id {
                None => Ok(Renewal::Lost),
                Some(id) => match &kept[&id] {
                    Ok(true) => Ok(Renewal::Renewed(lease.clone())),
                    Ok(false) => Ok(Renewal::Lost),
                    Err(e) => Err(e.clone()),
                },
            })
            .collect())
    }

    /// After a release: revokes the etcd lease `id` if no key is attached to it any more (a
    /// lease a batch grant shares keeps its siblings' keys), without making the caller wait.
    pub(crate) fn revoke_if_empty(&self, id: i64) {
        let store = self.clone();
        tokio::spawn(async move {
            let keys = store
                .request("release", |mut c| async move {
                    none_if_lease_gone(
                        c.lease_time_to_live(id, Some(LeaseTimeToLiveOptions::new().with_keys()))
                            .await,
                    )
                })
                .await;
            if let Ok(Some(resp)) = keys {
                if resp.ttl() >= 0 && resp.keys().is_empty() {
                    let _ = store.revoke("release", id).await;
                }
            }
        });
    }
}
