//! The table: its DDL (published so it can go into your migrations), the check that an
//! existing table is one elect can trust, and the statements elect runs on it.

use elect_core::Lease;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row, Value};

/// The default table name.
pub const DEFAULT_TABLE: &str = "elect_leases";

/// The `CREATE TABLE` statement for the default table name ([`DEFAULT_TABLE`]). Published so
/// it can go into your own migrations: services usually run without DDL rights, so elect never
/// creates it implicitly. See [`create_table_sql`] for another name.
///
/// - `election`, `holder`: ASCII with binary collation, as names are case-sensitive ASCII.
/// - `term`: the fencing token, kept across releases.
/// - `expires_at`: UTC, microseconds, set from the server's `UTC_TIMESTAMP(6)`; a lease is live
///   while `expires_at` is later than the server's now. A release sets it to now.
/// - `version`: bumped by every write, so a statement always changes the row it matches and
///   affected-row counts mean the same with or without `CLIENT_FOUND_ROWS`; waiting candidates
///   poll it to learn of releases.
/// - `nonce`: which claim of the holder the lease was granted to (`elect_core::Nonce`), so two
///   processes started with the same candidate id are two holders. Added in 0.2.0:
///   [`MysqlStore::migrate`](crate::MysqlStore::migrate) adds it to an older table
///   ([`ADD_NONCE_SQL`]).
/// - `value`: the [`LeaderValue`](elect_core::LeaderValue) the holder published, UTF-8 bytes,
///   NULL for none. Added in 0.2.0 and optional: a table without it works as before and keeps
///   no values ([`ADD_VALUE_SQL`] adds it; so does `migrate`).
///
/// Before its first request a store checks that the table has these columns with these types
/// (a `DATETIME` without fractional seconds would cut every expiry by up to a second) and a
/// unique key on `election` alone, and refuses anything else with
/// [`Error::NotSetUp`](elect_core::Error::NotSetUp) naming what differs.
pub const CREATE_TABLE_SQL: &str = "CREATE TABLE IF NOT EXISTS `elect_leases` (
  `election` VARCHAR(128) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  `holder` VARCHAR(128) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  `term` BIGINT UNSIGNED NOT NULL,
  `expires_at` DATETIME(6) NOT NULL,
  `version` BIGINT UNSIGNED NOT NULL DEFAULT 0,
  `nonce` BIGINT UNSIGNED NOT NULL DEFAULT 0,
  `value` VARBINARY(1024) NULL,
  PRIMARY KEY (`election`)
) ENGINE=InnoDB";

/// Adds the `nonce` column (elect-mysql 0.2.0) to a table made from 0.1.0's DDL, for the
/// default table name; [`add_nonce_sql`] for another. Rows written before it read as nobody's
/// claim, so their holders are followed until the lease expires.
pub const ADD_NONCE_SQL: &str =
    "ALTER TABLE `elect_leases` ADD COLUMN `nonce` BIGINT UNSIGNED NOT NULL DEFAULT 0";

/// Adds the `value` column (elect-mysql 0.2.0) to an older table, for the default table name;
/// [`add_value_sql`] for another. Until it is added, leaders' values are not stored (a warning
/// says so once per store).
pub const ADD_VALUE_SQL: &str =
    "ALTER TABLE `elect_leases` ADD COLUMN `value` VARBINARY(1024) NULL";

/// [`CREATE_TABLE_SQL`] for a table named `table` (validated by
/// [`MysqlConfig`](crate::MysqlConfig); pass only validated names).
pub fn create_table_sql(table: &str) -> String {
    CREATE_TABLE_SQL.replacen(DEFAULT_TABLE, table, 1)
}

/// [`ADD_NONCE_SQL`] for a table named `table`.
pub fn add_nonce_sql(table: &str) -> String {
    ADD_NONCE_SQL.replacen(DEFAULT_TABLE, table, 1)
}

/// [`ADD_VALUE_SQL`] for a table named `table`.
pub fn add_value_sql(table: &str) -> String {
    ADD_VALUE_SQL.replacen(DEFAULT_TABLE, table, 1)
}

