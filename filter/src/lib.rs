//! The meshfence proxy-wasm filter.
