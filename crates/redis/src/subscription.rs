//! A request of a fleet's manager: the local manager's subscription, which also says whether
//! its flight is led on this replica or followed from another ([`FleetRole`]).

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::Stream;
use streamflight_tokio::{Event, RequestId, Role};

use crate::FleetRole;
use crate::placement::Placement;

/// What [`Flights::request`](crate::Flights::request) returns: a
/// [`streamflight_tokio::Subscription`] (the same events, methods and rules), and where its
/// flight runs in the fleet ([`fleet_role`](Self::fleet_role)).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use futures::StreamExt;
/// use streamflight_redis::{FleetConfig, FleetRole, Flights, Text};
/// use streamflight_tokio::{Config, Event, Role};
///
/// // A store nobody answers on: the replica serves alone (R23).
/// let flights = Flights::connect("redis://127.0.0.1:1/", Text, FleetConfig::default(), Config::default()).unwrap();
/// let answer = async { Ok::<_, String>(futures::stream::iter([Ok("token".to_owned())])) };
/// let mut subscription = flights.request("a prompt".to_owned(), answer);
/// assert_eq!(subscription.role(), Role::Leader, "it started this replica's flight");
/// assert_eq!(subscription.next().await, Some(Event::Item("token".to_owned())));
/// assert_eq!(subscription.fleet_role(), Some(FleetRole::Alone), "and ran it without the fleet");
/// # }
/// ```
pub struct Subscription<T, E> {
    local: streamflight_tokio::Subscription<T, E>,
    /// Its local flight's placement; `None` when it is not known (a request that joined a
    /// lingering flight this replica no longer remembers the placement of).
    placement: Option<Arc<Placement>>,
    /// The index in the fleet's flight of its local flight's first item: a request replayed
    /// from the store ([`Flights::replay`](crate::Flights::replay)) starts further on.
    first: u64,
}

impl<T, E> Subscription<T, E> {
    pub(crate) fn new(
        local: streamflight_tokio::Subscription<T, E>,
        placement: Option<Arc<Placement>>,
    ) -> Self {
        Subscription { local, placement, first: 0 }
    }

    /// The same, its local flight's first item the flight's item `first`.
    pub(crate) fn starting_at(mut self, first: u64) -> Self {
        self.first = first;
        self
    }

    /// Its local flight's placement, if known.
    pub(crate) fn placement(&self) -> Option<&Placement> {
        self.placement.as_deref()
    }

    /// Its local flight's placement, if known, to keep.
    pub(crate) fn placement_arc(&self) -> Option<Arc<Placement>> {
        self.placement.clone()
    }

    /// Whether its flight is led by this replica for the fleet, followed from another replica,
    /// or served here alone. `None` until the flight's fleet task has decided (on the local
    /// flight's first poll, within the store's deadline), and for a request that joined a
    /// finished flight that lingers on this replica past its fleet task's memory. A follower
    /// whose leader went before anything came opens the flight again: this says the latest.
    pub fn fleet_role(&self) -> Option<FleetRole> {
        self.placement.as_ref().and_then(|placement| placement.role())
    }

    /// This request's id, as [`streamflight_tokio::Subscription::id`].
    pub fn id(&self) -> RequestId {
        self.local.id()
    }

    /// How it came to this replica's flight, as [`streamflight_tokio::Subscription::role`]: a
    /// `Leader` here may follow another replica ([`fleet_role`](Self::fleet_role) says).
    pub fn role(&self) -> Role {
        self.local.role()
    }

    /// The index in its flight of the next item it yields, as [`streamflight_tokio::Subscription::position`];
    /// for a request replayed from the store from item `from`, counted from the flight's
    /// first item, not from `from` (the local subscription's own counts from there).
    pub fn position(&self) -> u64 {
        self.first + self.local.position()
    }

    /// Cancels it, as [`streamflight_tokio::Subscription::cancel`].
    pub fn cancel(&self) {
        self.local.cancel();
    }

    /// Detaches it for the resume window, as [`streamflight_tokio::Subscription::detach`].
    pub fn detach(self) -> RequestId {
        self.local.detach()
    }

    /// The local manager's subscription.
    pub fn local(&self) -> &streamflight_tokio::Subscription<T, E> {
        &self.local
    }

    /// The local manager's subscription, for what only it offers (`ready`, `into_results`).
    pub fn into_local(self) -> streamflight_tokio::Subscription<T, E> {
        self.local
    }
}

impl<T, E> Stream for Subscription<T, E>
where
    T: Clone,
{
    type Item = Event<T, E>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.local).poll_next(cx)
    }
}

impl<T, E> fmt::Debug for Subscription<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("id", &self.id())
            .field("role", &self.role())
            .field("fleet_role", &self.fleet_role())
            .finish()
    }
}
