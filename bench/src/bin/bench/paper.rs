//! Raft at the Raft paper's settings (Ongaro & Ousterhout 2014, §9.3, Fig. 16): five voters, the
//! leader SIGKILLed at a random point of its heartbeat interval (half the minimum election
//! timeout, as in the paper), and the time until another node is elected. The killed node is
//! started again (same id, port and state directory) and has heard the leader before the next
//! trial, so every trial starts with five live voters, as the paper's did.

use std::fmt::Write as _;
use std::time::Duration;

use elect_bench::report::{ms, Json};
use elect_core::rand::Rng;

use crate::contenders::Ctx;
use crate::trials::{
    crash_trials, free_ports, mean, median, opt, raft_voter, row_failures, worst, Measured, Trials,
};

const VOTERS: usize = 5;

/// One of the paper's settings and what the paper reports for it.
pub(crate) struct Setting {
    heartbeat_ms: u64,
    min_ms: u64,
    max_ms: u64,
    /// The paper's figures, as the issue quotes them: (median, mean, worst) where given, in ms.
    paper: (Option<f64>, Option<f64>, Option<f64>),
}

pub(crate) const SETTINGS: [Setting; 3] = [
    Setting {
        heartbeat_ms: 75,
        min_ms: 150,
        max_ms: 155,
        paper: (Some(287.0), None, None),
    },
    Setting {
        heartbeat_ms: 75,
        min_ms: 150,
        max_ms: 200,
        paper: (None, None, Some(513.0)),
    },
    Setting {
        heartbeat_ms: 6,
        min_ms: 12,
        max_ms: 24,
        paper: (None, Some(35.0), Some(152.0)),
    },
];

/// Every setting, `trials` crashes each.
pub(crate) fn paper(ctx: &Ctx, trials: usize, rng: &mut Rng) -> Json {
    let mut out = Vec::new();
    for s in &SETTINGS {
        let m = setting(ctx, s, trials, rng);
        let mean = mean(&m.failover);
        eprintln!(
            "bench: raft-5 at {}/{}–{} ms: {} trials, failover median {} / mean {} / worst {} ms \
             (paper: median {} / mean {} / worst {}); unprovoked elections {}, overlap {} ms, \
             stale work {}{}",
            s.heartbeat_ms,
            s.min_ms,
            s.max_ms,
            m.failover.len(),
            opt(median(&m.failover)),
            opt(mean),
            opt(worst(&m.failover)),
            opt(s.paper.0),
            opt(s.paper.1),
            opt(s.paper.2),
            m.unprovoked,
            ms(m.overlap_ms),
            m.stale_work,
            if m.errors.is_empty() {
                String::new()
            } else {
                format!("; errors: {}", m.errors.join("; "))
            }
        );
        let num = |v: Option<f64>| v.map_or(Json::Null, Json::Num);
        out.push(Json::Obj(vec![
            ("heartbeat_ms".into(), Json::Num(s.heartbeat_ms as f64)),
            ("election_timeout_min_ms".into(), Json::Num(s.min_ms as f64)),
            ("election_timeout_max_ms".into(), Json::Num(s.max_ms as f64)),
            ("trials".into(), Json::Num(m.failover.len() as f64)),
            ("failover_ms".into(), Json::stats(&m.failover)),
            ("failover_mean_ms".into(), num(mean)),
            ("paper_median_ms".into(), num(s.paper.0)),
            ("paper_mean_ms".into(), num(s.paper.1)),
            ("paper_worst_ms".into(), num(s.paper.2)),
            (
                "unprovoked_elections".into(),
                Json::Num(m.unprovoked as f64),
            ),
            ("overlap_ms".into(), Json::Num(m.overlap_ms)),
            ("stale_work".into(), Json::Num(m.stale_work as f64)),
            (
                "errors".into(),
                Json::Arr(m.errors.iter().cloned().map(Json::Str).collect()),
            ),
        ]));
    }
    Json::Arr(out)
}

