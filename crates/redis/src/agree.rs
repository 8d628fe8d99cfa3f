//! The times a replica's fleet link and its local manager must agree on (linger, keep, the
//! resume window): derived from the manager's [`Config`], or checked with a clear error.

use std::fmt;
use std::time::Duration;

use streamflight_tokio::Config;

use crate::FleetConfig;

/// How a fleet's settings disagree with its local manager's ([`Flights::try_new`](crate::Flights::try_new)).
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// The fleet lingers ([`FleetConfig::linger`]) for another time than the local manager
    /// ([`Config::linger`]): an identical request would join a finished answer on one replica
    /// and ask the upstream again on another (R17 across replicas).
    Linger {
        /// The fleet's linger.
        fleet: Duration,
        /// The local manager's linger.
        local: Duration,
    },
    /// The fleet keeps a finished flight's stream ([`FleetConfig::keep`]) for less than the
    /// local manager lingers or keeps a detached request ([`Config::resume_window`]): a replica
    /// joining within the linger, or resuming within the window, would find the stream gone.
    Keep {
        /// The fleet's keep.
        keep: Duration,
        /// The least it must be: the longer of the linger and the resume window.
        needed: Duration,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Linger { fleet, local } => write!(
                f,
                "the fleet lingers {fleet:?} but the local manager {local:?}: set one linger \
                 (FleetConfig::matching takes the manager's)"
            ),
            ConfigError::Keep { keep, needed } => write!(
                f,
                "the fleet keeps a finished stream {keep:?}, less than the linger or resume window \
                 ({needed:?}) that needs it (FleetConfig::matching raises it)"
            ),
        }
    }
}

impl std::error::Error for ConfigError {}

impl FleetConfig {
    /// These settings with the times the local manager's `config` decides: the fleet lingers
    /// as long as the manager ([`Config::linger`]), and keeps a finished stream at least as
    /// long as the linger and the resume window ([`Config::resume_window`]), more if
    /// [`keep`](Self::keep) says so. Set linger and the resume window once, on the manager's
    /// config, and derive the fleet's from it.
    ///
    /// ```
    /// use std::time::Duration;
    /// use streamflight_redis::FleetConfig;
    /// use streamflight_tokio::Config;
    ///
    /// let local = Config::default().linger(Duration::from_secs(5)).resume_window(Duration::from_secs(90));
    /// let fleet = FleetConfig::default().matching(&local);
    /// assert_eq!(fleet.linger_duration(), Duration::from_secs(5));
    /// assert_eq!(fleet.keep_duration(), Duration::from_secs(90));
    /// assert_eq!(fleet.check(&local), Ok(()));
    /// ```
    pub fn matching(mut self, config: &Config) -> Self {
        self.linger = config.linger_duration();
        self.keep = self.keep.max(needed(config));
        self
    }

    /// Whether these settings agree with the local manager's `config`: the same linger, and a
    /// keep that covers it and the resume window. What [`Flights::try_new`](crate::Flights::try_new) checks.
    ///
    /// ```
    /// use std::time::Duration;
    /// use streamflight_redis::{ConfigError, FleetConfig};
    /// use streamflight_tokio::Config;
    ///
    /// let local = Config::default().resume_window(Duration::from_secs(60));
    /// let fleet = FleetConfig::default().keep(Duration::from_secs(10));
    /// let needed = Duration::from_secs(60);
    /// assert_eq!(fleet.check(&local), Err(ConfigError::Keep { keep: Duration::from_secs(10), needed }));
    /// ```
    pub fn check(&self, config: &Config) -> Result<(), ConfigError> {
        let local = config.linger_duration();
        if self.linger != local {
            return Err(ConfigError::Linger { fleet: self.linger, local });
        }
        let needed = needed(config).max(self.linger);
        if self.keep < needed {
            return Err(ConfigError::Keep { keep: self.keep, needed });
        }
        Ok(())
    }

    /// How long a finished flight is joined by new requests on any replica
    /// ([`linger`](Self::linger)).
    pub fn linger_duration(&self) -> Duration {
        self.linger
    }

    /// How long a flight's stream stays after its end ([`keep`](Self::keep)).
    pub fn keep_duration(&self) -> Duration {
        self.keep
    }
}

/// The least a finished stream must be kept for a manager with `config`.
fn needed(config: &Config) -> Duration {
    config.linger_duration().max(config.resume_window_duration())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use streamflight_tokio::Config;

    use super::ConfigError;
    use crate::FleetConfig;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn matching_settings_agree_and_each_disagreement_is_named() {
        for local in [
            Config::default(),
            Config::default().linger(S(40)),
            Config::default().resume_window(S(300)),
            Config::default().linger(S(2)).resume_window(S(5)),
        ] {
            let fleet = FleetConfig::default().linger(S(7)).keep(S(1)).matching(&local);
            assert_eq!(fleet.check(&local), Ok(()), "{local:?}");
            assert!(fleet.keep_duration() >= S(1), "never lowered");
        }
        let local = Config::default().linger(S(3));
        let fleet = FleetConfig::default();
        assert_eq!(fleet.check(&local), Err(ConfigError::Linger { fleet: S(0), local: S(3) }));
        let fleet = FleetConfig::default().linger(S(40));
        let local = Config::default().linger(S(40));
        assert_eq!(fleet.check(&local), Err(ConfigError::Keep { keep: S(30), needed: S(40) }));
        // The default keep already covers defaults.
        assert_eq!(FleetConfig::default().check(&Config::default()), Ok(()));
    }
}
