//! Leases and the answers a [`LeaseStore`](crate::LeaseStore) gives.

use std::fmt;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::name::{CandidateId, ElectionName};
use crate::term::Term;

/// A validated lease duration: between [`Ttl::MIN`] and [`Ttl::MAX`].
///
/// Coordinators keep time in milliseconds at best, and the elector renews every third of the
/// TTL with a safety margin of a few milliseconds (below a tenth of the TTL, which the
/// [`ElectorBuilder`](crate::ElectorBuilder) checks), so shorter leases cannot be kept safely.
/// Leases under 100 ms assume a LAN: round trips, scheduling delays and pauses of the process
/// well under a tenth of the TTL, every time — raft at the Raft paper's fastest setting (election
/// timeouts of 12–24 ms) is what they are for. Anything slower than that turns them into
/// leader changes (never into two leaders: the deadline is kept whatever the delays).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ttl(Duration);

impl Ttl {
    /// The shortest accepted lease: 10 ms (see above for what leases under 100 ms assume).
    pub const MIN: Duration = Duration::from_millis(10);
    /// The longest accepted lease: one day.
    pub const MAX: Duration = Duration::from_secs(24 * 60 * 60);

    /// Validates a lease duration.
    ///
    /// ```
    /// use std::time::Duration;
    /// use elect_core::Ttl;
    /// assert!(Ttl::new(Duration::from_secs(10)).is_ok());
    /// assert!(Ttl::new(Duration::ZERO).is_err());
    /// ```
    pub fn new(ttl: Duration) -> Result<Self> {
        if ttl < Self::MIN {
            Err(Error::InvalidTtl {
                ttl,
                reason: "must be at least 10 ms",
            })
        } else if ttl > Self::MAX {
            Err(Error::InvalidTtl {
                ttl,
                reason: "must be at most one day",
            })
        } else {
            Ok(Self(ttl))
        }
    }

    /// Shorthand for `Ttl::new(Duration::from_millis(ms))`.
    pub fn from_millis(ms: u64) -> Result<Self> {
        Self::new(Duration::from_millis(ms))
    }

    /// The duration.
    pub const fn get(self) -> Duration {
        self.0
    }

    /// Whole milliseconds, as coordinators store them. Never zero.
    pub fn as_millis(self) -> u64 {
        self.0.as_millis() as u64
    }
}

impl TryFrom<Duration> for Ttl {
    type Error = Error;
    fn try_from(d: Duration) -> Result<Self> {
        Self::new(d)
    }
}

impl From<Ttl> for Duration {
    fn from(t: Ttl) -> Duration {
        t.0
    }
}

/// Tells apart the claims of candidates that share a [`CandidateId`], and the successive claims
/// of one candidate.
///
/// A coordinator stores the nonce with the lease, and treats a request as coming from the live
/// holder only when both the id *and* the nonce match. An [`Elector`](crate::Elector) draws a
/// new nonce when it starts and after every leadership ends, and keeps it while it retries, so:
///
/// - a grant whose reply was lost is retried into the same lease (same nonce, same term);
/// - two processes started with the same candidate id (`elect run --id same` on two hosts) are
///   two holders: one leads, the other is told the election is held;
/// - a candidate that stepped down (a refused renewal, its deadline passed) never re-enters the
///   lease it gave up: it waits like anyone else and is granted a new term.
///
/// Values are in `1..2^63`, so that every coordinator can store them as a signed 64-bit integer.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Nonce(u64);

impl Nonce {
    /// A fresh random nonce.
    ///
    /// ```
    /// use elect_core::Nonce;
    /// assert_ne!(Nonce::random(), Nonce::random());
    /// ```
    pub fn random() -> Nonce {
        let mut rng = crate::rand::Rng::from_entropy();
        loop {
            if let Some(nonce) = Nonce::new(rng.next_u64() >> 1) {
                return nonce;
            }
        }
    }

    /// A given nonce (tests, replays), or `None` for 0 and values from 2^63 up.
    pub const fn new(value: u64) -> Option<Nonce> {
        if value == 0 || value > i64::MAX as u64 {
            None
        } else {
            Some(Nonce(value))
        }
    }

    /// The value, in `1..2^63`.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Debug for Nonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Nonce({:016x})", self.0)
    }
}

impl fmt::Display for Nonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// A small value a leader publishes with its leadership — its address, say — stored with the
/// lease by every coordinator and shown to followers and observers in [`LeaderInfo::value`]
/// (etcd's `Campaign(val)`, a Consul lock's value). UTF-8, at most [`MAX_LEN`](Self::MAX_LEN)
/// bytes.
///
/// ```
/// use elect_core::LeaderValue;
///
/// let value = LeaderValue::new("10.0.0.7:8080")?;
/// assert_eq!(value.as_str(), "10.0.0.7:8080");
/// assert!(LeaderValue::new("x".repeat(2000)).is_err());
/// # Ok::<(), elect_core::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct LeaderValue(String);

impl LeaderValue {
    /// The longest value, in bytes.
    pub const MAX_LEN: usize = 1024;

    /// Validates `value`: at most [`MAX_LEN`](Self::MAX_LEN) bytes, else
    /// [`Error::InvalidConfig`].
    pub fn new(value: impl Into<String>) -> Result<LeaderValue> {
        let value = value.into();
        if value.len() > Self::MAX_LEN {
            return Err(Error::config(format!(
                "a leader value is at most {} bytes, this one has {}",
                Self::MAX_LEN,
                value.len()
            )));
        }
        Ok(LeaderValue(value))
    }

