//! `elect status`: who leads an election on a store, its term and the lease left.

use std::time::Duration;

use clap::Args;
use elect::{LeaderInfo, LeaseStore};

use crate::store;
use crate::{exit, Failure};

/// `elect status --store URL --election NAME [--watch] [--json]`
#[derive(Args, Debug)]
pub(crate) struct StatusArgs {
    /// The coordinator: redis://, rediss://, redis-cluster://, redis-sentinel://, mysql://
    /// (with a database), mongodb://, postgres:// or etcd:// (feature etcd) URL.
    /// Its value is never printed (a password in it is hidden everywhere).
    #[arg(long, env = "ELECT_STORE", hide_env_values = true)]
    store: String,
    #[command(flatten)]
    tls: store::TlsArgs,
    /// The election's name.
    #[arg(long, env = "ELECT_ELECTION_NAME")]
    election: String,
    /// Keep watching and print a line at every change of leader or term (Ctrl-C to stop).
    #[arg(long)]
    watch: bool,
    /// JSON, one object per line: {"election", "leader", "term", "value", "remaining_ms"}.
    #[arg(long)]
    json: bool,
}

/// Who leads, as JSON: `{"election", "leader", "term", "value", "remaining_ms"}` (nulls when
/// nobody leads). Shared with `elect run --http`'s `/leader`.
pub(crate) fn leader_json(election: &str, info: Option<&LeaderInfo>) -> serde_json::Value {
    match info {
        Some(i) => serde_json::json!({
            "election": election,
            "leader": i.holder.as_str(),
            "term": i.term.0,
            "value": i.value.as_ref().map(|v| v.as_str()),
            "remaining_ms": i.remaining.as_millis() as u64,
        }),
        None => serde_json::json!({
            "election": election,
            "leader": null,
            "term": null,
            "value": null,
            "remaining_ms": null,
        }),
    }
}

fn render(election: &str, info: Option<&LeaderInfo>, json: bool) -> String {
    match (info, json) {
        (_, true) => leader_json(election, info).to_string(),
        (Some(i), false) => {
            let value = match &i.value {
                // Debug quoting: a value cannot break the line or fake another field.
                Some(v) => format!(", value {:?}", v.as_str()),
                None => String::new(),
            };
            format!(
                "{election}: {} leads in term {} ({:.3} s of lease left{value})",
                i.holder,
                i.term,
                i.remaining.as_secs_f64()
            )
        }
        (None, false) => format!("{election}: nobody leads"),
    }
}

pub(crate) async fn status(args: StatusArgs) -> Result<u8, Failure> {
    let election = store::election(&args.election)?;
    // Reads only: never creates anything, so a SELECT-only user can ask.
    let connect = store::Connect {
        tls: args.tls.files(),
        ..store::Connect::default()
    };
    let store = store::connect(&args.store, connect).await?;
    let lease = store.lease_store();
    let result = report(&args, &election, lease.as_ref()).await;
    store.close().await;
    result
}

async fn report(
    args: &StatusArgs,
    election: &elect::ElectionName,
    store: &dyn LeaseStore,
) -> Result<u8, Failure> {
    let read = || async {
        store.leader(election).await.map_err(|e| Failure {
            code: exit::UNAVAILABLE,
            message: format!("reading {election}: {}", e.to_string().replace('\n', " ")),
        })
    };
    let mut last = read().await?;
    println!("{}", render(election.as_str(), last.as_ref(), args.json));
    if !args.watch {
        return Ok(0);
    }
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(|e| Failure::config(e.to_string()))?;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = interrupt.recv() => return Ok(0),
        }
        let now = match read().await {
            Ok(now) => now,
            Err(failure) => {
                eprintln!("elect: {}", failure.message);
                continue;
            }
        };
        let key = |i: &Option<LeaderInfo>| {
            i.as_ref()
                .map(|i| (i.holder.clone(), i.term, i.value.clone()))
        };
        if key(&now) != key(&last) {
            println!("{}", render(election.as_str(), now.as_ref(), args.json));
        }
        last = now;
    }
}
