//! One candidate process for the benchmarks and the chaos tests (see the crate docs for the
//! output and the commands).
//!
//! ```text
//! candidate --store URL --election NAME [--ttl MS] [--id ID] [--migrate] [--work-ms MS]
//! candidate --store URL --election PREFIX --elections N [--ttl MS] [--batched | --shards]    (scale mode)
//! candidate --store URL --election PREFIX --elections N --balance K [--ttl MS]
//!           (one balanced `Shards`, seats PREFIX.seats.*: prints `share LEADING RESIGNED LOST`
//!            every 100 ms; LOST counts the leaderships that ended otherwise than by resigning)
//! candidate --raft-id ID --raft-listen ADDR --raft-peer ID=ADDR... [--raft-key KEY]
//!           [--raft-state DIR] [--raft-timing HB,MIN,MAX] [--election NAME] [--work-ms MS]
//!           (--raft-timing: heartbeat and election timeout range in ms; default 50,300,600)
//! (any of them: --fence ADDR to write the term to a fenced resource with each `work`;
//!  --register ADDR to increment the resource's register with each `work` instead: read,
//!  --rmw-gap-ms MS of work (default 25), write the value read plus one, both with the term;
//!  --unsafe-ignore-deadline: a deliberately broken leader for the chaos checker;
//!  --restart-quarantine: RedisConfig::restart_quarantine;
//!  --wait-replicas N: RedisConfig::wait_for_replicas(N, 100 ms))
//! candidate --counters URL                    (prints the server's request counter, exits)
//! candidate --monitor redis://… --ttl MS     (prints commands from clients and from scripts
//!                                              seen by MONITOR for MS milliseconds, exits)
//! ```

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use elect_bench::{counters, MonoClock};
use elect_core::{CandidateId, ElectionName, Elector, Event, LeaseStore};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::broadcast;

/// The clock-rate bound ρ every single-election candidate's elector keeps (the default).
const DRIFT: f64 = 0.01;
/// The safety margin ε every single-election candidate's elector keeps (the default).
const MARGIN: Duration = Duration::from_millis(2);

#[derive(Default)]
struct Args {
    store: Option<String>,
    election: Option<String>,
    elections: Option<usize>,
    /// Scale mode: through `elect_core::batch::Batched` (shared requests).
    batched: bool,
    shards: bool,
    /// Scale mode: one balanced `Shards` of at most this many processes.
    balance: Option<usize>,
    ttl_ms: u64,
    work_ms: Option<u64>,
    fence: Option<String>,
    register: Option<String>,
    rmw_gap_ms: u64,
    unsafe_ignore_deadline: bool,
    restart_quarantine: bool,
    wait_replicas: u32,
    id: Option<String>,
    migrate: bool,
    counters: Option<String>,
    monitor: Option<String>,
    raft_id: Option<String>,
    raft_listen: Option<String>,
    raft_peers: Vec<String>,
    raft_key: Option<String>,
    raft_state: Option<String>,
    /// Heartbeat, minimum and maximum election timeout, in ms.
    raft_timing: Option<[u64; 3]>,
    observe: bool,
}

