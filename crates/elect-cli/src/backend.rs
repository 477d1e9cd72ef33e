//! From `--store URL` or `--raft-*` flags to an elector, and the `--once` records.

#[cfg(feature = "raft")]
use std::collections::BTreeMap;
#[cfg(feature = "raft")]
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use elect_core::{CandidateId, ElectionName, Elector, LeaseStore, Term};

use crate::{exit, Failure, Where};

/// A connected store, with what `--once` needs to record its state.
pub(crate) enum Store {
    #[cfg(feature = "redis")]
    Redis(elect_redis::RedisStore),
    #[cfg(feature = "mysql")]
    Mysql(elect_mysql::MysqlStore),
    #[cfg(feature = "mongo")]
    Mongo(elect_mongo::MongoStore),
    /// Keeps every `match` exhaustive when a build has no store feature at all.
    #[allow(dead_code)]
    Never(std::convert::Infallible),
}

impl Store {
    pub(crate) fn lease_store(&self) -> Arc<dyn LeaseStore> {
        match self {
            #[cfg(feature = "redis")]
            Store::Redis(s) => Arc::new(s.clone()),
            #[cfg(feature = "mysql")]
            Store::Mysql(s) => Arc::new(s.clone()),
            #[cfg(feature = "mongo")]
            Store::Mongo(s) => Arc::new(s.clone()),
            Store::Never(never) => match *never {},
        }
    }

    /// Lets the drivers close their connections while the runtime still runs.
    pub(crate) async fn close(self) {
        match self {
            #[cfg(feature = "mongo")]
            // mongodb 3.x panics in a worker when a client's background tasks are dropped by
            // runtime teardown; shutting it down first avoids that.
            Store::Mongo(s) => {
                // Immediate: the store's change-stream watcher holds a cursor that a plain
                // shutdown would wait for forever.
                s.collection()
                    .client()
                    .clone()
                    .shutdown()
                    .immediate(true)
                    .await
            }
            #[allow(unreachable_patterns)]
            _ => {}
        }
    }
}

/// How `elect run`'s raft nodes lead: the leader lease is raft's minimum election timeout
/// (elect-raft's default, which the CLI keeps).
pub(crate) const RAFT_LEASE: Duration = Duration::from_millis(300);

/// What [`connect`] may do besides connecting.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Connect {
    /// Redis: [`elect_redis::RedisConfig::restart_quarantine`].
    pub(crate) restart_quarantine: bool,
    /// MySQL: create the lease table when it does not exist (never touch one that does), so
    /// a user with only SELECT/INSERT/UPDATE/DELETE works once the table is there.
    pub(crate) create_missing_table: bool,
}

/// Connects to the store a URL names.
pub(crate) async fn connect(url: &str, options: Connect) -> Result<Store, Failure> {
    let shown = elect_core::redact_url(url);
    #[cfg_attr(
        not(any(feature = "redis", feature = "mysql", feature = "mongo")),
        allow(unused_variables)
    )]
    let fail = |e: elect_core::Error| Failure::from_error(&format!("store {shown}"), &e);
    let scheme = url.split("://").next().unwrap_or("");
    match scheme {
        #[cfg(feature = "redis")]
        "redis" | "rediss" => {
            let config = elect_redis::RedisConfig::new(url)
                .restart_quarantine(options.restart_quarantine);
            Ok(Store::Redis(
                elect_redis::RedisStore::connect(config)
                    .await
                    .map_err(fail)?,
            ))
        }
        #[cfg(feature = "mysql")]
        "mysql" => {
            let store = elect_mysql::MysqlStore::connect_url(url).await.map_err(fail)?;
            if options.create_missing_table && !store.table_exists().await.map_err(fail)? {
                store.migrate().await.map_err(fail)?;
            }
            Ok(Store::Mysql(store))
        }
        #[cfg(feature = "mongo")]
        "mongodb" | "mongodb+srv" => Ok(Store::Mongo(
            elect_mongo::MongoStore::connect_url(url).await.map_err(fail)?,
        )),
        _ if !url.contains("://") => Err(Failure::config(format!(
            "store {shown:?} is not a URL (redis://, rediss://, mysql://, mongodb://)"
        ))),
        other => Err(Failure::config(format!(
            "store scheme {other:?} is not supported by this build (redis://, rediss://, mysql://, mongodb://)"
        ))),
    }
}

