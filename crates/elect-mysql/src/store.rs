//! [`MysqlStore`]: the [`LeaseStore`] on MySQL and MariaDB.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use elect_core::backend;
use elect_core::{
    async_trait, Acquire, CandidateId, ChangeFeed, Claim, ElectionName, Error, LeaderInfo,
    LeaderValue, Lease, LeaseStore, Release, Renewal, Result, Term,
};
use mysql_async::prelude::Queryable;
use mysql_async::{IsolationLevel, Pool, TxOpts, Value};
use tracing::{debug, warn};

use crate::client::Client;
use crate::config::{redact, MysqlConfig};
use crate::error::STORE;
use crate::error::{is_deadlock, not_set_up};
use crate::feed::Poller;
use crate::schema::{self, add_nonce_sql, add_value_sql, create_table_sql, int, Mismatch, Sql};
use crate::wake::{self, ReleasedOn};

/// A [`LeaseStore`] on MySQL 8 or MariaDB 10.6+, in one table (see
/// [`CREATE_TABLE_SQL`](crate::CREATE_TABLE_SQL)).
///
/// Every time is the server's `UTC_TIMESTAMP(6)`, so neither client clocks nor session time
/// zones matter. Acquire is a short `READ COMMITTED` transaction around `SELECT … FOR UPDATE`;
/// renew and release are single guarded `UPDATE`s. Clones share the pool.
#[derive(Clone)]
pub struct MysqlStore {
    inner: Arc<Inner>,
}

struct Inner {
    client: Arc<Client>,
    feed: Poller,
    /// The named locks held while leading (with `release_locks`).
    beacons: Option<crate::wake::Beacons>,
    /// Set once the table was found fit (see [`schema::inspect`]): whether it has the `value`
    /// column.
    schema_checked: tokio::sync::OnceCell<bool>,
    /// Whether the "values are not stored" warning was given.
    warned_no_value: std::sync::atomic::AtomicBool,
}

impl fmt::Debug for MysqlStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MysqlStore")
            .field("url", &redact(&self.inner.client.config.url))
            .field("table", &self.inner.client.config.table)
            .finish()
    }
}

/// The options of every acquiring transaction: `READ COMMITTED`, so that a locking read sees
/// the latest committed row and takes no gap locks.
pub(crate) fn read_committed() -> TxOpts {
    TxOpts::default()
        .with_isolation_level(IsolationLevel::ReadCommitted)
        .clone()
}

/// What a release that `matched` the live lease (or did not) says.
fn matched(matched: bool) -> Release {
    if matched {
        Release::Released
    } else {
        Release::NotHeld
    }
}

/// What one acquire transaction decided. (A transaction dropped without commit rolls back.)
enum Step {
    Done(Acquire),
    Race,
    Corrupt(Error),
}

/// What a claim gets from the row it locked: every acquisition, single or batched, decides
/// this way.
pub(crate) enum Decision {
    /// Someone else's live lease.
    Held(LeaderInfo),
    /// The claim's own live lease: extended, same term.
    Own(Term),
    /// A released or expired lease: taken with this new term.
    Take(Term),
}

/// What a lease row says, validated.
pub(crate) struct Row {
    holder: CandidateId,
    /// 0 in rows written before the column existed: nobody's claim.
    nonce: u64,
    pub(crate) term: Term,
    /// Microseconds left by the server's clock; ≤ 0 when expired or released.
    remaining_us: i64,
    value: Option<LeaderValue>,
}

impl Row {
    pub(crate) fn live(&self) -> bool {
        self.remaining_us > 0
    }

    /// Whether the row's lease was granted to `claim`.
    pub(crate) fn granted_to(&self, claim: &Claim) -> bool {
        self.holder == claim.candidate && self.nonce == claim.nonce.get()
    }

    pub(crate) fn info(self) -> LeaderInfo {
        LeaderInfo {
            holder: self.holder,
            term: self.term,
            remaining: Duration::from_micros(self.remaining_us.max(0) as u64),
            value: self.value,
        }
    }
}

impl MysqlStore {
    /// Connects to the server `url` names, with the default configuration.
    pub async fn connect_url(url: &str) -> Result<MysqlStore> {
        Self::connect(MysqlConfig::new(url)).await
    }

    /// Validates `config` and connects (one round trip to check the server answers). It does
    /// not create the table: see [`migrate`](Self::migrate).
    pub async fn connect(config: MysqlConfig) -> Result<MysqlStore> {
        Ok(Self::open(Client::connect(config).await?))
    }

