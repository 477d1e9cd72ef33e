//! The chaos checker and the fenced resource, for the process chaos tests
//! (`bench/tests/chaos.rs`, `cargo xtask chaos`).
//!
//! The checker reads every candidate process's event lines (CLOCK_MONOTONIC, so lines of
//! different processes compare) and finds:
//! - two processes believing they lead at the same instant (`elected` … `lost` intervals;
//!   a `lost` line states the instant leadership ended; a killed process's interval ends at
//!   the kill);
//! - `work` stamped outside the process's own leadership;
//! - a process whose terms go back, and successive leaders whose terms do not increase;
//! - a fault after which no leader works within the bound;
//! - writes the fenced resource accepted from a term lower than one it had already seen;
//! - with the register (the Jepsen lock workload: each leader reads a counter and writes it
//!   back plus one, both stamped with its term), increments lost because another leader's
//!   write came between a read and its write. A fenced register refuses a read or write whose
//!   term is below the highest it has seen; an unfenced one (`Fence::start_unfenced`) accepts
//!   everything and only counts, to show what the fence prevents.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use crate::lines::Line;
pub use crate::lines::{intervals, Interval};

/// One injected fault.
#[derive(Debug, Clone)]
pub struct Fault {
    /// What it was (`kill`, `freeze`, `blackhole`, …).
    pub kind: &'static str,
    /// When it started and when it healed (CLOCK_MONOTONIC ns).
    pub started: u128,
    /// When it healed.
    pub healed: u128,
    /// The first `work` line at or after `healed`, if any within the bound.
    pub recovered: Option<u128>,
}

/// What the fenced resource saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FenceStats {
    /// Writes accepted.
    pub accepted: u64,
    /// Writes refused because a higher term had been seen (a stale leader, caught).
    pub rejected: u64,
    /// Writes accepted from a term lower than one already seen (must stay 0).
    pub accepted_stale: u64,
    /// The highest term seen.
    pub highest: u64,
    /// Register increments acknowledged (`write` answered `ok`).
    pub increments: u64,
    /// Acknowledged increments the register does not show (`increments − value`, as Jepsen
    /// counts them): a write whose leader read a value that changed before the write landed
    /// puts back an older count and loses the increments made in between.
    pub lost_increments: u64,
    /// The register's value (from 0).
    pub value: u64,
}

/// A fenced resource: every leader writes `<id> <term>\n` and reads `ok` or `stale`. It
/// refuses a term lower than the highest it has seen. It is also a register: `read <id>
/// <term>` answers `value <v>` (or `stale`), `write <id> <term> <read> <new>` answers `ok` (or
/// `stale`), each raising the highest term seen.
#[derive(Debug, Clone, Default)]
pub struct Fence {
    stats: Arc<Mutex<FenceStats>>,
}

impl Fence {
    /// Listens on a loopback port; returns the fence and its address.
    pub async fn start() -> std::io::Result<(Fence, std::net::SocketAddr)> {
        Self::listen(true, "127.0.0.1".parse().expect("an address")).await
    }

    /// Listens on a free port of `ip` (one of this host's addresses: for candidates in
    /// containers, the gateway of their Docker network).
    pub async fn start_at(ip: std::net::IpAddr) -> std::io::Result<(Fence, std::net::SocketAddr)> {
        Self::listen(true, ip).await
    }

    /// A resource that checks nothing: every write is accepted, and what a fence would have
    /// refused is only counted (`accepted_stale`, `lost_increments`).
    pub async fn start_unfenced() -> std::io::Result<(Fence, std::net::SocketAddr)> {
        Self::listen(false, "127.0.0.1".parse().expect("an address")).await
    }

