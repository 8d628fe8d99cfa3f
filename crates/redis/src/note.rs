//! Notes that change hands: besides [`Fleet::save`] and [`Fleet::load`], a note can be taken
//! only if nobody holds it ([`Fleet::claim`]) or only from the value one saw
//! ([`Fleet::swap`]), and one replica can ask another a question and wait for its answer
//! ([`Fleet::ask`], [`Fleet::reply`]) without polling the store.

use std::sync::PoisonError;
use std::time::Duration;

use redis::{AsyncCommands, AsyncConnectionConfig, Script, SetExpiry, SetOptions};

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

/// How many idle connections a replica keeps for its next asks.
const IDLE_ASKERS: usize = 4;

impl<K: 'static, T: Send + 'static, E: Send + 'static> Fleet<K, T, E> {
    /// A note's value sealed under its name (R24), the same every time.
    fn sealed(&self, name: &[u8], key: &str, value: &[u8]) -> Result<Vec<u8>, StoreError> {
        crate::seal::seal_note(&self.shared.config.secret, name, key, value).ok_or(StoreError::Sealed)
    }

    /// Saves `value` under `name` for `ttl` only if there is no note under `name` now
    /// (`SET NX PX`, on the hash of the name as [`save`](Fleet::save)): whether it did.
    pub async fn claim(&self, name: &[u8], value: &[u8], ttl: Duration) -> Result<bool, StoreError> {
        let mut store = self.shared.store.clone();
        let key = Names::note(&self.shared.config.prefix, name);
        let sealed = self.sealed(name, &key, value)?;
        let options = SetOptions::default()
            .conditional_set(redis::ExistenceCheck::NX)
            .with_expiration(SetExpiry::PX(millis(ttl)));
        let claim = async { Ok(store.set_options::<_, _, Option<String>>(&key, sealed, options).await?) };
        Ok(self.shared.within(self.shared.deadline(), claim).await?.is_some())
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
        // Notes seal the same every time: the sealed `expected` is what the store holds.
        let (expected, value) = (self.sealed(name, &key, expected)?, self.sealed(name, &key, value)?);
        let script = Script::new(SWAP);
        let mut invocation = script.key(&key);
        invocation.arg(expected).arg(value).arg(millis(ttl));
        let swap = async { Ok(invocation.invoke_async::<i64>(&mut store).await?) };
        Ok(self.shared.within(self.shared.deadline(), swap).await? == 1)
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
        let idle = self.shared.asking.lock().unwrap_or_else(PoisonError::into_inner).pop();
        let mut connection = match idle {
            Some(idle) => idle,
            None => {
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(self.shared.deadline()))
                    .set_response_timeout(Some(wait + self.shared.deadline()));
                self.shared.client.get_multiplexed_async_connection_with_config(&config).await?
            }
        };
        let key = Names::note(&self.shared.config.prefix, reply);
        // BLPOP's timeout is in seconds, with decimals (Redis 6 and later); 0 would wait forever.
        let seconds = wait.as_secs_f64().max(0.001);
        let popped: Option<(String, Vec<u8>)> =
            redis::cmd("BLPOP").arg(key).arg(seconds).query_async(&mut connection).await?;
        let mut idle = self.shared.asking.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < IDLE_ASKERS {
            idle.push(connection);
        }
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
