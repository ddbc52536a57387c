//! Kubernetes watches that keep the cache current.

use std::collections::HashSet;
use std::fmt::Debug;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use super::{ClusterCache, convert};

/// An object kind the cache holds.
trait Cached:
    Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static
{
    fn upsert(&self, cache: &ClusterCache);
    fn remove(cache: &ClusterCache, namespace: &str, name: &str);
}

impl Cached for Pod {
    fn upsert(&self, cache: &ClusterCache) {
        cache.upsert_pod(convert::pod(self));
    }
    fn remove(cache: &ClusterCache, namespace: &str, name: &str) {
        cache.remove_pod(namespace, name);
    }
}

impl Cached for Node {
    fn upsert(&self, cache: &ClusterCache) {
        cache.upsert_node(convert::node(self));
    }
    fn remove(cache: &ClusterCache, _: &str, name: &str) {
        cache.remove_node(name);
    }
}

impl Cached for PersistentVolumeClaim {
    fn upsert(&self, cache: &ClusterCache) {
        cache.upsert_claim(convert::claim(self));
    }
    fn remove(cache: &ClusterCache, namespace: &str, name: &str) {
        cache.remove_claim(namespace, name);
    }
}

impl Cached for PersistentVolume {
    fn upsert(&self, cache: &ClusterCache) {
        cache.upsert_volume(convert::volume(self));
    }
    fn remove(cache: &ClusterCache, _: &str, name: &str) {
        cache.remove_volume(name);
    }
}

impl Cached for StorageClass {
    fn upsert(&self, cache: &ClusterCache) {
        cache.upsert_storage_class(convert::storage_class(self));
    }
    fn remove(cache: &ClusterCache, _: &str, name: &str) {
        cache.remove_storage_class(name);
    }
}

impl Cached for StatefulSet {
    fn upsert(&self, cache: &ClusterCache) {
        cache.upsert_workload(convert::workload(self));
    }
    fn remove(cache: &ClusterCache, namespace: &str, name: &str) {
        cache.remove_workload("StatefulSet", namespace, name);
    }
}

/// Watches every kind the cache holds; marks the cache synced once each
/// watch has delivered its initial list. Runs until the process stops.
pub async fn watch_cluster(client: Client, cache: Arc<ClusterCache>) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<&'static str>(8);
    let kinds = [
        tokio::spawn(watch::<Pod>(client.clone(), cache.clone(), tx.clone())),
        tokio::spawn(watch::<Node>(client.clone(), cache.clone(), tx.clone())),
        tokio::spawn(watch::<PersistentVolumeClaim>(
            client.clone(),
            cache.clone(),
            tx.clone(),
        )),
        tokio::spawn(watch::<PersistentVolume>(
            client.clone(),
            cache.clone(),
            tx.clone(),
        )),
        tokio::spawn(watch::<StorageClass>(
            client.clone(),
            cache.clone(),
            tx.clone(),
        )),
        tokio::spawn(watch::<StatefulSet>(client, cache.clone(), tx)),
    ];
    let mut pending: HashSet<&str> = HashSet::new();
    let total = kinds.len();
    while let Some(kind) = rx.recv().await {
        pending.insert(kind);
        if pending.len() == total {
            tracing::info!(
                nodes = cache.node_count(),
                pods = cache.pod_count(),
                "cluster cache synced"
            );
            cache.mark_synced();
            break;
        }
    }
    for k in kinds {
        let _ = k.await;
    }
}

async fn watch<K: Cached>(
    client: Client,
    cache: Arc<ClusterCache>,
    synced: tokio::sync::mpsc::Sender<&'static str>,
) {
    let kind = std::any::type_name::<K>();
    let api: Api<K> = Api::all(client);
    let mut stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    // Objects of the current (re)list, to drop the ones that disappeared.
    let mut relist: Option<Vec<K>> = None;
    let mut known: HashSet<(String, String)> = HashSet::new();
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::Apply(obj)) => {
                known.insert(key(&obj));
                obj.upsert(&cache);
            }
            Ok(watcher::Event::Delete(obj)) => {
                let (ns, name) = key(&obj);
                known.remove(&(ns.clone(), name.clone()));
                K::remove(&cache, &ns, &name);
            }
            Ok(watcher::Event::Init) => relist = Some(Vec::new()),
            Ok(watcher::Event::InitApply(obj)) => {
                if let Some(list) = relist.as_mut() {
                    list.push(obj);
                }
            }
            Ok(watcher::Event::InitDone) => {
                let list = relist.take().unwrap_or_default();
                let fresh: HashSet<(String, String)> = list.iter().map(key).collect();
                for (ns, name) in known.difference(&fresh) {
                    K::remove(&cache, ns, name);
                }
                for obj in &list {
                    obj.upsert(&cache);
                }
                known = fresh;
                let _ = synced.send(kind).await;
            }
            Err(e) => tracing::warn!(kind, error = %e, "watch failed; retrying with backoff"),
        }
    }
}

fn key<K: Resource>(obj: &K) -> (String, String) {
    (obj.namespace().unwrap_or_default(), obj.name_any())
}
