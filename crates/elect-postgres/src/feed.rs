//! Hand-over notices by `LISTEN`/`NOTIFY`, on a connection of the store's own.
//!
//! Every grant and release statement ends with `pg_notify(table, payload)`, delivered when it
//! commits to every session listening on the channel (the table's name). One connection per
//! store listens, opened at the first subscription; its `LISTEN` has been confirmed by the
//! server before any feed is handed out, so a release that commits after `subscribe` returns
//! is seen. Payloads: `g ELECTION TERM HOLDER TTL_US[\nVALUE]` for a grant (the notice carries
//! the new leader), `r ELECTION` for a release.
//!
//! When the listening connection fails (closed, terminated, or silent for a whole timeout: it
//! is pinged every timeout) every feed ends: waiters fall back to the expiry they were told
//! of, and the next subscription opens a new connection.

use std::sync::Arc;
use std::time::Duration;

use elect_core::backend::FeedRegistry;
use elect_core::{CandidateId, ChangeFeed, ElectionName, LeaderInfo, LeaderValue, Result, Term};
use tokio::sync::Mutex;
use tokio_postgres::AsyncMessage;
use tracing::debug;

use crate::client::parse;
use crate::config::PostgresConfig;
use crate::error::{map_err, STORE};

/// The feeds of one store and its listening connection.
pub(crate) struct Listener {
    config: PostgresConfig,
    current: Mutex<Option<Listening>>,
}

/// One listening connection and the feeds handed out on it.
struct Listening {
    feeds: Arc<FeedRegistry<String>>,
    /// Dropped when the connection's task ends: then this connection is done.
    alive: tokio::sync::watch::Receiver<()>,
}

impl Listening {
    fn is_alive(&self) -> bool {
        self.alive.has_changed().is_ok()
    }
}

impl Listener {
    pub(crate) fn new(config: PostgresConfig) -> Listener {
        Listener {
            config,
            current: Mutex::new(None),
        }
    }

    /// A feed for `election`, or `None` when notices are off. Cancellation safe: a
    /// connection half opened is dropped with the future.
    pub(crate) async fn subscribe(&self, election: &ElectionName) -> Result<Option<ChangeFeed>> {
        let Some(url) = self.config.listen_url() else {
            return Ok(None);
        };
        let mut current = self.current.lock().await;
        if !current.as_ref().is_some_and(Listening::is_alive) {
            *current = None;
            let listening = elect_core::backend::timed(
                STORE,
                "subscribe",
                self.config.timeout,
                listen(&self.config, url),
            )
            .await?;
            *current = Some(listening);
        }
        let listening = current.as_ref().expect("set above");
        Ok(Some(listening.feeds.subscribe(election.as_str())))
    }
}

/// Opens a connection, `LISTEN`s on the table's channel (confirmed when this returns), and
/// spawns the task that reads its notices.
async fn listen(config: &PostgresConfig, url: &str) -> Result<Listening> {
    let pg = parse(url, config.timeout)?;
    let (client, connection) = pg
        .connect(crate::tls::connector(config)?)
        .await
        .map_err(|e| map_err("subscribe", &config.table, e))?;
    let feeds = Arc::new(FeedRegistry::new());
    let (alive_tx, alive) = tokio::sync::watch::channel(());
    tokio::spawn(read_notices(connection, feeds.clone(), alive_tx));
    client
        .batch_execute(&format!("LISTEN \"{}\"", config.table))
        .await
        .map_err(|e| map_err("subscribe", &config.table, e))?;
    tokio::spawn(keep_alive(client, config.timeout, feeds.clone()));
    debug!(table = %config.table, "listening for notices");
    Ok(Listening { feeds, alive })
}

/// Drives the connection and hands each notice to the feeds of its election; ends every feed
/// when the connection ends.
async fn read_notices<S, T>(
    mut connection: tokio_postgres::Connection<S, T>,
    feeds: Arc<FeedRegistry<String>>,
    alive: tokio::sync::watch::Sender<()>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            Some(Ok(AsyncMessage::Notification(n))) => match parse_notice(n.payload()) {
                Some(Notice::Granted(election, leader)) => feeds.notify_leader(&election, leader),
                Some(Notice::Released(election)) => feeds.notify(&election),
                None => debug!(
                    payload = n.payload(),
                    "a notice elect did not send; ignored"
                ),
            },
            Some(Ok(_)) => {}
            Some(Err(error)) => {
                debug!(%error, "the listening connection failed; ending feeds");
                break;
            }
            None => {
                debug!("the listening connection closed; ending feeds");
                break;
            }
        }
    }
    // Marked dead before the feeds end, so a waiter that subscribes again opens a new one.
    drop(alive);
    feeds.end_all();
}

