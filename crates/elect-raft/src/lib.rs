#![doc = include_str!("../README.md")]
#![deny(missing_docs)]
#![warn(missing_debug_implementations, unreachable_pub)]
#![forbid(unsafe_code)]

pub mod engine;
mod runtime;
mod state;
pub mod tcp;
pub mod transport;
pub mod wire;

#[cfg(test)]
mod sim;

pub use runtime::{start, start_tcp, RaftConfig};
pub use state::StateFile;
pub use tcp::TcpTransport;
pub use transport::{Inbox, LocalNetwork, Transport};
pub use wire::ClusterKey;

/// Everything from `elect-core`, so that `elect-raft` alone is enough in `Cargo.toml`.
pub use elect_core::*;
