//! Store-level checks: the [`LeaseStore`] contract, request by request.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::sleep;

use super::{fresh_election, id, Settings};
use crate::error::Error;
use crate::lease::{Acquire, Claim, LeaderInfo, LeaderValue, Lease, Nonce, Release, Renewal, Ttl};
use crate::name::{CandidateId, ElectionName};
use crate::store::LeaseStore;
use crate::term::Term;

type Store = Arc<dyn LeaseStore>;

/// How often a request that failed with a transient error ([`Error::Unavailable`]) is tried in
/// all before the check fails: a coordinator on the network may refuse a request now and then
/// (a reconnect, a failover), which the contract allows.
const ATTEMPTS: u32 = 8;

/// Runs `request` until it succeeds or fails with a persistent error, at most [`ATTEMPTS`]
/// times with a growing pause (20 ms doubling, at most 200 ms); returns the answer and whether an attempt failed before (its
/// outcome unknown: it may have landed). Panics with `what` and the last error otherwise.
async fn retried<T, F>(what: &str, mut request: impl FnMut() -> F) -> (T, bool)
where
    F: std::future::Future<Output = crate::Result<T>>,
{
    let mut failed = None;
    for attempt in 0..ATTEMPTS {
        match request().await {
            Ok(answer) => return (answer, failed.is_some()),
            Err(e) if e.is_retryable() && attempt + 1 < ATTEMPTS => {
                sleep(Duration::from_millis((20 << attempt).min(200))).await;
                failed = Some(e);
            }
            Err(e) => {
                let tries = attempt + 1;
                panic!("{what} failed (attempt {tries} of {ATTEMPTS}): {e}")
            }
        }
    }
    unreachable!("the last attempt returns or panics")
}

/// A claim of `who` on `election`. The nonce is derived from the name, so every call for the
/// same name is the same claimant (as one elector retrying); [`other_claim`] makes a second
/// claimant with the same id.
pub(super) fn claim(election: &ElectionName, who: &CandidateId, ttl: Ttl) -> Claim {
    // FNV-1a: any fixed function of the name will do.
    let hash = who
        .as_str()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
        });
    Claim {
        election: election.clone(),
        candidate: who.clone(),
        nonce: Nonce::new((hash >> 1).max(1)).expect("in range"),
        ttl,
        value: None,
    }
}

/// A claim with the same candidate id as `of` and another nonce: a second process started with
/// the same id.
fn other_claim(of: &Claim) -> Claim {
    let nonce = if of.nonce.get() == 1 {
        2
    } else {
        of.nonce.get() - 1
    };
    Claim {
        nonce: Nonce::new(nonce).expect("in range"),
        ..of.clone()
    }
}

/// Acquires and insists on a grant.
pub(super) async fn grant(
    store: &Store,
    election: &ElectionName,
    who: &CandidateId,
    ttl: Ttl,
) -> Lease {
    grant_claim(store, &claim(election, who, ttl)).await
}

async fn grant_claim(store: &Store, claim: &Claim) -> Lease {
    let what = format!("try_acquire({} by {})", claim.election, claim.candidate);
    match retried(&what, || store.try_acquire(claim)).await.0 {
        Acquire::Granted(lease) => {
            let expected = claim.granted(lease.term);
            assert_eq!(
                lease, expected,
                "{what}: the granted lease must name the claim's election, holder, nonce and TTL"
            );
            assert!(lease.term > Term::ZERO, "{what}: granted term 0");
            lease
        }
        Acquire::Held(info) => panic!(
            "{} should have been granted {}, but was told {} holds it in term {}",
            claim.candidate, claim.election, info.holder, info.term
        ),
    }
}

/// Acquires and insists on being told the election is held.
async fn held(store: &Store, election: &ElectionName, who: &CandidateId, ttl: Ttl) -> LeaderInfo {
    held_claim(store, &claim(election, who, ttl)).await
}

