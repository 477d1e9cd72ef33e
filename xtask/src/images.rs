//! `cargo xtask images`: the image of the tests' container path, built on this machine from
//! Debian's packages — the machines elect is built on reach Debian's archive, PyPI and
//! crates.io, and no container registry.
//!
//! One image, `elect-test/servers:bookworm`, holds every server the tests use: `debootstrap`
//! (minbase) of Debian 12 with Redis, MariaDB and PostgreSQL from its packages, the
//! MongoDB-wire server from PyPI in a venv, the etcd binary the tests vendor, and
//! `tests/images/elect-serve` as the entry point. The build runs on the host (a container
//! has no route to the archives) and ends with `docker import`; the image carries a label
//! with a hash of its recipe, and a build whose recipe is unchanged is skipped.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::{root, step};

/// The image, as `elect_tests::docker::LOCAL_IMAGE` names it.
pub(crate) const IMAGE: &str = "elect-test/servers:bookworm";
const SUITE: &str = "bookworm";
/// Packages installed by debootstrap: the servers and what the entry point needs.
const PACKAGES: &[&str] = &[
    "redis-server",
    "mariadb-server",
    "postgresql",
    "python3",
    "python3-venv",
    "ca-certificates",
];
/// The MongoDB-wire server, from PyPI, into /opt/elect-venv.
const PYTHON_PACKAGES: &[&str] = &["secantusdb"];
const LABEL: &str = "elect.recipe";
/// Raised whenever the build changes in a way the lists above do not show (what is trimmed,
/// how the venv is made), so that the image is built again.
const RECIPE_VERSION: &str = "2";

/// Whether a Docker engine answers (`docker version` reaches the server).
pub(crate) fn engine_answers() -> bool {
    std::env::var_os("ELECT_NO_DOCKER").is_none()
        && Command::new("docker")
            .args(["version", "--format", "{{.Server.Version}}"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

fn entry_point() -> PathBuf {
    root().join("tests/images/elect-serve")
}

/// The etcd binary the tests vendor: `etcd-bin-vendored-linux-amd64`, at the version
/// Cargo.lock names, in cargo's registry. On a fresh machine the image starts building before
/// the workspace's build has downloaded it, so when `fetch` is set a missing crate is fetched
/// (`cargo fetch --locked`, which waits for cargo's package lock if a build holds it).
fn etcd_binary(fetch: bool) -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("ELECT_ETCD_SERVER_BIN") {
        return Ok(PathBuf::from(path));
    }
    let crate_dir = format!("{ETCD_CRATE}-{}", locked_version(ETCD_CRATE)?);
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .ok_or("neither CARGO_HOME nor HOME is set")?;
    let find = || {
        fs::read_dir(home.join("registry/src"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|index| index.path().join(&crate_dir).join("bin/etcd"))
            .find(|p| p.is_file())
    };
    if let Some(found) = find() {
        return Ok(found);
    }
    if fetch {
        let mut command = crate::cargo();
        command.args(["fetch", "--locked"]);
        step("cargo fetch", command)?;
        if let Some(found) = find() {
            return Ok(found);
        }
    }
    Err(format!(
        "no etcd binary: {crate_dir} is not in cargo's registry (cargo fetch) and \
         ELECT_ETCD_SERVER_BIN is not set"
    ))
}

/// The crate that vendors etcd for the tests (tests/Cargo.toml).
const ETCD_CRATE: &str = "etcd-bin-vendored-linux-amd64";

/// The version of `package` that Cargo.lock pins.
fn locked_version(package: &str) -> Result<String, String> {
    let lock =
        fs::read_to_string(root().join("Cargo.lock")).map_err(|e| format!("Cargo.lock: {e}"))?;
    let name = format!("name = \"{package}\"");
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line == name {
            if let Some(version) = lines
                .next()
                .and_then(|l| l.strip_prefix("version = \""))
                .and_then(|v| v.strip_suffix('"'))
            {
                return Ok(version.to_owned());
            }
        }
    }
    Err(format!("Cargo.lock names no {package}"))
}

/// FNV-1a, 64 bits: a stable hash (std's `DefaultHasher` may change between releases).
fn fnv(bytes: &[u8], mut hash: u64) -> u64 {
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x100_0000_01b3);
    }
    hash
}

