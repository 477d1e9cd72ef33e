//! [`BatchStore`] for [`MysqlStore`]: many elections' acquisitions, or renewals, in a few
//! statements.
//!
//! MySQL and MariaDB have no `UPDATE … RETURNING`: a statement does not say which of its rows
//! it changed, only how many.
//!
//! - **Renewals** are one guarded `UPDATE` of every lease in the batch, each row checked
//!   against its own lease's holder, nonce and term and still live, as the single renewal
//!   checks it. When it changed as many rows as the batch has leases (the usual case), each
//!   lease was renewed: the elections of a batch are distinct, and a row can only match its own
//!   election's lease. Otherwise one `SELECT` reads the rows back, and a lease counts as renewed
//!   when its row holds it, live. Only the `UPDATE` can have made that so: a lease that had
//!   ended is never live again under the same holder, nonce and term (a new grant has a new
//!   term), and a lease that was live when the `UPDATE` ran was extended by it.
//! - **Acquisitions** read all the batch's rows first, without a lock: a live lease someone
//!   else holds answers its claim, as the single acquisition's first read does. The rest go in
//!   one `READ COMMITTED` transaction: one `SELECT … FOR UPDATE` locks their rows (in the unique
//!   index's order, so two batches lock in one order), each grant is decided under the lock
//!   exactly as the single acquisition decides it (the next term above the stored one and the
//!   server's clock in µs), the expired leases are taken in one `UPDATE`, the missing rows made
//!   in one `INSERT`, and the transaction commits. A claim of its own live lease, the second
//!   claim of an election, and a batch that lost an insert race or a deadlock go the single way.
//! - **Named-lock wake-ups**: a lease a batch granted holds no named lock (that would be one
//!   connection per led election). Followers of such an election learn of its release from
//!   the poll ([`MysqlConfig::release_poll`](crate::MysqlConfig::release_poll)) and of a
//!   crashed holder's end from the expiry they were told of. For thousands of elections, turn
//!   the waiters off too
//!   ([`MysqlConfig::release_locks`](crate::MysqlConfig::release_locks)`(false)`): each of
//!   them is a task and, while it waits, a connection.

use std::collections::HashMap;

use elect_core::batch::{acquire_each, renew_in_chunks, BatchStore};
use elect_core::{async_trait, Acquire, Claim, Lease, Renewal, Result, Term};
use mysql_async::prelude::Queryable;
use mysql_async::Value;
use tracing::debug;

use crate::error::is_deadlock;
use crate::schema::{int, Sql, CLOCK_US, NOW};
use crate::store::{read_committed, Decision, MysqlStore};

/// At most this many elections per statement (MySQL allows 65 535 parameters).
const CHUNK: usize = 500;

/// The answer for each claim of a batch, by its position; `None` where the single acquisition
/// decides.
type Answers = Vec<Option<Result<Acquire>>>;

#[async_trait]
impl BatchStore for MysqlStore {
    async fn try_acquire_batch(&self, claims: &[Claim]) -> Vec<Result<Acquire>> {
        let sql = match self.check_schema().await {
            Ok(sql) => sql,
            Err(e) => return claims.iter().map(|_| Err(e.clone())).collect(),
        };
        if !sql.value && claims.iter().any(|c| c.value.is_some()) {
            self.warn_no_value();
        }
        acquire_each(self, claims, async |first| {
            let mut answers = Vec::with_capacity(first.len());
            for chunk in first.chunks(CHUNK) {
                answers.extend(self.acquire_many(sql, claims, chunk).await?);
            }
            Ok(answers)
        })
        .await
    }

    async fn renew_batch(&self, leases: &[Lease]) -> Vec<Result<Renewal>> {
        let sql = match self.check_schema().await {
            Ok(sql) => sql,
            Err(e) => return leases.iter().map(|_| Err(e.clone())).collect(),
        };
        let answers = renew_in_chunks(leases, CHUNK, |chunk| self.renew_many(sql, chunk)).await;
        for (lease, answer) in leases.iter().zip(&answers) {
            // The beacon of a lease a batch renewed or found lost, as the single renewal
            // keeps it (an error changes nothing).
            if let (Some(beacons), Ok(renewal)) = (self.beacons(), answer) {
                match renewal {
                    Renewal::Renewed(_) => beacons.renewed(lease),
                    Renewal::Lost => beacons.ended(lease),
                }
            }
        }
        answers
    }
}

