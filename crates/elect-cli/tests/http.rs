//! `elect run --http`: /healthz, /readyz, /leader and /metrics scraped with curl while
//! leadership moves between two hosts, the exposition checked by the Prometheus reference
//! parser (prometheus_client, in the venv `cargo xtask test` provisions).

mod support;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use elect_tests::proxy::{FaultProxy, Mode};
use support::{elect, wait_for, Running};

/// GET `path` on 127.0.0.1:`port` with curl: (status, body); status 0 when nothing answers.
fn get(port: u16, path: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "-m", "2", "-w", "\n%{http_code}"])
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

/// The samples of a /metrics body, parsed by prometheus_client: name → [(labels, value)].
type Samples = BTreeMap<String, Vec<(BTreeMap<String, String>, f64)>>;

fn parse_metrics(body: &str) -> Samples {
    let python = elect_tests::workspace_root().join("target/elect-venv/bin/python");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/metrics.py");
    let mut child = Command::new(&python)
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e} (cargo xtask test provisions the venv with prometheus-client)",
                python.display()
            )
        });
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the reference parser refused the exposition: {}\n{body}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut samples = Samples::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let mut parts = line.split('\t');
        let (name, labels, value) = (parts.next(), parts.next(), parts.next());
        let labels: BTreeMap<String, String> =
            serde_json::from_str(labels.expect("labels")).expect("labels as JSON");
        let value: f64 = value.expect("a value").parse().expect("a number");
        samples
            .entry(name.expect("a name").to_owned())
            .or_default()
            .push((labels, value));
    }
    samples
}

