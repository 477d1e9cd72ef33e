//! The benchmark runner behind `cargo xtask bench` (which installs the peers, starts the
//! servers and passes their URLs as `ELECT_*_URL`): elect and its peers (tooz, rslock) on the
//! same servers, timed from the candidates' own CLOCK_MONOTONIC event lines (protocol: the
//! crate docs).
//!
//! ```text
//! bench --root DIR --python PATH --rslock PATH [--quick] [--rounds N] [--seed S] [--only NAME]
//! ```
//!
//! Scenarios (TTL 2 s): crash failover with the lease's remaining time read just before the
//! kill, graceful hand-over, frozen leader (SIGSTOP for 3×TTL) with overlap, load on the
//! server from 1 leader + 9 followers (raft: messages per second), and scale (10 000
//! elections in one process on one Redis). Writes `bench/results/<date>.json` and the table
//! in `bench/README.md`; `--quick` does a few rounds of each and writes only
//! `target/bench-quick.json`.

use std::fmt::Write as _;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use rustix::process::Signal;

use elect_bench::group::{now_ns, overlap, Group, Line};
use elect_bench::report::{cell, ms, ratio, Json, Stats};
use elect_core::rand::Rng;

/// The workspace root (`--root`): the tooz script, the rslock crate's lock file, the results.
static ROOT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

fn root() -> PathBuf {
    ROOT.get().cloned().unwrap_or_default()
}

const TTL_MS: u64 = 2000;
/// How often the candidates' leaders print `work` (the leader's duty, for the overlap check).
const WORK_MS: u64 = 50;
/// The peers' poll interval (tooz's `run_watchers` / `acquire`, rslock's `lock`).
const PEER_POLL_MS: u64 = 100;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Lib {
    Elect,
    Tooz,
    Rslock,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Coord {
    Redis,
    Mysql,
    Mongo,
    Raft(usize),
}

#[derive(Clone, Copy, Debug)]
struct Contender {
    lib: Lib,
    coord: Coord,
}

impl Contender {
    fn library(&self) -> &'static str {
        match self.lib {
            Lib::Elect => "elect",
            Lib::Tooz => "tooz",
            Lib::Rslock => "rslock",
        }
    }

    fn coordinator(&self) -> String {
        match self.coord {
            Coord::Redis => "redis".into(),
            Coord::Mysql => "mysql".into(),
            Coord::Mongo => "mongo".into(),
            Coord::Raft(n) => format!("raft-{n}"),
        }
    }

    fn name(&self) -> String {
        format!("{}/{}", self.library(), self.coordinator())
    }

    /// Every setting that shapes the figures.
    fn settings(&self) -> String {
        match (self.lib, self.coord) {
            (Lib::Elect, Coord::Raft(n)) => format!(
                "{n} voters over loopback TCP with HMAC; defaults: heartbeat 50 ms, election timeout 300–600 ms"
            ),
            (Lib::Elect, Coord::Mysql) => format!(
                "TTL {TTL_MS} ms, defaults (renew every TTL/3, release notices by one 100 ms poll per process)"
            ),
            (Lib::Elect, Coord::Redis) => format!(
                "TTL {TTL_MS} ms, defaults (renew every TTL/3, release notices over pub/sub)"
            ),
            (Lib::Elect, Coord::Mongo) => format!(
                "TTL {TTL_MS} ms, defaults (renew every TTL/3, release notices over a change stream, which the wire server offers)"
            ),
            (Lib::Tooz, Coord::Redis) => format!(
                "leader election (join_group + watch_elected_as_leader), lock_timeout = membership_timeout = {} s, run_watchers every {PEER_POLL_MS} ms, heart thread on (re-arms every lock_timeout/2); no loss notice exists, so `lost` is only reported on resign (= coordinator stop)",
                TTL_MS / 1000
            ),
            (Lib::Tooz, _) => format!(
                "connection-bound lock: tooz mysql:// lock (GET_LOCK), acquire(blocking=False) every {PEER_POLL_MS} ms, resign = release(); held as long as the connection lives"
            ),
            (Lib::Rslock, _) => format!(
                "Redlock on one Redis used as a lease: lock(ttl {TTL_MS} ms, retry count 1) every {PEER_POLL_MS} ms, extend every TTL/3, work only within validity_time, resign = unlock + sit out one TTL"
            ),
        }
    }

    /// Whether the lease's remaining time can be read from the coordinator.
    fn lease_readable(&self) -> bool {
        let connection_bound = self.lib == Lib::Tooz && self.coord == Coord::Mysql;
        !(self.is_raft() || connection_bound)
    }

    fn is_raft(&self) -> bool {
        matches!(self.coord, Coord::Raft(_))
    }
}

