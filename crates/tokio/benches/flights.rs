//! Criterion benchmarks of streamflight-tokio against the primitives a user would pick instead.
//! (Being written.)

fn main() {}
