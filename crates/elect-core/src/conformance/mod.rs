//! The conformance suite: what every [`LeaseStore`](crate::LeaseStore) must do, checked against a live instance.
//!
//! Each check is a `pub async fn` named after the behaviour it checks, taking the store under
//! test and [`Settings`]; it panics with a message that says what went wrong. Each uses fresh
//! election names, so checks can run in parallel against one server.
//! [`conformance_tests!`](crate::conformance_tests) expands to one `#[tokio::test]` per check,
//! so a backend's `tests/conformance.rs` is a few lines:
//!
//! ```
//! // tests/conformance.rs
//! elect_core::conformance_tests!(
//!     // Your store's constructor, e.g. `MyStore::connect(&url()).await.unwrap()`.
//!     store: async { elect_core::MemoryStore::new() },
//!     // `Settings::real_server()` for a coordinator on the network.
//!     settings: elect_core::conformance::Settings::in_memory(),
//!     // Only for stores on tokio's clock; the default is a multi-threaded runtime.
//!     attr: tokio::test(start_paused = true),
//! );
//! # fn main() {}
//! ```
//!
//! Store-level checks drive the [`LeaseStore`](crate::LeaseStore) directly; elector-level checks run several
//! [`Elector`](crate::Elector)s on it, each behind its own [`FaultyStore`] standing for that
//! candidate's network, and check the invariants from their [`Event`](crate::Event)s.

pub mod cluster {
    //! The elector-level checks that run on any [`Harness`](super::Harness).
    pub use super::cluster_checks::*;
}
mod batch_checks;
mod cluster_checks;
mod elector_checks;
mod faults;
mod foreign;
mod harness;
mod record;
mod server;
mod shards_checks;
mod store_checks;

use std::time::Duration;

pub use batch_checks::*;
pub use elector_checks::*;
pub use faults::{Faults, FaultyStore};
pub use foreign::{foreign_writes_are_bounded, ForeignWrite};
pub use harness::{Harness, StoreHarness};
pub use record::{Interval, Recorder};
pub use server::{
    junk_records_are_typed_errors, terms_continue_across_a_server_restart,
    terms_rise_after_data_loss, unreachable_servers_and_bad_urls_are_typed_errors, DataLoss,
    Fixture, Junk,
};
pub use shards_checks::*;
pub use store_checks::*;

use crate::lease::Ttl;
use crate::name::{CandidateId, ElectionName};

/// What a store under test is expected to achieve, and how long checks may take.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Settings {
    /// The lease TTL the checks use.
    pub ttl: Ttl,
    /// How much later than one TTL after a leader crashed another must lead.
    pub failover_bound: Duration,
    /// How soon after a leader resigns another must lead.
    pub handover_bound: Duration,
    /// Whether [`LeaseStore::subscribe`](crate::LeaseStore::subscribe) must return a feed.
    pub change_feed: bool,
    /// How long the randomized fault run of [`believed_leadership_never_overlaps`] lasts.
    pub chaos_duration: Duration,
    /// How long after a lease's end the coordinator may still report it live (default 50 ms).
    /// Stores that check expiry in each request need none; etcd deletes an expired lease's
    /// keys from a periodic sweep (every 500 ms) and keeps time in whole seconds.
    pub expiry_slack: Duration,
}

impl Settings {
    /// For a store on tokio's clock under `tokio::time::pause` (TTL 1 s, tight bounds, a long
    /// chaos run in virtual time).
    pub fn in_memory() -> Self {
        Settings {
            ttl: Ttl::new(Duration::from_secs(1)).expect("valid"),
            failover_bound: Duration::from_millis(250),
            handover_bound: Duration::from_millis(50),
            change_feed: true,
            chaos_duration: Duration::from_secs(120),
            expiry_slack: Duration::from_millis(50),
        }
    }

    /// For a coordinator on the network (TTL 1 s, bounds generous enough for a loaded CI
    /// machine, a 10 s chaos run). Change feed expected.
    pub fn real_server() -> Self {
        Settings {
            ttl: Ttl::new(Duration::from_secs(1)).expect("valid"),
            failover_bound: Duration::from_secs(1),
            handover_bound: Duration::from_millis(500),
            change_feed: true,
            chaos_duration: Duration::from_secs(10),
            expiry_slack: Duration::from_millis(50),
        }
    }

    /// Sets [`Settings::ttl`].
    pub fn with_ttl(mut self, ttl: Ttl) -> Self {
        self.ttl = ttl;
        self
    }

    /// Sets [`Settings::failover_bound`].
    pub fn with_failover_bound(mut self, bound: Duration) -> Self {
        self.failover_bound = bound;
        self
    }

    /// Sets [`Settings::handover_bound`].
    pub fn with_handover_bound(mut self, bound: Duration) -> Self {
        self.handover_bound = bound;
        self
    }

    /// Sets [`Settings::change_feed`]. Without a feed, waiting candidates learn of a release
    /// only when the released lease would have expired, so set the handover bound to a TTL plus
    /// slack too.
    pub fn with_change_feed(mut self, expected: bool) -> Self {
        self.change_feed = expected;
        self
    }

    /// Sets [`Settings::chaos_duration`].
    pub fn with_chaos_duration(mut self, duration: Duration) -> Self {
        self.chaos_duration = duration;
        self
    }

    /// Sets [`Settings::expiry_slack`].
    pub fn with_expiry_slack(mut self, slack: Duration) -> Self {
        self.expiry_slack = slack;
        self
    }

    fn ttl_duration(&self) -> Duration {
        self.ttl.get()
    }
}

