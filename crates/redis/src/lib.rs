//! streamflight across a fleet of replicas, through Redis: one upstream request per key for
//! every replica that shares the store (rules R19-R24 of the design).
//!
//! **Work in progress (issue 14).** What is here: the leader's per-flight [`Lease`] (R20),
//! with its fencing token; the flight's items [`append`]ed to a Redis Stream in batches
//! fenced by that token, its end written as the last entry ([`finish`], then the stream
//! expires); and [`read`], a replica reader's step (`XREAD BLOCK` from the last id). What
//! comes: the reader feeding a local flight, interest records (R22), leader loss (R21),
//! serving on when the store is down (R23), and the gateway's `--redis`.
//!
//! # Design
//!
//! - **A lease per flight, held by its leader replica** (R20): `SET key token NX PX ttl`
//!   with a random token, renewed at a third of its timeout, released by
//!   compare-and-delete. Every write of the leader is fenced by the token in the same
//!   script that writes, so a replica that lost its lease (paused, cut off) can never
//!   interleave its items with a new leader's.
//! - **Keys carry a hash of the flight key, never the key** (R24), and every entry expires.
//!
//! # Why redis-rs
//!
//! The `redis` crate is the Redis project's own Rust client (the `redis-rs` organisation),
//! released often and widely used. It gives what a fleet needs and nothing hand-written: a
//! tokio connection manager that reconnects by itself (R23), scripts sent by SHA with a
//! fallback to their text (one round trip per fenced batch), Streams commands, and
//! `rediss://` over rustls (no OpenSSL), the TLS stack the gateway already uses.
#![forbid(unsafe_code)]

mod codec;
mod lease;
mod stream;

pub use codec::{Codec, Lost};
pub use lease::{Lease, StoreError};
pub use stream::{Appended, Entry, append, finish, read};
