//! Graceful hand-over: `resign` until another leads.

use std::time::Duration;

use elect_bench::group::now_ns;
use elect_core::rand::Rng;

use crate::contenders::{Contender, Ctx};
use crate::rounds::{elected, leader_then_pause, millis};

/// How long after the new leader's election the requests of a hand-over are counted: the
/// losing candidates' attempts and the observer's notice come within it (elect's leader renews
/// at a third of the 2 s TTL, after it); a peer's polling during it is counted too, as part of
/// what its hand-over costs.
pub(crate) const SETTLED: Duration = Duration::from_millis(250);

/// One hand-over round.
pub(crate) struct HandOver {
    /// ms from `resign` until another leads.
    pub(crate) ms: f64,
    /// elect only: ms from that election until an observer reports it.
    pub(crate) notice: Option<f64>,
    /// One server only: requests it counted from the resign until [`SETTLED`] after the
    /// election (three candidates, and elect's observer).
    pub(crate) requests: Option<u64>,
}

/// Graceful hand-over: ms from `resign` until another leads; and, for elect, ms from that
/// election until an observer reports the new leader: on a store an `Observer` process of the
/// election (`candidate --observe`, what a router or dashboard runs), on raft the third node —
/// a follower throughout, whose `Event::LeaderObserved` comes from the new leader's heartbeat.
/// On one server (not raft, not the replicated topologies), also the requests the server
/// counted from the resign until [`SETTLED`] after the new leader's election.
pub(crate) fn handover(
    ctx: &Ctx,
    c: &Contender,
    tag: &str,
    rng: &mut Rng,
) -> Result<HandOver, String> {
    let mut g = ctx.group_observed(c, 3, tag, true)?;
    let result = (|| {
        let leader = leader_then_pause(&mut g, c, rng)?;
        let counted = !c.is_raft() && !c.coord.is_topology();
        let mark = if counted {
            Some(ctx.counter_mark(c.coord)?)
        } else {
            None
        };
        let asked = now_ns();
        g.send(leader.who, "resign");
        let next = g
            .wait(Duration::from_secs(20), |l| {
                elected(l) && l.who != leader.who
            })
            .ok_or("no hand-over within 20 s")?;
        let handover = millis(asked, next.ns);
        let requests = |g: &mut elect_bench::group::Group| match mark {
            Some(ref mark) => {
                let since = Duration::from_nanos(now_ns().saturating_sub(next.ns) as u64);
                g.collect(SETTLED.saturating_sub(since));
                ctx.requests_since(c.coord, mark).map(Some)
            }
            None => Ok(None),
        };
        if !c.is_elect() {
            let requests = requests(&mut g)?;
            return Ok(HandOver {
                ms: handover,
                notice: None,
                requests,
            });
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
        Ok(HandOver {
            ms: handover,
            notice: seen.map(|l| millis(next.ns, l.ns)),
            requests: requests(&mut g)?,
        })
    })();
    g.stop();
    result
}
