//! [`PostgresStore`]: the [`LeaseStore`] on PostgreSQL.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use elect_core::backend;
use elect_core::{
    async_trait, Acquire, ChangeFeed, Claim, ElectionName, Error, LeaderInfo, LeaderValue, Lease,
    LeaseStore, Release, Renewal, Result, Term,
};
use tokio_postgres::types::Type;
use tokio_postgres::Row;
use tracing::debug;

use crate::client::{Client, Param};
use crate::config::{redact, PostgresConfig};
use crate::error::{map_err, missing_table, out_of_range, wrong_table, STORE};
use crate::feed::Listener;
use crate::schema::{self, create_table_sql, Column};

/// A [`LeaseStore`] on PostgreSQL 12+, in one table (see
/// [`CREATE_TABLE_SQL`](crate::CREATE_TABLE_SQL)).
///
/// Every time is the server's `clock_timestamp()`, so client clocks do not matter. Every
/// write is one statement in its own transaction at the server's default isolation (READ
/// COMMITTED is enough: each decides on the newest version of the one row it locks). No
/// session state and no named prepared statement: it works through PgBouncer in transaction
/// mode (notices then need [`Listen::Url`](crate::Listen::Url) or
/// [`Listen::Off`](crate::Listen::Off)). Clones share the pool and the listening connection.
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    feed: Listener,
    /// Set once the table was found fit.
    schema_checked: tokio::sync::OnceCell<()>,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("url", &redact(&self.inner.client.config.url))
            .field("table", &self.inner.client.config.table)
            .finish()
    }
}

/// What a lease row says, validated.
pub(crate) struct LeaseRow {
    holder: elect_core::CandidateId,
    nonce: i64,
    term: Term,
    /// Microseconds left by the server's clock; ≤ 0 when expired or released.
    remaining_us: i64,
    value: Option<LeaderValue>,
}

/// What the acquire statement did.
pub(crate) enum Acquired {
    /// A new lease with this term.
    Granted(Term),
    /// No grant: the row as the statement found it, if there was one (a lease over by then
    /// means another candidate took it first).
    Found(Option<LeaseRow>),
}

impl LeaseRow {
    pub(crate) fn live(&self) -> bool {
        self.remaining_us > 0
    }

    /// Whether the row's lease was granted to `claim`.
    pub(crate) fn granted_to(&self, claim: &Claim) -> bool {
        self.holder == claim.candidate && self.nonce == nonce(claim.nonce.get())
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

/// The advisory lock key `migrate` holds while it creates the table (`"elect"` in ASCII).
const MIGRATE_LOCK: i64 = 0x0065_6c65_6374;

/// A nonce's 64 bits in a signed `BIGINT`.
pub(crate) fn nonce(n: u64) -> i64 {
    n as i64
}

/// A TTL in microseconds (a `Ttl` is at most a day, far below `i64::MAX` µs).
pub(crate) fn micros(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_micros()).unwrap_or(i64::MAX)
}

impl PostgresStore {
    /// Connects to the server `url` names, with the default configuration.
    pub async fn connect_url(url: &str) -> Result<PostgresStore> {
        Self::connect(PostgresConfig::new(url)).await
    }

    /// Validates `config` and connects (one round trip to check the server answers). It does
    /// not create the table: see [`migrate`](Self::migrate).
    pub async fn connect(config: PostgresConfig) -> Result<PostgresStore> {
        let listener = Listener::new(config.clone());
        Ok(Self::open(Client::connect(config).await?, listener))
    }

    /// A store on the application's own deadpool-postgres `pool` (one round trip to check it
    /// answers). `config` gives the table, the request timeout and where notices come from
    /// (its URL is used only to listen, with [`Listen::SameUrl`](crate::Listen::SameUrl);
    /// give [`Listen::Off`](crate::Listen::Off) to have no notices); its pool size is not
    /// used.
    ///
    /// What elect needs of the pool: connections whose `search_path` finds the table, and
    /// nothing else of their session (no setting is read or changed, no statement is
    /// prepared by name). Recycling with `RecyclingMethod::Fast` saves a query per request.
    ///
    /// ```no_run
    /// use elect_postgres::deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
    /// use elect_postgres::tokio_postgres::NoTls;
    /// use elect_postgres::{Listen, PostgresConfig, PostgresStore};
    ///
    /// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
    /// let url = "postgres://app:secret@db.internal/app";
    /// let manager = Manager::from_config(
    ///     url.parse()?,
    ///     NoTls,
    ///     ManagerConfig { recycling_method: RecyclingMethod::Fast },
    /// );
    /// let pool = Pool::builder(manager).max_size(8).build()?;
    /// let store = PostgresStore::from_pool(pool.clone(), PostgresConfig::new(url)).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn from_pool(
        pool: deadpool_postgres::Pool,
        config: PostgresConfig,
    ) -> Result<PostgresStore> {
        let listener = Listener::new(config.clone());
        Ok(Self::open(Client::from_pool(pool, config).await?, listener))
    }

