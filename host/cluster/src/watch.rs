//! Kubernetes watches that keep the cache current.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt::Debug;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::{CSIStorageCapacity, StorageClass};
use kube::api::DynamicObject;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::kinds::{KindState, OptionalKind, not_served_sentence};
use super::{ClusterCache, convert, storage, tidb};

/// How one watched kind enters and leaves the cache.
struct Kind<K> {
    name: &'static str,
    upsert: fn(&K, &ClusterCache),
    remove: fn(&ClusterCache, &str, &str),
}

/// Where a watch reports its initial list: the core kinds to
/// [`watch_cluster`], which marks the cache synced once all have; an
/// optional kind in the cache's kind states.
enum SyncReport {
    Core(mpsc::Sender<&'static str>),
    Optional(OptionalKind),
}

fn json(obj: &DynamicObject) -> serde_json::Value {
    serde_json::to_value(obj).unwrap_or_default()
}

/// How often one kind's repeated watch failures are logged: the watcher
/// retries with backoff, and the log should say what is wrong, not flood.
const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// Default of `cluster.discoveryIntervalSeconds`: how often the API
/// server's discovery is asked which wanted optional kinds it serves.
pub const DEFAULT_DISCOVERY_INTERVAL: Duration = Duration::from_secs(30);

/// Watches the core kinds, and the optional kinds `wanted` names (the
/// configured policies' needs, updated when they change) while the API
/// server serves them: discovery is asked at start, every
/// `discovery_interval` and whenever `wanted` changes, so a CRD installed
/// (or removed) later is picked up without a restart. Marks the cache
/// synced once every core watch has delivered its initial list. `server`
/// names the API server in messages. Runs until `wanted`'s sender is
/// dropped.
pub async fn watch_cluster(
    client: Client,
    server: String,
    cache: Arc<ClusterCache>,
    wanted: tokio::sync::watch::Receiver<BTreeSet<OptionalKind>>,
    discovery_interval: Duration,
) {
    cache.mark_watched();
    let (tx, mut rx) = mpsc::channel::<&'static str>(16);
    let server: Arc<str> = server.into();
    let core = core_watches(&client, &(cache.clone(), server.clone()), &tx);
    drop(tx);
    let total = core.len();
    let synced = cache.clone();
    let core_synced = tokio::spawn(async move {
        let mut pending: HashSet<&str> = HashSet::new();
        while let Some(kind) = rx.recv().await {
            pending.insert(kind);
            if pending.len() == total {
                tracing::info!(
                    nodes = synced.node_count(),
                    pods = synced.pod_count(),
                    "cluster cache synced"
                );
                synced.mark_synced();
                break;
            }
        }
    });
    let optional = Optional {
        client,
        cache,
        server,
        watches: BTreeMap::new(),
        failures: FailureLog::default(),
    };
    optional.supervise(wanted, discovery_interval).await;
    core_synced.abort();
    for k in core {
        k.abort();
    }
}

/// The watches of the kinds every Steward needs.
fn core_watches(
    client: &Client,
    to: &(Arc<ClusterCache>, Arc<str>),
    tx: &mpsc::Sender<&'static str>,
) -> Vec<JoinHandle<()>> {
    let report = || SyncReport::Core(tx.clone());
    vec![
        tokio::spawn(watch::<Pod>(
            Api::all(client.clone()),
            Kind {
                name: "Pod",
                upsert: |o, c| {
                    let pod = convert::pod(o);
                    let uid = pod.uid.clone();
                    c.upsert_pod(pod);
                    c.observe_scheduling(&uid, convert::scheduling_failure(o));
                },
                remove: |c, ns, n| c.remove_pod(ns, n),
            },
            to.clone(),
            report(),
        )),
        tokio::spawn(watch::<Node>(
            Api::all(client.clone()),
            Kind {
                name: "Node",
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
            to.clone(),
            report(),
        )),
        tokio::spawn(watch::<PersistentVolumeClaim>(
            Api::all(client.clone()),
            Kind {
                name: "PersistentVolumeClaim",
                upsert: |o, c| c.upsert_claim(convert::claim(o)),
                remove: |c, ns, n| c.remove_claim(ns, n),
            },
            to.clone(),
            report(),
        )),
        tokio::spawn(watch::<PersistentVolume>(
            Api::all(client.clone()),
            Kind {
                name: "PersistentVolume",
                upsert: |o, c| c.upsert_volume(convert::volume(o)),
                remove: |c, _, n| c.remove_volume(n),
            },
            to.clone(),
            report(),
        )),
        tokio::spawn(watch::<StorageClass>(
            Api::all(client.clone()),
            Kind {
                name: "StorageClass",
                upsert: |o, c| c.upsert_storage_class(convert::storage_class(o)),
                remove: |c, _, n| c.remove_storage_class(n),
            },
            to.clone(),
            report(),
        )),
        tokio::spawn(watch::<StatefulSet>(
            Api::all(client.clone()),
            Kind {
                name: "StatefulSet",
                upsert: |o, c| c.upsert_workload(convert::workload(o)),
                remove: |c, ns, n| c.remove_workload("StatefulSet", ns, n),
            },
            to.clone(),
            report(),
        )),
    ]
}

/// The optional kinds' watches, started and stopped as discovery and the
/// policies' needs say.
struct Optional {
    client: Client,
    cache: Arc<ClusterCache>,
    server: Arc<str>,
    watches: BTreeMap<OptionalKind, JoinHandle<()>>,
    failures: FailureLog,
}

impl Optional {
    async fn supervise(
        mut self,
        mut wanted: tokio::sync::watch::Receiver<BTreeSet<OptionalKind>>,
        interval: Duration,
    ) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let want = wanted.borrow_and_update().clone();
            self.reconcile(&want).await;
            tokio::select! {
                _ = tick.tick() => {}
                changed = wanted.changed() => if changed.is_err() { break },
            }
        }
        for (_, watch) in std::mem::take(&mut self.watches) {
            watch.abort();
        }
    }

