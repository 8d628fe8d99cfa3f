//! What one replica of a fleet hands another: a resume (R18 across replicas: each request's
//! *hand* in the store says which replica holds it and how; a resume takes it, so one id has
//! one reader in the whole fleet) and a cancel (G5 across replicas: a `DELETE` that lands
//! elsewhere goes to the replica that holds the request now, which answers at once).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::oneshot;

use streamflight_redis::{Fleet, Place};

use crate::answer::registry::{Asked, ClientId, Leaving, Live, OnLeave, Registry};
use crate::answer::{self, Numbered};
use crate::config::Settings;
use crate::dialect::Api;
use crate::dialect::error::Refusal;
use crate::flight::{Part, UpstreamError};
use crate::http::access::Record;
use crate::key::Key;
use crate::key::hex;
use crate::state::Gateway;

/// The fleet a gateway shares flights with.
pub(crate) type GatewayFleet = Fleet<Key, Part, UpstreamError>;

/// Who holds a request of the fleet now, and how: its *hand*, kept in the store under (a hash
/// of) the request's id. One replica holds a request at a time: the one whose client reads it
/// (`Reading`), or the one it was detached from (`Detached`), until its end (`Ended`). A
/// `DELETE` anywhere goes to the holder; a resume takes the hand (from `Detached` to its own
/// `Reading`, in one step in the store), so that two resumes of one id never both get it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Hand {
    /// The tenant that made the request: no one else cancels or resumes it (G5).
    pub tenant: [u8; 32],
    /// The replica that holds it (its `--replica-id`).
    pub holder: String,
    /// What the holder does with it.
    pub state: Held,
}

/// What the holder of a request does with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Held {
    /// A client reads its stream there; `token` tells this reading from any other.
    Reading {
        /// Random: two readings by one replica leave different hands.
        token: [u8; 8],
    },
    /// Its client went away: it may be resumed from its flight in the store, if it has one.
    Detached {
        /// Its API: how its resumed stream is written.
        api: Api,
        /// `stream_options.include_usage` of its client.
        include_usage: bool,
        /// Its flight in the store (none if it was served without the store).
        place: Option<Place>,
    },
    /// It got its end: nothing to cancel or resume.
    Ended,
}

impl Hand {
    /// The hand's bytes: a tag (`R`, `D` or `E`), the tenant, the holder after its length
    /// (one byte), then for `R` the token, for `D` the usage flag, the API's name after its
    /// length and the place as text (empty: none).
    pub(crate) fn encode(&self) -> Vec<u8> {
        let tag = match self.state {
            Held::Reading { .. } => b'R',
            Held::Detached { .. } => b'D',
            Held::Ended => b'E',
        };
        let mut bytes = vec![tag];
        bytes.extend_from_slice(&self.tenant);
        let holder = &self.holder.as_bytes()[..self.holder.len().min(255)];
        bytes.push(holder.len() as u8);
        bytes.extend_from_slice(holder);
        match &self.state {
            Held::Reading { token } => bytes.extend_from_slice(token),
            Held::Detached { api, include_usage, place } => {
                bytes.push(u8::from(*include_usage));
                let name = api.name().as_bytes();
                bytes.push(name.len() as u8);
                bytes.extend_from_slice(name);
                if let Some(place) = place {
                    bytes.extend_from_slice(place.to_string().as_bytes());
                }
            }
            Held::Ended => {}
        }
        bytes
    }

