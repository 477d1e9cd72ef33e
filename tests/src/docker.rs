//! Servers in containers, when a Docker engine answers.
//!
//! Two sources of images, in this order:
//! - [`LOCAL_IMAGE`], which `cargo xtask images` builds on this machine from Debian's packages
//!   (no registry is needed: the machines elect is developed and tested on can pull nothing).
//!   One image holds every server; `tests/images/elect-serve KIND` starts one of them.
//! - the official images of the testcontainers modules (Redis 7.2, MySQL 8, MongoDB, PostgreSQL),
//!   pulled from their registry, as on any developer's machine with Docker and no such image.
//!
//! Either way the container's port is published on a loopback port chosen here and kept across a
//! stop and start, so a restarted server answers at the URL it had.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use testcontainers::core::{ContainerPort, IntoContainerPort};
use testcontainers::runners::SyncRunner;
use testcontainers::{Container, GenericImage, Image, ImageExt};
use testcontainers_modules::{mongo::Mongo, mysql::Mysql, postgres::Postgres, redis::Redis};

use crate::Kind;

/// The image `cargo xtask images` builds (name, tag): Debian 12 with Redis, MariaDB, PostgreSQL,
/// the MongoDB-wire server and etcd, entry point `elect-serve KIND [ARGS…]`.
pub const LOCAL_IMAGE: (&str, &str) = ("elect-test/servers", "bookworm");

/// How long a container's server may take to answer after the container started.
const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// Sends `GET path` to the engine's API; the reply (status line, headers, body), if one came.
fn engine_get(path: &str) -> Option<Vec<u8>> {
    let host = std::env::var("DOCKER_HOST").unwrap_or_default();
    let timeout = Duration::from_millis(500);
    let request = format!("GET {path} HTTP/1.0\r\nHost: docker\r\n\r\n");
    let mut reply = Vec::new();
    let mut ask = |s: &mut dyn ReadWrite| -> Option<()> {
        s.write_all(request.as_bytes()).ok()?;
        s.read_to_end(&mut reply).ok().map(drop)
    };
    if let Some(addr) = host.strip_prefix("tcp://") {
        let mut s = TcpStream::connect_timeout(&addr.parse().ok()?, timeout).ok()?;
        s.set_read_timeout(Some(timeout)).ok()?;
        ask(&mut s)?;
    } else {
        let path = host
            .strip_prefix("unix://")
            .unwrap_or("/var/run/docker.sock");
        let mut s = UnixStream::connect(path).ok()?;
        s.set_read_timeout(Some(timeout)).ok()?;
        ask(&mut s)?;
    }
    Some(reply)
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// Whether the reply's status line says 200.
fn ok(reply: &[u8]) -> bool {
    reply.starts_with(b"HTTP/1.")
        && reply
            .split(|b| *b == b'\n')
            .next()
            .is_some_and(|line| line.windows(5).any(|w| w == b" 200 "))
}

/// Whether a Docker engine answers `GET /_ping`, asked once per process (`ELECT_NO_DOCKER`
/// set: never). Its absence costs a failed connect: microseconds.
pub fn engine_answers() -> bool {
    static ANSWER: OnceLock<bool> = OnceLock::new();
    *ANSWER.get_or_init(|| {
        std::env::var_os("ELECT_NO_DOCKER").is_none()
            && engine_get("/_ping").is_some_and(|r| ok(&r))
    })
}

/// Whether the engine has [`LOCAL_IMAGE`], asked once per process.
pub fn local_image_present() -> bool {
    static PRESENT: OnceLock<bool> = OnceLock::new();
    *PRESENT.get_or_init(|| {
        let (name, tag) = LOCAL_IMAGE;
        engine_answers()
            && engine_get(&format!("/images/{name}:{tag}/json")).is_some_and(|r| ok(&r))
    })
}

/// What elect's tests need of a container, whatever its image.
trait Handle: Send + Sync {
    fn id(&self) -> String;
    fn stop(&self) -> Result<(), String>;
    fn start(&self) -> Result<(), String>;
    fn kill(&self) -> Result<(), String>;
}

impl<I: Image> Handle for Container<I> {
    fn id(&self) -> String {
        Container::id(self).to_owned()
    }

    fn stop(&self) -> Result<(), String> {
        Container::stop(self).map_err(|e| e.to_string())
    }

    fn start(&self) -> Result<(), String> {
        Container::start(self).map_err(|e| e.to_string())
    }

    fn kill(&self) -> Result<(), String> {
        self.stop_with_timeout(Some(0)).map_err(|e| e.to_string())
    }
}

/// What a container serves: a store of [`Kind`], or etcd (from [`LOCAL_IMAGE`] only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Serves {
    /// Redis, MariaDB, the MongoDB-wire server or PostgreSQL.
    Store(Kind),
    /// One etcd member.
    Etcd,
}

