//! Elector behaviour on paused time, with faults injected between the elector and the store.

use std::sync::Arc;
use std::time::Duration;

use elect_core::conformance::{Faults, FaultyStore};
use elect_core::{
    async_trait, Acquire, CandidateId, ChangeFeed, ElectionName, Elector, Error, ErrorPolicy,
    Event, LeaderInfo, Leadership, Lease, LeaseStore, MemoryStore, OnError, Release, Renewal, Term,
    Ttl,
};
use tokio::time::{sleep, timeout, Instant};

const TTL: Duration = Duration::from_secs(3);

fn election(name: &str) -> ElectionName {
    ElectionName::new(name).unwrap()
}

fn id(name: &str) -> CandidateId {
    CandidateId::new(name).unwrap()
}

fn start(store: impl LeaseStore, name: &str) -> Elector {
    Elector::builder(store, election("e"))
        .candidate(id(name))
        .ttl(TTL)
        .start()
        .unwrap()
}

async fn lead(elector: &Elector) -> elect_core::LeaderGuard {
    timeout(TTL * 3, elector.leading())
        .await
        .expect("leads within 3 TTL")
        .expect("elector running")
}

/// Collects events until none arrives for `quiet`.
async fn drain(
    events: &mut tokio::sync::broadcast::Receiver<Event>,
    quiet: Duration,
) -> Vec<Event> {
    let mut out = Vec::new();
    while let Ok(Ok(event)) = timeout(quiet, events.recv()).await {
        out.push(event);
    }
    out
}

#[tokio::test(start_paused = true)]
async fn a_lost_grant_reply_is_retried_into_the_same_term() {
    let memory = MemoryStore::new();
    let net = FaultyStore::new(memory.clone());
    net.set(Faults::LoseReplies);
    let elector = start(net.clone(), "a");
    sleep(Duration::from_millis(10)).await;
    // The store granted term 1, but the elector never heard of it.
    let seen = memory
        .leader(&election("e"))
        .await
        .unwrap()
        .expect("granted at the store");
    assert_eq!(seen.term, Term(1));
    assert!(!elector.is_leader());
    net.set(Faults::None);
    let guard = lead(&elector).await;
    assert_eq!(
        guard.term(),
        Term(1),
        "the retry renews the lease it was granted"
    );
}

#[tokio::test(start_paused = true)]
async fn transient_renew_failures_within_the_deadline_keep_leadership() {
    let net = FaultyStore::new(MemoryStore::new());
    let builder = Elector::builder(net.clone(), election("e")).ttl(TTL);
    let mut events = builder.events();
    let elector = builder.start().unwrap();
    let guard = lead(&elector).await;
    net.set(Faults::FailAll);
    sleep(TTL / 2).await;
    assert!(guard.is_leading(), "half a TTL of failures is survivable");
    net.set(Faults::None);
    sleep(TTL * 3).await;
    assert!(guard.is_leading(), "renewals resumed, same leadership");
    let events = drain(&mut events, Duration::from_millis(1)).await;
    assert!(matches!(events[0], Event::Elected { term: Term(1), .. }));
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::Error(err) if err.is_retryable())));
    assert!(!events
        .iter()
        .any(|e| matches!(e, Event::SteppedDown { .. })));
}

#[tokio::test(start_paused = true)]
async fn the_deadline_is_measured_from_before_the_request_was_sent() {
    let net = FaultyStore::new(MemoryStore::new());
    net.set(Faults::Delay {
        request: TTL / 10,
        reply: TTL / 10,
    });
    let elector = start(net.clone(), "a");
    let guard = lead(&elector).await;
    // The grant's reply arrived now, TTL/5 after its request was sent (on paused time the
    // elector publishes at the very instant the reply arrives).
    let sent = Instant::now() - TTL / 5;
    let expected = sent + TTL.mul_f64(0.99) - Duration::from_millis(2);
    assert_eq!(guard.deadline(), expected);
    net.set(Faults::Blackhole);
    guard.lost().await;
    assert_eq!(
        Instant::now(),
        expected,
        "lost fires exactly at the deadline"
    );
}

#[tokio::test(start_paused = true)]
async fn a_grant_that_arrives_after_its_deadline_is_not_believed() {
    let net = FaultyStore::new(MemoryStore::new());
    net.set(Faults::Delay {
        request: Duration::ZERO,
        reply: TTL,
    });
    let builder = Elector::builder(net.clone(), election("e"))
        .ttl(TTL)
        .request_timeout(TTL * 2);
    let mut events = builder.events();
    let elector = builder.start().unwrap();
    sleep(TTL + Duration::from_millis(1)).await;
    assert!(
        !elector.is_leader(),
        "a reply later than the lease is worthless"
    );
    net.set(Faults::None);
    let guard = lead(&elector).await;
    let events = drain(&mut events, Duration::from_millis(1)).await;
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, Event::Elected { .. }))
            .count(),
        1,
        "{events:?}"
    );
    assert!(guard.is_leading());
}