/// What the image is made of: the package lists, the entry point, and which etcd.
fn recipe(etcd: &Path) -> Result<String, String> {
    let script = fs::read(entry_point()).map_err(|e| format!("tests/images/elect-serve: {e}"))?;
    let mut hash = fnv(RECIPE_VERSION.as_bytes(), 0xcbf2_9ce4_8422_2325);
    hash = fnv(SUITE.as_bytes(), hash);
    for part in PACKAGES.iter().chain(PYTHON_PACKAGES) {
        hash = fnv(part.as_bytes(), fnv(b"\0", hash));
    }
    hash = fnv(&script, hash);
    hash = fnv(etcd.to_string_lossy().as_bytes(), hash);
    Ok(format!("{hash:016x}"))
}

/// The recipe label of the image present, if any.
fn present_recipe() -> Option<String> {
    docker_says(&[
        "image",
        "inspect",
        "--format",
        &format!("{{{{index .Config.Labels \"{LABEL}\"}}}}"),
        IMAGE,
    ])
}

/// What `docker ARGS…` prints, trimmed, when it succeeds.
fn docker_says(args: &[&str]) -> Option<String> {
    let out = Command::new("docker")
        .args(args)
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The engine's version, when one answers.
fn engine_version() -> Option<String> {
    docker_says(&["version", "--format", "{{.Server.Version}}"])
}

/// What `cargo xtask doctor` says of the engine and the image.
pub(crate) fn status() -> String {
    let Some(version) = engine_version().filter(|_| engine_answers()) else {
        return "no Docker engine answers (the tests use local binaries)".into();
    };
    let wanted = etcd_binary(false).and_then(|etcd| recipe(&etcd));
    let image = match (present_recipe(), wanted) {
        (None, _) => format!("{IMAGE} missing (cargo xtask images builds it)"),
        (Some(have), Ok(want)) if have == want => format!("{IMAGE} present, current"),
        (Some(have), Ok(want)) => {
            format!("{IMAGE} present, recipe {have}; the recipe is now {want}: rebuild")
        }
        (Some(have), Err(e)) => format!("{IMAGE} present, recipe {have} ({e})"),
    };
    format!("Docker engine {version} answers; {image}")
}

/// Installs debootstrap with apt when it is missing: before anything runs beside the build,
/// which may use apt itself (one dpkg at a time).
pub(crate) fn ensure_debootstrap() -> Result<(), String> {
    if Path::new("/usr/sbin/debootstrap").is_file() {
        return Ok(());
    }
    crate::provision::apt_install(&["debootstrap"])
}

/// Builds the image unless the one present has the same recipe.
pub(crate) fn images() -> Result<(), String> {
    if !engine_answers() {
        return Err("no Docker engine answers: `docker version` cannot reach it".into());
    }
    let etcd = etcd_binary(true)?;
    let recipe = recipe(&etcd)?;
    if present_recipe().as_deref() == Some(recipe.as_str()) {
        eprintln!("xtask: images: {IMAGE} is current (recipe {recipe})");
        return Ok(());
    }
    let started = Instant::now();
    ensure_debootstrap()?;
    let work = root().join("target/elect-images");
    let rootfs = work.join("rootfs");
    if rootfs.exists() {
        fs::remove_dir_all(&rootfs).map_err(|e| format!("{}: {e}", rootfs.display()))?;
    }
    fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    let mirror = std::env::var("ELECT_DEBIAN_MIRROR")
        .unwrap_or_else(|_| "http://deb.debian.org/debian".into());
    // Its hundreds of progress lines go to a log, shown when it fails.
    let log_path = work.join("debootstrap.log");
    let log = fs::File::create(&log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
    let mut debootstrap = Command::new("debootstrap");
    debootstrap
        .args([
            "--variant=minbase",
            &format!("--include={}", PACKAGES.join(",")),
        ])
        .arg(SUITE)
        .arg(&rootfs)
        .arg(&mirror)
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log);
    step("debootstrap", debootstrap).map_err(|e| {
        let log = fs::read_to_string(&log_path).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!(
            "{e}; the end of {}:\n{}",
            log_path.display(),
            tail.join("\n")
        )
    })?;
    let result = finish(&rootfs, &etcd, &recipe);
    let _ = fs::remove_dir_all(&rootfs);
    result?;
    eprintln!(
        "xtask: images: built {IMAGE} in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Everything after debootstrap: the venv, the entry point and etcd, trimming, the import.
fn finish(rootfs: &Path, etcd: &Path, recipe: &str) -> Result<(), String> {
    let copy = |from: &Path, to: &str| {
        let to = rootfs.join(to);
        fs::copy(from, &to).map_err(|e| format!("{} → {}: {e}", from.display(), to.display()))
    };
    // pip needs DNS and this machine's certificate authorities (PyPI may be reached through
    // a proxy whose certificate only the host trusts); both are removed again before import.
    copy(Path::new("/etc/resolv.conf"), "etc/resolv.conf")?;
    copy(
        Path::new("/etc/ssl/certs/ca-certificates.crt"),
        "tmp/host-ca.crt",
    )?;
    // A clean environment: the host's PIP_* settings name files the root filesystem lacks.
    let chroot = |args: &[&str]| {
        let mut command = Command::new("chroot");
        command
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("HOME", "/root")
            .env("LANG", "C.UTF-8")
            .arg(rootfs)
            .args(args);
        command
    };
    step(
        "venv",
        chroot(&["python3", "-m", "venv", "/opt/elect-venv"]),
    )?;
    let mut pip = chroot(&[
        "/opt/elect-venv/bin/pip",
        "install",
        "-q",
        "--disable-pip-version-check",
        "--cert",
        "/tmp/host-ca.crt",
    ]);
    pip.args(PYTHON_PACKAGES);
    step("pip install", pip)?;
    copy(&entry_point(), "usr/local/bin/elect-serve")?;
    copy(etcd, "usr/local/bin/etcd")?;
    for binary in ["usr/local/bin/elect-serve", "usr/local/bin/etcd"] {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(rootfs.join(binary), fs::Permissions::from_mode(0o755))
            .map_err(|e| format!("{binary}: {e}"))?;
    }
    // What the servers never read: downloaded packages, package lists, documentation, message
    // translations, and the clusters the packages' scripts made (elect-serve makes its own
    // under /data).
    for dir in [
        "var/cache/apt/archives",
        "var/lib/apt/lists",
        "usr/share/doc",
        "usr/share/man",
        "usr/share/locale",
        "var/lib/postgresql/15/main",
        "var/lib/mysql",
    ] {
        let _ = fs::remove_dir_all(rootfs.join(dir));
    }
    let _ = fs::remove_file(rootfs.join("tmp/host-ca.crt"));
    fs::write(rootfs.join("etc/resolv.conf"), "").map_err(|e| format!("etc/resolv.conf: {e}"))?;
    import(rootfs, recipe)
}

/// The id of the image present under [`IMAGE`], if any.
fn present_id() -> Option<String> {
    docker_says(&["image", "inspect", "--format", "{{.Id}}", IMAGE])
}

/// `tar -C rootfs -c . | docker import … - IMAGE`; then removes the image it replaced (untagged,
/// it would only hold ~800 MB of disk).
fn import(rootfs: &Path, recipe: &str) -> Result<(), String> {
    eprintln!("xtask: docker import {IMAGE}");
    let replaced = present_id();
    let started = Instant::now();
    let mut tar = Command::new("tar")
        .arg("-C")
        .arg(rootfs)
        .args(["-c", "."])
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("tar: {e}"))?;
    let archive = tar.stdout.take().expect("piped");
    let import = Command::new("docker")
        .args([
            "import",
            "--change",
            r#"ENTRYPOINT ["/usr/local/bin/elect-serve"]"#,
            "--change",
            &format!("LABEL {LABEL}={recipe}"),
            "-",
            IMAGE,
        ])
        .stdin(archive)
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("docker import: {e}"))?;
    let tarred = tar.wait().map_err(|e| format!("tar: {e}"))?;
    if !tarred.success() || !import.success() {
        return Err(format!(
            "docker import failed (tar {tarred}, import {import})"
        ));
    }
    if let Some(old) = replaced {
        // Refused while a container still uses it; then it stays, untagged.
        let _ = Command::new("docker")
            .args(["rmi", &old])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    let _ = std::io::stderr().flush();
    eprintln!(
        "xtask: docker import: {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vendored_etcd_version_is_read_from_cargo_lock() {
        let version = locked_version(ETCD_CRATE).expect("Cargo.lock pins the etcd crate");
        let parts: Vec<&str> = version.split('.').collect();
        assert_eq!(parts.len(), 3, "{version}");
        assert!(parts.iter().all(|p| p.parse::<u32>().is_ok()), "{version}");
        let err = locked_version("no-such-crate-here").unwrap_err();
        assert!(err.contains("no-such-crate-here"), "{err}");
    }
}
