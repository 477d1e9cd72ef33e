//! `elect run`'s promise under attack: one program at a time across hosts, nothing the program
//! started outlives its run, and the program stopped by the local safety deadline even when
//! `elect` itself is frozen, blocked on a full stderr pipe, or killed (issue 14, items 4–8);
//! and the process chaos test over every coordinator (`ELECT_CLI_CHAOS_SECS` for long runs).
//!
//! Each program is a shell whose background worker writes a heartbeat (host, term,
//! `CLOCK_MONOTONIC`) every 20 ms (`support/heartbeat.py`); the checker reads every host's
//! heartbeats: no two workers alive at once, terms rising from run to run, no worker alive
//! after its `elect` died.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use elect::rand::Rng;
use elect::redis::fred::prelude::*;
use elect::redis::fred::types::Expiration;
use elect_tests::proxy::{FaultProxy, Mode};
use elect_tests::{Kind, OwnedServer};

mod support;
use support::{beats, check, describe, elect, heartbeat_program, kill, mono_ns, runs, scratch};

const TTL: Duration = Duration::from_secs(2);
const MS: u64 = 1_000_000;

/// One host: an `elect run` process (restartable) writing its worker's heartbeats to `beats`.
struct Host {
    name: String,
    /// The arguments before `-- PROGRAM`.
    args: Vec<String>,
    beats: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Host {
    fn new(dir: &Path, name: &str, args: Vec<String>) -> Host {
        Host {
            name: name.into(),
            args,
            beats: dir.join(format!("{name}.beats")),
            log: dir.join(format!("{name}.log")),
            child: None,
        }
    }

    /// Starts `elect run ARGS -- PROGRAM`; its stderr goes to the host's log, or to `stderr`.
    fn start_with(&mut self, program: Vec<String>, stderr: Option<Stdio>) {
        let stderr = stderr.unwrap_or_else(|| {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.log)
                .unwrap()
                .into()
        });
        let child = elect()
            .args(&self.args)
            .arg("--")
            .args(program)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    fn start(&mut self) {
        let program = heartbeat_program(&self.beats);
        self.start_with(program, None);
    }

    fn pid(&self) -> String {
        self.child.as_ref().expect("running").id().to_string()
    }

    fn signal(&self, signal: &str) {
        kill(signal, &self.pid());
    }

    /// SIGKILL; returns the instant (`CLOCK_MONOTONIC`) just before it.
    fn kill(&mut self) -> u64 {
        let at = mono_ns();
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        at
    }

    /// Waits up to `within` for elect to exit; its status code.
    fn exit_code(&mut self, within: Duration) -> Option<i32> {
        let child = self.child.as_mut()?;
        let until = std::time::Instant::now() + within;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return status.code();
            }
            if std::time::Instant::now() > until {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// How many of this host's heartbeat workers are alive.
    fn workers_alive(&self) -> usize {
        worker_pids(&self.beats).len()
    }

    fn last_beat(&self) -> Option<u64> {
        beats(std::slice::from_ref(&self.beats))
            .last()
            .map(|b| b.at)
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            // A frozen elect must be thawed to die cleanly and take its program with it.
            kill("CONT", &child.id().to_string());
        }
        self.kill();
    }
}

/// `--log info run --store URL --election E --ttl 2s --id ID EXTRA…`.
fn store_args(url: &str, election: &str, id: &str, extra: &[&str]) -> Vec<String> {
    ttl_args(url, election, id, "2s", extra)
}

fn ttl_args(url: &str, election: &str, id: &str, ttl: &str, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "--log",
        "info",
        "run",
        "--store",
        url,
        "--election",
        election,
        "--ttl",
        ttl,
        "--id",
        id,
    ]
    .map(String::from)
    .to_vec();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn wait_beats(host: &Host, within: Duration) {
    support::wait_for(&format!("{}'s worker", host.name), within, || {
        beats(std::slice::from_ref(&host.beats)).len() >= 3
    });
}

/// Which host's worker beats now (the most recent heartbeat within 200 ms).
fn beating(hosts: &[Host]) -> Option<usize> {
    let now = mono_ns();
    hosts
        .iter()
        .enumerate()
        .filter_map(|(k, h)| h.last_beat().map(|at| (k, at)))
        .filter(|(_, at)| now.saturating_sub(*at) < 200 * MS)
        .max_by_key(|(_, at)| *at)
        .map(|(k, _)| k)
}

fn assert_clean(hosts: &[Host], what: &str) {
    let files: Vec<PathBuf> = hosts.iter().map(|h| h.beats.clone()).collect();
    let runs = runs(&beats(&files));
    let verdict = check(&runs);
    assert!(
        verdict.is_clean(),
        "{what}: {verdict:#?}\nruns:\n{}",
        describe(&runs)
    );
}

/// Issue 14, items 6 and 8: the worker is the program's child, not elect's. SIGKILL of elect,
/// SIGTERM and SIGHUP to elect each end it, and the lease is released where elect lives to
/// do so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_the_program_started_outlives_elect() {
    let url = elect_tests::redis().await.url().to_owned();
    tokio::task::spawn_blocking(move || {
        let dir = scratch("outlives");
        for (n, how) in ["KILL", "TERM", "HUP"].into_iter().enumerate() {
            let election = format!("outlives.{}.{n}", std::process::id());
            let mut host = Host::new(
                &dir,
                &format!("h{n}"),
                store_args(&url, &election, "h", &[]),
            );
            host.start();
            wait_beats(&host, Duration::from_secs(20));
            let at = mono_ns();
            let code = if how == "KILL" {
                host.kill();
                None
            } else {
                host.signal(how);
                host.exit_code(Duration::from_secs(5))
            };
            std::thread::sleep(Duration::from_millis(300));
            assert_eq!(
                host.workers_alive(),
                0,
                "SIG{how}: the worker outlived elect"
            );
            let last = host.last_beat().unwrap();
            assert!(
                last < at + 100 * MS,
                "SIG{how}: the worker beat {:.1} ms after elect was signalled",
                (last - at) as f64 / 1e6
            );
            if how != "KILL" {
                // sh dies of the SIGTERM passed on to its group: 128 + 15.
                assert_eq!(code, Some(143), "SIG{how}: elect's exit code");
                let out = elect()
                    .args(["status", "--store", &url, "--election", &election])
                    .output()
                    .unwrap();
                let said = String::from_utf8_lossy(&out.stdout);
                assert!(said.contains("nobody leads"), "SIG{how}: released? {said}");
            }
        }
        let _ = std::fs::remove_dir_all(dir);
    })
    .await
    .unwrap();
}

