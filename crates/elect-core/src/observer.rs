//! [`Observer`]: who leads an election, without campaigning.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{sleep, timeout};
use tracing::{debug, info_span, warn, Instrument};

use crate::elector::{Health, HealthCell};
use crate::error::{Error, Result};
use crate::lease::LeaderInfo;
use crate::name::ElectionName;
use crate::store::{ChangeFeed, LeaseStore};
use crate::term::Term;

/// Follows who leads one election without campaigning — for dashboards, routing and health
/// checks. It reads [`LeaseStore::leader`] when the current lease is due to expire, when the
/// coordinator's change feed fires, and at least every `max_interval` (default 1 s). When the
/// feed fails (a subscribe refused, a connection lost) it subscribes again with a backoff
/// from 25 ms up to `max_interval`, reading the leader each time.
///
/// Dropping the observer stops its task.
///
/// ```
/// use elect_core::{ElectionName, MemoryStore, Observer};
/// # tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap().block_on(async {
/// let observer = Observer::start(MemoryStore::new(), ElectionName::new("jobs")?)?;
/// match observer.current() {
///     Some(leader) => println!("{} leads in term {}", leader.holder, leader.term),
///     None => println!("no leader"),
/// }
/// # Ok::<(), elect_core::Error>(())
/// # }).unwrap();
/// ```
#[derive(Debug)]
pub struct Observer {
    state: watch::Receiver<Option<LeaderInfo>>,
    task: JoinHandle<()>,
    health: Arc<HealthCell>,
}

impl Observer {
    /// Starts observing with the default `max_interval` of 1 s.
    pub fn start(store: impl LeaseStore, election: ElectionName) -> Result<Observer> {
        Self::with_interval(Arc::new(store), election, Duration::from_secs(1))
    }

    /// Starts observing, reading at least every `max_interval` (at least 10 ms).
    pub fn with_interval(
        store: Arc<dyn LeaseStore>,
        election: ElectionName,
        max_interval: Duration,
    ) -> Result<Observer> {
        if max_interval < Duration::from_millis(10) {
            return Err(Error::InvalidConfig {
                message: format!("observer interval {max_interval:?} must be at least 10 ms"),
            });
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::InvalidConfig {
            message: "Observer::start must be called inside a tokio runtime".into(),
        })?;
        let (tx, state) = watch::channel(None);
        let span = info_span!("observer", election = %election);
        // Reads are at most `max_interval` apart, each under that timeout.
        let health = HealthCell::new(max_interval * 2);
        let task = runtime
            .spawn(observe(store, election, max_interval, tx, health.clone()).instrument(span));
        Ok(Observer {
            state,
            task,
            health,
        })
    }

    /// Whether the observer's reads succeed: the age of the last answered read, failed reads
    /// in a row, and whether the coordinator answered within two read intervals (`reachable`).
    /// While reads fail, [`current`](Self::current) keeps the last value read: check this
    /// before trusting it. (`leading` and `term` are always unset: an observer never leads.)
    pub fn health(&self) -> Health {
        self.health.snapshot(false, None, self.task.is_finished())
    }

    /// The leader as of the last read (its `remaining` is as of that read), or `None`.
    pub fn current(&self) -> Option<LeaderInfo> {
        self.state.borrow().clone()
    }

