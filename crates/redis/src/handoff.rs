//! Resume across replicas (R18 in a fleet): a request detached on one replica is handed off
//! as a [`Ticket`], and any replica resumes it from its flight in the store.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use streamflight_tokio::{Config, RequestId};

use crate::hands::Taken;
use crate::placement::Placement;
use crate::{Flights, StoreError, Subscription};

/// A request handed off to the fleet ([`Flights::hand_off`]): shown as text (32 hex digits)
/// for the client to keep, and read back by any replica's [`Flights::resume_ticket`]. Random:
/// only its holder can resume the request, and the note it names in the store is sealed with a
/// key derived from it (R24).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Ticket([u8; 16]);

impl Ticket {
    /// A new ticket from the operating system's random source.
    ///
    /// # Panics
    /// Without a random source (a broken host: the process cannot make unguessable tickets).
    pub fn random() -> Ticket {
        let mut bytes = [0; 16];
        getrandom::fill(&mut bytes).expect("the operating system's random source");
        Ticket(bytes)
    }

    /// The ticket of these 16 bytes: an id the application already gave its client (random,
    /// or nobody else's requests are safe from a guess).
    pub fn from_bytes(bytes: [u8; 16]) -> Ticket {
        Ticket(bytes)
    }

    /// Its 16 bytes.
    pub fn bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Display for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|byte| write!(f, "{byte:02x}"))
    }
}

impl fmt::Debug for Ticket {
    /// Not the ticket itself: whoever reads a log must not resume the request.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Ticket(..)")
    }
}

/// Text that is not a [`Ticket`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParseTicketError;

impl fmt::Display for ParseTicketError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not a ticket: 32 hex digits")
    }
}

impl std::error::Error for ParseTicketError {}

impl FromStr for Ticket {
    type Err = ParseTicketError;

    fn from_str(text: &str) -> Result<Ticket, ParseTicketError> {
        crate::hex::decode_array(text).map(Ticket).ok_or(ParseTicketError)
    }
}

/// Why a request could not be handed off ([`Flights::hand_off`]). Either way it was detached
/// here, and resumes by its id on this replica within the resume window ([`Flights::resume`]).
#[non_exhaustive]
#[derive(Debug)]
pub enum HandOffError {
    /// Its flight is not in the store (served alone, or not decided yet): no other replica
    /// can read it.
    NotShared {
        /// The detached request, on this replica.
        id: RequestId,
    },
    /// The store could not keep the ticket's note.
    Store {
        /// The detached request, on this replica.
        id: RequestId,
        /// What the store did.
        error: StoreError,
    },
}

impl fmt::Display for HandOffError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandOffError::NotShared { .. } => {
                f.write_str("the request's flight is not shared through the store")
            }
            HandOffError::Store { error, .. } => write!(f, "the store could not keep the hand-off: {error}"),
        }
    }
}

impl std::error::Error for HandOffError {}

/// Why a ticket could not be resumed ([`Flights::resume_ticket`]).
#[non_exhaustive]
#[derive(Debug)]
pub enum TicketError {
    /// No hand-off under this ticket: never made, or its resume window passed.
    Unknown,
    /// Another resume took it first: a ticket is resumed once.
    Taken,
    /// The store failed.
    Store(StoreError),
}

impl fmt::Display for TicketError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TicketError::Unknown => f.write_str("no request handed off under this ticket"),
            TicketError::Taken => f.write_str("the request was resumed already"),
            TicketError::Store(error) => write!(f, "the store failed: {error}"),
        }
    }
}

impl std::error::Error for TicketError {}

impl From<StoreError> for TicketError {
    fn from(error: StoreError) -> TicketError {
        TicketError::Store(error)
    }
}

impl<K, T, E> Flights<K, T, E>
where
    K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
    E: Send + Sync + 'static,
{
    /// Detaches `subscription` (its client went away) and hands it off to the fleet: the
    /// returned [`Ticket`] resumes it on any replica within the local manager's resume window
    /// ([`resume_ticket`](Self::resume_ticket)). Meanwhile the request stays live here
    /// ([R18](streamflight_core::design#r18)), keeping its flight going.
    ///
    /// See [`resume_ticket`](Self::resume_ticket) for an example.
    pub async fn hand_off(&self, subscription: Subscription<T, E>) -> Result<Ticket, HandOffError> {
        let place = subscription.placement().and_then(Placement::place);
        let id = subscription.detach();
        let Some(place) = place else { return Err(HandOffError::NotShared { id }) };
        let ticket = Ticket::random();
        let left = self.left_detached(&ticket, place, self.window()).await;
        left.map_err(|error| HandOffError::Store { id, error })?;
        Ok(ticket)
    }

    /// Resumes the request handed off under `ticket`, on this replica: its flight's items
    /// after the first `from` (those its client has), read from the store, then its end. Once
    /// per ticket. Its subscription's first item is the flight's item `from`.
    ///
    /// ```no_run
    /// # #[tokio::main] async fn main() {
    /// use futures::StreamExt;
    /// use streamflight_redis::{FleetConfig, Flights, Text, Ticket};
    /// use streamflight_tokio::{Config, RequestId};
    ///
    /// let config = Config::default().resume_window(std::time::Duration::from_secs(60));
    /// let connect = |name| {
    ///     let fleet = FleetConfig::default().replica(name);
    ///     Flights::connect("redis://127.0.0.1:6379/", Text, fleet, config.clone()).unwrap()
    /// };
    /// let (a, b) = (connect("a"), connect("b"));
    /// let answer = async { Ok::<_, String>(futures::stream::iter(["to", "ken"].map(|t| Ok(t.to_owned())))) };
    /// let mut first = a.request("a prompt".to_owned(), answer);
    /// let _to = first.next().await;
    /// // The client goes away from a, and comes back through b with its ticket.
    /// let ticket: String = a.hand_off(first).await.unwrap().to_string();
    /// let ticket: Ticket = ticket.parse().unwrap();
    /// let rest: Vec<_> = b.resume_ticket(&ticket, 1).await.unwrap().collect().await;
    /// # }
    /// ```
    pub async fn resume_ticket(&self, ticket: &Ticket, from: u64) -> Result<Subscription<T, E>, TicketError> {
        // The hand of a hand-off has no owner: the ticket is all it takes.
        let taken = match self.take_hand(ticket, &[], false).await? {
            Taken::Yours(taken) => taken,
            Taken::Busy | Taken::Ended => return Err(TicketError::Taken),
            Taken::Unknown => return Err(TicketError::Unknown),
        };
        let Some(place) = taken.place().cloned() else {
            taken.give_back().await;
            return Err(TicketError::Unknown);
        };
        match self.replay(&place, from).await {
            // Its hand keeps saying this replica reads it: no second resume takes it.
            Ok(subscription) => Ok(subscription),
            Err(error) => {
                // Not resumed after all: the ticket goes back as it was, for another try.
                taken.give_back().await;
                Err(TicketError::Store(error))
            }
        }
    }

    /// How long a hand-off waits: the local manager's resume window, at least a second.
    pub(crate) fn window(&self) -> Duration {
        self.resume_window.max(Duration::from_secs(1))
    }
}

/// The manager of resumed requests: a flight per resume, keyed by a counter.
pub(crate) fn resumes<T, E>(config: &Config) -> streamflight_tokio::Flights<u64, T, E>
where
    T: Clone + Send + Sync + 'static,
    E: Send + Sync + 'static,
{
    // No linger: a resume's flight is its own and never joined.
    streamflight_tokio::Flights::new(config.clone().linger(Duration::ZERO))
}
