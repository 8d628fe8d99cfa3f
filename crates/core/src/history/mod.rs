//! The data plane: one shared, append-only history per flight, read by per-subscriber cursors.
//! Runtime-agnostic (std `Waker` only); arrives with its issue.
