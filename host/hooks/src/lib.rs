//! Steward's hooks. Each takes a request's bytes and reads top to bottom:
//! decode, select the configured policies, evaluate each in the runtime,
//! record metrics, encode the answer.
//!
//! - [`extender`]: kube-scheduler's extender verbs;
//! - [`admission`]: AdmissionReview v1 (validating and mutating);
//! - [`reconcile`]: the controller for opted-in StatefulSets;
//! - [`actions`]: the fixed vocabulary policies act through (PD, Kubernetes);
//! - [`policy`]: the one loader of configured policies, and [`reload`] which
//!   watches their sources and swaps new versions in;
//! - [`availability`]: policies degraded for kinds the API server lacks,
//!   and readiness;
//! - [`config`], [`pd`] (PD's HTTP API), [`metrics`];
//! - [`Hooks`]: all of them, built from one configuration.

pub mod actions;
pub mod admission;
pub mod availability;
pub mod budget;
pub mod config;
pub mod extender;
mod hooks;
pub mod metrics;
pub mod pd;
pub mod policy;
pub mod reconcile;
pub mod reload;

pub use hooks::Hooks;
