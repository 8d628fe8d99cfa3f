//! The merge of a chat answer for a non-streaming client: the collector as the gateway runs it
//! (the plain merge on raw JSON, then the fast path) must make the same of any chunks (lines of
//! the input) as the generic merge alone: the same body, or the same error.

#![no_main]

use libfuzzer_sys::fuzz_target;
use streamflight_gateway::dialect::chunks::{CollectError, Collector, Kind};

/// The body `collector` makes of `chunks`, or its error.
fn body(mut collector: Collector, chunks: &[&[u8]]) -> Result<Vec<u8>, CollectError> {
    for chunk in chunks {
        collector.push(chunk)?;
    }
    collector.finish_body()
}

fuzz_target!(|data: &[u8]| {
    let chunks: Vec<&[u8]> = data.split(|&byte| byte == b'\n').collect();
    let reference = body(Collector::reference(Kind::Chat), &chunks);
    assert_eq!(body(Collector::new(Kind::Chat), &chunks), reference, "{chunks:?}");
});
