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
    let written: redis::Value = invocation.invoke_async(store).await?;
    Ok(match written {
        redis::Value::Int(0) => Appended::Fenced,
        other => Appended::Written(redis::from_redis_value(other).map_err(redis::RedisError::from)?),
    })
}
