//! Release and grant notices from a change stream, where the deployment has one (replica sets and
//! sharded clusters); detected at run time. On a standalone server there is no feed and waiting
//! candidates sleep until the expiry they were told of.
//!
//! One stream per store watches the whole collection and wakes the waiters of an election when
//! its document is inserted (a first grant), granted anew (a new term), released (`released`
//! set to true), replaced or deleted; renewals wake nobody (the server filters them out). The
//! stream is open once `watch` returns, so a release after `subscribe` returns is seen. When the
//! stream fails, every feed ends and the next subscribe opens a new one.
//!
//! A release or a delete the stream saw is remembered for the election (until a grant of it is
//! seen or a candidate of this store asks for the lease): a candidate woken by that notice goes
//! straight to its acquiring update, one round trip, even when the store has no estimate of the
//! server's clock yet (see [`Feeds::take_vacancy`]). The memory only orders the store's
//! requests: the update decides on the server either way.
//!
//! The stream asks for the document with every update it sends (`fullDocument: "updateLookup"`),
//! so a notice of a new grant carries the new leader, its lease's remaining time counted from the
//! event's `wallTime` (both on the server's clock): an [`Observer`](elect_core::Observer) shows
//! the new leader without first reading the lease. A looked-up document may
//! be newer than its event (it is read when the event is sent); that only makes the hint newer,
//! and observers take a hint only when its term is above every term they have seen.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use elect_core::backend::FeedRegistry;
use elect_core::{ChangeFeed, ElectionName, LeaderInfo, Result};
use mongodb::bson::{doc, Bson, Document};
use mongodb::change_stream::event::{ChangeStreamEvent, OperationType};
use mongodb::change_stream::ChangeStream;
use mongodb::options::FullDocumentType;
use tracing::debug;

use crate::client::Client;
use crate::error::STORE;
use crate::error::{code, map_err};
use crate::record::Record;

type Notifiers = Arc<FeedRegistry<String>>;

/// The elections whose release (or delete) the stream saw and no grant since.
type Vacated = Arc<Mutex<HashSet<String>>>;

pub(crate) struct Feeds {
    timeout: Duration,
    state: tokio::sync::Mutex<State>,
    vacated: Vacated,
}

#[derive(Default)]
struct State {
    /// `Some(false)` once the server said it has no change streams.
    supported: Option<bool>,
    /// The notifiers of the running stream, if one runs.
    running: Option<Notifiers>,
}

impl Feeds {
    pub(crate) fn new(timeout: Duration) -> Feeds {
        Feeds {
            timeout,
            state: tokio::sync::Mutex::default(),
            vacated: Vacated::default(),
        }
    }

    /// Whether the stream saw `election` released or deleted since it last saw a grant of it
    /// and since the last call for it; the call forgets it. A candidate woken by a release asks
    /// for the lease with its acquiring update at once: the lease is most likely vacant, and
    /// the update (which writes nothing when the lease is held) decides on the server anyway.
    /// Otherwise it does the same when the store has a fresh estimate of the server's clock
    /// (to tell a holder's remaining time from its record), and reads first when not.
    pub(crate) fn take_vacancy(&self, election: &str) -> bool {
        self.vacated
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(election)
    }

    pub(crate) async fn subscribe(
        &self,
        client: &Client,
        election: &ElectionName,
    ) -> Result<Option<ChangeFeed>> {
        let mut state = self.state.lock().await;
        if state.supported == Some(false) {
            return Ok(None);
        }
        // A stream whose task ended has dropped its notifiers' map entries; reopen it.
        let notifiers = match &state.running {
            Some(n) if Arc::strong_count(n) > 1 => n.clone(),
            _ => match self.open(client).await? {
                Some(stream) => {
                    let notifiers = Notifiers::default();
                    let names = format!("{}.{}", client.config.database, client.config.collection);
                    tokio::spawn(run(stream, notifiers.clone(), self.vacated.clone(), names));
                    state.supported = Some(true);
                    state.running = Some(notifiers.clone());
                    notifiers
                }
                None => {
                    state.supported = Some(false);
                    return Ok(None);
                }
            },
        };
        Ok(Some(notifiers.subscribe(election.as_str())))
    }

    /// Opens the collection's stream; `None` when the deployment has no change streams.
    async fn open(
        &self,
        client: &Client,
    ) -> Result<Option<ChangeStream<ChangeStreamEvent<Document>>>> {
        // Renewals (updates of `expires` alone) are left on the server: they are most of the
        // writes, and each would carry a looked-up document. `run` checks again.
        let pipeline = vec![doc! { "$match": { "$or": [
            { "operationType": { "$in": [
                "insert", "replace", "delete",
                // The collection or database went away: the stream is about to end.
                "drop", "rename", "dropDatabase", "invalidate",
            ] } },
            { "operationType": "update", "$or": [
                { "updateDescription.updatedFields.term": { "$exists": true } },
                { "updateDescription.updatedFields.holder": { "$exists": true } },
                { "updateDescription.updatedFields.released": true },
            ] },
        ] } }];
        let opened = tokio::time::timeout(
            self.timeout,
            client
                .leases
                .watch()
                .pipeline(pipeline)
                .full_document(FullDocumentType::UpdateLookup),
        )
        .await
        .map_err(|_| elect_core::Error::timeout(STORE, "subscribe", self.timeout))?;
        match opened {
            Ok(stream) => Ok(Some(stream)),
            Err(e) if no_change_streams(&e) => {
                debug!(error = %e, "no change streams on this deployment; waiters sleep until expiry");
                Ok(None)
            }
            Err(e) => Err(map_err("subscribe", e)),
        }
    }
}

