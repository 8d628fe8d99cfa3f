//! The HTTP surface: connections accepted and kept, each request routed, bounded, checked and
//! logged; what the gateway does not coalesce passes through to the upstream unchanged.

pub mod access;
pub mod guarded;
pub mod headers;
pub mod inbound;
pub mod passthrough;
pub mod routes;
pub mod serve;
