//! Elector behaviour on paused time, with faults injected between the elector and the store.

use std::sync::Arc;
use std::time::Duration;

use elect_core::conformance::{Faults, FaultyStore};
use elect_core::{
    async_trait, Acquire, CandidateId, ChangeFeed, Claim, ElectionName, Elector, Error,
    ErrorPolicy, Event, LeaderInfo, Leadership, Lease, LeaseStore, MemoryStore, OnError, Release,
    Renewal, StepDown, Term,
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
    async fn try_acquire(&self, claim: &Claim) -> elect_core::Result<Acquire> {
        Err(Error::corrupt("test", claim.election.as_str(), "junk"))
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

/// A store that is not set up (no table, no rights).
#[derive(Debug)]
struct NotSetUp;

#[async_trait]
impl LeaseStore for NotSetUp {
    async fn try_acquire(&self, _: &Claim) -> elect_core::Result<Acquire> {
        Err(not_set_up())
    }
    async fn renew(&self, _: &Lease) -> elect_core::Result<Renewal> {
        Err(not_set_up())
    }
    async fn release(&self, _: &Lease) -> elect_core::Result<Release> {
        Err(not_set_up())
    }
    async fn leader(&self, _: &ElectionName) -> elect_core::Result<Option<LeaderInfo>> {
        Err(not_set_up())
    }
}

fn not_set_up() -> Error {
    Error::NotSetUp {
        store: "test",
        message: "no table".into(),
    }
}

#[tokio::test(start_paused = true)]
async fn default_policy_aborts_when_the_store_is_not_set_up_and_retry_all_does_not() {
    let elector = start(NotSetUp, "a");
    match elector.leading().await {
        Err(Error::NotSetUp { .. }) => {}
        other => panic!("expected the not-set-up error, got {other:?}"),
    }

    let retrying = Elector::builder(NotSetUp, election("e"))
        .ttl(TTL)
        .on_error(ErrorPolicy::RetryAll)
        .start()
        .unwrap();
    let mut events = retrying.events();
    sleep(TTL * 2).await;
    assert!(matches!(retrying.leadership(), Leadership::Follower { .. }));
    assert!(matches!(
        events.recv().await.unwrap(),
        Event::Error(Error::NotSetUp { .. })
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

/// A store whose records are junk until `until`, then a memory store's.
#[derive(Debug, Clone)]
struct JunkUntil {
    until: Instant,
    inner: MemoryStore,
}

impl JunkUntil {
    fn junk(&self, key: &str) -> Option<Error> {
        (Instant::now() < self.until).then(|| Error::corrupt("test", key, "junk"))
    }
}

#[async_trait]
impl LeaseStore for JunkUntil {
    async fn try_acquire(&self, claim: &Claim) -> elect_core::Result<Acquire> {
        match self.junk(claim.election.as_str()) {
            Some(e) => Err(e),
            None => self.inner.try_acquire(claim).await,
        }
    }
    async fn renew(&self, l: &Lease) -> elect_core::Result<Renewal> {
        match self.junk(l.election.as_str()) {
            Some(e) => Err(e),
            None => self.inner.renew(l).await,
        }
    }
    async fn release(&self, l: &Lease) -> elect_core::Result<Release> {
        match self.junk(l.election.as_str()) {
            Some(e) => Err(e),
            None => self.inner.release(l).await,
        }
    }
    async fn leader(&self, e: &ElectionName) -> elect_core::Result<Option<LeaderInfo>> {
        match self.junk(e.as_str()) {
            Some(err) => Err(err),
            None => self.inner.leader(e).await,
        }
    }
}

/// Issue 14, item 16: one junk write used to stop every candidate for good. The default policy
/// now retries a record it cannot read (reporting it), grants nothing over it, and leads once
/// the junk is gone.
#[tokio::test(start_paused = true)]
async fn a_corrupt_record_is_retried_with_backoff_and_reported_not_fatal() {
    let junk_for = TTL * 3;
    let store = JunkUntil {
        until: Instant::now() + junk_for,
        inner: MemoryStore::new(),
    };
    let builder = Elector::builder(store.clone(), election("e"))
        .candidate(id("a"))
        .ttl(TTL);
    let mut events = builder.events();
    let elector = builder.start().unwrap();
    sleep(junk_for - Duration::from_millis(1)).await;
    assert!(!elector.is_leader(), "nothing is granted over junk");
    let errors = drain(&mut events, Duration::from_millis(1))
        .await
        .into_iter()
        .filter(|e| matches!(e, Event::Error(Error::CorruptRecord { .. })))
        .count();
    // Backoff with equal jitter, 25 ms · 2ⁿ capped at TTL/4 (each wait between half and all
    // of it): in 9 s at TTL 3 s, between 16 and 29 attempts — reports, not a busy loop.
    assert!(
        (10..=30).contains(&errors),
        "{errors} reports of the corrupt record in {junk_for:?}"
    );
    let guard = lead(&elector).await;
    assert!(
        Instant::now() <= store.until + TTL / 4 + Duration::from_millis(10),
        "led {:?} after the junk was gone",
        Instant::now() - store.until
    );
    assert!(guard.is_leading());
}

/// Issue 14, item 9: after a leadership ends the elector makes a new claim, so it never re-enters
/// the lease it gave up — here a renewal landed but its reply was lost until the deadline passed
/// — and leads again only with a new term, once that lease has expired.
#[tokio::test(start_paused = true)]
async fn a_leadership_that_ended_is_never_re_entered() {
    let memory = MemoryStore::new();
    let net = FaultyStore::new(memory.clone());
    let elector = start(net.clone(), "a");
    let first = lead(&elector).await;
    net.set(Faults::LoseReplies);
    first.lost().await;
    assert_eq!(first.reason(), Some(StepDown::DeadlinePassed));
    let stepped_down = Instant::now();
    // The last renewal landed: the lease is live at the store, under the old claim.
    let at_store = memory.leader(&election("e")).await.unwrap().expect("live");
    assert_eq!(at_store.term, first.term());
    net.set(Faults::None);
    let second = lead(&elector).await;
    assert!(
        second.term() > first.term(),
        "term {} after {}",
        second.term(),
        first.term()
    );
    assert!(
        Instant::now() >= stepped_down + at_store.remaining,
        "re-entered the old lease {:?} before it expired",
        stepped_down + at_store.remaining - Instant::now()
    );
    assert_ne!(second.lease().nonce, first.lease().nonce);
}

/// Issue 14, item 3: two electors with one candidate id are two holders.
#[tokio::test(start_paused = true)]
async fn two_electors_with_one_id_never_both_lead() {
    let memory = MemoryStore::new();
    let a = start(memory.clone(), "same");
    let first = lead(&a).await;
    let b = start(memory.clone(), "same");
    for _ in 0..30 {
        sleep(TTL / 10).await;
        assert!(
            a.is_leader() && !b.is_leader(),
            "one leads, the twin follows"
        );
    }
    match b.leadership() {
        Leadership::Follower { leader: Some(info) } => {
            assert_eq!((info.holder.as_str(), info.term), ("same", first.term()))
        }
        other => panic!("the twin should know who leads: {other:?}"),
    }
    a.shutdown().await.unwrap();
    let second = lead(&b).await;
    assert!(second.term() > first.term());
}

#[tokio::test(start_paused = true)]
async fn the_guard_says_why_leadership_ended() {
    let memory = MemoryStore::new();
    let elector = start(memory.clone(), "a");
    let guard = lead(&elector).await;
    assert_eq!(guard.reason(), None);
    elector.resign().await.unwrap();
    assert_eq!(guard.reason(), Some(StepDown::Resigned));

    let net = FaultyStore::new(memory.clone());
    let b = start(net.clone(), "b");
    let guard = lead(&b).await;
    let mut deadlines = guard.deadline_watch();
    let before = *deadlines.borrow_and_update();
    deadlines.changed().await.unwrap();
    assert!(*deadlines.borrow() > before, "a renewal moves the deadline");
    // Another candidate takes the lease behind b's back: its next renewal is refused.
    assert_eq!(
        memory.release(guard.lease()).await.unwrap(),
        Release::Released
    );
    let _ = start(memory.clone(), "c");
    guard.lost().await;
    assert_eq!(guard.reason(), Some(StepDown::Lost));
}

/// A store that panics in the middle of a request.
#[derive(Debug, Clone)]
struct Panics {
    inner: MemoryStore,
    on_renew: bool,
}

#[async_trait]
impl LeaseStore for Panics {
    async fn try_acquire(&self, claim: &Claim) -> elect_core::Result<Acquire> {
        if !self.on_renew {
            panic!("bug in try_acquire");
        }
        self.inner.try_acquire(claim).await
    }
    async fn renew(&self, _: &Lease) -> elect_core::Result<Renewal> {
        panic!("bug in renew");
    }
    async fn release(&self, l: &Lease) -> elect_core::Result<Release> {
        self.inner.release(l).await
    }
    async fn leader(&self, e: &ElectionName) -> elect_core::Result<Option<LeaderInfo>> {
        self.inner.leader(e).await
    }
}

/// Issue 14, item 11: no task may panic unseen.
#[tokio::test(start_paused = true)]
async fn a_panic_in_the_campaign_stops_the_elector_visibly() {
    let follower = start(
        Panics {
            inner: MemoryStore::new(),
            on_renew: false,
        },
        "a",
    );
    match timeout(TTL, follower.leading()).await {
        Ok(Err(Error::Internal { message })) => {
            assert!(message.contains("bug in try_acquire"), "{message}")
        }
        other => panic!("expected the panic as an error, got {other:?}"),
    }
    assert!(matches!(
        follower.leadership(),
        Leadership::Stopped(Some(_))
    ));
    assert!(follower.resign().await.is_err(), "resign says it stopped");

    let leader = start(
        Panics {
            inner: MemoryStore::new(),
            on_renew: true,
        },
        "b",
    );
    let mut events = leader.events();
    let guard = lead(&leader).await;
    let started = Instant::now();
    timeout(TTL, guard.lost())
        .await
        .expect("the guard ends with the task that drove it");
    assert!(Instant::now() - started <= TTL / 3 + Duration::from_millis(1));
    assert_eq!(guard.reason(), Some(StepDown::Aborted));
    assert!(matches!(
        leader.leading().await,
        Err(Error::Internal { .. })
    ));
    // Every Elected has its SteppedDown, even when the campaign died.
    let seen = drain(&mut events, Duration::from_millis(10)).await;
    assert!(
        seen.iter().any(|e| matches!(
            e,
            Event::SteppedDown { term, reason: StepDown::Aborted, .. } if *term == guard.term()
        )),
        "{seen:?}"
    );
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
    async fn try_acquire(&self, claim: &Claim) -> elect_core::Result<Acquire> {
        self.0.try_acquire(claim).await
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

/// A memory store whose change feed (a notice on every grant and release) can be ended (its
/// connection killed, as a server restart or a failover does) and whose next subscribes can be
/// refused.
#[derive(Debug, Clone)]
struct BreakableFeed {
    inner: MemoryStore,
    feeds: Arc<elect_core::backend::FeedRegistry<ElectionName>>,
    refuse: Arc<std::sync::atomic::AtomicU32>,
}

impl BreakableFeed {
    fn new() -> Self {
        BreakableFeed {
            inner: MemoryStore::new(),
            feeds: Arc::new(elect_core::backend::FeedRegistry::new()),
            refuse: Arc::default(),
        }
    }

    fn refuse_subscribes(&self, n: u32) {
        self.refuse.store(n, std::sync::atomic::Ordering::SeqCst);
    }
}

#[async_trait]
impl LeaseStore for BreakableFeed {
    async fn try_acquire(&self, claim: &Claim) -> elect_core::Result<Acquire> {
        let answer = self.inner.try_acquire(claim).await;
        if matches!(answer, Ok(Acquire::Granted(_))) {
            self.feeds.notify(&claim.election);
        }
        answer
    }
    async fn renew(&self, lease: &Lease) -> elect_core::Result<Renewal> {
        self.inner.renew(lease).await
    }
    async fn release(&self, lease: &Lease) -> elect_core::Result<Release> {
        let released = self.inner.release(lease).await;
        self.feeds.notify(&lease.election);
        released
    }
    async fn leader(&self, e: &ElectionName) -> elect_core::Result<Option<LeaderInfo>> {
        self.inner.leader(e).await
    }
    async fn subscribe(&self, e: &ElectionName) -> elect_core::Result<Option<ChangeFeed>> {
        use std::sync::atomic::Ordering;
        let refused = self
            .refuse
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if refused {
            return Err(Error::Unavailable {
                store: "test",
                operation: "subscribe",
                message: "subscriber connection refused".into(),
                source: None,
            });
        }
        Ok(Some(self.feeds.subscribe(e)))
    }
}

/// A follower asleep on a long lease whose feed ended (its connection killed) or whose
/// subscribes failed still wakes on the next hand-over: it subscribes again with a backoff and
/// reads the lease, instead of sleeping blind until the expiry. An observer polling once a
/// lease does the same. (Before: a killed subscriber
/// connection on a shared Redis made a 10 s follower miss a resignation, CI 2026-12-03.)
#[tokio::test(start_paused = true)]
async fn a_follower_without_its_feed_subscribes_again_and_wakes_on_the_next_hand_over() {
    let long = Duration::from_secs(60);
    let start = |store: &BreakableFeed, who: &str| {
        Elector::builder(store.clone(), election("e"))
            .candidate(id(who))
            .ttl(long)
            .start()
            .unwrap()
    };
    for (case, refused) in [("feed ended", 0), ("subscribes refused", 5)] {
        let store = BreakableFeed::new();
        let a = start(&store, "a");
        lead(&a).await;
        store.refuse_subscribes(refused);
        let observer =
            elect_core::Observer::with_interval(Arc::new(store.clone()), election("e"), long)
                .unwrap();
        let mut seen = observer.watch();
        let b = start(&store, "b");
        let mut watch = b.watch();
        timeout(
            Duration::from_secs(1),
            watch.wait_for(|s| matches!(s, Leadership::Follower { leader: Some(_) })),
        )
        .await
        .expect("b follows")
        .unwrap();
        // The subscriber connection dies under the sleeping follower.
        store.feeds.end_all();
        sleep(Duration::from_secs(5)).await;
        let resigned = Instant::now();
        a.resign().await.unwrap();
        let guard = timeout(Duration::from_secs(1), b.leading())
            .await
            .unwrap_or_else(|_| panic!("{case}: b slept through the resignation"))
            .unwrap();
        let took = Instant::now() - resigned;
        assert!(took < Duration::from_millis(1), "{case}: took {took:?}");
        assert!(guard.is_leading());
        timeout(
            Duration::from_secs(1),
            seen.wait_for(|i| i.as_ref().is_some_and(|i| i.holder == id("b"))),
        )
        .await
        .unwrap_or_else(|_| panic!("{case}: the observer slept through the hand-over"))
        .unwrap();
        b.shutdown().await.unwrap();
        a.shutdown().await.unwrap();
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
        (
            Elector::builder(store.clone(), election("e")).request_timeout(Duration::MAX),
            "huge timeout",
        ),
        (
            // Issue 14, item 11: this was accepted, and resign() then panicked the campaign.
            Elector::builder(store.clone(), election("e")).resign_pause(Duration::MAX),
            "huge resign pause",
        ),
        (
            Elector::builder(store.clone(), election("e")).safety_margin(Duration::MAX),
            "huge margin",
        ),
        (
            Elector::builder(store.clone(), election("e")).ttl(Duration::MAX),
            "huge ttl",
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

/// Issue 14, item 12: an elector dropped at the end of `main` (a multi-thread runtime that is
/// then shut down) used to leave its lease for the whole TTL. The drop now waits for the
/// release.
#[test]
fn dropping_a_leader_at_the_end_of_main_releases_its_lease() {
    let memory = MemoryStore::new();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let elector = Elector::builder(memory.clone(), election("e"))
            .candidate(id("main"))
            .ttl(Duration::from_secs(20))
            .start()
            .unwrap();
        elector.leading().await.unwrap();
        // `elector` is dropped here, at the end of "main".
    });
    drop(runtime);
    let check = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let leader = check.block_on(memory.leader(&election("e"))).unwrap();
    assert_eq!(leader, None, "the dropped leader released its lease");
}
