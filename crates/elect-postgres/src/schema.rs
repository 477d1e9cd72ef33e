//! The table: its DDL (published so it can go into your migrations), the check that an
//! existing table is one elect can trust, and the statements elect runs on it.

/// The default table name.
pub const DEFAULT_TABLE: &str = "elect_leases";

/// The `CREATE TABLE` statement for the default table name ([`DEFAULT_TABLE`]). Published so
/// it can go into your own migrations: services usually run without DDL rights, so elect never
/// creates it implicitly. See [`create_table_sql`] for another name.
///
/// - `election`: the primary key; `ON CONFLICT (election)` rests on it.
/// - `holder`, `nonce`: who holds the lease, and which of its claims (`elect_core::Nonce`, its
///   64 bits stored as a signed `BIGINT`), so two processes started with one candidate id are
///   two holders.
/// - `term`: the fencing token, kept across releases; a new grant takes
///   `max(term + 1, server clock in µs)`, so terms keep rising when the row is deleted or the
///   table truncated.
/// - `expires_at`: set from the server's `clock_timestamp()` (not `now()`, which stands still
///   for a whole transaction); a lease is live while `expires_at` is later than the server's
///   clock. A release sets it to the clock.
/// - `version`: bumped by every write (the `--once` ledger and operators can see a row move).
/// - `value`: the [`LeaderValue`](elect_core::LeaderValue) the holder published, UTF-8 bytes,
///   NULL for none.
///
/// Before its first request a store checks the table's columns, their types (a
/// `timestamptz(0)` would round every expiry to a second), and a unique index on `election`
/// alone, and refuses anything else with
/// [`Error::NotSetUp`](elect_core::Error::NotSetUp) naming what differs.
pub const CREATE_TABLE_SQL: &str = r#"CREATE TABLE IF NOT EXISTS "elect_leases" (
  "election" TEXT COLLATE "C" NOT NULL PRIMARY KEY,
  "holder" TEXT COLLATE "C" NOT NULL,
  "nonce" BIGINT NOT NULL DEFAULT 0,
  "term" BIGINT NOT NULL,
  "expires_at" TIMESTAMPTZ NOT NULL,
  "version" BIGINT NOT NULL DEFAULT 0,
  "value" BYTEA NULL
)"#;

/// [`CREATE_TABLE_SQL`] for a table named `table` (validated by
/// [`PostgresConfig`](crate::PostgresConfig); pass only validated names).
pub fn create_table_sql(table: &str) -> String {
    CREATE_TABLE_SQL.replacen(DEFAULT_TABLE, table, 1)
}

/// Whether `name` is a safe table name: 1–63 bytes (PostgreSQL's identifier limit) of
/// `[A-Za-z0-9_]`, not starting with a digit. Nothing else ever reaches the SQL text.
pub(crate) fn valid_table_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && !name.as_bytes()[0].is_ascii_digit()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// One column as the catalog describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Column {
    pub(crate) name: String,
    /// `format_type()`: `text`, `character varying(128)`, `bigint`,
    /// `timestamp(3) with time zone`, ….
    pub(crate) data_type: String,
    pub(crate) not_null: bool,
    pub(crate) has_default: bool,
    /// False for a nondeterministic (e.g. case-insensitive ICU) collation.
    pub(crate) deterministic: bool,
}

/// The catalog query for the table's columns: `$1` is the quoted table name, resolved
/// through the `search_path` as every statement resolves it. No rows: no such table.
pub(crate) const COLUMNS: &str = "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), \
     a.attnotnull, a.atthasdef, coalesce(c.collisdeterministic, true) \
     FROM pg_attribute a LEFT JOIN pg_collation c ON c.oid = a.attcollation \
     WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped";

