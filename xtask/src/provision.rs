//! Makes a fresh Debian machine ready for the tests and starts the servers they share.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Instant;

use crate::{cargo, root, step};

/// A server kind: its URL variables (all set: nothing is started), what provides it, and the
/// binaries that must be present.
struct Kind {
    name: &'static str,
    url_envs: &'static [&'static str],
    binaries: &'static [&'static str],
    apt: &'static [&'static str],
}

const KINDS: [Kind; 5] = [
    Kind {
        name: "redis",
        url_envs: &["ELECT_REDIS_URL"],
        binaries: &["redis-server"],
        apt: &["redis-server"],
    },
    Kind {
        name: "mysql",
        url_envs: &["ELECT_MYSQL_URL"],
        binaries: &["mariadbd", "mariadb-install-db"],
        apt: &["mariadb-server"],
    },
    Kind {
        name: "mongo",
        url_envs: &["ELECT_MONGO_URL"],
        binaries: &[],
        apt: &[],
    },
    // PgBouncer too: the PostgreSQL suite runs through it in transaction mode as well.
    Kind {
        name: "postgres",
        url_envs: &["ELECT_POSTGRES_URL"],
        binaries: &["postgres", "initdb", "pgbouncer"],
        apt: &["postgresql", "pgbouncer"],
    },
    // The etcd server comes with elect-tests (the etcd-bin-vendored crate: Debian 12's
    // etcd-server is 3.4.23, older than the lease fixes elect-etcd needs); Debian's etcdctl
    // writes the foreign keys of the tests and is the bench's `etcdctl elect` candidate.
    Kind {
        name: "etcd",
        url_envs: &["ELECT_ETCD_URL", "ELECT_ETCD_CLUSTER_URL"],
        binaries: &["etcdctl"],
        apt: &["etcd-client"],
    },
];

/// What the build needs whatever the servers: etcd-client (elect-etcd's driver) compiles
/// etcd's protobuf definitions with `protoc`, and they import protobuf's well-known types
/// (`google/protobuf/descriptor.proto`), which Debian ships in `libprotobuf-dev` — only a
/// recommendation of `protobuf-compiler`, so `--no-install-recommends` leaves them out and the
/// build fails with "google/protobuf/descriptor.proto: File not found". (An absolute path in
/// `binaries` is checked as a file.)
const BUILD_TOOLS: Kind = Kind {
    name: "build tools",
    url_envs: &[],
    binaries: &["protoc", "/usr/include/google/protobuf/descriptor.proto"],
    apt: &["protobuf-compiler", "libprotobuf-dev"],
};

/// Installs what building the workspace needs (`protoc`; see [`BUILD_TOOLS`]) when it is
/// missing: a step that builds before [`servers`] provisions must call it first.
pub(crate) fn build_tools() -> Result<(), String> {
    install_packages(&[&BUILD_TOOLS])
}

fn venv() -> PathBuf {
    root().join("target/elect-venv")
}

fn secantusd() -> PathBuf {
    venv().join("bin/secantusd-py")
}

fn find(binary: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/local/sbin".into()])
        .chain(postgres_bin_dirs())
        .map(|d| d.join(binary))
        .find(|p| p.is_file())
}

/// Debian's PostgreSQL programs live off `PATH`, in `/usr/lib/postgresql/<version>/bin`.
fn postgres_bin_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .collect();
    dirs.sort();
    dirs.reverse();
    dirs
}

