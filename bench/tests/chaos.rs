//! Process chaos: five candidate processes campaign on one election while a seeded schedule
//! kills, freezes and restarts them, cuts, delays and resets their connections through fault
//! proxies, and restarts the server (raft: partitions and restarts from the state dir). Every
//! leader writes its term to a fenced resource with each `work` tick. The checker
//! (`elect_bench::chaos`) then looks for overlapping leaderships, term regressions, stray
//! work, slow recoveries and accepted stale writes.
//!
//! The replicated Redis topologies (a master with two replicas behind three Sentinels; a Cluster
//! of three masters with a replica each) get faults of their own — failovers, the master killed
//! or frozen, replicas resyncing — once with `WAIT` for every replica and the restart quarantine (asserted: no
//! violation) and once without either (counted only: the hazard those settings close).
//!
//! etcd gets the Jepsen lock workload (etcd 3.4.3, 2020): five candidates, TTL 2 s, each leader
//! incrementing a register by read-modify-write with its term, a process pause (SIGSTOP) about
//! every 5 s, and now and then a candidate killed or blackholed or the etcd leader member
//! killed or frozen, on a three-member cluster: once with the register fenced by the terms
//! (asserted: nothing lost, nothing stale accepted), once unfenced (counted: what the fence
//! prevents).
//!
//! Short mode (the default test run): 40 s of faults per coordinator. Long mode:
//! `cargo xtask chaos --minutes N --seed S` (sets `ELECT_CHAOS_MINUTES` / `ELECT_CHAOS_SEED`;
//! `ELECT_CHAOS_ONLY=redis|mysql|mongo|postgres|raft|redis-sentinel|redis-cluster|redis-sentinel-unsafe|
//! redis-cluster-unsafe|etcd|etcd-unfenced|raft-containers` picks one). A failure prints the seed.
//!
//! Raft also runs across containers (`raft-containers`, with `ELECT_TEST_SERVERS=containers`):
//! partitions by `docker network disconnect`, freezes by `docker pause`.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use elect_bench::chaos::{check, Fault, Fence, Findings};
use elect_bench::group::{now_ns, Group, Line};
use elect_core::rand::Rng;
use elect_tests::etcd::EtcdCluster;
use elect_tests::proxy::{FaultProxy, Mode};
use elect_tests::topology::{command, Topology};
use elect_tests::{Kind, OwnedServer};
use rustix::process::Signal;
use tokio::runtime::Handle;

/// Milliseconds, for the fault schedules.
const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

const TTL_MS: u64 = 2000;
const CANDIDATES: usize = 5;
/// Raft's default maximum election timeout.
const RAFT_ELECTION_MAX_MS: u64 = 600;

