//! How a flight's end is written as its stream's last entry: done, failed with the
//! upstream's error, or given up by a leader that nobody needed any more.

/// A flight's end, as every replica reads it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Ending<'a> {
    /// The upstream ended well.
    Done,
    /// The upstream failed: its error, as the codec wrote it.
    Failed(&'a [u8]),
    /// The leader gave the flight up: its own requests had gone and nobody else was interested.
    Abandoned,
}

impl<'a> Ending<'a> {
    /// The entry's bytes: a tag, then the error for a failure.
    pub(crate) fn encode(&self) -> Vec<u8> {
        match self {
            Ending::Done => b"d".to_vec(),
            Ending::Failed(error) => [&b"f"[..], error].concat(),
            Ending::Abandoned => b"a".to_vec(),
        }
    }

    /// The end an entry holds; anything unknown is a failure with no error to read (the
    /// codec turns it into its own malformed error).
    pub(crate) fn decode(bytes: &'a [u8]) -> Ending<'a> {
        match bytes.split_first() {
            Some((b'd', [])) => Ending::Done,
            Some((b'a', [])) => Ending::Abandoned,
            Some((b'f', error)) => Ending::Failed(error),
            _ => Ending::Failed(bytes),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Ending;

    #[test]
    fn every_end_reads_back_as_written() {
        for ending in [Ending::Done, Ending::Abandoned, Ending::Failed(b""), Ending::Failed(b"429 slow down")]
        {
            assert_eq!(Ending::decode(&ending.encode()), ending);
        }
    }
}
