#![doc = include_str!("../README.md")]
//!
//! # Layout
//!
//! - `name`, `term`, `lease`: validated names, the fencing token, claims, leases and the answers
//!   of a store.
//! - `store`: [`LeaseStore`], the trait a coordinator implements, and its [`ChangeFeed`].
//! - `error`: the one [`Error`].
//! - `elector`: [`Elector`], its builder, guard, events, error policy and the campaign loop.
//! - `observer`: [`Observer`], who leads without campaigning.
//! - `memory`: [`MemoryStore`], in-process, for tests and demos.
//! - [`batch`]: many elections in few requests — [`BatchStore`](batch::BatchStore) and
//!   [`Batched`](batch::Batched).
//! - [`backend`]: for coordinator authors — feed registry, timed requests, record parsers.
//! - [`driver`]: for campaigns other than the lease loop (elect-raft) — a driven handle,
//!   guards, commands.
//! - [`rand`]: a small seedable generator.
//! - `conformance` (feature `conformance`): the suite every store passes, the faulty store,
//!   the recorder.
#![deny(missing_docs)]
#![warn(missing_debug_implementations, unreachable_pub)]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

pub mod backend;
pub mod batch;
pub mod driver;
mod elector;
mod error;
mod lease;
mod memory;
pub mod metrics;
mod name;
mod observer;
pub mod rand;
mod redact;
pub mod shards;
mod store;
mod term;
mod tls;

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;

pub use elector::{
    AfterWork, Callbacks, Elector, ElectorBuilder, ErrorPolicy, Event, Health, LeaderGuard,
    Leadership, OnError, RunError, RunPolicy, StepDown, DEFAULT_CALLBACK_TIMEOUT,
    DEFAULT_CLOCK_DRIFT, DEFAULT_SAFETY_MARGIN, DEFAULT_TTL,
};
pub use error::{Error, Result, Source};
pub use lease::{Acquire, Claim, LeaderInfo, LeaderValue, Lease, Nonce, Release, Renewal, Ttl};
pub use memory::MemoryStore;
pub use name::{CandidateId, ElectionName, MAX_NAME_LEN};
pub use observer::Observer;
pub use redact::redact_url;
pub use store::{ChangeFeed, ChangeNotifier, LeaseStore};
pub use term::Term;
pub use tls::TlsFiles;

/// Re-exported so that backends and users name one version of it.
pub use async_trait::async_trait;
/// The token behind [`LeaderGuard::lost`].
pub use tokio_util::sync::CancellationToken;
