//! Elector-level checks: several candidates campaigning through the store under test, each
//! behind its own [`FaultyStore`], checked from their events.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{sleep, Instant};

use super::{fresh_election, id, Faults, FaultyStore, Recorder, Settings};
use crate::elector::{Elector, Leadership, StepDown};
use crate::name::{CandidateId, ElectionName};
use crate::observer::Observer;
use crate::rand::Rng;
use crate::store::LeaseStore;

type Store = Arc<dyn LeaseStore>;

/// One simulated process: an elector and its view of the network.
struct Candidate {
    id: CandidateId,
    net: FaultyStore<Store>,
    elector: Option<Elector>,
}

impl Candidate {
    fn elector(&self) -> &Elector {
        self.elector.as_ref().expect("candidate still running")
    }

    fn is_leader(&self) -> bool {
        self.elector.as_ref().is_some_and(Elector::is_leader)
    }

    async fn shutdown(&mut self) {
        if let Some(elector) = self.elector.take() {
            // A candidate cut off from the store cannot release; that is not what is checked.
            let _ = elector.shutdown().await;
        }
    }
}

struct Group {
    election: ElectionName,
    recorder: Recorder,
    candidates: Vec<Candidate>,
}

impl Group {
    fn start(store: &Store, check: &str, n: usize, settings: &Settings) -> Group {
        Self::start_with(store, check, n, settings, settings.ttl_duration())
    }

    fn start_with(
        store: &Store,
        check: &str,
        n: usize,
        settings: &Settings,
        resign_pause: Duration,
    ) -> Group {
        let election = fresh_election(check);
        let recorder = Recorder::new();
        let candidates = (0..n)
            .map(|k| {
                let id = id(&format!("candidate-{k}"));
                let net = FaultyStore::new(store.clone());
                let builder = Elector::builder(net.clone(), election.clone())
                    .candidate(id.clone())
                    .ttl(settings.ttl_duration())
                    .resign_pause(resign_pause);
                recorder.track(id.clone(), builder.events());
                let elector = builder.start().expect("a valid elector configuration");
                Candidate {
                    id,
                    net,
                    elector: Some(elector),
                }
            })
            .collect();
        Group {
            election,
            recorder,
            candidates,
        }
    }