/// Whether `name` is a safe table name: 1–64 bytes of `[A-Za-z0-9_]`, not starting with a
/// digit. Nothing else ever reaches the SQL text.
pub(crate) fn valid_table_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.as_bytes()[0].is_ascii_digit()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// What is wrong with the table, for [`Error::NotSetUp`](elect_core::Error::NotSetUp).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Mismatch {
    /// No such table in the connection's database.
    Missing,
    /// Only the `nonce` column is missing: a table from elect-mysql 0.1.0.
    NoNonce,
    /// Anything else, said in words.
    Other(Vec<String>),
}

/// One column as `information_schema.COLUMNS` describes it.
#[derive(Debug, Clone)]
pub(crate) struct Column {
    pub(crate) name: String,
    pub(crate) data_type: String,
    pub(crate) max_length: Option<u64>,
    pub(crate) datetime_precision: Option<u64>,
    pub(crate) collation: Option<String>,
    pub(crate) nullable: bool,
    pub(crate) has_default: bool,
}

/// Reads the table's columns and unique single-column keys, and says what (if anything) makes
/// it unfit for elect.
pub(crate) async fn inspect(conn: &mut Conn, table: &str) -> mysql_async::Result<Inspection> {
    // Plain queries, not prepared statements: they run once per store, and would otherwise sit
    // in a pooled connection's statement cache. `table` is a validated name.
    debug_assert!(valid_table_name(table));
    let columns: Vec<Row> = conn
        .query(format!(
            "SELECT COLUMN_NAME, DATA_TYPE, CHARACTER_MAXIMUM_LENGTH, DATETIME_PRECISION, \
             COLLATION_NAME, IS_NULLABLE, COLUMN_DEFAULT IS NOT NULL OR EXTRA LIKE '%auto_increment%' \
             FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = '{table}'"
        ))
        .await?;
    let columns: Vec<Column> = columns.into_iter().map(column).collect();
    if columns.is_empty() {
        return Ok(Inspection {
            mismatch: Some(Mismatch::Missing),
            value: false,
        });
    }
    // Unique indexes made of `election` alone.
    let unique: Vec<Row> = conn
        .query(format!(
            "SELECT INDEX_NAME FROM information_schema.STATISTICS \
             WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = '{table}' AND NON_UNIQUE = 0 \
             GROUP BY INDEX_NAME HAVING COUNT(*) = 1 AND MAX(COLUMN_NAME) = 'election'"
        ))
        .await?;
    Ok(Inspection {
        mismatch: check(&columns, !unique.is_empty()),
        value: columns.iter().any(|c| c.name == "value"),
    })
}

/// What [`inspect`] found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Inspection {
    /// What makes the table unfit, if anything.
    pub(crate) mismatch: Option<Mismatch>,
    /// Whether it has the (optional) `value` column.
    pub(crate) value: bool,
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::Bytes(b) => Some(String::from_utf8_lossy(b).into_owned()),
        _ => None,
    }
}

