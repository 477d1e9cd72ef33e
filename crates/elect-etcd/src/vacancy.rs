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
//! What this guard knows: every grant writes the election's marker (`<key>#released`, a key
//! without a lease, so it outlives the election's key) in the transaction that creates the key:
//! `granted <raft term> <ttl ms> <nonce> <holder>`, where the Raft term is the one etcd's reply
//! to the grant's `LeaseGrant` named (the transaction, sent before that reply is back, carries
//! the highest term the store has seen, and the marker is rewritten before the grant is
//! reported when they differ). Every release overwrites it with the released term, in the
//! transaction that deletes the key. A candidate that finds the election's key missing reads
//! the marker beside it and trusts the vacancy at once when
//! - the marker names a release (a release is no early revocation); or
//! - the marker names a grant made under etcd's current Raft term: no leader change since the
//!   lease was granted, so no leader but the current one has ever known the lease (a member
//!   that led under an older term and resumes stale can only revoke leases it applied while it
//!   led), and a revocation by the current leader is the lease's real expiry, by which time the
//!   holder's deadline has passed; or
//! - the marker names this claim's own grant; or
//! - there is no marker: the election was never granted (or someone deleted the marker).
//!
//! Otherwise the key may have been revoked early, and the candidate treats the old holder as
//! leading for one more of its TTLs from the moment it found the key missing: the holder's
//! deadline is at most a TTL after its last keep-alive, which etcd acknowledged before the
//! revocation. Cost: a failover whose lease was granted before an etcd leader change takes one
//! more TTL; hand-overs by release and failovers under a steady etcd leader do not.
//!
//! Every way to a grant passes this check, but two: a release the watch saw (a release is no
//! early revocation) and the candidate's own lease found expired. In particular a holder's
//! lease found gone between the read of its key and `LeaseTimeToLive` is read again and
//! checked here (it was granted at once before: the second gap the chaos runs found).
//!
//! Because the marker is in etcd, this holds for a candidate that never saw the old holder (it
//! started after the key vanished) as for one that did. (An earlier version remembered the Raft
//! term at which each store *first saw* the holder: a candidate that first saw it only after the
//! etcd leader change trusted the vacancy, and a 10-minute chaos run found that overlap.) What
//! the guard cannot catch: a foreign client deleting the key under an unchanged Raft term.

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
    term: Term,
    value: Option<LeaderValue>,
    ttl: Duration,
    /// Set when the key was first found missing without an explanation.
    guard_until: Option<Instant>,
}

