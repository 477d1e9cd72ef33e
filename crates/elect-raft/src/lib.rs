#![doc = include_str!("../README.md")]
//!
//! # Layout
//!
//! - [`engine`]: the pure election engine; `receive` dispatches to one handler per message kind
//!   (`engine/votes.rs`, `engine/leader.rs`, `engine/follower.rs`).
//! - `config`: [`RaftConfig`] and its validation.
//! - `runtime`: [`start`], the tokio task that drives the engine behind an [`Elector`].
//! - `state`: [`StateFile`], the persisted term and vote.
//! - [`transport`]: the [`Transport`] trait and the in-process [`LocalNetwork`].
//! - [`tcp`]: [`TcpTransport`] and [`start_tcp`].
//! - [`wire`]: versioned, HMAC-authenticated frames.
#![deny(missing_docs)]
#![warn(missing_debug_implementations, unreachable_pub)]
#![forbid(unsafe_code)]

mod config;
pub mod engine;
mod runtime;
mod state;
pub mod tcp;
pub mod transport;
pub mod wire;

#[cfg(test)]
mod sim;

pub use config::RaftConfig;
pub use runtime::start;
pub use state::StateFile;
pub use tcp::start_tcp;
pub use tcp::TcpTransport;
pub use transport::{Inbox, LocalNetwork, Transport};
pub use wire::ClusterKey;

/// Everything from `elect-core`, so that `elect-raft` alone is enough in `Cargo.toml`.
pub use elect_core::*;
