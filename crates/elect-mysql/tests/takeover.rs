//! Taking a released or expired lease in one guarded statement (`take_vacant` in
//! `store.rs`), on a real server: no transaction, exactly one winner among racing takers, and
//! a row that changed into something not well-formed since it was seen is left to the
//! transaction (which names it corrupt) instead of being overwritten.

use std::time::Duration;

use elect_core::{Acquire, Claim, Error, Lease, LeaseStore, Release, Ttl};
use elect_mysql::mysql_async::prelude::Queryable;
use elect_mysql::{MysqlConfig, MysqlStore};
use elect_tests::{election, id};
use tokio::time::{timeout, Instant};

mod support;
use support::{fresh_database, store};

fn claim(who: &str) -> Claim {
    Claim::new(
        election("e"),
        id(who),
        Ttl::new(Duration::from_secs(20)).unwrap(),
    )
}

/// `a` granted election `e`, then releasing it.
async fn granted_and_released(a: &MysqlStore) -> Lease {
    let Acquire::Granted(lease) = a.try_acquire(&claim("a")).await.unwrap() else {
        panic!("a is granted the vacant election")
    };
    assert_eq!(a.release(&lease).await.unwrap(), Release::Released);
    lease
}

/// The transactions begun on the session of a one-connection pool.
async fn transactions_begun(store: &MysqlStore) -> u64 {
    let mut conn = store.pool().get_conn().await.unwrap();
    let row: Option<(String, u64)> = conn
        .query_first("SHOW SESSION STATUS LIKE 'Com_begin'")
        .await
        .unwrap();
    row.expect("the counter exists").1
}

/// A released lease is taken by its next leader with one read and one guarded `UPDATE`, not
/// in a transaction (five round trips: isolation level, `START TRANSACTION`, locking read,
/// `UPDATE`, `COMMIT`); the claim's own live lease still goes through the transaction. The
/// store's one pooled connection carries every statement, so its session counters are the
/// store's.
#[tokio::test]
async fn a_released_lease_is_taken_without_a_transaction() {
    let url = fresh_database().await;
    let config = MysqlConfig::new(&url).release_poll(None).pool_size(1);
    let a = store(config.clone()).await;
    let b = store(config).await;
    let first = granted_and_released(&a).await;
    b.leader(&election("e")).await.unwrap();

    let before = transactions_begun(&b).await;
    let b_claim = claim("b");
    let Acquire::Granted(second) = b.try_acquire(&b_claim).await.unwrap() else {
        panic!("b is granted the released election")
    };
    assert!(second.term > first.term, "terms rise");
    assert_eq!(
        transactions_begun(&b).await - before,
        0,
        "the released lease was taken in a transaction"
    );
    let info = a.leader(&election("e")).await.unwrap().expect("b leads");
    assert_eq!((info.holder, info.term), (id("b"), second.term));

    // The control: the claim's own live lease is extended in a transaction, on the session
    // counted (so a count of 0 above means something).
    let Acquire::Granted(again) = b.try_acquire(&b_claim).await.unwrap() else {
        panic!("b is granted its own lease again")
    };
    assert_eq!(again.term, second.term);
    assert_eq!(transactions_begun(&b).await - before, 1);
    // The lease is b's: a's old lease neither renews nor releases it.
    assert_eq!(a.release(&first).await.unwrap(), Release::NotHeld);
    assert_eq!(b.release(&again).await.unwrap(), Release::Released);
}

/// Eight stores race for a released lease, each having read the same vacant row: exactly one
/// is granted; the others are told it holds it, in its term.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_takers_of_a_released_lease_grant_it_once() {
    let url = fresh_database().await;
    let config = MysqlConfig::new(&url).release_poll(None);
    let a = store(config.clone()).await;
    for round in 0..5 {
        let mut takers = Vec::new();
        for _ in 0..8 {
            takers.push(store(config.clone()).await);
        }
        let before = granted_and_released(&a).await;
        let racing: Vec<_> = takers
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let s = s.clone();
                tokio::spawn(async move { s.try_acquire(&claim(&format!("t{i}"))).await })
            })
            .collect();
        let mut answers = Vec::new();
        for taker in racing {
            answers.push(taker.await.unwrap());
        }
        let granted: Vec<&Lease> = answers
            .iter()
            .filter_map(|a| match a {
                Ok(Acquire::Granted(lease)) => Some(lease),
                _ => None,
            })
            .collect();
        assert_eq!(granted.len(), 1, "round {round}: {answers:?}");
        let winner = granted[0];
        assert!(winner.term > before.term);
        for answer in &answers {
            match answer {
                Ok(Acquire::Granted(_)) => {}
                Ok(Acquire::Held(info)) => {
                    assert_eq!((&info.holder, info.term), (&winner.holder, winner.term))
                }
                other => panic!("round {round}: {other:?}"),
            }
        }
        let store = &takers[winner.holder.as_str()[1..].parse::<usize>().unwrap()];
        assert_eq!(store.release(winner).await.unwrap(), Release::Released);
    }
}