/// The catalog query for a unique, non-partial index on `election` alone (one row per
/// election: the exclusion rests on it, and `ON CONFLICT (election)` needs it).
pub(crate) const UNIQUE_ELECTION: &str = "SELECT count(*) FROM pg_index i \
     JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] \
     WHERE i.indrelid = to_regclass($1) AND i.indisunique AND i.indnkeyatts = 1 \
     AND i.indpred IS NULL AND i.indexprs IS NULL AND a.attname = 'election'";

/// The verdict on a table's columns: what makes it unfit for elect, if anything.
pub(crate) fn check(columns: &[Column], unique_election: bool) -> Vec<String> {
    let mut wrong = Vec::new();
    let find = |name: &str| columns.iter().find(|c| c.name == name);
    for name in ["election", "holder"] {
        match find(name) {
            None => wrong.push(format!("column \"{name}\" is missing")),
            Some(c) => {
                let long_enough = c.data_type == "text"
                    || c.data_type == "character varying"
                    || c.data_type
                        .strip_prefix("character varying(")
                        .and_then(|n| n.strip_suffix(')'))
                        .and_then(|n| n.parse::<u32>().ok())
                        .is_some_and(|n| n >= 128);
                if !long_enough {
                    wrong.push(format!(
                        "\"{name}\" is {}, not TEXT (or VARCHAR of at least 128)",
                        c.data_type
                    ));
                }
                if !c.deterministic {
                    wrong.push(format!(
                        "\"{name}\" has a nondeterministic collation: names are compared byte \
                         for byte (COLLATE \"C\")"
                    ));
                }
            }
        }
    }
    for name in ["term", "nonce", "version"] {
        match find(name) {
            None => wrong.push(format!("column \"{name}\" is missing")),
            Some(c) if c.data_type != "bigint" => {
                wrong.push(format!("\"{name}\" is {}, not BIGINT", c.data_type))
            }
            Some(_) => {}
        }
    }
    match find("expires_at") {
        None => wrong.push("column \"expires_at\" is missing".into()),
        Some(c)
            if c.data_type == "timestamp with time zone"
                || c.data_type == "timestamp(6) with time zone" => {}
        Some(c)
            if c.data_type.starts_with("timestamp(") && c.data_type.ends_with("with time zone") =>
        {
            wrong.push(format!(
                "\"expires_at\" is {}: fewer than 6 fractional digits round every expiry \
                 (TIMESTAMPTZ keeps microseconds)",
                c.data_type
            ))
        }
        Some(c) => wrong.push(format!(
            "\"expires_at\" is {}, not TIMESTAMPTZ (a timestamp without time zone moves with \
             the session's TimeZone)",
            c.data_type
        )),
    }
    match find("value") {
        None => wrong.push("column \"value\" is missing".into()),
        Some(c) if c.data_type != "bytea" => {
            wrong.push(format!("\"value\" is {}, not BYTEA", c.data_type))
        }
        Some(c) if c.not_null => {
            wrong.push("\"value\" is NOT NULL: a leader without a value would not fit".into())
        }
        Some(_) => {}
    }
    if !unique_election {
        wrong.push(
            "no primary key or unique index on \"election\" alone: two rows could lead one \
             election"
                .into(),
        );
    }
    const OURS: [&str; 7] = [
        "election",
        "holder",
        "nonce",
        "term",
        "expires_at",
        "version",
        "value",
    ];
    for c in columns {
        if !OURS.contains(&c.name.as_str()) && c.not_null && !c.has_default {
            wrong.push(format!(
                "extra column \"{}\" is NOT NULL without a default: elect's inserts would fail",
                c.name
            ));
        }
    }
    wrong
}

