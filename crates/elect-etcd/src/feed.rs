//! Hand-over notices: one etcd watch on the key prefix per store, fanned out to the feeds of
//! each election.

use elect_core::backend::FeedRegistry;
use elect_core::{ChangeFeed, ElectionName, Error, LeaderInfo, Result};
use etcd_client::{Client, EventType, WatchOptions, WatchRequestSender, WatchResponseStream};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::config::EtcdConfig;
use crate::error::{map_err, STORE};
use crate::record;

/// The watch of one store: started on the first subscription, confirmed by etcd before any
/// feed is handed out, and started again by the next subscription after it ended.
pub(crate) struct Watcher {
    client: Client,
    config: EtcdConfig,
    feeds: std::sync::Arc<FeedRegistry<String>>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Watcher {
    pub(crate) fn new(client: Client, config: EtcdConfig) -> Watcher {
        Watcher {
            client,
            config,
            feeds: std::sync::Arc::new(FeedRegistry::new()),
            task: Mutex::new(None),
        }
    }

    pub(crate) async fn subscribe(&self, election: &ElectionName) -> Result<ChangeFeed> {
        let mut task = self.task.lock().await;
        if task.as_ref().is_none_or(JoinHandle::is_finished) {
            let (sender, stream) = self.start().await?;
            let feeds = self.feeds.clone();
            let prefix = self.config.prefix.clone();
            *task = Some(tokio::spawn(run(sender, stream, feeds, prefix)));
        }
        Ok(self.feeds.subscribe(election.as_str()))
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
            let Some(election) = std::str::from_utf8(kv.key())
                .ok()
                .and_then(|k| k.strip_prefix(prefix.as_str()))
            else {
                continue;
            };
            if !feeds.contains(election) {
                continue;
            }
            let hint = match event.event_type() {
                // A new key (version 1) is a grant: it carries the new leader.
                EventType::Put if kv.version() == 1 => {
                    record::decode(election, kv.value(), kv.create_revision(), kv.lease())
                        .ok()
                        .map(|r| LeaderInfo {
                            holder: r.holder,
                            term: r.term,
                            remaining: record::granted_ttl(kv.value()),
                            value: r.value,
                        })
                }
                _ => None,
            };
            match hint {
                Some(leader) => feeds.notify_leader(election, leader),
                None => feeds.notify(election),
            }
        }
    }
    feeds.end_all();
}
