//! The control plane at work: a herd of identical requests, a leader that
//! cancels in company, a late joiner, and a lone request that is aborted.
//! Run with `cargo run -p streamflight-core --example walkthrough`.

use streamflight_core::{Config, Machine};

fn main() {
    let mut machine = Machine::new(Config::default());
    let step = |machine: &mut Machine<&str>, what: &str| {
        println!("{what}");
        while let Some(action) = machine.poll_action() {
            println!("    -> {action:?}");
        }
    };

    let leader = machine.handle_request("What is a flight?");
    step(&mut machine, &format!("request A for prompt 1: {:?}", leader.role));
    let follower = machine.handle_request("What is a flight?");
    step(&mut machine, &format!("request B for prompt 1: {:?}", follower.role));
    machine.handle_cancel(leader.id).unwrap();
    step(&mut machine, "A cancels in company: it alone ends (R10)");
    machine.handle_prepared(leader.flight).unwrap();
    step(&mut machine, "preparation succeeded: the upstream streams");
    let joiner = machine.handle_request("What is a flight?");
    step(&mut machine, &format!("request C for prompt 1: {:?}, replayed from item 0", joiner.role));
    machine.handle_ended(leader.flight).unwrap();
    step(&mut machine, "the upstream is done: the key is free before anyone reads Done (R7)");
    machine.handle_finished(follower.id).unwrap();
    machine.handle_finished(joiner.id).unwrap();
    step(&mut machine, "B and C read Done");

    let alone = machine.handle_request("A lonely prompt");
    step(&mut machine, &format!("request D for prompt 2: {:?}", alone.role));
    machine.handle_cancel(alone.id).unwrap();
    step(&mut machine, "D cancels alone: its flight is aborted (R11)");
    println!("{:?}", machine.stats());
    assert!(machine.is_idle(), "R16: nothing left behind");
}
