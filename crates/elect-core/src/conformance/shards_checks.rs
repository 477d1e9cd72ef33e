//! Checks of [`Shards`] on a store's batch requests: many elections from one task each, in
//! two processes, handed over whole; and balanced among three.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;
use tokio::time::{sleep, Instant};

use super::{fresh_election, id, Settings};
use crate::batch::BatchStore;
use crate::elector::StepDown;
use crate::name::ElectionName;
use crate::shards::{ShardEvent, Shards};
use crate::store::LeaseStore;

/// Polls `done` every 20 ms for `bound`; panics saying `what` when it never held.
async fn wait_until(bound: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let until = Instant::now() + bound;
    while !done() {
        assert!(Instant::now() < until, "{what} within {bound:?}");
        sleep(Duration::from_millis(20)).await;
    }
}

/// Two processes' [`Shards`] campaign in the same 50 elections on `store` (TTL: the settings'
/// or 2 s, whichever is longer, so that a busy machine does not end renewals). The first leads
/// them all; while it renews (two TTLs) the second leads none, and no election's guards ever
/// say both lead. The first shuts down, releasing every lease: the second then leads every
/// election within a TTL plus the failover bound, each with a higher term than the first's
/// (terms fence), and the store names it; once it shuts down too, no election has a leader.
pub async fn shards_hand_over_many_elections(store: Arc<dyn BatchStore>, settings: Settings) {
    const N: usize = 50;
    let names: Vec<ElectionName> = (0..N)
        .map(|k| fresh_election(&format!("shards-{k}")))
        .collect();
    let ttl = settings.ttl_duration().max(Duration::from_secs(2));
    let bound = ttl + settings.failover_bound;
    let start = |who: &str| {
        Shards::builder(store.clone(), id(who))
            .ttl(ttl)
            .start(names.clone())
            .expect("a valid configuration")
    };

    let a = start("a");
    wait_until(bound, "the first process leads every election", || {
        a.leaders().len() == N
    })
    .await;
    let b = start("b");
    let renewing = Instant::now() + ttl * 2;
    while Instant::now() < renewing {
        no_election_led_by_two(&names, &[&a, &b]);
        assert_eq!(
            b.leaders(),
            Vec::<ElectionName>::new(),
            "the second process leads elections the first renews"
        );
        sleep(ttl / 20).await;
    }
    assert_eq!(
        a.leaders().len(),
        N,
        "the first process kept renewing them all"
    );
    let mut first_terms = Vec::new();
    for name in &names {
        let guard = a.guard(name).expect("the first process leads it");
        let held = store.leader(name).await.expect("read").expect("held");
        assert_eq!((held.holder.as_str(), held.term), ("a", guard.term()));
        first_terms.push(guard.term());
    }

    a.shutdown().await.expect("every lease released");
    assert!(a.leaders().is_empty(), "the first process stopped leading");
    wait_until(bound, "the second process leads every election", || {
        no_election_led_by_two(&names, &[&a, &b]);
        b.leaders().len() == N
    })
    .await;
    for (name, first) in names.iter().zip(&first_terms) {
        let guard = b.guard(name).expect("the second process leads it");
        assert!(
            guard.term() > *first,
            "{name}: term {} after {first}",
            guard.term()
        );
        let held = store.leader(name).await.expect("read").expect("held");
        assert_eq!((held.holder.as_str(), held.term), ("b", guard.term()));
    }

    b.shutdown().await.expect("every lease released");
    for name in &names {
        let left = store.leader(name).await.expect("read");
        assert!(
            left.is_none(),
            "{name} has a leader after both shut down: {left:?}"
        );
    }
}

