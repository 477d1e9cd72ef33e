//! The driver's client and the leases collection: connecting, the one timed request helper,
//! and shutting the client down.

use elect_core::{Error, Result};
use mongodb::bson::{doc, Document};
use mongodb::options::ClientOptions;
use mongodb::Collection;

use crate::config::{redact, MongoConfig};
use crate::error::{map_err, STORE};

/// How much longer than the driver's server selection the first ping may take.
const CONNECT_SLACK: std::time::Duration = std::time::Duration::from_secs(1);

/// The driver's client, the configuration, and the leases collection (with its write concern).
pub(crate) struct Client {
    pub(crate) config: MongoConfig,
    pub(crate) client: mongodb::Client,
    pub(crate) leases: Collection<Document>,
}

impl Client {
    /// Validates `config`, connects, and checks the server answers.
    pub(crate) async fn connect(config: MongoConfig) -> Result<Client> {
        config.validate()?;
        let timeout = config.timeout;
        let mut options = elect_core::backend::timed(STORE, "connect", timeout, async {
            ClientOptions::parse(&config.url)
                .await
                .map_err(|e| match map_err("connect", e) {
                    Error::Other { message, .. } => {
                        Error::config(format!("{}: {message}", redact(&config.url)))
                    }
                    other => other,
                })
        })
        .await?;
        if let Some(files) = &config.tls {
            files.check_files()?;
            let tls = mongodb::options::TlsOptions::builder()
                .ca_file_path(files.ca_file.clone())
                .cert_key_file_path(files.client_cert_file.clone())
                .build();
            options.tls = Some(mongodb::options::Tls::Enabled(tls));
        }
        options.server_selection_timeout = Some(timeout);
        options.connect_timeout = Some(timeout);
        options.app_name.get_or_insert_with(|| "elect".into());
        let client = mongodb::Client::with_options(options).map_err(|e| map_err("connect", e))?;
        Self::with_client(client, config).await
    }

    /// A client on the application's own driver `client`; checks the server answers.
    pub(crate) async fn from_client(
        client: mongodb::Client,
        config: MongoConfig,
    ) -> Result<Client> {
        config.validate_options()?;
        Self::with_client(client, config).await
    }

    async fn with_client(client: mongodb::Client, config: MongoConfig) -> Result<Client> {
        let leases = client
            .database(&config.database)
            .collection_with_options::<Document>(
                &config.collection,
                mongodb::options::CollectionOptions::builder()
                    .write_concern(config.write_concern.clone())
                    .build(),
            );
        let client = Client {
            config,
            client,
            leases,
        };
        // The driver's server selection gives up after the same timeout and says why (a refused
        // certificate, a wrong password): our own timer waits a second longer, or on a loaded
        // machine it could fire first and hide the cause behind "no answer within".
        let admin = client.client.database("admin");
        let after = client.config.timeout.saturating_add(CONNECT_SLACK);
        elect_core::backend::timed(STORE, "connect", after, async {
            admin
                .run_command(doc! { "ping": 1 })
                .await
                .map_err(|e| map_err("connect", e))
        })
        .await?;
        Ok(client)
    }

    /// Runs one request under the configured timeout, mapping errors.
    pub(crate) async fn request<T>(
        &self,
        operation: &'static str,
        work: impl std::future::IntoFuture<Output = mongodb::error::Result<T>>,
    ) -> Result<T> {
        elect_core::backend::timed(STORE, operation, self.config.timeout, async {
            work.await.map_err(|e| map_err(operation, e))
        })
        .await
    }

    /// Shuts the driver down; see [`MongoStore::close`](crate::MongoStore::close).
    pub(crate) async fn close(&self) {
        self.client.clone().shutdown().immediate(true).await
    }
}
