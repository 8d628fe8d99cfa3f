//! Replays every committed fuzz input (corpus and regressions) through the very
//! check functions the fuzz targets run, so plain `cargo test` catches regressions.

use std::path::PathBuf;

fn inputs(target: &str) -> Vec<PathBuf> {
    let fuzz = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut files = Vec::new();
    for dir in [fuzz.join("corpus").join(target), fuzz.join("regressions").join(target)] {
        if let Ok(entries) = std::fs::read_dir(&dir) {
            files.extend(entries.map(|e| e.expect("a readable corpus entry").path()).filter(|p| p.is_file()));
        }
    }
    files.sort();
    files
}

fn replay(target: &str, check: fn(&[u8])) -> usize {
    let files = inputs(target);
    for file in &files {
        let data = std::fs::read(file).expect("a readable corpus file");
        if std::panic::catch_unwind(|| check(&data)).is_err() {
            panic!("fuzz input {} fails its check", file.display());
        }
    }
    files.len()
}

#[test]
fn machine_corpus_replays_clean() {
    let replayed = replay("machine", streamflight_core::testkit::check_machine);
    assert!(replayed > 0, "no committed corpus for the machine target");
}

#[test]
fn history_corpus_replays_clean() {
    let replayed = replay("history", streamflight_core::testkit::check_history);
    assert!(replayed > 0, "no committed corpus for the history target");
}

#[test]
fn fleet_corpus_replays_clean() {
    let replayed = replay("fleet", |data| {
        streamflight_core::testkit::check_fleet(data);
    });
    assert!(replayed > 0, "no committed corpus for the fleet target");
}
