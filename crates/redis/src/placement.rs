//! Where a local flight's items come from in the fleet ([`FleetRole`]): decided by its fleet
//! task, read by every subscription of the flight on this replica.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use crate::Place;

/// How a replica takes part in one flight of the fleet: what a [`Subscription`](crate::Subscription)
/// says with [`fleet_role`](crate::Subscription::fleet_role), where its
/// [`role`](crate::Subscription::role) says only how it came to the local flight.
///
/// ```
/// use streamflight_redis::FleetRole;
///
/// assert!(FleetRole::Led.led_here() && FleetRole::Alone.led_here());
/// assert!(!FleetRole::Followed.led_here());
/// ```
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FleetRole {
    /// This replica leads the flight for the fleet: it holds the lease, runs the upstream and
    /// writes its items to the store for the others (R20).
    Led,
    /// Another replica leads it: this one reads its items from the store (a live flight, or
    /// a finished answer within its linger) and runs no upstream.
    Followed,
    /// This replica serves it without the store (down, or slower than its deadline: R23): it
    /// runs the upstream and shares it with no other replica.
    Alone,
}

impl FleetRole {
    /// Whether the flight's upstream runs on this replica (led for the fleet, or alone).
    pub fn led_here(self) -> bool {
        !matches!(self, FleetRole::Followed)
    }

    fn code(self) -> u8 {
        match self {
            FleetRole::Led => 1,
            FleetRole::Followed => 2,
            FleetRole::Alone => 3,
        }
    }

    fn from_code(code: u8) -> Option<FleetRole> {
        match code {
            1 => Some(FleetRole::Led),
            2 => Some(FleetRole::Followed),
            3 => Some(FleetRole::Alone),
            _ => None,
        }
    }
}

/// One local flight's place in the fleet, shared by its subscriptions and its fleet task.
#[derive(Debug, Default)]
pub(crate) struct Placement {
    /// A [`FleetRole`]'s code, 0 while undecided. The latest decision: a follower whose leader
    /// went before anything came opens the flight again, and may lead it then.
    role: AtomicU8,
    /// When its fleet task ended (or was dropped before it ran): from then, only the linger
    /// of the local flight keeps the placement worth remembering for newcomers.
    over: Mutex<Option<Instant>>,
    /// Its flight in the store, while led or followed: what a hand-off gives another replica.
    place: Mutex<Option<Place>>,
}

impl Placement {
    /// The latest decision, if there was one.
    pub(crate) fn role(&self) -> Option<FleetRole> {
        FleetRole::from_code(self.role.load(Ordering::Acquire))
    }

    /// The fleet task decided `role`, for the flight at `place` in the store (none: alone).
    pub(crate) fn decided(&self, role: FleetRole, place: Option<Place>) {
        *self.place.lock().unwrap_or_else(PoisonError::into_inner) = place;
        self.role.store(role.code(), Ordering::Release);
    }

    /// Its flight in the store, if it has one.
    pub(crate) fn place(&self) -> Option<Place> {
        self.place.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// When its fleet task ended, if it did.
    pub(crate) fn over(&self) -> Option<Instant> {
        *self.over.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A fleet task's hold on its flight's placement: records the task's end when dropped,
/// whether the task ran to its end or was never polled.
#[derive(Debug)]
pub(crate) struct Deciding(pub(crate) Arc<Placement>);

impl Drop for Deciding {
    fn drop(&mut self) {
        *self.0.over.lock().unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
    }
}
