//! Test harness: a proxy-wasm host that runs the real filter `.wasm` in
//! `cargo test` ([`host`]), and the real-Envoy runner ([`envoy`]).

pub mod filter_build;

#[cfg(feature = "host")]
pub mod host;

#[cfg(feature = "envoy")]
pub mod envoy;
