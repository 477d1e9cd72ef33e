//! Elector-level checks: several candidates campaigning through the store under test, each
//! behind its own [`FaultyStore`], checked from their events.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{sleep, Instant};

use super::harness::{Harness, StoreHarness};
use super::{fresh_election, id, Faults, FaultyStore, Recorder, Settings};
use crate::elector::{Elector, Leadership};
use crate::name::{CandidateId, ElectionName};
use crate::observer::Observer;
use crate::rand::Rng;
use crate::store::LeaseStore;

type Store = Arc<dyn LeaseStore>;

/// One candidate: its elector, and, on a store, its view of the network.
pub(super) struct Candidate {
    pub(super) id: CandidateId,
    net: Option<FaultyStore<Store>>,
    pub(super) elector: Option<Elector>,
}

impl Candidate {
    pub(super) fn elector(&self) -> &Elector {
        self.elector.as_ref().expect("candidate still running")
    }

    pub(super) fn is_leader(&self) -> bool {
        self.elector.as_ref().is_some_and(Elector::is_leader)
    }

    /// The candidate's network (store harnesses only).
    fn net(&self) -> &FaultyStore<Store> {
        self.net.as_ref().expect("a store check on a store harness")
    }

    async fn shutdown(&mut self) {
        if let Some(elector) = self.elector.take() {
            // A candidate cut off from the coordinator cannot hand over; not what is checked.
            let _ = elector.shutdown().await;
        }
    }
}

/// The candidates of one check, and the record of their leadership.
pub(super) struct Group {
    harness: Arc<dyn Harness>,
    store: Option<Arc<StoreHarness>>,
    pub(super) recorder: Recorder,
    pub(super) candidates: Vec<Candidate>,
}

impl Group {
    /// `n` candidates on any harness.
    pub(super) fn on(
        harness: Arc<dyn Harness>,
        check: &str,
        n: usize,
        resign_pause: Duration,
    ) -> Group {
        let recorder = Recorder::new();
        let candidates = harness
            .start(check, n, resign_pause, &recorder)
            .into_iter()
            .map(|elector| Candidate {
                id: elector.candidate().clone(),
                net: None,
                elector: Some(elector),
            })
            .collect();
        Group {
            harness,
            store: None,
            recorder,
            candidates,
        }
    }

    fn start(store: &Store, check: &str, n: usize, settings: &Settings) -> Group {
        Self::start_with(store, check, n, settings, settings.ttl_duration())
    }

    /// `n` candidates on a store, each behind its own [`FaultyStore`].
    fn start_with(
        store: &Store,
        check: &str,
        n: usize,
        settings: &Settings,
        resign_pause: Duration,
    ) -> Group {
        let harness = Arc::new(StoreHarness::new(store.clone(), settings.ttl));
        let mut group = Group::on(harness.clone(), check, n, resign_pause);
        for (k, c) in group.candidates.iter_mut().enumerate() {
            c.net = Some(harness.net(k));
        }
        group.store = Some(harness);
        group
    }

    /// Cuts candidate `k` off (a crash, as the others see it), or heals it.
    pub(super) fn cut(&self, k: usize, cut: bool) {
        self.harness.cut(k, cut);
    }

    /// Waits for a leader elected after `mark` (other than `except`).
    pub(super) async fn leader_after(
        &self,
        after: usize,
        except: Option<&CandidateId>,
        within: Duration,
        what: &str,
    ) -> usize {
        let interval = self
            .recorder
            .elected_since(after, except, within)
            .await
            .unwrap_or_else(|| panic!("{what}: no candidate led within {within:?}"));
        self.index(&interval.candidate)
    }

    fn index(&self, who: &CandidateId) -> usize {
        self.candidates
            .iter()
            .position(|c| &c.id == who)
            .expect("recorded candidates belong to the group")
    }

    pub(super) fn leaders_now(&self) -> usize {
        self.candidates.iter().filter(|c| c.is_leader()).count()
    }

    /// Heals everyone, shuts everyone down, lets the last events arrive, and checks the
    /// invariants.
    pub(super) async fn finish(mut self) -> Recorder {
        for k in 0..self.candidates.len() {
            self.harness.cut(k, false);
        }
        for c in &mut self.candidates {
            c.shutdown().await;
        }
        sleep(Duration::from_millis(20)).await;
        self.recorder.check();
        self.recorder
    }
}

