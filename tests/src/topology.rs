//! Redis topologies on loopback from the local `redis-server`: a Cluster of three masters with
//! one replica each, and one master with two replicas watched by three Sentinels. Started once
//! per test process (shared through statics) and tied to it like every local server.

use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::keeper;
use crate::local::{find_binary, free_port};
use crate::Kind;

/// The name the Sentinels monitor the master under.
pub const SENTINEL_SERVICE: &str = "elect";

/// One `redis-server` process of a topology.
#[derive(Debug)]
pub struct Node {
    /// Its loopback port.
    pub port: u16,
    child: Child,
    /// How to start it again: the topology's directory, its name and its arguments.
    start: (PathBuf, String, Vec<String>),
}

impl Node {
    /// Kills the process if it still runs and starts it again with the same arguments (a data
    /// node comes back empty: no persistence; a Cluster node keeps its `nodes.conf`), then
    /// waits until it answers `PING`.
    pub fn restart(&mut self) -> Result<(), String> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let (dir, name, args) = &self.start;
        self.child = spawn(dir, name, args)?;
        let port = self.port;
        wait_until(
            &format!("{name} to answer again"),
            Duration::from_secs(20),
            || command(port, "PING").contains("PONG"),
        )
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (`STOP`, `CONT`, `KILL`, …) to the process.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status();
        assert!(
            status.is_ok_and(|s| s.success()),
            "kill -{signal} {}",
            self.pid()
        );
    }
}

/// A running topology: its nodes and the URL elect connects with.
#[derive(Debug)]
pub struct Topology {
    /// `redis-cluster://…` or `redis-sentinel://…`.
    pub url: String,
    /// The data nodes (masters and replicas).
    pub nodes: Vec<Node>,
    /// The Sentinels (none for a cluster).
    pub sentinels: Vec<Node>,
    dir: PathBuf,
}

