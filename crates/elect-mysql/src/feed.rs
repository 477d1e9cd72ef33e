//! Release and grant notices: MySQL has no pub/sub, so one task per store checks the `version`
//! and `term` of every election someone waits on, in one query per interval, and wakes the
//! waiters of an election whose lease is no longer live and whose version moved (a release),
//! or whose term moved (a new grant: observers learn of the new leader). With named-lock
//! wake-ups (see `wake.rs`) the same check runs the moment the leader's lock is let go, and
//! the poll is only the fallback. Expiry needs no notice: waiters already sleep until the
//! expiry they were told of.

use std::collections::{HashMap, HashSet};
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
    /// Whether waiters block on the elections' named locks (see `wake.rs`).
    locks: bool,
    shared: Arc<Shared>,
    started: OnceLock<()>,
}

#[derive(Default)]
struct Shared {
    feeds: FeedRegistry<ElectionName>,
    /// The version and term last seen per watched election; every write bumps the version, a
    /// new grant moves the term. 0 while the row does not exist (every row ever written has
    /// version 1 or more).
    versions: Mutex<HashMap<ElectionName, Seen>>,
    /// The elections a named-lock waiter runs for.
    lock_waiters: Mutex<HashSet<ElectionName>>,
    /// Those whose waiter's last `GET_LOCK` answered: the poll leaves them alone.
    locks_working: Mutex<HashSet<ElectionName>>,
    /// Elections seen released since the store last asked, with the version seen (see
    /// [`Poller::take_vacancy`]).
    vacated: Mutex<HashMap<ElectionName, u64>>,
}

/// What the poll saw of one election's row.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Seen {
    version: u64,
    term: u64,
    live: bool,
    /// What was left of the lease when the row was read (zero when not live).
    remaining: Duration,
}

impl Shared {
    fn versions(&self) -> std::sync::MutexGuard<'_, HashMap<ElectionName, Seen>> {
        self.versions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Compares what the server holds now with what was seen, wakes the feeds of every
    /// election released or granted since, and remembers the new state.
    fn apply(&self, now: &HashMap<String, Seen>) {
        let mut changed = Vec::new();
        for (election, seen) in self.versions().iter_mut() {
            let Some(&row) = now.get(election.as_str()) else {
                continue;
            };
            let released = !row.live && row.version != seen.version;
            let granted = row.live && row.term != seen.term;
            if released || granted {
                changed.push(election.clone());
            }
            if released {
                self.vacated
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(election.clone(), row.version);
            }
            *seen = row;
        }
        for election in changed {
            self.feeds.notify(&election);
        }
    }

    fn lock_waiters(&self) -> std::sync::MutexGuard<'_, HashSet<ElectionName>> {
        self.lock_waiters.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads `election`'s row now (a named-lock wake-up) and applies it: what is left of its
    /// lease, `Some(None)` when none is live (a missing row is not live), `None` when the read
    /// failed.
    async fn check(&self, client: &Client, election: &ElectionName) -> Option<Option<Duration>> {
        match versions(client, std::slice::from_ref(election)).await {
            Ok(now) => {
                self.apply(&now);
                let seen = now.get(election.as_str()).filter(|s| s.live);
                Some(seen.map(|s| s.remaining))
            }
            Err(error) => {
                debug!(%error, %election, "reading after a wake-up failed");
                None
            }
        }
    }
}

impl Poller {
    pub(crate) fn new(interval: Option<Duration>, locks: bool) -> Poller {
        Poller {
            interval,
            locks,
            shared: Arc::default(),
            started: OnceLock::new(),
        }
    }

    /// The row version at which a release of `election` was seen since the last call (and
    /// forgets it): its candidates' next acquisition can go straight to the one-statement
    /// take of that version, without the read first. Only the requests made depend on it:
    /// the take is guarded by the version and by the lease being over, and whatever it
    /// refuses goes on to the transaction.
    pub(crate) fn take_vacancy(&self, election: &ElectionName) -> Option<u64> {
        self.shared
            .vacated
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(election)
    }

    /// A feed for `election`. Its baseline version is read before returning, so a release that
    /// completes after this returns moves the version past it and is reported.
    pub(crate) async fn subscribe(
        &self,
        client: &Arc<Client>,
        election: &ElectionName,
    ) -> Result<Option<ChangeFeed>> {
        if self.interval.is_none() && !self.locks {
            return Ok(None);
        }
        if !self.shared.feeds.contains(election) {
            let now = versions(client, std::slice::from_ref(election)).await?;
            let seen = now.get(election.as_str()).copied().unwrap_or_default();
            self.shared
                .versions()
                .entry(election.clone())
                .or_insert(seen);
        }
        let feed = self.shared.feeds.subscribe(election);
        if let Some(interval) = self.interval {
            self.started.get_or_init(|| {
                tokio::spawn(poll(Arc::downgrade(client), self.shared.clone(), interval));
            });
        }
        if self.locks && self.shared.lock_waiters().insert(election.clone()) {
            let shared = self.shared.clone();
            let weak = Arc::downgrade(client);
            let election = election.clone();
            tokio::spawn(async move {
                // Pruning here too: without the poll nobody else forgets dropped feeds.
                let waited = |e: &ElectionName| shared.feeds.prune().contains(e);
                let check = |e: ElectionName| {
                    let shared = shared.clone();
                    let weak = weak.clone();
                    async move {
                        let client = weak.upgrade()?;
                        shared.check(&client, &e).await
                    }
                };
                let working = |ok: bool| {
                    let mut set = shared
                        .locks_working
                        .lock()
                        .unwrap_or_else(|p| p.into_inner());
                    if ok {
                        set.insert(election.clone());
                    } else {
                        set.remove(&election);
                    }
                };
                crate::wake::waiter(weak.clone(), election.clone(), waited, check, working).await;
                shared.lock_waiters().remove(&election);
            });
        }
        Ok(Some(feed))
    }
}

/// `election → what its row holds now`, for the elections given.
async fn versions(client: &Client, elections: &[ElectionName]) -> Result<HashMap<String, Seen>> {
    let mut out = HashMap::new();
    for chunk in elections.chunks(CHUNK) {
        let placeholders = vec!["?"; chunk.len()].join(", ");
        let statement = format!("{}({placeholders})", client.sql[0].versions);
        let params: Vec<Value> = chunk.iter().map(|e| Value::from(e.as_str())).collect();
        let rows: Vec<(Value, Value, Value, Value, Value)> = client
            .request("subscribe", async |conn| conn.exec(statement, params).await)
            .await?;
        for (election, version, live, term, left) in rows {
            let (Value::Bytes(e), Some(v), Some(l), Some(t), Some(left)) =
                (election, int(&version), int(&live), int(&term), int(&left))
            else {
                continue;
            };
            if let Ok(e) = String::from_utf8(e) {
                let seen = Seen {
                    version: v.max(0) as u64,
                    term: t.max(0) as u64,
                    live: l == 1,
                    remaining: Duration::from_micros(left.clamp(0, u64::MAX as i128) as u64),
                };
                out.insert(e, seen);
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
        let mut elections = shared.feeds.prune();
        shared.versions().retain(|e, _| elections.contains(e));
        shared
            .vacated
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|e, _| elections.contains(e));
        {
            let working = shared
                .locks_working
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            elections.retain(|e| !working.contains(e));
        }
        if elections.is_empty() {
            continue;
        }
        match versions(&client, &elections).await {
            Ok(now) => shared.apply(&now),
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
