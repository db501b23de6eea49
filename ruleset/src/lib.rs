//! meshfence's compiled ruleset: the one format and the one evaluator that both
//! the `meshfence` compiler and the proxy-wasm filter use.
//!
//! - [`ir`]: what a ruleset says (policies, rules, clauses, mesh settings).
//! - [`format`]: the versioned, checksummed binary encoding and its single safe
//!   validating decoder, [`format::from_bytes`].
//! - [`eval`]: workload selection, the caller-namespace index and the decision.
//! - [`identity`], [`path`], [`matching`]: the semantics the evaluator is built from.
//!
//! The crate is `no_std` + `alloc` and builds for `wasm32-unknown-unknown`.
//! Nothing reachable from untrusted input (ruleset bytes, request data) can
//! panic: the lints below forbid the constructs that could.
#![no_std]
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

extern crate alloc;
#[cfg(any(test, feature = "reference"))]
extern crate std;

pub mod eval;
pub mod format;
pub mod identity;
pub mod ir;
pub mod matching;
pub mod path;
#[cfg(any(test, feature = "reference"))]
pub mod reference;
pub mod request;

pub use eval::{Cause, Decision, DryRun, RuleRef, Workload, WorkloadPolicy};
pub use ir::*;
pub use request::{HeaderList, Headers, Request};