/// A few checks for a store made another way than the suite's own — from a client of the
/// application's, or over TLS — each on a fresh store from `make`: the first acquire, a
/// release waking subscribers (the feed's own connection), the leader value, and an observer
/// learning of a new leader from the feed.
pub async fn checks_for_another_path<F, Fut>(make: F, settings: Settings)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = std::sync::Arc<dyn crate::LeaseStore>>,
{
    first_acquire_is_granted(make().await, settings.clone()).await;
    release_wakes_subscribers(make().await, settings.clone()).await;
    leader_value_travels_with_the_lease(make().await, settings.clone()).await;
    observers_learn_of_a_new_leader_from_the_feed(make().await, settings).await;
}

/// A fresh election name for one check: `conformance.<check>.<random>`.
pub fn fresh_election(check: &str) -> ElectionName {
    let suffix = crate::rand::Rng::from_entropy().next_u64();
    ElectionName::new(format!("conformance.{check}.{suffix:016x}"))
        .expect("check names use the allowed alphabet")
}

fn id(name: &str) -> CandidateId {
    CandidateId::new(name).expect("valid test id")
}

/// The value candidate `k` of a [`Harness`] start publishes with its leadership:
/// `candidate-<k>.example:<8000 + k>`, so that a check can tell whose value a follower sees.
pub fn candidate_value(k: usize) -> crate::LeaderValue {
    crate::LeaderValue::new(format!("candidate-{k}.example:{}", 8000 + k))
        .expect("far below the limit")
}

/// Expands to one `#[tokio::test]` per conformance check.
///
/// - `store:` an expression evaluated once per test that yields a future of the store under
///   test (`async { MyStore::connect(..).await.unwrap() }`);
/// - `settings:` a [`Settings`] expression;
/// - `attr:` optionally, the test attribute to use instead of
///   `tokio::test(flavor = "multi_thread", worker_threads = 2)`, e.g.
///   `tokio::test(start_paused = true)` for a store on tokio's clock.
///
/// Invoke it at most once per module: the test functions are named after the checks.
#[macro_export]
macro_rules! conformance_tests {
    (store: $store:expr, settings: $settings:expr $(,)?) => {
        $crate::conformance_tests!(
            store: $store,
            settings: $settings,
            attr: tokio::test(flavor = "multi_thread", worker_threads = 2),
        );
    };
    (store: $store:expr, settings: $settings:expr, attr: $attr:meta $(,)?) => {
        $crate::__conformance_each!(
            [$store] [$settings] [$attr]
            first_acquire_is_granted
            exclusion_under_concurrent_acquirers
            reacquire_by_holder_keeps_term
            same_id_with_another_nonce_is_held
            renew_extends_and_keeps_term
            new_grant_increments_term
            stale_renew_is_refused
            stale_release_is_refused
            forged_lease_is_refused
            expiry_makes_election_acquirable
            renew_after_expiry_is_refused
            release_frees_at_once_and_keeps_term
            leader_reports_the_truth
            elections_are_independent
            names_and_ttls_are_validated
            leader_value_travels_with_the_lease
            release_wakes_subscribers
            electors_sharing_an_id_never_both_lead
            shutdown_releases_and_stops
            believed_leadership_never_overlaps
            lost_fires_before_store_expiry
            idle_followers_sleep_until_expiry
            observer_follows_the_leader
            a_resign_wakes_a_follower_sleeping_a_long_lease
            observers_learn_of_a_new_leader_from_the_feed
        );
        // The elector-level checks any coordinator runs, here through a StoreHarness.
        $crate::__cluster_each!(
            [::std::sync::Arc::new($crate::conformance::StoreHarness::new(
                ::std::sync::Arc::new($store.await),
                $settings.ttl,
            ))]
            [$settings] [$attr]
            one_leader_among_five
            failover_after_leader_crash
            handover_on_resign
            terms_increase_across_leaders
            followers_see_the_leader_value
        );
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_each {
    ([$store:expr] [$settings:expr] [$attr:meta] $($check:ident)*) => {
        $(
            #[$attr]
            async fn $check() {
                let store: ::std::sync::Arc<dyn $crate::LeaseStore> =
                    ::std::sync::Arc::new($store.await);
                $crate::conformance::$check(store, $settings).await;
            }
        )*
    };
}

/// Expands to one `#[tokio::test]` per elector-level check of
/// [`cluster`](crate::conformance::cluster), on any [`Harness`]:
///
/// - `harness:` an expression evaluated once per test that yields an `Arc<dyn Harness>`;
/// - `settings:` a [`Settings`] expression (its TTL is unused by coordinators without one; the
///   bounds are what count);
/// - `attr:` optionally, the test attribute (default: a two-thread runtime).
#[macro_export]
macro_rules! cluster_conformance_tests {
    (harness: $harness:expr, settings: $settings:expr $(,)?) => {
        $crate::cluster_conformance_tests!(
            harness: $harness,
            settings: $settings,
            attr: tokio::test(flavor = "multi_thread", worker_threads = 2),
        );
    };
    (harness: $harness:expr, settings: $settings:expr, attr: $attr:meta $(,)?) => {
        $crate::__cluster_each!(
            [$harness] [$settings] [$attr]
            one_leader_among_five
            failover_after_leader_crash
            handover_on_resign
            terms_increase_across_leaders
            followers_see_the_leader_value
        );
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __cluster_each {
    ([$harness:expr] [$settings:expr] [$attr:meta] $($check:ident)*) => {
        $(
            #[$attr]
            async fn $check() {
                $crate::conformance::cluster::$check($harness, $settings).await;
            }
        )*
    };
}
