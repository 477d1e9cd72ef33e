//! A TCP fault proxy: listens on loopback, forwards to a server, and injects faults switchable
//! at run time — delay, blackhole, reset, refuse.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use socket2::SockRef;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, Instant};

/// What the proxy does to traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward everything as it comes.
    Pass,
    /// Forward everything, each chunk this much later (order kept).
    Delay(Duration),
    /// Keep connections open (and accept new ones) but drop every byte in both directions: a
    /// partition, or a frozen server, as the client sees it. Unlike TCP, which would deliver
    /// those bytes late, the bytes are gone: after switching back to [`Mode::Pass`], a
    /// connection that was open meanwhile is out of step with its server (a request-reply
    /// client such as fred then never recovers on it). Heal with [`FaultProxy::reset_all`]
    /// too, as a partition that outlived its connections.
    Blackhole,
    /// Reset every new connection at once; connections already open are unaffected.
    Refuse,
}

/// What the proxy has seen.
#[derive(Debug, Default)]
struct Counters {
    accepted: AtomicU64,
    open: AtomicUsize,
    forwarded: AtomicU64,
    dropped: AtomicU64,
}

/// A running fault proxy. Dropping it stops accepting and resets every connection.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    mode: watch::Sender<Mode>,
    resets: watch::Sender<u64>,
    counters: Arc<Counters>,
    acceptor: JoinHandle<()>,
}

impl FaultProxy {
    /// Starts a proxy on a free loopback port, forwarding to `upstream`, in [`Mode::Pass`].
    pub async fn start(upstream: SocketAddr) -> io::Result<FaultProxy> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let (mode, _) = watch::channel(Mode::Pass);
        let (resets, _) = watch::channel(0u64);
        let counters = Arc::new(Counters::default());
        let acceptor = tokio::spawn(accept(
            listener,
            upstream,
            mode.subscribe(),
            resets.clone(),
            counters.clone(),
        ));
        Ok(FaultProxy {
            addr,
            upstream,
            mode,
            resets,
            counters,
            acceptor,
        })
    }

    /// Starts a proxy in front of the server a URL names, and returns it with the URL rewritten
    /// to go through the proxy.
    pub async fn in_front_of(url: &str) -> io::Result<(FaultProxy, String)> {
        let (host, port) = host_port(url).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("no host:port in {url}"),
            )
        })?;
        let upstream = tokio::net::lookup_host((host.as_str(), port))
            .await?
            .find(SocketAddr::is_ipv4)
            .ok_or_else(|| {
                io::Error::new(io::ErrorKind::NotFound, format!("{host} has no IPv4"))
            })?;
        let proxy = FaultProxy::start(upstream).await?;
        let rewritten = url.replacen(
            &format!("{host}:{port}"),
            &format!("127.0.0.1:{}", proxy.addr.port()),
            1,
        );
        Ok((proxy, through_tcp_only(&rewritten)))
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where traffic goes.
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// Switches the mode for every connection, open and new.
    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        *self.mode.borrow()
    }

    /// Resets every open connection (TCP RST to both sides). New ones are accepted as the mode
    /// says.
    pub fn reset_all(&self) {
        self.resets.send_modify(|n| *n += 1);
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.counters.accepted.load(Ordering::Relaxed)
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.counters.open.load(Ordering::Relaxed)
    }

    /// Bytes forwarded, and bytes dropped by [`Mode::Blackhole`], in both directions.
    pub fn bytes(&self) -> (u64, u64) {
        (
            self.counters.forwarded.load(Ordering::Relaxed),
            self.counters.dropped.load(Ordering::Relaxed),
        )
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.acceptor.abort();
        self.reset_all();
    }
}

/// A MySQL URL with `prefer_socket=false` (unless it says otherwise). mysql_async's default
/// reads the server's `@@socket` after each TCP handshake and, where that file exists — a
/// server on the same machine, whatever host the URL names — quietly reconnects through the
/// Unix socket, around the proxy: until 2026-12-04 every MySQL "cut link" of the chaos tests
/// cut nothing (CI: `process_chaos_on_mariadb`, "the faults moved nothing").
fn through_tcp_only(url: &str) -> String {
    if !url.starts_with("mysql://") || url.contains("prefer_socket=") {
        return url.to_owned();
    }
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}prefer_socket=false")
}

