//! Throwaway servers started from the binaries on this machine, each in its own directory on a
//! free loopback port. Blocking code: callable from any thread or runtime.

use std::collections::BTreeSet;
use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::keeper;
use crate::Kind;

/// How long a server may take to answer after it was started.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A server process this library started, with its directory and port, which survive a
/// restart.
#[derive(Debug)]
pub struct LocalServer {
    kind: Kind,
    port: u16,
    dir: PathBuf,
    extra_args: Vec<String>,
    child: Option<Child>,
}

impl LocalServer {
    /// Starts a fresh server of `kind`, waiting until it answers.
    pub fn start(kind: Kind) -> Result<LocalServer, String> {
        Self::start_with_args(kind, &[])
    }

    /// Like [`start`](Self::start), with extra command-line arguments for the server (e.g.
    /// `--standalone` for the MongoDB-wire server: no replica set, no change streams).
    pub fn start_with_args(kind: Kind, extra_args: &[&str]) -> Result<LocalServer, String> {
        let dir = fresh_dir(kind)?;
        if kind == Kind::Mysql {
            init_mariadb(&dir)?;
        }
        if kind == Kind::Postgres {
            init_postgres(&dir)?;
        }
        let mut server = LocalServer {
            kind,
            port: 0,
            dir,
            extra_args: extra_args.iter().map(|a| a.to_string()).collect(),
            child: None,
        };
        // A port found free can be taken before the server binds it (by another test's
        // client socket: ephemeral ports come from the same range), and the server then exits
        // during start-up: try another port, twice at most.
        let mut tries = 0;
        loop {
            server.port = free_port()?;
            tries += 1;
            match server.launch() {
                Ok(()) => return Ok(server),
                Err(why) if tries < 3 && why.contains("exited during start-up") => {
                    eprintln!(
                        "elect-tests: {} on port {}: {why}; another port",
                        kind.binary(),
                        server.port
                    );
                }
                Err(why) => return Err(why),
            }
        }
    }

    /// The server's loopback address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// The URL a driver connects with.
    pub fn url(&self) -> String {
        match self.kind {
            Kind::Redis => format!("redis://127.0.0.1:{}", self.port),
            Kind::Mysql => format!("mysql://root@127.0.0.1:{}/", self.port),
            Kind::Mongo => format!("mongodb://127.0.0.1:{}/?directConnection=true", self.port),
            Kind::Postgres => format!("postgres://postgres@127.0.0.1:{}/postgres", self.port),
        }
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Stops the server gracefully (SIGTERM; PostgreSQL's fast shutdown, SIGINT, which does
    /// not wait for clients to leave), then SIGKILL after 20 s.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let graceful = if self.kind == Kind::Postgres {
                "INT"
            } else {
                "TERM"
            };
            signal(child.id(), graceful);
            let until = Instant::now() + Duration::from_secs(20);
            while Instant::now() < until {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            self.kill_group(&mut child);
        }
    }

