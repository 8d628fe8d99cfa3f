//! A flight's items in a Redis Stream: appended by its leader in batches, one round trip per
//! batch, each batch fenced by the leader's lease token in the same script that writes (R20).
//!
//! Item `n` (from 1) is the entry with id `n-0`, so an entry's id is its place in the flight:
//! a reader resumes after the `n` items it has, a retried batch is never written twice, and a
//! gap (trimmed by `MAXLEN`) is seen rather than skipped.

use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;
use redis::aio::ConnectionLike;

use crate::{Lease, StoreError};

/// How every leader call begins (R20): `fence(lease)` says `held`, `fenced` or `ended`. The
/// lease at `KEYS[1]` held by `ARGV[1]`'s token: `held`. Held by another token: `fenced`, and
/// the call does nothing. Held by nobody (the store lost it, or it lapsed and nobody took it
/// since): taken back for `ARGV[1]` for `lease` ms, so that a store that lost its keys loses
/// no answer, and `held`; unless the stream `KEYS[2]` holds its end (the flight is over: a
/// late call whose first reply was lost must not give a finished flight a lease again, least
/// of all a failed one, R17): `ended`. `last_entry()` is the number of the stream's last entry
/// (0: no stream) and whether it is the end.
const FENCE: &str = r"
local function last_entry()
    if #KEYS < 2 then
        return 0, false
    end
    local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
    if #last > 0 then
        return tonumber(string.match(last[1][1], '^(%d+)')), last[1][2][1] == 'end'
    end
    return 0, false
end
local function fence(lease)
    local holder = redis.call('GET', KEYS[1])
    if holder == ARGV[1] then
        return 'held'
    end
    if holder then
        return 'fenced'
    end
    local _, ended = last_entry()
    if ended then
        return 'ended'
    end
    redis.call('SET', KEYS[1], ARGV[1], 'PX', lease)
    return 'held'
end
";

/// Appends items `ARGV[6..]` as entries `ARGV[4]`, `ARGV[4] + 1`, ... (field `i`) to the stream
/// `KEYS[2]`, fenced by the lease `KEYS[1]` (token `ARGV[1]`, taken back for `ARGV[5]` ms if
/// nobody holds it). Nothing goes after an end: fenced. If the stream's last entry is below
/// `ARGV[4] - 1` (the store lost entries) nothing is written: `{0, top}`, a gap. Else the items
/// above its last entry are written (a retried batch never twice), the stream is trimmed to
/// about `ARGV[2]` entries and expires `ARGV[3]` ms on (the bound while live): `{1, top}`.
/// Fenced: `{-1, 0}`.
const APPEND: &str = r"
if fence(ARGV[5]) ~= 'held' then
    return {-1, 0}
end
local top, ended = last_entry()
if ended then
    return {-1, 0}
end
local first = tonumber(ARGV[4])
if top < first - 1 then
    return {0, top}
end
for i = 6, #ARGV do
    local n = first + i - 6
    if n > top then
        redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], n .. '-0', 'i', ARGV[i])
        top = n
    end
end
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return {1, top}";

/// Writes the end `ARGV[4]` as entry `ARGV[3]` (field `end`), fenced as `APPEND` (lease taken
/// back for `ARGV[6]` ms), with the same gap check (`{0, top}`); an end already there (a
/// retried finish) is not written again, and an ended flight nobody holds the lease of is left
/// as it is. The stream then expires after `ARGV[2]` ms, and the lease stays `ARGV[5]` ms more
/// (the linger of a whole answer: newcomers still find this flight) or goes at once (0: a
/// failure never lingers, R17). `{1, top}`, or `{-1, 0}`.
const FINISH: &str = r"
local fenced = fence(ARGV[6])
if fenced == 'fenced' then
    return {-1, 0}
end
local top, ended = last_entry()
if fenced == 'ended' then
    return {1, top}
end
local number = tonumber(ARGV[3])
if not ended then
    if top < number - 1 then
        return {0, top}
    end
    if top < number then
        redis.call('XADD', KEYS[2], number .. '-0', 'end', ARGV[4])
        top = number
    end
    redis.call('PEXPIRE', KEYS[2], ARGV[2])
