//! Crash failover: SIGKILL of the leader's process until another leads, with the lease left.

use std::time::Duration;

use elect_core::rand::Rng;
use rustix::process::Signal;

use crate::contenders::{Contender, Ctx};
use crate::rounds::{elected, leader_then_pause, millis};

/// Crash failover: (ms from SIGKILL until another leads, lease left at the kill in ms).
pub(crate) fn crash(
    ctx: &Ctx,
    c: &Contender,
    tag: &str,
    rng: &mut Rng,
) -> Result<(f64, Option<f64>), String> {
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
        let killed = g.signal(leader.who, Signal::KILL);
        let next = g
            .wait(c.crash_bound(), |l| elected(l) && l.who != leader.who)
            .ok_or(format!("no failover within {:?}", c.crash_bound()))?;
        // In f64: the kill can be stamped a few µs "before" the reply it followed (each
        // process maps its clock to the shared monotonic one with an error), and a u128
        // difference then wrapped around (seen once: a slack p99 of 3.4e32 ms).
        let left =
            lease.map(|(read, remaining)| (remaining as f64 - (killed as f64 - read as f64)) / 1e6);
        Ok((millis(killed, next.ns), left))
    })();
    g.stop();
    result
}