#[tokio::test(start_paused = true)]
async fn abort_policy_stops_the_elector_with_the_error() {
    let net = FaultyStore::new(MemoryStore::new());
    net.set(Faults::FailAll);
    let elector = Elector::builder(net, election("e"))
        .ttl(TTL)
        .on_error(ErrorPolicy::Abort)
        .start()
        .unwrap();
    let err = elector.leading().await.unwrap_err();
    assert!(err.is_retryable(), "the store's error comes back: {err}");
    assert!(matches!(elector.leadership(), Leadership::Stopped(Some(_))));
    assert!(
        elector.shutdown().await.is_err(),
        "shutdown reports why it had stopped"
    );
}

/// A store whose every answer is a corrupt record.
#[derive(Debug)]
struct Corrupt;

#[async_trait]
impl LeaseStore for Corrupt {
    async fn try_acquire(
        &self,
        e: &ElectionName,
        _: &CandidateId,
        _: Ttl,
    ) -> elect_core::Result<Acquire> {
        Err(Error::corrupt("test", e.as_str(), "junk"))
    }
    async fn renew(&self, l: &Lease) -> elect_core::Result<Renewal> {
        Err(Error::corrupt("test", l.election.as_str(), "junk"))
    }
    async fn release(&self, l: &Lease) -> elect_core::Result<Release> {
        Err(Error::corrupt("test", l.election.as_str(), "junk"))
    }
    async fn leader(&self, e: &ElectionName) -> elect_core::Result<Option<LeaderInfo>> {
        Err(Error::corrupt("test", e.as_str(), "junk"))
    }
}

#[tokio::test(start_paused = true)]
async fn default_policy_aborts_on_persistent_errors_and_retry_all_does_not() {
    let elector = start(Corrupt, "a");
    match elector.leading().await {
        Err(Error::CorruptRecord { key, .. }) => assert_eq!(key, "e"),
        other => panic!("expected the corrupt record error, got {other:?}"),
    }

    let retrying = Elector::builder(Corrupt, election("e"))
        .ttl(TTL)
        .on_error(ErrorPolicy::RetryAll)
        .start()
        .unwrap();
    let mut events = retrying.events();
    sleep(TTL * 2).await;
    assert!(matches!(retrying.leadership(), Leadership::Follower { .. }));
    assert!(matches!(
        events.recv().await.unwrap(),
        Event::Error(Error::CorruptRecord { .. })
    ));

    let custom = Elector::builder(Corrupt, election("e"))
        .ttl(TTL)
        .on_error(ErrorPolicy::custom(|e| {
            if matches!(e, Error::CorruptRecord { .. }) {
                OnError::Abort
            } else {
                OnError::Retry
            }
        }))
        .start()
        .unwrap();
    assert!(custom.leading().await.is_err());
}

#[tokio::test(start_paused = true)]
async fn an_unanswered_release_keeps_the_resigner_out_for_a_full_ttl() {
    let memory = MemoryStore::new();
    let net = FaultyStore::new(memory.clone());
    let elector = Elector::builder(net.clone(), election("e"))
        .candidate(id("a"))
        .ttl(TTL)
        .resign_pause(Duration::from_millis(10))
        .start()
        .unwrap();
    let guard = lead(&elector).await;
    net.set(Faults::LoseReplies);
    let resigned = Instant::now();
    assert!(
        elector.resign().await.is_err(),
        "the release's reply was lost"
    );
    assert!(!guard.is_leading());
    net.set(Faults::None);
    let again = lead(&elector).await;
    assert!(
        Instant::now() >= resigned + TTL,
        "re-campaigned {:?} after an unanswered release",
        Instant::now() - resigned
    );
    assert!(again.term() > guard.term(), "a new term after the sit-out");
}

/// Hides the change feed of the store it wraps.
#[derive(Debug, Clone)]
struct NoFeed(MemoryStore);

