//! Starts one throwaway server of each kind requested (all by default), prints
//! `ELECT_<KIND>_URL=<url>` lines on stdout, and stops them when its standard input closes.
//! `cargo xtask test` runs it so that every test process shares the same servers. With
//! `topologies` it also starts the Redis Cluster and Sentinel topologies
//! (`ELECT_REDIS_CLUSTER_URL`, `ELECT_REDIS_SENTINEL_URL`); with `etcd` a single etcd and a
//! three-member etcd cluster (`ELECT_ETCD_URL`, `ELECT_ETCD_CLUSTER_URL`).
//!
//! ```text
//! elect-servers [redis] [mysql] [mongo] [postgres] [topologies] [etcd]
//! ```

use std::io::{Read, Write};
use std::process::ExitCode;
use std::time::Instant;

use elect_tests::etcd::EtcdCluster;
use elect_tests::local::LocalServer;
use elect_tests::topology::Topology;
use elect_tests::Kind;

fn main() -> ExitCode {
    let mut kinds = Vec::new();
    let mut topologies = false;
    let mut etcd = false;
    for arg in std::env::args().skip(1) {
        if arg == "topologies" {
            topologies = true;
            continue;
        }
        if arg == "etcd" {
            etcd = true;
            continue;
        }
        match Kind::ALL.into_iter().find(|k| k.name() == arg) {
            Some(kind) => kinds.push(kind),
            None => {
                eprintln!(
                    "elect-servers: unknown server kind {arg:?} (redis, mysql, mongo, postgres, \
                     topologies, etcd)"
                );
                return ExitCode::from(2);
            }
        }
    }
    if kinds.is_empty() && !topologies && !etcd {
        kinds = Kind::ALL.to_vec();
        etcd = true;
    }
    // Start them side by side: MariaDB's initialisation dominates.
    let started = Instant::now();
    let handles: Vec<_> = kinds
        .iter()
        .map(|&kind| {
            std::thread::spawn(move || {
                let t = Instant::now();
                (kind, LocalServer::start(kind), t.elapsed())
            })
        })
        .collect();
    let shapes = topologies.then(|| {
        [
            ("ELECT_REDIS_CLUSTER_URL", Topology::cluster as fn() -> _),
            ("ELECT_REDIS_SENTINEL_URL", Topology::sentinel),
        ]
        .map(|(env, start)| std::thread::spawn(move || (env, start())))
    });
    let etcds = etcd.then(|| {
        [("ELECT_ETCD_URL", 1), ("ELECT_ETCD_CLUSTER_URL", 3)]
            .map(|(env, size)| std::thread::spawn(move || (env, EtcdCluster::start(size))))
    });
    let mut servers = Vec::new();
    let mut failed = false;
    for handle in handles {
        let (kind, result, took) = handle.join().expect("start-up thread");
        match result {
            Ok(server) => {
                eprintln!(
                    "elect-servers: {} ready at {} (pid {}) in {:.2}s",
                    kind.name(),
                    server.url(),
                    server.pid().unwrap_or(0),
                    took.as_secs_f64()
                );
                println!("{}={}", kind.url_env(), server.url());
                servers.push(server);
            }
            Err(why) => {
                eprintln!(
                    "elect-servers: {}",
                    elect_tests::servers::no_server_message(kind, &why)
                );
                failed = true;
            }
        }
    }
    let mut shared = Vec::new();
    for handle in shapes.into_iter().flatten() {
        let (env, result) = handle.join().expect("start-up thread");
        match result {
            Ok(topology) => {
                eprintln!("elect-servers: {env}={}", topology.url);
                println!("{env}={}", topology.url);
                shared.push(topology);
            }
            Err(why) => {
                eprintln!("elect-servers: {env}: {why}");
                failed = true;
            }
        }
    }
    let mut clusters = Vec::new();
    for handle in etcds.into_iter().flatten() {
        let (env, result) = handle.join().expect("start-up thread");
        match result {
            Ok(cluster) => {
                eprintln!("elect-servers: {env}={}", cluster.url());
                println!("{env}={}", cluster.url());
                clusters.push(cluster);
            }
            Err(why) => {
                eprintln!("elect-servers: {env}: {why}");
                failed = true;
            }
        }
    }
    if failed {
        return ExitCode::FAILURE;
    }
    println!("READY");
    let _ = std::io::stdout().flush();
    eprintln!(
        "elect-servers: all ready in {:.2}s; stopping when stdin closes",
        started.elapsed().as_secs_f64()
    );
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    for mut server in servers {
        server.stop();
    }
    drop(shared);
    drop(clusters);
    eprintln!("elect-servers: stopped");
    ExitCode::SUCCESS
}
