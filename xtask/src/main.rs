//! Project automation: `cargo xtask <command>`.
//!
//! - `test`: makes this machine ready (installs MariaDB and Redis with apt, creates a Python venv
//!   with the MongoDB-wire server), starts one throwaway server of each kind, runs the whole
//!   workspace's tests against them (nextest when installed, else `cargo test`) and the
//!   doctests, then stops the servers.
//!   When a Docker engine answers, it also builds the image of the container path (`images`)
//!   and runs each store's conformance suite once more against containers
//!   (`ELECT_TEST_SERVERS=containers`).
//! - `images`: builds `elect-test/servers:bookworm` from Debian's packages (`images.rs`).
//! - `doctor`: what is present and what is missing.
//! - `lint`: rustfmt, clippy, rustdoc and `cargo package` checks (each packaged crate checked
//!   alone), as CI runs them.

mod bench;
mod circles;
mod images;
mod provision;

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

/// Crates published on their own; each must package, and each package must pass clippy on its
/// own (`lint`: checked in a workspace of the unpacked packages, where a crate depending on
/// an unpublished sibling finds the sibling's package instead of looking on crates.io).
const PUBLISHED: &[&str] = &[
    "elect-core",
    "elect",
    "elect-redis",
    "elect-mysql",
    "elect-mongo",
    "elect-postgres",
    "elect-etcd",
    "elect-raft",
    "elect-cli",
];

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => test(&args[1..]),
        Some("lint") => lint(),
        Some("bench") => bench::bench(&args[1..]),
        Some("chaos") => chaos(&args[1..]),
        Some("circles") => {
            let root = args.get(1).map(PathBuf::from).unwrap_or_else(root);
            let found = circles::circles(&root);
            for circle in &found {
                println!("{circle}");
            }
            println!("{} circles", found.len());
            if found.is_empty() {
                Ok(())
            } else {
                Err("import circles found".into())
            }
        }
        Some("images") => images::images(),
        Some("containers") => images::images().and_then(|()| container_conformance()),
        Some("doctor") => {
            provision::doctor();
            println!("containers:");
            println!("  {}", images::status());
            Ok(())
        }
        Some("help") | Some("--help") | Some("-h") | None => {
            print!("{}", HELP);
            Ok(())
        }
        Some(other) => Err(format!("unknown command {other:?}\n\n{HELP}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

const HELP: &str = "\
usage: cargo xtask <command>

commands:
  test [ARGS...]  install what the tests need (apt: mariadb-server, redis-server, postgresql,
                  pgbouncer; a Python venv with secantusdb under target/), start one server
                  of each kind unless ELECT_REDIS_URL / ELECT_MYSQL_URL / ELECT_MONGO_URL /
                  ELECT_POSTGRES_URL name one, run every
                  test of the workspace (nextest if installed, else cargo test) and the
                  doctests, then stop the servers; ARGS go to the test runner
  images          build elect-test/servers:bookworm, the image of the tests' container path,
                  from Debian's packages (debootstrap, docker import); skipped when the image
                  present has the same recipe; `test` runs it when a Docker engine answers
  containers      build the image if needed, then only the conformance suites on containers
                  and raft's chaos run across containers (the last part of `test`)
  circles [DIR]   list files of one crate that import each other in a circle (lint fails on any)
  doctor          report which servers, binaries and tools are present
  bench [--quick] [--rounds N] [--seed S] [--only NAME] [--subsecond-minutes M]
                  elect and its peers (tooz, rslock) on the same servers: crash failover with
                  detection slack, hand-over, frozen leader with overlap, server load, scale,
                  raft at the Raft paper's settings, TTL 200 ms under a CPU hog (M minutes
                  without a fault, default 10, then 100 crashes, on Redis, MySQL, raft);
                  writes bench/results/<date>.json, the table in bench/README.md and one
                  picture per coordinator (bench/results/<date>-<coordinator>.svg)
                  (--quick: one round of each, writes target/bench-quick.json only; --only:
                  target/bench-only.json; both put the pictures in target/bench-plots/)
  chaos [--minutes N] [--seed S] [--only redis|mysql|mongo|postgres|raft|redis-sentinel|redis-cluster
         |redis-sentinel-unsafe|redis-cluster-unsafe]
                  the process chaos tests (bench/tests/chaos.rs) for N minutes per coordinator
                  (default 10) in release mode; prints faults per kind, leader changes,
                  overlaps, term regressions, fenced writes and the worst recovery per fault,
                  and draws each run's timeline (who believed it led when, faults marked) in
                  target/chaos/<coordinator>-<seed>.svg; then the same time per coordinator for three `elect run` hosts
                  (crates/elect-cli/tests/supervision.rs: heartbeats of the programs' workers)
  lint            cargo fmt --check, no import circles between a crate's files, clippy -D
                  warnings, rustdoc -D warnings, cargo package, and clippy on each
                  packaged crate alone
";

pub(crate) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace root")
        .to_path_buf()
}

pub(crate) fn cargo() -> Command {
    let mut command = Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.current_dir(root());
    command
}

/// Runs a step, printing what it runs and how long it took.
pub(crate) fn step(name: &str, mut command: Command) -> Result<(), String> {
    eprintln!("xtask: {name}: {command:?}");
    let started = Instant::now();
    let status = command
        .status()
        .map_err(|e| format!("{name}: could not start: {e}"))?;
    eprintln!("xtask: {name}: {:.1}s", started.elapsed().as_secs_f64());
    if status.success() {
        Ok(())
    } else {
        Err(format!("{name} failed ({status})"))
    }
}

fn has_nextest() -> bool {
    cargo()
        .args(["nextest", "--version"])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn test(extra: &[String]) -> Result<(), String> {
    let started = Instant::now();
    // The image (when an engine answers) builds beside the servers' provisioning and the
    // workspace's build: it waits on the network and the disk more than on the processors.
    let containers = images::engine_answers();
    if containers {
        images::ensure_debootstrap()?;
    }
    let image = containers.then(|| std::thread::spawn(images::images));
    let servers = provision::servers(true)?;
    let mut tests = cargo();
    if has_nextest() {
        tests.args([
            "nextest",
            "run",
            "--workspace",
            "--all-features",
            "--no-fail-fast",
        ]);
        // Most tests wait on real time, not on the processors (`.config/nextest.toml` says
        // what was measured, and which tests count as two): three at a time on machines of
        // fewer than three cores, the default of one per core elsewhere.
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        if !extra
            .iter()
            .any(|a| a.starts_with("--test-threads") || a.starts_with("-j"))
        {
            tests.args(["--test-threads", &cores.max(3).to_string()]);
        }
    } else {
        tests.args(["test", "--workspace", "--all-features", "--no-fail-fast"]);
    }
    tests.args(extra).envs(servers.env());
    let image = image.map_or(Ok(()), |build| {
        build
            .join()
            .unwrap_or_else(|_| Err("the image build panicked".into()))
    });
    let result = image.and_then(|()| step("tests", tests)).and_then(|()| {
        let mut doc = cargo();
        doc.args(["test", "--workspace", "--all-features", "--doc"])
            .envs(servers.env());
        step("doctests", doc)
    });
    servers.stop();
    let result = result.and_then(|()| {
        if containers {
            container_conformance()
        } else {
            eprintln!("xtask: no Docker engine answers: no conformance run on containers");
            Ok(())
        }
    });
    eprintln!(
        "xtask: test: {:.1}s in all",
        started.elapsed().as_secs_f64()
    );
    result
}

/// The stores whose conformance suites run a second time, against containers.
const CONTAINER_SUITES: &[&str] = &[
    "elect-redis",
    "elect-mysql",
    "elect-mongo",
    "elect-postgres",
    "elect-etcd",
];

/// Each store's conformance suite (`tests/conformance.rs`) against servers in containers from
/// the local image (`ELECT_TEST_SERVERS=containers`: no env URL, no local binary), then raft's
/// chaos run across containers (`bench/tests/chaos.rs`, `chaos_raft_in_containers`).
///
/// The suites run as their test binaries, not under nextest (whose process per test started a
/// container per test: 299 s against 187 s), in two lanes at once: etcd's (TTL 3 s, 75 s) beside
/// the other four one after another (120 s); one after another they took 214 s (CI,
/// 2026-12-06). Each binary keeps one container per server for all its tests.
fn container_conformance() -> Result<(), String> {
    // The workspace's own build with the test run's features: nothing left to build after the
    // test run (`-p elect-bench` alone resolves other features and rebuilt for 47 s).
    let mut build = cargo();
    build.args(["test", "--workspace", "--all-features", "--no-run"]);
    build.args([
        "--message-format=json",
        "--test",
        "conformance",
        "--test",
        "chaos",
    ]);
    let binaries = test_binaries(build)?;
    let named = |dir: &Path, exe: &Path, package: &str, test: &str| {
        dir.file_name().is_some_and(|d| d == package)
            && exe
                .file_name()
                .is_some_and(|f| f.to_string_lossy().starts_with(&format!("{test}-")))
    };
    let suites: Vec<_> = binaries
        .iter()
        .filter(|(dir, exe)| {
            CONTAINER_SUITES
                .iter()
                .any(|p| named(dir, exe, p, "conformance"))
        })
        .cloned()
        .collect();
    let chaos = binaries
        .iter()
        .find(|(dir, exe)| named(dir, exe, "bench", "chaos"))
        .cloned()
        .ok_or("cargo named no chaos test binary of elect-bench")?;
    if suites.len() != CONTAINER_SUITES.len() {
        return Err(format!(
            "expected {} conformance binaries, cargo named {}",
            CONTAINER_SUITES.len(),
            suites.len()
        ));
    }
    let run = |(dir, binary): (PathBuf, PathBuf), args: &[&str]| {
        let mut run = Command::new(binary);
        run.current_dir(&dir)
            .args(args)
            .env("ELECT_TEST_SERVERS", "containers");
        run
    };
    let (etcd, others): (Vec<_>, Vec<_>) = suites
        .into_iter()
        .partition(|(dir, _)| dir.ends_with("elect-etcd"));
    let started = Instant::now();
    let lanes = [etcd, others].map(|lane| {
        std::thread::spawn(move || -> Result<(), String> {
            // Every suite runs, whatever an earlier one did (as `--no-fail-fast` did).
            let failed: Vec<String> = lane
                .into_iter()
                .filter_map(|suite| {
                    let name = format!("conformance on containers ({})", suite.0.display());
                    step(&name, run(suite, &[])).err()
                })
                .collect();
            if failed.is_empty() {
                Ok(())
            } else {
                Err(failed.join("; "))
            }
        })
    });
    let mut failed = Vec::new();
    for lane in lanes {
        if let Err(e) = lane
            .join()
            .unwrap_or_else(|_| Err("a lane of the container suites panicked".into()))
        {
            failed.push(e);
        }
    }
    eprintln!(
        "xtask: conformance on containers: {:.1}s",
        started.elapsed().as_secs_f64()
    );
    if !failed.is_empty() {
        return Err(failed.join("; "));
    }
    let raft = run(chaos, &["chaos_raft_in_containers", "--nocapture"]);
    step("raft chaos across containers", raft)
}

/// Builds the tests `build` (a `cargo test --no-run --message-format=json`) names and returns
/// each test binary with its package's directory (where `cargo test` would run it).
fn test_binaries(mut build: Command) -> Result<Vec<(PathBuf, PathBuf)>, String> {
    build.stderr(Stdio::inherit());
    let started = Instant::now();
    let output = build
        .output()
        .map_err(|e| format!("cargo test --no-run: {e}"))?;
    if !output.status.success() {
        return Err(format!("cargo test --no-run failed ({})", output.status));
    }
    eprintln!(
        "xtask: build the test binaries: {:.1}s",
        started.elapsed().as_secs_f64()
    );
    // One JSON object per line; the lines that name an executable are the test binaries. A
    // field's value is read up to its closing quote (paths here hold no quote).
    let field = |line: &str, key: &str| -> Option<String> {
        let start = line.find(&format!("\"{key}\":\""))? + key.len() + 4;
        let len = line[start..].find('"')?;
        Some(line[start..start + len].to_string())
    };
    let mut binaries = Vec::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let (Some(executable), Some(manifest)) =
            (field(line, "executable"), field(line, "manifest_path"))
        else {
            continue;
        };
        let dir = PathBuf::from(manifest)
            .parent()
            .map(PathBuf::from)
            .ok_or("a manifest path without a directory")?;
        binaries.push((dir, PathBuf::from(executable)));
    }
    Ok(binaries)
}

/// Long chaos runs: the chaos tests with `ELECT_CHAOS_MINUTES` / `_SEED` / `_ONLY` set.
fn chaos(args: &[String]) -> Result<(), String> {
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let minutes = value("--minutes").unwrap_or_else(|| "10".into());
    minutes
        .parse::<f64>()
        .map_err(|_| format!("--minutes takes a number, not {minutes:?}"))?;
    let servers = provision::servers(false)?;
    let mut run = cargo();
    run.args(["test", "--release", "-p", "elect-bench", "--test", "chaos"])
        .args(["--", "--nocapture", "--test-threads", "1"])
        .env("ELECT_CHAOS_MINUTES", &minutes)
        .envs(servers.env());
    if let Some(seed) = value("--seed") {
        run.env("ELECT_CHAOS_SEED", seed);
    }
    if let Some(only) = value("--only") {
        run.env("ELECT_CHAOS_ONLY", only);
    }
    let result = step("chaos", run).and_then(|()| {
        // The same faults on `elect run` hosts: the heartbeats of their programs' workers,
        // checked for overlap, rising terms and workers outliving their elect.
        let test = match value("--only").as_deref() {
            None => "process_chaos",
            Some("redis") => "process_chaos_on_redis",
            Some("mysql") => "process_chaos_on_mariadb",
            Some("mongo") => "process_chaos_on_the_mongodb_wire_server",
            Some("postgres") => "process_chaos_on_postgresql",
            Some("raft") => "process_chaos_on_a_three_host_raft_group",
            // The replicated Redis topologies and etcd's lock workload have no `elect run`
            // counterpart.
            Some(
                "redis-sentinel"
                | "redis-cluster"
                | "redis-sentinel-unsafe"
                | "redis-cluster-unsafe"
                | "etcd"
                | "etcd-unfenced",
            ) => return Ok(()),
            Some(other) => {
                return Err(format!(
                    "--only {other:?}: redis, mysql, mongo, postgres, raft, redis-sentinel, redis-cluster, \
                     redis-sentinel-unsafe, redis-cluster-unsafe, etcd or etcd-unfenced"
                ))
            }
        };
        let seconds = minutes.parse::<f64>().unwrap_or(10.0) * 60.0;
        let mut cli = cargo();
        cli.args([
            "test",
            "--release",
            "-p",
            "elect-cli",
            "--test",
            "supervision",
        ])
        .args(["--", test, "--nocapture", "--test-threads", "1"])
        .env("ELECT_CLI_CHAOS_SECS", seconds.to_string())
        .envs(servers.env());
        if let Some(seed) = value("--seed") {
            cli.env("ELECT_CLI_CHAOS_SEED", seed);
        }
        step("chaos (elect run hosts)", cli)
    });
    servers.stop();
    result
}

fn lint() -> Result<(), String> {
    let mut fmt = cargo();
    fmt.args(["fmt", "--all", "--", "--check"]);
    step("rustfmt", fmt)?;
    let circles = circles::circles(&root());
    if !circles.is_empty() {
        return Err(format!(
            "files of one crate import each other in a circle:\n  {}",
            circles.join("\n  ")
        ));
    }
    eprintln!("xtask: import circles: none");
    let mut clippy = cargo();
    clippy.args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--all-features",
        "--",
        "-D",
        "warnings",
    ]);
    step("clippy", clippy)?;
    let mut doc = cargo();
    doc.args(["doc", "--workspace", "--no-deps", "--all-features"])
        .env("RUSTDOCFLAGS", "-D warnings");
    step("rustdoc", doc)?;
    packaged_crates()
}