impl Serves {
    /// The name `elect-serve` takes.
    fn name(self) -> &'static str {
        match self {
            Serves::Store(kind) => kind.name(),
            Serves::Etcd => "etcd",
        }
    }

    /// The port it listens on inside its container.
    fn port(self) -> ContainerPort {
        match self {
            Serves::Store(Kind::Redis) => 6379,
            Serves::Store(Kind::Mysql) => 3306,
            Serves::Store(Kind::Mongo) => 27017,
            Serves::Store(Kind::Postgres) => 5432,
            Serves::Etcd => 2379,
        }
        .tcp()
    }

    /// Whether it answers at `addr`: its protocol's greeting, or etcd's `/health`.
    fn answers(self, addr: SocketAddr) -> bool {
        match self {
            Serves::Store(kind) => crate::local::answers(kind, addr),
            Serves::Etcd => crate::etcd_http::healthy(addr.port()),
        }
    }
}

/// A running container and the URL to reach it.
pub struct Running {
    serves: Serves,
    /// The loopback port the server's port is published on (kept across restarts).
    port: u16,
    /// From [`LOCAL_IMAGE`] (else an official image, whose PostgreSQL wants a password).
    local_image: bool,
    /// Always `Some` but in `drop`.
    container: Option<Box<dyn Handle>>,
}

impl Drop for Running {
    /// Removes the container on a thread of its own: testcontainers' blocking `Container`
    /// runs a runtime of its own to remove itself, which panics on a thread that drives async
    /// tasks — and the last test to hold a shared container ends on one.
    fn drop(&mut self) {
        if let Some(container) = self.container.take() {
            let _ = std::thread::spawn(move || drop(container)).join();
        }
    }
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running")
            .field("serves", &self.serves)
            .field("port", &self.port)
            .field("local_image", &self.local_image)
            .finish()
    }
}

impl Running {
    /// Starts a container of `kind` and waits until its server answers: from [`LOCAL_IMAGE`]
    /// when the engine has it (with `args` after the server's own), else from the official
    /// image (pulled; `args` ignored).
    pub fn start(kind: Kind, args: &[&str]) -> Result<Running, String> {
        Self::start_serving(Serves::Store(kind), args)
    }

    /// Starts a single etcd from [`LOCAL_IMAGE`] (there is no official image to fall back on).
    pub fn start_etcd() -> Result<Running, String> {
        if !local_image_present() {
            let (name, tag) = LOCAL_IMAGE;
            return Err(format!(
                "no {name}:{tag} image for an etcd container: cargo xtask images builds it"
            ));
        }
        Self::start_serving(Serves::Etcd, &[])
    }

    /// Starts the container on a free host port; when the engine finds that port taken (by
    /// another process between our probe and its bind), on another, twice at most.
    fn start_serving(serves: Serves, args: &[&str]) -> Result<Running, String> {
        let mut failures = Vec::new();
        for _ in 0..3 {
            match Self::start_on(serves, args, crate::local::free_port()?) {
                Err(why) if why.contains("already allocated") || why.contains("already in use") => {
                    eprintln!("elect-tests: {why}; another port");
                    failures.push(why);
                }
                started => return started,
            }
        }
        Err(failures.join("; "))
    }

