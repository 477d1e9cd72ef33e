#![doc = include_str!("../README.md")]
//!
//! # Layout
//!
//! - `config`: [`PostgresConfig`], [`Listen`], validation and the redacted `Debug`.
//! - `error`: tokio-postgres' failures, classified by SQLSTATE.
//! - `client`: the pool (or the application's client) and the one timed request helper.
//! - `tls`: the rustls (ring) connector, with the `tls` feature.
//! - `schema`: the published DDL, the check of an existing table, the statements.
//! - `store`: [`PostgresStore`], the `LeaseStore`.
//! - `feed`: hand-over notices by `LISTEN`/`NOTIFY`.
//! - `batching`: `BatchStore`, many elections in one statement.
#![deny(missing_docs)]
#![warn(missing_debug_implementations, unreachable_pub)]
#![forbid(unsafe_code)]

mod batching;
mod client;
mod config;
mod error;
mod feed;
mod schema;
mod store;
mod tls;

pub use config::{Listen, PostgresConfig};
pub use schema::{create_table_sql, CREATE_TABLE_SQL, DEFAULT_TABLE};
pub use store::PostgresStore;

/// The pool elect-postgres is built on (for [`PostgresStore::from_pool`]).
pub use deadpool_postgres;
/// Everything from `elect-core`, so that `elect-postgres` alone is enough in `Cargo.toml`.
pub use elect_core::*;
/// The PostgreSQL driver elect-postgres is built on.
pub use tokio_postgres;
