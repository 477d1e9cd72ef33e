//! `cargo xtask bench`: candidate processes on every coordinator, timed from their own
//! CLOCK_MONOTONIC event lines. So far: crash failover (SIGKILL the leader) and graceful
//! hand-over (the leader resigns). Peers, the frozen-leader, load and scale scenarios are to
//! come (issue 8).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use crate::{cargo, provision, step};

const TTL_MS: u64 = 2000;

/// One candidate process and its event lines.
struct Candidate {
    child: Child,
    stdin: ChildStdin,
}

/// `(candidate index, CLOCK_MONOTONIC ns, event word)`.
type Line = (usize, u128, String);

fn now_ns() -> u128 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32).as_nanos()
}

fn spawn(k: usize, args: &[String], lines: &mpsc::Sender<Line>) -> Result<Candidate, String> {
    let binary = provision::target_dir().join("debug/candidate");
    let mut child = Command::new(&binary)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("{}: {e}", binary.display()))?;
    let stdin = child.stdin.take().expect("piped");
    let stdout = child.stdout.take().expect("piped");
    let lines = lines.clone();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let mut words = line.split(' ');
            let (Some(ns), Some(event)) = (words.next(), words.next()) else {
                continue;
            };
            if let Ok(ns) = ns.parse() {
                if lines.send((k, ns, event.to_owned())).is_err() {
                    return;
                }
            }
        }
    });
    Ok(Candidate { child, stdin })
}

/// Waits for `event` from a candidate other than `except`.
fn wait(
    lines: &mpsc::Receiver<Line>,
    event: &str,
    except: Option<usize>,
    within: Duration,
) -> Option<(usize, u128)> {
    let until = std::time::Instant::now() + within;
    loop {
        let left = until.checked_duration_since(std::time::Instant::now())?;
        let (k, ns, e) = lines.recv_timeout(left).ok()?;
        if e == event && Some(k) != except {
            return Some((k, ns));
        }
    }
}

/// The candidate arguments for one round on `coordinator`.
fn round_args(coordinator: &str, env: &[(String, String)], round: usize) -> Vec<Vec<String>> {
    let url = |name: &str| {
        env.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let election = format!("bench.{coordinator}.{}.{round}", std::process::id());
    let store = match coordinator {
        "redis" => Some(url("ELECT_REDIS_URL")),
        // A URL without a database is the throwaway server xtask started (root): keep the
        // table in its `mysql` schema. A URL with one is used as given.
        "mysql" => Some({
            let u = url("ELECT_MYSQL_URL");
            if u.ends_with('/') {
                format!("{u}mysql")
            } else {
                u
            }
        }),
        "mongo" => Some(url("ELECT_MONGO_URL")),
        _ => None,
    };
    if let Some(store) = store {
        return (0..3)
            .map(|k| {
                vec![
                    "--store".into(),
                    store.clone(),
                    "--election".into(),
                    election.clone(),
                    "--ttl".into(),
                    TTL_MS.to_string(),
                    "--id".into(),
                    format!("c{k}"),
                    "--migrate".into(),
                ]
            })
            .collect();
    }
    let ports: Vec<String> = (0..3)
        .map(|_| {
            TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.to_string())
                .unwrap_or_default()
        })
        .collect();
    (0..3)
        .map(|k| {
            let mut args = vec![
                "--raft-id".into(),
                format!("n{k}"),
                "--raft-listen".into(),
                ports[k].clone(),
                "--raft-key".into(),
                "bench-cluster-key-0123".into(),
            ];
            for (j, port) in ports.iter().enumerate() {
                args.push("--raft-peer".into());
                args.push(format!("n{j}={port}"));
            }
            args
        })
        .collect()
}

/// One round: start three candidates, wait for a leader, then kill it (`crash`) or ask it to
/// resign; returns the milliseconds until another leads.
fn round(coordinator: &str, env: &[(String, String)], n: usize, crash: bool) -> Option<f64> {
    let (tx, lines) = mpsc::channel();
    let mut candidates: Vec<Candidate> = round_args(coordinator, env, n)
        .iter()
        .enumerate()
        .filter_map(|(k, args)| spawn(k, args, &tx).ok())
        .collect();
    let result = (|| {
        let (leader, _) = wait(&lines, "elected", None, Duration::from_secs(20))?;
        thread::sleep(Duration::from_millis(300 + (n as u64 * 97) % 700));
        let start = now_ns();
        if crash {
            let _ = Command::new("kill")
                .args(["-KILL", &candidates[leader].child.id().to_string()])
                .status();
        } else {
            let _ = writeln!(candidates[leader].stdin, "resign");
            let _ = candidates[leader].stdin.flush();
        }
        let (_, elected) = wait(&lines, "elected", Some(leader), Duration::from_secs(20))?;
        Some(elected.saturating_sub(start) as f64 / 1e6)
    })();
    for c in &mut candidates {
        let _ = writeln!(c.stdin, "exit");
    }
    for mut c in candidates {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = c.child.try_wait() {
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = c.child.kill();
        let _ = c.child.wait();
    }
    result
}

fn summary(mut samples: Vec<f64>) -> String {
    if samples.is_empty() {
        return "no samples".into();
    }
    samples.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    format!(
        "min {:.1} / p50 {:.1} / p99 {:.1} / max {:.1} ms (n = {})",
        samples[0],
        at(0.5),
        at(0.99),
        samples[samples.len() - 1],
        samples.len()
    )
}

pub(crate) fn bench(args: &[String]) -> Result<(), String> {
    let rounds = if args.iter().any(|a| a == "--quick") {
        3
    } else {
        20
    };
    let servers = provision::servers()?;
    let mut build = cargo();
    build.args(["build", "-p", "elect-bench", "--bin", "candidate"]);
    step("build candidate", build)?;
    let env = servers.env();
    let mut table = String::from(
        "| coordinator | crash failover (TTL 2 s; raft: election timeout 300–600 ms) | graceful hand-over |\n|---|---|---|\n",
    );
    let mut failed = false;
    for coordinator in ["redis", "mysql", "mongo", "raft"] {
        let mut failover = Vec::new();
        let mut handover = Vec::new();
        for n in 0..rounds {
            match round(coordinator, &env, 2 * n, true) {
                Some(ms) => failover.push(ms),
                None => failed = true,
            }
            match round(coordinator, &env, 2 * n + 1, false) {
                Some(ms) => handover.push(ms),
                None => failed = true,
            }
        }
        let line = format!(
            "| {coordinator} | {} | {} |\n",
            summary(failover),
            summary(handover)
        );
        eprint!("xtask: bench: {line}");
        table.push_str(&line);
    }
    servers.stop();
    println!("{table}");
    if failed {
        return Err("some rounds produced no leader in time".into());
    }
    Ok(())
}
