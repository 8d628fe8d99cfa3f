//! Forwarding to a real OpenAI-compatible server: one streaming request per flight, its SSE
//! parsed as it arrives and passed on event by event; every failure becomes an [`UpstreamError`].

use std::fmt;

/// Why a flight's upstream failed; every subscriber of the flight receives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamError {
    /// The upstream's HTTP status, when it answered with a non-2xx one.
    pub status: Option<u16>,
    /// What went wrong, for the client's error event.
    pub message: String,
}

impl fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.status {
            Some(status) => write!(f, "upstream answered {status}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}
