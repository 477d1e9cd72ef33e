//! Crash trials in one long-lived group: whoever leads is SIGKILLed again and again, a member
//! takes its place, and the run counts the failovers, the elections no kill caused, and any
//! two leaders at once. The Raft paper's settings (`paper.rs`) and the sub-second TTLs
//! (`subsecond.rs`) both run on it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use elect_bench::group::{now_ns, overlap_with_kills, Group, Line};
use elect_bench::report::{ms, Json};
use elect_core::rand::Rng;
use rustix::process::Signal;

use crate::rounds::{elected, millis};

/// What a run of crash trials measured.
#[derive(Default)]
pub(crate) struct Measured {
    /// ms from the SIGKILL until another member was elected, per trial.
    pub(crate) failover: Vec<f64>,
    /// Per trial, the new leader's term less the killed one's, when both printed a number:
    /// on raft, how many terms (elections) the failover took.
    pub(crate) term_steps: Vec<Option<u64>>,
    /// Elections that no kill caused (a lease that lapsed on a busy host).
    pub(crate) unprovoked: usize,
    /// Every step-down a live leader printed (a killed one prints none).
    pub(crate) step_downs: Vec<SteppedDown>,
    pub(crate) overlap_ms: f64,
    pub(crate) stale_work: usize,
    pub(crate) errors: Vec<String>,
}

impl Measured {
    /// A run that could not start: nothing measured, `error` said.
    pub(crate) fn failed(error: String) -> Measured {
        Measured {
            errors: vec![error],
            ..Measured::default()
        }
    }
}

/// A `lost` line: why a live leader stepped down.
pub(crate) struct SteppedDown {
    /// `DeadlinePassed`: its own lease ran out; `Lost`: the coordinator or a higher term said
    /// so.
    pub(crate) reason: String,
    /// ms since that member's previous line (its last `work`, every heartbeat or so while it
    /// led): a gap as long as the lease means the leader itself got no CPU.
    pub(crate) gap_ms: Option<f64>,
    /// The line's stamp (the instant it stepped down, or its deadline if that came first).
    pub(crate) ns: u128,
}

/// How a run of crash trials goes.
pub(crate) struct Trials<'a> {
    /// Members at the start.
    pub(crate) members: usize,
    /// The command of the member in slot `k`.
    pub(crate) command: &'a dyn Fn(usize) -> Command,
    /// Whether a killed member is started again in its own slot (a raft voter, with its
    /// persisted state) or a new member takes a new slot (a store's candidate, with a new id).
    pub(crate) same_slot: bool,
    /// How long the first leader leads before the first kill: the unprovoked elections of
    /// this span are a steady run's leader changes without a fault.
    pub(crate) steady: Duration,
    /// Before each kill: at least this long (for the new member to settle in), plus a random
    /// part of `spread` (a random point of the heartbeat interval, or of the lease).
    pub(crate) settle: Duration,
    pub(crate) spread: Duration,
    pub(crate) trials: usize,
}

/// Runs `t`; `dir` is removed afterwards (the members' state, if any).
pub(crate) fn crash_trials(t: &Trials, dir: Option<&Path>, rng: &mut Rng) -> Measured {
    let mut m = Measured::default();
    let mut g = Group::new();
    // Per process (its index in the group): the slot it runs in, and when it was killed.
    let mut slot_of = Vec::new();
    let mut ended: Vec<Option<u128>> = Vec::new();
    let bound = Duration::from_secs(10);
    let result = (|| -> Result<(), String> {
        for k in 0..t.members {
            g.spawn((t.command)(k))?;
            slot_of.push(k);
            ended.push(None);
        }
        g.wait(Duration::from_secs(20), elected)
            .ok_or("no leader within 20 s")?;
        g.collect(t.steady);
        let mut kills = 0usize;
        while m.failover.len() < t.trials {
            g.collect(t.settle + rng.duration_up_to(t.spread));
            let Some(leader) = leading(&g.log) else {
                // Between leaders (a lease lapsed): wait for the next, then try again.
                g.wait(bound, elected)
                    .ok_or(format!("no leader within {bound:?}"))?;
                continue;
            };
            let killed = g.signal(leader, Signal::KILL);
            ended[leader] = Some(killed);
            kills += 1;
            let next = g
                .wait(bound, |l| elected(l) && l.who != leader)
                .ok_or(format!("no failover within {bound:?}"))?;
            m.failover.push(millis(killed, next.ns));
            m.term_steps.push(term_step(&g.log, leader, &next));
            // The member that replaces it must hear the leader before the next kill.
            let slot = if t.same_slot {
                slot_of[leader]
            } else {
                slot_of.len()
            };
            let again = g.spawn((t.command)(slot))?;
            slot_of.push(slot);
            ended.push(None);
            g.wait(bound, |l| l.who == again && l.event == "observed")
                .ok_or(format!("the new member heard no leader within {bound:?}"))?;
        }
        let elections = g.log.iter().filter(|l| elected(l)).count();
        m.unprovoked = elections.saturating_sub(kills + 1);
        m.step_downs = step_downs(&g.log);
        Ok(())
    })();
    if let Err(e) = result {
        m.errors.push(e);
    }
    let end = now_ns();
    let (overlap_ms, stale_work) = overlap_with_kills(&g.log, &ended, end);
    m.overlap_ms = overlap_ms;
    m.stale_work = stale_work;
    g.stop();
    if let Some(dir) = dir {
        let _ = std::fs::remove_dir_all(dir);
    }
    m
}

