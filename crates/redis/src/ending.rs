//! How a flight's end is written as its stream's last entry: done, failed with the
//! upstream's error, or given up by a leader that nobody needed any more.

use streamflight_core::fleet::Ending;

/// The entry's bytes: a tag, then the error for a failure.
pub(crate) fn encode(ending: &Ending) -> Vec<u8> {
    match ending {
        Ending::Done => b"d".to_vec(),
        Ending::Failed(error) => [&b"f"[..], error].concat(),
        Ending::Abandoned => b"a".to_vec(),
    }
}

/// The end an entry holds; anything unknown is a failure with no error to read (the codec
/// turns it into its own malformed error).
pub(crate) fn decode(bytes: &[u8]) -> Ending {
    match bytes.split_first() {
        Some((b'd', [])) => Ending::Done,
        Some((b'a', [])) => Ending::Abandoned,
        Some((b'f', error)) => Ending::Failed(error.to_vec()),
        _ => Ending::Failed(bytes.to_vec()),
    }
}

#[cfg(test)]
mod tests {
    use super::{Ending, decode, encode};

    #[test]
    fn every_end_reads_back_as_written() {
        for ending in
            [Ending::Done, Ending::Abandoned, Ending::Failed(vec![]), Ending::Failed(b"429".to_vec())]
        {
            assert_eq!(decode(&encode(&ending)), ending);
        }
    }
}
