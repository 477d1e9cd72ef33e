//! The watchdog: a small process of its own that stops the program's process group at the
//! local safety deadline, even when `elect` itself is frozen (SIGSTOP), blocked (a full stderr
//! pipe) or dead.
//!
//! `elect run` starts it (`elect __watchdog DEADLINE GRACE`, both in nanoseconds, the deadline
//! on the system-wide `CLOCK_MONOTONIC`) as the leader of a new process group, and starts the
//! program inside that group. Only a live `elect` that keeps renewing its lease keeps the
//! watchdog away from the program: it writes each new deadline as a line `deadline NS` to the
//! watchdog's standard input. The watchdog sends SIGTERM to the group at `deadline − grace`
//! and SIGKILL at the deadline; when its standard input closes (`elect` exited, or died even
//! by SIGKILL), it sends SIGKILL to the group at once. Its own SIGKILL of the group ends it
//! too; it ignores the signals `elect` passes on to the group (SIGINT, SIGTERM, SIGHUP, SIGQUIT).

use std::process::ExitCode;
use std::time::Duration;

use rustix::process::{Pid, Signal};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::signal::unix::{signal, SignalKind};

/// Now on `CLOCK_MONOTONIC`, in nanoseconds: one clock for every process of the machine.
pub(crate) fn monotonic_ns() -> u64 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    (now.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(now.tv_nsec as u64)
}

/// `at` (tokio's clock, which is `CLOCK_MONOTONIC` outside tests) in nanoseconds on
/// `CLOCK_MONOTONIC`, rounded down: the system clock is read first, so the result is never later
/// than `at`.
pub(crate) fn to_monotonic_ns(at: tokio::time::Instant) -> u64 {
    let system = monotonic_ns();
    let now = tokio::time::Instant::now();
    if at >= now {
        system.saturating_add((at - now).as_nanos() as u64)
    } else {
        system.saturating_sub((now - at).as_nanos() as u64)
    }
}

/// Sends `signal` to the process group `group`; a group that no longer exists is not an error.
pub(crate) fn signal_group(group: Pid, signal: Signal) {
    let _ = rustix::process::kill_process_group(group, signal);
}

/// The watchdog's `main`: `args` are the deadline and the grace, in nanoseconds.
pub(crate) fn main(args: &[String]) -> ExitCode {
    let parse = |n: usize| args.get(n).and_then(|a| a.parse::<u64>().ok());
    let (Some(deadline), Some(grace)) = (parse(0), parse(1)) else {
        eprintln!("elect: __watchdog DEADLINE_NS GRACE_NS is for elect's own use");
        return ExitCode::from(crate::exit::USAGE);
    };
    let group = rustix::process::getpid();
    let watch = async move {
        // Registering handlers replaces the default action (exit) for these signals.
        let _held: Vec<_> = [
            SignalKind::interrupt(),
            SignalKind::terminate(),
            SignalKind::hangup(),
            SignalKind::quit(),
        ]
        .into_iter()
        .filter_map(|kind| signal(kind).ok())
        .collect();
        watch(group, deadline, grace).await
    };
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(watch),
        // Without a runtime there is no watching: stop the program rather than leave it alone.
        Err(_) => signal_group(group, Signal::KILL),
    }
    // The SIGKILL of the group ended this process too, unless the group was already gone.
    std::process::exit(0)
}

async fn watch(group: Pid, mut deadline: u64, grace: u64) {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut terminated = false;
    loop {
        let now = monotonic_ns();
        if now >= deadline {
            signal_group(group, Signal::KILL);
            return;
        }
        let term_at = deadline.saturating_sub(grace);
        if now >= term_at && !terminated {
            signal_group(group, Signal::TERM);
            terminated = true;
        }
        let wake = if terminated { deadline } else { term_at };
        tokio::select! {
            line = lines.next_line() => match line {
                Ok(Some(line)) => {
                    if let Some(next) = line.strip_prefix("deadline ").and_then(|n| n.trim().parse().ok()) {
                        deadline = next;
                    }
                }
                // elect closed the pipe (its run is over) or died: nobody watches the program.
                _ => {
                    signal_group(group, Signal::KILL);
                    return;
                }
            },
            _ = tokio::time::sleep(Duration::from_nanos(wake - now)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_conversion_never_moves_a_deadline_later() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        runtime.block_on(async {
            let at = tokio::time::Instant::now() + Duration::from_millis(500);
            let before = monotonic_ns();
            let ns = to_monotonic_ns(at);
            let after = monotonic_ns();
            assert!(ns <= after + 500_000_000, "not later than the deadline");
            assert!(ns + 2_000_000 >= before + 500_000_000, "within 2 ms of it");
        });
    }
}
