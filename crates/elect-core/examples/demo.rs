//! Three candidates on the in-memory store: an election, a crashed leader and its failover, and
//! a graceful handover, with their times.
//!
//! ```text
//! cargo run -p elect-core --example demo
//! ```

use std::time::Duration;

use elect_core::conformance::{Faults, FaultyStore};
use elect_core::{CandidateId, ElectionName, Elector, Event, MemoryStore};
use tokio::sync::mpsc;
use tokio::time::{sleep, timeout, Instant};

const TTL: Duration = Duration::from_secs(2);

struct Candidate {
    name: &'static str,
    network: FaultyStore<MemoryStore>,
    elector: Elector,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let started = Instant::now();
    let since = move |at: Instant| (at - started).as_secs_f64();
    let store = MemoryStore::new();
    let election = ElectionName::new("demo/nightly-mail")?;
    println!("elect demo: 3 candidates, election {election}, lease TTL {TTL:?}");

    let (tx, mut elected) = mpsc::unbounded_channel();
    let mut candidates = Vec::new();
    for name in ["alpha", "bravo", "charlie"] {
        // Each candidate reaches the store through its own "network", which the demo can cut.
        let network = FaultyStore::new(store.clone());
        let builder = Elector::builder(network.clone(), election.clone())
            .candidate(CandidateId::new(name)?)
            .ttl(TTL);
        let mut events = builder.events();
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Ok(event) = events.recv().await {
                match event {
                    Event::Elected { term, at } => {
                        println!("[{:7.3}s] {name} leads (term {term})", since(at));
                        let _ = tx.send((name, at));
                    }
                    Event::SteppedDown { term, at, reason } => {
                        println!(
                            "[{:7.3}s] {name} stops leading term {term}: {reason:?}",
                            since(at)
                        )
                    }
                    _ => {}
                }
            }
        });
        candidates.push(Candidate {
            name,
            network,
            elector: builder.start()?,
        });
    }

    let (first, _) = timeout(TTL * 3, elected.recv()).await?.ok_or("no leader")?;
    sleep(TTL / 2).await;

    // Crash: the leader never reaches the store again and cannot release.
    let crashed = candidates
        .iter()
        .position(|c| c.name == first)
        .ok_or("unknown")?;
    let crash = Instant::now();
    println!("[{:7.3}s] {first} crashes (no release)", since(crash));
    candidates[crashed].network.set(Faults::Blackhole);
    let (second, at) = timeout(TTL * 3, elected.recv())
        .await?
        .ok_or("no failover")?;
    let failover = at - crash;
    println!(
        "           failover: {second} leads {:.3}s after the crash ({:.2} × TTL)",
        failover.as_secs_f64(),
        failover.as_secs_f64() / TTL.as_secs_f64()
    );
    sleep(TTL / 2).await;

    // Graceful handover: the new leader resigns and releases; a waiting candidate is woken at
    // once by the store's change feed instead of sleeping out the lease.
    let resigning = candidates
        .iter()
        .position(|c| c.name == second)
        .ok_or("unknown")?;
    let resign = Instant::now();
    println!("[{:7.3}s] {second} resigns", since(resign));
    candidates[resigning].elector.resign().await?;
    let (third, at) = timeout(TTL * 3, elected.recv())
        .await?
        .ok_or("no handover")?;
    let handover = at - resign;
    println!(
        "           handover: {third} leads {:.3} ms after the resign",
        handover.as_secs_f64() * 1e3
    );

    for candidate in candidates {
        candidate.network.set(Faults::None);
        let _ = candidate.elector.shutdown().await;
    }
    println!("summary: failover {failover:?}, handover {handover:?}");
    if failover > TTL + Duration::from_millis(500) || handover > Duration::from_millis(100) {
        return Err("failover or handover slower than expected".into());
    }
    Ok(())
}