const CONTENDERS: &[Contender] = &[
    Contender {
        lib: Lib::Elect,
        coord: Coord::Redis,
    },
    Contender {
        lib: Lib::Tooz,
        coord: Coord::Redis,
    },
    Contender {
        lib: Lib::Rslock,
        coord: Coord::Redis,
    },
    Contender {
        lib: Lib::Elect,
        coord: Coord::Mysql,
    },
    Contender {
        lib: Lib::Tooz,
        coord: Coord::Mysql,
    },
    Contender {
        lib: Lib::Elect,
        coord: Coord::Mongo,
    },
    Contender {
        lib: Lib::Elect,
        coord: Coord::Raft(3),
    },
    Contender {
        lib: Lib::Elect,
        coord: Coord::Raft(5),
    },
];

/// Paths and URLs every round needs.
struct Ctx {
    candidate: PathBuf,
    rslock: PathBuf,
    python: PathBuf,
    tooz: PathBuf,
}

impl Ctx {
    fn url(&self, coord: Coord) -> String {
        let name = match coord {
            Coord::Redis => "ELECT_REDIS_URL",
            Coord::Mysql => "ELECT_MYSQL_URL",
            Coord::Mongo => "ELECT_MONGO_URL",
            Coord::Raft(_) => return String::new(),
        };
        let url = std::env::var(name).unwrap_or_default();
        // A MySQL URL without a database is the throwaway server xtask started (root): keep
        // the tables in its `mysql` schema. A URL with one is used as given.
        if coord == Coord::Mysql && url.ends_with('/') {
            format!("{url}mysql")
        } else {
            url
        }
    }

    fn command(&self, c: &Contender, k: usize, election: &str, ports: &[String]) -> Command {
        let ttl = TTL_MS.to_string();
        let work = WORK_MS.to_string();
        let id = format!("c{k}");
        match (c.lib, c.coord) {
            (Lib::Elect, Coord::Raft(_)) => {
                let mut cmd = Command::new(&self.candidate);
                cmd.args(["--raft-id", &format!("n{k}"), "--raft-listen", &ports[k]])
                    .args(["--raft-key", "bench-cluster-key-0123", "--work-ms", &work])
                    .args(["--election", election]);
                for (j, port) in ports.iter().enumerate() {
                    cmd.args(["--raft-peer", &format!("n{j}={port}")]);
                }
                cmd
            }
            (Lib::Elect, coord) => {
                let mut cmd = Command::new(&self.candidate);
                cmd.args(["--store", &self.url(coord), "--election", election])
                    .args(["--ttl", &ttl, "--id", &id, "--work-ms", &work, "--migrate"]);
                cmd
            }
            (Lib::Tooz, coord) => {
                let mut cmd = Command::new(&self.python);
                let backend = if coord == Coord::Mysql {
                    "mysql"
                } else {
                    "redis"
                };
                cmd.arg(&self.tooz)
                    .args(["--backend", backend, "--url", &self.url(coord)])
                    .args(["--election", election, "--id", &id, "--ttl", &ttl])
                    .args(["--poll", &format!("{}", PEER_POLL_MS as f64 / 1000.0)])
                    .args(["--work-ms", &work]);
                cmd
            }
            (Lib::Rslock, coord) => {
                let mut cmd = Command::new(&self.rslock);
                cmd.args(["--store", &self.url(coord), "--election", election])
                    .args(["--ttl", &ttl, "--poll-ms", &PEER_POLL_MS.to_string()])
                    .args(["--work-ms", &work]);
                cmd
            }
        }
    }

