//! `elect run`: campaign, run the program while leading, stop it when leadership ends.

use std::process::Stdio;
use std::time::Duration;

use clap::Args;
use elect_core::{Elector, LeaderGuard};
use rustix::process::{Pid, Signal};
use tokio::process::{Child, Command};
use tokio::signal::unix::{signal, SignalKind};
use tracing::{info, warn};

use crate::backend::{self, Once, Store};
use crate::{duration, exit, Failure, Where};

/// `elect run [OPTIONS] -- PROGRAM [ARGS]...`
#[derive(Args, Debug)]
pub(crate) struct RunArgs {
    #[command(flatten)]
    where_: Where,
    /// The lease's time to live (store coordinators): how long a crashed leader keeps the
    /// election before another can lead. 100ms to 1 day.
    #[arg(long, default_value = "10s", value_parser = duration::parse)]
    ttl: Duration,
    /// This candidate's id (default: hostname-pid-random).
    #[arg(long)]
    id: Option<String>,
    /// How long the program may take to exit after SIGTERM before it gets SIGKILL.
    #[arg(long, default_value = "1s", value_parser = duration::parse)]
    grace: Duration,
    /// When the program exits by itself, release leadership, keep campaigning and run it
    /// again the next time this candidate leads (default: exit with its status).
    #[arg(long, conflicts_with = "once")]
    restart: bool,
    /// Run the program at most once across the whole group for this election name: the first
    /// leader records it as started (then done) in the store; later leaders see the record
    /// and exit 0 (or 6 when the earlier run never recorded its end). Stores only.
    #[arg(long)]
    once: bool,
    /// The program and its arguments.
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "PROGRAM"
    )]
    program: Vec<String>,
}

/// How a program run ended.
enum Ended {
    /// It exited by itself, with this status (128 + signal when a signal ended it).
    Exited(u8),
    /// Leadership ended first; the program was stopped.
    Lost,
    /// elect got this signal; it was passed to the program, which then ended with the status.
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

fn send(child: &Child, sig: Signal) {
    if let Some(pid) = child.id().and_then(|id| Pid::from_raw(id as i32)) {
        let _ = rustix::process::kill_process(pid, sig);
    }
}

/// SIGTERM, then SIGKILL after `grace`; returns the exit status.
async fn stop(child: &mut Child, grace: Duration) -> u8 {
    send(child, Signal::TERM);
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(Ok(status)) => status_code(status),
        _ => {
            let _ = child.start_kill();
            child.wait().await.map(status_code).unwrap_or(137)
        }
    }
}

fn spawn(
    args: &RunArgs,
    election: &str,
    candidate: &str,
    guard: &LeaderGuard,
) -> Result<Child, Failure> {
    let mut command = Command::new(&args.program[0]);
    command
        .args(&args.program[1..])
        .env("ELECT_ELECTION", election)
        .env("ELECT_CANDIDATE", candidate)
        .env("ELECT_TERM", guard.term().to_string())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    // If elect dies (even by SIGKILL) the program must not outlive it as a leader nobody
    // watches: the kernel sends it SIGKILL (PR_SET_PDEATHSIG; the runtime has one thread,
    // the one that forks, so "parent thread exits" means elect exits).
    set_parent_death_signal(&mut command);
    command.spawn().map_err(|e| Failure {
        code: exit::SPAWN,
        message: format!("cannot start {:?}: {e}", args.program[0]),
    })
}

fn set_parent_death_signal(command: &mut Command) {
    pdeathsig::install(command);
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
    let election = backend::election(&args.where_.election)?;
    let (elector, store, candidate) = match &args.where_.store {
        Some(url) => {
            let store = backend::connect(url).await?;
            let candidate = backend::candidate(args.id.as_deref())?;
            let elector = Elector::builder_dyn(store.lease_store(), election.clone())
                .candidate(candidate.clone())
                .ttl(args.ttl)
                .start()
                .map_err(|e| Failure::from_error("elector", &e))?;
            (elector, Some(store), candidate)
        }
        None => {
            if args.once {
                return Err(Failure::config(
                    "--once needs a shared store (redis://, mysql://, mongodb://): raft peers keep no record",
                ));
            }
            let (elector, id) = backend::raft(&args.where_).await?;
            (elector, None, id)
        }
    };
    let result = campaign(&args, &elector, store.as_ref(), &candidate).await;
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
    elector: &Elector,
    store: Option<&Store>,
    candidate: &elect_core::CandidateId,
) -> Result<u8, Failure> {
    let election = elector.election().to_string();
    let mut sigint = signal(SignalKind::interrupt()).map_err(|e| Failure::config(e.to_string()))?;
    let mut sigterm =
        signal(SignalKind::terminate()).map_err(|e| Failure::config(e.to_string()))?;
    loop {
        let guard = tokio::select! {
            guard = elector.leading() => guard.map_err(|e| Failure::from_error("campaign", &e))?,
            _ = sigint.recv() => return Ok(128 + 2),
            _ = sigterm.recv() => return Ok(128 + 15),
        };
        info!(term = %guard.term(), "elected");
        if args.once {
            let store = store.ok_or_else(|| Failure::config("--once needs a store"))?;
            match store
                .once_claim(elector.election(), candidate, guard.term())
                .await?
            {
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
        let ended = {
            let mut child = spawn(args, &election, candidate.as_str(), &guard)?;
            tokio::select! {
                status = child.wait() => Ended::Exited(status.map(status_code).unwrap_or(1)),
                _ = guard.lost() => {
                    warn!(term = %guard.term(), "leadership lost; stopping the program");
                    stop(&mut child, args.grace).await;
                    Ended::Lost
                }
                _ = sigint.recv() => {
                    send(&child, Signal::INT);
                    Ended::Signalled(wait_or_kill(&mut child, args.grace).await)
                }
                _ = sigterm.recv() => {
                    send(&child, Signal::TERM);
                    Ended::Signalled(wait_or_kill(&mut child, args.grace).await)
                }
            }
        };
        match ended {
            Ended::Exited(status) => {
                info!(status, "the program exited");
                if args.once {
                    if let Some(store) = store {
                        store
                            .once_done(elector.election(), guard.term(), status.into())
                            .await?;
                    }
                    return Ok(status);
                }
                if !args.restart {
                    return Ok(status);
                }
                elector
                    .resign()
                    .await
                    .map_err(|e| Failure::from_error("resign", &e))?;
            }
            Ended::Lost if args.restart => continue,
            Ended::Lost => return Ok(exit::LOST),
            Ended::Signalled(status) => return Ok(status),
        }
    }
}

/// After passing a signal on: waits for the program, at most `grace` longer than it takes to
/// be polite, then kills it.
async fn wait_or_kill(child: &mut Child, grace: Duration) -> u8 {
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(Ok(status)) => status_code(status),
        _ => {
            let _ = child.start_kill();
            child.wait().await.map(status_code).unwrap_or(137)
        }
    }
}
