//! The campaign loop: the one place where elect's timing logic lives — acquiring, renewing
//! every TTL/3, the local safety deadline, precise follower sleeps, backoff, hand-over.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{sleep_until, timeout, Instant};
use tracing::{debug, info, warn};

use super::command::{ElectorCommand, Reply};
use super::emitter::Emitter;
use super::events::{Event, StepDown};
use super::guard::{LeaderGuard, Leadership};
use super::health::HealthCell;
use super::policy::{ErrorPolicy, OnError};
use crate::error::{Error, Result};
use crate::lease::{Acquire, Claim, LeaderInfo, Lease, Nonce, Release, Renewal};
use crate::metrics;
use crate::rand::Rng;
use crate::store::{ChangeFeed, LeaseStore};
use crate::term::Term;

pub(crate) enum FeedState {
    /// Not asked yet, or the last attempt failed.
    Unknown,
    /// The store offers no feed.
    Unsupported,
    Live(ChangeFeed),
}

/// What the candidate phase or the leader phase tells the loop to do next.
enum Next {
    Campaign,
    Lead(Lease, Instant),
    Stop(Option<Error>),
}

pub(crate) struct Campaign {
    pub(crate) store: Arc<dyn LeaseStore>,
    /// What this candidate asks for; its nonce is replaced after every leadership, so a
    /// leadership that ended is never re-entered (a new one takes a new term).
    pub(crate) claim: Claim,
    /// The term of this candidate's last leadership: a lease held under its own id in that term
    /// is its own old claim, any other is a duplicate id.
    pub(crate) last_term: Option<Term>,
    /// The term a duplicate-id warning was last given for.
    pub(crate) warned_duplicate: Option<Term>,
    /// `TTL·(1 − ρ) − ε`: how long after sending a successful request leadership is believed.
    pub(crate) believe: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) resign_pause: Duration,
    pub(crate) policy: ErrorPolicy,
    pub(crate) state: Arc<watch::Sender<Leadership>>,
    pub(crate) events: Emitter,
    pub(crate) commands: mpsc::Receiver<ElectorCommand>,
    pub(crate) feed: FeedState,
    /// Subscribe failures and ended feeds since the feed last delivered a notice: the backoff
    /// of the next subscribe while sleeping as a follower, so a feed that keeps ending costs a
    /// few requests, not a loop.
    pub(crate) feed_failures: u32,
    pub(crate) rng: Rng,
    pub(crate) health: Arc<HealthCell>,
}

impl Campaign {
    pub(crate) async fn run(mut self) {
        debug!(ttl = ?self.claim.ttl.get(), "campaign started");
        let mut next = Next::Campaign;
        let error = loop {
            next = match next {
                Next::Campaign => self.campaign().await,
                Next::Lead(lease, sent) => self.lead(lease, sent).await,
                Next::Stop(error) => break error,
            };
        };
        match &error {
            Some(e) => warn!(error = %e, "campaign aborted"),
            None => info!("campaign stopped"),
        }
        self.publish(Leadership::Stopped(error));
        self.events.send(Event::Stopped);
    }

