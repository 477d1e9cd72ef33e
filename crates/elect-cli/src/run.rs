//! `elect run`: campaign, run the program while leading, stop it when leadership ends.
//!
//! The program runs in a process group of its own, led by a watchdog process
//! ([`crate::watchdog`]) that stops the whole group at the local safety deadline unless this
//! process keeps handing it later deadlines. Whatever ends a run — the program's exit, a lost
//! leadership, a signal — the whole group is killed before leadership is released, so nothing
//! the program started outlives the run.

use std::process::Stdio;
use std::time::Duration;

use clap::Args;
use elect::{CandidateId, Elector, LeaderGuard};
use rustix::process::{Pid, Signal};
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, ChildStdin, Command};
use tokio::signal::unix::{signal, SignalKind};
use tokio::time::{sleep_until, timeout, Instant};
use tracing::{info, warn};

use crate::once::{self, Once};
use crate::raft;
use crate::store::{self, Connect, Store};
use crate::watchdog::{signal_group, to_monotonic_ns};
use crate::{duration, exit, http, Failure, Where};

/// `elect run [OPTIONS] -- PROGRAM [ARGS]...`
#[derive(Args, Debug)]
pub(crate) struct RunArgs {
    #[command(flatten)]
    where_: Where,
    /// The lease's time to live (store coordinators): how long a crashed leader keeps the
    /// election before another can lead. 10ms to 1 day (under 100ms: a LAN only).
    #[arg(long, default_value = "10s", value_parser = duration::parse)]
    ttl: Duration,
    /// This candidate's id (default: hostname-pid-random). Two hosts given the same id are still
    /// two candidates: one leads, the other waits.
    #[arg(long)]
    id: Option<String>,
    /// How long the program gets between SIGTERM and SIGKILL when it must stop. When renewals
    /// fail, SIGTERM comes this long before the local safety deadline, so that SIGKILL lands by
    /// the deadline: at most a third of the lease (--ttl; 300ms with raft). Default: 1s, or a
    /// quarter of the lease when that is shorter.
    #[arg(long, value_parser = duration::parse)]
    grace: Option<Duration>,
    /// When the program exits by itself, release leadership, keep campaigning and run it
    /// again the next time this candidate leads (default: exit with its status).
    #[arg(long, conflicts_with = "once")]
    restart: bool,
    /// Run the program at most once across the whole group for this election name: the first
    /// leader records it as started (then done) in the store; later leaders see the record
    /// and exit 0 (or 6 when the earlier run never recorded its end). Stores only.
    #[arg(long)]
    once: bool,
    /// A small value published with this candidate's leadership (at most 1 KiB; its address,
    /// say): `elect status`, followers' `/leader` and raft peers show it.
    #[arg(long)]
    value: Option<String>,
    /// Redis without persistence (or with snapshots older than the last grant): after a
    /// restart of the server, grant nothing vacant until a TTL has passed, so a leader that
    /// the restart forgot stops believing first. Redis only.
    #[arg(long)]
    restart_quarantine: bool,
    /// Redis behind Sentinels or in a Cluster: replicas that must acknowledge each grant and
    /// renewal (Redis WAIT) before this host believes it leads, so a failover cannot promote
    /// a replica that lacks the lease. Redis only.
    #[arg(long, value_name = "N")]
    wait_replicas: Option<u32>,
    /// How long --wait-replicas waits for the acknowledgements.
    #[arg(long, default_value = "100ms", value_parser = duration::parse, requires = "wait_replicas")]
    wait_timeout: Duration,
    /// PostgreSQL behind a pooler in transaction mode (PgBouncer), which cannot keep a
    /// listening session: LISTEN for hand-over notices on a connection of its own to this
    /// URL (the server itself, or a session-mode pool), or `off` for none (waiting hosts then
    /// wake when the lease they were told of expires). PostgreSQL only.
    #[arg(
        long,
        value_name = "URL|off",
        env = "ELECT_PG_LISTEN",
        hide_env_values = true
    )]
    pg_listen: Option<String>,
    /// Serve /healthz, /readyz, /leader (JSON) and /metrics (Prometheus text) on HOST:PORT (a
    /// port alone: 127.0.0.1:PORT) while elect runs.
    #[arg(long, value_name = "ADDR", value_parser = http::parse_addr)]
    http: Option<std::net::SocketAddr>,
    /// When /readyz says ready: `any` (whenever healthy) or `leader` (only while this host
    /// leads).
    #[arg(long, value_enum, default_value = "any", requires = "http")]
    ready_when: http::ReadyWhen,
    /// The program and its arguments, after `--`.
    #[arg(required = true, last = true, value_name = "PROGRAM")]
    program: Vec<String>,
}

