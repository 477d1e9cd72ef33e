//! The benchmark runner behind `cargo xtask bench` (which installs the peers, starts the
//! servers and passes their URLs as `ELECT_*_URL`): elect and its peers (tooz, rslock, distributed-lock) on the
//! same servers (and etcdctl elect on etcd), timed from the candidates' own CLOCK_MONOTONIC event lines (protocol: the
//! crate docs).
//!
//! ```text
//! bench --root DIR --python PATH --rslock PATH --dlock PATH [--quick] [--rounds N] [--seed S] [--only NAME]
//!       [--subsecond-minutes M]
//! ```
//!
//! Scenarios (TTL 2 s): crash failover with the lease's remaining time read just before the
//! kill, graceful hand-over, frozen leader (SIGSTOP for 3×TTL) with overlap, load on the
//! server from 1 leader + 9 followers (raft: messages per second), and scale (10 000
//! elections in one process on one Redis: one request each, batched electors (`--only
//! scale-batched`) and one `Shards` driver (`--only scale-shards`)), balancing (`--only balance`:
//! 1 000 elections, processes joining one by one to three and one killed, `balance.rs`), raft at the Raft paper's three settings (200 crashes each, `paper.rs`),
//! sub-second TTLs under a CPU hog (TTL 200 ms on Redis, MySQL and raft, 10 minutes without a
//! fault (`--subsecond-minutes M`) and 100 crashes each, `subsecond.rs`; `--only subsecond-raft`,
//! `-redis` or `-mysql` runs one row); on the replicated Redis contenders (Sentinel,
//! Cluster: topologies of the bench's own) a master crash instead of the load. Writes `bench/results/<date>.json` and the table
//! in `bench/README.md`; `--quick` does one round of each and writes only
//! `target/bench-quick.json`.

mod balance;
mod contenders;
mod crash;
mod frozen;
mod handover;
mod load;
mod machine;
mod master;
mod outcome;
mod paper;
mod readme;
mod rounds;
mod scale;
mod subsecond;
mod trials;

use contenders::{root, Contender, Ctx, Lib, CONTENDERS, ROOT, TTL_MS, WORK_MS};
use crash::crash;
use frozen::frozen;
use handover::handover;
use load::load;
use machine::{machine, text_of};
use master::master_crash;
use outcome::Outcome;
use readme::{plots, table, write_readme};
use scale::scale;

use std::path::PathBuf;

/// Crashes per setting of the Raft paper's (the issue asks for at least 200).
const PAPER_TRIALS: usize = 200;
use std::time::{Duration, Instant};

use elect_bench::report::{cell, ms, Json};
use elect_core::rand::Rng;

