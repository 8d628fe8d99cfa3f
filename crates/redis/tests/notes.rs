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
