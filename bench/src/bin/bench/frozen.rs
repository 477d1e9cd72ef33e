//! A frozen leader (SIGSTOP for 3×TTL): failover, overlap of believed leadership, stale work.

use std::time::{Duration, Instant};

use elect_bench::group::{now_ns, overlap};
use elect_core::rand::Rng;
use rustix::process::Signal;

use crate::contenders::{Contender, Ctx, TTL_MS};
use crate::rounds::{elected, leader_then_pause, millis};

/// One frozen-leader round.
pub(crate) struct Frozen {
    /// ms from SIGSTOP until another leads, if that happened during the freeze.
    pub(crate) failover: Option<f64>,
    pub(crate) overlap_ms: f64,
    pub(crate) stale_work: usize,
    /// Whether the first thing the woken leader printed was its loss (None: it printed nothing).
    pub(crate) loss_first: Option<bool>,
}

pub(crate) fn frozen(ctx: &Ctx, c: &Contender, tag: &str, rng: &mut Rng) -> Result<Frozen, String> {
    let mut g = ctx.group(c, 3, tag)?;
    let result = (|| {
        let leader = leader_then_pause(&mut g, c, rng)?;
        let freeze = Duration::from_millis(3 * TTL_MS);
        let stopped_at = Instant::now();
        let stopped = g.signal(leader.who, Signal::STOP);
        let next = g.wait(freeze, |l| elected(l) && l.who != leader.who);
        g.collect(freeze.saturating_sub(stopped_at.elapsed()));
        let woken_from = g.log.len();
        g.signal(leader.who, Signal::CONT);
        g.collect(Duration::from_millis(TTL_MS));
        let end = now_ns();
        let first = g.log[woken_from..].iter().find(|l| l.who == leader.who);
        let loss_first = first.map(|l| l.event == "lost");
        let (overlap_ms, stale_work) = overlap(&g.log, g.len(), end);
        Ok(Frozen {
            failover: next.map(|l| millis(stopped, l.ns)),
            overlap_ms,
            stale_work,
            loss_first,
        })
    })();
    g.stop();
    result
}
