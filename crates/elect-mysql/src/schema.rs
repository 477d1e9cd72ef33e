//! The table, published so it can go into your migrations.

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
pub const CREATE_TABLE_SQL: &str = "CREATE TABLE IF NOT EXISTS `elect_leases` (
  `election` VARCHAR(128) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  `holder` VARCHAR(128) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  `term` BIGINT UNSIGNED NOT NULL,
  `expires_at` DATETIME(6) NOT NULL,
  `version` BIGINT UNSIGNED NOT NULL DEFAULT 0,
  PRIMARY KEY (`election`)
) ENGINE=InnoDB";

/// [`CREATE_TABLE_SQL`] for a table named `table` (validated by
/// [`MysqlConfig`](crate::MysqlConfig); pass only validated names).
pub fn create_table_sql(table: &str) -> String {
    CREATE_TABLE_SQL.replacen(DEFAULT_TABLE, table, 1)
}

/// Whether `name` is a safe table name: 1–64 bytes of `[A-Za-z0-9_]`, not starting with a
/// digit. Nothing else ever reaches the SQL text.
pub(crate) fn valid_table_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.as_bytes()[0].is_ascii_digit()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
