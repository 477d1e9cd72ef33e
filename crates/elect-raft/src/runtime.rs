//! The tokio runtime: drives an [`Engine`] with real time, a [`Transport`], the state file, and
//! the [`Elector`] handle applications already use with the lease stores.

use std::sync::Arc;
use std::time::Duration;

use elect_core::driver::{self, ElectorCommand, ElectorDriver, GuardControl};
use elect_core::rand::Rng;
use elect_core::{
    Elector, Error, Event, LeaderInfo, Leadership, Lease, Nonce, Result, StepDown, Term, Ttl,
};
use tokio::time::{sleep_until, Instant};
use tracing::{debug, info, info_span, warn, Instrument};

use crate::config::RaftConfig;
use crate::engine::{Command, Engine, EngineConfig, Message, StepDownReason};
use crate::state::StateFile;
use crate::transport::{Inbox, Transport};

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
            value: config.value.clone(),
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
                    if commands.iter().any(asks_for_votes) {
                        // Why this node stands: how late its timer fired (this process kept
                        // off the CPU) and how long since it heard a leader (heartbeats that
                        // did not come, or were not processed).
                        debug!(
                            late_ms = ms(now.saturating_sub(next)),
                            heard_leader_ms_ago = self.engine.heard_leader_at().map(|at| ms(now.saturating_sub(at))),
                            "election timeout: asking for votes"
                        );
                    }
                    self.execute(commands, false);
                }
                received = inbox.recv(), if inbox_open => match received {
                    Some((from, message)) => {
                        // A peer answered: the cluster is reachable from here (for health).
                        self.driver.replied();
                        let now = self.now();
                        let heard = self.engine.heard_leader_at();
                        let commands = self.engine.receive(now, &from, message);
                        if commands.iter().any(grants_a_vote) {
                            debug!(
                                %from,
                                heard_leader_ms_ago = heard.map(|at| ms(now.saturating_sub(at))),
                                "granted a vote or pre-vote"
                            );
                        }
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
                        value: self.config.value.clone(),
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
                    self.driver.replied();
                    if let Some((control, _)) = &self.guard {
                        control.extend(self.origin + until);
                        self.driver.lease_extended(self.origin + until);
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
                Command::LeaderChanged {
                    leader,
                    term,
                    value,
                } => {
                    if self.guard.is_none() {
                        let leader =
                            leader
                                .filter(|l| *l != self.config.id)
                                .map(|holder| LeaderInfo {
                                    holder,
                                    term,
                                    remaining: self.config.election_timeout_min,
                                    value,
                                });
                        self.driver.publish(Leadership::Follower { leader });
                    }
                }
            }
        }
    }
}

/// Whether `command` sends a vote or pre-vote request.
fn asks_for_votes(command: &Command) -> bool {
    matches!(
        command,
        Command::Send {
            message: Message::PreVote { .. } | Message::RequestVote { .. },
            ..
        }
    )
}

/// Whether `command` sends a granted vote or pre-vote.
fn grants_a_vote(command: &Command) -> bool {
    matches!(
        command,
        Command::Send {
            message: Message::PreVoteReply { granted: true, .. }
                | Message::Vote { granted: true, .. },
            ..
        }
    )
}

/// `d` in milliseconds, to a tenth, for the traces.
fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 10_000.0).round() / 10.0
}
