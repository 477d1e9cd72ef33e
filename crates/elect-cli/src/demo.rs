//! `elect demo`: three raft nodes on loopback TCP, in this process, with a cluster key and
//! state directories: who leads, a crashed leader and the failover time, its restart, and a
//! graceful transfer.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use elect::raft::{CandidateId, ClusterKey, Elector, RaftConfig, TcpTransport};

use crate::{exit, Failure};
use tokio::time::{sleep, Instant};

struct Node {
    id: CandidateId,
    elector: Elector,
    transport: Arc<TcpTransport>,
}

async fn start(
    id: &CandidateId,
    addrs: &BTreeMap<CandidateId, SocketAddr>,
    key: &ClusterKey,
    state: &std::path::Path,
) -> Result<Node, Box<dyn std::error::Error>> {
    let (transport, inbox) =
        TcpTransport::start(id.clone(), addrs[id], addrs.clone(), Some(key.clone())).await?;
    let config =
        RaftConfig::new(id.clone(), addrs.keys().cloned()).state_dir(state.join(id.as_str()));
    let elector = elect::raft::start(config, transport.clone(), inbox)?;
    Ok(Node {
        id: id.clone(),
        elector,
        transport,
    })
}

/// Waits until some node other than `except` leads; returns its index.
async fn leader(nodes: &[Option<Node>], except: Option<usize>) -> Option<usize> {
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        let found = nodes
            .iter()
            .enumerate()
            .find(|(k, n)| Some(*k) != except && n.as_ref().is_some_and(|n| n.elector.is_leader()));
        if let Some((k, _)) = found {
            return Some(k);
        }
        sleep(Duration::from_millis(1)).await;
    }
    None
}

pub(crate) async fn demo() -> Result<u8, Failure> {
    scenario().await.map(|()| 0).map_err(|e| Failure {
        code: exit::UNAVAILABLE,
        message: format!("demo: {e}"),
    })
}

async fn scenario() -> Result<(), Box<dyn std::error::Error>> {
    let state = std::env::temp_dir().join(format!("elect-raft-demo-{}", std::process::id()));
    let key = ClusterKey::new(*b"demo-cluster-key-0123456789").ok_or("key")?;
    let mut addrs = BTreeMap::new();
    for name in ["n1", "n2", "n3"] {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        addrs.insert(CandidateId::new(name)?, port);
    }
    let ids: Vec<CandidateId> = addrs.keys().cloned().collect();
    println!(
        "elect-raft demo: 3 nodes on loopback TCP, heartbeat 50 ms, election timeout 300-600 ms"
    );
    let started = Instant::now();
    let mut nodes = Vec::new();
    for id in &ids {
        nodes.push(Some(start(id, &addrs, &key, &state).await?));
    }
    let first = leader(&nodes, None).await.ok_or("no leader")?;
    let term = nodes[first]
        .as_ref()
        .ok_or("gone")?
        .elector
        .leading()
        .await?
        .term();
    println!(
        "[{:6.3}s] {} leads (term {term})",
        started.elapsed().as_secs_f64(),
        ids[first]
    );

    // Crash the leader: it stops sending and receiving at once, without handing over.
    sleep(Duration::from_millis(500)).await;
    let crashed = nodes[first].take().ok_or("gone")?;
    let crash = Instant::now();
    crashed.transport.stop();
    drop(crashed.elector);
    println!(
        "[{:6.3}s] {} crashes",
        started.elapsed().as_secs_f64(),
        crashed.id
    );
    let second = leader(&nodes, Some(first)).await.ok_or("no failover")?;
    let failover = crash.elapsed();
    println!(
        "[{:6.3}s] {} leads; failover took {:.1} ms",
        started.elapsed().as_secs_f64(),
        ids[second],
        failover.as_secs_f64() * 1e3
    );

    // Restart it from its state directory; it rejoins as a follower.
    nodes[first] = Some(start(&ids[first], &addrs, &key, &state).await?);
    sleep(Duration::from_millis(500)).await;
    println!(
        "[{:6.3}s] {} restarted from its state directory; {} still leads",
        started.elapsed().as_secs_f64(),
        ids[first],
        ids[leader(&nodes, None).await.ok_or("no leader")?]
    );

    // Graceful transfer.
    let current = leader(&nodes, None).await.ok_or("no leader")?;
    let resign = Instant::now();
    nodes[current]
        .as_ref()
        .ok_or("gone")?
        .elector
        .resign()
        .await?;
    let third = leader(&nodes, Some(current)).await.ok_or("no transfer")?;
    let transfer = resign.elapsed();
    println!(
        "[{:6.3}s] {} resigned, {} leads; transfer took {:.1} ms",
        started.elapsed().as_secs_f64(),
        ids[current],
        ids[third],
        transfer.as_secs_f64() * 1e3
    );

    for node in nodes.into_iter().flatten() {
        node.elector.shutdown().await?;
    }
    let _ = std::fs::remove_dir_all(&state);
    println!(
        "summary: failover {:.1} ms, transfer {:.1} ms",
        failover.as_secs_f64() * 1e3,
        transfer.as_secs_f64() * 1e3
    );
    Ok(())
}
