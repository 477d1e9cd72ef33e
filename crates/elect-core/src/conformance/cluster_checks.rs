//! Elector-level checks for any coordinator behind a [`Harness`]: the lease stores (through
//! [`StoreHarness`](super::StoreHarness)) and elect-raft's clusters run the same ones.
//! [`cluster_conformance_tests!`](crate::cluster_conformance_tests) expands to one test per
//! check.

use std::sync::Arc;

use tokio::time::{sleep, Instant};

use super::elector_checks::Group;
use super::harness::Harness;
use super::{candidate_value, Settings};
use crate::elector::{Leadership, StepDown};

/// Five candidates: exactly one leads, it keeps leading while nothing fails, and the followers
/// know who it is.
pub async fn one_leader_among_five(harness: Arc<dyn Harness>, settings: Settings) {
    let ttl = settings.ttl_duration();
    let group = Group::on(harness, "one_leader_among_five", 5, settings.ttl_duration());
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
pub async fn failover_after_leader_crash(harness: Arc<dyn Harness>, settings: Settings) {
    let ttl = settings.ttl_duration();
    let group = Group::on(
        harness,
        "failover_after_leader_crash",
        3,
        settings.ttl_duration(),
    );
    let old = group
        .leader_after(0, None, ttl * 3, "before the crash")
        .await;
    sleep(ttl / 2).await;
    let crash = Instant::now();
    let mark = group.recorder.mark();
    group.cut(old, true);
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
pub async fn handover_on_resign(harness: Arc<dyn Harness>, settings: Settings) {
    let ttl = settings.ttl_duration();
    let group = Group::on(harness, "handover_on_resign", 3, settings.ttl_duration());
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

/// Leadership passes around by resignation several times; each new leader has a higher term.
pub async fn terms_increase_across_leaders(harness: Arc<dyn Harness>, settings: Settings) {
    let ttl = settings.ttl_duration();
    // The resigner sits out as long as the others may take to notice, or it could win again.
    let pause = settings.handover_bound.max(ttl / 4);
    let group = Group::on(harness, "terms_increase_across_leaders", 3, pause);
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

/// Every candidate publishes a value ([`candidate_value`]): the leader's guard carries its own,
/// and every follower sees the leader's — again after the leadership moves by resignation.
pub async fn followers_see_the_leader_value(harness: Arc<dyn Harness>, settings: Settings) {
    let ttl = settings.ttl_duration();
    let group = Group::on(
        harness,
        "followers_see_the_leader_value",
        3,
        settings.ttl_duration(),
    );
    let mut leader = group
        .leader_after(0, None, ttl * 3, "three candidates")
        .await;
    for round in 0..2 {
        let expected = candidate_value(leader);
        match group.candidates[leader].elector().leadership() {
            Leadership::Leader(guard) => assert_eq!(
                guard.lease().value.as_ref(),
                Some(&expected),
                "the leader's own lease lacks its value"
            ),
            other => panic!("candidate {leader} was elected but is {other:?}"),
        }
        // A follower learns the value with the leader: from the lease it was refused (a store)
        // or the leader's heartbeat (raft), within the failover bound of a fresh candidate.
        let until = Instant::now() + ttl + settings.failover_bound;
        for (k, c) in group
            .candidates
            .iter()
            .enumerate()
            .filter(|(k, _)| *k != leader)
        {
            loop {
                let seen = match c.elector().leadership() {
                    Leadership::Follower { leader: Some(info) }
                        if info.holder == group.candidates[leader].id =>
                    {
                        Some(info.value)
                    }
                    _ => None,
                };
                match seen {
                    Some(value) => {
                        assert_eq!(
                            value.as_ref(),
                            Some(&expected),
                            "round {round}: follower {k} sees the wrong value"
                        );
                        break;
                    }
                    None if Instant::now() >= until => panic!(
                        "round {round}: follower {k} did not learn the leader (candidate \
                         {leader}) by {:?}; it sees {:?}",
                        ttl + settings.failover_bound,
                        c.elector().leadership()
                    ),
                    None => sleep(ttl / 50).await,
                }
            }
        }
        if round == 0 {
            let resign = group.recorder.mark();
            group.candidates[leader]
                .elector()
                .resign()
                .await
                .expect("resign releases the lease");
            leader = group
                .leader_after(
                    resign,
                    Some(&group.candidates[leader].id),
                    ttl * 3,
                    "after the first leader resigned",
                )
                .await;
        }
    }
    group.finish().await;
}
