//! Upstream requests spread over HTTP clients, each with its own connections, so that no
//! HTTP/2 connection carries more streams than the upstream takes at once.
//!
//! A client's pool sends every request to an HTTP/2 upstream on one connection. A server
//! that allows 100 streams on a connection (100-256 is common) makes the next request wait
//! until one of them ends, which for LLM streams is tens of seconds: one request would slow
//! others. So each client (a *lane*) carries at most `--upstream-streams-per-connection`
//! requests, and a request that finds every lane full opens a new one. Over HTTP/1.1 every
//! request has a connection of its own anyway; the lanes only split the idle pool, and the
//! first lane with room is taken, so a quiet gateway reuses its connections as before.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// Makes a new lane's client.
type Make = Box<dyn Fn() -> Result<reqwest::Client, String> + Send + Sync>;

/// The upstream's clients, and how many requests each carries.
pub(crate) struct Lanes {
    make: Make,
    per_lane: usize,
    lanes: Mutex<Vec<Lane>>,
}

struct Lane {
    client: reqwest::Client,
    /// Requests on this lane whose [`Ticket`] is alive.
    carried: Arc<AtomicUsize>,
}

/// A request's place on its lane, given back when dropped: keep it as long as the response
/// (its body included) is read.
#[derive(Debug)]
pub(crate) struct Ticket {
    carried: Arc<AtomicUsize>,
    /// Which lane, for the tests.
    #[cfg(test)]
    lane: usize,
}

#[cfg(test)]
impl Ticket {
    /// Which lane, counted from 0 in the order they were opened.
    fn lane(&self) -> usize {
        self.lane
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.carried.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Lanes {
    /// Lanes of at most `per_lane` requests (at least 1), their clients made by `make`,
    /// which is called once here: its error is the start's.
    pub(crate) fn new(
        per_lane: usize,
        make: impl Fn() -> Result<reqwest::Client, String> + Send + Sync + 'static,
    ) -> Result<Lanes, String> {
        let first = Lane { client: make()?, carried: Arc::default() };
        Ok(Lanes { make: Box::new(make), per_lane: per_lane.max(1), lanes: Mutex::new(vec![first]) })
    }

    /// A client for one request: the first lane with room, else a new lane.
    ///
    /// If a new lane's client cannot be made (it was made once at the start, so this is not
    /// expected), the least loaded lane carries the request over its limit.
    pub(crate) fn take(&self) -> (reqwest::Client, Ticket) {
        // Only reads of the counts and a push happen under the lock; a client is made under
        // it too, at most once per `per_lane` concurrent requests, so that two requests
        // finding the lanes full open one lane, not two.
        let mut lanes = self.lanes.lock().unwrap_or_else(PoisonError::into_inner);
        let room = lanes.iter().position(|lane| lane.carried.load(Ordering::Relaxed) < self.per_lane);
        let index = match room {
            Some(index) => index,
            None => match (self.make)() {
                Ok(client) => {
                    lanes.push(Lane { client, carried: Arc::default() });
                    tracing::debug!(lanes = lanes.len(), "every upstream lane is full: opened another");
                    lanes.len() - 1
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot open another upstream lane: the least loaded carries more");
                    let loads = lanes.iter().map(|lane| lane.carried.load(Ordering::Relaxed));
                    loads.enumerate().min_by_key(|&(_, load)| load).map_or(0, |(index, _)| index)
                }
            },
        };
        let lane = &lanes[index];
        lane.carried.fetch_add(1, Ordering::Relaxed);
        let ticket = Ticket {
            carried: Arc::clone(&lane.carried),
            #[cfg(test)]
            lane: index,
        };
        (lane.client.clone(), ticket)
    }

    /// How many lanes are open.
    #[cfg(test)]
    fn count(&self) -> usize {
        self.lanes.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use super::*;
    use crate::upstream::client::{self, ClientOptions};

    fn client() -> Result<reqwest::Client, String> {
        client::build(&ClientOptions { connect_timeout: Duration::from_secs(1), ca_file: None, http2: false })
    }

    fn lanes(per_lane: usize) -> (Lanes, Arc<AtomicUsize>) {
        let made = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&made);
        let lanes = Lanes::new(per_lane, move || {
            counted.fetch_add(1, Ordering::Relaxed);
            client()
        })
        .unwrap();
        (lanes, made)
    }

    #[test]
    fn a_full_lane_opens_another_and_a_freed_place_is_taken_first() {
        let (lanes, made) = lanes(2);
        let first: Vec<Ticket> = (0..5).map(|_| lanes.take().1).collect();
        let on: Vec<usize> = first.iter().map(Ticket::lane).collect();
        assert_eq!(on, [0, 0, 1, 1, 2]);
        assert_eq!((lanes.count(), made.load(Ordering::Relaxed)), (3, 3));

        let mut held = first.into_iter().skip(1).collect::<Vec<_>>();
        let again = lanes.take().1;
        assert_eq!(again.lane(), 0, "the first lane with room");
        held.push(again);
        assert_eq!(lanes.take().1.lane(), 2);
        drop(held);
        assert_eq!(lanes.take().1.lane(), 0);
        assert_eq!(lanes.count(), 3, "lanes are kept for the next burst");
    }

    #[test]
    fn a_lane_that_cannot_be_made_leaves_the_request_on_the_least_loaded() {
        let calls = AtomicUsize::new(0);
        let lanes = Lanes::new(1, move || match calls.fetch_add(1, Ordering::Relaxed) {
            0 => client(),
            _ => Err("no".to_owned()),
        })
        .unwrap();
        let tickets: Vec<Ticket> = (0..3).map(|_| lanes.take().1).collect();
        assert!(tickets.iter().all(|ticket| ticket.lane() == 0));
        assert_eq!(lanes.count(), 1);
    }

    #[test]
    fn the_first_client_s_error_is_the_start_s() {
        let error = Lanes::new(4, || Err("cannot read the CA file".to_owned())).err();
        assert_eq!(error.as_deref(), Some("cannot read the CA file"));
    }
}
