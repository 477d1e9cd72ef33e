#![doc = include_str!("../README.md")]
#![deny(missing_docs)]
#![warn(missing_debug_implementations, unreachable_pub)]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

mod elector;
mod error;
mod lease;
mod memory;
mod name;
mod observer;
pub mod rand;
mod redact;
mod store;
mod term;

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
#[cfg(any(test, feature = "conformance"))]
mod faults;

pub use elector::{
    Elector, ElectorBuilder, ElectorCommand, ElectorDriver, ErrorPolicy, Event, GuardControl,
    LeaderGuard, Leadership, OnError, Reply, StepDown, DEFAULT_CLOCK_DRIFT, DEFAULT_SAFETY_MARGIN,
    DEFAULT_TTL,
};
pub use error::{Error, Result, Source};
pub use lease::{Acquire, Claim, LeaderInfo, Lease, Nonce, Release, Renewal, Ttl};
pub use memory::MemoryStore;
pub use name::{CandidateId, ElectionName, MAX_NAME_LEN};
pub use observer::Observer;
pub use redact::redact_url;
pub use store::{ChangeFeed, ChangeNotifier, LeaseStore};
pub use term::Term;

/// Re-exported so that backends and users name one version of it.
pub use async_trait::async_trait;
/// The token behind [`LeaderGuard::lost`].
pub use tokio_util::sync::CancellationToken;
