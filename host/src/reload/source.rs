//! Reading a policy's module from its source: a local file, or an OCI
//! registry (every digest verified by the client).

use anyhow::{Context, anyhow};

use crate::config::{Config, ModuleSource};
use crate::oci::client::DigestMismatch;
use crate::oci::{RegistryClient, artifact::ANNOTATION_VERSION};
use crate::policy::LoadError;

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
    fn from_file(wasm: Vec<u8>) -> Module {
        Module {
            digest: crate::runtime::digest(&wasm),
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
                digest: crate::runtime::digest(&pulled.wasm),
                resolved: Some(format!("oci://{}", pulled.reference)),
                version: pulled.manifest.annotations.get(ANNOTATION_VERSION).cloned(),
                wasm: pulled.wasm,
            })
        }
    }
}

/// [`fetch`] from synchronous code (commands without a server): files are
/// read directly, registries on a thread with its own Tokio runtime.
pub fn fetch_blocking(config: &Config, source: &ModuleSource) -> Result<Module, LoadError> {
    match source {
        ModuleSource::File(path) => {
            let path = config.resolve(path);
            std::fs::read(&path)
                .with_context(|| format!("cannot read {}", path.display()))
                .map(Module::from_file)
                .map_err(LoadError::Fetch)
        }
        ModuleSource::Oci(_) => std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(|e| {
                            LoadError::Fetch(anyhow!("cannot start a Tokio runtime: {e}"))
                        })?;
                    let client = RegistryClient::new(&config.registries.insecure);
                    rt.block_on(fetch(&client, config, source))
                })
                .join()
                .unwrap_or_else(|_| Err(LoadError::Fetch(anyhow!("the fetch thread panicked"))))
        }),
    }
}