    /// The value.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<LeaderValue> for String {
    fn from(value: LeaderValue) -> String {
        value.0
    }
}

impl fmt::Debug for LeaderValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for LeaderValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A request for a lease: which election, who asks (id and [`Nonce`]), and for how long. The
/// argument of [`LeaseStore::try_acquire`](crate::LeaseStore::try_acquire).
///
/// ```
/// use std::time::Duration;
/// use elect_core::{CandidateId, Claim, ElectionName, Term, Ttl};
///
/// let claim = Claim::new(
///     ElectionName::new("jobs")?,
///     CandidateId::new("host-1")?,
///     Ttl::new(Duration::from_secs(10))?,
/// );
/// let lease = claim.granted(Term(7));
/// assert_eq!((lease.holder, lease.nonce, lease.term), (claim.candidate, claim.nonce, Term(7)));
/// # Ok::<(), elect_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Claim {
    /// The election.
    pub election: ElectionName,
    /// Who asks.
    pub candidate: CandidateId,
    /// Which claim of that candidate this is.
    pub nonce: Nonce,
    /// The duration to grant (or renew) the lease for.
    pub ttl: Ttl,
    /// The value to publish with the leadership, if any (stored with a new grant).
    pub value: Option<LeaderValue>,
}

impl Claim {
    /// A claim with a fresh random [`Nonce`] and no value.
    pub fn new(election: ElectionName, candidate: CandidateId, ttl: Ttl) -> Claim {
        Claim {
            election,
            candidate,
            nonce: Nonce::random(),
            ttl,
            value: None,
        }
    }

    /// This claim, publishing `value` with its leadership.
    pub fn with_value(mut self, value: Option<LeaderValue>) -> Claim {
        self.value = value;
        self
    }

    /// The lease this claim becomes when granted in `term`.
    pub fn granted(&self, term: Term) -> Lease {
        Lease {
            election: self.election.clone(),
            holder: self.candidate.clone(),
            nonce: self.nonce,
            term,
            ttl: self.ttl,
            value: self.value.clone(),
        }
    }

    /// Whether `lease` is what this claim was granted (same election, holder and nonce).
    pub fn owns(&self, lease: &Lease) -> bool {
        lease.election == self.election
            && lease.holder == self.candidate
            && lease.nonce == self.nonce
    }
}

/// The right of one candidate to lead one election until it expires at the coordinator.
///
/// A `Lease` is a plain description: holding one proves nothing by itself. Whether it is still
/// live is the coordinator's call ([`LeaseStore::renew`](crate::LeaseStore::renew)); how long the
/// holder may *believe* it leads is the [`Elector`](crate::Elector)'s local deadline.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Lease {
    /// The election this lease is for.
    pub election: ElectionName,
    /// Who holds it.
    pub holder: CandidateId,
    /// The holder's claim it was granted to (see [`Nonce`]).
    pub nonce: Nonce,
    /// Its fencing token.
    pub term: Term,
    /// The duration it was granted (and is renewed) for.
    pub ttl: Ttl,
    /// The value the holder published with it.
    pub value: Option<LeaderValue>,
}

/// Who leads an election, as a coordinator saw it when it answered.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LeaderInfo {
    /// The current holder.
    pub holder: CandidateId,
    /// The current term.
    pub term: Term,
    /// How long the lease had left, by the coordinator's clock, when it answered. A follower
    /// sleeps this long before trying again.
    pub remaining: Duration,
    /// The value the leader published with its leadership, if any (none from a store or a
    /// table that cannot hold one).
    pub value: Option<LeaderValue>,
}

/// The answer to [`LeaseStore::try_acquire`](crate::LeaseStore::try_acquire).
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Acquire {
    /// The lease is the caller's: newly granted (a new term), or renewed because the caller's
    /// claim (same id and nonce) already held it live (same term).
    Granted(Lease),
    /// Someone else holds a live lease (possibly a candidate with the same id and another
    /// nonce).
    Held(LeaderInfo),
}

/// The answer to [`LeaseStore::renew`](crate::LeaseStore::renew).
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Renewal {
    /// The lease was extended by its TTL from the coordinator's now; same term.
    Renewed(Lease),
    /// The lease is no longer the caller's (expired, released, or another holder, nonce or
    /// term): nothing was changed.
    Lost,
}

/// The answer to [`LeaseStore::release`](crate::LeaseStore::release).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Release {
    /// The lease ended now; the election can be acquired by anyone at once.
    Released,
    /// The lease was not the caller's live lease (stale term, other holder or nonce, already
    /// expired or released): nothing was changed.
    NotHeld,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_bounds() {
        assert!(Ttl::new(Ttl::MIN).is_ok());
        assert!(Ttl::new(Ttl::MAX).is_ok());
        for bad in [
            Duration::ZERO,
            Duration::from_millis(9),
            Ttl::MAX + Duration::from_nanos(1),
            Duration::MAX,
        ] {
            assert!(
                matches!(Ttl::new(bad), Err(Error::InvalidTtl { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn nonces_fit_a_signed_64_bit_integer() {
        assert_eq!(Nonce::new(0), None);
        assert_eq!(Nonce::new(1 << 63), None);
        assert_eq!(
            Nonce::new(i64::MAX as u64).map(Nonce::get),
            Some(i64::MAX as u64)
        );
        for _ in 0..1000 {
            let n = Nonce::random().get();
            assert!(n >= 1 && n <= i64::MAX as u64, "{n}");
        }
    }
}
