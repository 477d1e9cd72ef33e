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
        let opts = OptsBuilder::from_opts(opts).pool_opts(pool_opts);
        let pool = Pool::new(opts);
        let client = Client {
            sql: [
                Sql::new(&config.table, false),
                Sql::new(&config.table, true),
            ],
            config,
            pool,
        };
        client
            .request("connect", async |conn| conn.ping().await)
            .await?;
        Ok(client)
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
