//! [`MysqlStore`]: the [`LeaseStore`] on MySQL and MariaDB.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use elect_core::{
    async_trait, Acquire, CandidateId, ChangeFeed, Claim, ElectionName, Error, LeaderInfo, Lease,
    LeaseStore, Release, Renewal, Result, Term,
};
use mysql_async::prelude::Queryable;
use mysql_async::{IsolationLevel, Opts, OptsBuilder, Pool, PoolConstraints, TxOpts, Value};
use tracing::debug;

use crate::config::{redact, MysqlConfig};
use crate::poll::Poller;
use crate::schema::{self, add_nonce_sql, create_table_sql, Mismatch};

/// How long an idle pooled connection is kept before it is closed.
const IDLE_CONNECTION_TTL: Duration = Duration::from_secs(60);

pub(crate) const STORE: &str = "mysql";

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

pub(crate) struct Inner {
    pub(crate) config: MysqlConfig,
    pub(crate) pool: Pool,
    pub(crate) sql: Sql,
    poller: Poller,
    /// Set once the table was found fit (see [`schema::inspect`]).
    schema_checked: tokio::sync::OnceCell<()>,
}

impl fmt::Debug for MysqlStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MysqlStore")
            .field("url", &redact(&self.inner.config.url))
            .field("table", &self.inner.config.table)
            .finish()
    }
}

/// The statements, with the (validated) table name filled in once.
pub(crate) struct Sql {
    lock: String,
    insert: String,
    take: String,
    extend: String,
    renew: String,
    release: String,
    leader: String,
    pub(crate) versions: String,
}

/// The server's clock in microseconds since the epoch, from UTC and without time zone
/// conversions (`UNIX_TIMESTAMP(NOW(6))` converts through the session's zone, which can run
/// backwards across a daylight-saving change).
const CLOCK_US: &str = "TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', UTC_TIMESTAMP(6))";

impl Sql {
    fn new(table: &str) -> Sql {
        const NOW: &str = "UTC_TIMESTAMP(6)";
        let read = format!(
            "SELECT `holder`, `term`, TIMESTAMPDIFF(MICROSECOND, {NOW}, `expires_at`), `nonce` \
             FROM `{table}` WHERE `election` = ?"
        );
        let expiry = format!("`expires_at` = {NOW} + INTERVAL ? MICROSECOND");
        let guard = format!(
            "WHERE `election` = ? AND `holder` = ? AND `nonce` = ? AND `term` = ? AND `expires_at` > {NOW}"
        );
        Sql {
            // With the clock floor for the next term, read under the same lock.
            lock: format!(
                "SELECT `holder`, `term`, TIMESTAMPDIFF(MICROSECOND, {NOW}, `expires_at`), `nonce`, \
                 {CLOCK_US} FROM `{table}` WHERE `election` = ? FOR UPDATE"
            ),
            // A new row starts from the server's clock in microseconds, not from 1: if the row
            // was deleted, terms still do not go back.
            insert: format!(
                "INSERT INTO `{table}` (`election`, `holder`, `nonce`, `term`, `expires_at`, `version`) \
                 VALUES (?, ?, ?, {CLOCK_US}, {NOW} + INTERVAL ? MICROSECOND, 1)"
            ),
            take: format!(
                "UPDATE `{table}` SET `holder` = ?, `nonce` = ?, `term` = ?, {expiry}, \
                 `version` = `version` + 1 WHERE `election` = ?"
            ),
            extend: format!(
                "UPDATE `{table}` SET {expiry}, `version` = `version` + 1 WHERE `election` = ?"
            ),
            renew: format!(
                "UPDATE `{table}` SET {expiry}, `version` = `version` + 1 {guard}"
            ),
            release: format!(
                "UPDATE `{table}` SET `expires_at` = {NOW}, `version` = `version` + 1 {guard}"
            ),
            leader: read,
            versions: format!(
                "SELECT `election`, `version`, `expires_at` > {NOW} FROM `{table}` WHERE `election` IN "
            ),
        }
    }
}