/// Three processes' balanced [`Shards`] share 12 elections on `store` (TTL: the settings' or
/// 2 s, whichever is longer). The first leads all 12; two more join and within a few TTLs
/// each leads 4, every hand-over a release (no leadership ends any other way) and no election
/// ever led by two at once; the shares then hold still for two TTLs, and the store names
/// each election's leader as its guard does. One process shuts down: the two others lead 6
/// each. Seats and elections are released when all have shut down.
pub async fn shards_balance_by_release(store: Arc<dyn BatchStore>, settings: Settings) {
    const N: usize = 12;
    let names: Vec<ElectionName> = (0..N)
        .map(|k| fresh_election(&format!("balance-{k}")))
        .collect();
    let seats = fresh_election("seats");
    let ttl = settings.ttl_duration().max(Duration::from_secs(2));
    let settle = ttl * 6 + settings.failover_bound;
    let start = |who: &str| {
        let shards = Shards::builder(store.clone(), id(who))
            .ttl(ttl)
            .balance(seats.clone(), 8)
            .start(names.clone())
            .expect("a valid configuration");
        let events = shards.events();
        (shards, events)
    };
    let (a, ea) = start("a");
    let mut events = vec![ea];
    wait_until(settle, "the first process leads every election", || {
        a.leaders().len() == N
    })
    .await;
    let (b, eb) = start("b");
    let (c, ec) = start("c");
    events.extend([eb, ec]);
    let procs = [&a, &b, &c];
    let shares = |procs: &[&Shards]| procs.iter().map(|p| p.leaders().len()).collect::<Vec<_>>();
    wait_until(settle, "three processes lead 4 elections each", || {
        no_election_led_by_two(&names, &procs);
        shares(&procs) == [4, 4, 4]
    })
    .await;
    let moved = step_downs(&mut events);
    assert!(
        moved.iter().all(|r| *r == StepDown::Resigned),
        "a hand-over that was not a release: {moved:?}"
    );
    let still = Instant::now() + ttl * 2;
    while Instant::now() < still {
        no_election_led_by_two(&names, &procs);
        sleep(ttl / 20).await;
    }
    assert_eq!(shares(&procs), [4, 4, 4], "the shares held still");
    let moved = step_downs(&mut events);
    assert!(moved.is_empty(), "stable shares moved: {moved:?}");
    for name in &names {
        let (who, guard) = procs
            .iter()
            .zip(["a", "b", "c"])
            .find_map(|(p, who)| p.guard(name).map(|g| (who, g)))
            .expect("every election led");
        let held = store.leader(name).await.expect("read").expect("held");
        assert_eq!((held.holder.as_str(), held.term), (who, guard.term()));
    }

    c.shutdown().await.expect("every lease released");
    wait_until(settle, "the two left lead 6 elections each", || {
        no_election_led_by_two(&names, &procs);
        shares(&[&a, &b]) == [6, 6]
    })
    .await;
    let moved = step_downs(&mut events[..2]);
    assert!(
        moved.iter().all(|r| *r == StepDown::Resigned),
        "a hand-over that was not a release: {moved:?}"
    );
    a.shutdown().await.expect("every lease released");
    b.shutdown().await.expect("every lease released");
    let seat_names = (0..8).map(|j| ElectionName::new(format!("{seats}.{j}")).expect("valid"));
    for name in names.iter().cloned().chain(seat_names) {
        let left = store.leader(&name).await.expect("read");
        assert!(
            left.is_none(),
            "{name} has a leader after all shut down: {left:?}"
        );
    }
}

/// No election is led by two of `procs` at this instant (by their guards).
fn no_election_led_by_two(names: &[ElectionName], procs: &[&Shards]) {
    for name in names {
        let leaders = procs.iter().filter(|p| p.is_leader(name)).count();
        assert!(
            leaders <= 1,
            "{leaders} processes' guards lead {name} at once"
        );
    }
}

/// The reasons of the step-downs `events` reported since last asked.
fn step_downs(events: &mut [broadcast::Receiver<ShardEvent>]) -> Vec<StepDown> {
    let mut out = Vec::new();
    for rx in events {
        while let Ok(event) = rx.try_recv() {
            if let ShardEvent::SteppedDown { reason, .. } = event {
                out.push(reason);
            }
        }
    }
    out
}
