//! What elect records through the `metrics` facade, read back with the metrics project's own
//! debugging recorder (one test: the recorder is process-wide, and reading it resets what it
//! read, gauges included).

use std::time::Duration;

use elect_core::conformance::{Faults, FaultyStore};
use elect_core::metrics::{
    IS_LEADER, LEASE_REMAINING, REQUEST_DURATION, REQUEST_ERRORS, SHARDS_LEADING, SHARDS_PROCESSES,
    SHARDS_SHARE, SHARDS_TRANSITIONS, TERM, TRANSITIONS,
};
use elect_core::shards::Shards;
use elect_core::{CandidateId, ElectionName, Elector, MemoryStore};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use metrics_util::CompositeKey;
use tokio::time::sleep;

const TTL: Duration = Duration::from_secs(3);

/// One snapshot (it resets every value it reads, gauges included).
type Snapshot = Vec<(CompositeKey, DebugValue)>;

/// The value of the metric `name` whose labels include every pair in `labels`.
fn value<'a>(
    snapshot: &'a Snapshot,
    name: &str,
    labels: &[(&str, &str)],
) -> Option<&'a DebugValue> {
    snapshot
        .iter()
        .find(|(key, _)| {
            let key = key.key();
            key.name() == name
                && labels
                    .iter()
                    .all(|(k, v)| key.labels().any(|l| l.key() == *k && l.value() == *v))
        })
        .map(|(_, value)| value)
}

fn gauge(s: &Snapshot, name: &str, labels: &[(&str, &str)]) -> f64 {
    match value(s, name, labels) {
        Some(DebugValue::Gauge(v)) => v.0,
        other => panic!("{name} {labels:?}: {other:?}"),
    }
}

fn count(s: &Snapshot, name: &str, labels: &[(&str, &str)]) -> u64 {
    match value(s, name, labels) {
        Some(DebugValue::Counter(n)) => *n,
        None => 0,
        other => panic!("{name} {labels:?}: {other:?}"),
    }
}

fn take(snapshotter: &Snapshotter) -> Snapshot {
    let all = snapshotter.snapshot().into_vec().into_iter();
    all.map(|(key, _, _, value)| (key, value)).collect()
}

#[tokio::test(start_paused = true)]
async fn leadership_requests_errors_and_shards_are_recorded() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder
        .install()
        .expect("the only recorder of this test binary");
    an_electors_leadership_requests_and_errors(&snapshotter).await;
    shards_totals_and_balancing(&snapshotter).await;
}

async fn an_electors_leadership_requests_and_errors(snapshotter: &Snapshotter) {
    let net = FaultyStore::new(MemoryStore::new());
    let elector = Elector::builder(net.clone(), ElectionName::new("jobs").unwrap())
        .candidate(CandidateId::new("a").unwrap())
        .ttl(TTL)
        .start()
        .unwrap();
    let guard = elector.leading().await.unwrap();
    let me = [("election", "jobs"), ("candidate", "a")];
    let take = || take(snapshotter);
    let s = &take();
    assert_eq!(gauge(s, IS_LEADER, &me), 1.0);
    assert_eq!(gauge(s, TERM, &me), guard.term().get() as f64);
    assert_eq!(count(s, TRANSITIONS, &[("transition", "elected")]), 1);
    sleep(TTL / 2).await;
    let s = &take();
    let remaining = gauge(s, LEASE_REMAINING, &me);
    assert!(
        remaining > 0.0 && remaining <= TTL.as_secs_f64(),
        "remaining {remaining}"
    );
    match value(
        s,
        REQUEST_DURATION,
        &[("store", "memory"), ("operation", "renew")],
    ) {
        Some(DebugValue::Histogram(samples)) => assert!(!samples.is_empty()),
        other => panic!("renewal durations: {other:?}"),
    }

    // The store stops answering: renewals fail, and leadership ends at the deadline.
    net.set(Faults::FailAll);
    guard.lost().await;
    sleep(Duration::from_millis(100)).await;
    let s = &take();
    assert_eq!(gauge(s, IS_LEADER, &me), 0.0);
    assert_eq!(gauge(s, LEASE_REMAINING, &me), 0.0);
    assert_eq!(
        count(s, TRANSITIONS, &[("transition", "deadline_passed")]),
        1
    );
    let errors = [
        ("store", "memory"),
        ("operation", "renew"),
        ("kind", "unavailable"),
    ];
    assert!(count(s, REQUEST_ERRORS, &errors) >= 1);
    elector.shutdown().await.unwrap();
}

