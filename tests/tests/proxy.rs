//! The fault proxy's own tests, against a loopback echo server.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use elect_tests::proxy::{FaultProxy, Mode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 || stream.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// Sends `msg` and waits up to `within` for its echo.
async fn round_trip(
    stream: &mut TcpStream,
    msg: &[u8],
    within: Duration,
) -> std::io::Result<Vec<u8>> {
    stream.write_all(msg).await?;
    let mut got = vec![0u8; msg.len()];
    match timeout(within, stream.read_exact(&mut got)).await {
        Ok(Ok(_)) => Ok(got),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "no echo")),
    }
}

const PATIENT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn pass_forwards_both_ways() {
    let proxy = FaultProxy::start(echo_server().await).await.unwrap();
    let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(
        round_trip(&mut c, b"hello", PATIENT).await.unwrap(),
        b"hello"
    );
    assert_eq!(proxy.accepted(), 1);
    assert_eq!(proxy.bytes().0, 10, "5 bytes each way");
}

#[tokio::test]
async fn delay_is_added_in_each_direction() {
    let proxy = FaultProxy::start(echo_server().await).await.unwrap();
    let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
    round_trip(&mut c, b"warm", PATIENT).await.unwrap();
    proxy.set(Mode::Delay(Duration::from_millis(150)));
    let start = Instant::now();
    round_trip(&mut c, b"slow", PATIENT).await.unwrap();
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(300),
        "two delayed legs took only {took:?}"
    );
    assert!(took < Duration::from_secs(3), "{took:?}");
    proxy.set(Mode::Pass);
    let start = Instant::now();
    round_trip(&mut c, b"fast", PATIENT).await.unwrap();
    assert!(
        start.elapsed() < Duration::from_millis(150),
        "pass restores speed"
    );
}

#[tokio::test]
async fn blackhole_makes_requests_time_out_and_pass_restores_service() {
    let proxy = FaultProxy::start(echo_server().await).await.unwrap();
    let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
    proxy.set(Mode::Blackhole);
    let err = round_trip(&mut c, b"lost", Duration::from_millis(300))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
    assert_eq!(proxy.bytes().1, 4, "the request was swallowed");
    // New connections are accepted and held too.
    let mut d = timeout(PATIENT, TcpStream::connect(proxy.addr()))
        .await
        .unwrap()
        .unwrap();
    assert!(round_trip(&mut d, b"x", Duration::from_millis(200))
        .await
        .is_err());
    proxy.set(Mode::Pass);
    assert_eq!(round_trip(&mut d, b"back", PATIENT).await.unwrap(), b"back");
}

#[tokio::test]
async fn reset_breaks_open_connections_and_new_ones_work() {
    let proxy = FaultProxy::start(echo_server().await).await.unwrap();
    let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
    round_trip(&mut c, b"before", PATIENT).await.unwrap();
    proxy.reset_all();
    let mut failed = false;
    for _ in 0..20 {
        if round_trip(&mut c, b"after", Duration::from_millis(200))
            .await
            .is_err()
        {
            failed = true;
            break;
        }
    }
    assert!(failed, "a reset connection must break");
    let mut d = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(round_trip(&mut d, b"new", PATIENT).await.unwrap(), b"new");
}

#[tokio::test]
async fn refuse_resets_new_connections_only() {
    let proxy = FaultProxy::start(echo_server().await).await.unwrap();
    let mut open = TcpStream::connect(proxy.addr()).await.unwrap();
    round_trip(&mut open, b"a", PATIENT).await.unwrap();
    proxy.set(Mode::Refuse);
    let refused = async {
        let mut s = TcpStream::connect(proxy.addr()).await?;
        round_trip(&mut s, b"b", Duration::from_secs(2)).await
    };
    let err = refused.await.unwrap_err();
    assert_ne!(
        err.kind(),
        std::io::ErrorKind::TimedOut,
        "refused fast, not held: {err}"
    );
    assert_eq!(round_trip(&mut open, b"c", PATIENT).await.unwrap(), b"c");
    proxy.set(Mode::Pass);
    let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(round_trip(&mut s, b"d", PATIENT).await.unwrap(), b"d");
}
