//! `elect`: run any program only while this host leads an election, show who leads, and a
//! demo. See the crate README for every flag and exit code.

#![deny(unsafe_code)]
// Builds without some backends leave parts of the store plumbing unused.
#![cfg_attr(
    not(all(
        feature = "redis",
        feature = "mysql",
        feature = "mongo",
        feature = "postgres",
        feature = "raft"
    )),
    allow(unused, unreachable_code)
)]

#[cfg(feature = "raft")]
mod demo;
mod duration;
mod http;
mod once;
mod raft;
mod run;
mod status;
mod store;
mod watchdog;

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// Exit codes besides the program's own status (see the README).
pub(crate) mod exit {
    /// Bad flags or arguments.
    pub(crate) const USAGE: u8 = 2;
    /// A bad store URL or setting (an invalid name, TTL, raft peer list, …).
    pub(crate) const CONFIG: u8 = 3;
    /// The store could not be reached, or failed in a way elect could not ride out.
    pub(crate) const UNAVAILABLE: u8 = 4;
    /// Leadership was lost while the program ran; the program was stopped.
    pub(crate) const LOST: u8 = 5;
    /// `--once`: an earlier leader started the program but its outcome was never recorded.
    pub(crate) const ONCE_UNKNOWN: u8 = 6;
    /// The program could not be started (not found, not executable).
    pub(crate) const SPAWN: u8 = 7;
}

const EXIT_CODES: &str =
    "Exit codes: the program's own status when it exits by itself (128+N when \
signal N ended it); 0 when --once finds the work done; 2 bad flags; 3 bad store URL or setting; 4 \
store unreachable or failing; 5 leadership lost while the program ran; 6 --once: an earlier run \
never recorded its end; 7 the program could not be started; 130/143 elect was interrupted \
(SIGINT/SIGTERM, passed on to the program first).";

const RUN_GUARANTEES: &str = "\
Guarantees: one program at a time across the group (clock rates within 1 %). The program runs \
in its own process group, led by a watchdog process; the whole group is stopped by the local \
safety deadline (before the store can give the lease to another host): SIGKILL at once when a \
renewal is refused; SIGTERM --grace before the deadline and SIGKILL at it when renewals fail; \
and the same by the watchdog when elect is frozen, blocked or dead (kill -9 of elect kills the \
group at once). Whatever ends a run, nothing left in the group survives it. Two hosts given \
the same --id are two candidates. ELECT_TERM only rises.
Not guaranteed: children that leave the process group (setsid, daemons) are out of reach; when \
someone else writes the store (deletes the lease), another host may lead for up to a third of \
the TTL before this one learns it — so have the program's writes carry ELECT_TERM and their \
target refuse lower terms. SIGHUP is handled like SIGTERM. The program does not get ELECT_STORE.";

/// Leader election for scripts: run a program only while this host leads.
#[derive(Parser, Debug)]
#[command(
    name = "elect",
    version,
    about,
    long_about = None,
    propagate_version = true,
    arg_required_else_help = true,
    after_help = EXIT_CODES
)]
struct Cli {
    /// Log verbosity on stderr (`error`, `warn`, `info`, `debug`, `trace`, or a
    /// tracing-subscriber filter such as `elect_core=debug`).
    #[arg(long, global = true, env = "ELECT_LOG", default_value = "warn")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Campaign; while leading, run PROGRAM with ELECT_ELECTION, ELECT_CANDIDATE and
    /// ELECT_TERM (the fencing token) in its environment.
    #[command(after_help = RUN_GUARANTEES)]
    Run(Box<run::RunArgs>),
    /// Who leads an election, its term and the lease left.
    Status(status::StatusArgs),
    /// Three raft nodes in this process on loopback: an election, a leader crash and its
    /// failover, a graceful transfer, with times.
    Demo,
}

