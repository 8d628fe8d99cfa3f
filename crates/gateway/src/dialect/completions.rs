//! OpenAI's legacy Completions (`POST /v1/completions`): Chat's stream, with `text_completion`
//! chunks merged into one `text_completion`.

use bytes::Bytes;

use super::chat::{Chunks, classify};
use super::{Class, Dialect, Merge};
use crate::dialect::body::Owned;
use crate::dialect::chunks::{Collector, Kind};

/// Completions.
pub(super) struct Completions;

impl Dialect for Completions {
    fn name(&self) -> &'static str {
        "completions"
    }

    fn path(&self) -> &'static str {
        "/completions"
    }

    fn owned(&self) -> Owned {
        Owned::StreamAndUsage
    }

    fn classify(&self, name: Option<Bytes>, data: Bytes) -> Class {
        classify(name, data)
    }

    fn merge(&self) -> Box<dyn Merge> {
        Box::new(Chunks(Collector::new(Kind::Text)))
    }

    fn done(&self) -> Option<&'static [u8]> {
        Some(b"[DONE]")
    }
}
