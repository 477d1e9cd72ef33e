//! [`ElectorBuilder`]: validating the configuration and starting the campaign task.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, watch};
use tracing::{error, info_span, Instrument};

use super::callbacks::Callbacks;
use super::campaign::{Campaign, FeedState};
use super::emitter::Emitter;
use super::events::{Event, StepDown};
use super::guard::Leadership;
use super::health::HealthCell;
use super::policy::ErrorPolicy;
use super::{Elector, Handle};
use crate::error::{Error, Result};
use crate::lease::{Claim, LeaderValue, Ttl};
use crate::metrics::Who;
use crate::name::{CandidateId, ElectionName};
use crate::rand::Rng;
use crate::store::LeaseStore;

/// Configures and starts an [`Elector`]. Made by [`Elector::builder`].
#[derive(Debug)]
#[must_use = "call start() to campaign"]
pub struct ElectorBuilder {
    pub(crate) store: Arc<dyn LeaseStore>,
    pub(crate) election: ElectionName,
    pub(crate) candidate: Option<CandidateId>,
    pub(crate) ttl: Duration,
    pub(crate) clock_drift: f64,
    pub(crate) safety_margin: Duration,
    pub(crate) request_timeout: Option<Duration>,
    pub(crate) resign_pause: Option<Duration>,
    pub(crate) policy: ErrorPolicy,
    pub(crate) events: Emitter,
    pub(crate) callbacks: Option<Callbacks>,
    pub(crate) value: Option<String>,
}

impl ElectorBuilder {
    /// Subscribes to the elector's [`Event`]s before it starts, so not even the first one can be
    /// missed (see [`Elector::events`]).
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Async [`Callbacks`] on leadership changes, run in order on a task of their own, each
    /// under its timeout.
    pub fn callbacks(mut self, callbacks: Callbacks) -> Self {
        self.callbacks = Some(callbacks);
        self
    }

    /// A small value (at most [`LeaderValue::MAX_LEN`] bytes of UTF-8; its address, say) that
    /// this candidate publishes with each of its leaderships: followers and observers read it in
    /// [`LeaderInfo::value`](crate::LeaderInfo). Checked by [`start`](Self::start).
    pub fn value(mut self, value: impl Into<String>) -> Self {
        self.value = Some(value.into());
        self
    }

    /// This candidate's id; default [`CandidateId::generate`] (the go-master/tomcz
    /// `WithNodeName`). It names the candidate for people; it need not be unique: two electors
    /// with one id are still two holders (each claim carries its own [`Nonce`](crate::Nonce)), so one leads
    /// and the other follows, with a warning in the log.
    pub fn candidate(mut self, id: CandidateId) -> Self {
        self.candidate = Some(id);
        self
    }

    /// The lease TTL (default 10 s; between [`Ttl::MIN`] and [`Ttl::MAX`]): how long a crashed
    /// leader blocks the election. The leader renews every third of it.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// The clock-rate bound ρ between this host and the coordinator (default 1 %, at most 10 %).
    pub fn clock_drift(mut self, rho: f64) -> Self {
        self.clock_drift = rho;
        self
    }

    /// The margin ε subtracted from each deadline (default 2 ms; below a tenth of the TTL).
    pub fn safety_margin(mut self, margin: Duration) -> Self {
        self.safety_margin = margin;
        self
    }

