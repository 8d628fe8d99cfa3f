//! A flight's items in a Redis Stream: appended by its leader in batches, one round trip per
//! batch, each batch fenced by the leader's lease token in the same script that writes (R20).
//!
//! Item `n` (from 1) is the entry with id `n-0`, so an entry's id is its place in the flight:
//! a reader resumes after the `n` items it has, a retried batch is never written twice, and a
//! gap (trimmed by `MAXLEN`) is seen rather than skipped.

use std::time::Duration;

use redis::Script;
use redis::aio::ConnectionLike;

use crate::{Lease, StoreError};

/// Appends items `ARGV[5..]` as entries `ARGV[4]`, `ARGV[4] + 1`, ... (field `i`) to the stream
/// `KEYS[2]` if the lease at `KEYS[1]` is still `ARGV[1]`'s, skipping those already there (a
/// retried batch), trimming to about `ARGV[2]` entries and letting the stream expire `ARGV[3]`
/// ms on (the bound while live). Returns the stream's last item number, or -1 when fenced off.
const APPEND: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
    return -1
end
local top = 0
local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
if #last > 0 then
    top = tonumber(string.match(last[1][1], '^(%d+)'))
end
local first = tonumber(ARGV[4])
for i = 5, #ARGV do
    local n = first + i - 5
    if n > top then
        redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], n .. '-0', 'i', ARGV[i])
        top = n
    end
end
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return top";

/// Writes the end `ARGV[4]` as entry `ARGV[3]` (field `end`) if the lease at `KEYS[1]` is still
/// `ARGV[1]`'s; the stream then expires after `ARGV[2]` ms, and the lease stays `ARGV[5]` ms
/// more (the linger: newcomers still find this flight) or goes at once (0). 1, or -1 if fenced.
const FINISH: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
    return -1
end
redis.call('XADD', KEYS[2], ARGV[3] .. '-0', 'end', ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
if tonumber(ARGV[5]) > 0 then
    redis.call('PEXPIRE', KEYS[1], ARGV[5])
else
    redis.call('DEL', KEYS[1])
end
return 1";

/// How long a stream may be, and how long it lives without its leader writing to it.
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    /// About how many entries the stream keeps (`MAXLEN ~`); older ones are trimmed.
    pub max_len: u64,
    /// How long the stream outlives its last append while live (`PEXPIRE` on every append):
    /// a stream whose leader died does not stay.
    pub live: Duration,
}

/// What a fenced write did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Appended {
    /// Written: the number of the stream's last item now.
    Written(u64),
    /// The lease is no longer this leader's: nothing was written, and the caller stops leading.
    Fenced,
}

/// Appends `items`, numbered from `first` (the first item of a flight is 1), as one batch in
/// one round trip, only if `lease` is still held (R20): a replica that lost its lease can
/// never interleave its items with a new leader's. Items already in the stream (a batch
/// retried after a store error) are not written again.
///
/// ```no_run
/// # async fn feed(mut store: redis::aio::ConnectionManager, lease: streamflight_redis::Lease)
/// # -> Result<(), streamflight_redis::StoreError> {
/// use std::time::Duration;
/// use streamflight_redis::{Appended, Bounds, append};
///
/// let bounds = Bounds { max_len: 100_000, live: Duration::from_secs(30) };
/// // The first two items the upstream had ready, as one batch.
/// match append(&mut store, &lease, "sf:items", bounds, 1, [&b"tok"[..], b"en"]).await? {
///     Appended::Written(last) => assert_eq!(last, 2),
///     Appended::Fenced => { /* another replica leads now: stop */ }
/// }
/// # Ok(()) }
/// ```
pub async fn append<C, I>(
    store: &mut C,
    lease: &Lease,
    stream: &str,
    bounds: Bounds,
    first: u64,
    items: I,
) -> Result<Appended, StoreError>
where
    C: ConnectionLike + Send + Sync,
    I: IntoIterator,
    I::Item: AsRef<[u8]>,
{
    let script = Script::new(APPEND);
    let mut invocation = script.key(lease.key());
    invocation.key(stream).arg(lease.token()).arg(bounds.max_len).arg(millis(bounds.live)).arg(first);
    for item in items {
        invocation.arg(item.as_ref());
    }
    fenced(invocation.invoke_async(store).await?)
}