fn seed() -> u64 {
    std::env::var("ELECT_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| now_ns() as u64)
}

fn duration() -> Duration {
    let minutes: f64 = std::env::var("ELECT_CHAOS_MINUTES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40.0 / 60.0);
    Duration::from_secs_f64(minutes * 60.0)
}

fn wanted(name: &str) -> bool {
    std::env::var("ELECT_CHAOS_ONLY").map_or(true, |only| only == name)
}

/// The processes of one run, by candidate slot.
struct Run {
    group: Group,
    args: Vec<Vec<String>>,
    slot_of: Vec<usize>,
    ended: Vec<Option<u128>>,
    current: Vec<usize>,
    /// Candidates in containers ([`chaos_raft_in_containers`]): each slot's container, created
    /// once and started again after a kill, so that its raft state survives as it would on a
    /// machine's disk. Signals become `docker kill` / `pause` / `unpause`.
    containers: Option<Vec<String>>,
}

impl Run {
    fn start(args: Vec<Vec<String>>) -> Run {
        Self::start_with(args, None)
    }

    fn start_with(args: Vec<Vec<String>>, containers: Option<Vec<String>>) -> Run {
        let mut run = Run {
            group: Group::new(),
            args,
            slot_of: Vec::new(),
            ended: Vec::new(),
            current: Vec::new(),
            containers,
        };
        for slot in 0..run.args.len() {
            let who = run.spawn(slot);
            run.current.push(who);
        }
        run
    }

    fn spawn(&mut self, slot: usize) -> usize {
        let command = match &self.containers {
            Some(names) => {
                let mut command = Command::new("docker");
                command.args(["start", "--attach", "--interactive", &names[slot]]);
                command
            }
            None => {
                let mut command = Command::new(env!("CARGO_BIN_EXE_candidate"));
                command.args(&self.args[slot]);
                command
            }
        };
        let who = self.group.spawn(command).expect("start a candidate");
        if let Some(names) = &self.containers {
            // `docker start` returns before the container runs: the next fault (a pause, a
            // disconnect) must find it running.
            let until = Instant::now() + Duration::from_secs(20);
            while try_docker(&["inspect", "--format", "{{.State.Running}}", &names[slot]])
                .as_deref()
                != Ok("true")
            {
                assert!(Instant::now() < until, "{} did not start", names[slot]);
                std::thread::sleep(ms(20));
            }
        }
        self.slot_of.push(slot);
        self.ended.push(None);
        who
    }

    /// Signals the slot's candidate; the instant it was signalled. A container's is taken
    /// after `docker` returns (the candidate is dead or frozen by then, not before), so that
    /// the checker counts a killed leader as leading until then.
    fn signal(&self, slot: usize, signal: Signal) -> u128 {
        let Some(names) = &self.containers else {
            return self.group.signal(self.current[slot], signal);
        };
        let verb = match signal {
            Signal::STOP => "pause",
            Signal::CONT => "unpause",
            _ => "kill",
        };
        docker(&[verb, &names[slot]]);
        if verb == "kill" {
            // `docker kill` returns once the signal is sent; `docker wait`, once it is dead.
            docker(&["wait", &names[slot]]);
        }
        now_ns()
    }

    fn kill_and_restart(&mut self, slot: usize, down: Duration) {
        let who = self.current[slot];
        self.ended[who] = Some(self.signal(slot, Signal::KILL));
        self.group.collect(down);
        self.current[slot] = self.spawn(slot);
    }

    /// Kills the leader (and starts it again) as one more fault when the log shows no second
    /// election yet: random faults that never unseated the leader prove nothing about
    /// failover, and the run would fail its "elected twice" check. (CI, 2026-12-04:
    /// chaos_mysql's 15 faults in 40 s all missed the leader or were too short to unseat it.)
    fn unseat_a_leader_never_unseated(&mut self, faults: &mut Vec<Fault>, bound: Duration) {
        let elections = self
            .group
            .log
            .iter()
            .filter(|l| l.event == "elected")
            .count();
        if elections > 1 {
            return;
        }
        let Some(slot) = self.leader() else {
            return;
        };
        let started = now_ns();
        self.kill_and_restart(slot, ms(500));
        faults.push(self.healed("kill", started, bound));
    }

    /// A slot to fault: the leader's two times in three, else any.
    fn pick(&self, rng: &mut Rng) -> usize {
        match self.leader() {
            Some(leader) if rng.below(3) > 0 => leader,
            _ => rng.below(CANDIDATES as u64) as usize,
        }
    }

    /// The faults every run shares, on the candidate in `slot`: `kill` (and start again
    /// after a while) and `freeze` (SIGSTOP for half a TTL to three). False for other kinds.
    fn candidate_fault(&mut self, kind: &str, slot: usize, rng: &mut Rng) -> bool {
        match kind {
            "kill" => self.kill_and_restart(slot, rng.duration_between(ms(100), ms(2000))),
            "freeze" => self.freeze(slot, rng.duration_between(ms(TTL_MS / 2), ms(3 * TTL_MS))),
            _ => return false,
        }
        true
    }

    /// Freezes the slot's candidate (SIGSTOP, or `docker pause`) for `hold`, then thaws it.
    fn freeze(&mut self, slot: usize, hold: Duration) {
        self.signal(slot, Signal::STOP);
        self.group.collect(hold);
        self.signal(slot, Signal::CONT);
    }

    /// The slot whose process leads right now, as the lines tell it.
    fn leader(&self) -> Option<usize> {
        let mut leading = vec![false; self.slot_of.len()];
        for l in &self.group.log {
            match l.event.as_str() {
                "elected" => leading[l.who] = true,
                "lost" => leading[l.who] = false,
                _ => {}
            }
        }
        self.current
            .iter()
            .position(|&who| leading[who] && self.ended[who].is_none())
    }

    /// The fault healed now: waits up to `bound` for the first `work` stamped from now on.
    fn healed(&mut self, kind: &'static str, started: u128, bound: Duration) -> Fault {
        let healed = now_ns();
        let recovered = self
            .group
            .wait(bound, |l: &Line| l.event == "work" && l.ns >= healed)
            .map(|l| l.ns);
        Fault {
            kind,
            started,
            healed,
            recovered,
        }
    }

    fn finish(self, faults: &[Fault], bound: Duration, fence: &Fence) -> (Findings, usize) {
        let end = now_ns();
        let Run {
            group,
            slot_of,
            ended,
            ..
        } = self;
        let log = group.stop();
        let fenced = log.iter().filter(|l| l.event == "fenced").count();
        let findings = check(
            &log,
            &slot_of,
            &ended,
            end,
            faults,
            bound.as_nanos(),
            fence.stats(),
        );
        (findings, fenced)
    }
}

fn report(name: &str, seed: u64, findings: &Findings, fence: &Fence, fenced: usize) {
    picture(name, seed, findings);
    let stats = fence.stats();
    eprintln!(
        "chaos {name} (seed {seed}): {}; fenced writes {fenced}: accepted {}, rejected {}, accepted stale {}",
        findings.summary(),
        stats.accepted,
        stats.rejected,
        stats.accepted_stale
    );
    assert!(
        findings.violations.is_empty() && stats.accepted_stale == 0,
        "chaos {name} failed; replay with ELECT_CHAOS_SEED={seed} ELECT_CHAOS_ONLY={name}:\n{}",
        findings.violations.join("\n")
    );
    assert!(
        findings.leaderships > 1,
        "chaos {name}: nobody was ever elected twice"
    );
}

/// Writes the run's timeline, `target/chaos/<name>-<seed>.svg`: who believed it led when, with
/// the faults marked. A picture that cannot be written is said, not a failure of the run.
fn picture(name: &str, seed: u64, f: &Findings) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/chaos");
    let path = dir.join(format!("{name}-{seed}.svg"));
    let heading = format!(
        "chaos {name} (seed {seed}): {} leaderships, {} faults, {} overlaps",
        f.leaderships,
        f.fault_spans.len(),
        f.overlaps
    );
    let written = std::fs::create_dir_all(&dir)
        .map_err(|e| e.to_string())
        .and_then(|()| {
            elect_bench::plot::timeline(
                &path,
                &heading,
                f.began,
                f.ended,
                &f.timeline,
                &f.fault_spans,
            )
        });
    match written {
        Ok(()) => eprintln!("chaos {name}: timeline in {}", path.display()),
        Err(e) => eprintln!("chaos {name}: no timeline picture: {e}"),
    }
}

/// Faults on lease-store candidates: each talks to the server through its own proxy.
fn store_chaos(
    name: &'static str,
    server: &OwnedServer,
    proxies: &[FaultProxy],
    args: Vec<Vec<String>>,
    fence: &Fence,
    handle: &Handle,
) {
    let seed = seed();
    let quarantine = args.iter().flatten().any(|a| a == "--restart-quarantine");
    let mut rng = Rng::seeded(seed);
    let bound = Duration::from_millis(TTL_MS + 1000);
    let deadline = Instant::now() + duration();
    let mut run = Run::start(args);
    run.group
        .wait(Duration::from_secs(30), |l| l.event == "work")
        .expect("a first leader");
    let mut faults = Vec::new();
    const KINDS: [&str; 6] = [
        "kill",
        "freeze",
        "blackhole",
        "delay",
        "reset",
        "server-restart",
    ];
    while Instant::now() < deadline {
        run.group.collect(rng.duration_between(ms(200), ms(1500)));
        let slot = run.pick(&mut rng);
        let kind = KINDS[rng.below(KINDS.len() as u64) as usize];
        let started = now_ns();
        match kind {
            _ if run.candidate_fault(kind, slot, &mut rng) => {}
            "blackhole" => {
                proxies[slot].set(Mode::Blackhole);
                run.group
                    .collect(rng.duration_between(ms(TTL_MS / 2), ms(2 * TTL_MS)));
                proxies[slot].set(Mode::Pass);
                // Bytes were dropped mid-stream: those connections cannot be trusted.
                proxies[slot].reset_all();
            }
            "delay" => {
                proxies[slot].set(Mode::Delay(rng.duration_between(ms(20), ms(TTL_MS / 2))));
                run.group
                    .collect(rng.duration_between(ms(TTL_MS / 2), ms(2 * TTL_MS)));
                proxies[slot].set(Mode::Pass);
            }
            "reset" => proxies[slot].reset_all(),
            _ => {
                handle
                    .block_on(server.restart())
                    .expect("restart the server");
                if quarantine {
                    // By design nothing vacant is granted until a TTL after the first request
                    // reaches the restarted server: the fault lasts until then, and the
                    // recovery bound counts from there (it counted from the restart, and
                    // failed whenever reconnecting took more than a second).
                    run.group.collect(ms(TTL_MS));
                }
            }
        }
        faults.push(run.healed(kind, started, bound));
    }
    run.unseat_a_leader_never_unseated(&mut faults, bound);
    let (findings, fenced) = run.finish(&faults, bound, fence);
    report(name, seed, &findings, fence, fenced);
}

async fn lease_store(kind: Kind, name: &'static str, suffix: &str, extra: &[&str]) {
    let server = OwnedServer::start(kind).await.unwrap();
    let url = format!("{}{suffix}", server.url());
    let (fence, fence_addr) = Fence::start().await.unwrap();
    let mut proxies = Vec::new();
    let mut args = Vec::new();
    for k in 0..CANDIDATES {
        let (proxy, via) = FaultProxy::in_front_of(&url).await.unwrap();
        proxies.push(proxy);
        args.push(
            [
                "--store",
                &via,
                "--election",
                "chaos",
                "--ttl",
                &TTL_MS.to_string(),
                "--id",
                &format!("c{k}"),
                "--work-ms",
                "50",
                "--fence",
                &fence_addr.to_string(),
                "--migrate",
            ]
            .map(String::from)
            .into_iter()
            .chain(extra.iter().map(|a| a.to_string()))
            .collect(),
        );
    }
    let handle = Handle::current();
    tokio::task::spawn_blocking(move || {
        store_chaos(name, &server, &proxies, args, &fence, &handle);
        drop(server);
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_redis() {
    if wanted("redis") {
        // The server runs without persistence: restarts forget the lease, and only the
        // restart quarantine keeps a second leader out while the first still believes.
        lease_store(Kind::Redis, "redis", "", &["--restart-quarantine"]).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_mysql() {
    if wanted("mysql") {
        // The server's own `mysql` schema holds the table (the candidates migrate it).
        lease_store(Kind::Mysql, "mysql", "mysql", &[]).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_postgres() {
    if wanted("postgres") {
        // The server's own `postgres` database holds the table (the candidates migrate it).
        lease_store(Kind::Postgres, "postgres", "", &[]).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_mongo() {
    if wanted("mongo") {
        lease_store(Kind::Mongo, "mongo", "", &[]).await;
    }
}

fn free_port() -> String {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.to_string())
        .unwrap()
}

/// Raft: node i sends to node j through proxy `links[i][j]`, so cuts can be one-way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_raft() {
    if !wanted("raft") {
        return;
    }
    let (fence, fence_addr) = Fence::start().await.unwrap();
    let listen: Vec<String> = (0..CANDIDATES).map(|_| free_port()).collect();
    let mut links: Vec<Vec<Option<FaultProxy>>> = Vec::new();
    for i in 0..CANDIDATES {
        let mut row = Vec::new();
        for (j, addr) in listen.iter().enumerate() {
            row.push(if i == j {
                None
            } else {
                Some(FaultProxy::start(addr.parse().unwrap()).await.unwrap())
            });
        }
        links.push(row);
    }
    let dirs: Vec<PathBuf> = (0..CANDIDATES)
        .map(|k| std::env::temp_dir().join(format!("elect-chaos-raft-{}-{k}", std::process::id())))
        .collect();
    let args: Vec<Vec<String>> = (0..CANDIDATES)
        .map(|i| {
            let mut a = vec![
                "--raft-id".to_string(),
                format!("n{i}"),
                "--raft-listen".into(),
                listen[i].clone(),
                "--raft-key".into(),
                "chaos-cluster-key-0123".into(),
                "--raft-state".into(),
                dirs[i].display().to_string(),
                "--election".into(),
                "chaos".into(),
                "--work-ms".into(),
                "50".into(),
                "--fence".into(),
                fence_addr.to_string(),
            ];
            for (j, link) in links[i].iter().enumerate() {
                let addr = match link {
                    Some(p) => p.addr().to_string(),
                    None => listen[i].clone(),
                };
                a.push("--raft-peer".into());
                a.push(format!("n{j}={addr}"));
            }
            a
        })
        .collect();
    tokio::task::spawn_blocking(move || {
        raft_chaos(&links, args, &fence);
        for dir in dirs {
            let _ = std::fs::remove_dir_all(dir);
        }
    })
    .await
    .unwrap();
}

fn raft_chaos(links: &[Vec<Option<FaultProxy>>], args: Vec<Vec<String>>, fence: &Fence) {
    let seed = seed();
    let mut rng = Rng::seeded(seed);
    let bound = Duration::from_millis(RAFT_ELECTION_MAX_MS + 1000);
    let deadline = Instant::now() + duration();
    let mut run = Run::start(args);
    run.group
        .wait(Duration::from_secs(30), |l| l.event == "work")
        .expect("a first leader");
    let cut = |from: usize, to: usize, mode: Mode| {
        if let Some(p) = &links[from][to] {
            p.set(mode);
        }
    };
    let heal = || {
        for p in links.iter().flatten().flatten() {
            p.set(Mode::Pass);
            p.reset_all();
        }
    };
    let mut faults = Vec::new();
    const KINDS: [&str; 5] = ["kill", "freeze", "partition", "one-way", "isolate-leader"];
    while Instant::now() < deadline {
        run.group.collect(rng.duration_between(ms(200), ms(1500)));
        let leader = run.leader();
        let slot = run.pick(&mut rng);
        let kind = KINDS[rng.below(KINDS.len() as u64) as usize];
        let hold = rng.duration_between(ms(300), ms(2 * TTL_MS));
        let started = now_ns();
        match kind {
            "kill" => run.kill_and_restart(slot, rng.duration_between(ms(100), ms(1500))),
            "freeze" => run.freeze(slot, rng.duration_between(ms(300), ms(3 * TTL_MS))),
            "partition" => {
                // A minority of one or two, cut off both ways.
                let mut minority = vec![slot];
                if rng.below(2) == 0 {
                    minority
                        .push((slot + 1 + rng.below(CANDIDATES as u64 - 1) as usize) % CANDIDATES);
                }
                for i in 0..CANDIDATES {
                    for j in 0..CANDIDATES {
                        if minority.contains(&i) != minority.contains(&j) {
                            cut(i, j, Mode::Blackhole);
                        }
                    }
                }
                run.group.collect(hold);
                heal();
            }
            "one-way" => {
                // The node can hear but not speak, or speak but not hear.
                let deaf = rng.below(2) == 0;
                for j in (0..CANDIDATES).filter(|&j| j != slot) {
                    if deaf {
                        cut(j, slot, Mode::Blackhole);
                    } else {
                        cut(slot, j, Mode::Blackhole);
                    }
                }
                run.group.collect(hold);
                heal();
            }
            _ => {
                let target = leader.unwrap_or(slot);
                for j in (0..CANDIDATES).filter(|&j| j != target) {
                    cut(j, target, Mode::Blackhole);
                    cut(target, j, Mode::Blackhole);
                }
                run.group.collect(hold);
                heal();
            }
        }
        faults.push(run.healed(kind, started, bound));
    }
    run.unseat_a_leader_never_unseated(&mut faults, bound);
    let (findings, fenced) = run.finish(&faults, bound, fence);
    report("raft", seed, &findings, fence, fenced);
}

/// `docker ARGS…`: its standard output, or what it said on failure.
fn try_docker(args: &[&str]) -> Result<String, String> {
    let out = Command::new("docker")
        .args(args)
        .output()
        .map_err(|e| format!("docker: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(format!(
            "docker {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// `docker ARGS…`, which must succeed.
fn docker(args: &[&str]) -> String {
    try_docker(args).unwrap_or_else(|e| panic!("{e}"))
}

/// The raft candidates' containers and their two networks, removed when dropped: the raft
/// network (a /24 of the test's own, so each container keeps its address across a
/// disconnect) and a control network whose gateway, an address of this host, is where the
/// fenced resource listens.
struct Lab {
    network: String,
    prefix: String,
    control: String,
    control_prefix: String,
    containers: Vec<String>,
}

impl Lab {
    fn create() -> Lab {
        let name = format!("elect-raft-{}", std::process::id());
        let (network, prefix) = Self::network(&name, 0);
        let (control, control_prefix) = Self::network(&format!("{name}-ctl"), 100);
        Lab {
            network,
            prefix,
            control,
            control_prefix,
            containers: Vec::new(),
        }
    }

    /// Creates network `name` on a free 10.213.N.0/24; its name and `10.213.N`.
    fn network(name: &str, offset: usize) -> (String, String) {
        let _ = try_docker(&["network", "rm", name]);
        let mut tried = Vec::new();
        for k in 0..50 {
            let prefix = format!(
                "10.213.{}",
                (std::process::id() as usize + k) % 50 + 20 + offset
            );
            let subnet = format!("{prefix}.0/24");
            let gateway = format!("{prefix}.1");
            let made = [
                "network",
                "create",
                "--subnet",
                &subnet,
                "--gateway",
                &gateway,
                name,
            ];
            match try_docker(&made) {
                Ok(_) => return (name.to_owned(), prefix),
                Err(e) => tried.push(e),
            }
        }
        panic!("no Docker network could be created: {tried:#?}");
    }

    /// The control network's gateway: an address of this host that every container reaches,
    /// cut off from its peers or not.
    fn gateway(&self) -> std::net::IpAddr {
        format!("{}.1", self.control_prefix)
            .parse()
            .expect("an address")
    }

    fn ip(&self, slot: usize) -> String {
        format!("{}.{}", self.prefix, 10 + slot)
    }

    /// Cuts the slot's container off from the raft network: no route to any peer.
    fn disconnect(&self, slot: usize) {
        docker(&[
            "network",
            "disconnect",
            &self.network,
            &self.containers[slot],
        ]);
    }

    /// Puts it back, at its address.
    fn connect(&self, slot: usize) {
        docker(&[
            "network",
            "connect",
            "--ip",
            &self.ip(slot),
            &self.network,
            &self.containers[slot],
        ]);
    }

    /// Whether the slot's container can open a connection to `to`'s raft port (python3 in
    /// the image; a one-second timeout).
    fn reaches(&self, slot: usize, to: usize) -> bool {
        let probe = format!(
            "import socket; socket.create_connection(('{}', 7000), timeout=1)",
            self.ip(to)
        );
        try_docker(&["exec", &self.containers[slot], "python3", "-c", &probe]).is_ok()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for name in &self.containers {
            let _ = try_docker(&["rm", "-f", name]);
        }
        let _ = try_docker(&["network", "rm", &self.network]);
        let _ = try_docker(&["network", "rm", &self.control]);
    }
}

/// Raft across containers (issue 21): five candidates, each in a container of the local image
/// (`cargo xtask images`) with its raft state inside, on a Docker network of their own; also
/// on a control network, where the fenced resource listens, so a candidate cut off from its
/// peers still reaches the resource — the hazard the fence is there for. Faults: a
/// candidate or two, or the leader, cut off by `docker network disconnect` (and `connect`
/// again), frozen by `docker pause`, killed by `docker kill` and started again. The first cut
/// is checked to cut (a probe from the cut container to a peer must fail, where before it
/// succeeded): a partition that cuts nothing proves nothing. Runs with
/// `ELECT_TEST_SERVERS=containers`, as the container pass of `cargo xtask test` sets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_raft_in_containers() {
    if elect_tests::Mode::from_env() != Ok(elect_tests::Mode::Containers) {
        eprintln!(
            "chaos_raft_in_containers: runs with ELECT_TEST_SERVERS=containers (the container \
             pass of cargo xtask test)"
        );
        return;
    }
    if !wanted("raft-containers") {
        return;
    }
    let mut lab = Lab::create();
    let (fence, fence_addr) = Fence::start_at(lab.gateway()).await.unwrap();
    tokio::task::spawn_blocking(move || {
        let (image, tag) = elect_tests::docker::LOCAL_IMAGE;
        let candidate = format!(
            "{}:/usr/local/bin/candidate:ro",
            env!("CARGO_BIN_EXE_candidate")
        );
        for i in 0..CANDIDATES {
            let name = format!("{}-n{i}", lab.network);
            let _ = try_docker(&["rm", "-f", &name]);
            let mut args: Vec<String> = [
                "create",
                "--name",
                &name,
                "--interactive",
                "--network",
                &lab.network,
                "--ip",
                &lab.ip(i),
                "--volume",
                &candidate,
                "--entrypoint",
                "/usr/local/bin/candidate",
                &format!("{image}:{tag}"),
                "--raft-id",
                &format!("n{i}"),
                "--raft-listen",
                "0.0.0.0:7000",
                "--raft-key",
                "chaos-cluster-key-0123",
                "--raft-state",
                "/var/lib/candidate",
                "--election",
                "chaos",
                "--work-ms",
                "50",
                "--fence",
                &fence_addr.to_string(),
            ]
            .map(String::from)
            .to_vec();
            for j in 0..CANDIDATES {
                args.push("--raft-peer".into());
                args.push(format!("n{j}={}:7000", lab.ip(j)));
            }
            docker(&args.iter().map(String::as_str).collect::<Vec<_>>());
            lab.containers.push(name.clone());
            docker(&["network", "connect", &lab.control, &name]);
        }
        raft_containers_chaos(&lab, &fence);
    })
    .await
    .unwrap();
}

fn raft_containers_chaos(lab: &Lab, fence: &Fence) {
    let seed = seed();
    let mut rng = Rng::seeded(seed);
    // Docker's own commands take a few hundred milliseconds on top of raft's election.
    let bound = Duration::from_millis(RAFT_ELECTION_MAX_MS + 2500);
    let deadline = Instant::now() + duration();
    let mut run = Run::start_with(vec![Vec::new(); CANDIDATES], Some(lab.containers.clone()));
    run.group
        .wait(Duration::from_secs(60), |l| l.event == "work")
        .expect("a first leader");
    assert!(lab.reaches(0, 1), "n0 cannot reach n1 before any fault");
    let mut checked_cut = false;
    let mut faults = Vec::new();
    const KINDS: [&str; 5] = ["kill", "freeze", "isolate", "isolate-two", "isolate-leader"];
    while Instant::now() < deadline {
        run.group.collect(rng.duration_between(ms(200), ms(1500)));
        let leader = run.leader();
        let slot = run.pick(&mut rng);
        let kind = KINDS[rng.below(KINDS.len() as u64) as usize];
        let hold = rng.duration_between(ms(300), ms(2 * TTL_MS));
        let started = now_ns();
        match kind {
            "kill" => run.kill_and_restart(slot, rng.duration_between(ms(100), ms(1500))),
            "freeze" => run.freeze(slot, rng.duration_between(ms(300), ms(3 * TTL_MS))),
            _ => {
                let mut cut = vec![match kind {
                    "isolate-leader" => leader.unwrap_or(slot),
                    _ => slot,
                }];
                if kind == "isolate-two" {
                    cut.push((cut[0] + 1 + rng.below(CANDIDATES as u64 - 1) as usize) % CANDIDATES);
                }
                for &c in &cut {
                    lab.disconnect(c);
                }
                if !checked_cut {
                    let peer = (cut[0] + 1..cut[0] + CANDIDATES)
                        .map(|j| j % CANDIDATES)
                        .find(|j| !cut.contains(j))
                        .expect("a peer not cut off");
                    assert!(
                        !lab.reaches(cut[0], peer),
                        "n{} reaches n{peer} while disconnected: the partition cuts nothing",
                        cut[0]
                    );
                    checked_cut = true;
                }
                run.group.collect(hold);
                for &c in &cut {
                    lab.connect(c);
                }
            }
        }
        faults.push(run.healed(kind, started, bound));
    }
    run.unseat_a_leader_never_unseated(&mut faults, bound);
    let (findings, fenced) = run.finish(&faults, bound, fence);
    report("raft-containers", seed, &findings, fence, fenced);
    assert!(checked_cut, "chaos raft-containers: no partition was made");
}

/// The checker can fail: candidates that ignore their local deadline (they trust the lease
/// until the coordinator refuses a renewal) are caught when their leader is frozen past the
/// TTL. The same scenario without the switch passes, so it is the switch that is caught.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checker_catches_a_leader_that_ignores_its_deadline() {
    if !wanted("broken") {
        return;
    }
    let url = elect_tests::redis().await.url().to_owned();
    let frozen = |broken: bool, fence: &Fence, fence_addr: std::net::SocketAddr| {
        let election = format!("chaos.broken.{}.{broken}", std::process::id());
        let args: Vec<Vec<String>> = (0..3)
            .map(|k| {
                let mut a = [
                    "--store",
                    &url,
                    "--election",
                    &election,
                    "--ttl",
                    "1000",
                    "--id",
                    &format!("c{k}"),
                    "--work-ms",
                    "20",
                    "--fence",
                    &fence_addr.to_string(),
                ]
                .map(String::from)
                .to_vec();
                if broken {
                    a.push("--unsafe-ignore-deadline".into());
                }
                a
            })
            .collect();
        let mut run = Run::start(args);
        run.group
            .wait(Duration::from_secs(20), |l| l.event == "work")
            .expect("a leader");
        let leader = run.leader().expect("a leader");
        let started = run.signal(leader, Signal::STOP);
        run.group.collect(Duration::from_millis(2500));
        run.signal(leader, Signal::CONT);
        let healed = now_ns();
        run.group.collect(Duration::from_millis(1000));
        let fault = Fault {
            kind: "freeze",
            started,
            healed,
            recovered: Some(healed),
        };
        run.finish(&[fault], Duration::from_secs(2), fence).0
    };
    let (fence, addr) = Fence::start().await.unwrap();
    let caught = tokio::task::block_in_place(|| frozen(true, &fence, addr));
    eprintln!("broken variant: {}", caught.summary());
    assert!(
        caught.overlaps > 0 || caught.stray_work > 0,
        "the checker missed a leader that ignores its deadline: {}",
        caught.summary()
    );
    let (fence, addr) = Fence::start().await.unwrap();
    let clean = tokio::task::block_in_place(|| frozen(false, &fence, addr));
    eprintln!("same scenario, correct candidates: {}", clean.summary());
    assert!(clean.violations.is_empty(), "{:?}", clean.violations);
}

/// Faults on a replicated Redis (a Sentinel topology or a Cluster of the test's own): the
/// candidates find the master through the topology's own discovery, so the faults are the
/// topology's — failovers of every kind (`SENTINEL FAILOVER`; `CLUSTER FAILOVER` graceful,
/// `FORCE` and `TAKEOVER`), the election's master killed and started again empty, or frozen
/// past the failure detector and thawed, a replica killed and started again (a full resync) —
/// beside candidates killed and frozen. After each topology fault the run waits until the topology is whole again (every master with its
/// replicas online) and counts the recovery from there.
///
/// `safety`: the candidates `WAIT` for every replica of their master and run the restart
/// quarantine (which also covers a master that changed identity); the run must show no
/// violation. Without it the run only counts what goes wrong — the hazard those settings close.
fn topology_chaos(
    name: &'static str,
    topology: &mut Topology,
    args: Vec<Vec<String>>,
    safety: bool,
    fence: &Fence,
) {
    let seed = seed();
    let mut rng = Rng::seeded(seed);
    // Recovery is timed from the moment the topology is whole again (below), so the bound
    // covers elect's part: the quarantine's TTL, a lease left by a frozen holder, reconnecting
    // (7 TTLs, for loaded CI machines). The "stretches in which the replicas acknowledge no
    // `WAIT`" of earlier runs were the run's own doing: `SENTINEL FAILOVER` (and `CLUSTER
    // FAILOVER`) answer OK when a failover *starts*, the Sentinels named the old master — still
    // listing two online replicas — until `+switch-master` seconds later, so the run faulted a
    // topology in mid-failover; with `WAIT` for every replica no grant can succeed until the old
    // master is turned into a replica and fully resynced (Sentinel's conversion after the
    // switch, then Redis's `repl-diskless-sync-delay`, 5 s by default, before each full sync):
    // 10–16 s here, measured 2026-12-04 from the servers' logs.
    let bound = Duration::from_millis(7 * TTL_MS + 1000);
    let deadline = Instant::now() + duration();
    let mut run = Run::start(args);
    run.group
        .wait(Duration::from_secs(60), |l| l.event == "work")
        .expect("a first leader");
    let mut faults = Vec::new();
    const KINDS: [&str; 6] = [
        "kill",
        "freeze",
        "failover",
        "master-kill",
        "master-freeze",
        "replica-restart",
    ];
    while Instant::now() < deadline {
        run.group.collect(rng.duration_between(ms(200), ms(1500)));
        let kind = KINDS[rng.below(KINDS.len() as u64) as usize];
        let started = now_ns();
        let slot = run.pick(&mut rng);
        let master = || {
            topology
                .master_of("{chaos}")
                .expect("a master serves the election")
        };
        match kind {
            _ if run.candidate_fault(kind, slot, &mut rng) => {}
            "failover" if topology.sentinels.is_empty() => {
                let Some(&replica) = topology.replicas_of(master()).first() else {
                    eprintln!("chaos {name}: the master has no replica now; no failover");
                    continue;
                };
                let how = ["", " FORCE", " TAKEOVER"][rng.below(3) as usize];
                let port = topology.nodes[replica].port;
                let reply = command(port, &format!("CLUSTER FAILOVER{how}"));
                assert!(reply.contains("OK"), "CLUSTER FAILOVER{how}: {reply}");
                // OK means started: the replica is promoted once it has caught up (and, but
                // for TAKEOVER, won the other masters' votes). A manual failover that cannot
                // finish (the replica still resyncing after an earlier fault, say) is dropped
                // by the replica after 5 s (Redis's manual-failover timeout) and nothing
                // happens — seen once in CI, 2026-12-07 — so after 10 s it is asked again as
                // TAKEOVER, which needs nobody's agreement.
                let asked = Instant::now();
                let mut again = false;
                while !command(port, "ROLE").contains("master") {
                    if !again && asked.elapsed() > Duration::from_secs(10) {
                        again = true;
                        eprintln!(
                            "chaos {name}: CLUSTER FAILOVER{how} promoted nobody in 10 s; \
                             TAKEOVER"
                        );
                        let reply = command(port, "CLUSTER FAILOVER TAKEOVER");
                        assert!(reply.contains("OK"), "CLUSTER FAILOVER TAKEOVER: {reply}");
                    }
                    assert!(
                        asked.elapsed() < Duration::from_secs(40),
                        "chaos {name} (seed {seed}): CLUSTER FAILOVER{how}, then TAKEOVER, \
                         promoted nobody within 40 s"
                    );
                    run.group.collect(ms(50));
                }
            }
            "failover" => {
                if let Err(e) = topology.sentinel_failover(Duration::from_secs(60)) {
                    panic!("chaos {name} (seed {seed}): Sentinel promoted no replica: {e}");
                }
            }
            "replica-restart" => {
                // The replica comes back empty and resyncs in full from its master.
                let replicas = topology.replicas_of(master());
                if replicas.is_empty() {
                    eprintln!("chaos {name}: the master has no replica now; none restarted");
                    continue;
                }
                let r = replicas[rng.below(replicas.len() as u64) as usize];
                topology.nodes[r].signal("KILL");
                run.group.collect(rng.duration_between(ms(200), ms(3000)));
                topology.restart(r).expect("start the replica again");
            }
            "master-kill" => {
                let m = master();
                topology.nodes[m].signal("KILL");
                run.group.collect(rng.duration_between(ms(500), ms(5000)));
                topology.restart(m).expect("start the master again");
            }
            _ => {
                let m = master();
                topology.nodes[m].signal("STOP");
                run.group.collect(rng.duration_between(ms(1000), ms(5000)));
                topology.nodes[m].signal("CONT");
            }
        }
        if !matches!(kind, "kill" | "freeze") {
            let whole = Instant::now();
            while !topology.healthy() {
                assert!(
                    whole.elapsed() < Duration::from_secs(90),
                    "chaos {name} (seed {seed}): the topology is not whole 90 s after a {kind}"
                );
                run.group.collect(ms(200));
            }
        }
        faults.push(run.healed(kind, started, bound));
    }
    run.unseat_a_leader_never_unseated(&mut faults, bound);
    let (findings, fenced) = run.finish(&faults, bound, fence);
    if safety {
        report(name, seed, &findings, fence, fenced);
    } else {
        let stats = fence.stats();
        eprintln!(
            "chaos {name} (seed {seed}, no WAIT, no quarantine — counted, not asserted): {}; \
             fenced writes {fenced}: accepted {}, rejected {}, accepted stale {}",
            findings.summary(),
            stats.accepted,
            stats.rejected,
            stats.accepted_stale
        );
        for violation in &findings.violations {
            eprintln!(
                "chaos {name}: {}",
                violation.lines().next().unwrap_or_default()
            );
        }
        assert!(
            findings.leaderships > 1,
            "chaos {name}: nobody was ever elected twice"
        );
    }
}

async fn topology_run(name: &'static str, cluster: bool, safety: bool) {
    let mut topology = tokio::task::spawn_blocking(move || {
        if cluster {
            Topology::cluster()
        } else {
            Topology::sentinel()
        }
    })
    .await
    .unwrap()
    .expect("a topology of the run's own");
    let (fence, fence_addr) = Fence::start().await.unwrap();
    // Every replica of the election's master: two behind the Sentinels, one in the Cluster.
    let replicas = if cluster { "1" } else { "2" };
    let args = (0..CANDIDATES)
        .map(|k| {
            let mut args: Vec<String> = [
                "--store",
                &topology.url,
                "--election",
                "chaos",
                "--ttl",
                &TTL_MS.to_string(),
                "--id",
                &format!("c{k}"),
                "--work-ms",
                "50",
                "--fence",
                &fence_addr.to_string(),
            ]
            .map(String::from)
            .into();
            if safety {
                args.extend(
                    ["--restart-quarantine", "--wait-replicas", replicas].map(String::from),
                );
            }
            args
        })
        .collect();
    tokio::task::spawn_blocking(move || {
        topology_chaos(name, &mut topology, args, safety, &fence);
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_redis_sentinel() {
    if wanted("redis-sentinel") {
        topology_run("redis-sentinel", false, true).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_redis_cluster() {
    if wanted("redis-cluster") {
        topology_run("redis-cluster", true, true).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_redis_sentinel_without_wait() {
    if wanted("redis-sentinel-unsafe") {
        topology_run("redis-sentinel-unsafe", false, false).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_redis_cluster_without_wait() {
    if wanted("redis-cluster-unsafe") {
        topology_run("redis-cluster-unsafe", true, false).await;
    }
}

/// The Jepsen lock workload on a three-member etcd cluster (see the file's docs). Each
/// candidate reaches every member through proxies of its own, so that one candidate can be cut
/// off from all of etcd.
async fn etcd_run(name: &'static str, fenced: bool) {
    let mut cluster = tokio::task::spawn_blocking(|| EtcdCluster::start(3))
        .await
        .unwrap()
        .expect("a three-member etcd of the run's own");
    let (fence, fence_addr) = if fenced {
        Fence::start().await.unwrap()
    } else {
        Fence::start_unfenced().await.unwrap()
    };
    let mut proxies: Vec<Vec<FaultProxy>> = Vec::new();
    let mut args = Vec::new();
    for k in 0..CANDIDATES {
        let mut mine = Vec::new();
        for member in &cluster.members {
            let upstream = ([127, 0, 0, 1], member.client_port).into();
            mine.push(FaultProxy::start(upstream).await.unwrap());
        }
        let hosts: Vec<String> = mine.iter().map(|p| p.addr().to_string()).collect();
        let url = format!("etcd://{}/chaos/", hosts.join(","));
        proxies.push(mine);
        args.push(
            [
                "--store",
                &url,
                "--election",
                "chaos",
                "--ttl",
                &TTL_MS.to_string(),
                "--id",
                &format!("c{k}"),
                "--work-ms",
                "50",
                "--register",
                &fence_addr.to_string(),
            ]
            .map(String::from)
            .to_vec(),
        );
    }
    tokio::task::spawn_blocking(move || {
        etcd_chaos(name, &mut cluster, &proxies, args, fenced, &fence);
    })
    .await
    .unwrap();
}

fn etcd_chaos(
    name: &'static str,
    cluster: &mut EtcdCluster,
    proxies: &[Vec<FaultProxy>],
    args: Vec<Vec<String>>,
    fenced: bool,
    fence: &Fence,
) {
    let seed = seed();
    let mut rng = Rng::seeded(seed);
    // Whole-second leases (2 s), deleted at etcd's next 500 ms sweep, extended when an etcd
    // leader takes over, and candidates behind a killed member's proxy reconnecting elsewhere.
    let bound = Duration::from_millis(5 * TTL_MS + 1000);
    let deadline = Instant::now() + duration();
    let mut run = Run::start(args);
    run.group
        .wait(Duration::from_secs(30), |l| l.event == "work")
        .expect("a first leader");
    let mut faults = Vec::new();
    // A pause three times in seven.
    const KINDS: [&str; 7] = [
        "freeze",
        "freeze",
        "freeze",
        "kill",
        "blackhole",
        "member-kill",
        "member-freeze",
    ];
    while Instant::now() < deadline {
        run.group.collect(rng.duration_between(ms(1000), ms(3000)));
        let slot = run.pick(&mut rng);
        let kind = KINDS[rng.below(KINDS.len() as u64) as usize];
        let started = now_ns();
        match kind {
            _ if run.candidate_fault(kind, slot, &mut rng) => {}
            "blackhole" => {
                proxies[slot].iter().for_each(|p| p.set(Mode::Blackhole));
                run.group
                    .collect(rng.duration_between(ms(TTL_MS / 2), ms(2 * TTL_MS)));
                for p in &proxies[slot] {
                    p.set(Mode::Pass);
                    p.reset_all();
                }
            }
            _ => {
                let Some(m) = cluster.leader() else {
                    eprintln!("chaos {name}: the members name no leader now; no member fault");
                    continue;
                };
                if kind == "member-kill" {
                    cluster.members[m].kill();
                    run.group.collect(rng.duration_between(ms(500), ms(5000)));
                    cluster.members[m]
                        .start()
                        .expect("start the member again with its data");
                } else {
                    cluster.members[m].signal("STOP");
                    run.group.collect(rng.duration_between(ms(1000), ms(5000)));
                    cluster.members[m].signal("CONT");
                }
                let whole = Instant::now();
                while cluster.wait_healthy(Duration::ZERO).is_err() {
                    assert!(
                        whole.elapsed() < Duration::from_secs(90),
                        "chaos {name} (seed {seed}): etcd is not healthy 90 s after a {kind}"
                    );
                    run.group.collect(ms(200));
                }
            }
        }
        faults.push(run.healed(kind, started, bound));
    }
    run.unseat_a_leader_never_unseated(&mut faults, bound);
    let (findings, _) = run.finish(&faults, bound, fence);
    let stats = fence.stats();
    let register = format!(
        "register: {} increments acknowledged, {} lost, value {}; {} requests refused as \
         stale, {} stale ones accepted",
        stats.increments, stats.lost_increments, stats.value, stats.rejected, stats.accepted_stale
    );
    if fenced {
        eprintln!("chaos {name} (seed {seed}): {register}");
        report(name, seed, &findings, fence, stats.increments as usize);
    } else {
        eprintln!(
            "chaos {name} (seed {seed}, register unfenced — counted, not asserted): {}; {register}",
            findings.summary()
        );
        assert!(
            findings.leaderships > 1,
            "chaos {name}: nobody was ever elected twice"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_etcd() {
    if wanted("etcd") {
        etcd_run("etcd", true).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_etcd_unfenced() {
    if wanted("etcd-unfenced") {
        etcd_run("etcd-unfenced", false).await;
    }
}
