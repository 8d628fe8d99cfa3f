//! The heart of streamflight: one upstream stream for every identical in-flight request.
//!
//! [`Machine`] is the control plane, a deterministic sans-IO state machine
//! (inputs in, [`Action`]s out) that decides who leads a flight, who joins
//! it, who ends how and which flight to abort. It is `no_std` (with `alloc`)
//! and runtime-free. The `std` feature (on in the adapters) adds
//! `std::error::Error` impls, the shared [`history`] (the data plane that
//! carries a flight's items to its subscribers) and the [`driver`], which
//! carries the machine's actions out with real tasks on any [`driver::Runtime`].
//! A flight's [`End`] goes unchanged from its task through its history to
//! every subscriber's end [`Event`]. The rules it implements are numbered
//! [R1](crate::design#r1)-[R18](crate::design#r18) in the project's design and cited where they apply.
//!
//! The adapters (`streamflight-tokio`, `streamflight-smol`, `streamflight-async-std`) name the
//! driver's manager with their runtime and re-export the shared types below.
#![cfg_attr(not(feature = "std"), no_std)]
#![deny(unsafe_code)]

extern crate alloc;

mod config;
/// The design: vocabulary, architecture, the rules ([R1](crate::design#r1)-[R26](crate::design#r26), G1-G9) with the
/// checks that hold each, and the peer failures ruled out. The repository's
/// `DESIGN.md`, included here so that the docs can link every rule they cite.
#[doc = include_str!("../../../DESIGN.md")]
pub mod design {}
#[cfg(feature = "std")]
pub mod driver;
mod event;
pub mod fleet;
#[cfg(feature = "std")]
pub mod history;
mod id;
#[cfg(feature = "json")]
pub mod json;
mod machine;
mod observe;
#[cfg(feature = "tracing")]
pub mod spans;
#[cfg(feature = "sse")]
pub mod sse;
#[cfg(feature = "std")]
mod sync;
#[cfg(feature = "testkit")]
#[doc(hidden)]
pub mod testkit;
mod weigh;

pub use config::{Config, LateJoin, Orphan, Overflow};
pub use event::{End, Event, Failure};
pub use id::ParseIdError;
pub use machine::{
    Action, Admission, CancelError, FlightError, FlightId, Machine, Position, RequestId, ResumeError, Role,
    Stats,
};
pub use observe::{FlightSummary, Observer, Outcome, RequestEvent};
pub use weigh::Weigher;
