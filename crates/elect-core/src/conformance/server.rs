//! Checks that need more than a store: a server of the test's own to kill and start again, a
//! raw client that writes records elect would never write, and the backend's constructor for
//! URLs. A backend provides them through a [`Fixture`] and runs them with
//! [`server_conformance_tests!`](crate::server_conformance_tests).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::{sleep, timeout, Instant};

use super::store_checks::claim;
use super::{fresh_election, id, Settings};
use crate::elector::Elector;
use crate::error::Error;
use crate::lease::{Release, Renewal};
use crate::name::ElectionName;
use crate::store::LeaseStore;
use crate::term::Term;

/// A record at an election's key, row or document that elect never writes. Each one has a
/// live expiry (an hour away) where the store's shape has one, so that only the junk can be
/// what the store objects to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Junk {
    /// The holder is not a valid candidate id (`"not valid!"`).
    InvalidHolder,
    /// The term is zero or negative.
    NonPositiveTerm,
    /// There is no holder (a missing field, or NULL).
    MissingHolder,
    /// The record is not of the store's shape at all: a string where a hash is expected, a
    /// number where a string is, a text where a date is.
    WrongShape,
}

impl Junk {
    /// Every kind, in a fixed order.
    pub const ALL: [Junk; 4] = [
        Junk::InvalidHolder,
        Junk::NonPositiveTerm,
        Junk::MissingHolder,
        Junk::WrongShape,
    ];
}

/// Data the server loses (or a foreign client deletes) behind the store's back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DataLoss {
    /// The election's record alone: the row, the document, the lease and term keys.
    Record,
    /// Everything the store keeps: the table truncated, the collection dropped, `FLUSHALL`.
    Everything,
}

/// What the server-level checks need from a backend, beyond a [`LeaseStore`].
///
/// One fixture serves one check: it owns a server that nothing else uses (the restart check
/// kills it), started when the fixture is made.
///
/// ```no_run
/// use std::sync::Arc;
/// use elect_core::conformance::{DataLoss, Fixture, Junk};
/// use elect_core::{ElectionName, Error, LeaseStore, MemoryStore};
///
/// struct MyFixture { /* the server process, its URL, a raw client */ }
///
/// #[elect_core::async_trait]
/// impl Fixture for MyFixture {
///     async fn store(&self) -> Arc<dyn LeaseStore> {
///         Arc::new(MemoryStore::new()) // `MyStore::connect(&self.url).await.unwrap()`
///     }
///     async fn kill_server(&self) { /* SIGKILL the server */ }
///     async fn start_server(&self) { /* start it again, same port, same data directory */ }
///     async fn write_junk(&self, _election: &ElectionName, _junk: Junk) -> bool {
///         false // write it with a raw client; false where the schema cannot hold it
///     }
///     async fn lose_data(&self, _election: &ElectionName, _loss: DataLoss) {
///         // DELETE the record, or TRUNCATE / drop / FLUSHALL, with a raw client
///     }
///     async fn connect(&self, _url: &str) -> Result<Arc<dyn LeaseStore>, Error> {
///         Err(Error::config("not a URL of mine"))
///     }
///     fn unreachable_url(&self) -> String {
///         "my-store://127.0.0.1:1".into()
///     }
/// }
/// ```
#[async_trait]
pub trait Fixture: Send + Sync {
    /// A store on this fixture's server, set up (tables created), whose requests time out
    /// well within a third of the checks' TTL.
    async fn store(&self) -> Arc<dyn LeaseStore>;

    /// Kills the server at once (SIGKILL or its equivalent): no graceful shutdown.
    async fn kill_server(&self);

    /// Starts the killed server again on the same address, with what it had persisted.
    async fn start_server(&self);

    /// Writes `junk` as the record of `election` with a client of the fixture's own (not the
    /// store's). Returns false when the store's schema cannot hold that junk at all (a typed
    /// column), so the check skips it.
    async fn write_junk(&self, election: &ElectionName, junk: Junk) -> bool;

    /// Deletes `loss` with a client of the fixture's own, while the server keeps running.
    async fn lose_data(&self, election: &ElectionName, loss: DataLoss);

    /// The backend's own constructor from a URL (its `connect_url`), as a user calls it.
    async fn connect(&self, url: &str) -> Result<Arc<dyn LeaseStore>, Error>;