/// The term `next` was elected in, less the term `killed` last printed its election in.
fn term_step(log: &[Line], killed: usize, next: &Line) -> Option<u64> {
    let term = |l: &Line| l.rest.first().and_then(|t| t.parse::<u64>().ok());
    let old = log.iter().rev().find(|l| l.who == killed && elected(l))?;
    term(next)?.checked_sub(term(old)?)
}

/// The `lost` lines of `log`.
fn step_downs(log: &[Line]) -> Vec<SteppedDown> {
    log.iter()
        .enumerate()
        .filter(|(_, l)| l.event == "lost")
        .map(|(i, l)| SteppedDown {
            reason: l.rest.get(1).cloned().unwrap_or_default(),
            gap_ms: log[..i]
                .iter()
                .rev()
                .find(|p| p.who == l.who)
                .map(|p| millis(p.ns, l.ns)),
            ns: l.ns,
        })
        .collect()
}

/// The slowest `n` trials as `[ms, term step]` pairs, slowest first.
pub(crate) fn slowest(m: &Measured, n: usize) -> Json {
    let mut trials: Vec<(f64, Option<u64>)> = m
        .failover
        .iter()
        .copied()
        .zip(m.term_steps.iter().copied())
        .collect();
    trials.sort_by(|a, b| b.0.total_cmp(&a.0));
    Json::Arr(
        trials
            .into_iter()
            .take(n)
            .map(|(ms, step)| {
                Json::Arr(vec![
                    Json::Num(ms),
                    step.map_or(Json::Null, |s| Json::Num(s as f64)),
                ])
            })
            .collect(),
    )
}

/// A member's state directory under `dir`.
pub(crate) fn state_dir(dir: &Path, k: usize) -> String {
    let path: PathBuf = dir.join(format!("n{k}"));
    path.to_string_lossy().into_owned()
}

/// The process that leads as the log tells it: the last `elected` not followed by its `lost`.
fn leading(log: &[Line]) -> Option<usize> {
    let mut leader = None;
    for l in log {
        match l.event.as_str() {
            "elected" => leader = Some(l.who),
            "lost" if leader == Some(l.who) => leader = None,
            _ => {}
        }
    }
    leader
}

pub(crate) fn median(v: &[f64]) -> Option<f64> {
    elect_bench::report::Stats::of(v).map(|s| s.p50)
}

pub(crate) fn worst(v: &[f64]) -> Option<f64> {
    elect_bench::report::Stats::of(v).map(|s| s.max)
}

pub(crate) fn mean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

pub(crate) fn opt(v: Option<f64>) -> String {
    v.map_or("–".into(), ms)
}

/// Free loopback ports, one per member.
pub(crate) fn free_ports(n: usize) -> Result<Vec<String>, String> {
    (0..n)
        .map(|_| {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.to_string())
                .map_err(|e| format!("no free port: {e}"))
        })
        .collect()
}

/// A raft voter's command: voter `k` of `ports` in `election`, its state under `dir`, with
/// the timing `heartbeat,min,max` in ms.
pub(crate) fn raft_voter(
    candidate: &Path,
    k: usize,
    ports: &[String],
    election: &str,
    dir: &Path,
    timing: (u64, u64, u64),
) -> Command {
    let (heartbeat, min, max) = timing;
    let mut cmd = Command::new(candidate);
    cmd.args(["--raft-id", &format!("n{k}"), "--raft-listen", &ports[k]])
        .args(["--raft-key", "bench-cluster-key-0123"])
        .args(["--election", election])
        .args(["--work-ms", &heartbeat.to_string()])
        .args(["--raft-state", &state_dir(dir, k)])
        .args(["--raft-timing", &format!("{heartbeat},{min},{max}")]);
    for (j, port) in ports.iter().enumerate() {
        cmd.args(["--raft-peer", &format!("n{j}={port}")]);
    }
    cmd
}

/// What in one row of crash-trial results is elect's failure, not a figure: two leaders at once
/// (`overlap_ms`, `stale_work`), and the run's `errors`; each said of `what`.
pub(crate) fn row_failures(what: &str, row: &[(String, Json)]) -> Vec<String> {
    let field = |k: &str| row.iter().find(|(n, _)| n == k).map(|(_, v)| v);
    let positive = |k: &str| matches!(field(k), Some(Json::Num(n)) if *n > 0.0);
    let mut out = Vec::new();
    if positive("overlap_ms") || positive("stale_work") {
        out.push(format!("{what}: two leaders at once"));
    }
    if let Some(Json::Arr(errors)) = field("errors") {
        for e in errors {
            if let Json::Str(e) = e {
                out.push(format!("{what}: {e}"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_leaders_and_errors_are_failures_a_slow_failover_is_not() {
        let row = |overlap: f64, stale: f64, errors: &[&str]| {
            vec![
                ("overlap_ms".to_string(), Json::Num(overlap)),
                ("stale_work".to_string(), Json::Num(stale)),
                ("failover_ms".to_string(), Json::Num(900.0)),
                (
                    "errors".to_string(),
                    Json::Arr(errors.iter().map(|e| Json::Str(e.to_string())).collect()),
                ),
            ]
        };
        assert!(row_failures("x", &row(0.0, 0.0, &[])).is_empty());
        assert_eq!(
            row_failures("x", &row(1.5, 0.0, &[])),
            ["x: two leaders at once"]
        );
        assert_eq!(
            row_failures("x", &row(0.0, 2.0, &["no leader within 20 s"])),
            ["x: two leaders at once", "x: no leader within 20 s"]
        );
    }
}