/// `?, ?, …` (`n` of them).
fn marks(n: usize) -> String {
    vec!["?"; n].join(", ")
}

/// `CASE `election` WHEN ? THEN ? … END` for `n` elections: the parameters are each election
/// followed by its value.
fn case(n: usize) -> String {
    format!("CASE `election` {}END", "WHEN ? THEN ? ".repeat(n))
}

/// An unsigned integer column, as the guard compares it.
fn unsigned(v: &Value) -> Option<u64> {
    int(v).and_then(|i| u64::try_from(i).ok())
}

impl MysqlStore {
    /// One renewal statement for `leases` (distinct elections, at most [`CHUNK`]), and the
    /// read-back when it did not renew them all: per lease, whether it was renewed.
    async fn renew_many(&self, sql: &Sql, leases: &[Lease]) -> Result<Vec<bool>> {
        let n = leases.len();
        let table = &sql.table;
        let statement = format!(
            "UPDATE `{table}` SET `expires_at` = {NOW} + INTERVAL ({}) MICROSECOND, \
             `version` = `version` + 1 WHERE `election` IN ({}) \
             AND (`election`, `holder`, `nonce`, `term`) IN ({}) AND `expires_at` > {NOW}",
            case(n),
            marks(n),
            vec!["(?, ?, ?, ?)"; n].join(", "),
        );
        let mut params: Vec<Value> = Vec::with_capacity(7 * n);
        for l in leases {
            params.push(l.election.as_str().into());
            params.push((l.ttl.get().as_micros() as u64).into());
        }
        params.extend(leases.iter().map(|l| Value::from(l.election.as_str())));
        for l in leases {
            params.push(l.election.as_str().into());
            params.push(l.holder.as_str().into());
            params.push(l.nonce.get().into());
            params.push(l.term.get().into());
        }
        let changed = self
            .request("renew", async |conn| {
                conn.exec_drop(statement, params).await?;
                Ok(conn.affected_rows())
            })
            .await?;
        if changed == n as u64 {
            return Ok(vec![true; n]);
        }
        let read = format!(
            "SELECT `election`, `holder`, `nonce`, `term`, `expires_at` > {NOW} FROM `{table}` \
             WHERE `election` IN ({})",
            marks(n)
        );
        let elections: Vec<Value> = leases.iter().map(|l| l.election.as_str().into()).collect();
        let rows: Vec<(Value, Value, Value, Value, Value)> = self
            .request("renew", async |conn| conn.exec(read, elections).await)
            .await?;
        let held: HashMap<Vec<u8>, (Value, Value, Value, Value)> = rows
            .into_iter()
            .filter_map(|(e, h, n, t, live)| match e {
                Value::Bytes(e) => Some((e, (h, n, t, live))),
                _ => None,
            })
            .collect();
        Ok(leases
            .iter()
            .map(|l| {
                held.get(l.election.as_str().as_bytes()).is_some_and(
                    |(holder, nonce, term, live)| {
                        *holder == Value::from(l.holder.as_str())
                            && unsigned(nonce) == Some(l.nonce.get())
                            && unsigned(term) == Some(l.term.get())
                            && int(live) == Some(1)
                    },
                )
            })
            .collect())
    }