    /// A URL of the backend's scheme where nothing listens (`…://127.0.0.1:1`).
    fn unreachable_url(&self) -> String;
}

type Shared = Arc<dyn Fixture>;

const LONG: Duration = Duration::from_secs(30);

/// A leader whose server is killed steps down by its local deadline (not later, whatever the
/// driver does about the dead connections), and once the server is back — after the lease
/// has expired there — leads again in a higher term, with no help from the application.
pub async fn terms_continue_across_a_server_restart(fixture: Shared, settings: Settings) {
    let ttl = settings.ttl_duration();
    let store = fixture.store().await;
    let elector = Elector::builder_dyn(store, fresh_election("restart"))
        .candidate(id("a"))
        .ttl(ttl)
        .start()
        .expect("a valid elector configuration");
    let guard = timeout(ttl * 3, elector.leading())
        .await
        .expect("the only candidate leads")
        .expect("running");
    sleep(ttl / 4).await;
    let killed = Instant::now();
    fixture.kill_server().await;
    timeout(ttl * 2, guard.lost())
        .await
        .expect("the leader steps down while its server is dead");
    let lost_at = Instant::now();
    assert!(
        lost_at <= guard.deadline() + Duration::from_millis(100),
        "the leader stepped down {:?} after its local deadline",
        lost_at - guard.deadline()
    );
    assert!(
        lost_at - killed <= ttl,
        "the leader stepped down {:?} after its server was killed (TTL {ttl:?})",
        lost_at - killed
    );
    // Down past the lease, so that it has expired when the server is back.
    sleep(ttl).await;
    fixture.start_server().await;
    let again = timeout(LONG, elector.leading())
        .await
        .unwrap_or_else(|_| panic!("no leadership {LONG:?} after the server came back"))
        .expect("running");
    assert!(
        again.term() > guard.term(),
        "term {} after term {} and a restart: terms went back",
        again.term(),
        guard.term()
    );
    // The release may meet a connection the driver is still re-establishing: a retryable
    // error is honest (the lease then expires at the server), anything else is not.
    if let Err(e) = elector.shutdown().await {
        assert!(e.is_retryable(), "shutting down after the restart: {e}");
        eprintln!("terms_continue_across_a_server_restart: the release after the restart: {e}");
    }
}

/// A record that elect never writes is a [`Error::CorruptRecord`] naming the election's key,
/// row or document for `try_acquire` and `leader`; a renewal or release against it is never
/// granted (a typed error, `Lost` or `NotHeld`); and it is not retried as if the server were
/// down.
pub async fn junk_records_are_typed_errors(fixture: Shared, settings: Settings) {
    let store = fixture.store().await;
    let mut written = 0;
    for junk in Junk::ALL {
        let election = fresh_election(&format!("junk-{junk:?}").to_lowercase());
        if !fixture.write_junk(&election, junk).await {
            continue;
        }
        written += 1;
        let corrupt = |what: &str, result: Result<String, Error>| match result {
            Err(Error::CorruptRecord { key, message, .. }) => assert!(
                key.contains(election.as_str()),
                "{junk:?}, {what}: the error names {key:?}, not the election ({message})"
            ),
            other => panic!("{junk:?}, {what}: expected a corrupt-record error, got {other:?}"),
        };
        let other = claim(&election, &id("b"), settings.ttl);
        let acquire = store.try_acquire(&other).await;
        corrupt("try_acquire", acquire.map(|a| format!("{a:?}")));
        corrupt(
            "leader",
            store.leader(&election).await.map(|l| format!("{l:?}")),
        );
        // A lease as elect would have made it, against the junk.
        let lease = claim(&election, &id("a"), settings.ttl).granted(Term(3));
        match store.renew(&lease).await {
            Ok(Renewal::Renewed(_)) => panic!("{junk:?}: a renewal of junk was granted"),
            Ok(_) | Err(Error::CorruptRecord { .. }) => {}
            Err(other) => panic!("{junk:?}, renew: expected a typed refusal, got {other:?}"),
        }
        match store.release(&lease).await {
            Ok(Release::Released) => panic!("{junk:?}: a release of junk succeeded"),
            Ok(_) | Err(Error::CorruptRecord { .. }) => {}
            Err(other) => panic!("{junk:?}, release: expected a typed refusal, got {other:?}"),
        }
    }
    assert!(written > 0, "the fixture wrote no junk at all");
}

