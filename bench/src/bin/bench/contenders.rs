//! Who competes: elect on each coordinator and its peers (tooz, rslock) on the same servers, and
//! the paths and URLs every round needs.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;

use elect_bench::group::Group;
use elect_tests::topology::Topology;

/// The workspace root (`--root`): the tooz script, the rslock crate's lock file, the results.
pub(crate) static ROOT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

pub(crate) fn root() -> PathBuf {
    ROOT.get().cloned().unwrap_or_default()
}

pub(crate) const TTL_MS: u64 = 2000;
/// How often the candidates' leaders print `work` (the leader's duty, for the overlap check).
pub(crate) const WORK_MS: u64 = 50;
/// The peers' poll interval (tooz's `run_watchers` / `acquire`, rslock's `lock`).
pub(crate) const PEER_POLL_MS: u64 = 100;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Lib {
    Elect,
    Tooz,
    Rslock,
    /// The `distributed-lock` crate's PostgreSQL lock.
    Dlock,
    /// etcd's own election client, `etcdctl elect` (clientv3/concurrency).
    Etcdctl,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Coord {
    Redis,
    Mysql,
    Mongo,
    Postgres,
    /// One etcd member (the same server the tests use).
    Etcd,
    Raft(usize),
    /// A master with two replicas behind three Sentinels, of the bench's own.
    Sentinel,
    /// Three masters with a replica each, of the bench's own.
    Cluster,
}

impl Coord {
    /// A replicated Redis topology (elect only).
    pub(crate) fn is_topology(self) -> bool {
        matches!(self, Coord::Sentinel | Coord::Cluster)
    }
}

/// The topologies of this bench run, started on first use and failed over by its rounds.
static SENTINEL: std::sync::OnceLock<std::sync::Mutex<Topology>> = std::sync::OnceLock::new();
static CLUSTER: std::sync::OnceLock<std::sync::Mutex<Topology>> = std::sync::OnceLock::new();

/// The topology of `coord` (started on first use).
pub(crate) fn topology(coord: Coord) -> Result<std::sync::MutexGuard<'static, Topology>, String> {
    let (cell, start): (_, fn() -> Result<Topology, String>) = match coord {
        Coord::Sentinel => (&SENTINEL, Topology::sentinel),
        Coord::Cluster => (&CLUSTER, Topology::cluster),
        other => return Err(format!("{other:?} is not a topology")),
    };
    if cell.get().is_none() {
        let started = start()?;
        let _ = cell.set(std::sync::Mutex::new(started));
    }
    let lock = cell.get().ok_or("the topology did not start")?;
    Ok(lock.lock().unwrap_or_else(|p| p.into_inner()))
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Contender {
    pub(crate) lib: Lib,
    pub(crate) coord: Coord,
}

impl Contender {
    pub(crate) fn library(&self) -> &'static str {
        match self.lib {
            Lib::Elect => "elect",
            Lib::Tooz => "tooz",
            Lib::Rslock => "rslock",
            Lib::Dlock => "distributed-lock",
            Lib::Etcdctl => "etcdctl",
        }
    }

    pub(crate) fn coordinator(&self) -> String {
        match self.coord {
            Coord::Redis => "redis".into(),
            Coord::Mysql => "mysql".into(),
            Coord::Mongo => "mongo".into(),
            Coord::Postgres => "postgres".into(),
            Coord::Etcd => "etcd".into(),
            Coord::Raft(n) => format!("raft-{n}"),
            Coord::Sentinel => "redis-sentinel".into(),
            Coord::Cluster => "redis-cluster".into(),
        }
    }

    pub(crate) fn name(&self) -> String {
        format!("{}/{}", self.library(), self.coordinator())
    }

    /// Every setting that shapes the figures.
    pub(crate) fn settings(&self) -> String {
        match (self.lib, self.coord) {
            (Lib::Elect, Coord::Raft(n)) => format!(
                "{n} voters over loopback TCP with HMAC; defaults: heartbeat 50 ms, election timeout 300–600 ms"
            ),
            (Lib::Elect, Coord::Mysql) => format!(
                "TTL {TTL_MS} ms, defaults (renew every TTL/3, release wake-ups by named locks: the leader holds the election's GET_LOCK, followers block on it; a 2 s poll per process as fallback)"
            ),
            (Lib::Elect, Coord::Redis) => format!(
                "TTL {TTL_MS} ms, defaults (renew every TTL/3, release and grant notices over pub/sub)"
            ),
            (Lib::Elect, Coord::Sentinel) => format!(
                "TTL {TTL_MS} ms, a master with two replicas behind three Sentinels (down after 2 s), WAIT for both replicas (100 ms), restart quarantine on (also after a failover); master crash: the dead master is started again, empty, once Sentinel has promoted a replica"
            ),
            (Lib::Elect, Coord::Cluster) => format!(
                "TTL {TTL_MS} ms, a Cluster of three masters with a replica each (node timeout 2 s), WAIT for the replica (100 ms), restart quarantine on (also after a failover); master crash: the dead master is started again, empty, once its replica has taken the slots over"
            ),
            (Lib::Elect, Coord::Postgres) => format!(
                "TTL {TTL_MS} ms, defaults (renew every TTL/3, release and grant notices by LISTEN/NOTIFY on a connection of the store's own)"
            ),
            (Lib::Elect, Coord::Etcd) => format!(
                "TTL {TTL_MS} ms (an etcd lease of 2 s), defaults (renew every TTL/3 by lease keep-alive, release and grant notices by one prefix watch per process); one etcd 3.7 member"
            ),
            (Lib::Etcdctl, _) => format!(
                "etcdctl elect (Debian's etcdctl 3.4.23, the clientv3/concurrency recipe) on the same etcd: its session TTL is fixed at 60 s (no flag), so crash and frozen failovers wait a minute; crash rounds: 1, bounded at {} s; waiting candidates watch the previous key (no poll); resign = SIGINT (etcdctl's own resign) + sit out one TTL; no fencing token is printed (term 0), loss only when the session ends",
                ETCDCTL_CRASH_BOUND.as_secs()
            ),
            (Lib::Elect, Coord::Mongo) => format!(
                "TTL {TTL_MS} ms, defaults (renew every TTL/3, release and grant notices over a change stream, which the wire server offers)"
            ),
            (Lib::Tooz, Coord::Redis) => format!(
                "leader election (join_group + watch_elected_as_leader), lock_timeout = membership_timeout = {} s, run_watchers every {PEER_POLL_MS} ms, heart thread on (re-arms every lock_timeout/2); no loss notice exists, so `lost` is only reported on resign (= coordinator stop)",
                TTL_MS / 1000
            ),
            (Lib::Tooz, Coord::Postgres) => format!(
                "connection-bound lock: tooz postgresql:// lock (pg_try_advisory_lock, psycopg2), acquire(blocking=False) every {PEER_POLL_MS} ms, resign = release(); held as long as the connection lives"
            ),
            (Lib::Tooz, _) => format!(
                "connection-bound lock: tooz mysql:// lock (GET_LOCK), acquire(blocking=False) every {PEER_POLL_MS} ms, resign = release(); held as long as the connection lives"
            ),
            (Lib::Dlock, _) => format!(
                "connection-bound lock: distributed-lock-postgres (session pg_try_advisory_lock on a pooled connection the handle keeps), try_acquire every {PEER_POLL_MS} ms, resign = release + sit out one TTL; its lost token never fires (0.2.0 does not monitor the connection)"
            ),
            (Lib::Rslock, _) => format!(
                "Redlock on one Redis used as a lease: lock(ttl {TTL_MS} ms, retry count 1) every {PEER_POLL_MS} ms, extend every TTL/3, work only within validity_time, resign = unlock + sit out one TTL"
            ),
        }
    }

    /// Whether the lease's remaining time can be read from the coordinator.
    pub(crate) fn lease_readable(&self) -> bool {
        let connection_bound = (self.lib == Lib::Tooz
            && matches!(self.coord, Coord::Mysql | Coord::Postgres))
            || matches!(self.lib, Lib::Dlock | Lib::Etcdctl);
        // etcd reports a lease's time to live in whole seconds: elect's etcd candidate answers
        // with its own lower bound of the server-side expiry instead (see the candidate).
        !(self.is_raft() || connection_bound)
    }

    /// Whether this is elect (whose candidates report followers' notices of a new leader).
    pub(crate) fn is_elect(&self) -> bool {
        self.lib == Lib::Elect
    }

    pub(crate) fn is_raft(&self) -> bool {
        matches!(self.coord, Coord::Raft(_))
    }

    /// Crash rounds of a run of `rounds`: one for etcdctl, whose 60 s session makes each last
    /// a minute, and none in a quick run (CI checks that the bench runs end to end; that
    /// minute measures only etcdctl's fixed TTL).
    pub(crate) fn crash_rounds(&self, rounds: usize, quick: bool) -> usize {
        if self.lib == Lib::Etcdctl {
            if quick {
                0
            } else {
                rounds.min(1)
            }
        } else {
            rounds
        }
    }

    /// How long a crash round waits for the next leader.
    pub(crate) fn crash_bound(&self) -> std::time::Duration {
        if self.lib == Lib::Etcdctl {
            ETCDCTL_CRASH_BOUND
        } else {
            std::time::Duration::from_secs(20)
        }
    }
}

