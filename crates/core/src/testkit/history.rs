//! The history's fuzz check: the reference model itself lives beside the history
//! (`history::check`), which its proptest shares.

use alloc::vec::Vec;

/// The fuzz check of the history: the bytes choose a bound and a sequence of
/// appends, reads, closes, cancels, subscribes and drops (via `arbitrary`),
/// checked against the `Vec` reference the proptest uses. Panics on any disagreement.
pub fn check_history(data: &[u8]) {
    let mut bytes = arbitrary::Unstructured::new(data);
    let limits = [None, Some(1), Some(2), Some(4), Some(7), Some(16)];
    let Ok(limit) = bytes.choose(&limits).copied() else { return };
    let mut ops = Vec::new();
    while !bytes.is_empty() && ops.len() < 200 {
        match bytes.arbitrary() {
            Ok(op) => ops.push(op),
            Err(_) => break,
        }
    }
    crate::history::check::run(limit, ops);
}
