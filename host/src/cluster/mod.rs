//! The cluster cache guests query: typed records indexed for the hot path,
//! fed by Kubernetes watches or by a snapshot file, plus the placements
//! Steward made that the watches have not shown yet.

pub(crate) mod convert;
mod snapshot;
mod watch;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::RwLock;

use crate::runtime::{
    Claim, Node, Pod, SelectorOperator, SelectorRequirement, StorageClass, Volume, Workload,
};

pub use snapshot::load_snapshot;
pub use watch::watch_cluster;

/// How long a placement Steward knows of waits for the watch to confirm it
/// before it is forgotten (kube-scheduler never reports a failed binding
/// cycle to an extender that does not bind).
pub const DEFAULT_IN_FLIGHT_TTL: Duration = Duration::from_secs(30);

#[derive(Default)]
struct NamespacePods {
    pods: HashMap<String, Pod>,
    /// `key=value` → names of the pods carrying that label.
    by_label: HashMap<String, BTreeSet<String>>,
}

impl NamespacePods {
    fn insert(&mut self, pod: Pod) {
        self.remove(&pod.name);
        for (k, v) in &pod.labels {
            self.by_label
                .entry(format!("{k}={v}"))
                .or_default()
                .insert(pod.name.clone());
        }
        self.pods.insert(pod.name.clone(), pod);
    }

    fn remove(&mut self, name: &str) -> Option<Pod> {
        let old = self.pods.remove(name)?;
        for (k, v) in &old.labels {
            let key = format!("{k}={v}");
            if let Some(set) = self.by_label.get_mut(&key) {
                set.remove(name);
                if set.is_empty() {
                    self.by_label.remove(&key);
                }
            }
        }
        Some(old)
    }
}

/// A pod Steward let through a filter (and maybe bound) that the cache does
/// not show on a node yet.
struct Placement {
    pod: Pod,
    node: Option<String>,
    since: Instant,
}

#[derive(Default)]
struct State {
    pods: HashMap<String, NamespacePods>,
    nodes: HashMap<String, Node>,
    claims: HashMap<(String, String), Claim>,
    volumes: HashMap<String, Volume>,
    storage_classes: HashMap<String, StorageClass>,
    workloads: HashMap<(String, String, String), Workload>,
    /// By pod uid.
    placements: HashMap<String, Placement>,
}

/// The cache. Cheap to share: wrap it in an `Arc`.
pub struct ClusterCache {
    state: RwLock<State>,
    in_flight_ttl: Duration,
    synced: AtomicBool,
}

impl Default for ClusterCache {
    fn default() -> Self {
        ClusterCache::new(DEFAULT_IN_FLIGHT_TTL)
    }
}

impl ClusterCache {
    pub fn new(in_flight_ttl: Duration) -> ClusterCache {
        ClusterCache {
            state: RwLock::default(),
            in_flight_ttl,
            synced: AtomicBool::new(false),
        }
    }

    /// Whether every source has delivered its initial state.
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    pub fn mark_synced(&self) {
        self.synced.store(true, Ordering::Release);
    }

    pub fn upsert_pod(&self, pod: Pod) {
        let mut s = self.state.write();
        if pod.node_name.is_some() {
            s.placements.remove(&pod.uid);
        }
        s.pods.entry(pod.namespace.clone()).or_default().insert(pod);
    }

    pub fn remove_pod(&self, namespace: &str, name: &str) {
        let mut s = self.state.write();
        let removed = s.pods.get_mut(namespace).and_then(|ns| ns.remove(name));
        if let Some(pod) = removed {
            s.placements.remove(&pod.uid);
        }
    }

    pub fn upsert_node(&self, node: Node) {
        self.state.write().nodes.insert(node.name.clone(), node);
    }

    pub fn remove_node(&self, name: &str) {
        self.state.write().nodes.remove(name);
    }

    pub fn upsert_claim(&self, claim: Claim) {
        let key = (claim.namespace.clone(), claim.name.clone());
        self.state.write().claims.insert(key, claim);
    }

    pub fn remove_claim(&self, namespace: &str, name: &str) {
        self.state
            .write()
            .claims
            .remove(&(namespace.to_string(), name.to_string()));
    }

    pub fn upsert_volume(&self, volume: Volume) {
        self.state
            .write()
            .volumes
            .insert(volume.name.clone(), volume);
    }

    pub fn remove_volume(&self, name: &str) {
        self.state.write().volumes.remove(name);
    }

    pub fn upsert_storage_class(&self, class: StorageClass) {
        self.state
            .write()
            .storage_classes
            .insert(class.name.clone(), class);
    }

    pub fn remove_storage_class(&self, name: &str) {
        self.state.write().storage_classes.remove(name);
    }

    pub fn upsert_workload(&self, w: Workload) {
        let key = (w.kind.clone(), w.namespace.clone(), w.name.clone());
        self.state.write().workloads.insert(key, w);
    }