/// How a program run ended.
enum Ended {
    /// It exited by itself, with this status (128 + signal when a signal ended it).
    Exited(u8),
    /// Leadership ended first, or renewals were overdue; the program was stopped.
    Lost,
    /// elect got a signal; it was passed on, and the program then ended with this status.
    Signalled(u8),
}

fn status_code(status: std::process::ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => code.clamp(0, 255) as u8,
        (None, Some(sig)) => (128 + sig).clamp(0, 255) as u8,
        _ => 1,
    }
}

/// The grace period for a lease of `lease` (see `--grace`).
fn grace(asked: Option<Duration>, lease: Duration) -> Result<Duration, Failure> {
    let most = lease / 3;
    match asked {
        None => Ok(Duration::from_secs(1).min(lease / 4)),
        Some(grace) if grace <= most => Ok(grace),
        Some(grace) => Err(Failure::config(format!(
            "--grace {}ms is more than a third of the lease ({}ms): with renewals failing, SIGTERM \
             must come early enough for SIGKILL to land by the local deadline; use at most {}ms",
            grace.as_millis(),
            lease.as_millis(),
            most.as_millis()
        ))),
    }
}

/// The signals elect handles: each is passed on to the program, then elect releases and exits.
struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Result<Signals, Failure> {
        let on = |kind| signal(kind).map_err(|e| Failure::config(format!("signals: {e}")));
        Ok(Signals {
            interrupt: on(SignalKind::interrupt())?,
            terminate: on(SignalKind::terminate())?,
            // A closed terminal or ssh session: handled like SIGTERM, so the lease is released
            // and nothing is orphaned.
            hangup: on(SignalKind::hangup())?,
        })
    }

    /// The next signal: what to pass on to the program, and the status elect exits with when
    /// no program runs. Cancellation safe.
    async fn recv(&mut self) -> (Signal, u8) {
        tokio::select! {
            _ = self.interrupt.recv() => (Signal::INT, 128 + 2),
            _ = self.terminate.recv() => (Signal::TERM, 128 + 15),
            _ = self.hangup.recv() => (Signal::TERM, 128 + 1),
        }
    }
}

/// The watchdog process of one run, and the pipe that keeps it from stopping the program.
struct Watchdog {
    child: Child,
    stdin: Option<ChildStdin>,
    /// Its pid, which is also the process group it leads and the program joins.
    group: Pid,
}

impl Watchdog {
    /// Starts a watchdog armed with `deadline`: it leads a new process group.
    fn start(deadline: Instant, grace: Duration) -> Result<Watchdog, Failure> {
        let failed = |e: &dyn std::fmt::Display| Failure {
            code: exit::SPAWN,
            message: format!("cannot start the watchdog: {e}"),
        };
        // This very binary, whatever its path (it may have been replaced on disk since);
        // without /proc, the path it was started from.
        let proc_exe = std::path::Path::new("/proc/self/exe");
        let exe = if proc_exe.exists() {
            proc_exe.to_path_buf()
        } else {
            std::env::current_exe().map_err(|e| failed(&e))?
        };
        let mut child = Command::new(exe)
            .arg("__watchdog")
            .arg(to_monotonic_ns(deadline).to_string())
            .arg(grace.as_nanos().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|e| failed(&e))?;
        let group = child
            .id()
            .and_then(|id| Pid::from_raw(id as i32))
            .ok_or_else(|| failed(&"it exited at once"))?;
        Ok(Watchdog {
            stdin: child.stdin.take(),
            child,
            group,
        })
    }

