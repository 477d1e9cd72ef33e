//! Steady-state load on the server from one leader and nine followers.

use std::time::{Duration, Instant};

use elect_bench::group::Group;

use crate::contenders::{Contender, Coord, Ctx};
use crate::rounds::elected;

/// Steady-state load.
#[derive(Default, Clone, Copy)]
pub(crate) struct Load {
    /// Requests per second from clients, as the server counted them (Redis: MONITOR lines
    /// not from scripts; MariaDB: `Questions`; Mongo: opcounters).
    pub(crate) requests: Option<f64>,
    /// Redis only: commands per second by `INFO commandstats`, including those scripts run.
    pub(crate) executed: Option<f64>,
    /// Raft: messages per second sent by all voters.
    pub(crate) messages: Option<f64>,
}

pub(crate) fn load(ctx: &Ctx, c: &Contender, seconds: u64) -> Result<Load, String> {
    let n = match c.coord {
        Coord::Raft(n) => n,
        _ => 10,
    };
    let mut g = ctx.group(c, n, "load")?;
    let result = (|| {
        g.wait(Duration::from_secs(20), elected)
            .ok_or("no leader within 20 s")?;
        g.collect(Duration::from_secs(1));
        if c.is_raft() {
            let sent = |g: &mut Group| {
                (0..g.len())
                    .map(|k| {
                        g.send(k, "stats");
                        g.wait(Duration::from_secs(2), |l| l.who == k && l.event == "stats")
                            .and_then(|l| l.rest.first()?.parse::<u64>().ok())
                            .unwrap_or(0)
                    })
                    .sum::<u64>()
            };
            let (t0, s0) = (Instant::now(), sent(&mut g));
            g.collect(Duration::from_secs(seconds));
            let s1 = sent(&mut g);
            let messages = (s1 - s0) as f64 / t0.elapsed().as_secs_f64();
            return Ok(Load {
                messages: Some(messages),
                ..Load::default()
            });
        }
        let mark = ctx.counter_mark(c.coord)?;
        let monitored = if c.coord == Coord::Redis {
            Some(ctx.monitor(c.coord, seconds)?)
        } else {
            g.collect(Duration::from_secs(seconds));
            None
        };
        let per_s = ctx.requests_since(c.coord, &mark)? as f64 / mark.at.elapsed().as_secs_f64();
        Ok(match monitored {
            Some((clients, _)) => Load {
                requests: Some(clients as f64 / seconds as f64),
                executed: Some(per_s),
                messages: None,
            },
            None => Load {
                requests: Some(per_s),
                ..Load::default()
            },
        })
    })();
    g.stop();
    result
}

pub(crate) fn proc_field(pid: u32, file: &str, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).ok()?;
    text.lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// utime + stime of a process, in seconds.
pub(crate) fn cpu_seconds(pid: u32, ticks_per_s: f64) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) in parentheses.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / ticks_per_s)
}
