//! Shared by the CLI's integration tests: running `elect`, scratch directories, and programs
//! whose background worker writes heartbeats (host, term, `CLOCK_MONOTONIC`), with the checker
//! over them.

#![allow(dead_code)]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `elect` binary under test, with no standard input.
pub fn elect() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_elect"));
    command.stdin(Stdio::null());
    command
}

/// A fresh directory for one test.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("elect-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Polls `ok` every 20 ms; panics after `within`.
pub fn wait_for(what: &str, within: Duration, mut ok: impl FnMut() -> bool) {
    let until = Instant::now() + within;
    while !ok() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Processes killed (and reaped) when the test ends, however it ends.
pub struct Running(pub Vec<(String, Child)>);

impl Drop for Running {
    fn drop(&mut self) {
        for (_, child) in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Three raft hosts on free loopback ports, sharing a cluster key file in `dir`.
pub struct RaftGroup {
    pub ports: Vec<String>,
    pub key: PathBuf,
}

impl RaftGroup {
    pub fn new(dir: &Path) -> RaftGroup {
        let ports = (0..3)
            .map(|_| {
                std::net::TcpListener::bind("127.0.0.1:0")
                    .unwrap()
                    .local_addr()
                    .unwrap()
                    .to_string()
            })
            .collect();
        let key = dir.join("key");
        std::fs::write(&key, "cli-test-cluster-key-0123\n").unwrap();
        RaftGroup { ports, key }
    }

    /// `--raft-id {prefix}{k} --raft-listen … --raft-key-file … --raft-peer …` for host `k`.
    pub fn args(&self, prefix: &str, k: usize) -> Vec<String> {
        let mut args = vec![
            "--raft-id".to_string(),
            format!("{prefix}{k}"),
            "--raft-listen".into(),
            self.ports[k].clone(),
            "--raft-key-file".into(),
            self.key.display().to_string(),
        ];
        for (j, port) in self.ports.iter().enumerate() {
            args.push("--raft-peer".into());
            args.push(format!("{prefix}{j}={port}"));
        }
        args
    }
}

/// Sends `signal` (`TERM`, `KILL`, `STOP`, …) to a process, or with `-` prefixed pid, a group.
pub fn kill(signal: &str, target: &str) {
    let _ = Command::new("kill")
        .args([format!("-{signal}"), "--".into(), target.into()])
        .stderr(Stdio::null())
        .status();
}

/// Now on `CLOCK_MONOTONIC`, in nanoseconds: the clock the heartbeats carry.
pub fn mono_ns() -> u64 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

/// The program `elect run` starts: a shell whose background worker appends
/// `$ELECT_CANDIDATE $ELECT_TERM <monotonic ns>` to `file` every 20 ms. The worker is the
/// shell's child, not elect's: it must die with the run all the same.
pub fn heartbeat_program(file: &Path) -> Vec<String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/heartbeat.py");
    vec![
        "sh".into(),
        "-c".into(),
        format!(
            "python3 {} \"$ELECT_CANDIDATE\" \"$ELECT_TERM\" {} & wait",
            script.display(),
            file.display()
        ),
    ]
}

/// One heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Beat {
    pub host: String,
    pub term: u64,
    pub at: u64,
}

/// Every heartbeat in `files`.
pub fn beats(files: &[PathBuf]) -> Vec<Beat> {
    let mut out = Vec::new();
    for file in files {
        for line in std::fs::read_to_string(file).unwrap_or_default().lines() {
            let mut w = line.split(' ');
            let beat = (|| {
                Some(Beat {
                    host: w.next()?.to_owned(),
                    term: w.next()?.parse().ok()?,
                    at: w.next()?.parse().ok()?,
                })
            })();
            // A line cut short by a SIGKILL mid-write is not a heartbeat.
            out.extend(beat);
        }
    }
    out.sort_by_key(|b| b.at);
    out
}

/// The heartbeats of one program run: one host, one term.
#[derive(Debug, Clone)]
pub struct Run {
    pub host: String,
    pub term: u64,
    pub first: u64,
    pub last: u64,
    pub beats: usize,
}

/// Groups heartbeats into runs, in the order they began.
pub fn runs(beats: &[Beat]) -> Vec<Run> {
    let mut runs: Vec<Run> = Vec::new();
    for b in beats {
        match runs
            .iter_mut()
            .find(|r| r.host == b.host && r.term == b.term)
        {
            Some(run) => {
                run.last = run.last.max(b.at);
                run.beats += 1;
            }
            None => runs.push(Run {
                host: b.host.clone(),
                term: b.term,
                first: b.at,
                last: b.at,
                beats: 1,
            }),
        }
    }
    runs.sort_by_key(|r| r.first);
    runs
}

/// What the checker found over all runs: workers of two runs alive at once (any hosts), and
/// terms that did not rise from one run to the next.
#[derive(Debug, Default)]
pub struct Verdict {
    pub overlaps: Vec<String>,
    pub terms: Vec<String>,
}

impl Verdict {
    pub fn is_clean(&self) -> bool {
        self.overlaps.is_empty() && self.terms.is_empty()
    }
}

/// Checks `runs`: no two overlap in time, and each has a higher term than the one before.
pub fn check(runs: &[Run]) -> Verdict {
    let mut verdict = Verdict::default();
    for (n, run) in runs.iter().enumerate().skip(1) {
        let before = &runs[..n];
        if let Some(alive) = before.iter().max_by_key(|r| r.last) {
            if alive.last >= run.first {
                verdict.overlaps.push(format!(
                    "{} (term {}) beat until {:.3} ms after {} (term {}) began: {:.3} ms of two workers",
                    alive.host,
                    alive.term,
                    (alive.last - run.first) as f64 / 1e6,
                    run.host,
                    run.term,
                    (alive.last.min(run.last) - run.first) as f64 / 1e6
                ));
            }
        }
        let prev = &runs[n - 1];
        if run.term <= prev.term {
            verdict.terms.push(format!(
                "{} ran in term {} after {} ran in term {}",
                run.host, run.term, prev.host, prev.term
            ));
        }
    }
    verdict
}

/// The runs, one line each, times in ms from the first heartbeat, for failure messages.
pub fn describe(runs: &[Run]) -> String {
    let origin = runs.first().map_or(0, |r| r.first);
    let mut out = String::new();
    for r in runs {
        let _ = writeln!(
            out,
            "  {} term {}: {:.1} .. {:.1} ms ({} beats)",
            r.host,
            r.term,
            (r.first - origin) as f64 / 1e6,
            (r.last - origin) as f64 / 1e6,
            r.beats
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(host: &str, term: u64, first: u64, last: u64) -> Run {
        Run {
            host: host.into(),
            term,
            first,
            last,
            beats: 2,
        }
    }

    #[test]
    fn the_checker_sees_overlaps_and_terms_that_do_not_rise() {
        assert!(check(&[run("a", 1, 0, 10), run("b", 2, 11, 20)]).is_clean());
        let overlap = check(&[run("a", 1, 0, 10), run("b", 2, 9, 20)]);
        assert_eq!(overlap.overlaps.len(), 1, "{overlap:?}");
        // A long run overlapping a later one that is not its direct successor.
        let nested = check(&[
            run("a", 1, 0, 100),
            run("b", 2, 10, 20),
            run("c", 3, 30, 40),
        ]);
        assert_eq!(nested.overlaps.len(), 2, "{nested:?}");
        let terms = check(&[run("a", 5, 0, 10), run("b", 5, 20, 30), run("a", 4, 40, 50)]);
        assert_eq!(terms.terms.len(), 2, "{terms:?}");
    }
}
