//! streamflight across a fleet of replicas, through Redis: one upstream request per key for
//! every replica that shares the store (rules R19-R24 of the design).
//!
//! **Work in progress (issue 14).**
#![forbid(unsafe_code)]

mod codec;
mod ending;
mod fleet;
mod flights;
mod follow;
mod interest;
mod lead;
mod lease;
mod names;
mod place;
mod stream;

pub use codec::{Codec, Lost};
pub use fleet::{Fleet, FleetConfig, FleetStats, Upstream};
pub use flights::Flights;
pub use lease::{Lease, StoreError};
pub use place::{ParsePlaceError, Place};
/// The Redis client this crate is built on, for [`Fleet::with_client`].
pub use redis;
pub use stream::{Appended, Bounds, Entry, append, finish, read};
