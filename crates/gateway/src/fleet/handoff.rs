//! What one replica of a fleet hands another: a resume (R18 across replicas: a detached
//! client's replica leaves a note, the one it comes back to replays from there), and a cancel
//! (G5 across replicas: a `DELETE` that lands elsewhere is passed to the replica serving it).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;

use streamflight_redis::{Fleet, Place};

use crate::answer::registry::{Asked, ClientId, Live, OnDetach, Registry};
use crate::answer::{self, Numbered};
use crate::dialect::Api;
use crate::flight::{Part, UpstreamError};
use crate::http::access::Record;
use crate::key::Key;
use crate::key::hex;
use crate::state::Gateway;

/// The fleet a gateway shares flights with.
pub(crate) type GatewayFleet = Fleet<Key, Part, UpstreamError>;

/// What a replica leaves for a detached client: whose it is, what it asked for, and where
/// its flight is. Kept for the resume window, under (a hash of) the client's id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Note {
    /// The tenant that made the request: no one else resumes it (G5).
    pub tenant: [u8; 32],
    /// `stream_options.include_usage` of its client.
    pub include_usage: bool,
    /// Its API: how its resumed stream is written.
    pub api: Api,
    /// Its flight in the store.
    pub place: Place,
}

impl Note {
    /// The note's bytes: the tenant, the usage flag, the API's name after its length (one
    /// byte), the place as text.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut bytes = self.tenant.to_vec();
        bytes.push(u8::from(self.include_usage));
        let name = self.api.name().as_bytes();
        bytes.push(name.len() as u8);
        bytes.extend_from_slice(name);
        bytes.extend_from_slice(self.place.to_string().as_bytes());
        bytes
    }

    /// A note from its bytes, if they are one.
    pub(crate) fn decode(bytes: &[u8]) -> Option<Note> {
        let (tenant, rest) = bytes.split_first_chunk::<32>()?;
        let (&usage, rest) = rest.split_first()?;
        let (&length, rest) = rest.split_first()?;
        let name = rest.get(..usize::from(length))?;
        let api = Api::named(std::str::from_utf8(name).ok()?)?;
        let place = std::str::from_utf8(&rest[usize::from(length)..]).ok()?.parse().ok()?;
        Some(Note { tenant: *tenant, include_usage: usage == 1, api, place })
    }
}

/// The detach hook of a request on `fleet`: when its client goes away, the note (if its
/// flight is in the store) is saved for the window, in the background.
pub(crate) fn on_detach(
    fleet: GatewayFleet,
    id: ClientId,
    place: impl FnOnce(&GatewayFleet) -> Option<Place> + Send + Sync + 'static,
    tenant: [u8; 32],
    api: Api,
    include_usage: bool,
) -> OnDetach {
    Box::new(move |window| {
        let Some(place) = place(&fleet) else {
            return;
        };
        let note = Note { tenant, include_usage, api, place }.encode();
        tokio::spawn(async move {
            if let Err(error) = fleet.save(id.to_string().as_bytes(), &note, window).await {
                tracing::warn!(request_id = %id, %error, "could not leave a resume note in the store");
            }
        });
    })
}