async fn held_claim(store: &Store, claim: &Claim) -> LeaderInfo {
    let what = format!("try_acquire({} by {})", claim.election, claim.candidate);
    match retried(&what, || store.try_acquire(claim)).await.0 {
        Acquire::Held(info) => info,
        Acquire::Granted(lease) => panic!(
            "{} should have found {} held, but was granted term {}",
            claim.candidate, claim.election, lease.term
        ),
    }
}

async fn leader(store: &Store, election: &ElectionName) -> Option<LeaderInfo> {
    retried(&format!("leader({election})"), || store.leader(election))
        .await
        .0
}

async fn renew(store: &Store, lease: &Lease) -> Renewal {
    let what = format!("renew({} term {})", lease.election, lease.term);
    retried(&what, || store.renew(lease)).await.0
}

/// Releases, and returns the answer.
async fn release(store: &Store, lease: &Lease) -> Release {
    let what = format!("release({} term {})", lease.election, lease.term);
    retried(&what, || store.release(lease)).await.0
}

/// Releases the live `lease` and insists on it: `Released`, or `NotHeld` after an attempt whose
/// outcome is unknown (that attempt may have released it).
pub(super) async fn released(store: &Store, lease: &Lease) {
    let what = format!("release({} term {})", lease.election, lease.term);
    match retried(&what, || store.release(lease)).await {
        (Release::Released, _) | (Release::NotHeld, true) => {}
        (Release::NotHeld, false) => panic!("{what}: the live lease was not released (NotHeld)"),
    }
}

/// Panics unless `later` is a new term above `earlier`.
fn assert_above(later: &Lease, earlier: &Lease, what: &str) {
    assert!(
        later.term > earlier.term,
        "{what}: granted term {} is not above the earlier term {}",
        later.term,
        earlier.term
    );
}

fn assert_leads(info: Option<LeaderInfo>, lease: &Lease, context: &str) {
    let info =
        info.unwrap_or_else(|| panic!("{context}: leader() says vacant, {} leads", lease.holder));
    assert_eq!(
        info.holder, lease.holder,
        "{context}: leader() names the wrong holder"
    );
    assert_eq!(
        info.term, lease.term,
        "{context}: leader() reports the wrong term"
    );
    assert!(
        info.remaining > Duration::ZERO && info.remaining <= lease.ttl.get(),
        "{context}: remaining {:?} outside (0, {:?}]",
        info.remaining,
        lease.ttl.get()
    );
}

/// A vacant election has no leader; the first acquire is granted with a term ≥ 1 and
/// `leader()` then reports that lease.
pub async fn first_acquire_is_granted(store: Store, settings: Settings) {
    let election = fresh_election("first_acquire_is_granted");
    assert_eq!(
        leader(&store, &election).await,
        None,
        "a fresh election has no leader"
    );
    let lease = grant(&store, &election, &id("a"), settings.ttl).await;
    assert!(
        lease.term >= Term(1),
        "the first term is at least 1, got {}",
        lease.term
    );
    assert_leads(
        leader(&store, &election).await,
        &lease,
        "after the first grant",
    );
}

/// 32 candidates acquiring at once: exactly one is granted; every other is told the winner.
pub async fn exclusion_under_concurrent_acquirers(store: Store, settings: Settings) {
    let election = fresh_election("exclusion_under_concurrent_acquirers");
    let tasks: Vec<_> = (0..32)
        .map(|n| {
            let (store, election) = (store.clone(), election.clone());
            tokio::spawn(async move {
                let claim = claim(&election, &id(&format!("c{n}")), settings.ttl);
                retried("a concurrent try_acquire", || store.try_acquire(&claim))
                    .await
                    .0
            })
        })
        .collect();
    let mut granted = Vec::new();
    let mut held = Vec::new();
    for task in tasks {
        match task.await.expect("acquire task panicked") {
            Acquire::Granted(lease) => granted.push(lease),
            Acquire::Held(info) => held.push(info),
        }
    }
    assert_eq!(
        granted.len(),
        1,
        "exactly one of 32 concurrent acquirers wins: {granted:?}"
    );
    let winner = &granted[0];
    for info in held {
        assert_eq!(
            info.holder, winner.holder,
            "a loser was told of another holder"
        );
        assert_eq!(info.term, winner.term, "a loser was told of another term");
    }
}

