//! What elect records through the `metrics` facade, read back with the metrics project's own
//! debugging recorder (one test: the recorder is process-wide).

use std::time::Duration;

use elect_core::conformance::{Faults, FaultyStore};
use elect_core::metrics::{
    IS_LEADER, LEASE_REMAINING, REQUEST_DURATION, REQUEST_ERRORS, TERM, TRANSITIONS,
};
use elect_core::{CandidateId, ElectionName, Elector, MemoryStore};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
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

#[tokio::test(start_paused = true)]
async fn leadership_requests_and_errors_are_recorded() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder
        .install()
        .expect("the only recorder of this test binary");

    let net = FaultyStore::new(MemoryStore::new());
    let elector = Elector::builder(net.clone(), ElectionName::new("jobs").unwrap())
        .candidate(CandidateId::new("a").unwrap())
        .ttl(TTL)
        .start()
        .unwrap();
    let guard = elector.leading().await.unwrap();
    let me = [("election", "jobs"), ("candidate", "a")];
    let take = || -> Snapshot {
        let all = snapshotter.snapshot().into_vec().into_iter();
        all.map(|(key, _, _, value)| (key, value)).collect()
    };
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
