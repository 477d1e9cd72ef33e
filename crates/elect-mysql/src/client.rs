//! The connection pool, and the one timed request helper every statement goes through.

use std::time::Duration;

use elect_core::{Error, Result};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder, Pool, PoolConstraints};

use crate::config::{redact, MysqlConfig};
use crate::error::{MysqlError, STORE};
use crate::schema::Sql;

/// How long an idle pooled connection is kept before it is closed.
const IDLE_CONNECTION_TTL: Duration = Duration::from_secs(60);

/// The pool, the configuration, and the statements for the configured table.
pub(crate) struct Client {
    pub(crate) config: MysqlConfig,
    pub(crate) pool: Pool,
    /// How to open a connection outside the pool (named-lock wake-ups); `None` for a client
    /// on the application's pool, whose wake-ups take connections from that pool.
    opts: Option<Opts>,
    /// The statements for a table without the `value` column, and with it.
    pub(crate) sql: [Sql; 2],
}

impl Client {
    /// Validates `config`, builds the pool and checks the server answers (one round trip).
    pub(crate) async fn connect(config: MysqlConfig) -> Result<Client> {
        config.validate()?;
        let opts = Opts::from_url(&config.url)
            .map_err(|e| Error::config(format!("{}: {e}", redact(&config.url))))?;
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
        #[allow(unused_mut)]
        let mut opts = OptsBuilder::from_opts(opts).pool_opts(pool_opts);
        #[cfg(feature = "tls")]
        if let Some(files) = &config.tls {
            files.check_files()?;
            opts = opts.ssl_opts(Some(ssl_opts(files)));
        }
        let opts: Opts = opts.into();
        let mut client = Self::with_pool(Pool::new(opts.clone()), config);
        client.opts = Some(opts);
        client
            .request("connect", async |conn| conn.ping().await)
            .await?;
        Ok(client)
    }

    /// A client on the application's own `pool`; checks that its connections select a
    /// database (one round trip).
    pub(crate) async fn from_pool(pool: Pool, config: MysqlConfig) -> Result<Client> {
        config.validate()?;
        let client = Self::with_pool(pool, config);
        let database: Option<Option<String>> = client
            .request("connect", async |conn| {
                conn.query_first("SELECT DATABASE()").await
            })
            .await?;
        if database.flatten().is_none_or(|d| d.is_empty()) {
            return Err(Error::config(
                "the pool's connections select no database: name it in the pool's URL or options \
                 (mysql://host/DATABASE)",
            ));
        }
        Ok(client)
    }

    fn with_pool(pool: Pool, config: MysqlConfig) -> Client {
        Client {
            sql: [
                Sql::new(&config.table, false),
                Sql::new(&config.table, true),
            ],
            config,
            pool,
            opts: None,
        }
    }

    /// A connection for a session of its own (a named lock held or waited on): outside the
    /// pool, or the application's pool's own.
    pub(crate) async fn dedicated(&self) -> mysql_async::Result<Conn> {
        match &self.opts {
            Some(opts) => Conn::new(opts.clone()).await,
            None => self.pool.get_conn().await,
        }
    }

    /// Runs `f` on a pooled connection under the configured timeout, mapping errors.
    pub(crate) async fn request<T>(
        &self,
        operation: &'static str,
        f: impl AsyncFnOnce(&mut Conn) -> mysql_async::Result<T>,
    ) -> Result<T> {
        let work = async {
            let mut conn = self.pool.get_conn().await?;
            f(&mut conn).await
        };
        elect_core::backend::timed(STORE, operation, self.config.timeout, async {
            work.await.map_err(|source| {
                Error::from(MysqlError {
                    operation,
                    table: self.config.table.clone(),
                    source,
                })
            })
        })
        .await
    }
}

/// mysql_async's TLS options from PEM files: the CA (else the platform's roots) and a client
/// identity. The files are read when a connection is made.
#[cfg(feature = "tls")]
fn ssl_opts(files: &elect_core::TlsFiles) -> mysql_async::SslOpts {
    use mysql_async::{ClientIdentity, SslOpts};
    let mut ssl = SslOpts::default();
    if let Some(ca) = &files.ca_file {
        ssl = ssl
            .with_root_certs(vec![ca.clone().into()])
            .with_disable_built_in_roots(true);
    }
    if let (Some(cert), Some(key)) = (&files.client_cert_file, &files.client_key_file) {
        ssl = ssl.with_client_identity(Some(ClientIdentity::new(
            cert.clone().into(),
            key.clone().into(),
        )));
    }
    ssl
}
