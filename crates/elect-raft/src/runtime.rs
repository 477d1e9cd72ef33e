//! The tokio runtime: drives an [`Engine`] with real time, a [`Transport`], the state file, and
//! the [`Elector`] handle applications already use with the lease stores.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use elect_core::driver::{self, ElectorCommand, ElectorDriver, GuardControl};
use elect_core::rand::Rng;
use elect_core::{
    ElectionName, Elector, Error, Event, LeaderInfo, Leadership, Lease, Nonce, Result, StepDown,
    Term, Ttl,
};
use tokio::time::{sleep_until, Instant};
use tracing::{debug, info, info_span, warn, Instrument};

use crate::engine::{Command, Engine, EngineConfig, NodeId, StepDownReason};
use crate::state::StateFile;
use crate::tcp::TcpTransport;
use crate::transport::{Inbox, Transport};
use crate::wire::ClusterKey;

/// One node's configuration.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RaftConfig {
    /// This node.
    pub id: NodeId,
    /// The name leases and events carry (default `raft`).
    pub election: ElectionName,
    /// The voters (this node too, unless it is an observer).
    pub voters: Vec<NodeId>,
    /// Non-voting members: they follow, never vote, never lead.
    pub observers: Vec<NodeId>,
    /// Heartbeat interval (default 50 ms); well under the minimum election timeout.
    pub heartbeat: Duration,
    /// Minimum election timeout (default 300 ms, at least 100 ms); also the leader lease.
    pub election_timeout_min: Duration,
    /// Maximum election timeout (default 600 ms).
    pub election_timeout_max: Duration,
    /// Clock-rate bound ρ between nodes (default 1 %).
    pub clock_drift: f64,
    /// Where term and vote are persisted (fsynced before a vote is sent). Without it a
    /// restarted node forgets its vote, and could vote twice in one term.
    pub state_dir: Option<PathBuf>,
    /// Seed for election-timeout randomness (default: from entropy).
    pub seed: Option<u64>,
}

impl RaftConfig {
    /// A configuration for node `id` among `voters`, with the defaults.
    pub fn new(id: NodeId, voters: impl IntoIterator<Item = NodeId>) -> RaftConfig {
        RaftConfig {
            id,
            election: ElectionName::new("raft").expect("valid"),
            voters: voters.into_iter().collect(),
            observers: Vec::new(),
            heartbeat: Duration::from_millis(50),
            election_timeout_min: Duration::from_millis(300),
            election_timeout_max: Duration::from_millis(600),
            clock_drift: 0.01,
            state_dir: None,
            seed: None,
        }
    }

    /// Sets the observers.
    pub fn observers(mut self, observers: impl IntoIterator<Item = NodeId>) -> Self {
        self.observers = observers.into_iter().collect();
        self
    }

    /// Sets the heartbeat interval and the election timeout range.
    pub fn timing(mut self, heartbeat: Duration, min: Duration, max: Duration) -> Self {
        self.heartbeat = heartbeat;
        self.election_timeout_min = min;
        self.election_timeout_max = max;
        self
    }

    /// Sets the state directory.
    pub fn state_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.state_dir = Some(dir.into());
        self
    }

    /// Sets the election name.
    pub fn election(mut self, election: ElectionName) -> Self {
        self.election = election;
        self
    }

    /// Sets the seed.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Checks the configuration: unique ids, at least one voter, this node a member, and a
    /// heartbeat well under the minimum election timeout.
    pub fn validate(&self) -> Result<()> {
        let voters: BTreeSet<_> = self.voters.iter().collect();
        let observers: BTreeSet<_> = self.observers.iter().collect();
        if voters.is_empty() {
            return Err(Error::config("at least one voter is needed"));
        }
        if voters.len() != self.voters.len() || observers.len() != self.observers.len() {
            return Err(Error::config("node ids must be unique"));
        }
        if let Some(both) = voters.intersection(&observers).next() {
            return Err(Error::config(format!(
                "{both} is both a voter and an observer"
            )));
        }
        if !voters.contains(&self.id) && !observers.contains(&self.id) {
            return Err(Error::config(format!(
                "this node ({}) is neither a voter nor an observer",
                self.id
            )));
        }
        if self.election_timeout_min < Ttl::MIN {
            return Err(Error::config(format!(
                "the minimum election timeout {:?} must be at least {:?}",
                self.election_timeout_min,
                Ttl::MIN
            )));
        }
        if self.election_timeout_max < self.election_timeout_min {
            return Err(Error::config("the election timeout range is empty"));
        }
        if self.heartbeat.is_zero() || self.heartbeat * 3 > self.election_timeout_min {
            return Err(Error::config(format!(
                "the heartbeat {:?} must be at most a third of the minimum election timeout {:?}",
                self.heartbeat, self.election_timeout_min
            )));
        }
        if !(0.0..=0.1).contains(&self.clock_drift) || self.clock_drift.is_nan() {
            return Err(Error::config(format!(
                "clock drift {} must be between 0 and 0.1",
                self.clock_drift
            )));
        }
        Ok(())
    }
}

