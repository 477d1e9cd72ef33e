//! The real `elect` binary against real servers: one program at a time, failover after a
//! SIGKILL within TTL + 1 s with a higher ELECT_TERM, `--once` across three processes,
//! `status --json`; on Redis, MariaDB, the MongoDB-wire server, PostgreSQL, etcd and a 3-host
//! raft group.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

mod support;
use support::{elect, scratch, wait_for, RaftGroup, Running};

const TTL: Duration = Duration::from_secs(2);

fn epoch_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// A program that appends `<candidate> <term> <epoch ns>` to `file` every 50 ms until stopped.
fn ticker(file: &Path) -> Vec<String> {
    vec![
        "sh".into(),
        "-c".into(),
        format!(
            "while true; do echo \"$ELECT_CANDIDATE $ELECT_TERM $(date +%s%N)\" >> {}; sleep 0.05; done",
            file.display()
        ),
    ]
}

/// (candidate, term, epoch ns) per tick, in file order.
fn ticks(file: &Path) -> Vec<(String, u64, u128)> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut w = l.split(' ');
            Some((
                w.next()?.to_owned(),
                w.next()?.parse().ok()?,
                w.next()?.parse().ok()?,
            ))
        })
        .collect()
}

/// Ticks from different leaderships never interleave: each (candidate, term) is one run.
fn assert_one_at_a_time(ticks: &[(String, u64, u128)]) {
    let mut sorted = ticks.to_vec();
    sorted.sort_by_key(|t| t.2);
    let mut seen: Vec<(String, u64)> = Vec::new();
    for (who, term, _) in &sorted {
        let key = (who.clone(), *term);
        if seen.last() != Some(&key) {
            assert!(!seen.contains(&key), "two programs ran at once: {sorted:?}");
            seen.push(key);
        }
    }
}

/// `n` `elect run` processes (`args_for(k)`, ids `c0`…) running the ticker into `file`, once
/// the first leader's program has ticked `ticked` times: the processes, that leader, its term
/// and its index among them.
fn tickers(
    file: &Path,
    n: usize,
    args_for: impl Fn(usize) -> Vec<String>,
    ticked: usize,
) -> (Running, String, u64, usize) {
    let mut running = Running(Vec::new());
    for k in 0..n {
        let id = format!("c{k}");
        let child = elect()
            .args(args_for(k))
            .arg("--")
            .args(ticker(file))
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        running.0.push((id, child));
    }
    wait_for("a first leader's program", Duration::from_secs(30), || {
        ticks(file).len() >= ticked
    });
    let (leader, term, _) = ticks(file).last().cloned().unwrap();
    let k = running
        .0
        .iter()
        .position(|(id, _)| *id == leader)
        .expect("the leader is ours");
    (running, leader, term, k)
}

/// Two (raft: three) `elect run` processes with the ticker; SIGKILL the leader's `elect`.
fn failover(name: &str, args_for: impl Fn(usize) -> Vec<String>, n: usize, bound: Duration) {
    let dir = scratch(name);
    let file = dir.join("ticks");
    let (mut running, leader, term, k) = tickers(&file, n, args_for, 5);
    let killed_at = epoch_ns();
    running.0[k].1.kill().unwrap();
    let _ = running.0[k].1.wait();
    wait_for("the next leader's program", Duration::from_secs(30), || {
        ticks(&file).iter().any(|(who, _, _)| *who != leader)
    });
    std::thread::sleep(Duration::from_millis(300));
    let all = ticks(&file);
    assert_one_at_a_time(&all);
    let (next, next_term, first) = all
        .iter()
        .find(|(who, _, _)| *who != leader)
        .cloned()
        .unwrap();
    let took = Duration::from_nanos((first - killed_at) as u64);
    eprintln!("{name}: {leader} (term {term}) killed; {next} ran its program {took:?} later in term {next_term}");
    assert!(
        took <= bound,
        "{name}: the next program started {took:?} after the kill"
    );
    assert!(next_term > term, "{name}: term {next_term} after {term}");
    assert!(
        all.iter()
            .all(|(who, _, at)| *who != leader || *at < killed_at + 50_000_000),
        "{name}: the killed elect's program kept running"
    );
    let _ = std::fs::remove_dir_all(dir);
}

