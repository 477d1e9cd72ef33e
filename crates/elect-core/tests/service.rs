//! What a service builds on: callbacks (order, timeout, never lost), `run` while leading,
//! health, and a handle shared between tasks. On paused time, with faults between the elector
//! and the store.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use elect_core::conformance::{Faults, FaultyStore};
use elect_core::{
    AfterWork, Callbacks, CandidateId, Claim, ElectionName, Elector, LeaseStore, MemoryStore,
    RunError, RunPolicy, StepDown, Ttl,
};
use tokio::time::{sleep, timeout, Instant};

const TTL: Duration = Duration::from_secs(3);

fn election() -> ElectionName {
    ElectionName::new("e").unwrap()
}

fn id(name: &str) -> CandidateId {
    CandidateId::new(name).unwrap()
}

type Log = Arc<Mutex<Vec<(String, Instant)>>>;

fn record(log: &Log, what: impl Into<String>) {
    log.lock().unwrap().push((what.into(), Instant::now()));
}

fn names(log: &Log) -> Vec<String> {
    log.lock().unwrap().iter().map(|(n, _)| n.clone()).collect()
}

/// Callbacks that log what they see; `on_elected` sleeps `elected_for` first.
fn logging(log: &Log, elected_for: Duration) -> Callbacks {
    let (a, b, c, d) = (log.clone(), log.clone(), log.clone(), log.clone());
    Callbacks::new()
        .on_elected(move |guard| {
            let log = a.clone();
            async move {
                sleep(elected_for).await;
                record(&log, format!("elected {}", guard.term()));
            }
        })
        .on_stopped_leading(move |term, why| {
            let log = b.clone();
            async move { record(&log, format!("stopped {term} {}", why.as_str())) }
        })
        .on_new_leader(move |info| {
            let log = c.clone();
            async move { record(&log, format!("observed {} {}", info.holder, info.term)) }
        })
        .on_error(move |_| {
            let log = d.clone();
            async move { record(&log, "error") }
        })
        .timeout(Duration::from_secs(1))
}

#[tokio::test(start_paused = true)]
async fn callbacks_run_in_order_and_stopped_follows_elected() {
    let store = MemoryStore::new();
    let log = Log::default();
    let a = Elector::builder(store.clone(), election())
        .candidate(id("a"))
        .ttl(TTL)
        .callbacks(logging(&log, Duration::ZERO))
        .start()
        .unwrap();
    let first = a.leading().await.unwrap();
    a.resign().await.unwrap();
    let second = timeout(TTL * 3, a.leading()).await.unwrap().unwrap();
    a.shutdown().await.unwrap();
    sleep(Duration::from_millis(10)).await;
    assert_eq!(
        names(&log),
        vec![
            format!("elected {}", first.term()),
            format!("stopped {} resigned", first.term()),
            format!("elected {}", second.term()),
            format!("stopped {} shutdown", second.term()),
        ]
    );
    assert_eq!(a.health().callbacks_abandoned, 0);
}

#[tokio::test(start_paused = true)]
async fn a_callback_past_its_timeout_is_abandoned_and_never_delays_a_step_down() {
    let memory = MemoryStore::new();
    let net = FaultyStore::new(memory.clone());
    let log = Log::default();
    // on_elected takes 10 s: far past its 1 s timeout, and past the leader's deadline.
    let elector = Elector::builder(net.clone(), election())
        .candidate(id("a"))
        .ttl(TTL)
        .callbacks(logging(&log, Duration::from_secs(10)))
        .start()
        .unwrap();
    let guard = elector.leading().await.unwrap();
    net.set(Faults::Blackhole);
    let cut = Instant::now();
    timeout(TTL * 2, guard.lost())
        .await
        .expect("the leader steps down");
    let lost_at = Instant::now();
    assert!(
        lost_at <= guard.deadline(),
        "stepped down after the deadline"
    );
    assert!(
        lost_at - cut <= TTL,
        "the step-down took {:?}",
        lost_at - cut
    );
    sleep(Duration::from_secs(2)).await;
    let log = log.lock().unwrap().clone();
    assert!(
        !log.iter().any(|(n, _)| n.starts_with("elected")),
        "the abandoned callback finished: {log:?}"
    );
    let stopped = log
        .iter()
        .find(|(n, _)| n.starts_with("stopped"))
        .expect("on_stopped_leading ran after the abandoned on_elected");
    assert_eq!(
        stopped.0,
        format!("stopped {} deadline_passed", guard.term())
    );
    assert_eq!(elector.health().callbacks_abandoned, 1);
    drop(elector);
}

