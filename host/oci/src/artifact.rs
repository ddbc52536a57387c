//! The CNCF Wasm OCI artifact: an OCI image manifest whose config has media
//! type `application/vnd.wasm.config.v0+json` and whose one layer is the
//! component, `application/wasm`
//! (<https://tag-runtime.cncf.io/wgs/wasm/deliverables/wasm-oci-artifact/>).

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::digest;

pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// Older registries and tools may still answer with Docker's schema 2 type.
pub const DOCKER_MANIFEST_MEDIA_TYPE: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.wasm.config.v0+json";
pub const LAYER_MEDIA_TYPE: &str = "application/wasm";

pub const ANNOTATION_CREATED: &str = "org.opencontainers.image.created";
pub const ANNOTATION_TITLE: &str = "org.opencontainers.image.title";
pub const ANNOTATION_VERSION: &str = "org.opencontainers.image.version";
pub const ANNOTATION_SOURCE: &str = "org.opencontainers.image.source";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// Set to the config media type: what the distribution spec's
    /// referrers API reports for a manifest without one anyway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// The config blob, with the fields the CNCF layout defines.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WasmConfig {
    pub created: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// Always `wasm`.
    pub architecture: String,
    /// `wasip2` for components.
    pub os: String,
    /// Makes the config (and so the manifest) unique per layer content.
    pub layer_digests: Vec<String>,
    pub component: Option<ComponentConfig>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComponentConfig {
    pub exports: Vec<String>,
    pub imports: Vec<String>,
    /// The world the component targets, e.g. `steward:policy/scheduler@0.2.0`.
    #[serde(default)]
    pub target: Option<String>,
}

/// What goes into a pushed artifact beyond the component.
#[derive(Debug, Clone, Default)]
pub struct PushMeta {
    /// File name recorded as the layer and manifest title.
    pub title: Option<String>,
    pub author: Option<String>,
    pub version: Option<String>,
    pub source: Option<String>,
    /// Further manifest annotations (`key=value` on the command line).
    pub annotations: BTreeMap<String, String>,
}

/// The three pieces of an artifact, serialized exactly as pushed.
pub struct Artifact {
    pub manifest: Manifest,
    pub manifest_json: Vec<u8>,
    pub config_json: Vec<u8>,
    pub wasm: Vec<u8>,
}

impl Artifact {
    /// Lays out `wasm` (a component described by `component`) with `meta`.
    pub fn new(wasm: Vec<u8>, component: ComponentConfig, meta: &PushMeta) -> Artifact {
        let created = jiff::Timestamp::now().to_string();
        let wasm_digest = digest(&wasm);
        let config = WasmConfig {
            created: created.clone(),
            author: meta.author.clone(),
            architecture: "wasm".into(),
            os: "wasip2".into(),
            layer_digests: vec![wasm_digest.clone()],
            component: Some(component),
        };
        let config_json = serde_json::to_vec(&config).expect("the config serializes");
        let mut layer_annotations = BTreeMap::new();
        let mut annotations = BTreeMap::from([(ANNOTATION_CREATED.to_string(), created)]);
        if let Some(title) = &meta.title {
            layer_annotations.insert(ANNOTATION_TITLE.to_string(), title.clone());
            annotations.insert(ANNOTATION_TITLE.to_string(), title.clone());
        }
        if let Some(version) = &meta.version {
            annotations.insert(ANNOTATION_VERSION.to_string(), version.clone());
        }
        if let Some(source) = &meta.source {
            annotations.insert(ANNOTATION_SOURCE.to_string(), source.clone());
        }
        annotations.extend(meta.annotations.clone());
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(MANIFEST_MEDIA_TYPE.into()),
            artifact_type: Some(CONFIG_MEDIA_TYPE.into()),
            config: Descriptor {
                media_type: CONFIG_MEDIA_TYPE.into(),
                digest: digest(&config_json),
                size: config_json.len() as u64,
                annotations: BTreeMap::new(),
            },
            layers: vec![Descriptor {
                media_type: LAYER_MEDIA_TYPE.into(),
                digest: wasm_digest,
                size: wasm.len() as u64,
                annotations: layer_annotations,
            }],
            annotations,
        };
        let manifest_json = serde_json::to_vec(&manifest).expect("the manifest serializes");
        Artifact {
            manifest,
            manifest_json,
            config_json,
            wasm,
        }
    }
}

