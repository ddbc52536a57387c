//! OCI distribution of policies: references, the CNCF Wasm artifact layout,
//! a registry client with Docker-config credentials.

pub mod artifact;
pub mod auth;
pub mod client;
pub mod commands;
pub mod reference;

pub use artifact::{Artifact, ComponentConfig, Manifest, PushMeta, WasmConfig};
pub use client::{Pulled, RegistryClient};
pub use reference::Reference;