/// What one acquire transaction decided. (A transaction dropped without commit rolls back.)
enum Step {
    Done(Acquire),
    Race,
    Corrupt(Error),
}

/// What a lease row says, validated.
struct Row {
    holder: CandidateId,
    /// 0 in rows written before the column existed: nobody's claim.
    nonce: u64,
    term: Term,
    /// Microseconds left by the server's clock; ≤ 0 when expired or released.
    remaining_us: i64,
}

impl Row {
    fn live(&self) -> bool {
        self.remaining_us > 0
    }

    /// Whether the row's lease was granted to `claim`.
    fn granted_to(&self, claim: &Claim) -> bool {
        self.holder == claim.candidate && self.nonce == claim.nonce.get()
    }

    fn info(self) -> LeaderInfo {
        LeaderInfo {
            holder: self.holder,
            term: self.term,
            remaining: Duration::from_micros(self.remaining_us.max(0) as u64),
        }
    }
}

impl MysqlStore {
    pub(crate) fn inner_arc(&self) -> Arc<Inner> {
        self.inner.clone()
    }

    pub(crate) fn from_inner(inner: Arc<Inner>) -> MysqlStore {
        MysqlStore { inner }
    }

    /// Connects to the server `url` names, with the default configuration.
    pub async fn connect_url(url: &str) -> Result<MysqlStore> {
        Self::connect(MysqlConfig::new(url)).await
    }

    /// Validates `config` and connects (one round trip to check the server answers). It does
    /// not create the table: see [`migrate`](Self::migrate).
    pub async fn connect(config: MysqlConfig) -> Result<MysqlStore> {
        config.validate()?;
        let opts = Opts::from_url(&config.url).map_err(|e| Error::InvalidConfig {
            message: format!("{}: {e}", redact(&config.url)),
        })?;
        if opts.db_name().is_none_or(str::is_empty) {
            return Err(Error::InvalidConfig {
                message: format!(
                    "{} names no database: add it as the URL's path (mysql://host/DATABASE)",
                    redact(&config.url)
                ),
            });
        }
        let constraints =
            PoolConstraints::new(0, config.pool_size).ok_or_else(|| Error::InvalidConfig {
                message: "bad pool size".into(),
            })?;
        // No COM_RESET_CONNECTION between requests: elect keeps no session state (every
        // transaction sets its own isolation level; a transaction abandoned by a timeout is
        // rolled back by mysql_async before the connection is reused), and a reset costs a
        // round trip and the prepared-statement cache — measured, it tripled the queries an
        // idle follower sends.
        //
        // An idle-connection TTL above zero keeps returned connections for reuse: with the
        // default (zero) mysql_async keeps at most the pool's *minimum* idle (here 0), so every
        // request closed its connection and opened a new one (a TCP and auth handshake per
        // request; measured: 131 connections in 3 s for two candidates).
        let pool_opts = opts
            .pool_opts()
            .clone()
            .with_constraints(constraints)
            .with_inactive_connection_ttl(IDLE_CONNECTION_TTL)
            .with_reset_connection(false);
        let opts = OptsBuilder::from_opts(opts).pool_opts(pool_opts);
        let pool = Pool::new(opts);
        let store = MysqlStore {
            inner: Arc::new(Inner {
                sql: Sql::new(&config.table),
                poller: Poller::new(config.release_poll),
                schema_checked: tokio::sync::OnceCell::new(),
                config,
                pool,
            }),
        };
        store
            .request("connect", async |conn| conn.ping().await)
            .await?;
        Ok(store)
    }