/// etcdctl's session TTL (60 s, fixed) and some.
pub(crate) const ETCDCTL_CRASH_BOUND: std::time::Duration = std::time::Duration::from_secs(75);

pub(crate) const CONTENDERS: &[Contender] = &[
    Contender {
        lib: Lib::Elect,
        coord: Coord::Redis,
    },
    Contender {
        lib: Lib::Tooz,
        coord: Coord::Redis,
    },
    Contender {
        lib: Lib::Rslock,
        coord: Coord::Redis,
    },
    Contender {
        lib: Lib::Elect,
        coord: Coord::Mysql,
    },
    Contender {
        lib: Lib::Tooz,
        coord: Coord::Mysql,
    },
    Contender {
        lib: Lib::Elect,
        coord: Coord::Mongo,
    },
    Contender {
        lib: Lib::Elect,
        coord: Coord::Postgres,
    },
    Contender {
        lib: Lib::Tooz,
        coord: Coord::Postgres,
    },
    Contender {
        lib: Lib::Dlock,
        coord: Coord::Postgres,
    },
    Contender {
        lib: Lib::Elect,
        coord: Coord::Etcd,
    },
    Contender {
        lib: Lib::Etcdctl,
        coord: Coord::Etcd,
    },
    Contender {
        lib: Lib::Elect,
        coord: Coord::Raft(3),
    },
    Contender {
        lib: Lib::Elect,
        coord: Coord::Raft(5),
    },
    Contender {
        lib: Lib::Elect,
        coord: Coord::Sentinel,
    },
    Contender {
        lib: Lib::Elect,
        coord: Coord::Cluster,
    },
];

