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
//! // Every replica: the same store, codec and secret, its own replica id.
//! let config = FleetConfig::default().replica("a").secret("the fleet's secret");
//! let fleet = Fleet::new("redis://127.0.0.1:6379/", Text, config).unwrap();
//! let flights = Flights::new(fleet, Config::default());
//! // On any replica, at once: one of them runs the upstream, the others read its stream.
//! let answer = async { Ok::<_, String>(futures::stream::iter([Ok("to".to_owned()), Ok("ken".to_owned())])) };
//! let events: Vec<_> = flights.request("the prompt".to_owned(), answer).collect().await;
//! # }
//! ```
//!
//! # Design
//!
//! - **Machines decide, this crate carries out** (R25): what
//!   a replica does for a flight in the fleet is the core's sans-IO machines'
//!   ([`streamflight_core::fleet`]): [`Open`](streamflight_core::fleet::open::Open) (lead,
//!   follow or serve alone), [`Leader`](streamflight_core::fleet::leader::Leader) (append,
//!   renew, finish, give up, write again) and
//!   [`Follower`](streamflight_core::fleet::follower::Follower) (read, check the lease, keep the
//!   interest, end). Each flight's task here is a thin loop: it makes the machine, carries out
//!   each action (a store call, an item passed on), hands replies, items and time back (`now`
//!   is the milliseconds since the [`Fleet`] was made), and sleeps until the machine's
//!   `poll_timeout`. The scripts implement exactly the calls' documented semantics; the
//!   testkit's model of the store implements the same, and the machines are checked against it.
//! - **Every store call under a deadline, never on the items' path** ([R23](streamflight_core::design#r23)):
//!   a call is a future polled beside the upstream and the local flight, given up after
//!   [`FleetConfig::deadline`] (200 ms by default) and handed back as a failure. A renewal or
//!   an append on its way never holds an item back from this replica's own clients; a hung
//!   store (no error, no answer) costs a new request one deadline before it is served alone.
//! - **A lease per flight key, held by the leading replica** ([R20](streamflight_core::design#r20),
//!   [`Lease`]): `SET NX PX` with a random 128-bit token, renewed every third of its timeout.
//!   The token names the flight's stream, so a new flight of the key (after its leader was
//!   lost) never shares a stream with the old one. Every leader call (append, finish, renew,
//!   give up) is fenced in its script: another token's lease refuses it, and a lease nobody
//!   holds (the store lost it) is taken back under the leader's token.
//! - **The leader appends the upstream's items to a Redis Stream in batches**: one script call
//!   per batch, item `n` as entry `n-0`: a retried batch is never written twice, a reader
//!   resumes after the items it has, and a gap is seen rather than skipped. The end is the last
//!   entry. Its own replica's requests get each item at once, not after the store.
//! - **A store that lost the stream loses no answer**: the leader keeps every item it encoded.
//!   A write whose stream lacks the entries before it is refused with the stream's top (a
//!   gap), and a renewal reports the top too; the leader then writes the stream again from
//!   there, under its lease, and each follower carries on after the item it had (a `FLUSHALL`
//!   or a store restarted empty costs nobody the answer).
//! - **One blocking reader per replica** (`reader`): every followed flight's reads wait in one
//!   `XREAD BLOCK` over all their streams (in chunks of 1,000), on the replica's one reader
//!   connection; a new read wakes it with `CLIENT UNBLOCK` on the command connection. A
//!   replica uses two connections to the store (three with [`Fleet::listen`]), whatever the
//!   number of flights it leads or follows.
//! - **Interest** ([R22](streamflight_core::design#r22)): each local flight that reads keeps an
//!   expiring member (its replica's name and a number) in the flight's interest set (scored
//!   by the store's clock, so replicas' clocks do not matter), joined in the same script that
//!   reads the lease, so that a leader never gives up a flight someone just joined. One member
//!   per local flight, not per replica: one flight's withdrawal leaves another's standing. The leader gives up (aborts the upstream) only when its
//!   own requests are gone and the set is empty.
//! - **Leader loss** ([R21](streamflight_core::design#r21)): a follower whose reads find
//!   nothing checks the lease: another token's means the flight can never go on; a missing
//!   one for half a lease means its leader is gone (a live one takes it back within a third);
//!   reads that fail for two leases mean this replica is cut off. Its subscribers then get
//!   [`Lost::Leader`] through the codec; a follower that had passed nothing on opens the
//!   flight again instead (it may lead the next one), or serves alone. A leader fenced off, or
//!   cut off from the store for two leases, serves its own requests on alone.
//! - **Store down** ([R23](streamflight_core::design#r23)): a store error is counted and
//!   logged, and for [`FleetConfig::pause`] the replica serves new flights alone (local
//!   coalescing only); then it tries again. Connections are lazy: a replica starts with the
//!   store down.
//! - **Nothing in clear** ([R24](streamflight_core::design#r24)): every key is
//!   `<prefix>{<SHA-256 of the key>}:...` (the braces keep a flight's keys in one Redis Cluster
//!   slot, which its scripts need); the lease, the stream (while live: a few lease timeouts
//!   past the last write; after its end: [`FleetConfig::keep`]), the interest set and notes
//!   all expire. Every item, the flight's end and every note are sealed (ChaCha20-Poly1305)
//!   with a key derived from the flight's own key bytes (a note's: from its name) and the
//!   fleet's [secret](FleetConfig::secret): only a replica holding an identical request reads
//!   them.
//! - **Graceful stop** (R26): [`Fleet::leading`] counts the
//!   flights this replica leads for the fleet until their end is written, for a replica told
//!   to stop to wait on.
//! - **Who holds a request, across replicas** (R18 and tenants, across the fleet): a request's
//!   *hand* in the store, under its [`Ticket`] and for its owner only, says which replica
//!   reads it ([`Flights::hold`]), keeps it detached with the caller's context and its
//!   flight's place ([`Holding::detached`]), or saw its end ([`Holding::ended`]).
//!   [`Flights::holder`] says who holds it; [`Flights::take`] moves a detached hand to a new
//!   reader in one step in the store (two resumes never both get it), and [`Flights::replay`]
//!   reads its flight from the client's next item; [`Flights::cancel_at`] passes a cancel to
//!   the holder, which [`Flights::serve_cancels`] answers at once. The application's own
//!   ids can be tickets ([`Ticket::from_bytes`]); the gateway's are.
//! - **Resume on another replica, in one call**: [`Flights::hand_off`] detaches a request and
//!   gives a [`Ticket`] for it; [`Flights::resume_ticket`] on any replica takes it (once) and
//!   reads the flight from the client's next item: a hand with no owner, underneath.
//! - **Optional fleet**: [`Flights::alone`] is the same API on no store, for an application
//!   that joins a fleet only when it is given one.
//! - **One fleet API**: [`Flights::request`]'s [`Subscription`] says where its flight runs
//!   ([`FleetRole`]: led here, followed from another replica, or alone);
//!   [`Flights::connect`] and [`FleetConfig::matching`] derive the fleet's linger and keep from
//!   the local manager's [`Config`](streamflight_tokio::Config), [`Flights::try_new`] refuses
//!   settings that disagree; with feature `serde`, `SerdeCodec` stores any serde types.
//! - **Messages between replicas**: [`Fleet::publish`] and [`Fleet::listen`] (`PUBLISH` and
//!   `SUBSCRIBE`), for what one replica asks of the others (the gateway passes a `DELETE` for
//!   a request another replica serves).
//! - **Notes that change hands**: [`Fleet::claim`] (`SET NX PX`) and [`Fleet::swap`] (a
//!   compare-and-set script) let one replica at a time hold a name (the hands above);
//!   [`Fleet::ask`] publishes a question and waits for its
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
//! multiplexed connection plus one connection for the blocking reader was all this needed.
#![forbid(unsafe_code)]

mod agree;
mod codec;
mod ending;
mod fleet;
mod flights;
mod follow;
mod handoff;
mod hands;
mod hex;
mod interest;
mod lead;
mod lease;
mod names;
mod note;
mod open;
mod place;
mod placement;
mod reader;
mod seal;
#[cfg(feature = "serde")]
mod serde_codec;
mod signal;
mod stream;
mod subscription;

pub use agree::ConfigError;
pub use codec::{Codec, Lost, Text};
pub use fleet::{Fleet, FleetConfig, FleetStats, Upstream};
pub use flights::Flights;
pub use handoff::{HandOffError, ParseTicketError, Ticket, TicketError};
pub use hands::{Holder, Holding, Resumable, Taken};
pub use lease::{Lease, StoreError};
pub use place::{ParsePlaceError, Place};
pub use placement::FleetRole;
/// The Redis client this crate is built on, for [`Fleet::with_client`].
pub use redis;
#[cfg(feature = "serde")]
pub use serde_codec::SerdeCodec;
pub use signal::Messages;
pub use stream::{Appended, Bounds, Entry, append, finish, read};
/// The timings every replica's fleet machines share ([`FleetConfig::timings`]).
pub use streamflight_core::fleet::Timings;
pub use subscription::Subscription;
