//! Where flights go, chosen once at start: the embedded simulated model or a real upstream.
//! Both answer an [`Outgoing`] request with the same [`Parts`], so the rest never asks which.

use std::sync::Arc;

use futures::future::BoxFuture;

use crate::config::Settings;
use crate::flight::{Parts, UpstreamError};
use crate::metrics::Metrics;
use crate::sim;
use crate::upstream::bounds::Bounds;
use crate::upstream::{Outgoing, Upstream};

/// The backend of every flight.
pub(crate) enum Backend {
    /// The embedded simulated model (no `--upstream`): the gateway runs offline, its answers
    /// bounded as an upstream's are.
    Simulated(sim::Pace, Bounds),
    /// A real OpenAI-compatible server.
    Upstream(Arc<Upstream>),
}

impl Backend {
    /// The backend `settings` name; an error (one line) if the upstream client cannot be built.
    pub(crate) fn new(settings: &Settings, metrics: Arc<Metrics>) -> Result<Backend, String> {
        Ok(match &settings.upstream {
            Some(_) => Backend::Upstream(Arc::new(Upstream::new(settings, metrics)?)),
            None => Backend::Simulated(
                sim::Pace {
                    first_token_delay: settings.sim_first_token_delay,
                    token_interval: settings.sim_token_interval,
                    tokens: settings.sim_tokens,
                },
                Bounds::of(settings),
            ),
        })
    }

    /// Prepares a flight: resolves once the answer's head is in, with its parts to read.
    pub(crate) fn open(&self, outgoing: Outgoing) -> BoxFuture<'static, Result<Parts, UpstreamError>> {
        match self {
            Backend::Simulated(pace, bounds) => {
                let (pace, bounds) = (*pace, *bounds);
                let api = outgoing.api;
                // Its events are classified as an upstream's are (its `ping`s are not stored).
                let answer = sim::answer(api, outgoing.body, outgoing.canonical, pace);
                Box::pin(async move {
                    let started = tokio::time::Instant::now();
                    Ok(bounds.apply(crate::dialect::classified(api, answer.await?), started))
                })
            }
            Backend::Upstream(upstream) => Box::pin(Arc::clone(upstream).open(outgoing)),
        }
    }

    /// What answers, for the startup line (no credential in it).
    pub(crate) fn describe(&self) -> String {
        match self {
            Backend::Simulated(..) => {
                "the embedded simulated model (offline; give --upstream URL for a real one)".to_owned()
            }
            Backend::Upstream(upstream) => format!("the upstream {}", upstream.url),
        }
    }
}
