//! The connections: a pool (or the application's own client), and the one timed request helper
//! every statement goes through.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use elect_core::{Error, Result};
use tokio::time::{timeout_at, Instant};
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::Row;

use crate::config::{redact, PostgresConfig};
use crate::error::{map_err, STORE};
use crate::schema::Sql;

/// Where requests go.
enum Conn {
    /// elect's pool, or the application's.
    Pool(Pool),
    /// The application's one client (tokio-postgres pipelines concurrent requests on it).
    Client(Arc<tokio_postgres::Client>),
}

/// The connections, the configuration, and the statements for the configured table.
pub(crate) struct Client {
    pub(crate) config: PostgresConfig,
    conn: Conn,
    pub(crate) sql: Sql,
}

/// One statement parameter with its type: statements are sent unnamed (`query_typed`).
pub(crate) type Param<'a> = (&'a (dyn ToSql + Sync), Type);

/// tokio-postgres' configuration from `url`, with elect's defaults: the connect timeout, and
/// an application name (`elect`) the server's `pg_stat_activity` shows, unless the URL sets
/// one.
pub(crate) fn parse(url: &str, timeout: Duration) -> Result<tokio_postgres::Config> {
    if let Some((scheme, _)) = url.split_once("://") {
        if scheme != "postgres" && scheme != "postgresql" {
            return Err(Error::config(format!(
                "{}: not a PostgreSQL URL (postgres://user:password@host:port/database)",
                redact(url)
            )));
        }
    }
    let mut pg: tokio_postgres::Config = url
        .parse()
        .map_err(|e| Error::config(format!("{}: {e}", redact(url))))?;
    if pg.get_hosts().is_empty() {
        return Err(Error::config(format!(
            "{:?} names no host: postgres://user:password@host:port/database, or host=… in the \
             key-value form",
            redact(url)
        )));
    }
    pg.connect_timeout(timeout);
    if pg.get_application_name().is_none() {
        pg.application_name("elect");
    }
    Ok(pg)
}

impl Client {
    /// Validates `config`, builds the pool and checks the server answers (one round trip).
    pub(crate) async fn connect(config: PostgresConfig) -> Result<Client> {
        config.validate()?;
        let pg = parse(&config.url, config.timeout)?;
        let manager = Manager::from_config(
            pg,
            crate::tls::connector(&config)?,
            ManagerConfig {
                // No query when a connection is handed out: a closed one is replaced, a
                // stuck one is closed by the request that timed out on it.
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(config.pool_size)
            .build()
            .map_err(|e| Error::config(format!("postgres pool: {e}")))?;
        let client = Client::with(Conn::Pool(pool), config);
        client.ping().await?;
        Ok(client)
    }

    /// A client on the application's own pool (one round trip to check it answers).
    pub(crate) async fn from_pool(pool: Pool, config: PostgresConfig) -> Result<Client> {
        config.validate()?;
        let client = Client::with(Conn::Pool(pool), config);
        client.ping().await?;
        Ok(client)
    }

    /// A client on the application's own connection (one round trip to check it answers).
    pub(crate) async fn from_client(
        client: Arc<tokio_postgres::Client>,
        config: PostgresConfig,
    ) -> Result<Client> {
        config.validate()?;
        let client = Client::with(Conn::Client(client), config);
        client.ping().await?;
        Ok(client)
    }

    fn with(conn: Conn, config: PostgresConfig) -> Client {
        Client {
            sql: Sql::new(&config.table),
            config,
            conn,
        }
    }

    async fn ping(&self) -> Result<()> {
        self.query("connect", "SELECT 1", &[]).await.map(drop)
    }

    /// The pool, when the store has one.
    pub(crate) fn pool(&self) -> Option<&Pool> {
        match &self.conn {
            Conn::Pool(pool) => Some(pool),
            Conn::Client(_) => None,
        }
    }

    /// Runs one statement under the configured timeout, mapping errors. A pooled connection
    /// whose statement timed out is closed, not reused: it may be blackholed, or busy with
    /// the abandoned statement.
    pub(crate) async fn query(
        &self,
        operation: &'static str,
        statement: &str,
        params: &[Param<'_>],
    ) -> Result<Vec<Row>> {
        self.query_raw(operation, statement, params)
            .await?
            .map_err(|e| map_err(operation, &self.config.table, e))
    }

    /// Like [`query`](Self::query), with the statement's own error left to the caller: the
    /// outer error is the pool's or the timeout's.
    pub(crate) async fn query_raw(
        &self,
        operation: &'static str,
        statement: &str,
        params: &[Param<'_>],
    ) -> Result<std::result::Result<Vec<Row>, tokio_postgres::Error>> {
        self.run(operation, async |client| {
            client.query_typed(statement, params).await
        })
        .await
    }

    /// Runs statements without parameters in one simple-protocol round trip (DDL).
    pub(crate) async fn batch(&self, operation: &'static str, statements: &str) -> Result<()> {
        self.run(operation, async |client| {
            client.batch_execute(statements).await
        })
        .await?
        .map_err(|e| map_err(operation, &self.config.table, e))
    }

    /// Runs `f` on a connection (pooled, or the application's client) under the configured
    /// timeout; the outer error is the pool's or the timeout's. A pooled connection whose
    /// request timed out is taken out of the pool and closed.
    async fn run<T>(
        &self,
        operation: &'static str,
        f: impl AsyncFnOnce(&tokio_postgres::Client) -> std::result::Result<T, tokio_postgres::Error>,
    ) -> Result<std::result::Result<T, tokio_postgres::Error>> {
        let deadline = Instant::now() + self.config.timeout;
        let timed_out = || Error::timeout(STORE, operation, self.config.timeout);
        match &self.conn {
            Conn::Pool(pool) => {
                let object = match timeout_at(deadline, pool.get()).await {
                    Err(_) => return Err(timed_out()),
                    Ok(Err(e)) => return Err(pool_error(operation, &self.config.table, e)),
                    Ok(Ok(object)) => object,
                };
                match timeout_at(deadline, f(&**object)).await {
                    Ok(result) => Ok(result),
                    Err(_) => {
                        drop(deadpool_postgres::Object::take(object));
                        Err(timed_out())
                    }
                }
            }
            Conn::Client(client) => timeout_at(deadline, f(client))
                .await
                .map_err(|_| timed_out()),
        }
    }
}

/// A pool's failure to hand out a connection.
fn pool_error(operation: &'static str, table: &str, e: deadpool_postgres::PoolError) -> Error {
    use deadpool_postgres::PoolError;
    match e {
        PoolError::Backend(e) => map_err(operation, table, e),
        other => Error::unavailable(STORE, operation, other),
    }
}