/// Connecting to a server that is not there is a retryable error — from the constructor or
/// from the first request — within a bounded time, never a hang or a panic; URLs that are not
/// the backend's are configuration errors.
pub async fn unreachable_servers_and_bad_urls_are_typed_errors(
    fixture: Shared,
    settings: Settings,
) {
    let url = fixture.unreachable_url();
    let result = timeout(LONG, async {
        let store = fixture.connect(&url).await?;
        store
            .try_acquire(&claim(
                &fresh_election("unreachable"),
                &id("a"),
                settings.ttl,
            ))
            .await
            .map(|a| format!("{a:?}"))
    })
    .await
    .unwrap_or_else(|_| panic!("{url}: neither connecting nor a request ended in {LONG:?}"));
    match result {
        Err(e) if e.is_retryable() => {}
        other => panic!("{url}: expected a retryable error, got {other:?}"),
    }
    for bad in [
        "",
        "not a url",
        "http://127.0.0.1:1/x",
        "unknown-scheme://h",
    ] {
        match timeout(LONG, fixture.connect(bad)).await {
            Ok(Err(Error::InvalidConfig { .. })) => {}
            Ok(other) => panic!(
                "{bad:?}: expected a configuration error, got {:?}",
                other.err()
            ),
            Err(_) => panic!("{bad:?}: connecting did not end in {LONG:?}"),
        }
    }
}

/// Expands to one `#[tokio::test]` per check of this module that needs a [`Fixture`].
///
/// - `fixture:` an expression evaluated once per test that yields a future of the fixture
///   (`async { MyFixture::start().await }`);
/// - `settings:` a [`Settings`] expression.
///
/// It can stand in the same module as [`conformance_tests!`](crate::conformance_tests).
#[macro_export]
macro_rules! server_conformance_tests {
    (fixture: $fixture:expr, settings: $settings:expr $(,)?) => {
        $crate::__server_each!(
            [$fixture] [$settings]
            terms_continue_across_a_server_restart
            junk_records_are_typed_errors
            unreachable_servers_and_bad_urls_are_typed_errors
            terms_rise_after_data_loss
        );
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __server_each {
    ([$fixture:expr] [$settings:expr] $($check:ident)*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let fixture: ::std::sync::Arc<dyn $crate::conformance::Fixture> =
                    ::std::sync::Arc::new($fixture.await);
                $crate::conformance::$check(fixture, $settings).await;
            }
        )*
    };
}

/// The election's record, or everything the store keeps, is deleted twice: under a live leader
/// (whose next renewal is refused, so it steps down within a renewal interval and is granted
/// again) and while the election is vacant after a release. Each new grant has a higher term
/// than every one before: terms are fencing tokens only if no loss can take them back.
pub async fn terms_rise_after_data_loss(fixture: Shared, settings: Settings) {
    let ttl = settings.ttl_duration();
    let store = fixture.store().await;
    for loss in [DataLoss::Record, DataLoss::Everything] {
        let election = fresh_election("data-loss");
        let elector = Elector::builder_dyn(store.clone(), election.clone())
            .candidate(id("a"))
            .ttl(ttl)
            // Out of the race for a TTL after resigning: the second loss finds the election vacant.
            .resign_pause(ttl)
            .start()
            .expect("a valid elector configuration");
        let lead = |what: &'static str| {
            let elector = elector.clone();
            async move {
                timeout(ttl * 4, elector.leading())
                    .await
                    .unwrap_or_else(|_| panic!("{loss:?}: no leadership {what}"))
                    .expect("running")
            }
        };
        let first = lead("at first").await;
        sleep(ttl / 4).await;
        fixture.lose_data(&election, loss).await;
        timeout(ttl, first.lost()).await.unwrap_or_else(|_| {
            panic!("{loss:?}: the leader still believes a TTL after its record was deleted")
        });
        let second = lead("after the loss under a live lease").await;
        assert!(
            second.term() > first.term(),
            "{loss:?} under a live lease: term {} after {}",
            second.term(),
            first.term()
        );
        elector.resign().await.expect("resign releases");
        fixture.lose_data(&election, loss).await;
        let third = lead("after the loss of a released election").await;
        assert!(
            third.term() > second.term(),
            "{loss:?} after a release: term {} after {}",
            third.term(),
            second.term()
        );
        elector.shutdown().await.expect("shutdown releases");
    }
}