pub(crate) fn election(name: &str) -> Result<ElectionName, Failure> {
    ElectionName::new(name).map_err(|e| Failure::from_error("--election", &e))
}

pub(crate) fn candidate(id: Option<&str>) -> Result<CandidateId, Failure> {
    match id {
        Some(id) => CandidateId::new(id).map_err(|e| Failure::from_error("--id", &e)),
        None => Ok(CandidateId::generate()),
    }
}

/// The elector for `--raft-*` flags: this node's id, listen address, peers and key.
#[cfg(feature = "raft")]
pub(crate) async fn raft(where_: &Where) -> Result<(Elector, CandidateId), Failure> {
    let id = candidate(where_.raft_id.as_deref())?;
    let listen: SocketAddr = where_
        .raft_listen
        .as_deref()
        .ok_or_else(|| Failure::config("--raft-listen is needed with --raft-id"))?
        .parse()
        .map_err(|_| Failure::config("--raft-listen takes HOST:PORT (an IP address and a port)"))?;
    let mut peers = BTreeMap::new();
    for peer in &where_.raft_peers {
        let (pid, addr) = peer
            .split_once('=')
            .ok_or_else(|| Failure::config(format!("--raft-peer {peer:?} is not ID=HOST:PORT")))?;
        let addr: SocketAddr = addr.parse().map_err(|_| {
            Failure::config(format!("--raft-peer {peer:?}: {addr:?} is not HOST:PORT"))
        })?;
        peers.insert(candidate(Some(pid))?, addr);
    }
    if !peers.contains_key(&id) {
        return Err(Failure::config(format!(
            "--raft-id {id} is not among the --raft-peer ids"
        )));
    }
    let key = match &where_.raft_key_file {
        Some(path) => {
            let bytes = std::fs::read(path)
                .map_err(|e| Failure::config(format!("--raft-key-file {}: {e}", path.display())))?;
            let trimmed = bytes.trim_ascii().to_vec();
            Some(elect_raft::ClusterKey::new(trimmed).ok_or_else(|| {
                Failure::config(format!(
                    "--raft-key-file {}: the key needs at least 16 bytes",
                    path.display()
                ))
            })?)
        }
        None => None,
    };
    let mut config = elect_raft::RaftConfig::new(id.clone(), peers.keys().cloned())
        .election(election(&where_.election)?);
    if let Some(dir) = &where_.raft_state {
        config = config.state_dir(dir);
    }
    let (elector, _transport) = elect_raft::start_tcp(config, listen, peers, key)
        .await
        .map_err(|e| Failure::from_error("raft", &e))?;
    Ok((elector, id))
}

#[cfg(not(feature = "raft"))]
pub(crate) async fn raft(_: &Where) -> Result<(Elector, CandidateId), Failure> {
    Err(Failure::config("elect was built without the raft feature"))
}

/// What `--once` found or recorded for an election.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Once {
    /// Nothing yet: this leader recorded `started` and may run the program.
    Claimed,
    /// An earlier leader ran it to the end, with this exit status.
    Done { term: u64, status: i64 },
    /// An earlier leader started it; how it ended was never recorded.
    Started { term: u64, candidate: String },
}

/// How long a `--once` record request may take.
const ONCE_TIMEOUT: Duration = Duration::from_secs(10);

