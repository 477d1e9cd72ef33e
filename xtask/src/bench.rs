//! `cargo xtask bench`: installs the peers under `target/` (tooz and psycopg2 into a venv from
//! PyPI, the rslock and distributed-lock candidate crates from crates.io), builds the candidates, starts the servers the way
//! the tests do, and runs elect-bench's `bench` binary (the scenarios, the JSON and the
//! table: `bench/src/bin/bench/`).

use std::path::PathBuf;
use std::process::Command;

use crate::{cargo, provision, root, step};

/// The peers: tooz's python and the rslock and distributed-lock candidates.
struct Peers {
    python: PathBuf,
    rslock: PathBuf,
    dlock: PathBuf,
}

/// tooz into `target/peer-venv`, the rslock and distributed-lock candidates into
/// `target/peers`.
fn install_peers(release: bool) -> Result<Peers, String> {
    let venv = provision::target_dir().join("peer-venv");
    let python = venv.join("bin/python");
    if !python.is_file() {
        let mut create = Command::new("python3");
        create.arg("-m").arg("venv").arg(&venv);
        step("python3 -m venv target/peer-venv", create)?;
    }
    let probe = Command::new(&python)
        .args(["-c", "import tooz, redis, pymysql, psycopg2"])
        .output();
    if !probe.map(|o| o.status.success()).unwrap_or(false) {
        let mut pip = Command::new(venv.join("bin/pip"));
        pip.args(["install", "-q", "--disable-pip-version-check"])
            .args(["tooz", "redis", "PyMySQL", "psycopg2-binary"]);
        step("pip install tooz redis PyMySQL psycopg2-binary", pip)?;
    }
    let profile = if release { "release" } else { "debug" };
    let mut built = Vec::new();
    for (name, binary) in [("rslock", "rslock-candidate"), ("dlock", "dlock-candidate")] {
        let mut build = cargo();
        build.args([
            "build",
            "--manifest-path",
            &format!("bench/peers/{name}/Cargo.toml"),
        ]);
        build
            .arg("--target-dir")
            .arg(provision::target_dir().join("peers"));
        if release {
            build.arg("--release");
        }
        step(&format!("build the {name} candidate"), build)?;
        built.push(
            provision::target_dir()
                .join("peers")
                .join(profile)
                .join(binary),
        );
    }
    let dlock = built.pop().expect("two candidates");
    let rslock = built.pop().expect("two candidates");
    Ok(Peers {
        python,
        rslock,
        dlock,
    })
}

pub(crate) fn bench(args: &[String]) -> Result<(), String> {
    // Full runs measure release builds; --quick (CI) reuses the debug build the tests made.
    let release = !args.iter().any(|a| a == "--quick");
    // The build comes before the servers are provisioned: on a fresh machine without `protoc`
    // etcd-client's build script fails (seen 2026-12-06 on a first `cargo xtask bench`).
    provision::build_tools()?;
    let peers = install_peers(release)?;
    let mut build = cargo();
    if release {
        build.args(["build", "-p", "elect-bench", "--bins", "--release"]);
    } else {
        // The test run's own build (the command `provision::servers` runs too): after `cargo
        // xtask test` there is nothing left to build, where `-p elect-bench` alone resolves
        // other features and rebuilt for 48 s, then the servers' build relinked for 61 s (CI,
        // 2026-12-06).
        build.args(["build", "--workspace", "--all-features", "--all-targets"]);
    }
    step("build the candidate and the runner", build)?;
    let servers = provision::servers(false)?;
    let profile = if release { "release" } else { "debug" };
    let mut run = Command::new(provision::target_dir().join(profile).join("bench"));
    run.arg("--root")
        .arg(root())
        .arg("--python")
        .arg(peers.python)
        .arg("--rslock")
        .arg(peers.rslock)
        .arg("--dlock")
        .arg(peers.dlock)
        .args(args)
        .envs(servers.env());
    let result = step("bench", run);
    servers.stop();
    result
}
