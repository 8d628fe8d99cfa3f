//! After warm-up, a full flight cycle through the machine allocates nothing:
//! the key is moved in, ids index slabs that keep their capacity, actions reuse one queue.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use streamflight_core::{Config, Machine};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // Counted per thread, so the test harness's own threads do not interfere.
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

/// Every kind of input once: lead, follow, join, cancel in company, drop,
/// prepared, ended, finish, and a lone cancel that aborts.
fn cycle(machine: &mut Machine<String>, keys: &mut Vec<String>) {
    let drain = |m: &mut Machine<String>| while m.poll_action().is_some() {};
    let leader = machine.handle_request(keys.pop().unwrap());
    let follower = machine.handle_request(keys.pop().unwrap());
    drain(machine);
    machine.handle_cancel(leader.id).unwrap();
    machine.handle_prepared(leader.flight).unwrap();
    let joiner = machine.handle_request(keys.pop().unwrap());
    let dropped = machine.handle_request(keys.pop().unwrap());
    drain(machine);
    machine.handle_drop(dropped.id).unwrap();
    machine.handle_ended(leader.flight).unwrap();
    drain(machine);
    machine.handle_finished(follower.id).unwrap();
    machine.handle_finished(joiner.id).unwrap();
    let alone = machine.handle_request(keys.pop().unwrap());
    drain(machine);
    machine.handle_cancel(alone.id).unwrap();
    drain(machine);
    assert!(machine.is_idle());
}

#[test]
fn a_warm_flight_cycle_allocates_nothing_beyond_the_key() {
    let mut machine = Machine::new(Config::default());
    let key = String::from("the same prompt");
    let mut warm: Vec<String> = vec![key.clone(); 5];
    cycle(&mut machine, &mut warm);

    // The caller clones its key once per request, before the counted cycle.
    let mut keys: Vec<String> = vec![key.clone(); 5];
    let start = allocations();
    cycle(&mut machine, &mut keys);
    assert_eq!(allocations() - start, 0, "the machine allocated during a warm cycle");

    // The counter does count: a cold machine must allocate its slabs.
    let mut cold = Machine::new(Config::default());
    let start = allocations();
    cycle(&mut cold, &mut vec![key; 5]);
    assert!(allocations() - start > 5, "the allocation counter counts nothing");
}