    /// Creates the table if it does not exist (`CREATE TABLE IF NOT EXISTS`), adds the `nonce`
    /// column to a table from elect-mysql 0.1.0 ([`ADD_NONCE_SQL`](crate::ADD_NONCE_SQL)), and
    /// checks the result like every store does before its first request. Call it from a
    /// migration step or a tool with DDL rights; elect never calls it by itself.
    pub async fn migrate(&self) -> Result<()> {
        let table = self.inner.config.table.clone();
        let ddl = create_table_sql(&table);
        self.request("migrate", async move |conn| conn.query_drop(ddl).await)
            .await?;
        if self.inspect().await? == Some(Mismatch::NoNonce) {
            let alter = add_nonce_sql(&table);
            self.request("migrate", async move |conn| conn.query_drop(alter).await)
                .await?;
        }
        self.check_schema().await
    }

    /// Whether the table exists (with any columns): for tools that create it when missing and
    /// must otherwise leave it alone.
    pub async fn table_exists(&self) -> Result<bool> {
        Ok(self.inspect().await? != Some(Mismatch::Missing))
    }

    async fn inspect(&self) -> Result<Option<Mismatch>> {
        let table = &self.inner.config.table;
        self.request("check table", async |conn| {
            schema::inspect(conn, table).await
        })
        .await
    }

    /// Checks, once per store, that the table is fit for elect (columns, types, precision,
    /// collations, the unique key), and refuses it with [`Error::NotSetUp`] otherwise.
    async fn check_schema(&self) -> Result<()> {
        self.inner
            .schema_checked
            .get_or_try_init(|| async {
                match self.inspect().await? {
                    None => Ok(()),
                    Some(mismatch) => Err(not_set_up(&self.inner.config.table, mismatch)),
                }
            })
            .await
            .map(|_| ())
    }

    /// The pool, for callers that want to share it.
    pub fn pool(&self) -> &Pool {
        &self.inner.pool
    }

    /// Runs `f` on a pooled connection under the configured timeout, mapping errors.
    pub(crate) async fn request<T>(
        &self,
        operation: &'static str,
        f: impl AsyncFnOnce(&mut mysql_async::Conn) -> mysql_async::Result<T>,
    ) -> Result<T> {
        let timeout = self.inner.config.timeout;
        let work = async {
            let mut conn = self.inner.pool.get_conn().await?;
            f(&mut conn).await
        };
        match tokio::time::timeout(timeout, work).await {
            Ok(result) => result.map_err(|e| map_err(operation, &self.inner.config.table, e)),
            Err(_) => Err(Error::timeout(STORE, operation, timeout)),
        }
    }