end
if tonumber(ARGV[5]) > 0 then
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[5])
else
    redis.call('DEL', KEYS[1])
end
return {1, top}";

/// A leader script: the fence and its helpers, then the script's own body. Made once (its
/// SHA-1 with it), sent by that SHA-1 on every call.
pub(crate) fn leader_script(body: &str) -> Script {
    Script::new(&format!("{FENCE}{body}"))
}

/// The scripts, made once.
static APPEND_SCRIPT: LazyLock<Script> = LazyLock::new(|| leader_script(APPEND));
static FINISH_SCRIPT: LazyLock<Script> = LazyLock::new(|| leader_script(FINISH));

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
    /// Written: the number of the stream's last entry now.
    Written(u64),
    /// The lease is another token's: nothing was written, and the caller stops leading.
    Fenced,
    /// The stream holds fewer entries than the write follows on from (the store lost them: a
    /// `FLUSHALL`, a restart): nothing was written; the number of its last entry (0: no stream)
    /// is where the leader writes again from, from the items it holds.
    Gap(u64),
}

/// Appends `items`, numbered from `first` (the first item of a flight is 1), as one batch in
/// one round trip, only if `lease` is not another token's (R20): a replica that lost its lease
/// can never interleave its items with a new leader's. A lease nobody holds (the store lost
/// it) is taken back for the lease's timeout. Items already in the stream (a batch retried
/// after a store error) are not written again; a stream that lacks the items before `first`
/// gets none ([`Appended::Gap`]).
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
///     Appended::Gap(top) => { /* the store lost items: write again from top + 1 */ }
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
    let mut invocation = APPEND_SCRIPT.key(lease.key());
    invocation.key(stream).arg(lease.token()).arg(bounds.max_len).arg(millis(bounds.live)).arg(first);
    invocation.arg(millis(lease.ttl()));
    for item in items {
        invocation.arg(item.as_ref());
    }
    Ok(written(invocation.invoke_async(store).await?))
}

/// Ends the stream with `end` as entry `number` (one past its last item), fenced as
/// [`append`] (and with its gap check); the stream expires `keep` later. With a `linger`, the
/// lease stays that long, so that a newcomer on any replica still replays this flight (R17);
/// without, it goes at once. A retried finish writes no second end.
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
    let mut invocation = FINISH_SCRIPT.key(lease.key());
    invocation.key(stream).arg(lease.token()).arg(millis(keep)).arg(number).arg(end);
    invocation.arg(if linger.is_zero() { 0 } else { millis(linger) }).arg(millis(lease.ttl()));
    Ok(written(invocation.invoke_async(store).await?))
}

/// What a leader script's `{code, top}` reply says.
pub(crate) fn written((code, top): (i64, i64)) -> Appended {
    let top = u64::try_from(top).unwrap_or(0);
    match code {
        1 => Appended::Written(top),
        0 => Appended::Gap(top),
        _ => Appended::Fenced,
    }
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
    Ok(reply.map(|reply| reply.keys).unwrap_or_default().into_iter().flat_map(entries).collect())
}

/// The entries of one stream in an `XREAD` reply, numbered; anything not written by a leader
/// of ours is skipped, never misread.
pub(crate) fn entries(key: redis::streams::StreamKey) -> Vec<(u64, Entry)> {
    let mut entries = Vec::with_capacity(key.ids.len());
    for mut entry in key.ids {
        let mut field = |name: &str| match entry.map.remove(name) {
            Some(redis::Value::BulkString(bytes)) => Some(bytes),
            _ => None,
        };
        let (item, end) = (field("i"), field("end"));
        let number = entry.id.split_once('-').and_then(|(ms, _)| ms.parse::<u64>().ok());
        match (number, item, end) {
            (Some(number), Some(item), _) => entries.push((number, Entry::Item(item))),
            (Some(number), None, Some(end)) => entries.push((number, Entry::End(end))),
            _ => {}
        }
    }
    entries
}