/// Whether the server said change streams are not available here (a standalone server).
fn no_change_streams(e: &mongodb::error::Error) -> bool {
    // 40573: "The $changeStream stage is only supported on replica sets" (mongod, and the
    // MongoDB-wire server started with --standalone).
    code(e) == Some(40573)
}

/// How long to pause after an empty batch that came back at once. A live change stream's
/// `getMore` waits on the server for events; one that answers at once with nothing, again and
/// again, would otherwise turn this task into a busy loop.
const EMPTY_BATCH_PAUSE: Duration = Duration::from_millis(100);

/// The leader a change-stream event's document names, when it holds a live lease as of the
/// event; `None` when the event says nothing of the kind (a release, a delete, no document or no
/// `wallTime`, a document elect did not write).
fn leader_in(event: &ChangeStreamEvent<Document>, names: &str) -> Option<LeaderInfo> {
    let d = event.full_document.as_ref()?;
    if d.get_bool("released") == Ok(true) {
        return None;
    }
    let remaining =
        d.get_datetime("expires").ok()?.timestamp_millis() - event.wall_time?.timestamp_millis();
    if remaining <= 0 {
        return None;
    }
    let id = d.get_str("_id").ok()?;
    match Record::parse(format!("{names}[{id}]"), d) {
        Ok(record) => Some(record.held(remaining)),
        Err(error) => {
            debug!(%error, "a change-stream document is not a lease; the notice carries no leader");
            None
        }
    }
}

/// Whether the event releases its document (`released` set to true) or deletes it.
fn vacates(event: &ChangeStreamEvent<Document>) -> bool {
    match event.operation_type {
        OperationType::Delete => true,
        OperationType::Update => event
            .update_description
            .as_ref()
            .is_some_and(|u| matches!(u.updated_fields.get("released"), Some(Bson::Boolean(true)))),
        _ => false,
    }
}

async fn run(
    mut stream: ChangeStream<ChangeStreamEvent<Document>>,
    notifiers: Notifiers,
    vacated: Vacated,
    names: String,
) {
    // Every feed ends with this task, however it ends: waiters then fall back to the expiry
    // they were told of and subscribe again (a new stream).
    let end_feeds = || notifiers.end_all();
    let mut quick_empties = 0u32;
    loop {
        // A stream that can no longer deliver (its collection was dropped or renamed, the
        // cursor was killed) answers `Ok(None)` at once and forever: end it, never spin on it.
        if !stream.is_alive() {
            debug!("change stream is no longer alive; ending feeds");
            end_feeds();
            return;
        }
        let asked = tokio::time::Instant::now();
        match stream.next_if_any().await {
            Ok(Some(event)) => {
                quick_empties = 0;
                // A release sets `released` (or the document is deleted); a new grant sets a
                // new term (and holder).
                let vacated_now = vacates(&event);
                let changed_hands = vacated_now
                    || match event.operation_type {
                        OperationType::Update => {
                            event.update_description.as_ref().is_some_and(|u| {
                                u.updated_fields.contains_key("term")
                                    || u.updated_fields.contains_key("holder")
                            })
                        }
                        OperationType::Insert | OperationType::Replace => true,
                        OperationType::Drop
                        | OperationType::Rename
                        | OperationType::DropDatabase
                        | OperationType::Invalidate => {
                            debug!(operation = ?event.operation_type, "leases collection went away; ending feeds");
                            end_feeds();
                            return;
                        }
                        _ => false,
                    };
                let id = event
                    .document_key
                    .as_ref()
                    .and_then(|k| k.get_str("_id").ok());
                if let (true, Some(id)) = (changed_hands, id) {
                    let leader = leader_in(&event, &names);
                    // Remembered before the waiters wake, and only for elections someone here
                    // waits on (the stream sees the whole collection).
                    {
                        let mut vacated = vacated.lock().unwrap_or_else(|e| e.into_inner());
                        if !vacated_now {
                            vacated.remove(id);
                        } else if notifiers.contains(id) {
                            vacated.insert(id.to_owned());
                        }
                    }
                    match leader {
                        Some(leader) => notifiers.notify_leader(id, leader),
                        None => notifiers.notify(id),
                    }
                }
            }
            Ok(None) if asked.elapsed() < Duration::from_millis(5) => {
                quick_empties += 1;
                if quick_empties >= 3 {
                    tokio::time::sleep(EMPTY_BATCH_PAUSE).await;
                } else {
                    tokio::task::yield_now().await;
                }
            }
            Ok(None) => quick_empties = 0,
            Err(error) => {
                debug!(%error, "change stream failed; ending feeds");
                end_feeds();
                return;
            }
        }
    }
}
