//! [`MongoStore`]: the [`LeaseStore`] on MongoDB.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use elect_core::{
    async_trait, Acquire, ChangeFeed, Claim, ElectionName, Error, LeaderInfo, Lease, LeaseStore,
    Release, Renewal, Result,
};
use mongodb::bson::{doc, Bson, Document};
use mongodb::options::ReturnDocument;
use mongodb::Collection;

use crate::client::Client;
use crate::clock::ServerClock;
use crate::config::{redact, MongoConfig};
use crate::error::is_duplicate_key;
use crate::error::STORE;
use crate::feed::Feeds;
use crate::record::{shown, Record};

/// A [`LeaseStore`] on MongoDB 4.4+: one document per election,
/// `{_id: <election>, holder, nonce, term, expires, released, version, value}` (`nonce`: which
/// claim of the holder it was granted to, see [`Nonce`](elect_core::Nonce); a document without
/// one is nobody's claim; `value`: the holder's [`LeaderValue`](elect_core::LeaderValue), a
/// string, or null or absent for none).
///
/// Every decision is one atomic update with an aggregation pipeline evaluated on the server
/// against `$$NOW`. Dates are compared through `$toLong` (milliseconds), which real MongoDB
/// supports and which also works on MongoDB-wire servers that mis-compare stored dates with
/// `$$NOW`. Clones share the client.
#[derive(Clone)]
pub struct MongoStore {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    feeds: Feeds,
    clock: ServerClock,
}

impl fmt::Debug for MongoStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MongoStore")
            .field("url", &redact(&self.inner.client.config.url))
            .field("database", &self.inner.client.config.database)
            .field("collection", &self.inner.client.config.collection)
            .finish()
    }
}

/// `true` while the document holds a live lease (guarded so that fields of the wrong type
/// never reach `$toLong`).
fn live() -> Bson {
    Bson::Document(doc! {
        "$cond": [
            { "$and": [
                { "$eq": [{ "$type": "$holder" }, "string"] },
                { "$eq": [{ "$type": "$expires" }, "date"] },
            ] },
            { "$gt": [{ "$toLong": "$expires" }, { "$toLong": "$$NOW" }] },
            false,
        ]
    })
}

/// A filter's `$expr` that the lease is live by the server's clock.
pub(crate) fn live_filter() -> Document {
    doc! { "$gt": [{ "$toLong": "$expires" }, { "$toLong": "$$NOW" }] }
}

/// Milliseconds left on the lease by the server's clock.
pub(crate) fn remaining() -> Bson {
    Bson::Document(doc! {
        "$cond": [
            { "$eq": [{ "$type": "$expires" }, "date"] },
            { "$subtract": [{ "$toLong": "$expires" }, { "$toLong": "$$NOW" }] },
            Bson::Null,
        ]
    })
}

/// The acquire pipeline: take a vacant or expired lease with a new term, extend the claim's
/// own live lease, or leave someone else's (and anything elect did not write) untouched, so
/// that losing attempts write nothing.
fn acquire_pipeline(claim: &Claim) -> Vec<Document> {
    let (candidate, nonce) = (claim.candidate.as_str(), claim.nonce.get() as i64);
    let value = match &claim.value {
        Some(v) => Bson::String(v.as_str().to_owned()),
        None => Bson::Null,
    };
    let ttl_ms = claim.ttl.as_millis() as i64;
    // A valid document, or none yet.
    let ok = doc! { "$or": [
        { "$eq": [{ "$type": "$holder" }, "missing"] },
        { "$and": [
            { "$eq": [{ "$type": "$holder" }, "string"] },
            { "$in": [{ "$type": "$term" }, ["long", "int"]] },
            { "$gt": ["$term", 0] },
            { "$eq": [{ "$type": "$expires" }, "date"] },
        ] },
    ] };
    let mine = doc! { "$and": [{ "$eq": ["$holder", candidate] }, { "$eq": ["$nonce", nonce] }] };
    let keep = doc! { "$or": [{ "$not": ["$_ok"] }, { "$and": ["$_live", { "$not": [mine] }] }] };
    // Every new grant takes a term above the stored one and above the server's clock in
    // microseconds (one millisecond ahead), so neither a lost document nor a foreign write that
    // lowered the stored term can take terms back.
    let floor = doc! { "$multiply": [{ "$add": [{ "$toLong": "$$NOW" }, 1_i64] }, 1000_i64] };
    let next_term = doc! { "$cond": [
        { "$eq": [{ "$type": "$term" }, "missing"] },
        floor.clone(),
        { "$max": [{ "$add": ["$term", 1_i64] }, floor] },
    ] };
    let unchanged = doc! { "$or": [{ "$not": ["$_ok"] }, "$_live"] };
    vec![
        doc! { "$set": { "_ok": ok } },
        doc! { "$set": { "_live": { "$cond": ["$_ok", live(), false] } } },
        doc! { "$set": {
            "term": { "$cond": [unchanged.clone(), "$term", next_term] },
            "holder": { "$cond": [unchanged.clone(), "$holder", candidate] },
            "nonce": { "$cond": [unchanged.clone(), "$nonce", nonce] },
            // `$literal`: a value that starts with `$` is text, not a field path.
            "value": { "$cond": [unchanged, "$value", { "$literal": value }] },
            "expires": { "$cond": [keep.clone(), "$expires", { "$add": ["$$NOW", ttl_ms] }] },
            "released": { "$cond": [keep.clone(), "$released", false] },
            "version": { "$cond": [keep, "$version", { "$add": [{ "$ifNull": ["$version", 0_i64] }, 1_i64] }] },
        } },
        doc! { "$unset": ["_ok", "_live"] },
    ]
}

