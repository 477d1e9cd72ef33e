//! Checks of a [`BatchStore`]'s batch requests, beside the whole suite on
//! [`Batched`](crate::batch::Batched): each election of a batch decided on its own.

use std::time::Duration;

use super::{fresh_election, id};
use crate::batch::BatchStore;
use crate::error::Error;
use crate::lease::{Acquire, Claim, Renewal, Ttl};
use crate::name::ElectionName;

fn ttl(ms: u64) -> Ttl {
    Ttl::new(Duration::from_millis(ms)).expect("a valid TTL")
}

/// Two candidates claim the same election in one batch, beside another election: exactly one
/// is granted, the other sees it held by the winner; a renewal batch carrying the winner's
/// lease and a stale lease of the loser renews only the winner's.
pub async fn one_election_twice_in_a_batch_is_granted_once<S: BatchStore + ?Sized>(store: &S) {
    let (jobs, other) = (fresh_election("twice"), fresh_election("twice-other"));
    let claims = [
        Claim::new(jobs.clone(), id("a"), ttl(5_000)),
        Claim::new(other, id("a"), ttl(5_000)),
        Claim::new(jobs, id("b"), ttl(5_000)),
    ];
    let answers = store.try_acquire_batch(&claims).await;
    assert_eq!(answers.len(), 3, "one answer per claim: {answers:?}");
    let (winner, loser) = match (&answers[0], &answers[2]) {
        (Ok(Acquire::Granted(lease)), Ok(Acquire::Held(info))) => {
            assert_eq!((&info.holder, info.term), (&lease.holder, lease.term));
            (lease.clone(), &claims[2])
        }
        (Ok(Acquire::Held(info)), Ok(Acquire::Granted(lease))) => {
            assert_eq!((&info.holder, info.term), (&lease.holder, lease.term));
            (lease.clone(), &claims[0])
        }
        other => panic!("not one grant and one holder: {other:?}"),
    };
    assert!(matches!(answers[1], Ok(Acquire::Granted(_))), "{answers:?}");
    let stale = loser.granted(winner.term);
    let renewed = store.renew_batch(&[stale, winner.clone()]).await;
    assert!(matches!(renewed[0], Ok(Renewal::Lost)), "{renewed:?}");
    assert!(
        matches!(&renewed[1], Ok(Renewal::Renewed(l)) if *l == winner),
        "{renewed:?}"
    );
}

/// A renewal batch in which one lease ran out (its record still names it, expired) and another
/// was taken over by someone else: those two are `Lost`, the rest `Renewed`, and the lease that
/// ran out is not brought back to life by the batch. The leases that run out have a TTL of
/// 200 ms; [`a_renewal_batch_tells_each_lease_apart_with`] takes another.
pub async fn a_renewal_batch_tells_each_lease_apart<S: BatchStore + ?Sized>(store: &S) {
    a_renewal_batch_tells_each_lease_apart_with(store, ttl(200)).await;
}

/// [`a_renewal_batch_tells_each_lease_apart`] with leases of `short` for the two that run out
/// (a store that keeps time in whole seconds needs one): the check waits until the store no
/// longer reports them held (at most `short` + 10 s).
pub async fn a_renewal_batch_tells_each_lease_apart_with<S: BatchStore + ?Sized>(
    store: &S,
    short: Ttl,
) {
    let names: Vec<ElectionName> = (0..4)
        .map(|k| fresh_election(&format!("apart-{k}")))
        .collect();
    let claims: Vec<Claim> = names
        .iter()
        .enumerate()
        .map(|(k, e)| {
            let lease = if k % 2 == 1 { short } else { ttl(60_000) };
            Claim::new(e.clone(), id("me"), lease)
        })
        .collect();
    let leases: Vec<_> = store
        .try_acquire_batch(&claims)
        .await
        .into_iter()
        .map(|a| match a {
            Ok(Acquire::Granted(lease)) => lease,
            other => panic!("not granted: {other:?}"),
        })
        .collect();
    tokio::time::sleep(short.get()).await;
    let gone = tokio::time::Instant::now() + Duration::from_secs(10);
    while store.leader(&names[1]).await.unwrap().is_some()
        || store.leader(&names[3]).await.unwrap().is_some()
    {
        assert!(
            tokio::time::Instant::now() < gone,
            "leases of {:?} still held 10 s after they ran out",
            short.get()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let taken = Claim::new(names[3].clone(), id("other"), ttl(10_000));
    let other = match store.try_acquire(&taken).await {
        Ok(Acquire::Granted(lease)) => lease,
        other => panic!("the expired election was not granted to another: {other:?}"),
    };
    let renewed: Vec<bool> = store
        .renew_batch(&leases)
        .await
        .iter()
        .map(|a| match a {
            Ok(Renewal::Renewed(_)) => true,
            Ok(Renewal::Lost) => false,
            Err(e) => panic!("{e}"),
        })
        .collect();
    assert_eq!(renewed, [true, false, true, false]);
    assert!(store.leader(&names[1]).await.unwrap().is_none());
    let held = store.leader(&names[3]).await.unwrap().expect("held");
    assert_eq!((held.holder, held.term), (other.holder, other.term));
}

/// `elections[corrupt]` holds a record a foreign client wrote, which the caller planted
/// beforehand (an invalid holder, say): in a batch of claims for all of `elections`, that
/// election, and only it, gets [`Error::CorruptRecord`] naming it, and the others are granted;
/// in a renewal batch of their leases plus a forged lease for the corrupt election, the forged
/// one is `Lost` and the others are renewed. The caller checks afterwards that the record was
/// left as it was.
pub async fn a_corrupt_record_fails_only_its_own_election<S: BatchStore + ?Sized>(
    store: &S,
    elections: &[ElectionName],
    corrupt: usize,
) {
    let claims: Vec<Claim> = elections
        .iter()
        .map(|e| Claim::new(e.clone(), id("me"), ttl(5_000)))
        .collect();
    let answers = store.try_acquire_batch(&claims).await;
    assert_eq!(answers.len(), elections.len());
    let mut leases = Vec::new();
    for (k, answer) in answers.into_iter().enumerate() {
        match answer {
            Err(Error::CorruptRecord { key, .. }) if k == corrupt => {
                assert!(key.contains(elections[k].as_str()), "{key}")
            }
            Ok(Acquire::Granted(lease)) if k != corrupt => leases.push(lease),
            other => panic!("election {k} answered {other:?}"),
        }
    }
    let mut forged = leases[0].clone();
    forged.election = elections[corrupt].clone();
    leases.insert(corrupt, forged);
    let answers = store.renew_batch(&leases).await;
    for (k, answer) in answers.into_iter().enumerate() {
        match answer {
            Ok(Renewal::Lost) if k == corrupt => {}
            Ok(Renewal::Renewed(lease)) if k != corrupt => assert_eq!(lease, leases[k]),
            other => panic!("election {k} answered {other:?}"),
        }
    }
    for (k, name) in elections.iter().enumerate().filter(|(k, _)| *k != corrupt) {
        let held = store.leader(name).await.unwrap().expect("held");
        assert_eq!(held.term, leases[k].term);
    }
}