    /// A watch that changes whenever the holder or the term changes.
    pub fn watch(&self) -> watch::Receiver<Option<LeaderInfo>> {
        self.state.clone()
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn observe(
    store: Arc<dyn LeaseStore>,
    election: ElectionName,
    max_interval: Duration,
    tx: watch::Sender<Option<LeaderInfo>>,
    health: Arc<HealthCell>,
) {
    let mut feed: Option<ChangeFeed> = None;
    let mut feed_supported = true;
    // The highest term read or hinted so far: a feed's hint is shown only when it is newer than
    // everything seen, since notices are not ordered with this task's reads.
    let mut newest: Option<Term> = None;
    // Subscribe failures and ended feeds since the last notice: without a feed the next read
    // (and subscribe) comes after 25 ms · 2ⁿ (at most `max_interval`), not a full interval.
    let mut feed_failures = 0u32;
    loop {
        if feed.is_none() && feed_supported {
            match timeout(max_interval, store.subscribe(&election)).await {
                Ok(Ok(Some(f))) => feed = Some(f),
                Ok(Ok(None)) => feed_supported = false,
                Ok(Err(error)) => {
                    feed_failures = feed_failures.saturating_add(1);
                    debug!(%error, "subscribe failed; will retry");
                }
                Err(_) => {
                    feed_failures = feed_failures.saturating_add(1);
                    debug!("subscribe timed out; will retry");
                }
            }
        }
        if let Some(feed) = &mut feed {
            feed.mark_seen();
        }
        // Notices that arrive during the read are taken at once (a leader they carry is shown
        // without waiting for the read), and make the read's answer suspect: it may predate
        // them, so another read follows at once.
        let mut noticed = false;
        let read = timeout(max_interval, store.leader(&election));
        tokio::pin!(read);
        let answer = loop {
            tokio::select! {
                answer = &mut read => break answer,
                alive = next_notice(&mut feed) => if alive {
                    noticed = true;
                    feed_failures = 0;
                    take_hint(feed.as_ref(), &mut newest, &tx);
                } else {
                    feed = None;
                    feed_failures = feed_failures.saturating_add(1);
                },
            }
        };
        let wait = match answer {
            Ok(Ok(info)) => {
                health.replied();
                let term = info.as_ref().map(|i| i.term);
                // A read older than a leader a notice named during it is not shown.
                if !(noticed && term < newest) {
                    newest = newest.max(term);
                    let wait = info
                        .as_ref()
                        .map_or(max_interval, |i| i.remaining + Duration::from_millis(1));
                    tx.send_if_modified(|current| {
                        let key =
                            |i: &Option<LeaderInfo>| i.as_ref().map(|i| (i.holder.clone(), i.term));
                        let changed = key(current) != key(&info);
                        *current = info;
                        changed
                    });
                    wait.min(max_interval)
                } else {
                    max_interval
                }
            }
            Ok(Err(error)) => {
                failed(&health, &error);
                max_interval
            }
            Err(_) => {
                failed(
                    &health,
                    &Error::timeout("coordinator", "leader", max_interval),
                );
                max_interval
            }
        };
        if tx.is_closed() {
            return;
        }
        if noticed {
            continue;
        }
        let wait = if feed.is_none() && feed_supported {
            let backoff = Duration::from_millis(25).saturating_mul(1 << feed_failures.min(16));
            wait.min(backoff)
        } else {
            wait
        };
        tokio::select! {
            _ = sleep(wait) => {}
            alive = next_notice(&mut feed) => if alive {
                feed_failures = 0;
                take_hint(feed.as_ref(), &mut newest, &tx);
            } else {
                feed = None;
                feed_failures = feed_failures.saturating_add(1);
            },
        }
    }
}

/// The next notice of `feed` (`false` once it has ended); never, without a feed.
async fn next_notice(feed: &mut Option<ChangeFeed>) -> bool {
    match feed {
        Some(f) => f.changed().await,
        None => std::future::pending().await,
    }
}

/// Shows the leader the latest notice carried (a change stream with the document), when its
/// term is above every term seen; the read that follows confirms it and corrects `remaining`.
fn take_hint(
    feed: Option<&ChangeFeed>,
    newest: &mut Option<Term>,
    tx: &watch::Sender<Option<LeaderInfo>>,
) {
    if let Some(hint) = feed.and_then(ChangeFeed::leader_hint) {
        if newest.is_none_or(|t| hint.term > t) {
            debug!(holder = %hint.holder, term = %hint.term, "the change feed named a new leader");
            *newest = Some(hint.term);
            tx.send_replace(Some(hint));
        }
    }
}

/// Counts a failed read; the first of a run is a warning (the value shown is now stale), the
/// rest are debug.
fn failed(health: &HealthCell, error: &Error) {
    if health.failures() == 0 {
        warn!(%error, "leader read failed; the last leader read is shown until one succeeds");
    } else {
        debug!(%error, "leader read failed again");
    }
    health.failed();
}
