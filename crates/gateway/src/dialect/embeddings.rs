//! OpenAI's Embeddings (`POST /v1/embeddings`): one JSON answer, not streamed, shared byte for
//! byte; the body goes upstream as sent and all of it is the key.

use bytes::Bytes;

use super::{Class, Dialect, Merge};
use crate::dialect::body::Owned;
use crate::dialect::chunks::CollectError;
use crate::flight::Event;

/// Embeddings.
pub(super) struct Embeddings;

impl Dialect for Embeddings {
    fn name(&self) -> &'static str {
        "embeddings"
    }

    fn path(&self) -> &'static str {
        "/embeddings"
    }

    fn owned(&self) -> Owned {
        Owned::Nothing
    }

    /// Never asked: the answer is a body, not events.
    fn classify(&self, name: Option<Bytes>, data: Bytes) -> Class {
        Class::Keep(Event { name, data, usage_only: false })
    }

    /// Never asked: every client gets the body as sent.
    fn merge(&self) -> Box<dyn Merge> {
        Box::new(Unmerged)
    }
}

/// The merge of an answer that is not streamed: there is nothing to merge.
struct Unmerged;

impl Merge for Unmerged {
    fn push(&mut self, _event: &Event) -> Result<(), CollectError> {
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<Bytes, CollectError> {
        Err(CollectError::Empty)
    }
}
