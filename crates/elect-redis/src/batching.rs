//! Acquisitions and renewals as script calls: alone (`try_acquire`, `renew`), or a whole batch
//! in one call ([`BatchStore`] for [`RedisStore`]), each election decided by the function the
//! single script calls.
//!
//! On Redis Cluster a script may only touch keys of one slot, and each election's keys carry
//! the election as their hash tag: a batch is split by slot and the parts are sent at once, so a
//! batch saves requests only where elections share a slot. A standalone server or a Sentinel
//! primary takes the whole batch in one call.

use std::collections::HashMap;

use elect_core::batch::BatchStore;
use elect_core::{async_trait, Acquire, Claim, ElectionName, Error, Lease, Renewal, Result};
use fred::interfaces::ClientLike;
use fred::types::Value;
use tokio::task::JoinSet;

use crate::error::STORE;
use crate::scripts::{Script, Scripts};
use crate::store::{acquired, renewed, RedisStore, Reply};

/// An acquisition or a renewal, sent alone or as an item of a batch.
pub(crate) trait Item: Clone + Send + Sync + 'static {
    type Answer: Send + 'static;
    const OPERATION: &'static str;
    fn election(&self) -> &ElectionName;
    /// The script for one item.
    fn single(scripts: &Scripts) -> &Script;
    /// The script for a batch of items.
    fn batched(scripts: &Scripts) -> &Script;
    fn parts(&self, store: &RedisStore) -> (Vec<String>, Vec<String>);
    fn read(&self, reply: Reply<'_>) -> Result<Self::Answer>;
    /// Whether the answer wrote (and so must reach the replicas before it is believed).
    fn wrote(answer: &Self::Answer) -> bool;
}

impl Item for Claim {
    type Answer = Acquire;
    const OPERATION: &'static str = "try_acquire";
    fn election(&self) -> &ElectionName {
        &self.election
    }
    fn single(scripts: &Scripts) -> &Script {
        &scripts.acquire
    }
    fn batched(scripts: &Scripts) -> &Script {
        &scripts.acquire_batch
    }
    fn parts(&self, store: &RedisStore) -> (Vec<String>, Vec<String>) {
        store.acquire_items(self)
    }
    fn read(&self, reply: Reply<'_>) -> Result<Acquire> {
        acquired(self, reply)
    }
    fn wrote(answer: &Acquire) -> bool {
        matches!(answer, Acquire::Granted(_))
    }
}

impl Item for Lease {
    type Answer = Renewal;
    const OPERATION: &'static str = "renew";
    fn election(&self) -> &ElectionName {
        &self.election
    }
    fn single(scripts: &Scripts) -> &Script {
        &scripts.renew
    }
    fn batched(scripts: &Scripts) -> &Script {
        &scripts.renew_batch
    }
    fn parts(&self, store: &RedisStore) -> (Vec<String>, Vec<String>) {
        store.renew_items(self)
    }
    fn read(&self, reply: Reply<'_>) -> Result<Renewal> {
        renewed(self, reply)
    }
    fn wrote(answer: &Renewal) -> bool {
        matches!(answer, Renewal::Renewed(_))
    }
}

#[async_trait]
impl BatchStore for RedisStore {
    async fn try_acquire_batch(&self, claims: &[Claim]) -> Vec<Result<Acquire>> {
        self.batch(claims).await
    }

    async fn renew_batch(&self, leases: &[Lease]) -> Vec<Result<Renewal>> {
        self.batch(leases).await
    }
}

impl RedisStore {
    /// One script call for `item` alone; a write is believed only once it reached the replicas
    /// [`RedisConfig::wait_replicas`](crate::RedisConfig::wait_replicas) asks for.
    pub(crate) async fn one<I: Item>(&self, item: &I) -> Result<I::Answer> {
        let client = &self.inner.client;
        let (keys, args) = item.parts(self);
        let connection = client.pool.next();
        let reply = client
            .run_on(
                connection,
                I::OPERATION,
                I::single(&client.scripts),
                keys,
                args,
            )
            .await?;
        let key = self.lease_key(item.election());
        let answer = item.read(Reply::new(&key, reply))?;
        if I::wrote(&answer) {
            client.replicated(connection, I::OPERATION, &key).await?;
        }
        Ok(answer)
    }