/// Starts a node: validates `config`, loads its persisted term and vote, and drives the
/// engine on the current tokio runtime. Returns the same [`Elector`] handle the lease stores
/// give (`leading()`, `resign()`, `shutdown()`, `watch()`, `events()`).
pub fn start(config: RaftConfig, transport: Arc<dyn Transport>, inbox: Inbox) -> Result<Elector> {
    config.validate()?;
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::InvalidConfig {
        message: "elect_raft::start must be called inside a tokio runtime".into(),
    })?;
    let state = config.state_dir.as_ref().map(StateFile::open).transpose()?;
    let (term, vote) = match &state {
        Some(state) => state.load()?,
        None => (Term::ZERO, None),
    };
    let origin = Instant::now();
    let engine = Engine::new(
        EngineConfig {
            id: config.id.clone(),
            voters: config.voters.iter().cloned().collect(),
            observers: config.observers.iter().cloned().collect(),
            heartbeat: config.heartbeat,
            election_timeout_min: config.election_timeout_min,
            election_timeout_max: config.election_timeout_max,
            clock_drift: config.clock_drift,
            seed: config
                .seed
                .unwrap_or_else(|| Rng::from_entropy().next_u64()),
        },
        Duration::ZERO,
        term,
        vote,
    );
    let (elector, driver) = driver::elector(config.election.clone(), config.id.clone());
    let node = Node {
        lease_ttl: Ttl::new(config.election_timeout_min)?,
        config,
        engine,
        origin,
        transport,
        state,
        driver,
        guard: None,
    };
    let span = info_span!("raft", node = %node.config.id);
    runtime.spawn(node.run(inbox).instrument(span));
    Ok(elector)
}

/// Starts a node on TCP: listens on `listen`, reaches `peers` (every member's id and address,
/// observers included; this node's own entry is ignored), authenticates every frame with `key`
/// when given, and drives the engine. Returns the [`Elector`] and the transport (for
/// [`TcpTransport::dropped_frames`] and [`TcpTransport::stop`]).
pub async fn start_tcp(
    config: RaftConfig,
    listen: std::net::SocketAddr,
    peers: std::collections::BTreeMap<NodeId, std::net::SocketAddr>,
    key: Option<ClusterKey>,
) -> Result<(Elector, Arc<TcpTransport>)> {
    config.validate()?;
    let (transport, inbox) = TcpTransport::start(config.id.clone(), listen, peers, key)
        .await
        .map_err(|e| Error::InvalidConfig {
            message: format!("cannot listen on {listen}: {e}"),
        })?;
    let elector = start(config, transport.clone(), inbox)?;
    Ok((elector, transport))
}

struct Node {
    config: RaftConfig,
    lease_ttl: Ttl,
    engine: Engine,
    origin: Instant,
    transport: Arc<dyn Transport>,
    state: Option<StateFile>,
    driver: ElectorDriver,
    /// The current leadership: its control, term and deadline.
    guard: Option<(GuardControl, Term)>,
}

impl Node {
    fn now(&self) -> Duration {
        Instant::now() - self.origin
    }