/// Pings the listening connection every `every`; one that does not answer within `every`
/// (blackholed, its server frozen) is closed, which ends its feeds. Ends when the feeds'
/// connection has ended or nobody listens any more.
async fn keep_alive(
    client: tokio_postgres::Client,
    every: Duration,
    feeds: Arc<FeedRegistry<String>>,
) {
    loop {
        tokio::time::sleep(every).await;
        if client.is_closed() {
            return;
        }
        if Arc::strong_count(&feeds) <= 2 {
            // Only this task and the reader hold the feeds: the store is gone. Dropping the
            // client closes the connection, which ends the feeds still held.
            return;
        }
        match tokio::time::timeout(every, client.simple_query("")).await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => {
                debug!(%error, "the listening connection failed its ping");
                return;
            }
            Err(_) => {
                debug!("the listening connection did not answer its ping; closing it");
                return;
            }
        }
    }
}

/// What a notice says.
#[derive(Debug, PartialEq, Eq)]
enum Notice {
    Granted(String, LeaderInfo),
    Released(String),
}

/// Parses a payload elect sent; `None` for anything else (a foreign `NOTIFY` on the channel).
fn parse_notice(payload: &str) -> Option<Notice> {
    let (head, value) = match payload.split_once('\n') {
        Some((head, value)) => (head, Some(value)),
        None => (payload, None),
    };
    let mut fields = head.split(' ');
    match (fields.next()?, fields.next()?) {
        ("r", election) if fields.next().is_none() => {
            ElectionName::new(election).ok()?;
            Some(Notice::Released(election.to_owned()))
        }
        ("g", election) => {
            ElectionName::new(election).ok()?;
            let term: u64 = fields.next()?.parse().ok()?;
            let holder = CandidateId::new(fields.next()?).ok()?;
            let ttl_us: u64 = fields.next()?.parse().ok()?;
            if fields.next().is_some() || term == 0 {
                return None;
            }
            let value = match value {
                Some(v) => Some(LeaderValue::new(v).ok()?),
                None => None,
            };
            let leader = LeaderInfo {
                holder,
                term: Term(term),
                // Sent as the grant committed: at most the TTL is left.
                remaining: Duration::from_micros(ttl_us),
                value,
            };
            Some(Notice::Granted(election.to_owned(), leader))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_parse_and_foreign_ones_do_not() {
        let granted = parse_notice("g jobs 1733000000000000 a-1 2000000\n10.0.0.1:80").unwrap();
        let Notice::Granted(election, leader) = granted else {
            panic!("a grant")
        };
        assert_eq!(election, "jobs");
        assert_eq!(leader.term, Term(1733000000000000));
        assert_eq!(leader.holder.as_str(), "a-1");
        assert_eq!(leader.remaining, Duration::from_secs(2));
        assert_eq!(leader.value.unwrap().as_str(), "10.0.0.1:80");
        assert_eq!(
            parse_notice("g jobs 7 a 5")
                .map(|n| matches!(n, Notice::Granted(_, l) if l.value.is_none())),
            Some(true)
        );
        assert_eq!(
            parse_notice("r jobs"),
            Some(Notice::Released("jobs".into()))
        );
        for foreign in [
            "",
            "hello",
            "r",
            "r jobs extra",
            "r not valid!",
            "g jobs",
            "g jobs 0 a 5",
            "g jobs -1 a 5",
            "g jobs 7 not! 5",
            "g jobs 7 a",
            "g jobs 7 a 5 6",
            "x jobs",
        ] {
            assert_eq!(parse_notice(foreign), None, "{foreign:?}");
        }
        let long = format!("g jobs 7 a 5\n{}", "v".repeat(LeaderValue::MAX_LEN + 1));
        assert_eq!(parse_notice(&long), None);
    }
}