/// Acquiring again while holding the live lease renews it: granted, same term.
pub async fn reacquire_by_holder_keeps_term(store: Store, settings: Settings) {
    let election = fresh_election("reacquire_by_holder_keeps_term");
    let first = grant(&store, &election, &id("a"), settings.ttl).await;
    let again = grant(&store, &election, &id("a"), settings.ttl).await;
    assert_eq!(
        again.term, first.term,
        "re-acquire by the live holder must keep the term"
    );
    held(&store, &election, &id("b"), settings.ttl).await;
}

/// Renewing extends the lease by its TTL from the coordinator's now and keeps the term.
pub async fn renew_extends_and_keeps_term(store: Store, settings: Settings) {
    let election = fresh_election("renew_extends_and_keeps_term");
    let lease = grant(&store, &election, &id("a"), settings.ttl).await;
    sleep(settings.ttl_duration() / 2).await;
    match renew(&store, &lease).await {
        Renewal::Renewed(renewed) => assert_eq!(renewed.term, lease.term, "renew changed the term"),
        Renewal::Lost => panic!("renewing a live lease was refused"),
    }
    let info = leader(&store, &election).await;
    assert_leads(info.clone(), &lease, "after renew");
    let remaining = info.expect("checked").remaining;
    assert!(
        remaining > settings.ttl_duration() * 3 / 5,
        "after renewing at half the TTL, {remaining:?} left: the lease was not extended"
    );
    sleep(settings.ttl_duration() * 3 / 4).await;
    assert_leads(
        leader(&store, &election).await,
        &lease,
        "past the original expiry, the renewed lease",
    );
}

/// Each grant to a candidate that did not hold the live lease takes the next term.
pub async fn new_grant_increments_term(store: Store, settings: Settings) {
    let election = fresh_election("new_grant_increments_term");
    let mut previous = grant(&store, &election, &id("a"), settings.ttl).await;
    for who in ["b", "a", "a", "c"] {
        released(&store, &previous).await;
        let lease = grant(&store, &election, &id(who), settings.ttl).await;
        assert_above(
            &lease,
            &previous,
            &format!("grant to {who} after a release"),
        );
        previous = lease;
    }
}

/// A second claimant with the same candidate id (another nonce: a second process started with
/// the same id) is told the election is held, cannot renew or release the live lease with its
/// own nonce, and is granted a new term only once the lease ends.
pub async fn same_id_with_another_nonce_is_held(store: Store, settings: Settings) {
    let election = fresh_election("same_id_with_another_nonce_is_held");
    let first = claim(&election, &id("twin"), settings.ttl);
    let lease = grant_claim(&store, &first).await;
    let second = other_claim(&first);
    let info = held_claim(&store, &second).await;
    assert_eq!(
        (&info.holder, info.term),
        (&lease.holder, lease.term),
        "the twin is told of the first claim's lease"
    );
    let twin_lease = Lease {
        nonce: second.nonce,
        ..lease.clone()
    };
    assert_eq!(
        renew(&store, &twin_lease).await,
        Renewal::Lost,
        "renew with the holder's id and term but another nonce"
    );
    assert_eq!(
        release(&store, &twin_lease).await,
        Release::NotHeld,
        "release with the holder's id and term but another nonce"
    );
    assert_leads(
        leader(&store, &election).await,
        &lease,
        "after the twin's requests",
    );
    assert_eq!(
        grant_claim(&store, &first).await.term,
        lease.term,
        "the first claim still re-acquires its own lease"
    );
    released(&store, &lease).await;
    let next = grant_claim(&store, &second).await;
    assert_above(&next, &lease, "the twin's grant after the release");
}