/// Issue 14, item 4: SIGSTOP of the leader's elect (not of its program) used to leave the
/// program running beside the next leader's for seconds. The watchdog stops it by the local
/// deadline; the other host's program starts only after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_elect_cannot_keep_its_program_running() {
    let url = elect_tests::redis().await.url().to_owned();
    tokio::task::spawn_blocking(move || {
        let dir = scratch("frozen");
        let election = format!("frozen.{}", std::process::id());
        let mut hosts: Vec<Host> = (0..2)
            .map(|k| {
                Host::new(
                    &dir,
                    &format!("f{k}"),
                    store_args(&url, &election, &format!("f{k}"), &[]),
                )
            })
            .collect();
        for h in &mut hosts {
            h.start();
        }
        support::wait_for("a leader's worker", Duration::from_secs(20), || {
            beating(&hosts).is_some()
        });
        let leader = beating(&hosts).unwrap();
        let other = 1 - leader;
        let frozen_at = mono_ns();
        hosts[leader].signal("STOP");
        wait_beats(&hosts[other], TTL * 3);
        let last = hosts[leader].last_beat().unwrap();
        assert!(
            last < frozen_at + TTL.as_nanos() as u64,
            "the frozen host's worker beat {:.1} ms after the freeze",
            (last - frozen_at) as f64 / 1e6
        );
        assert_eq!(
            hosts[leader].workers_alive(),
            0,
            "the frozen host's worker still runs"
        );
        hosts[leader].signal("CONT");
        assert_eq!(
            hosts[leader].exit_code(Duration::from_secs(5)),
            Some(5),
            "the thawed elect reports leadership lost"
        );
        assert_clean(&hosts, "freeze");
        let _ = std::fs::remove_dir_all(dir);
    })
    .await
    .unwrap();
}

