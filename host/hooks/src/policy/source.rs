//! Reading a policy's module from its source: a local file, or an OCI
//! registry (every digest verified by the client, and the signature when
//! `signatures.publicKeys` is set).

use anyhow::Context;

use steward_oci::client::DigestMismatch;
use steward_oci::signature::{self, Unverified};
use steward_oci::{Reference, RegistryClient, artifact::ANNOTATION_VERSION};

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
    /// The public key whose signature was verified, when signatures are
    /// required.
    pub signed_by: Option<String>,
}

impl Module {
    pub fn from_file(wasm: Vec<u8>) -> Module {
        Module {
            digest: steward_oci::digest(&wasm),
            wasm,
            resolved: None,
            version: None,
            signed_by: None,
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
            let (reference, signed_by) = verify_signature(client, config, reference).await?;
            let pulled = client.pull(&reference).await.map_err(registry_error)?;
            Ok(Module {
                digest: steward_oci::digest(&pulled.wasm),
                resolved: Some(format!("oci://{}", pulled.reference)),
                version: pulled.manifest.annotations.get(ANNOTATION_VERSION).cloned(),
                wasm: pulled.wasm,
                signed_by,
            })
        }
    }
}

/// When `signatures.publicKeys` is set: resolves `reference` and checks the
/// version it names is signed by one of the keys (before downloading it);
/// returns the reference pinned to that version and the key that signed.
async fn verify_signature(
    client: &RegistryClient,
    config: &Config,
    reference: &Reference,
) -> Result<(Reference, Option<String>), LoadError> {
    let keys = config.signature_keys().map_err(LoadError::Signature)?;
    if keys.is_empty() {
        return Ok((reference.clone(), None));
    }
    let digest = client.resolve(reference).await.map_err(registry_error)?;
    let verified = signature::verify(client, reference, &digest, &keys)
        .await
        .map_err(|e| {
            if e.chain().any(|c| c.is::<Unverified>()) {
                LoadError::Signature(e)
            } else {
                registry_error(e)
            }
        })?;
    Ok((verified.artifact, Some(verified.key)))
}

/// A registry read error, by step: content that does not match its digest,
/// or anything else that kept it from being read.
fn registry_error(e: anyhow::Error) -> LoadError {
    if e.chain().any(|c| c.is::<DigestMismatch>()) {
        LoadError::Digest(e)
    } else {
        LoadError::Fetch(e)
    }
}
