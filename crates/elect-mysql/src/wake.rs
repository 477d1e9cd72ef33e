//! Release wake-ups by named locks (`GET_LOCK`): MySQL has no pub/sub, but a session blocked
//! in `GET_LOCK` returns the moment the lock's holder releases it or its connection dies.
//!
//! - **Beacons** (the leader's side): while this store holds an election's lease it holds the
//!   election's named lock on a connection of its own, and gives it up at its release, when a
//!   renewal is refused, when it grants the election again, or a TTL after the last grant or
//!   renewal it saw (a leader that stopped renewing without telling the store). The release
//!   itself runs on the beacon's connection, followed by `RELEASE_LOCK` in the same query, so
//!   the server lets the lock go the moment the release has committed (see [`release_on`]).
//! - **Waiters** (the followers' side, in the feed): for every election someone in this store
//!   waits on, a connection asks whether anyone holds the same name (`IS_USED_LOCK`, which
//!   takes nothing) and, if someone does, blocks in `GET_LOCK` on it. When it gets the lock
//!   after having blocked, the feed reads that election's row at once (instead of at its next
//!   poll) and, if the lease was released, wakes the waiters and reads again a few times for
//!   the next grant, so observers learn the new leader within milliseconds too. If the lease
//!   still runs, the waiter looks for a holder again for a moment: another store's waiter,
//!   woken by an earlier let-go, may have held the lock while the lease it read is a new
//!   grant whose beacon takes the lock within milliseconds — then it waits on that beacon. If
//!   nobody takes the lock (the holder crashed: the server freed the lock with its
//!   connection), it sleeps until the lease's end as read, then waits on the lock again.
//!
//! A waiter holds the lock only after a holder let it go, for one read; it never takes a free
//! lock. (Until 2026-12-07 it probed with `GET_LOCK(name, 0)`, holding a free lock for a
//! moment: another store's waiter blocked on that moment's hold took its end for a crashed
//! leader and slept out the lease — 2 of 30 hand-overs in a bench run waited for the expiry,
//! 916 and 1 156 ms instead of ~7.)
//!
//! The lock never decides who leads: only the lease row does, under its own guarded
//! statements. A wake-up that never comes (no beacon: a leader on an older elect, a foreign
//! client holding the name, a dropped connection) only costs latency — waiters still wake at
//! the expiry they were told of, and the poll still runs (its default interval is 2 s with
//! wake-ups on). A spurious wake-up costs one read.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use elect_core::{ElectionName, Lease, Term};
use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use tokio::sync::watch;
use tokio::time::{sleep, timeout, Instant};
use tracing::debug;

use crate::client::Client;
use crate::error::STORE;
use crate::schema::{lock_name_sql, release_lock_sql, Sql};

/// How long one blocking `GET_LOCK` of a waiter lasts before it looks again whether anyone
/// still waits on the election (seconds).
const WAIT_S: u64 = 30;
/// When nobody holds the lock (no leader, or one that has not taken its beacon yet, or one
/// without beacons), the waiter reads the row this much later — which catches a grant and
/// release inside the gap — and asks again; the pause doubles while the lock stays free, up to
/// `PACE_MAX`, so a leader without a beacon is not spun on.
const PACE: Duration = Duration::from_millis(10);
const PACE_MAX: Duration = Duration::from_secs(1);
/// After a release, the row is read every `BURST_EVERY` until a grant is seen, at most
/// `BURST` times.
const BURST_EVERY: Duration = Duration::from_millis(3);
const BURST: usize = 60;
/// After the lock was let go while a lease runs, the waiter asks whether someone holds it
/// again after each of these pauses (125 ms in all): a live leader's beacon takes it within
/// milliseconds of its grant (a new connection and one `GET_LOCK`). Two looks per waiting
/// store is what a crash costs over sleeping the lease out at once.
const SETTLE: [Duration; 2] = [Duration::from_millis(25), Duration::from_millis(100)];
/// After the holder's lock was let go while its lease ran and nobody took it again, the waiter
/// sleeps until the lease's end (as read) plus this, then waits on the lock again.
const EXPIRY_MARGIN: Duration = Duration::from_millis(1);

/// The beacons of one store: per election it leads, the lock task's handle.
#[derive(Default)]
pub(crate) struct Beacons {
    held: Mutex<HashMap<ElectionName, Beacon>>,
}

struct Beacon {
    term: Term,
    /// Until when the lock may be held; `None` (or the sender dropped) gives it up.
    until: watch::Sender<Option<Instant>>,
    /// The connection holding the lock, once its `GET_LOCK` answered; the release takes it
    /// (see [`Beacons::take_for_release`]), else the beacon lets the lock go on it at the end.
    locked: Held,
}