fn parse() -> Result<Args, String> {
    let mut args = Args {
        ttl_ms: 2000,
        rmw_gap_ms: 25,
        ..Args::default()
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        let number = |v: String, what: &str| {
            v.parse::<u64>()
                .map_err(|_| format!("{flag} takes {what}, not {v:?}"))
        };
        match flag.as_str() {
            "--store" => args.store = Some(value()?),
            "--election" => args.election = Some(value()?),
            "--elections" => args.elections = Some(number(value()?, "a count")? as usize),
            "--batched" => args.batched = true,
            "--shards" => args.shards = true,
            "--balance" => args.balance = Some(number(value()?, "a process count")? as usize),
            "--ttl" => args.ttl_ms = number(value()?, "milliseconds")?,
            "--work-ms" => args.work_ms = Some(number(value()?, "milliseconds")?.max(1)),
            "--fence" => args.fence = Some(value()?),
            "--register" => args.register = Some(value()?),
            "--rmw-gap-ms" => args.rmw_gap_ms = number(value()?, "milliseconds")?,
            "--unsafe-ignore-deadline" => args.unsafe_ignore_deadline = true,
            "--restart-quarantine" => args.restart_quarantine = true,
            "--wait-replicas" => {
                args.wait_replicas = u32::try_from(number(value()?, "a replica count")?)
                    .map_err(|_| "--wait-replicas takes a small count".to_owned())?
            }
            "--id" => args.id = Some(value()?),
            "--migrate" => args.migrate = true,
            "--counters" => args.counters = Some(value()?),
            "--monitor" => args.monitor = Some(value()?),
            "--raft-id" => args.raft_id = Some(value()?),
            "--raft-listen" => args.raft_listen = Some(value()?),
            "--raft-peer" => args.raft_peers.push(value()?),
            "--raft-key" => args.raft_key = Some(value()?),
            "--raft-state" => args.raft_state = Some(value()?),
            "--raft-timing" => {
                let v = value()?;
                let ms: Vec<u64> = v
                    .split(',')
                    .map(|n| number(n.to_owned(), "HB,MIN,MAX in milliseconds"))
                    .collect::<Result<_, _>>()?;
                args.raft_timing = Some(
                    ms.try_into()
                        .map_err(|_| format!("--raft-timing takes HB,MIN,MAX, not {v:?}"))?,
                );
            }
            "--observe" => args.observe = true,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
}

async fn store(url: &str, args: &Args) -> Result<Arc<dyn LeaseStore>, String> {
    Ok(coordinator(url, args).await?.lease_store())
}

/// The coordinator `url` names, with the options `args` give (tables made with `--migrate`).
async fn coordinator(url: &str, args: &Args) -> Result<elect::Coordinator, String> {
    let mut options = elect::Options::default().restart_quarantine(args.restart_quarantine);
    if args.wait_replicas > 0 {
        options = options.wait_for_replicas(args.wait_replicas, Duration::from_millis(100));
    }
    let store = elect::open(url, &options)
        .await
        .map_err(|e| e.to_string())?;
    if let (elect::Coordinator::Mysql(mysql), true) = (&store, args.migrate) {
        mysql.migrate().await.map_err(|e| e.to_string())?;
    }
    if let (elect::Coordinator::Postgres(postgres), true) = (&store, args.migrate) {
        postgres.migrate().await.map_err(|e| e.to_string())?;
    }
    Ok(store)
}

/// What the candidate campaigns with.
struct Campaign {
    elector: Elector,
    events: broadcast::Receiver<Event>,
    store: Option<Arc<dyn LeaseStore>>,
    transport: Option<Arc<elect::raft::TcpTransport>>,
}

/// The elector and its events, subscribed before anything can happen.
async fn campaign(args: &Args) -> Result<Campaign, String> {
    let e = |e: elect_core::Error| e.to_string();
    let election = ElectionName::new(args.election.as_deref().unwrap_or("bench")).map_err(e)?;
    if let Some(url) = &args.store {
        let store = store(url, args).await?;
        let mut builder = Elector::builder_dyn(store.clone(), election)
            .ttl(Duration::from_millis(args.ttl_ms))
            .clock_drift(DRIFT)
            .safety_margin(MARGIN);
        if let Some(id) = &args.id {
            builder = builder.candidate(CandidateId::new(id).map_err(e)?);
        }
        let events = builder.events();
        return Ok(Campaign {
            elector: builder.start().map_err(e)?,
            events,
            store: Some(store),
            transport: None,
        });
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
            elect::raft::ClusterKey::new(k.as_bytes().to_vec())
                .ok_or("--raft-key needs at least 16 bytes")?,
        ),
        None => None,
    };
    let mut config = elect::raft::RaftConfig::new(id, peers.keys().cloned()).election(election);
    if let Some(dir) = &args.raft_state {
        config = config.state_dir(dir);
    }
    if let Some([heartbeat, min, max]) = args.raft_timing {
        let ms = Duration::from_millis;
        config = config.timing(ms(heartbeat), ms(min), ms(max));
    }
    let (elector, transport) = elect::raft::start_tcp(config, listen, peers, key)
        .await
        .map_err(e)?;
    // No node can be elected before its first election timeout: subscribing now misses nothing.
    let events = elector.events();
    Ok(Campaign {
        elector,
        events,
        store: None,
        transport: Some(transport),
    })
}

fn line(clock: &MonoClock, at: std::time::Instant, what: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{} {what}", clock.ns(at));
    let _ = out.flush();
}

fn now(clock: &MonoClock, what: std::fmt::Arguments<'_>) {
    line(clock, std::time::Instant::now(), what)
}

/// Observer mode (`--observe`): an `Observer` of the election, no campaign. Prints `ready`,
/// then `observed TERM` whenever the leader it knows changes, until stdin closes or says
/// anything.
async fn observe(args: &Args, clock: MonoClock) -> Result<(), String> {
    let url = args.store.as_deref().ok_or("--observe needs --store")?;
    let election = ElectionName::new(args.election.as_deref().unwrap_or("bench"))
        .map_err(|e| e.to_string())?;
    let store = store(url, args).await?;
    let observer =
        elect_core::Observer::start(store.clone(), election).map_err(|e| e.to_string())?;
    let mut leader = observer.watch();
    now(&clock, format_args!("ready"));
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let mut seen = None;
    loop {
        tokio::select! {
            changed = leader.changed() => {
                if changed.is_err() {
                    break;
                }
                let term = leader.borrow_and_update().as_ref().map(|info| info.term);
                if let Some(new) = term.filter(|t| Some(*t) != seen) {
                    seen = Some(new);
                    now(&clock, format_args!("observed {new}"));
                }
            }
            _ = stdin.next_line() => break,
        }
    }
    drop(observer);
    store.close().await;
    Ok(())
}

/// Balance mode: one `Shards` in `n` elections `PREFIX.0` … with `balance(PREFIX.seats, k)`.
/// Prints `ready`, then every 100 ms `share LEADING RESIGNED LOST`, until stdin closes or says
/// `exit`; then it shuts down (releasing everything) and prints `stopped`.
async fn balance(args: &Args, n: usize, k: usize, clock: MonoClock) -> Result<(), String> {
    use elect_core::shards::{ShardEvent, Shards};
    use elect_core::StepDown;
    let e = |e: elect_core::Error| e.to_string();
    let url = args.store.as_deref().ok_or("--balance needs --store")?;
    let prefix = args.election.as_deref().unwrap_or("bench");
    let names = (0..n)
        .map(|i| ElectionName::new(format!("{prefix}.{i}")))
        .collect::<Result<Vec<_>, _>>()
        .map_err(e)?;
    let seats = ElectionName::new(format!("{prefix}.seats")).map_err(e)?;
    let store = coordinator(url, args)
        .await?
        .batch_store()
        .ok_or("--balance: this coordinator does not batch")?;
    let shards = Shards::builder(store, CandidateId::generate())
        .ttl(Duration::from_millis(args.ttl_ms))
        .balance(seats, k)
        .start(names)
        .map_err(e)?;
    let mut events = shards.events();
    now(&clock, format_args!("ready"));
    let (mut resigned, mut lost) = (0u64, 0u64);
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                loop {
                    match events.try_recv() {
                        Ok(ShardEvent::SteppedDown { reason, .. }) => match reason {
                            StepDown::Resigned => resigned += 1,
                            _ => lost += 1,
                        },
                        Ok(_) => {}
                        Err(broadcast::error::TryRecvError::Lagged(missed)) => {
                            return Err(format!("balance: {missed} events missed"));
                        }
                        Err(_) => break,
                    }
                }
                let leading = shards.leaders().len();
                now(&clock, format_args!("share {leading} {resigned} {lost}"));
            }
            command = stdin.next_line() => match command {
                Ok(Some(c)) if c.trim() != "exit" => {}
                _ => break,
            },
        }
    }
    let _ = shards.shutdown().await;
    now(&clock, format_args!("stopped"));
    Ok(())
}

