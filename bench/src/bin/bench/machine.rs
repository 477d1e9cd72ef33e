//! The machine and the software versions, for the results.

use std::path::PathBuf;
use std::process::Command;
use std::thread;

use crate::contenders::{root, Ctx};

pub(crate) fn text_of(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// The machine and the software versions, for the results.
pub(crate) fn machine(ctx: &Ctx, profile: &str) -> Vec<(String, String)> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown".into(), |(_, m)| m.trim().to_owned());
    let memory = proc_field_self("/proc/meminfo", "MemTotal:").map_or("unknown".into(), |kb| {
        format!("{:.1} GiB", kb as f64 / 1048576.0)
    });
    let pip_version = |pip: PathBuf, package: &str| {
        text_of(pip.to_str().unwrap_or("pip"), &["show", package])
            .lines()
            .find_map(|l| l.strip_prefix("Version: ").map(str::to_owned))
            .unwrap_or_default()
    };
    let locked = |lock_file: &str, name: &str| {
        std::fs::read_to_string(root().join(lock_file))
            .unwrap_or_default()
            .split("[[package]]")
            .find(|p| p.contains(&format!("name = \"{name}\"")))
            .and_then(|p| {
                p.lines().find_map(|l| {
                    l.strip_prefix("version = ")
                        .map(|v| v.trim_matches('"').to_owned())
                })
            })
            .unwrap_or_default()
    };
    let rslock = locked("bench/peers/rslock/Cargo.lock", "rslock");
    let dlock = locked("bench/peers/dlock/Cargo.lock", "distributed-lock-postgres");
    vec![
        ("cpu".into(), model),
        (
            "cores".into(),
            thread::available_parallelism()
                .map_or(0, |n| n.get())
                .to_string(),
        ),
        ("memory".into(), memory),
        (
            "kernel".into(),
            std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_owned(),
        ),
        ("rustc".into(), text_of("rustc", &["-V"])),
        ("build".into(), profile.into()),
        ("redis".into(), text_of("redis-server", &["--version"])),
        ("mariadb".into(), text_of("mariadbd", &["--version"])),
        (
            "mongo-wire server".into(),
            format!(
                "secantusdb {}",
                pip_version(root().join("target/elect-venv/bin/pip"), "secantusdb")
            ),
        ),
        (
            "tooz".into(),
            pip_version(ctx.python.with_file_name("pip"), "tooz"),
        ),
        ("rslock".into(), rslock),
        ("postgresql".into(), {
            let postgres = elect_tests::local::find_postgres_binary("postgres")
                .map(|p| p.display().to_string())
                .unwrap_or_else(|_| "postgres".into());
            text_of(&postgres, &["--version"])
        }),
        ("distributed-lock-postgres".into(), dlock),
    ]
}

pub(crate) fn proc_field_self(file: &str, key: &str) -> Option<u64> {
    std::fs::read_to_string(file)
        .ok()?
        .lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}