/// A beacon's connection, while it holds the lock and nobody has taken it over.
type Held = Arc<Mutex<Option<Conn>>>;

fn take_held(held: &Held) -> Option<Conn> {
    held.lock().unwrap_or_else(|p| p.into_inner()).take()
}

impl Beacons {
    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<ElectionName, Beacon>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `lease` was just granted: hold its election's lock until told otherwise, or a TTL.
    pub(crate) fn granted(&self, client: &Arc<Client>, lease: &Lease) {
        let until = Instant::now() + lease.ttl.get();
        let (tx, rx) = watch::channel(Some(until));
        let locked = Held::default();
        let old = self.held().insert(
            lease.election.clone(),
            Beacon {
                term: lease.term,
                until: tx,
                locked: locked.clone(),
            },
        );
        if let Some(old) = old {
            let _ = old.until.send(None);
        }
        tokio::spawn(beacon(
            Arc::downgrade(client),
            lease.election.clone(),
            rx,
            locked,
        ));
    }

    /// `lease` was renewed: the lock may be held a TTL from now.
    pub(crate) fn renewed(&self, lease: &Lease) {
        if let Some(b) = self.held().get(&lease.election) {
            if b.term == lease.term {
                let _ = b.until.send(Some(Instant::now() + lease.ttl.get()));
            }
        }
    }

    /// `lease` is being released: its beacon ends, and hands over the connection holding
    /// the lock if it holds it (the release then runs on it and lets the lock go right after,
    /// see [`release_on`]); `None` when it does not hold it (yet), or `lease` is not the one
    /// it was taken for.
    pub(crate) fn take_for_release(&self, lease: &Lease) -> Option<Conn> {
        let mut held = self.held();
        if held.get(&lease.election)?.term != lease.term {
            return None;
        }
        let b = held.remove(&lease.election)?;
        // Taken before the beacon is told to end, so that it cannot let the lock go before
        // the release has committed.
        let conn = take_held(&b.locked);
        let _ = b.until.send(None);
        conn
    }

    /// `lease` ended (released, or a renewal was refused): give its lock up now.
    pub(crate) fn ended(&self, lease: &Lease) {
        let mut held = self.held();
        if held
            .get(&lease.election)
            .is_some_and(|b| b.term == lease.term)
        {
            if let Some(b) = held.remove(&lease.election) {
                let _ = b.until.send(None);
            }
        }
    }
}

/// Holds `election`'s lock while `until` allows, on a connection of its own.
async fn beacon(
    client: Weak<Client>,
    election: ElectionName,
    mut until: watch::Receiver<Option<Instant>>,
    held: Held,
) {
    let mut conn: Option<Conn> = None;
    let mut locked = false;
    loop {
        let Some(deadline) = *until.borrow_and_update() else {
            break;
        };
        if Instant::now() >= deadline {
            break;
        }
        if !locked {
            let Some(c) = client.upgrade() else { break };
            match take(&c, &mut conn, &election, Duration::from_secs(1)).await {
                Ok(true) => {
                    locked = true;
                    *held.lock().unwrap_or_else(|p| p.into_inner()) = conn.take();
                }
                Ok(false) => {}
                Err(error) => {
                    debug!(%error, %election, "beacon: no lock; trying again");
                    conn = None;
                    tokio::select! {
                        _ = sleep(PACE_MAX / 10) => {}
                        changed = until.changed() => if changed.is_err() { break },
                    }
                }
            }
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => break,
            changed = until.changed() => if changed.is_err() { break },
        }
    }
    // Unless a release took the connection over (and let the lock go on it).
    if let Some(c) = take_held(&held) {
        let_go(&client, c, &election).await;
    }
}

/// Lets `election`'s lock go on `conn`, which holds it, and closes `conn`.
pub(crate) async fn let_go(client: &Weak<Client>, mut conn: Conn, election: &ElectionName) {
    if let Some(client) = client.upgrade() {
        let release = release_lock_sql(&client.config.table);
        let _ = timeout(
            client.config.timeout,
            conn.exec_drop(release, (election.as_str(),)),
        )
        .await;
    }
    // Closing the connection would free the lock too; the explicit release is quicker than
    // the server noticing a dropped socket, and keeps the connection's disconnect off the
    // critical path.
    let _ = timeout(Duration::from_secs(1), conn.disconnect()).await;
}

/// What [`release_on`] did.
pub(crate) enum ReleasedOn {
    /// The release ran (whether it matched the live lease), and the lock was let go.
    Ran(elect_core::Result<bool>),
    /// The statements failed before the release's answer (a server or proxy that takes no
    /// multi-statement queries, a dead connection, an error the usual release will report):
    /// release the usual way, then [`let_go`] on the connection given back.
    Refused(Conn),
}