fn store_args(url: &str, election: &str) -> impl Fn(usize) -> Vec<String> {
    let (url, election) = (url.to_owned(), election.to_owned());
    move |k| {
        vec![
            "run".into(),
            "--store".into(),
            url.clone(),
            "--election".into(),
            election.clone(),
            "--ttl".into(),
            format!("{}ms", TTL.as_millis()),
            "--id".into(),
            format!("c{k}"),
        ]
    }
}

/// Three `--once` processes: the program runs once, every process exits 0.
fn once(name: &str, url: &str) {
    let dir = scratch(&format!("{name}-once"));
    let file = dir.join("ran");
    let election = format!("once.{name}.{}", std::process::id());
    let children: Vec<Child> = (0..3)
        .map(|k| {
            elect()
                .args([
                    "run",
                    "--store",
                    url,
                    "--election",
                    &election,
                    "--once",
                    "--id",
                ])
                .arg(format!("o{k}"))
                .args(["--", "sh", "-c"])
                .arg(format!("echo ran >> {}; sleep 0.2", file.display()))
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{name}: {:?} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let runs = std::fs::read_to_string(&file)
        .unwrap_or_default()
        .lines()
        .count();
    assert_eq!(runs, 1, "{name}: the --once program ran {runs} times");
    let _ = std::fs::remove_dir_all(dir);
}

/// `status --json` names the program's candidate and term.
/// A leader value with what could break a JSON string or a line.
const VALUE: &str = "10.0.0.7:80 \"quoted\"\n\\ é";

fn status(name: &str, url: &str) {
    let dir = scratch(&format!("{name}-status"));
    let file = dir.join("ticks");
    let election = format!("status.{name}.{}", std::process::id());
    let mut running = Running(vec![(
        "s0".into(),
        elect()
            .args([
                "run",
                "--store",
                url,
                "--election",
                &election,
                "--id",
                "s0",
                "--value",
                VALUE,
                "--",
            ])
            .args(ticker(&file))
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )]);
    wait_for("the program", Duration::from_secs(30), || {
        !ticks(&file).is_empty()
    });
    let term = ticks(&file)[0].1;
    let out: Output = elect()
        .args(["status", "--store", url, "--election", &election, "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json = String::from_utf8_lossy(&out.stdout);
    let parsed: serde_json::Value = serde_json::from_str(json.trim()).expect("one JSON object");
    assert_eq!(parsed["leader"], "s0", "{json}");
    assert_eq!(parsed["term"], term, "{json}");
    assert_eq!(parsed["value"], VALUE, "{json}");
    let text = elect()
        .args(["status", "--store", url, "--election", &election])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert_eq!(
        text.lines().count(),
        1,
        "a value cannot break the line: {text}"
    );
    assert!(text.contains(&format!("{VALUE:?}")), "{text}");
    let (_, child) = &mut running.0[0];
    // sh dies of the SIGTERM it is passed: 128 + 15.
    assert_eq!(terminate(child).code(), Some(143));
    let _ = std::fs::remove_dir_all(dir);
}

/// SIGTERM to `elect`: it passes it on, releases, and exits with the program's status.
fn terminate(child: &mut Child) -> std::process::ExitStatus {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    child.wait().unwrap()
}

/// Failover, `--once` and `status` on one store (blocking: the processes are waited for).
async fn on_store(name: &'static str, url: String) {
    on_store_within(name, url, TTL + Duration::from_secs(1)).await;
}

/// [`on_store`], with failover expected within `failover_within` of the SIGKILL.
async fn on_store_within(name: &'static str, url: String, failover_within: Duration) {
    tokio::task::spawn_blocking(move || {
        let election = format!("cli.{name}.{}", std::process::id());
        failover(name, store_args(&url, &election), 2, failover_within);
        once(name, &url);
        status(name, &url);
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_redis() {
    on_store("redis", elect_tests::redis().await.url().to_owned()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_mariadb() {
    let url = elect_tests::mysql().await.mysql_database().await.unwrap();
    on_store("mysql", url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_mongodb_wire_server() {
    on_store("mongo", elect_tests::mongo().await.url().to_owned()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgresql() {
    let url = elect_tests::postgres()
        .await
        .postgres_database()
        .await
        .unwrap();
    on_store("postgres", url).await;
}

/// etcd keeps lease time in whole seconds and deletes an expired lease's key at its next
/// sweep (every 500 ms), and a follower sleeps the remaining time rounded up to a second:
/// failover within TTL + 2 s.
#[cfg(feature = "etcd")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_etcd() {
    let url = tokio::task::spawn_blocking(elect_tests::etcd::shared_url)
        .await
        .unwrap();
    let url = format!("{url}/{}/", elect_tests::unique_name("cli"));
    on_store_within("etcd", url, TTL + Duration::from_secs(2)).await;
}

#[test]
fn on_a_three_host_raft_group() {
    let dir = scratch("raft-key");
    let group = RaftGroup::new(&dir);
    let args = |k: usize| {
        let run = ["run", "--election", "cli.raft"].map(String::from);
        [run.to_vec(), group.args("c", k)].concat()
    };
    // Raft's default election timeout is at most 600 ms.
    failover(
        "raft",
        args,
        3,
        Duration::from_millis(600) + Duration::from_secs(1),
    );
    // No shared store, no --once.
    let out = elect()
        .args(args(0))
        .args(["--once", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// `--raft-heartbeat`, `--raft-election-timeout` and `--raft-observer`: three voters with a
/// shorter election timeout and one observer (which never runs the program), through a crash.
#[test]
fn a_raft_group_with_its_own_timing_and_an_observer() {
    let dir = scratch("raft-timing-key");
    let group = RaftGroup::new(&dir);
    let observer = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let args = |k: usize| {
        let mut args: Vec<String> = ["run", "--election", "cli.raft-timing"]
            .map(String::from)
            .to_vec();
        if k < 3 {
            args.extend(group.args("c", k));
        } else {
            // The observer: its own id and address, the voters as peers.
            let mut voter = group.args("c", 0);
            voter[1] = "c3".into();
            voter[3] = observer.clone();
            args.extend(voter);
        }
        args.extend(["--raft-observer".into(), format!("c3={observer}")]);
        args.extend(
            [
                "--raft-heartbeat",
                "20ms",
                "--raft-election-timeout",
                "150ms..300ms",
            ]
            .map(String::from),
        );
        args
    };
    failover(
        "raft-timing",
        args,
        4,
        Duration::from_millis(300) + Duration::from_secs(1),
    );
    // A heartbeat that does not fit three times in the minimum election timeout: exit 3.
    let mut bad = args(0);
    let at = bad.iter().position(|a| a == "20ms").unwrap();
    bad[at] = "100ms".into();
    let out = elect().args(bad).args(["--", "true"]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// Bad input: one line on stderr, a distinct exit code, no panic.
#[test]
fn bad_flags_urls_and_unreachable_stores_are_one_line_and_a_code() {
    let long = "x".repeat(1025);
    let cases: [(&[&str], i32); 8] = [
        (
            &[
                "run",
                "--store",
                "redis://127.0.0.1:1",
                "--election",
                "e",
                "--value",
                &long,
                "--",
                "true",
            ],
            3,
        ),
        (
            &[
                "run",
                "--raft-id",
                "a",
                "--raft-listen",
                "127.0.0.1:0",
                "--raft-peer",
                "a=127.0.0.1:1",
                "--election",
                "e",
                "--value",
                &long,
                "--",
                "true",
            ],
            3,
        ),
        (&["run", "--election", "e", "--", "true"], 2),
        (
            &[
                "run",
                "--store",
                "redis://x",
                "--election",
                "e",
                "--ttl",
                "5x",
                "--",
                "true",
            ],
            2,
        ),
        (
            &[
                "run",
                "--store",
                "nonsense",
                "--election",
                "e",
                "--",
                "true",
            ],
            3,
        ),
        (
            &[
                "run",
                "--store",
                "zookeeper://h:2181",
                "--election",
                "e",
                "--",
                "true",
            ],
            3,
        ),
        (
            &[
                "run",
                "--store",
                "redis://127.0.0.1:1",
                "--election",
                "bad name",
                "--",
                "true",
            ],
            3,
        ),
        (
            &[
                "status",
                "--store",
                "redis://127.0.0.1:1",
                "--election",
                "e",
            ],
            4,
        ),
    ];
    for (args, code) in cases {
        let out = elect().args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("elect: "), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

#[test]
fn the_demo_prints_failover_and_transfer_times() {
    let out = elect().arg("demo").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("failover took"), "{stdout}");
    assert!(stdout.contains("transfer took"), "{stdout}");
}

/// Issue 14, item 17: messages a new user meets first.
#[test]
fn first_contact_messages_say_what_is_wrong() {
    // `elect` alone: the help, not just the tagline.
    let out = elect().output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text.contains("Usage: elect") && text.contains("run"),
        "{text}"
    );
    let one_line = |args: &[&str], code: i32, needle: &str| {
        let out = elect().args(args).output().unwrap();
        let text = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {text}");
        assert_eq!(text.lines().count(), 1, "{args:?}: {text}");
        assert!(text.contains(needle), "{args:?}: {text}");
    };
    // An unknown flag is named, before and after the required ones, and never becomes the
    // program (it used to run as one, after winning the election).
    one_line(&["run", "--bogus"], 2, "'--bogus'");
    one_line(
        &[
            "run",
            "--store",
            "redis://127.0.0.1:1",
            "--election",
            "e",
            "--bogus",
            "--",
            "true",
        ],
        2,
        "'--bogus'",
    );
    one_line(
        &[
            "run",
            "--store",
            "redis://127.0.0.1:1",
            "--election",
            "e",
            "true",
        ],
        2,
        "unexpected argument",
    );
    one_line(
        &[
            "--log",
            "elect=[",
            "status",
            "--store",
            "redis://127.0.0.1:1",
            "--election",
            "e",
        ],
        2,
        "--log",
    );
    one_line(
        &[
            "run",
            "--store",
            "redis://127.0.0.1:1",
            "--election",
            "e",
            "--ttl",
            "2s",
            "--grace",
            "1s",
            "--",
            "true",
        ],
        3,
        "--grace",
    );
    one_line(
        &[
            "run",
            "--store",
            "mysql://root@127.0.0.1:1/db",
            "--election",
            "e",
            "--restart-quarantine",
            "--",
            "true",
        ],
        3,
        "--restart-quarantine",
    );
    one_line(
        &[
            "run",
            "--store",
            "redis://127.0.0.1:1",
            "--election",
            "e",
            "--pg-listen",
            "off",
            "--",
            "true",
        ],
        3,
        "--pg-listen",
    );
}

/// Behind PgBouncer in transaction mode (which cannot keep a listening session),
/// `--pg-listen` at the server itself brings the hand-over notice: with a 20 s lease the other
/// host runs its program within a few seconds of the leader's SIGTERM (a release). Without
/// the notice it would sleep until the lease it was told of expires, 13–20 s later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_pgbouncer_notices_come_from_the_pg_listen_url() {
    let direct = elect_tests::postgres()
        .await
        .postgres_database()
        .await
        .unwrap();
    tokio::task::spawn_blocking(move || {
        let bouncer = elect_tests::pgbouncer::PgBouncer::start(&direct).expect("PgBouncer");
        let through = bouncer.url_for(&direct);
        let dir = scratch("pg-listen");
        let file = dir.join("ticks");
        let election = format!("cli.pg-listen.{}", std::process::id());
        let args_for = |k: usize| -> Vec<String> {
            let id = format!("c{k}");
            [
                "run",
                "--store",
                &through,
                "--election",
                &election,
                "--ttl",
                "20s",
            ]
            .into_iter()
            .chain(["--id", &id, "--pg-listen", &direct])
            .map(str::to_owned)
            .collect()
        };
        let (mut running, leader, term, k) = tickers(&file, 2, args_for, 3);
        let asked = std::time::Instant::now();
        terminate(&mut running.0[k].1);
        wait_for("the other host's program", Duration::from_secs(8), || {
            ticks(&file).iter().any(|(who, _, _)| *who != leader)
        });
        let all = ticks(&file);
        assert_one_at_a_time(&all);
        let (next, next_term, _) = all.iter().find(|(who, _, _)| *who != leader).unwrap();
        assert!(*next_term > term);
        eprintln!(
            "through PgBouncer: {leader} released; {next} ran its program {:?} after the SIGTERM",
            asked.elapsed()
        );
        drop(running);
        drop(bouncer);
        let _ = std::fs::remove_dir_all(dir);
    })
    .await
    .unwrap();
}

/// Issue 14, item 17: a MySQL URL without a database is a configuration error (3), not 4.
#[tokio::test]
async fn a_mysql_url_without_a_database_exits_3() {
    let url = elect_tests::mysql().await.url().to_owned();
    tokio::task::spawn_blocking(move || {
        let out = elect()
            .args(["status", "--store", &url, "--election", "e"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{text}");
        assert!(text.contains("names no database"), "{text}");
    })
    .await
    .unwrap();
}

/// Issue 14, item 10: the store URL (with its password) is in no help text, no message, and
/// not in the program's environment.
#[tokio::test]
async fn the_store_password_is_never_shown_nor_passed_on() {
    let secret = "s3cret/with?marks";
    let help = elect()
        .args(["run", "--help"])
        .env("ELECT_STORE", format!("redis://:{secret}@127.0.0.1:1"))
        .output()
        .unwrap();
    let status_help = elect()
        .args(["status", "--help"])
        .env("ELECT_STORE", format!("redis://:{secret}@127.0.0.1:1"))
        .output()
        .unwrap();
    for out in [&help, &status_help] {
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("ELECT_STORE"), "{text}");
        assert!(!text.contains("s3cret"), "{text}");
    }
    let unreachable = elect()
        .args(["status", "--election", "e"])
        .env("ELECT_STORE", format!("redis://:{secret}@127.0.0.1:1"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&unreachable.stderr);
    assert!(
        !text.contains("s3cret") && !text.contains("marks@"),
        "{text}"
    );

    let url = elect_tests::redis().await.url().to_owned();
    tokio::task::spawn_blocking(move || {
        let dir = scratch("env");
        let seen = dir.join("env");
        let out = elect()
            .args([
                "run",
                "--election",
                &format!("env.{}", std::process::id()),
                "--",
                "sh",
                "-c",
            ])
            .arg(format!("env > {}", seen.display()))
            .env("ELECT_STORE", &url)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let env = std::fs::read_to_string(&seen).unwrap();
        assert!(env.contains("ELECT_TERM="), "{env}");
        assert!(
            !env.contains("ELECT_STORE"),
            "the program got the store URL: {env}"
        );
        let _ = std::fs::remove_dir_all(dir);
    })
    .await
    .unwrap();
}

/// Issue 14, item 14: a program that cannot start must not poison `--once` for good.
#[tokio::test]
async fn a_program_that_cannot_start_does_not_use_up_once() {
    for url in [
        elect_tests::redis().await.url().to_owned(),
        elect_tests::mysql().await.mysql_database().await.unwrap(),
        elect_tests::mongo().await.url().to_owned(),
    ] {
        tokio::task::spawn_blocking(move || {
            let dir = scratch("once-spawn");
            let file = dir.join("ran");
            let election = format!("once.spawn.{}", std::process::id());
            let run = |program: &[&str]| {
                elect()
                    .args([
                        "run",
                        "--store",
                        &url,
                        "--election",
                        &election,
                        "--once",
                        "--",
                    ])
                    .args(program)
                    .output()
                    .unwrap()
            };
            let failed = run(&["/nonexistent/program"]);
            assert_eq!(
                failed.status.code(),
                Some(7),
                "{url}: {}",
                String::from_utf8_lossy(&failed.stderr)
            );
            let script = format!("echo ran >> {}", file.display());
            let ok = run(&["sh", "-c", &script]);
            assert!(
                ok.status.success(),
                "{url}: {}",
                String::from_utf8_lossy(&ok.stderr)
            );
            assert_eq!(
                std::fs::read_to_string(&file).unwrap_or_default(),
                "ran\n",
                "{url}"
            );
            let again = run(&["sh", "-c", &script]);
            assert!(again.status.success(), "{url}: done, nothing to do");
            assert_eq!(
                std::fs::read_to_string(&file).unwrap(),
                "ran\n",
                "{url}: ran twice"
            );
            let _ = std::fs::remove_dir_all(dir);
        })
        .await
        .unwrap();
    }
}

/// Issue 14, item 13: `elect run` and `elect status` used to need CREATE (a migration on every
/// connect). With the tables there, a user with only SELECT/INSERT/UPDATE/DELETE runs, and a
/// SELECT-only user asks who leads.
#[tokio::test]
async fn mysql_users_without_ddl_rights_run_and_ask() {
    use elect::mysql::mysql_async::prelude::Queryable;
    let server = elect_tests::mysql().await;
    let url = server.mysql_database().await.unwrap();
    let (_, database) = url.rsplit_once('/').unwrap();
    let database = database.split('?').next().unwrap().to_owned();
    // The tables, made once by an admin (the lease table by migrate; elect_once by a first
    // --once run).
    let admin = elect::mysql::MysqlStore::connect_url(&url).await.unwrap();
    admin.migrate().await.unwrap();
    let user = |name: &str| {
        let rest = server.url().split_once('@').unwrap().1;
        format!(
            "mysql://{name}:pw@{}{database}",
            rest.trim_end_matches('/').to_owned() + "/"
        )
    };
    let mut conn = admin.pool().get_conn().await.unwrap();
    for (name, grants) in [
        ("dml_only", "SELECT, INSERT, UPDATE, DELETE"),
        ("select_only", "SELECT"),
    ] {
        let name = format!("{name}_{}", std::process::id());
        conn.query_drop(format!(
            "CREATE USER IF NOT EXISTS '{name}'@'%' IDENTIFIED BY 'pw'"
        ))
        .await
        .unwrap();
        conn.query_drop(format!("GRANT {grants} ON `{database}`.* TO '{name}'@'%'"))
            .await
            .unwrap();
    }
    let empty = format!("{database}_empty");
    conn.query_drop(format!("CREATE DATABASE `{empty}`"))
        .await
        .unwrap();
    conn.query_drop(format!(
        "GRANT SELECT ON `{empty}`.* TO 'select_only_{}'@'%'",
        std::process::id()
    ))
    .await
    .unwrap();
    let (root, dml, select) = (
        url.clone(),
        user(&format!("dml_only_{}", std::process::id())),
        user(&format!("select_only_{}", std::process::id())),
    );
    let empty = tokio::task::spawn_blocking(move || {
        let run = |url: &str, election: &str| {
            elect()
                .args([
                    "run",
                    "--store",
                    url,
                    "--election",
                    election,
                    "--once",
                    "--",
                    "true",
                ])
                .output()
                .unwrap()
        };
        assert!(
            run(&root, "first").status.success(),
            "the admin's first --once run"
        );
        let out = run(&dml, "second");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = elect()
            .args([
                "status",
                "--store",
                &select,
                "--election",
                "second",
                "--json",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("\"leader\":null"));
        // Without the tables, the SELECT-only user is told what is missing.
        let empty_url = select.replace(&database, &empty);
        let out = elect()
            .args(["status", "--store", &empty_url, "--election", "x"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(4), "{text}");
        assert!(
            text.contains("does not exist") && text.contains("migrate()"),
            "{text}"
        );
        empty
    })
    .await
    .unwrap();
    let tables: Vec<String> = conn
        .query(format!("SHOW TABLES FROM `{empty}`"))
        .await
        .unwrap();
    assert!(tables.is_empty(), "status created {tables:?}");
}

/// Issue 14, item 17: a `--restart` crash loop logged nothing at the default level.
#[tokio::test]
async fn a_restart_loop_says_each_exit() {
    let url = elect_tests::redis().await.url().to_owned();
    tokio::task::spawn_blocking(move || {
        let child = elect()
            .args(["run", "--store", &url, "--election"])
            .arg(format!("loop.{}", std::process::id()))
            .args(["--ttl", "500ms", "--restart", "--", "false"])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(2500));
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stderr);
        let exits = text.matches("the program exited").count();
        assert!(exits >= 2, "{exits} exits reported: {text}");
        assert!(text.contains("status=1"), "{text}");
    })
    .await
    .unwrap();
}

/// `--tls-ca`, `--tls-cert` and `--tls-key` reach the store: a program runs under leadership on
/// a Redis that requires client certificates; another CA is refused in one line naming the CA
/// file; a certificate without its key is a usage error.
#[test]
fn tls_flags_reach_the_store() {
    use elect_tests::local::LocalServer;
    use elect_tests::tls::TestCerts;
    use elect_tests::Kind;

    let dir = scratch("tls");
    let certs = TestCerts::generate(&dir).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let path = |p: &Path| p.display().to_string();
    let _server = LocalServer::start_with_args(
        Kind::Redis,
        &[
            "--tls-port",
            &port.to_string(),
            "--tls-cert-file",
            &path(&certs.server_cert),
            "--tls-key-file",
            &path(&certs.server_key),
            "--tls-ca-cert-file",
            &path(&certs.ca),
            "--tls-auth-clients",
            "yes",
        ],
    )
    .expect("a Redis with a TLS port");
    let url = format!("rediss://127.0.0.1:{port}");
    let run = |ca: &Path, extra: &[&str]| {
        elect()
            .args(["run", "--store", &url, "--election", "cli.tls"])
            .args(["--tls-ca", &path(ca)])
            .args(extra)
            .args(["--", "sh", "-c", "test -n \"$ELECT_TERM\""])
            .output()
            .unwrap()
    };
    let identity = [
        "--tls-cert",
        &path(&certs.client_cert),
        "--tls-key",
        &path(&certs.client_key),
    ];
    let ok = run(&certs.ca, &identity);
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let refused = run(&certs.other_ca, &identity);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_ne!(refused.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("CA file"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let half = run(&certs.ca, &["--tls-cert", &path(&certs.client_cert)]);
    assert_eq!(
        half.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&half.stderr)
    );
    let status = elect()
        .args(["status", "--store", &url, "--election", "cli.tls", "--json"])
        .args(["--tls-ca", &path(&certs.ca)])
        .args(identity)
        .output()
        .unwrap();
    assert_eq!(
        status.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let _ = std::fs::remove_dir_all(dir);
}
