//! The endpoints the gateway coalesces: the path each has below the upstream's base URL and
//! whether its answer streams as SSE. Every other path is passed through untouched.

/// A coalesced endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `POST /v1/chat/completions`.
    Chat,
    /// `POST /v1/completions` (legacy text completions).
    Completions,
    /// `POST /v1/embeddings`: one JSON answer, shared as it is.
    Embeddings,
}

impl Endpoint {
    /// The endpoint served at `path` (the client's path, `/v1` included), if it is coalesced.
    pub fn at(path: &str) -> Option<Endpoint> {
        match path.strip_suffix('/').unwrap_or(path) {
            "/v1/chat/completions" => Some(Endpoint::Chat),
            "/v1/completions" => Some(Endpoint::Completions),
            "/v1/embeddings" => Some(Endpoint::Embeddings),
            _ => None,
        }
    }

    /// The path below the upstream's base URL (`/chat/completions`, ...).
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Chat => "/chat/completions",
            Endpoint::Completions => "/completions",
            Endpoint::Embeddings => "/embeddings",
        }
    }

    /// Whether the upstream is asked to stream (SSE) for this endpoint. A streamed endpoint's
    /// flight is shared by streaming and non-streaming clients alike.
    pub fn streams(self) -> bool {
        !matches!(self, Endpoint::Embeddings)
    }
}