/// Renewing a lease that is no longer the live one (other term, other holder) is refused and
/// changes nothing.
pub async fn stale_renew_is_refused(store: Store, settings: Settings) {
    let election = fresh_election("stale_renew_is_refused");
    let old = grant(&store, &election, &id("a"), settings.ttl).await;
    released(&store, &old).await;
    let current = grant(&store, &election, &id("b"), settings.ttl).await;
    assert_eq!(
        renew(&store, &old).await,
        Renewal::Lost,
        "renew with an old term and holder"
    );
    let wrong_holder = Lease {
        holder: id("a"),
        ..current.clone()
    };
    assert_eq!(
        renew(&store, &wrong_holder).await,
        Renewal::Lost,
        "renew by a non-holder"
    );
    assert_leads(
        leader(&store, &election).await,
        &current,
        "after stale renews",
    );
    assert!(matches!(renew(&store, &current).await, Renewal::Renewed(_)));
}

/// Releasing a lease that is no longer the live one is refused and changes nothing.
pub async fn stale_release_is_refused(store: Store, settings: Settings) {
    let election = fresh_election("stale_release_is_refused");
    let old = grant(&store, &election, &id("a"), settings.ttl).await;
    released(&store, &old).await;
    assert_eq!(
        release(&store, &old).await,
        Release::NotHeld,
        "a second release"
    );
    let current = grant(&store, &election, &id("b"), settings.ttl).await;
    assert_eq!(
        release(&store, &old).await,
        Release::NotHeld,
        "release with an old term"
    );
    let wrong_holder = Lease {
        holder: id("a"),
        ..current.clone()
    };
    assert_eq!(
        release(&store, &wrong_holder).await,
        Release::NotHeld,
        "release by a non-holder"
    );
    assert_leads(
        leader(&store, &election).await,
        &current,
        "after stale releases",
    );
    held(&store, &election, &id("c"), settings.ttl).await;
}

/// Leases with terms never granted, or for elections never acquired, are refused.
pub async fn forged_lease_is_refused(store: Store, settings: Settings) {
    let election = fresh_election("forged_lease_is_refused");
    let lease = grant(&store, &election, &id("a"), settings.ttl).await;
    for term in [
        Term(lease.term.0 + 1),
        Term(lease.term.0 + 1000),
        Term(u64::MAX),
    ] {
        let forged = Lease {
            term,
            ..lease.clone()
        };
        assert_eq!(
            renew(&store, &forged).await,
            Renewal::Lost,
            "renew with term {term}"
        );
        assert_eq!(
            release(&store, &forged).await,
            Release::NotHeld,
            "release with term {term}"
        );
    }
    assert_leads(
        leader(&store, &election).await,
        &lease,
        "after forged requests",
    );
    let elsewhere = Lease {
        election: fresh_election("forged_lease_is_refused.never"),
        ..lease.clone()
    };
    assert_eq!(
        renew(&store, &elsewhere).await,
        Renewal::Lost,
        "renew in an unknown election"
    );
    assert_eq!(release(&store, &elsewhere).await, Release::NotHeld);
    assert_eq!(leader(&store, &elsewhere.election).await, None);
}

/// Once the TTL has passed without renewal, another candidate is granted the next term, and the
/// old holder was told the remaining time while it lasted.
pub async fn expiry_makes_election_acquirable(store: Store, settings: Settings) {
    let election = fresh_election("expiry_makes_election_acquirable");
    let lease = grant(&store, &election, &id("a"), settings.ttl).await;
    let info = held(&store, &election, &id("b"), settings.ttl).await;
    assert_eq!(
        (info.holder.clone(), info.term),
        (lease.holder.clone(), lease.term)
    );
    assert!(
        info.remaining > Duration::ZERO && info.remaining <= settings.ttl_duration(),
        "held reports remaining {:?}, outside (0, {:?}]",
        info.remaining,
        settings.ttl_duration()
    );
    sleep(info.remaining + settings.expiry_slack).await;
    assert_eq!(
        leader(&store, &election).await,
        None,
        "an expired lease still has a leader"
    );
    let next = grant(&store, &election, &id("b"), settings.ttl).await;
    assert_above(&next, &lease, "grant after expiry");
}

