//! Notes that change hands, and a question one replica asks another, on a real `redis-server`:
//! a claim is taken once, a swap only from the value seen, and an answer is waited for without
//! polling (and not forever).

mod common;

use std::time::{Duration, Instant};

use futures::StreamExt;
use streamflight_redis::{Fleet, FleetConfig, Text};

use common::RedisServer;

fn fleet(server: &RedisServer, name: &str) -> Fleet<String, String, String> {
    Fleet::new(&server.url, Text, FleetConfig::default().replica(name)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_is_taken_once_and_a_swap_only_from_the_value_seen() {
    let Some(server) = RedisServer::start().await else { return };
    let (a, b) = (fleet(&server, "a"), fleet(&server, "b"));
    let ttl = Duration::from_secs(10);
    assert!(a.claim(b"hand", b"a reads", ttl).await.unwrap());
    assert!(!b.claim(b"hand", b"b reads", ttl).await.unwrap(), "taken");
    assert_eq!(b.load(b"hand").await.unwrap().as_deref(), Some(&b"a reads"[..]));
    // Two replicas swap from what they both saw: one of them gets it.
    a.save(b"hand", b"detached", ttl).await.unwrap();
    let (to_a, to_b) = tokio::join!(
        a.swap(b"hand", b"detached", b"a reads", ttl),
        b.swap(b"hand", b"detached", b"b reads", ttl)
    );
    assert!(to_a.unwrap() ^ to_b.unwrap(), "exactly one swap");
    assert!(!a.swap(b"nothing here", b"detached", b"a reads", ttl).await.unwrap(), "nothing to swap");
    assert_eq!(a.load(b"nothing here").await.unwrap(), None);
    assert_eq!(a.leading(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_is_waited_for_without_polling_and_not_forever() {
    let Some(server) = RedisServer::start().await else { return };
    let (a, b) = (fleet(&server, "a"), fleet(&server, "b"));
    // b answers every question on its channel.
    let mut questions = b.listen("questions:b");
    let answering = b.clone();
    tokio::spawn(async move {
        while let Some(question) = questions.next().await {
            let reply = String::from_utf8(question).unwrap();
            answering.reply(reply.as_bytes(), b"yes", Duration::from_secs(2)).await.unwrap();
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    // b may still be subscribing: ask until it answers.
    let answer = loop {
        if let Some(answer) =
            a.ask("questions:b", b"reply-1", b"reply-1", Duration::from_millis(200)).await.unwrap()
        {
            break answer;
        }
        assert!(Instant::now() < deadline, "b never answered");
    };
    assert_eq!(answer, b"yes");
    // Nobody on the channel: no answer, after the wait and not much later.
    let asked = Instant::now();
    assert_eq!(
        a.ask("questions:nobody", b"reply-2", b"reply-2", Duration::from_millis(200)).await.unwrap(),
        None
    );
    assert!(asked.elapsed() >= Duration::from_millis(150), "{:?}", asked.elapsed());
    assert!(asked.elapsed() < Duration::from_secs(5), "{:?}", asked.elapsed());
}

/// R24 for what changes hands: a claimed or swapped note is sealed in the store like a saved
/// one, and a message between replicas is sealed on the channel, so neither a dump of the
/// store nor a subscriber without the fleet's secret reads them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claimed_notes_and_messages_are_sealed_in_the_store_and_on_the_wire() {
    let Some(server) = RedisServer::start().await else { return };
    let secret = "a fleet secret of some length";
    let fleet = |name: &str| {
        let config = FleetConfig::default().replica(name).secret(secret);
        Fleet::<String, String, String>::new(&server.url, Text, config).unwrap()
    };
    let (a, b) = (fleet("a"), fleet("b"));
    let ttl = Duration::from_secs(10);
    assert!(a.claim(b"hand", b"claimed: planted-secret-1", ttl).await.unwrap());
    assert!(b.swap(b"hand", b"claimed: planted-secret-1", b"swapped: planted-secret-2", ttl).await.unwrap());
    assert_eq!(a.load(b"hand").await.unwrap().as_deref(), Some(&b"swapped: planted-secret-2"[..]));

    // A subscriber of the store, on the channel's name in the store.
    let client = redis::Client::open(server.url.as_str()).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub.subscribe("sf:signal:questions").await.unwrap();
    let mut raw = pubsub.into_on_message();
    let mut listened = b.listen("questions");
    let deadline = Instant::now() + Duration::from_secs(10);
    // b may still be subscribing: publish until it hears.
    let heard = loop {
        a.publish("questions", b"planted-secret-3").await.unwrap();
        if let Ok(Some(message)) = tokio::time::timeout(Duration::from_millis(100), listened.next()).await {
            break message;
        }
        assert!(Instant::now() < deadline, "b never heard");
    };
    assert_eq!(heard, b"planted-secret-3");
    let on_the_wire = raw.next().await.unwrap().get_payload_bytes().to_vec();
    let mut store = server.manager().await;
    let mut everything = on_the_wire;
    for (_, value) in common::dump(&mut store).await {
        everything.extend_from_slice(&value);
    }
    assert!(!everything.is_empty());
    assert!(
        !everything.windows(b"planted-secret".len()).any(|window| window == b"planted-secret"),
        "a note or a message in clear"
    );
}
