//! Benchmarks for elect. The `candidate` binary campaigns in one election on any coordinator
//! and reports what happens as lines on stdout, stamped with `CLOCK_MONOTONIC` nanoseconds
//! (system-wide on Linux, so lines of different processes compare):
//!
//! ```text
//! <ns> ready
//! <ns> elected <term>
//! <ns> lost <term> <reason>
//! <ns> error <message>
//! <ns> stopped
//! <ns> work <term>            (with --work-ms: the leader's periodic work, only while leading)
//! <ns> lease <remaining-ns> <term> | lease none     (answer to `lease`)
//! <ns> stats <messages-sent>  (answer to `stats`; raft only, 0 otherwise)
//! ```
//!
//! It obeys commands on stdin: `resign` (hand over, keep campaigning later), `lease` (read the
//! lease from the coordinator now), `stats`, and `exit` (hand over and exit 0); end of input is
//! `exit`. `candidate --counters URL` prints the server's own count of requests served and
//! exits (see [`counters`]).

use std::time::{Duration, Instant};

pub mod chaos;
pub mod group;
pub mod lines;
pub mod plot;
pub mod report;

pub use lines::now_ns;

/// Maps `Instant`s (CLOCK_MONOTONIC under the hood on Linux, but opaque) to raw
/// `CLOCK_MONOTONIC` nanoseconds, from one reading of both clocks.
#[derive(Debug, Clone, Copy)]
pub struct MonoClock {
    base: Instant,
    base_ns: u128,
}

impl MonoClock {
    /// Reads both clocks now.
    pub fn new() -> MonoClock {
        let base = Instant::now();
        MonoClock {
            base,
            base_ns: now_ns(),
        }
    }

    /// `at` in CLOCK_MONOTONIC nanoseconds.
    pub fn ns(&self, at: Instant) -> u128 {
        match at.checked_duration_since(self.base) {
            Some(after) => self.base_ns + after.as_nanos(),
            None => self
                .base_ns
                .saturating_sub(self.base.duration_since(at).as_nanos()),
        }
    }
}

impl Default for MonoClock {
    fn default() -> Self {
        Self::new()
    }
}