fn number(v: &Value) -> Option<u64> {
    match v {
        Value::Int(i) => u64::try_from(*i).ok(),
        Value::UInt(u) => Some(*u),
        Value::Bytes(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        _ => None,
    }
}

fn column(row: Row) -> Column {
    let v = row.unwrap();
    let get = |n: usize| v.get(n).cloned().unwrap_or(Value::NULL);
    Column {
        name: text(&get(0)).unwrap_or_default().to_ascii_lowercase(),
        data_type: text(&get(1)).unwrap_or_default().to_ascii_lowercase(),
        max_length: number(&get(2)),
        datetime_precision: number(&get(3)),
        collation: text(&get(4)),
        nullable: text(&get(5)).is_some_and(|n| n == "YES"),
        has_default: number(&get(6)).is_some_and(|d| d == 1),
    }
}

/// The verdict on a table's columns; `unique_election` says whether a unique key is made of
/// `election` alone (one row per election: the exclusion rests on it).
pub(crate) fn check(columns: &[Column], unique_election: bool) -> Option<Mismatch> {
    let mut wrong = Vec::new();
    let find = |name: &str| columns.iter().find(|c| c.name == name);
    let name_column = |name: &str, wrong: &mut Vec<String>| match find(name) {
        None => wrong.push(format!("column `{name}` is missing")),
        Some(c) => {
            let text_type = matches!(c.data_type.as_str(), "varchar" | "char");
            let binary_type = matches!(c.data_type.as_str(), "varbinary" | "binary");
            if !text_type && !binary_type {
                wrong.push(format!("`{name}` is {}, not VARCHAR(128)", c.data_type));
            } else if c.max_length.unwrap_or(0) < 128 {
                wrong.push(format!(
                    "`{name}` holds {} characters, not 128",
                    c.max_length.unwrap_or(0)
                ));
            }
            // A case-insensitive collation makes `A` and `a` one election or one holder.
            if text_type && !c.collation.as_deref().is_some_and(|c| c.ends_with("_bin")) {
                wrong.push(format!(
                    "`{name}` has collation {}, not a binary (_bin) one: names are case-sensitive",
                    c.collation.as_deref().unwrap_or("none")
                ));
            }
        }
    };
    name_column("election", &mut wrong);
    name_column("holder", &mut wrong);
    for name in ["term", "version"] {
        match find(name) {
            None => wrong.push(format!("column `{name}` is missing")),
            Some(c) if c.data_type != "bigint" => {
                wrong.push(format!("`{name}` is {}, not BIGINT UNSIGNED", c.data_type))
            }
            Some(_) => {}
        }
    }
    match find("expires_at") {
        None => wrong.push("column `expires_at` is missing".into()),
        Some(c) if c.data_type != "datetime" => wrong.push(format!(
            "`expires_at` is {}, not DATETIME(6)",
            c.data_type.to_uppercase()
        )),
        Some(c) if c.datetime_precision != Some(6) => wrong.push(format!(
            "`expires_at` keeps {} fractional digits, not 6 (DATETIME(6)): every expiry would be cut short",
            c.datetime_precision.unwrap_or(0)
        )),
        Some(_) => {}
    }
    let nonce = find("nonce");
    if let Some(c) = nonce {
        if c.data_type != "bigint" {
            wrong.push(format!("`nonce` is {}, not BIGINT UNSIGNED", c.data_type));
        }
    }
    if !unique_election {
        wrong.push(
            "no primary or unique key on `election` alone: two rows could lead one election".into(),
        );
    }
    const OURS: [&str; 7] = [
        "election",
        "holder",
        "term",
        "expires_at",
        "version",
        "nonce",
        "",
    ];
    for c in columns {
        if !OURS.contains(&c.name.as_str()) && !c.nullable && !c.has_default {
            wrong.push(format!(
                "extra column `{}` is NOT NULL without a default: elect's inserts would fail",
                c.name
            ));
        }
    }
    if let Some(c) = find("value") {
        let bytes = matches!(
            c.data_type.as_str(),
            "varbinary" | "blob" | "mediumblob" | "longblob"
        );
        if !bytes {
            wrong.push(format!("`value` is {}, not VARBINARY(1024)", c.data_type));
        } else if c.max_length.unwrap_or(0) < elect_core::LeaderValue::MAX_LEN as u64 {
            wrong.push(format!(
                "`value` holds {} bytes, not {}",
                c.max_length.unwrap_or(0),
                elect_core::LeaderValue::MAX_LEN
            ));
        }
        if !c.nullable {
            wrong.push("`value` is NOT NULL: a leader without a value would not fit".into());
        }
    }
    match (wrong.is_empty(), nonce.is_none()) {
        (true, true) => Some(Mismatch::NoNonce),
        (true, false) => None,
        (false, _) => Some(Mismatch::Other(wrong)),
    }
}

/// The statements, with the (validated) table name filled in once.
pub(crate) struct Sql {
    pub(crate) lock: String,
    pub(crate) insert: String,
    pub(crate) take: String,
    /// Takes a released or expired lease in one statement, outside any transaction (see
    /// `MysqlStore::take_vacant`); the new term comes back as the statement's
    /// `LAST_INSERT_ID`.
    pub(crate) take_vacant: String,
    pub(crate) extend: String,
    pub(crate) renew: String,
    pub(crate) release: String,
    pub(crate) leader: String,
    pub(crate) versions: String,
    /// The table's name, for the batch statements (see `batching.rs`).
    pub(crate) table: String,
    /// Whether the table has the `value` column.
    pub(crate) value: bool,
}

/// The server's clock in microseconds since the epoch, from UTC and without time zone
/// conversions (`UNIX_TIMESTAMP(NOW(6))` converts through the session's zone, which can run
/// backwards across a daylight-saving change).
pub(crate) const CLOCK_US: &str =
    "TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', UTC_TIMESTAMP(6))";

/// The server's clock, in UTC.
pub(crate) const NOW: &str = "UTC_TIMESTAMP(6)";

impl Sql {
    /// The statements for `table`; `value` says whether it has the `value` column. Reads
    /// always return the value as their last column (NULL without the column); with it,
    /// `insert` and `take` take the value as their last parameter.
    pub(crate) fn new(table: &str, value: bool) -> Sql {
        let value_column = if value { "`value`" } else { "NULL" };
        let read = format!(
            "SELECT `holder`, `term`, TIMESTAMPDIFF(MICROSECOND, {NOW}, `expires_at`), `nonce`, \
             {value_column}, `version` FROM `{table}` WHERE `election` = ?"
        );
        let (set_value, insert_value, insert_param) = if value {
            (", `value` = ?", ", `value`", ", ?")
        } else {
            ("", "", "")
        };
        let expiry = format!("`expires_at` = {NOW} + INTERVAL ? MICROSECOND");
        let guard = format!(
            "WHERE `election` = ? AND `holder` = ? AND `nonce` = ? AND `term` = ? AND `expires_at` > {NOW}"
        );
        Sql {
            // With the clock floor for the next term, read under the same lock.
            lock: format!(
                "SELECT `holder`, `term`, TIMESTAMPDIFF(MICROSECOND, {NOW}, `expires_at`), `nonce`, \
                 {value_column}, {CLOCK_US} FROM `{table}` WHERE `election` = ? FOR UPDATE"
            ),
            // A new row starts from the server's clock in microseconds, not from 1: if the row
            // was deleted, terms still do not go back.
            insert: format!(
                "INSERT INTO `{table}` (`election`, `holder`, `nonce`, `term`, `expires_at`, `version`{insert_value}) \
                 VALUES (?, ?, ?, {CLOCK_US}, {NOW} + INTERVAL ? MICROSECOND, 1{insert_param})"
            ),
            take: format!(
                "UPDATE `{table}` SET `holder` = ?, `nonce` = ?, `term` = ?, {expiry}, \
                 `version` = `version` + 1{set_value} WHERE `election` = ?"
            ),
            // Only the row as seen (its version), only when no lease runs on it, and only when
            // the fields the transaction would refuse as corrupt are well-formed: the holder a
            // candidate id (`CandidateId`'s alphabet; the column holds at most 128), the term
            // one that has a successor. The holder, nonce and value are overwritten. The term
            // is the transaction's: above the stored one and above the server's clock in µs.
            // Both sides of GREATEST unsigned: with the clock signed, MariaDB compared them as
            // signed inside LAST_INSERT_ID, and a stored term above 2⁶³ (a foreign write) lost
            // to the clock — the term went back (tests/takeover.rs).
            take_vacant: format!(
                "UPDATE `{table}` SET `holder` = ?, `nonce` = ?, \
                 `term` = LAST_INSERT_ID(GREATEST(`term` + 1, CAST({CLOCK_US} AS UNSIGNED))), \
                 {expiry}, \
                 `version` = `version` + 1{set_value} \
                 WHERE `election` = ? AND `version` = ? AND `expires_at` <= {NOW} \
                 AND `term` >= 1 AND `term` < 18446744073709551615 \
                 AND `holder` REGEXP '^[A-Za-z0-9._:/-]+$'"
            ),
            extend: format!(
                "UPDATE `{table}` SET {expiry}, `version` = `version` + 1 WHERE `election` = ?"
            ),
            renew: format!(
                "UPDATE `{table}` SET {expiry}, `version` = `version` + 1 {guard}"
            ),
            release: format!(
                "UPDATE `{table}` SET `expires_at` = {NOW}, `version` = `version` + 1 {guard}"
            ),
            leader: read,
            versions: format!(
                "SELECT `election`, `version`, `expires_at` > {NOW}, `term`, \
                 GREATEST(TIMESTAMPDIFF(MICROSECOND, {NOW}, `expires_at`), 0) FROM `{table}` WHERE `election` IN "
            ),
            table: table.to_owned(),
            value,
        }
    }
}

impl Sql {
    /// `release` with `lease`'s guard written in, then the election's lock let go: one round
    /// trip of two statements for the connection that holds the lock (see
    /// `wake::release_on`), so the server frees the lock right after the release commits.
    /// Text protocol, so the values are written in: names are validated (`[A-Za-z0-9._:/-]`,
    /// nothing to escape) and the rest are integers; `None` were a name anything else.
    pub(crate) fn release_then_let_go(&self, lease: &Lease) -> Option<String> {
        let name = |s: &str| {
            s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._:/-".contains(&b))
                .then(|| format!("'{s}'"))
        };
        let values = [
            name(lease.election.as_str())?,
            name(lease.holder.as_str())?,
            lease.nonce.get().to_string(),
            lease.term.get().to_string(),
        ];
        let release = written_in(&self.release, &values)?;
        let lock = written_in(&release_lock_sql(&self.table), &values[..1])?;
        Some(format!("{release}; {lock}"))
    }
}

/// The expression naming an election's lock: server-wide names, so the database and table
/// are part of it; SHA2-224 keeps it within MySQL's 64 characters.
pub(crate) fn lock_name_sql(table: &str) -> String {
    format!("SHA2(CONCAT(DATABASE(), '.{table}/', ?), 224)")
}

/// The statement letting an election's lock go, `?` the election.
pub(crate) fn release_lock_sql(table: &str) -> String {
    format!("DO RELEASE_LOCK({})", lock_name_sql(table))
}

/// `statement` with its `?` placeholders replaced by `values`, in order; `None` unless it has
/// exactly that many.
fn written_in(statement: &str, values: &[String]) -> Option<String> {
    let parts: Vec<&str> = statement.split('?').collect();
    if parts.len() != values.len() + 1 {
        return None;
    }
    let mut out = parts[0].to_owned();
    for (value, part) in values.iter().zip(&parts[1..]) {
        out.push_str(value);
        out.push_str(part);
    }
    Some(out)
}

/// An integer column, whatever the protocol made of it.
pub(crate) fn int(v: &Value) -> Option<i128> {
    match v {
        Value::Int(i) => Some(*i as i128),
        Value::UInt(u) => Some(*u as i128),
        Value::Bytes(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The release written in for its text-protocol round trip: the guard's four values in
    /// place of the four `?`, then the lock's name for the same election.
    #[test]
    fn the_release_then_let_go_writes_in_the_lease() {
        use elect_core::{CandidateId, Claim, ElectionName, Ttl};
        let sql = Sql::new("elect_leases", true);
        let claim = Claim::new(
            ElectionName::new("jobs/eu-1").unwrap(),
            CandidateId::new("host-1:42").unwrap(),
            Ttl::from_millis(2_000).unwrap(),
        );
        let lease = claim.granted(elect_core::Term(7));
        let text = sql.release_then_let_go(&lease).unwrap();
        assert!(!text.contains('?'), "{text}");
        assert!(
            text.contains(&format!(
                "WHERE `election` = 'jobs/eu-1' AND `holder` = 'host-1:42' AND `nonce` = {} AND `term` = 7 AND",
                lease.nonce.get()
            )),
            "{text}"
        );
        assert!(
            text.ends_with(
                "; DO RELEASE_LOCK(SHA2(CONCAT(DATABASE(), '.elect_leases/', 'jobs/eu-1'), 224))"
            ),
            "{text}"
        );
        assert_eq!(written_in("a ? b ?", &["1".into()]), None);
    }

    /// The README's schema is the DDL the crate publishes (it had fallen behind once).
    #[test]
    fn the_readme_shows_the_published_ddl() {
        assert!(
            include_str!("../README.md").contains(CREATE_TABLE_SQL),
            "README.md's schema differs from CREATE_TABLE_SQL"
        );
    }

    #[test]
    fn table_names() {
        for ok in ["elect_leases", "a", "T_1", &"x".repeat(64)] {
            assert!(valid_table_name(ok), "{ok}");
        }
        for bad in [
            "",
            "1x",
            "a-b",
            "a`b",
            "a;DROP TABLE x",
            "a b",
            "ä",
            &"x".repeat(65),
        ] {
            assert!(!valid_table_name(bad), "{bad}");
        }
        assert!(create_table_sql("other").starts_with("CREATE TABLE IF NOT EXISTS `other` ("));
        assert!(add_nonce_sql("other").starts_with("ALTER TABLE `other` ADD COLUMN `nonce`"));
        assert!(add_value_sql("other").starts_with("ALTER TABLE `other` ADD COLUMN `value`"));
    }

    fn ours() -> Vec<Column> {
        let col = |name: &str, data_type: &str| Column {
            name: name.into(),
            data_type: data_type.into(),
            max_length: None,
            datetime_precision: None,
            collation: None,
            nullable: false,
            has_default: false,
        };
        let name = |n: &str| Column {
            max_length: Some(128),
            collation: Some("ascii_bin".into()),
            ..col(n, "varchar")
        };
        vec![
            name("election"),
            name("holder"),
            col("term", "bigint"),
            Column {
                datetime_precision: Some(6),
                ..col("expires_at", "datetime")
            },
            col("version", "bigint"),
            col("nonce", "bigint"),
        ]
    }

    #[test]
    fn only_elects_own_shape_passes() {
        assert_eq!(check(&ours(), true), None);
        let without_nonce: Vec<Column> = ours().into_iter().filter(|c| c.name != "nonce").collect();
        assert_eq!(check(&without_nonce, true), Some(Mismatch::NoNonce));
        let with = |change: &dyn Fn(&mut Column), name: &str| {
            let mut columns = ours();
            change(columns.iter_mut().find(|c| c.name == name).unwrap());
            check(&columns, true)
        };
        for (what, verdict) in [
            (
                "DATETIME",
                with(&|c| c.datetime_precision = Some(0), "expires_at"),
            ),
            (
                "DATETIME(3)",
                with(&|c| c.datetime_precision = Some(3), "expires_at"),
            ),
            ("DATE", with(&|c| c.data_type = "date".into(), "expires_at")),
            (
                "TIMESTAMP(6)",
                with(&|c| c.data_type = "timestamp".into(), "expires_at"),
            ),
            ("INT term", with(&|c| c.data_type = "int".into(), "term")),
            (
                "ci holder",
                with(
                    &|c| c.collation = Some("utf8mb4_general_ci".into()),
                    "holder",
                ),
            ),
            (
                "short election",
                with(&|c| c.max_length = Some(64), "election"),
            ),
            (
                "text nonce",
                with(&|c| c.data_type = "varchar".into(), "nonce"),
            ),
        ] {
            assert!(
                matches!(verdict, Some(Mismatch::Other(_))),
                "{what}: {verdict:?}"
            );
        }
        assert!(matches!(check(&ours(), false), Some(Mismatch::Other(_))));
        let mut extra = ours();
        extra.push(Column {
            name: "owner".into(),
            ..ours()[2].clone()
        });
        assert!(matches!(check(&extra, true), Some(Mismatch::Other(_))));
        extra.last_mut().unwrap().nullable = true;
        assert_eq!(check(&extra, true), None);
    }
}
