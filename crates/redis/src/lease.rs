//! The leader's lease on a flight (R20): exclusive while it is renewed, lost when it is not,
//! and a fencing token that every write of the leader is checked against in the store.

use std::fmt;
use std::sync::LazyLock;
use std::time::Duration;

use redis::aio::ConnectionLike;
use redis::{AsyncCommands, Script, SetExpiry, SetOptions};
use sha2::Digest as _;

use crate::stream::millis;

/// Extends the lease `KEYS[1]` by `ARGV[2]` ms, fenced as every leader call (another token:
/// -1; nobody: taken back for token `ARGV[1]`, unless its flight has ended), and the keys after
/// it by `ARGV[3]` ms (what the leader keeps alive with it, its stream first; an ended stream
/// keeps the expiry its end gave it), in one step in the store. Returns the number of the last
/// entry of the stream `KEYS[2]` (0 without one), so that a leader sees a stream the store lost.
const RENEW: &str = r"
local fenced = fence(ARGV[2])
if fenced == 'fenced' then
    return -1
end
local top, ended = last_entry()
if fenced == 'ended' then
    return top
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
if not ended then
    for i = 2, #KEYS do
        redis.call('PEXPIRE', KEYS[i], ARGV[3])
    end
end
return top";

/// [`RENEW`], made once.
static RENEW_SCRIPT: LazyLock<Script> = LazyLock::new(|| crate::stream::leader_script(RENEW));

/// Deletes the lease if it is still the caller's: a lost lease is never someone else's to drop.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0";

/// Why the store could not answer: unreachable, timed out, or it refused the command. The
/// caller serves on without the store (R23) and counts it.
#[non_exhaustive]
#[derive(Debug)]
pub enum StoreError {
    /// The Redis client's error, as it gave it.
    Redis(redis::RedisError),
    /// The store did not answer within this deadline (a hung store, R23): the call was given
    /// up, though it may still take effect.
    Deadline(Duration),
    /// A note in the store did not open (R24: altered there, or saved by a replica with
    /// another fleet secret), or one could not be sealed (no random source): nothing was
    /// read or written in clear.
    Sealed,
    /// The manager is on no fleet ([`Flights::alone`](crate::Flights::alone)): there is no store.
    NoFleet,
}

impl StoreError {
    /// The same error again, for a second caller that waited on the same step.
    pub(crate) fn again(&self) -> StoreError {
        match self {
            StoreError::Redis(error) => StoreError::Redis(redis::RedisError::from((
                error.kind(),
                "the store failed",
                error.to_string(),
            ))),
            StoreError::Deadline(deadline) => StoreError::Deadline(*deadline),
            StoreError::Sealed => StoreError::Sealed,
            StoreError::NoFleet => StoreError::NoFleet,
        }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Redis(error) => write!(f, "the store failed: {error}"),
            StoreError::Deadline(deadline) => write!(f, "the store did not answer within {deadline:?}"),
            StoreError::Sealed => f.write_str("a note in the store could not be sealed or opened"),
            StoreError::NoFleet => f.write_str("the manager is on no fleet"),
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StoreError::Redis(error) => Some(error),
            StoreError::Deadline(_) => None,
            StoreError::Sealed | StoreError::NoFleet => None,
        }
    }
}

impl From<redis::RedisError> for StoreError {
    fn from(error: redis::RedisError) -> Self {
        StoreError::Redis(error)
    }
}

/// A replica's lease on one flight: while it holds it, it alone leads the flight, and its
/// token fences everything it writes (R20).
///
/// ```no_run
/// # async fn lead(mut store: redis::aio::ConnectionManager) -> Result<(), streamflight_redis::StoreError> {
/// use std::time::Duration;
/// use streamflight_redis::Lease;
///
/// if let Some(lease) = Lease::acquire(&mut store, "sf:lease:3f2a", Duration::from_secs(3)).await? {
///     // Lead: renew every `lease.renew_every()`; stop leading the moment a renewal says false.
///     assert!(lease.renew(&mut store).await?);
///     lease.release(&mut store).await?;
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Lease {
    key: String,
    token: String,
    ttl: Duration,
}

