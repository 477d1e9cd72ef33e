//! Many elections in one process on one Redis.

use std::process::Command;
use std::time::{Duration, Instant};

use elect_bench::group::Group;
use elect_bench::report::Json;

use crate::contenders::{Coord, Ctx};
use crate::load::{cpu_seconds, proc_field};
use crate::rounds::millis;

/// How the scale row's process campaigns.
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Mode {
    /// An `Elector` per election, one request each.
    Each,
    /// An `Elector` per election through `elect_core::batch::Batched`.
    Batched,
    /// One `elect_core::shards::Shards` for all elections: one task, batched requests.
    Shards,
}

impl Mode {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Mode::Each => "scale",
            Mode::Batched => "scale-batched",
            Mode::Shards => "scale-shards",
        }
    }
}

/// One process campaigning in `n` elections on one Redis (TTL 10 s), as `mode` says (targets:
/// ≤ 100 requests/s, ≤ 4 KiB RSS per election, ≤ 5 % of one core, all leading within 2 s).
pub(crate) fn scale(ctx: &Ctx, n: usize, steady: u64, mode: Mode) -> Result<Json, String> {
    let ticks: f64 = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0);
    let mut g = Group::new();
    let mut cmd = Command::new(&ctx.candidate);
    cmd.args(["--store", &ctx.url(Coord::Redis)])
        .args(["--election", &format!("bench.scale.{}", std::process::id())])
        .args(["--elections", &n.to_string(), "--ttl", "10000"]);
    match mode {
        Mode::Each => {}
        Mode::Batched => {
            cmd.arg("--batched");
        }
        Mode::Shards => {
            cmd.arg("--shards");
        }
    }
    g.spawn(cmd)?;
    let result = (|| {
        let pid = g.pid(0);
        let base = g
            .wait(Duration::from_secs(20), |l| l.event == "baseline")
            .ok_or("scale: the candidate did not connect")?;
        let rss0 = proc_field(pid, "status", "VmRSS:").ok_or("no VmRSS")? * 1024;
        let all = n.to_string();
        let full = g
            .wait(Duration::from_secs(300), |l| {
                l.event == "leading" && l.rest.first() == Some(&all)
            })
            .ok_or_else(|| format!("scale: not leading all {n} elections within 300 s"))?;
        g.collect(Duration::from_secs(2));
        let cpu0 = cpu_seconds(pid, ticks).ok_or("no /proc stat")?;
        let t0 = Instant::now();
        let (clients, _) = ctx.monitor(Coord::Redis, steady)?;
        let cpu1 = cpu_seconds(pid, ticks).ok_or("no /proc stat")?;
        let wall = t0.elapsed().as_secs_f64();
        g.collect(Duration::ZERO);
        let rss1 = proc_field(pid, "status", "VmRSS:").ok_or("no VmRSS")? * 1024;
        let leading = g
            .log
            .iter()
            .rev()
            .find(|l| l.event == "leading")
            .and_then(|l| l.rest.first()?.parse::<f64>().ok())
            .unwrap_or(0.0);
        let rps = clients as f64 / steady as f64;
        Ok(Json::Obj(vec![
            ("batched".into(), Json::Bool(mode != Mode::Each)),
            ("mode".into(), Json::Str(mode.name().into())),
            ("elections".into(), Json::Num(n as f64)),
            ("ttl_ms".into(), Json::Num(10_000.0)),
            ("ramp_up_ms".into(), Json::Num(millis(base.ns, full.ns))),
            ("leading_at_end".into(), Json::Num(leading)),
            (
                "cpu_share_of_one_core".into(),
                Json::Num((cpu1 - cpu0) / wall),
            ),
            ("rss_baseline_bytes".into(), Json::Num(rss0 as f64)),
            ("rss_bytes".into(), Json::Num(rss1 as f64)),
            (
                "rss_per_election_bytes".into(),
                Json::Num((rss1.saturating_sub(rss0)) as f64 / n as f64),
            ),
            ("redis_requests_per_s".into(), Json::Num(rps)),
            ("measured_for_s".into(), Json::Num(wall)),
        ]))
    })();
    g.stop();
    result
}