/// The kind's URLs from the environment, when every one of its variables is set.
fn env_url(kind: &Kind) -> Option<String> {
    let urls: Option<Vec<String>> = kind
        .url_envs
        .iter()
        .map(|v| std::env::var(v).ok().filter(|u| !u.is_empty()))
        .collect();
    urls.filter(|u| !u.is_empty()).map(|u| u.join(" "))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Servers started for one test run; stopped when the run ends (or when xtask dies: the
/// starter stops its servers when its standard input closes).
pub(crate) struct Servers {
    env: Vec<(String, String)>,
    starter: Option<(Child, ChildStdin)>,
}

impl Servers {
    /// The `ELECT_*_URL` variables for the test processes.
    pub(crate) fn env(&self) -> Vec<(String, String)> {
        self.env.clone()
    }

    /// Stops every server that was started, and waits for them to be gone.
    pub(crate) fn stop(mut self) {
        if let Some((mut child, stdin)) = self.starter.take() {
            let started = Instant::now();
            drop(stdin);
            let _ = child.wait();
            eprintln!(
                "xtask: servers stopped in {:.1}s",
                started.elapsed().as_secs_f64()
            );
        }
    }
}

/// The Redis topologies the tests share (`elect_tests::topology`), by the variables that name
/// them.
const TOPOLOGY_ENVS: [&str; 2] = ["ELECT_REDIS_CLUSTER_URL", "ELECT_REDIS_SENTINEL_URL"];

/// Installs what is missing, then starts a server of each kind that no `ELECT_*_URL` names,
/// and with `topologies` the Redis Cluster and Sentinel topologies (once for the whole run:
/// nextest runs every test in a process of its own, which would otherwise start its own).
pub(crate) fn servers(topologies: bool) -> Result<Servers, String> {
    let topologies = topologies
        && TOPOLOGY_ENVS
            .iter()
            .any(|v| std::env::var(v).map_or(true, |u| u.is_empty()));
    let needed: Vec<&Kind> = KINDS.iter().filter(|k| env_url(k).is_none()).collect();
    for kind in KINDS.iter().filter(|k| env_url(k).is_some()) {
        eprintln!(
            "xtask: {} from {}; nothing started for it",
            kind.name,
            kind.url_envs.join(", ")
        );
    }
    let mut packages = needed.clone();
    packages.push(&BUILD_TOOLS);
    if topologies && !packages.iter().any(|k| k.name == "redis") {
        packages.push(&KINDS[0]);
    }
    install_packages(&packages)?;
    // Always: the CLI's tests parse /metrics with the venv's prometheus-client.
    install_venv()?;
    let mut env = Vec::new();
    if needed.is_empty() && !topologies {
        return Ok(Servers { env, starter: None });
    }
    // Build everything the test run needs at once, with the test run's features, so the
    // starter binary and the tests share one build of the dependencies.
    let mut build = cargo();
    build.args(["build", "--workspace", "--all-features", "--all-targets"]);
    step("build", build)?;
    let started = Instant::now();
    let binary = target_dir().join("debug/elect-servers");
    let mut child = Command::new(&binary)
        .args(needed.iter().map(|k| k.name))
        .args(topologies.then_some("topologies"))
        .env("ELECT_MONGO_SERVER_BIN", secantusd())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{}: {e}", binary.display()))?;
    let stdin = child.stdin.take().expect("piped");
    let stdout = child.stdout.take().expect("piped");
    let mut ready = false;
    for line in BufReader::new(stdout).lines() {
        let line = line.map_err(|e| format!("elect-servers: {e}"))?;
        if line == "READY" {
            ready = true;
            break;
        }
        if let Some((key, value)) = line.split_once('=') {
            env.push((key.to_owned(), value.to_owned()));
        }
    }
    if !ready {
        let status = child.wait().map_err(|e| e.to_string())?;
        return Err(format!(
            "elect-servers could not start the servers ({status})"
        ));
    }
    eprintln!(
        "xtask: servers started in {:.1}s: {}",
        started.elapsed().as_secs_f64(),
        env.iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    Ok(Servers {
        env,
        starter: Some((child, stdin)),
    })
}

pub(crate) fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}

fn install_packages(needed: &[&Kind]) -> Result<(), String> {
    let missing: Vec<&str> = needed
        .iter()
        .filter(|k| k.binaries.iter().any(|b| find(b).is_none()))
        .flat_map(|k| k.apt.iter().copied())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        return Err(format!(
            "missing packages: {} — install them (sudo apt-get install {}) or set the ELECT_*_URL \
             variables to running servers",
            missing.join(", "),
            missing.join(" ")
        ));
    }
    apt_install(&missing)
}

/// `apt-get update` and `apt-get install` of `missing` (as root).
pub(crate) fn apt_install(missing: &[&str]) -> Result<(), String> {
    if !is_root() {
        return Err(format!(
            "missing packages: {} — install them (sudo apt-get install {})",
            missing.join(", "),
            missing.join(" ")
        ));
    }
    let started = Instant::now();
    let mut update = Command::new("apt-get");
    update.args(["update", "-qq"]);
    step("apt-get update", update)?;
    let mut install = Command::new("apt-get");
    install
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(missing)
        .env("DEBIAN_FRONTEND", "noninteractive");
    step(&format!("apt-get install {}", missing.join(" ")), install)?;
    eprintln!(
        "xtask: provisioned {} in {:.1}s",
        missing.join(", "),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The venv's Python packages: the MongoDB-wire server, and the Prometheus reference parser
/// that checks `elect run --http`'s `/metrics`.
const VENV_PACKAGES: [&str; 2] = ["secantusdb", "prometheus-client"];

fn venv_complete() -> bool {
    secantusd().is_file()
        && Command::new(venv().join("bin/python"))
            .args(["-c", "import prometheus_client"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

fn install_venv() -> Result<(), String> {
    if venv_complete() {
        return Ok(());
    }
    let started = Instant::now();
    if !venv().join("bin/pip").is_file() {
        let python =
            find("python3").ok_or("python3 not found: install python3 and python3-venv")?;
        let mut create = Command::new(python);
        create.arg("-m").arg("venv").arg(venv());
        step("python3 -m venv target/elect-venv", create)?;
    }
    let mut pip = Command::new(venv().join("bin/pip"));
    pip.args(["install", "-q", "--disable-pip-version-check"])
        .args(VENV_PACKAGES);
    step(&format!("pip install {}", VENV_PACKAGES.join(" ")), pip)?;
    if !secantusd().is_file() {
        return Err(format!(
            "pip installed secantusdb but {} is missing",
            secantusd().display()
        ));
    }
    eprintln!(
        "xtask: provisioned the MongoDB-wire server in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Prints what is present and what is missing.
pub(crate) fn doctor() {
    let show = |what: &str, found: Option<String>| match found {
        Some(how) => println!("  ok       {what}: {how}"),
        None => println!("  MISSING  {what}"),
    };
    println!("servers:");
    for kind in &KINDS {
        if let Some(url) = env_url(kind) {
            show(&kind.url_envs.join(", "), Some(url));
        }
        for binary in kind.binaries {
            show(binary, find(binary).map(|p| p.display().to_string()));
        }
    }
    show(
        "secantusd-py (MongoDB-wire server)",
        secantusd()
            .is_file()
            .then(|| secantusd().display().to_string())
            .or_else(|| find("secantusd-py").map(|p| p.display().to_string())),
    );
    println!("tools:");
    for binary in BUILD_TOOLS.binaries {
        show(binary, find(binary).map(|p| p.display().to_string()));
    }
    show(
        "cargo-nextest",
        cargo()
            .args(["nextest", "--version"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_owned()
            }),
    );
    show("python3", find("python3").map(|p| p.display().to_string()));
    show(
        "Docker engine",
        std::path::Path::new("/var/run/docker.sock")
            .exists()
            .then(|| "socket at /var/run/docker.sock (testcontainers will try it)".to_owned()),
    );
    println!("root: {}", is_root());
}
