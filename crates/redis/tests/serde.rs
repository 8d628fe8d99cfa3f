//! The serde codec across two replicas on a real `redis-server`: a service's own item and error
//! types, with no codec written by hand, reach the replica that follows the flight intact.

mod common;

use std::sync::Arc;

use common::{RedisServer, eventually};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use streamflight_redis::{Fleet, FleetConfig, Flights, Lost, SerdeCodec};
use streamflight_tokio::{Config, Event, Failure};
use tokio::sync::Semaphore;

/// An item with structure and bytes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Token {
    index: u32,
    text: String,
    logprob: Option<f32>,
}

/// An error that is not `Clone` and carries what a client acts on.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum Error {
    RateLimited { retry_after: u32, body: Vec<u8> },
    Fleet(String),
}

impl From<Lost> for Error {
    fn from(lost: Lost) -> Error {
        Error::Fleet(lost.to_string())
    }
}

type Key = (String, u32);
type Replica = Flights<Key, Token, Error>;

fn replica(server: &RedisServer, name: &str) -> Replica {
    let fleet = Fleet::new(&server.url, SerdeCodec::default(), FleetConfig::default().replica(name)).unwrap();
    Flights::new(fleet, Config::default())
}

fn token(index: u32) -> Token {
    Token { index, text: format!("tok{index}"), logprob: index.is_multiple_of(2).then_some(-0.5) }
}

/// Two tokens, then (once the test lets it go) the upstream's own error.
async fn answer(
    gate: Arc<Semaphore>,
) -> Result<futures::stream::BoxStream<'static, Result<Token, Error>>, Error> {
    let tokens = futures::stream::iter([Ok(token(0)), Ok(token(1))]);
    let error = futures::stream::once(async move {
        gate.acquire().await.unwrap().forget();
        Err(Error::RateLimited { retry_after: 3, body: b"{\"error\":\"slow down\"}".to_vec() })
    });
    Ok(tokens.chain(error).boxed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_error_and_structured_items_cross_replicas_through_the_serde_codec() {
    let Some(server) = RedisServer::start().await else { return };
    let (a, b) = (replica(&server, "a"), replica(&server, "b"));
    let gate = Arc::new(Semaphore::new(0));
    let key: Key = ("the same prompt".to_owned(), 7);
    let leader = tokio::spawn(a.request(key.clone(), answer(Arc::clone(&gate))).collect::<Vec<_>>());
    eventually("a leads", || a.fleet_stats().led == 1).await;
    let follower = tokio::spawn(b.request(key, answer(Arc::clone(&gate))).collect::<Vec<_>>());
    eventually("b follows a's flight", || b.fleet_stats().remote_joins == 1).await;
    gate.add_permits(1);
    let expected = Error::RateLimited { retry_after: 3, body: b"{\"error\":\"slow down\"}".to_vec() };
    for (replica, events) in [("a", leader.await.unwrap()), ("b", follower.await.unwrap())] {
        let items: Vec<_> = events
            .iter()
            .filter_map(|event| if let Event::Item(item) = event { Some(item) } else { None })
            .collect();
        assert_eq!(items, [&token(0), &token(1)], "{replica}");
        match events.last() {
            Some(Event::Failed(Failure::Upstream(error))) => assert_eq!(**error, expected, "{replica}"),
            other => panic!("{replica}: the upstream's own error, not {other:?}"),
        }
    }
    assert_eq!(b.fleet_stats().led, 0, "b ran no upstream");
}
