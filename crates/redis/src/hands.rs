//! Who holds each request of the fleet: its *hand* in the store, under its [`Ticket`], says
//! which replica reads it or keeps it detached, so that a cancel or a resume made through any
//! replica reaches it, for its owner only (R18 and G5 across replicas).
//!
//! One replica holds a request at a time. [`Flights::hold`] writes that this replica reads it;
//! [`Holding::detached`] that its client went away (with the caller's context and where its
//! flight is in the store, for a resume elsewhere); [`Holding::ended`] that it got its end.
//! [`Flights::take`] moves a detached hand to a new reader in one step in the store, so that
//! two resumes of one ticket never both get it. A cancel is passed to the holder
//! ([`Flights::cancel_at`]), which answers at once ([`Flights::serve_cancels`]).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::oneshot;

use crate::handoff::Ticket;
use crate::placement::Placement;
use crate::{Fleet, Flights, Place, StoreError, Subscription};

/// A hand: who holds a request, for whom, and how.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Hand {
    /// Who made the request: nobody else cancels, resumes or learns of it.
    owner: Vec<u8>,
    /// The replica that holds it.
    holder: String,
    state: State,
}

/// What the holder of a request does with it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    /// A client reads it there; `token` tells this reading from any other.
    Reading { token: [u8; 8] },
    /// Its client went away: it may be resumed from its flight in the store, if it has one.
    Detached { context: Vec<u8>, place: Option<Place> },
    /// It got its end: nothing to cancel or resume.
    Ended,
}

impl Hand {
    /// Its bytes: a tag (`R`, `D` or `E`), the owner and the holder each after its length
    /// (one byte), then for `R` the token, for `D` the context after its length (two bytes)
    /// and the place as text (empty: none).
    fn encode(&self) -> Vec<u8> {
        let tag = match self.state {
            State::Reading { .. } => b'R',
            State::Detached { .. } => b'D',
            State::Ended => b'E',
        };
        let mut bytes = vec![tag];
        for field in [&self.owner[..], self.holder.as_bytes()] {
            let field = &field[..field.len().min(255)];
            bytes.push(field.len() as u8);
            bytes.extend_from_slice(field);
        }
        match &self.state {
            State::Reading { token } => bytes.extend_from_slice(token),
            State::Detached { context, place } => {
                let context = &context[..context.len().min(usize::from(u16::MAX))];
                bytes.extend_from_slice(&(context.len() as u16).to_be_bytes());
                bytes.extend_from_slice(context);
                if let Some(place) = place {
                    bytes.extend_from_slice(place.to_string().as_bytes());
                }
            }
            State::Ended => {}
        }
        bytes
    }

    /// A hand from its bytes, if they are one.
    fn decode(bytes: &[u8]) -> Option<Hand> {
        let (&tag, rest) = bytes.split_first()?;
        let (&length, rest) = rest.split_first()?;
        let (owner, rest) = rest.split_at_checked(usize::from(length))?;
        let (&length, rest) = rest.split_first()?;
        let (holder, rest) = rest.split_at_checked(usize::from(length))?;
        let holder = std::str::from_utf8(holder).ok()?.to_owned();
        let state = match tag {
            b'R' => State::Reading { token: *<&[u8; 8]>::try_from(rest).ok()? },
            b'D' => {
                let (length, rest) = rest.split_first_chunk::<2>()?;
                let (context, place) = rest.split_at_checked(usize::from(u16::from_be_bytes(*length)))?;
                let place = match place {
                    [] => None,
                    text => Some(std::str::from_utf8(text).ok()?.parse().ok()?),
                };
                State::Detached { context: context.to_vec(), place }
            }
            b'E' if rest.is_empty() => State::Ended,
            _ => return None,
        };
        Some(Hand { owner: owner.to_vec(), holder, state })
    }
}

