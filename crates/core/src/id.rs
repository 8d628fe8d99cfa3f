//! Ids the machine hands out and nobody can forge, and the slab they index.
//! An id names its machine and a serial that is never reused, so a stale id never aliases a live one.

use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::{AtomicU32, Ordering};

/// Tells machines apart, so an id from one is unknown to every other.
static NEXT_TAG: AtomicU32 = AtomicU32::new(0);

pub(crate) fn next_tag() -> u32 {
    NEXT_TAG.fetch_add(1, Ordering::Relaxed)
}

/// The common body of every id: which machine, which slot, which occupant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct RawId {
    tag: u32,
    slot: u32,
    serial: u64,
}

/// Identifies one request of one manager. Only the machine makes them:
/// it cannot be forged, and an ended request's id is never reused.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub(crate) RawId);

/// Identifies one flight of one machine, generation included: an input naming
/// an ended flight is recognised as stale, even when a newer flight has the same key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlightId(pub(crate) RawId);

impl fmt::Display for RequestId {
    /// `r<machine>.<slot>.<serial>`, which [`FromStr`](core::str::FromStr) reads back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "r{}.{}.{}", self.0.tag, self.0.slot, self.0.serial)
    }
}

/// Reads back what [`Display`](fmt::Display) printed, so that an id can
/// travel as text (a URL, a header) and come back.
///
/// Parsing makes nothing live: an id that no live request of the manager
/// holds, well formed or not, is only ever answered with
/// `CancelError::UnknownRequest`. The text is not a secret: a service that
/// lets clients cancel by id checks who asks (the gateway checks the tenant).
///
/// ```
/// use streamflight_core::{CancelError, Config, Machine, RequestId};
///
/// let mut machine = Machine::new(Config::default());
/// let id = machine.handle_request("prompt").id;
/// let text = id.to_string();
/// assert_eq!(text.parse::<RequestId>(), Ok(id));
///
/// // Well formed, but no live request of this machine holds it.
/// let forged: RequestId = "r999.0.0".parse().unwrap();
/// assert_eq!(machine.handle_cancel(forged), Err(CancelError::UnknownRequest));
/// assert!("hello".parse::<RequestId>().is_err());
/// ```
impl core::str::FromStr for RequestId {
    type Err = ParseIdError;

    fn from_str(text: &str) -> Result<Self, ParseIdError> {
        let fields = text.strip_prefix('r').ok_or(ParseIdError::Malformed)?;
        let mut fields = fields.split('.');
        let mut next = || fields.next().ok_or(ParseIdError::Malformed);
        let tag = next()?.parse().map_err(|_| ParseIdError::Malformed)?;
        let slot = next()?.parse().map_err(|_| ParseIdError::Malformed)?;
        let serial = next()?.parse().map_err(|_| ParseIdError::Malformed)?;
        if fields.next().is_some() {
            return Err(ParseIdError::Malformed);
        }
        Ok(RequestId(RawId { tag, slot, serial }))
    }
}

/// Why a text is not a [`RequestId`].
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseIdError {
    /// The text is not of the form `r<machine>.<slot>.<serial>` that a
    /// request id prints (three decimal numbers in range).
    Malformed,
}

impl fmt::Display for ParseIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not a request id (expected r<machine>.<slot>.<serial>)")
    }
}

#[cfg(feature = "std")]
impl std::error::Error for ParseIdError {}

impl fmt::Debug for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Debug for FlightId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for FlightId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "f{}.{}.{}", self.0.tag, self.0.slot, self.0.serial)
    }
}

/// A generational slab: O(1) insert, lookup and removal, slots reused,
/// capacity kept, so a warmed-up machine allocates nothing.
#[derive(Clone, Debug)]
pub(crate) struct Slab<T> {
    tag: u32,
    next_serial: u64,
    slots: Vec<(u64, Option<T>)>,
    free: Vec<u32>,
    len: usize,
}

impl<T> Slab<T> {
    pub(crate) fn new(tag: u32) -> Self {
        Slab { tag, next_serial: 0, slots: Vec::new(), free: Vec::new(), len: 0 }
    }

    pub(crate) fn insert(&mut self, value: T) -> RawId {
        let serial = self.next_serial;
        self.next_serial += 1;
        self.len += 1;
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot as usize] = (serial, Some(value));
                slot
            }
            None => {
                // More than u32::MAX live entries cannot fit in memory anyway.
                let slot = self.slots.len() as u32;
                self.slots.push((serial, Some(value)));
                slot
            }
        };
        RawId { tag: self.tag, slot, serial }
    }

    fn slot(&self, id: RawId) -> Option<&(u64, Option<T>)> {
        if id.tag != self.tag {
            return None;
        }
        self.slots.get(id.slot as usize).filter(|(serial, _)| *serial == id.serial)
    }

    pub(crate) fn get(&self, id: RawId) -> Option<&T> {
        self.slot(id)?.1.as_ref()
    }

    pub(crate) fn get_mut(&mut self, id: RawId) -> Option<&mut T> {
        self.slot(id)?;
        self.slots[id.slot as usize].1.as_mut()
    }

    /// The occupant of `slot`, whatever its serial (for the key index).
    pub(crate) fn by_slot(&self, slot: u32) -> Option<(RawId, &T)> {
        let (serial, value) = self.slots.get(slot as usize)?;
        value.as_ref().map(|v| (RawId { tag: self.tag, slot, serial: *serial }, v))
    }

    pub(crate) fn remove(&mut self, id: RawId) -> Option<T> {
        self.slot(id)?;
        let value = self.slots[id.slot as usize].1.take()?;
        self.free.push(id.slot);
        self.len -= 1;
        Some(value)
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    #[cfg(feature = "testkit")]
    pub(crate) fn capacity(&self) -> usize {
        self.slots.len()
    }

    #[cfg(feature = "testkit")]
    pub(crate) fn iter(&self) -> impl Iterator<Item = (RawId, &T)> {
        (0..self.slots.len() as u32).filter_map(|slot| self.by_slot(slot))
    }
}

impl RawId {
    pub(crate) fn slot(self) -> u32 {
        self.slot
    }
}

#[cfg(feature = "std")]
impl FlightId {
    /// The slot of the machine's table this flight occupies while active:
    /// the driver's tables are indexed by it.
    pub(crate) fn slot(self) -> u32 {
        self.0.slot
    }
}

#[cfg(feature = "std")]
impl RequestId {
    /// The slot of the machine's table this request occupies while live.
    pub(crate) fn slot(self) -> u32 {
        self.0.slot
    }
}
