//! Arbitrary inputs into the control plane, each step checked against the reference model.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| streamflight_core::testkit::check_machine(data));