    /// Validates the first four columns of a lease row (holder, term, remaining µs, nonce).
    fn row(&self, election: &ElectionName, values: &[Value]) -> Result<Row> {
        let corrupt = |why: String| Error::corrupt(STORE, self.key(election), why);
        let [holder, term, remaining, nonce] = values else {
            return Err(corrupt(format!("unexpected row shape {values:?}")));
        };
        let holder = match holder {
            Value::Bytes(b) => std::str::from_utf8(b)
                .ok()
                .and_then(|s| CandidateId::new(s).ok())
                .ok_or_else(|| {
                    corrupt(format!(
                        "holder {:?} is not a valid candidate id",
                        String::from_utf8_lossy(b)
                    ))
                })?,
            other => return Err(corrupt(format!("holder is {other:?}"))),
        };
        let term = match int(term) {
            Some(t) if t >= 1 && t <= u64::MAX as i128 => Term(t as u64),
            _ => return Err(corrupt(format!("term {term:?} is not a positive integer"))),
        };
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
        })
    }

    /// How errors name a row: `table[election]`.
    fn key(&self, election: &ElectionName) -> String {
        format!("{}[{election}]", self.inner.config.table)
    }

    /// One acquire transaction: lock the row (or create it), decide, write, commit. `None`
    /// when another candidate created the row first (the caller tries again).
    async fn acquire_once(&self, claim: &Claim) -> Result<Option<Acquire>> {
        let sql = &self.inner.sql;
        let election = &claim.election;
        let micros = claim.ttl.get().as_micros() as u64;
        let (e, c, n) = (
            election.as_str(),
            claim.candidate.as_str(),
            claim.nonce.get(),
        );
        let outcome: Step = self
            .request("try_acquire", async |conn| {
                let mut tx = conn
                    .start_transaction(
                        TxOpts::default()
                            .with_isolation_level(IsolationLevel::ReadCommitted)
                            .clone(),
                    )
                    .await?;
                let existing: Option<mysql_async::Row> = tx.exec_first(&sql.lock, (e,)).await?;
                let Some(existing) = existing else {
                    match tx.exec_drop(&sql.insert, (e, c, n, micros)).await {
                        Err(mysql_async::Error::Server(s)) if s.code == 1062 => {
                            return Ok(Step::Race)
                        }
                        other => other?,
                    }
                    let inserted: Option<mysql_async::Row> = tx.exec_first(&sql.lock, (e,)).await?;
                    let step = match inserted.map(|r| self.row(election, &r.unwrap()[..4])) {
                        Some(Ok(row)) => Step::Done(Acquire::Granted(claim.granted(row.term))),
                        Some(Err(corrupt)) => Step::Corrupt(corrupt),
                        None => Step::Race,
                    };
                    tx.commit().await?;
                    return Ok(step);
                };
                let values = existing.unwrap();
                let row = match self.row(election, values.get(..4).unwrap_or(&values)) {
                    Ok(row) => row,
                    Err(corrupt) => return Ok(Step::Corrupt(corrupt)),
                };
                let step = if row.live() && !row.granted_to(claim) {
                    Step::Done(Acquire::Held(row.info()))
                } else if row.live() {
                    tx.exec_drop(&sql.extend, (micros, e)).await?;
                    Step::Done(Acquire::Granted(claim.granted(row.term)))
                } else {
                    // A new grant: above the stored term and the server's clock in µs, so a
                    // foreign write that lowered the stored term cannot take terms back.
                    let floor = values.get(4).and_then(int).unwrap_or(0).max(0) as u64;
                    match row.term.next() {
                        Some(next) => {
                            let term = Term(next.get().max(floor));
                            tx.exec_drop(&sql.take, (c, n, term.get(), micros, e))
                                .await?;
                            Step::Done(Acquire::Granted(claim.granted(term)))
                        }
                        None => Step::Corrupt(Error::corrupt(
                            STORE,
                            self.key(election),
                            "the term counter is exhausted",
                        )),
                    }
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

    async fn read(&self, election: &ElectionName) -> Result<Option<Row>> {
        let sql = &self.inner.sql;
        let e = election.as_str();
        let row: Option<mysql_async::Row> = self
            .request("leader", async |conn| {
                conn.exec_first(&sql.leader, (e,)).await
            })
            .await?;
        row.map(|r| self.row(election, &r.unwrap())).transpose()
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

/// An integer column, whatever the protocol made of it.
pub(crate) fn int(v: &Value) -> Option<i128> {
    match v {
        Value::Int(i) => Some(*i as i128),
        Value::UInt(u) => Some(*u as i128),
        Value::Bytes(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        _ => None,
    }
}

#[async_trait]
impl LeaseStore for MysqlStore {
    async fn try_acquire(&self, claim: &Claim) -> Result<Acquire> {
        self.check_schema().await?;
        // Read first: a follower that wakes into a renewed lease costs one plain SELECT, not
        // a locking transaction (four statements). Only a vacant, expired or own lease goes
        // on to the transaction, which decides again under the row lock.
        if let Some(row) = self.read(&claim.election).await? {
            if row.live() && !row.granted_to(claim) {
                return Ok(Acquire::Held(row.info()));
            }
        }
        // Lost insert races and deadlocks resolve on the next attempt.
        for attempt in 0..5 {
            match self.acquire_once(claim).await {
                Ok(Some(outcome)) => return Ok(outcome),
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
        self.check_schema().await?;
        let micros = lease.ttl.get().as_micros() as u64;
        let params = (
            micros,
            lease.election.as_str(),
            lease.holder.as_str(),
            lease.nonce.get(),
            lease.term.get(),
        )
            .into();
        let renewed = self.guarded("renew", &self.inner.sql.renew, params).await?;
        Ok(if renewed {
            Renewal::Renewed(lease.clone())
        } else {
            Renewal::Lost
        })
    }

    async fn release(&self, lease: &Lease) -> Result<Release> {
        self.check_schema().await?;
        let params = (
            lease.election.as_str(),
            lease.holder.as_str(),
            lease.nonce.get(),
            lease.term.get(),
        )
            .into();
        let released = self
            .guarded("release", &self.inner.sql.release, params)
            .await?;
        Ok(if released {
            Release::Released
        } else {
            Release::NotHeld
        })
    }

    async fn leader(&self, election: &ElectionName) -> Result<Option<LeaderInfo>> {
        self.check_schema().await?;
        Ok(self.read(election).await?.filter(Row::live).map(Row::info))
    }

    async fn subscribe(&self, election: &ElectionName) -> Result<Option<ChangeFeed>> {
        self.check_schema().await?;
        self.inner.poller.subscribe(self, election).await
    }
}

/// Whether `e` is the server's deadlock error (1213), found by its code.
fn is_deadlock(e: &Error) -> bool {
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<mysql_async::Error>())
        .is_some_and(|e| matches!(e, mysql_async::Error::Server(s) if s.code == 1213))
}

/// What to tell the user about a table that is missing or not elect's.
fn not_set_up(table: &str, mismatch: Mismatch) -> Error {
    let message = match mismatch {
        Mismatch::Missing => missing_table(table),
        Mismatch::NoNonce => format!(
            "table `{table}` has no `nonce` column (added in elect-mysql 0.2.0): call \
             MysqlStore::migrate(), or run `{}`",
            add_nonce_sql(table)
        ),
        Mismatch::Other(wrong) => format!(
            "table `{table}` does not have elect's shape: {}. Create it from \
             elect_mysql::create_table_sql(\"{table}\") (CREATE_TABLE_SQL for the default name), \
             or point MysqlConfig::table at a table made that way",
            wrong.join("; ")
        ),
    };
    Error::NotSetUp {
        store: STORE,
        message,
    }
}

fn missing_table(table: &str) -> String {
    format!(
        "table `{table}` does not exist: run the DDL from elect_mysql::create_table_sql(\"{table}\") \
         (CREATE_TABLE_SQL for the default name) in a migration, or call MysqlStore::migrate()"
    )
}

/// Maps a mysql_async error by what it means for the caller.
pub(crate) fn map_err(operation: &'static str, table: &str, e: mysql_async::Error) -> Error {
    use mysql_async::Error as E;
    match &e {
        E::Server(s) if s.code == 1146 => Error::NotSetUp {
            store: STORE,
            message: missing_table(table),
        },
        E::Server(s) if s.code == 1054 => Error::NotSetUp {
            store: STORE,
            message: format!(
                "table `{table}` does not have elect's columns ({}): compare it with create_table_sql(\"{table}\")",
                s.message
            ),
        },
        E::Server(s) if matches!(s.code, 1044 | 1045 | 1142 | 1143 | 1227 | 1370) => {
            Error::NotSetUp {
                store: STORE,
                message: format!("access denied: {}", s.message),
            }
        }
        // Lock wait timeout, deadlock, too many connections, shutdown in progress, query
        // interrupted, server gone away / lost, read-only (failover in progress).
        E::Server(s)
            if matches!(
                s.code,
                1205 | 1213 | 1040 | 1053 | 1317 | 2006 | 2013 | 1290 | 1792 | 1836 | 3024
            ) =>
        {
            Error::unavailable(STORE, operation, e)
        }
        E::Server(_) | E::Other(_) => Error::other(STORE, e),
        E::Io(_) | E::Driver(_) => Error::unavailable(STORE, operation, e),
        E::Url(_) => Error::InvalidConfig {
            message: format!("mysql: {e}"),
        },
    }
}
