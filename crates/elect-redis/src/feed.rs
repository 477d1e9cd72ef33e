//! Release notices over pub/sub, with subscriptions confirmed before they are handed out.
//!
//! fred's `subscribe()` can return before the server has confirmed the subscription, so a
//! release published right after it could be missed. Each new subscription is therefore
//! confirmed end to end: after subscribing, the store publishes a probe on the channel and
//! waits until its own subscriber receives it. Other subscribers ignore probes.
//!
//! When the subscriber connection fails, every feed ends (its notifier is dropped): waiting
//! candidates fall back to sleeping until the reported expiry and subscribe again, which
//! confirms again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use elect_core::backend::FeedRegistry;
use elect_core::{ChangeFeed, Error, Result};
use fred::clients::SubscriberClient;
use fred::prelude::*;
use tokio::sync::{broadcast, oneshot};
use tracing::debug;

use crate::error::map_err;
use crate::error::STORE;

const PROBE: &str = "probe:";

pub(crate) struct Feeds {
    builder: Builder,
    timeout: Duration,
    subscriber: tokio::sync::OnceCell<SubscriberClient>,
    /// Serialises confirmations, so nobody is handed a feed before its subscription is
    /// confirmed.
    confirming: tokio::sync::Mutex<()>,
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    /// Channels whose subscription was confirmed: handed out at once.
    confirmed: FeedRegistry<String>,
    /// Channels being confirmed: notified too, but not handed out.
    pending: FeedRegistry<String>,
    probes: Mutex<HashMap<String, oneshot::Sender<()>>>,
}

impl Shared {
    fn notify(&self, channel: &str) {
        self.confirmed.notify(channel);
        self.pending.notify(channel);
    }

    fn probes(&self) -> std::sync::MutexGuard<'_, HashMap<String, oneshot::Sender<()>>> {
        self.probes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Ends every feed: waiters fall back to precise sleeps and subscribe again.
    fn end_all(&self) {
        self.confirmed.end_all();
        self.pending.end_all();
    }
}

/// Undoes a half-done subscription if the caller stops waiting (the elector times requests
/// out): the unconfirmed notifier and the probe are forgotten, so nobody is later handed a
/// feed whose subscription was never confirmed.
struct Confirming<'a> {
    shared: &'a Shared,
    channel: &'a str,
    probe: String,
}

impl Drop for Confirming<'_> {
    fn drop(&mut self) {
        self.shared.pending.remove(self.channel);
        self.shared.probes().remove(&self.probe);
    }
}

impl Feeds {
    pub(crate) fn new(builder: Builder, timeout: Duration) -> Feeds {
        Feeds {
            builder,
            timeout,
            subscriber: tokio::sync::OnceCell::new(),
            confirming: tokio::sync::Mutex::new(()),
            shared: Arc::default(),
        }
    }

    /// A confirmed feed for `channel`; `publisher` sends the probe. Cancellation safe.
    pub(crate) async fn subscribe(&self, channel: &str, publisher: &Client) -> Result<ChangeFeed> {
        let client = self.client().await?;
        let _one_at_a_time = self.confirming.lock().await;
        if self.shared.confirmed.contains(channel) {
            return Ok(self.shared.confirmed.subscribe(channel));
        }
        let feed = self.shared.pending.subscribe(channel);
        let confirming = Confirming {
            shared: &self.shared,
            channel,
            probe: format!("{PROBE}{:016x}", nonce()),
        };
        self.confirm(&client, &confirming, publisher).await?;
        self.shared.pending.move_to(channel, &self.shared.confirmed);
        debug!(channel, "subscription confirmed");
        Ok(feed)
    }

    /// The subscriber connection, opened on first use.
    pub(crate) async fn client(&self) -> Result<SubscriberClient> {
        self.subscriber
            .get_or_try_init(|| self.connect())
            .await
            .cloned()
    }

    async fn confirm(
        &self,
        client: &SubscriberClient,
        confirming: &Confirming<'_>,
        publisher: &Client,
    ) -> Result<()> {
        client
            .subscribe(confirming.channel)
            .await
            .map_err(|e| map_err("subscribe", e))?;
        let (tx, mut rx) = oneshot::channel();
        self.shared.probes().insert(confirming.probe.clone(), tx);
        // fred's `subscribe` returns before the server has processed SUBSCRIBE, and the probe
        // goes out on another connection: a probe published first reaches nobody. So it is
        // published again, at growing intervals, until it comes back (seen under load: one
        // probe lost, the subscribe failed after its whole timeout).
        let deadline = tokio::time::Instant::now() + self.timeout;
        // The first resend waits long enough that a probe merely slow to come back (a busy
        // server, thousands of subscriptions being confirmed) is not sent twice: at 5 ms, the
        // 10 000-election scale run spent twice the CPU (10 % → 20 % of a core).
        let mut every = Duration::from_millis(50);
        loop {
            let _: i64 = publisher
                .publish(confirming.channel, confirming.probe.as_str())
                .await
                .map_err(|e| map_err("subscribe", e))?;
            let wait = (tokio::time::Instant::now() + every).min(deadline);
            match tokio::time::timeout_at(wait, &mut rx).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(_)) => return Err(Error::timeout(STORE, "subscribe", self.timeout)),
                Err(_) if wait >= deadline => {
                    return Err(Error::timeout(STORE, "subscribe", self.timeout))
                }
                Err(_) => every = (every * 2).min(Duration::from_millis(400)),
            }
        }
    }

    async fn connect(&self) -> Result<SubscriberClient> {
        let client = self
            .builder
            .build_subscriber_client()
            .map_err(|e| map_err("subscribe", e))?;
        match tokio::time::timeout(self.timeout, client.init()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(map_err("subscribe", e)),
            Err(_) => return Err(Error::timeout(STORE, "subscribe", self.timeout)),
        }
        // Re-subscribes to every tracked channel after a reconnect; the task lives as long as
        // the client.
        drop(client.manage_subscriptions());
        let shared = self.shared.clone();
        let mut messages = client.message_rx();
        tokio::spawn(async move {
            loop {
                match messages.recv().await {
                    Ok(message) => {
                        let text = message.value.as_str().map(|s| s.into_owned());
                        match text {
                            Some(text) if text.starts_with(PROBE) => {
                                if let Some(tx) = shared.probes().remove(&text) {
                                    let _ = tx.send(());
                                }
                            }
                            _ => shared.notify(&message.channel),
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        shared.confirmed.notify_all();
                        shared.pending.notify_all();
                    }
                    Err(broadcast::error::RecvError::Closed) => {
                        shared.end_all();
                        return;
                    }
                }
            }
        });
        // A dropped connection loses the messages published meanwhile: end every feed.
        let shared = self.shared.clone();
        let (mut errors, mut reconnects) = (client.error_rx(), client.reconnect_rx());
        tokio::spawn(async move {
            use broadcast::error::RecvError::Closed;
            loop {
                let alive = tokio::select! {
                    e = errors.recv() => !matches!(e, Err(Closed)),
                    r = reconnects.recv() => !matches!(r, Err(Closed)),
                };
                if !alive {
                    return;
                }
                debug!("subscriber connection event; ending feeds");
                shared.end_all();
            }
        });
        Ok(client)
    }
}

fn nonce() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    h.finish()
}
