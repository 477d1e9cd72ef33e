//! For coordinator authors whose campaign is not the built-in lease loop (elect-raft's runtime
//! drives one from Raft's election): a handle driven by you, the guards you mint, and the
//! commands the handle sends you. Applications switch between a lease store and such a driver by
//! changing only the constructor; they never need this module.

use std::sync::Arc;

use tokio::sync::{broadcast, mpsc, watch};
use tokio::time::Instant;

use crate::elector::{
    Callbacks, Elector, Emitter, Event, Handle, HealthCell, LeaderGuard, Leadership,
    DRIVER_RELEASE_WAIT,
};
pub use crate::elector::{ElectorCommand, GuardControl, Reply};
use crate::lease::Lease;
use crate::name::{CandidateId, ElectionName};

/// A guard for `lease`, believed until `deadline`, and the control that extends or ends it:
/// publish the guard as [`Leadership::Leader`] with [`ElectorDriver::publish`].
pub fn guard(lease: Lease, deadline: Instant) -> (LeaderGuard, GuardControl) {
    LeaderGuard::mint(lease, deadline)
}

/// A handle driven by something other than the built-in lease loop: the returned
/// [`ElectorDriver`] publishes leadership and serves `resign` and `shutdown`. elect-raft builds
/// its `Elector` this way.
pub fn elector(election: ElectionName, candidate: CandidateId) -> (Elector, ElectorDriver) {
    let (state, state_rx) = watch::channel(Leadership::Follower { leader: None });
    let events = Emitter::new();
    let (commands, command_rx) = mpsc::channel(8);
    let health = HealthCell::new(DRIVER_REACHABLE);
    events.set_who(crate::metrics::Who::new(&election, &candidate));
    let elector = Elector {
        inner: Arc::new(Handle {
            election,
            candidate,
            state: state_rx,
            events: events.clone(),
            commands,
            release_wait: DRIVER_RELEASE_WAIT,
            health: health.clone(),
        }),
    };
    let driver = ElectorDriver {
        state,
        events,
        commands: command_rx,
        health,
    };
    (elector, driver)
}

/// How old a driver's last [`ElectorDriver::replied`] may be while its coordinator (for raft:
/// a quorum of peers) counts as reachable in [`Elector::health`].
const DRIVER_REACHABLE: std::time::Duration = std::time::Duration::from_secs(5);

/// The driving side of an [`Elector`], for campaigns other than the built-in lease loop
/// (elect-raft's runtime drives one from Raft's election). It publishes [`Leadership`] and
/// [`Event`]s, and serves the [`ElectorCommand`]s that the handle's `resign` and `shutdown`
/// send. Dropping it stops the elector: `leading()` then returns [`Error::Stopped`](crate::Error::Stopped).
#[derive(Debug)]
pub struct ElectorDriver {
    pub(crate) state: watch::Sender<Leadership>,
    pub(crate) events: Emitter,
    pub(crate) commands: mpsc::Receiver<ElectorCommand>,
    pub(crate) health: Arc<HealthCell>,
}

impl ElectorDriver {
    /// Publishes what the candidate now believes (unchanged follower states are not re-sent);
    /// a follower state naming another leader (holder or term) also emits
    /// [`Event::LeaderObserved`].
    pub fn publish(&self, state: Leadership) {
        self.events.publish(&self.state, state);
    }

    /// Emits an event to the subscribers of [`Elector::events`] and to the callbacks.
    pub fn emit(&self, event: Event) {
        self.events.send(event);
    }

    /// Runs `callbacks` for the events emitted from now on (call it before the driver starts,
    /// so none is missed).
    pub fn spawn_callbacks(&self, callbacks: Callbacks) {
        let notices = self.events.sink();
        let who = self.events.who().expect("set when the driver was made");
        tokio::spawn(callbacks.deliver(notices, self.health.clone(), who));
    }

    /// Records that the leadership's deadline moved (the `elect_lease_remaining_seconds`
    /// gauge); call it with each [`GuardControl::extend`].
    pub fn lease_extended(&self, deadline: Instant) {
        self.events.extended(deadline);
    }

    /// Records that the coordinator (for raft: a quorum) answered, for [`Elector::health`].
    pub fn replied(&self) {
        self.health.replied();
    }

    /// Records a failed request, for [`Elector::health`].
    pub fn request_failed(&self) {
        self.health.failed();
    }

    /// Subscribes to the events, e.g. before the driver starts, so none is missed.
    pub fn subscribe_events(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// The next command from the handle; `None` once the handle was dropped (a shutdown).
    /// Cancellation safe.
    pub async fn next_command(&mut self) -> Option<ElectorCommand> {
        self.commands.recv().await
    }
}