/// Ends the stream with `end` as entry `number` (one past its last item), if `lease` is still
/// held; the stream expires `keep` later. With a `linger`, the lease stays that long, so that
/// a newcomer on any replica still replays this flight (R17); without, it goes at once.
///
/// ```no_run
/// # async fn end(mut store: redis::aio::ConnectionManager, lease: streamflight_redis::Lease)
/// # -> Result<(), streamflight_redis::StoreError> {
/// use std::time::Duration;
///
/// // After two items: the end is the third entry.
/// streamflight_redis::finish(&mut store, &lease, "sf:items", 3, b"done", Duration::from_secs(10), Duration::ZERO)
///     .await?;
/// # Ok(()) }
/// ```
pub async fn finish<C>(
    store: &mut C,
    lease: &Lease,
    stream: &str,
    number: u64,
    end: &[u8],
    keep: Duration,
    linger: Duration,
) -> Result<Appended, StoreError>
where
    C: ConnectionLike + Send + Sync,
{
    let script = Script::new(FINISH);
    let mut invocation = script.key(lease.key());
    invocation.key(stream).arg(lease.token()).arg(millis(keep)).arg(number).arg(end);
    invocation.arg(if linger.is_zero() { 0 } else { millis(linger) });
    match fenced(invocation.invoke_async(store).await?)? {
        Appended::Written(_) => Ok(Appended::Written(number)),
        fenced => Ok(fenced),
    }
}

/// What a fenced script's reply says: -1 when fenced off, else a number.
pub(crate) fn fenced(reply: i64) -> Result<Appended, StoreError> {
    Ok(u64::try_from(reply).map_or(Appended::Fenced, Appended::Written))
}

/// Milliseconds for Redis, never 0 (which it refuses for an expiry).
pub(crate) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// One entry of a flight's stream, as a replica's reader sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    /// An item of the upstream.
    Item(Vec<u8>),
    /// The flight's end, as [`finish`] wrote it: the stream's last entry.
    End(Vec<u8>),
}

/// Reads the entries after the first `after` (0: from the start), waiting up to `block` for
/// some (`XREAD BLOCK`; zero: not at all), at most `count`: one replica's reader step. Each
/// entry comes with its number. Where the first number is not `after + 1`, the stream was
/// trimmed past the reader.
///
/// `XREAD BLOCK` holds its connection: give it one of its own, not a shared one.
///
/// ```no_run
/// # async fn follow(mut store: redis::aio::MultiplexedConnection) -> Result<(), streamflight_redis::StoreError> {
/// use std::time::Duration;
/// use streamflight_redis::{Entry, read};
///
/// let mut had = 0;
/// loop {
///     for (number, entry) in read(&mut store, "sf:items", had, Duration::from_secs(1), 512).await? {
///         had = number;
///         match entry {
///             Entry::Item(_item) => { /* into the local flight's history */ }
///             Entry::End(_end) => return Ok(()),
///         }
///     }
/// }
/// # }
/// ```
pub async fn read<C>(
    store: &mut C,
    stream: &str,
    after: u64,
    block: Duration,
    count: usize,
) -> Result<Vec<(u64, Entry)>, StoreError>
where
    C: ConnectionLike + Send + Sync,
{
    use redis::AsyncCommands;
    use redis::streams::{StreamReadOptions, StreamReadReply};

    let mut options = StreamReadOptions::default().count(count);
    if !block.is_zero() {
        options = options.block(usize::try_from(millis(block)).unwrap_or(usize::MAX));
    }
    let after = format!("{after}-0");
    let reply: Option<StreamReadReply> = store.xread_options(&[stream], &[after.as_str()], &options).await?;
    let mut entries = Vec::new();
    for key in reply.map(|reply| reply.keys).unwrap_or_default() {
        for entry in key.ids {
            let field = |name: &str| match entry.map.get(name) {
                Some(redis::Value::BulkString(bytes)) => Some(bytes.clone()),
                _ => None,
            };
            let number = entry.id.split_once('-').and_then(|(ms, _)| ms.parse::<u64>().ok());
            let read = match (number, field("i"), field("end")) {
                (Some(number), Some(item), _) => (number, Entry::Item(item)),
                (Some(number), None, Some(end)) => (number, Entry::End(end)),
                // Not an entry of ours: skipped, never misread.
                _ => continue,
            };
            entries.push(read);
        }
    }
    Ok(entries)
}
