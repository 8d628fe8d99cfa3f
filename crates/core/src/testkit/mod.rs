//! The reference models the model checks, the exhaustive enumeration and the fuzz targets share,
//! each with the harness that drives the real part beside it. Test oracles, not a stable API.

pub mod fleet;
#[cfg(all(feature = "std", not(loom)))]
pub(crate) mod history;
mod machine;

pub use fleet::check_fleet;
#[cfg(all(feature = "std", not(loom)))]
pub use history::check_history;
pub use machine::{Harness, Input, Model, check_machine, configs, timed};
