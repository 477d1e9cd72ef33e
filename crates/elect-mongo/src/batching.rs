//! [`BatchStore`] for [`MongoStore`]: many elections' renewals in one update, and the claims
//! of elections others hold answered by one read.
//!
//! - **Renewals** are one `updateMany` per TTL in the batch (one, when every elector has the
//!   same TTL): its filter is an `$or` of each lease's own guard (election, holder, nonce,
//!   term) and the lease still live by `$$NOW`, as the single renewal's filter. A write
//!   returns counts, not documents: when it matched as many documents as it was given leases
//!   (the usual case), each lease was renewed — a document matches only its own election's
//!   guard. Otherwise one read fetches the documents back, and a lease counts as renewed when
//!   its document holds it, live: only that update can have made it so, since an ended lease
//!   is never live again under the same holder, nonce and term (a new grant has a new term).
//! - **Acquisitions**: one read of every claimed election's document; a live lease someone
//!   else holds answers its claim there (as the single acquisition's first read does), a
//!   corrupt document fails its own claim. The others — a vacant or expired lease, the claim's
//!   own — are decided one by one by the single acquisition's atomic update: a grant writes
//!   its own document and returns it, which a bulk write cannot (it reports counts only).
//!   In a steady state, followers waking at the expiry they were told of find the leases
//!   renewed, so those claims cost one read per batch; only actual grants go one by one.

use std::collections::HashMap;
use std::time::Instant;

use elect_core::batch::{acquire_each, renew_in_chunks, BatchStore};
use elect_core::{async_trait, Acquire, Claim, Lease, Renewal, Result};
use mongodb::bson::{doc, Bson, Document};

use crate::record::Record;
use crate::store::{live_filter, MongoStore};

/// At most this many elections per request.
const CHUNK: usize = 500;

#[async_trait]
impl BatchStore for MongoStore {
    async fn try_acquire_batch(&self, claims: &[Claim]) -> Vec<Result<Acquire>> {
        acquire_each(self, claims, async |first| {
            let mut answers = Vec::with_capacity(first.len());
            for chunk in first.chunks(CHUNK) {
                let elections: Vec<&str> =
                    chunk.iter().map(|&i| claims[i].election.as_str()).collect();
                let mut found = self.read_many(&elections).await?;
                answers.extend(chunk.iter().map(|&i| {
                    let claim = &claims[i];
                    match found.remove(claim.election.as_str())? {
                        Ok((record, remaining)) if remaining > 0 && !record.granted_to(claim) => {
                            Some(Ok(Acquire::Held(record.held(remaining))))
                        }
                        // Vacant, expired or its own: the single acquisition decides.
                        Ok(_) => None,
                        Err(corrupt) => Some(Err(corrupt)),
                    }
                }));
            }
            Ok(answers)
        })
        .await
    }

    async fn renew_batch(&self, leases: &[Lease]) -> Vec<Result<Renewal>> {
        renew_in_chunks(leases, CHUNK, |chunk| self.renew_many(chunk)).await
    }
}

impl MongoStore {
    /// One `updateMany` per TTL for `leases` (at most [`CHUNK`]), and the read-back when they
    /// did not match every lease: per lease, whether it was renewed.
    async fn renew_many(&self, leases: &[Lease]) -> Result<Vec<bool>> {
        let mut by_ttl: HashMap<i64, Vec<&Lease>> = HashMap::new();
        for lease in leases {
            by_ttl
                .entry(lease.ttl.as_millis() as i64)
                .or_default()
                .push(lease);
        }
        let mut matched = 0u64;
        for (ttl_ms, group) in by_ttl {
            let guards: Vec<Document> = group
                .iter()
                .map(|l| {
                    doc! {
                        "_id": l.election.as_str(),
                        "holder": l.holder.as_str(),
                        "nonce": l.nonce.get() as i64,
                        "term": l.term.get() as i64,
                    }
                })
                .collect();
            let filter = doc! { "$or": guards, "$expr": live_filter() };
            let pipeline = vec![doc! { "$set": {
                "expires": { "$add": ["$$NOW", ttl_ms] },
                "version": { "$add": ["$version", 1_i64] },
            } }];
            let result = self
                .request("renew", self.collection().update_many(filter, pipeline))
                .await?;
            matched += result.matched_count;
        }
        if matched == leases.len() as u64 {
            return Ok(vec![true; leases.len()]);
        }
        let elections: Vec<&str> = leases.iter().map(|l| l.election.as_str()).collect();
        let found = self.read_many(&elections).await?;
        Ok(leases
            .iter()
            .map(|l| match found.get(l.election.as_str()) {
                Some(Ok((record, remaining))) => *remaining > 0 && record.holds(l),
                _ => false,
            })
            .collect())
    }

    /// The documents of `elections`, each validated, with the server's remaining time, read
    /// in one aggregation without writing.
    pub(crate) async fn read_many(
        &self,
        elections: &[&str],
    ) -> Result<HashMap<String, Result<(Record, i64)>>> {
        let pipeline = vec![
            doc! { "$match": { "_id": { "$in": elections } } },
            doc! { "$set": { "_remaining": crate::store::remaining() } },
        ];
        let sent = Instant::now();
        let docs: Vec<Document> = self
            .request("leader", async {
                let mut cursor = self.collection().aggregate(pipeline).await?;
                let mut docs = Vec::new();
                while cursor.advance().await? {
                    docs.push(cursor.deserialize_current()?);
                }
                Ok(docs)
            })
            .await?;
        let received = Instant::now();
        Ok(docs
            .iter()
            .filter_map(|d| match d.get("_id") {
                Some(Bson::String(e)) => Some((e.clone(), self.parse_read(e, d, sent, received))),
                _ => None,
            })
            .collect())
    }
}