/// The election a round of `c` tagged `tag` campaigns in.
pub(crate) fn election(c: &Contender, tag: &str) -> String {
    format!(
        "bench.{}.{}.{}.{tag}",
        c.library(),
        c.coordinator(),
        std::process::id()
    )
}

/// Paths and URLs every round needs.
pub(crate) struct Ctx {
    pub(crate) candidate: PathBuf,
    pub(crate) rslock: PathBuf,
    pub(crate) dlock: PathBuf,
    pub(crate) python: PathBuf,
    pub(crate) tooz: PathBuf,
    /// `bench/peers/etcdctl_candidate.py`, run by `python`.
    pub(crate) etcdctl: PathBuf,
}

impl Ctx {
    pub(crate) fn url(&self, coord: Coord) -> String {
        let name = match coord {
            Coord::Redis => "ELECT_REDIS_URL",
            Coord::Mysql => "ELECT_MYSQL_URL",
            Coord::Mongo => "ELECT_MONGO_URL",
            Coord::Postgres => "ELECT_POSTGRES_URL",
            Coord::Etcd => "ELECT_ETCD_URL",
            Coord::Raft(_) => return String::new(),
            Coord::Sentinel | Coord::Cluster => {
                return topology(coord).map(|t| t.url.clone()).unwrap_or_default()
            }
        };
        let url = std::env::var(name).unwrap_or_default();
        // A MySQL URL without a database is the throwaway server xtask started (root): keep
        // the tables in its `mysql` schema. A URL with one is used as given.
        if coord == Coord::Mysql && url.ends_with('/') {
            format!("{url}mysql")
        } else {
            url
        }
    }

    pub(crate) fn command(
        &self,
        c: &Contender,
        k: usize,
        election: &str,
        ports: &[String],
    ) -> Command {
        let ttl = TTL_MS.to_string();
        let work = WORK_MS.to_string();
        let id = format!("c{k}");
        match (c.lib, c.coord) {
            (Lib::Elect, Coord::Raft(_)) => {
                let mut cmd = Command::new(&self.candidate);
                cmd.args(["--raft-id", &format!("n{k}"), "--raft-listen", &ports[k]])
                    .args(["--raft-key", "bench-cluster-key-0123", "--work-ms", &work])
                    .args(["--election", election]);
                for (j, port) in ports.iter().enumerate() {
                    cmd.args(["--raft-peer", &format!("n{j}={port}")]);
                }
                cmd
            }
            (Lib::Elect, coord) => {
                let mut cmd = Command::new(&self.candidate);
                cmd.args(["--store", &self.url(coord), "--election", election])
                    .args(["--ttl", &ttl, "--id", &id, "--work-ms", &work, "--migrate"]);
                match coord {
                    Coord::Sentinel => cmd.args(["--restart-quarantine", "--wait-replicas", "2"]),
                    Coord::Cluster => cmd.args(["--restart-quarantine", "--wait-replicas", "1"]),
                    _ => &mut cmd,
                };
                cmd
            }
            (Lib::Tooz, coord) => {
                let mut cmd = Command::new(&self.python);
                let backend = match coord {
                    Coord::Mysql => "mysql",
                    Coord::Postgres => "postgresql",
                    _ => "redis",
                };
                // tooz names PostgreSQL `postgresql://`.
                let url = self.url(coord).replacen("postgres://", "postgresql://", 1);
                cmd.arg(&self.tooz)
                    .args(["--backend", backend, "--url", &url])
                    .args(["--election", election, "--id", &id, "--ttl", &ttl])
                    .args(["--poll", &format!("{}", PEER_POLL_MS as f64 / 1000.0)])
                    .args(["--work-ms", &work]);
                cmd
            }
            (Lib::Etcdctl, coord) => {
                let mut cmd = Command::new(&self.python);
                cmd.arg(&self.etcdctl)
                    .args(["--url", &self.url(coord), "--election", election])
                    .args(["--id", &id, "--ttl", &ttl, "--work-ms", &work]);
                cmd
            }
            (lib @ (Lib::Rslock | Lib::Dlock), coord) => {
                let binary = if lib == Lib::Rslock {
                    &self.rslock
                } else {
                    &self.dlock
                };
                let mut cmd = Command::new(binary);
                cmd.args(["--store", &self.url(coord), "--election", election])
                    .args(["--ttl", &ttl, "--poll-ms", &PEER_POLL_MS.to_string()])
                    .args(["--work-ms", &work]);
                cmd
            }
        }
    }