    /// Stops the watches of kinds no longer wanted; asks discovery about
    /// the wanted ones, starting the watch of each newly served kind and
    /// stopping that of each no longer served.
    async fn reconcile(&mut self, want: &BTreeSet<OptionalKind>) {
        let unwanted: Vec<OptionalKind> = self
            .watches
            .keys()
            .filter(|k| !want.contains(k))
            .copied()
            .collect();
        for kind in unwanted {
            self.stop(kind, KindState::Listing);
        }
        for &kind in want {
            match served(&self.client, kind).await {
                Ok(true) if !self.watches.contains_key(&kind) => {
                    tracing::info!(kind = %kind, "the API server serves {kind}: watching it");
                    let watch = self.start(kind);
                    self.watches.insert(kind, watch);
                }
                Ok(true) => {}
                Ok(false) => {
                    if self.cache.kind_state(kind) != KindState::NotServed {
                        tracing::warn!(
                            kind = %kind,
                            server = %self.server,
                            "{}",
                            not_served_sentence(&[kind]).unwrap_or_default()
                        );
                    }
                    self.stop(kind, KindState::NotServed);
                }
                Err(e) => {
                    if let Some(repeats) = self.failures.record() {
                        tracing::warn!(
                            kind = %kind,
                            server = %self.server,
                            error = %e,
                            repeats,
                            "asking the API server at {} whether it serves {kind} failed; asked \
                             again at the next discovery (further failures are logged once a \
                             minute)",
                            self.server
                        );
                    }
                }
            }
        }
    }

    fn stop(&mut self, kind: OptionalKind, state: KindState) {
        if let Some(watch) = self.watches.remove(&kind) {
            watch.abort();
        }
        self.cache.clear_kind(kind, state);
    }