/// Issue 14, item 4: elect blocked writing to a full stderr pipe (nobody reads it) while its
/// store link was down used to never stop its program. Logging now never blocks, and the
/// watchdog would stop the program even if it did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_stderr_cannot_keep_the_program_running() {
    let url = elect_tests::redis().await.url().to_owned();
    let (proxy, proxied) = FaultProxy::in_front_of(&url).await.unwrap();
    tokio::task::block_in_place(|| {
        let dir = scratch("stderr");
        let election = format!("stderr.{}", std::process::id());
        let mut blocked = Host::new(
            &dir,
            "s0",
            // Every log line there is: elect writes a lot to the stderr nobody reads.
            store_args(&proxied, &election, "s0", &[])
                .into_iter()
                .map(|a| if a == "info" { "trace".into() } else { a })
                .collect(),
        );
        // The program fills the shared stderr pipe (and blocks on it); nobody reads it.
        let fill = format!(
            "{} & head -c 2000000 /dev/zero >&2; wait",
            heartbeat_program(&blocked.beats)[2].trim_end_matches(" & wait")
        );
        blocked.start_with(vec!["sh".into(), "-c".into(), fill], Some(Stdio::piped()));
        wait_beats(&blocked, Duration::from_secs(20));
        let mut other = Host::new(&dir, "s1", store_args(&url, &election, "s1", &[]));
        other.start();
        std::thread::sleep(Duration::from_millis(500));
        let cut = mono_ns();
        proxy.set(Mode::Blackhole);
        wait_beats(&other, TTL * 3);
        let last = blocked.last_beat().unwrap();
        assert!(
            last < cut + TTL.as_nanos() as u64,
            "the blocked host's worker beat {:.1} ms after its link was cut",
            (last - cut) as f64 / 1e6
        );
        assert_eq!(blocked.workers_alive(), 0);
        assert_clean(&[blocked, other], "full stderr");
        let _ = std::fs::remove_dir_all(dir);
    });
}

/// Issue 14, item 7: a refused renewal means another host may lead already: the program is
/// killed at once, not after `--grace`. The program ignores SIGTERM, so only SIGKILL stops
/// it; the takeover is written by a foreign client just after a renewal, so the refusal comes
/// one renewal interval (TTL/3 = 1 s) later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_renewal_kills_the_program_at_once() {
    let url = elect_tests::redis().await.url().to_owned();
    let admin = Builder::from_config(Config::from_url(&url).unwrap())
        .build()
        .unwrap();
    admin.init().await.unwrap();
    let dir = scratch("refused");
    let election = format!("refused.{}", std::process::id());
    let key = format!("elect:{{{election}}}:lease");
    let mut host = Host::new(
        &dir,
        "r0",
        ttl_args(&url, &election, "r0", "3s", &["--grace", "1s"]),
    );
    let beats_file = host.beats.clone();
    let ignore_term = format!(
        "trap '' TERM; {}",
        heartbeat_program(&beats_file)[2].clone()
    );
    host.start_with(vec!["sh".into(), "-c".into(), ignore_term], None);
    tokio::task::block_in_place(|| wait_beats(&host, Duration::from_secs(20)));
    // Right after a renewal (the lease's time left jumps up), take the lease over.
    let mut before: i64 = admin.pttl(&key).await.unwrap();
    loop {
        tokio::time::sleep(Duration::from_millis(2)).await;
        let now: i64 = admin.pttl(&key).await.unwrap();
        if now > before + 100 {
            break;
        }
        before = now;
    }
    let _: () = admin
        .hset(&key, [("holder", "intruder"), ("term", "9007199254740000")])
        .await
        .unwrap();
    let taken = mono_ns();
    tokio::task::block_in_place(|| {
        support::wait_for("the worker to die", Duration::from_secs(10), || {
            host.workers_alive() == 0
        })
    });
    let last = host.last_beat().unwrap();
    let after = (last - taken) as f64 / 1e6;
    eprintln!("the worker's last beat came {after:.1} ms after the takeover");
    // Refused at the next renewal, ~1 s later; then killed at once. With the grace (1 s) on
    // top, as before, it would beat for 2 s.
    assert!(
        after < 1500.0,
        "the worker beat {after:.1} ms after the takeover: not killed at the refusal"
    );
    assert_eq!(host.exit_code(Duration::from_secs(5)), Some(5));
    let _ = std::fs::remove_dir_all(dir);
}

