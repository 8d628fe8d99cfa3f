//! The heart of streamflight: one upstream stream for every identical in-flight request.
//!
//! This crate is pure and runtime-free. [`Machine`] is the control plane, a
//! deterministic sans-IO state machine (inputs in, [`Action`]s out) that
//! decides who leads a flight, who joins it, who ends how and which flight to
//! abort. It is `no_std` (with `alloc`); the `std` feature (on in the
//! adapters) adds `std::error::Error` impls and the shared [`history`], the
//! data plane that carries a flight's items to its subscribers. The rules it implements are numbered R1-R16 in
//! the project's design and cited where they apply.
//!
//! The adapters (`streamflight-tokio`, `streamflight-async-std`) carry the
//! actions out with real tasks and re-export the shared types below.
#![cfg_attr(not(feature = "std"), no_std)]

extern crate alloc;

mod config;
mod event;
#[cfg(all(feature = "std", not(all(test, loom))))]
pub mod flights;
#[cfg(feature = "std")]
pub mod history;
mod id;
mod machine;
#[cfg(feature = "std")]
mod sync;
#[cfg(feature = "testkit")]
#[doc(hidden)]
pub mod testkit;

pub use config::{Config, LateJoin, Orphan};
pub use event::{Event, Failure};
pub use machine::{
    Action, Admission, CancelError, FlightError, FlightId, Machine, Outcome, Position, RequestId, Role, Stats,
};
