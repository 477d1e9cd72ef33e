//! The [`Emitter`]: sends [`Event`]s to the lossy broadcast of
//! [`Elector::events`](super::Elector::events) and, losslessly and in order, to the callback
//! workers; records the leadership metrics.

use std::sync::{Arc, Mutex};

use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;

use tokio::sync::watch;

use super::events::Event;
use super::guard::{publish, LeaderGuard, Leadership};
use crate::metrics::Who;

/// One event for a lossless subscriber, with the guard of an `Elected` event.
#[derive(Debug, Clone)]
pub(crate) struct Notice {
    pub(crate) event: Event,
    pub(crate) guard: Option<LeaderGuard>,
}

/// Sends events to the broadcast and to every lossless subscriber; remembers the guard last
/// published, to hand it with the `Elected` event of its term.
#[derive(Debug, Clone)]
pub(crate) struct Emitter {
    shared: Arc<Mutex<Sinks>>,
}

/// Slots of the lossy broadcast, made on the first [`Emitter::subscribe`]: a broadcast
/// allocates all of them up front (~32 KB at 256 events), which is most of an elector's
/// memory, and an event sent with no receiver is dropped anyway. A process that leads ten
/// thousand shards and never reads their events does not pay for them.
const BROADCAST_SLOTS: usize = 256;

#[derive(Debug, Default)]
struct Sinks {
    /// The lossy broadcast, once someone subscribed.
    broadcast: Option<broadcast::Sender<Event>>,
    sinks: Vec<mpsc::UnboundedSender<Notice>>,
    guard: Option<LeaderGuard>,
    /// The metric labels, once the candidate is known.
    who: Option<Who>,
}

impl Emitter {
    pub(crate) fn new() -> Emitter {
        Emitter {
            shared: Arc::default(),
        }
    }

    /// Sets the labels of the metrics recorded for leadership changes.
    pub(crate) fn set_who(&self, who: Who) {
        self.lock().who = Some(who);
    }

    /// The labels, once set.
    pub(crate) fn who(&self) -> Option<Who> {
        self.lock().who.clone()
    }

    /// Records a renewal's new deadline (the remaining-lease gauge).
    pub(crate) fn extended(&self, deadline: Instant) {
        if let Some(who) = &self.lock().who {
            who.remaining(deadline.saturating_duration_since(Instant::now()));
        }
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.lock()
            .broadcast
            .get_or_insert_with(|| broadcast::channel(BROADCAST_SLOTS).0)
            .subscribe()
    }

    /// A lossless, ordered subscription from now on.
    pub(crate) fn sink(&self) -> mpsc::UnboundedReceiver<Notice> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.lock().sinks.push(tx);
        rx
    }

    /// Publishes `state` on `sender` (unless it is the same follower state as now), keeping
    /// a leadership's guard for its `Elected` event, and emits [`Event::LeaderObserved`] when a
    /// follower's leader (holder or term) changed: every driver reports new leaders this way.
    pub(crate) fn publish(&self, sender: &watch::Sender<Leadership>, state: Leadership) {
        if let Leadership::Leader(guard) = &state {
            self.lock().guard = Some(guard.clone());
        }
        let observed = match &state {
            Leadership::Follower { leader: Some(info) } => Some(info.clone()),
            _ => None,
        };
        if publish(sender, state) {
            if let Some(info) = observed {
                self.send(Event::LeaderObserved(info));
            }
        }
    }

    pub(crate) fn send(&self, event: Event) {
        let mut shared = self.lock();
        if let Some(broadcast) = &shared.broadcast {
            let _ = broadcast.send(event.clone());
        }
        let guard = match &event {
            Event::Elected { term, .. } => shared.guard.clone().filter(|g| g.term() == *term),
            _ => None,
        };
        if let Some(who) = &shared.who {
            match &event {
                Event::Elected { term, .. } => {
                    let left = guard.as_ref().map(|g| g.deadline());
                    let left = left.map(|d| d.saturating_duration_since(Instant::now()));
                    who.elected(*term, left.unwrap_or_default());
                }
                Event::SteppedDown { reason, .. } => who.stepped_down(reason.as_str()),
                _ => {}
            }
        }
        if matches!(event, Event::SteppedDown { .. } | Event::Stopped) {
            shared.guard = None;
        }
        shared.sinks.retain(|sink| {
            sink.send(Notice {
                event: event.clone(),
                guard: guard.clone(),
            })
            .is_ok()
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Sinks> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }
}