    /// A hand from its bytes, if they are one.
    pub(crate) fn decode(bytes: &[u8]) -> Option<Hand> {
        let (&tag, rest) = bytes.split_first()?;
        let (tenant, rest) = rest.split_first_chunk::<32>()?;
        let (&length, rest) = rest.split_first()?;
        let holder = std::str::from_utf8(rest.get(..usize::from(length))?).ok()?.to_owned();
        let rest = &rest[usize::from(length)..];
        let state = match tag {
            b'R' => Held::Reading { token: *<&[u8; 8]>::try_from(rest).ok()? },
            b'D' => {
                let (&usage, rest) = rest.split_first()?;
                let (&length, rest) = rest.split_first()?;
                let api = Api::named(std::str::from_utf8(rest.get(..usize::from(length))?).ok()?)?;
                let place = match &rest[usize::from(length)..] {
                    [] => None,
                    text => Some(std::str::from_utf8(text).ok()?.parse().ok()?),
                };
                Held::Detached { api, include_usage: usage == 1, place }
            }
            b'E' if rest.is_empty() => Held::Ended,
            _ => return None,
        };
        Some(Hand { tenant: *tenant, holder, state })
    }
}

/// The name of the hand of `id` in the store (hashed there, R24).
fn hand_name(id: ClientId) -> String {
    format!("hand:{id}")
}

/// How long a request's hand lasts in the store, in each state.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Lasting {
    /// While it is read: as long as the longest answer, and a window more.
    pub reading: Duration,
    /// After its end: a resume window, so that a late resume or cancel learns it ended.
    pub ended: Duration,
}

impl Lasting {
    /// The hands' lives under `settings`.
    pub(crate) fn of(settings: &Settings) -> Lasting {
        Lasting {
            reading: settings.max_answer_duration.saturating_add(settings.resume_window),
            ended: settings.resume_window.max(Duration::from_secs(1)),
        }
    }
}

/// A replica's reading of a request, as its hand in the store says (or will say: `written`
/// resolves once the first hand was written, so that what the reading leaves is written after).
pub(crate) struct Holding {
    fleet: GatewayFleet,
    id: ClientId,
    tenant: [u8; 32],
    /// The hand this reading wrote.
    reading: Vec<u8>,
    written: Option<oneshot::Receiver<()>>,
    lasting: Lasting,
}

impl Holding {
    /// A new reading of request `id` of `tenant` by this replica: its hand is written in the
    /// background (no request waits on the store, R23).
    pub(crate) fn start(fleet: &GatewayFleet, id: ClientId, tenant: [u8; 32], lasting: Lasting) -> Holding {
        let reading = reading(fleet, tenant).encode();
        let (done, written) = oneshot::channel();
        if tokio::runtime::Handle::try_current().is_ok() {
            let (fleet, value) = (fleet.clone(), reading.clone());
            tokio::spawn(async move {
                if let Err(error) = fleet.save(hand_name(id).as_bytes(), &value, lasting.reading).await {
                    tracing::warn!(request_id = %id, %error, "could not record in the store who reads a request");
                }
                drop(done);
            });
        }
        Holding { fleet: fleet.clone(), id, tenant, reading, written: Some(written), lasting }
    }

    /// The hook a [`Live`] calls as it leaves the request: the hand then says detached here
    /// (with the request's flight, `place`, for a resume elsewhere), or ended.
    pub(crate) fn on_leave(
        self,
        api: Api,
        include_usage: bool,
        place: impl FnOnce(&GatewayFleet) -> Option<Place> + Send + Sync + 'static,
    ) -> OnLeave {
        Box::new(move |leaving| {
            let (state, ttl) = match leaving {
                Leaving::Detached(window) => {
                    (Held::Detached { api, include_usage, place: place(&self.fleet) }, window)
                }
                Leaving::Gone => (Held::Ended, self.lasting.ended),
            };
            let holder = self.fleet.config().replica_id().to_owned();
            let next = Hand { tenant: self.tenant, holder, state }.encode();
            if tokio::runtime::Handle::try_current().is_err() {
                return;
            }
            tokio::spawn(async move {
                if let Some(written) = self.written {
                    let _ = written.await;
                }
                let name = hand_name(self.id);
                // Still this reading's (else absent: the store lost it), never another's.
                let left = match self.fleet.swap(name.as_bytes(), &self.reading, &next, ttl).await {
                    Ok(true) => Ok(true),
                    Ok(false) => self.fleet.claim(name.as_bytes(), &next, ttl).await,
                    Err(error) => Err(error),
                };
                if let Err(error) = left {
                    tracing::warn!(request_id = %self.id, %error, "could not record in the store how a request was left");
                }
            });
        })
    }
}