/// Where the election lives: a store URL, or raft peers.
#[derive(Args, Debug, Clone)]
pub(crate) struct Where {
    /// The coordinator: redis://, rediss://, redis-cluster://, redis-sentinel://, mysql:// (with
    /// a database), mongodb://, postgres:// or etcd:// (feature etcd) URL.
    /// Its value is never printed (a password in it is hidden everywhere).
    #[arg(
        long,
        env = "ELECT_STORE",
        hide_env_values = true,
        required_unless_present = "raft_id"
    )]
    store: Option<String>,
    #[command(flatten)]
    tls: store::TlsArgs,
    /// The election's name: 1–128 characters of [A-Za-z0-9._:/-].
    #[arg(long, env = "ELECT_ELECTION_NAME")]
    election: String,
    /// Raft instead of a store: this node's id (it must be among the --raft-peer ids).
    #[arg(long, conflicts_with = "store", requires = "raft_listen")]
    raft_id: Option<String>,
    /// Raft: the address this node listens on for its peers (host:port).
    #[arg(long)]
    raft_listen: Option<String>,
    /// Raft: a member as ID=HOST:PORT; repeat for every voter, this node included.
    #[arg(long = "raft-peer", value_name = "ID=ADDR")]
    raft_peers: Vec<String>,
    /// Raft: a file holding the cluster key (at least 16 bytes) that authenticates peers.
    #[arg(long)]
    raft_key_file: Option<std::path::PathBuf>,
    /// Raft: a directory for this node's persisted vote (so a restart cannot vote twice).
    #[arg(long)]
    raft_state: Option<std::path::PathBuf>,
    /// Raft: a non-voting member as ID=HOST:PORT (it follows and reports the leader, never
    /// leads nor votes); repeat for each. This node may be one.
    #[arg(long = "raft-observer", value_name = "ID=ADDR")]
    raft_observers: Vec<String>,
    /// Raft: the leader's heartbeat interval (default 50ms; at most half the minimum
    /// election timeout).
    #[arg(long, value_parser = duration::parse)]
    raft_heartbeat: Option<std::time::Duration>,
    /// Raft: the election timeout range MIN..MAX (default 300ms..600ms). The leader lease is
    /// MIN: a failed leader is replaced within about MAX.
    #[arg(long, value_name = "MIN..MAX", value_parser = duration::parse_range)]
    raft_election_timeout: Option<(std::time::Duration, std::time::Duration)>,
}

impl Where {
    /// The store URL's scheme, if a store is given.
    fn scheme(&self) -> Option<&str> {
        Some(self.store.as_deref()?.split_once("://")?.0)
    }

    /// Whether the store is PostgreSQL.
    pub(crate) fn is_postgres(&self) -> bool {
        matches!(self.scheme(), Some("postgres" | "postgresql"))
    }

    /// Whether the store is Redis.
    pub(crate) fn is_redis(&self) -> bool {
        matches!(
            self.scheme(),
            Some("redis" | "rediss" | "redis-cluster" | "rediss-cluster" | "redis-sentinel")
        )
    }
}

fn main() -> ExitCode {
    // elect's own watchdog process (see `watchdog`), started by `elect run`; not a command.
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("__watchdog") {
        return watchdog::main(&args[2..]);
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                // `elect` alone: the whole help, on stderr, as a usage error.
                let _ = e.print();
                return ExitCode::from(exit::USAGE);
            }
            // One line: clap's message up to its usage block, without the "error: " prefix.
            let text = e.to_string();
            let message = text.split("\n\nUsage").next().unwrap_or("bad arguments");
            let line: Vec<&str> = message.split_whitespace().collect();
            eprintln!("elect: {}", line.join(" ").trim_start_matches("error: "));
            return ExitCode::from(exit::USAGE);
        }
    };
    let filter = match tracing_subscriber::EnvFilter::try_new(&cli.log) {
        Ok(filter) => filter,
        Err(e) => {
            eprintln!("elect: --log {:?} is not a log filter: {e}", cli.log);
            return ExitCode::from(exit::USAGE);
        }
    };
    // Through a worker thread that drops lines when stderr is full (its reader stalled): a
    // blocked write must never stall the supervision of the program.
    let (stderr, _flush_at_exit) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(true)
        .finish(std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(stderr)
        .with_target(false)
        // Colours only for a terminal: log files and journals get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // One thread: the program is spawned from it, and PR_SET_PDEATHSIG (which ties the
    // program's life to this process) follows the thread that forked.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("elect: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(async move {
        match cli.command {
            Command::Run(args) => run::run(*args).await,
            Command::Status(args) => status::status(args).await,
            #[cfg(feature = "raft")]
            Command::Demo => demo::demo().await,
            #[cfg(not(feature = "raft"))]
            Command::Demo => Err(Failure::config("elect was built without the raft feature")),
        }
    });
    match code {
        Ok(code) => ExitCode::from(code),
        Err(failure) => {
            eprintln!("elect: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

/// An error for the user: one line and an exit code.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) code: u8,
    pub(crate) message: String,
}

impl Failure {
    pub(crate) fn config(message: impl Into<String>) -> Failure {
        Failure {
            code: exit::CONFIG,
            message: message.into(),
        }
    }

    /// From an elect error: configuration problems are CONFIG, the rest UNAVAILABLE.
    pub(crate) fn from_error(context: &str, e: &elect::Error) -> Failure {
        let code = match e {
            elect::Error::InvalidConfig { .. }
            | elect::Error::InvalidName { .. }
            | elect::Error::InvalidTtl { .. } => exit::CONFIG,
            _ => exit::UNAVAILABLE,
        };
        Failure {
            code,
            message: format!("{context}: {}", e.to_string().replace('\n', " ")),
        }
    }
}