#[tokio::test(start_paused = true)]
async fn followers_call_on_new_leader_once_per_leader() {
    let store = MemoryStore::new();
    let log = Log::default();
    let a = Elector::builder(store.clone(), election())
        .candidate(id("a"))
        .ttl(TTL)
        .start()
        .unwrap();
    let a_guard = a.leading().await.unwrap();
    let b = Elector::builder(store.clone(), election())
        .candidate(id("b"))
        .ttl(TTL)
        .callbacks(logging(&log, Duration::ZERO))
        .start()
        .unwrap();
    // b polls at every expiry while a renews: a must be reported once, not at every poll.
    sleep(TTL * 4).await;
    a.shutdown().await.unwrap();
    let b_guard = timeout(TTL * 2, b.leading()).await.unwrap().unwrap();
    b.shutdown().await.unwrap();
    sleep(Duration::from_millis(10)).await;
    assert_eq!(
        names(&log),
        vec![
            format!("observed a {}", a_guard.term()),
            format!("elected {}", b_guard.term()),
            format!("stopped {} shutdown", b_guard.term()),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_panicking_callback_is_counted_and_the_rest_still_run() {
    let log = Log::default();
    let l = log.clone();
    let callbacks = Callbacks::new()
        .on_elected(|_| async { panic!("a bug in the application's callback") })
        .on_stopped_leading(move |_, why| {
            let log = l.clone();
            async move { record(&log, why.as_str()) }
        });
    let elector = Elector::builder(MemoryStore::new(), election())
        .ttl(TTL)
        .callbacks(callbacks)
        .start()
        .unwrap();
    elector.leading().await.unwrap();
    sleep(Duration::from_millis(10)).await;
    elector.shutdown().await.unwrap();
    sleep(Duration::from_millis(10)).await;
    assert_eq!(names(&log), vec!["shutdown".to_string()]);
    assert_eq!(elector.health().callbacks_abandoned, 1);
}

#[tokio::test(start_paused = true)]
async fn run_cancels_the_work_at_the_deadline_when_the_store_is_blackholed() {
    let memory = MemoryStore::new();
    let net = FaultyStore::new(memory.clone());
    let elector = Elector::builder(net.clone(), election())
        .candidate(id("a"))
        .ttl(TTL)
        .start()
        .unwrap();
    let beats: Arc<Mutex<Vec<(Instant, Instant)>>> = Arc::default();
    let cut = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (b, net2, cut2) = (beats.clone(), net.clone(), cut.clone());
    let runner = elector.clone();
    let work = tokio::spawn(async move {
        runner
            .run(move |guard| {
                let (beats, net, cut) = (b.clone(), net2.clone(), cut2.clone());
                async move {
                    // Work forever; cut the store once, after a second of it.
                    let started = Instant::now();
                    loop {
                        beats
                            .lock()
                            .unwrap()
                            .push((Instant::now(), guard.deadline()));
                        if started.elapsed() >= Duration::from_secs(1)
                            && !cut.swap(true, std::sync::atomic::Ordering::SeqCst)
                        {
                            net.set(Faults::Blackhole);
                        }
                        sleep(Duration::from_millis(10)).await;
                    }
                    #[allow(unreachable_code)]
                    Ok::<(), std::io::Error>(())
                }
            })
            .await
    });
    sleep(TTL * 3).await;
    let b_all = beats.clone();
    let beats = beats.lock().unwrap().clone();
    assert!(beats.len() > 50, "the work ran: {} beats", beats.len());
    let (last, _) = *beats.last().unwrap();
    let deadline = beats.iter().map(|(_, d)| *d).max().unwrap();
    assert!(
        last < deadline,
        "the work beat {:?} after the leader's last deadline",
        last - deadline
    );
    assert!(
        Instant::now() - last >= TTL,
        "the work is still running under a blackholed store"
    );
    // The store is back: the work runs again at the next leadership.
    let before = beats.len();
    net.set(Faults::None);
    sleep(TTL * 3).await;
    assert!(elector.is_leader(), "leads again once the store answers");
    assert!(
        beats_now(&b_all) > before,
        "the work runs again at the next leadership"
    );
    elector.shutdown().await.unwrap();
    match work.await.unwrap() {
        Err(RunError::Elector(elect_core::Error::Stopped { .. })) => {}
        other => panic!("run ends with the elector: {other:?}"),
    }
}

fn beats_now(beats: &Arc<Mutex<Vec<(Instant, Instant)>>>) -> usize {
    beats.lock().unwrap().len()
}

#[tokio::test(start_paused = true)]
async fn run_follows_its_policy_when_the_work_ends() {
    let store = MemoryStore::new();
    let elector = Elector::builder(store.clone(), election())
        .ttl(TTL)
        .resign_pause(Duration::from_millis(100))
        .start()
        .unwrap();
    // Done: resign and return.
    let terms: Arc<Mutex<Vec<u64>>> = Arc::default();
    let t = terms.clone();
    elector
        .run(move |guard| {
            let terms = t.clone();
            async move {
                terms.lock().unwrap().push(guard.term().0);
                Ok::<(), std::io::Error>(())
            }
        })
        .await
        .unwrap();
    assert_eq!(terms.lock().unwrap().len(), 1);
    assert!(!elector.is_leader(), "resigned once the work was done");
    // Failing twice, then done, resigning after each failure: three leaderships, three terms.
    let t = terms.clone();
    elector
        .run(move |guard| {
            let terms = t.clone();
            async move {
                let mut terms = terms.lock().unwrap();
                terms.push(guard.term().0);
                if terms.len() < 4 {
                    Err(std::io::Error::other("not yet"))
                } else {
                    Ok(())
                }
            }
        })
        .await
        .unwrap();
    let seen = terms.lock().unwrap().clone();
    assert_eq!(seen.len(), 4);
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "terms {seen:?}");
    // Stop on error: the error comes back.
    let policy = RunPolicy::default().on_error(AfterWork::Stop);
    match elector
        .run_with(policy, |_| async {
            Err::<(), _>(std::io::Error::other("fatal"))
        })
        .await
    {
        Err(RunError::Work(e)) => assert_eq!(e.to_string(), "fatal"),
        other => panic!("{other:?}"),
    }
    // Repeat: the same leadership, the same term, until done.
    let t = terms.clone();
    terms.lock().unwrap().clear();
    let policy = RunPolicy::default().on_error(AfterWork::Repeat);
    elector
        .run_with(policy, move |guard| {
            let terms = t.clone();
            async move {
                let mut terms = terms.lock().unwrap();
                terms.push(guard.term().0);
                if terms.len() < 3 {
                    Err(std::io::Error::other("again"))
                } else {
                    Ok(())
                }
            }
        })
        .await
        .unwrap();
    let seen = terms.lock().unwrap().clone();
    assert!(
        seen.len() == 3 && seen.iter().all(|t| *t == seen[0]),
        "{seen:?}"
    );
    elector.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn health_tells_leading_reachable_and_failures() {
    let memory = MemoryStore::new();
    let net = FaultyStore::new(memory.clone());
    let elector = Elector::builder(net.clone(), election())
        .ttl(TTL)
        .start()
        .unwrap();
    let before = elector.health();
    let guard = elector.leading().await.unwrap();
    let health = elector.health();
    assert!(health.leading && health.reachable, "{health:?}");
    assert_eq!(health.term, Some(guard.term()));
    assert_eq!(health.consecutive_failures, 0);
    assert!(!before.leading);
    net.set(Faults::FailAll);
    guard.lost().await;
    sleep(TTL * 2).await;
    let health = elector.health();
    assert!(!health.leading && health.term.is_none(), "{health:?}");
    assert!(health.consecutive_failures >= 3, "{health:?}");
    assert!(!health.reachable, "{health:?}");
    assert!(health.last_reply.unwrap() > TTL);
    net.set(Faults::None);
    timeout(TTL * 3, elector.leading()).await.unwrap().unwrap();
    let health = elector.health();
    assert!(
        health.reachable && health.consecutive_failures == 0,
        "{health:?}"
    );
    elector.shutdown().await.unwrap();
    let health = elector.health();
    assert!(
        health.stopped && !health.reachable && !health.leading,
        "{health:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn clones_share_one_campaign_and_the_last_drop_releases() {
    let store = MemoryStore::new();
    let elector = Elector::builder(store.clone(), election())
        .candidate(id("a"))
        .ttl(TTL)
        .start()
        .unwrap();
    let for_health = elector.clone();
    let guard = elector.leading().await.unwrap();
    assert!(for_health.is_leader());
    drop(elector);
    sleep(Duration::from_millis(10)).await;
    assert!(guard.is_leading(), "a clone still holds the campaign");
    // shutdown through a shared reference, from the clone.
    for_health.shutdown().await.unwrap();
    assert!(!guard.is_leading());
    let claim = Claim::new(election(), id("b"), Ttl::new(TTL).unwrap());
    assert!(
        matches!(
            store.try_acquire(&claim).await.unwrap(),
            elect_core::Acquire::Granted(_)
        ),
        "released at the shutdown"
    );
    assert_eq!(guard.reason(), Some(StepDown::Shutdown));
}

#[tokio::test(start_paused = true)]
async fn an_observer_whose_reads_fail_says_so() {
    let memory = MemoryStore::new();
    let net = FaultyStore::new(memory.clone());
    let elector = Elector::builder(memory.clone(), election())
        .ttl(TTL)
        .start()
        .unwrap();
    elector.leading().await.unwrap();
    let observer = elect_core::Observer::with_interval(
        Arc::new(net.clone()),
        election(),
        Duration::from_millis(500),
    )
    .unwrap();
    sleep(Duration::from_secs(1)).await;
    let health = observer.health();
    assert!(
        health.reachable && health.consecutive_failures == 0,
        "{health:?}"
    );
    assert!(observer.current().is_some());
    net.set(Faults::FailAll);
    sleep(Duration::from_secs(2)).await;
    let health = observer.health();
    assert!(
        !health.reachable && health.consecutive_failures >= 2,
        "{health:?}"
    );
    assert!(
        observer.current().is_some(),
        "the stale value stays, flagged by health"
    );
    net.set(Faults::None);
    sleep(Duration::from_secs(1)).await;
    let health = observer.health();
    assert!(
        health.reachable && health.consecutive_failures == 0,
        "{health:?}"
    );
    elector.shutdown().await.unwrap();
}

/// A store that only answers `leader` (or hangs there on demand) and hands out feeds of one
/// notifier the test drives.
#[derive(Debug, Default)]
struct Hinting {
    leader: Mutex<Option<elect_core::LeaderInfo>>,
    hang: std::sync::atomic::AtomicBool,
    notifier: elect_core::ChangeNotifier,
}

#[elect_core::async_trait]
impl LeaseStore for Hinting {
    async fn try_acquire(&self, _: &Claim) -> elect_core::Result<elect_core::Acquire> {
        Err(elect_core::Error::config("observer test store"))
    }
    async fn renew(&self, _: &elect_core::Lease) -> elect_core::Result<elect_core::Renewal> {
        Err(elect_core::Error::config("observer test store"))
    }
    async fn release(&self, _: &elect_core::Lease) -> elect_core::Result<elect_core::Release> {
        Err(elect_core::Error::config("observer test store"))
    }
    async fn leader(&self, _: &ElectionName) -> elect_core::Result<Option<elect_core::LeaderInfo>> {
        if self.hang.load(std::sync::atomic::Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        Ok(self.leader.lock().unwrap().clone())
    }
    async fn subscribe(
        &self,
        _: &ElectionName,
    ) -> elect_core::Result<Option<elect_core::ChangeFeed>> {
        Ok(Some(self.notifier.subscribe()))
    }
}

fn leader(name: &str, term: u64) -> elect_core::LeaderInfo {
    elect_core::LeaderInfo {
        holder: id(name),
        term: elect_core::Term(term),
        remaining: TTL,
        value: None,
    }
}

#[tokio::test(start_paused = true)]
async fn an_observer_shows_the_leader_a_notice_carries_before_reading_and_never_an_older_one() {
    let store = Arc::new(Hinting::default());
    *store.leader.lock().unwrap() = Some(leader("a", 5));
    let observer =
        elect_core::Observer::with_interval(store.clone(), election(), Duration::from_secs(1))
            .unwrap();
    sleep(Duration::from_millis(10)).await;
    assert_eq!(observer.current(), Some(leader("a", 5)));
    let mut changes = observer.watch();
    changes.borrow_and_update();

    // The store stops answering reads: only the notice can tell the observer of b.
    store.hang.store(true, std::sync::atomic::Ordering::SeqCst);
    store.notifier.notify_leader(leader("b", 6));
    timeout(Duration::from_millis(1), changes.changed())
        .await
        .expect("the hint is shown without a read")
        .unwrap();
    assert_eq!(observer.current(), Some(leader("b", 6)));

    // A notice naming an older term (it raced a read that saw a newer one) is not shown, nor
    // one that names no leader.
    store.notifier.notify_leader(leader("c", 4));
    sleep(Duration::from_millis(1500)).await;
    store.notifier.notify();
    sleep(Duration::from_millis(1500)).await;
    assert_eq!(observer.current(), Some(leader("b", 6)));
    assert!(!changes.has_changed().unwrap(), "no change after b");

    // Reads answer again and agree with the hint.
    store.hang.store(false, std::sync::atomic::Ordering::SeqCst);
    *store.leader.lock().unwrap() = Some(leader("b", 6));
    sleep(Duration::from_millis(2500)).await;
    assert_eq!(observer.current(), Some(leader("b", 6)));
    assert!(observer.health().reachable);
}
