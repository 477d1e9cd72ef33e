//! [`BatchStore`] for [`PostgresStore`]: many elections' acquisitions, or renewals, in one
//! statement.
//!
//! Renewals are one `UPDATE … FROM unnest(…)` whose `RETURNING` names the leases it extended;
//! acquisitions are the single acquire statement over arrays (one `INSERT … ON CONFLICT` for
//! all the grants, in election order so that two batches lock rows in the same order). What a
//! batch cannot decide on its own is sent the single way, election by election: a claim whose
//! own live lease it found (extended by a renewal), one whose grant lost a race, and the second
//! claim for an election already in the batch (an `INSERT … ON CONFLICT` may not touch a row
//! twice). A statement that fails fails every item in it, with the same error — but a term
//! counter at the end of `BIGINT` fails the one election it belongs to (the batch is then sent
//! election by election to find it).

use std::collections::HashMap;

use elect_core::batch::{acquire_each, BatchStore};
use elect_core::{async_trait, Acquire, Claim, Lease, Renewal, Result};
use tokio_postgres::types::Type;
use tracing::debug;

use crate::error::{map_err, out_of_range};
use crate::store::{micros, nonce, Acquired, PostgresStore};

#[async_trait]
impl BatchStore for PostgresStore {
    async fn try_acquire_batch(&self, claims: &[Claim]) -> Vec<Result<Acquire>> {
        if let Err(e) = self.check_schema().await {
            return claims.iter().map(|_| Err(e.clone())).collect();
        }
        acquire_each(self, claims, async |first| {
            self.acquire_many(claims, first).await
        })
        .await
    }

    async fn renew_batch(&self, leases: &[Lease]) -> Vec<Result<Renewal>> {
        if let Err(e) = self.check_schema().await {
            return leases.iter().map(|_| Err(e.clone())).collect();
        }
        // A term above BIGINT's range was never granted by this table: lost, unsent.
        let sent: Vec<(usize, i64)> = leases
            .iter()
            .enumerate()
            .filter_map(|(i, l)| Some((i, i64::try_from(l.term.get()).ok()?)))
            .collect();
        let renewed = match self.renew_many(leases, &sent).await {
            Ok(renewed) => renewed,
            Err(e) => return leases.iter().map(|_| Err(e.clone())).collect(),
        };
        let mut answers: Vec<Result<Renewal>> = leases.iter().map(|_| Ok(Renewal::Lost)).collect();
        for position in renewed {
            // Positions from 1 in the arrays, which hold `sent` in order.
            let sent_index = usize::try_from(position)
                .ok()
                .and_then(|p| p.checked_sub(1));
            if let Some(&(i, _)) = sent_index.and_then(|p| sent.get(p)) {
                answers[i] = Ok(Renewal::Renewed(leases[i].clone()));
            }
        }
        answers
    }
}

impl PostgresStore {
    /// The batch acquire statement for `claims[i]`, `i` in `which` (distinct elections): per
    /// claim, its answer, or `None` where the single path must decide.
    async fn acquire_many(
        &self,
        claims: &[Claim],
        which: &[usize],
    ) -> Result<Vec<Option<Result<Acquire>>>> {
        if which.is_empty() {
            return Ok(Vec::new());
        }
        let client = self.client();
        let pick = || which.iter().map(|&i| &claims[i]);
        let elections: Vec<&str> = pick().map(|c| c.election.as_str()).collect();
        let holders: Vec<&str> = pick().map(|c| c.candidate.as_str()).collect();
        let nonces: Vec<i64> = pick().map(|c| nonce(c.nonce.get())).collect();
        let ttls: Vec<i64> = pick().map(|c| micros(c.ttl.get())).collect();
        let values: Vec<Option<&[u8]>> = pick()
            .map(|c| c.value.as_ref().map(|v| v.as_str().as_bytes()))
            .collect();
        let channel = client.sql.channel.as_str();
        let params: [crate::client::Param; 6] = [
            (&elections, Type::TEXT_ARRAY),
            (&holders, Type::TEXT_ARRAY),
            (&nonces, Type::INT8_ARRAY),
            (&ttls, Type::INT8_ARRAY),
            (&values, Type::BYTEA_ARRAY),
            (&channel, Type::TEXT),
        ];
        let rows = match client
            .query_raw("try_acquire", &client.sql.acquire_batch, &params)
            .await?
        {
            Ok(rows) => rows,
            // Some election's term counter is exhausted: the single path names which.
            Err(e) if out_of_range(&e) => {
                debug!("a term counter at BIGINT's end in a batch: asking election by election");
                return Ok(which.iter().map(|_| None).collect());
            }
            Err(e) => return Err(map_err("try_acquire", &client.config.table, e)),
        };
        let by_election: HashMap<&str, &tokio_postgres::Row> = rows
            .iter()
            .filter_map(|row| Some((row.try_get::<_, &str>(6).ok()?, row)))
            .collect();
        Ok(which
            .iter()
            .map(|&i| {
                let claim = &claims[i];
                let row = by_election.get(claim.election.as_str())?;
                match self.acquired(claim, row) {
                    Ok(Acquired::Granted(term)) => Some(Ok(Acquire::Granted(claim.granted(term)))),
                    Ok(Acquired::Found(Some(row))) if row.live() && !row.granted_to(claim) => {
                        Some(Ok(Acquire::Held(row.info())))
                    }
                    // Its own live lease, or a race lost: decided the single way.
                    Ok(Acquired::Found(_)) => None,
                    Err(e) => Some(Err(e)),
                }
            })
            .collect())
    }

    /// The batch renew statement for `leases[i]`, `(i, term)` in `which`: the positions (from
    /// 1) in `which` of the leases it extended.
    async fn renew_many(&self, leases: &[Lease], which: &[(usize, i64)]) -> Result<Vec<i64>> {
        if which.is_empty() {
            return Ok(Vec::new());
        }
        let client = self.client();
        let pick = || which.iter().map(|&(i, _)| &leases[i]);
        let elections: Vec<&str> = pick().map(|l| l.election.as_str()).collect();
        let ttls: Vec<i64> = pick().map(|l| micros(l.ttl.get())).collect();
        let holders: Vec<&str> = pick().map(|l| l.holder.as_str()).collect();
        let nonces: Vec<i64> = pick().map(|l| nonce(l.nonce.get())).collect();
        let terms: Vec<i64> = which.iter().map(|&(_, t)| t).collect();
        let params: [crate::client::Param; 5] = [
            (&elections, Type::TEXT_ARRAY),
            (&ttls, Type::INT8_ARRAY),
            (&holders, Type::TEXT_ARRAY),
            (&nonces, Type::INT8_ARRAY),
            (&terms, Type::INT8_ARRAY),
        ];
        let rows = client
            .query("renew", &client.sql.renew_batch, &params)
            .await?;
        Ok(rows.iter().filter_map(|row| row.try_get(0).ok()).collect())
    }
}