fn run(
    ctx: &Ctx,
    c: &Contender,
    rounds: usize,
    frozen_rounds: usize,
    load_s: u64,
    quick: bool,
    rng: &mut Rng,
) -> Outcome {
    let mut out = Outcome::default();
    let name = c.name();
    for r in 0..rounds {
        if r < c.crash_rounds(rounds, quick) {
            match crash(ctx, c, &format!("crash{r}"), rng) {
                Ok(k) => {
                    out.failover.push(k.ms);
                    if let Some(left) = k.left {
                        out.remaining.push(left);
                        out.slack.push(k.ms - left);
                    }
                    out.failover_requests.extend(k.requests.map(|n| n as f64));
                }
                Err(e) => out.errors.push(format!("crash round {r}: {e}")),
            }
        }
        match handover(ctx, c, &format!("handover{r}"), rng) {
            Ok(h) => {
                out.handover.push(h.ms);
                out.notice.extend(h.notice);
                out.handover_requests.extend(h.requests.map(|n| n as f64));
            }
            Err(e) => out.errors.push(format!("hand-over round {r}: {e}")),
        }
    }
    eprintln!(
        "bench: {name}: crash failover {} / slack {} / hand-over {} / new-leader notice {} ms (p50 (p99)); requests per crash failover {}, per hand-over {}",
        cell(&out.failover),
        cell(&out.slack),
        cell(&out.handover),
        cell(&out.notice),
        cell(&out.failover_requests),
        cell(&out.handover_requests)
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
    if c.coord.is_topology() {
        // A master crash takes a failover and a resync: a quarter of the rounds (at least 2;
        // one in a quick run).
        for r in 0..rounds.div_ceil(4).max(if quick { 1 } else { 2 }) {
            match master_crash(ctx, c, &format!("master{r}"), rng) {
                Ok(ms) => out.master_failover.push(ms),
                Err(e) => out.errors.push(format!("master crash round {r}: {e}")),
            }
        }
        eprintln!(
            "bench: {name}: master crash: next election {} ms (p50 (p99))",
            cell(&out.master_failover)
        );
    } else {
        match load(ctx, c, load_s) {
            Ok(load) => out.load = load,
            Err(e) => out.errors.push(format!("load: {e}")),
        }
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
        // CI's end-to-end check: one round of each scenario per contender.
        None if quick => 1,
        None => 20,
    };
    let seed: u64 = match value("--seed") {
        Some(v) => v.parse().map_err(|_| "--seed takes a number")?,
        None => 1,
    };
    let only = value("--only").cloned();
    // Sub-second TTLs: the steady span without a fault, and the crashes after it.
    let subsecond_steady = match value("--subsecond-minutes") {
        Some(v) => v
            .parse::<f64>()
            .ok()
            .and_then(|m| Duration::try_from_secs_f64(60.0 * m).ok())
            .ok_or("--subsecond-minutes takes a number of minutes")?,
        None if quick => Duration::from_secs(3),
        None => Duration::from_secs(600),
    };
    let subsecond_trials = if quick { 3 } else { 100 };
    let (frozen_rounds, load_s, scale_n, steady_s) = if quick {
        (1, 3, 1000, 3)
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
        dlock: path("--dlock")?,
        python: path("--python")?,
        tooz: root().join("bench/peers/tooz_candidate.py"),
        etcdctl: root().join("bench/peers/etcdctl_candidate.py"),
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
        results.push((
            *c,
            run(&ctx, c, rounds, frozen_rounds, load_s, quick, &mut rng),
        ));
    }
    let paper = if only
        .as_ref()
        .is_none_or(|o| "raft-paper".contains(o.as_str()))
    {
        paper::paper(&ctx, if quick { 10 } else { PAPER_TRIALS }, &mut rng)
    } else {
        Json::Null
    };
    // `--only subsecond-raft` (or `-redis`, `-mysql`) runs one of its rows.
    let subsecond_row = only.as_deref().and_then(|o| o.strip_prefix("subsecond-"));
    let subsecond = if subsecond_row.is_some()
        || only
            .as_ref()
            .is_none_or(|o| "subsecond".contains(o.as_str()))
    {
        subsecond::subsecond(
            &ctx,
            subsecond_steady,
            subsecond_trials,
            subsecond_row,
            &mut rng,
        )
    } else {
        Json::Null
    };
    let scaled = |mode: scale::Mode, steady: u64| {
        let name = mode.name();
        if !only.as_ref().is_none_or(|o| name.contains(o.as_str())) {
            return Json::Null;
        }
        reported(name, scale(&ctx, scale_n, steady, mode))
    };
    let scale = scaled(scale::Mode::Each, steady_s);
    // Renewals every TTL/3 = 3.3 s: 30 s holds nine rounds of them.
    let scale_batched = scaled(scale::Mode::Batched, if quick { steady_s } else { 30 });
    let scale_shards = scaled(scale::Mode::Shards, if quick { steady_s } else { 30 });
    let balancing = if only.as_ref().is_none_or(|o| "balance".contains(o.as_str())) {
        reported(
            "balance",
            balance::balance(&ctx, if quick { 100 } else { 1000 }),
        )
    } else {
        Json::Null
    };
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
        ("scale_batched".into(), scale_batched.clone()),
        ("scale_shards".into(), scale_shards.clone()),
        ("balance".into(), balancing.clone()),
        ("raft_paper".into(), paper.clone()),
        ("subsecond".into(), subsecond.clone()),
        (
            "duration_s".into(),
            Json::Num(started.elapsed().as_secs_f64()),
        ),
    ]);
    let mut text = String::new();
    json.render(0, &mut text);
    text.push('\n');
    let table = table(&results, &[&scale, &scale_batched, &scale_shards])
        + &paper::table(&paper)
        + &subsecond::table(&subsecond)
        + &balance::table(&balancing);
    println!("{table}");
    // A partial run (`--only`) must not overwrite the dated results of a full one.
    let path = if quick {
        root().join("target/bench-quick.json")
    } else if only.is_some() {
        root().join("target/bench-only.json")
    } else {
        let dir = root().join("bench/results");
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        dir.join(format!("{date}.json"))
    };
    std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    eprintln!("bench: wrote {}", path.display());
    // The pictures: beside the dated results of a full run (the README shows them), under
    // target/ otherwise.
    let full = !quick && only.is_none();
    let plot_dir = if full {
        root().join("bench/results")
    } else {
        root().join("target/bench-plots")
    };
    let pictures = plots(&results, &plot_dir, &date)?;
    eprintln!(
        "bench: pictures in {}/{date}-<coordinator>.svg",
        plot_dir.display()
    );
    if full {
        let pictures = pictures.replace("](", "](results/");
        write_readme(&date, &machine, &results, &format!("{table}\n{pictures}"))?;
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
    for (name, json) in [
        ("scale", &scale),
        ("scale-batched", &scale_batched),
        ("scale-shards", &scale_shards),
        ("balance", &balancing),
    ] {
        if let Json::Obj(f) = json {
            if let Some((_, Json::Str(e))) = f.iter().find(|(k, _)| k == "error") {
                broken.push(format!("{name}: {e}"));
            }
        }
    }
    broken.extend(paper::broken(&paper));
    broken.extend(subsecond::broken(&subsecond));
    if broken.is_empty() {
        Ok(())
    } else {
        Err(broken.join("\n"))
    }
}

/// A row's JSON (its error as `{"error": …}`), printed on one line.
fn reported(name: &str, row: Result<Json, String>) -> Json {
    let json = row.unwrap_or_else(|e| Json::Obj(vec![("error".into(), Json::Str(e))]));
    let mut s = String::new();
    json.render(0, &mut s);
    eprintln!("bench: {name}: {}", s.replace('\n', " "));
    json
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