/// The name of a ticket's hand in the store (hashed there, R24).
fn hand_name(ticket: &Ticket) -> Vec<u8> {
    [&b"hand:"[..], ticket.bytes()].concat()
}

/// Where a holding finds its request's flight in the store when it is detached.
enum Flight {
    /// Its local flight's placement, as the fleet task decides it.
    Placed(Option<Arc<Placement>>),
    /// Fixed: a resumed request's flight, taken from the hand it resumed.
    At(Option<Place>),
}

impl Flight {
    fn place(&self) -> Option<Place> {
        match self {
            Flight::Placed(placement) => placement.as_ref().and_then(|placement| placement.place()),
            Flight::At(place) => place.clone(),
        }
    }
}

/// A replica's reading of a request, as its hand in the store says ([`Flights::hold`]). Tell
/// it how the reading ends: [`detached`](Self::detached) or [`ended`](Self::ended); dropped
/// without either, the hand keeps saying this replica reads it until it expires
/// ([`FleetConfig::holding`](crate::FleetConfig::holding)).
pub struct Holding<K, T, E> {
    /// `None`: a manager on no fleet, where a holding writes nothing.
    fleet: Option<Fleet<K, T, E>>,
    ticket: Ticket,
    owner: Vec<u8>,
    /// The hand this reading wrote (or will write).
    reading: Vec<u8>,
    /// Resolves once the first hand was written, so that what the reading leaves is written after.
    written: Option<oneshot::Receiver<()>>,
    flight: Flight,
    /// How long an ended hand stays, for a late cancel or resume to learn the end.
    ended_for: Duration,
}

impl<K, T, E> std::fmt::Debug for Holding<K, T, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Holding").field("ticket", &self.ticket).finish_non_exhaustive()
    }
}

/// Who holds a request now, by its hand in the store ([`Flights::holder`]).
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Holder {
    /// This replica, or the store cannot say (what this replica has is all there is), or the
    /// manager is on no fleet.
    Here,
    /// Another replica, by its id ([`FleetConfig::replica`](crate::FleetConfig::replica)).
    Elsewhere(String),
    /// Nobody: no hand for this owner (unknown, expired, or lost with the store's data).
    Nobody,
    /// It got its end: nothing to cancel.
    Ended,
}

/// What taking a request's hand for a resume gave ([`Flights::take`]).
#[non_exhaustive]
#[derive(Debug)]
pub enum Taken<K, T, E> {
    /// It was detached, and this replica reads it now: resume it, or give it back.
    Yours(Box<Resumable<K, T, E>>),
    /// Another reader has it now.
    Busy,
    /// It got its end: nothing to resume.
    Ended,
    /// No hand for this owner, or the store cannot say.
    Unknown,
}

/// A detached request's hand, taken by this replica ([`Taken::Yours`]).
#[derive(Debug)]
pub struct Resumable<K, T, E> {
    /// The hand as it was, to give back.
    was: Hand,
    /// This replica's reading of it.
    holding: Holding<K, T, E>,
}

impl<K, T, E> Resumable<K, T, E>
where
    K: Send + Sync + 'static,
    T: Send + Sync + 'static,
    E: Send + Sync + 'static,
{
    /// What its last holder said of it when it was detached ([`Holding::detached`]); empty
    /// if it was taken while its detach was still being written.
    pub fn context(&self) -> &[u8] {
        match &self.was.state {
            State::Detached { context, .. } => context,
            _ => &[],
        }
    }

    /// Its flight in the store, if it has one: what [`Flights::replay`] resumes it from.
    pub fn place(&self) -> Option<&Place> {
        match &self.was.state {
            State::Detached { place, .. } => place.as_ref(),
            _ => None,
        }
    }

    /// The reading that resumes it: tell it how the resumed stream ends.
    pub fn into_holding(self) -> Holding<K, T, E> {
        self.holding
    }

    /// Gives the hand back as it was: the resume could not be made after all.
    pub async fn give_back(self) {
        let (Some(fleet), was) = (&self.holding.fleet, self.was.encode()) else { return };
        let name = hand_name(&self.holding.ticket);
        if let Err(error) = fleet.swap(&name, &self.holding.reading, &was, fleet.config().holding).await {
            tracing::warn!(%error, "could not give a request's hand back in the store");
        }
    }
}