/// Resumes, on this replica, the stream of a client that another replica served: from the
/// note it left, the flight's items after the first `from`, then its end. `None` when there
/// is no note for this tenant (an unknown id, for the caller to answer as such).
pub(crate) async fn resume(
    gateway: &Gateway,
    fleet: &GatewayFleet,
    id: ClientId,
    tenant: [u8; 32],
    from: u64,
    record: Arc<Record>,
) -> Option<axum::response::Response> {
    let note = match fleet.load(id.to_string().as_bytes()).await {
        Ok(note) => Note::decode(&note?)?,
        Err(error) => {
            tracing::warn!(request_id = %id, %error, "the store cannot be asked for a resume note");
            return None;
        }
    };
    if note.tenant != tenant {
        return None;
    }
    let replayed = match fleet.replay(&note.place, from).await {
        Ok(replayed) => replayed,
        Err(error) => {
            tracing::warn!(request_id = %id, %error, "the store cannot replay a stream for a resume");
            return None;
        }
    };
    // A local flight of its own (a key no request body can make), so that the resumed
    // stream is a request like any here: cancel, detach and resume again all work.
    let api = note.api;
    let key =
        Key { api, tenant: Some(tenant), selectors: "".into(), body: format!("resume {id} {from}").into() };
    let subscription = gateway.flights.request(key, async move { Ok(replayed) });
    let registry = Arc::clone(&gateway.registry);
    let asked = Asked { tenant, api, include_usage: note.include_usage, record };
    let live = Live::enter(registry, id, subscription.id(), subscription.role(), asked);
    let place = note.place.clone();
    let live =
        live.on_detach(on_detach(fleet.clone(), id, move |_| Some(place), tenant, api, note.include_usage));
    tracing::debug!(request_id = %id, from, "resumed from another replica");
    Some(answer::resumed(api, subscription, live, note.include_usage, Numbered::From(from), &gateway.keeping))
}

/// The channel on which a replica asks the others to cancel a request it does not serve.
const CANCEL: &str = "cancel";

/// How long a `DELETE` waits for the replica that serves the request to say it cancelled it.
const CANCEL_WAIT: Duration = Duration::from_millis(500);

/// Carries out the cancels other replicas pass on (for the tenant that made the request
/// only), each answered with a note, for as long as the process runs.
pub(crate) fn serve_cancels(
    fleet: &GatewayFleet,
    registry: Arc<Registry>,
    flights: streamflight_tokio::Flights<Key, Part, UpstreamError>,
) {
    if tokio::runtime::Handle::try_current().is_err() {
        tracing::warn!("no runtime at start: cancels through other replicas are not served");
        return;
    }
    let mut messages = fleet.listen(CANCEL);
    let fleet = fleet.clone();
    tokio::spawn(async move {
        while let Some(message) = messages.next().await {
            let Some((id, tenant, reply)) = parse_cancel(&message) else { continue };
            let Some(found) = registry.find(id, &tenant) else { continue };
            if flights.cancel(found.request).is_ok() {
                tracing::info!(request_id = %id, "cancelled by DELETE through another replica");
                if let Err(error) = fleet.save(reply.as_bytes(), b"cancelled", CANCEL_WAIT * 4).await {
                    tracing::warn!(request_id = %id, %error, "could not answer a cancel through the store");
                }
            }
        }
    });
}

/// Asks the other replicas to cancel `id` of `tenant`: whether the one serving it did, within
/// half a second (`CANCEL_WAIT`).
pub(crate) async fn cancel_elsewhere(fleet: &GatewayFleet, id: ClientId, tenant: [u8; 32]) -> bool {
    let reply = ClientId::random().to_string();
    let message = format!("{id} {} {reply}", hex(&tenant));
    if let Err(error) = fleet.publish(CANCEL, message.as_bytes()).await {
        tracing::warn!(request_id = %id, %error, "could not pass a cancel to the other replicas");
        return false;
    }
    let deadline = Instant::now() + CANCEL_WAIT;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = fleet.load(reply.as_bytes()).await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

/// A cancel message: the client id, the tenant (hex) and the reply note's name.
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
    use super::{Note, parse_cancel};
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
    fn a_note_reads_back_and_a_cut_one_does_not() {
        let place = "sf:{0000000000000000000000000000000000000000000000000000000000000000}:0123456789abcdef0123456789abcdef:abababababababababababababababababababababababababababababababab";
        let api = Api::named("messages").unwrap();
        let note = Note { tenant: [7; 32], include_usage: true, api, place: place.parse().unwrap() };
        let bytes = note.encode();
        assert_eq!(Note::decode(&bytes), Some(note));
        for cut in 0..bytes.len() {
            assert_eq!(Note::decode(&bytes[..cut]), None, "{cut}");
        }
    }
}
