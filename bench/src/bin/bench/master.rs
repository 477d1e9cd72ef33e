//! Master crash on a replicated Redis: SIGKILL of the master that serves the election until a
//! candidate is elected again (on the promoted replica, after the quarantine), then the old
//! master is started again (empty, as a replica) and the topology made whole before the next
//! round.

use std::time::{Duration, Instant};

use elect_bench::group::now_ns;
use elect_core::rand::Rng;

use crate::contenders::{election, topology, Contender, Ctx};
use crate::rounds::{elected, leader_then_pause, millis};

/// ms from the master's SIGKILL until a candidate is elected again.
pub(crate) fn master_crash(
    ctx: &Ctx,
    c: &Contender,
    tag: &str,
    rng: &mut Rng,
) -> Result<f64, String> {
    let mut g = ctx.group(c, 3, tag)?;
    let result = (|| {
        leader_then_pause(&mut g, c, rng)?;
        let mut topology = topology(c.coord)?;
        // Every key of an election shares the hash tag `{election}`.
        let master = topology
            .master_of(&format!("{{{}}}", election(c, tag)))
            .ok_or("no master serves the election")?;
        let killed = now_ns();
        topology.nodes[master].signal("KILL");
        let next = g
            .wait(Duration::from_secs(60), |l| elected(l) && l.ns > killed)
            .ok_or("nobody elected within 60 s of the master's crash")?;
        let failover = millis(killed, next.ns);
        topology.restart(master)?;
        let healing = Instant::now();
        while !topology.healthy() {
            if healing.elapsed() > Duration::from_secs(90) {
                return Err("the topology is not whole 90 s after the master restarted".into());
            }
            g.collect(Duration::from_millis(200));
        }
        Ok(failover)
    })();
    g.stop();
    result
}