/// Issue 14, item 3: `elect run --id same` on two hosts used to give two leaders in one term
/// for the whole run. They are two candidates: one program at a time, and after the leader's
/// elect is killed the twin leads in a higher term.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_with_one_id_run_one_program_at_a_time() {
    let url = elect_tests::redis().await.url().to_owned();
    tokio::task::spawn_blocking(move || {
        let dir = scratch("twins");
        let election = format!("twins.{}", std::process::id());
        let mut hosts: Vec<Host> = (0..2)
            .map(|k| {
                Host::new(
                    &dir,
                    &format!("t{k}"),
                    store_args(&url, &election, "same", &[]),
                )
            })
            .collect();
        for h in &mut hosts {
            h.start();
        }
        support::wait_for("a worker", Duration::from_secs(20), || {
            beating(&hosts).is_some()
        });
        std::thread::sleep(TTL * 2);
        let leader = beating(&hosts).unwrap();
        assert_eq!(
            hosts[1 - leader].last_beat(),
            None,
            "the twin ran its program beside the leader's"
        );
        hosts[leader].kill();
        wait_beats(&hosts[1 - leader], TTL * 3);
        assert_clean(&hosts, "twins");
        let _ = std::fs::remove_dir_all(dir);
    })
    .await
    .unwrap();
}