    /// Moves the watchdog's deadline (after a renewal).
    async fn arm(&mut self, deadline: Instant) {
        if let Some(stdin) = &mut self.stdin {
            let line = format!("deadline {}\n", to_monotonic_ns(deadline));
            if !matches!(
                timeout(Duration::from_millis(100), stdin.write_all(line.as_bytes())).await,
                Ok(Ok(()))
            ) {
                // It keeps the old deadline: the program is stopped early, never late.
                warn!("could not hand the watchdog a new deadline");
            }
        }
    }

    /// Ends the watchdog: with its pipe closed it kills what is left of the group and exits.
    async fn finish(mut self) {
        drop(self.stdin.take());
        let _ = timeout(Duration::from_secs(1), self.child.wait()).await;
    }
}

fn spawn_program(
    args: &RunArgs,
    election: &str,
    candidate: &str,
    guard: &LeaderGuard,
    group: Pid,
) -> Result<Child, Failure> {
    let mut command = Command::new(&args.program[0]);
    command
        .args(&args.program[1..])
        .env("ELECT_ELECTION", election)
        .env("ELECT_CANDIDATE", candidate)
        .env("ELECT_TERM", guard.term().to_string())
        // The store URL may hold a password; the program has no use for it.
        .env_remove("ELECT_STORE")
        .stdin(Stdio::null())
        .process_group(group.as_raw_nonzero().get())
        .kill_on_drop(true);
    // If elect dies (even by SIGKILL) the program must not outlive it as a leader nobody
    // watches: the kernel sends it SIGKILL (PR_SET_PDEATHSIG; the runtime has one thread,
    // the one that forks, so "parent thread exits" means elect exits). The watchdog kills the
    // rest of the group.
    pdeathsig::install(&mut command);
    command.spawn().map_err(|e| Failure {
        code: exit::SPAWN,
        message: format!("cannot start {:?}: {e}", args.program[0]),
    })
}

mod pdeathsig {
    #![allow(unsafe_code)]

    /// Runs `prctl(PR_SET_PDEATHSIG, SIGKILL)` in the child between fork and exec. The call
    /// is async-signal-safe (a single syscall).
    pub(super) fn install(command: &mut tokio::process::Command) {
        // SAFETY: the closure only makes one async-signal-safe syscall and allocates nothing.
        unsafe {
            command.pre_exec(|| {
                rustix::process::set_parent_process_death_signal(Some(
                    rustix::process::Signal::KILL,
                ))
                .map_err(std::io::Error::from)
            });
        }
    }
}

pub(crate) async fn run(args: RunArgs) -> Result<u8, Failure> {
    let election = store::election(&args.where_.election)?;
    if args.wait_replicas.is_some() && !args.where_.is_redis() {
        return Err(Failure::config(
            "--wait-replicas is for Redis stores (redis://, rediss://, redis-cluster://, redis-sentinel://)",
        ));
    }
    if args.pg_listen.is_some() && !args.where_.is_postgres() {
        return Err(Failure::config(
            "--pg-listen is for PostgreSQL stores (postgres://, postgresql://)",
        ));
    }
    if args.restart_quarantine && !args.where_.is_redis() {
        return Err(Failure::config(
            "--restart-quarantine is for Redis stores (redis://, rediss://, redis-cluster://, redis-sentinel://)",
        ));
    }
    // Checked before anything connects: a bad flag fails at once.
    let lease = match &args.where_.store {
        Some(_) => args.ttl,
        None => raft::lease(&args.where_),
    };
    let grace = grace(args.grace, lease)?;
    // Before any elector exists, so that no metric is recorded before the recorder.
    let metrics = args.http.map(|_| http::install_recorder()).transpose()?;
    let value = args
        .value
        .as_deref()
        .map(elect::LeaderValue::new)
        .transpose()
        .map_err(|e| Failure::from_error("--value", &e))?;
    let (elector, store, candidate) = match &args.where_.store {
        Some(url) => {
            let options = Connect {
                restart_quarantine: args.restart_quarantine,
                create_missing_table: true,
                tls: args.where_.tls.files(),
                wait_for_replicas: args.wait_replicas.map(|n| (n, args.wait_timeout)),
                postgres_listen: args.pg_listen.as_deref().map(|listen| match listen {
                    "off" => elect::PostgresListen::Off,
                    url => elect::PostgresListen::Url(url.to_owned()),
                }),
            };
            let store = store::connect(url, options).await?;
            let candidate = store::candidate(args.id.as_deref())?;
            let mut builder = Elector::builder_dyn(store.lease_store(), election.clone())
                .candidate(candidate.clone())
                .ttl(args.ttl);
            if let Some(value) = value {
                builder = builder.value(value);
            }
            let elector = builder
                .start()
                .map_err(|e| Failure::from_error("elector", &e))?;
            (elector, Some(store), candidate)
        }
        None => {
            if args.once {
                return Err(Failure::config(
                    "--once needs a shared store (redis://, mysql://, mongodb://, postgres://, etcd://): raft peers keep no record",
                ));
            }
            let (elector, id) = raft::raft(&args.where_, value).await?;
            (elector, None, id)
        }
    };
    let server = match (args.http, metrics) {
        (Some(addr), Some(metrics)) => {
            Some(http::serve(addr, elector.clone(), args.ready_when, metrics).await?)
        }
        _ => None,
    };
    let result = campaign(&args, grace, &elector, store.as_ref(), &candidate).await;
    if let Some(server) = server {
        server.abort();
    }
    // Hand over (release) and stop; then let the drivers close while the runtime runs.
    if let Err(e) = elector.shutdown().await {
        warn!(error = %e, "releasing the lease failed; it expires by itself");
    }
    if let Some(store) = store {
        store.close().await;
    }
    result
}

