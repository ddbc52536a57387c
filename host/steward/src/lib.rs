//! Steward: Kubernetes scheduler-extender, admission and reconcile hooks whose
//! decisions come from sandboxed Wasm components.
//!
//! This crate is the `steward` binary's: the HTTP servers ([`server`]) and the
//! command line ([`cli`]). The host's other crates, re-exported here under
//! short names, are layered bottom to top: [`wit`] (the contract's bindings),
//! [`runtime`] (wasmtime, the sandbox; no Kubernetes, HTTP or async runtime),
//! [`cluster`] (the cache policies query) and [`oci`] (registries), then
//! `steward-hooks` (configuration, the policy loader and every hook). The
//! request path reads top to bottom: the server carries a request's bytes
//! to a hook, which decodes it, selects the configured policies, evaluates
//! each in a fresh sandboxed instance that queries the cluster cache, and
//! encodes the answer.

pub mod allocator;
pub mod cli;
pub mod server;

pub use steward_cluster as cluster;
pub use steward_hooks::{
    Hooks, actions, admission, availability, config, extender, metrics, pd, policy, reconcile,
    reload,
};
pub use steward_oci as oci;
pub use steward_runtime as runtime;
pub use steward_wit as wit;