/// Two electors started with the same candidate id (two hosts given the same `--id`): never
/// both leaders, one leads, and after it crashes or shuts down the other takes over in a higher
/// term.
pub async fn electors_sharing_an_id_never_both_lead(store: Store, settings: Settings) {
    let ttl = settings.ttl_duration();
    let election = fresh_election("electors_sharing_an_id_never_both_lead");
    let recorder = Recorder::new();
    let twins: Vec<(FaultyStore<Store>, Elector)> = (0..2)
        .map(|k| {
            let net = FaultyStore::new(store.clone());
            let builder = Elector::builder(net.clone(), election.clone())
                .candidate(id("twin"))
                .ttl(ttl);
            // Recorded under distinct names: they are two processes.
            recorder.track(id(&format!("twin.{k}")), builder.events());
            (net, builder.start().expect("a valid elector configuration"))
        })
        .collect();
    let leaders = || twins.iter().filter(|(_, e)| e.is_leader()).count();
    recorder
        .elected_since(0, None, ttl * 3)
        .await
        .expect("one of the twins leads");
    for _ in 0..20 {
        assert_eq!(
            leaders(),
            1,
            "exactly one of two electors with one id leads"
        );
        sleep(ttl / 10).await;
    }
    // The leader crashes (cut off): the twin takes over after the lease expires.
    let first = twins
        .iter()
        .position(|(_, e)| e.is_leader())
        .expect("one leads");
    let mark = recorder.mark();
    twins[first].0.set(Faults::Blackhole);
    let next = recorder
        .elected_since(mark, None, ttl + settings.failover_bound)
        .await
        .expect("the twin leads after the leader's lease expired");
    assert_eq!(
        next.candidate,
        id(&format!("twin.{}", 1 - first)),
        "the crashed twin is cut off; the other must lead"
    );
    twins[first].0.set(Faults::None);
    sleep(ttl).await;
    assert_eq!(leaders(), 1, "after the crashed twin came back");
    for (_, elector) in twins {
        let _ = elector.shutdown().await;
    }
    sleep(Duration::from_millis(20)).await;
    recorder.check();
}

/// Shutting down releases the lease (another leads within the handover bound) and stops the
/// elector for good; dropping the handle releases too.
pub async fn shutdown_releases_and_stops(store: Store, settings: Settings) {
    let ttl = settings.ttl_duration();
    let mut group = Group::start(&store, "shutdown_releases_and_stops", 2, &settings);
    let first = group
        .leader_after(0, None, ttl * 3, "before shutdown")
        .await;
    sleep(ttl / 3).await;
    let mut state = group.candidates[first].elector().watch();
    let elector = group.candidates[first].elector.take().expect("running");
    let stop = group.recorder.mark();
    elector
        .shutdown()
        .await
        .expect("shutdown releases the lease");
    assert!(
        matches!(&*state.borrow_and_update(), Leadership::Stopped(None)),
        "after shutdown the state is Stopped"
    );
    let second = group
        .leader_after(
            stop,
            Some(&group.candidates[first].id),
            settings.handover_bound,
            "after the leader shut down",
        )
        .await;
    // Dropping the handle releases in the background.
    let lease_holder = group.candidates[second].id.clone();
    drop(group.candidates[second].elector.take());
    let dropped = Instant::now();
    loop {
        match store
            .leader(&group.store.as_ref().expect("a store group").election())
            .await
        {
            Ok(Some(info)) if info.holder == lease_holder => {}
            Ok(_) => break,
            Err(e) => panic!("leader() failed: {e}"),
        }
        assert!(
            dropped.elapsed() < settings.handover_bound,
            "a dropped elector did not release within {:?}",
            settings.handover_bound
        );
        sleep(Duration::from_millis(5)).await;
    }
    group.finish().await;
}

