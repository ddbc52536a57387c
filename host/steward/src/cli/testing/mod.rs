//! Testing policies: their Rust unit tests run inside Wasm
//! (`steward test-runner`, cargo's runner for wasm32-wasip2) and
//! declarative fixture suites (`steward test`).

pub mod libtest;
pub mod pd_state;
mod should_panic;
pub mod suite;