    /// The batch acquisition for `claims[i]`, `i` in `which` (distinct elections, at most
    /// [`CHUNK`]): per claim, its answer, or `None` where the single acquisition decides.
    async fn acquire_many(&self, sql: &Sql, claims: &[Claim], which: &[usize]) -> Result<Answers> {
        if which.is_empty() {
            return Ok(Vec::new());
        }
        let table = &sql.table;
        let value_column = if sql.value { "`value`" } else { "NULL" };
        let columns = format!(
            "`election`, `holder`, `term`, TIMESTAMPDIFF(MICROSECOND, {NOW}, `expires_at`), \
             `nonce`, {value_column}"
        );
        // The first read, without a lock: leases others hold live are answered from it.
        let read = format!(
            "SELECT {columns} FROM `{table}` WHERE `election` IN ({})",
            marks(which.len())
        );
        let elections: Vec<Value> = which
            .iter()
            .map(|&i| claims[i].election.as_str().into())
            .collect();
        let rows: Vec<mysql_async::Row> = self
            .request("try_acquire", async |conn| conn.exec(read, elections).await)
            .await?;
        let rows = by_election(rows);
        let mut answers: Answers = which.iter().map(|_| None).collect();
        let mut rest = Vec::new();
        for (k, &i) in which.iter().enumerate() {
            let claim = &claims[i];
            let Some(values) = rows.get(claim.election.as_str().as_bytes()) else {
                rest.push(k);
                continue;
            };
            match self.row(&claim.election, values.get(1..).unwrap_or_default()) {
                Ok(row) if row.live() && !row.granted_to(claim) => {
                    answers[k] = Some(Ok(Acquire::Held(row.info())))
                }
                Ok(_) => rest.push(k),
                Err(corrupt) => answers[k] = Some(Err(corrupt)),
            }
        }
        if rest.is_empty() {
            return Ok(answers);
        }
        let rest: Vec<usize> = rest.into_iter().map(|k| which[k]).collect();
        let decided = match self.acquire_locked(sql, &columns, claims, &rest).await {
            Ok(Some(decided)) => decided,
            Ok(None) => return Ok(answers),
            Err(e) if is_deadlock(&e) => {
                debug!("deadlock in a batch acquisition: asking election by election");
                return Ok(answers);
            }
            Err(e) => rest.iter().map(|_| Some(Err(e.clone()))).collect(),
        };
        let position: HashMap<usize, usize> =
            which.iter().enumerate().map(|(k, &i)| (i, k)).collect();
        for (i, answer) in rest.iter().zip(decided) {
            answers[position[i]] = answer;
        }
        Ok(answers)
    }

    /// The locking transaction for `claims[i]`, `i` in `which`: per claim, its answer or `None`
    /// (single path); `None` for all when the batch must be asked election by election (an
    /// insert race lost: the transaction rolled back).
    async fn acquire_locked(
        &self,
        sql: &Sql,
        columns: &str,
        claims: &[Claim],
        which: &[usize],
    ) -> Result<Option<Answers>> {
        let table = &sql.table;
        let lock = format!(
            "SELECT {columns}, {CLOCK_US} FROM `{table}` WHERE `election` IN ({}) FOR UPDATE",
            marks(which.len())
        );
        let elections: Vec<Value> = which
            .iter()
            .map(|&i| claims[i].election.as_str().into())
            .collect();
        self.request("try_acquire", async |conn| {
            let mut tx = conn.start_transaction(read_committed()).await?;
            let locked: Vec<mysql_async::Row> = tx.exec(lock, elections).await?;
            let locked = by_election(locked);
            let mut answers: Answers = which.iter().map(|_| None).collect();
            let (mut takes, mut inserts) = (Vec::new(), Vec::new());
            for (k, &i) in which.iter().enumerate() {
                let claim = &claims[i];
                let Some(values) = locked.get(claim.election.as_str().as_bytes()) else {
                    inserts.push(k);
                    continue;
                };
                let row = match self.row(&claim.election, values.get(1..6).unwrap_or_default()) {
                    Ok(row) => row,
                    Err(corrupt) => {
                        answers[k] = Some(Err(corrupt));
                        continue;
                    }
                };
                match self.decide(claim, row, values.get(6)) {
                    Ok(Decision::Held(info)) => answers[k] = Some(Ok(Acquire::Held(info))),
                    // Its own live lease: the single path extends it.
                    Ok(Decision::Own(_)) => {}
                    Ok(Decision::Take(term)) => takes.push((k, term)),
                    Err(corrupt) => answers[k] = Some(Err(corrupt)),
                }
            }
            if !takes.is_empty() {
                let (statement, params) = take(sql, claims, which, &takes);
                tx.exec_drop(statement, params).await?;
                if tx.affected_rows() != takes.len() as u64 {
                    return Ok(None);
                }
                for &(k, term) in &takes {
                    answers[k] = Some(Ok(Acquire::Granted(claims[which[k]].granted(term))));
                }
            }
            if !inserts.is_empty() {
                let (statement, params) = insert(sql, claims, which, &inserts);
                match tx.exec_drop(statement, params).await {
                    Err(mysql_async::Error::Server(s)) if s.code == 1062 => return Ok(None),
                    other => other?,
                }
                let read = format!(
                    "SELECT `election`, `term` FROM `{table}` WHERE `election` IN ({})",
                    marks(inserts.len())
                );
                let names: Vec<Value> = inserts
                    .iter()
                    .map(|&k| claims[which[k]].election.as_str().into())
                    .collect();
                let terms: Vec<(Value, Value)> = tx.exec(read, names).await?;
                let terms: HashMap<Vec<u8>, u64> = terms
                    .into_iter()
                    .filter_map(|(e, t)| match e {
                        Value::Bytes(e) => Some((e, unsigned(&t)?)),
                        _ => None,
                    })
                    .collect();
                for &k in &inserts {
                    let claim = &claims[which[k]];
                    answers[k] = terms
                        .get(claim.election.as_str().as_bytes())
                        .filter(|&&t| t > 0)
                        .map(|&t| Ok(Acquire::Granted(claim.granted(Term(t)))));
                }
            }
            tx.commit().await?;
            Ok(Some(answers))
        })
        .await
    }
}

