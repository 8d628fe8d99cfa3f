//! Small-scope exhaustive check: every input sequence up to `DEPTH` over two
//! keys and three requests, under every config, checked step by step.

use streamflight_core::testkit::{Harness, Input, configs, timed};

/// Inputs per sequence: depth 6 checks about 4.3 million inputs in seconds;
/// CI also runs depth 7 (47 million) through `STREAMFLIGHT_EXHAUSTIVE_DEPTH`.
const DEPTH: usize = 6;
const MAX_REQUESTS: usize = 3;

/// Every input that can be fed in the harness's state: requests and joins for
/// both keys while fewer than three requests were made, and each flight or
/// request input on every flight and request so far plus a foreign one. Under
/// a config with time (R17, R18), the inputs of time too: a flight done (it may
/// linger), a detach, a resume, the clock to the next deadline.
fn alphabet(harness: &Harness) -> Vec<Input> {
    let model = harness.model();
    let timed = timed(model.config());
    let (flights, requests) = (model.flights() as u8, model.requests() as u8);
    let mut inputs = Vec::new();
    if model.requests() < MAX_REQUESTS {
        inputs.extend([Input::Request(0), Input::Request(1), Input::Join(0), Input::Join(1)]);
    }
    for f in 0..=flights {
        inputs.extend([Input::Prepared(f), Input::Truncated(f), Input::Ended(f)]);
        if timed {
            inputs.push(Input::Done(f));
        }
    }
    for r in 0..=requests {
        inputs.extend([Input::Cancel(r), Input::Drop(r), Input::Finish(r)]);
        if timed {
            inputs.extend([Input::Detach(r), Input::Resume(r)]);
        }
    }
    if timed {
        inputs.push(Input::Advance);
    }
    inputs
}

/// Depth-first over every sequence. A refused input is checked (the machine must
/// be unchanged) but not extended: its continuations are the parent's. A join that
/// is admitted is checked but not extended either: it leaves the very state the
/// request for its key leaves (compared here), whose continuations are explored.
fn explore(harness: &Harness, depth: usize, visited: &mut u64) {
    if depth == 0 {
        return;
    }
    for input in alphabet(harness) {
        let mut next = harness.clone();
        *visited += 1;
        if !next.step(input) {
            continue;
        }
        if let Input::Join(key) = input {
            let mut request = harness.clone();
            request.step(Input::Request(key));
            assert_eq!(next.snapshot(), request.snapshot(), "{input:?} and a request part ways");
            continue;
        }
        explore(&next, depth - 1, visited);
    }
}

#[test]
fn every_sequence_up_to_depth() {
    let depth =
        std::env::var("STREAMFLIGHT_EXHAUSTIVE_DEPTH").ok().and_then(|d| d.parse().ok()).unwrap_or(DEPTH);
    // One thread per config: the enumeration is embarrassingly parallel.
    let visited: u64 = std::thread::scope(|scope| {
        let workers: Vec<_> = configs()
            .into_iter()
            .map(|config| {
                scope.spawn(move || {
                    let mut visited = 0;
                    explore(&Harness::new(config), depth, &mut visited);
                    visited
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().expect("a sequence broke an invariant")).sum()
    });
    let configs = configs().len();
    println!(
        "exhaustive: {visited} inputs checked, every sequence up to {depth} inputs under {configs} configs"
    );
    assert!(visited > 100_000, "the enumeration is smaller than it should be: {visited}");
}