impl Store {
    /// Claims the one run of `election` for `term` (atomically: only one leader can), or
    /// returns what an earlier leader recorded.
    pub(crate) async fn once_claim(
        &self,
        election: &ElectionName,
        candidate: &CandidateId,
        term: Term,
    ) -> Result<Once, Failure> {
        let work = async {
            let claimed: Result<Once, String> = match self {
                #[cfg(feature = "redis")]
                Store::Redis(s) => once_redis::claim(s, election, candidate, term).await,
                #[cfg(feature = "mysql")]
                Store::Mysql(s) => once_mysql::claim(s, election, candidate, term).await,
                #[cfg(feature = "mongo")]
                Store::Mongo(s) => once_mongo::claim(s, election, candidate, term).await,
                Store::Never(never) => match *never {},
            };
            claimed
        };
        match tokio::time::timeout(ONCE_TIMEOUT, work).await {
            Ok(result) => result.map_err(|e| Failure {
                code: exit::UNAVAILABLE,
                message: format!("recording --once for {election}: {e}"),
            }),
            Err(_) => Err(Failure {
                code: exit::UNAVAILABLE,
                message: format!("recording --once for {election}: timed out"),
            }),
        }
    }

    /// Takes back this leader's claim of `term` when the program could not even be started,
    /// so that a later leader runs it. Only a record that is still exactly this claim is
    /// removed.
    pub(crate) async fn once_unclaim(
        &self,
        election: &ElectionName,
        candidate: &CandidateId,
        term: Term,
    ) -> Result<(), Failure> {
        let record = format!("started {term} {candidate}");
        let work = async {
            let removed: Result<(), String> = match self {
                #[cfg(feature = "redis")]
                Store::Redis(s) => once_redis::unclaim(s, election, &record).await,
                #[cfg(feature = "mysql")]
                Store::Mysql(s) => once_mysql::unclaim(s, election, &record).await,
                #[cfg(feature = "mongo")]
                Store::Mongo(s) => once_mongo::unclaim(s, election, &record).await,
                Store::Never(never) => match *never {},
            };
            removed
        };
        match tokio::time::timeout(ONCE_TIMEOUT, work).await {
            Ok(result) => result.map_err(|e| Failure {
                code: exit::UNAVAILABLE,
                message: format!("taking back the --once claim of {election}: {e}"),
            }),
            Err(_) => Err(Failure {
                code: exit::UNAVAILABLE,
                message: format!("taking back the --once claim of {election}: timed out"),
            }),
        }
    }

    /// Records that the claimed run ended with `status`.
    pub(crate) async fn once_done(
        &self,
        election: &ElectionName,
        term: Term,
        status: i64,
    ) -> Result<(), Failure> {
        let work = async {
            let recorded: Result<(), String> = match self {
                #[cfg(feature = "redis")]
                Store::Redis(s) => once_redis::done(s, election, term, status).await,
                #[cfg(feature = "mysql")]
                Store::Mysql(s) => once_mysql::done(s, election, term, status).await,
                #[cfg(feature = "mongo")]
                Store::Mongo(s) => once_mongo::done(s, election, term, status).await,
                Store::Never(never) => match *never {},
            };
            recorded
        };
        match tokio::time::timeout(ONCE_TIMEOUT, work).await {
            Ok(result) => result.map_err(|e| Failure {
                code: exit::UNAVAILABLE,
                message: format!("recording the end of the --once run of {election}: {e}"),
            }),
            Err(_) => Err(Failure {
                code: exit::UNAVAILABLE,
                message: format!("recording the end of the --once run of {election}: timed out"),
            }),
        }
    }
}

/// Parses `started <term> <candidate>` / `done <term> <status>`.
fn parse_record(text: &str) -> Result<Once, String> {
    let words: Vec<&str> = text.split(' ').collect();
    let number = |w: Option<&&str>| w.and_then(|w| w.parse::<i64>().ok());
    match words.as_slice() {
        ["started", term, who] => Ok(Once::Started {
            term: term.parse().map_err(|_| format!("bad record {text:?}"))?,
            candidate: (*who).to_owned(),
        }),
        ["done", ..] => Ok(Once::Done {
            term: number(words.get(1)).ok_or(format!("bad record {text:?}"))? as u64,
            status: number(words.get(2)).ok_or(format!("bad record {text:?}"))?,
        }),
        _ => Err(format!("bad --once record {text:?}")),
    }
}

