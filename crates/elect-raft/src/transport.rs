//! How nodes reach each other: a [`Transport`] sends, an inbox receives. [`LocalNetwork`]
//! connects nodes in one process, with faults, for tests and demos.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::engine::{Message, NodeId};

/// Where a node's incoming messages arrive: `(sender, message)`.
pub type Inbox = mpsc::UnboundedReceiver<(NodeId, Message)>;

/// Sends messages to other nodes. Best effort: a message may be lost, delayed or duplicated;
/// the engine is built for that. Must not block.
pub trait Transport: fmt::Debug + Send + Sync + 'static {
    /// Sends `message` to `to`.
    fn send(&self, to: &NodeId, message: Message);
}

/// Nodes in one process, connected through channels, with links that can be cut.
#[derive(Debug, Clone, Default)]
pub struct LocalNetwork {
    inner: Arc<Mutex<Net>>,
}

#[derive(Debug, Default)]
struct Net {
    inboxes: BTreeMap<NodeId, mpsc::UnboundedSender<(NodeId, Message)>>,
    /// Links `(from, to)` that drop everything.
    cut: BTreeSet<(NodeId, NodeId)>,
    delay: Duration,
}

impl LocalNetwork {
    /// An empty network.
    pub fn new() -> LocalNetwork {
        LocalNetwork::default()
    }

    /// Attaches node `id` (replacing an earlier attachment, e.g. after a restart): its transport
    /// and its inbox.
    pub fn attach(&self, id: &NodeId) -> (Arc<dyn Transport>, Inbox) {
        let (tx, rx) = mpsc::unbounded_channel();
        self.lock().inboxes.insert(id.clone(), tx);
        let transport = LocalTransport {
            from: id.clone(),
            net: self.clone(),
        };
        (Arc::new(transport), rx)
    }

    /// Detaches `id`: messages to it are dropped (a crashed node).
    pub fn detach(&self, id: &NodeId) {
        self.lock().inboxes.remove(id);
    }

    /// Cuts (or heals) the link from → to.
    pub fn set_link(&self, from: &NodeId, to: &NodeId, cut: bool) {
        let mut net = self.lock();
        let link = (from.clone(), to.clone());
        if cut {
            net.cut.insert(link);
        } else {
            net.cut.remove(&link);
        }
    }

    /// Cuts (or heals) every link to and from `id`.
    pub fn isolate(&self, id: &NodeId, cut: bool) {
        let others: Vec<NodeId> = self.lock().inboxes.keys().cloned().collect();
        for other in others.iter().filter(|o| *o != id) {
            self.set_link(id, other, cut);
            self.set_link(other, id, cut);
        }
    }

    /// Heals every link.
    pub fn heal(&self) {
        self.lock().cut.clear();
    }

    /// Delays every message by `delay` (default none).
    pub fn set_delay(&self, delay: Duration) {
        self.lock().delay = delay;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Net> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[derive(Debug)]
struct LocalTransport {
    from: NodeId,
    net: LocalNetwork,
}

impl Transport for LocalTransport {
    fn send(&self, to: &NodeId, message: Message) {
        let (inbox, delay) = {
            let net = self.net.lock();
            if net.cut.contains(&(self.from.clone(), to.clone())) {
                return;
            }
            (net.inboxes.get(to).cloned(), net.delay)
        };
        let Some(inbox) = inbox else {
            return;
        };
        let from = self.from.clone();
        if delay.is_zero() {
            let _ = inbox.send((from, message));
        } else {
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let _ = inbox.send((from, message));
            });
        }
    }
}
