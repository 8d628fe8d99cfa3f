//! Replays every committed input of the `cancellation` fuzz target (corpus and regressions)
//! through the very check the target runs, so plain `cargo test` catches regressions.

use std::path::PathBuf;

#[test]
fn cancellation_corpus_replays_clean() {
    let fuzz = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut files = Vec::new();
    for dir in ["corpus/cancellation", "regressions/cancellation"] {
        if let Ok(entries) = std::fs::read_dir(fuzz.join(dir)) {
            files.extend(entries.map(|e| e.expect("a readable corpus entry").path()).filter(|p| p.is_file()));
        }
    }
    files.sort();
    assert!(!files.is_empty(), "no committed corpus for the cancellation target");
    for file in files {
        let data = std::fs::read(&file).expect("a readable corpus file");
        if std::panic::catch_unwind(|| streamflight_tests::fuzz::check_cancellation(&data)).is_err() {
            panic!("fuzz input {} fails its check", file.display());
        }
    }
}