#[async_trait]
impl LeaseStore for NoFeed {
    async fn try_acquire(
        &self,
        e: &ElectionName,
        c: &CandidateId,
        t: Ttl,
    ) -> elect_core::Result<Acquire> {
        self.0.try_acquire(e, c, t).await
    }
    async fn renew(&self, l: &Lease) -> elect_core::Result<Renewal> {
        self.0.renew(l).await
    }
    async fn release(&self, l: &Lease) -> elect_core::Result<Release> {
        self.0.release(l).await
    }
    async fn leader(&self, e: &ElectionName) -> elect_core::Result<Option<LeaderInfo>> {
        self.0.leader(e).await
    }
    async fn subscribe(&self, _: &ElectionName) -> elect_core::Result<Option<ChangeFeed>> {
        Ok(None)
    }
}

#[tokio::test(start_paused = true)]
async fn followers_wake_on_the_feed_or_else_at_the_reported_expiry() {
    for (feed, name) in [(true, "with feed"), (false, "without feed")] {
        let memory = MemoryStore::new();
        let store: Arc<dyn LeaseStore> = if feed {
            Arc::new(memory.clone())
        } else {
            Arc::new(NoFeed(memory.clone()))
        };
        let a = Elector::builder_dyn(store.clone(), election("e"))
            .candidate(id("a"))
            .ttl(TTL)
            .start()
            .unwrap();
        lead(&a).await;
        let b = Elector::builder_dyn(store.clone(), election("e"))
            .candidate(id("b"))
            .ttl(TTL)
            .start()
            .unwrap();
        // b asked at once and was told the lease has a full TTL left.
        sleep(TTL / 2).await;
        let resigned = Instant::now();
        a.shutdown().await.unwrap();
        lead(&b).await;
        let took = Instant::now() - resigned;
        if feed {
            assert!(took < Duration::from_millis(1), "{name}: took {took:?}");
        } else {
            // It sleeps until the expiry it was told of (plus at most 5 ms of jitter), not
            // until the renewed lease would expire, and not in a fast poll.
            assert!(
                took >= TTL / 2 && took <= TTL / 2 + Duration::from_millis(6),
                "{name}: took {took:?}"
            );
        }
    }
}

#[tokio::test(start_paused = true)]
async fn always_leader_leads_at_once_and_resign_starts_a_new_term() {
    let elector = Elector::always_leader(election("solo")).unwrap();
    let first = elector.leading().await.unwrap();
    assert_eq!(first.term(), Term(1));
    sleep(Duration::from_secs(7 * 24 * 3600)).await;
    assert!(first.is_leading(), "still leading a week later");
    elector.resign().await.unwrap();
    assert!(!first.is_leading());
    let second = elector.leading().await.unwrap();
    assert_eq!(second.term(), Term(2));
    elector.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn stopped_electors_say_so() {
    let elector = start(MemoryStore::new(), "a");
    let mut state = elector.watch();
    lead(&elector).await;
    let handle = elector.election().clone();
    elector.shutdown().await.unwrap();
    assert!(matches!(
        &*state.borrow_and_update(),
        Leadership::Stopped(None)
    ));
    assert_eq!(handle.as_str(), "e");
}

#[tokio::test(start_paused = true)]
async fn resign_and_shutdown_as_follower_are_harmless() {
    let memory = MemoryStore::new();
    let a = start(memory.clone(), "a");
    lead(&a).await;
    let b = start(memory.clone(), "b");
    sleep(Duration::from_millis(10)).await;
    b.resign().await.unwrap();
    b.shutdown().await.unwrap();
    assert!(
        a.is_leader(),
        "a follower's resign or shutdown does not touch the leader"
    );
}

#[tokio::test]
async fn bad_configuration_is_a_typed_error() {
    let store = MemoryStore::new();
    let cases: Vec<(elect_core::ElectorBuilder, &str)> = vec![
        (
            Elector::builder(store.clone(), election("e")).ttl(Duration::ZERO),
            "ttl",
        ),
        (
            Elector::builder(store.clone(), election("e")).clock_drift(0.5),
            "drift",
        ),
        (
            Elector::builder(store.clone(), election("e")).clock_drift(f64::NAN),
            "nan",
        ),
        (
            Elector::builder(store.clone(), election("e"))
                .ttl(Duration::from_secs(1))
                .safety_margin(Duration::from_millis(100)),
            "margin",
        ),
        (
            Elector::builder(store.clone(), election("e")).request_timeout(Duration::ZERO),
            "timeout",
        ),
    ];
    for (builder, what) in cases {
        match builder.start() {
            Err(Error::InvalidTtl { .. } | Error::InvalidConfig { .. }) => {}
            other => panic!("{what}: {other:?}"),
        }
    }
}

#[test]
fn starting_outside_a_runtime_is_an_error_not_a_panic() {
    let err = Elector::builder(MemoryStore::new(), election("e"))
        .start()
        .unwrap_err();
    assert!(err.to_string().contains("tokio runtime"), "{err}");
}