/// `Shards` record totals per candidate, never a series per election: how many elections they
/// lead (counted up and down), their transitions, and with balancing the share and the count.
async fn shards_totals_and_balancing(snapshotter: &Snapshotter) {
    let _ = take(snapshotter);
    let store = MemoryStore::new();
    let names: Vec<ElectionName> = (0..6)
        .map(|i| ElectionName::new(format!("shard-{i}")).unwrap())
        .collect();
    let start = |id: &str| {
        Shards::builder(store.clone(), CandidateId::new(id).unwrap())
            .ttl(Duration::from_secs(2))
            .balance(ElectionName::new("seats").unwrap(), 4)
            .start(names.clone())
            .unwrap()
    };
    // The gauge of leadings is read as the sum of what each snapshot shows (each resets it).
    let mut leading = [0.0, 0.0];
    let read = |leading: &mut [f64; 2]| -> Snapshot {
        let s = take(snapshotter);
        for (k, id) in ["p", "q"].into_iter().enumerate() {
            if let Some(DebugValue::Gauge(v)) = value(&s, SHARDS_LEADING, &[("candidate", id)]) {
                leading[k] += v.0;
            }
        }
        s
    };
    let p = start("p");
    sleep(Duration::from_secs(4)).await;
    let s = &read(&mut leading);
    assert_eq!(leading, [6.0, 0.0], "alone, p leads all six");
    assert_eq!(
        count(
            s,
            SHARDS_TRANSITIONS,
            &[("candidate", "p"), ("transition", "elected")]
        ),
        6
    );
    let p_seats = [("candidate", "p"), ("seats", "seats")];
    assert_eq!(gauge(s, SHARDS_SHARE, &p_seats), 6.0);
    assert_eq!(gauge(s, SHARDS_PROCESSES, &p_seats), 1.0);
    assert!(
        value(s, SHARDS_LEADING, &[("election", "shard-0")]).is_none()
            && value(s, IS_LEADER, &[("election", "shard-0")]).is_none(),
        "no series per election"
    );

    let q = start("q");
    sleep(Duration::from_secs(8)).await;
    let s = &read(&mut leading);
    assert_eq!(leading, [3.0, 3.0], "three each once balanced");
    assert_eq!(
        count(
            s,
            SHARDS_TRANSITIONS,
            &[("candidate", "p"), ("transition", "resigned")]
        ),
        3,
        "p gave three away"
    );
    let q_seats = [("candidate", "q"), ("seats", "seats")];
    for labels in [&p_seats, &q_seats] {
        assert_eq!(gauge(s, SHARDS_SHARE, labels), 3.0, "{labels:?}");
        assert_eq!(gauge(s, SHARDS_PROCESSES, labels), 2.0, "{labels:?}");
    }
    assert_eq!(
        (p.leaders().len(), q.leaders().len()),
        (3, 3),
        "the gauges say what the processes say"
    );

    p.shutdown().await.unwrap();
    q.shutdown().await.unwrap();
    let s = &read(&mut leading);
    assert_eq!(leading, [0.0, 0.0], "nothing led after shutdown");
    for (labels, id) in [(&p_seats, "p"), (&q_seats, "q")] {
        assert_eq!(
            gauge(s, SHARDS_SHARE, labels),
            0.0,
            "not counted: {labels:?}"
        );
        assert_eq!(gauge(s, SHARDS_PROCESSES, labels), 0.0, "{labels:?}");
        let shutdown = [("candidate", id), ("transition", "shutdown")];
        assert_eq!(count(s, SHARDS_TRANSITIONS, &shutdown), 3, "{id}");
    }
}