async fn campaign(
    args: &RunArgs,
    grace: Duration,
    elector: &Elector,
    store: Option<&Store>,
    candidate: &CandidateId,
) -> Result<u8, Failure> {
    let election = elector.election().to_string();
    let mut signals = Signals::new()?;
    loop {
        let guard = tokio::select! {
            guard = elector.leading() => guard.map_err(|e| Failure::from_error("campaign", &e))?,
            (_, status) = signals.recv() => return Ok(status),
        };
        info!(term = %guard.term(), "elected");
        if args.once {
            let store = store.ok_or_else(|| Failure::config("--once needs a store"))?;
            match once::claim(store, elector.election(), candidate, guard.term()).await? {
                Once::Claimed => {}
                Once::Done { term, status } => {
                    eprintln!("elect: {election}: already ran in term {term} (exit status {status}); nothing to do");
                    return Ok(0);
                }
                Once::Started { term, candidate } => {
                    eprintln!(
                        "elect: {election}: {candidate} started it in term {term} but its end was never recorded; not running it again"
                    );
                    return Ok(exit::ONCE_UNKNOWN);
                }
            }
        }
        let ended = match supervise(args, grace, &guard, &election, candidate, &mut signals).await {
            Ok(ended) => ended,
            Err(failure) => {
                if let (true, Some(store), exit::SPAWN) = (args.once, store, failure.code) {
                    // Nothing ran: the claim must not keep every later leader from running it.
                    once::unclaim(store, elector.election(), candidate, guard.term()).await?;
                }
                return Err(failure);
            }
        };
        match ended {
            Ended::Exited(status) => {
                if args.once {
                    if let Some(store) = store {
                        once::done(store, elector.election(), guard.term(), status.into()).await?;
                    }
                    return Ok(status);
                }
                if !args.restart {
                    info!(status, "the program exited");
                    return Ok(status);
                }
                warn!(
                    status,
                    "the program exited; releasing and campaigning again (--restart)"
                );
                elector
                    .resign()
                    .await
                    .map_err(|e| Failure::from_error("resign", &e))?;
            }
            Ended::Lost if args.restart => {
                if guard.is_leading() {
                    // Stopped for overdue renewals that then came back: start afresh.
                    let _ = elector.resign().await;
                }
                warn!("leadership lost; campaigning again (--restart)");
            }
            Ended::Lost => return Ok(exit::LOST),
            Ended::Signalled(status) => return Ok(status),
        }
    }
}

