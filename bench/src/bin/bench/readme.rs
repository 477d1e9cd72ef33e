//! The markdown table and the results section of bench/README.md.

use std::fmt::Write as _;

use elect_bench::report::{cell, ms, ratio, Json, Stats};

use crate::contenders::{root, Contender, Coord, Lib};
use crate::outcome::Outcome;

/// The markdown table: each figure for elect and each peer on the same coordinator.
pub(crate) fn table(results: &[(Contender, Outcome)], scales: &[&Json]) -> String {
    let mut t = String::from(
        "| coordinator | figure (ms: p50 (p99)) | elect | tooz | elect/tooz | rslock (redis), distributed-lock (postgres), etcdctl elect (etcd) | elect/that peer |\n|---|---|---|---|---|---|---|\n",
    );
    let find = |lib: Lib, coord: Coord| {
        results
            .iter()
            .find(|(c, _)| c.lib == lib && c.coord == coord)
            .map(|(_, o)| o)
    };
    let p50 = |v: &[f64]| Stats::of(v).map(|s| s.p50);
    for coord in [
        Coord::Redis,
        Coord::Mysql,
        Coord::Mongo,
        Coord::Postgres,
        Coord::Etcd,
        Coord::Raft(3),
        Coord::Raft(5),
        Coord::Sentinel,
        Coord::Cluster,
    ] {
        let Some(e) = find(Lib::Elect, coord) else {
            continue;
        };
        let peers = [
            find(Lib::Tooz, coord),
            find(Lib::Rslock, coord)
                .or_else(|| find(Lib::Dlock, coord))
                .or_else(|| find(Lib::Etcdctl, coord)),
        ];
        let label = match coord {
            Coord::Mysql => "mysql (tooz: connection-bound lock)".to_owned(),
            Coord::Postgres => "postgres (peers: connection-bound locks)".to_owned(),
            other => Contender {
                lib: Lib::Elect,
                coord: other,
            }
            .coordinator(),
        };
        let mut row = |figure: &str, of: &dyn Fn(&Outcome) -> (String, Option<f64>)| {
            let (ev, en) = of(e);
            let _ = write!(t, "| {label} | {figure} | {ev} |");
            for peer in peers {
                match peer {
                    Some(p) => {
                        let (pv, pn) = of(p);
                        let _ = write!(t, " {pv} | {} |", ratio(en, pn));
                    }
                    None => t.push_str(" – | – |"),
                }
            }
            t.push('\n');
        };
        row("crash failover", &|o| (cell(&o.failover), p50(&o.failover)));
        if !matches!(coord, Coord::Raft(_)) {
            row("lease left at the kill", &|o| {
                (cell(&o.remaining), p50(&o.remaining))
            });
            row("detection slack", &|o| (cell(&o.slack), p50(&o.slack)));
        }
        row(
            if matches!(coord, Coord::Raft(_)) {
                "transfer (resign)"
            } else {
                "graceful hand-over"
            },
            &|o| (cell(&o.handover), p50(&o.handover)),
        );
        row(
            "new leader: an observer's notice after the election",
            &|o| (cell(&o.notice), p50(&o.notice)),
        );
        if !coord.is_topology() && !matches!(coord, Coord::Raft(_)) {
            let figure = format!(
                "requests per crash failover: kill to {} ms after the new leader, all candidates",
                crate::handover::SETTLED.as_millis()
            );
            row(&figure, &|o| {
                (cell(&o.failover_requests), p50(&o.failover_requests))
            });
            let figure = format!(
                "requests per hand-over: resign to {} ms after the new leader, all candidates",
                crate::handover::SETTLED.as_millis()
            );
            row(&figure, &|o| {
                (cell(&o.handover_requests), p50(&o.handover_requests))
            });
        }
        row("frozen leader: failover", &|o| {
            let f = o.frozen_failover();
            let none = o.frozen.len() - f.len();
            let v = if none > 0 {
                format!("{} ({none}/{} none)", cell(&f), o.frozen.len())
            } else {
                cell(&f)
            };
            (v, p50(&f))
        });
        row("frozen leader: overlap ms max / stale work lines", &|o| {
            (
                format!(
                    "{} / {}",
                    o.overlap_max().map_or("–".into(), ms),
                    o.stale_work()
                ),
                o.overlap_max(),
            )
        });
        if coord.is_topology() {
            row(
                "master crash: the election's master killed, to the next election",
                &|o| (cell(&o.master_failover), p50(&o.master_failover)),
            );
        } else if matches!(coord, Coord::Raft(_)) {
            row("messages/s at steady state", &|o| {
                (
                    o.load.messages.map_or("–".into(), |v| format!("{v:.0}")),
                    o.load.messages,
                )
            });
        } else {
            row(
                "load: requests/s reaching the server, 1 leader + 9 followers",
                &|o| {
                    (
                        o.load.requests.map_or("–".into(), |v| format!("{v:.1}")),
                        o.load.requests,
                    )
                },
            );
            if coord == Coord::Redis {
                row("load: commands/s executed, scripts' own included", &|o| {
                    (
                        o.load.executed.map_or("–".into(), |v| format!("{v:.1}")),
                        o.load.executed,
                    )
                });
            }
        }
    }
    for scale in scales {
        let Json::Obj(fields) = scale else { continue };
        let get = |k: &str| {
            fields
                .iter()
                .find(|(n, _)| n == k)
                .and_then(|(_, v)| match v {
                    Json::Num(n) => Some(*n),
                    _ => None,
                })
        };
        let mode = fields.iter().find_map(|(n, v)| match v {
            Json::Str(s) if n == "mode" => Some(s.as_str()),
            _ => None,
        });
        let batched = fields
            .iter()
            .any(|(n, v)| n == "batched" && matches!(v, Json::Bool(true)));
        let targets = " Targets: ≤ 5 % of one core, ≤ 4096 bytes per election, ≤ 100 requests/s, all leading within 2 s.";
        let (how, targets) = match (mode, batched) {
            (Some("scale-shards"), _) => (
                "one `elect_core::shards::Shards` (one task, one script call per batch)",
                targets,
            ),
            (_, true) => (
                "an elector each, batched (`elect_core::batch::Batched`: one script call per batch)",
                targets,
            ),
            _ => ("one request per election and renewal", ""),
        };
        let _ = write!(
            t,
            "\nScale, {how}: one process, {} elections on one Redis (TTL 10 s): {:.1} % of one core, RSS {:.0} bytes per election ({:.1} MiB in all), Redis serving {:.0} requests/s, all leading {:.2} s after start.{targets}\n",
            get("elections").unwrap_or(0.0),
            get("cpu_share_of_one_core").unwrap_or(0.0) * 100.0,
            get("rss_per_election_bytes").unwrap_or(0.0),
            get("rss_bytes").unwrap_or(0.0) / 1048576.0,
            get("redis_requests_per_s").unwrap_or(0.0),
            get("ramp_up_ms").unwrap_or(0.0) / 1000.0,
        );
    }
    t
}