impl Holding {
    /// Gives the hand taken by [`take`] back as it was (`hand`): the resume it was taken for
    /// could not be made after all.
    pub(crate) async fn give_back(self, hand: &Hand) {
        let name = hand_name(self.id);
        let given =
            self.fleet.swap(name.as_bytes(), &self.reading, &hand.encode(), self.lasting.reading).await;
        if let Err(error) = given {
            tracing::warn!(request_id = %self.id, %error, "could not give a request's hand back in the store");
        }
    }
}

/// The hand of a reading by this replica, for `tenant`.
fn reading(fleet: &GatewayFleet, tenant: [u8; 32]) -> Hand {
    let mut token = [0; 8];
    // Without a random source the process cannot make ids either: a broken host.
    getrandom::fill(&mut token).expect("the operating system's random source");
    Hand { tenant, holder: fleet.config().replica_id().to_owned(), state: Held::Reading { token } }
}

/// What taking a request's hand, to resume it here, gave.
pub(crate) enum Taken {
    /// It is this replica's now: it was detached (the hand it was, and this reading's).
    Yours(Box<(Hand, Holding)>),
    /// Another reader has it now: 409, as for a second reader on one replica.
    Busy,
    /// It got its end: nothing to resume.
    Ended,
    /// No hand for this tenant, or the store cannot say.
    Unknown,
}

/// Takes the hand of request `id` of `tenant` for a resume here: from a detached holder
/// (anywhere) to this replica's reading, in one step in the store. One store command for an
/// unknown id; two for a known one.
///
/// `detached_here`: this replica keeps the request, detached. A hand that still says this
/// replica reads it is then taken too: the detach's own write is still on its way (or was
/// lost), and of two resumes here the local manager lets one through (R18).
pub(crate) async fn take(
    fleet: &GatewayFleet,
    id: ClientId,
    tenant: [u8; 32],
    lasting: Lasting,
    detached_here: bool,
) -> Taken {
    let name = hand_name(id);
    let bytes = match fleet.load(name.as_bytes()).await {
        Ok(Some(bytes)) => bytes,
        Ok(None) => return Taken::Unknown,
        Err(error) => {
            tracing::warn!(request_id = %id, %error, "the store cannot say who holds a request");
            return Taken::Unknown;
        }
    };
    let Some(hand) = Hand::decode(&bytes).filter(|hand| hand.tenant == tenant) else {
        return Taken::Unknown;
    };
    match hand.state {
        Held::Ended => return Taken::Ended,
        Held::Reading { .. } if !(detached_here && hand.holder == fleet.config().replica_id()) => {
            return Taken::Busy;
        }
        Held::Reading { .. } | Held::Detached { .. } => {}
    }
    let mine = reading(fleet, tenant).encode();
    match fleet.swap(name.as_bytes(), &bytes, &mine, lasting.reading).await {
        Ok(true) => {
            let holding = Holding { fleet: fleet.clone(), id, tenant, reading: mine, written: None, lasting };
            Taken::Yours(Box::new((hand, holding)))
        }
        // Another resume took it between the two steps.
        Ok(false) => Taken::Busy,
        Err(error) => {
            tracing::warn!(request_id = %id, %error, "the store cannot hand a request over");
            Taken::Unknown
        }
    }
}

