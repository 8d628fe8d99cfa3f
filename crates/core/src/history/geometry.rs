//! Where each item of a history lives: chunk sizes double from `1 << min` slots
//! up to `1 << max`, then stay there; an item's chunk is found in closed form.

/// Chunk `c` holds `1 << min(min + c, max)` slots: a short history pays for
/// about what it holds (at most twice, plus the first chunk), a long one
/// allocates, and each reader locks, once per `1 << max` items.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Geometry {
    min: u8,
    max: u8,
}

impl Geometry {
    /// Chunks of `1 << min` slots first, of `1 << max` at most (`min` is
    /// lowered to `max` if above it).
    pub(super) const fn new(min: u32, max: u32) -> Self {
        assert!(max < 32, "chunks of at most 2^31 slots");
        // Two bytes: the history is allocated per flight.
        Geometry { min: if min < max { min } else { max } as u8, max: max as u8 }
    }

    /// Slots in the largest chunks.
    #[cfg(all(any(test, feature = "testkit"), not(loom)))]
    pub(super) fn max_capacity(self) -> usize {
        1 << self.max
    }

    /// How many of the first chunks are still growing.
    fn growing(self) -> u64 {
        u64::from(self.max - self.min)
    }

    /// Slots in chunk `number`.
    pub(super) fn capacity(self, number: u64) -> usize {
        1 << (u64::from(self.min) + number.min(self.growing()))
    }

    /// Global index of chunk `number`'s first slot.
    pub(super) fn start(self, number: u64) -> u64 {
        // The growing chunks before it sum to 2^(min + g) - 2^min, each
        // full-size one after them adds 2^max.
        let growing = number.min(self.growing());
        ((number - growing + 1) << (u64::from(self.min) + growing)) - (1 << self.min)
    }

    /// The chunk holding item `index`, and that chunk's start.
    #[inline]
    pub(super) fn locate(self, index: u64) -> (u64, u64) {
        // Shifted by 2^min, the boundaries of the growing chunks fall on
        // powers of two (chunk c spans [2^(min+c), 2^(min+c+1))), and those of
        // the full-size chunks on multiples of 2^max: the top bit, capped at
        // `max`, says which.
        let shifted = index + (1 << self.min);
        let bits = shifted.ilog2().min(u32::from(self.max));
        let number = u64::from(bits - u32::from(self.min)) + (shifted >> self.max).saturating_sub(1);
        let start = (shifted & !((1 << bits) - 1)) - (1 << self.min);
        (number, start)
    }
}