/// The statements, with the (validated, quoted) table name filled in once. Every one is a
/// single statement (autocommit: its own transaction), sent unnamed with its parameter types
/// (`query_typed`): no prepared statement outlives it, so a transaction-mode pooler can hand
/// each to any server connection.
#[derive(Debug)]
pub(crate) struct Sql {
    /// The quoted table name, for the catalog queries' `to_regclass($1)`.
    pub(crate) quoted: String,
    /// The channel notices go out on: the table's name.
    pub(crate) channel: String,
    /// `$1` election → holder, term, remaining µs, nonce, value.
    pub(crate) read: String,
    /// `$1` election, `$2` holder, `$3` nonce, `$4` TTL µs, `$5` value, `$6` channel → one
    /// row of `read`'s columns and a sixth, `granted`: true with the new term when a new grant
    /// was made (the row was missing, expired or released); otherwise false with the row as
    /// the statement found it (its remaining µs by the statement's clock), when there is one.
    pub(crate) acquire: String,
    /// `$1` election, `$2` TTL µs, `$3` holder, `$4` nonce, `$5` term → one row when the live
    /// lease was extended.
    pub(crate) renew: String,
    /// `$1` election, `$2` holder, `$3` nonce, `$4` term, `$5` channel → one row when the live
    /// lease was released.
    pub(crate) release: String,
    /// `acquire` for many elections (each at most once): `$1` elections, `$2` holders, `$3`
    /// nonces, `$4` TTLs µs, `$5` values (arrays of one length), `$6` channel → per election
    /// at most one row of `acquire`'s six columns and a seventh, the election.
    pub(crate) acquire_batch: String,
    /// `renew` for many leases: `$1` elections, `$2` TTLs µs, `$3` holders, `$4` nonces, `$5`
    /// terms → the position (from 1) in the arrays of each live lease that was extended (of
    /// two identical leases in the arrays, one).
    pub(crate) renew_batch: String,
}

/// The server's clock in microseconds since the epoch (`clock_timestamp()` is the wall clock
/// at the moment it is evaluated, unlike `now()`, the transaction's start).
const MICROS: &str = "(extract(epoch FROM ts) * 1000000)::bigint";

