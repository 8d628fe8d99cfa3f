//! The observer's hooks ([`Observer`]): what a service hears of its flights and requests, in
//! order, for a scenario that has every kind of event, on every adapter.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use streamflight_core::{FlightId, FlightSummary, Observer, Outcome, RequestEvent, RequestId};
use streamflight_tests::doubles::Script;
use streamflight_tests::wait::eventually;
use streamflight_tests::{Config, Event, Failure, Role, TestRuntime, scenarios};

use super::{Error, expect_item, gate, manager, to_end};

scenarios! {
    hooks_tell_a_flight_and_its_requests_in_order,
}

/// What the recorder heard, one entry per hook call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Heard {
    Started(FlightId),
    FirstItem(FlightId),
    Ended(FlightId, Outcome, u64, u64),
    Request(RequestId, RequestEvent),
}

/// An observer that records every call, in the order it heard them.
#[derive(Default)]
struct Recorder(Mutex<Vec<Heard>>);

impl Recorder {
    fn heard(&self) -> Vec<Heard> {
        self.0.lock().unwrap().clone()
    }

    fn has(&self, heard: Heard) -> bool {
        self.0.lock().unwrap().contains(&heard)
    }

    fn push(&self, heard: Heard) {
        self.0.lock().unwrap().push(heard);
    }
}

impl Observer for Recorder {
    fn flight_started(&self, flight: FlightId) {
        self.push(Heard::Started(flight));
    }

    fn first_item(&self, flight: FlightId) {
        self.push(Heard::FirstItem(flight));
    }

    fn flight_ended(&self, flight: FlightId, summary: FlightSummary) {
        self.push(Heard::Ended(flight, summary.outcome, summary.items, summary.served));
    }

    fn request(&self, id: RequestId, event: RequestEvent) {
        self.push(Heard::Request(id, event));
    }
}

/// A leader and a follower share a flight; its first item is told; a joiner comes, the
/// follower is cancelled, the joiner detaches and resumes; the upstream fails, and the flight's
/// end (one item, three requests served) is told before either reader sees it. A lone request
/// dropped then abandons its flight: its drop, then the flight's abort.
async fn hooks_tell_a_flight_and_its_requests_in_order<R: TestRuntime>() {
    let recorder = Arc::new(Recorder::default());
    let config = Config::default().resume_window(Duration::from_secs(60)).observer(recorder.clone());
    let flights = manager::<R>(config);
    let prepare = gate();
    let mut leader = flights.request("k", prepare.start());
    let follower = flights.request("k", prepare.start());
    assert_eq!(follower.role(), Role::Follower);
    let follower_id = follower.id();
    let script = Script::<u64, Error>::new();
    prepare.open(script.stream());
    script.push(1);
    expect_item::<R>(&mut leader, 1).await;
    let flight = match recorder.heard()[0] {
        Heard::Started(flight) => flight,
        other => panic!("a flight's start is told first, not {other:?}"),
    };
    eventually::<R>("the first item to be told", || recorder.has(Heard::FirstItem(flight))).await;
    let joiner = flights.request("k", prepare.start());
    assert_eq!(joiner.role(), Role::Joiner);
    follower.cancel();
    let joiner_id = joiner.detach();
    let mut resumed = flights.resume(joiner_id, 1).expect("within the window");
    script.fail("boom");
    let (items, end) = to_end::<R>(&mut leader).await;
    assert!(items.is_empty() && matches!(end, Event::Failed(Failure::Upstream(_))), "{end:?}");
    assert!(matches!(to_end::<R>(&mut resumed).await.1, Event::Failed(_)));
    drop(follower);

    let alone = flights.request("a", prepare.start());
    let alone_id = alone.id();
    drop(alone);
    let heard = recorder.heard();
    let abandoned = heard.iter().rev().find_map(|heard| match heard {
        Heard::Started(abandoned) => Some(*abandoned),
        _ => None,
    });
    let abandoned = abandoned.expect("the second flight's start is told");

    let joined = |id, role| Heard::Request(id, RequestEvent::Joined { flight, role });
    let expected = [
        Heard::Started(flight),
        joined(leader.id(), Role::Leader),
        joined(follower_id, Role::Follower),
        Heard::FirstItem(flight),
        joined(joiner_id, Role::Joiner),
        Heard::Request(follower_id, RequestEvent::Cancelled),
        Heard::Request(joiner_id, RequestEvent::Detached),
        Heard::Request(joiner_id, RequestEvent::Resumed { from: 1 }),
        Heard::Ended(flight, Outcome::Failed, 1, 3),
        Heard::Request(leader.id(), RequestEvent::Finished),
        Heard::Request(joiner_id, RequestEvent::Finished),
        Heard::Started(abandoned),
        Heard::Request(alone_id, RequestEvent::Joined { flight: abandoned, role: Role::Leader }),
        Heard::Request(alone_id, RequestEvent::Dropped),
        Heard::Ended(abandoned, Outcome::Aborted, 0, 1),
    ];
    assert_eq!(heard, expected, "on {}", R::NAME);
}
