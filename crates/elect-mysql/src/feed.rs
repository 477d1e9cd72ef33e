//! Release notices by polling: MySQL has no pub/sub, so one task per store checks the
//! `version` of every election someone waits on, in one query per interval, and wakes the
//! waiters of an election whose lease is no longer live and whose version moved (a release).
//! Expiry needs no notice: waiters already sleep until the expiry they were told of.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use elect_core::backend::FeedRegistry;
use elect_core::{ChangeFeed, ElectionName, Result};
use mysql_async::prelude::Queryable;
use mysql_async::Value;
use tracing::debug;

use crate::client::Client;
use crate::schema::int;

/// At most this many elections per polling query.
const CHUNK: usize = 500;

/// The feeds of one store, and the versions the poll last saw.
pub(crate) struct Poller {
    interval: Option<Duration>,
    shared: Arc<Shared>,
    started: OnceLock<()>,
}

#[derive(Default)]
struct Shared {
    feeds: FeedRegistry<ElectionName>,
    /// The version last seen per watched election; a release bumps it. 0 while the row does
    /// not exist (every row ever written has version 1 or more).
    versions: Mutex<HashMap<ElectionName, u64>>,
}

impl Shared {
    fn versions(&self) -> std::sync::MutexGuard<'_, HashMap<ElectionName, u64>> {
        self.versions.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Poller {
    pub(crate) fn new(interval: Option<Duration>) -> Poller {
        Poller {
            interval,
            shared: Arc::default(),
            started: OnceLock::new(),
        }
    }

    /// A feed for `election`. Its baseline version is read before returning, so a release that
    /// completes after this returns moves the version past it and is reported.
    pub(crate) async fn subscribe(
        &self,
        client: &Arc<Client>,
        election: &ElectionName,
    ) -> Result<Option<ChangeFeed>> {
        let Some(interval) = self.interval else {
            return Ok(None);
        };
        if !self.shared.feeds.contains(election) {
            let now = versions(client, std::slice::from_ref(election)).await?;
            let version = now.get(election.as_str()).map_or(0, |(v, _)| *v);
            self.shared
                .versions()
                .entry(election.clone())
                .or_insert(version);
        }
        let feed = self.shared.feeds.subscribe(election);
        self.started.get_or_init(|| {
            tokio::spawn(poll(Arc::downgrade(client), self.shared.clone(), interval));
        });
        Ok(Some(feed))
    }
}

/// `election → (version, live)` for the elections given.
async fn versions(
    client: &Client,
    elections: &[ElectionName],
) -> Result<HashMap<String, (u64, bool)>> {
    let mut out = HashMap::new();
    for chunk in elections.chunks(CHUNK) {
        let placeholders = vec!["?"; chunk.len()].join(", ");
        let statement = format!("{}({placeholders})", client.sql.versions);
        let params: Vec<Value> = chunk.iter().map(|e| Value::from(e.as_str())).collect();
        let rows: Vec<(Value, Value, Value)> = client
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

async fn poll(client: Weak<Client>, shared: Arc<Shared>, interval: Duration) {
    loop {
        tokio::time::sleep(interval).await;
        let Some(client) = client.upgrade() else {
            return;
        };
        // Forget elections nobody waits on any more.
        let elections = shared.feeds.prune();
        shared.versions().retain(|e, _| elections.contains(e));
        if elections.is_empty() {
            continue;
        }
        match versions(&client, &elections).await {
            Ok(now) => {
                let mut released = Vec::new();
                for (election, seen) in shared.versions().iter_mut() {
                    let Some(&(version, live)) = now.get(election.as_str()) else {
                        continue;
                    };
                    if !live && *seen != version {
                        released.push(election.clone());
                    }
                    *seen = version;
                }
                for election in released {
                    shared.feeds.notify(&election);
                }
            }
            Err(error) => {
                // Releases may go unnoticed now: end every feed, so waiters fall back to
                // their expiry and subscribe again.
                debug!(%error, "release poll failed; ending feeds");
                shared.feeds.end_all();
                shared.versions().clear();
            }
        }
    }
}
