//! What a foreign client writing into the store can and cannot do to leadership: the check
//! every coordinator runs with its own raw client standing for the foreign writer.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::{sleep, timeout, Instant};

use super::store_checks::claim;
use super::{fresh_election, id, Recorder, Settings};
use crate::elector::{Elector, LeaderGuard};
use crate::lease::{Acquire, Release};
use crate::name::{CandidateId, ElectionName};
use crate::store::LeaseStore;

type Store = Arc<dyn LeaseStore>;

/// A write into an election's record by something that is not elect (an operator's
/// `redis-cli`, a migration, a bug elsewhere), made by the closure given to
/// [`foreign_writes_are_bounded`] with the store's own raw client.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ForeignWrite {
    /// Set the term of the *live* lease to 1, leaving everything else as it is.
    LowerLiveTerm,
    /// Set the holder of the live lease to this candidate id (a follower's), leaving the term and
    /// everything else (the nonce) as it is.
    RewriteHolder(CandidateId),
    /// The election is vacant (its lease was released): set the term it keeps (the counter, or
    /// the record's term) to 1.
    LowerStoredTerm,
    /// End the live lease behind its holder's back: delete the record, or set its expiry to
    /// the past.
    EndLease,
}

/// Foreign writes into the store's records never make a term go back or be handed out twice,
/// and the one write that can end a lease early — [`ForeignWrite::EndLease`] — lets another
/// candidate lead beside the old leader for at most one renewal interval (TTL/3 plus the
/// renewal's round trip): the old leader's next renewal is refused and it steps down at once.
/// (A foreign client that can write the store can always do that much; the bound is what
/// elect promises.)
///
/// `write(election, what)` must make the foreign write with a client of its own.
pub async fn foreign_writes_are_bounded<F, Fut>(store: Store, settings: Settings, write: F)
where
    F: Fn(ElectionName, ForeignWrite) -> Fut,
    Fut: Future<Output = ()>,
{
    let ttl = settings.ttl_duration();
    for what in [
        ForeignWrite::LowerLiveTerm,
        ForeignWrite::RewriteHolder(id("follower")),
    ] {
        let election = fresh_election("foreign_writes_are_bounded");
        let recorder = Recorder::new();
        let start = |who: &str| {
            let builder = Elector::builder_dyn(store.clone(), election.clone())
                .candidate(id(who))
                .ttl(ttl);
            recorder.track(id(who), builder.events());
            builder.start().expect("a valid elector configuration")
        };
        let leader = start("leader");
        let first = timeout(ttl * 3, leader.leading())
            .await
            .expect("the first candidate leads")
            .expect("running");
        let follower = start("follower");
        sleep(ttl / 10).await;
        let mark = recorder.mark();
        write(election.clone(), what.clone()).await;
        // The leader's next renewal is refused; whoever leads next must take a new term.
        timeout(ttl, first.lost())
            .await
            .unwrap_or_else(|_| panic!("{what:?}: the leader still believes a TTL later"));
        let next = recorder
            .elected_since(mark, None, ttl * 2 + settings.failover_bound)
            .await
            .unwrap_or_else(|| panic!("{what:?}: nobody led again"));
        assert!(
            next.term > first.term(),
            "{what:?}: {} led in term {} after term {}: terms went back or were reused",
            next.candidate,
            next.term,
            first.term()
        );
        for elector in [leader, follower] {
            let _ = elector.shutdown().await;
        }
        sleep(Duration::from_millis(20)).await;
        recorder.check();
    }

    // A vacant election whose stored term was lowered: the next grant is still above.
    let election = fresh_election("foreign_writes_are_bounded");
    let a = claim(&election, &id("a"), settings.ttl);
    let first = match store.try_acquire(&a).await {
        Ok(Acquire::Granted(lease)) => lease,
        other => panic!("a fresh election is granted, got {other:?}"),
    };
    assert_eq!(store.release(&first).await.ok(), Some(Release::Released));
    write(election.clone(), ForeignWrite::LowerStoredTerm).await;
    match store
        .try_acquire(&claim(&election, &id("b"), settings.ttl))
        .await
    {
        Ok(Acquire::Granted(next)) => assert!(
            next.term > first.term,
            "LowerStoredTerm: granted term {} after term {}",
            next.term,
            first.term
        ),
        other => panic!("LowerStoredTerm: the vacant election is granted, got {other:?}"),
    }

    // A lease ended behind its holder's back: the bound on two believers.
    let election = fresh_election("foreign_writes_are_bounded");
    let elector = Elector::builder_dyn(store.clone(), election.clone())
        .candidate(id("leader"))
        .ttl(ttl)
        .start()
        .expect("a valid elector configuration");
    let guard: LeaderGuard = timeout(ttl * 3, elector.leading())
        .await
        .expect("leads")
        .expect("running");
    write(election.clone(), ForeignWrite::EndLease).await;
    let ended = Instant::now();
    let intruder = match store
        .try_acquire(&claim(&election, &id("intruder"), settings.ttl))
        .await
    {
        Ok(Acquire::Granted(lease)) => lease,
        other => panic!("EndLease: the ended lease is acquirable at once, got {other:?}"),
    };
    assert!(
        intruder.term > guard.term(),
        "EndLease: the intruder's term {} is not above the leader's {}",
        intruder.term,
        guard.term()
    );
    let bound = ttl / 3 + settings.handover_bound;
    timeout(bound, guard.lost()).await.unwrap_or_else(|_| {
        panic!("EndLease: the old leader still believed {bound:?} after its lease was ended")
    });
    eprintln!(
        "foreign_writes_are_bounded: after EndLease the old leader believed {:?} more",
        ended.elapsed()
    );
    let _ = elector.shutdown().await;
    let _ = store.release(&intruder).await;
}
