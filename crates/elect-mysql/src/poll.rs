//! Release notices by polling: MySQL has no pub/sub, so one task per store checks the
//! `version` of every election someone waits on, in one query per interval, and wakes the
//! waiters of an election whose lease is no longer live and whose version moved (a release).
//! Expiry needs no notice: waiters already sleep until the expiry they were told of.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use elect_core::{ChangeFeed, ChangeNotifier, ElectionName, Result};
use mysql_async::prelude::Queryable;
use mysql_async::Value;
use tracing::debug;

use crate::store::{int, Inner, MysqlStore};

/// At most this many elections per polling query.
const CHUNK: usize = 500;

pub(crate) struct Poller {
    interval: Option<Duration>,
    watched: Arc<Mutex<HashMap<ElectionName, Watched>>>,
    started: std::sync::OnceLock<()>,
}

struct Watched {
    notifier: ChangeNotifier,
    /// The version last seen; a release bumps it. 0 while the row does not exist (every row
    /// ever written has version 1 or more).
    version: u64,
}

impl Poller {
    pub(crate) fn new(interval: Option<Duration>) -> Poller {
        Poller {
            interval,
            watched: Arc::default(),
            started: std::sync::OnceLock::new(),
        }
    }

    fn watched(&self) -> std::sync::MutexGuard<'_, HashMap<ElectionName, Watched>> {
        self.watched.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A feed for `election`. Its baseline version is read before returning, so a release that
    /// completes after this returns moves the version past it and is reported.
    pub(crate) async fn subscribe(
        &self,
        store: &MysqlStore,
        election: &ElectionName,
    ) -> Result<Option<ChangeFeed>> {
        let Some(interval) = self.interval else {
            return Ok(None);
        };
        if let Some(w) = self.watched().get(election) {
            return Ok(Some(w.notifier.subscribe()));
        }
        let versions = versions(&store.inner_arc(), std::slice::from_ref(election)).await?;
        let version = versions.get(election.as_str()).map_or(0, |(v, _)| *v);
        let feed = {
            let mut watched = self.watched();
            let w = watched.entry(election.clone()).or_insert_with(|| Watched {
                notifier: ChangeNotifier::new(),
                version,
            });
            w.notifier.subscribe()
        };
        self.started.get_or_init(|| {
            tokio::spawn(poll(
                Arc::downgrade(&store.inner_arc()),
                self.watched.clone(),
                interval,
            ));
        });
        Ok(Some(feed))
    }
}

/// `election → (version, live)` for the elections given.
async fn versions(
    inner: &Arc<Inner>,
    elections: &[ElectionName],
) -> Result<HashMap<String, (u64, bool)>> {
    let store = MysqlStore::from_inner(inner.clone());
    let mut out = HashMap::new();
    for chunk in elections.chunks(CHUNK) {
        let placeholders = vec!["?"; chunk.len()].join(", ");
        let statement = format!("{}({placeholders})", inner.sql.versions);
        let params: Vec<Value> = chunk.iter().map(|e| Value::from(e.as_str())).collect();
        let rows: Vec<(Value, Value, Value)> = store
            .request("subscribe", async |conn| conn.exec(statement, params).await)
            .await?;
        for (election, version, live) in rows {
            if let (Value::Bytes(e), Some(v), Some(l)) = (election, int(&version), int(&live)) {
                if let Ok(e) = String::from_utf8(e) {
                    out.insert(e, (v.max(0) as u64, l == 1));
                }
            }
        }
    }
    Ok(out)
}

async fn poll(
    store: Weak<Inner>,
    watched: Arc<Mutex<HashMap<ElectionName, Watched>>>,
    interval: Duration,
) {
    let lock = || watched.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        tokio::time::sleep(interval).await;
        let Some(inner) = store.upgrade() else {
            return;
        };
        // Forget elections nobody waits on any more.
        let elections: Vec<ElectionName> = {
            let mut w = lock();
            w.retain(|_, w| w.notifier.feeds() > 0);
            w.keys().cloned().collect()
        };
        if elections.is_empty() {
            continue;
        }
        match versions(&inner, &elections).await {
            Ok(now) => {
                for (election, w) in lock().iter_mut() {
                    let Some(&(version, live)) = now.get(election.as_str()) else {
                        continue;
                    };
                    if !live && w.version != version {
                        w.notifier.notify();
                    }
                    w.version = version;
                }
            }
            Err(error) => {
                // Releases may go unnoticed now: end every feed, so waiters fall back to
                // their expiry and subscribe again.
                debug!(%error, "release poll failed; ending feeds");
                for (_, w) in lock().drain() {
                    w.notifier.notify();
                }
            }
        }
    }
}
