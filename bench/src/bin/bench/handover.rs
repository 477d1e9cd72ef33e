//! Graceful hand-over: `resign` until another leads.

use std::time::Duration;

use elect_bench::group::now_ns;
use elect_core::rand::Rng;

use crate::contenders::{Contender, Ctx};
use crate::rounds::{elected, leader_then_pause, millis};

/// Graceful hand-over: ms from `resign` until another leads; and, for elect, ms from that
/// election until an observer reports the new leader: on a store an `Observer` process of the
/// election (`candidate --observe`, what a router or dashboard runs), on raft the third node —
/// a follower throughout, whose `Event::LeaderObserved` comes from the new leader's heartbeat.
pub(crate) fn handover(
    ctx: &Ctx,
    c: &Contender,
    tag: &str,
    rng: &mut Rng,
) -> Result<(f64, Option<f64>), String> {
    let mut g = ctx.group_observed(c, 3, tag, true)?;
    let result = (|| {
        let leader = leader_then_pause(&mut g, c, rng)?;
        let asked = now_ns();
        g.send(leader.who, "resign");
        let next = g
            .wait(Duration::from_secs(20), |l| {
                elected(l) && l.who != leader.who
            })
            .ok_or("no hand-over within 20 s")?;
        let handover = millis(asked, next.ns);
        if !c.is_elect() {
            return Ok((handover, None));
        }
        let term = next.rest.first().cloned().unwrap_or_default();
        let third = if c.is_raft() {
            (0..3).find(|k| *k != leader.who && *k != next.who)
        } else {
            Some(3)
        };
        let notice = |l: &elect_bench::group::Line| {
            Some(l.who) == third && l.event == "observed" && l.rest.first() == Some(&term)
        };
        // The notice may have arrived before the `elected` line was read (raft: at once).
        let seen = match g.log.iter().find(|l| notice(l)).cloned() {
            Some(line) => Some(line),
            None => g.wait(Duration::from_secs(10), notice),
        };
        Ok((handover, seen.map(|l| millis(next.ns, l.ns))))
    })();
    g.stop();
    result
}
