//! What one replica of a fleet hands another, through the library's hands
//! (`streamflight_redis::Flights::hold`): a resume, and a cancel (G5 across replicas).
//!
//! A request's hand is kept under its client id, for its tenant only; what a resume elsewhere
//! needs to write the stream as its client asked (its API, `include_usage`) is the hand's
//! context, and the library keeps where its flight is in the store.

use std::sync::Arc;
use std::time::Duration;

use streamflight_redis::{Holding, Taken, Ticket};

use crate::answer::registry::{Asked, ClientId, Leaving, Live, OnLeave, Registry};
use crate::answer::{self, Numbered};
use crate::dialect::Api;
use crate::dialect::error::Refusal;
use crate::flight::{Part, UpstreamError};
use crate::http::access::Record;
use crate::key::Key;
use crate::state::{Gateway, GatewayFlights};

/// A reading of a request by this replica, as its hand in the store says.
pub(crate) type Reading = Holding<Key, Part, UpstreamError>;

/// How long a `DELETE` waits for the replica that holds the request to say it cancelled it.
const CANCEL_WAIT: Duration = Duration::from_millis(500);

/// The ticket of a client's request: its id's bytes, so that the two read the same.
pub(crate) fn ticket(id: ClientId) -> Ticket {
    Ticket::from_bytes(id.bytes())
}

/// What a resume elsewhere needs to know of a detached request: its API (its name after the
/// usage flag, one byte).
fn context(api: Api, include_usage: bool) -> Vec<u8> {
    let mut context = vec![u8::from(include_usage)];
    context.extend_from_slice(api.name().as_bytes());
    context
}

/// The API and usage flag of a [`context`], if it is one.
fn read_context(context: &[u8]) -> Option<(Api, bool)> {
    let (&usage, name) = context.split_first()?;
    Some((Api::named(std::str::from_utf8(name).ok()?)?, usage == 1))
}

/// The hook a [`Live`] calls as it leaves the request: the hand then says detached here
/// (with what a resume elsewhere needs), or ended.
pub(crate) fn on_leave(reading: Reading, api: Api, include_usage: bool) -> OnLeave {
    Box::new(move |leaving| match leaving {
        Leaving::Detached(window) => reading.detached(window, &context(api, include_usage)),
        Leaving::Gone => reading.ended(),
    })
}

/// Resumes, on this replica, the stream of a client that another replica served: from the
/// hand it left, the flight's items after the first `from`, then its end. The refusal to
/// answer instead: unknown (404), or read by another connection now (409).
pub(crate) async fn resume(
    gateway: &Gateway,
    id: ClientId,
    tenant: [u8; 32],
    from: u64,
    record: Arc<Record>,
) -> Result<axum::response::Response, Refusal<'static>> {
    let taken = match gateway.flights.take(&ticket(id), &tenant, false).await {
        Taken::Yours(taken) => taken,
        Taken::Busy => return Err(Refusal::RequestStreaming),
        _ => return Err(Refusal::RequestNotFound),
    };
    let (Some((api, include_usage)), Some(place)) = (read_context(taken.context()), taken.place().cloned())
    else {
        taken.give_back().await;
        return Err(Refusal::RequestNotFound);
    };
    let subscription = match gateway.flights.replay(&place, from).await {
        Ok(subscription) => subscription.into_local(),
        Err(error) => {
            tracing::warn!(request_id = %id, %error, "the store cannot replay a stream for a resume");
            taken.give_back().await;
            return Err(Refusal::RequestNotFound);
        }
    };
    let registry = Arc::clone(&gateway.registry);
    let asked = Asked { tenant, api, include_usage, record };
    let live = Live::enter(registry, id, subscription.id(), subscription.role(), asked);
    // Its local flight's first item is the answer's item `from`.
    gateway.registry.starts_at(id, from);
    let live = live.on_leave(on_leave(taken.into_holding(), api, include_usage));
    tracing::debug!(request_id = %id, from, "resumed from another replica");
    Ok(answer::resumed(api, subscription, live, include_usage, Numbered::From(from), &gateway.keeping))
}

/// Carries out the cancels other replicas pass on to this one, for the tenant that made the
/// request only, for as long as the process runs.
pub(crate) fn serve_cancels(flights: &GatewayFlights, registry: Arc<Registry>) {
    let cancelling = flights.clone();
    flights.serve_cancels(move |ticket, tenant| {
        let (Some(id), Ok(tenant)) = (ClientId::of_bytes(ticket.bytes()), <[u8; 32]>::try_from(tenant))
        else {
            return false;
        };
        let cancelled =
            registry.find(id, &tenant).is_some_and(|found| cancelling.cancel(found.request).is_ok());
        if cancelled {
            tracing::info!(request_id = %id, "cancelled by DELETE through another replica");
        }
        cancelled
    });
}

/// Asks `replica` to cancel request `id` of `tenant`, and waits (up to [`CANCEL_WAIT`], but
/// no longer than it takes it to answer) for whether it did.
pub(crate) async fn cancel_at(gateway: &Gateway, replica: &str, id: ClientId, tenant: [u8; 32]) -> bool {
    gateway.flights.cancel_at(replica, &ticket(id), &tenant, CANCEL_WAIT).await
}

#[cfg(test)]
mod tests {
    use super::{context, read_context};
    use crate::dialect::Api;

    #[test]
    fn a_context_reads_back_and_a_cut_one_does_not() {
        for api in ["chat", "responses", "messages"] {
            let api = Api::named(api).unwrap();
            for usage in [true, false] {
                assert_eq!(read_context(&context(api, usage)), Some((api, usage)));
            }
        }
        assert_eq!(read_context(&[]), None);
        assert_eq!(read_context(b"\x01nothing"), None);
    }
}
