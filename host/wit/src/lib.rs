//! Steward's WIT contract (`wit/`) as the host sees it: the wasmtime
//! bindings of every world (feature `host`), the package version the host
//! serves, and Kubernetes quantities, which host and guest SDK parse alike.
//!
//! The shared interfaces are generated once (`common`) so every world uses
//! the same `Pod`, `Node`, ... types and the same host implementations.

pub mod ordinals;
pub mod quantity;

/// The WIT package version this host serves; components built against
/// another version are refused at load.
pub const WIT_PACKAGE: &str = "steward:policy@0.2.0";

#[cfg(feature = "host")]
mod bindings;
#[cfg(feature = "host")]
pub mod build;
#[cfg(feature = "host")]
pub use bindings::*;