pub(crate) const BEGIN: &str = "<!-- bench:begin (written by cargo xtask bench) -->";
pub(crate) const END: &str = "<!-- bench:end -->";

pub(crate) fn write_readme(
    date: &str,
    machine: &[(String, String)],
    results: &[(Contender, Outcome)],
    table: &str,
) -> Result<(), String> {
    let path = root().join("bench/README.md");
    let old = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let (Some(b), Some(e)) = (old.find(BEGIN), old.find(END)) else {
        return Err(format!("{}: the bench markers are missing", path.display()));
    };
    let mut block =
        format!("{BEGIN}\n\nMeasured {date} (`bench/results/{date}.json`). Machine:\n\n");
    for (k, v) in machine {
        let _ = writeln!(block, "- {k}: {v}");
    }
    block.push_str("\nSettings:\n\n");
    for (c, _) in results {
        let _ = writeln!(block, "- **{}**: {}", c.name(), c.settings());
    }
    let _ = write!(block, "\n{table}\n");
    let new = format!("{}{block}{}", &old[..b], &old[e..]);
    std::fs::write(&path, new).map_err(|e| format!("{}: {e}", path.display()))
}

/// Writes one picture per coordinator into `dir` (`<stem>-<coordinator>.svg`): the crash
/// failover and graceful hand-over distributions of elect and each peer on it. Returns the
/// markdown that shows them, with paths relative to `dir`.
pub(crate) fn plots(
    results: &[(Contender, Outcome)],
    dir: &std::path::Path,
    stem: &str,
) -> Result<String, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut shown = String::new();
    let mut coords: Vec<Coord> = Vec::new();
    for (c, _) in results {
        if !coords.contains(&c.coord) {
            coords.push(c.coord);
        }
    }
    for coord in coords {
        let here: Vec<&(Contender, Outcome)> =
            results.iter().filter(|(c, _)| c.coord == coord).collect();
        let series = |of: fn(&Outcome) -> &[f64]| -> Vec<(String, &[f64])> {
            here.iter().map(|(c, o)| (c.name(), of(o))).collect()
        };
        let raft = matches!(coord, Coord::Raft(_));
        let panels = [
            elect_bench::plot::Panel {
                title: "crash failover (SIGKILL to the next elected)",
                series: series(|o| &o.failover),
            },
            elect_bench::plot::Panel {
                title: if raft {
                    "transfer (resign to the next elected)"
                } else {
                    "graceful hand-over (resign to the next elected)"
                },
                series: series(|o| &o.handover),
            },
        ];
        let name = here[0].0.coordinator();
        let file = format!("{stem}-{name}.svg");
        let path = dir.join(&file);
        elect_bench::plot::distributions(&path, &name, &panels)?;
        let _ = writeln!(shown, "![{name}: crash failover and hand-over]({file})\n");
    }
    Ok(shown)
}
