//! Graceful hand-over: `resign` until another leads.

use std::time::Duration;

use elect_bench::group::now_ns;
use elect_core::rand::Rng;

use crate::contenders::{Contender, Ctx};
use crate::rounds::{elected, leader_then_pause, millis};

/// Graceful hand-over: ms from `resign` until another leads.
pub(crate) fn handover(ctx: &Ctx, c: &Contender, tag: &str, rng: &mut Rng) -> Result<f64, String> {
    let mut g = ctx.group(c, 3, tag)?;
    let result = (|| {
        let leader = leader_then_pause(&mut g, c, rng)?;
        let asked = now_ns();
        g.send(leader.who, "resign");
        let next = g
            .wait(Duration::from_secs(20), |l| {
                elected(l) && l.who != leader.who
            })
            .ok_or("no hand-over within 20 s")?;
        Ok(millis(asked, next.ns))
    })();
    g.stop();
    result
}
