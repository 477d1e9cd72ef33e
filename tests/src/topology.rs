//! Redis topologies on loopback from the local `redis-server`: a Cluster of three masters with
//! one replica each, and one master with two replicas watched by three Sentinels. Started once
//! per test process (shared through statics) and tied to it like every local server.

use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::keeper;
use crate::local::find_binary;
use crate::Kind;

/// The name the Sentinels monitor the master under.
pub const SENTINEL_SERVICE: &str = "elect";

/// One `redis-server` process of a topology.
#[derive(Debug)]
pub struct Node {
    /// Its loopback port.
    pub port: u16,
    child: Child,
}

impl Node {
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

fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|e| e.to_string())?;
    Ok(listener.local_addr().map_err(|e| e.to_string())?.port())
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

fn data_node(dir: &Path, name: &str, extra: &[&str]) -> Result<Node, String> {
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
    args.extend(extra.iter().map(|s| s.to_string()));
    let child = spawn(dir, name, &args)?;
    wait_until(
        &format!("{name} to answer"),
        Duration::from_secs(20),
        || command(port, "PING").contains("PONG"),
    )?;
    Ok(Node { port, child })
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
        for node in &nodes {
            wait_until("the cluster to be ok", Duration::from_secs(30), || {
                command(node.port, "CLUSTER INFO").contains("cluster_state:ok")
            })?;
        }
        let url = format!("redis-cluster://{}", hosts(&nodes));
        Ok(Topology {
            url,
            nodes,
            sentinels: Vec::new(),
            dir,
        })
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
            let child = spawn(&dir, &format!("sentinel{k}"), &args)?;
            sentinels.push(Node { port, child });
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
        Ok(Topology {
            url,
            nodes,
            sentinels,
            dir,
        })
    }
}

impl Topology {
    /// The port of the master the Sentinels name now (None when they name none or this
    /// is a Cluster).
    pub fn sentinel_master_port(&self) -> Option<u16> {
        let sentinel = self.sentinels.first()?;
        let reply = command(
            sentinel.port,
            &format!("SENTINEL GET-MASTER-ADDR-BY-NAME {SENTINEL_SERVICE}"),
        );
        // *2\r\n$9\r\n127.0.0.1\r\n$5\r\n12345\r\n
        reply.lines().nth(4)?.trim().parse().ok()
    }
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
