//! One candidate process for the benchmarks and the chaos tests (see the crate docs for the
//! output and the commands).
//!
//! ```text
//! candidate --store URL --election NAME [--ttl MS] [--id ID] [--migrate]
//! candidate --raft-id ID --raft-listen ADDR --raft-peer ID=ADDR... [--raft-key KEY]
//!           [--raft-state DIR] [--election NAME]
//! ```

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use elect_bench::MonoClock;
use elect_core::{CandidateId, ElectionName, Elector, Event, LeaseStore};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::broadcast;

#[derive(Default)]
struct Args {
    store: Option<String>,
    election: Option<String>,
    ttl_ms: u64,
    id: Option<String>,
    migrate: bool,
    raft_id: Option<String>,
    raft_listen: Option<String>,
    raft_peers: Vec<String>,
    raft_key: Option<String>,
    raft_state: Option<String>,
}

fn parse() -> Result<Args, String> {
    let mut args = Args {
        ttl_ms: 2000,
        ..Args::default()
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--store" => args.store = Some(value()?),
            "--election" => args.election = Some(value()?),
            "--ttl" => {
                args.ttl_ms = value()?
                    .parse()
                    .map_err(|_| "--ttl takes milliseconds".to_owned())?
            }
            "--id" => args.id = Some(value()?),
            "--migrate" => args.migrate = true,
            "--raft-id" => args.raft_id = Some(value()?),
            "--raft-listen" => args.raft_listen = Some(value()?),
            "--raft-peer" => args.raft_peers.push(value()?),
            "--raft-key" => args.raft_key = Some(value()?),
            "--raft-state" => args.raft_state = Some(value()?),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
}

async fn store(url: &str, migrate: bool) -> Result<Box<dyn LeaseStore>, String> {
    let e = |e: elect_core::Error| e.to_string();
    if url.starts_with("redis://") || url.starts_with("rediss://") {
        Ok(Box::new(
            elect_redis::RedisStore::connect_url(url).await.map_err(e)?,
        ))
    } else if url.starts_with("mysql://") {
        let store = elect_mysql::MysqlStore::connect_url(url).await.map_err(e)?;
        if migrate {
            store.migrate().await.map_err(e)?;
        }
        Ok(Box::new(store))
    } else if url.starts_with("mongodb://") {
        Ok(Box::new(
            elect_mongo::MongoStore::connect_url(url).await.map_err(e)?,
        ))
    } else {
        Err(format!(
            "unsupported store URL {}",
            elect_core::redact_url(url)
        ))
    }
}

/// The elector and its events, subscribed before anything can happen.
async fn elector(args: &Args) -> Result<(Elector, broadcast::Receiver<Event>), String> {
    let e = |e: elect_core::Error| e.to_string();
    let election = ElectionName::new(args.election.as_deref().unwrap_or("bench")).map_err(e)?;
    if let Some(url) = &args.store {
        let mut builder = Elector::builder_dyn(store(url, args.migrate).await?.into(), election)
            .ttl(Duration::from_millis(args.ttl_ms));
        if let Some(id) = &args.id {
            builder = builder.candidate(CandidateId::new(id).map_err(e)?);
        }
        let events = builder.events();
        return Ok((builder.start().map_err(e)?, events));
    }
    let id = CandidateId::new(
        args.raft_id
            .as_deref()
            .ok_or("--store or --raft-id is needed")?,
    )
    .map_err(e)?;
    let listen: SocketAddr = args
        .raft_listen
        .as_deref()
        .ok_or("--raft-listen is needed")?
        .parse()
        .map_err(|_| "--raft-listen takes host:port".to_owned())?;
    let mut peers = BTreeMap::new();
    for peer in &args.raft_peers {
        let (pid, addr) = peer
            .split_once('=')
            .ok_or(format!("--raft-peer {peer:?} is not ID=ADDR"))?;
        let addr: SocketAddr = addr
            .parse()
            .map_err(|_| format!("--raft-peer {peer:?}: bad address"))?;
        peers.insert(CandidateId::new(pid).map_err(e)?, addr);
    }
    let key = match &args.raft_key {
        Some(k) => Some(
            elect_raft::ClusterKey::new(k.as_bytes().to_vec())
                .ok_or("--raft-key needs at least 16 bytes")?,
        ),
        None => None,
    };
    let mut config = elect_raft::RaftConfig::new(id, peers.keys().cloned()).election(election);
    if let Some(dir) = &args.raft_state {
        config = config.state_dir(dir);
    }
    let (elector, _transport) = elect_raft::start_tcp(config, listen, peers, key)
        .await
        .map_err(e)?;
    // No node can be elected before its first election timeout: subscribing now misses nothing.
    let events = elector.events();
    Ok((elector, events))
}

fn line(clock: &MonoClock, at: std::time::Instant, what: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{} {what}", clock.ns(at));
    let _ = out.flush();
}

#[tokio::main]
async fn main() -> ExitCode {
    let clock = MonoClock::new();
    let args = match parse() {
        Ok(args) => args,
        Err(why) => {
            eprintln!("candidate: {why}");
            return ExitCode::from(2);
        }
    };
    let (elector, mut events) = match elector(&args).await {
        Ok(started) => started,
        Err(why) => {
            eprintln!("candidate: {why}");
            return ExitCode::FAILURE;
        }
    };
    // Before the printer starts: events wait in the receiver, so `ready` is always first.
    line(&clock, std::time::Instant::now(), format_args!("ready"));
    let printer = tokio::spawn(async move {
        while let Ok(event) = events.recv().await {
            match event {
                Event::Elected { term, at } => {
                    line(&clock, at.into_std(), format_args!("elected {term}"))
                }
                Event::SteppedDown { term, at, reason } => line(
                    &clock,
                    at.into_std(),
                    format_args!("lost {term} {reason:?}"),
                ),
                Event::Error(e) => line(
                    &clock,
                    std::time::Instant::now(),
                    format_args!("error {}", e.to_string().replace('\n', " ")),
                ),
                Event::Stopped => {
                    line(&clock, std::time::Instant::now(), format_args!("stopped"));
                    return;
                }
                _ => {}
            }
        }
    });
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(command)) = stdin.next_line().await {
        match command.trim() {
            "resign" => {
                let _ = elector.resign().await;
            }
            "exit" => break,
            "" => {}
            other => eprintln!("candidate: unknown command {other:?}"),
        }
    }
    let _ = elector.shutdown().await;
    let _ = printer.await;
    ExitCode::SUCCESS
}