/// Issue 14, item 16: one junk write to the lease record stopped every candidate for good
/// (exit 4, even with --restart). Now they wait, report it, and lead once the junk is gone
/// (here it expires).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_junk_record_holds_the_group_back_only_while_it_lasts() {
    let url = elect_tests::redis().await.url().to_owned();
    let admin = Builder::from_config(Config::from_url(&url).unwrap())
        .build()
        .unwrap();
    admin.init().await.unwrap();
    let dir = scratch("junk");
    let election = format!("junk.{}", std::process::id());
    let _: () = admin
        .set(
            format!("elect:{{{election}}}:lease"),
            "junk",
            Some(Expiration::PX(3000)),
            None,
            false,
        )
        .await
        .unwrap();
    let junk_until = mono_ns() + 3000 * MS;
    let mut host = Host::new(&dir, "j0", store_args(&url, &election, "j0", &[]));
    host.start();
    tokio::task::block_in_place(|| {
        assert_eq!(
            host.exit_code(Duration::from_secs(2)),
            None,
            "elect gave up on junk"
        );
        wait_beats(&host, Duration::from_secs(10));
    });
    let first = beats(std::slice::from_ref(&host.beats))[0].at;
    assert!(
        first >= junk_until,
        "ran its program over a record it could not read"
    );
    let log = std::fs::read_to_string(&host.log).unwrap();
    assert!(
        log.contains("corrupt lease record"),
        "the junk is reported: {log}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

// ---------------------------------------------------------------------------------------------
// The process chaos test.

/// How long each coordinator's chaos run lasts: 25 s, or `ELECT_CLI_CHAOS_SECS`.
fn chaos_duration() -> Duration {
    std::env::var("ELECT_CLI_CHAOS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(Duration::from_secs(25), Duration::from_secs_f64)
}

/// The `/proc` entries of the heartbeat workers writing to `beats`: processes whose program is
/// python running `heartbeat.py` for that file (elect's own command line names both too).
fn worker_pids(beats: &Path) -> Vec<PathBuf> {
    let file = beats.display().to_string();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|proc| {
            let Ok(cmdline) = std::fs::read(proc.join("cmdline")) else {
                return false;
            };
            let args: Vec<String> = cmdline
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            args.first().is_some_and(|a| a.contains("python"))
                && args.iter().any(|a| a.ends_with("heartbeat.py"))
                && args.contains(&file)
        })
        .collect()
}

/// The process group of a host's program (its worker's), if one runs.
fn program_group(host: &Host) -> Option<String> {
    worker_pids(&host.beats).into_iter().find_map(|proc| {
        let stat = std::fs::read_to_string(proc.join("stat")).ok()?;
        // pid (comm) state ppid pgrp …: the fields after the last ')'.
        stat.rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(2)
            .map(str::to_owned)
    })
}

/// Three hosts under seeded faults; checks every heartbeat at the end. `links` are the hosts'
/// fault proxies (stores), `server` a server of the test's own to restart (Redis).
async fn chaos(
    name: &str,
    mut hosts: Vec<Host>,
    links: Vec<FaultProxy>,
    server: Option<OwnedServer>,
) {
    let seed = std::env::var("ELECT_CLI_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(mono_ns);
    eprintln!("{name}: seed {seed} (ELECT_CLI_CHAOS_SEED replays it)");
    let mut rng = Rng::seeded(seed);
    for h in &mut hosts {
        h.start();
    }
    let started = std::time::Instant::now();
    let until = started + chaos_duration();
    let mut kills: Vec<(usize, u64)> = Vec::new();
    let mut done: Vec<String> = Vec::new();
    let mut moved = 0;
    tokio::time::sleep(TTL).await;
    while std::time::Instant::now() < until {
        let leader = beating(&hosts);
        // The first two faults that find a leader take its leadership away (a kill, or a
        // freeze or cut longer than the lease), so that every run moves leadership at least
        // twice, whatever the seed; the rest are drawn from everything.
        let forced = leader.is_some() && moved < 2;
        let target = match leader {
            Some(k) if forced || rng.below(3) < 2 => k,
            _ => rng.below(hosts.len() as u64) as usize,
        };
        let at = started.elapsed().as_secs_f64();
        let kinds = 4 + usize::from(!links.is_empty()) + usize::from(server.is_some());
        let fault = match rng.below(kinds as u64) {
            0 => "kill",
            1 | 2 => "freeze elect",
            3 if forced => "kill",
            3 => "freeze program",
            4 if !links.is_empty() => "cut link",
            _ if forced => "freeze elect",
            _ => "restart server",
        };
        let shortest = if forced {
            TTL + Duration::from_millis(500)
        } else {
            Duration::from_millis(500)
        };
        let hold =
            rng.duration_between(shortest, Duration::from_millis(2 * TTL.as_millis() as u64));
        moved += usize::from(forced);
        match fault {
            "kill" => {
                let at = hosts[target].kill();
                kills.push((target, at));
                tokio::time::sleep(Duration::from_millis(300)).await;
                hosts[target].start();
            }
            "freeze elect" => {
                hosts[target].signal("STOP");
                tokio::time::sleep(hold).await;
                hosts[target].signal("CONT");
            }
            "freeze program" => {
                if let Some(group) = program_group(&hosts[target]) {
                    kill("STOP", &format!("-{group}"));
                    tokio::time::sleep(hold).await;
                    kill("CONT", &format!("-{group}"));
                }
            }
            "cut link" => {
                links[target].set(Mode::Blackhole);
                tokio::time::sleep(hold).await;
                links[target].set(Mode::Pass);
            }
            _ => {
                let server = server.as_ref().expect("a server to restart");
                server.restart().await.unwrap();
            }
        }
        done.push(match fault {
            "kill" | "restart server" => format!("{fault} h{target} at {at:.1}s"),
            _ => format!("{fault} h{target} {}ms at {at:.1}s", hold.as_millis()),
        });
        tokio::time::sleep(rng.duration_between(
            Duration::from_millis(TTL.as_millis() as u64 / 2),
            Duration::from_millis(TTL.as_millis() as u64 * 2),
        ))
        .await;
    }
    // Everyone leads at most once more; then stop them all and read the heartbeats.
    tokio::time::sleep(TTL).await;
    for h in &mut hosts {
        h.signal("CONT");
        h.signal("TERM");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let files: Vec<PathBuf> = hosts.iter().map(|h| h.beats.clone()).collect();
    let all = beats(&files);
    let runs = runs(&all);
    eprintln!(
        "{name}: {} faults ({}), {} program runs, {} heartbeats",
        done.len(),
        done.join(", "),
        runs.len(),
        all.len()
    );
    let verdict = check(&runs);
    let mut late = Vec::new();
    for (k, at) in &kills {
        // Heartbeats of that host's run that was live at the kill, later than 100 ms after it.
        if let Some(b) = all
            .iter()
            .filter(|b| b.host == hosts[*k].name && b.at > at + 100 * MS)
            .find(|b| {
                runs.iter()
                    .any(|r| r.host == b.host && r.term == b.term && r.first < *at)
            })
        {
            late.push(format!(
                "{}'s worker beat {:.1} ms after its elect was killed",
                b.host,
                (b.at - at) as f64 / 1e6
            ));
        }
    }
    for h in &hosts {
        assert_eq!(
            h.workers_alive(),
            0,
            "{name}: {}'s worker outlived the test",
            h.name
        );
    }
    assert!(
        verdict.is_clean() && late.is_empty(),
        "{name} (seed {seed}): {verdict:#?} {late:#?}\nfaults: {done:?}\nruns:\n{}\n{}",
        describe(&runs),
        log_tails(&hosts)
    );
    assert!(
        runs.len() >= 3,
        "{name} (seed {seed}): only {} program runs: the faults moved nothing\n{}",
        runs.len(),
        log_tails(&hosts)
    );
    for h in &hosts {
        let _ = std::fs::remove_file(&h.log);
    }
}

/// The last lines of each host's log, for a failure's message.
fn log_tails(hosts: &[Host]) -> String {
    hosts
        .iter()
        .map(|h| {
            let log = std::fs::read_to_string(&h.log).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(12)..].join("\n");
            format!("--- {} (last lines of its log)\n{tail}", h.name)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

async fn store_chaos(name: &str, url: String, extra: &[&str], server: Option<OwnedServer>) {
    let dir = scratch(&format!("chaos-{name}"));
    let election = format!("chaos.{name}.{}", std::process::id());
    let mut links = Vec::new();
    let mut hosts = Vec::new();
    for k in 0..3 {
        let (proxy, proxied) = FaultProxy::in_front_of(&url).await.unwrap();
        let id = format!("{name}{k}");
        let mut args = store_args(&proxied, &election, &id, extra);
        args.push("--restart".into());
        hosts.push(Host::new(&dir, &id, args));
        links.push(proxy);
    }
    chaos(name, hosts, links, server).await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_chaos_on_redis() {
    // A server of its own, restarted without persistence: the hosts run with the quarantine.
    let server = OwnedServer::start(Kind::Redis).await.unwrap();
    store_chaos(
        "redis",
        server.url(),
        &["--restart-quarantine"],
        Some(server),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_chaos_on_mariadb() {
    let url = elect_tests::mysql().await.mysql_database().await.unwrap();
    store_chaos("mysql", url, &[], None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_chaos_on_the_mongodb_wire_server() {
    let url = elect_tests::mongo().await.url().to_owned();
    store_chaos("mongo", url, &[], None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_chaos_on_postgresql() {
    let url = elect_tests::postgres()
        .await
        .postgres_database()
        .await
        .unwrap();
    store_chaos("postgres", url, &[], None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_chaos_on_a_three_host_raft_group() {
    let dir = scratch("chaos-raft");
    let group = support::RaftGroup::new(&dir);
    let hosts = (0..3)
        .map(|k| {
            let state = dir.join(format!("state{k}")).display().to_string();
            let run = [
                "--log",
                "info",
                "run",
                "--election",
                "chaos.raft",
                "--restart",
            ];
            let mut args: Vec<String> = run.map(String::from).to_vec();
            args.extend(group.args("raft", k));
            args.extend(["--raft-state".to_string(), state]);
            Host::new(&dir, &format!("raft{k}"), args)
        })
        .collect();
    chaos("raft", hosts, Vec::new(), None).await;
    let _ = std::fs::remove_dir_all(dir);
}
