#![doc = include_str!("../README.md")]
//!
//! # Layout
//!
//! - `config`: [`MongoConfig`], its validation (and the database from the URL), its redacted
//!   `Debug`.
//! - `error`: the driver's failures, classified by server codes and driver error kinds.
//! - `client`: the driver's client and the leases collection; the one timed request helper.
//! - `store`: [`MongoStore`], the `LeaseStore`, with its update pipelines.
//! - `clock`: the server's clock as estimated from grants and reads, for a losing acquire's
//!   remaining time without a second round trip.
//! - `batching`: [`BatchStore`](elect_core::batch::BatchStore): renewals in one update,
//!   claims of held elections answered by one read.
//! - `feed`: release notices from one change stream per store.
#![deny(missing_docs)]
#![warn(missing_debug_implementations, unreachable_pub)]
#![forbid(unsafe_code)]

mod batching;
mod client;
mod clock;
mod config;
mod error;
mod feed;
mod record;
mod store;

pub use config::MongoConfig;
pub use store::MongoStore;

/// Everything from `elect-core`, so that `elect-mongo` alone is enough in `Cargo.toml`.
pub use elect_core::*;
/// The MongoDB driver elect-mongo is built on.
pub use mongodb;
