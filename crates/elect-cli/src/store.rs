//! From `--store URL` to a connected coordinator (through the `elect` crate's `open`), and the
//! checks of names and ids given on the command line.

use elect::{CandidateId, ElectionName};

use crate::Failure;

/// A connected store; `--once` needs its driver, so it keeps its concrete type.
pub(crate) type Store = elect::Coordinator;

/// What [`connect`] may do besides connecting.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Connect {
    /// Redis: [`elect::redis::RedisConfig::restart_quarantine`].
    pub(crate) restart_quarantine: bool,
    /// MySQL: create the lease table when it does not exist (never touch one that does), so
    /// a user with only SELECT/INSERT/UPDATE/DELETE works once the table is there.
    pub(crate) create_missing_table: bool,
}

/// Connects to the store a URL names.
pub(crate) async fn connect(url: &str, options: Connect) -> Result<Store, Failure> {
    let shown = elect::redact_url(url);
    let fail = |e: elect::Error| Failure::from_error(&format!("store {shown}"), &e);
    let opened = elect::open(
        url,
        &elect::Options::default().restart_quarantine(options.restart_quarantine),
    )
    .await
    .map_err(fail)?;
    #[cfg(feature = "mysql")]
    if let (Store::Mysql(store), true) = (&opened, options.create_missing_table) {
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
