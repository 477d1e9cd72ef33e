//! What the elector-level checks run on: a [`Harness`] starts the candidates of one election
//! and can cut any of them off. The lease stores run through [`StoreHarness`] (each candidate
//! behind its own [`FaultyStore`]); elect-raft runs a cluster of nodes through its own.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{candidate_value, fresh_election, id, Faults, FaultyStore, Recorder};
use crate::elector::Elector;
use crate::lease::Ttl;
use crate::name::ElectionName;
use crate::store::LeaseStore;

/// Starts candidates for the checks and cuts them off. Implement it to run the elector-level
/// checks ([`cluster`](super::cluster)) on a coordinator that is not a [`LeaseStore`].
pub trait Harness: Send + Sync {
    /// Starts `n` candidates of a fresh election named after `check`. Each must send its events
    /// to `recorder` from its first event on ([`Recorder::track`] with a receiver subscribed
    /// before the candidate starts), and candidate `k` publishes
    /// [`candidate_value(k)`](super::candidate_value) with its leadership. `resign_pause` is
    /// how long a candidate that resigned stays out of the race, where the coordinator has such
    /// a notion.
    fn start(
        &self,
        check: &str,
        n: usize,
        resign_pause: Duration,
        recorder: &Recorder,
    ) -> Vec<Elector>;

    /// Cuts candidate `k` of the last start off from everything — a crash or a partition, as
    /// the others see it — or heals it.
    fn cut(&self, k: usize, cut: bool);
}

type Net = FaultyStore<Arc<dyn LeaseStore>>;

/// The election and the candidates' networks of the last start.
#[derive(Debug, Default)]
struct Started {
    election: Option<ElectionName>,
    nets: Vec<Net>,
}

/// Runs candidates on a [`LeaseStore`], each behind its own [`FaultyStore`] standing for its
/// network; cutting a candidate blackholes its requests.
#[derive(Debug)]
pub struct StoreHarness {
    store: Arc<dyn LeaseStore>,
    ttl: Ttl,
    started: Mutex<Started>,
}

impl StoreHarness {
    /// Candidates on `store` with leases of `ttl`.
    pub fn new(store: Arc<dyn LeaseStore>, ttl: Ttl) -> StoreHarness {
        StoreHarness {
            store,
            ttl,
            started: Mutex::default(),
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn LeaseStore> {
        &self.store
    }

    /// Candidate `k`'s network, to inject other faults than a cut.
    pub fn net(&self, k: usize) -> Net {
        self.lock().nets[k].clone()
    }

    /// The election of the last start.
    pub fn election(&self) -> ElectionName {
        self.lock().election.clone().expect("started")
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Started> {
        self.started.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Harness for StoreHarness {
    fn start(
        &self,
        check: &str,
        n: usize,
        resign_pause: Duration,
        recorder: &Recorder,
    ) -> Vec<Elector> {
        let election = fresh_election(check);
        let mut nets = Vec::new();
        let electors = (0..n)
            .map(|k| {
                let id = id(&format!("candidate-{k}"));
                let net = FaultyStore::new(self.store.clone());
                let builder = Elector::builder(net.clone(), election.clone())
                    .candidate(id.clone())
                    .ttl(self.ttl.get())
                    .resign_pause(resign_pause)
                    .value(candidate_value(k));
                recorder.track(id, builder.events());
                nets.push(net);
                builder.start().expect("a valid elector configuration")
            })
            .collect();
        *self.lock() = Started {
            election: Some(election),
            nets,
        };
        electors
    }

    fn cut(&self, k: usize, cut: bool) {
        self.net(k)
            .set(if cut { Faults::Blackhole } else { Faults::None });
    }
}
