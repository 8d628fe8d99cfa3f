//! Why a manager could not be built from its [`Config`](crate::Config): what
//! [`Flights::try_new`](super::Flights::try_new) returns instead of panicking.

use core::fmt;

/// Why [`Flights::try_new`](super::Flights::try_new) or
/// [`Flights::try_with_runtime`](super::Flights::try_with_runtime) built no manager.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BuildError {
    /// The config's [`weigher`](crate::Config::weigher) weighs another item type than the
    /// manager's: a type error the config cannot catch, since it is not generic over the item.
    WeigherType {
        /// The type the weigher weighs.
        weighs: &'static str,
        /// The manager's item type.
        items: &'static str,
    },
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::WeigherType { weighs, items } => {
                write!(f, "Config::weigher weighs `{weighs}`, but this manager's items are `{items}`")
            }
        }
    }
}

impl std::error::Error for BuildError {}
