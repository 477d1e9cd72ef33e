//! The batched path's safety when one election's answer is lost and another's is not, on the
//! in-memory store in virtual time. (A corrupt record in a batch is checked on Redis, whose
//! batch script decides it: elect-redis `tests/batch.rs`.)

use std::sync::{Arc, Mutex};
use std::time::Duration;

use elect_core::batch::{BatchConfig, BatchStore, Batched};
use elect_core::{
    async_trait, Acquire, Claim, ElectionName, Elector, Error, LeaderInfo, Lease, LeaseStore,
    MemoryStore, Release, Renewal, Result, StepDown,
};
use tokio::time::Instant;

/// The in-memory store, except that the renewal answers of one chosen election are lost on the
/// way back: the renewal is applied, its caller hears `Unavailable`.
#[derive(Debug, Clone)]
struct LosesReplies {
    store: MemoryStore,
    lose: Arc<Mutex<Option<ElectionName>>>,
    batches: Arc<Mutex<Vec<usize>>>,
}

impl LosesReplies {
    fn losing(&self, election: Option<&ElectionName>) {
        *self.lose.lock().unwrap() = election.cloned();
    }
}

#[async_trait]
impl LeaseStore for LosesReplies {
    async fn try_acquire(&self, claim: &Claim) -> Result<Acquire> {
        self.store.try_acquire(claim).await
    }
    async fn renew(&self, lease: &Lease) -> Result<Renewal> {
        self.store.renew(lease).await
    }
    async fn release(&self, lease: &Lease) -> Result<Release> {
        self.store.release(lease).await
    }
    async fn leader(&self, election: &ElectionName) -> Result<Option<LeaderInfo>> {
        self.store.leader(election).await
    }
}

#[async_trait]
impl BatchStore for LosesReplies {
    async fn try_acquire_batch(&self, claims: &[Claim]) -> Vec<Result<Acquire>> {
        self.batches.lock().unwrap().push(claims.len());
        self.store.try_acquire_batch(claims).await
    }

    async fn renew_batch(&self, leases: &[Lease]) -> Vec<Result<Renewal>> {
        self.batches.lock().unwrap().push(leases.len());
        let mut answers = self.store.renew_batch(leases).await;
        let lose = self.lose.lock().unwrap().clone();
        for (lease, answer) in leases.iter().zip(answers.iter_mut()) {
            if Some(&lease.election) == lose.as_ref() {
                *answer = Err(Error::Unavailable {
                    store: "memory",
                    operation: "renew",
                    message: "the reply was lost".to_owned(),
                    source: None,
                });
            }
        }
        answers
    }
}

fn name(s: &str) -> ElectionName {
    ElectionName::new(s).unwrap()
}

/// Election `a` loses every renewal answer while `b`, renewed in the same batches, does not:
/// `a`'s leader steps down at its local deadline while the coordinator still holds its lease
/// for it (so nobody else can have been granted it), and `b` leads on in the same term,
/// renewed all along.
#[tokio::test(start_paused = true)]
async fn a_renewal_answer_lost_for_one_election_ends_only_that_leadership_and_in_time() {
    let inner = LosesReplies {
        store: MemoryStore::new(),
        lose: Arc::default(),
        batches: Arc::default(),
    };
    let store = Batched::new(inner.clone(), BatchConfig::default());
    let (a, b) = (name("batch-a"), name("batch-b"));
    let ttl = Duration::from_secs(1);
    let elector_a = Elector::builder(store.clone(), a.clone())
        .ttl(ttl)
        .start()
        .unwrap();
    let elector_b = Elector::builder(store.clone(), b.clone())
        .ttl(ttl)
        .start()
        .unwrap();
    let guard_a = elector_a.leading().await.unwrap();
    let guard_b = elector_b.leading().await.unwrap();
    tokio::time::sleep(ttl * 2).await;
    assert!(
        inner.batches.lock().unwrap().contains(&2),
        "the two elections' renewals went in one batch: {:?}",
        inner.batches.lock().unwrap()
    );

    inner.losing(Some(&a));
    let lost_from = Instant::now();
    let b_deadline_then = guard_b.deadline();
    guard_a.lost().await;
    let stepped_down = Instant::now();
    assert_eq!(guard_a.reason(), Some(StepDown::DeadlinePassed));
    // The last answer a heard was sent before `lost_from`; its belief lasts less than a TTL.
    assert!(
        stepped_down - lost_from < ttl,
        "a believed {:?} past its last answer",
        stepped_down - lost_from
    );
    // The renewals landed: the coordinator still holds a's lease, in the same term, so no
    // other candidate could have been granted it while a believed.
    let held = store.leader(&a).await.unwrap().expect("a's lease is live");
    assert_eq!(held.term, guard_a.term());
    assert!(held.remaining > Duration::ZERO);

    // b was renewed in the very batches that lost a's answers.
    assert!(
        guard_b.is_leading(),
        "b stepped down: {:?}",
        guard_b.reason()
    );
    assert!(guard_b.deadline() > b_deadline_then);
    assert_eq!(
        elector_b.leadership().guard().unwrap().term(),
        guard_b.term()
    );

    // Healed, a leads again, in a new term (its old leadership ended, its lease ran out).
    inner.losing(None);
    let again = elector_a.leading().await.unwrap();
    assert!(again.term() > guard_a.term());
    assert!(guard_b.is_leading());
    elector_a.shutdown().await.unwrap();
    elector_b.shutdown().await.unwrap();
}

/// Many elections started together go out in a few batches, not one request each, and each
/// gets its own term.
#[tokio::test(start_paused = true)]
async fn elections_started_together_share_requests() {
    let inner = LosesReplies {
        store: MemoryStore::new(),
        lose: Arc::default(),
        batches: Arc::default(),
    };
    let store = Batched::new(inner.clone(), BatchConfig::default().max_batch(64));
    let electors: Vec<Elector> = (0..200)
        .map(|k| {
            Elector::builder(store.clone(), name(&format!("shard-{k}")))
                .ttl(Duration::from_secs(3))
                .start()
                .unwrap()
        })
        .collect();
    for elector in &electors {
        elector.leading().await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
    let batches = inner.batches.lock().unwrap().clone();
    let items: usize = batches.iter().sum();
    // 200 acquisitions and ~10 s / 1 s of renewals each: ~2,200 items.
    assert!(items >= 2_000, "{items} items");
    assert!(batches.iter().all(|&n| n <= 64), "{batches:?}");
    assert!(
        batches.len() * 20 < items,
        "{} requests for {items} items",
        batches.len()
    );
    for elector in &electors {
        assert!(elector.is_leader());
        elector.shutdown().await.unwrap();
    }
}