/// Resumes, on this replica, the stream of a client that another replica served: from the
/// hand it left, the flight's items after the first `from`, then its end. The refusal to
/// answer instead: unknown (404), or read by another connection now (409).
pub(crate) async fn resume(
    gateway: &Gateway,
    fleet: &GatewayFleet,
    id: ClientId,
    tenant: [u8; 32],
    from: u64,
    record: Arc<Record>,
) -> Result<axum::response::Response, Refusal<'static>> {
    let lasting = Lasting::of(&gateway.settings);
    let (hand, holding) = match take(fleet, id, tenant, lasting, false).await {
        Taken::Yours(taken) => *taken,
        Taken::Busy => return Err(Refusal::RequestStreaming),
        Taken::Ended | Taken::Unknown => return Err(Refusal::RequestNotFound),
    };
    let Held::Detached { api, include_usage, place } = hand.state.clone() else {
        return Err(Refusal::RequestNotFound);
    };
    let replayed = match &place {
        Some(place) => fleet.replay(place, from).await.map_err(|error| {
            tracing::warn!(request_id = %id, %error, "the store cannot replay a stream for a resume");
        }),
        None => Err(()),
    };
    let Ok(replayed) = replayed else {
        holding.give_back(&hand).await;
        return Err(Refusal::RequestNotFound);
    };
    // A local flight of its own (a key no request body can make), so that the resumed
    // stream is a request like any here: cancel, detach and resume again all work.
    let key =
        Key { api, tenant: Some(tenant), selectors: "".into(), body: format!("resume {id} {from}").into() };
    let subscription = gateway.flights.request(key, async move { Ok(replayed) });
    let registry = Arc::clone(&gateway.registry);
    let asked = Asked { tenant, api, include_usage, record };
    let live = Live::enter(registry, id, subscription.id(), subscription.role(), asked);
    // Its local flight's first item is the answer's item `from`.
    gateway.registry.starts_at(id, from);
    let live = live.on_leave(holding.on_leave(api, include_usage, move |_| place));
    tracing::debug!(request_id = %id, from, "resumed from another replica");
    Ok(answer::resumed(api, subscription, live, include_usage, Numbered::From(from), &gateway.keeping))
}

/// The channel on which a replica is asked to cancel a request it holds.
fn cancels(replica: &str) -> String {
    format!("cancel:{replica}")
}

/// How long a `DELETE` waits for the replica that holds the request to say it cancelled it.
const CANCEL_WAIT: Duration = Duration::from_millis(500);

/// What a replica answers a cancel passed on to it.
const CANCELLED: &[u8] = b"cancelled";
/// ... when it does not hold the request (any more).
const UNKNOWN: &[u8] = b"unknown";

/// Carries out the cancels other replicas pass on to this one (for the tenant that made the
/// request only), each answered at once, for as long as the process runs.
pub(crate) fn serve_cancels(
    fleet: &GatewayFleet,
    registry: Arc<Registry>,
    flights: streamflight_tokio::Flights<Key, Part, UpstreamError>,
) {
    if tokio::runtime::Handle::try_current().is_err() {
        tracing::warn!("no runtime at start: cancels through other replicas are not served");
        return;
    }
    let mut messages = fleet.listen(&cancels(fleet.config().replica_id()));
    let fleet = fleet.clone();
    tokio::spawn(async move {
        while let Some(message) = messages.next().await {
            let Some((id, tenant, reply)) = parse_cancel(&message) else { continue };
            let found = registry.find(id, &tenant);
            let cancelled = found.is_some_and(|found| flights.cancel(found.request).is_ok());
            if cancelled {
                tracing::info!(request_id = %id, "cancelled by DELETE through another replica");
            }
            let answer = if cancelled { CANCELLED } else { UNKNOWN };
            if let Err(error) = fleet.reply(reply.as_bytes(), answer, CANCEL_WAIT * 4).await {
                tracing::warn!(request_id = %id, %error, "could not answer a cancel through the store");
            }
        }
    });
}

/// Who holds a request now, by its hand in the store.
pub(crate) enum Holder {
    /// This replica, or the store cannot say (what this replica has is all there is).
    Here,
    /// Another replica, by its id.
    Elsewhere(String),
    /// Nobody: no hand for this tenant (unknown, or lost with the store's data).
    Nobody,
    /// It got its end: nothing to cancel.
    Ended,
}

