//! `cargo xtask bench`: installs the peers under `target/` (tooz into a venv from PyPI, the
//! rslock candidate crate from crates.io), builds the candidates, starts the servers the way
//! the tests do, and runs elect-bench's `bench` binary (the scenarios, the JSON and the
//! table: `bench/src/bin/bench/`).

use std::path::PathBuf;
use std::process::Command;

use crate::{cargo, provision, root, step};

/// tooz into `target/peer-venv`, the rslock candidate into `target/peers`.
fn install_peers(release: bool) -> Result<(PathBuf, PathBuf), String> {
    let venv = provision::target_dir().join("peer-venv");
    let python = venv.join("bin/python");
    if !python.is_file() {
        let mut create = Command::new("python3");
        create.arg("-m").arg("venv").arg(&venv);
        step("python3 -m venv target/peer-venv", create)?;
    }
    let probe = Command::new(&python)
        .args(["-c", "import tooz, redis, pymysql"])
        .output();
    if !probe.map(|o| o.status.success()).unwrap_or(false) {
        let mut pip = Command::new(venv.join("bin/pip"));
        pip.args(["install", "-q", "--disable-pip-version-check"])
            .args(["tooz", "redis", "PyMySQL"]);
        step("pip install tooz redis PyMySQL", pip)?;
    }
    let mut build = cargo();
    build.args(["build", "--manifest-path", "bench/peers/rslock/Cargo.toml"]);
    build
        .arg("--target-dir")
        .arg(provision::target_dir().join("peers"));
    if release {
        build.arg("--release");
    }
    step("build the rslock candidate", build)?;
    let profile = if release { "release" } else { "debug" };
    let binary = provision::target_dir()
        .join("peers")
        .join(profile)
        .join("rslock-candidate");
    Ok((python, binary))
}

pub(crate) fn bench(args: &[String]) -> Result<(), String> {
    // Full runs measure release builds; --quick (CI) reuses the debug build the tests made.
    let release = !args.iter().any(|a| a == "--quick");
    let (python, rslock) = install_peers(release)?;
    let mut build = cargo();
    build.args(["build", "-p", "elect-bench", "--bins"]);
    if release {
        build.arg("--release");
    }
    step("build the candidate and the runner", build)?;
    let servers = provision::servers(false)?;
    let profile = if release { "release" } else { "debug" };
    let mut run = Command::new(provision::target_dir().join(profile).join("bench"));
    run.arg("--root")
        .arg(root())
        .arg("--python")
        .arg(python)
        .arg("--rslock")
        .arg(rslock)
        .args(args)
        .envs(servers.env());
    let result = step("bench", run);
    servers.stop();
    result
}
