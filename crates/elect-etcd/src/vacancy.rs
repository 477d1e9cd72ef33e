//! The stale-etcd-leader guard: when may a candidate trust that a vacant election is vacant?
//!
//! etcd deletes an election's key when its lease is revoked, and its leader revokes a lease
//! when *its* lessor says the lease expired. After an etcd leader change, the old leader's
//! lessor is stale: a member that was frozen (SIGSTOP, a stalled disk or CPU) while another
//! member took over still believes it leads when it resumes, and its revoke loop can run before
//! its Raft loop has heard of the new term. Its `LeaseRevoke` is forwarded to the new leader
//! and applied, ending a lease the holder kept alive through the new leader moments before
//! (etcd-io/etcd#12528, #15247; #16822 added a leadership check in 3.5.13, which a resumed
//! process still passes until it processes the new term; the maintainers call an early
//! revocation of "tens or even hundreds of milliseconds" acceptable for etcd leases). The
//! holder still believes it leads until its local deadline, up to a TTL after its last
//! keep-alive, so a candidate granted the vacant key at once would lead beside it (seen on CI,
//! 2026-12-04: 498 ms of two believers after a 6 s freeze of the etcd leader).
//!
//! What this guard knows: the store remembers each election's holder as it last saw it, with
//! the etcd Raft term of the reply in which it first saw that holder's key. When the key is
//! later found missing, the vacancy is trusted at once when
//! - the holder released it: the release's transaction writes a marker (`<key>#released`,
//!   the released term) beside deleting the key; or
//! - etcd's Raft term is still the one it first saw the holder under: no leader change since,
//!   so no stale lessor can have revoked the lease (a revocation by the only leader is the
//!   lease's real expiry, by which time the holder's deadline has passed); or
//! - it is this claim's own record.
//!
//! Otherwise the key may have been revoked early, and the candidate treats the old holder as
//! leading for one more of its TTLs from the moment it found the key missing: the holder's
//! deadline is at most a TTL after its last keep-alive, which etcd acknowledged before the
//! revocation. Cost: a failover that follows an etcd leader change (or a foreign deletion of
//! the key) takes one more TTL; hand-overs by release and failovers under a steady etcd leader
//! do not.
//!
//! What it cannot know: a candidate that never saw the old holder (it started after the key
//! vanished), or that first saw it only after the etcd leader change, trusts the vacancy.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use elect_core::{CandidateId, Claim, LeaderInfo, LeaderValue, Term};
use tracing::warn;

use crate::record::Record;

/// What a release's marker key adds to the election's key. `#` is not allowed in election
/// names, so no election's key is another's marker.
pub(crate) const RELEASED_SUFFIX: &str = "#released";