impl Lease {
    /// Takes the lease at `key` for `ttl` if nobody holds it (`SET NX PX` with a fresh random
    /// token). `None`: another replica leads.
    pub async fn acquire<C: ConnectionLike + Send + Sync>(
        store: &mut C,
        key: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, StoreError> {
        let token = fresh_token();
        let options = SetOptions::default()
            .conditional_set(redis::ExistenceCheck::NX)
            .with_expiration(SetExpiry::PX(millis(ttl)));
        let taken: bool = store.set_options(key, &token, options).await?;
        Ok(taken.then(|| Lease { key: key.to_owned(), token, ttl }))
    }

    /// Extends the lease by its timeout. `false`: another replica holds it now: the caller
    /// stops leading at once. A lease that nobody holds (it lapsed, or the store lost it) is
    /// taken back: no other leader can have written since.
    pub async fn renew<C: ConnectionLike + Send + Sync>(&self, store: &mut C) -> Result<bool, StoreError> {
        self.renew_with(store, &[], Duration::ZERO).await
    }

    /// [`renew`](Lease::renew), and in the same step lets each of `keys` live `live` longer:
    /// what the leader keeps alive only while it leads (its flight's stream).
    pub async fn renew_with<C: ConnectionLike + Send + Sync>(
        &self,
        store: &mut C,
        keys: &[&str],
        live: Duration,
    ) -> Result<bool, StoreError> {
        Ok(renew(store, &self.key, &self.token, self.ttl, keys, live).await?.is_some())
    }

    /// Gives the lease up, if it is still this one. `false`: it was already lost.
    pub async fn release<C: ConnectionLike + Send + Sync>(self, store: &mut C) -> Result<bool, StoreError> {
        let released: i64 = Script::new(RELEASE).key(&self.key).arg(&self.token).invoke_async(store).await?;
        Ok(released == 1)
    }

    /// How often to renew: a third of the timeout, so that two renewals may fail before the
    /// lease is lost.
    pub fn renew_every(&self) -> Duration {
        self.ttl / 3
    }

    /// The lease's timeout.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The fencing token: every write of the leader names it, and the store refuses a write
    /// whose token is not the lease's current one.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The lease's key in the store.
    pub fn key(&self) -> &str {
        &self.key
    }
}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The token is a capability: not for logs.
        f.debug_struct("Lease").field("key", &self.key).field("ttl", &self.ttl).finish_non_exhaustive()
    }
}

/// Renews the lease at `key` for `token` (see `RENEW`), and lets `keys` live `live` more:
/// the number of the last entry of `keys[0]` (a stream), or `None` when fenced off.
pub(crate) async fn renew<C: ConnectionLike + Send + Sync>(
    store: &mut C,
    key: &str,
    token: &str,
    ttl: Duration,
    keys: &[&str],
    live: Duration,
) -> Result<Option<u64>, StoreError> {
    let mut invocation = RENEW_SCRIPT.key(key);
    invocation.key(keys).arg(token).arg(millis(ttl)).arg(millis(live));
    let top: i64 = invocation.invoke_async(store).await?;
    Ok(u64::try_from(top).ok())
}

/// 128 random bits from the operating system, as 32 hex digits.
pub(crate) fn fresh_token() -> String {
    let mut bytes = [0; 16];
    if getrandom::fill(&mut bytes).is_err() {
        // No random source (a broken host): a token still unique to this lease, from the
        // clock, the process and a count, rather than a panic.
        static COUNT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let count = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let seed = format!("{:?} {} {count}", std::time::SystemTime::now(), std::process::id());
        bytes.copy_from_slice(&sha2::Sha256::digest(seed.as_bytes())[..16]);
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
