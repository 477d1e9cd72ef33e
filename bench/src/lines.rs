//! The candidates' event lines, the clock they are stamped with, and the leaderships they tell:
//! one parser for the bench and the chaos checker.

use std::collections::BTreeMap;
use std::time::Duration;

/// One event line: who printed it, its CLOCK_MONOTONIC stamp, the event word and the rest.
#[derive(Debug, Clone)]
pub struct Line {
    pub who: usize,
    pub ns: u128,
    pub event: String,
    pub rest: Vec<String>,
}

/// CLOCK_MONOTONIC now, in nanoseconds (the clock the candidates stamp their lines with).
pub fn now_ns() -> u128 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32).as_nanos()
}

/// One leadership as a process reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interval {
    /// The process (index in the log).
    pub who: usize,
    /// The candidate it runs as (restarts keep the slot).
    pub slot: usize,
    /// The term it led in.
    pub term: u64,
    /// `elected` stamp.
    pub start: u128,
    /// `lost` stamp, the kill, or the end of the run.
    pub end: u128,
}

/// Every leadership in the log. `slot_of[who]` is the candidate a process ran as; `ended[who]`
/// when it was killed (its open interval ends there); open intervals end at `end`.
pub fn intervals(
    log: &[Line],
    slot_of: &[usize],
    ended: &[Option<u128>],
    end: u128,
) -> Vec<Interval> {
    let mut open: BTreeMap<usize, (u64, u128)> = BTreeMap::new();
    let mut out = Vec::new();
    let slot = |who: usize| slot_of.get(who).copied().unwrap_or(who);
    for line in log {
        let term = line.rest.first().and_then(|t| t.parse::<u64>().ok());
        match (line.event.as_str(), term) {
            // Peers without terms print none: their leaderships count, in term 0.
            ("elected", term) => {
                if let Some((t, start)) = open.insert(line.who, (term.unwrap_or(0), line.ns)) {
                    // Elected twice without a loss in between: the first ended at the second.
                    out.push(Interval {
                        who: line.who,
                        slot: slot(line.who),
                        term: t,
                        start,
                        end: line.ns,
                    });
                }
            }
            ("lost", _) => {
                if let Some((term, start)) = open.remove(&line.who) {
                    out.push(Interval {
                        who: line.who,
                        slot: slot(line.who),
                        term,
                        start,
                        end: line.ns.max(start),
                    });
                }
            }
            _ => {}
        }
    }
    for (who, (term, start)) in open {
        let stop = ended.get(who).copied().flatten().unwrap_or(end);
        out.push(Interval {
            who,
            slot: slot(who),
            term,
            start,
            end: stop.max(start),
        });
    }
    out.sort_by_key(|i| (i.start, i.end));
    out
}
