//! Reading a policy's module from its source: a local file, or an OCI
//! registry (every digest verified by the client).

use anyhow::Context;

use steward_oci::client::DigestMismatch;
use steward_oci::{RegistryClient, artifact::ANNOTATION_VERSION};

use super::LoadError;
use crate::config::{Config, ModuleSource};

/// A module as read from its source.
#[derive(Debug, Clone)]
pub struct Module {
    pub wasm: Vec<u8>,
    /// `sha256:` of the Wasm bytes.
    pub digest: String,
    /// For registry sources, the immutable reference the tag resolved to.
    pub resolved: Option<String>,
    /// `org.opencontainers.image.version` of a registry artifact.
    pub version: Option<String>,
}

impl Module {
    pub fn from_file(wasm: Vec<u8>) -> Module {
        Module {
            digest: steward_oci::digest(&wasm),
            wasm,
            resolved: None,
            version: None,
        }
    }
}

/// Reads the module `source` names.
pub async fn fetch(
    client: &RegistryClient,
    config: &Config,
    source: &ModuleSource,
) -> Result<Module, LoadError> {
    match source {
        ModuleSource::File(path) => {
            let path = config.resolve(path);
            tokio::fs::read(&path)
                .await
                .with_context(|| format!("cannot read {}", path.display()))
                .map(Module::from_file)
                .map_err(LoadError::Fetch)
        }
        ModuleSource::Oci(reference) => {
            let pulled = client.pull(reference).await.map_err(|e| {
                if e.chain().any(|c| c.is::<DigestMismatch>()) {
                    LoadError::Digest(e)
                } else {
                    LoadError::Fetch(e)
                }
            })?;
            Ok(Module {
                digest: steward_oci::digest(&pulled.wasm),
                resolved: Some(format!("oci://{}", pulled.reference)),
                version: pulled.manifest.annotations.get(ANNOTATION_VERSION).cloned(),
                wasm: pulled.wasm,
            })
        }
    }
}
