//! The scenario suite of streamflight: each scenario is written once and run on every adapter.
//! Scenarios arrive with the adapters; this crate is their home.
