//! The `distributed-lock` crate's PostgreSQL lock (distributed-lock-postgres, a session-level
//! `pg_try_advisory_lock` on a pooled connection the handle keeps) used for leader election,
//! speaking the line protocol of elect's `candidate` binary (see `bench/src/lib.rs`), so
//! `cargo xtask bench` times it with the same harness. It is the PostgreSQL lock a Rust
//! service picks from crates.io today.
//!
//! How it campaigns, as its documentation suggests:
//! - follower: one `try_acquire()` every `--poll-ms` (100 ms);
//! - leader: holds the handle and works until its `lost_token()` says the lock was lost, or
//!   until it resigns (`release()`, then sits out one TTL). In 0.2.0 the handle's monitor is
//!   an empty task ("Monitoring is skipped as connection drop handles release"): the lost
//!   token never fires, so a leader whose connection died (and whose lock the server
//!   released to someone else) is never told. The lock is connection-bound: it is held for as
//!   long as the connection lives, whatever the holder does, and has no TTL and no fencing
//!   token (`elected` reports term 0).
//!
//! ```text
//! dlock-candidate --store postgres://USER@HOST:PORT/DB --election NAME [--ttl MS] [--poll-ms MS] [--work-ms MS]
//! ```

use std::io::Write;
use std::time::{Duration, Instant};

use distributed_lock_core::traits::{DistributedLock, LockHandle, LockProvider};
use distributed_lock_postgres::PostgresLockProvider;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

fn now_ns() -> u128 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32).as_nanos()
}

fn out(what: std::fmt::Arguments<'_>) {
    let mut o = std::io::stdout().lock();
    let _ = writeln!(o, "{} {what}", now_ns());
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
            eprintln!("dlock-candidate: {why}");
            std::process::exit(2);
        }
    };
    let provider = match PostgresLockProvider::new(args.store.clone()).await {
        Ok(p) => p,
        Err(e) => {
            eprintln!("dlock-candidate: {e}");
            std::process::exit(1);
        }
    };
    let lock = provider.create_lock(&format!("elect-bench:{}", args.election));
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
    out(format_args!("ready"));
    let mut held = None;
    let mut sit_out_until = Instant::now();
    let mut next_work = Instant::now();
    loop {
        let now = Instant::now();
        let wake = match (&held, args.work) {
            (Some(_), Some(_)) => next_work,
            _ => now + args.poll,
        };
        tokio::select! {
            _ = tokio::time::sleep_until(wake.max(now).into()) => {}
            c = commands.recv() => match c {
                Some(Command::Resign) => {
                    if let Some(handle) = held.take() {
                        let _ = LockHandle::release(handle).await;
                        out(format_args!("lost 0 Resigned"));
                        sit_out_until = Instant::now() + args.ttl;
                    }
                    continue;
                }
                // No lease: the lock lives as long as its connection.
                Some(Command::Lease) => {
                    out(format_args!("lease none"));
                    continue;
                }
                Some(Command::Exit) | None => break,
            }
        }
        let now = Instant::now();
        match held.take() {
            Some(handle) => {
                if *LockHandle::lost_token(&handle).borrow() {
                    out(format_args!("lost 0 Lost"));
                    continue;
                }
                if let Some(work) = args.work {
                    if now >= next_work {
                        out(format_args!("work 0"));
                        next_work = now + work;
                    }
                }
                held = Some(handle);
            }
            None if now >= sit_out_until => {
                if let Ok(Some(handle)) = lock.try_acquire().await {
                    out(format_args!("elected 0"));
                    next_work = Instant::now();
                    held = Some(handle);
                }
            }
            None => {}
        }
    }
    if let Some(handle) = held {
        let _ = LockHandle::release(handle).await;
        out(format_args!("lost 0 Resigned"));
    }
    out(format_args!("stopped"));
}
