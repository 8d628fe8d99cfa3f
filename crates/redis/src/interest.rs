//! Which replicas still want a flight (R22): one expiring member per local flight in a sorted
//! set, scored by its expiry in the store's own clock, and the leader's give-up that reads it.

use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;
use redis::aio::ConnectionLike;

use crate::stream::millis;
use crate::{Lease, StoreError};

/// Finds who leads (the token at the lease `KEYS[1]`) and registers member `ARGV[1]`'s
/// interest in that flight for `ARGV[2]` ms, in one step: a leader that has not given up yet
/// is sure to see it. Returns the token and whether its stream has ended already (a finished
/// answer, lingering), or nil when nobody leads.
const JOIN: &str = r"
local token = redis.call('GET', KEYS[1])
if not token then
    return false
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interest = ARGV[3] .. token .. ':interest'
redis.call('ZADD', interest, now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', interest, 2 * tonumber(ARGV[2]))
local last = redis.call('XREVRANGE', ARGV[3] .. token .. ':items', '+', '-', 'COUNT', 1)
local ended = 0
if #last > 0 and last[1][2][1] == 'end' then
    ended = 1
end
return {token, ended}";

/// The flight a replica joined: who leads it, and whether its answer was over already.
#[derive(Debug)]
pub(crate) struct Joined {
    /// The leader's lease token, which names the flight's stream.
    pub(crate) token: String,
    /// Its stream held its end when joined: a finished answer within its linger (R17).
    pub(crate) ended: bool,
}

/// Keeps member `ARGV[1]`'s interest in `KEYS[1]` for `ARGV[2]` ms more.
const REFRESH: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], 2 * tonumber(ARGV[2]))
return 1";

/// The leader gives up (its own requests are gone) only if the lease `KEYS[1]` is not another
/// token's (fenced as every leader call; taken back for `ARGV[5]` ms if nobody holds it and the
/// flight has not ended) and no replica's interest in `KEYS[3]` is left: then it ends the
/// stream `KEYS[2]` with `ARGV[4]` as entry `ARGV[3]`, lets it expire in `ARGV[2]` ms and frees
/// the lease, all in one step, so that no replica joins a flight being given up. With the
/// gap check of every leader write: a stream that lacks entries before the end gets none.
/// Returns `{code, n}`: -1 fenced; 0 given up (or ended already: a retried give-up); 1 still
/// wanted by `n` replicas; 2 a gap, the stream's top `n`.
const ABANDON: &str = r"
local fenced = fence(ARGV[5])
if fenced == 'fenced' then
    return {-1, 0}
end
if fenced == 'ended' then
    return {0, 0}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
local left = redis.call('ZCARD', KEYS[3])
if left > 0 then
    return {1, left}
end
local top, ended = last_entry()
if ended then
    return {0, top}
end
local number = tonumber(ARGV[3])
if top < number - 1 then
    return {2, top}
end
if top < number then
    redis.call('XADD', KEYS[2], number .. '-0', 'end', ARGV[4])
end
redis.call('PEXPIRE', KEYS[2], ARGV[2])
redis.call('DEL', KEYS[1], KEYS[3])
return {0, number}";

/// The scripts, made once.
static JOIN_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(JOIN));
static REFRESH_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(REFRESH));
static ABANDON_SCRIPT: LazyLock<Script> = LazyLock::new(|| crate::stream::leader_script(ABANDON));

/// Who leads the flight at `lease` (and whether it is over), with `member`'s interest
/// registered in it for `ttl`; `None` when nobody does (the caller may lead).
pub(crate) async fn join<C: ConnectionLike + Send + Sync>(
    store: &mut C,
    lease: &str,
    base: &str,
    member: &str,
    ttl: Duration,
) -> Result<Option<Joined>, StoreError> {
    let joined: Option<(String, i64)> =
        JOIN_SCRIPT.key(lease).arg(member).arg(millis(ttl)).arg(base).invoke_async(store).await?;
    Ok(joined.map(|(token, ended)| Joined { token, ended: ended == 1 }))
}

/// Keeps `member`'s interest at `interest` for `ttl` more.
pub(crate) async fn refresh<C: ConnectionLike + Send + Sync>(
    store: &mut C,
    interest: &str,
    member: &str,
    ttl: Duration,
) -> Result<(), StoreError> {
    let _: i64 = REFRESH_SCRIPT.key(interest).arg(member).arg(millis(ttl)).invoke_async(store).await?;
    Ok(())
}

/// Withdraws `member`'s interest at `interest` at once (its requests are gone).
pub(crate) async fn withdraw<C: ConnectionLike + Send + Sync>(
    store: &mut C,
    interest: &str,
    member: &str,
) -> Result<(), StoreError> {
    let _: i64 = redis::cmd("ZREM").arg(interest).arg(member).query_async(store).await?;
    Ok(())
}

/// What the leader's give-up found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Abandoned {
    /// Nobody else was interested: the stream ends with the given-up end, the lease is free.
    Yes,
    /// This many replicas are still interested: lead on.
    Wanted(u64),
    /// The lease is no longer this leader's.
    Fenced,
    /// The stream lacks entries before the end (the store lost them): nothing was written;
    /// the number of its last entry.
    Gap(u64),
}

/// The leader's give-up, ending the stream with `end` as entry `number` if nobody else wants
/// the flight (R22).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn abandon<C: ConnectionLike + Send + Sync>(
    store: &mut C,
    lease: &Lease,
    items: &str,
    interest: &str,
    number: u64,
    end: &[u8],
    keep: Duration,
) -> Result<Abandoned, StoreError> {
    let mut invocation = ABANDON_SCRIPT.key(lease.key());
    invocation.key(items).key(interest).arg(lease.token()).arg(millis(keep)).arg(number).arg(end);
    invocation.arg(millis(lease.ttl()));
    let (code, n): (i64, i64) = invocation.invoke_async(store).await?;
    let n = u64::try_from(n).unwrap_or(0);
    Ok(match code {
        0 => Abandoned::Yes,
        1 => Abandoned::Wanted(n),
        2 => Abandoned::Gap(n),
        _ => Abandoned::Fenced,
    })
}
