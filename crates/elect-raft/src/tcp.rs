//! [`TcpTransport`]: peers over TCP, one outgoing connection per peer (reconnected with
//! backoff), frames from [`wire`](crate::wire). Frames that are malformed, oversized, fail
//! authentication or come from ids not in the cluster are dropped and counted; the connection
//! they came on is closed (its framing can no longer be trusted). Nothing here panics on input.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::debug;

use elect_core::{Elector, Error, Result};

use crate::config::RaftConfig;
use crate::engine::{Message, NodeId};
use crate::runtime::start;
use crate::transport::{Inbox, Transport};
use crate::wire::{decode, encode, ClusterKey, MAX_FRAME};

/// Messages queued per peer while it is unreachable; older ones are dropped first.
const QUEUE: usize = 256;

/// Peers over TCP. Dropping it (and every clone of the `Arc`) stops its tasks.
#[derive(Debug)]
pub struct TcpTransport {
    me: NodeId,
    key: Option<ClusterKey>,
    queues: BTreeMap<NodeId, mpsc::Sender<Vec<u8>>>,
    dropped: Arc<AtomicU64>,
    sent: AtomicU64,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    local: SocketAddr,
}

impl TcpTransport {
    /// Listens on `listen` and connects to `peers` (id → address, this node excluded or not).
    /// Returns the transport and the inbox of frames that passed every check.
    pub async fn start(
        me: NodeId,
        listen: SocketAddr,
        peers: BTreeMap<NodeId, SocketAddr>,
        key: Option<ClusterKey>,
    ) -> io::Result<(Arc<TcpTransport>, Inbox)> {
        let listener = TcpListener::bind(listen).await?;
        let local = listener.local_addr()?;
        let (inbox_tx, inbox) = mpsc::unbounded_channel();
        let dropped = Arc::new(AtomicU64::new(0));
        let members: Arc<BTreeSet<NodeId>> = Arc::new(peers.keys().cloned().collect());
        let mut tasks = vec![tokio::spawn(accept(
            listener,
            key.clone(),
            members,
            inbox_tx,
            dropped.clone(),
            me.clone(),
        ))];
        let mut queues = BTreeMap::new();
        for (id, addr) in peers.into_iter().filter(|(id, _)| *id != me) {
            let (tx, rx) = mpsc::channel(QUEUE);
            tasks.push(tokio::spawn(connect(addr, rx)));
            queues.insert(id, tx);
        }
        Ok((
            Arc::new(TcpTransport {
                me,
                key,
                queues,
                dropped,
                sent: AtomicU64::new(0),
                tasks: Mutex::new(tasks),
                local,
            }),
            inbox,
        ))
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Frames refused so far (malformed, oversized, unauthenticated, unknown sender).
    pub fn dropped_frames(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Messages queued for sending so far (to any peer; the benchmarks divide by time).
    pub fn sent_messages(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Stops listening and sending at once (a crash, as the peers see it).
    pub fn stop(&self) {
        for task in self
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            task.abort();
        }
    }
}

impl Drop for TcpTransport {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Transport for TcpTransport {
    fn send(&self, to: &NodeId, message: Message) {
        if let Some(queue) = self.queues.get(to) {
            // Best effort: a full queue means the peer is unreachable; the engine retries.
            self.sent.fetch_add(1, Ordering::Relaxed);
            elect_core::metrics::raft_message_sent(&self.me);
            let _ = queue.try_send(encode(&self.me, &message, self.key.as_ref()));
        }
    }
}

async fn accept(
    listener: TcpListener,
    key: Option<ClusterKey>,
    members: Arc<BTreeSet<NodeId>>,
    inbox: mpsc::UnboundedSender<(NodeId, Message)>,
    dropped: Arc<AtomicU64>,
    me: NodeId,
) {
    let mut readers = Vec::new();
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (key, members, inbox, dropped, me) = (
            key.clone(),
            members.clone(),
            inbox.clone(),
            dropped.clone(),
            me.clone(),
        );
        readers.retain(|r: &JoinHandle<()>| !r.is_finished());
        readers.push(tokio::spawn(async move {
            if let Err(why) = read_frames(stream, key, &members, &inbox).await {
                dropped.fetch_add(1, Ordering::Relaxed);
                elect_core::metrics::raft_frame_dropped(&me);
                debug!(%peer, why, "dropped a frame and the connection");
            }
        }));
    }
}

/// Reads frames until the connection ends; `Err` names the first bad frame.
async fn read_frames(
    mut stream: TcpStream,
    key: Option<ClusterKey>,
    members: &BTreeSet<NodeId>,
    inbox: &mpsc::UnboundedSender<(NodeId, Message)>,
) -> Result<(), String> {
    let mut body = [0u8; MAX_FRAME];
    loop {
        let mut len = [0u8; 4];
        if stream.read_exact(&mut len).await.is_err() {
            return Ok(());
        }
        let len = u32::from_be_bytes(len) as usize;
        if len > MAX_FRAME {
            return Err(format!("oversized frame ({len} bytes)"));
        }
        if stream.read_exact(&mut body[..len]).await.is_err() {
            return Ok(());
        }
        let (from, message) = decode(&body[..len], key.as_ref()).map_err(|e| e.to_string())?;
        if !members.contains(&from) {
            return Err(format!("frame from unknown node {from}"));
        }
        if inbox.send((from, message)).is_err() {
            return Ok(());
        }
    }
}

/// Keeps one connection to a peer, sending queued frames; reconnects with backoff.
///
/// The peer never writes on this connection, so anything it reads back (end of stream, a
/// reset) means the peer closed it: the writer reconnects at once instead of writing the next
/// frame into a dead socket. Without that, the first frame after a peer restarted was lost —
/// the kernel accepts the write, the dead socket answers with a reset, and only the write after
/// it fails. Followers write to each other only in elections, so the frame lost was a
/// (pre-)vote request, exactly when it mattered: with members restarted over time, an election
/// after a crash could miss its majority and wait for another timeout.
async fn connect(addr: SocketAddr, mut queue: mpsc::Receiver<Vec<u8>>) {
    const FIRST_BACKOFF: Duration = Duration::from_millis(20);
    let mut backoff = FIRST_BACKOFF;
    // A frame whose write failed: sent again on the next connection.
    let mut unsent: Option<Vec<u8>> = None;
    loop {
        match TcpStream::connect(addr).await {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                let (mut reader, mut writer) = stream.into_split();
                let mut probe = [0u8; 1];
                loop {
                    let frame = match unsent.take() {
                        Some(frame) => frame,
                        None => tokio::select! {
                            frame = queue.recv() => match frame {
                                Some(frame) => frame,
                                None => return,
                            },
                            // Cancel-safe: nothing is read unless the peer closed or misbehaved.
                            _ = reader.read(&mut probe) => break,
                        },
                    };
                    if writer.write_all(&frame).await.is_err() {
                        unsent = Some(frame);
                        break;
                    }
                    // Reset only once a frame went out: a listener that accepts and closes at
                    // once is retried with growing backoff, not in a tight loop.
                    backoff = FIRST_BACKOFF;
                }
            }
            Err(_) => {
                // Frames queued while the peer is down are stale by the time it is back.
                unsent = None;
                while queue.try_recv().is_ok() {}
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

/// Starts a node on TCP: listens on `listen`, reaches `peers` (every member's id and address,
/// observers included; this node's own entry is ignored), authenticates every frame with `key`
/// when given, and drives the engine. Returns the [`Elector`] and the transport (for
/// [`TcpTransport::dropped_frames`] and [`TcpTransport::stop`]).
pub async fn start_tcp(
    config: RaftConfig,
    listen: SocketAddr,
    peers: BTreeMap<NodeId, SocketAddr>,
    key: Option<ClusterKey>,
) -> Result<(Elector, Arc<TcpTransport>)> {
    config.validate()?;
    let (transport, inbox) = TcpTransport::start(config.id.clone(), listen, peers, key)
        .await
        .map_err(|e| Error::InvalidConfig {
            message: format!("cannot listen on {listen}: {e}"),
        })?;
    let elector = start(config, transport.clone(), inbox)?;
    Ok((elector, transport))
}