    /// A store on the application's own connection (tokio-postgres pipelines concurrent
    /// requests on one connection). Like [`from_pool`](Self::from_pool) otherwise. A request
    /// that times out cannot close a connection that is not elect's: give the client's
    /// connection a TCP keepalive, or use a pool.
    pub async fn from_client(
        client: Arc<tokio_postgres::Client>,
        config: PostgresConfig,
    ) -> Result<PostgresStore> {
        let listener = Listener::new(config.clone());
        Ok(Self::open(
            Client::from_client(client, config).await?,
            listener,
        ))
    }

    fn open(client: Client, feed: Listener) -> PostgresStore {
        PostgresStore {
            inner: Arc::new(Inner {
                client,
                feed,
                schema_checked: tokio::sync::OnceCell::new(),
            }),
        }
    }

    /// Creates the table if it does not exist (`CREATE TABLE IF NOT EXISTS`) and checks it
    /// like every store does before its first request. Call it from a migration step or a
    /// tool with DDL rights; elect never calls it by itself.
    pub async fn migrate(&self) -> Result<()> {
        // Concurrent `CREATE TABLE IF NOT EXISTS` can fail in PostgreSQL (a unique violation
        // on the catalog's type names: seen when two `elect run --store postgres://` started
        // together on an empty database); a transaction-scoped advisory lock serialises them.
        // One simple-protocol message, so one implicit transaction (rolled back whole on an
        // error, leaving no transaction open on the connection), which a transaction-mode
        // pooler keeps on one server connection.
        let ddl = format!(
            "SELECT pg_advisory_xact_lock({MIGRATE_LOCK}); {}",
            create_table_sql(&self.inner.client.config.table)
        );
        self.inner.client.batch("migrate", &ddl).await?;
        let wrong = self.inspect().await?;
        match wrong {
            Some(wrong) if wrong.is_empty() => Ok(()),
            Some(wrong) => Err(wrong_table(&self.inner.client.config.table, &wrong)),
            None => Err(missing_table(&self.inner.client.config.table)),
        }
    }

    /// Whether the table exists (with any columns): for tools that create it when missing and
    /// must otherwise leave it alone.
    pub async fn table_exists(&self) -> Result<bool> {
        Ok(self.inspect().await?.is_some())
    }

    /// The pool, when the store has one (not from [`from_client`](Self::from_client)).
    pub fn pool(&self) -> Option<&deadpool_postgres::Pool> {
        self.inner.client.pool()
    }

    /// The table's columns and unique key from the catalog: `None` when there is no such
    /// table, else what makes it unfit (empty when nothing does).
    async fn inspect(&self) -> Result<Option<Vec<String>>> {
        let client = &self.inner.client;
        let quoted = &client.sql.quoted;
        let params: [Param; 1] = [(quoted, Type::TEXT)];
        let rows = client
            .query("check table", schema::COLUMNS, &params)
            .await?;
        if rows.is_empty() {
            return Ok(None);
        }
        let mut columns = Vec::with_capacity(rows.len());
        for row in &rows {
            let column = (|| -> std::result::Result<Column, tokio_postgres::Error> {
                Ok(Column {
                    name: row.try_get(0)?,
                    data_type: row.try_get(1)?,
                    not_null: row.try_get(2)?,
                    has_default: row.try_get(3)?,
                    deterministic: row.try_get(4)?,
                })
            })()
            .map_err(|e| Error::other(STORE, e))?;
            columns.push(column);
        }
        let unique = client
            .query("check table", schema::UNIQUE_ELECTION, &params)
            .await?;
        let unique: i64 = unique.first().and_then(|r| r.try_get(0).ok()).unwrap_or(0);
        Ok(Some(schema::check(&columns, unique > 0)))
    }

