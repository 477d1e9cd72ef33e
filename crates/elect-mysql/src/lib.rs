#![doc = include_str!("../README.md")]
#![deny(missing_docs)]
#![warn(missing_debug_implementations, unreachable_pub)]
#![forbid(unsafe_code)]

mod config;
mod poll;
mod schema;
mod store;

pub use config::MysqlConfig;
pub use schema::{add_nonce_sql, create_table_sql, ADD_NONCE_SQL, CREATE_TABLE_SQL, DEFAULT_TABLE};
pub use store::MysqlStore;

/// Everything from `elect-core`, so that `elect-mysql` alone is enough in `Cargo.toml`.
pub use elect_core::*;
/// The MySQL driver elect-mysql is built on.
pub use mysql_async;
