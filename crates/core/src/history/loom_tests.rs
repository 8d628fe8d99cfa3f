//! loom models of the history: every interleaving (up to the preemption bound)
//! of append, read, close, cancel, subscribe, drop and truncation. Chunks hold
//! 1 item, then 2 (`MAX_CHUNK_SHIFT`), so the models cross chunks both while
//! they grow and once they are full size.
//! Run: `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test -p streamflight-core --release --lib loom_`.

use std::future::poll_fn;
use std::task::Poll;
use std::vec::Vec;

use loom::future::block_on;
use loom::thread;

use super::*;

/// Reads until the end (parking through loom's own waker, so a lost wake-up
/// is reported as a deadlock), checks `None` follows it, returns the events.
fn read_all(reader: &mut Reader<u32, u8>) -> Vec<Event<u32, u8>> {
    let mut events = Vec::new();
    loop {
        let event = block_on(poll_fn(|cx| reader.poll_next(cx)));
        match event {
            Some(event) => {
                let end = event.is_end();
                events.push(event);
                if end {
                    let after = block_on(poll_fn(|cx| reader.poll_next(cx)));
                    assert_eq!(after, None, "nothing after the end");
                    return events;
                }
            }
            None => panic!("None before the end"),
        }
    }
}

fn items_then(range: core::ops::Range<u32>, end: Event<u32, u8>) -> Vec<Event<u32, u8>> {
    let mut events: Vec<_> = range.map(Event::Item).collect();
    events.push(end);
    events
}

/// `events` is `Item(0..k)` then one end; returns `k`.
fn prefix_len(events: &[Event<u32, u8>]) -> u32 {
    let (end, items) = events.split_last().expect("an end");
    assert!(end.is_end());
    for (index, event) in items.iter().enumerate() {
        assert_eq!(*event, Event::Item(index as u32), "in order, no gap, no duplicate");
    }
    items.len() as u32
}

fn no_waker_left(history: &History<u32, u8>) {
    let table = lock(&history.wakers.table);
    assert_eq!(table.free.len(), table.slots.len());
    assert!(table.slots.iter().all(|slot| slot.waker.is_none()));
}

/// Reads `count` items (no end), parking through loom's waker in between.
fn read_items(reader: &mut Reader<u32, u8>, count: u32) {
    for expected in 0..count {
        let event = block_on(poll_fn(|cx| reader.poll_next(cx)));
        assert_eq!(event, Some(Event::Item(expected)), "in order, no gap, no duplicate");
    }
}

#[test]
fn loom_writer_and_two_readers() {
    loom::model(|| {
        let history = History::<u32, u8>::new(None);
        let mut first = History::subscribe_to(&history, Position::Start);
        let mut second = History::subscribe_to(&history, Position::Start);
        // The readers must get every item from the appends' wake-ups alone:
        // the end is published only once both have read them all.
        let other = thread::spawn(move || {
            read_items(&mut second, 4);
            second
        });
        let writer = {
            let history = history.clone();
            thread::spawn(move || {
                history.append(0); // chunk [0]
                history.extend([1, 2, 3]); // fills [1, 2], starts [3, 4]
            })
        };
        read_items(&mut first, 4);
        let mut second = other.join().unwrap();
        writer.join().unwrap();
        history.close(End::Done);
        assert_eq!(read_all(&mut first), [Event::Done]);
        assert_eq!(read_all(&mut second), [Event::Done]);
        drop((first, second));
        no_waker_left(&history);
    });
}

#[test]
fn loom_batches_published_unwoken_then_one_wake() {
    loom::model(|| {
        let history = History::<u32, u8>::new(None);
        let mut reader = History::subscribe_to(&history, Position::Start);
        // The reader gets every item from the one wake that follows both publications:
        // the end is published only once it has read them all.
        let writer = {
            let history = history.clone();
            thread::spawn(move || {
                for item in [0, 1] {
                    let mut batch = history.batch();
                    batch.push(item);
                    drop(batch);
                    assert!(history.publish_unwoken());
                }
                assert!(!history.publish_unwoken(), "nothing new");
                history.wake();
            })
        };
        read_items(&mut reader, 2);
        writer.join().unwrap();
        history.close(End::Done);
        assert_eq!(read_all(&mut reader), [Event::Done]);
        drop(reader);
        no_waker_left(&history);
    });
}

#[test]
fn loom_cancel_while_appending() {
    loom::model(|| {
        let history = History::<u32, u8>::new(None);
        let mut reader = History::subscribe_to(&history, Position::Start);
        let canceller = reader.canceller();
        let writer = {
            let history = history.clone();
            thread::spawn(move || {
                history.append(0);
                history.append(1);
            })
        };
        let cancel = thread::spawn(move || canceller.cancel());
        // No close: only the cancel (and its wake-up) can end the reader.
        let events = read_all(&mut reader);
        assert!(cancel.join().unwrap());
        writer.join().unwrap();
        assert!(prefix_len(&events) <= 2);
        assert_eq!(events.last(), Some(&Event::Cancelled));
        // A cancel wins over the end too, and is reported once.
        let mut late = History::subscribe_to(&history, Position::Tail);
        history.close(End::Done);
        assert!(late.canceller().cancel());
        assert_eq!(read_all(&mut late), [Event::Cancelled]);
        drop((reader, late));
        no_waker_left(&history);
    });
}

