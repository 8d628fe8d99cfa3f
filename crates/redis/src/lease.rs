//! The leader's lease on a flight (R20): exclusive while it is renewed, lost when it is not,
//! and a fencing token that every write of the leader is checked against in the store.

use std::fmt;
use std::time::Duration;

use redis::aio::ConnectionLike;
use redis::{AsyncCommands, Script, SetExpiry, SetOptions};

use crate::stream::millis;

/// Extends the lease if it is still the caller's (its token), and the keys after it by
/// `ARGV[3]` ms (what the leader keeps alive with it), in one step in the store.
const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    for i = 2, #KEYS do
        redis.call('PEXPIRE', KEYS[i], ARGV[3])
    end
    return 1
end
return 0";

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
    /// A note in the store did not open (R24: altered there, or saved by a replica with
    /// another fleet secret), or one could not be sealed (no random source): nothing was
    /// read or written in clear.
    Sealed,
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Redis(error) => write!(f, "the store failed: {error}"),
            StoreError::Sealed => f.write_str("a note in the store could not be sealed or opened"),
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StoreError::Redis(error) => Some(error),
            StoreError::Sealed => None,
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

    /// Extends the lease by its timeout. `false`: it was lost (it expired and may be another
    /// replica's now): the caller stops leading at once.
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
        let script = Script::new(RENEW);
        let mut invocation = script.key(&self.key);
        invocation.key(keys).arg(&self.token).arg(millis(self.ttl)).arg(millis(live));
        let renewed: i64 = invocation.invoke_async(store).await?;
        Ok(renewed == 1)
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

/// 128 random bits from the operating system, as 32 hex digits.
pub(crate) fn fresh_token() -> String {
    let mut bytes = [0; 16];
    // Without a random source no lease can be told from another: a broken host.
    getrandom::fill(&mut bytes).expect("the operating system's random source");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
