//! Balancing: processes joining and one crashing among balanced `Shards` in the same elections
//! on one Redis.

use std::process::Command;
use std::time::Duration;

use elect_bench::group::{Group, Line};
use elect_bench::report::Json;
use rustix::process::Signal;

use crate::contenders::{Coord, Ctx};
use crate::rounds::millis;

/// The lease of every election in the row: shares move at census periods of TTL/2.
const TTL_MS: u64 = 2000;
/// How long shares must stay put to count as stable.
const STILL: Duration = Duration::from_millis(2 * TTL_MS);

/// One `share` line: elections led, and the leaderships ended by resigning and otherwise.
#[derive(Clone, Copy, Debug)]
struct Share {
    ns: u128,
    leading: u64,
    resigned: u64,
    lost: u64,
}

fn share(line: &Line) -> Option<Share> {
    if line.event != "share" {
        return None;
    }
    let n = |i: usize| line.rest.get(i)?.parse().ok();
    Some(Share {
        ns: line.ns,
        leading: n(0)?,
        resigned: n(1)?,
        lost: n(2)?,
    })
}

/// The last `share` line of each of `members` printed after `since`.
fn latest(g: &Group, members: &[usize], since: u128) -> Vec<Option<Share>> {
    members
        .iter()
        .map(|&who| {
            g.log
                .iter()
                .rev()
                .filter(|l| l.who == who && l.ns > since)
                .find_map(share)
        })
        .collect()
}

/// Whether every member's latest share is ⌊n/k⌋ or ⌈n/k⌉ and they add up to `n`.
fn balanced(shares: &[Option<Share>], n: u64) -> bool {
    let k = shares.len() as u64;
    let ok = |s: &Share| s.leading == n / k || s.leading == n / k + u64::from(!n.is_multiple_of(k));
    shares.iter().all(|s| s.as_ref().is_some_and(ok))
        && shares.iter().flatten().map(|s| s.leading).sum::<u64>() == n
}

/// Collects lines until `done` holds for the members' latest shares since `since`; the
/// instant of the line that made it hold.
fn until(
    g: &mut Group,
    members: &[usize],
    since: u128,
    within: Duration,
    what: &str,
    done: impl Fn(&[Option<Share>]) -> bool,
) -> Result<(u128, Vec<Share>), String> {
    let end = std::time::Instant::now() + within;
    while std::time::Instant::now() < end {
        g.collect(Duration::from_millis(100));
        let now = latest(g, members, since);
        if done(&now) {
            let shares: Vec<Share> = now.into_iter().flatten().collect();
            let at = shares.iter().map(|s| s.ns).max().unwrap_or(since);
            return Ok((at, shares));
        }
    }
    Err(format!(
        "balance: {what} not within {within:?}; last shares {:?}",
        latest(g, members, since)
    ))
}

