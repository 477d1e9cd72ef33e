//! Checks of [`Shards`] on a store's batch requests: many elections from one task each, in
//! two processes, handed over whole.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{sleep, Instant};

use super::{fresh_election, id, Settings};
use crate::batch::BatchStore;
use crate::name::ElectionName;
use crate::shards::Shards;
use crate::store::LeaseStore;

/// Polls `done` every 20 ms for `bound`; panics saying `what` when it never held.
async fn wait_until(bound: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let until = Instant::now() + bound;
    while !done() {
        assert!(Instant::now() < until, "{what} within {bound:?}");
        sleep(Duration::from_millis(20)).await;
    }
}

/// No election is led by both `a` and `b` at this instant (by their guards).
fn no_election_led_twice(names: &[ElectionName], a: &Shards, b: &Shards) {
    for name in names {
        assert!(
            !(a.is_leader(name) && b.is_leader(name)),
            "two processes' guards lead {name} at once"
        );
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
        no_election_led_twice(&names, &a, &b);
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
        no_election_led_twice(&names, &a, &b);
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