impl Drop for Topology {
    fn drop(&mut self) {
        for node in self.nodes.iter_mut().chain(self.sentinels.iter_mut()) {
            let _ = node.child.kill();
            let _ = node.child.wait();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Sends one inline command and returns what came back within a second (empty on failure).
pub fn command(port: u16, line: &str) -> String {
    let Ok(mut stream) = TcpStream::connect((Ipv4Addr::LOCALHOST, port)) else {
        return String::new();
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(1000)));
    if stream.write_all(format!("{line}\r\n").as_bytes()).is_err() {
        return String::new();
    }
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
        // Inline replies here are small; stop once a full reply is likely in.
        if out.ends_with(b"\r\n") && n < buf.len() {
            break;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn wait_until(what: &str, within: Duration, mut ready: impl FnMut() -> bool) -> Result<(), String> {
    let until = Instant::now() + within;
    while Instant::now() < until {
        if ready() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!("{what}: not within {within:?}"))
}

fn spawn(dir: &Path, name: &str, args: &[String]) -> Result<Child, String> {
    let mut command = Command::new(find_binary(Kind::Redis)?);
    let log = fs::File::create(dir.join(format!("{name}.out"))).map_err(|e| e.to_string())?;
    command
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log);
    keeper::spawn(command).map_err(|e| format!("redis-server ({name}): {e}"))
}

/// Starts one data node on a free port and waits until it answers `PING`. A Cluster node also
/// gets a cluster bus port of its own (`--cluster-port`): Redis's default, the port + 10 000,
/// is refused above 55 535 ("Redis port number too high"), and a fifth of the ephemeral ports
/// this machine hands out are (CI: "node4 to answer: not within 20s"). A node that exits while
/// starting (e.g. its port was taken between our probe and its bind) is tried again on other
/// ports, twice at most.
fn data_node(dir: &Path, name: &str, extra: &[&str]) -> Result<Node, String> {
    let mut failures = Vec::new();
    for _ in 0..3 {
        let port = free_port()?;
        let node_dir = dir.join(name);
        fs::create_dir_all(&node_dir).map_err(|e| e.to_string())?;
        let mut args: Vec<String> = [
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            node_dir.to_str().ok_or("temp dir is not UTF-8")?,
            "--daemonize",
            "no",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if extra.contains(&"--cluster-enabled") {
            args.extend(["--cluster-port".to_string(), free_port()?.to_string()]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut child = spawn(dir, name, &args)?;
        let mut exited = false;
        let answered = wait_until(
            &format!("{name} (port {port}) to answer"),
            Duration::from_secs(20),
            || {
                exited = matches!(child.try_wait(), Ok(Some(_)));
                exited || command(port, "PING").contains("PONG")
            },
        );
        if !exited {
            answered?;
            return Ok(Node {
                port,
                child,
                start: (dir.to_owned(), name.to_owned(), args),
            });
        }
        let log = fs::read_to_string(dir.join(format!("{name}.out"))).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(3).collect();
        failures.push(format!(
            "{name} on port {port} exited while starting: {}",
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        ));
    }
    Err(failures.join("; "))
}

/// `127.0.0.1:P0?node=127.0.0.1:P1&node=…`: the first node as the URL's host, the others as
/// fred's `node` options.
fn hosts(nodes: &[Node]) -> String {
    let others: Vec<String> = nodes[1..]
        .iter()
        .map(|n| format!("node=127.0.0.1:{}", n.port))
        .collect();
    format!("127.0.0.1:{}?{}", nodes[0].port, others.join("&"))
}

fn fresh_dir(name: &str) -> Result<PathBuf, String> {
    let dir = std::env::temp_dir().join(crate::unique_name(name));
    fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(dir)
}

impl Topology {
    /// Three masters with one replica each, slots spread by `redis-cli --cluster create`.
    pub fn cluster() -> Result<Topology, String> {
        let dir = fresh_dir("elect-redis-cluster")?;
        let mut nodes = Vec::new();
        for k in 0..6 {
            nodes.push(data_node(
                &dir,
                &format!("node{k}"),
                &[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "2000",
                ],
            )?);
        }
        let cli = find_binary(Kind::Redis)?.with_file_name("redis-cli");
        let mut create = Command::new(&cli);
        create.args(["--cluster", "create"]);
        for node in &nodes {
            create.arg(format!("127.0.0.1:{}", node.port));
        }
        create.args(["--cluster-replicas", "1", "--cluster-yes"]);
        let out = create
            .output()
            .map_err(|e| format!("{}: {e}", cli.display()))?;
        if !out.status.success() {
            return Err(format!(
                "redis-cli --cluster create failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let url = format!("redis-cluster://{}", hosts(&nodes));
        let topology = Topology {
            url,
            nodes,
            sentinels: Vec::new(),
            dir,
        };
        // `cluster_state:ok` comes before the replicas have synced: a `WAIT` for one replica
        // would time out until they have.
        wait_until(
            "the cluster to be ok, each master with a synced replica",
            Duration::from_secs(60),
            || topology.healthy(),
        )?;
        Ok(topology)
    }

    /// One master, two replicas, three Sentinels (quorum 2, down after 2 s).
    pub fn sentinel() -> Result<Topology, String> {
        let dir = fresh_dir("elect-redis-sentinel")?;
        let master = data_node(&dir, "master", &[])?;
        let mut nodes = vec![master];
        for k in 0..2 {
            let of = nodes[0].port.to_string();
            nodes.push(data_node(
                &dir,
                &format!("replica{k}"),
                &["--replicaof", "127.0.0.1", &of],
            )?);
        }
        for replica in &nodes[1..] {
            wait_until("a replica to sync", Duration::from_secs(30), || {
                command(replica.port, "INFO replication").contains("master_link_status:up")
            })?;
        }
        let mut sentinels = Vec::new();
        for k in 0..3 {
            let port = free_port()?;
            let conf = dir.join(format!("sentinel{k}.conf"));
            fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\ndaemonize no\ndir {}\n\
                     sentinel monitor {SENTINEL_SERVICE} 127.0.0.1 {} 2\n\
                     sentinel down-after-milliseconds {SENTINEL_SERVICE} 2000\n\
                     sentinel failover-timeout {SENTINEL_SERVICE} 10000\n\
                     sentinel parallel-syncs {SENTINEL_SERVICE} 1\n",
                    dir.display(),
                    nodes[0].port
                ),
            )
            .map_err(|e| e.to_string())?;
            let args = vec![
                conf.to_str().ok_or("temp dir is not UTF-8")?.to_string(),
                "--sentinel".to_string(),
            ];
            let name = format!("sentinel{k}");
            let child = spawn(&dir, &name, &args)?;
            sentinels.push(Node {
                port,
                child,
                start: (dir.clone(), name, args),
            });
        }
        for sentinel in &sentinels {
            wait_until(
                "a Sentinel to know the replicas",
                Duration::from_secs(30),
                || {
                    let reply = command(
                        sentinel.port,
                        &format!("SENTINEL REPLICAS {SENTINEL_SERVICE}"),
                    );
                    reply.matches("127.0.0.1").count() >= 2
                },
            )?;
        }
        let url = format!(
            "redis-sentinel://{}&sentinelServiceName={SENTINEL_SERVICE}",
            hosts(&sentinels)
        );
        let topology = Topology {
            url,
            nodes,
            sentinels,
            dir,
        };
        wait_until(
            "the Sentinels to know each other",
            Duration::from_secs(30),
            || topology.sentinels_know_each_other(),
        )?;
        Ok(topology)
    }
}

/// One node of a Cluster as `CLUSTER NODES` lists it.
struct ClusterNode {
    id: String,
    port: u16,
    master: bool,
    /// The master's id, for a replica.
    of: String,
    /// Not flagged `fail`/`fail?` and its link connected.
    ok: bool,
    /// Slot ranges, for a master.
    slots: Vec<(u16, u16)>,
}

fn cluster_nodes(port: u16) -> Vec<ClusterNode> {
    command(port, "CLUSTER NODES")
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 8 {
                return None;
            }
            let port = f[1]
                .split(['@', ','])
                .next()?
                .rsplit(':')
                .next()?
                .parse()
                .ok()?;
            Some(ClusterNode {
                id: f[0].trim_start_matches('$').to_owned(),
                port,
                master: f[2].contains("master"),
                of: f[3].to_owned(),
                ok: !f[2].contains("fail") && f[7] == "connected",
                slots: f[8..]
                    .iter()
                    .filter_map(|r| {
                        let (lo, hi) = r.split_once('-').unwrap_or((r, r));
                        Some((lo.parse().ok()?, hi.parse().ok()?))
                    })
                    .collect(),
            })
        })
        .collect()
}

impl Topology {
    /// The index in [`nodes`](Self::nodes) of the master that serves `key` now: the master the
    /// Sentinels name, or the Cluster master of the key's slot (asked of the first node that
    /// answers).
    pub fn master_of(&self, key: &str) -> Option<usize> {
        let port = if self.sentinels.is_empty() {
            let asked = self
                .nodes
                .iter()
                .find(|n| command(n.port, "PING").contains("PONG"))?;
            let slot: u16 = command(asked.port, &format!("CLUSTER KEYSLOT {key}"))
                .trim()
                .trim_start_matches(':')
                .parse()
                .ok()?;
            cluster_nodes(asked.port)
                .into_iter()
                .find(|n| {
                    n.master && n.ok && n.slots.iter().any(|&(lo, hi)| lo <= slot && slot <= hi)
                })?
                .port
        } else {
            self.sentinel_master_port()?
        };
        self.nodes.iter().position(|n| n.port == port)
    }

    /// The indices of the data nodes that replicate from the one at index `master`, as each
    /// says of itself (`ROLE`); a node that does not answer within a second is left out.
    pub fn replicas_of(&self, master: usize) -> Vec<usize> {
        let of = format!("\r\n:{}\r\n", self.nodes[master].port);
        (0..self.nodes.len())
            .filter(|&k| k != master)
            .filter(|&k| {
                let role = command(self.nodes[k].port, "ROLE");
                role.contains("slave") && role.contains(&of)
            })
            .collect()
    }

    /// Whether the topology is whole again: every data node up and replicating, every master
    /// with its replicas online (Sentinel: all Sentinels name the same master, which has both
    /// replicas online; Cluster: `cluster_state:ok` on every node, three masters and three
    /// replicas, none failing, every master with a replica).
    pub fn healthy(&self) -> bool {
        if !self
            .nodes
            .iter()
            .all(|n| command(n.port, "PING").contains("PONG"))
        {
            return false;
        }
        if self.sentinels.is_empty() {
            let listed = cluster_nodes(self.nodes[0].port);
            return self
                .nodes
                .iter()
                .all(|n| command(n.port, "CLUSTER INFO").contains("cluster_state:ok"))
                && listed
                    .iter()
                    .filter(|n| n.master && n.ok && !n.slots.is_empty())
                    .count()
                    == 3
                && listed.iter().filter(|n| !n.master && n.ok).count() == 3
                && listed
                    .iter()
                    .filter(|m| m.master && !m.slots.is_empty())
                    .all(|m| listed.iter().any(|r| !r.master && r.ok && r.of == m.id))
                && self.nodes.iter().all(|n| {
                    let replication = command(n.port, "INFO replication");
                    !replication.contains("role:slave")
                        || replication.contains("master_link_status:up")
                });
        }
        let Some(port) = self.sentinels_agree() else {
            return false;
        };
        let replication = command(port, "INFO replication");
        replication.contains("role:master")
            && replication.matches("state=online").count() == self.nodes.len() - 1
            && self.sentinels_know_each_other()
            && self.sentinels_quiet()
    }

    /// Whether every Sentinel flags the master as just `master`: no failover under way, not
    /// subjectively or objectively down. Until a failover ends (`+switch-master`, seconds after
    /// `SENTINEL FAILOVER` answered OK or the old master came back from a freeze) the
    /// Sentinels still name the old master, which may still list its replicas as online: a
    /// topology is not whole while one is flagged otherwise.
    fn sentinels_quiet(&self) -> bool {
        self.sentinels.iter().all(|s| {
            sentinel_fields(s.port)
                .iter()
                .any(|(field, value)| field == "flags" && value == "master")
        })
    }

    /// Whether every Sentinel knows the other two. They find each other through hello
    /// messages on the master's pub/sub (every 2 s): a master killed before that leaves each
    /// Sentinel alone, unable to gather its quorum of 2 for objectively down, and no failover
    /// ever comes (the bench's master crash, round 0 on CI: "no failover within 60 s").
    pub fn sentinels_know_each_other(&self) -> bool {
        let others = self.sentinels.len().saturating_sub(1);
        self.sentinels.iter().all(|s| {
            sentinel_fields(s.port)
                .iter()
                .find(|(field, _)| field == "num-other-sentinels")
                .and_then(|(_, value)| value.parse::<usize>().ok())
                >= Some(others)
        })
    }
}

impl Topology {
    /// Kills the data node at index `node` if it still runs and starts it again, empty, as an
    /// operator's restart would: a Cluster node with its `nodes.conf`; behind Sentinels, as a
    /// replica of the master the Sentinels name now (the `replicaof` that Sentinel's config
    /// rewrite would have left in its config), or as a master when it is still the one named.
    pub fn restart(&mut self, node: usize) -> Result<(), String> {
        if !self.sentinels.is_empty() {
            let named = self.sentinel_master_port();
            let start = &mut self.nodes[node].start.2;
            if let Some(at) = start.iter().position(|a| a == "--replicaof") {
                start.drain(at..(at + 3).min(start.len()));
            }
            if let Some(port) = named.filter(|&p| p != self.nodes[node].port) {
                let start = &mut self.nodes[node].start.2;
                start.extend(["--replicaof".into(), "127.0.0.1".into(), port.to_string()]);
            }
        }
        self.nodes[node].restart()
    }

    /// Asks the first Sentinel for a failover (`SENTINEL FAILOVER`), again while it finds no
    /// replica suitable (`NOGOODSLAVE`: it has not heard from them for long enough) or one is
    /// under way (`INPROG`), and waits until every Sentinel names the promoted replica and it
    /// says it is a master; all within `within`. Returns the new master's port.
    ///
    /// `SENTINEL FAILOVER` answers OK when the failover *starts*: the promotion and the
    /// `+switch-master` come seconds later, and until then the Sentinels name the old master
    /// (the chaos run that went on at the OK faulted a topology in mid-failover and blamed
    /// elect for the minutes the replicas took to resync).
    pub fn sentinel_failover(&self, within: Duration) -> Result<u16, String> {
        let sentinel = self.sentinels.first().ok_or("a Cluster has no Sentinels")?;
        let until = Instant::now() + within;
        let old = self
            .sentinel_master_port()
            .ok_or("no Sentinel names a master")?;
        loop {
            let reply = command(
                sentinel.port,
                &format!("SENTINEL FAILOVER {SENTINEL_SERVICE}"),
            );
            if reply.contains("OK") {
                // A failover that started may still be aborted (the chosen replica does not
                // answer in time): then it is asked for again.
                let mut promoted = None;
                let switched = wait_until(
                    "the Sentinels to name the promoted replica",
                    until
                        .saturating_duration_since(Instant::now())
                        .min(Duration::from_secs(20)),
                    || {
                        promoted = self.sentinels_agree().filter(|&port| {
                            port != old && command(port, "ROLE").contains("master")
                        });
                        promoted.is_some()
                    },
                );
                if let Some(port) = promoted {
                    return Ok(port);
                }
                if Instant::now() >= until {
                    return Err(format!(
                        "{}\n{}",
                        switched.err().unwrap_or_default(),
                        self.sentinel_report()
                    ));
                }
            } else if Instant::now() >= until {
                return Err(format!(
                    "SENTINEL FAILOVER: {}\n{}",
                    reply.trim(),
                    self.sentinel_report()
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The port of the master every Sentinel names now; `None` while they disagree, or name
    /// none (or this is a Cluster).
    pub fn sentinels_agree(&self) -> Option<u16> {
        let port = self.sentinel_master_port()?;
        let named = format!("\r\n{port}\r\n");
        self.sentinels
            .iter()
            .all(|s| {
                command(
                    s.port,
                    &format!("SENTINEL GET-MASTER-ADDR-BY-NAME {SENTINEL_SERVICE}"),
                )
                .contains(&named)
            })
            .then_some(port)
    }

    /// The port of the master the Sentinels name now (None when they name none or this
    /// is a Cluster).
    /// The first Sentinel that answers is asked.
    pub fn sentinel_master_port(&self) -> Option<u16> {
        self.sentinels.iter().find_map(|sentinel| {
            let reply = command(
                sentinel.port,
                &format!("SENTINEL GET-MASTER-ADDR-BY-NAME {SENTINEL_SERVICE}"),
            );
            // *2\r\n$9\r\n127.0.0.1\r\n$5\r\n12345\r\n
            reply.lines().nth(4)?.trim().parse().ok()
        })
    }

    /// What each Sentinel and each data node says of the topology now, on one line each, for
    /// an error message: the master a Sentinel names with its flags and failover state, and
    /// each node's `ROLE`. Empty for a Cluster.
    pub fn sentinel_report(&self) -> String {
        let mut lines = Vec::new();
        for (k, sentinel) in self.sentinels.iter().enumerate() {
            let wanted = [
                "port",
                "flags",
                "num-slaves",
                "num-other-sentinels",
                "failover-state",
                "config-epoch",
            ];
            let shown: Vec<String> = sentinel_fields(sentinel.port)
                .into_iter()
                .filter(|(field, _)| wanted.contains(&field.as_str()))
                .map(|(field, value)| format!("{field}={value}"))
                .collect();
            lines.push(format!("sentinel{k}: {}", shown.join(" ")));
        }
        if !self.sentinels.is_empty() {
            for node in &self.nodes {
                let role = command(node.port, "ROLE").replace("\r\n", " ");
                lines.push(format!("node {}: ROLE {}", node.port, role.trim()));
            }
        }
        lines.join("\n")
    }
}

/// The fields of `SENTINEL MASTER` as the Sentinel on `port` gives them now (none when it
/// does not answer).
fn sentinel_fields(port: u16) -> Vec<(String, String)> {
    let reply = command(port, &format!("SENTINEL MASTER {SENTINEL_SERVICE}"));
    let values: Vec<&str> = reply
        .lines()
        .filter(|l| !l.starts_with(['*', '$']))
        .collect();
    values
        .chunks(2)
        .filter(|pair| pair.len() == 2)
        .map(|pair| (pair[0].to_owned(), pair[1].to_owned()))
        .collect()
}

/// The URL of the Cluster the tests share: `ELECT_REDIS_CLUSTER_URL` (`cargo xtask test`
/// starts one for the whole run), else this process's own, started on first use.
pub fn shared_cluster_url() -> String {
    std::env::var("ELECT_REDIS_CLUSTER_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| shared_cluster().url.clone())
}

/// The URL of the Sentinel topology the tests share: `ELECT_REDIS_SENTINEL_URL`, else this
/// process's own, started on first use.
pub fn shared_sentinel_url() -> String {
    std::env::var("ELECT_REDIS_SENTINEL_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| shared_sentinel().url.clone())
}

/// The shared Cluster of this test process, started on first use.
pub fn shared_cluster() -> &'static Topology {
    static CLUSTER: OnceLock<Topology> = OnceLock::new();
    CLUSTER.get_or_init(|| Topology::cluster().unwrap_or_else(|e| panic!("a Redis Cluster: {e}")))
}

/// The shared Sentinel topology of this test process, started on first use.
pub fn shared_sentinel() -> &'static Topology {
    static SENTINEL: OnceLock<Topology> = OnceLock::new();
    SENTINEL
        .get_or_init(|| Topology::sentinel().unwrap_or_else(|e| panic!("a Sentinel topology: {e}")))
}
