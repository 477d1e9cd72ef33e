//! etcd on loopback: a single member, or a cluster of three, started from an etcd binary —
//! `ELECT_ETCD_SERVER_BIN`, else the release binary the `etcd-bin-vendored-linux-amd64` crate
//! ships (etcd 3.7.2; Debian 12's `etcd-server` is 3.4.23, without the lease fixes elect-etcd
//! asks for), else `etcd` on `PATH`. Members can be killed, frozen and restarted with their
//! data; the leader is found through etcd's JSON gateway.

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::etcd_http;
use crate::keeper;
use crate::local::free_port;

/// The etcd binary the tests start.
pub fn etcd_binary() -> Result<PathBuf, String> {
    if let Some(bin) = std::env::var_os("ELECT_ETCD_SERVER_BIN").filter(|b| !b.is_empty()) {
        return Ok(PathBuf::from(bin));
    }
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    {
        let vendored =
            etcd_bin_vendored_linux_amd64::etcd_bin_path().unwrap_or_else(|never| match never {});
        if vendored.is_file() {
            return Ok(vendored.to_path_buf());
        }
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("etcd"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            "no etcd binary: set ELECT_ETCD_SERVER_BIN, or put etcd (3.5.13 or newer) on PATH"
                .to_owned()
        })
}

/// One etcd process.
#[derive(Debug)]
pub struct Member {
    /// Its name in the cluster (`m0`, `m1`, …).
    pub name: String,
    /// Its client port.
    pub client_port: u16,
    /// Where it answers `/health` over plain HTTP: the client port, or with TLS a metrics
    /// port of its own.
    health_port: u16,
    child: Option<Child>,
    args: Vec<String>,
    log: PathBuf,
}

impl Member {
    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends `signal` (`STOP`, `CONT`, …) to the process.
    pub fn signal(&self, signal: &str) {
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill")
                .args([format!("-{signal}"), pid.to_string()])
                .stderr(Stdio::null())
                .status();
        }
    }

    /// Kills the process at once (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again with its data (after [`kill`](Self::kill)); waits until it is healthy.
    pub fn start(&mut self) -> Result<(), String> {
        if self.child.is_some() {
            return Ok(());
        }
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| e.to_string())?;
        let mut command = Command::new(etcd_binary()?);
        command
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log);
        self.child = Some(keeper::spawn(command).map_err(|e| format!("etcd {}: {e}", self.name))?);
        Ok(())
    }

    fn healthy(&self) -> bool {
        etcd_http::healthy(self.health_port)
    }

    /// The last three lines of its log, newest first.
    fn log_tail(&self) -> String {
        let log = fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(3).collect();
        tail.join(" | ")
    }
}

/// Why a cluster did not start: a member exited (worth trying other ports), or anything else.
enum StartFailure {
    Exited(String),
    Other(String),
}

impl From<String> for StartFailure {
    fn from(why: String) -> Self {
        StartFailure::Other(why)
    }
}

impl From<&str> for StartFailure {
    fn from(why: &str) -> Self {
        StartFailure::Other(why.to_owned())
    }
}