impl Sql {
    pub(crate) fn new(table: &str) -> Sql {
        debug_assert!(valid_table_name(table));
        let t = format!("\"{table}\"");
        // Microseconds left on the lease at `clock`.
        let remaining =
            |clock: &str| format!("(extract(epoch FROM (expires_at - {clock})) * 1000000)::bigint");
        let (remaining_now, remaining_at_ts) = (remaining("clock_timestamp()"), remaining("ts"));
        let remaining_found =
            "(extract(epoch FROM (f.expires_at - ts)) * 1000000)::bigint".to_owned();
        let guard = "election = $1 AND holder = $2 AND nonce = $3 AND term = $4 \
                     AND expires_at > clock_timestamp()";
        Sql {
            quoted: t.clone(),
            channel: table.to_owned(),
            read: format!(
                "SELECT holder, term, {remaining_now}, nonce, value FROM {t} WHERE election = $1"
            ),
            // One statement, one reading of the clock (`ts`): it reads the row (`found`),
            // and only when it finds none, or a lease that is over and not foreign junk (a
            // missing holder or nonce, a term below 1: left to the caller's validation, as a
            // read would), tries the grant — so a follower that wakes into a renewed lease costs one
            // plain read and takes no row lock, and one that wakes into an ended lease takes it
            // in one round trip. The grant decides again under the row lock: `ON CONFLICT`
            // locks the row and re-reads its newest version at READ COMMITTED, and tests that
            // the lease is over through `excluded.expires_at - TTL`, which is `ts` exactly; so
            // of concurrent candidates exactly one takes it, whatever their snapshots showed. A
            // loser gets the row as its snapshot found it (over), and asks again. The notice
            // goes out when the grant commits.
            acquire: format!(
                "WITH clock AS (SELECT clock_timestamp() AS ts), \
                 found AS (SELECT holder, term, expires_at, nonce, value FROM {t} \
                   WHERE election = $1), \
                 granted AS ( \
                   INSERT INTO {t} AS l (election, holder, nonce, term, expires_at, version, value) \
                   SELECT $1, $2, $3, {MICROS}, ts + $4 * interval '1 microsecond', 1, $5 FROM clock \
                   WHERE NOT EXISTS (SELECT 1 FROM found WHERE found.expires_at > clock.ts \
                     OR found.holder IS NULL OR found.term < 1) \
                   ON CONFLICT (election) DO UPDATE SET holder = excluded.holder, \
                     nonce = excluded.nonce, term = greatest(l.term + 1, excluded.term), \
                     expires_at = excluded.expires_at, version = l.version + 1, \
                     value = excluded.value \
                   WHERE l.expires_at <= excluded.expires_at - $4 * interval '1 microsecond' \
                   RETURNING l.term), \
                 notified AS (SELECT term, pg_notify($6, concat_ws(' ', 'g', $1, term, $2, $4) \
                   || coalesce(E'\\n' || convert_from($5, 'UTF8'), '')) FROM granted) \
                 SELECT $2::text, term, $4::bigint, $3::bigint, $5::bytea, true FROM notified \
                 UNION ALL \
                 SELECT holder, term, {remaining_at_ts}, nonce, value, false FROM found, clock \
                   WHERE NOT EXISTS (SELECT 1 FROM granted)"
            ),
            renew: format!(
                "UPDATE {t} SET expires_at = clock_timestamp() + $2 * interval '1 microsecond', \
                 version = version + 1 \
                 WHERE election = $1 AND holder = $3 AND nonce = $4 AND term = $5 \
                 AND expires_at > clock_timestamp() RETURNING 1"
            ),
            // `acquire`, for each election of the arrays: read together, granted by one INSERT
            // (in election order, so that two batches lock rows in the same order), each grant
            // decided again under its row lock — there against `clock_timestamp()`, later than
            // `ts`: a lease over by then is over, and the new one still ends `ts + TTL` —,
            // one notice per grant.
            acquire_batch: format!(
                "WITH clock AS (SELECT clock_timestamp() AS ts), \
                 input AS (SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], \
                   $4::bigint[], $5::bytea[]) AS i(election, holder, nonce, ttl, value)), \
                 found AS (SELECT l.election, l.holder, l.term, l.expires_at, l.nonce, l.value \
                   FROM {t} l JOIN input i ON l.election = i.election), \
                 granted AS ( \
                   INSERT INTO {t} AS l (election, holder, nonce, term, expires_at, version, value) \
                   SELECT i.election, i.holder, i.nonce, {MICROS}, \
                     ts + i.ttl * interval '1 microsecond', 1, i.value FROM input i, clock \
                   WHERE NOT EXISTS (SELECT 1 FROM found f WHERE f.election = i.election \
                     AND (f.expires_at > clock.ts OR f.holder IS NULL OR f.term < 1)) \
                   ORDER BY i.election \
                   ON CONFLICT (election) DO UPDATE SET holder = excluded.holder, \
                     nonce = excluded.nonce, term = greatest(l.term + 1, excluded.term), \
                     expires_at = excluded.expires_at, version = l.version + 1, \
                     value = excluded.value \
                   WHERE l.expires_at <= clock_timestamp() \
                   RETURNING l.election, l.term), \
                 notified AS (SELECT g.election, g.term, pg_notify($6, \
                   concat_ws(' ', 'g', g.election, g.term, i.holder, i.ttl) \
                   || coalesce(E'\\n' || convert_from(i.value, 'UTF8'), '')) \
                   FROM granted g JOIN input i ON i.election = g.election) \
                 SELECT i.holder, n.term, i.ttl, i.nonce, i.value, true, n.election \
                   FROM notified n JOIN input i ON i.election = n.election \
                 UNION ALL \
                 SELECT f.holder, f.term, {remaining_found}, f.nonce, f.value, false, \
                   f.election FROM found f, clock \
                   WHERE NOT EXISTS (SELECT 1 FROM granted g WHERE g.election = f.election)"
            ),
            renew_batch: format!(
                "UPDATE {t} AS l SET expires_at = clock_timestamp() + i.ttl * interval \
                 '1 microsecond', version = l.version + 1 \
                 FROM unnest($1::text[], $2::bigint[], $3::text[], $4::bigint[], $5::bigint[]) \
                   WITH ORDINALITY AS i(election, ttl, holder, nonce, term, ord) \
                 WHERE l.election = i.election AND l.holder = i.holder AND l.nonce = i.nonce \
                 AND l.term = i.term AND l.expires_at > clock_timestamp() \
                 RETURNING i.ord"
            ),
            release: format!(
                "WITH released AS (UPDATE {t} SET expires_at = clock_timestamp(), \
                 version = version + 1 WHERE {guard} RETURNING election) \
                 SELECT pg_notify($5, 'r ' || election) FROM released"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The README's schema is the DDL the crate publishes.
    #[test]
    fn the_readme_shows_the_published_ddl() {
        assert!(
            include_str!("../README.md").contains(CREATE_TABLE_SQL),
            "README.md's schema differs from CREATE_TABLE_SQL"
        );
    }

    #[test]
    fn table_names() {
        for ok in ["elect_leases", "a", "T_1", &"x".repeat(63)] {
            assert!(valid_table_name(ok), "{ok}");
        }
        for bad in [
            "",
            "1x",
            "a-b",
            "a\"b",
            "a;DROP TABLE x",
            "a b",
            "ä",
            &"x".repeat(64),
        ] {
            assert!(!valid_table_name(bad), "{bad}");
        }
        assert!(create_table_sql("other").starts_with("CREATE TABLE IF NOT EXISTS \"other\" ("));
    }

    fn ours() -> Vec<Column> {
        let col = |name: &str, data_type: &str| Column {
            name: name.into(),
            data_type: data_type.into(),
            not_null: true,
            has_default: false,
            deterministic: true,
        };
        vec![
            col("election", "text"),
            col("holder", "text"),
            col("nonce", "bigint"),
            col("term", "bigint"),
            col("expires_at", "timestamp with time zone"),
            col("version", "bigint"),
            Column {
                not_null: false,
                ..col("value", "bytea")
            },
        ]
    }

    #[test]
    fn only_elects_own_shape_passes() {
        assert!(check(&ours(), true).is_empty());
        let with = |change: &dyn Fn(&mut Column), name: &str| {
            let mut columns = ours();
            change(columns.iter_mut().find(|c| c.name == name).unwrap());
            check(&columns, true)
        };
        assert!(with(&|c| c.data_type = "character varying(200)".into(), "holder").is_empty());
        for (what, verdict) in [
            (
                "timestamptz(0)",
                with(
                    &|c| c.data_type = "timestamp(0) with time zone".into(),
                    "expires_at",
                ),
            ),
            (
                "timestamp",
                with(
                    &|c| c.data_type = "timestamp without time zone".into(),
                    "expires_at",
                ),
            ),
            ("date", with(&|c| c.data_type = "date".into(), "expires_at")),
            (
                "int term",
                with(&|c| c.data_type = "integer".into(), "term"),
            ),
            (
                "short holder",
                with(&|c| c.data_type = "character varying(64)".into(), "holder"),
            ),
            (
                "ci election",
                with(&|c| c.deterministic = false, "election"),
            ),
            (
                "text value",
                with(&|c| c.data_type = "text".into(), "value"),
            ),
            ("NOT NULL value", with(&|c| c.not_null = true, "value")),
        ] {
            assert!(!verdict.is_empty(), "{what}");
        }
        assert!(!check(&ours(), false).is_empty());
        let mut extra = ours();
        extra.push(Column {
            name: "owner".into(),
            ..ours()[2].clone()
        });
        assert!(!check(&extra, true).is_empty());
        extra.last_mut().unwrap().not_null = false;
        assert!(check(&extra, true).is_empty());
    }
}
