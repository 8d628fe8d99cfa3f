//! Arbitrary bytes as a fleet schedule (replicas, clients, store faults), simulated with the
//! fleet's machines and every invariant checked after each step.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    streamflight_core::testkit::check_fleet(data);
});