/// Who holds request `id` of `tenant` now: one store command.
pub(crate) async fn holder(fleet: &GatewayFleet, id: ClientId, tenant: [u8; 32]) -> Holder {
    let bytes = match fleet.load(hand_name(id).as_bytes()).await {
        Ok(Some(bytes)) => bytes,
        Ok(None) => return Holder::Nobody,
        Err(error) => {
            tracing::warn!(request_id = %id, %error, "the store cannot say who holds a request");
            return Holder::Here;
        }
    };
    match Hand::decode(&bytes) {
        Some(hand) if hand.tenant == tenant => match hand.state {
            Held::Ended => Holder::Ended,
            _ if hand.holder == fleet.config().replica_id() => Holder::Here,
            _ => Holder::Elsewhere(hand.holder),
        },
        _ => Holder::Nobody,
    }
}

/// Asks `replica` to cancel request `id` of `tenant`, and waits (up to `CANCEL_WAIT`, but
/// no longer than it takes it to answer) for whether it did: a `PUBLISH` and a blocking pop
/// of its answer, never a poll.
pub(crate) async fn cancel_at(fleet: &GatewayFleet, replica: &str, id: ClientId, tenant: [u8; 32]) -> bool {
    let reply = format!("cancelled:{}", ClientId::random());
    let message = format!("{id} {} {reply}", hex(&tenant));
    match fleet.ask(&cancels(replica), message.as_bytes(), reply.as_bytes(), CANCEL_WAIT).await {
        Ok(answer) => answer.as_deref() == Some(CANCELLED),
        Err(error) => {
            tracing::warn!(request_id = %id, %error, "could not pass a cancel to the replica that holds it");
            false
        }
    }
}

/// A cancel message: the client id, the tenant (hex) and the reply's name.
fn parse_cancel(message: &[u8]) -> Option<(ClientId, [u8; 32], String)> {
    let text = std::str::from_utf8(message).ok()?;
    let mut words = text.split(' ');
    let id = ClientId::parse(words.next()?)?;
    let tenant = words.next()?;
    let mut bytes = [0; 32];
    if tenant.len() != 64 {
        return None;
    }
    for (byte, pair) in bytes.iter_mut().zip(tenant.as_bytes().chunks(2)) {
        *byte = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some((id, bytes, words.next()?.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::{Hand, Held, parse_cancel};
    use crate::answer::registry::ClientId;
    use crate::dialect::Api;
    use crate::key::hex;

    #[test]
    fn a_cancel_message_reads_back_and_nothing_else_does() {
        let id = ClientId::random();
        let message = format!("{id} {} reply", hex(&[9; 32]));
        assert_eq!(parse_cancel(message.as_bytes()), Some((id, [9; 32], "reply".to_owned())));
        for bad in ["", "x y z", &format!("{id} 00 reply"), &format!("{id} {}", hex(&[9; 32]))] {
            assert_eq!(parse_cancel(bad.as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn every_hand_reads_back_and_a_cut_one_never_reads_as_it() {
        let place = "sf:{0000000000000000000000000000000000000000000000000000000000000000}:0123456789abcdef0123456789abcdef:abababababababababababababababababababababababababababababababab";
        let api = Api::named("messages").unwrap();
        let states = [
            Held::Reading { token: [1, 2, 3, 4, 5, 6, 7, 8] },
            Held::Detached { api, include_usage: true, place: Some(place.parse().unwrap()) },
            Held::Detached { api, include_usage: false, place: None },
            Held::Ended,
        ];
        for state in states {
            let hand = Hand { tenant: [7; 32], holder: "replica-b".to_owned(), state };
            let bytes = hand.encode();
            assert_eq!(Hand::decode(&bytes), Some(hand.clone()));
            for cut in 0..bytes.len() {
                assert_ne!(Hand::decode(&bytes[..cut]), Some(hand.clone()), "{cut}");
            }
        }
        assert_eq!(Hand::decode(b"X"), None);
    }
}
