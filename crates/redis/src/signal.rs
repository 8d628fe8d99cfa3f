//! Messages between a fleet's replicas (`PUBLISH` and `SUBSCRIBE`): what one replica asks of
//! the others, such as cancelling a request that one of them serves.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures::{Stream, StreamExt};
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

use crate::StoreError;
use crate::fleet::Fleet;

/// The messages published on one channel since [`Fleet::listen`], as long as it lives.
#[derive(Debug)]
pub struct Messages {
    rx: UnboundedReceiver<Vec<u8>>,
}

impl Stream for Messages {
    type Item = Vec<u8>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Vec<u8>>> {
        self.rx.poll_recv(cx)
    }
}

impl<K: 'static, T: Send + 'static, E: Send + 'static> Fleet<K, T, E> {
    /// Sends `message` to every replica listening on `channel` now (`PUBLISH`): at most once,
    /// to those connected, sealed with the fleet's [secret](crate::FleetConfig::secret) (a
    /// message that does not open for a listener is dropped). Given up after the store's deadline ([`StoreError::Deadline`]).
    pub async fn publish(&self, channel: &str, message: &[u8]) -> Result<(), StoreError> {
        let mut store = self.shared.store.clone();
        let name = self.channel(channel);
        // Sealed with the fleet's secret (R24): the store's readers and subscribers learn
        // nothing from what replicas tell each other.
        let message = crate::seal::seal_message(&self.shared.config.secret, &name, message)
            .ok_or(StoreError::Sealed)?;
        let publish = async {
            let _receivers: i64 =
                redis::cmd("PUBLISH").arg(name).arg(message).query_async(&mut store).await?;
            Ok(())
        };
        self.shared.within(self.shared.deadline(), publish).await
    }

    /// Every message published on `channel` from now on, while the returned stream lives. Its
    /// connection is its own; after a store error it subscribes again once the fleet's pause
    /// is over (what is published meanwhile is missed). Spawns on the current tokio runtime.
    pub fn listen(&self, channel: &str) -> Messages
    where
        K: Send + Sync,
        T: Sync,
        E: Sync,
    {
        let (tx, rx) = unbounded_channel();
        let (shared, name) = (std::sync::Arc::clone(&self.shared), self.channel(channel));
        tokio::spawn(async move {
            loop {
                let subscribed = async {
                    let mut pubsub = shared.client.get_async_pubsub().await?;
                    pubsub.subscribe(&name).await?;
                    Ok::<_, redis::RedisError>(pubsub.into_on_message())
                };
                match subscribed.await {
                    Ok(mut messages) => loop {
                        tokio::select! {
                            message = messages.next() => match message {
                                Some(message) => {
                                    let sealed = message.get_payload_bytes();
                                    // What does not open is not the fleet's: dropped.
                                    let Some(message) =
                                        crate::seal::open_message(&shared.config.secret, &name, sealed)
                                    else {
                                        continue;
                                    };
                                    if tx.send(message).is_err() {
                                        return;
                                    }
                                }
                                // The connection is gone: subscribe again.
                                None => break,
                            },
                            () = tx.closed() => return,
                        }
                    },
                    Err(error) => shared.failed(&StoreError::from(error)),
                }
                tokio::select! {
                    () = tokio::time::sleep(shared.config.pause) => {}
                    () = tx.closed() => return,
                }
            }
        });
        Messages { rx }
    }

    /// A channel's name in the store.
    fn channel(&self, channel: &str) -> String {
        format!("{}signal:{channel}", self.shared.config.prefix)
    }
}