/// Five candidates under random delays, failures, lost replies, crashes, partitions and
/// resigns: no two ever believe they lead at the same instant, and terms of successive leaders
/// strictly increase.
pub async fn believed_leadership_never_overlaps(store: Store, settings: Settings) {
    let ttl = settings.ttl_duration();
    let seed = Rng::from_entropy().next_u64();
    let mut rng = Rng::seeded(seed);
    eprintln!("believed_leadership_never_overlaps: seed {seed}");
    let group = Group::start_with(
        &store,
        "believed_leadership_never_overlaps",
        5,
        &settings,
        ttl / 2,
    );
    let noisy = |k: usize| Faults::Random {
        seed: seed.wrapping_add(k as u64),
        fail: 0.05,
        lose_reply: 0.1,
        max_delay: ttl / 4,
    };
    for (k, c) in group.candidates.iter().enumerate() {
        c.net().set(noisy(k));
    }
    let end = Instant::now() + settings.chaos_duration;
    let over = Arc::new(std::sync::Mutex::new(false));
    let mut actions = 0;
    while Instant::now() < end {
        sleep(ttl / 4 + rng.duration_up_to(ttl * 3 / 4)).await;
        let k = (rng.next_u64() % 5) as usize;
        let target = if rng.unit() < 0.5 {
            group
                .candidates
                .iter()
                .position(Candidate::is_leader)
                .unwrap_or(k)
        } else {
            k
        };
        let candidate = &group.candidates[target];
        match rng.next_u64() % 3 {
            0 => {
                let _ = candidate.elector().resign().await;
            }
            1 | 2 => {
                let fault = if rng.unit() < 0.5 {
                    Faults::Blackhole
                } else {
                    Faults::FailAll
                };
                candidate.net().set(fault);
                let heal = ttl / 2 + rng.duration_up_to(ttl * 2);
                let (net, back, over) = (candidate.net().clone(), noisy(target), over.clone());
                tokio::spawn(async move {
                    sleep(heal).await;
                    // Once the run is over every network stays healed (checked and set under
                    // the lock the final heal holds).
                    let over = over.lock().unwrap_or_else(|p| p.into_inner());
                    if !*over {
                        net.set(back);
                    }
                });
            }
            _ => unreachable!(),
        }
        actions += 1;
    }
    {
        let mut over = over.lock().unwrap_or_else(|p| p.into_inner());
        *over = true;
        for c in &group.candidates {
            c.net().set(Faults::None);
        }
    }
    let healed = Instant::now();
    sleep(ttl * 3).await;
    assert!(
        group.recorder.current().is_some(),
        "seed {seed}: nobody leads {:?} after every fault healed; candidates: {:#?}; record: {:#?}",
        healed.elapsed(),
        group
            .candidates
            .iter()
            .map(|c| (c.id.clone(), c.elector().leadership(), c.net().requests()))
            .collect::<Vec<_>>(),
        group
            .recorder
            .intervals()
            .iter()
            .rev()
            .take(3)
            .collect::<Vec<_>>()
    );
    let recorder = group.finish().await;
    let intervals = recorder.intervals().len();
    assert!(
        intervals >= 3,
        "seed {seed}: only {intervals} leaderships in {actions} faults: the run exercised nothing"
    );
}

/// The store starts failing every request while replies are slow: the leader's `lost` signal
/// fires before its lease could have expired at the store (the last renewal that reached the
/// store, plus the TTL).
pub async fn lost_fires_before_store_expiry(store: Store, settings: Settings) {
    let ttl = settings.ttl_duration();
    let group = Group::start(&store, "lost_fires_before_store_expiry", 1, &settings);
    let candidate = &group.candidates[0];
    // Slow replies: a deadline measured from the reply instead of the send would overshoot.
    candidate.net().set(Faults::Delay {
        request: Duration::ZERO,
        reply: ttl / 5,
    });
    let guard = tokio::time::timeout(ttl * 3, candidate.elector().leading())
        .await
        .expect("a lone candidate leads")
        .expect("the elector runs");
    sleep(ttl).await;
    assert!(
        guard.is_leading(),
        "the leader lost its lease while replies were only slow"
    );
    candidate.net().set(Faults::FailAll);
    let failed = Instant::now();
    tokio::time::timeout(ttl * 2, guard.lost())
        .await
        .expect("lost must fire within two TTLs of the store failing");
    let lost_at = Instant::now();
    let forwarded = candidate
        .net()
        .last_renew_forwarded()
        .expect("renewals reached the store");
    assert!(
        lost_at < forwarded + ttl,
        "lost fired {:?} after the store could have expired the lease",
        lost_at - (forwarded + ttl)
    );
    assert!(!guard.is_leading(), "is_leading() after lost fired");
    assert!(lost_at > failed, "lost fired before the failure");
    group.finish().await;
}

