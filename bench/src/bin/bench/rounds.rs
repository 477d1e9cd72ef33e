//! What every scenario shares: the first leader, and a random point in its lease.

use std::time::Duration;

use elect_bench::group::{Group, Line};
use elect_core::rand::Rng;

use crate::contenders::{Contender, TTL_MS};

pub(crate) fn elected(l: &Line) -> bool {
    l.event == "elected"
}

pub(crate) fn millis(from: u128, to: u128) -> f64 {
    (to as f64 - from as f64) / 1e6
}

/// Waits for the first leader, then a random point in its lease (raft: in its first 500 ms).
pub(crate) fn leader_then_pause(
    g: &mut Group,
    c: &Contender,
    rng: &mut Rng,
) -> Result<Line, String> {
    let leader = g
        .wait(Duration::from_secs(20), elected)
        .ok_or("no leader within 20 s")?;
    let spread = if c.is_raft() { 500 } else { TTL_MS };
    g.collect(Duration::from_millis(300 + rng.below(spread)));
    Ok(leader)
}