/// The server's own count of requests it has served so far: the sum of `calls` over Redis
/// `INFO commandstats`, MariaDB's global `Questions`, PostgreSQL's statements
/// (`pg_stat_statements`), the sum of MongoDB's `serverStatus`
/// opcounters (the MongoDB-wire server used here offers the same fields), or etcd's gRPC
/// messages received (see [`etcd_messages_received`]). Each reading costs
/// a few requests itself; callers measure that with two back-to-back readings.
pub async fn counters(url: &str) -> Result<u64, String> {
    if url.starts_with("etcd://") {
        return etcd_messages_received(url).await;
    }
    let store = elect::open(url, &elect::Options::default())
        .await
        .map_err(|e| e.to_string())?;
    let count = match &store {
        elect::Coordinator::Redis(store) => {
            use fred::prelude::*;
            let info: String = store
                .pool()
                .next()
                .info(Some(fred::types::InfoKind::CommandStats))
                .await
                .map_err(|e| e.to_string())?;
            // cmdstat_get:calls=12,usec=…
            Ok(info
                .lines()
                .filter_map(|l| {
                    l.split_once("calls=")?
                        .1
                        .split(',')
                        .next()?
                        .parse::<u64>()
                        .ok()
                })
                .sum())
        }
        elect::Coordinator::Mysql(store) => {
            use mysql_async::prelude::*;
            let mut conn = store.pool().get_conn().await.map_err(|e| e.to_string())?;
            let row: Option<(String, u64)> = conn
                .query_first("SHOW GLOBAL STATUS LIKE 'Questions'")
                .await
                .map_err(|e| e.to_string())?;
            row.map(|(_, n)| n).ok_or("no Questions status".into())
        }
        elect::Coordinator::Postgres(store) => {
            // Statements executed, by pg_stat_statements (loaded by the servers the tests and
            // the bench start; counted at once, every statement, utility ones such as BEGIN
            // and SAVEPOINT included: what MariaDB's `Questions` counts). A server without it
            // falls back to transactions committed or rolled back (`pg_stat_database`), which
            // reach the counters up to a second late, and which some clients' statements
            // were seen not to reach at all (the distributed-lock peer's polls).
            let pool = store.pool().ok_or("no pool")?;
            let client = pool.get().await.map_err(|e| e.to_string())?;
            let statements = client
                .batch_execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
                .await;
            let query = match statements {
                Ok(()) => "SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_statements",
                Err(_) => "SELECT sum(xact_commit + xact_rollback)::bigint FROM pg_stat_database",
            };
            let row = client
                .query_one(query, &[])
                .await
                .map_err(|e| e.to_string())?;
            let n: i64 = row.get(0);
            Ok(n as u64)
        }
        elect::Coordinator::Mongo(store) => {
            let status = store
                .collection()
                .client()
                .database("admin")
                .run_command(mongodb::bson::doc! { "serverStatus": 1 })
                .await
                .map_err(|e| e.to_string())?;
            let ops = status
                .get_document("opcounters")
                .map_err(|e| format!("serverStatus has no opcounters: {e}"))?;
            Ok(ops
                .values()
                .filter_map(|v| match v {
                    mongodb::bson::Bson::Int32(n) => Some(*n as u64),
                    mongodb::bson::Bson::Int64(n) => Some(*n as u64),
                    mongodb::bson::Bson::Double(n) => Some(*n as u64),
                    _ => None,
                })
                .sum())
        }
        _ => Err(format!("unsupported URL {}", elect::redact_url(url))),
    };
    store.close().await;
    count
}

/// The gRPC messages an etcd member has received ([`elect_tests::etcd::messages_received`]).
pub async fn etcd_messages_received(url: &str) -> Result<u64, String> {
    elect_tests::etcd::messages_received(url).await
}

/// Counts the commands a Redis server receives for `period` through `MONITOR`: (sent by
/// clients, run inside scripts). `INFO commandstats` cannot tell the two apart (a script's
/// `redis.call`s count like clients' commands), so requests reaching the server come from
/// here. Plain `redis://host:port` URLs without a password only (the benchmark's servers).
pub async fn monitor(url: &str, period: Duration) -> Result<(u64, u64), String> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let rest = url
        .strip_prefix("redis://")
        .ok_or("monitor needs a redis:// URL")?;
    let host = rest.split(['/', '?']).next().unwrap_or(rest);
    if host.contains('@') {
        return Err("monitor: URLs with credentials are not supported".into());
    }
    let mut stream = tokio::net::TcpStream::connect(host)
        .await
        .map_err(|e| format!("monitor: {host}: {e}"))?;
    stream
        .write_all(b"MONITOR\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut lines = BufReader::new(stream).lines();
    let (mut clients, mut scripts) = (0u64, 0u64);
    let until = tokio::time::Instant::now() + period;
    let mut confirmed = false;
    loop {
        let line = match tokio::time::timeout_at(until, lines.next_line()).await {
            Err(_) => break,
            Ok(Ok(Some(line))) => line,
            Ok(Ok(None)) => return Err("monitor: the server closed the connection".into()),
            Ok(Err(e)) => return Err(format!("monitor: {e}")),
        };
        if !confirmed {
            if line != "+OK" {
                return Err(format!("monitor: the server said {line:?}"));
            }
            confirmed = true;
            continue;
        }
        // +1700000000.123456 [0 127.0.0.1:5555] "evalsha" ... / [0 lua] "hmget" ...
        if line.contains(" lua] ") {
            scripts += 1;
        } else {
            clients += 1;
        }
    }
    Ok((clients, scripts))
}
