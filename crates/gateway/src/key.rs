//! What makes two requests identical (G4): the API, the lossless canonical body, the query
//! string and the selecting headers, and (unless tenants share) the tenant: an HMAC of the
//! credentials keyed by the fleet's secret (`crate::tenant`).

use std::fmt::Write as _;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::dialect::Api;

/// The flight key. Compared by full equality, never by hash alone.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    /// Which API was asked.
    pub api: Api,
    /// The caller's tenant ([`crate::http::headers::tenant`]); `None` when tenants share.
    pub tenant: Option<[u8; 32]>,
    /// The query string and the account/project/version headers ([`crate::http::headers::selectors`]).
    pub selectors: Box<str>,
    /// The body without its transport fields (`stream`, `stream_options`), canonical JSON.
    pub body: Arc<str>,
}

impl Key {
    /// A short, stable digest of the whole key, for logs (never for equality): it names a
    /// flight without showing its prompt or tenant.
    pub(crate) fn digest(&self) -> String {
        hex(&Sha256::digest(self.identity())[..6])
    }

    /// The whole key as bytes that no other key has: a version byte, then the endpoint's
    /// path, the tenant (a presence byte, then its 32 bytes), the selectors and the body, each
    /// text after its length (u64, big-endian). The digest hashes them, and the replicas of a
    /// fleet name a flight by them (`fleet::wire::Wire`) and derive from them the key that seals
    /// its entries in the store (so only a replica with the same request reads them), so they
    /// must never change meaning: a new layout takes a new version byte.
    pub(crate) fn identity(&self) -> Vec<u8> {
        let path = self.api.path().as_bytes();
        let mut out =
            Vec::with_capacity(1 + 8 + path.len() + 33 + 8 + self.selectors.len() + 8 + self.body.len());
        out.push(1);
        field(&mut out, path);
        match self.tenant {
            Some(tenant) => {
                out.push(1);
                out.extend_from_slice(&tenant);
            }
            None => out.push(0),
        }
        field(&mut out, self.selectors.as_bytes());
        field(&mut out, self.body.as_bytes());
        out
    }
}

/// `bytes` after their length. The length is 64 bits because these bytes are only hashed, never
/// stored: the width costs nothing, and no body can outgrow it and make two keys alike.
fn field(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// Lower-case hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}
