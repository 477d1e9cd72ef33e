//! A real-TCP cluster on loopback with a cluster key: election, a killed leader restarted from
//! its state directory, and frames that fail authentication dropped and counted.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use elect_raft::engine::Message;
use elect_raft::wire::encode;
use elect_raft::{CandidateId, ClusterKey, Elector, RaftConfig, StateFile, TcpTransport, Term};
use tokio::io::AsyncWriteExt;
use tokio::time::{sleep, Instant};

fn addrs(names: &[&str]) -> BTreeMap<CandidateId, SocketAddr> {
    names
        .iter()
        .map(|n| {
            let addr = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap();
            (CandidateId::new(*n).unwrap(), addr)
        })
        .collect()
}

async fn node(
    id: &CandidateId,
    addrs: &BTreeMap<CandidateId, SocketAddr>,
    key: &ClusterKey,
    state: &std::path::Path,
) -> (Elector, Arc<TcpTransport>) {
    let (transport, inbox) =
        TcpTransport::start(id.clone(), addrs[id], addrs.clone(), Some(key.clone()))
            .await
            .unwrap();
    let config = RaftConfig::new(id.clone(), addrs.keys().cloned())
        .timing(
            Duration::from_millis(30),
            Duration::from_millis(200),
            Duration::from_millis(400),
        )
        .state_dir(state.join(id.as_str()));
    (
        elect_raft::start(config, transport.clone(), inbox).unwrap(),
        transport,
    )
}

