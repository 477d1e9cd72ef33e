#![doc = include_str!("../README.md")]
//!
//! # Layout
//!
//! - `config`: [`MysqlConfig`], its validation and its redacted `Debug`.
//! - `error`: mysql_async's failures, classified by the server's error codes.
//! - `client`: the connection pool and the one timed request helper.
//! - `schema`: the published DDL, the check of an existing table, the statements.
//! - `store`: [`MysqlStore`], the `LeaseStore`.
//! - `batching`: [`BatchStore`](elect_core::batch::BatchStore), many elections in a few
//!   statements.
//! - `feed`: release notices by polling the versions of watched elections.
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
mod wake;

pub use config::MysqlConfig;
pub use schema::{
    add_nonce_sql, add_value_sql, create_table_sql, ADD_NONCE_SQL, ADD_VALUE_SQL, CREATE_TABLE_SQL,
    DEFAULT_TABLE,
};
pub use store::MysqlStore;

/// Everything from `elect-core`, so that `elect-mysql` alone is enough in `Cargo.toml`.
pub use elect_core::*;
/// The MySQL driver elect-mysql is built on.
pub use mysql_async;