    /// Kills the server at once (SIGKILL): no shutdown work, no flush. PostgreSQL's backends
    /// die with their postmaster (its process group), as in a crash of the machine.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            self.kill_group(&mut child);
        }
    }

    fn kill_group(&self, child: &mut Child) {
        if self.kind == Kind::Postgres {
            signal(child.id(), "KILL");
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .status();
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Starts the server again on the same port with the same data directory.
    pub fn restart(&mut self) -> Result<(), String> {
        self.stop();
        self.launch()
    }

    /// Starts the server again after a [`kill`](Self::kill) or [`stop`](Self::stop).
    pub fn launch(&mut self) -> Result<(), String> {
        if self.is_running() {
            return Ok(());
        }
        let mut command = self.command()?;
        command
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log_file(&self.dir, "stdout.log")?)
            .stderr(log_file(&self.dir, "stderr.log")?);
        let child = keeper::spawn(command)
            .map_err(|e| format!("{}: could not start: {e}", self.kind.binary()))?;
        self.child = Some(child);
        let started = Instant::now();
        loop {
            if !self.is_running() {
                let log = self.log_tail();
                self.child = None;
                return Err(format!(
                    "{} exited during start-up; its log ({}):\n{log}",
                    self.kind.binary(),
                    self.dir.display()
                ));
            }
            let ready = if self.tls_only() {
                // Its greeting would need a TLS handshake: accepting connections will do.
                TcpStream::connect_timeout(&self.addr(), Duration::from_millis(200)).is_ok()
            } else {
                answers(self.kind, self.addr())
            };
            if ready {
                return Ok(());
            }
            if started.elapsed() > READY_TIMEOUT {
                self.kill();
                return Err(format!(
                    "{} did not answer on {} within {READY_TIMEOUT:?}; its log:\n{}",
                    self.kind.binary(),
                    self.addr(),
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Whether the server speaks only TLS on its port (the MongoDB-wire server with a
    /// certificate; Redis keeps a plaintext port beside `--tls-port`, MariaDB negotiates).
    fn tls_only(&self) -> bool {
        self.kind == Kind::Mongo && self.extra_args.iter().any(|a| a == "--tls-cert-file")
    }

    fn command(&self) -> Result<Command, String> {
        let dir = self.dir.to_str().ok_or("temp dir is not UTF-8")?;
        let port = self.port.to_string();
        let mut command = Command::new(find_binary(self.kind)?);
        match self.kind {
            Kind::Redis => {
                command.args([
                    "--port",
                    &port,
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    dir,
                    "--daemonize",
                    "no",
                    "--logfile",
                    "redis.log",
                ]);
            }
            Kind::Mysql => {
                command.args([
                    "--no-defaults",
                    &format!("--datadir={dir}/data"),
                    &format!("--socket={dir}/mysql.sock"),
                    &format!("--port={port}"),
                    "--bind-address=127.0.0.1",
                    "--user=root",
                    "--skip-name-resolve",
                    &format!("--pid-file={dir}/mysqld.pid"),
                    &format!("--log-error={dir}/error.log"),
                    "--innodb-buffer-pool-size=64M",
                    "--max-connections=500",
                ]);
            }
            Kind::Mongo => {
                command.args([
                    "--host",
                    "127.0.0.1",
                    "--port",
                    &port,
                    "--storage-path",
                    &format!("{dir}/data"),
                ]);
            }
            Kind::Postgres => {
                command.args([
                    "-D",
                    &format!("{dir}/data"),
                    "-p",
                    &port,
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    &format!("unix_socket_directories={dir}"),
                    // Fast, and a killed server keeps every acknowledged commit (the WAL is
                    // in the kernel at commit); `synchronous_commit=off` would not (the
                    // smoke test `postgres_is_killed_right_after_a_commit_and_keeps_it`).
                    "-c",
                    "fsync=off",
                    "-c",
                    "full_page_writes=off",
                    "-c",
                    "max_connections=500",
                    // Statement counts for the bench (`CREATE EXTENSION pg_stat_statements`
                    // makes them readable).
                    "-c",
                    "shared_preload_libraries=pg_stat_statements",
                ]);
                // Its own process group, so a kill takes the backends with the postmaster.
                use std::os::unix::process::CommandExt;
                command.process_group(0);
                as_postgres_user(&mut command)?;
            }
        }
        command.args(&self.extra_args);
        Ok(command)
    }

    fn log_tail(&self) -> String {
        let mut out = String::new();
        for name in ["stderr.log", "stdout.log", "redis.log", "error.log"] {
            if let Ok(text) = fs::read_to_string(self.dir.join(name)) {
                let lines: Vec<_> = text.lines().rev().take(15).collect();
                if !lines.is_empty() {
                    out.push_str(&format!("--- {name}\n"));
                    for line in lines.into_iter().rev() {
                        out.push_str(line);
                        out.push('\n');
                    }
                }
            }
        }
        out
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        self.kill();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Whether a server of `kind` answers its protocol's greeting at `addr`.
pub(crate) fn answers(kind: Kind, addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut buf = [0u8; 64];
    match kind {
        Kind::Redis => {
            stream.write_all(b"PING\r\n").is_ok()
                && stream
                    .read(&mut buf)
                    .is_ok_and(|n| buf[..n].starts_with(b"+PONG"))
        }
        // The server speaks first: a handshake packet, protocol version 10 after the header.
        Kind::Mysql => stream.read(&mut buf).is_ok_and(|n| n > 5 && buf[4] == 10),
        Kind::Mongo => mongo_answers_hello(&mut stream),
        Kind::Postgres => postgres_accepts_startup(&mut stream),
    }
}

/// Sends a startup message (user `postgres`, protocol 3.0) and checks that the server asks
/// for authentication or grants it ('R'), or refuses this plaintext connection by its
/// `pg_hba.conf` (SQLSTATE 28000: a server that takes TLS only is up too) — not another error
/// ('E' with 57P03: still starting up, shutting down).
fn postgres_accepts_startup(stream: &mut TcpStream) -> bool {
    let mut body = Vec::new();
    body.extend_from_slice(&196608i32.to_be_bytes()); // 3.0
    for (k, v) in [("user", "postgres"), ("database", "postgres")] {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut msg = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    msg.extend_from_slice(&body);
    let mut reply = [0u8; 512];
    if stream.write_all(&msg).is_err() {
        return false;
    }
    match stream.read(&mut reply) {
        Ok(n) if n > 0 && reply[0] == b'R' => true,
        Ok(n) if n > 0 && reply[0] == b'E' => reply[..n].windows(6).any(|w| w == b"C28000"),
        _ => false,
    }
}

/// The `postgres` user's uid and gid from `/etc/passwd` (Debian's `postgresql` package
/// creates it): initdb and postgres refuse to run as root.
fn postgres_user() -> Result<(u32, u32), String> {
    let passwd = fs::read_to_string("/etc/passwd").map_err(|e| format!("/etc/passwd: {e}"))?;
    passwd
        .lines()
        .find_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            (f.first() == Some(&"postgres") && f.len() > 3)
                .then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
                .flatten()
        })
        .ok_or_else(|| {
            "PostgreSQL refuses to run as root, and there is no `postgres` user to run it as              (apt-get install postgresql creates one)"
                .to_string()
        })
}

fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Whether a PostgreSQL server (or PgBouncer) on loopback `port` accepts a startup message.
pub(crate) fn postgres_accepts(port: u16) -> bool {
    TcpStream::connect_timeout(
        &SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        Duration::from_millis(200),
    )
    .is_ok_and(|mut stream| {
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        postgres_accepts_startup(&mut stream)
    })
}

/// Gives `path` to the `postgres` user (when this process is root) with mode `mode`: the
/// server reads its TLS key and certificates as that user, and refuses a key others can read.
pub fn give_to_postgres_user(path: &Path, mode: u32) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    chown_to_postgres_user(path)?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| format!("chmod {}: {e}", path.display()))
}

/// Runs `command` as the `postgres` user when this process is root, giving it `dir`.
pub(crate) fn run_as_postgres_user(command: &mut Command, dir: &Path) -> Result<(), String> {
    chown_to_postgres_user(dir)?;
    as_postgres_user(command)
}

/// Gives `path` to the `postgres` user when this process is root (else leaves it).
fn chown_to_postgres_user(path: &Path) -> Result<(), String> {
    if running_as_root() {
        let (uid, gid) = postgres_user()?;
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .map_err(|e| format!("chown {}: {e}", path.display()))?;
    }
    Ok(())
}

/// Runs `command` as the `postgres` user when this process is root.
fn as_postgres_user(command: &mut Command) -> Result<(), String> {
    if running_as_root() {
        use std::os::unix::process::CommandExt;
        let (uid, gid) = postgres_user()?;
        command.uid(uid).gid(gid);
    }
    Ok(())
}

/// `initdb` into `dir/data` (trust authentication, UTF-8), as the `postgres` user when root.
fn init_postgres(dir: &Path) -> Result<(), String> {
    let mut initdb = Command::new(find_postgres_binary("initdb")?);
    initdb
        .args(["-D", &format!("{}/data", dir.display())])
        .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])
        .current_dir(dir);
    run_as_postgres_user(&mut initdb, dir)?;
    let output = initdb.output().map_err(|e| format!("initdb: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "initdb failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// A PostgreSQL program: on `PATH`, else in Debian's `/usr/lib/postgresql/<newest>/bin`.
pub fn find_postgres_binary(name: &str) -> Result<PathBuf, String> {
    if let Some(found) = find_in_path(name) {
        return Ok(found);
    }
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin").join(name);
            bin.is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .ok_or_else(|| missing(Kind::Postgres))
}

/// Sends `{hello: 1, $db: "admin"}` as an OP_MSG and checks for a reply with the same id.
fn mongo_answers_hello(stream: &mut TcpStream) -> bool {
    // BSON {"hello": 1i32, "$db": "admin"}
    let mut doc = Vec::new();
    doc.extend_from_slice(&[0; 4]);
    doc.push(0x10);
    doc.extend_from_slice(b"hello\0");
    doc.extend_from_slice(&1i32.to_le_bytes());
    doc.push(0x02);
    doc.extend_from_slice(b"$db\0");
    doc.extend_from_slice(&6i32.to_le_bytes());
    doc.extend_from_slice(b"admin\0");
    doc.push(0);
    let len = doc.len() as i32;
    doc[..4].copy_from_slice(&len.to_le_bytes());
    let mut msg = Vec::new();
    let total = 16 + 4 + 1 + doc.len();
    msg.extend_from_slice(&(total as i32).to_le_bytes());
    msg.extend_from_slice(&7i32.to_le_bytes()); // request id
    msg.extend_from_slice(&0i32.to_le_bytes()); // response to
    msg.extend_from_slice(&2013i32.to_le_bytes()); // OP_MSG
    msg.extend_from_slice(&0u32.to_le_bytes()); // flags
    msg.push(0); // section kind 0: body
    msg.extend_from_slice(&doc);
    let mut header = [0u8; 16];
    stream.write_all(&msg).is_ok()
        && stream.read_exact(&mut header).is_ok()
        && i32::from_le_bytes([header[8], header[9], header[10], header[11]]) == 7
}

fn init_mariadb(dir: &Path) -> Result<(), String> {
    let install = find_in_path("mariadb-install-db")
        .or_else(|| find_in_path("mysql_install_db"))
        .ok_or_else(|| missing(Kind::Mysql))?;
    let output = Command::new(install)
        .args([
            "--no-defaults",
            &format!("--datadir={}/data", dir.display()),
            "--user=root",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
            "--skip-name-resolve",
        ])
        .current_dir(dir)
        .output()
        .map_err(|e| format!("mariadb-install-db: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "mariadb-install-db failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// Where the binaries for `kind` are looked for: `ELECT_<KIND>_SERVER_BIN`, then (for the
/// MongoDB-wire server) the venv `cargo xtask test` creates, then `PATH` and `/usr/sbin`.
pub fn find_binary(kind: Kind) -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os(kind.bin_env()) {
        return Ok(PathBuf::from(path));
    }
    if kind == Kind::Mongo {
        let venv = crate::workspace_root().join("target/elect-venv/bin/secantusd-py");
        if venv.exists() {
            return Ok(venv);
        }
    }
    if kind == Kind::Postgres {
        return find_postgres_binary(kind.binary());
    }
    find_in_path(kind.binary()).ok_or_else(|| missing(kind))
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/local/sbin".into()])
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

fn missing(kind: Kind) -> String {
    format!("{} not found ({})", kind.binary(), kind.install_hint())
}

/// A loopback port free now and never handed out before by this process.
///
/// The kernel may give a port it just gave to `bind(…:0)` again once that listener is closed, so
/// two servers started at once (`elect-servers` starts them on parallel threads; an etcd
/// cluster asks for two ports per member) could be told the same port, and the second to bind
/// it exits at start-up. Remembering what was handed out rules that out within a process; a
/// port taken by another process between this check and the server's bind is left to the
/// callers' retries.
pub(crate) fn free_port() -> Result<u16, String> {
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(PoisonError::into_inner);
    for _ in 0..64 {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|e| e.to_string())?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        if handed_out.insert(port) {
            return Ok(port);
        }
    }
    Err(format!(
        "no loopback port this process has not handed out already ({} so far)",
        handed_out.len()
    ))
}

pub(crate) fn fresh_dir(kind: Kind) -> Result<PathBuf, String> {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let base = std::env::temp_dir().join("elect-test-servers");
    fs::create_dir_all(&base).map_err(|e| format!("{}: {e}", base.display()))?;
    remove_stale_dirs(&base);
    let dir = base.join(format!(
        "{}-{}-{}",
        kind.name(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(dir)
}

/// Removes the directories of servers whose starting process is gone (servers shared through
/// statics are never dropped, so their directories outlive them).
fn remove_stale_dirs(base: &Path) {
    let Ok(entries) = fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let pid = name
            .to_str()
            .and_then(|n| n.split('-').nth(1)?.parse::<u32>().ok());
        if let Some(pid) = pid {
            if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
    }
}

fn log_file(dir: &Path, name: &str) -> Result<fs::File, String> {
    fs::File::create(dir.join(name)).map_err(|e| format!("{name}: {e}"))
}

fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status();
}