async fn wait_leader(
    nodes: &[Option<(Elector, Arc<TcpTransport>)>],
    except: Option<usize>,
) -> usize {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(k) = nodes
            .iter()
            .enumerate()
            .position(|(k, n)| Some(k) != except && n.as_ref().is_some_and(|(e, _)| e.is_leader()))
        {
            return k;
        }
        assert!(Instant::now() < until, "no leader within 10 s");
        sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_is_replaced_and_rejoins_from_its_state_dir() {
    let state = std::env::temp_dir().join(format!("elect-raft-tcp-{}", std::process::id()));
    let key = ClusterKey::new(*b"test-cluster-key-0123").unwrap();
    let addrs = addrs(&["a", "b", "c"]);
    let ids: Vec<CandidateId> = addrs.keys().cloned().collect();
    let mut nodes = Vec::new();
    for id in &ids {
        nodes.push(Some(node(id, &addrs, &key, &state).await));
    }
    let first = wait_leader(&nodes, None).await;
    let term = nodes[first]
        .as_ref()
        .unwrap()
        .0
        .leading()
        .await
        .unwrap()
        .term();
    let (elector, transport) = nodes[first].take().unwrap();
    let killed = Instant::now();
    transport.stop();
    drop(elector);
    let second = wait_leader(&nodes, Some(first)).await;
    let failover = killed.elapsed();
    eprintln!("failover over TCP: {failover:?}");
    assert!(
        failover < Duration::from_millis(400 + 200 + 200),
        "failover took {failover:?}"
    );
    let new_term = nodes[second]
        .as_ref()
        .unwrap()
        .0
        .leading()
        .await
        .unwrap()
        .term();
    assert!(new_term > term);
    // Restart from the state directory: the persisted term is kept.
    let (persisted, _) = StateFile::open(state.join(ids[first].as_str()))
        .unwrap()
        .load()
        .unwrap();
    assert!(persisted >= term);
    nodes[first] = Some(node(&ids[first], &addrs, &key, &state).await);
    sleep(Duration::from_millis(600)).await;
    let leader = wait_leader(&nodes, None).await;
    assert_eq!(
        leader, second,
        "the restarted node did not disrupt the leader"
    );
    for (elector, _) in nodes.into_iter().flatten() {
        elector.shutdown().await.unwrap();
    }
    let _ = std::fs::remove_dir_all(&state);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_and_malformed_frames_are_dropped_and_counted() {
    let key = ClusterKey::new(*b"test-cluster-key-0123").unwrap();
    let addrs = addrs(&["a", "b"]);
    let a = CandidateId::new("a").unwrap();
    let (transport, mut inbox) =
        TcpTransport::start(a.clone(), addrs[&a], addrs.clone(), Some(key.clone()))
            .await
            .unwrap();
    let b = CandidateId::new("b").unwrap();
    let wrong = ClusterKey::new(*b"not-the-cluster-key!!").unwrap();
    let frames: Vec<Vec<u8>> = vec![
        encode(
            &b,
            &Message::RequestVote {
                term: Term(9),
                transfer: true,
            },
            Some(&wrong),
        ),
        encode(
            &b,
            &Message::RequestVote {
                term: Term(9),
                transfer: true,
            },
            None,
        ),
        encode(
            &CandidateId::new("stranger").unwrap(),
            &Message::PreVote { term: Term(1) },
            Some(&key),
        ),
        vec![0, 0, 255, 255, 1, 2, 3],
        vec![0, 0, 0, 3, 1, 2, 3],
    ];
    for frame in &frames {
        let mut stream = tokio::net::TcpStream::connect(addrs[&a]).await.unwrap();
        stream.write_all(frame).await.unwrap();
        let _ = stream.shutdown().await;
    }
    // A good frame still gets through.
    let mut stream = tokio::net::TcpStream::connect(addrs[&a]).await.unwrap();
    stream
        .write_all(&encode(&b, &Message::PreVote { term: Term(1) }, Some(&key)))
        .await
        .unwrap();
    let (from, message) = tokio::time::timeout(Duration::from_secs(5), inbox.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((from, message), (b, Message::PreVote { term: Term(1) }));
    let until = Instant::now() + Duration::from_secs(5);
    while transport.dropped_frames() < 5 && Instant::now() < until {
        sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        transport.dropped_frames(),
        5,
        "wrong key, no key, stranger, oversized, truncated"
    );
    assert!(inbox.try_recv().is_err(), "nothing else got through");
}

/// Reads one frame from `stream` and decodes it (no key).
async fn read_frame(stream: &mut tokio::net::TcpStream) -> (CandidateId, Message) {
    use tokio::io::AsyncReadExt;
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).await.unwrap();
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    stream.read_exact(&mut body).await.unwrap();
    elect_raft::wire::decode(&body, None).unwrap()
}

/// A peer that restarted (its end of the connection closed, a new process listening on the
/// same port) gets the very next frame: the writer reconnects when the peer closes, where it
/// used to write that frame into the dead socket and lose it (followers write to each other
/// only in elections, so the frame lost was a vote request).
#[tokio::test]
async fn the_first_frame_after_a_peer_restarted_is_not_lost() {
    use elect_raft::Transport;
    let addrs = addrs(&["a", "b"]);
    let (a, b) = (
        CandidateId::new("a").unwrap(),
        CandidateId::new("b").unwrap(),
    );
    let listener = tokio::net::TcpListener::bind(addrs[&b]).await.unwrap();
    let (transport, _inbox) = TcpTransport::start(a.clone(), addrs[&a], addrs.clone(), None)
        .await
        .unwrap();
    let first = Message::PreVote { term: Term(1) };
    transport.send(&b, first.clone());
    let (mut stream, _) = listener.accept().await.unwrap();
    assert_eq!(read_frame(&mut stream).await, (a.clone(), first));
    // b dies: its sockets close. Then a new b listens on the same address.
    drop((stream, listener));
    sleep(Duration::from_millis(100)).await;
    let listener = tokio::net::TcpListener::bind(addrs[&b]).await.unwrap();
    let next = Message::PreVote { term: Term(2) };
    transport.send(&b, next.clone());
    let (mut stream, _) = tokio::time::timeout(Duration::from_secs(10), listener.accept())
        .await
        .expect("a reconnected to the restarted b")
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), read_frame(&mut stream))
        .await
        .expect("the frame sent after the restart arrived");
    assert_eq!(got, (a, next));
}