    /// Waits for a leader elected after `mark` (other than `except`).
    async fn leader_after(
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

    fn leaders_now(&self) -> usize {
        self.candidates.iter().filter(|c| c.is_leader()).count()
    }

    /// Shuts everyone down, lets the last events arrive, and checks the invariants.
    async fn finish(mut self) -> Recorder {
        for c in &mut self.candidates {
            c.net.set(Faults::None);
        }
        for c in &mut self.candidates {
            c.shutdown().await;
        }
        sleep(Duration::from_millis(20)).await;
        self.recorder.check();
        self.recorder
    }
}

/// Five candidates: exactly one leads, it keeps leading while nothing fails, and the followers
/// know who it is.
pub async fn one_leader_among_five(store: Store, settings: Settings) {
    let ttl = settings.ttl_duration();
    let group = Group::start(&store, "one_leader_among_five", 5, &settings);
    let leader = group
        .leader_after(0, None, ttl * 3, "five candidates")
        .await;
    for _ in 0..30 {
        sleep(ttl / 10).await;
        let n = group.leaders_now();
        assert!(n <= 1, "{n} candidates believe they lead at once");
    }
    assert!(
        group.candidates[leader].is_leader(),
        "the leader lost its lease while nothing failed"
    );
    for (k, c) in group
        .candidates
        .iter()
        .enumerate()
        .filter(|(k, _)| *k != leader)
    {
        match c.elector().leadership() {
            Leadership::Follower { leader: Some(info) } => assert_eq!(
                info.holder, group.candidates[leader].id,
                "follower {k} names the wrong leader"
            ),
            other => panic!("follower {k} should know the leader, is {other:?}"),
        }
    }
    assert_eq!(
        group.recorder.intervals().len(),
        1,
        "leadership changed while nothing failed"
    );
    group.finish().await;
}

/// The leader's process dies without releasing (it never reaches the store again): it stops
/// believing by its deadline, and another candidate leads within TTL + the failover bound.
pub async fn failover_after_leader_crash(store: Store, settings: Settings) {
    let ttl = settings.ttl_duration();
    let group = Group::start(&store, "failover_after_leader_crash", 3, &settings);
    let old = group
        .leader_after(0, None, ttl * 3, "before the crash")
        .await;
    sleep(ttl / 2).await;
    let crash = Instant::now();
    let mark = group.recorder.mark();
    group.candidates[old].net.set(Faults::Blackhole);
    let bound = ttl + settings.failover_bound;
    let new = group
        .leader_after(
            mark,
            Some(&group.candidates[old].id),
            bound,
            "after the leader crashed",
        )
        .await;
    let old_interval = group
        .recorder
        .intervals()
        .into_iter()
        .find(|i| i.candidate == group.candidates[old].id)
        .expect("the old leader's interval");
    assert_eq!(old_interval.reason, Some(StepDown::DeadlinePassed));
    assert!(
        old_interval.end.expect("ended") <= crash + ttl,
        "the crashed leader believed it led past crash + TTL"
    );
    assert_ne!(old, new);
    group.finish().await;
}

/// The leader resigns: it stops believing before it releases, and another candidate leads
/// within the handover bound.
pub async fn handover_on_resign(store: Store, settings: Settings) {
    let ttl = settings.ttl_duration();
    let group = Group::start(&store, "handover_on_resign", 3, &settings);
    let old = group
        .leader_after(0, None, ttl * 3, "before resigning")
        .await;
    // Let the followers settle into their sleep until the lease's expiry.
    sleep(ttl / 3).await;
    let resign = group.recorder.mark();
    group.candidates[old]
        .elector()
        .resign()
        .await
        .expect("resign releases the lease");
    assert!(
        !group.candidates[old].is_leader(),
        "still leading after resign returned"
    );
    let new = group
        .leader_after(
            resign,
            Some(&group.candidates[old].id),
            settings.handover_bound,
            "after the leader resigned",
        )
        .await;
    assert_ne!(old, new);
    let old_interval = group.recorder.intervals()[0].clone();
    assert_eq!(old_interval.reason, Some(StepDown::Resigned));
    group.finish().await;
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
        match store.leader(&group.election).await {
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
        c.net.set(noisy(k));
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
                candidate.net.set(fault);
                let heal = ttl / 2 + rng.duration_up_to(ttl * 2);
                let (net, back, over) = (candidate.net.clone(), noisy(target), over.clone());
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
            c.net.set(Faults::None);
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
            .map(|c| (c.id.clone(), c.elector().leadership(), c.net.requests()))
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

/// Leadership passes around by resignation several times; each new leader has a higher term.
pub async fn terms_increase_across_leaders(store: Store, settings: Settings) {
    let ttl = settings.ttl_duration();
    // The resigner sits out as long as the others may take to notice, or it could win again.
    let pause = settings.handover_bound.max(ttl / 4);
    let group = Group::start_with(&store, "terms_increase_across_leaders", 3, &settings, pause);
    let mut after = 0;
    let mut last = None;
    for round in 0..5 {
        let k = group
            .leader_after(after, last.as_ref(), ttl + pause, &format!("round {round}"))
            .await;
        let id = group.candidates[k].id.clone();
        after = group.recorder.mark();
        group.candidates[k]
            .elector()
            .resign()
            .await
            .expect("resign releases the lease");
        last = Some(id);
    }
    let recorder = group.finish().await;
    let terms: Vec<_> = recorder.intervals().iter().map(|i| i.term).collect();
    assert!(terms.len() >= 5, "expected 5 leaderships, saw {terms:?}");
    assert!(
        terms.windows(2).all(|w| w[0] < w[1]),
        "terms must strictly increase: {terms:?}"
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
    candidate.net.set(Faults::Delay {
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
    candidate.net.set(Faults::FailAll);
    let failed = Instant::now();
    tokio::time::timeout(ttl * 2, guard.lost())
        .await
        .expect("lost must fire within two TTLs of the store failing");
    let lost_at = Instant::now();
    let forwarded = candidate
        .net
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
    let before: Vec<u64> = group.candidates.iter().map(|c| c.net.requests()).collect();
    let ttls = 6;
    sleep(ttl * ttls).await;
    for (k, c) in group.candidates.iter().enumerate() {
        let sent = c.net.requests() - before[k];
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