    pub fn remove_workload(&self, kind: &str, namespace: &str, name: &str) {
        self.state.write().workloads.remove(&(
            kind.to_string(),
            namespace.to_string(),
            name.to_string(),
        ));
    }

    /// The pod passed a filter: until it is bound, guests see it `in-flight`.
    pub fn begin_placement(&self, pod: &Pod) {
        let mut s = self.state.write();
        s.placements.insert(
            pod.uid.clone(),
            Placement {
                pod: pod.clone(),
                node: None,
                since: Instant::now(),
            },
        );
        let ttl = self.in_flight_ttl;
        s.placements.retain(|_, p| p.since.elapsed() < ttl);
    }

    /// The pod was bound to `node`: guests see it there even before the
    /// watch delivers the update.
    pub fn record_binding(&self, uid: &str, namespace: &str, name: &str, node: &str) {
        let mut s = self.state.write();
        let pod = s
            .placements
            .remove(uid)
            .map(|p| p.pod)
            .or_else(|| s.pods.get(namespace)?.pods.get(name).cloned());
        if let Some(pod) = pod {
            s.placements.insert(
                uid.to_string(),
                Placement {
                    pod,
                    node: Some(node.to_string()),
                    since: Instant::now(),
                },
            );
        }
    }

    /// Binds a pod in the cache itself: for snapshots, which no watch
    /// updates. Returns false if the pod is unknown.
    pub fn bind_in_place(&self, namespace: &str, name: &str, node: &str) -> bool {
        let mut s = self.state.write();
        let Some(pod) = s
            .pods
            .get_mut(namespace)
            .and_then(|ns| ns.pods.get_mut(name))
        else {
            return false;
        };
        pod.node_name = Some(node.to_string());
        let uid = pod.uid.clone();
        s.placements.remove(&uid);
        true
    }

    /// Which of `names` the cache knows as nodes.
    pub fn known_nodes(&self, names: &[String]) -> Vec<bool> {
        let s = self.state.read();
        names.iter().map(|n| s.nodes.contains_key(n)).collect()
    }

    /// Forgets a placement (its binding failed).
    pub fn abandon_placement(&self, uid: &str) {
        self.state.write().placements.remove(uid);
    }

    pub fn node_count(&self) -> usize {
        self.state.read().nodes.len()
    }

    pub fn pod_count(&self) -> usize {
        self.state
            .read()
            .pods
            .values()
            .map(|ns| ns.pods.len())
            .sum()
    }

    /// Candidate nodes by name, carrying only the label keys a policy asked
    /// for; `None` for names the cache does not know.
    pub fn candidates(&self, names: &[&str], label_keys: &[String]) -> Vec<Option<Node>> {
        let s = self.state.read();
        names
            .iter()
            .map(|name| s.nodes.get(*name).map(|n| project(n, label_keys)))
            .collect()
    }

    /// Every cached pod, as stored (no placements applied).
    pub fn all_pods(&self) -> Vec<Pod> {
        let s = self.state.read();
        s.pods
            .values()
            .flat_map(|ns| ns.pods.values().cloned())
            .collect()
    }

    /// Every cached node.
    pub fn all_nodes(&self) -> Vec<Node> {
        self.state.read().nodes.values().cloned().collect()
    }

    /// Pod names (namespace, name) bound or placed on `node`, for tests and
    /// simulation reports.
    pub fn pods_on(&self, node: &str) -> Vec<(String, String)> {
        let s = self.state.read();
        let mut out: Vec<(String, String)> = s
            .pods
            .values()
            .flat_map(|ns| ns.pods.values())
            .filter_map(|p| {
                let placed = s.placements.get(&p.uid).and_then(|pl| pl.node.as_deref());
                (p.node_name.as_deref().or(placed) == Some(node))
                    .then(|| (p.namespace.clone(), p.name.clone()))
            })
            .collect();
        out.sort();
        out
    }
}

/// Copies a node with only the wanted label keys.
pub fn project(node: &Node, label_keys: &[String]) -> Node {
    Node {
        name: node.name.clone(),
        labels: node
            .labels
            .iter()
            .filter(|(k, _)| label_keys.iter().any(|w| w == k))
            .cloned()
            .collect(),
        ready: node.ready,
        unschedulable: node.unschedulable,
        taints: node.taints.clone(),
    }
}