/// A follower's feed sees the lease released, and then a foreign client writes a holder that
/// is no candidate id into the row (still released). The follower's next acquisition, which
/// skips the read after a release its feed saw, must not overwrite that row: the transaction
/// reads it and names it corrupt. (Without the guard on the holder, the one-statement take
/// granted it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_row_turned_to_junk_is_not_taken_over() {
    let url = fresh_database().await;
    let a = store(MysqlConfig::new(&url).release_locks(false)).await;
    let b = store(MysqlConfig::new(&url).release_poll(Some(Duration::from_millis(50)))).await;
    let lease = {
        let Acquire::Granted(lease) = a.try_acquire(&claim("a")).await.unwrap() else {
            panic!("a is granted the vacant election")
        };
        lease
    };
    let mut feed = b.subscribe(&election("e")).await.unwrap().expect("a feed");
    feed.mark_seen();
    // Let b's feed see a live lease first, so that the junk counts as a change.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let mut foreign = elect_mysql::mysql_async::Conn::from_url(&url)
        .await
        .unwrap();
    foreign
        .query_drop(
            "ALTER TABLE elect_leases MODIFY holder VARCHAR(128) CHARACTER SET ascii \
             COLLATE ascii_bin NULL",
        )
        .await
        .unwrap();
    foreign
        .query_drop(
            "UPDATE elect_leases SET holder = 'not valid!', expires_at = UTC_TIMESTAMP(6), \
             version = version + 1",
        )
        .await
        .unwrap();
    let seen = Instant::now();
    timeout(Duration::from_secs(10), feed.changed())
        .await
        .expect("b's feed sees the row released");
    assert!(seen.elapsed() < Duration::from_secs(10));

    match b.try_acquire(&claim("b")).await {
        Err(Error::CorruptRecord { .. }) => {}
        other => panic!("the junk row was not named corrupt: {other:?}"),
    }
    let holder: Option<String> = foreign
        .query_first("SELECT holder FROM elect_leases")
        .await
        .unwrap();
    assert_eq!(
        holder.as_deref(),
        Some("not valid!"),
        "the row was overwritten"
    );
    assert_eq!(a.release(&lease).await.unwrap(), Release::NotHeld);
}

/// A foreign write left a released row with a term above 2⁶³ (still a valid term): the
/// one-statement take must still give a higher one. (Its first form compared the stored term
/// with the server's clock as signed integers inside `LAST_INSERT_ID`, and granted the clock:
/// the term went back by nine quintillion.)
#[tokio::test]
async fn a_term_above_two_to_the_63_still_rises() {
    let url = fresh_database().await;
    let a = store(MysqlConfig::new(&url).release_poll(None)).await;
    let first = granted_and_released(&a).await;
    let huge: u64 = (1 << 63) + 12_345;
    assert!(huge > first.term.get());
    let mut foreign = elect_mysql::mysql_async::Conn::from_url(&url)
        .await
        .unwrap();
    foreign
        .exec_drop("UPDATE elect_leases SET term = ?", (huge,))
        .await
        .unwrap();
    let Acquire::Granted(next) = a.try_acquire(&claim("b")).await.unwrap() else {
        panic!("b is granted the released election")
    };
    assert!(next.term.get() > huge, "{} after {huge}", next.term.get());
    let stored: Option<u64> = foreign
        .query_first("SELECT term FROM elect_leases")
        .await
        .unwrap();
    assert_eq!(stored, Some(next.term.get()));
}
