//! What makes two requests identical (G4): the endpoint, the lossless canonical body, the query
//! string and the selecting headers, and (unless tenants share) a hash of the credentials.

use std::fmt::Write as _;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::endpoint::Endpoint;

/// The flight key. Compared by full equality, never by hash alone.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    /// Which endpoint was asked.
    pub endpoint: Endpoint,
    /// The caller's tenant ([`crate::headers::tenant`]); `None` when tenants share.
    pub tenant: Option<[u8; 32]>,
    /// The query string and the account/project/version headers ([`crate::headers::selectors`]).
    pub selectors: Box<str>,
    /// The body without its transport fields (`stream`, `stream_options`), canonical JSON.
    pub body: Arc<str>,
}

impl Key {
    /// A short, stable digest of the whole key, for logs (never for equality): it names a
    /// flight without showing its prompt or tenant.
    pub fn digest(&self) -> String {
        let mut hasher = Sha256::new();
        hasher.update(self.endpoint.path());
        hasher.update(self.tenant.unwrap_or_default());
        hasher.update(self.selectors.as_bytes());
        hasher.update([0]);
        hasher.update(self.body.as_bytes());
        hex(&hasher.finalize()[..6])
    }
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}
