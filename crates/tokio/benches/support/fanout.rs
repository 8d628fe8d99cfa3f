//! streamflight's side of the fan-out workload through `Flights`, shared by the `flights`
//! bench and the `fanout_check` example: one flight, K subscriptions each read by its own task.

use std::hint::black_box;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use streamflight_tokio::{Event, Flights};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The fan-out's upstream: its items, all ready (full speed) or, paced, with a `Pending`
/// after every item that wakes itself, as a trickling token stream.
pub struct Upstream {
    items: std::vec::IntoIter<Bytes>,
    paced: bool,
    /// Paced, and the last poll yielded an item.
    rest: bool,
}

impl Stream for Upstream {
    type Item = Result<Bytes, ()>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if std::mem::take(&mut self.rest) {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let item = self.items.next();
        self.rest = self.paced && item.is_some();
        Poll::Ready(item.map(Ok))
    }
}

/// K requests for one key on `flights` (made untimed: the leader's preparation waits for its
/// go), then the clock starts, a task per subscription reads it to its end, and the go is
/// given: the clock's start and each reader's count of items.
pub fn streamflight(
    flights: &Flights<u64, Bytes, ()>,
    items: Vec<Bytes>,
    k: usize,
    paced: bool,
) -> (Instant, Vec<JoinHandle<usize>>) {
    let (go, ready) = oneshot::channel::<()>();
    let upstream = async move {
        ready.await.map_err(drop)?;
        Ok(Upstream { items: items.into_iter(), paced, rest: false })
    };
    let mut subscriptions = vec![flights.request(0, upstream)];
    subscriptions.extend((1..k).map(|_| flights.request(0, async { Err::<Upstream, ()>(()) })));
    let start = Instant::now();
    let readers = subscriptions
        .into_iter()
        .map(|mut answer| {
            tokio::spawn(async move {
                let mut read = 0;
                while let Some(event) = answer.next().await {
                    match event {
                        Event::Item(item) => {
                            black_box(item);
                            read += 1;
                        }
                        Event::Done => {}
                        other => panic!("{other:?}"),
                    }
                }
                read
            })
        })
        .collect();
    go.send(()).expect("the flight is preparing");
    (start, readers)
}
