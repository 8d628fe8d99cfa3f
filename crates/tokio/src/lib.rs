//! streamflight on tokio: one upstream stream for every identical in-flight request.
//! The adapter itself arrives with its issue; the shared types are here already.

pub use streamflight_core::{CancelError, Config, Event, Failure, LateJoin, Orphan, RequestId, Role, Stats};
