//! Notes that change hands: besides [`Fleet::save`] and [`Fleet::load`], a note can be taken
//! only if nobody holds it ([`Fleet::claim`]) or only from the value one saw
//! ([`Fleet::swap`]), and one replica can ask another a question and wait for its answer
//! ([`Fleet::ask`], [`Fleet::reply`]) without polling the store.

use std::time::Duration;

use redis::{AsyncCommands, Script, SetExpiry, SetOptions};

use crate::StoreError;
use crate::fleet::Fleet;
use crate::names::Names;
use crate::stream::millis;

/// Replaces a note by `ARGV[2]` for `ARGV[3]` ms if it holds `ARGV[1]` now, in one step.
const SWAP: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
    redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
    return 1
end
return 0";

impl<K: 'static, T: Send + 'static, E: Send + 'static> Fleet<K, T, E> {
    /// Saves `value` under `name` for `ttl` only if there is no note under `name` now
    /// (`SET NX PX`, on the hash of the name as [`save`](Fleet::save)): whether it did.
    pub async fn claim(&self, name: &[u8], value: &[u8], ttl: Duration) -> Result<bool, StoreError> {
        let mut store = self.shared.store.clone();
        let key = Names::note(&self.shared.config.prefix, name);
        let options = SetOptions::default()
            .conditional_set(redis::ExistenceCheck::NX)
            .with_expiration(SetExpiry::PX(millis(ttl)));
        let set: Option<String> = store.set_options(key, value, options).await?;
        Ok(set.is_some())
    }

    /// Replaces the note under `name` by `value` for `ttl` only if it holds `expected` now,
    /// checked and written in one step in the store: whether it did. Of two replicas that
    /// read the same note and each swap it for their own, exactly one succeeds.
    pub async fn swap(
        &self,
        name: &[u8],
        expected: &[u8],
        value: &[u8],
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let mut store = self.shared.store.clone();
        let key = Names::note(&self.shared.config.prefix, name);
        let script = Script::new(SWAP);
        let mut invocation = script.key(key);
        invocation.arg(expected).arg(value).arg(millis(ttl));
        let swapped: i64 = invocation.invoke_async(&mut store).await?;
        Ok(swapped == 1)
    }

    /// Sends `message` on `channel` ([`publish`](Fleet::publish)), then waits up to `wait`
    /// for one [`reply`](Fleet::reply) under `reply` (`BLPOP`, on a connection of its own so
    /// that nothing else waits behind it): the reply, or `None` if none came in time. Two
    /// commands, however long the wait; a reply sent before the wait starts is kept for it.
    pub async fn ask(
        &self,
        channel: &str,
        message: &[u8],
        reply: &[u8],
        wait: Duration,
    ) -> Result<Option<Vec<u8>>, StoreError>
    where
        K: Send + Sync,
        T: Sync,
        E: Sync,
    {
        self.publish(channel, message).await?;
        let mut connection = self.shared.reader(wait).await?;
        let key = Names::note(&self.shared.config.prefix, reply);
        // BLPOP's timeout is in seconds, with decimals (Redis 6 and later); 0 would wait forever.
        let seconds = wait.as_secs_f64().max(0.001);
        let popped: Option<(String, Vec<u8>)> =
            redis::cmd("BLPOP").arg(key).arg(seconds).query_async(&mut connection).await?;
        self.shared.idle(connection);
        Ok(popped.map(|(_, value)| value))
    }

    /// Answers an [`ask`](Fleet::ask) waiting under `reply` with `value`, kept for `ttl` if
    /// nobody takes it (the asker gave up).
    pub async fn reply(&self, reply: &[u8], value: &[u8], ttl: Duration) -> Result<(), StoreError> {
        let mut store = self.shared.store.clone();
        let key = Names::note(&self.shared.config.prefix, reply);
        let () = redis::pipe()
            .atomic()
            .rpush(&key, value)
            .ignore()
            .pexpire(&key, i64::try_from(millis(ttl)).unwrap_or(i64::MAX))
            .ignore()
            .query_async(&mut store)
            .await?;
        Ok(())
    }
}