    /// How long one request may take before it counts as failed (default TTL / 3; above zero,
    /// at most one day). A renewal is also abandoned at the safety deadline, whichever comes
    /// first.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = Some(timeout);
        self
    }

    /// How long a candidate that resigned stays out of the race, so another can take over
    /// (default: one TTL; at most one day).
    pub fn resign_pause(mut self, pause: Duration) -> Self {
        self.resign_pause = Some(pause);
        self
    }

    /// What to do when a request fails (default [`ErrorPolicy::RetryTransient`]).
    pub fn on_error(mut self, policy: ErrorPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Validates the configuration and spawns the campaign on the current tokio runtime.
    pub fn start(self) -> Result<Elector> {
        let ttl = Ttl::new(self.ttl)?;
        if !(0.0..=0.1).contains(&self.clock_drift) || self.clock_drift.is_nan() {
            return Err(Error::config(format!(
                "clock drift {} must be between 0 and 0.1",
                self.clock_drift
            )));
        }
        if self.safety_margin >= ttl.get() / 10 {
            return Err(Error::config(format!(
                "safety margin {:?} must be below a tenth of the TTL {:?}",
                self.safety_margin,
                ttl.get()
            )));
        }
        let request_timeout = self.request_timeout.unwrap_or(ttl.get() / 3);
        if request_timeout.is_zero() || request_timeout > Ttl::MAX {
            return Err(Error::config(format!(
                "request timeout {request_timeout:?} must be above zero and at most one day"
            )));
        }
        let resign_pause = self.resign_pause.unwrap_or(ttl.get());
        if resign_pause > Ttl::MAX {
            return Err(Error::config(format!(
                "resign pause {resign_pause:?} must be at most one day"
            )));
        }
        let value = self.value.map(LeaderValue::new).transpose()?;
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| Error::config("Elector::start must be called inside a tokio runtime"))?;
        let candidate = self.candidate.unwrap_or_else(CandidateId::generate);
        let (state_tx, state_rx) = watch::channel(Leadership::Follower { leader: None });
        let state = Arc::new(state_tx);
        let events = self.events;
        let (commands, command_rx) = mpsc::channel(8);
        // A follower's requests may be a TTL apart; each may take up to the request timeout.
        let health = HealthCell::new(ttl.get() + request_timeout);
        let span = info_span!("elector", election = %self.election, candidate = %candidate);
        let who = Who::new(&self.election, &candidate);
        events.set_who(who.clone());
        if let Some(callbacks) = self.callbacks {
            let notices = events.sink();
            let deliver = callbacks.deliver(notices, health.clone(), who);
            runtime.spawn(deliver.instrument(span.clone()));
        }
        let campaign = Campaign {
            store: self.store,
            claim: Claim::new(self.election.clone(), candidate.clone(), ttl).with_value(value),
            last_term: None,
            warned_duplicate: None,
            believe: ttl.get().mul_f64(1.0 - self.clock_drift) - self.safety_margin,
            request_timeout,
            resign_pause,
            policy: self.policy,
            state: state.clone(),
            events: events.clone(),
            commands: command_rx,
            feed: FeedState::Unknown,
            feed_failures: 0,
            rng: Rng::from_entropy(),
            health: health.clone(),
        };
        let task = runtime.spawn(campaign.run().instrument(span.clone()));
        runtime.spawn(supervise(task, state, events.clone()).instrument(span));
        Ok(Elector {
            inner: Arc::new(Handle {
                election: self.election,
                candidate,
                state: state_rx,
                events,
                commands,
                // The release is one request: give it its timeout (at most a TTL) and a little
                // more.
                release_wait: request_timeout.min(ttl.get()) + Duration::from_millis(100),
                health,
            }),
        })
    }
}

/// Waits for a campaign task and reports a panic as the elector's end, so that no campaign can
/// die unseen: `leading()` returns the error and the state reads `Stopped`.
pub(crate) async fn supervise(
    task: tokio::task::JoinHandle<()>,
    state: Arc<watch::Sender<Leadership>>,
    events: Emitter,
) {
    let Err(failure) = task.await else {
        return;
    };
    if !failure.is_panic() {
        return; // Cancelled: the runtime is shutting down.
    }
    let payload = failure.into_panic();
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into());
    error!(%message, "the campaign task panicked; the elector has stopped");
    let error = Error::Internal {
        message: format!("the campaign task panicked: {message}"),
    };
    // A leadership the panic cut short ends here for subscribers too (its guard has already
    // ended, by the campaign's end-on-drop), so that every `Elected` has its `SteppedDown`.
    let was = state.send_replace(Leadership::Stopped(Some(error.clone())));
    if let Leadership::Leader(guard) = was {
        events.send(Event::SteppedDown {
            term: guard.term(),
            at: tokio::time::Instant::now().min(guard.deadline()),
            reason: StepDown::Aborted,
        });
    }
    events.send(Event::Error(error));
    events.send(Event::Stopped);
}
