//! Arbitrary appends, reads, closes, cancels, subscribes and drops on one history,
//! checked against the `Vec` reference (the history has `unsafe`: run it under AddressSanitizer).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| streamflight_core::testkit::check_history(data));
