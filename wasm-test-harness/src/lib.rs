//! Test harness.

#[cfg(feature = "envoy")]
pub mod envoy;