    /// Starts `n` candidates of `c` in a fresh election.
    fn group(&self, c: &Contender, n: usize, tag: &str) -> Result<Group, String> {
        let election = format!(
            "bench.{}.{}.{}.{tag}",
            c.library(),
            c.coordinator(),
            std::process::id()
        );
        let ports: Vec<String> = if c.is_raft() {
            (0..n)
                .map(|_| {
                    TcpListener::bind("127.0.0.1:0")
                        .and_then(|l| l.local_addr())
                        .map(|a| a.to_string())
                        .map_err(|e| format!("no free port: {e}"))
                })
                .collect::<Result<_, _>>()?
        } else {
            Vec::new()
        };
        let mut group = Group::new();
        for k in 0..n {
            group.spawn(self.command(c, k, &election, &ports))?;
        }
        Ok(group)
    }

    /// (commands from clients, commands run by scripts) a Redis server received over
    /// `seconds`, by MONITOR (see `elect_bench::monitor`).
    fn monitor(&self, coord: Coord, seconds: u64) -> Result<(u64, u64), String> {
        let out = Command::new(&self.candidate)
            .args([
                "--monitor",
                &self.url(coord),
                "--ttl",
                &(seconds * 1000).to_string(),
            ])
            .output()
            .map_err(|e| format!("monitor: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let mut counts = text.split_whitespace().map(str::parse::<u64>);
        match (counts.next(), counts.next()) {
            (Some(Ok(clients)), Some(Ok(scripts))) => Ok((clients, scripts)),
            _ => Err(format!(
                "monitor: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )),
        }
    }

    /// The server's own request counter (see `elect_bench::counters`).
    fn counters(&self, coord: Coord) -> Result<u64, String> {
        let out = Command::new(&self.candidate)
            .args(["--counters", &self.url(coord)])
            .output()
            .map_err(|e| format!("counters: {e}"))?;
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .map_err(|_| format!("counters: {}", String::from_utf8_lossy(&out.stderr).trim()))
    }
}

fn elected(l: &Line) -> bool {
    l.event == "elected"
}

fn millis(from: u128, to: u128) -> f64 {
    (to as f64 - from as f64) / 1e6
}

/// Waits for the first leader, then a random point in its lease (raft: in its first 500 ms).
fn leader_then_pause(g: &mut Group, c: &Contender, rng: &mut Rng) -> Result<Line, String> {
    let leader = g
        .wait(Duration::from_secs(20), elected)
        .ok_or("no leader within 20 s")?;
    let spread = if c.is_raft() { 500 } else { TTL_MS };
    g.collect(Duration::from_millis(300 + rng.below(spread)));
    Ok(leader)
}

/// Crash failover: (ms from SIGKILL until another leads, lease left at the kill in ms).
fn crash(ctx: &Ctx, c: &Contender, tag: &str, rng: &mut Rng) -> Result<(f64, Option<f64>), String> {
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
            .wait(Duration::from_secs(20), |l| {
                elected(l) && l.who != leader.who
            })
            .ok_or("no failover within 20 s")?;
        let left = lease.map(|(read, remaining)| (remaining as f64 - (killed - read) as f64) / 1e6);
        Ok((millis(killed, next.ns), left))
    })();
    g.stop();
    result
}

/// Graceful hand-over: ms from `resign` until another leads.
fn handover(ctx: &Ctx, c: &Contender, tag: &str, rng: &mut Rng) -> Result<f64, String> {
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

/// One frozen-leader round.
struct Frozen {
    /// ms from SIGSTOP until another leads, if that happened during the freeze.
    failover: Option<f64>,
    overlap_ms: f64,
    stale_work: usize,
    /// Whether the first thing the woken leader printed was its loss (None: it printed nothing).
    loss_first: Option<bool>,
}

fn frozen(ctx: &Ctx, c: &Contender, tag: &str, rng: &mut Rng) -> Result<Frozen, String> {
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

/// Steady-state load.
#[derive(Default, Clone, Copy)]
struct Load {
    /// Requests per second from clients, as the server counted them (Redis: MONITOR lines
    /// not from scripts; MariaDB: `Questions`; Mongo: opcounters).
    requests: Option<f64>,
    /// Redis only: commands per second by `INFO commandstats`, including those scripts run.
    executed: Option<f64>,
    /// Raft: messages per second sent by all voters.
    messages: Option<f64>,
}

fn load(ctx: &Ctx, c: &Contender, seconds: u64) -> Result<Load, String> {
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
        // Two back-to-back readings measure what one reading costs the server.
        let a = ctx.counters(c.coord)?;
        let t0 = Instant::now();
        let b = ctx.counters(c.coord)?;
        let probe = b.saturating_sub(a);
        let monitored = if c.coord == Coord::Redis {
            Some(ctx.monitor(c.coord, seconds)?)
        } else {
            g.collect(Duration::from_secs(seconds));
            None
        };
        let z = ctx.counters(c.coord)?;
        let per_s = z.saturating_sub(b).saturating_sub(probe) as f64 / t0.elapsed().as_secs_f64();
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

fn proc_field(pid: u32, file: &str, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).ok()?;
    text.lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32, ticks_per_s: f64) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) in parentheses.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / ticks_per_s)
}

/// One process campaigning in `n` elections on one Redis (TTL 10 s).
fn scale(ctx: &Ctx, n: usize, steady: u64) -> Result<Json, String> {
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

/// Everything measured for one contender.
#[derive(Default)]
struct Outcome {
    failover: Vec<f64>,
    remaining: Vec<f64>,
    slack: Vec<f64>,
    handover: Vec<f64>,
    frozen: Vec<Frozen>,
    load: Load,
    errors: Vec<String>,
}

impl Outcome {
    fn frozen_failover(&self) -> Vec<f64> {
        self.frozen.iter().filter_map(|f| f.failover).collect()
    }

    fn overlap_max(&self) -> Option<f64> {
        self.frozen.iter().map(|f| f.overlap_ms).reduce(f64::max)
    }

    fn stale_work(&self) -> usize {
        self.frozen.iter().map(|f| f.stale_work).sum()
    }

    fn loss_first(&self) -> String {
        let said = self
            .frozen
            .iter()
            .filter(|f| f.loss_first == Some(true))
            .count();
        format!("{said}/{}", self.frozen.len())
    }

    fn json(&self, c: &Contender) -> Json {
        let num = |v: Option<f64>| v.map_or(Json::Null, Json::Num);
        Json::Obj(vec![
            ("name".into(), Json::Str(c.name())),
            ("library".into(), Json::Str(c.library().into())),
            ("coordinator".into(), Json::Str(c.coordinator())),
            ("settings".into(), Json::Str(c.settings())),
            ("crash_failover_ms".into(), Json::stats(&self.failover)),
            (
                "remaining_lease_at_kill_ms".into(),
                Json::stats(&self.remaining),
            ),
            ("detection_slack_ms".into(), Json::stats(&self.slack)),
            ("handover_ms".into(), Json::stats(&self.handover)),
            (
                "frozen_leader".into(),
                Json::Obj(vec![
                    ("rounds".into(), Json::Num(self.frozen.len() as f64)),
                    ("failover_ms".into(), Json::stats(&self.frozen_failover())),
                    (
                        "rounds_without_failover".into(),
                        Json::Num(
                            self.frozen.iter().filter(|f| f.failover.is_none()).count() as f64
                        ),
                    ),
                    ("overlap_ms_max".into(), num(self.overlap_max())),
                    (
                        "stale_work_lines".into(),
                        Json::Num(self.stale_work() as f64),
                    ),
                    ("loss_reported_first".into(), Json::Str(self.loss_first())),
                ]),
            ),
            ("load_requests_per_s".into(), num(self.load.requests)),
            (
                "load_commands_executed_per_s_incl_scripts".into(),
                num(self.load.executed),
            ),
            ("raft_messages_per_s".into(), num(self.load.messages)),
            (
                "errors".into(),
                Json::Arr(self.errors.iter().cloned().map(Json::Str).collect()),
            ),
        ])
    }
}

fn run(
    ctx: &Ctx,
    c: &Contender,
    rounds: usize,
    frozen_rounds: usize,
    load_s: u64,
    rng: &mut Rng,
) -> Outcome {
    let mut out = Outcome::default();
    let name = c.name();
    for r in 0..rounds {
        match crash(ctx, c, &format!("crash{r}"), rng) {
            Ok((failover, left)) => {
                out.failover.push(failover);
                if let Some(left) = left {
                    out.remaining.push(left);
                    out.slack.push(failover - left);
                }
            }
            Err(e) => out.errors.push(format!("crash round {r}: {e}")),
        }
        match handover(ctx, c, &format!("handover{r}"), rng) {
            Ok(ms) => out.handover.push(ms),
            Err(e) => out.errors.push(format!("hand-over round {r}: {e}")),
        }
    }
    eprintln!(
        "bench: {name}: crash failover {} / slack {} / hand-over {} ms (p50 (p99))",
        cell(&out.failover),
        cell(&out.slack),
        cell(&out.handover)
    );
    for r in 0..frozen_rounds {
        match frozen(ctx, c, &format!("frozen{r}"), rng) {
            Ok(f) => out.frozen.push(f),
            Err(e) => out.errors.push(format!("frozen round {r}: {e}")),
        }
    }
    eprintln!(
        "bench: {name}: frozen leader: failover {} ms, {} rounds without, overlap max {} ms, stale work {}, loss reported first {}",
        cell(&out.frozen_failover()),
        out.frozen.iter().filter(|f| f.failover.is_none()).count(),
        out.overlap_max().map_or("–".into(), ms),
        out.stale_work(),
        out.loss_first()
    );
    match load(ctx, c, load_s) {
        Ok(load) => out.load = load,
        Err(e) => out.errors.push(format!("load: {e}")),
    }
    let show = |v: Option<f64>| v.map_or("–".into(), |v| format!("{v:.1}"));
    eprintln!(
        "bench: {name}: load {} requests/s ({} commands/s with scripts' own), raft {} messages/s",
        show(out.load.requests),
        show(out.load.executed),
        show(out.load.messages),
    );
    for e in &out.errors {
        eprintln!("bench: {name}: {e}");
    }
    out
}

fn text_of(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// The machine and the software versions, for the results.
fn machine(ctx: &Ctx, profile: &str) -> Vec<(String, String)> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown".into(), |(_, m)| m.trim().to_owned());
    let memory = proc_field_self("/proc/meminfo", "MemTotal:").map_or("unknown".into(), |kb| {
        format!("{:.1} GiB", kb as f64 / 1048576.0)
    });
    let pip_version = |pip: PathBuf, package: &str| {
        text_of(pip.to_str().unwrap_or("pip"), &["show", package])
            .lines()
            .find_map(|l| l.strip_prefix("Version: ").map(str::to_owned))
            .unwrap_or_default()
    };
    let rslock = std::fs::read_to_string(root().join("bench/peers/rslock/Cargo.lock"))
        .unwrap_or_default()
        .split("[[package]]")
        .find(|p| p.contains("name = \"rslock\""))
        .and_then(|p| {
            p.lines().find_map(|l| {
                l.strip_prefix("version = ")
                    .map(|v| v.trim_matches('"').to_owned())
            })
        })
        .unwrap_or_default();
    vec![
        ("cpu".into(), model),
        (
            "cores".into(),
            thread::available_parallelism()
                .map_or(0, |n| n.get())
                .to_string(),
        ),
        ("memory".into(), memory),
        (
            "kernel".into(),
            std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_owned(),
        ),
        ("rustc".into(), text_of("rustc", &["-V"])),
        ("build".into(), profile.into()),
        ("redis".into(), text_of("redis-server", &["--version"])),
        ("mariadb".into(), text_of("mariadbd", &["--version"])),
        (
            "mongo-wire server".into(),
            format!(
                "secantusdb {}",
                pip_version(root().join("target/elect-venv/bin/pip"), "secantusdb")
            ),
        ),
        (
            "tooz".into(),
            pip_version(ctx.python.with_file_name("pip"), "tooz"),
        ),
        ("rslock".into(), rslock),
    ]
}

fn proc_field_self(file: &str, key: &str) -> Option<u64> {
    std::fs::read_to_string(file)
        .ok()?
        .lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The markdown table: each figure for elect and each peer on the same coordinator.
fn table(results: &[(Contender, Outcome)], scale: &Json) -> String {
    let mut t = String::from(
        "| coordinator | figure (ms: p50 (p99)) | elect | tooz | elect/tooz | rslock | elect/rslock |\n|---|---|---|---|---|---|---|\n",
    );
    let find = |lib: Lib, coord: Coord| {
        results
            .iter()
            .find(|(c, _)| c.lib == lib && c.coord == coord)
            .map(|(_, o)| o)
    };
    let p50 = |v: &[f64]| Stats::of(v).map(|s| s.p50);
    for coord in [
        Coord::Redis,
        Coord::Mysql,
        Coord::Mongo,
        Coord::Raft(3),
        Coord::Raft(5),
    ] {
        let Some(e) = find(Lib::Elect, coord) else {
            continue;
        };
        let peers = [find(Lib::Tooz, coord), find(Lib::Rslock, coord)];
        let label = match coord {
            Coord::Mysql => "mysql (tooz: connection-bound lock)".to_owned(),
            other => Contender {
                lib: Lib::Elect,
                coord: other,
            }
            .coordinator(),
        };
        let mut row = |figure: &str, of: &dyn Fn(&Outcome) -> (String, Option<f64>)| {
            let (ev, en) = of(e);
            let _ = write!(t, "| {label} | {figure} | {ev} |");
            for peer in peers {
                match peer {
                    Some(p) => {
                        let (pv, pn) = of(p);
                        let _ = write!(t, " {pv} | {} |", ratio(en, pn));
                    }
                    None => t.push_str(" – | – |"),
                }
            }
            t.push('\n');
        };
        row("crash failover", &|o| (cell(&o.failover), p50(&o.failover)));
        if !matches!(coord, Coord::Raft(_)) {
            row("lease left at the kill", &|o| {
                (cell(&o.remaining), p50(&o.remaining))
            });
            row("detection slack", &|o| (cell(&o.slack), p50(&o.slack)));
        }
        row(
            if matches!(coord, Coord::Raft(_)) {
                "transfer (resign)"
            } else {
                "graceful hand-over"
            },
            &|o| (cell(&o.handover), p50(&o.handover)),
        );
        row("frozen leader: failover", &|o| {
            let f = o.frozen_failover();
            let none = o.frozen.len() - f.len();
            let v = if none > 0 {
                format!("{} ({none}/{} none)", cell(&f), o.frozen.len())
            } else {
                cell(&f)
            };
            (v, p50(&f))
        });
        row("frozen leader: overlap ms max / stale work lines", &|o| {
            (
                format!(
                    "{} / {}",
                    o.overlap_max().map_or("–".into(), ms),
                    o.stale_work()
                ),
                o.overlap_max(),
            )
        });
        if matches!(coord, Coord::Raft(_)) {
            row("messages/s at steady state", &|o| {
                (
                    o.load.messages.map_or("–".into(), |v| format!("{v:.0}")),
                    o.load.messages,
                )
            });
        } else {
            row(
                "load: requests/s reaching the server, 1 leader + 9 followers",
                &|o| {
                    (
                        o.load.requests.map_or("–".into(), |v| format!("{v:.1}")),
                        o.load.requests,
                    )
                },
            );
            if coord == Coord::Redis {
                row("load: commands/s executed, scripts' own included", &|o| {
                    (
                        o.load.executed.map_or("–".into(), |v| format!("{v:.1}")),
                        o.load.executed,
                    )
                });
            }
        }
    }
    if let Json::Obj(fields) = scale {
        let get = |k: &str| {
            fields
                .iter()
                .find(|(n, _)| n == k)
                .and_then(|(_, v)| match v {
                    Json::Num(n) => Some(*n),
                    _ => None,
                })
        };
        let _ = write!(
            t,
            "\nScale: one process, {} elections on one Redis (TTL 10 s): {:.1} % of one core, RSS {:.0} bytes per election ({:.1} MiB in all), Redis serving {:.0} requests/s, all leading {:.1} s after start.\n",
            get("elections").unwrap_or(0.0),
            get("cpu_share_of_one_core").unwrap_or(0.0) * 100.0,
            get("rss_per_election_bytes").unwrap_or(0.0),
            get("rss_bytes").unwrap_or(0.0) / 1048576.0,
            get("redis_requests_per_s").unwrap_or(0.0),
            get("ramp_up_ms").unwrap_or(0.0) / 1000.0,
        );
    }
    t
}

fn today() -> String {
    let out = text_of("date", &["-u", "+%Y-%m-%d"]);
    if out.is_empty() {
        "unknown-date".into()
    } else {
        out
    }
}

fn bench(args: &[String]) -> Result<(), String> {
    let quick = args.iter().any(|a| a == "--quick");
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
    };
    let rounds: usize = match value("--rounds") {
        Some(v) => v.parse().map_err(|_| "--rounds takes a number")?,
        None if quick => 3,
        None => 20,
    };
    let seed: u64 = match value("--seed") {
        Some(v) => v.parse().map_err(|_| "--seed takes a number")?,
        None => 1,
    };
    let only = value("--only").cloned();
    let (frozen_rounds, load_s, scale_n, steady_s) = if quick {
        (1, 5, 1000, 3)
    } else {
        // A frozen round lasts ≥ 3×TTL + TTL: half as many keep a full run near half an hour.
        (rounds.div_ceil(2), 20, 10_000, 10)
    };
    let started = Instant::now();
    let path = |flag: &str| {
        value(flag)
            .map(PathBuf::from)
            .ok_or(format!("{flag} PATH is needed"))
    };
    let _ = ROOT.set(path("--root")?);
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let ctx = Ctx {
        candidate: std::env::current_exe()
            .map_err(|e| e.to_string())?
            .with_file_name("candidate"),
        rslock: path("--rslock")?,
        python: path("--python")?,
        tooz: root().join("bench/peers/tooz_candidate.py"),
    };
    let mut rng = Rng::seeded(seed);
    let mut results = Vec::new();
    for c in CONTENDERS {
        if only
            .as_ref()
            .is_some_and(|o| !c.name().contains(o.as_str()))
        {
            continue;
        }
        results.push((*c, run(&ctx, c, rounds, frozen_rounds, load_s, &mut rng)));
    }
    let scale = if only.as_ref().is_none_or(|o| "scale".contains(o.as_str())) {
        scale(&ctx, scale_n, steady_s)
            .unwrap_or_else(|e| Json::Obj(vec![("error".into(), Json::Str(e))]))
    } else {
        Json::Null
    };
    eprintln!("bench: scale: {}", {
        let mut s = String::new();
        scale.render(0, &mut s);
        s.replace('\n', " ")
    });
    let machine = machine(&ctx, profile);

    let date = today();
    let json = Json::Obj(vec![
        ("date".into(), Json::Str(date.clone())),
        ("quick".into(), Json::Bool(quick)),
        ("rounds".into(), Json::Num(rounds as f64)),
        ("frozen_rounds".into(), Json::Num(frozen_rounds as f64)),
        ("seed".into(), Json::Num(seed as f64)),
        ("ttl_ms".into(), Json::Num(TTL_MS as f64)),
        ("work_every_ms".into(), Json::Num(WORK_MS as f64)),
        ("load_seconds".into(), Json::Num(load_s as f64)),
        (
            "machine".into(),
            Json::Obj(
                machine
                    .iter()
                    .map(|(k, v)| (k.clone(), Json::Str(v.clone())))
                    .collect(),
            ),
        ),
        (
            "contenders".into(),
            Json::Arr(results.iter().map(|(c, o)| o.json(c)).collect()),
        ),
        ("scale".into(), scale.clone()),
        (
            "duration_s".into(),
            Json::Num(started.elapsed().as_secs_f64()),
        ),
    ]);
    let mut text = String::new();
    json.render(0, &mut text);
    text.push('\n');
    let table = table(&results, &scale);
    println!("{table}");
    let path = if quick {
        root().join("target/bench-quick.json")
    } else {
        let dir = root().join("bench/results");
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        dir.join(format!("{date}.json"))
    };
    std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    eprintln!("bench: wrote {}", path.display());
    if !quick && only.is_none() {
        write_readme(&date, &machine, &results, &table)?;
    }
    eprintln!("bench: {:.0}s in all", started.elapsed().as_secs_f64());

    // elect's own safety and liveness are not up for measurement: fail loudly.
    let mut broken = Vec::new();
    for (c, o) in results.iter().filter(|(c, _)| c.lib == Lib::Elect) {
        if !o.errors.is_empty() {
            broken.push(format!("{}: {}", c.name(), o.errors.join("; ")));
        }
        if o.overlap_max().unwrap_or(0.0) > 0.0 || o.stale_work() > 0 {
            broken.push(format!(
                "{}: two leaders at once in the frozen-leader scenario",
                c.name()
            ));
        }
        if o.frozen.iter().any(|f| f.loss_first == Some(false)) {
            broken.push(format!(
                "{}: a woken leader printed something before its loss",
                c.name()
            ));
        }
    }
    if let Json::Obj(f) = &scale {
        if let Some((_, Json::Str(e))) = f.iter().find(|(k, _)| k == "error") {
            broken.push(format!("scale: {e}"));
        }
    }
    if broken.is_empty() {
        Ok(())
    } else {
        Err(broken.join("\n"))
    }
}

const BEGIN: &str = "<!-- bench:begin (written by cargo xtask bench) -->";
const END: &str = "<!-- bench:end -->";

fn write_readme(
    date: &str,
    machine: &[(String, String)],
    results: &[(Contender, Outcome)],
    table: &str,
) -> Result<(), String> {
    let path = root().join("bench/README.md");
    let old = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let (Some(b), Some(e)) = (old.find(BEGIN), old.find(END)) else {
        return Err(format!("{}: the bench markers are missing", path.display()));
    };
    let mut block =
        format!("{BEGIN}\n\nMeasured {date} (`bench/results/{date}.json`). Machine:\n\n");
    for (k, v) in machine {
        let _ = writeln!(block, "- {k}: {v}");
    }
    block.push_str("\nSettings:\n\n");
    for (c, _) in results {
        let _ = writeln!(block, "- **{}**: {}", c.name(), c.settings());
    }
    let _ = write!(block, "\n{table}\n");
    let new = format!("{}{block}{}", &old[..b], &old[e..]);
    std::fs::write(&path, new).map_err(|e| format!("{}: {e}", path.display()))
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match bench(&args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(why) => {
            eprintln!("bench: {why}");
            std::process::ExitCode::FAILURE
        }
    }
}
