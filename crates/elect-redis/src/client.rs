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
    /// The server, credentials and TLS settings, for the subscriber connection.
    fred: Config,
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
        Self::with_pool(pool, fred_config, config).await
    }

    /// A client on the application's own `pool` (already connected): its server, credentials
    /// and TLS settings serve the subscriber connection too.
    pub(crate) async fn from_pool(pool: Pool, config: RedisConfig) -> Result<Client> {
        config.validate_options()?;
        let fred = pool.next().client_config();
        Self::with_pool(pool, fred, config).await
    }

    /// Loads the scripts through `pool` (within the connect timeout).
    async fn with_pool(pool: Pool, fred: Config, config: RedisConfig) -> Result<Client> {
        let timeout = config.connect_timeout;
        let client = Client {
            config,
            pool,
            scripts: Scripts::new(),
            fred,
        };
        elect_core::backend::timed(STORE, "connect", timeout, async {
            for script in client.scripts.all() {
                client.load(script).await?;
            }
            Ok(())
        })
        .await?;
        Ok(client)
    }

    /// A builder for another connection to the same server (the subscriber), with elect's
    /// timeouts and reconnection policy.
    pub(crate) fn builder(&self) -> Builder {
        builder(&self.fred, &self.config)
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
        self.run_on(self.pool.next(), operation, script, keys, args)
            .await
    }

    /// [`run`](Self::run) on one connection of the pool (to `WAIT` on it afterwards).
    pub(crate) async fn run_on(
        &self,
        client: &fred::clients::Client,
        operation: &'static str,
        script: &Script,
        keys: Vec<String>,
        args: Vec<String>,
    ) -> Result<Vec<Value>> {
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

impl Client {
    /// Waits until [`RedisConfig::wait_replicas`] replicas acknowledged the writes `client`
    /// made (Redis `WAIT`, on the node that holds `key` in a Cluster); an error when fewer did
    /// within the wait timeout. Nothing to do when the wait is off.
    pub(crate) async fn replicated(
        &self,
        client: &fred::clients::Client,
        operation: &'static str,
        key: &str,
    ) -> Result<()> {
        let wanted = self.config.wait_replicas;
        if wanted == 0 {
            return Ok(());
        }
        let timeout_ms = self.config.wait_timeout.as_millis().max(1) as i64;
        let node = client.cached_cluster_state().and_then(|state| {
            state
                .get_server(fred::util::redis_keyslot(key.as_bytes()))
                .cloned()
        });
        let acked: i64 = match node {
            Some(node) => {
                client
                    .with_cluster_node(node)
                    .wait(i64::from(wanted), timeout_ms)
                    .await
            }
            None => client.wait(i64::from(wanted), timeout_ms).await,
        }
        .map_err(|e| map_err(operation, e))?;
        if acked < i64::from(wanted) {
            return Err(Error::Unavailable {
                store: STORE,
                operation,
                message: format!(
                    "the write reached {acked} of the {wanted} replicas it needs within {:?}: \
                     not believed (a failover could lose it)",
                    self.config.wait_timeout
                ),
                source: None,
            });
        }
        Ok(())
    }
}

pub(crate) fn fred_config(config: &RedisConfig) -> Result<Config> {
    #[allow(unused_mut)]
    let mut fred = Config::from_url(&config.url).map_err(|e| Error::InvalidConfig {
        message: format!("{}: {}", redact(&config.url), e.details()),
    })?;
    #[cfg(feature = "tls")]
    if let Some(files) = &config.tls {
        fred.tls = Some(tls::connector(files)?.into());
    }
    Ok(fred)
}

/// A rustls client configuration (ring provider) from PEM files.
#[cfg(feature = "tls")]
mod tls {
    use std::path::Path;
    use std::sync::Arc;

    use elect_core::{Error, Result, TlsFiles};
    use fred::rustls::pki_types::pem::PemObject;
    use fred::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use fred::rustls::{self, ClientConfig, RootCertStore};
    use fred::types::config::TlsConnector;

    fn unreadable(what: &str, path: &Path, e: impl std::fmt::Display) -> Error {
        Error::config(format!("TLS {what} {}: {e}", path.display()))
    }

    fn certs(what: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>> {
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| unreadable(what, path, e))?
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| unreadable(what, path, e))?;
        if certs.is_empty() {
            return Err(unreadable(what, path, "no PEM certificate in it"));
        }
        Ok(certs)
    }

    pub(super) fn connector(files: &TlsFiles) -> Result<TlsConnector> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        match &files.ca_file {
            Some(path) => {
                for cert in certs("CA file", path)? {
                    roots
                        .add(cert)
                        .map_err(|e| unreadable("CA file", path, e))?;
                }
            }
            None => {
                let native = fred::rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(native.certs);
            }
        }
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::config(format!("TLS: {e}")))?
            .with_root_certificates(roots);
        let config = match (&files.client_cert_file, &files.client_key_file) {
            (Some(cert), Some(key)) => {
                let chain = certs("client certificate", cert)?;
                let key = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| unreadable("client key", key, e))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| Error::config(format!("TLS client certificate: {e}")))?
            }
            _ => builder.with_no_client_auth(),
        };
        Ok(config.into())
    }
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