/// Idle followers sleep until the lease they were told about expires, instead of polling:
/// about one request per TTL each.
pub async fn idle_followers_sleep_until_expiry(store: Store, settings: Settings) {
    let ttl = settings.ttl_duration();
    let group = Group::start(&store, "idle_followers_sleep_until_expiry", 4, &settings);
    let leader = group
        .leader_after(0, None, ttl * 3, "before measuring")
        .await;
    sleep(ttl).await;
    let before: Vec<u64> = group
        .candidates
        .iter()
        .map(|c| c.net().requests())
        .collect();
    let ttls = 6;
    sleep(ttl * ttls).await;
    for (k, c) in group.candidates.iter().enumerate() {
        let sent = c.net().requests() - before[k];
        if k == leader {
            assert!(
                (ttls as u64 * 2..=ttls as u64 * 4).contains(&sent),
                "the leader sent {sent} renewals in {ttls} TTLs (expected about 3 per TTL)"
            );
        } else {
            assert!(
                sent <= ttls as u64 * 2,
                "follower {k} sent {sent} requests in {ttls} TTLs: it polls instead of sleeping until expiry"
            );
        }
    }
    group.finish().await;
}

/// An [`Observer`] reports the leader without campaigning, and follows a handover.
pub async fn observer_follows_the_leader(store: Store, settings: Settings) {
    let ttl = settings.ttl_duration();
    let election = fresh_election("observer_follows_the_leader");
    let observer =
        Observer::with_interval(store.clone(), election.clone(), ttl / 2).expect("valid observer");
    let mut watch = observer.watch();
    let a = Elector::builder(store.clone(), election.clone())
        .candidate(id("a"))
        .ttl(ttl)
        .start()
        .expect("valid elector");
    let guard = a.leading().await.expect("a leads");
    let seen = |watch: &mut tokio::sync::watch::Receiver<_>, who: &'static str, term| {
        let mut watch = watch.clone();
        async move {
            tokio::time::timeout(
                ttl * 2,
                watch.wait_for(|i: &Option<crate::LeaderInfo>| {
                    i.as_ref()
                        .is_some_and(|i| i.holder.as_str() == who && i.term == term)
                }),
            )
            .await
            .unwrap_or_else(|_| panic!("the observer did not report {who} in term {term}"))
            .expect("observer running");
        }
    };
    seen(&mut watch, "a", guard.term()).await;
    let b = Elector::builder(store.clone(), election.clone())
        .candidate(id("b"))
        .ttl(ttl)
        .start()
        .expect("valid elector");
    a.shutdown().await.expect("a releases");
    let b_guard = tokio::time::timeout(ttl * 2, b.leading())
        .await
        .expect("b leads after a shut down")
        .expect("b runs");
    seen(&mut watch, "b", b_guard.term()).await;
    assert_eq!(
        observer.current().map(|i| i.holder),
        Some(id("b")),
        "Observer::current agrees with its watch"
    );
    b.shutdown().await.expect("b releases");
}

/// The lease of the checks that only a change feed can pass quickly: a follower told of it
/// sleeps until its expiry, an observer polls this rarely.
const LONG_TTL: Duration = Duration::from_secs(10);

/// Candidate `who` on `election` with a [`LONG_TTL`] lease.
fn long_lease_elector(store: &Store, election: &ElectionName, who: &str) -> Elector {
    Elector::builder_dyn(store.clone(), election.clone())
        .candidate(id(who))
        .ttl(LONG_TTL)
        .start()
        .expect("a valid elector configuration")
}

/// A follower asleep until the expiry of a long lease (10 s) leads within the handover bound
/// of the leader's resignation when the store has a change feed: the feed, not the lease's
/// expiry, wakes it. (Without a feed there is nothing to check: it sleeps until the expiry.)
pub async fn a_resign_wakes_a_follower_sleeping_a_long_lease(store: Store, settings: Settings) {
    if !settings.change_feed {
        return;
    }
    let ttl = LONG_TTL;
    let election = fresh_election("a_resign_wakes_a_follower_sleeping_a_long_lease");
    let start = |who: &str| long_lease_elector(&store, &election, who);
    let a = start("a");
    tokio::time::timeout(Duration::from_secs(5), a.leading())
        .await
        .expect("the first candidate leads")
        .expect("running");
    let b = start("b");
    // Let b find the election held and go to sleep until the lease's expiry, 10 s away.
    tokio::time::timeout(
        Duration::from_secs(5),
        b.watch()
            .wait_for(|s| matches!(s, Leadership::Follower { leader: Some(_) })),
    )
    .await
    .expect("the second candidate follows")
    .expect("running");
    sleep(Duration::from_millis(200)).await;
    let resigned = Instant::now();
    a.resign().await.expect("a resigns");
    tokio::time::timeout(ttl / 2, b.leading())
        .await
        .expect("the follower leads before the resigned lease would have expired")
        .expect("running");
    let took = resigned.elapsed();
    eprintln!("a_resign_wakes_a_follower_sleeping_a_long_lease: hand-over took {took:?}");
    assert!(
        took <= settings.handover_bound,
        "the hand-over took {took:?}, over the bound {:?}: the follower slept on",
        settings.handover_bound
    );
    b.shutdown().await.expect("b releases");
    a.shutdown().await.expect("a stops");
}