impl Manifest {
    /// Parses a manifest, refusing anything but an image manifest.
    pub fn parse(bytes: &[u8]) -> Result<Manifest> {
        let manifest: Manifest =
            serde_json::from_slice(bytes).context("the manifest is not an OCI image manifest")?;
        if manifest.schema_version != 2 {
            bail!(
                "the manifest has schemaVersion {}, expected 2",
                manifest.schema_version
            );
        }
        if let Some(t) = &manifest.media_type
            && t != MANIFEST_MEDIA_TYPE
            && t != DOCKER_MANIFEST_MEDIA_TYPE
        {
            bail!("the manifest has media type {t}; expected {MANIFEST_MEDIA_TYPE}");
        }
        Ok(manifest)
    }

    /// The one `application/wasm` layer of a Wasm artifact.
    pub fn wasm_layer(&self) -> Result<&Descriptor> {
        match self.layers.as_slice() {
            [layer] if layer.media_type == LAYER_MEDIA_TYPE => Ok(layer),
            layers => bail!(
                "not a Wasm artifact: expected one layer of media type {LAYER_MEDIA_TYPE} \
                 (config {CONFIG_MEDIA_TYPE}), found {} layer(s) [{}] with config {}",
                layers.len(),
                layers
                    .iter()
                    .map(|l| l.media_type.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                self.config.media_type
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lays_out_the_cncf_artifact() {
        let component = ComponentConfig {
            exports: vec!["filter".into()],
            imports: vec!["steward:policy/cluster@0.2.0".into()],
            target: Some("steward:policy/scheduler@0.2.0".into()),
        };
        let meta = PushMeta {
            title: Some("p.wasm".into()),
            version: Some("1.2.0".into()),
            ..PushMeta::default()
        };
        let a = Artifact::new(b"\0asm\x0d\0\x01\0".to_vec(), component, &meta);
        let m = Manifest::parse(&a.manifest_json).unwrap();
        assert_eq!(m.config.media_type, CONFIG_MEDIA_TYPE);
        assert_eq!(m.config.digest, digest(&a.config_json));
        assert_eq!(m.wasm_layer().unwrap().digest, digest(&a.wasm));
        assert_eq!(m.annotations[ANNOTATION_VERSION], "1.2.0");
        assert!(m.annotations.contains_key(ANNOTATION_CREATED));
        let config: serde_json::Value = serde_json::from_slice(&a.config_json).unwrap();
        assert_eq!(config["architecture"], "wasm");
        assert_eq!(config["os"], "wasip2");
        assert_eq!(config["layerDigests"][0], digest(&a.wasm).as_str());
        assert_eq!(
            config["component"]["target"],
            "steward:policy/scheduler@0.2.0"
        );
    }

    #[test]
    fn other_layouts_are_refused_naming_what_was_found() {
        let mut m = Manifest::parse(
            br#"{"schemaVersion":2,"config":{"mediaType":"application/vnd.wasm.config.v1+json","digest":"sha256:x","size":2},
                "layers":[{"mediaType":"application/vnd.wasm.content.layer.v1+wasm","digest":"sha256:y","size":1}]}"#,
        )
        .unwrap();
        let e = m.wasm_layer().unwrap_err().to_string();
        assert!(
            e.contains("application/vnd.wasm.content.layer.v1+wasm"),
            "{e}"
        );
        m.layers.clear();
        assert!(
            m.wasm_layer()
                .unwrap_err()
                .to_string()
                .contains("found 0 layer(s)")
        );
        let e = Manifest::parse(br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","config":{"mediaType":"a","digest":"b","size":1},"layers":[]}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("image.index"), "{e}");
    }
}
