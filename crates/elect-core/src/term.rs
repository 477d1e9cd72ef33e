//! [`Term`]: the fencing token.

use std::fmt;

/// The fencing token of a lease: strictly increasing per election, never reused.
///
/// A new term starts whenever a lease is granted to a candidate that did not hold a live lease;
/// renewals keep it. Stamp it on every write the leader makes and have the receiving system
/// refuse writes whose term is lower than the highest it has seen: a leader that was paused past
/// its lease and wakes up believing it still leads is then refused downstream.
///
/// Terms start at 1; [`Term::ZERO`] means "no term was ever granted".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Term(pub u64);

impl Term {
    /// The term before the first grant.
    pub const ZERO: Term = Term(0);

    /// The raw counter value.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The following term, or `None` at `u64::MAX` (a coordinator must then refuse to grant
    /// rather than wrap around).
    pub const fn next(self) -> Option<Term> {
        match self.0.checked_add(1) {
            Some(t) => Some(Term(t)),
            None => None,
        }
    }
}

impl fmt::Display for Term {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl From<Term> for u64 {
    fn from(t: Term) -> u64 {
        t.0
    }
}
