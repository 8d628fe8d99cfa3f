//! Flights shared across replicas through Redis (R19-R26): how a flight is written to the
//! store, and what one replica hands another (a resume, a cancel).

pub mod handoff;
pub mod wire;