impl<K, T, E> Holding<K, T, E>
where
    K: Send + Sync + 'static,
    T: Send + Sync + 'static,
    E: Send + Sync + 'static,
{
    /// Its client went away for `window`: the hand says detached here until then, with
    /// `context` (what a resume elsewhere needs to know, such as how the stream was written)
    /// and its flight's place in the store. Written in the background.
    pub fn detached(self, window: Duration, context: &[u8]) {
        let state = State::Detached { context: context.to_vec(), place: self.flight.place() };
        self.leave(state, window);
    }

    /// The request got its end (or was cancelled, or its client left for good): the hand says
    /// so for the resume window. Written in the background.
    pub fn ended(self) {
        let ended_for = self.ended_for;
        self.leave(State::Ended, ended_for);
    }

    /// Writes the hand the reading leaves, `state`, for `ttl`, once its first hand is written.
    fn leave(self, state: State, ttl: Duration) {
        let Holding { fleet: Some(fleet), ticket, owner, reading, written, .. } = self else { return };
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        let holder = fleet.config().replica_id().to_owned();
        let next = Hand { owner, holder, state }.encode();
        let name = hand_name(&ticket);
        tokio::spawn(async move {
            if let Some(written) = written {
                let _ = written.await;
            }
            // Still this reading's (else absent: the store lost it), never another's.
            let left = match fleet.swap(&name, &reading, &next, ttl).await {
                Ok(true) => Ok(true),
                Ok(false) => fleet.claim(&name, &next, ttl).await,
                Err(error) => Err(error),
            };
            if let Err(error) = left {
                tracing::warn!(%error, "could not record in the store how a request was left");
            }
        });
    }
}

/// The channel on which a replica is asked to cancel a request it holds.
fn cancels(replica: &str) -> String {
    format!("cancel:{replica}")
}

/// What a replica answers a cancel passed on to it.
const CANCELLED: &[u8] = b"cancelled";
/// ... when it does not hold the request (any more).
const UNKNOWN: &[u8] = b"unknown";

/// A cancel message: the ticket (32 hex digits), the owner (hex) and the reply's name, each
/// after a space but the first.
fn cancel_message(ticket: &Ticket, owner: &[u8], reply: &str) -> String {
    format!("{ticket} {} {reply}", crate::hex::encode(owner))
}

/// A cancel message's ticket, owner and reply, if it is one.
fn parse_cancel(message: &[u8]) -> Option<(Ticket, Vec<u8>, String)> {
    let text = std::str::from_utf8(message).ok()?;
    let mut words = text.split(' ');
    let ticket = words.next()?.parse().ok()?;
    let owner = crate::hex::decode(words.next()?)?;
    let reply = words.next()?.to_owned();
    words.next().is_none().then_some((ticket, owner, reply))
}