/// Scale mode: one store, `n` elections `PREFIX.0` … `PREFIX.{n-1}`, an elector each (through
/// `Batched` with `--batched`) or all in one `Shards` (`--shards`). Prints `baseline` once
/// connected (before any election starts), then `leading K` every second.
async fn scale(args: &Args, n: usize, clock: MonoClock) -> Result<(), String> {
    let e = |e: elect_core::Error| e.to_string();
    let url = args.store.as_deref().ok_or("--elections needs --store")?;
    let prefix = args.election.as_deref().unwrap_or("bench");
    let names = (0..n)
        .map(|i| ElectionName::new(format!("{prefix}.{i}")))
        .collect::<Result<Vec<_>, _>>()
        .map_err(e)?;
    let ttl = Duration::from_millis(args.ttl_ms);
    let leading: Box<dyn Fn() -> usize>;
    let stop: std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>;
    if args.shards {
        let store = coordinator(url, args)
            .await?
            .batch_store()
            .ok_or("--shards: this coordinator does not batch")?;
        now(&clock, format_args!("baseline"));
        let id = elect_core::CandidateId::generate();
        let shards = std::rc::Rc::new(
            elect_core::shards::Shards::builder(store, id)
                .ttl(ttl)
                .start(names)
                .map_err(e)?,
        );
        let s = shards.clone();
        leading = Box::new(move || s.leaders().len());
        stop = Box::pin(async move {
            let _ = shards.shutdown().await;
        });
    } else {
        let store = if args.batched {
            coordinator(url, args)
                .await?
                .batched(elect_core::batch::BatchConfig::default())
                .ok_or("--batched: this coordinator does not batch")?
        } else {
            store(url, args).await?
        };
        now(&clock, format_args!("baseline"));
        let mut electors = Vec::with_capacity(n);
        for name in names {
            let elector = Elector::builder_dyn(store.clone(), name)
                .ttl(ttl)
                .start()
                .map_err(e)?;
            electors.push(elector);
        }
        let electors = std::rc::Rc::new(electors);
        let all = electors.clone();
        leading = Box::new(move || all.iter().filter(|e| e.is_leader()).count());
        stop = Box::pin(async move {
            for elector in electors.iter() {
                let _ = elector.shutdown().await;
            }
        });
    }
    now(&clock, format_args!("ready"));
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    // Every 10 ms until all lead (the ramp-up is timed from this line), then every second.
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let mut all = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let leading = leading();
                if all || leading == n {
                    now(&clock, format_args!("leading {leading}"));
                }
                if !all && leading == n {
                    all = true;
                    tick = tokio::time::interval(Duration::from_secs(1));
                    tick.tick().await;
                }
            }
            command = stdin.next_line() => match command {
                Ok(Some(c)) if c.trim() != "exit" => {}
                _ => break,
            },
        }
    }
    stop.await;
    now(&clock, format_args!("stopped"));
    Ok(())
}

