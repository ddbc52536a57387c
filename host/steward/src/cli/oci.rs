//! `steward push`, `pull` and `inspect`.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

use steward_oci::{Artifact, ComponentConfig, PushMeta, Reference, RegistryClient};
use steward_runtime::{Runtime, World};
use steward_wit::WIT_PACKAGE;

/// What `steward inspect` reports about a policy component.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Inspection {
    /// The file, or the immutable registry reference.
    pub source: String,
    /// `sha256:` of the component.
    pub digest: String,
    pub size: u64,
    pub world: String,
    /// The `steward:policy` version the component imports, if it imports
    /// any of the package's interfaces.
    pub wit_package: Option<String>,
    pub exports: Vec<String>,
    pub imports: Vec<String>,
    /// Registry artifacts: the manifest digest and annotations.
    pub manifest_digest: Option<String>,
    pub annotations: BTreeMap<String, String>,
}

/// The world, WIT package and interface of `wasm`, checked the way the
/// host checks a policy before serving it.
fn describe(runtime: &Runtime, wasm: &[u8]) -> Result<(World, Option<String>, ComponentConfig)> {
    let (component, world) = runtime.load(wasm)?;
    let interface = runtime.interface(&component);
    let wit_package = interface
        .imports
        .iter()
        .find_map(|i| i.strip_prefix("steward:policy/"))
        .and_then(|rest| rest.split_once('@'))
        .map(|(_, version)| format!("steward:policy@{version}"));
    let version = WIT_PACKAGE.split_once('@').map_or("", |(_, v)| v);
    let component = ComponentConfig {
        exports: interface.exports,
        imports: interface.imports,
        target: Some(format!("steward:policy/{}@{version}", world.name())),
    };
    Ok((world, wit_package, component))
}

/// Pushes the policy component `file` to `reference`; returns the
/// immutable reference.
pub async fn push(
    runtime: &Runtime,
    client: &RegistryClient,
    file: &Path,
    reference: &Reference,
    mut meta: PushMeta,
) -> Result<Reference> {
    let wasm = tokio::fs::read(file)
        .await
        .with_context(|| format!("cannot read {}", file.display()))?;
    let (_, _, component) = describe(runtime, &wasm)
        .with_context(|| format!("{} is not a Steward policy", file.display()))?;
    if meta.title.is_none() {
        meta.title = file.file_name().map(|n| n.to_string_lossy().into_owned());
    }
    if meta.version.is_none() {
        meta.version = reference.tag.clone();
    }
    let artifact = Artifact::new(wasm, component, &meta);
    client.push(reference, &artifact).await
}

/// Pulls `reference` into `out` (written only once every digest checked);
/// returns the immutable reference.
pub async fn pull(client: &RegistryClient, reference: &Reference, out: &Path) -> Result<Reference> {
    let pulled = client.pull(reference).await?;
    let tmp = out.with_extension(format!("tmp{}", std::process::id()));
    tokio::fs::write(&tmp, &pulled.wasm)
        .await
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    tokio::fs::rename(&tmp, out)
        .await
        .with_context(|| format!("cannot write {}", out.display()))?;
    Ok(pulled.reference)
}

/// Inspects a component file, or (when no such file exists) a registry
/// reference.
pub async fn inspect(
    runtime: &Runtime,
    client: &RegistryClient,
    target: &str,
) -> Result<Inspection> {
    let path = Path::new(target);
    let (source, wasm, manifest_digest, annotations) = if path.is_file() {
        let wasm = tokio::fs::read(path)
            .await
            .with_context(|| format!("cannot read {}", path.display()))?;
        (target.to_string(), wasm, None, BTreeMap::new())
    } else {
        let reference: Reference = target
            .parse()
            .with_context(|| format!("`{target}` is neither a file nor an OCI reference"))?;
        let pulled = client.pull(&reference).await?;
        (
            format!("oci://{}", pulled.reference),
            pulled.wasm.clone(),
            pulled.reference.digest.clone(),
            pulled.manifest.annotations.clone(),
        )
    };
    let (world, wit_package, component) = describe(runtime, &wasm)?;
    Ok(Inspection {
        source,
        digest: steward_oci::digest(&wasm),
        size: wasm.len() as u64,
        world: world.name().into(),
        wit_package,
        exports: component.exports,
        imports: component.imports,
        manifest_digest,
        annotations,
    })
}

impl Inspection {
    /// The human-readable report.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut line = |k: &str, v: &str| out.push_str(&format!("{k:<13}{v}\n"));
        line("source:", &self.source);
        line("digest:", &self.digest);
        line("size:", &format!("{} bytes", self.size));
        if let Some(m) = &self.manifest_digest {
            line("manifest:", m);
        }
        line("world:", &self.world);
        line(
            "wit package:",
            self.wit_package
                .as_deref()
                .unwrap_or("(imports no steward:policy interface)"),
        );
        line("exports:", &self.exports.join(", "));
        line("imports:", &self.imports.join(", "));
        for (k, v) in &self.annotations {
            line("annotation:", &format!("{k}={v}"));
        }
        out
    }
}