impl<K, T, E> Flights<K, T, E>
where
    K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
    E: Send + Sync + 'static,
{
    /// Records in the store, in the background (no request waits on the store, R23), that
    /// this replica reads `subscription` as the request `ticket` of `owner`: a cancel or a
    /// resume of `ticket` through any replica then finds it here. On no fleet, nothing is written.
    ///
    /// ```no_run
    /// # #[tokio::main] async fn main() {
    /// use std::time::Duration;
    /// use futures::StreamExt;
    /// use streamflight_redis::{FleetConfig, Flights, Taken, Text, Ticket};
    /// use streamflight_tokio::Config;
    ///
    /// let config = Config::default().resume_window(Duration::from_secs(60));
    /// let connect = |name| {
    ///     Flights::connect("redis://127.0.0.1:6379/", Text, FleetConfig::default().replica(name), config.clone()).unwrap()
    /// };
    /// let (a, b) = (connect("a"), connect("b"));
    /// let answer = async { Ok::<_, String>(futures::stream::iter(["to", "ken"].map(|t| Ok(t.to_owned())))) };
    /// // The client is told its ticket as its request starts on a.
    /// let ticket = Ticket::random();
    /// let mut subscription = a.request("a prompt".to_owned(), answer);
    /// let holding = a.hold(&subscription, &ticket, b"alice");
    /// let _to = subscription.next().await;
    /// // It goes away; a keeps it detached, saying how it wrote the stream.
    /// let _id = subscription.detach();
    /// holding.detached(Duration::from_secs(60), b"sse");
    /// # tokio::time::sleep(Duration::from_millis(100)).await;
    /// // It comes back through b, which takes the hand and replays the rest.
    /// let Taken::Yours(taken) = b.take(&ticket, b"alice", false).await else { panic!("not resumable") };
    /// assert_eq!(taken.context(), b"sse");
    /// let place = taken.place().cloned().unwrap();
    /// let rest = b.replay(&place, 1).await.unwrap();
    /// let holding = taken.into_holding();
    /// let _ken: Vec<_> = rest.collect().await;
    /// holding.ended();
    /// # }
    /// ```
    pub fn hold(&self, subscription: &Subscription<T, E>, ticket: &Ticket, owner: &[u8]) -> Holding<K, T, E> {
        let flight = Flight::Placed(subscription.placement_arc());
        self.reading(ticket, owner, flight, true)
    }

    /// Records in the store, as [`hold`](Self::hold), that this replica reads request `ticket`
    /// of `owner`, for a request whose flight it cannot name (one resumed by its id,
    /// [`resume`](Self::resume)): detached, it resumes on this replica only.
    pub fn hold_ticket(&self, ticket: &Ticket, owner: &[u8]) -> Holding<K, T, E> {
        self.reading(ticket, owner, Flight::At(None), true)
    }

    /// A reading of `ticket` by this replica, its hand written first if `write`.
    fn reading(&self, ticket: &Ticket, owner: &[u8], flight: Flight, write: bool) -> Holding<K, T, E> {
        let mut token = [0; 8];
        // Without a random source the process cannot make tickets either: a broken host.
        getrandom::fill(&mut token).expect("the operating system's random source");
        let fleet = self.fleet_link().cloned();
        let holder = fleet.as_ref().map_or_else(String::new, |fleet| fleet.config().replica_id().to_owned());
        let reading = Hand { owner: owner.to_vec(), holder, state: State::Reading { token } }.encode();
        let mut written = None;
        if let (Some(fleet), true, Ok(_)) = (&fleet, write, tokio::runtime::Handle::try_current()) {
            let (done, wait) = oneshot::channel();
            let (fleet, name, value) = (fleet.clone(), hand_name(ticket), reading.clone());
            tokio::spawn(async move {
                if let Err(error) = fleet.save(&name, &value, fleet.config().holding).await {
                    tracing::warn!(%error, "could not record in the store who reads a request");
                }
                drop(done);
            });
            written = Some(wait);
        }
        Holding {
            fleet,
            ticket: ticket.clone(),
            owner: owner.to_vec(),
            reading,
            written,
            flight,
            ended_for: self.window(),
        }
    }

    /// The hand of `ticket`, if `owner` made it: one store command.
    async fn hand(&self, ticket: &Ticket, owner: &[u8]) -> Result<Option<(Hand, Vec<u8>)>, StoreError> {
        let Some(fleet) = self.fleet_link() else { return Ok(None) };
        let Some(bytes) = fleet.load(&hand_name(ticket)).await? else { return Ok(None) };
        Ok(Hand::decode(&bytes).filter(|hand| hand.owner == owner).map(|hand| (hand, bytes)))
    }

    /// Who holds request `ticket` of `owner` now: one store command.
    pub async fn holder(&self, ticket: &Ticket, owner: &[u8]) -> Holder {
        let Some(fleet) = self.fleet_link() else { return Holder::Here };
        match self.hand(ticket, owner).await {
            Ok(Some((hand, _))) => match hand.state {
                State::Ended => Holder::Ended,
                _ if hand.holder == fleet.config().replica_id() => Holder::Here,
                _ => Holder::Elsewhere(hand.holder),
            },
            Ok(None) => Holder::Nobody,
            Err(error) => {
                tracing::warn!(%error, "the store cannot say who holds a request");
                Holder::Here
            }
        }
    }

    /// Takes the hand of request `ticket` of `owner` for a resume here: from a detached
    /// holder (anywhere) to this replica's reading, in one step in the store. One store
    /// command for an unknown ticket, two for a known one.
    ///
    /// `detached_here`: this replica keeps the request detached itself. A hand that still
    /// says this replica reads it is then taken too: the detach's own write is still on its
    /// way (or was lost), and of two resumes here the local manager lets one through (R18).
    pub async fn take(&self, ticket: &Ticket, owner: &[u8], detached_here: bool) -> Taken<K, T, E> {
        self.take_hand(ticket, owner, detached_here).await.unwrap_or_else(|error| {
            tracing::warn!(%error, "the store cannot hand a request over");
            Taken::Unknown
        })
    }

    /// [`take`](Self::take), with the store's failure as one.
    pub(crate) async fn take_hand(
        &self,
        ticket: &Ticket,
        owner: &[u8],
        detached_here: bool,
    ) -> Result<Taken<K, T, E>, StoreError> {
        let Some(fleet) = self.fleet_link() else { return Ok(Taken::Unknown) };
        let Some((hand, bytes)) = self.hand(ticket, owner).await? else { return Ok(Taken::Unknown) };
        let place = match &hand.state {
            State::Ended => return Ok(Taken::Ended),
            State::Reading { .. } if !(detached_here && hand.holder == fleet.config().replica_id()) => {
                return Ok(Taken::Busy);
            }
            State::Reading { .. } => None,
            State::Detached { place, .. } => place.clone(),
        };
        let holding = self.reading(ticket, owner, Flight::At(place), false);
        Ok(if fleet.swap(&hand_name(ticket), &bytes, &holding.reading, fleet.config().holding).await? {
            Taken::Yours(Box::new(Resumable { was: hand, holding }))
        } else {
            // Another resume took it between the two steps.
            Taken::Busy
        })
    }

    /// Writes that request `ticket`, with no owner, is detached here for `ttl`, its flight at
    /// `place`: a [hand-off](Self::hand_off), awaited.
    pub(crate) async fn left_detached(
        &self,
        ticket: &Ticket,
        place: Place,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let fleet = self.fleet_link().ok_or(StoreError::NoFleet)?;
        let holder = fleet.config().replica_id().to_owned();
        let state = State::Detached { context: Vec::new(), place: Some(place) };
        fleet.save(&hand_name(ticket), &Hand { owner: Vec::new(), holder, state }.encode(), ttl).await
    }

    /// A request of this replica that reads the flight at `place` in the store from its item
    /// `from` (those before it its client has), then its end: how a request taken from
    /// another replica ([`take`](Self::take)) resumes here. Its own local flight, so that
    /// cancel, detach and resume work on it as on any request here.
    pub async fn replay(&self, place: &Place, from: u64) -> Result<Subscription<T, E>, StoreError> {
        let fleet = self.fleet_link().ok_or(StoreError::NoFleet)?;
        let replayed = fleet.replay(place, from).await?;
        let key = self.resumed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let local = self.resumes.request(key, async move { Ok(replayed) });
        let placement = Placement::default();
        placement.decided(crate::FleetRole::Followed, Some(place.clone()));
        Ok(Subscription::new(local, Some(Arc::new(placement))).starting_at(from))
    }

    /// Asks `replica` to cancel request `ticket` of `owner`, and waits up to `wait` (no longer
    /// than it takes it to answer) for whether it did: a `PUBLISH` and a blocking pop of the
    /// answer, never a poll. The replica answers through [`serve_cancels`](Self::serve_cancels).
    pub async fn cancel_at(&self, replica: &str, ticket: &Ticket, owner: &[u8], wait: Duration) -> bool {
        let Some(fleet) = self.fleet_link() else { return false };
        let reply = format!("cancelled:{}", Ticket::random());
        let message = cancel_message(ticket, owner, &reply);
        match fleet.ask(&cancels(replica), message.as_bytes(), reply.as_bytes(), wait).await {
            Ok(answer) => answer.as_deref() == Some(CANCELLED),
            Err(error) => {
                tracing::warn!(%error, "could not pass a cancel to the replica that holds the request");
                false
            }
        }
    }

    /// Carries out the cancels other replicas pass on to this one ([`cancel_at`](Self::cancel_at)),
    /// for as long as the process runs: `cancel(ticket, owner)` cancels the request if this
    /// replica has it, for that owner, and says whether it did; each is answered at once.
    /// Spawns on the current tokio runtime (none: nothing is served, and a warning says so).
    pub fn serve_cancels(&self, cancel: impl Fn(&Ticket, &[u8]) -> bool + Send + 'static) {
        let Some(fleet) = self.fleet_link().cloned() else { return };
        if tokio::runtime::Handle::try_current().is_err() {
            tracing::warn!("no runtime: cancels through other replicas are not served");
            return;
        }
        let mut messages = fleet.listen(&cancels(fleet.config().replica_id()));
        tokio::spawn(async move {
            while let Some(message) = messages.next().await {
                let Some((ticket, owner, reply)) = parse_cancel(&message) else { continue };
                let answer = if cancel(&ticket, &owner) { CANCELLED } else { UNKNOWN };
                // Kept a while for an asker that is slow to pop it; it expires after.
                if let Err(error) = fleet.reply(reply.as_bytes(), answer, Duration::from_secs(2)).await {
                    tracing::warn!(%error, "could not answer a cancel through the store");
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::{Hand, State, Ticket, cancel_message, parse_cancel};

    #[test]
    fn a_hand_reads_back_in_every_state_and_nothing_else_does() {
        let place = "sf:{0000000000000000000000000000000000000000000000000000000000000000}:0123456789abcdef0123456789abcdef:abababababababababababababababababababababababababababababababab";
        let place = Some(place.parse().unwrap());
        let states = [
            State::Reading { token: [7; 8] },
            State::Detached { context: b"chat 1".to_vec(), place },
            State::Detached { context: Vec::new(), place: None },
            State::Ended,
        ];
        for state in states {
            let hand = Hand { owner: vec![9; 32], holder: "replica-a".to_owned(), state };
            let bytes = hand.encode();
            assert_eq!(Hand::decode(&bytes), Some(hand.clone()));
            for cut in 0..bytes.len() {
                assert_ne!(Hand::decode(&bytes[..cut]), Some(hand.clone()), "{cut}");
            }
        }
        assert_eq!(Hand::decode(b"X"), None);
    }

    #[test]
    fn a_cancel_message_reads_back_and_nothing_else_does() {
        let ticket = Ticket::random();
        let message = cancel_message(&ticket, &[9; 32], "reply");
        assert_eq!(parse_cancel(message.as_bytes()), Some((ticket.clone(), vec![9; 32], "reply".to_owned())));
        for bad in
            ["", "x y z", &format!("{ticket} 0 reply"), &format!("{ticket} 00"), &format!("{message} more")]
        {
            assert_eq!(parse_cancel(bad.as_bytes()), None, "{bad}");
        }
    }
}