impl MongoStore {
    /// Connects to the server `url` names, with the default configuration.
    pub async fn connect_url(url: &str) -> Result<MongoStore> {
        Self::connect(MongoConfig::new(url)).await
    }

    /// Validates `config`, connects, and checks the server answers.
    pub async fn connect(config: MongoConfig) -> Result<MongoStore> {
        Ok(Self::open(Client::connect(config).await?))
    }

    /// A store on the application's own driver `client` (one round trip to check the server
    /// answers). `config` gives the database, the collection, the write concern (set on the
    /// leases collection alone, majority by default) and the request timeout; its URL is not
    /// used.
    ///
    /// What elect needs of the client: a replica set or sharded cluster for change streams
    /// (on a standalone server waiting candidates fall back to the expiry), and nothing of its
    /// sessions. Shutting down: the store's change-stream watcher holds a cursor, so a plain
    /// `client.shutdown()` waits forever — use `shutdown().immediate(true)`, or
    /// [`close`](Self::close), which does that to the shared client.
    ///
    /// ```no_run
    /// use elect_mongo::{MongoConfig, MongoStore};
    ///
    /// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
    /// let client = elect_mongo::mongodb::Client::with_uri_str("mongodb://db.internal/?replicaSet=rs0").await?;
    /// let store = MongoStore::from_client(client.clone(), MongoConfig::new("").database("app")).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn from_client(client: mongodb::Client, config: MongoConfig) -> Result<MongoStore> {
        Ok(Self::open(Client::from_client(client, config).await?))
    }

    fn open(client: Client) -> MongoStore {
        MongoStore {
            inner: Arc::new(Inner {
                feeds: Feeds::new(client.config.timeout),
                clock: ServerClock::new(),
                client,
            }),
        }
    }

    /// Shuts the driver's client down, so that its connections close while the runtime still
    /// runs. Call it before leaving `main`: mongodb 3.x panics in a runtime worker
    /// ("SendError") when a client's background tasks are dropped by the runtime's teardown.
    /// The shutdown is immediate, because the store's change-stream watcher holds a cursor that
    /// a plain `shutdown()` would wait for forever. The store (and its clones) must not be used
    /// afterwards.
    pub async fn close(&self) {
        self.inner.client.close().await
    }

    /// The collection holding the leases.
    pub fn collection(&self) -> &Collection<Document> {
        &self.inner.client.leases
    }

    /// One request through the client (see [`Client::request`]).
    pub(crate) async fn request<T>(
        &self,
        operation: &'static str,
        work: impl std::future::IntoFuture<Output = mongodb::error::Result<T>>,
    ) -> Result<T> {
        self.inner.client.request(operation, work).await
    }

    /// How errors name a document: `database.collection[election]`.
    fn key(&self, election: &str) -> String {
        format!(
            "{}.{}[{election}]",
            self.inner.client.config.database, self.inner.client.config.collection
        )
    }

    fn record(&self, election: &str, d: &Document) -> Result<Record> {
        Record::parse(self.key(election), d)
    }

    /// The lease document with the server's remaining time, read without writing.
    async fn read(&self, election: &ElectionName) -> Result<Option<(Record, i64)>> {
        let e = election.as_str();
        let pipeline = vec![
            doc! { "$match": { "_id": e } },
            doc! { "$set": { "_remaining": remaining() } },
        ];
        let sent = Instant::now();
        let found = self
            .request("leader", async {
                let mut cursor = self.inner.client.leases.aggregate(pipeline).await?;
                if cursor.advance().await? {
                    Ok(Some(cursor.deserialize_current()?))
                } else {
                    Ok(None)
                }
            })
            .await?;
        let received = Instant::now();
        found
            .map(|d| self.parse_read(e, &d, sent, received))
            .transpose()
    }

    /// A document read with its `_remaining` (sent at `sent`, answered at `received`):
    /// validated, the server's clock estimate updated.
    pub(crate) fn parse_read(
        &self,
        e: &str,
        d: &Document,
        sent: Instant,
        received: Instant,
    ) -> Result<(Record, i64)> {
        let record = self.record(e, d)?;
        let remaining = match d.get("_remaining") {
            Some(Bson::Int64(ms)) => *ms,
            Some(Bson::Int32(ms)) => *ms as i64,
            other => {
                return Err(Error::corrupt(
                    STORE,
                    self.key(e),
                    format!("cannot tell the remaining time: {}", shown(other)),
                ))
            }
        };
        self.inner
            .clock
            .observe(record.expires_ms - remaining, sent, received);
        Ok((record, remaining))
    }

    /// Runs a guarded single-document update; true when it matched the live lease.
    async fn guarded(&self, operation: &'static str, lease: &Lease, set: Document) -> Result<bool> {
        let filter = doc! {
            "_id": lease.election.as_str(),
            "holder": lease.holder.as_str(),
            "nonce": lease.nonce.get() as i64,
            "term": lease.term.get() as i64,
            "$expr": live_filter(),
        };
        let pipeline = vec![doc! { "$set": set }];
        let result = self
            .request(
                operation,
                self.inner.client.leases.update_one(filter, pipeline),
            )
            .await?;
        Ok(result.matched_count == 1)
    }
}