/// `n` elections on Redis (TTL 2 s, at most 8 processes): one process leads them all; a
/// second, then a third joins (each time: how long until the shares are ⌊n/k⌋ or ⌈n/k⌉, how
/// many elections moved against the fewest that could, and whether they then hold still for
/// two TTLs); then the third is killed (SIGKILL): how long until every election is led again,
/// and until the two survivors hold half each. Every hand-over of a join is a release, and the
/// survivors lose nothing: a leadership ended otherwise is an error.
pub(crate) fn balance(ctx: &Ctx, n: usize) -> Result<Json, String> {
    let n64 = n as u64;
    let prefix = format!("bench.balance.{}", std::process::id());
    let mut g = Group::new();
    let spawn = |g: &mut Group| {
        let mut cmd = Command::new(&ctx.candidate);
        cmd.args(["--store", &ctx.url(Coord::Redis)])
            .args(["--election", &prefix])
            .args(["--elections", &n.to_string()])
            .args(["--balance", "8", "--ttl", &TTL_MS.to_string()]);
        let who = g.spawn(cmd)?;
        let ready = g
            .wait(Duration::from_secs(20), |l| {
                l.who == who && l.event == "ready"
            })
            .ok_or("balance: a process did not start")?;
        Ok::<_, String>((who, ready.ns))
    };
    let result = (|| {
        let (a, started) = spawn(&mut g)?;
        let (all_led, _) = until(
            &mut g,
            &[a],
            started,
            Duration::from_secs(60),
            "one process leading all",
            |s| balanced(s, n64),
        )?;
        let mut members = vec![a];
        let mut joins = Vec::new();
        for k in [2usize, 3] {
            let before: u64 = latest(&g, &members, 0)
                .iter()
                .flatten()
                .map(|s| s.resigned)
                .sum();
            let (who, joined) = spawn(&mut g)?;
            members.push(who);
            let (at, shares) = until(
                &mut g,
                &members,
                joined,
                Duration::from_secs(60),
                &format!("{k} processes balanced"),
                |s| balanced(s, n64),
            )?;
            let moves = (shares.iter().map(|s| s.resigned).sum::<u64>()).saturating_sub(before);
            let newcomer = shares.last().map_or(0, |s| s.leading);
            g.collect(STILL);
            let after = latest(&g, &members, at);
            let still = balanced(&after, n64)
                && after
                    .iter()
                    .zip(&shares)
                    .all(|(now, then)| now.is_some_and(|s| s.resigned == then.resigned));
            if shares.iter().any(|s| s.lost > 0) {
                return Err(format!(
                    "balance: a leadership ended otherwise than by release: {shares:?}"
                ));
            }
            joins.push(Json::Obj(vec![
                ("processes".into(), Json::Num(k as f64)),
                ("balanced_ms".into(), Json::Num(millis(joined, at))),
                ("moves".into(), Json::Num(moves as f64)),
                ("moves_minimum".into(), Json::Num(newcomer as f64)),
                ("still_for_two_ttls".into(), Json::Bool(still)),
            ]));
        }
        let killed = g.signal(members[2], Signal::KILL);
        let survivors = &members[..2];
        let (led_again, _) = until(
            &mut g,
            survivors,
            killed,
            Duration::from_secs(60),
            "every election led again after the kill",
            |s| {
                s.iter().all(Option::is_some)
                    && s.iter().flatten().map(|s| s.leading).sum::<u64>() == n64
            },
        )?;
        let (rebalanced, shares) = until(
            &mut g,
            survivors,
            killed,
            Duration::from_secs(60),
            "two survivors balanced",
            |s| balanced(s, n64),
        )?;
        if shares.iter().any(|s| s.lost > 0) {
            return Err(format!("balance: a survivor lost a leadership: {shares:?}"));
        }
        Ok(Json::Obj(vec![
            ("coordinator".into(), Json::Str("redis".into())),
            ("elections".into(), Json::Num(n as f64)),
            ("ttl_ms".into(), Json::Num(TTL_MS as f64)),
            (
                "one_leads_all_ms".into(),
                Json::Num(millis(started, all_led)),
            ),
            ("joins".into(), Json::Arr(joins)),
            (
                "crash_all_led_again_ms".into(),
                Json::Num(millis(killed, led_again)),
            ),
            (
                "crash_rebalanced_ms".into(),
                Json::Num(millis(killed, rebalanced)),
            ),
        ]))
    })();
    g.stop();
    result
}

/// The row as a Markdown table (empty when it did not run or failed: the failure is reported
/// with the others).
pub(crate) fn table(row: &Json) -> String {
    let Json::Obj(f) = row else {
        return String::new();
    };
    let field = |f: &[(String, Json)], k: &str| match f.iter().find(|(n, _)| n == k) {
        Some((_, Json::Num(n))) => format!("{n:.0}"),
        Some((_, Json::Bool(b))) => (if *b { "yes" } else { "no" }).to_owned(),
        _ => "–".to_owned(),
    };
    let Some((_, Json::Arr(joins))) = f.iter().find(|(n, _)| n == "joins") else {
        return String::new();
    };
    let mut t = format!(
        "\nBalancing (`Shards` with `balance`, {} elections on Redis, TTL {} ms): a process \
         joins the others, then the third is SIGKILLed; a join's hand-overs are releases:\n\n\
         | event | processes | ms until balanced | elections moved | fewest possible | still for two TTLs |\n\
         |---|---|---|---|---|---|\n",
        field(f, "elections"),
        field(f, "ttl_ms"),
    );
    for join in joins {
        let Json::Obj(j) = join else { continue };
        t += &format!(
            "| join | {} | {} | {} | {} | {} |\n",
            field(j, "processes"),
            field(j, "balanced_ms"),
            field(j, "moves"),
            field(j, "moves_minimum"),
            field(j, "still_for_two_ttls"),
        );
    }
    t += &format!(
        "| SIGKILL of one | 2 | {} (every election led again after {}) | – | – | – |\n",
        field(f, "crash_rebalanced_ms"),
        field(f, "crash_all_led_again_ms"),
    );
    t
}
