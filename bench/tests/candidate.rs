//! Candidate processes on a real Redis and on raft over loopback TCP.

use std::net::TcpListener;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};
use tokio::time::timeout;

struct Proc {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    /// Lines read while looking for another event, in order.
    backlog: Vec<(u128, String)>,
}

fn spawn(args: &[String]) -> Proc {
    let mut child = Command::new(env!("CARGO_BIN_EXE_candidate"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the candidate binary");
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    Proc {
        child,
        lines,
        backlog: Vec::new(),
    }
}

impl Proc {
    /// The next line whose event is `event`, with its timestamp (lines of other events are
    /// kept for later calls, so the order of calls need not follow the order of lines).
    async fn next(&mut self, event: &str, within: Duration) -> Option<(u128, String)> {
        if let Some(k) = self.backlog.iter().position(|(_, l)| l.starts_with(event)) {
            return Some(self.backlog.remove(k));
        }
        let (lines, backlog) = (&mut self.lines, &mut self.backlog);
        timeout(within, async {
            while let Ok(Some(line)) = lines.next_line().await {
                let Some((ns, rest)) = line.split_once(' ') else {
                    continue;
                };
                let Ok(ns) = ns.parse() else {
                    continue;
                };
                if rest.starts_with(event) {
                    return Some((ns, rest.to_owned()));
                }
                backlog.push((ns, rest.to_owned()));
            }
            None
        })
        .await
        .ok()
        .flatten()
    }

    async fn send(&mut self, command: &str) {
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin
            .write_all(format!("{command}\n").as_bytes())
            .await
            .unwrap();
        stdin.flush().await.unwrap();
    }

    async fn exit(mut self) {
        self.send("exit").await;
        let status = timeout(Duration::from_secs(10), self.child.wait())
            .await
            .expect("exits")
            .unwrap();
        assert!(status.success(), "{status}");
    }
}

#[tokio::test]
async fn two_redis_candidates_hand_over_on_resign() {
    let url = elect_tests::redis().await.url().to_owned();
    let election = elect_tests::unique_name("bench");
    let args = |id: &str| {
        vec![
            "--store".into(),
            url.clone(),
            "--election".into(),
            election.clone(),
            "--ttl".into(),
            "2000".into(),
            "--id".into(),
            id.into(),
        ]
    };
    let mut a = spawn(&args("a"));
    a.next("ready", Duration::from_secs(10))
        .await
        .expect("a ready");
    let (_, elected) = a
        .next("elected", Duration::from_secs(10))
        .await
        .expect("a leads");
    let mut b = spawn(&args("b"));
    b.next("ready", Duration::from_secs(10))
        .await
        .expect("b ready");
    tokio::time::sleep(Duration::from_millis(200)).await;
    a.send("resign").await;
    let (lost_at, _) = a
        .next("lost", Duration::from_secs(5))
        .await
        .expect("a steps down");
    let (elected_at, b_elected) = b
        .next("elected", Duration::from_secs(5))
        .await
        .expect("b leads");
    assert!(elected_at > lost_at, "timestamps compare across processes");
    let handover = Duration::from_nanos((elected_at - lost_at) as u64);
    eprintln!("{elected}; then {b_elected} {handover:?} after a stepped down");
    assert!(handover < Duration::from_millis(500), "{handover:?}");
    a.exit().await;
    b.exit().await;
}

#[tokio::test]
async fn three_raft_candidates_elect_one_over_tcp() {
    let ports: Vec<String> = (0..3)
        .map(|_| {
            TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .to_string()
        })
        .collect();
    let peers: Vec<String> = ports
        .iter()
        .enumerate()
        .flat_map(|(k, addr)| ["--raft-peer".to_owned(), format!("n{k}={addr}")])
        .collect();
    let mut procs: Vec<Proc> = (0..3)
        .map(|k| {
            let mut args = vec![
                "--raft-id".to_owned(),
                format!("n{k}"),
                "--raft-listen".to_owned(),
                ports[k].clone(),
                "--raft-key".to_owned(),
                "bench-cluster-key-0123".to_owned(),
            ];
            args.extend(peers.iter().cloned());
            spawn(&args)
        })
        .collect();
    let mut elected = Vec::new();
    for p in procs.iter_mut() {
        p.next("ready", Duration::from_secs(10))
            .await
            .expect("ready");
    }
    for (k, p) in procs.iter_mut().enumerate() {
        if p.next("elected", Duration::from_millis(1500))
            .await
            .is_some()
        {
            elected.push(k);
        }
    }
    assert_eq!(elected.len(), 1, "exactly one node elected: {elected:?}");
    for p in procs {
        p.exit().await;
    }
}
