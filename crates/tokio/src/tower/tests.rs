//! The layer in process, without sockets: trailers are shared and replayed to a late joiner,
//! a non-JSON body keys by its bytes, and the role header's name is the caller's.

use std::convert::Infallible;
use std::future::{Ready, poll_fn, ready};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body::{Body, Frame};
use tower_layer::Layer;
use tower_service::Service;

use super::{CoalesceLayer, CoalescedBody, RequestBody};
use crate::Config;

/// A body of one data frame and its trailers.
struct Trailed {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl Body for Trailed {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let frame = match self.data.take() {
            Some(data) => Frame::data(data),
            None => match self.trailers.take() {
                Some(trailers) => Frame::trailers(trailers),
                None => return Poll::Ready(None),
            },
        };
        Poll::Ready(Some(Ok(frame)))
    }
}

/// An inner service that counts its calls and answers with the request's body and a trailer.
#[derive(Clone, Default)]
struct Echo {
    calls: Arc<AtomicUsize>,
}

impl Service<Request<RequestBody<String>>> for Echo {
    type Response = Response<Trailed>;
    type Error = Infallible;
    type Future = Ready<Result<Response<Trailed>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<RequestBody<String>>) -> Self::Future {
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        let mut trailers = HeaderMap::new();
        trailers.insert("x-call", HeaderValue::from(call));
        let data = Some(Bytes::from(format!("{:?}", request.body())));
        ready(Ok(Response::new(Trailed { data, trailers: Some(trailers) })))
    }
}

/// The data and the trailers of `body`.
async fn read(body: CoalescedBody<Trailed>) -> (Vec<Bytes>, Option<HeaderMap>) {
    let mut body = Box::pin(body);
    let (mut data, mut trailers) = (Vec::new(), None);
    while let Some(frame) = poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
        match frame.unwrap().into_data() {
            Ok(chunk) => data.push(chunk),
            Err(frame) => trailers = frame.into_trailers().ok(),
        }
    }
    (data, trailers)
}

fn post(body: &str) -> Request<String> {
    Request::post("/echo").body(body.to_owned()).unwrap()
}

#[tokio::test]
async fn trailers_are_shared_and_replayed_to_a_late_joiner() {
    // A finished answer lingers: the second request replays all of it, trailers included.
    let layer = CoalesceLayer::new(Config::default().linger(Duration::from_secs(60)));
    let echo = Echo::default();
    let mut service = layer.layer(echo.clone());
    let first = service.call(post("[1, 2.0]")).await.unwrap();
    assert_eq!(first.headers()["x-streamflight-role"], "leader");
    let (data, trailers) = read(first.into_body()).await;
    let second = service.call(post("[1,2]")).await.unwrap();
    assert_eq!(second.headers()["x-streamflight-role"], "joiner");
    assert_eq!(read(second.into_body()).await, (data, trailers.clone()));
    assert_eq!(trailers.unwrap()["x-call"], "0");
    assert_eq!(echo.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_body_that_is_not_json_keys_by_its_bytes() {
    let layer = CoalesceLayer::new(Config::default().linger(Duration::from_secs(60)))
        .role_header(http::HeaderName::from_static("x-role"));
    let echo = Echo::default();
    let mut service = layer.layer(echo.clone());
    for body in ["not json", "not  json", "not json"] {
        let response = service.call(post(body)).await.unwrap();
        assert!(response.headers().contains_key("x-role"));
        read(response.into_body()).await;
    }
    assert_eq!(echo.calls.load(Ordering::SeqCst), 2, "the third is the first's");
}