/// Stamps trace lines with CLOCK_MONOTONIC nanoseconds, as the event lines are stamped.
struct MonoNs;

impl tracing_subscriber::fmt::time::FormatTime for MonoNs {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        write!(w, "{} pid {}", elect_bench::now_ns(), std::process::id())
    }
}

/// With `RUST_LOG` set, the library's traces go to stderr (which the bench shows with
/// `ELECT_BENCH_STDERR=1`), stamped like the event lines so the two can be merged.
fn trace_to_stderr() {
    if std::env::var_os("RUST_LOG").is_none() {
        return;
    }
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_timer(MonoNs)
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .init();
}

#[tokio::main]
async fn main() -> ExitCode {
    trace_to_stderr();
    let clock = MonoClock::new();
    let args = match parse() {
        Ok(args) => args,
        Err(why) => {
            eprintln!("candidate: {why}");
            return ExitCode::from(2);
        }
    };
    if let Some(url) = &args.counters {
        return match counters(url).await {
            Ok(n) => {
                println!("{n}");
                ExitCode::SUCCESS
            }
            Err(why) => {
                eprintln!("candidate: {why}");
                ExitCode::FAILURE
            }
        };
    }
    if let Some(url) = &args.monitor {
        let period = Duration::from_millis(args.ttl_ms);
        return match elect_bench::monitor(url, period).await {
            Ok((clients, scripts)) => {
                println!("{clients} {scripts}");
                ExitCode::SUCCESS
            }
            Err(why) => {
                eprintln!("candidate: {why}");
                ExitCode::FAILURE
            }
        };
    }
    if args.observe {
        return match observe(&args, clock).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(why) => {
                eprintln!("candidate: {why}");
                ExitCode::FAILURE
            }
        };
    }
    if let (Some(n), Some(k)) = (args.elections, args.balance) {
        return match balance(&args, n, k, clock).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(why) => {
                eprintln!("candidate: {why}");
                ExitCode::FAILURE
            }
        };
    }
    if let Some(n) = args.elections {
        return match scale(&args, n, clock).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(why) => {
                eprintln!("candidate: {why}");
                ExitCode::FAILURE
            }
        };
    }
    let Campaign {
        elector,
        mut events,
        store,
        transport,
    } = match campaign(&args).await {
        Ok(started) => started,
        Err(why) => {
            eprintln!("candidate: {why}");
            return ExitCode::FAILURE;
        }
    };
    // Before the printer starts: events wait in the receiver, so `ready` is always first.
    now(&clock, format_args!("ready"));
    // What the broken variant believes: the term from `elected` until a loss it cannot
    // ignore. With --unsafe-ignore-deadline it ignores the local deadline (`DeadlinePassed`),
    // like a client that trusts its lease until the coordinator says otherwise — the chaos
    // checker must catch that.
    let broken = args.unsafe_ignore_deadline;
    let believed: Arc<std::sync::Mutex<Option<elect_core::Term>>> = Arc::default();
    let belief = believed.clone();
    let printer = tokio::spawn(async move {
        while let Ok(event) = events.recv().await {
            match event {
                Event::Elected { term, at } => {
                    *belief.lock().unwrap_or_else(|p| p.into_inner()) = Some(term);
                    line(&clock, at.into_std(), format_args!("elected {term}"))
                }
                Event::SteppedDown {
                    reason: elect_core::StepDown::DeadlinePassed,
                    ..
                } if broken => {}
                Event::SteppedDown { term, at, reason } => {
                    *belief.lock().unwrap_or_else(|p| p.into_inner()) = None;
                    line(
                        &clock,
                        at.into_std(),
                        format_args!("lost {term} {reason:?}"),
                    )
                }
                // A follower learned of a new leader (the feed's push, or raft's heartbeat).
                Event::LeaderObserved(info) => now(&clock, format_args!("observed {}", info.term)),
                Event::Error(e) => now(
                    &clock,
                    format_args!("error {}", e.to_string().replace('\n', " ")),
                ),
                Event::Stopped => {
                    now(&clock, format_args!("stopped"));
                    return;
                }
                _ => {}
            }
        }
    });
    // The leader's work every `work_ms`, only while it leads: a `work` line stamped with the
    // instant leadership was checked (before the deadline, by `LeaderGuard::deadline`), then,
    // with --fence, a write of the term to the fenced resource (`fenced <term> ok|stale`).
    let worker = args.work_ms.map(|ms| {
        let leadership = elector.watch();
        let id = args.id.clone().or(args.raft_id.clone()).unwrap_or_default();
        let fence = args.fence.clone();
        let register = args.register.clone();
        let gap = Duration::from_millis(args.rmw_gap_ms);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(ms));
            let mut fence_conn = None;
            loop {
                tick.tick().await;
                let checked = std::time::Instant::now();
                let term = if broken {
                    *believed.lock().unwrap_or_else(|p| p.into_inner())
                } else {
                    let state = leadership.borrow();
                    state
                        .guard()
                        .filter(|g| !g.token().is_cancelled() && checked < g.deadline().into_std())
                        .map(|g| g.term())
                };
                let Some(term) = term else { continue };
                line(&clock, checked, format_args!("work {term}"));
                if let Some(addr) = &fence {
                    let verdict = fence_write(&mut fence_conn, addr, &id, term.0).await;
                    now(&clock, format_args!("fenced {term} {verdict}"));
                }
                if let Some(addr) = &register {
                    let verdict = increment(&mut fence_conn, addr, &id, term.0, gap).await;
                    now(&clock, format_args!("incremented {term} {verdict}"));
                }
            }
        })
    });
    let etcd = args
        .store
        .as_deref()
        .is_some_and(|url| url.starts_with("etcd"));
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(command)) = stdin.next_line().await {
        match command.trim() {
            "resign" => {
                let _ = elector.resign().await;
            }
            // etcd reports a lease's time to live in whole seconds: the holder's own lower
            // bound of the server-side expiry instead, `t_send + TTL` of its last successful
            // keep-alive (its deadline plus the ρ·TTL + ε it keeps back). etcd's leader applied
            // the keep-alive after `t_send`, so the lease ends later by at most the keep-alive's
            // round trip (a slack computed from it is an upper bound).
            "lease" if etcd => {
                let leadership = elector.watch();
                let state = leadership.borrow();
                match state.guard() {
                    Some(guard) => {
                        let ttl = Duration::from_millis(args.ttl_ms);
                        let kept = ttl.mul_f64(DRIFT) + MARGIN;
                        let end = guard.deadline().into_std() + kept;
                        let left = end.saturating_duration_since(std::time::Instant::now());
                        now(
                            &clock,
                            format_args!("lease {} {}", left.as_nanos(), guard.term()),
                        )
                    }
                    None => now(&clock, format_args!("lease none")),
                }
            }
            // The lease as the coordinator reports it right now.
            "lease" => match &store {
                Some(store) => match store.leader(elector.election()).await {
                    Ok(Some(info)) => now(
                        &clock,
                        format_args!("lease {} {}", info.remaining.as_nanos(), info.term),
                    ),
                    Ok(None) => now(&clock, format_args!("lease none")),
                    Err(e) => now(&clock, format_args!("error {e}")),
                },
                None => now(&clock, format_args!("lease none")),
            },
            "stats" => {
                let sent = transport.as_ref().map_or(0, |t| t.sent_messages());
                now(&clock, format_args!("stats {sent}"));
            }
            "exit" => break,
            "" => {}
            other => eprintln!("candidate: unknown command {other:?}"),
        }
    }
    if let Some(worker) = worker {
        worker.abort();
    }
    let _ = elector.shutdown().await;
    let _ = printer.await;
    ExitCode::SUCCESS
}