    fn start(&self, kind: OptionalKind) -> JoinHandle<()> {
        let to = (self.cache.clone(), self.server.clone());
        let report = SyncReport::Optional(kind);
        let client = self.client.clone();
        match kind {
            OptionalKind::CsiStorageCapacity => tokio::spawn(watch::<CSIStorageCapacity>(
                Api::all(client),
                Kind {
                    name: kind.name(),
                    upsert: |o, c| {
                        c.upsert_csi_capacity(
                            o.metadata.namespace.as_deref().unwrap_or_default(),
                            o.metadata.name.as_deref().unwrap_or_default(),
                            storage::csi_capacity(o),
                        )
                    },
                    remove: |c, ns, n| c.remove_csi_capacity(ns, n),
                },
                to,
                report,
            )),
            OptionalKind::LocalStorageNode => tokio::spawn(watch::<DynamicObject>(
                Api::all_with(client, &kind.api_resource()),
                Kind {
                    name: kind.name(),
                    upsert: |o, c| c.upsert_storage_node(&json(o)),
                    remove: |c, _, n| c.remove_storage_node(n),
                },
                to,
                report,
            )),
            OptionalKind::LocalDiskNode => tokio::spawn(watch::<DynamicObject>(
                Api::all_with(client, &kind.api_resource()),
                Kind {
                    name: kind.name(),
                    upsert: |o, c| c.upsert_disk_node(&json(o)),
                    remove: |c, _, n| c.remove_disk_node(n),
                },
                to,
                report,
            )),
            OptionalKind::LocalVolume => tokio::spawn(watch::<DynamicObject>(
                Api::all_with(client, &kind.api_resource()),
                Kind {
                    name: kind.name(),
                    upsert: |o, c| c.upsert_local_volume(&json(o)),
                    remove: |c, _, n| c.remove_local_volume(n),
                },
                to,
                report,
            )),
            OptionalKind::TidbCluster => tokio::spawn(watch::<DynamicObject>(
                Api::all_with(client, &kind.api_resource()),
                Kind {
                    name: kind.name(),
                    upsert: |o, c| c.upsert_tidb_cluster(tidb::tidb_cluster(&json(o))),
                    remove: |c, ns, n| c.remove_tidb_cluster(ns, n),
                },
                to,
                report,
            )),
            OptionalKind::AdvancedStatefulSet => tokio::spawn(watch::<DynamicObject>(
                Api::all_with(client, &kind.api_resource()),
                Kind {
                    name: "StatefulSet (apps.pingcap.com/v1)",
                    upsert: |o, c| c.upsert_workload(tidb::advanced_statefulset(&json(o))),
                    remove: |c, ns, n| c.remove_workload(tidb::ADVANCED_STATEFULSET, ns, n),
                },
                to,
                report,
            )),
        }
    }
}

/// Whether the API server's discovery lists `kind`: its group version is
/// served (else a 404) and names the resource.
async fn served(client: &Client, kind: OptionalKind) -> Result<bool, kube::Error> {
    let (group, version) = kind.group_version();
    match client
        .list_api_group_resources(&format!("{group}/{version}"))
        .await
    {
        Ok(list) => Ok(list.resources.iter().any(|r| r.name == kind.plural())),
        Err(e) if is_not_found(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

/// A 404, whether as a Status or as the plain-text "404 page not found"
/// the API server answers for a group it does not serve (which kube's
/// `is_not_found` misses: it prefers the reason kube makes up for it).
fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

async fn watch<K>(
    api: Api<K>,
    kind: Kind<K>,
    (cache, server): (Arc<ClusterCache>, Arc<str>),
    synced: SyncReport,
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
                match &synced {
                    SyncReport::Core(tx) => {
                        let _ = tx.send(name).await;
                    }
                    SyncReport::Optional(k) => cache.set_kind_state(*k, KindState::Synced),
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
    fn a_404_from_discovery_means_the_kind_is_not_served() {
        let missing = kube::Error::Api(
            Status::failure(
                "the server could not find the requested resource",
                "NotFound",
            )
            .with_code(404)
            .boxed(),
        );
        assert!(is_not_found(&missing));
        let forbidden = kube::Error::Api(
            Status::failure("forbidden", "Forbidden")
                .with_code(403)
                .boxed(),
        );
        assert!(!is_not_found(&forbidden));
    }
}