    /// Splits `items` by slot on a Cluster (one part elsewhere) and sends the parts at once.
    async fn batch<I: Item>(&self, items: &[I]) -> Vec<Result<I::Answer>> {
        let pool = &self.inner.client.pool;
        if items.is_empty() {
            return Vec::new();
        }
        if !pool.next().is_clustered() {
            return self.part(items).await;
        }
        let mut slots: HashMap<u16, Vec<usize>> = HashMap::new();
        for (n, item) in items.iter().enumerate() {
            let key = self.lease_key(item.election());
            slots
                .entry(fred::util::redis_keyslot(key.as_bytes()))
                .or_default()
                .push(n);
        }
        let mut parts = JoinSet::new();
        for (_, positions) in slots {
            let store = self.clone();
            let part: Vec<I> = positions.iter().map(|&n| items[n].clone()).collect();
            parts.spawn(async move { (positions, store.part(&part).await) });
        }
        let mut answers: Vec<Option<Result<I::Answer>>> = items.iter().map(|_| None).collect();
        while let Some(done) = parts.join_next().await {
            // A part's task panicked: its positions stay unanswered and fail below.
            if let Ok((positions, part)) = done {
                for (n, answer) in positions.into_iter().zip(part) {
                    answers[n] = Some(answer);
                }
            }
        }
        answers
            .into_iter()
            .map(|a| {
                a.unwrap_or_else(|| {
                    Err(Error::Internal {
                        message: format!("a {} batch part ended without answering", I::OPERATION),
                    })
                })
            })
            .collect()
    }

    /// One script call for `items` (all in one slot), each item's reply read on its own.
    async fn part<I: Item>(&self, items: &[I]) -> Vec<Result<I::Answer>> {
        let client = &self.inner.client;
        let (mut keys, mut args) = (Vec::new(), Vec::new());
        for item in items {
            let (k, a) = item.parts(self);
            keys.extend(k);
            args.extend(a);
        }
        let connection = client.pool.next();
        let replies = match client
            .run_on(
                connection,
                I::OPERATION,
                I::batched(&client.scripts),
                keys,
                args,
            )
            .await
        {
            Ok(replies) if replies.len() == items.len() => replies,
            Ok(replies) => {
                return fail_all(
                    items,
                    &Error::Other {
                        store: STORE,
                        message: format!(
                            "{}: a batch script answered {} items of {}",
                            I::OPERATION,
                            replies.len(),
                            items.len()
                        ),
                        source: None,
                    },
                )
            }
            Err(error) => return fail_all(items, &error),
        };
        let mut answers: Vec<Result<I::Answer>> = items
            .iter()
            .zip(replies)
            .map(|(item, reply)| {
                let key = self.lease_key(item.election());
                match reply {
                    Value::Array(fields) => item.read(Reply::new(&key, fields)),
                    other => Err(Reply::new(&key, vec![other]).malformed(0)),
                }
            })
            .collect();
        if answers.iter().any(|a| a.as_ref().is_ok_and(I::wrote)) {
            let key = self.lease_key(items[0].election());
            if let Err(error) = client.replicated(connection, I::OPERATION, &key).await {
                // Not on enough replicas: none of this call's writes may be believed.
                for answer in &mut answers {
                    if answer.as_ref().is_ok_and(I::wrote) {
                        *answer = Err(error.clone());
                    }
                }
            }
        }
        answers
    }
}

fn fail_all<I, A>(items: &[I], error: &Error) -> Vec<Result<A>> {
    items.iter().map(|_| Err(error.clone())).collect()
}