    async fn run(mut self, mut inbox: Inbox) {
        debug!(term = %self.engine.term(), "node started");
        let mut inbox_open = true;
        loop {
            let next = self.engine.next_deadline();
            let wake = self
                .origin
                .checked_add(next)
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400));
            tokio::select! {
                _ = sleep_until(wake) => {
                    let now = self.now();
                    let commands = self.engine.tick(now);
                    self.execute(commands, false);
                }
                received = inbox.recv(), if inbox_open => match received {
                    Some((from, message)) => {
                        let now = self.now();
                        let commands = self.engine.receive(now, &from, message);
                        self.execute(commands, false);
                    }
                    None => inbox_open = false,
                },
                command = self.driver.next_command() => match command {
                    Some(ElectorCommand::Resign(reply)) => {
                        let commands = self.engine.resign(self.now());
                        self.execute(commands, false);
                        reply.send(Ok(()));
                    }
                    Some(ElectorCommand::Shutdown(reply)) => {
                        let commands = self.engine.resign(self.now());
                        self.execute(commands, true);
                        reply.send(Ok(()));
                        break;
                    }
                    Some(_) => {}
                    None => {
                        let commands = self.engine.resign(self.now());
                        self.execute(commands, true);
                        break;
                    }
                },
            }
        }
        info!("node stopped");
        self.driver.publish(Leadership::Stopped(None));
        self.driver.emit(Event::Stopped);
    }

    /// Carries out the engine's commands in order. A failed persist drops the rest of the
    /// batch: a vote that is not durable must not be sent.
    fn execute(&mut self, commands: Vec<Command>, shutting_down: bool) {
        for command in commands {
            match command {
                Command::Persist { term, voted_for } => {
                    // Blocking on purpose: nothing after this command may leave the node before
                    // the write is durable, and the engine has nothing else to do meanwhile.
                    if let Some(state) = &self.state {
                        if let Err(error) = state.store(term, voted_for.as_ref()) {
                            warn!(%error, "could not persist term and vote; not sending");
                            self.driver.emit(Event::Error(error));
                            return;
                        }
                    }
                }
                Command::Send { to, message } => self.transport.send(&to, message),
                Command::BecameLeader { term, until } => {
                    let deadline = self.origin + until;
                    let lease = Lease {
                        election: self.config.election.clone(),
                        holder: self.config.id.clone(),
                        // Raft terms are already one per leadership; the nonce only names it.
                        nonce: Nonce::random(),
                        term,
                        ttl: self.lease_ttl,
                    };
                    let (guard, control) = driver::guard(lease, deadline);
                    self.guard = Some((control, term));
                    info!(%term, "elected");
                    self.driver.publish(Leadership::Leader(guard));
                    self.driver.emit(Event::Elected {
                        term,
                        at: Instant::now(),
                    });
                }
                Command::LeaseExtended { until, .. } => {
                    if let Some((control, _)) = &self.guard {
                        control.extend(self.origin + until);
                    }
                }
                Command::SteppedDown { term, reason } => {
                    if let Some((control, _)) = self.guard.take() {
                        let reason = match reason {
                            StepDownReason::Resigned if shutting_down => StepDown::Shutdown,
                            StepDownReason::Resigned => StepDown::Resigned,
                            StepDownReason::HigherTerm => StepDown::Lost,
                            StepDownReason::LeaseExpired => StepDown::DeadlinePassed,
                        };
                        control.end(reason);
                        let at = Instant::now().min(control.deadline());
                        info!(%term, ?reason, "stepped down");
                        self.driver.emit(Event::SteppedDown { term, at, reason });
                    }
                    self.driver.publish(Leadership::Follower { leader: None });
                }
                Command::LeaderChanged { leader, term } => {
                    if self.guard.is_none() {
                        let leader =
                            leader
                                .filter(|l| *l != self.config.id)
                                .map(|holder| LeaderInfo {
                                    holder,
                                    term,
                                    remaining: self.config.election_timeout_min,
                                });
                        self.driver.publish(Leadership::Follower { leader });
                    }
                }
            }
        }
    }
}
