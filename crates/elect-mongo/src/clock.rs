//! What the store knows of the server's clock, so that a losing acquire needs no second round
//! trip to tell how long the holder's lease has left.
//!
//! A MongoDB update that changes nothing cannot report `$$NOW` without writing it (and the
//! MongoDB-wire server in our tests rejects `$$NOW` in a `findAndModify` projection), so the
//! acquiring update returns the holder's `expires` and nothing of the server's time. Replies
//! that do carry it — a grant (`expires` = `$$NOW` + TTL) and a read (`expires` and the
//! remaining milliseconds) — give bounds on the offset between the server's clock and this
//! process's monotonic clock: the server read its clock between the request's send and its
//! reply, truncated to the millisecond. The narrowest recent bounds are kept, and a holder's
//! remaining time is `expires` less the server's time estimated from them.
//!
//! The estimate is only ever a follower's sleep: too short costs one more request, too long
//! costs latency; it never decides who leads (the update does, on the server's clock) and never
//! sets a leader's deadline (measured locally from the request's send). An estimate older than
//! [`FRESH`] is not used: the store reads first, which brings a new one.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long an offset estimate is used. Two NTP-disciplined clocks run apart at a few ppm;
/// within 30 s that is well under a millisecond.
pub(crate) const FRESH: Duration = Duration::from_secs(30);

/// How much wider a kept estimate is taken to grow per second of its age when a new one is
/// weighed against it (1 ms/s, far above real clock drift): a newer estimate, a little wider,
/// still replaces an old one.
const AGING_MS_PER_S: f64 = 1.0;

/// Bounds on (server milliseconds since the epoch) − (local milliseconds since `epoch`).
#[derive(Clone, Copy, Debug)]
struct Offset {
    low: f64,
    high: f64,
    at: Instant,
}

impl Offset {
    fn width_at(&self, now: Instant) -> f64 {
        self.high - self.low + now.saturating_duration_since(self.at).as_secs_f64() * AGING_MS_PER_S
    }
}

/// The server's clock as seen from here.
#[derive(Debug)]
pub(crate) struct ServerClock {
    epoch: Instant,
    best: Mutex<Option<Offset>>,
}

impl ServerClock {
    pub(crate) fn new() -> ServerClock {
        ServerClock {
            epoch: Instant::now(),
            best: Mutex::new(None),
        }
    }

    fn local_ms(&self, at: Instant) -> f64 {
        at.saturating_duration_since(self.epoch).as_secs_f64() * 1e3
    }

    /// The server read `server_ms` (its clock, truncated to the millisecond) at some moment
    /// between `sent` and `received`.
    pub(crate) fn observe(&self, server_ms: i64, sent: Instant, received: Instant) {
        let server = server_ms as f64;
        let new = Offset {
            low: server - self.local_ms(received),
            high: server + 1.0 - self.local_ms(sent),
            at: received,
        };
        let mut best = self.best.lock().unwrap_or_else(|e| e.into_inner());
        let keep_old = best.is_some_and(|old| old.width_at(received) < new.width_at(received));
        if !keep_old {
            *best = Some(new);
        }
    }

    /// Milliseconds from `at` until the server's clock reads `expires_ms`, by the freshest
    /// estimate; `None` when there is none younger than [`FRESH`].
    pub(crate) fn until(&self, expires_ms: i64, at: Instant) -> Option<f64> {
        let best = (*self.best.lock().unwrap_or_else(|e| e.into_inner()))?;
        if at.saturating_duration_since(best.at) > FRESH {
            return None;
        }
        let server_now = self.local_ms(at) + (best.low + best.high) / 2.0;
        Some(expires_ms as f64 - server_now)
    }

    /// Whether [`until`](Self::until) would answer at `at`.
    pub(crate) fn is_fresh(&self, at: Instant) -> bool {
        self.best
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|best| at.saturating_duration_since(best.at) <= FRESH)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVER: i64 = 1_800_000_000_000;

    #[test]
    fn unknown_until_observed_and_stale_after_fresh() {
        let clock = ServerClock::new();
        let t0 = clock.epoch + Duration::from_secs(1);
        assert_eq!(clock.until(SERVER, t0), None);
        clock.observe(SERVER, t0, t0 + Duration::from_millis(2));
        assert!(clock.is_fresh(t0 + FRESH));
        assert!(!clock.is_fresh(t0 + Duration::from_millis(2) + FRESH + Duration::from_millis(1)));
        assert_eq!(clock.until(SERVER, t0 + FRESH * 2), None);
    }

    #[test]
    fn estimates_within_the_requests_round_trip() {
        let clock = ServerClock::new();
        let sent = clock.epoch + Duration::from_secs(5);
        // The server read SERVER (truncated) somewhere in a 2 ms round trip.
        clock.observe(SERVER, sent, sent + Duration::from_millis(2));
        let later = sent + Duration::from_millis(500);
        let left = clock.until(SERVER + 1_000, later).expect("fresh");
        // The server's clock read SERVER + [0, 1) at 0 to 2 ms after `sent`: 499 to 502 ms
        // are left 500 ms after `sent`.
        assert!((499.0..=502.0).contains(&left), "{left}");
    }

    #[test]
    fn keeps_the_narrowest_recent_estimate() {
        let clock = ServerClock::new();
        let t = clock.epoch + Duration::from_secs(1);
        // A tight sample, then a wide one (a slow reply) that says the server is 40 ms ahead of
        // where the tight one put it: the tight one stays.
        clock.observe(SERVER, t, t + Duration::from_micros(200));
        let wide = t + Duration::from_millis(10);
        clock.observe(SERVER + 50, wide, wide + Duration::from_millis(80));
        let left = clock.until(SERVER + 1_000, t).expect("fresh");
        assert!((998.5..=1_000.0).contains(&left), "{left}");
        // A sample as tight as the first, 20 s later, replaces it (the old one has aged).
        let late = t + Duration::from_secs(20);
        clock.observe(SERVER + 20_000 + 7, late, late + Duration::from_micros(300));
        let left = clock.until(SERVER + 21_000, late).expect("fresh");
        assert!((992.0..=993.5).contains(&left), "{left}");
    }
}
