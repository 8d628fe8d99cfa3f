//! The real tokio adapter under fuzzer-chosen interleavings of requests, cancels, drops,
//! upstream steps and polls: one end per request, nothing after it, nothing left behind.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| streamflight_tests::fuzz::check_cancellation(data));