    /// Starts `n` candidates of `c` in a fresh election.
    pub(crate) fn group(&self, c: &Contender, n: usize, tag: &str) -> Result<Group, String> {
        self.group_observed(c, n, tag, false)
    }

    /// [`group`](Self::group), plus (with `observer`, on an elect store) one more member: an
    /// `Observer` of the same election (`candidate --observe`), member `n`.
    pub(crate) fn group_observed(
        &self,
        c: &Contender,
        n: usize,
        tag: &str,
        observer: bool,
    ) -> Result<Group, String> {
        let election = election(c, tag);
        let ports: Vec<String> = if c.is_raft() {
            (0..n)
                .map(|_| {
                    TcpListener::bind("127.0.0.1:0")
                        .and_then(|l| l.local_addr())
                        .map(|a| a.to_string())
                        .map_err(|e| format!("no free port: {e}"))
                })
                .collect::<Result<_, _>>()?
        } else {
            Vec::new()
        };
        let mut group = Group::new();
        for k in 0..n {
            let command = self.command(c, k, &election, &ports);
            if c.lib == Lib::Etcdctl {
                group.spawn_process_group(command)?;
            } else {
                group.spawn(command)?;
            }
        }
        if observer && c.is_elect() && !c.is_raft() {
            let mut command = self.command(c, n, &election, &ports);
            command.arg("--observe");
            group.spawn(command)?;
        }
        Ok(group)
    }

    /// (commands from clients, commands run by scripts) a Redis server received over
    /// `seconds`, by MONITOR (see `elect_bench::monitor`).
    pub(crate) fn monitor(&self, coord: Coord, seconds: u64) -> Result<(u64, u64), String> {
        let out = Command::new(&self.candidate)
            .args([
                "--monitor",
                &self.url(coord),
                "--ttl",
                &(seconds * 1000).to_string(),
            ])
            .output()
            .map_err(|e| format!("monitor: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let mut counts = text.split_whitespace().map(str::parse::<u64>);
        match (counts.next(), counts.next()) {
            (Some(Ok(clients)), Some(Ok(scripts))) => Ok((clients, scripts)),
            _ => Err(format!(
                "monitor: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )),
        }
    }

    /// A starting mark for [`Ctx::requests_since`]: two back-to-back readings of the
    /// server's counter measure what one reading costs the server.
    pub(crate) fn counter_mark(&self, coord: Coord) -> Result<CounterMark, String> {
        let a = self.counters(coord)?;
        let at = std::time::Instant::now();
        let count = self.counters(coord)?;
        Ok(CounterMark {
            count,
            probe: count.saturating_sub(a),
            at,
        })
    }

    /// The requests the server counted since `mark`, less the cost of this reading.
    pub(crate) fn requests_since(&self, coord: Coord, mark: &CounterMark) -> Result<u64, String> {
        let z = self.counters(coord)?;
        Ok(z.saturating_sub(mark.count).saturating_sub(mark.probe))
    }

    /// The server's own request counter (see `elect_bench::counters`).
    pub(crate) fn counters(&self, coord: Coord) -> Result<u64, String> {
        let out = Command::new(&self.candidate)
            .args(["--counters", &self.url(coord)])
            .output()
            .map_err(|e| format!("counters: {e}"))?;
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .map_err(|_| format!("counters: {}", String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// Where a count of the server's requests starts (see [`Ctx::counter_mark`]).
pub(crate) struct CounterMark {
    /// The second reading.
    count: u64,
    /// What one reading costs the server.
    probe: u64,
    /// When the second reading was asked for.
    pub(crate) at: std::time::Instant,
}