/// `elect_is_leader` of `candidate` on the host at `port` (None: not recorded yet).
fn is_leader(port: u16, candidate: &str) -> Option<f64> {
    let (code, body) = get(port, "/metrics");
    assert_eq!(code, 200, "/metrics: {body}");
    let samples = parse_metrics(&body);
    samples.get("elect_is_leader").and_then(|s| {
        s.iter()
            .find(|(labels, _)| labels.get("candidate").map(String::as_str) == Some(candidate))
            .map(|(_, v)| *v)
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn leads(port: u16) -> bool {
    let (code, body) = get(port, "/leader");
    code == 200
        && serde_json::from_str::<serde_json::Value>(&body)
            .is_ok_and(|j| j["self"] == serde_json::Value::Bool(true))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_leader_and_metrics_follow_leadership() {
    let url = elect_tests::redis().await.url().to_owned();
    let election = format!("http.{}", std::process::id());
    let mut proxies = Vec::new();
    let mut ports = Vec::new();
    let mut hosts = Vec::new();
    for k in 0..2 {
        let (proxy, proxied) = FaultProxy::in_front_of(&url).await.unwrap();
        let port = free_port();
        let child = elect()
            .args(["run", "--store", &proxied, "--election", &election])
            .args([
                "--id",
                &format!("h{k}"),
                "--ttl",
                "2s",
                "--value",
                &format!("host-{k}"),
            ])
            .args([
                "--http",
                &port.to_string(),
                "--ready-when",
                "leader",
                "--restart",
            ])
            .args(["--", "sleep", "600"])
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        hosts.push((format!("h{k}"), child));
        proxies.push(proxy);
        ports.push(port);
    }
    let _running = Running(hosts);
    let checks = tokio::task::spawn_blocking(move || {
        wait_for("a leader", Duration::from_secs(20), || {
            ports.iter().any(|p| leads(*p))
        });
        let leader = usize::from(!leads(ports[0]));
        let follower = 1 - leader;
        let (lp, fp) = (ports[leader], ports[follower]);
        // /leader on the follower names the leader and its value (once it has asked).
        wait_for(
            "the follower to know the leader",
            Duration::from_secs(10),
            || get(fp, "/leader").1.contains(&format!("\"h{leader}\"")),
        );
        let (code, body) = get(fp, "/leader");
        assert_eq!(code, 200);
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["leader"], format!("h{leader}"), "{body}");
        assert_eq!(json["value"], format!("host-{leader}"), "{body}");
        assert_eq!(json["self"], false, "{body}");
        // Health, readiness (leader only) and the gauge on each host.
        assert_eq!(get(lp, "/healthz").0, 200);
        assert_eq!(get(fp, "/healthz").0, 200);
        assert_eq!(get(lp, "/readyz").0, 200);
        assert_eq!(get(fp, "/readyz").0, 503);
        assert_eq!(is_leader(lp, &format!("h{leader}")), Some(1.0));
        assert_ne!(is_leader(fp, &format!("h{follower}")), Some(1.0));
        assert_eq!(get(lp, "/nowhere").0, 404);

        // Blackhole the leader's store: it turns unhealthy, the follower takes over.
        proxies[leader].set(Mode::Blackhole);
        wait_for(
            "the cut leader to turn unhealthy",
            Duration::from_secs(15),
            || get(lp, "/healthz").0 == 503,
        );
        wait_for("the follower to lead", Duration::from_secs(15), || {
            leads(fp)
        });
        assert_eq!(is_leader(fp, &format!("h{follower}")), Some(1.0));
        assert_eq!(is_leader(lp, &format!("h{leader}")), Some(0.0));
        assert_eq!(get(lp, "/readyz").0, 503);
        assert_eq!(get(fp, "/readyz").0, 200);

        // The store is back: healthy again, as a follower.
        // The blackhole dropped bytes of open connections (TCP never would): the partition
        // heals as one that outlived the connections, which are reset.
        proxies[leader].set(Mode::Pass);
        proxies[leader].reset_all();
        wait_for(
            "the old leader to turn healthy",
            Duration::from_secs(15),
            || get(lp, "/healthz").0 == 200,
        );
        let (_, body) = get(lp, "/metrics");
        let samples = parse_metrics(&body);
        let transitions = samples
            .get("elect_leadership_transitions_total")
            .expect("transitions are exported");
        assert!(
            transitions.iter().any(|(l, v)| {
                l.get("transition").map(String::as_str) == Some("deadline_passed") && *v >= 1.0
            }) || transitions.iter().any(|(l, v)| {
                l.get("transition").map(String::as_str) == Some("lost") && *v >= 1.0
            }),
            "the cut leader's step-down is counted: {transitions:?}"
        );
        assert!(
            samples.contains_key("elect_request_duration_seconds_bucket"),
            "request latencies are a histogram"
        );
        proxies
    });
    let _proxies = checks.await.unwrap();
}

/// Raft carries `--value` in its heartbeats: every follower's /leader names the leader and its
/// value, and again after the leader is killed and another takes over.
#[test]
fn raft_followers_serve_the_leader_value() {
    let dir = support::scratch("http-raft-value");
    let group = support::RaftGroup::new(&dir);
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let start = |k: usize| {
        elect()
            .args(["run", "--election", "http.raft-value"])
            .args(group.args("v", k))
            .args(["--value", &format!("v{k}.example:{}", 8000 + k)])
            .args(["--http", &ports[k].to_string(), "--"])
            .args(["sleep", "600"])
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut hosts = Running((0..3).map(|k| (format!("v{k}"), start(k))).collect());
    let leader_of = |port: u16| -> Option<(String, String)> {
        let (code, body) = get(port, "/leader");
        let json: serde_json::Value = serde_json::from_str(&body).ok().filter(|_| code == 200)?;
        Some((
            json["leader"].as_str()?.to_owned(),
            json["value"].as_str()?.to_owned(),
        ))
    };
    let mut alive = vec![0, 1, 2];
    for round in 0..2 {
        wait_for("a leader", Duration::from_secs(20), || {
            alive.iter().any(|k| leads(ports[*k]))
        });
        let leader = *alive.iter().find(|k| leads(ports[**k])).unwrap();
        let expected = (
            format!("v{leader}"),
            format!("v{leader}.example:{}", 8000 + leader),
        );
        for k in alive.iter().filter(|k| **k != leader) {
            wait_for(
                &format!("round {round}: follower v{k} to serve the leader's value"),
                Duration::from_secs(10),
                || leader_of(ports[*k]).as_ref() == Some(&expected),
            );
        }
        // The leader's own /leader shows its value too.
        assert_eq!(leader_of(ports[leader]), Some(expected));
        if round == 0 {
            let (_, child) = &mut hosts.0[leader];
            child.kill().unwrap();
            child.wait().unwrap();
            alive.retain(|k| *k != leader);
        }
    }
    drop(hosts);
    let _ = std::fs::remove_dir_all(dir);
}
