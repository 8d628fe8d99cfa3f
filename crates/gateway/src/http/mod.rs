//! The HTTP surface: connections accepted and kept, each request routed, bounded, checked and
//! logged; what the gateway does not coalesce passes through to the upstream unchanged.

pub(crate) mod access;
pub(crate) mod admin;
mod guarded;
mod h1;
pub(crate) mod headers;
pub(crate) mod inbound;
pub(crate) mod limits;
pub(crate) mod offload;
mod passthrough;
pub(crate) mod routes;
pub mod serve;
mod workers;
pub mod write_timeout;