/// Whether `labels` satisfy every requirement, with Kubernetes semantics.
pub fn selector_matches(labels: &[(String, String)], selector: &[SelectorRequirement]) -> bool {
    selector.iter().all(|req| {
        let value = labels.iter().find(|(k, _)| *k == req.key).map(|(_, v)| v);
        let int = |s: &str| s.parse::<i64>().ok();
        let bound = req.values.first().and_then(|v| int(v));
        match req.operator {
            SelectorOperator::In => value.is_some_and(|v| req.values.contains(v)),
            SelectorOperator::NotIn => value.is_none_or(|v| !req.values.contains(v)),
            SelectorOperator::Exists => value.is_some(),
            SelectorOperator::DoesNotExist => value.is_none(),
            SelectorOperator::Gt => {
                matches!((value.and_then(|v| int(v)), bound), (Some(v), Some(b)) if v > b)
            }
            SelectorOperator::Lt => {
                matches!((value.and_then(|v| int(v)), bound), (Some(v), Some(b)) if v < b)
            }
        }
    })
}

/// What one evaluation sees: the cache, minus pods hidden for it (the
/// victims of a preemption being considered), plus Steward's placements.
#[derive(Clone)]
pub struct ClusterQuery {
    cache: Arc<ClusterCache>,
    hidden_pods: Arc<HashSet<String>>,
}

impl ClusterQuery {
    pub fn new(cache: Arc<ClusterCache>) -> ClusterQuery {
        ClusterQuery {
            cache,
            hidden_pods: Arc::default(),
        }
    }

    /// A view of an empty cluster (settings validation has nothing to ask).
    pub fn empty() -> ClusterQuery {
        ClusterQuery::new(Arc::new(ClusterCache::default()))
    }

    /// The same view without the pods of the given uids.
    pub fn hiding(&self, uids: HashSet<String>) -> ClusterQuery {
        ClusterQuery {
            cache: self.cache.clone(),
            hidden_pods: Arc::new(uids),
        }
    }

    /// A cached pod as guests see it: with Steward's placement applied.
    fn overlay(&self, s: &State, pod: &Pod) -> Option<Pod> {
        if self.hidden_pods.contains(&pod.uid) {
            return None;
        }
        let mut pod = pod.clone();
        if let Some(p) = s.placements.get(&pod.uid)
            && pod.node_name.is_none()
            && p.since.elapsed() < self.cache.in_flight_ttl
        {
            pod.node_name = p.node.clone();
            pod.in_flight = p.node.is_none();
        }
        Some(pod)
    }

    pub fn list_pods(&self, namespace: &str, selector: &[SelectorRequirement]) -> Vec<Pod> {
        let s = self.cache.state.read();
        let mut out = Vec::new();
        if let Some(ns) = s.pods.get(namespace) {
            // Narrow by the first single-valued equality, then check all.
            let indexed = selector
                .iter()
                .find(|r| r.operator == SelectorOperator::In && r.values.len() == 1)
                .map(|r| format!("{}={}", r.key, r.values[0]));
            let names: Box<dyn Iterator<Item = &String>> = match &indexed {
                Some(key) => Box::new(ns.by_label.get(key).into_iter().flatten()),
                None => Box::new(ns.pods.keys()),
            };
            for name in names {
                let pod = &ns.pods[name];
                if selector_matches(&pod.labels, selector)
                    && let Some(p) = self.overlay(&s, pod)
                {
                    out.push(p);
                }
            }
        }
        // Placements of pods the watch has not delivered at all yet.
        for p in s.placements.values() {
            if p.pod.namespace == namespace
                && !ns_has(&s, &p.pod)
                && selector_matches(&p.pod.labels, selector)
                && let Some(pod) = self.overlay(&s, &p.pod)
            {
                out.push(pod);
            }
        }
        out
    }

    pub fn get_pod(&self, namespace: &str, name: &str) -> Option<Pod> {
        let s = self.cache.state.read();
        let pod = s.pods.get(namespace)?.pods.get(name)?;
        self.overlay(&s, pod)
    }

    pub fn list_nodes(&self, selector: &[SelectorRequirement]) -> Vec<Node> {
        let s = self.cache.state.read();
        let mut nodes: Vec<Node> = s
            .nodes
            .values()
            .filter(|n| selector_matches(&n.labels, selector))
            .cloned()
            .collect();
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        nodes
    }

    pub fn get_node(&self, name: &str) -> Option<Node> {
        self.cache.state.read().nodes.get(name).cloned()
    }

    pub fn get_claim(&self, namespace: &str, name: &str) -> Option<Claim> {
        self.cache
            .state
            .read()
            .claims
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    pub fn get_volume(&self, name: &str) -> Option<Volume> {
        self.cache.state.read().volumes.get(name).cloned()
    }

    pub fn get_storage_class(&self, name: &str) -> Option<StorageClass> {
        self.cache.state.read().storage_classes.get(name).cloned()
    }

    pub fn get_workload(&self, kind: &str, namespace: &str, name: &str) -> Option<Workload> {
        self.cache
            .state
            .read()
            .workloads
            .get(&(kind.to_string(), namespace.to_string(), name.to_string()))
            .cloned()
    }
}

fn ns_has(s: &State, pod: &Pod) -> bool {
    s.pods
        .get(&pod.namespace)
        .is_some_and(|ns| ns.pods.contains_key(&pod.name))
}