/// `host` and `port` of a `scheme://[user[:pass]@]host:port/...` URL.
pub(crate) fn host_port(url: &str) -> Option<(String, u16)> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?']).next()?;
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = hostport.rsplit_once(':')?;
    Some((host.to_owned(), port.parse().ok()?))
}

async fn accept(
    listener: TcpListener,
    upstream: SocketAddr,
    mode: watch::Receiver<Mode>,
    resets: watch::Sender<u64>,
    counters: Arc<Counters>,
) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        counters.accepted.fetch_add(1, Ordering::Relaxed);
        // Linger 0: every close is a reset, so a reset needs no more than dropping the sockets.
        let _ = SockRef::from(&client).set_linger(Some(Duration::ZERO));
        if *mode.borrow() == Mode::Refuse {
            drop(client);
            continue;
        }
        let (mode, resets, counters) = (mode.clone(), resets.subscribe(), counters.clone());
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(upstream).await else {
                return;
            };
            let _ = SockRef::from(&server).set_linger(Some(Duration::ZERO));
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            counters.open.fetch_add(1, Ordering::Relaxed);
            relay(client, server, mode, resets, &counters).await;
            counters.open.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// Relays both directions until either side closes or a reset is asked for; then drops both
/// sockets (a reset, thanks to linger 0).
async fn relay(
    client: TcpStream,
    server: TcpStream,
    mode: watch::Receiver<Mode>,
    mut resets: watch::Receiver<u64>,
    counters: &Arc<Counters>,
) {
    resets.borrow_and_update();
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let up = pump(client_read, server_write, mode.clone(), counters.clone());
    let down = pump(server_read, client_write, mode, counters.clone());
    tokio::select! {
        _ = async { tokio::join!(up, down) } => {}
        _ = resets.changed() => {}
    }
}

/// Copies one direction, applying the mode to each chunk as it is read.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mode: watch::Receiver<Mode>,
    counters: Arc<Counters>,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    let reader = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let due = match *mode.borrow() {
                Mode::Blackhole => {
                    counters.dropped.fetch_add(n as u64, Ordering::Relaxed);
                    continue;
                }
                Mode::Delay(d) => Instant::now() + d,
                Mode::Pass | Mode::Refuse => Instant::now(),
            };
            counters.forwarded.fetch_add(n as u64, Ordering::Relaxed);
            if tx.send((due, buf[..n].to_vec())).is_err() {
                return;
            }
        }
    };
    tokio::join!(reader, writer);
}

#[cfg(test)]
mod tests {
    use super::{host_port, through_tcp_only};

    #[test]
    fn mysql_urls_keep_to_tcp() {
        assert_eq!(
            through_tcp_only("mysql://u@127.0.0.1:1/db"),
            "mysql://u@127.0.0.1:1/db?prefer_socket=false"
        );
        assert_eq!(
            through_tcp_only("mysql://h:1/db?pool_max=2"),
            "mysql://h:1/db?pool_max=2&prefer_socket=false"
        );
        assert_eq!(
            through_tcp_only("mysql://h:1/db?prefer_socket=true"),
            "mysql://h:1/db?prefer_socket=true"
        );
        assert_eq!(through_tcp_only("redis://h:1"), "redis://h:1");
    }

    #[test]
    fn host_port_of_urls() {
        assert_eq!(
            host_port("redis://127.0.0.1:6379"),
            Some(("127.0.0.1".into(), 6379))
        );
        assert_eq!(host_port("mysql://u:p@h:33/db?x=1"), Some(("h".into(), 33)));
        assert_eq!(
            host_port("mongodb://127.0.0.1:5/?directConnection=true"),
            Some(("127.0.0.1".into(), 5))
        );
        assert_eq!(host_port("redis://nohost"), None);
    }
}