    /// Checks, once per store, that the table is fit for elect, and refuses it with
    /// [`Error::NotSetUp`] otherwise.
    pub(crate) async fn check_schema(&self) -> Result<()> {
        self.inner
            .schema_checked
            .get_or_try_init(|| async {
                match self.inspect().await? {
                    Some(wrong) if wrong.is_empty() => Ok(()),
                    Some(wrong) => Err(wrong_table(&self.inner.client.config.table, &wrong)),
                    None => Err(missing_table(&self.inner.client.config.table)),
                }
            })
            .await
            .copied()
    }

    /// The connections and statements.
    pub(crate) fn client(&self) -> &Client {
        &self.inner.client
    }

    /// How errors name a row: `table[election]`.
    fn key(&self, election: &ElectionName) -> String {
        format!("{}[{election}]", self.inner.client.config.table)
    }

    /// Validates a lease row (holder, term, remaining µs, nonce, value).
    fn row(&self, election: &ElectionName, row: &Row) -> Result<LeaseRow> {
        let key = self.key(election);
        let corrupt = |why: String| Error::corrupt(STORE, key.clone(), why);
        let shape = |e: tokio_postgres::Error| corrupt(format!("unexpected row shape: {e}"));
        let holder: Option<String> = row.try_get(0).map_err(shape)?;
        let holder = backend::holder(STORE, &key, holder.as_deref(), &format_args!("{holder:?}"))?;
        let term: Option<i64> = row.try_get(1).map_err(shape)?;
        let term = backend::term(STORE, &key, term.map(i128::from), &format_args!("{term:?}"))?;
        let remaining_us: Option<i64> = row.try_get(2).map_err(shape)?;
        let remaining_us = remaining_us.ok_or_else(|| corrupt("expires_at is NULL".to_owned()))?;
        let nonce: Option<i64> = row.try_get(3).map_err(shape)?;
        let nonce = nonce.ok_or_else(|| corrupt("nonce is NULL".to_owned()))?;
        let value: Option<&[u8]> = row.try_get(4).map_err(shape)?;
        let value = backend::value(STORE, &key, value)?;
        Ok(LeaseRow {
            holder,
            nonce,
            term,
            remaining_us,
            value,
        })
    }

    async fn read(&self, election: &ElectionName) -> Result<Option<LeaseRow>> {
        let e = election.as_str();
        let params: [Param; 1] = [(&e, Type::TEXT)];
        let rows = self
            .inner
            .client
            .query("leader", &self.inner.client.sql.read, &params)
            .await?;
        rows.first().map(|r| self.row(election, r)).transpose()
    }

    /// The acquire statement: [`Acquired::Granted`] when `claim` was granted a new lease (the
    /// row was missing, expired or released), else the row as the statement found it.
    async fn acquire(&self, claim: &Claim) -> Result<Acquired> {
        let sql = &self.inner.client.sql;
        let (e, c, n, ttl) = (
            claim.election.as_str(),
            claim.candidate.as_str(),
            nonce(claim.nonce.get()),
            micros(claim.ttl.get()),
        );
        let value = claim.value.as_ref().map(|v| v.as_str().as_bytes());
        let channel = sql.channel.as_str();
        let params: [Param; 6] = [
            (&e, Type::TEXT),
            (&c, Type::TEXT),
            (&n, Type::INT8),
            (&ttl, Type::INT8),
            (&value, Type::BYTEA),
            (&channel, Type::TEXT),
        ];
        let table = &self.inner.client.config.table;
        let rows = match self
            .inner
            .client
            .query_raw("try_acquire", &sql.acquire, &params)
            .await?
        {
            Ok(rows) => rows,
            Err(e) if out_of_range(&e) => {
                return Err(Error::corrupt(
                    STORE,
                    self.key(&claim.election),
                    "the term counter is exhausted (term + 1 is out of BIGINT's range)",
                ))
            }
            Err(e) => return Err(map_err("try_acquire", table, e)),
        };
        let Some(row) = rows.first() else {
            return Ok(Acquired::Found(None));
        };
        self.acquired(claim, row)
    }

