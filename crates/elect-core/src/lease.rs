//! Leases and the answers a [`LeaseStore`](crate::LeaseStore) gives.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::name::{CandidateId, ElectionName};
use crate::term::Term;

/// A validated lease duration: between [`Ttl::MIN`] and [`Ttl::MAX`].
///
/// Coordinators keep time in milliseconds at best, and the elector renews every third of the
/// TTL with a safety margin of a few milliseconds, so shorter leases cannot be kept safely.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ttl(Duration);

impl Ttl {
    /// The shortest accepted lease: 100 ms.
    pub const MIN: Duration = Duration::from_millis(100);
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
                reason: "must be at least 100 ms",
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
    /// Its fencing token.
    pub term: Term,
    /// The duration it was granted (and is renewed) for.
    pub ttl: Ttl,
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
}

/// The answer to [`LeaseStore::try_acquire`](crate::LeaseStore::try_acquire).
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Acquire {
    /// The lease is the caller's: newly granted (a new term), or renewed because the caller
    /// already held it live (same term).
    Granted(Lease),
    /// Someone else holds a live lease.
    Held(LeaderInfo),
}

/// The answer to [`LeaseStore::renew`](crate::LeaseStore::renew).
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Renewal {
    /// The lease was extended by its TTL from the coordinator's now; same term.
    Renewed(Lease),
    /// The lease is no longer the caller's (expired, released, or another holder or term):
    /// nothing was changed.
    Lost,
}

/// The answer to [`LeaseStore::release`](crate::LeaseStore::release).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Release {
    /// The lease ended now; the election can be acquired by anyone at once.
    Released,
    /// The lease was not the caller's live lease (stale term, other holder, already expired or
    /// released): nothing was changed.
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
            Duration::from_millis(99),
            Ttl::MAX + Duration::from_nanos(1),
            Duration::MAX,
        ] {
            assert!(
                matches!(Ttl::new(bad), Err(Error::InvalidTtl { .. })),
                "{bad:?}"
            );
        }
    }
}