    /// A store on the application's own `mysql_async` pool (one round trip to check that its
    /// connections select a database). `config` gives the table, the request timeout and the
    /// release poll; its URL and pool size are not used. Like [`connect`](Self::connect), it
    /// does not create the table.
    ///
    /// What elect needs of the pool: connections to the database that holds the table, and
    /// nothing else of their session (each transaction sets its own isolation level, no
    /// session variable is read or set). A pool with an idle-connection TTL of zero and a
    /// minimum of zero (mysql_async's defaults) opens a connection for every request: give it
    /// `inactive_connection_ttl` above zero, as elect's own pools have (60 s).
    ///
    /// ```no_run
    /// use elect_mysql::mysql_async::{Opts, Pool};
    /// use elect_mysql::{MysqlConfig, MysqlStore};
    ///
    /// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
    /// let pool = Pool::new(Opts::from_url("mysql://app:secret@db.internal/app")?);
    /// let store = MysqlStore::from_pool(pool.clone(), MysqlConfig::new("")).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn from_pool(pool: mysql_async::Pool, config: MysqlConfig) -> Result<MysqlStore> {
        Ok(Self::open(Client::from_pool(pool, config).await?))
    }

    fn open(client: Client) -> MysqlStore {
        MysqlStore {
            inner: Arc::new(Inner {
                feed: Poller::new(client.config.release_poll, client.config.release_locks),
                beacons: client
                    .config
                    .release_locks
                    .then(crate::wake::Beacons::default),
                client: Arc::new(client),
                schema_checked: tokio::sync::OnceCell::new(),
                warned_no_value: std::sync::atomic::AtomicBool::new(false),
            }),
        }
    }

    /// Creates the table if it does not exist (`CREATE TABLE IF NOT EXISTS`), adds the `nonce`
    /// and `value` columns to an older table ([`ADD_NONCE_SQL`](crate::ADD_NONCE_SQL),
    /// [`ADD_VALUE_SQL`](crate::ADD_VALUE_SQL)), and checks the result like every store does
    /// before its first request. Call it from a migration step or a tool with DDL rights; elect
    /// never calls it by itself. A store that already checked the table keeps what it found
    /// until it is made again.
    pub async fn migrate(&self) -> Result<()> {
        let table = self.inner.client.config.table.clone();
        let ddl = create_table_sql(&table);
        self.request("migrate", async move |conn| conn.query_drop(ddl).await)
            .await?;
        let found = self.inspect().await?;
        if found.mismatch == Some(Mismatch::NoNonce) {
            let alter = add_nonce_sql(&table);
            self.request("migrate", async move |conn| conn.query_drop(alter).await)
                .await?;
        }
        if !found.value && matches!(found.mismatch, None | Some(Mismatch::NoNonce)) {
            let alter = add_value_sql(&table);
            self.request("migrate", async move |conn| conn.query_drop(alter).await)
                .await?;
        }
        self.check_schema().await.map(drop)
    }

    /// Whether the table exists (with any columns): for tools that create it when missing and
    /// must otherwise leave it alone.
    pub async fn table_exists(&self) -> Result<bool> {
        Ok(self.inspect().await?.mismatch != Some(Mismatch::Missing))
    }

    async fn inspect(&self) -> Result<schema::Inspection> {
        let table = &self.inner.client.config.table;
        self.request("check table", async |conn| {
            schema::inspect(conn, table).await
        })
        .await
    }

    /// Checks, once per store, that the table is fit for elect (columns, types, precision,
    /// collations, the unique key), and refuses it with [`Error::NotSetUp`] otherwise. Returns
    /// the statements for the table (with or without the `value` column).
    pub(crate) async fn check_schema(&self) -> Result<&Sql> {
        let value = self
            .inner
            .schema_checked
            .get_or_try_init(|| async {
                let found = self.inspect().await?;
                match found.mismatch {
                    None => Ok(found.value),
                    Some(mismatch) => Err(not_set_up(&self.inner.client.config.table, mismatch)),
                }
            })
            .await?;
        Ok(&self.inner.client.sql[usize::from(*value)])
    }

    /// Warns once that this table cannot keep leaders' values.
    pub(crate) fn warn_no_value(&self) {
        use std::sync::atomic::Ordering;
        if !self.inner.warned_no_value.swap(true, Ordering::Relaxed) {
            warn!(
                table = %self.inner.client.config.table,
                "the table has no `value` column: leaders' values are not stored \
                 (MysqlStore::migrate or ADD_VALUE_SQL adds it)"
            );
        }
    }

    /// The named locks held while leading, when the store keeps them.
    pub(crate) fn beacons(&self) -> Option<&crate::wake::Beacons> {
        self.inner.beacons.as_ref()
    }

    /// The pool, for callers that want to share it.
    pub fn pool(&self) -> &Pool {
        &self.inner.client.pool
    }

    /// One request through the client (see [`Client::request`]).
    pub(crate) async fn request<T>(
        &self,
        operation: &'static str,
        f: impl AsyncFnOnce(&mut mysql_async::Conn) -> mysql_async::Result<T>,
    ) -> Result<T> {
        self.inner.client.request(operation, f).await
    }

    /// Validates the first five columns of a lease row (holder, term, remaining µs, nonce,
    /// value).
    pub(crate) fn row(&self, election: &ElectionName, values: &[Value]) -> Result<Row> {
        let corrupt = |why: String| Error::corrupt(STORE, self.key(election), why);
        let [holder, term, remaining, nonce, value] = values else {
            return Err(corrupt(format!("unexpected row shape {values:?}")));
        };
        let value = match value {
            Value::NULL => None,
            Value::Bytes(b) => backend::value(STORE, &self.key(election), Some(b))?,
            other => return Err(corrupt(format!("value {other:?} is not bytes"))),
        };
        let text = match holder {
            Value::Bytes(b) => std::str::from_utf8(b).ok(),
            _ => None,
        };
        let holder = backend::holder(
            STORE,
            &self.key(election),
            text,
            &format_args!("{holder:?}"),
        )?;
        let term = backend::term(
            STORE,
            &self.key(election),
            int(term),
            &format_args!("{term:?}"),
        )?;
        let remaining_us = int(remaining)
            .and_then(|r| i64::try_from(r).ok())
            .ok_or_else(|| corrupt(format!("expires_at gives remaining time {remaining:?}")))?;
        let nonce = int(nonce)
            .and_then(|n| u64::try_from(n).ok())
            .ok_or_else(|| corrupt(format!("nonce {nonce:?} is not an unsigned integer")))?;
        Ok(Row {
            holder,
            nonce,
            term,
            remaining_us,
            value,
        })
    }

    /// What `claim` gets from `row`, locked. `floor` is the server's clock in µs, read under
    /// the same lock: a new grant's term is above it and above the stored term, so a foreign
    /// write that lowered the stored term cannot take terms back.
    pub(crate) fn decide(
        &self,
        claim: &Claim,
        row: Row,
        floor: Option<&Value>,
    ) -> Result<Decision> {
        if row.live() && !row.granted_to(claim) {
            return Ok(Decision::Held(row.info()));
        }
        if row.live() {
            return Ok(Decision::Own(row.term));
        }
        let floor = floor.and_then(int).unwrap_or(0).max(0) as u64;
        match row.term.next() {
            Some(next) => Ok(Decision::Take(Term(next.get().max(floor)))),
            None => Err(Error::corrupt(
                STORE,
                self.key(&claim.election),
                "the term counter is exhausted",
            )),
        }
    }

    /// How errors name a row: `table[election]`.
    pub(crate) fn key(&self, election: &ElectionName) -> String {
        format!("{}[{election}]", self.inner.client.config.table)
    }

    /// One acquire transaction: lock the row (or create it), decide, write, commit. `None`
    /// when another candidate created the row first (the caller tries again).
    async fn acquire_once(&self, sql: &Sql, value: bool, claim: &Claim) -> Result<Option<Acquire>> {
        let election = &claim.election;
        let v = claim.value.as_ref().map(|v| v.as_str().as_bytes().to_vec());
        let micros = claim.ttl.get().as_micros() as u64;
        let (e, c, n) = (
            election.as_str(),
            claim.candidate.as_str(),
            claim.nonce.get(),
        );
        let outcome: Step = self
            .request("try_acquire", async |conn| {
                let mut tx = conn.start_transaction(read_committed()).await?;
                let existing: Option<mysql_async::Row> = tx.exec_first(&sql.lock, (e,)).await?;
                let Some(existing) = existing else {
                    let inserted = if value {
                        tx.exec_drop(&sql.insert, (e, c, n, micros, v.clone()))
                            .await
                    } else {
                        tx.exec_drop(&sql.insert, (e, c, n, micros)).await
                    };
                    match inserted {
                        Err(mysql_async::Error::Server(s)) if s.code == 1062 => {
                            return Ok(Step::Race)
                        }
                        other => other?,
                    }
                    let inserted: Option<mysql_async::Row> = tx.exec_first(&sql.lock, (e,)).await?;
                    let step = match inserted.map(|r| self.row(election, &r.unwrap()[..5])) {
                        Some(Ok(row)) => Step::Done(Acquire::Granted(claim.granted(row.term))),
                        Some(Err(corrupt)) => Step::Corrupt(corrupt),
                        None => Step::Race,
                    };
                    tx.commit().await?;
                    return Ok(step);
                };
                let values = existing.unwrap();
                let row = match self.row(election, values.get(..5).unwrap_or(&values)) {
                    Ok(row) => row,
                    Err(corrupt) => return Ok(Step::Corrupt(corrupt)),
                };
                let step = match self.decide(claim, row, values.get(5)) {
                    Ok(Decision::Held(info)) => Step::Done(Acquire::Held(info)),
                    Ok(Decision::Own(term)) => {
                        tx.exec_drop(&sql.extend, (micros, e)).await?;
                        Step::Done(Acquire::Granted(claim.granted(term)))
                    }
                    Ok(Decision::Take(term)) => {
                        if value {
                            let params = (c, n, term.get(), micros, v.clone(), e);
                            tx.exec_drop(&sql.take, params).await?;
                        } else {
                            tx.exec_drop(&sql.take, (c, n, term.get(), micros, e))
                                .await?;
                        }
                        Step::Done(Acquire::Granted(claim.granted(term)))
                    }
                    Err(corrupt) => Step::Corrupt(corrupt),
                };
                tx.commit().await?;
                Ok(step)
            })
            .await?;
        match outcome {
            Step::Done(acquire) => Ok(Some(acquire)),
            Step::Race => Ok(None),
            Step::Corrupt(e) => Err(e),
        }
    }

    /// `election`'s row, validated, with its version.
    async fn read(&self, sql: &Sql, election: &ElectionName) -> Result<Option<(Row, u64)>> {
        let e = election.as_str();
        let row: Option<mysql_async::Row> = self
            .request("leader", async |conn| {
                conn.exec_first(&sql.leader, (e,)).await
            })
            .await?;
        let Some(values) = row.map(mysql_async::Row::unwrap) else {
            return Ok(None);
        };
        let row = self.row(election, values.get(..5).unwrap_or(&values))?;
        let version = values
            .get(5)
            .and_then(int)
            .and_then(|v| u64::try_from(v).ok())
            .ok_or_else(|| {
                Error::corrupt(
                    STORE,
                    self.key(election),
                    format!("version {:?} is not an unsigned integer", values.get(5)),
                )
            })?;
        Ok(Some((row, version)))
    }

    /// Takes `claim`'s election in one statement (no transaction) when its row is still at
    /// `version` and no lease runs on it: the hand-over's and the failover's acquisition,
    /// after a read (or the feed's read at a wake-up) found the lease released or expired.
    /// The statement decides what the transaction would (a term above the stored one and the
    /// server's clock), atomically, under the row's lock; `None` when the row moved or is not
    /// well-formed (the transaction then decides, and names a corrupt row).
    async fn take_vacant(
        &self,
        sql: &Sql,
        value: bool,
        claim: &Claim,
        version: u64,
    ) -> Result<Option<Lease>> {
        let v = claim.value.as_ref().map(|v| v.as_str().as_bytes().to_vec());
        let micros = claim.ttl.get().as_micros() as u64;
        let (e, c, n) = (
            claim.election.as_str(),
            claim.candidate.as_str(),
            claim.nonce.get(),
        );
        let term = self
            .request("try_acquire", async |conn| {
                if value {
                    conn.exec_drop(&sql.take_vacant, (c, n, micros, v, e, version))
                        .await?;
                } else {
                    conn.exec_drop(&sql.take_vacant, (c, n, micros, e, version))
                        .await?;
                }
                // A term of 0 cannot be stored; were it reported, the transaction would find
                // the claim's own lease and extend it under its term.
                Ok(conn.last_insert_id().filter(|_| conn.affected_rows() == 1))
            })
            .await?;
        Ok(term.map(|t| claim.granted(Term(t))))
    }

    /// Runs a guarded update; true when it matched the live lease.
    async fn guarded(
        &self,
        operation: &'static str,
        statement: &str,
        params: mysql_async::Params,
    ) -> Result<bool> {
        self.request(operation, async |conn| {
            conn.exec_drop(statement, params).await?;
            Ok(conn.affected_rows() == 1)
        })
        .await
    }
}

