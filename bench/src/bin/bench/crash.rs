//! Crash failover: SIGKILL of the leader's process until another leads, with the lease left.

use std::time::Duration;

use elect_core::rand::Rng;
use rustix::process::Signal;

use elect_bench::group::now_ns;

use crate::contenders::{Contender, Ctx};
use crate::handover::SETTLED;
use crate::rounds::{elected, leader_then_pause, millis};

/// One crash round.
pub(crate) struct Crash {
    /// ms from the SIGKILL until another leads.
    pub(crate) ms: f64,
    /// ms left on the lease at the kill, where the lease can be read.
    pub(crate) left: Option<f64>,
    /// One server only: requests it counted from the kill until [`SETTLED`] after the next
    /// election (the surviving candidates' acquisition, and a peer's polling meanwhile).
    pub(crate) requests: Option<u64>,
}

/// Crash failover: SIGKILL of the leader until another leads, the lease left at the kill, and
/// on one server the requests the acquisition cost.
pub(crate) fn crash(ctx: &Ctx, c: &Contender, tag: &str, rng: &mut Rng) -> Result<Crash, String> {
    let mut g = ctx.group(c, 3, tag)?;
    let result = (|| {
        let leader = leader_then_pause(&mut g, c, rng)?;
        let mut lease = None;
        if c.lease_readable() {
            g.send(leader.who, "lease");
            let reply = g.wait(Duration::from_secs(2), |l| {
                l.who == leader.who && l.event == "lease"
            });
            if let Some(l) = reply {
                lease = l
                    .rest
                    .first()
                    .and_then(|r| r.parse::<u128>().ok())
                    .map(|r| (l.ns, r));
            }
        }
        let mark = if !c.is_raft() && !c.coord.is_topology() {
            Some(ctx.counter_mark(c.coord)?)
        } else {
            None
        };
        let killed = g.signal(leader.who, Signal::KILL);
        let next = g
            .wait(c.crash_bound(), |l| elected(l) && l.who != leader.who)
            .ok_or(format!("no failover within {:?}", c.crash_bound()))?;
        let requests = match mark {
            Some(mark) => {
                let since = Duration::from_nanos(now_ns().saturating_sub(next.ns) as u64);
                g.collect(SETTLED.saturating_sub(since));
                Some(ctx.requests_since(c.coord, &mark)?)
            }
            None => None,
        };
        // In f64: the kill can be stamped a few µs "before" the reply it followed (each
        // process maps its clock to the shared monotonic one with an error), and a u128
        // difference then wrapped around (seen once: a slack p99 of 3.4e32 ms).
        let left =
            lease.map(|(read, remaining)| (remaining as f64 - (killed as f64 - read as f64)) / 1e6);
        Ok(Crash {
            ms: millis(killed, next.ns),
            left,
            requests,
        })
    })();
    g.stop();
    result
}
