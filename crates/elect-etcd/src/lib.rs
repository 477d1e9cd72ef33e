#![doc = include_str!("../README.md")]
//!
//! # Layout
//!
//! - `config`: [`EtcdConfig`], the `etcd://` URL, validation and the redacted `Debug`.
//! - `error`: the driver's failures, classified by gRPC status.
//! - `record`: the value stored at an election's key.
//! - `store`: [`EtcdStore`], the `LeaseStore`.
//! - `feed`: hand-over notices by watch.
//! - `batching`: the `BatchStore` (many elections in a few requests; batch grants share an
//!   etcd lease).
//! - `tls`: rustls (ring) settings, with the `tls` feature.
#![deny(missing_docs)]
#![warn(missing_debug_implementations, unreachable_pub)]
#![forbid(unsafe_code)]

mod batching;
mod config;
mod error;
mod feed;
mod record;
mod store;
mod tls;
mod vacancy;

pub use config::{EtcdConfig, DEFAULT_PREFIX};
pub use store::EtcdStore;

/// Everything from `elect-core`, so that `elect-etcd` alone is enough in `Cargo.toml`.
pub use elect_core::*;
/// The etcd client elect-etcd is built on (for [`EtcdStore::from_client`]).
pub use etcd_client;
