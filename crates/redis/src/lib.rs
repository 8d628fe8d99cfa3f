//! streamflight across a fleet of replicas, through Redis: one upstream request per key for
//! every replica that shares the store ([R19](streamflight_core::design#r19)-[R24](streamflight_core::design#r24)).
//!
//! Each replica keeps its own local manager ([`streamflight_tokio::Flights`]): within a
//! replica, requests join, replay, cancel and resume as they always do, and fan-out is the
//! local history's. What the fleet adds is where a new local flight's items come from:
//! [`Fleet::open`] wraps its preparation, and [`Flights`] does it for you.
//!
//! ```no_run
//! # #[tokio::main] async fn main() {
//! use futures::StreamExt;
//! use streamflight_redis::{Fleet, FleetConfig, Flights, Text};
//! use streamflight_tokio::Config;
//!
//! // Every replica: the same store and codec, its own replica id.
//! let fleet = Fleet::new("redis://127.0.0.1:6379/", Text, FleetConfig::default().replica("a")).unwrap();
//! let flights = Flights::new(fleet, Config::default());
//! // On any replica, at once: one of them runs the upstream, the others read its stream.
//! let answer = async { Ok::<_, String>(futures::stream::iter([Ok("to".to_owned()), Ok("ken".to_owned())])) };
//! let events: Vec<_> = flights.request("the prompt".to_owned(), answer).collect().await;
//! # }
//! ```
//!
//! # Design
//!
//! - **A lease per flight key, held by the leading replica** ([R20](streamflight_core::design#r20),
//!   [`Lease`]): `SET NX PX` with a random 128-bit token, renewed every third of its timeout,
//!   released by compare-and-delete. The token names the flight's stream, so a new flight of
//!   the key (after its leader was lost) never shares a stream with the old one.
//! - **The leader appends the upstream's items to a Redis Stream in batches**: whatever the
//!   upstream has ready while the previous append is on its way goes in the next one, one
//!   script call (one round trip) per batch, fenced by the token in the same script. Its own
//!   replica's requests get each item at once, not after the store. Item `n` is entry `n-0`:
//!   a retried batch is never written twice, a reader resumes after the items it has, and a
//!   gap (trimmed by `MAXLEN`) is seen rather than skipped. The end is the last entry.
//! - **Every other replica with requests on the flight runs one reader** (`XREAD BLOCK` on a
//!   connection of its own, from 0, then from the last entry) that feeds its local flight.
//! - **Interest** ([R22](streamflight_core::design#r22)): each reading replica keeps an expiring member in the flight's
//!   interest set (scored by the store's clock, so replicas' clocks do not matter), joined in
//!   the same script that reads the lease, so that a leader never gives up a flight someone
//!   just joined. The leader gives up (aborts the upstream) only when its own requests are
//!   gone and the set is empty, checked again on every renewal.
//! - **Leader loss** ([R21](streamflight_core::design#r21)): a reader that waited a quarter lease for nothing checks the lease;
//!   since the leader writes its end before it lets the lease go, a lease that is gone with
//!   no end in the stream is a lost leader: the subscribers get [`Lost::Leader`] through the
//!   codec, within two lease timeouts. A reader that had passed nothing on yet starts over
//!   instead (it may lead the next flight itself). A leader whose renewal or append is
//!   refused stops writing at once and serves its own requests alone.
//! - **Store down** ([R23](streamflight_core::design#r23)): a store error is counted and logged, and for [`FleetConfig::pause`]
//!   the replica serves new flights alone (local coalescing only, no request waits on the
//!   store); then it tries again. Connections are lazy: a replica starts with the store down.
//! - **Nothing in clear** ([R24](streamflight_core::design#r24)): every key is `<prefix>{<SHA-256 of the key>}:...` (the braces
//!   keep a flight's keys in one Redis Cluster slot, which its scripts need); the lease, the
//!   stream (while live: a few lease timeouts past the last write; after its end:
//!   [`FleetConfig::keep`]), the interest set and notes all expire.
//! - **Resume on another replica**: [`Fleet::place`] names the flight a replica is on,
//!   [`Fleet::save`]/[`Fleet::load`] pass it along, and [`Fleet::replay`] reads it from any
//!   item on, with this replica's interest.
//! - **Messages between replicas**: [`Fleet::publish`] and [`Fleet::listen`] (`PUBLISH` and
//!   `SUBSCRIBE`), for what one replica asks of the others (the gateway passes a `DELETE` for
//!   a request another replica serves).
//! - **Notes that change hands**: [`Fleet::claim`] (`SET NX PX`) and [`Fleet::swap`] (a
//!   compare-and-set script) let one replica at a time hold a name (the gateway: who reads a
//!   request now); [`Fleet::ask`] publishes a question and waits for its
//!   [`Fleet::reply`] with a blocking pop on a reader connection, never a poll.
//! - **Stopping** (R26, graceful in a fleet): [`Fleet::leading`] counts the flights this replica leads now, which
//!   a replica told to stop waits for so that the others' followers get them whole.
//!
//! # Why redis-rs
//!
//! The `redis` crate is the Redis project's Rust client (the `redis-rs` organisation),
//! released often and widely used. It gives what a fleet needs and nothing hand-written: a
//! tokio connection manager that reconnects by itself (R23), scripts sent by SHA with a
//! fallback to their text (one round trip per fenced batch), Streams commands, and
//! `rediss://` over rustls (no OpenSSL), the TLS stack the gateway already uses. `fred` is as
//! capable but larger, with its own reconnection and pooling policy to learn; redis-rs's
//! multiplexed connection plus a connection per blocking reader was all this needed.
#![forbid(unsafe_code)]

mod codec;
mod ending;
mod fleet;
mod flights;
mod follow;
mod interest;
mod lead;
mod leading;
mod lease;
mod names;
mod note;
mod place;
mod signal;
mod stream;

pub use codec::{Codec, Lost, Text};
pub use fleet::{Fleet, FleetConfig, FleetStats, Upstream};
pub use flights::Flights;
pub use lease::{Lease, StoreError};
pub use place::{ParsePlaceError, Place};
/// The Redis client this crate is built on, for [`Fleet::with_client`].
pub use redis;
pub use signal::Messages;
pub use stream::{Appended, Bounds, Entry, append, finish, read};