impl Sightings {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Sighting>> {
        self.by_key.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `record` is at `key`, as a reply showed.
    pub(crate) fn saw(&self, key: &str, record: &Record) {
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
                term: record.term,
                value: record.value.clone(),
                ttl: record.ttl,
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

    /// `key` was found missing by `claim` at `now`, in a reply under Raft term `raft_term` that
    /// showed the election's `marker`, if any. `None` when the vacancy can be trusted; else the
    /// old holder, with how much longer it may believe it leads.
    pub(crate) fn vacant(
        &self,
        key: &str,
        claim: &Claim,
        marker: Option<&Marker>,
        raft_term: u64,
        now: Instant,
    ) -> Option<LeaderInfo> {
        let mut by_key = self.lock();
        let seen = by_key.get(key).map(|known| known.term.0);
        // Whether the vacancy is explained, and else the grant the marker names, if it does.
        let (trusted, granted) = match marker {
            None => (true, None),
            // A release, unless this store saw a later grant (one that wrote no marker).
            Some(Marker::Released { term }) => (seen.is_none_or(|seen| seen <= *term), None),
            Some(Marker::Granted(g)) => {
                let own =
                    g.holder.as_ref() == Some(&claim.candidate) && g.nonce == claim.nonce.get();
                (own || raft_term <= g.raft_term, Some(g))
            }
            // A marker elect did not write explains nothing: what this store saw is guarded.
            Some(Marker::Unknown) => (seen.is_none(), None),
        };
        if !trusted {
            // The holder to guard: the grant the marker names (this store may never have seen
            // it), else the one this store saw.
            let fresh = granted.filter(|g| seen != Some(g.term)).and_then(|g| {
                Some(Sighting {
                    holder: g.holder.clone()?,
                    term: Term(g.term),
                    value: None,
                    ttl: g.ttl,
                    guard_until: None,
                })
            });
            if let Some(sighting) = fresh {
                by_key.insert(key.to_owned(), sighting);
            }
        }
        let known = match by_key.get_mut(key) {
            Some(known) if !trusted => known,
            _ => {
                by_key.remove(key);
                return None;
            }
        };
        if known.guard_until.is_none() {
            warn!(
                key,
                holder = %known.holder,
                term = known.term.0,
                granted_under_raft_term = granted.map(|g| g.raft_term),
                raft_term,
                "etcd: the election's key vanished after an etcd leader change without a \
                 release: it may have been revoked early by a stale etcd leader; waiting one \
                 TTL before campaigning"
            );
        }
        let until = *known.guard_until.get_or_insert(now + known.ttl);
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

/// What the election's marker says: the last release, or the last grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Marker {
    /// A release of this term (its value: the term).
    Released {
        /// The released term.
        term: u64,
    },
    /// A grant (`granted <raft term> <ttl ms> <nonce> <holder>`).
    Granted(Granted),
    /// Something elect did not write.
    Unknown,
}

/// A grant, as its marker records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Granted {
    /// The grant's term: the marker's mod revision, written in the grant's transaction.
    pub(crate) term: u64,
    /// etcd's Raft term in the reply to the grant's `LeaseGrant`.
    pub(crate) raft_term: u64,
    /// The TTL the holder claimed.
    pub(crate) ttl: Duration,
    /// The holder's claim.
    pub(crate) nonce: u64,
    /// The holder (`None` if it does not parse as a candidate id).
    pub(crate) holder: Option<CandidateId>,
}

/// The marker a grant of `claim` writes, the grant's `LeaseGrant` having been answered under
/// etcd Raft term `raft_term`.
pub(crate) fn granted_marker(claim: &Claim, raft_term: u64) -> String {
    format!(
        "granted {raft_term} {} {} {}",
        claim.ttl.as_millis(),
        claim.nonce.get(),
        claim.candidate
    )
}

/// Parses a marker's `value`, written at `mod_revision`.
pub(crate) fn parse_marker(value: &[u8], mod_revision: i64) -> Marker {
    if let Some(term) = marker_term(value) {
        return Marker::Released { term };
    }
    let parsed = (|| {
        let text = std::str::from_utf8(value).ok()?.strip_prefix("granted ")?;
        let mut words = text.splitn(4, ' ');
        let raft_term = words.next()?.parse().ok()?;
        let ttl = Duration::from_millis(words.next()?.parse().ok()?);
        let nonce = words.next()?.parse().ok()?;
        let holder = CandidateId::new(words.next()?).ok();
        Some(Granted {
            term: u64::try_from(mod_revision).ok()?,
            raft_term,
            ttl,
            nonce,
            holder,
        })
    })();
    parsed.map_or(Marker::Unknown, Marker::Granted)
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

    /// The marker `claim`'s grant of `term` wrote under Raft term `raft_term`.
    fn granted(claim: &Claim, term: u64, raft_term: u64) -> Marker {
        parse_marker(granted_marker(claim, raft_term).as_bytes(), term as i64)
    }

    #[test]
    fn markers_round_trip_and_junk_is_unknown() {
        let a = claim("a");
        let Marker::Granted(g) = granted(&a, 40, 7) else {
            panic!("a grant's marker")
        };
        assert_eq!(
            (g.term, g.raft_term, g.ttl, g.nonce, g.holder),
            (
                40,
                7,
                Duration::from_millis(3000),
                a.nonce.get(),
                Some(a.candidate.clone())
            )
        );
        assert_eq!(parse_marker(b"41", 50), Marker::Released { term: 41 });
        for junk in [
            &b"granted"[..],
            b"granted x 1 2 a",
            b"",
            b"\xff",
            b"released 4",
        ] {
            assert_eq!(parse_marker(junk, 3), Marker::Unknown, "{junk:?}");
        }
    }

    #[test]
    fn a_vacancy_under_the_grants_raft_term_or_after_a_release_is_trusted() {
        let (a, b) = (claim("a"), claim("b"));
        let sightings = Sightings::default();
        let now = Instant::now();
        assert!(
            sightings.vacant("k", &b, None, 9, now).is_none(),
            "never granted"
        );
        sightings.saw("k", &record(&a, 40));
        assert!(
            sightings
                .vacant("k", &b, Some(&granted(&a, 40, 5)), 5, now)
                .is_none(),
            "same raft term"
        );
        sightings.saw("k", &record(&a, 41));
        assert!(
            sightings
                .vacant("k", &b, Some(&Marker::Released { term: 41 }), 6, now)
                .is_none(),
            "released, though the raft term moved"
        );
        assert!(
            sightings
                .vacant("k", &b, Some(&granted(&b, 42, 5)), 6, now)
                .is_none(),
            "its own grant"
        );
    }

    #[test]
    fn an_unexplained_vacancy_after_a_raft_term_change_waits_one_ttl() {
        let (a, b) = (claim("a"), claim("b"));
        let sightings = Sightings::default();
        let now = Instant::now();
        sightings.saw("k", &record(&a, 40));
        let marker = granted(&a, 40, 5);
        let held = sightings
            .vacant("k", &b, Some(&marker), 6, now)
            .expect("granted under raft term 5, missing under 6");
        assert_eq!(held.holder, a.candidate);
        assert_eq!(held.term, Term(40));
        assert_eq!(held.remaining, Duration::from_millis(3000));
        let later = sightings
            .vacant("k", &b, Some(&marker), 6, now + Duration::from_millis(1000))
            .expect("still guarded");
        assert_eq!(
            later.remaining,
            Duration::from_millis(2000),
            "from the first finding"
        );
        assert!(sightings
            .vacant("k", &b, Some(&marker), 6, now + Duration::from_millis(3000))
            .is_none());
        assert!(
            sightings.vacant("k", &b, None, 6, now).is_none(),
            "forgotten once trusted"
        );
        // A release older than what this store saw explains nothing.
        sightings.saw("k", &record(&a, 44));
        assert!(sightings
            .vacant("k", &b, Some(&Marker::Released { term: 43 }), 6, now)
            .is_some());
    }

    /// The gap a 10-minute chaos run found: a candidate that first saw the holder only after
    /// the etcd leader change (or never saw it) must not trust the vacancy either.
    #[test]
    fn a_candidate_that_never_saw_the_holder_waits_too() {
        let (a, b) = (claim("a"), claim("b"));
        let now = Instant::now();
        let never_saw = Sightings::default();
        let held = never_saw
            .vacant("k", &b, Some(&granted(&a, 40, 5)), 6, now)
            .expect("the marker names a grant under an older raft term");
        assert_eq!((held.holder, held.term), (a.candidate.clone(), Term(40)));
        assert_eq!(held.remaining, Duration::from_millis(3000));
        let saw_late = Sightings::default();
        saw_late.saw("k", &record(&a, 40));
        assert!(saw_late
            .vacant("k", &b, Some(&granted(&a, 40, 5)), 6, now)
            .is_some());
        // A marker elect did not write: nothing to guard without a sighting.
        assert!(Sightings::default()
            .vacant("k", &b, Some(&Marker::Unknown), 6, now)
            .is_none());
    }

    #[test]
    fn a_release_the_watch_saw_explains_only_the_term_it_released() {
        let a = claim("a");
        let sightings = Sightings::default();
        assert!(
            sightings.released("k", 40),
            "no holder seen: nothing to contradict it"
        );
        sightings.saw("k", &record(&a, 41));
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