    /// What an acquire statement's `row` for `claim` says (its sixth column: granted).
    pub(crate) fn acquired(&self, claim: &Claim, row: &Row) -> Result<Acquired> {
        let granted: bool = row
            .try_get(5)
            .map_err(|e| Error::corrupt(STORE, self.key(&claim.election), e.to_string()))?;
        if !granted {
            return Ok(Acquired::Found(Some(self.row(&claim.election, row)?)));
        }
        let term: i64 = row
            .try_get(1)
            .map_err(|e| Error::corrupt(STORE, self.key(&claim.election), e.to_string()))?;
        backend::term(
            STORE,
            &self.key(&claim.election),
            Some(i128::from(term)),
            &term,
        )
        .map(Acquired::Granted)
    }

    /// The renew statement: whether the live lease `(holder, nonce, term)` was extended.
    async fn extend(
        &self,
        election: &ElectionName,
        holder: &str,
        n: u64,
        term: Term,
        ttl: Duration,
    ) -> Result<bool> {
        let sql = &self.inner.client.sql;
        // A term above BIGINT's range was never granted by this table: nothing to extend.
        let Ok(t) = i64::try_from(term.get()) else {
            return Ok(false);
        };
        let (e, n, ttl) = (election.as_str(), nonce(n), micros(ttl));
        let params: [Param; 5] = [
            (&e, Type::TEXT),
            (&ttl, Type::INT8),
            (&holder, Type::TEXT),
            (&n, Type::INT8),
            (&t, Type::INT8),
        ];
        let rows = self
            .inner
            .client
            .query("renew", &sql.renew, &params)
            .await?;
        Ok(rows.len() == 1)
    }
}

#[async_trait]
impl LeaseStore for PostgresStore {
    fn kind(&self) -> &'static str {
        STORE
    }

    async fn try_acquire(&self, claim: &Claim) -> Result<Acquire> {
        self.check_schema().await?;
        // One statement reads the row and, only when the lease is vacant, expired or
        // released, grants it (deciding again under the row lock): a follower that wakes into
        // a renewed lease costs one plain read and takes no row lock; one that wakes into an
        // ended lease takes it in one round trip. A live lease of this claim is extended.
        for attempt in 0..5 {
            match self.acquire(claim).await? {
                Acquired::Granted(term) => return Ok(Acquire::Granted(claim.granted(term))),
                Acquired::Found(Some(row)) if row.live() && !row.granted_to(claim) => {
                    return Ok(Acquire::Held(row.info()))
                }
                Acquired::Found(Some(row)) if row.live() => {
                    let (holder, ttl) = (claim.candidate.as_str(), claim.ttl.get());
                    let n = claim.nonce.get();
                    if self
                        .extend(&claim.election, holder, n, row.term, ttl)
                        .await?
                    {
                        return Ok(Acquire::Granted(claim.granted(row.term)));
                    }
                    debug!(attempt, "own lease ended while extending; asking again");
                }
                Acquired::Found(_) => {
                    debug!(attempt, "another candidate was granted first; asking again")
                }
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
        let renewed = self
            .extend(
                &lease.election,
                lease.holder.as_str(),
                lease.nonce.get(),
                lease.term,
                lease.ttl.get(),
            )
            .await?;
        Ok(if renewed {
            Renewal::Renewed(lease.clone())
        } else {
            Renewal::Lost
        })
    }

    async fn release(&self, lease: &Lease) -> Result<Release> {
        self.check_schema().await?;
        let sql = &self.inner.client.sql;
        // A term above BIGINT's range was never granted by this table: nothing to release.
        let Ok(t) = i64::try_from(lease.term.get()) else {
            return Ok(Release::NotHeld);
        };
        let (e, h, n) = (
            lease.election.as_str(),
            lease.holder.as_str(),
            nonce(lease.nonce.get()),
        );
        let channel = sql.channel.as_str();
        let params: [Param; 5] = [
            (&e, Type::TEXT),
            (&h, Type::TEXT),
            (&n, Type::INT8),
            (&t, Type::INT8),
            (&channel, Type::TEXT),
        ];
        let rows = self
            .inner
            .client
            .query("release", &sql.release, &params)
            .await?;
        Ok(if rows.len() == 1 {
            Release::Released
        } else {
            Release::NotHeld
        })
    }

    async fn leader(&self, election: &ElectionName) -> Result<Option<LeaderInfo>> {
        self.check_schema().await?;
        Ok(self
            .read(election)
            .await?
            .filter(LeaseRow::live)
            .map(LeaseRow::info))
    }

    async fn subscribe(&self, election: &ElectionName) -> Result<Option<ChangeFeed>> {
        self.check_schema().await?;
        self.inner.feed.subscribe(election).await
    }
}
