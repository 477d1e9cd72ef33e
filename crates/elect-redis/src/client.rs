//! The connection pool and the scripts: connecting, and running one script by its SHA under
//! the command timeout.

use elect_core::{Error, Result};
use fred::prelude::*;
use fred::types::Value;
use tracing::debug;

use crate::config::{redact, RedisConfig};
use crate::error::{code, map_err, STORE};
use crate::scripts::{Script, Scripts};

/// The request connections, the configuration, and the scripts (loaded on connect).
pub(crate) struct Client {
    pub(crate) config: RedisConfig,
    pub(crate) pool: Pool,
    pub(crate) scripts: Scripts,
}

impl Client {
    /// Validates `config`, connects the pool and loads the scripts.
    pub(crate) async fn connect(config: RedisConfig) -> Result<Client> {
        config.validate()?;
        let fred_config = fred_config(&config)?;
        let pool = builder(&fred_config, &config)
            .build_pool(config.pool_size)
            .map_err(|e| map_err("connect", e))?;
        elect_core::backend::timed(STORE, "connect", config.connect_timeout, async {
            pool.init()
                .await
                .map(drop)
                .map_err(|e| map_err("connect", e))
        })
        .await?;
        let client = Client {
            config,
            pool,
            scripts: Scripts::new(),
        };
        for script in client.scripts.all() {
            client.load(script).await?;
        }
        Ok(client)
    }

    /// A builder for another connection with the same settings (the subscriber).
    pub(crate) fn builder(&self) -> Result<Builder> {
        Ok(builder(&fred_config(&self.config)?, &self.config))
    }

    async fn load(&self, script: &Script) -> Result<String> {
        let sha: String = self
            .pool
            .next()
            .script_load(script.source.as_str())
            .await
            .map_err(|e| map_err("script load", e))?;
        let _ = script.sha.set(sha.clone());
        Ok(sha)
    }

    /// Runs a script by SHA, loading it again when the server lost its script cache
    /// (`NOSCRIPT` after a restart or `SCRIPT FLUSH`).
    pub(crate) async fn run(
        &self,
        operation: &'static str,
        script: &Script,
        keys: Vec<String>,
        args: Vec<String>,
    ) -> Result<Vec<Value>> {
        let client = self.pool.next();
        let sha = match script.sha.get() {
            Some(sha) => sha.clone(),
            None => self.load(script).await?,
        };
        let reply = match client
            .evalsha::<Value, _, _, _>(sha, keys.clone(), args.clone())
            .await
        {
            Err(e) if code(&e) == Some("NOSCRIPT") => {
                debug!(
                    script = script.name,
                    "script cache lost; sending the source"
                );
                client
                    .eval::<Value, _, _, _>(script.source.as_str(), keys, args)
                    .await
            }
            other => other,
        }
        .map_err(|e| map_err(operation, e))?;
        match reply {
            Value::Array(items) => Ok(items),
            other => Err(Error::Other {
                store: STORE,
                message: format!("{operation}: unexpected reply {other:?}"),
                source: None,
            }),
        }
    }
}

pub(crate) fn fred_config(config: &RedisConfig) -> Result<Config> {
    Config::from_url(&config.url).map_err(|e| Error::InvalidConfig {
        message: format!("{}: {}", redact(&config.url), e.details()),
    })
}

pub(crate) fn builder(fred_config: &Config, config: &RedisConfig) -> Builder {
    let mut builder = Builder::from_config(fred_config.clone());
    let (connect, command) = (config.connect_timeout, config.command_timeout);
    builder
        .with_connection_config(move |c| {
            c.connection_timeout = connect;
            c.internal_command_timeout = command;
            // Never resend a command behind the caller's back after a reconnect: the elector
            // decides what to retry, and knows which requests may have landed.
            c.max_command_attempts = 1;
        })
        .with_performance_config(move |p| p.default_command_timeout = command)
        .set_policy(ReconnectPolicy::new_exponential(0, 50, 2_000, 2));
    builder
}