#[test]
fn loom_drop_while_appending_and_closing() {
    loom::model(|| {
        let history = History::<u32, u8>::new(None);
        let mut reader = History::subscribe_to(&history, Position::Start);
        let mut other = History::subscribe_to(&history, Position::Start);
        let canceller = reader.canceller();
        let dropper = thread::spawn(move || {
            // Park once (registering a waker) if nothing is there yet, then drop.
            block_on(poll_fn(|cx| {
                let _ = reader.poll_next(cx);
                Poll::Ready(())
            }));
            drop(reader);
        });
        let writer = {
            let history = history.clone();
            thread::spawn(move || {
                history.append(0);
                history.close(End::Done);
            })
        };
        assert_eq!(read_all(&mut other), items_then(0..1, Event::Done));
        dropper.join().unwrap();
        writer.join().unwrap();
        assert!(!canceller.cancel(), "dropped");
        drop(other);
        no_waker_left(&history);
    });
}

#[test]
fn loom_subscribe_races_close() {
    loom::model(|| {
        let history = History::<u32, u8>::new(None);
        let writer = {
            let history = history.clone();
            thread::spawn(move || {
                history.append(0);
                history.close(End::upstream(3));
            })
        };
        let end = Event::Failed(Failure::Upstream(std::sync::Arc::new(3)));
        let mut tail = History::subscribe_to(&history, Position::Tail);
        let mut start = History::subscribe_to(&history, Position::Start);
        let tail_events = read_all(&mut tail);
        assert!(
            tail_events == items_then(0..1, end.clone()) || tail_events == [end.clone()],
            "{tail_events:?}"
        );
        assert_eq!(read_all(&mut start), items_then(0..1, end));
        writer.join().unwrap();
    });
}

/// Races a `Start` reader of `history` against a writer thread that runs `write`, then
/// closes: the reader reads all `items` and `Done`, or lags, `missed` being exactly the released
/// items it had not read (`released` at most, in all). The reader is dropped on return.
fn race_truncation(history: &Arc<History<u32, u8>>, items: u32, released: u64, write: fn(&History<u32, u8>)) {
    let mut reader = History::subscribe_to(history, Position::Start);
    let writer = {
        let history = history.clone();
        thread::spawn(move || {
            write(&history);
            history.close(End::Done);
        })
    };
    let events = read_all(&mut reader);
    writer.join().unwrap();
    let read = prefix_len(&events);
    match events.last() {
        Some(Event::Done) => assert_eq!(read, items),
        Some(Event::Failed(Failure::Lagged { missed })) => {
            assert!(*missed >= 1 && u64::from(read) + missed <= released, "{events:?}");
        }
        other => panic!("unexpected end {other:?}"),
    }
}

#[test]
fn loom_truncation_races_slow_reader() {
    loom::model(|| {
        // Limit 1: chunks of one item, each append past the first releases one.
        let history = History::<u32, u8>::new(Some(1));
        race_truncation(&history, 3, 2, |history| {
            history.extend([0, 1]);
            history.append(2);
        });
        // What is retained is the window: the last item only (plus none pinned).
        assert_eq!(lock(&history.state).chunks.len(), 1);
    });
}

#[test]
fn loom_truncation_of_growing_chunks_races_reader() {
    loom::model(|| {
        // Limit 4: chunks [0], [1, 2], [3, 4], [5, 6]; 7 items release 3,
        // that is the first two chunks, at two different appends.
        let history = History::<u32, u8>::new(Some(4));
        race_truncation(&history, 7, 3, |history| {
            history.extend([0, 1, 2]);
            history.extend([3, 4, 5]); // releases [0]
            history.append(6); // releases [1, 2]
        });
        // The retained chunks are [3, 4] and [5, 6]; the reader pinned none past its end.
        let state = lock(&history.state);
        assert_eq!(state.chunks.iter().map(|chunk| chunk.number()).collect::<Vec<_>>(), [2, 3]);
    });
}

#[test]
fn loom_a_bound_in_bytes_moves_the_window_races_reader() {
    loom::model(|| {
        // Item i weighs i bytes, at most 5 retained: [0, 1, 2] fit, 3 releases 0 and 1,
        // 4 releases 2 and 3: the window's start moves by what items weigh, not by count.
        let history = History::<u32, u8>::weighed(None, Some(5), Some(|item: &u32| *item as usize));
        race_truncation(&history, 5, 4, |history| {
            history.extend([0, 1, 2]);
            history.append(3);
            history.append(4);
        });
        assert_eq!((history.released(), history.bytes()), (4, 4));
        // Chunks [0], [1, 2], [3, 4]: only the last holds a retained item.
        let state = lock(&history.state);
        assert_eq!(state.chunks.iter().map(|chunk| chunk.number()).collect::<Vec<_>>(), [2]);
    });
}