/// Rows keyed by their first column (the election), the rest kept as they came.
fn by_election(rows: Vec<mysql_async::Row>) -> HashMap<Vec<u8>, Vec<Value>> {
    rows.into_iter()
        .filter_map(|row| {
            let values = row.unwrap();
            match values.first() {
                Some(Value::Bytes(e)) => Some((e.clone(), values)),
                _ => None,
            }
        })
        .collect()
}

/// The `UPDATE` that takes the expired leases `takes` (positions in `which`, with their new
/// terms), every column from a `CASE` on the election.
fn take(
    sql: &Sql,
    claims: &[Claim],
    which: &[usize],
    takes: &[(usize, Term)],
) -> (String, Vec<Value>) {
    let n = takes.len();
    let value = if sql.value {
        format!(", `value` = {}", case(n))
    } else {
        String::new()
    };
    let statement = format!(
        "UPDATE `{}` SET `holder` = {c}, `nonce` = {c}, `term` = {c}, \
         `expires_at` = {NOW} + INTERVAL ({c}) MICROSECOND, `version` = `version` + 1{value} \
         WHERE `election` IN ({})",
        sql.table,
        marks(n),
        c = case(n),
    );
    let claim = |k: usize| &claims[which[k]];
    let mut params: Vec<Value> = Vec::with_capacity(11 * n);
    let mut column = |f: &dyn Fn(usize, Term) -> Value| {
        for &(k, term) in takes {
            params.push(claim(k).election.as_str().into());
            params.push(f(k, term));
        }
    };
    column(&|k, _| claim(k).candidate.as_str().into());
    column(&|k, _| claim(k).nonce.get().into());
    column(&|_, term| term.get().into());
    column(&|k, _| (claim(k).ttl.get().as_micros() as u64).into());
    if sql.value {
        column(&|k, _| claim_value(claim(k)));
    }
    params.extend(
        takes
            .iter()
            .map(|&(k, _)| Value::from(claim(k).election.as_str())),
    );
    (statement, params)
}

/// The `INSERT` of the rows `inserts` (positions in `which`), each term the server's clock in
/// µs, as the single path's.
fn insert(sql: &Sql, claims: &[Claim], which: &[usize], inserts: &[usize]) -> (String, Vec<Value>) {
    let (value_column, value_mark) = if sql.value {
        (", `value`", ", ?")
    } else {
        ("", "")
    };
    let row = format!("(?, ?, ?, {CLOCK_US}, {NOW} + INTERVAL ? MICROSECOND, 1{value_mark})");
    let statement = format!(
        "INSERT INTO `{}` (`election`, `holder`, `nonce`, `term`, `expires_at`, `version`{value_column}) \
         VALUES {}",
        sql.table,
        vec![row.as_str(); inserts.len()].join(", "),
    );
    let mut params = Vec::with_capacity(5 * inserts.len());
    for &k in inserts {
        let claim = &claims[which[k]];
        params.push(claim.election.as_str().into());
        params.push(claim.candidate.as_str().into());
        params.push(claim.nonce.get().into());
        params.push((claim.ttl.get().as_micros() as u64).into());
        if sql.value {
            params.push(claim_value(claim));
        }
    }
    (statement, params)
}

/// A claim's leader value as a column value (NULL without one).
fn claim_value(claim: &Claim) -> Value {
    match &claim.value {
        Some(v) => Value::Bytes(v.as_str().as_bytes().to_vec()),
        None => Value::NULL,
    }
}
