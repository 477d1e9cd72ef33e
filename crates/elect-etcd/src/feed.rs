//! Hand-over notices: one etcd watch on the key prefix per store, fanned out to the feeds of
//! each election.

use std::collections::HashMap;
use std::sync::Arc;

use elect_core::backend::FeedRegistry;
use elect_core::{ChangeFeed, ElectionName, Error, Result};
use etcd_client::{Client, EventType, WatchOptions, WatchRequestSender, WatchResponseStream};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::config::EtcdConfig;
use crate::error::{map_err, STORE};
use crate::record::{self, Record};
use crate::vacancy::{marker_term, RELEASED_SUFFIX};

/// The releases the watch has seen: election → released term, until the next grant.
type Releases = Arc<std::sync::Mutex<HashMap<String, u64>>>;

/// The watch of one store: started on the first subscription, confirmed by etcd before any
/// feed is handed out, and started again by the next subscription after it ended.
pub(crate) struct Watcher {
    client: Client,
    config: EtcdConfig,
    feeds: std::sync::Arc<FeedRegistry<String>>,
    releases: Releases,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Watcher {
    pub(crate) fn new(client: Client, config: EtcdConfig) -> Watcher {
        Watcher {
            client,
            config,
            feeds: std::sync::Arc::new(FeedRegistry::new()),
            releases: Releases::default(),
            task: Mutex::new(None),
        }
    }

    pub(crate) async fn subscribe(&self, election: &ElectionName) -> Result<ChangeFeed> {
        let mut task = self.task.lock().await;
        if task.as_ref().is_none_or(JoinHandle::is_finished) {
            let (sender, stream) = self.start().await?;
            let feeds = self.feeds.clone();
            let prefix = self.config.prefix.clone();
            let releases = self.releases.clone();
            *task = Some(tokio::spawn(run(sender, stream, feeds, releases, prefix)));
        }
        Ok(self.feeds.subscribe(election.as_str()))
    }

    /// The term of `election`'s last release, when the running watch saw the release's
    /// marker and no grant since: the key is vacant, by a release, unless an event the watch
    /// has not delivered yet says otherwise (a hint: the grant's transaction decides).
    pub(crate) fn released(&self, election: &str) -> Option<u64> {
        lock(&self.releases).get(election).copied()
    }

    /// Opens the watch and waits for etcd to confirm it.
    async fn start(&self) -> Result<(WatchRequestSender, WatchResponseStream)> {
        let mut client = self.client.clone();
        let prefix = self.config.prefix.clone();
        let wait = async move {
            let stream = client
                .watch(prefix, Some(WatchOptions::new().with_prefix()))
                .await
                .map_err(|e| map_err("subscribe", e))?;
            let (sender, mut responses) = stream.split();
            match responses.message().await {
                Ok(Some(first)) if first.created() && !first.canceled() => Ok((sender, responses)),
                Ok(Some(first)) => Err(Error::Other {
                    store: STORE,
                    message: format!("etcd refused the watch: {}", first.cancel_reason()),
                    source: None,
                }),
                Ok(None) => Err(Error::Unavailable {
                    store: STORE,
                    operation: "subscribe",
                    message: "the watch stream closed before etcd confirmed it".into(),
                    source: None,
                }),
                Err(e) => Err(map_err("subscribe", e)),
            }
        };
        tokio::time::timeout(self.config.timeout, wait)
            .await
            .unwrap_or_else(|_| Err(Error::timeout(STORE, "subscribe", self.config.timeout)))
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        if let Some(task) = self.task.get_mut().take() {
            task.abort();
        }
        self.feeds.end_all();
    }
}

/// Reads the watch until it ends, waking the feeds of each election whose key changed; then
/// ends every feed, so that waiting candidates fall back to the expiry they were told of.
async fn run(
    // Kept open for as long as the watch runs: closing the request side ends the stream.
    _sender: WatchRequestSender,
    mut stream: WatchResponseStream,
    feeds: std::sync::Arc<FeedRegistry<String>>,
    releases: Releases,
    prefix: String,
) {
    loop {
        let message = match stream.message().await {
            Ok(Some(message)) => message,
            Ok(None) => {
                debug!("etcd: the watch stream closed");
                break;
            }
            Err(e) => {
                debug!(error = %e, "etcd: the watch failed");
                break;
            }
        };
        if message.canceled() || message.compact_revision() > 0 {
            warn!(
                reason = message.cancel_reason(),
                compact_revision = message.compact_revision(),
                "etcd: the watch was cancelled; waiting candidates fall back to lease expiry"
            );
            break;
        }
        for event in message.events() {
            let Some(kv) = event.kv() else { continue };
            let Some(name) = std::str::from_utf8(kv.key())
                .ok()
                .and_then(|k| k.strip_prefix(prefix.as_str()))
            else {
                continue;
            };
            if let Some(election) = name.strip_suffix(RELEASED_SUFFIX) {
                // A release's marker, written in the transaction that deleted the key (whose
                // event wakes the feeds).
                let term = marker_term(kv.value());
                if let (EventType::Put, Some(term), true) =
                    (event.event_type(), term, feeds.contains(election))
                {
                    lock(&releases).insert(election.to_owned(), term);
                }
                continue;
            }
            let election = name;
            if !feeds.contains(election) {
                continue;
            }
            if event.event_type() == EventType::Put {
                lock(&releases).remove(election);
            }
            let hint = match event.event_type() {
                // A new key (version 1) is a grant: it carries the new leader.
                EventType::Put if kv.version() == 1 => {
                    record::decode(election, kv.value(), kv.create_revision(), kv.lease())
                        .ok()
                        .map(Record::just_granted)
                }
                _ => None,
            };
            match hint {
                Some(leader) => feeds.notify_leader(election, leader),
                None => feeds.notify(election),
            }
        }
    }
    // Hints from a watch that ended could miss a grant: none is kept.
    lock(&releases).clear();
    feeds.end_all();
}

fn lock(releases: &Releases) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
    releases.lock().unwrap_or_else(|p| p.into_inner())
}