/// Writes `<id> <term>` to the fenced resource and returns its verdict (`ok`, `stale`, or
/// `unreachable`).
async fn fence_write(conn: &mut Option<Resource>, addr: &str, id: &str, term: u64) -> &'static str {
    verdict(ask(conn, addr, &format!("{id} {term}")).await)
}

/// The Jepsen lock workload's step: reads the register, works for `gap`, writes back the value
/// read plus one, both stamped with `term`; the write's verdict (`stale` when the read was
/// refused).
async fn increment(
    conn: &mut Option<Resource>,
    addr: &str,
    id: &str,
    term: u64,
    gap: Duration,
) -> &'static str {
    let reply = ask(conn, addr, &format!("read {id} {term}")).await;
    let Some(read) = reply
        .as_deref()
        .and_then(|r| r.strip_prefix("value "))
        .and_then(|v| v.parse::<u64>().ok())
    else {
        return verdict(reply);
    };
    tokio::time::sleep(gap).await;
    let write = format!("write {id} {term} {read} {}", read + 1);
    verdict(ask(conn, addr, &write).await)
}

fn verdict(reply: Option<String>) -> &'static str {
    match reply.as_deref() {
        Some("ok") => "ok",
        Some("stale") => "stale",
        _ => "unreachable",
    }
}

/// A connection to the fenced resource.
type Resource = tokio::io::Lines<BufReader<tokio::net::TcpStream>>;

/// One request line to the resource and its reply; `None` when it cannot be reached (the
/// connection is made again on the next request).
async fn ask(conn: &mut Option<Resource>, addr: &str, request: &str) -> Option<String> {
    use tokio::io::AsyncWriteExt;
    if conn.is_none() {
        *conn = Some(BufReader::new(tokio::net::TcpStream::connect(addr).await.ok()?).lines());
    }
    let lines = conn.as_mut()?;
    let sent = lines
        .get_mut()
        .get_mut()
        .write_all(format!("{request}\n").as_bytes())
        .await;
    let reply = match sent {
        Ok(()) => lines.next_line().await,
        Err(e) => Err(e),
    };
    match reply {
        Ok(Some(r)) => Some(r),
        _ => {
            *conn = None;
            None
        }
    }
}
