//! Steward's host-level tests, one binary with a module per area (a binary
//! per area would link wasmtime, kube and axum fifteen times). They use
//! real parts on loopback (the guest components, a registry, a PD double)
//! but no Kubernetes control plane: those tests are in `tests/e2e/`.

mod admission;
mod availability;
mod extender_wire;
mod helm;
mod hot_swap;
mod http;
mod image;
mod interop;
mod layout;
mod local_pv;
mod new_policy;
mod oci;
mod pd;
mod race;
mod reconcile;
mod runtime;
mod sandbox;
mod serving;
mod signing;
mod simulate;
mod worlds;
