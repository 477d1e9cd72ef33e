//! rslock (Redlock) used as a lease, speaking the line protocol of elect's `candidate` binary
//! (see `bench/src/lib.rs`), so `cargo xtask bench` can time it with the same harness.
//!
//! How it campaigns, as a careful rslock user would:
//! - follower: one `lock(resource, ttl)` attempt (retry count 1) every `--poll-ms` (100 ms);
//! - leader: `extend` every TTL/3; leadership ends when an extend fails or when the lock's
//!   validity (rslock's own `validity_time`, measured from before the request) runs out;
//!   work is done only before that validity deadline;
//! - resign: `unlock`, then sit out one TTL before campaigning again.
//!
//! Redlock has no fencing token: `elected` reports term 0.
//!
//! ```text
//! rslock-candidate --store redis://HOST:PORT --election NAME [--ttl MS] [--poll-ms MS] [--work-ms MS]
//! ```

use std::io::Write;
use std::time::{Duration, Instant};

use rslock::{Lock, LockManager};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

fn now_ns() -> u128 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32).as_nanos()
}

/// `at` (an `Instant`, CLOCK_MONOTONIC on Linux) in raw nanoseconds.
fn ns_of(at: Instant) -> u128 {
    let (now, now_i) = (now_ns(), Instant::now());
    match now_i.checked_duration_since(at) {
        Some(ago) => now.saturating_sub(ago.as_nanos()),
        None => now + at.duration_since(now_i).as_nanos(),
    }
}

fn out(ns: u128, what: std::fmt::Arguments<'_>) {
    let mut o = std::io::stdout().lock();
    let _ = writeln!(o, "{ns} {what}");
    let _ = o.flush();
}

struct Args {
    store: String,
    election: String,
    ttl: Duration,
    poll: Duration,
    work: Option<Duration>,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        store: String::new(),
        election: "bench".into(),
        ttl: Duration::from_millis(2000),
        poll: Duration::from_millis(100),
        work: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v = it.next().ok_or(format!("{flag} needs a value"))?;
        let ms = || {
            v.parse::<u64>()
                .map(Duration::from_millis)
                .map_err(|_| format!("{flag} takes milliseconds"))
        };
        match flag.as_str() {
            "--store" => a.store = v.clone(),
            "--election" => a.election = v.clone(),
            "--ttl" => a.ttl = ms()?,
            "--poll-ms" => a.poll = ms()?,
            "--work-ms" => a.work = Some(ms()?),
            "--id" => {}
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if a.store.is_empty() {
        return Err("--store is needed".into());
    }
    Ok(a)
}

enum Command {
    Resign,
    Lease,
    Exit,
}

#[tokio::main]
async fn main() {
    let args = match parse() {
        Ok(a) => a,
        Err(why) => {
            eprintln!("rslock-candidate: {why}");
            std::process::exit(2);
        }
    };
    let mut manager = LockManager::new(vec![args.store.clone()]);
    manager.set_retry(1, Duration::from_millis(1));
    let redis = match redis::Client::open(args.store.as_str()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("rslock-candidate: {e}");
            std::process::exit(1);
        }
    };
    let mut conn = match redis.get_multiplexed_async_connection().await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("rslock-candidate: {e}");
            std::process::exit(1);
        }
    };
    let resource = format!("rslock:{}", args.election).into_bytes();
    let (tx, mut commands) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut stdin = BufReader::new(tokio::io::stdin()).lines();
        loop {
            let c = match stdin.next_line().await {
                Ok(Some(l)) => match l.trim() {
                    "resign" => Command::Resign,
                    "lease" => Command::Lease,
                    "exit" => Command::Exit,
                    _ => continue,
                },
                _ => Command::Exit,
            };
            let exit = matches!(c, Command::Exit);
            if tx.send(c).is_err() || exit {
                return;
            }
        }
    });
    out(now_ns(), format_args!("ready"));
    // (lock, validity deadline, next extend)
    let mut held: Option<(Lock, Instant, Instant)> = None;
    let mut sit_out_until = Instant::now();
    let mut next_work = Instant::now();
    loop {
        let now = Instant::now();
        let wake = match &held {
            Some((_, deadline, extend_at)) => {
                let mut w = (*deadline).min(*extend_at);
                if args.work.is_some() {
                    w = w.min(next_work);
                }
                w
            }
            None => now + args.poll,
        };
        tokio::select! {
            _ = tokio::time::sleep_until(wake.max(now).into()) => {}
            c = commands.recv() => match c {
                Some(Command::Resign) => {
                    if let Some((lock, _, _)) = held.take() {
                        manager.unlock(&lock).await;
                        out(now_ns(), format_args!("lost 0 Resigned"));
                        sit_out_until = Instant::now() + args.ttl;
                    }
                    continue;
                }
                Some(Command::Lease) => {
                    let pttl: redis::RedisResult<i64> =
                        redis::cmd("PTTL").arg(&resource).query_async(&mut conn).await;
                    match pttl {
                        Ok(ms) if ms >= 0 => out(now_ns(), format_args!("lease {} 0", ms as u128 * 1_000_000)),
                        _ => out(now_ns(), format_args!("lease none")),
                    }
                    continue;
                }
                Some(Command::Exit) | None => break,
            }
        }
        let now = Instant::now();
        match held.take() {
            Some((lock, deadline, extend_at)) => {
                if now >= deadline {
                    out(ns_of(deadline), format_args!("lost 0 Expired"));
                    continue;
                }
                if now >= extend_at {
                    let sent = Instant::now();
                    match manager.extend(&lock, args.ttl).await {
                        Ok(extended) => {
                            let d = sent + Duration::from_millis(extended.validity_time as u64);
                            held = Some((extended, d, sent + args.ttl / 3));
                        }
                        Err(_) => {
                            out(ns_of(Instant::now().min(deadline)), format_args!("lost 0 Refused"));
                        }
                    }
                    continue;
                }
                if let Some(work) = args.work {
                    if now >= next_work {
                        out(now_ns(), format_args!("work 0"));
                        next_work = now + work;
                    }
                }
                held = Some((lock, deadline, extend_at));
            }
            None if now >= sit_out_until => {
                let sent = Instant::now();
                if let Ok(lock) = manager.lock(resource.as_slice(), args.ttl).await {
                    let deadline = sent + Duration::from_millis(lock.validity_time as u64);
                    out(now_ns(), format_args!("elected 0"));
                    next_work = Instant::now();
                    held = Some((lock, deadline, sent + args.ttl / 3));
                }
            }
            None => {}
        }
    }
    if let Some((lock, _, _)) = held {
        manager.unlock(&lock).await;
        out(now_ns(), format_args!("lost 0 Resigned"));
    }
    out(now_ns(), format_args!("stopped"));
}
