//! OCI distribution of policies: references, the CNCF Wasm artifact layout,
//! a registry client with Docker-config credentials, content digests.

pub mod artifact;
pub mod auth;
pub mod client;
pub mod reference;
pub mod signature;

use sha2::{Digest, Sha256};

pub use artifact::{Artifact, ComponentConfig, Manifest, PushMeta, WasmConfig};
pub use client::{Pulled, RegistryClient};
pub use reference::Reference;

/// The content digest of `bytes`, `sha256:<hex>`, as registries name blobs
/// (and as Steward names a policy version).
pub fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}