/// When the store has a change feed, an [`Observer`] learns of a new leader within the
/// handover bound of its election — pushed by the feed, not found at its next poll (the lease
/// is 10 s and the observer polls every 10 s, so only the feed can be that quick).
pub async fn observers_learn_of_a_new_leader_from_the_feed(store: Store, settings: Settings) {
    if !settings.change_feed {
        return;
    }
    let ttl = LONG_TTL;
    let election = fresh_election("observers_learn_of_a_new_leader_from_the_feed");
    let observer =
        Observer::with_interval(store.clone(), election.clone(), ttl).expect("a valid observer");
    let mut watch = observer.watch();
    let start = |who: &str| long_lease_elector(&store, &election, who);
    let a = start("a");
    let first = tokio::time::timeout(Duration::from_secs(5), a.leading())
        .await
        .expect("the first candidate leads")
        .expect("running");
    tokio::time::timeout(
        Duration::from_secs(5),
        watch.wait_for(|i| i.as_ref().is_some_and(|i| i.term == first.term())),
    )
    .await
    .expect("the observer sees the first leader")
    .expect("observer running");
    let b = start("b");
    sleep(Duration::from_millis(200)).await;
    a.resign().await.expect("a resigns");
    let second = tokio::time::timeout(ttl / 2, b.leading())
        .await
        .expect("b leads after the resignation")
        .expect("running");
    let elected = Instant::now();
    tokio::time::timeout(
        ttl / 2,
        watch.wait_for(|i| {
            i.as_ref()
                .is_some_and(|i| i.holder == id("b") && i.term == second.term())
        }),
    )
    .await
    .expect("the observer sees the new leader before its next poll")
    .expect("observer running");
    let took = elected.elapsed();
    eprintln!("observers_learn_of_a_new_leader_from_the_feed: noticed {took:?} after the election");
    assert!(
        took <= settings.handover_bound,
        "the observer noticed the new leader {took:?} after its election, over the bound {:?}",
        settings.handover_bound
    );
    b.shutdown().await.expect("b releases");
    a.shutdown().await.expect("a stops");
}

/// `n` candidates (say fifty) start on one election of `store` at once: exactly one leads, at
/// no instant two, and leadership does not move for four seconds of renewals (TTL 3 s). A
/// stress variant of `one_leader_among_five` for stores whose first grant is a race between
/// inserts (a row, a document).
pub async fn many_candidates_elect_exactly_one(
    store: std::sync::Arc<dyn crate::LeaseStore>,
    n: usize,
) {
    let election = fresh_election("many_candidates_elect_exactly_one");
    let recorder = Recorder::new();
    let electors: Vec<Elector> = (0..n)
        .map(|k| {
            let who = id(&format!("c{k}"));
            let builder = Elector::builder_dyn(store.clone(), election.clone())
                .candidate(who.clone())
                .ttl(Duration::from_secs(3));
            recorder.track(who, builder.events());
            builder.start().expect("a valid elector configuration")
        })
        .collect();
    let first = recorder
        .elected_since(0, None, Duration::from_secs(10))
        .await
        .expect("someone leads");
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let leaders = electors.iter().filter(|e| e.is_leader()).count();
        assert!(leaders <= 1, "{leaders} leaders at once");
    }
    let leaders: Vec<_> = electors.iter().filter(|e| e.is_leader()).collect();
    assert_eq!(leaders.len(), 1, "one leader after four seconds");
    assert_eq!(leaders[0].candidate(), &first.candidate);
    assert_eq!(recorder.intervals().len(), 1, "leadership never moved");
    for elector in electors {
        elector.shutdown().await.expect("shutdown");
    }
    recorder.check();
}
