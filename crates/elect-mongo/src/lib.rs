#![doc = include_str!("../README.md")]
#![deny(missing_docs)]
#![warn(missing_debug_implementations, unreachable_pub)]
#![forbid(unsafe_code)]

mod config;
mod feed;
mod store;

pub use config::MongoConfig;
pub use store::MongoStore;

/// Everything from `elect-core`, so that `elect-mongo` alone is enough in `Cargo.toml`.
pub use elect_core::*;
/// The MongoDB driver elect-mongo is built on.
pub use mongodb;
