//! The driver's failures, classified by MySQL's error codes into [`elect_core::Error`].

use elect_core::Error;

use crate::schema::{add_nonce_sql, Mismatch};

/// How errors and logs name this coordinator.
pub(crate) const STORE: &str = "mysql";

/// A request that mysql_async could not carry out, with what it was for. Classified by the
/// server's error code when converted into [`elect_core::Error`].
#[derive(Debug, thiserror::Error)]
#[error("{operation}: {source}")]
pub(crate) struct MysqlError {
    pub(crate) operation: &'static str,
    /// The lease table, for messages about it.
    pub(crate) table: String,
    #[source]
    pub(crate) source: mysql_async::Error,
}

impl From<MysqlError> for Error {
    fn from(e: MysqlError) -> Error {
        map_err(e.operation, &e.table, e.source)
    }
}

/// Whether `e` is the server's deadlock error (1213), found by its code.
pub(crate) fn is_deadlock(e: &Error) -> bool {
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<mysql_async::Error>())
        .is_some_and(|e| matches!(e, mysql_async::Error::Server(s) if s.code == 1213))
}

/// What to tell the user about a table that is missing or not elect's.
pub(crate) fn not_set_up(table: &str, mismatch: Mismatch) -> Error {
    let message = match mismatch {
        Mismatch::Missing => missing_table(table),
        Mismatch::NoNonce => format!(
            "table `{table}` has no `nonce` column (added in elect-mysql 0.2.0): call \
             MysqlStore::migrate(), or run `{}`",
            add_nonce_sql(table)
        ),
        Mismatch::Other(wrong) => format!(
            "table `{table}` does not have elect's shape: {}. Create it from \
             elect_mysql::create_table_sql(\"{table}\") (CREATE_TABLE_SQL for the default name), \
             or point MysqlConfig::table at a table made that way",
            wrong.join("; ")
        ),
    };
    Error::NotSetUp {
        store: STORE,
        message,
    }
}

fn missing_table(table: &str) -> String {
    format!(
        "table `{table}` does not exist: run the DDL from elect_mysql::create_table_sql(\"{table}\") \
         (CREATE_TABLE_SQL for the default name) in a migration, or call MysqlStore::migrate()"
    )
}

/// Maps a mysql_async error by what it means for the caller, by its code.
fn map_err(operation: &'static str, table: &str, e: mysql_async::Error) -> Error {
    use mysql_async::Error as E;
    if let E::Io(io) = &e {
        if let Some(refused) = elect_core::backend::tls_refusal(STORE, &format!("{io:?}")) {
            return refused;
        }
    }
    match &e {
        E::Server(s) if s.code == 1146 => Error::NotSetUp {
            store: STORE,
            message: missing_table(table),
        },
        E::Server(s) if s.code == 1054 => Error::NotSetUp {
            store: STORE,
            message: format!(
                "table `{table}` does not have elect's columns ({}): compare it with create_table_sql(\"{table}\")",
                s.message
            ),
        },
        E::Server(s) if matches!(s.code, 1044 | 1045 | 1142 | 1143 | 1227 | 1370) => {
            Error::NotSetUp {
                store: STORE,
                message: format!("access denied: {}", s.message),
            }
        }
        // Lock wait timeout, deadlock, too many connections, shutdown in progress, query
        // interrupted, server gone away / lost, read-only (failover in progress).
        E::Server(s)
            if matches!(
                s.code,
                1205 | 1213 | 1040 | 1053 | 1317 | 2006 | 2013 | 1290 | 1792 | 1836 | 3024
            ) =>
        {
            Error::unavailable(STORE, operation, e)
        }
        E::Server(_) | E::Other(_) => Error::other(STORE, e),
        E::Io(_) | E::Driver(_) => Error::unavailable(STORE, operation, e),
        E::Url(_) => Error::InvalidConfig {
            message: format!("mysql: {e}"),
        },
    }
}