    fn start_on(serves: Serves, args: &[&str], port: u16) -> Result<Running, String> {
        let failed = |e: testcontainers::TestcontainersError| format!("testcontainers: {e}");
        let inside = serves.port();
        let local_image = local_image_present();
        let container: Box<dyn Handle> = if local_image {
            let (name, tag) = LOCAL_IMAGE;
            let mut cmd = vec![serves.name().to_owned()];
            cmd.extend(args.iter().map(|a| a.to_string()));
            Box::new(
                GenericImage::new(name, tag)
                    .with_exposed_port(inside)
                    .with_cmd(cmd)
                    .with_mapped_port(port, inside)
                    .start()
                    .map_err(failed)?,
            )
        } else {
            let Serves::Store(kind) = serves else {
                return Err("etcd runs from the local image only".into());
            };
            match kind {
                Kind::Redis => Box::new(
                    Redis::default()
                        .with_tag("7.2")
                        .with_mapped_port(port, inside)
                        .start()
                        .map_err(failed)?,
                ),
                Kind::Mysql => Box::new(
                    Mysql::default()
                        .with_mapped_port(port, inside)
                        .start()
                        .map_err(failed)?,
                ),
                Kind::Mongo => Box::new(
                    Mongo::repl_set()
                        .with_mapped_port(port, inside)
                        .start()
                        .map_err(failed)?,
                ),
                Kind::Postgres => Box::new(
                    Postgres::default()
                        .with_mapped_port(port, inside)
                        .start()
                        .map_err(failed)?,
                ),
            }
        };
        reap_at_exit(&container.id());
        let running = Running {
            serves,
            port,
            local_image,
            container: Some(container),
        };
        running.wait_ready()?;
        Ok(running)
    }

    /// Polls the server's greeting through the published port: the engine's proxy accepts
    /// connections before the server inside listens, and a restarted container's log still
    /// holds the previous start's "ready" line.
    fn wait_ready(&self) -> Result<(), String> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let started = Instant::now();
        while !self.serves.answers(addr) {
            if started.elapsed() > READY_TIMEOUT {
                return Err(format!(
                    "the {} container did not answer on {addr} within {READY_TIMEOUT:?}",
                    self.serves.name()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// The URL a driver connects with.
    pub fn url(&self) -> Result<String, String> {
        let port = self.port;
        let Serves::Store(kind) = self.serves else {
            return Ok(format!("etcd://127.0.0.1:{port}"));
        };
        Ok(match kind {
            Kind::Redis => format!("redis://127.0.0.1:{port}"),
            Kind::Mysql => format!("mysql://root@127.0.0.1:{port}/"),
            Kind::Mongo => format!("mongodb://127.0.0.1:{port}/?directConnection=true"),
            Kind::Postgres if self.local_image => {
                format!("postgres://postgres@127.0.0.1:{port}/postgres")
            }
            Kind::Postgres => format!("postgres://postgres:postgres@127.0.0.1:{port}/postgres"),
        })
    }

    /// Stops the container (its data stays).
    pub fn stop(&self) -> Result<(), String> {
        self.handle().stop()
    }

    /// Starts a stopped or killed container again, on the same port, and waits until its
    /// server answers.
    pub fn start_again(&self) -> Result<(), String> {
        self.handle().start()?;
        self.wait_ready()
    }

    /// Kills the container at once.
    pub fn kill(&self) -> Result<(), String> {
        self.handle().kill()
    }

    fn handle(&self) -> &dyn Handle {
        self.container
            .as_deref()
            .expect("a container until dropped")
    }

    /// The host's process id of the container's server (its init), while it runs: for
    /// signals (SIGSTOP freezes the server as it would a local one).
    pub fn pid(&self) -> Option<u32> {
        let reply = engine_get(&format!("/containers/{}/json", self.handle().id()))?;
        let text = String::from_utf8_lossy(&reply);
        let after = text.split_once("\"Pid\":")?.1;
        let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok().filter(|pid| *pid != 0)
    }
}

/// Removes the container `id` when this process ends, however it ends (a panic, a SIGKILL from
/// a test runner's timeout): one process per test process, outside its process group, holds
/// the ids it is told on its standard input and runs `docker rm -f` on them when that input
/// closes — which only the end of this process does (the pipe's end stays in a static). A
/// container removed before is removed again to no effect.
fn reap_at_exit(id: &str) {
    use std::os::unix::process::CommandExt;
    use std::process::{ChildStdin, Command, Stdio};
    static REAPER: OnceLock<std::sync::Mutex<Option<ChildStdin>>> = OnceLock::new();
    let reaper = REAPER.get_or_init(|| {
        let stdin = Command::new("sh")
            .args([
                "-c",
                r#"ids=$(cat); [ -z "$ids" ] || docker rm -f -v $ids >/dev/null 2>&1"#,
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .ok()
            .and_then(|mut child| child.stdin.take());
        std::sync::Mutex::new(stdin)
    });
    let mut stdin = reaper.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(pipe) = stdin.as_mut() {
        let _ = writeln!(pipe, "{id}");
        let _ = pipe.flush();
    }
}