/// Packages the published crates and checks what was packaged: each crate alone, from its
/// `.crate` file's contents, with its default features (elect-cli also with none), clippy
/// `-D warnings`, in a workspace of the unpacked packages where each one's dependencies on
/// the others are patched to their unpacked sources.
///
/// That is what cargo's own verification proves (the package holds every file its build
/// needs, its manifest stands alone, its features are enough without the workspace's
/// unification), and what the per-crate fewest-features clippy proved on the workspace's
/// sources, in one pass. Cargo's verification build did it again with code generation, per
/// crate, dependencies and all: 235 s of CI's 548 s of lints (2026-12-07); it is left out
/// (`--no-verify`), and what it alone could catch (a link error) the workspace's builds catch.
fn packaged_crates() -> Result<(), String> {
    let out = provision::target_dir().join("package");
    // Only this run's packages are unpacked below.
    for entry in std::fs::read_dir(&out).into_iter().flatten().flatten() {
        if entry.path().extension().is_some_and(|e| e == "crate") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    let mut package = cargo();
    package.args(["package", "--allow-dirty", "--no-verify"]);
    for krate in PUBLISHED {
        package.args(["-p", krate]);
    }
    step("package", package)?;
    let unpacked = provision::target_dir().join("packaged");
    let _ = std::fs::remove_dir_all(&unpacked);
    std::fs::create_dir_all(&unpacked).map_err(|e| format!("{}: {e}", unpacked.display()))?;
    let mut members = Vec::new();
    for krate in PUBLISHED {
        let file = std::fs::read_dir(&out)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .find(|name| {
                name.strip_prefix(&format!("{krate}-"))
                    .and_then(|rest| rest.strip_suffix(".crate"))
                    .is_some_and(|version| version.starts_with(|c: char| c.is_ascii_digit()))
            })
            .ok_or_else(|| format!("cargo package wrote no {krate}-<version>.crate"))?;
        // Extracted files get the time of extraction (`-m`): a `.crate`'s entries carry one
        // fixed time, older than the last check's outputs, so cargo would not see a change.
        let untarred = Command::new("tar")
            .arg("-xzmf")
            .arg(out.join(&file))
            .arg("-C")
            .arg(&unpacked)
            .status()
            .map_err(|e| format!("tar: {e}"))?;
        if !untarred.success() {
            return Err(format!("unpacking {file} failed ({untarred})"));
        }
        members.push((*krate, file.trim_end_matches(".crate").to_owned()));
    }
    let mut manifest = String::from(
        "# Written by `cargo xtask lint`: the packaged crates, as crates.io would serve them.\n\
         [workspace]\nresolver = \"2\"\nmembers = [\n",
    );
    for (_, dir) in &members {
        manifest.push_str(&format!("    \"{dir}\",\n"));
    }
    manifest.push_str("]\n\n[patch.crates-io]\n");
    for (krate, dir) in &members {
        manifest.push_str(&format!("{krate} = {{ path = \"{dir}\" }}\n"));
    }
    std::fs::write(unpacked.join("Cargo.toml"), manifest).map_err(|e| e.to_string())?;
    // The workspace's versions of every dependency, where they apply.
    std::fs::copy(root().join("Cargo.lock"), unpacked.join("Cargo.lock"))
        .map_err(|e| format!("Cargo.lock: {e}"))?;
    for krate in PUBLISHED {
        let mut variants: Vec<&[&str]> = vec![&[]];
        if *krate == "elect-cli" {
            // A binary whose backends are default features: it must build with none too.
            variants.push(&["--no-default-features"]);
        }
        for features in variants {
            let mut check = cargo();
            check
                .args(["clippy", "--manifest-path"])
                .arg(unpacked.join("Cargo.toml"))
                .arg("--target-dir")
                .arg(provision::target_dir())
                .args(["-p", krate])
                .args(features)
                .args(["--", "-D", "warnings"]);
            let name = format!("packaged {krate} {}", features.join(" "));
            step(name.trim_end(), check)?;
        }
    }
    Ok(())
}