/// Runs the program for one leadership: spawns the watchdog and the program in its group,
/// keeps the watchdog's deadline current, stops the group when leadership ends (at once) or
/// renewals are overdue (SIGTERM `grace` before the deadline, SIGKILL by it), passes signals
/// on, and kills the whole group before returning.
async fn supervise(
    args: &RunArgs,
    grace: Duration,
    guard: &LeaderGuard,
    election: &str,
    candidate: &CandidateId,
    signals: &mut Signals,
) -> Result<Ended, Failure> {
    let mut deadlines = guard.deadline_watch();
    let mut deadline = *deadlines.borrow_and_update();
    let mut watchdog = Watchdog::start(deadline, grace)?;
    let group = watchdog.group;
    let mut child = match spawn_program(args, election, candidate.as_str(), guard, group) {
        Ok(child) => child,
        Err(failure) => {
            watchdog.finish().await;
            return Err(failure);
        }
    };
    let mut renewing = true;
    let mut overdue: Option<Instant> = None;
    let mut killed = false;
    let ended = loop {
        // SIGTERM `grace` before the deadline if no renewal moves it; SIGKILL `grace` after
        // that, and by the deadline at the latest (where `lost` fires).
        let term_at = deadline.checked_sub(grace).unwrap_or(deadline);
        let kill_at = overdue.map_or(deadline, |at| (at + grace).min(deadline));
        tokio::select! {
            biased;
            _ = guard.lost() => {
                // Another host may lead already (a refused renewal), or will at the deadline.
                signal_group(group, Signal::KILL);
                warn!(term = %guard.term(), reason = ?guard.reason(), "leadership lost; the program was killed");
                break Ended::Lost;
            }
            status = child.wait() => {
                let status = status.map(status_code).unwrap_or(1);
                break if overdue.is_some() { Ended::Lost } else { Ended::Exited(status) };
            }
            changed = deadlines.changed(), if renewing => match changed {
                Ok(()) => {
                    deadline = *deadlines.borrow_and_update();
                    watchdog.arm(deadline).await;
                }
                Err(_) => renewing = false,
            },
            _ = sleep_until(term_at), if overdue.is_none() => {
                warn!(?grace, "renewals are overdue; stopping the program before the local deadline");
                signal_group(group, Signal::TERM);
                overdue = Some(Instant::now());
            }
            _ = sleep_until(kill_at), if overdue.is_some() && !killed => {
                signal_group(group, Signal::KILL);
                killed = true;
            }
            _ = watchdog.child.wait() => {
                // Only the group's SIGKILL ends it early; if anything else did, nobody would
                // stop the program at the deadline: stop it now.
                signal_group(group, Signal::KILL);
                warn!("the watchdog died; the program was killed");
                break Ended::Lost;
            }
            (pass_on, _) = signals.recv() => {
                signal_group(group, pass_on);
                let status = tokio::select! {
                    biased;
                    _ = guard.lost() => None,
                    status = timeout(grace, child.wait()) => status.ok().and_then(Result::ok),
                };
                signal_group(group, Signal::KILL);
                let status = match status {
                    Some(status) => status_code(status),
                    None => child.wait().await.map(status_code).unwrap_or(137),
                };
                break Ended::Signalled(status);
            }
        }
    };
    // Whatever ended the run, nothing it started survives: the program's children too.
    signal_group(group, Signal::KILL);
    let _ = child.wait().await;
    watchdog.finish().await;
    Ok(ended)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grace_fits_in_a_third_of_the_lease() {
        let s = Duration::from_secs;
        assert_eq!(grace(None, s(10)).unwrap(), s(1));
        assert_eq!(grace(None, s(2)).unwrap(), Duration::from_millis(500));
        assert_eq!(
            grace(None, Duration::from_millis(300)).unwrap(),
            Duration::from_millis(75)
        );
        assert_eq!(grace(Some(s(3)), s(10)).unwrap(), s(3));
        assert_eq!(grace(Some(Duration::ZERO), s(10)).unwrap(), Duration::ZERO);
        let refused = grace(Some(s(1)), s(2)).unwrap_err();
        assert_eq!(refused.code, exit::CONFIG);
        assert!(
            refused.message.contains("at most 666ms"),
            "{}",
            refused.message
        );
    }
}