    async fn listen(
        fenced: bool,
        ip: std::net::IpAddr,
    ) -> std::io::Result<(Fence, std::net::SocketAddr)> {
        let listener = TcpListener::bind((ip, 0)).await?;
        let addr = listener.local_addr()?;
        let fence = Fence::default();
        let stats = fence.stats.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let stats = stats.clone();
                tokio::spawn(async move {
                    let (read, mut write) = stream.into_split();
                    let mut lines = BufReader::new(read).lines();
                    while let Ok(Some(line)) = lines.next_line().await {
                        let answer = {
                            let mut s = stats.lock().unwrap_or_else(|p| p.into_inner());
                            serve(&mut s, fenced, &line)
                        };
                        let Some(verdict) = answer else { return };
                        if write.write_all(verdict.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Ok((fence, addr))
    }

    /// The counts so far.
    pub fn stats(&self) -> FenceStats {
        *self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One request to the resource; the reply line, or `None` for a malformed request.
fn serve(s: &mut FenceStats, fenced: bool, line: &str) -> Option<String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let number = |k: usize| words.get(k).and_then(|w| w.parse::<u64>().ok());
    let (term, op) = match words.first() {
        Some(&"read") => (number(2)?, None),
        Some(&"write") => (number(2)?, Some((number(3)?, number(4)?))),
        _ => (number(1)?, None),
    };
    let stale = term < s.highest;
    if stale && fenced {
        s.rejected += 1;
        return Some("stale\n".into());
    }
    s.accepted += 1;
    if stale {
        s.accepted_stale += 1;
    }
    s.highest = s.highest.max(term);
    Some(match (words[0], op) {
        ("read", _) => format!("value {}\n", s.value),
        (_, Some((_read, new))) => {
            s.increments += 1;
            s.value = new;
            s.lost_increments = s.increments.saturating_sub(s.value);
            "ok\n".into()
        }
        _ => "ok\n".into(),
    })
}

/// What a run found.
#[derive(Debug, Default)]
pub struct Findings {
    /// Leaderships in the run.
    pub leaderships: usize,
    /// Leaderships whose candidate differs from the previous one's.
    pub leader_changes: usize,
    /// Instants at which two believed they lead (each with its window).
    pub overlaps: usize,
    /// Processes whose terms went back, and successive leaders whose terms did not increase.
    pub term_regressions: usize,
    /// `work` outside the process's own leadership.
    pub stray_work: usize,
    /// Faults after which no leader worked within the bound.
    pub slow_recoveries: usize,
    /// Worst recovery per fault kind, in ms (from the heal to the first `work`).
    pub worst_recovery_ms: BTreeMap<&'static str, f64>,
    /// Faults injected per kind.
    pub faults: BTreeMap<&'static str, usize>,
    /// Every violation, with the window of lines around it.
    pub violations: Vec<String>,
    /// For the timeline picture (`plot::timeline`): the first line's stamp, the
    /// run's end, every leadership and every fault.
    pub began: u128,
    /// The run's end (CLOCK_MONOTONIC ns).
    pub ended: u128,
    /// Every leadership, in order.
    pub timeline: Vec<Interval>,
    /// Every fault, in order.
    pub fault_spans: Vec<Fault>,
}

impl Findings {
    /// One line per figure, for test output and the issue notes.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "faults {:?}; leaderships {}, leader changes {}, overlaps {}, term regressions {}, stray work {}, slow recoveries {}; worst recovery ms {:?}",
            self.faults,
            self.leaderships,
            self.leader_changes,
            self.overlaps,
            self.term_regressions,
            self.stray_work,
            self.slow_recoveries,
            self.worst_recovery_ms
                .iter()
                .map(|(k, v)| (k, (v * 10.0).round() / 10.0))
                .collect::<BTreeMap<_, _>>()
        );
        if !self.violations.is_empty() {
            let _ = write!(s, "; {} violations", self.violations.len());
        }
        s
    }
}

fn window(log: &[Line], from: u128, to: u128) -> String {
    let lo = from.saturating_sub(300_000_000);
    let hi = to + 300_000_000;
    let mut s = String::new();
    for l in log
        .iter()
        .filter(|l| l.ns >= lo && l.ns <= hi && l.event != "fenced")
    {
        let _ = writeln!(
            s,
            "    {} #{} {} {}",
            l.ns,
            l.who,
            l.event,
            l.rest.join(" ")
        );
    }
    s
}

/// Checks a run. `bound_ns`: how soon after a fault heals some leader must work.
pub fn check(
    log: &[Line],
    slot_of: &[usize],
    ended: &[Option<u128>],
    end: u128,
    faults: &[Fault],
    bound_ns: u128,
    fence: FenceStats,
) -> Findings {
    let mut f = Findings::default();
    let all = intervals(log, slot_of, ended, end);
    f.leaderships = all.len();
    f.began = log.first().map_or(end, |l| l.ns);
    f.ended = end;
    f.timeline = all.clone();
    f.fault_spans = faults.to_vec();
    for pair in all.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        if a.slot != b.slot {
            f.leader_changes += 1;
        }
        let regressed = if a.slot == b.slot {
            b.term < a.term
        } else {
            b.term <= a.term
        };
        if regressed {
            f.term_regressions += 1;
            f.violations.push(format!(
                "term regression: candidate {} led in term {} after candidate {} in term {}\n{}",
                b.slot,
                b.term,
                a.slot,
                a.term,
                window(log, a.start, b.start)
            ));
        }
    }
    for (i, a) in all.iter().enumerate() {
        for b in &all[i + 1..] {
            if b.start >= a.end {
                break;
            }
            if b.who != a.who && b.start < a.end && a.start < b.end {
                f.overlaps += 1;
                let (from, to) = (a.start.max(b.start), a.end.min(b.end));
                f.violations.push(format!(
                    "overlap: process {} (term {}) and process {} (term {}) both led for {:.1} ms\n{}",
                    a.who,
                    a.term,
                    b.who,
                    b.term,
                    (to - from) as f64 / 1e6,
                    window(log, from, to)
                ));
            }
        }
    }
    let mut last_term: BTreeMap<usize, u64> = BTreeMap::new();
    for line in log.iter().filter(|l| l.event == "elected") {
        let Some(term) = line.rest.first().and_then(|t| t.parse::<u64>().ok()) else {
            continue;
        };
        let slot = slot_of.get(line.who).copied().unwrap_or(line.who);
        if let Some(&before) = last_term.get(&slot) {
            if term < before {
                f.term_regressions += 1;
                f.violations.push(format!(
                    "candidate {slot} went back from term {before} to {term}\n{}",
                    window(log, line.ns, line.ns)
                ));
            }
        }
        last_term.insert(slot, term);
    }
    for line in log.iter().filter(|l| l.event == "work") {
        let own = all
            .iter()
            .any(|i| i.who == line.who && i.start <= line.ns && line.ns <= i.end);
        if !own {
            f.stray_work += 1;
            f.violations.push(format!(
                "process {} worked outside its leadership\n{}",
                line.who,
                window(log, line.ns, line.ns)
            ));
        }
    }
    for fault in faults {
        *f.faults.entry(fault.kind).or_default() += 1;
        match fault.recovered {
            Some(at) if at.saturating_sub(fault.healed) <= bound_ns => {
                let ms = at.saturating_sub(fault.healed) as f64 / 1e6;
                let worst = f.worst_recovery_ms.entry(fault.kind).or_insert(0.0);
                *worst = worst.max(ms);
            }
            _ => {
                f.slow_recoveries += 1;
                f.violations.push(format!(
                    "no leader worked within {} ms after a {} fault healed\n{}",
                    bound_ns / 1_000_000,
                    fault.kind,
                    window(log, fault.healed, fault.healed + bound_ns)
                ));
            }
        }
    }
    if fence.accepted_stale > 0 {
        f.violations.push(format!(
            "the fenced resource accepted {} stale writes",
            fence.accepted_stale
        ));
    }
    if fence.lost_increments > 0 {
        f.violations.push(format!(
            "the register lost {} of {} acknowledged increments",
            fence.lost_increments, fence.increments
        ));
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two leaders interleave a read-modify-write: term 5 reads, term 6 reads and writes, then
    /// term 5 writes what it read plus one.
    fn interleaved(fenced: bool) -> (FenceStats, Vec<String>) {
        let mut s = FenceStats::default();
        let replies = [
            "read a 5",
            "read b 6",
            "write b 6 0 1",
            "write a 5 0 1",
            "read b 6",
            "write b 6 1 2",
        ]
        .iter()
        .map(|r| serve(&mut s, fenced, r).unwrap().trim().to_owned())
        .collect();
        (s, replies)
    }

    #[test]
    fn a_fenced_register_refuses_the_stale_write() {
        let (s, replies) = interleaved(true);
        assert_eq!(
            replies,
            ["value 0", "value 0", "ok", "stale", "value 1", "ok"]
        );
        assert_eq!((s.increments, s.lost_increments, s.value), (2, 0, 2));
        assert_eq!((s.rejected, s.accepted_stale), (1, 0));
    }

    #[test]
    fn an_unfenced_register_counts_what_it_lost() {
        let (s, replies) = interleaved(false);
        assert_eq!(replies, ["value 0", "value 0", "ok", "ok", "value 1", "ok"]);
        // a's write put back 1 over b's 1: one of three acknowledged increments is gone.
        assert_eq!((s.increments, s.lost_increments, s.value), (3, 1, 2));
        assert_eq!((s.rejected, s.accepted_stale), (0, 1));
        assert!(serve(&mut FenceStats::default(), true, "write a x").is_none());
    }

    fn l(who: usize, ms: u128, event: &str, term: u64) -> Line {
        Line {
            who,
            ns: ms * 1_000_000,
            event: event.into(),
            rest: vec![term.to_string()],
        }
    }

    #[test]
    fn a_clean_hand_over_passes() {
        let log = [
            l(0, 0, "elected", 5),
            l(0, 10, "work", 5),
            l(0, 100, "lost", 5),
            l(1, 150, "elected", 6),
            l(1, 160, "work", 6),
        ];
        let faults = [Fault {
            kind: "kill",
            started: 90_000_000,
            healed: 100_000_000,
            recovered: Some(160_000_000),
        }];
        let f = check(
            &log,
            &[0, 1],
            &[None, None],
            200_000_000,
            &faults,
            1_000_000_000,
            FenceStats::default(),
        );
        assert!(f.violations.is_empty(), "{:?}", f.violations);
        assert_eq!((f.leaderships, f.leader_changes), (2, 1));
        assert_eq!(f.worst_recovery_ms.get("kill"), Some(&60.0));
    }

    #[test]
    fn overlaps_regressions_stray_work_and_slow_recoveries_are_caught() {
        let log = [
            l(0, 0, "elected", 5),
            l(1, 50, "elected", 6),
            l(0, 80, "work", 5),
            l(0, 100, "lost", 5),
            l(1, 120, "lost", 6),
            l(1, 130, "work", 6),
            l(2, 140, "elected", 4),
        ];
        let faults = [Fault {
            kind: "freeze",
            started: 0,
            healed: 10_000_000,
            recovered: None,
        }];
        let fence = FenceStats {
            accepted_stale: 1,
            ..FenceStats::default()
        };
        let f = check(
            &log,
            &[0, 1, 2],
            &[None, None, Some(150_000_000)],
            200_000_000,
            &faults,
            1_000_000_000,
            fence,
        );
        assert_eq!(f.overlaps, 1, "{:?}", f.violations);
        assert_eq!(f.term_regressions, 1);
        assert_eq!(f.stray_work, 1);
        assert_eq!(f.slow_recoveries, 1);
        assert_eq!(f.violations.len(), 5, "{:?}", f.violations);
        assert!(
            f.violations[0].contains("term regression")
                || f.violations.iter().any(|v| v.contains("overlap"))
        );
    }

    #[test]
    fn a_killed_leader_leads_until_the_kill() {
        let log = [l(0, 0, "elected", 5), l(1, 200, "elected", 6)];
        let all = intervals(&log, &[0, 1], &[Some(100_000_000), None], 300_000_000);
        assert_eq!(all[0].end, 100_000_000);
        let f = check(
            &log,
            &[0, 1],
            &[Some(100_000_000), None],
            300_000_000,
            &[],
            1,
            FenceStats::default(),
        );
        assert!(f.violations.is_empty(), "{:?}", f.violations);
    }
}
