//! Kubernetes watches that keep the cache current.

use std::collections::HashSet;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::{CSIStorageCapacity, StorageClass};
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use super::{ClusterCache, convert, storage};

/// How one watched kind enters and leaves the cache.
struct Kind<K> {
    name: &'static str,
    /// A kind the API server may not serve (a CRD that is not installed,
    /// an API version this Kubernetes lacks): a 404 means "none", not an
    /// error, and does not hold back the cache's sync.
    optional: bool,
    upsert: fn(&K, &ClusterCache),
    remove: fn(&ClusterCache, &str, &str),
}

/// HwameiStor's custom resources, read as dynamic objects.
fn hwameistor(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("hwameistor.io", "v1alpha1", kind),
        plural,
    )
}

fn json(obj: &DynamicObject) -> serde_json::Value {
    serde_json::to_value(obj).unwrap_or_default()
}

/// How often one kind's repeated watch failures are logged: the watcher
/// retries with backoff, and the log should say what is wrong, not flood.
const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// Watches every kind the cache holds; marks the cache synced once each
/// watch has delivered its initial list (or found its kind not served).
/// `server` names the API server in messages. Runs until the process stops.
pub async fn watch_cluster(client: Client, server: String, cache: Arc<ClusterCache>) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<&'static str>(16);
    let server: Arc<str> = server.into();
    let c = || (client.clone(), (cache.clone(), server.clone()), tx.clone());
    let dynamic = |c: &Client, r: &ApiResource| Api::<DynamicObject>::all_with(c.clone(), r);
    let (cl, ca, t) = c();
    let mut kinds = vec![tokio::spawn(watch::<Pod>(
        Api::all(cl),
        Kind {
            name: "Pod",
            optional: false,
            upsert: |o, c| {
                let pod = convert::pod(o);
                let uid = pod.uid.clone();
                c.upsert_pod(pod);
                c.observe_scheduling(&uid, convert::scheduling_failure(o));
            },
            remove: |c, ns, n| c.remove_pod(ns, n),
        },
        ca,
        t,
    ))];
    let (cl, ca, t) = c();
    kinds.push(tokio::spawn(watch::<Node>(
        Api::all(cl),
        Kind {
            name: "Node",
            optional: false,
            upsert: |o, c| {
                let node = convert::node(o);
                let capacity =
                    storage::topolvm_capacity(&node.name, o.metadata.annotations.as_ref());
                c.set_topolvm_capacity(&node.name, capacity);
                c.upsert_node(node);
            },
            remove: |c, _, n| {
                c.set_topolvm_capacity(n, Vec::new());
                c.remove_node(n);
            },
        },
        ca,
        t,
    )));
    let (cl, ca, t) = c();
    kinds.push(tokio::spawn(watch::<PersistentVolumeClaim>(
        Api::all(cl),
        Kind {
            name: "PersistentVolumeClaim",
            optional: false,
            upsert: |o, c| c.upsert_claim(convert::claim(o)),
            remove: |c, ns, n| c.remove_claim(ns, n),
        },
        ca,
        t,
    )));
    let (cl, ca, t) = c();
    kinds.push(tokio::spawn(watch::<PersistentVolume>(
        Api::all(cl),
        Kind {
            name: "PersistentVolume",
            optional: false,
            upsert: |o, c| c.upsert_volume(convert::volume(o)),
            remove: |c, _, n| c.remove_volume(n),
        },
        ca,
        t,
    )));
    let (cl, ca, t) = c();
    kinds.push(tokio::spawn(watch::<StorageClass>(
        Api::all(cl),
        Kind {
            name: "StorageClass",
            optional: false,
            upsert: |o, c| c.upsert_storage_class(convert::storage_class(o)),
            remove: |c, _, n| c.remove_storage_class(n),
        },
        ca,
        t,
    )));
    let (cl, ca, t) = c();
    kinds.push(tokio::spawn(watch::<StatefulSet>(
        Api::all(cl),
        Kind {
            name: "StatefulSet",
            optional: false,
            upsert: |o, c| c.upsert_workload(convert::workload(o)),
            remove: |c, ns, n| c.remove_workload("StatefulSet", ns, n),
        },
        ca,
        t,
    )));
    let (cl, ca, t) = c();
    kinds.push(tokio::spawn(watch::<CSIStorageCapacity>(
        Api::all(cl),
        Kind {
            name: "CSIStorageCapacity",
            optional: true,
            upsert: |o, c| {
                c.upsert_csi_capacity(
                    o.metadata.namespace.as_deref().unwrap_or_default(),
                    o.metadata.name.as_deref().unwrap_or_default(),
                    storage::csi_capacity(o),
                )
            },
            remove: |c, ns, n| c.remove_csi_capacity(ns, n),
        },
        ca,
        t,
    )));
    let (cl, ca, t) = c();
    kinds.push(tokio::spawn(watch::<DynamicObject>(
        dynamic(&cl, &hwameistor("LocalStorageNode", "localstoragenodes")),
        Kind {
            name: "LocalStorageNode",
            optional: true,
            upsert: |o, c| c.upsert_storage_node(&json(o)),
            remove: |c, _, n| c.remove_storage_node(n),
        },
        ca,
        t,
    )));
    let (cl, ca, t) = c();
    kinds.push(tokio::spawn(watch::<DynamicObject>(
        dynamic(&cl, &hwameistor("LocalDiskNode", "localdisknodes")),
        Kind {
            name: "LocalDiskNode",
            optional: true,
            upsert: |o, c| c.upsert_disk_node(&json(o)),
            remove: |c, _, n| c.remove_disk_node(n),
        },
        ca,
        t,
    )));
    let (cl, ca, t) = c();
    kinds.push(tokio::spawn(watch::<DynamicObject>(
        dynamic(&cl, &hwameistor("LocalVolume", "localvolumes")),
        Kind {
            name: "LocalVolume",
            optional: true,
            upsert: |o, c| c.upsert_local_volume(&json(o)),
            remove: |c, _, n| c.remove_local_volume(n),
        },
        ca,
        t,
    )));
    drop(tx);
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

