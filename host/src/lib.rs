//! Steward: Kubernetes scheduler-extender, admission and reconcile hooks whose
//! decisions come from sandboxed Wasm components.
//!
//! The request path reads top to bottom: a hook module ([`extender`]) decodes
//! the request, [`policy`] selects the configured policies for it, [`runtime`]
//! evaluates each in a fresh sandboxed instance that queries [`cluster`], and
//! the hook module encodes the answer.

pub mod actions;
pub mod admission;
pub mod bench;
pub mod cluster;
pub mod config;
pub mod extender;
pub mod metrics;
pub mod oci;
pub mod pd;
pub mod policy;
pub mod reconcile;
pub mod reload;
pub mod runtime;
pub mod server;
pub mod simulate;
pub mod testing;
