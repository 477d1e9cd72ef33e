//! A tiny non-cryptographic generator (SplitMix64) for jitter, id suffixes and simulations, so
//! the core needs no `rand` dependency. Seedable, so tests and the raft engine are
//! deterministic. Not for secrets.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// SplitMix64: fast, seedable, statistically fine for timing jitter; not cryptographic.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded from the process's hash randomness and the clock.
    pub fn from_entropy() -> Self {
        let mut h = RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default(),
        );
        Self(h.finish())
    }

    /// A generator that yields the same sequence for the same seed.
    pub fn seeded(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniformly drawn duration in `[0, max]`.
    pub fn duration_up_to(&mut self, max: Duration) -> Duration {
        let nanos = max.as_nanos().min(u64::MAX as u128) as u64;
        if nanos == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(self.next_u64() % (nanos + 1))
    }

    /// A number in `[0, n)` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// A uniformly drawn duration in `[from, to]` (`from` when `to` is not after it), at
    /// nanosecond resolution.
    ///
    /// ```
    /// use std::time::Duration;
    /// let mut rng = elect_core::rand::Rng::seeded(7);
    /// let d = rng.duration_between(Duration::from_millis(500), Duration::from_secs(2));
    /// assert!(d >= Duration::from_millis(500) && d <= Duration::from_secs(2));
    /// ```
    pub fn duration_between(&mut self, from: Duration, to: Duration) -> Duration {
        from + self.duration_up_to(to.saturating_sub(from))
    }

    /// A float in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}