/// Redis: the string key `elect:once:{NAME}`, set with NX.
#[cfg(feature = "redis")]
mod once_redis {
    use elect_core::{CandidateId, ElectionName, Term};
    use elect_redis::fred::prelude::*;
    use elect_redis::fred::types::{Expiration, SetOptions};

    use super::{parse_record, Once};

    fn key(election: &ElectionName) -> String {
        format!("elect:once:{{{election}}}")
    }

    pub(super) async fn claim(
        store: &elect_redis::RedisStore,
        election: &ElectionName,
        candidate: &CandidateId,
        term: Term,
    ) -> Result<Once, String> {
        let client = store.pool().next();
        let value = format!("started {term} {candidate}");
        let set: Option<String> = client
            .set(
                key(election),
                value,
                None::<Expiration>,
                Some(SetOptions::NX),
                false,
            )
            .await
            .map_err(|e| e.to_string())?;
        if set.is_some() {
            return Ok(Once::Claimed);
        }
        let existing: Option<String> =
            client.get(key(election)).await.map_err(|e| e.to_string())?;
        parse_record(&existing.unwrap_or_default())
    }

    pub(super) async fn unclaim(
        store: &elect_redis::RedisStore,
        election: &ElectionName,
        record: &str,
    ) -> Result<(), String> {
        const UNLESS_CHANGED: &str =
            "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0";
        let _: i64 = store
            .pool()
            .next()
            .eval(UNLESS_CHANGED, vec![key(election)], vec![record])
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    }

    pub(super) async fn done(
        store: &elect_redis::RedisStore,
        election: &ElectionName,
        term: Term,
        status: i64,
    ) -> Result<(), String> {
        let client = store.pool().next();
        let _: Option<String> = client
            .set(
                key(election),
                format!("done {term} {status}"),
                None::<Expiration>,
                Some(SetOptions::XX),
                false,
            )
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    }
}

/// MySQL: a row in the table `elect_once` (created if missing).
#[cfg(feature = "mysql")]
mod once_mysql {
    use elect_core::{CandidateId, ElectionName, Term};
    use elect_mysql::mysql_async::prelude::*;
    use elect_mysql::mysql_async::Error;

    use super::{parse_record, Once};

    /// The server's "table does not exist".
    const NO_SUCH_TABLE: u16 = 1146;

    const CREATE: &str = "CREATE TABLE IF NOT EXISTS elect_once (\
        election VARCHAR(128) NOT NULL PRIMARY KEY, \
        record VARCHAR(300) NOT NULL, \
        updated_at DATETIME(6) NOT NULL)";

    pub(super) async fn claim(
        store: &elect_mysql::MysqlStore,
        election: &ElectionName,
        candidate: &CandidateId,
        term: Term,
    ) -> Result<Once, String> {
        let mut conn = store.pool().get_conn().await.map_err(|e| e.to_string())?;
        let record = format!("started {term} {candidate}");
        let insert = "INSERT IGNORE INTO elect_once (election, record, updated_at) VALUES (?, ?, UTC_TIMESTAMP(6))";
        let params = (election.as_str(), record.as_str());
        let inserted = match conn.exec_drop(insert, params).await {
            // Created on first use only: a user without CREATE works once the table exists.
            Err(Error::Server(e)) if e.code == NO_SUCH_TABLE => {
                conn.query_drop(CREATE).await.map_err(|e| e.to_string())?;
                conn.exec_drop(insert, params).await
            }
            other => other,
        }
        .map(|()| conn.affected_rows() == 1)
        .map_err(|e| e.to_string())?;
        if inserted {
            return Ok(Once::Claimed);
        }
        let record: Option<String> = conn
            .exec_first(
                "SELECT record FROM elect_once WHERE election = ?",
                (election.as_str(),),
            )
            .await
            .map_err(|e| e.to_string())?;
        parse_record(&record.unwrap_or_default())
    }