#[async_trait]
impl LeaseStore for MongoStore {
    fn kind(&self) -> &'static str {
        STORE
    }

    async fn try_acquire(&self, claim: &Claim) -> Result<Acquire> {
        let election = &claim.election;
        let e = election.as_str();
        // Read first only when this store has no fresh estimate of the server's clock and the
        // change stream did not just see the lease released. Otherwise the acquiring update
        // goes first and answers alone, in one round trip: a grant, or the holder's record,
        // whose remaining time the estimate gives (see `clock`). A follower woken at the
        // expiry it was told of thus costs one request whether the holder renewed (the update
        // writes nothing) or died (the update takes the lease). The update decides on the
        // server either way.
        let vacated = self.inner.feeds.take_vacancy(e);
        if !vacated && !self.inner.clock.is_fresh(Instant::now()) {
            if let Some((record, remaining)) = self.read(election).await? {
                if remaining > 0 && !record.granted_to(claim) {
                    return Ok(Acquire::Held(record.held(remaining)));
                }
            }
        }
        let mut attempt = 0;
        let (d, sent, received) = loop {
            attempt += 1;
            let update = self
                .inner
                .client
                .leases
                .find_one_and_update(doc! { "_id": e }, acquire_pipeline(claim))
                .upsert(true)
                .return_document(ReturnDocument::After);
            let sent = Instant::now();
            match self.request("try_acquire", update).await {
                Ok(Some(d)) => break (d, sent, Instant::now()),
                // A lost upsert race: some servers report it as a duplicate key (11000),
                // others (the MongoDB-wire server in our tests) as no document at all. Either
                // way the document exists now, so the next attempt updates it and finds it
                // held.
                Ok(None) if attempt < 3 => {}
                Err(e) if attempt < 3 && is_duplicate_key(&e) => {}
                Ok(None) => {
                    return Err(Error::Unavailable {
                        store: STORE,
                        operation: "try_acquire",
                        message: format!("upsert of {} kept losing races", self.key(e)),
                        source: None,
                    })
                }
                Err(e) => return Err(e),
            }
        };
        let record = self.record(e, &d)?;
        if record.granted_to(claim) {
            // A grant's `expires` is the server's `$$NOW` plus the TTL.
            let ttl_ms = claim.ttl.as_millis() as i64;
            self.inner
                .clock
                .observe(record.expires_ms - ttl_ms, sent, received);
            return Ok(Acquire::Granted(claim.granted(record.term)));
        }
        // Someone else holds it, live by the server's clock when the update ran: its remaining
        // time by the estimate, within (0, TTL] (a holder's longer TTL only wakes us early),
        // or read when the estimate went stale meanwhile.
        if let Some(left) = self.inner.clock.until(record.expires_ms, received) {
            let ttl_ms = claim.ttl.as_millis() as f64;
            return Ok(Acquire::Held(
                record.held(left.clamp(1.0, ttl_ms).round() as i64),
            ));
        }
        match self.read(election).await? {
            Some((record, remaining)) => Ok(Acquire::Held(record.held(remaining))),
            None => Ok(Acquire::Held(record.held(0))),
        }
    }

    async fn renew(&self, lease: &Lease) -> Result<Renewal> {
        let set = doc! {
            "expires": { "$add": ["$$NOW", lease.ttl.as_millis() as i64] },
            "version": { "$add": ["$version", 1_i64] },
        };
        Ok(if self.guarded("renew", lease, set).await? {
            Renewal::Renewed(lease.clone())
        } else {
            Renewal::Lost
        })
    }

    async fn release(&self, lease: &Lease) -> Result<Release> {
        let set = doc! {
            "expires": "$$NOW",
            "released": true,
            "version": { "$add": ["$version", 1_i64] },
        };
        Ok(if self.guarded("release", lease, set).await? {
            Release::Released
        } else {
            Release::NotHeld
        })
    }

    async fn leader(&self, election: &ElectionName) -> Result<Option<LeaderInfo>> {
        Ok(self
            .read(election)
            .await?
            .filter(|(_, remaining)| *remaining > 0)
            .map(|(record, remaining)| record.held(remaining)))
    }

    async fn subscribe(&self, election: &ElectionName) -> Result<Option<ChangeFeed>> {
        self.inner
            .feeds
            .subscribe(&self.inner.client, election)
            .await
    }

    async fn close(&self) {
        self.inner.client.close().await
    }
}