/// What in [`paper`]'s results is elect's failure, not a figure: two leaders at once, work
/// done without leading, a trial that found no leader.
pub(crate) fn broken(results: &Json) -> Vec<String> {
    let Json::Arr(rows) = results else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for row in rows {
        let Json::Obj(f) = row else { continue };
        let field = |k: &str| f.iter().find(|(n, _)| n == k).map(|(_, v)| v);
        let num = |k: &str| match field(k) {
            Some(Json::Num(n)) => *n,
            _ => 0.0,
        };
        let what = format!(
            "raft-5 at {}/{}–{} ms",
            num("heartbeat_ms"),
            num("election_timeout_min_ms"),
            num("election_timeout_max_ms")
        );
        out.extend(row_failures(&what, f));
    }
    out
}

/// The markdown rows of [`paper`]'s results.
pub(crate) fn table(results: &Json) -> String {
    let Json::Arr(rows) = results else {
        return String::new();
    };
    let mut t = String::from(
        "\nRaft at the Raft paper's settings (5 voters over loopback TCP with HMAC, the leader \
         SIGKILLed at a random point of its heartbeat interval; ms from the kill until another \
         node is elected):\n\n\
         | heartbeat / election timeout | trials | median | mean | p99 | worst | paper (median / mean / worst) | unprovoked elections | overlap |\n\
         |---|---|---|---|---|---|---|---|---|\n",
    );
    for row in rows {
        let Json::Obj(f) = row else { continue };
        let get = |k: &str| {
            f.iter().find(|(n, _)| n == k).and_then(|(_, v)| match v {
                Json::Num(n) => Some(*n),
                _ => None,
            })
        };
        let stat = |k: &str| {
            f.iter()
                .find(|(n, _)| n == "failover_ms")
                .and_then(|(_, v)| match v {
                    Json::Obj(s) => s.iter().find(|(n, _)| n == k).and_then(|(_, v)| match v {
                        Json::Num(n) => Some(*n),
                        _ => None,
                    }),
                    _ => None,
                })
        };
        let _ = writeln!(
            t,
            "| {} ms / {}–{} ms | {} | {} | {} | {} | {} | {} / {} / {} | {} | {} ms |",
            get("heartbeat_ms").unwrap_or(0.0),
            get("election_timeout_min_ms").unwrap_or(0.0),
            get("election_timeout_max_ms").unwrap_or(0.0),
            get("trials").unwrap_or(0.0),
            opt(stat("p50")),
            opt(get("failover_mean_ms")),
            opt(stat("p99")),
            opt(stat("max")),
            opt(get("paper_median_ms")),
            opt(get("paper_mean_ms")),
            opt(get("paper_worst_ms")),
            get("unprovoked_elections").unwrap_or(0.0),
            opt(get("overlap_ms")),
        );
    }
    t
}

/// Five voters at `s`, `trials` crashes of whoever leads.
fn setting(ctx: &Ctx, s: &Setting, trials: usize, rng: &mut Rng) -> Measured {
    let dir = std::env::temp_dir().join(format!(
        "elect-bench-paper-{}-{}-{}",
        std::process::id(),
        s.min_ms,
        s.max_ms
    ));
    let ports = match free_ports(VOTERS) {
        Ok(p) => p,
        Err(e) => return Measured::failed(e),
    };
    let election = format!("bench.paper.{}.{}", s.min_ms, s.max_ms);
    let timing = (s.heartbeat_ms, s.min_ms, s.max_ms);
    let command = |k: usize| raft_voter(&ctx.candidate, k, &ports, &election, &dir, timing);
    let heartbeat = Duration::from_millis(s.heartbeat_ms);
    // A random point of the heartbeat interval (any instant is one, uniformly), after a few
    // heartbeats for the restarted voter to settle in.
    let t = Trials {
        members: VOTERS,
        command: &command,
        same_slot: true,
        steady: Duration::ZERO,
        settle: heartbeat * 4,
        spread: heartbeat,
        trials,
    };
    crash_trials(&t, Some(&dir), rng)
}
