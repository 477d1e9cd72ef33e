//! Benchmarks for elect. The `candidate` binary campaigns in one election on any coordinator
//! and reports what happens as lines on stdout, stamped with `CLOCK_MONOTONIC` nanoseconds
//! (system-wide on Linux, so lines of different processes compare):
//!
//! ```text
//! <ns> ready
//! <ns> elected <term>
//! <ns> lost <term> <reason>
//! <ns> error <message>
//! <ns> stopped
//! ```
//!
//! It obeys commands on stdin: `resign` (hand over, keep campaigning later) and `exit`
//! (hand over and exit 0); end of input is `exit`.

use std::time::{Duration, Instant};

/// Maps `Instant`s (CLOCK_MONOTONIC under the hood on Linux, but opaque) to raw
/// `CLOCK_MONOTONIC` nanoseconds, from one reading of both clocks.
#[derive(Debug, Clone, Copy)]
pub struct MonoClock {
    base: Instant,
    base_ns: u128,
}

impl MonoClock {
    /// Reads both clocks now.
    pub fn new() -> MonoClock {
        let base = Instant::now();
        MonoClock {
            base,
            base_ns: now_ns(),
        }
    }

    /// `at` in CLOCK_MONOTONIC nanoseconds.
    pub fn ns(&self, at: Instant) -> u128 {
        match at.checked_duration_since(self.base) {
            Some(after) => self.base_ns + after.as_nanos(),
            None => self
                .base_ns
                .saturating_sub(self.base.duration_since(at).as_nanos()),
        }
    }
}

impl Default for MonoClock {
    fn default() -> Self {
        Self::new()
    }
}

/// CLOCK_MONOTONIC now, in nanoseconds.
pub fn now_ns() -> u128 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32).as_nanos()
}