/// A lease that expired cannot be renewed, even if nobody took it; its holder re-acquiring
/// gets a new term.
pub async fn renew_after_expiry_is_refused(store: Store, settings: Settings) {
    let election = fresh_election("renew_after_expiry_is_refused");
    let lease = grant(&store, &election, &id("a"), settings.ttl).await;
    sleep(settings.ttl_duration() + settings.expiry_slack).await;
    assert_eq!(
        renew(&store, &lease).await,
        Renewal::Lost,
        "renew after expiry"
    );
    assert_eq!(
        release(&store, &lease).await,
        Release::NotHeld,
        "release after expiry"
    );
    let again = grant(&store, &election, &id("a"), settings.ttl).await;
    assert_above(&again, &lease, "the same holder after expiry");
}

/// Release ends the lease at once (no TTL wait) and keeps the term counter.
pub async fn release_frees_at_once_and_keeps_term(store: Store, settings: Settings) {
    let election = fresh_election("release_frees_at_once_and_keeps_term");
    let lease = grant(&store, &election, &id("a"), settings.ttl).await;
    released(&store, &lease).await;
    assert_eq!(
        renew(&store, &lease).await,
        Renewal::Lost,
        "renew after release"
    );
    let next = grant(&store, &election, &id("b"), settings.ttl).await;
    assert_above(&next, &lease, "grant after a release (the counter is kept)");
}

/// `leader()` follows the lease through grant, renew, release and expiry.
pub async fn leader_reports_the_truth(store: Store, settings: Settings) {
    let election = fresh_election("leader_reports_the_truth");
    assert_eq!(leader(&store, &election).await, None, "vacant");
    let lease = grant(&store, &election, &id("a"), settings.ttl).await;
    assert_leads(leader(&store, &election).await, &lease, "after grant");
    released(&store, &lease).await;
    assert_eq!(leader(&store, &election).await, None, "after release");
    let lease = grant(&store, &election, &id("b"), settings.ttl).await;
    assert_leads(
        leader(&store, &election).await,
        &lease,
        "after a second grant",
    );
    sleep(settings.ttl_duration() + settings.expiry_slack).await;
    assert_eq!(leader(&store, &election).await, None, "after expiry");
}

/// Elections on one store do not affect each other.
pub async fn elections_are_independent(store: Store, settings: Settings) {
    let one = fresh_election("elections_are_independent.one");
    let two = fresh_election("elections_are_independent.two");
    let a = grant(&store, &one, &id("a"), settings.ttl).await;
    let b = grant(&store, &two, &id("b"), settings.ttl).await;
    released(&store, &a).await;
    assert_eq!(leader(&store, &one).await, None);
    assert_leads(leader(&store, &two).await, &b, "the other election");
    let lease_in_two = Lease {
        election: two.clone(),
        ..a.clone()
    };
    assert_eq!(
        renew(&store, &lease_in_two).await,
        Renewal::Lost,
        "a lease of one election in another"
    );
}

