//! A flight's items in a Redis Stream: appended by its leader in batches, one round trip per
//! batch, each batch fenced by the leader's lease token in the same script that writes (R20).

use redis::Script;
use redis::aio::ConnectionLike;

use crate::{Lease, StoreError};

/// Appends every item (`ARGV[3..]`) as one entry each (field `i`) if the lease at `KEYS[1]`
/// is still `ARGV[1]`'s, trimming the stream `KEYS[2]` to about `ARGV[2]` entries. Returns
/// the last id written, or 0 when fenced off (nothing written).
const APPEND: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
    return 0
end
local id = ''
for i = 3, #ARGV do
    id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'i', ARGV[i])
end
return id";

/// What a fenced append did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Appended {
    /// The batch is in the stream; the id of its last entry.
    Written(String),
    /// The lease is no longer this leader's: nothing was written, and the caller stops leading.
    Fenced,
}

/// Appends `items` to the stream at `stream` as one batch, in one round trip, only if `lease`
/// is still held (R20): a replica that lost its lease can never interleave its items with a
/// new leader's. The stream keeps about `max_len` entries (`MAXLEN ~`).
///
/// ```no_run
/// # async fn feed(mut store: redis::aio::ConnectionManager, lease: streamflight_redis::Lease)
/// # -> Result<(), streamflight_redis::StoreError> {
/// use streamflight_redis::{Appended, append};
///
/// // The items the upstream had ready, as one batch.
/// match append(&mut store, &lease, "sf:items:3f2a", 100_000, [&b"tok"[..], b"en"]).await? {
///     Appended::Written(_last_id) => {}
///     Appended::Fenced => { /* another replica leads now: stop */ }
/// }
/// # Ok(()) }
/// ```
pub async fn append<C, I>(
    store: &mut C,
    lease: &Lease,
    stream: &str,
    max_len: u64,
    items: I,
) -> Result<Appended, StoreError>
where
    C: ConnectionLike + Send + Sync,
    I: IntoIterator,
    I::Item: AsRef<[u8]>,
{
    let script = Script::new(APPEND);
    let mut invocation = script.key(lease.key());
    invocation.key(stream).arg(lease.token()).arg(max_len);
    for item in items {
        invocation.arg(item.as_ref());
    }
    appended(invocation.invoke_async(store).await?)
}

/// What a fenced script's reply says: 0 when fenced off, else the id written.
fn appended(reply: redis::Value) -> Result<Appended, StoreError> {
    Ok(match reply {
        redis::Value::Int(0) => Appended::Fenced,
        other => Appended::Written(redis::from_redis_value(other).map_err(redis::RedisError::from)?),
    })
}

/// Writes the flight's end as the stream's last entry (field `end`), fenced like [`append`],
/// and lets the stream expire `keep` after it (the linger after the end, R24).
const FINISH: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
    return 0
end
local id = redis.call('XADD', KEYS[2], '*', 'end', ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return id";

/// Ends the flight's stream with `end` (how it ended, as the caller encodes it), if `lease`
/// is still held; the stream then expires after `keep`.
///
/// ```no_run
/// # async fn end(mut store: redis::aio::ConnectionManager, lease: streamflight_redis::Lease)
/// # -> Result<(), streamflight_redis::StoreError> {
/// use std::time::Duration;
///
/// streamflight_redis::finish(&mut store, &lease, "sf:items:3f2a", b"done", Duration::from_secs(10)).await?;
/// # Ok(()) }
/// ```
pub async fn finish<C>(
    store: &mut C,
    lease: &Lease,
    stream: &str,
    end: &[u8],
    keep: std::time::Duration,
) -> Result<Appended, StoreError>
where
    C: ConnectionLike + Send + Sync,
{
    let millis = u64::try_from(keep.as_millis()).unwrap_or(u64::MAX).max(1);
    let script = Script::new(FINISH);
    appended(
        script
            .key(lease.key())
            .key(stream)
            .arg(lease.token())
            .arg(millis)
            .arg(end)
            .invoke_async(store)
            .await?,
    )
}

/// One entry of a flight's stream, as a replica's reader sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    /// An item of the upstream.
    Item(Vec<u8>),
    /// The flight's end, as [`finish`] wrote it: the stream's last entry.
    End(Vec<u8>),
}

/// Reads the entries after `after` (`"0"`: from the start), waiting up to `block` for some
/// (`XREAD BLOCK`), at most `count`: what one replica's reader does in a loop, from the id
/// of the last entry it read. Each entry comes with its id.
///
/// ```no_run
/// # async fn follow(mut store: redis::aio::ConnectionManager) -> Result<(), streamflight_redis::StoreError> {
/// use std::time::Duration;
/// use streamflight_redis::{Entry, read};
///
/// let mut last = "0".to_owned();
/// loop {
///     for (id, entry) in read(&mut store, "sf:items:3f2a", &last, Duration::from_secs(1), 512).await? {
///         last = id;
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
    after: &str,
    block: std::time::Duration,
    count: usize,
) -> Result<Vec<(String, Entry)>, StoreError>
where
    C: ConnectionLike + Send + Sync,
{
    use redis::AsyncCommands;
    use redis::streams::{StreamReadOptions, StreamReadReply};

    let millis = usize::try_from(block.as_millis()).unwrap_or(usize::MAX);
    let options = StreamReadOptions::default().block(millis).count(count);
    let reply: Option<StreamReadReply> = store.xread_options(&[stream], &[after], &options).await?;
    let mut entries = Vec::new();
    for key in reply.map(|reply| reply.keys).unwrap_or_default() {
        for entry in key.ids {
            let field = |name: &str| match entry.map.get(name) {
                Some(redis::Value::BulkString(bytes)) => Some(bytes.clone()),
                _ => None,
            };
            let read = match (field("i"), field("end")) {
                (Some(item), _) => Entry::Item(item),
                (None, Some(end)) => Entry::End(end),
                // Not an entry of ours: skipped, never misread.
                (None, None) => continue,
            };
            entries.push((entry.id, read));
        }
    }
    Ok(entries)
}