/// Whether a watch error says the API server does not serve the kind.
fn not_served(e: &watcher::Error) -> bool {
    match e {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => s.is_not_found(),
        watcher::Error::WatchError(s) => s.is_not_found(),
        _ => false,
    }
}

async fn watch<K>(
    api: Api<K>,
    kind: Kind<K>,
    (cache, server): (Arc<ClusterCache>, Arc<str>),
    synced: tokio::sync::mpsc::Sender<&'static str>,
) where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let name = kind.name;
    let mut stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    // Objects of the current (re)list, to drop the ones that disappeared.
    let mut relist: Option<Vec<K>> = None;
    let mut known: HashSet<(String, String)> = HashSet::new();
    let mut reported_absent = false;
    let mut failures = FailureLog::default();
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::Apply(obj)) => {
                known.insert(key(&obj));
                (kind.upsert)(&obj, &cache);
            }
            Ok(watcher::Event::Delete(obj)) => {
                let (ns, n) = key(&obj);
                known.remove(&(ns.clone(), n.clone()));
                (kind.remove)(&cache, &ns, &n);
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
                for (ns, n) in known.difference(&fresh) {
                    (kind.remove)(&cache, ns, n);
                }
                for obj in &list {
                    (kind.upsert)(obj, &cache);
                }
                known = fresh;
                let _ = synced.send(name).await;
            }
            Err(e) if kind.optional && not_served(&e) => {
                if !reported_absent {
                    reported_absent = true;
                    tracing::info!(
                        kind = name,
                        "the API server does not serve this kind; Steward sees none until it \
                         does (checked again with backoff)"
                    );
                    for (ns, n) in known.drain() {
                        (kind.remove)(&cache, &ns, &n);
                    }
                    let _ = synced.send(name).await;
                }
            }
            Err(e) => {
                if let Some(repeats) = failures.record() {
                    tracing::warn!(
                        kind = name,
                        %server,
                        error = %e,
                        repeats,
                        "watching {name} on the API server at {server} failed; retrying with \
                         backoff (further failures are logged once a minute)"
                    )
                }
            }
        }
    }
}

/// Counts a watch's failures and says when to log one: the first, then at
/// most once per [`FAILURE_LOG_INTERVAL`], with how many were not logged.
#[derive(Default)]
struct FailureLog {
    logged_at: Option<Instant>,
    unlogged: u64,
}

impl FailureLog {
    /// `Some(failures since the last log)` when this one should be logged.
    fn record(&mut self) -> Option<u64> {
        self.record_at(Instant::now())
    }

    fn record_at(&mut self, now: Instant) -> Option<u64> {
        self.unlogged += 1;
        if self
            .logged_at
            .is_some_and(|at| now.duration_since(at) < FAILURE_LOG_INTERVAL)
        {
            return None;
        }
        self.logged_at = Some(now);
        Some(std::mem::take(&mut self.unlogged))
    }
}

fn key<K: Resource>(obj: &K) -> (String, String) {
    (obj.namespace().unwrap_or_default(), obj.name_any())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;

    #[test]
    fn repeated_failures_are_logged_once_a_minute_with_their_count() {
        let mut log = FailureLog::default();
        let start = Instant::now();
        assert_eq!(log.record_at(start), Some(1), "the first failure is logged");
        for ms in (100..60_000).step_by(100) {
            assert_eq!(log.record_at(start + Duration::from_millis(ms)), None);
        }
        assert_eq!(
            log.record_at(start + FAILURE_LOG_INTERVAL),
            Some(600),
            "a minute on, one line counts the 599 unlogged failures and this one"
        );
    }

    #[test]
    fn a_404_means_the_kind_is_not_served() {
        let missing = || {
            kube::Error::Api(
                Status::failure(
                    "the server could not find the requested resource",
                    "NotFound",
                )
                .with_code(404)
                .boxed(),
            )
        };
        assert!(not_served(&watcher::Error::InitialListFailed(missing())));
        assert!(not_served(&watcher::Error::WatchStartFailed(missing())));
        let forbidden = kube::Error::Api(
            Status::failure("forbidden", "Forbidden")
                .with_code(403)
                .boxed(),
        );
        assert!(!not_served(&watcher::Error::InitialListFailed(forbidden)));
        assert!(!not_served(&watcher::Error::NoResourceVersion));
    }
}
