//! Flights shared across replicas through Redis (R19-R26): the link to the store, how a flight
//! is written to it, and what one replica hands another (a resume, a cancel).

pub(crate) mod handoff;
mod wire;

use std::time::Duration;

use streamflight_redis::{Fleet, FleetConfig};

use crate::config::Settings;
use crate::fleet::wire::Wire;
use crate::flight::{Part, UpstreamError};
use crate::key::Key;

/// The link to the fleet's store at `url`; an error (one line, without the URL, which may
/// hold a password) if it cannot be made.
pub(crate) fn connect(url: &str, settings: &Settings) -> Result<Fleet<Key, Part, UpstreamError>, String> {
    use streamflight_redis::redis::{Client, TlsCertificates};

    let client = match &settings.redis_ca {
        None => Client::open(url),
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| format!("--redis-ca {}: {e}", path.display()))?;
            Client::build_with_tls(url, TlsCertificates { client_tls: None, root_cert: Some(pem) })
        }
    }
    .map_err(|e| format!("--redis: {e}"))?;
    let mut config = FleetConfig::default()
        .lease(settings.lease)
        .linger(settings.linger)
        // Long enough for a slow replica to read the end, and for every resume window.
        .keep(settings.resume_window.max(settings.linger).max(Duration::from_secs(30)))
        // A request's hand, while it is read: as long as the longest answer, and a window more.
        .holding(settings.max_answer_duration.saturating_add(settings.resume_window));
    if let Some(replica) = &settings.replica_id {
        config = config.replica(replica.clone());
    }
    // Keys every seal in the store (R24); `Settings::check` makes sure there is one.
    if let Some(secret) = &settings.fleet_secret {
        config = config.secret(secret);
    }
    Fleet::with_client(client, Wire, config).map_err(|e| format!("--redis: {e}"))
}

/// How often a stopping replica looks whether it still leads flights for the others.
const SETTLE_EVERY: Duration = Duration::from_millis(20);

/// Resolves once this replica leads no flight for its fleet (at once without one): what a
/// stopping replica waits for, within its grace, so that the replicas that follow its flights
/// get them whole (R26). The count is looked at every [`SETTLE_EVERY`].
pub(crate) async fn settled(fleet: Option<Fleet<Key, Part, UpstreamError>>) {
    let Some(fleet) = fleet else { return };
    let leading = fleet.leading();
    if leading == 0 {
        return;
    }
    tracing::info!(leading, "waiting for the flights this replica leads for other replicas to end");
    while fleet.leading() > 0 {
        tokio::time::sleep(SETTLE_EVERY).await;
    }
    tracing::info!("no flight led for other replicas any more");
}