#[async_trait]
impl LeaseStore for MysqlStore {
    fn kind(&self) -> &'static str {
        STORE
    }

    async fn try_acquire(&self, claim: &Claim) -> Result<Acquire> {
        let sql = self.check_schema().await?;
        let value = sql.value;
        if claim.value.is_some() && !value {
            self.warn_no_value();
        }
        // Read first: a follower that wakes into a renewed lease costs one plain SELECT, not
        // a locking transaction (five round trips). A released or expired lease is taken by
        // one guarded UPDATE on the version read; a follower woken by a release the feed just
        // saw skips the read too, so a hand-over costs its new leader one statement. Anything
        // else (no row, the claim's own live lease, a row that moved or is not well-formed)
        // goes on to the transaction, which decides again under the row lock.
        let seen = match self.inner.feed.take_vacancy(&claim.election) {
            Some(version) => Some(version),
            None => match self.read(sql, &claim.election).await? {
                Some((row, _)) if row.live() && !row.granted_to(claim) => {
                    return Ok(Acquire::Held(row.info()));
                }
                Some((row, version)) if !row.live() => Some(version),
                _ => None,
            },
        };
        if let Some(version) = seen {
            if let Some(lease) = self.take_vacant(sql, value, claim, version).await? {
                if let Some(beacons) = &self.inner.beacons {
                    beacons.granted(&self.inner.client, &lease);
                }
                return Ok(Acquire::Granted(lease));
            }
            debug!(election = %claim.election, "the vacant row moved; deciding in a transaction");
        }
        // Lost insert races and deadlocks resolve on the next attempt.
        for attempt in 0..5 {
            match self.acquire_once(sql, value, claim).await {
                Ok(Some(outcome)) => {
                    if let (Acquire::Granted(lease), Some(beacons)) =
                        (&outcome, &self.inner.beacons)
                    {
                        beacons.granted(&self.inner.client, lease);
                    }
                    return Ok(outcome);
                }
                Ok(None) => debug!(attempt, "insert race; trying again"),
                Err(e) if is_deadlock(&e) && attempt < 4 => {
                    debug!(attempt, "deadlock; trying again")
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::Unavailable {
            store: STORE,
            operation: "try_acquire",
            message: "contention: no decision after 5 attempts".into(),
            source: None,
        })
    }

    async fn renew(&self, lease: &Lease) -> Result<Renewal> {
        let sql = self.check_schema().await?;
        let micros = lease.ttl.get().as_micros() as u64;
        let params = (
            micros,
            lease.election.as_str(),
            lease.holder.as_str(),
            lease.nonce.get(),
            lease.term.get(),
        )
            .into();
        let renewed = self.guarded("renew", &sql.renew, params).await?;
        if let Some(beacons) = &self.inner.beacons {
            if renewed {
                beacons.renewed(lease);
            } else {
                beacons.ended(lease);
            }
        }
        Ok(if renewed {
            Renewal::Renewed(lease.clone())
        } else {
            Renewal::Lost
        })
    }

    async fn release(&self, lease: &Lease) -> Result<Release> {
        let sql = self.check_schema().await?;
        let params = (
            lease.election.as_str(),
            lease.holder.as_str(),
            lease.nonce.get(),
            lease.term.get(),
        )
            .into();
        // On the beacon's connection when it holds the lock: the server lets the lock go
        // right after the release commits (one round trip for both).
        let mut beacon = self
            .inner
            .beacons
            .as_ref()
            .and_then(|b| b.take_for_release(lease));
        if let Some(conn) = beacon.take() {
            match wake::release_on(&self.inner.client, sql, conn, lease).await {
                ReleasedOn::Ran(released) => return released.map(matched),
                ReleasedOn::Refused(conn) => beacon = Some(conn),
            }
        }
        let released = self.guarded("release", &sql.release, params).await;
        // After the row says so: a waiter woken by the lock reads a released lease.
        if let Some(conn) = beacon {
            wake::let_go(&Arc::downgrade(&self.inner.client), conn, &lease.election).await;
        }
        if let Some(beacons) = &self.inner.beacons {
            beacons.ended(lease);
        }
        released.map(matched)
    }

    async fn leader(&self, election: &ElectionName) -> Result<Option<LeaderInfo>> {
        let sql = self.check_schema().await?;
        Ok(self
            .read(sql, election)
            .await?
            .map(|(row, _)| row)
            .filter(Row::live)
            .map(Row::info))
    }

    async fn subscribe(&self, election: &ElectionName) -> Result<Option<ChangeFeed>> {
        self.check_schema().await?;
        self.inner
            .feed
            .subscribe(&self.inner.client, election)
            .await
    }
}