    /// Not leading: try to acquire, and sleep until the reported expiry, a change notice, or a
    /// backoff after an error.
    async fn campaign(&mut self) -> Next {
        let mut failures = 0u32;
        loop {
            self.ensure_feed().await;
            if let FeedState::Live(feed) = &mut self.feed {
                feed.mark_seen();
            }
            let sent = Instant::now();
            let answer = self
                .request("try_acquire", self.store.try_acquire(&self.claim))
                .await;
            let wait = match answer {
                Ok(Acquire::Granted(lease)) if self.claim.owns(&lease) => {
                    return Next::Lead(lease, sent)
                }
                Ok(Acquire::Granted(lease)) => {
                    // A store bug; believing it could make two leaders.
                    failures += 1;
                    let error = Error::Internal {
                        message: format!(
                            "the store granted {lease:?} in answer to {:?}",
                            self.claim
                        ),
                    };
                    if let Some(next) = self.on_error(error) {
                        return next;
                    }
                    self.backoff(failures)
                }
                Ok(Acquire::Held(info)) => {
                    failures = 0;
                    debug!(holder = %info.holder, term = %info.term, remaining = ?info.remaining, "held");
                    self.warn_if_duplicate(&info);
                    let wait = info.remaining + self.jitter();
                    self.publish(Leadership::Follower { leader: Some(info) });
                    wait
                }
                Err(error) => {
                    failures += 1;
                    if let Some(next) = self.on_error(error) {
                        return next;
                    }
                    self.backoff(failures)
                }
            };
            match self
                .wait_as_follower(wait.max(Duration::from_millis(1)))
                .await
            {
                Some(ElectorCommand::Resign(reply)) => {
                    reply.send(Ok(()));
                }
                Some(ElectorCommand::Shutdown(reply)) => {
                    reply.send(Ok(()));
                    return Next::Stop(None);
                }
                None => {}
            }
        }
    }

    /// Leading: renew every TTL/3 until a command, a refusal, an abort or the deadline.
    async fn lead(&mut self, mut lease: Lease, sent: Instant) -> Next {
        let mut deadline = sent + self.believe;
        if Instant::now() >= deadline {
            // The grant took so long to arrive that it is already unsafe to act on; ask again
            // (acquire is idempotent for the live holder, and measures from a fresh send).
            return Next::Campaign;
        }
        let (guard, control) = LeaderGuard::mint(lease.clone(), deadline);
        // Should anything below panic, the guard still ends (the supervisor reports the rest).
        let _end_on_panic = control.end_on_drop();
        let term = lease.term;
        info!(%term, "elected");
        self.publish(Leadership::Leader(guard.clone()));
        self.events.send(Event::Elected {
            term,
            at: Instant::now(),
        });
        let renew_every = self.claim.ttl.get() / 3;
        let mut next_renew = sent + renew_every;
        let mut failures = 0u32;
        let mut pending_error = None;
        let (reason, command) = loop {
            tokio::select! {
                biased;
                _ = sleep_until(deadline) => break (StepDown::DeadlinePassed, None),
                command = self.commands.recv() => match command {
                    Some(ElectorCommand::Resign(reply)) => break (StepDown::Resigned, Some(ElectorCommand::Resign(reply))),
                    Some(command) => break (StepDown::Shutdown, Some(command)),
                    None => break (StepDown::Shutdown, None),
                },
                _ = sleep_until(next_renew) => {}
            }
            let sent = Instant::now();
            let answer = tokio::select! {
                biased;
                _ = sleep_until(deadline) => break (StepDown::DeadlinePassed, None),
                answer = self.request("renew", self.store.renew(&lease)) => answer,
            };
            match answer {
                Ok(Renewal::Renewed(renewed)) => {
                    failures = 0;
                    lease = renewed;
                    deadline = sent + self.believe;
                    control.extend(deadline);
                    self.events.extended(deadline);
                    next_renew = sent + renew_every;
                }
                Ok(Renewal::Lost) => break (StepDown::Lost, None),
                Err(error) => {
                    failures += 1;
                    if self.policy.decide(&error) == OnError::Abort {
                        pending_error = Some(error);
                        break (StepDown::Aborted, None);
                    }
                    warn!(error = %error, "renew failed; retrying until the deadline");
                    self.events.send(Event::Error(error));
                    next_renew = Instant::now() + self.backoff(failures);
                }
            }
        };
        // Stop believing *before* anything else is sent, so the release below can never let
        // another candidate lead while this one still thinks it does.
        control.end(reason);
        // This leadership is over for good: the next one is a new claim, so it can only be a
        // new grant with a new term, never a re-entry into this lease (whose record a foreign
        // write may have changed, or whose renewal may still land).
        self.claim.nonce = Nonce::random();
        self.last_term = Some(term);
        let at = Instant::now().min(deadline);
        info!(%term, ?reason, "stepped down");
        self.publish(Leadership::Follower { leader: None });
        self.events.send(Event::SteppedDown { term, at, reason });
        match reason {
            StepDown::Lost | StepDown::DeadlinePassed => Next::Campaign,
            StepDown::Aborted => {
                let error = pending_error.expect("set with Aborted");
                let _ = self.release(&lease).await;
                self.events.send(Event::Error(error.clone()));
                Next::Stop(Some(error))
            }
            StepDown::Resigned | StepDown::Shutdown => {
                let released = self.release(&lease).await;
                match command {
                    Some(ElectorCommand::Resign(reply)) => {
                        // A release whose outcome is unknown may still land later. Had this
                        // candidate meanwhile re-acquired the same term (acquire is idempotent
                        // for the live holder), that late release would end a lease it
                        // believes in. Sitting out a full TTL rules it out: by then the lease
                        // was released or expired, so any re-grant takes a new term.
                        let pause = if released.is_ok() {
                            self.resign_pause
                        } else {
                            self.resign_pause.max(self.claim.ttl.get())
                        };
                        reply.send(released);
                        self.sit_out(pause).await
                    }
                    Some(ElectorCommand::Shutdown(reply)) => {
                        reply.send(released);
                        Next::Stop(None)
                    }
                    None => Next::Stop(None),
                }
            }
        }
    }

