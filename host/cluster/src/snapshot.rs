//! Snapshots: a multi-document YAML of ordinary Kubernetes objects (what
//! `kubectl get -o yaml` prints), for offline serving, `run` and `simulate`.

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::{ClusterCache, convert, storage};

/// Loads every object of the file into `cache`. Kinds the cache does not
/// hold (Namespaces, most custom resources, ...) are skipped; HwameiStor's
/// LocalStorageNode, LocalDiskNode and LocalVolume are held. Returns how many
/// objects were loaded.
///
/// Documents are parsed and loaded one at a time: holding every parsed
/// document of a 50,000-pod snapshot at once tripled the peak, and the
/// freed documents, interleaved with the cache's entries, stayed resident.
pub fn load_snapshot(cache: &ClusterCache, path: &Path) -> Result<usize> {
    let mut loaded = 0;
    for_each_document(path, |i, value| {
        loaded += ingest(cache, value)
            .with_context(|| format!("{}: document {}", path.display(), i + 1))?;
        Ok(())
    })?;
    cache.mark_synced();
    Ok(loaded)
}

/// The documents of a snapshot file, as JSON values.
pub fn read_documents(path: &Path) -> Result<Vec<serde_json::Value>> {
    let mut documents = Vec::new();
    for_each_document(path, |_, value| {
        documents.push(value);
        Ok(())
    })?;
    Ok(documents)
}

/// Calls `each` with the index and value of every document of the file.
fn for_each_document(
    path: &Path,
    mut each: impl FnMut(usize, serde_json::Value) -> Result<()>,
) -> Result<()> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read snapshot {}", path.display()))?;
    for (i, document) in serde_norway::Deserializer::from_str(&text).enumerate() {
        let value = serde_json::Value::deserialize(document)
            .with_context(|| format!("{}: document {} is not valid YAML", path.display(), i + 1))?;
        each(i, value)?;
    }
    Ok(())
}

/// Loads Kubernetes objects given as values (e.g. inline in a fixture
/// suite) into `cache`, like the documents of a snapshot. Returns how many
/// were loaded.
pub fn load_objects(cache: &ClusterCache, objects: &[serde_json::Value]) -> Result<usize> {
    let mut loaded = 0;
    for (i, object) in objects.iter().enumerate() {
        loaded += ingest(cache, object.clone()).with_context(|| format!("object {}", i + 1))?;
    }
    Ok(loaded)
}

fn ingest(cache: &ClusterCache, value: serde_json::Value) -> Result<usize> {
    if value.is_null() {
        return Ok(0);
    }
    let kind = value
        .get("kind")
        .and_then(|k| k.as_str())
        .unwrap_or_default()
        .to_string();
    match kind.as_str() {
        "List" => {
            let mut n = 0;
            for item in value
                .get("items")
                .and_then(|i| i.as_array())
                .into_iter()
                .flatten()
            {
                n += ingest(cache, item.clone())?;
            }
            Ok(n)
        }
        "Pod" => {
            cache.upsert_pod(convert::pod(&parse(value, &kind)?));
            Ok(1)
        }
        "Node" => {
            let node: k8s_openapi::api::core::v1::Node = parse(value, &kind)?;
            let converted = convert::node(&node);
            cache.set_topolvm_capacity(
                &converted.name,
                storage::topolvm_capacity(&converted.name, node.metadata.annotations.as_ref()),
            );
            cache.upsert_node(converted);
            Ok(1)
        }
        "LocalStorageNode" => {
            cache.upsert_storage_node(&value);
            Ok(1)
        }
        "LocalDiskNode" => {
            cache.upsert_disk_node(&value);
            Ok(1)
        }
        "LocalVolume" => {
            cache.upsert_local_volume(&value);
            Ok(1)
        }
        "CSIStorageCapacity" => {
            let c: k8s_openapi::api::storage::v1::CSIStorageCapacity = parse(value, &kind)?;
            cache.upsert_csi_capacity(
                c.metadata.namespace.as_deref().unwrap_or_default(),
                c.metadata.name.as_deref().unwrap_or_default(),
                storage::csi_capacity(&c),
            );
            Ok(1)
        }
        "PersistentVolumeClaim" => {
            cache.upsert_claim(convert::claim(&parse(value, &kind)?));
            Ok(1)
        }
        "PersistentVolume" => {
            cache.upsert_volume(convert::volume(&parse(value, &kind)?));
            Ok(1)
        }
        "StorageClass" => {
            cache.upsert_storage_class(convert::storage_class(&parse(value, &kind)?));
            Ok(1)
        }
        "StatefulSet" => {
            cache.upsert_workload(convert::workload(&parse(value, &kind)?));
            Ok(1)
        }
        "" => bail!("the object has no kind"),
        _ => Ok(0),
    }
}

fn parse<T: DeserializeOwned>(value: serde_json::Value, kind: &str) -> Result<T> {
    let name = value
        .pointer("/metadata/name")
        .and_then(|n| n.as_str())
        .unwrap_or("(unnamed)")
        .to_string();
    serde_path_to_error::deserialize(value)
        .map_err(|e| anyhow::anyhow!("{kind} {name}: field {}: {}", e.path(), e.inner()))
}
