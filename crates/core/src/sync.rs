//! The synchronisation primitives of the history, switched to loom's under `--cfg loom`.
//! Everything concurrent in this crate imports from here, never from `std::sync` directly.