    /// After a resign: stay out of the race so another candidate takes over.
    async fn sit_out(&mut self, pause: Duration) -> Next {
        let until = Instant::now() + pause;
        loop {
            tokio::select! {
                _ = sleep_until(until) => return Next::Campaign,
                command = self.commands.recv() => match command {
                    Some(ElectorCommand::Resign(reply)) => { reply.send(Ok(())); }
                    Some(ElectorCommand::Shutdown(reply)) => { reply.send(Ok(())); return Next::Stop(None); }
                    None => return Next::Stop(None),
                },
            }
        }
    }

    async fn release(&mut self, lease: &Lease) -> Result<()> {
        match self.request("release", self.store.release(lease)).await {
            Ok(Release::Released) => {
                debug!(term = %lease.term, "released");
                Ok(())
            }
            Ok(Release::NotHeld) => {
                debug!(term = %lease.term, "release found the lease already gone");
                Ok(())
            }
            Err(error) => {
                warn!(error = %error, "release failed; the lease will expire at the coordinator");
                self.events.send(Event::Error(error.clone()));
                Err(error)
            }
        }
    }

    /// Sleeps as a follower; wakes early on a change notice or a command. A closed command
    /// channel (handle dropped) is returned as a shutdown.
    ///
    /// Without a live feed (a subscribe failed, or the feed ended with its connection: a server
    /// restart, a failover, a killed connection), it subscribes again after a backoff instead of
    /// sleeping blind until the expiry, which for a long lease would miss every hand-over of the
    /// rest of the sleep; once subscribed it wakes to read the lease, since a notice may have been
    /// sent while nobody listened.
    async fn wait_as_follower(&mut self, wait: Duration) -> Option<ElectorCommand> {
        let until = Instant::now() + wait;
        let mut resubscribe = None;
        loop {
            if matches!(self.feed, FeedState::Unknown) && resubscribe.is_none() {
                resubscribe = Some(Instant::now() + self.backoff(self.feed_failures));
            }
            let (feed, commands) = (&mut self.feed, &mut self.commands);
            let notice = async {
                match feed {
                    FeedState::Live(feed) => feed.changed().await,
                    _ => std::future::pending().await,
                }
            };
            let at = resubscribe;
            let retry = async move {
                match at {
                    Some(at) => sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = sleep_until(until) => return None,
                () = retry => {
                    resubscribe = None;
                    self.ensure_feed().await;
                    if matches!(self.feed, FeedState::Live(_)) {
                        debug!("subscribed again; reading the lease for what the feed missed");
                        return None;
                    }
                }
                alive = notice => {
                    if alive {
                        self.feed_failures = 0;
                        return None;
                    }
                    debug!("change feed ended; subscribing again");
                    self.feed = FeedState::Unknown;
                    self.feed_failures = self.feed_failures.saturating_add(1);
                }
                command = commands.recv() => {
                    return Some(command.unwrap_or_else(|| ElectorCommand::Shutdown(Reply(oneshot::channel().0))));
                }
            }
        }
    }

    async fn ensure_feed(&mut self) {
        if !matches!(self.feed, FeedState::Unknown) {
            return;
        }
        self.feed = match self
            .request("subscribe", self.store.subscribe(&self.claim.election))
            .await
        {
            Ok(Some(feed)) => FeedState::Live(feed),
            Ok(None) => FeedState::Unsupported,
            Err(error) => {
                debug!(error = %error, "subscribe failed; will retry");
                self.feed_failures = self.feed_failures.saturating_add(1);
                FeedState::Unknown
            }
        };
    }

    /// Runs one request under the request timeout.
    async fn request<T>(
        &self,
        operation: &'static str,
        request: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        let sent = Instant::now();
        let answer = timeout(self.request_timeout, request)
            .await
            .unwrap_or_else(|_| {
                Err(Error::timeout(
                    "coordinator",
                    operation,
                    self.request_timeout,
                ))
            });
        match &answer {
            Ok(_) => self.health.replied(),
            Err(_) => self.health.failed(),
        }
        let error = answer.as_ref().err();
        metrics::request(self.store.kind(), operation, sent.elapsed(), error);
        answer
    }

    /// Applies the error policy outside leadership: `Some(stop)` to abort.
    fn on_error(&mut self, error: Error) -> Option<Next> {
        match self.policy.decide(&error) {
            OnError::Retry => {
                warn!(error = %error, "request failed; retrying");
                self.events.send(Event::Error(error));
                None
            }
            OnError::Abort => {
                self.events.send(Event::Error(error.clone()));
                Some(Next::Stop(Some(error)))
            }
        }
    }

    fn publish(&self, state: Leadership) {
        self.events.publish(&self.state, state);
    }

    /// Warns once per term when the lease is held under this candidate's own id by a claim
    /// that is not its own last one: another elector was started with the same id.
    fn warn_if_duplicate(&mut self, info: &LeaderInfo) {
        if info.holder != self.claim.candidate
            || Some(info.term) == self.last_term
            || Some(info.term) == self.warned_duplicate
        {
            return;
        }
        self.warned_duplicate = Some(info.term);
        warn!(
            term = %info.term,
            "another elector with this candidate id holds the lease (ids must be unique); \
             following it until its lease ends"
        );
    }

    /// A small random delay added to follower sleeps so followers do not stampede.
    /// A follower's wake-up jitter: up to TTL/400, at most 5 ms. Enough to spread followers
    /// that were told the same expiry over a few milliseconds; small enough that crash
    /// failover stays within a few milliseconds of the expiry (acquire is atomic on every
    /// store, so followers arriving together cost requests, never safety).
    fn jitter(&mut self) -> Duration {
        self.rng
            .duration_up_to((self.claim.ttl.get() / 400).min(Duration::from_millis(5)))
    }

    /// Exponential backoff with equal jitter: 25 ms · 2ⁿ, capped at TTL/4.
    fn backoff(&mut self, failures: u32) -> Duration {
        let cap = self.claim.ttl.get() / 4;
        let full = Duration::from_millis(25)
            .saturating_mul(1u32 << failures.min(16))
            .min(cap);
        full / 2 + self.rng.duration_up_to(full / 2)
    }
}