/// Invalid names and TTLs are rejected with typed errors before reaching any store, and every
/// valid name — the whole alphabet, at the maximum length — works with the store.
pub async fn names_and_ttls_are_validated(store: Store, settings: Settings) {
    for bad in [
        "",
        "white space",
        "quote\"",
        "brace{x}",
        "star*",
        "nul\0",
        "é",
    ] {
        assert!(
            matches!(ElectionName::new(bad), Err(Error::InvalidName { .. })),
            "{bad:?}"
        );
        assert!(
            matches!(CandidateId::new(bad), Err(Error::InvalidName { .. })),
            "{bad:?}"
        );
    }
    assert!(matches!(
        ElectionName::new("x".repeat(129)),
        Err(Error::InvalidName { .. })
    ));
    for bad in [
        Duration::ZERO,
        Duration::from_millis(1),
        Duration::from_secs(1 << 40),
    ] {
        assert!(
            matches!(Ttl::new(bad), Err(Error::InvalidTtl { .. })),
            "{bad:?}"
        );
    }
    let prefix = fresh_election("v");
    let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:/-";
    let mut long = format!("{prefix}/{alphabet}");
    while long.len() < 128 {
        long.push('-');
    }
    long.truncate(128);
    let election = ElectionName::new(&long).expect("a valid 128-byte name");
    let holder = CandidateId::new(format!("{alphabet}{}", "/".repeat(128 - alphabet.len())))
        .expect("a valid 128-byte id");
    let lease = grant(&store, &election, &holder, settings.ttl).await;
    assert_leads(
        leader(&store, &election).await,
        &lease,
        "with maximal names",
    );
    released(&store, &lease).await;
}

/// When the store offers a change feed, a release wakes it within the handover bound.
pub async fn release_wakes_subscribers(store: Store, settings: Settings) {
    let election = fresh_election("release_wakes_subscribers");
    let feed = store
        .subscribe(&election)
        .await
        .unwrap_or_else(|e| panic!("subscribe failed: {e}"));
    let Some(mut feed) = feed else {
        assert!(
            !settings.change_feed,
            "the settings expect a change feed, subscribe gave none"
        );
        return;
    };
    let lease = grant(&store, &election, &id("a"), settings.ttl).await;
    feed.mark_seen();
    released(&store, &lease).await;
    match tokio::time::timeout(settings.handover_bound, feed.changed()).await {
        Ok(true) => {}
        Ok(false) => panic!("the change feed ended instead of reporting the release"),
        Err(_) => panic!(
            "the change feed did not report a release within {:?}",
            settings.handover_bound
        ),
    }
}

/// A value published with a claim is stored with the lease: the grant, `leader()` and a
/// competitor's `Held` answer carry it, a renewal keeps it, and the next holder's grant
/// replaces it (with nothing, when it publishes none). The longest value, in multi-byte UTF-8,
/// an empty one and ones that look like field paths or SQL come back byte for byte.
pub async fn leader_value_travels_with_the_lease(store: Store, settings: Settings) {
    let election = fresh_election("leader_value_travels_with_the_lease");
    // 1024 bytes: 'é' is two bytes in UTF-8.
    let longest = "é".repeat(LeaderValue::MAX_LEN / 2);
    // "$holder" and the quotes: a value is data, never an expression or a statement.
    for text in ["10.0.0.7:8080", longest.as_str(), "", "$holder", "a'b\"c`d"] {
        let value = LeaderValue::new(text).expect("a valid value");
        let a = claim(&election, &id("a"), settings.ttl).with_value(Some(value.clone()));
        let lease = grant_claim(&store, &a).await;
        assert_eq!(
            lease.value.as_ref(),
            Some(&value),
            "the grant carries the value"
        );
        let seen = leader(&store, &election).await.expect("a leads");
        assert_eq!(
            seen.value.as_ref(),
            Some(&value),
            "leader() carries the value"
        );
        let held = held(&store, &election, &id("b"), settings.ttl).await;
        assert_eq!(held.value.as_ref(), Some(&value), "Held carries the value");
        assert!(matches!(renew(&store, &lease).await, Renewal::Renewed(_)));
        let seen = leader(&store, &election).await.expect("a still leads");
        assert_eq!(
            seen.value.as_ref(),
            Some(&value),
            "a renewal keeps the value"
        );
        released(&store, &lease).await;
    }
    // The next holder publishes nothing: the old value is gone.
    let b = claim(&election, &id("b"), settings.ttl);
    let lease = grant_claim(&store, &b).await;
    let seen = leader(&store, &election).await.expect("b leads");
    assert_eq!(seen.holder, id("b"));
    assert_eq!(
        seen.value, None,
        "a new grant without a value keeps no old value"
    );
    released(&store, &lease).await;
}