/// Releases `lease` on its beacon's connection `conn` and lets the lock go right after, in
/// one round trip: the server frees the lock once the release has committed, so a waiter
/// woken by it reads the released row — without the leader's client in between (a round trip
/// and a task wake-up, ~0.8 ms of a 3 ms hand-over on the bench). `conn` is closed after.
pub(crate) async fn release_on(
    client: &Arc<Client>,
    sql: &Sql,
    mut conn: Conn,
    lease: &Lease,
) -> ReleasedOn {
    let Some(text) = sql.release_then_let_go(lease) else {
        return ReleasedOn::Refused(conn);
    };
    let after = client.config.timeout;
    let ran = timeout(after, async {
        let result = conn.query_iter(text).await?;
        let released = result.affected_rows() == 1;
        // The lock's release: its result (or an error) comes after the row's.
        let _ = result.drop_result().await;
        Ok::<_, mysql_async::Error>(released)
    })
    .await;
    let released = match ran {
        Ok(Ok(released)) => Ok(released),
        // The first statement failed: the server refused it (the release did not run), or
        // the connection had died (killed, or the network; the server then freed the lock).
        // Had the release run before an answer was lost, the usual release says `NotHeld`.
        Ok(Err(error)) => {
            debug!(%error, election = %lease.election, "release on the beacon's connection failed; releasing through the pool");
            return ReleasedOn::Refused(conn);
        }
        Err(_) => Err(elect_core::Error::timeout(STORE, "release", after)),
    };
    tokio::spawn(async move {
        let _ = timeout(Duration::from_secs(1), conn.disconnect()).await;
    });
    ReleasedOn::Ran(released)
}

/// `conn`, opened on a dedicated connection when `None`.
async fn connected<'a>(
    client: &Client,
    conn: &'a mut Option<Conn>,
) -> mysql_async::Result<&'a mut Conn> {
    if conn.is_none() {
        *conn = Some(client.dedicated().await?);
    }
    Ok(conn.as_mut().expect("just set"))
}

/// `GET_LOCK` of `election`'s name on `conn` (opened when `None`), waiting up to `wait`
/// (whole seconds; zero only tries): whether it was got.
async fn take(
    client: &Client,
    conn: &mut Option<Conn>,
    election: &ElectionName,
    wait: Duration,
) -> mysql_async::Result<bool> {
    let c = connected(client, conn).await?;
    let sql = format!(
        "SELECT GET_LOCK({}, {})",
        lock_name_sql(&client.config.table),
        wait.as_secs()
    );
    let got: Option<Option<i64>> = match timeout(
        wait + client.config.timeout,
        c.exec_first(sql, (election.as_str(),)),
    )
    .await
    {
        Ok(r) => r?,
        Err(_) => {
            // The connection is mid-statement: drop it (the server frees what it held).
            *conn = None;
            return Ok(false);
        }
    };
    Ok(got.flatten() == Some(1))
}

/// Whether some session holds `election`'s lock (`IS_USED_LOCK`: nothing is taken), on `conn`
/// (opened when `None`).
async fn used(
    client: &Client,
    conn: &mut Option<Conn>,
    election: &ElectionName,
) -> mysql_async::Result<bool> {
    let c = connected(client, conn).await?;
    let sql = format!(
        "SELECT IS_USED_LOCK({})",
        lock_name_sql(&client.config.table)
    );
    match timeout(
        client.config.timeout,
        c.exec_first::<Option<u64>, _, _>(sql, (election.as_str(),)),
    )
    .await
    {
        Ok(r) => Ok(r?.flatten().is_some()),
        Err(_) => {
            *conn = None;
            Err(mysql_async::Error::Io(mysql_async::IoError::Io(
                std::io::Error::new(std::io::ErrorKind::TimedOut, "IS_USED_LOCK timed out"),
            )))
        }
    }
}

/// After the lock was let go while a lease runs: whether someone takes it again within the
/// [`SETTLE`] looks (a live leader's beacon, or another store's waiter on its way to it).
/// A failed look counts as taken: the waiter's loop then retries at its pace rather than
/// sleeping out a lease on no evidence.
async fn taken_again(client: &Client, conn: &mut Option<Conn>, election: &ElectionName) -> bool {
    for pause in SETTLE {
        sleep(pause).await;
        if used(client, conn, election).await.unwrap_or(true) {
            return true;
        }
    }
    false
}

/// What one round of a waiter's `GET_LOCK` found.
enum Lock {
    /// Nobody held it (and the waiter did not take it).
    Free,
    /// Someone held it and let go (now the waiter holds it).
    LetGo,
    /// Someone held it all the wait.
    StillHeld,
}
use Lock::{Free, LetGo, StillHeld};

