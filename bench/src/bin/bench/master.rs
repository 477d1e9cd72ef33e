//! Master crash on a replicated Redis: SIGKILL of the master that serves the election until a
//! candidate is elected again. As a supervisor would, the dead node is started again (empty, as
//! a replica of the promoted one) as soon as the failover has happened: with `WAIT` for every
//! replica, nothing is granted until it is back. The topology is made whole before the next
//! round.

use std::time::{Duration, Instant};

use elect_bench::group::{now_ns, Group};
use elect_core::rand::Rng;
use elect_tests::topology::Topology;

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
        let key = format!("{{{}}}", election(c, tag));
        let master = topology
            .master_of(&key)
            .ok_or("no master serves the election")?;
        let killed = now_ns();
        topology.nodes[master].signal("KILL");
        let outcome = (|| {
            let failing = Instant::now();
            while topology.master_of(&key).is_none_or(|m| m == master) {
                // Generous: Sentinel retries a failed failover only after twice its failover
                // timeout. (CI's quick run once saw none within 60 s: its Sentinels had not
                // yet found each other; `Topology::sentinel` now waits until they have.)
                if failing.elapsed() > Duration::from_secs(120) {
                    return Err(format!(
                        "no failover within 120 s of the master's crash; now:\n{}",
                        topology.sentinel_report()
                    ));
                }
                g.collect(Duration::from_millis(100));
            }
            topology.restart(master)?;
            let next = g
                .wait(Duration::from_secs(60), |l| elected(l) && l.ns > killed)
                .ok_or("nobody elected within 60 s of the master's crash")?;
            Ok(millis(killed, next.ns))
        })();
        // Whatever happened, the next round starts on a whole topology.
        let healed = heal(&mut topology, master, &mut g);
        let failover = outcome?;
        healed.map(|()| failover)
    })();
    g.stop();
    result
}

/// Starts `master` again if it is not running and waits until the topology is whole.
fn heal(topology: &mut Topology, master: usize, g: &mut Group) -> Result<(), String> {
    if !elect_tests::topology::command(topology.nodes[master].port, "PING").contains("PONG") {
        topology.restart(master)?;
    }
    let healing = Instant::now();
    while !topology.healthy() {
        if healing.elapsed() > Duration::from_secs(90) {
            return Err("the topology is not whole 90 s after the master restarted".into());
        }
        g.collect(Duration::from_millis(200));
    }
    Ok(())
}
