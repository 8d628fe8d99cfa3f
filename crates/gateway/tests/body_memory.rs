//! What a request body costs while it is checked and keyed (G7: "request memory at most a small
//! multiple of the body"), measured with a counting allocator on the bodies that cost most.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use streamflight_gateway::dialect::body;

/// The system allocator, counting the bytes live now and the most live since the last reset.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(live, Ordering::Relaxed);
        // SAFETY: the caller's layout is passed on unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

/// The most bytes allocated at once by `work`, beyond what was live before it.
fn peak_of(work: impl FnOnce()) -> usize {
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    work();
    PEAK.load(Ordering::Relaxed) - before
}

#[test]
fn checking_and_keying_a_body_costs_a_small_multiple_of_it() {
    let numbers: Vec<String> = (0..400_000).map(|i| (i % 10).to_string()).collect();
    let tiny_numbers = format!(r#"{{"model":"m","messages":[],"logit_bias":[{}]}}"#, numbers.join(","));
    let objects: Vec<String> =
        (0..60_000).map(|i| format!(r#"{{"role":"user","content":"m{i}"}}"#)).collect();
    let many_messages = format!(r#"{{"model":"m","messages":[{}]}}"#, objects.join(","));
    let image = format!(
        r#"{{"model":"m","messages":[{{"role":"user","content":[{{"type":"image_url","image_url":{{"url":"data:image/png;base64,{}"}}}}]}}]}}"#,
        "A".repeat(2_400_000)
    );
    // Issue 22's probe: a million members in one object, out of order (so they are sorted).
    let members: Vec<String> = (0..1_000_000).rev().map(|i| format!(r#""key_{i:07}":{i}"#)).collect();
    let million_keys = format!(r#"{{"model":"m","messages":[],"metadata":{{{}}}}}"#, members.join(","));
    drop(members);
    for (what, text) in [
        ("tiny numbers", tiny_numbers),
        ("many messages", many_messages),
        ("an image", image),
        ("a million keys", million_keys),
    ] {
        let size = text.len();
        let started = std::time::Instant::now();
        let peak = peak_of(|| {
            let parsed = body::parse(text.as_bytes(), body::Owned::StreamAndUsage).unwrap();
            assert!(!parsed.canonical.is_empty());
        });
        // Printed, never asserted: a time depends on the machine and the build.
        let took = started.elapsed();
        let ratio = peak as f64 / size as f64;
        println!("{what}: {size} bytes of body, {peak} bytes at most ({ratio:.1}x), parsed in {took:?}");
        assert!(ratio <= 4.0, "{what}: {ratio:.1}x its size");
    }
}
