#![doc = include_str!("../README.md")]
//!
//! # Layout
//!
//! - `config`: [`RedisConfig`], its validation and its redacted `Debug`.
//! - `error`: fred's failures, classified by kind and Redis error code.
//! - `client`: the connection pool; connecting, and running a script under a timeout.
//! - `scripts`: the Lua scripts that make each operation atomic.
//! - `store`: [`RedisStore`], the `LeaseStore`.
//! - `batching`: [`BatchStore`](elect_core::batch::BatchStore) — a batch of acquisitions or
//!   renewals in one script call.
//! - `feed`: release notices over pub/sub, each subscription confirmed end to end.
#![deny(missing_docs)]
#![warn(missing_debug_implementations, unreachable_pub)]
#![forbid(unsafe_code)]

mod batching;
mod client;
mod config;
mod error;
mod feed;
mod scripts;
mod store;

pub use config::RedisConfig;

/// The holder a follower is told of while [`RedisConfig::restart_quarantine`] keeps a vacant
/// election closed after a server restart (with term 0: no lease exists).
pub const QUARANTINE_HOLDER: &str = "elect:restart-quarantine";
pub use store::RedisStore;

/// Everything from `elect-core`, so that `elect-redis` alone is enough in `Cargo.toml`.
pub use elect_core::*;
/// The Redis driver elect-redis is built on.
pub use fred;