/// Blocks in `GET_LOCK` on `election`'s name while `waited(election)` holds, calling
/// `check` after each time it got the lock having blocked. `check` reads the election's row
/// (waking the feed's waiters as the poll would) and says what is left of its lease
/// (`Some(None)`: none is live; `None`: the read failed). `working(false)` after a `GET_LOCK`
/// failed, `working(true)` after one answered (the probe before a blocking wait included):
/// while it works, the waiter itself notices every release and grant (blocked on
/// a beacon, or reading at its pace while the lock is free), and the poll can leave the
/// election alone.
pub(crate) async fn waiter<W, C, F>(
    client: Weak<Client>,
    election: ElectionName,
    waited: W,
    check: C,
    working: impl Fn(bool),
) where
    W: Fn(&ElectionName) -> bool,
    C: Fn(ElectionName) -> F,
    F: std::future::Future<Output = Option<Option<Duration>>>,
{
    let mut conn: Option<Conn> = None;
    let mut pace = PACE;
    while waited(&election) {
        let Some(c) = client.upgrade() else { return };
        // Whether someone holds the lock is asked first, without waiting: how long a
        // blocking `GET_LOCK` took cannot tell (a loaded server answers a free lock slowly,
        // and a waiter that took that for a holder's let-go slept out a live lease through
        // its release, CI 2026-12-06). Asked without taking the lock: a waiter holding a free
        // lock even for a moment is a let-go to every other store's waiter blocked on it.
        let got = match used(&c, &mut conn, &election).await {
            Ok(false) => Ok(Free),
            Ok(true) => {
                // The server answers and someone holds the lock: the wait hears of its
                // release from now on, so the poll can leave the election alone already
                // (it polled through a new waiter's first wait, up to WAIT_S).
                working(true);
                take(&c, &mut conn, &election, Duration::from_secs(WAIT_S))
                    .await
                    .map(|got| if got { LetGo } else { StillHeld })
            }
            Err(error) => Err(error),
        };
        working(got.is_ok());
        match got {
            Ok(LetGo) => {
                pace = PACE;
                // Its holder let go (a release, or its connection died): look now, before
                // giving the lock back, so the read is not held up by it.
                let seen = check(election.clone()).await;
                let read_at = Instant::now();
                let _ = free(&c, &mut conn, &election).await;
                // A lease that runs on: is anyone taking the lock again (its beacon)?
                let crashed = match seen {
                    Some(Some(_)) => !taken_again(&c, &mut conn, &election).await,
                    _ => false,
                };
                drop(c);
                match seen {
                    Some(None) => {
                        // A grant follows a release within milliseconds: find it for the
                        // observers, then go back to waiting on the new leader's beacon.
                        for _ in 0..BURST {
                            sleep(BURST_EVERY).await;
                            if check(election.clone()).await != Some(None) {
                                break;
                            }
                        }
                    }
                    Some(Some(left)) if crashed => {
                        // The lock was let go while the lease runs and nobody took it again:
                        // its holder crashed, froze past its beacon's TTL, or lost the
                        // beacon's connection. Until the lease ends only its own release
                        // could change hands, which a crashed holder never sends: sleep out
                        // the lease rather than read at a pace. A release by a live holder
                        // in this span is a missed wake-up, so the poll covers the election
                        // meanwhile (latency only; candidates wake at the expiry they were
                        // told of either way).
                        working(false);
                        let end = read_at + left.min(Duration::from_secs(WAIT_S));
                        tokio::time::sleep_until(end + EXPIRY_MARGIN).await;
                    }
                    Some(Some(_)) => {
                        // Taken again while the lease runs: its beacon (a new grant's, or
                        // the holder granted its own lease again), or another waiter on its
                        // way to it. Wait on it.
                    }
                    None => {}
                }
            }
            Ok(Free) => {
                drop(c);
                sleep(pace).await;
                pace = (pace * 2).min(PACE_MAX);
                check(election.clone()).await;
            }
            Ok(StillHeld) => {}
            Err(error) => {
                debug!(%error, %election, "release wake-up: GET_LOCK failed; trying again");
                conn = None;
                drop(c);
                sleep(pace).await;
                pace = (pace * 2).min(PACE_MAX);
            }
        }
    }
    working(false);
    if let Some(c) = conn {
        let _ = timeout(Duration::from_secs(1), c.disconnect()).await;
    }
}

async fn free(
    client: &Client,
    conn: &mut Option<Conn>,
    election: &ElectionName,
) -> mysql_async::Result<()> {
    let Some(c) = conn.as_mut() else {
        return Ok(());
    };
    let sql = release_lock_sql(&client.config.table);
    match timeout(
        client.config.timeout,
        c.exec_drop(sql, (election.as_str(),)),
    )
    .await
    {
        Ok(r) => r,
        Err(_) => {
            *conn = None;
            Ok(())
        }
    }
}