/// The term a release marker's value names; `None` when it does not parse (a marker that
/// explains nothing: the vacancy is then not trusted).
pub(crate) fn marker_term(value: &[u8]) -> Option<u64> {
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// The marker a release writes beside deleting `key`: its value is the released term.
pub(crate) fn released_key(key: &str) -> String {
    format!("{key}{RELEASED_SUFFIX}")
}

/// The holder of each election as this store last saw it.
#[derive(Debug, Default)]
pub(crate) struct Sightings {
    by_key: Mutex<HashMap<String, Sighting>>,
}

#[derive(Debug)]
struct Sighting {
    holder: CandidateId,
    nonce: u64,
    term: Term,
    value: Option<LeaderValue>,
    ttl: Duration,
    /// etcd's Raft term in the reply that first showed this holder's key.
    raft_term: u64,
    /// Set when the key was first found missing without an explanation.
    guard_until: Option<Instant>,
}

impl Sightings {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Sighting>> {
        self.by_key.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `record` is at `key`, as a reply under etcd Raft term `raft_term` showed.
    pub(crate) fn saw(&self, key: &str, record: &Record, raft_term: u64) {
        let mut by_key = self.lock();
        if let Some(known) = by_key.get(key) {
            if known.term == record.term {
                return;
            }
        }
        by_key.insert(
            key.to_owned(),
            Sighting {
                holder: record.holder.clone(),
                nonce: record.nonce,
                term: record.term,
                value: record.value.clone(),
                ttl: record.ttl,
                raft_term,
                guard_until: None,
            },
        );
    }

    /// Whether a release of `term` (which the watch saw) explains `key`'s vacancy: the holder
    /// last seen there had that term, or none was seen. The holder is forgotten then.
    pub(crate) fn released(&self, key: &str, term: u64) -> bool {
        let mut by_key = self.lock();
        match by_key.get(key) {
            Some(known) if known.term.0 != term => false,
            _ => {
                by_key.remove(key);
                true
            }
        }
    }

    /// Forgets `key`'s holder (this store was just granted it).
    pub(crate) fn forget(&self, key: &str) {
        self.lock().remove(key);
    }

    /// `key` was found missing by `claim` at `now`, in a reply under Raft term `raft_term`
    /// that showed the release marker `released` (a term), if any. `None` when the vacancy can
    /// be trusted; else the old holder, with how much longer it may believe it leads.
    pub(crate) fn vacant(
        &self,
        key: &str,
        claim: &Claim,
        released: Option<u64>,
        raft_term: u64,
        now: Instant,
    ) -> Option<LeaderInfo> {
        let mut by_key = self.lock();
        let known = by_key.get_mut(key)?;
        let own = known.holder == claim.candidate && known.nonce == claim.nonce.get();
        let trusted = own || released == Some(known.term.0) || raft_term <= known.raft_term;
        if !trusted && known.guard_until.is_none() {
            warn!(
                key,
                holder = %known.holder,
                term = known.term.0,
                first_seen_raft_term = known.raft_term,
                raft_term,
                "etcd: the election's key vanished after an etcd leader change without a \
                 release: it may have been revoked early by a stale etcd leader; waiting one \
                 TTL before campaigning"
            );
        }
        let until = match known.guard_until {
            _ if trusted => now,
            Some(until) => until,
            None => *known.guard_until.insert(now + known.ttl),
        };
        if now >= until {
            by_key.remove(key);
            return None;
        }
        Some(LeaderInfo {
            holder: known.holder.clone(),
            term: known.term,
            remaining: until - now,
            value: known.value.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use elect_core::{ElectionName, Ttl};

    fn claim(who: &str) -> Claim {
        Claim::new(
            ElectionName::new("jobs").unwrap(),
            CandidateId::new(who).unwrap(),
            Ttl::from_millis(3000).unwrap(),
        )
    }

    fn record(of: &Claim, term: u64) -> Record {
        crate::record::decode("k", &crate::record::encode(of), term as i64, 7).unwrap()
    }

    #[test]
    fn a_vacancy_under_the_same_raft_term_or_after_a_release_is_trusted() {
        let (a, b) = (claim("a"), claim("b"));
        let sightings = Sightings::default();
        let now = Instant::now();
        assert!(
            sightings.vacant("k", &b, None, 9, now).is_none(),
            "never saw a holder"
        );
        sightings.saw("k", &record(&a, 40), 5);
        assert!(
            sightings.vacant("k", &b, None, 5, now).is_none(),
            "same raft term"
        );
        sightings.saw("k", &record(&a, 41), 5);
        assert!(
            sightings.vacant("k", &b, Some(41), 6, now).is_none(),
            "released, though the raft term moved"
        );
        sightings.saw("k", &record(&b, 42), 5);
        assert!(
            sightings.vacant("k", &b, None, 6, now).is_none(),
            "its own record"
        );
    }

    #[test]
    fn an_unexplained_vacancy_after_a_raft_term_change_waits_one_ttl() {
        let (a, b) = (claim("a"), claim("b"));
        let sightings = Sightings::default();
        let now = Instant::now();
        sightings.saw("k", &record(&a, 40), 5);
        // A later sighting of the same holder keeps the raft term of the first.
        sightings.saw("k", &record(&a, 40), 6);
        let held = sightings
            .vacant("k", &b, Some(39), 6, now)
            .expect("a marker of an older term explains nothing");
        assert_eq!(held.holder, a.candidate);
        assert_eq!(held.term, Term(40));
        assert_eq!(held.remaining, Duration::from_millis(3000));
        let later = sightings
            .vacant("k", &b, None, 6, now + Duration::from_millis(1000))
            .expect("still guarded");
        assert_eq!(
            later.remaining,
            Duration::from_millis(2000),
            "from the first finding"
        );
        assert!(sightings
            .vacant("k", &b, None, 6, now + Duration::from_millis(3000))
            .is_none());
        assert!(
            sightings.vacant("k", &b, None, 6, now).is_none(),
            "forgotten once trusted"
        );
    }

    #[test]
    fn a_release_the_watch_saw_explains_only_the_term_it_released() {
        let a = claim("a");
        let sightings = Sightings::default();
        assert!(
            sightings.released("k", 40),
            "no holder seen: nothing to contradict it"
        );
        sightings.saw("k", &record(&a, 41), 5);
        assert!(
            !sightings.released("k", 40),
            "an older release says nothing of term 41"
        );
        assert!(sightings.released("k", 41));
        assert!(
            sightings
                .vacant("k", &claim("b"), None, 9, Instant::now())
                .is_none(),
            "the released holder is forgotten"
        );
    }
}