    pub(super) async fn unclaim(
        store: &elect_mysql::MysqlStore,
        election: &ElectionName,
        record: &str,
    ) -> Result<(), String> {
        let mut conn = store.pool().get_conn().await.map_err(|e| e.to_string())?;
        conn.exec_drop(
            "DELETE FROM elect_once WHERE election = ? AND record = ?",
            (election.as_str(), record),
        )
        .await
        .map_err(|e| e.to_string())
    }

    pub(super) async fn done(
        store: &elect_mysql::MysqlStore,
        election: &ElectionName,
        term: Term,
        status: i64,
    ) -> Result<(), String> {
        let mut conn = store.pool().get_conn().await.map_err(|e| e.to_string())?;
        conn.exec_drop(
            "UPDATE elect_once SET record = ?, updated_at = UTC_TIMESTAMP(6) WHERE election = ?",
            (format!("done {term} {status}"), election.as_str()),
        )
        .await
        .map_err(|e| e.to_string())
    }
}

/// MongoDB: a document `{_id: NAME, record}` in the collection `elect_once` of the store's
/// database; the claim is an insert (a duplicate `_id` means someone else claimed it).
#[cfg(feature = "mongo")]
mod once_mongo {
    use elect_core::{CandidateId, ElectionName, Term};
    use elect_mongo::mongodb::bson::{doc, Document};

    use super::{parse_record, Once};

    fn collection(store: &elect_mongo::MongoStore) -> elect_mongo::mongodb::Collection<Document> {
        let leases = store.collection();
        leases
            .client()
            .database(leases.namespace().db.as_str())
            .collection("elect_once")
    }

    pub(super) async fn claim(
        store: &elect_mongo::MongoStore,
        election: &ElectionName,
        candidate: &CandidateId,
        term: Term,
    ) -> Result<Once, String> {
        let once = collection(store);
        let record = format!("started {term} {candidate}");
        match once
            .insert_one(doc! { "_id": election.as_str(), "record": &record })
            .await
        {
            Ok(_) => return Ok(Once::Claimed),
            // Another leader's claim is there already.
            Err(e) if is_duplicate_key(&e) => {}
            Err(e) => return Err(e.to_string()),
        }
        let found = once
            .find_one(doc! { "_id": election.as_str() })
            .await
            .map_err(|e| e.to_string())?;
        let text = found
            .as_ref()
            .and_then(|d| d.get_str("record").ok())
            .unwrap_or_default();
        parse_record(text)
    }

    /// Duplicate key (11000), by the server's code.
    fn is_duplicate_key(e: &elect_mongo::mongodb::error::Error) -> bool {
        use elect_mongo::mongodb::error::{ErrorKind, WriteFailure};
        matches!(&*e.kind, ErrorKind::Write(WriteFailure::WriteError(w)) if w.code == 11000)
            || matches!(&*e.kind, ErrorKind::Command(c) if c.code == 11000)
    }

    pub(super) async fn unclaim(
        store: &elect_mongo::MongoStore,
        election: &ElectionName,
        record: &str,
    ) -> Result<(), String> {
        collection(store)
            .delete_one(doc! { "_id": election.as_str(), "record": record })
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    pub(super) async fn done(
        store: &elect_mongo::MongoStore,
        election: &ElectionName,
        term: Term,
        status: i64,
    ) -> Result<(), String> {
        collection(store)
            .update_one(
                doc! { "_id": election.as_str() },
                doc! { "$set": { "record": format!("done {term} {status}") } },
            )
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_parse() {
        assert_eq!(
            parse_record("started 7 host-1"),
            Ok(Once::Started {
                term: 7,
                candidate: "host-1".into()
            })
        );
        assert_eq!(
            parse_record("done 7 0"),
            Ok(Once::Done { term: 7, status: 0 })
        );
        assert!(parse_record("").is_err());
        assert!(parse_record("done x").is_err());
    }
}
