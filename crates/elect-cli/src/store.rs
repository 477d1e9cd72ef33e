//! From `--store URL` to a connected coordinator (through the `elect` crate's `open`), and the
//! checks of names and ids given on the command line.

use std::path::PathBuf;

use clap::Args;
use elect::{CandidateId, ElectionName, TlsFiles};

use crate::Failure;

/// TLS certificates for the store's connections (every store; the URL turns TLS on:
/// rediss://, mysql://…?require_ssl=true, mongodb://…?tls=true — or these files do).
#[derive(Args, Debug, Clone, Default)]
pub(crate) struct TlsArgs {
    /// A CA certificate file (PEM) to trust for the store's certificate, instead of the
    /// system's roots.
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// This client's certificate (PEM), for stores that verify clients; needs --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

impl TlsArgs {
    /// The files, when any flag is given.
    pub(crate) fn files(&self) -> Option<TlsFiles> {
        if self.tls_ca.is_none() && self.tls_cert.is_none() {
            return None;
        }
        let mut files = TlsFiles::new();
        if let Some(ca) = &self.tls_ca {
            files = files.ca_file(ca);
        }
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            files = files.client_identity(cert, key);
        }
        Some(files)
    }
}

/// A connected store; `--once` needs its driver, so it keeps its concrete type.
pub(crate) type Store = elect::Coordinator;

/// What [`connect`] may do besides connecting.
#[derive(Debug, Clone, Default)]
pub(crate) struct Connect {
    /// Redis: [`elect::redis::RedisConfig::restart_quarantine`].
    pub(crate) restart_quarantine: bool,
    /// Every store: the TLS certificates.
    pub(crate) tls: Option<TlsFiles>,
    /// Redis: replicas that must acknowledge each grant and renewal, and for how long.
    pub(crate) wait_for_replicas: Option<(u32, std::time::Duration)>,
    /// PostgreSQL: where hand-over notices come from, when not from the store's URL.
    pub(crate) postgres_listen: Option<elect::PostgresListen>,
    /// MySQL: create the lease table when it does not exist (never touch one that does), so
    /// a user with only SELECT/INSERT/UPDATE/DELETE works once the table is there.
    pub(crate) create_missing_table: bool,
}

/// Connects to the store a URL names.
pub(crate) async fn connect(url: &str, options: Connect) -> Result<Store, Failure> {
    let shown = elect::redact_url(url);
    let fail = |e: elect::Error| Failure::from_error(&format!("store {shown}"), &e);
    let mut open = elect::Options::default().restart_quarantine(options.restart_quarantine);
    if let Some(files) = options.tls {
        open = open.tls(files);
    }
    if let Some((replicas, timeout)) = options.wait_for_replicas {
        open = open.wait_for_replicas(replicas, timeout);
    }
    if let Some(listen) = options.postgres_listen {
        open = open.postgres_listen(listen);
    }
    let opened = elect::open(url, &open).await.map_err(fail)?;
    #[cfg(feature = "mysql")]
    if let (Store::Mysql(store), true) = (&opened, options.create_missing_table) {
        if !store.table_exists().await.map_err(fail)? {
            store.migrate().await.map_err(fail)?;
        }
    }
    #[cfg(feature = "postgres")]
    if let (Store::Postgres(store), true) = (&opened, options.create_missing_table) {
        if !store.table_exists().await.map_err(fail)? {
            store.migrate().await.map_err(fail)?;
        }
    }
    Ok(opened)
}

pub(crate) fn election(name: &str) -> Result<ElectionName, Failure> {
    ElectionName::new(name).map_err(|e| Failure::from_error("--election", &e))
}

pub(crate) fn candidate(id: Option<&str>) -> Result<CandidateId, Failure> {
    match id {
        Some(id) => CandidateId::new(id).map_err(|e| Failure::from_error("--id", &e)),
        None => Ok(CandidateId::generate()),
    }
}
