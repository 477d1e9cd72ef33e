//! The driver's failures, classified by PostgreSQL's SQLSTATE codes into
//! [`elect_core::Error`].

use elect_core::Error;
use tokio_postgres::error::SqlState;

/// How errors and logs name this coordinator.
pub(crate) const STORE: &str = "postgres";

/// What to tell the user about a missing table.
pub(crate) fn missing_table(table: &str) -> Error {
    Error::NotSetUp {
        store: STORE,
        message: format!(
            "table \"{table}\" does not exist (in the connection's search_path): run the DDL \
             from elect_postgres::create_table_sql(\"{table}\") (CREATE_TABLE_SQL for the \
             default name) in a migration, or call PostgresStore::migrate()"
        ),
    }
}

/// What to tell the user about a table that is not elect's.
pub(crate) fn wrong_table(table: &str, wrong: &[String]) -> Error {
    Error::NotSetUp {
        store: STORE,
        message: format!(
            "table \"{table}\" does not have elect's shape: {}. Create it from \
             elect_postgres::create_table_sql(\"{table}\") (CREATE_TABLE_SQL for the default \
             name), or point PostgresConfig::table at a table made that way",
            wrong.join("; ")
        ),
    }
}

/// A tokio-postgres error shown whole: its own `Display` is only its kind ("db error"), with
/// the server's message, SQLSTATE, detail and hint (or the I/O cause) left to its source.
#[derive(Debug)]
pub(crate) struct PgError(pub(crate) tokio_postgres::Error);

impl std::fmt::Display for PgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(db) = self.0.as_db_error() {
            write!(
                f,
                "{}: {} (SQLSTATE {})",
                db.severity(),
                db.message(),
                db.code().code()
            )?;
            if let Some(detail) = db.detail() {
                write!(f, "; {detail}")?;
            }
            if let Some(hint) = db.hint() {
                write!(f, "; hint: {hint}")?;
            }
            return Ok(());
        }
        write!(f, "{}", self.0)?;
        let mut cause = std::error::Error::source(&self.0);
        while let Some(e) = cause {
            write!(f, ": {e}")?;
            cause = e.source();
        }
        Ok(())
    }
}

impl std::error::Error for PgError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// Maps a tokio-postgres error by what it means for the caller, by its SQLSTATE.
pub(crate) fn map_err(operation: &'static str, table: &str, e: tokio_postgres::Error) -> Error {
    if let Some(refused) = elect_core::backend::tls_refusal(STORE, &format!("{e:?}")) {
        return refused;
    }
    let Some(code) = e.code() else {
        // No SQLSTATE: the connection (refused, closed, reset, an I/O error, a protocol
        // error): the next request may well succeed on a new one.
        return Error::unavailable(STORE, operation, PgError(e));
    };
    let message = e
        .as_db_error()
        .map_or_else(|| e.to_string(), |db| db.message().to_owned());
    match code {
        c if *c == SqlState::UNDEFINED_TABLE => missing_table(table),
        c if *c == SqlState::UNDEFINED_COLUMN || *c == SqlState::INVALID_COLUMN_REFERENCE => {
            Error::NotSetUp {
                store: STORE,
                message: format!(
                    "table \"{table}\" does not have elect's columns or key ({message}): compare \
                     it with create_table_sql(\"{table}\")"
                ),
            }
        }
        c if *c == SqlState::INVALID_PASSWORD
            || *c == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
            || *c == SqlState::INSUFFICIENT_PRIVILEGE =>
        {
            Error::NotSetUp {
                store: STORE,
                message: format!("access denied: {message}"),
            }
        }
        c if *c == SqlState::INVALID_CATALOG_NAME => Error::NotSetUp {
            store: STORE,
            message: format!("no such database: {message}"),
        },
        // Shutting down, starting up, too many connections, a serialization failure or
        // deadlock, a lock or statement timeout, a read-only server (a standby, or a
        // failover in progress), and the connection exceptions (class 08).
        c if *c == SqlState::ADMIN_SHUTDOWN
            || *c == SqlState::CRASH_SHUTDOWN
            || *c == SqlState::CANNOT_CONNECT_NOW
            || *c == SqlState::TOO_MANY_CONNECTIONS
            || *c == SqlState::T_R_SERIALIZATION_FAILURE
            || *c == SqlState::T_R_DEADLOCK_DETECTED
            || *c == SqlState::LOCK_NOT_AVAILABLE
            || *c == SqlState::QUERY_CANCELED
            || *c == SqlState::READ_ONLY_SQL_TRANSACTION
            || *c == SqlState::IDLE_SESSION_TIMEOUT
            || c.code().starts_with("08") =>
        {
            Error::unavailable(STORE, operation, PgError(e))
        }
        _ => Error::other(STORE, PgError(e)),
    }
}

/// Whether `e` is a number out of range (SQLSTATE 22003): a term counter at its limit.
pub(crate) fn out_of_range(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&SqlState::NUMERIC_VALUE_OUT_OF_RANGE)
}
