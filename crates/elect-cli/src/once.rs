//! `--once`: the record in the store that lets the program run at most once per election
//! across the group — one submodule per store.

use std::time::Duration;

use elect::{CandidateId, ElectionName, Term};

use crate::store::Store;
use crate::{exit, Failure};

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

/// Claims the one run of `election` for `term` (atomically: only one leader can), or
/// returns what an earlier leader recorded.
pub(crate) async fn claim(
    store: &Store,
    election: &ElectionName,
    candidate: &CandidateId,
    term: Term,
) -> Result<Once, Failure> {
    let work = async {
        let claimed: Result<Once, String> = match store {
            #[cfg(feature = "redis")]
            Store::Redis(s) => once_redis::claim(s, election, candidate, term).await,
            #[cfg(feature = "mysql")]
            Store::Mysql(s) => once_mysql::claim(s, election, candidate, term).await,
            #[cfg(feature = "mongo")]
            Store::Mongo(s) => once_mongo::claim(s, election, candidate, term).await,
            #[cfg(feature = "postgres")]
            Store::Postgres(s) => once_postgres::claim(s, election, candidate, term).await,
            #[cfg(feature = "etcd")]
            Store::Etcd(s) => once_etcd::claim(s, election, candidate, term).await,
            _ => Err("this build of elect does not support this store".to_owned()),
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
pub(crate) async fn unclaim(
    store: &Store,
    election: &ElectionName,
    candidate: &CandidateId,
    term: Term,
) -> Result<(), Failure> {
    let record = format!("started {term} {candidate}");
    let work = async {
        let removed: Result<(), String> = match store {
            #[cfg(feature = "redis")]
            Store::Redis(s) => once_redis::unclaim(s, election, &record).await,
            #[cfg(feature = "mysql")]
            Store::Mysql(s) => once_mysql::unclaim(s, election, &record).await,
            #[cfg(feature = "mongo")]
            Store::Mongo(s) => once_mongo::unclaim(s, election, &record).await,
            #[cfg(feature = "postgres")]
            Store::Postgres(s) => once_postgres::unclaim(s, election, &record).await,
            #[cfg(feature = "etcd")]
            Store::Etcd(s) => once_etcd::unclaim(s, election, &record).await,
            _ => Err("this build of elect does not support this store".to_owned()),
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
pub(crate) async fn done(
    store: &Store,
    election: &ElectionName,
    term: Term,
    status: i64,
) -> Result<(), Failure> {
    let work = async {
        let recorded: Result<(), String> = match store {
            #[cfg(feature = "redis")]
            Store::Redis(s) => once_redis::done(s, election, term, status).await,
            #[cfg(feature = "mysql")]
            Store::Mysql(s) => once_mysql::done(s, election, term, status).await,
            #[cfg(feature = "mongo")]
            Store::Mongo(s) => once_mongo::done(s, election, term, status).await,
            #[cfg(feature = "postgres")]
            Store::Postgres(s) => once_postgres::done(s, election, term, status).await,
            #[cfg(feature = "etcd")]
            Store::Etcd(s) => once_etcd::done(s, election, term, status).await,
            _ => Err("this build of elect does not support this store".to_owned()),
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
    use elect::redis::fred::prelude::*;
    use elect::redis::fred::types::{Expiration, SetOptions};
    use elect::{CandidateId, ElectionName, Term};

    use super::{parse_record, Once};

    fn key(election: &ElectionName) -> String {
        format!("elect:once:{{{election}}}")
    }

    pub(super) async fn claim(
        store: &elect::redis::RedisStore,
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
        store: &elect::redis::RedisStore,
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
        store: &elect::redis::RedisStore,
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
    use elect::mysql::mysql_async::prelude::*;
    use elect::mysql::mysql_async::Error;
    use elect::{CandidateId, ElectionName, Term};

    use super::{parse_record, Once};

    /// The server's "table does not exist".
    const NO_SUCH_TABLE: u16 = 1146;

    const CREATE: &str = "CREATE TABLE IF NOT EXISTS elect_once (\
        election VARCHAR(128) NOT NULL PRIMARY KEY, \
        record VARCHAR(300) NOT NULL, \
        updated_at DATETIME(6) NOT NULL)";

    pub(super) async fn claim(
        store: &elect::mysql::MysqlStore,
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
        store: &elect::mysql::MysqlStore,
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
        store: &elect::mysql::MysqlStore,
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

/// PostgreSQL: a row in the table `elect_once` (created if missing), found through the
/// connection's `search_path` like the lease table. Unnamed statements only, as the store's
/// own: PgBouncer in transaction mode carries them.
#[cfg(feature = "postgres")]
mod once_postgres {
    use elect::postgres::deadpool_postgres::Object;
    use elect::postgres::tokio_postgres::error::SqlState;
    use elect::postgres::tokio_postgres::types::Type;
    use elect::postgres::PostgresStore;
    use elect::{CandidateId, ElectionName, Term};

    use super::{parse_record, Once};

    const CREATE: &str = "CREATE TABLE IF NOT EXISTS elect_once (\
        election TEXT COLLATE \"C\" NOT NULL PRIMARY KEY, \
        record TEXT NOT NULL, \
        updated_at TIMESTAMPTZ NOT NULL)";

    async fn connection(store: &PostgresStore) -> Result<Object, String> {
        let pool = store
            .pool()
            .ok_or("--once needs a store with a connection pool")?;
        pool.get().await.map_err(|e| e.to_string())
    }

    pub(super) async fn claim(
        store: &PostgresStore,
        election: &ElectionName,
        candidate: &CandidateId,
        term: Term,
    ) -> Result<Once, String> {
        let conn = connection(store).await?;
        let record = format!("started {term} {candidate}");
        let insert = "INSERT INTO elect_once (election, record, updated_at) \
                      VALUES ($1, $2, clock_timestamp()) ON CONFLICT (election) DO NOTHING \
                      RETURNING 1";
        let (e, r) = (election.as_str(), record.as_str());
        let params = [(&e as _, Type::TEXT), (&r as _, Type::TEXT)];
        let inserted = match conn.query_typed(insert, &params).await {
            // Created on first use only: a user without CREATE works once the table exists.
            Err(err) if err.code() == Some(&SqlState::UNDEFINED_TABLE) => {
                conn.batch_execute(CREATE)
                    .await
                    .map_err(|e| e.to_string())?;
                conn.query_typed(insert, &params).await
            }
            other => other,
        }
        .map_err(|e| e.to_string())?;
        if !inserted.is_empty() {
            return Ok(Once::Claimed);
        }
        let rows = conn
            .query_typed(
                "SELECT record FROM elect_once WHERE election = $1",
                &[(&e as _, Type::TEXT)],
            )
            .await
            .map_err(|e| e.to_string())?;
        let found: String = rows
            .first()
            .map(|r| r.try_get(0))
            .transpose()
            .map_err(|e| e.to_string())?
            .unwrap_or_default();
        parse_record(&found)
    }

    pub(super) async fn unclaim(
        store: &PostgresStore,
        election: &ElectionName,
        record: &str,
    ) -> Result<(), String> {
        let conn = connection(store).await?;
        let e = election.as_str();
        conn.query_typed(
            "DELETE FROM elect_once WHERE election = $1 AND record = $2",
            &[(&e as _, Type::TEXT), (&record as _, Type::TEXT)],
        )
        .await
        .map(drop)
        .map_err(|e| e.to_string())
    }

    pub(super) async fn done(
        store: &PostgresStore,
        election: &ElectionName,
        term: Term,
        status: i64,
    ) -> Result<(), String> {
        let conn = connection(store).await?;
        let (e, r) = (election.as_str(), format!("done {term} {status}"));
        conn.query_typed(
            "UPDATE elect_once SET record = $2, updated_at = clock_timestamp() WHERE election = $1",
            &[(&e as _, Type::TEXT), (&r as _, Type::TEXT)],
        )
        .await
        .map(drop)
        .map_err(|e| e.to_string())
    }
}

/// MongoDB: a document `{_id: NAME, record}` in the collection `elect_once` of the store's
/// database; the claim is an insert (a duplicate `_id` means someone else claimed it).
#[cfg(feature = "mongo")]
mod once_mongo {
    use elect::mongo::mongodb::bson::{doc, Document};
    use elect::{CandidateId, ElectionName, Term};

    use super::{parse_record, Once};

    fn collection(store: &elect::mongo::MongoStore) -> elect::mongo::mongodb::Collection<Document> {
        let leases = store.collection();
        leases
            .client()
            .database(leases.namespace().db.as_str())
            .collection("elect_once")
    }

    pub(super) async fn claim(
        store: &elect::mongo::MongoStore,
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
    fn is_duplicate_key(e: &elect::mongo::mongodb::error::Error) -> bool {
        use elect::mongo::mongodb::error::{ErrorKind, WriteFailure};
        matches!(&*e.kind, ErrorKind::Write(WriteFailure::WriteError(w)) if w.code == 11000)
            || matches!(&*e.kind, ErrorKind::Command(c) if c.code == 11000)
    }

    pub(super) async fn unclaim(
        store: &elect::mongo::MongoStore,
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
        store: &elect::mongo::MongoStore,
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

/// etcd: the key `elect-once/` followed by the election's key (outside the lease prefix, so
/// no election name can collide with it), created in a transaction only where none exists.
/// It has no lease: it outlives every leadership.
#[cfg(feature = "etcd")]
mod once_etcd {
    use elect::etcd::etcd_client::{Compare, CompareOp, Txn, TxnOp, TxnOpResponse};
    use elect::etcd::EtcdStore;
    use elect::{CandidateId, ElectionName, Term};

    use super::{parse_record, Once};

    fn key(store: &EtcdStore, election: &ElectionName) -> String {
        format!("elect-once/{}{}", store.config().prefix, election.as_str())
    }

    pub(super) async fn claim(
        store: &EtcdStore,
        election: &ElectionName,
        candidate: &CandidateId,
        term: Term,
    ) -> Result<Once, String> {
        let key = key(store, election);
        let record = format!("started {term} {candidate}");
        let txn = Txn::new()
            .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key.as_str(), record, None)])
            .or_else([TxnOp::get(key.as_str(), None)]);
        let resp = store.client().txn(txn).await.map_err(|e| e.to_string())?;
        if resp.succeeded() {
            return Ok(Once::Claimed);
        }
        let found = resp
            .op_responses()
            .into_iter()
            .find_map(|r| match r {
                TxnOpResponse::Get(get) => get.kvs().first().map(|kv| kv.value().to_vec()),
                _ => None,
            })
            .unwrap_or_default();
        parse_record(&String::from_utf8_lossy(&found))
    }

    pub(super) async fn unclaim(
        store: &EtcdStore,
        election: &ElectionName,
        record: &str,
    ) -> Result<(), String> {
        let key = key(store, election);
        let txn = Txn::new()
            .when([Compare::value(key.as_str(), CompareOp::Equal, record)])
            .and_then([TxnOp::delete(key.as_str(), None)]);
        store
            .client()
            .txn(txn)
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }

    pub(super) async fn done(
        store: &EtcdStore,
        election: &ElectionName,
        term: Term,
        status: i64,
    ) -> Result<(), String> {
        store
            .client()
            .put(key(store, election), format!("done {term} {status}"), None)
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }
}