/// etcd members on loopback, started together as one cluster.
#[derive(Debug)]
pub struct EtcdCluster {
    /// The members.
    pub members: Vec<Member>,
    dir: PathBuf,
    /// Whether clients must speak TLS ([`start_tls`](Self::start_tls)).
    tls: bool,
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for member in &mut self.members {
            member.signal("CONT");
            member.kill();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

impl EtcdCluster {
    /// Starts `size` members (1 or 3, say) and waits until every one is healthy.
    pub fn start(size: usize) -> Result<EtcdCluster, String> {
        Self::start_with(size, None)
    }

    /// Starts `size` members whose clients must speak TLS with a client certificate that
    /// `certs.ca` signed (`--client-cert-auth`); members serve `certs.server_cert`. Health is
    /// asked on a plain-HTTP metrics port of each member's own. [`url`](Self::url) is then
    /// `etcds://…`.
    pub fn start_tls(size: usize, certs: &crate::tls::TestCerts) -> Result<EtcdCluster, String> {
        Self::start_with(size, Some(certs))
    }

    /// Starts the members on fresh ports; when one of them exits while starting (another
    /// process took one of its ports between our probe and its bind: CI saw "bind: address
    /// already in use"), the whole cluster is started again on other ports, twice at most.
    fn start_with(
        size: usize,
        certs: Option<&crate::tls::TestCerts>,
    ) -> Result<EtcdCluster, String> {
        let mut failures = Vec::new();
        for _ in 0..3 {
            match Self::try_start(size, certs) {
                Ok(cluster) => return Ok(cluster),
                Err(StartFailure::Exited(why)) => {
                    eprintln!("elect-tests: {why}; other ports");
                    failures.push(why);
                }
                Err(StartFailure::Other(why)) => return Err(why),
            }
        }
        Err(failures.join("; "))
    }

    fn try_start(
        size: usize,
        certs: Option<&crate::tls::TestCerts>,
    ) -> Result<EtcdCluster, StartFailure> {
        let binary = etcd_binary()?;
        let dir = std::env::temp_dir().join(crate::unique_name("elect-etcd"));
        fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let ports: Vec<(u16, u16)> = (0..size)
            .map(|_| Ok((free_port()?, free_port()?)))
            .collect::<Result<_, String>>()?;
        let initial: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(k, (_, peer))| format!("m{k}=http://127.0.0.1:{peer}"))
            .collect();
        let token = crate::unique_name("elect");
        let mut cluster = EtcdCluster {
            members: Vec::new(),
            dir: dir.clone(),
            tls: certs.is_some(),
        };
        let scheme = if certs.is_some() { "https" } else { "http" };
        for (k, (client, peer)) in ports.iter().enumerate() {
            let name = format!("m{k}");
            let data = dir.join(&name);
            let mut args: Vec<String> = vec![
                "--name".into(),
                name.clone(),
                "--data-dir".into(),
                data.to_str().ok_or("temp dir is not UTF-8")?.into(),
                "--listen-client-urls".into(),
                format!("{scheme}://127.0.0.1:{client}"),
                "--advertise-client-urls".into(),
                format!("{scheme}://127.0.0.1:{client}"),
                "--listen-peer-urls".into(),
                format!("http://127.0.0.1:{peer}"),
                "--initial-advertise-peer-urls".into(),
                format!("http://127.0.0.1:{peer}"),
                "--initial-cluster".into(),
                initial.join(","),
                "--initial-cluster-token".into(),
                token.clone(),
                "--initial-cluster-state".into(),
                "new".into(),
                "--log-level".into(),
                "warn".into(),
            ];
            let mut health_port = *client;
            if let Some(certs) = certs {
                health_port = free_port()?;
                let path = |p: &std::path::Path| {
                    p.to_str().map(str::to_owned).ok_or("temp dir is not UTF-8")
                };
                args.extend([
                    "--cert-file".into(),
                    path(&certs.server_cert)?,
                    "--key-file".into(),
                    path(&certs.server_key)?,
                    "--trusted-ca-file".into(),
                    path(&certs.ca)?,
                    "--client-cert-auth".into(),
                    "--listen-metrics-urls".into(),
                    format!("http://127.0.0.1:{health_port}"),
                ]);
            }
            let mut member = Member {
                name: name.clone(),
                client_port: *client,
                health_port,
                child: None,
                args,
                log: dir.join(format!("{name}.log")),
            };
            member
                .start()
                .map_err(|e| format!("{e} ({})", binary.display()))?;
            cluster.members.push(member);
        }
        cluster.wait_started(Duration::from_secs(60))?;
        Ok(cluster)
    }

    /// Like [`wait_healthy`](Self::wait_healthy), but a member that exits meanwhile ends the
    /// wait at once with [`StartFailure::Exited`] and the tail of its log.
    fn wait_started(&mut self, within: Duration) -> Result<(), StartFailure> {
        let until = Instant::now() + within;
        loop {
            for member in &mut self.members {
                let exited = member
                    .child
                    .as_mut()
                    .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))));
                if exited {
                    return Err(StartFailure::Exited(format!(
                        "etcd {} (client port {}) exited during start-up: {}",
                        member.name,
                        member.client_port,
                        member.log_tail()
                    )));
                }
            }
            if self.members.iter().all(Member::healthy) {
                return Ok(());
            }
            if Instant::now() >= until {
                return Err(StartFailure::Other(self.not_healthy(within)));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until every running member says it is healthy (it has a leader).
    pub fn wait_healthy(&self, within: Duration) -> Result<(), String> {
        let until = Instant::now() + within;
        loop {
            if self
                .members
                .iter()
                .filter(|m| m.child.is_some())
                .all(Member::healthy)
            {
                return Ok(());
            }
            if Instant::now() >= until {
                return Err(self.not_healthy(within));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn not_healthy(&self, within: Duration) -> String {
        let logs: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("{}: {}", m.name, m.log_tail()))
            .collect();
        format!("etcd not healthy within {within:?}; {}", logs.join("; "))
    }

    /// `etcd://127.0.0.1:P0,127.0.0.1:P1,…` (no prefix), `etcds://…` with TLS.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.client_port))
            .collect();
        let scheme = if self.tls { "etcds" } else { "etcd" };
        format!("{scheme}://{}", hosts.join(","))
    }

    /// The index of the member that leads the etcd cluster now, as the running members say
    /// (`None` while they name none, or disagree).
    pub fn leader(&self) -> Option<usize> {
        let mut named = None;
        for member in self.members.iter().filter(|m| m.child.is_some()) {
            let status =
                etcd_http::request(member.client_port, "POST", "/v3/maintenance/status", "{}");
            let leader = json_field(&status, "leader")?;
            if named.is_some_and(|n: String| n != leader) {
                return None;
            }
            named = Some(leader);
        }
        let leader = named?;
        self.members.iter().position(|m| {
            m.child.is_some()
                && json_field(
                    &etcd_http::request(m.client_port, "POST", "/v3/maintenance/status", "{}"),
                    "member_id",
                )
                .is_some_and(|id| id == leader)
        })
    }

    /// Moves the etcd cluster's leadership to another running member (etcd's
    /// `MoveLeader`: a new Raft term without stopping anyone) and waits until it leads.
    /// The index of the new leader.
    pub fn move_leader(&self, within: Duration) -> Result<usize, String> {
        let status =
            |m: &Member| etcd_http::request(m.client_port, "POST", "/v3/maintenance/status", "{}");
        let from = self.leader().ok_or("no etcd leader to move")?;
        let to = (1..self.members.len())
            .map(|k| (from + k) % self.members.len())
            .find(|&k| self.members[k].child.is_some())
            .ok_or("no other running member")?;
        let target = json_field(&status(&self.members[to]), "member_id")
            .ok_or("the target member did not say its id")?;
        let reply = etcd_http::request(
            self.members[from].client_port,
            "POST",
            "/v3/maintenance/transfer-leadership",
            &format!("{{\"targetID\":\"{target}\"}}"),
        );
        let until = Instant::now() + within;
        while self.leader() != Some(to) {
            if Instant::now() >= until {
                return Err(format!(
                    "m{to} does not lead {within:?} after MoveLeader (etcd said {reply:?})"
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(to)
    }
}

/// The text of `"field":"value"` in a JSON reply (etcd's gateway quotes 64-bit numbers).
fn json_field(json: &str, field: &str) -> Option<String> {
    let at = json.find(&format!("\"{field}\":\""))? + field.len() + 4;
    let end = json[at..].find('"')?;
    Some(json[at..at + end].to_owned())
}

/// The URL of the single etcd the tests share, in the order of `servers::Mode`:
/// `ELECT_ETCD_URL` (`cargo xtask test` starts one for the whole run), else a container of
/// `docker::LOCAL_IMAGE` (there is no official image to pull: in `auto` only when the engine
/// has that image), else this process's own from the local binary, started on first use.
pub fn shared_url() -> String {
    let mode = crate::Mode::from_env().unwrap_or_else(|e| panic!("{e}"));
    if mode != crate::Mode::Containers {
        if let Some(url) = std::env::var("ELECT_ETCD_URL")
            .ok()
            .filter(|u| !u.is_empty())
        {
            return url;
        }
    }
    let container = match mode {
        crate::Mode::Containers => true,
        crate::Mode::Auto => crate::docker::local_image_present(),
        crate::Mode::Local => false,
    };
    if container {
        static CONTAINER: OnceLock<crate::docker::Running> = OnceLock::new();
        return CONTAINER
            .get_or_init(|| {
                crate::docker::Running::start_etcd()
                    .unwrap_or_else(|e| panic!("an etcd container: {e}"))
            })
            .url()
            .unwrap_or_else(|e| panic!("the etcd container's URL: {e}"));
    }
    static ONE: OnceLock<EtcdCluster> = OnceLock::new();
    ONE.get_or_init(|| EtcdCluster::start(1).unwrap_or_else(|e| panic!("an etcd: {e}")))
        .url()
}

/// The URL of the three-member etcd cluster the tests share: `ELECT_ETCD_CLUSTER_URL`, else
/// this process's own, started on first use.
pub fn shared_cluster_url() -> String {
    std::env::var("ELECT_ETCD_CLUSTER_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| {
            static THREE: OnceLock<EtcdCluster> = OnceLock::new();
            THREE
                .get_or_init(|| {
                    EtcdCluster::start(3).unwrap_or_else(|e| panic!("an etcd cluster: {e}"))
                })
                .url()
        })
}

/// A single etcd of a test's own that it can kill and start again with its data: from the
/// local binary, or a container of `docker::LOCAL_IMAGE` with `ELECT_TEST_SERVERS=containers`.
/// Blocking, like [`EtcdCluster`].
#[derive(Debug)]
pub enum OwnedEtcd {
    /// A one-member [`EtcdCluster`] from the local binary.
    Local(EtcdCluster),
    /// A container (its data stays in the container across a kill).
    Container(crate::docker::Running),
}

impl OwnedEtcd {
    /// Starts one, in a container when `ELECT_TEST_SERVERS=containers`.
    pub fn start() -> Result<OwnedEtcd, String> {
        if crate::Mode::from_env()? == crate::Mode::Containers {
            return crate::docker::Running::start_etcd().map(OwnedEtcd::Container);
        }
        EtcdCluster::start(1).map(OwnedEtcd::Local)
    }

    /// Its `etcd://` URL.
    pub fn url(&self) -> String {
        match self {
            OwnedEtcd::Local(cluster) => cluster.url(),
            OwnedEtcd::Container(c) => c.url().unwrap_or_default(),
        }
    }

    /// Kills it at once.
    pub fn kill(&mut self) -> Result<(), String> {
        match self {
            OwnedEtcd::Local(cluster) => {
                cluster.members[0].kill();
                Ok(())
            }
            OwnedEtcd::Container(c) => c.kill(),
        }
    }

    /// Starts it again with its data and waits until it is healthy.
    pub fn start_again(&mut self) -> Result<(), String> {
        match self {
            OwnedEtcd::Local(cluster) => {
                cluster.members[0].start()?;
                cluster.wait_healthy(Duration::from_secs(30))
            }
            OwnedEtcd::Container(c) => c.start_again(),
        }
    }
}

/// The gRPC messages an etcd member has received: the sum of `grpc_server_msg_received_total`
/// on its `/metrics` (served on the client URL; reading it is HTTP, not gRPC, so it costs the
/// count nothing). A unary call is one message; a stream counts each message sent on it (a
/// lease keep-alive, a watch request), which is what a request is on etcd. The first
/// endpoint of a plain `etcd://host:port[,…]` URL only (the benchmark's single member).
pub async fn messages_received(url: &str) -> Result<u64, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("etcd://").ok_or("not an etcd:// URL")?;
    let host = rest.split([',', '/', '?']).next().unwrap_or(rest);
    if host.contains('@') {
        return Err("etcd metrics: URLs with credentials are not supported".into());
    }
    let mut stream =
        tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(host))
            .await
            .map_err(|_| format!("etcd metrics: {host}: no answer in 5 s"))?
            .map_err(|e| format!("etcd metrics: {host}: {e}"))?;
    let request = format!("GET /metrics HTTP/1.0\r\nHost: {host}\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut body = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut body))
        .await
        .map_err(|_| format!("etcd metrics: {host}: no full answer in 5 s"))?
        .map_err(|e| e.to_string())?;
    let mut found = false;
    let total: f64 = body
        .lines()
        .filter(|l| l.starts_with("grpc_server_msg_received_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .inspect(|_| found = true)
        .sum();
    if found {
        Ok(total as u64)
    } else {
        Err(format!(
            "etcd metrics: {host}/metrics has no grpc_server_msg_received_total"
        ))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn json_fields_are_found() {
        let json = r#"{"header":{"cluster_id":"1","member_id":"42"},"leader":"42"}"#;
        assert_eq!(super::json_field(json, "leader").as_deref(), Some("42"));
        assert_eq!(super::json_field(json, "member_id").as_deref(), Some("42"));
        assert_eq!(super::json_field(json, "nope"), None);
    }
}
