//! The cluster cache guests query: typed records indexed for the hot path,
//! fed by Kubernetes watches or by a snapshot file, plus the placements
//! Steward made that the watches have not shown yet. It answers the
//! runtime's `cluster` import ([`ClusterQuery`]) and binds pods through the
//! live cluster or the snapshot ([`Backend`]).

mod backend;
mod capacity;
pub mod convert;
mod import;
pub mod kinds;
mod requeue;
mod snapshot;
pub mod storage;
pub mod tidb;
mod watch;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use rustc_hash::FxHashMap;

use kinds::{KindState, OptionalKind};
use steward_wit::{
    Claim, LocalVolume, Node, Pod, SelectorOperator, SelectorRequirement, StorageClass,
    TidbCluster, Volume, Workload,
};
use storage::{CsiCapacity, PoolColumns, PoolFigures, StorageTables, set_slot};

pub use backend::Backend;
pub use requeue::{REQUEUE_ANNOTATION, requeue_pods};
pub use snapshot::{load_objects, load_snapshot, read_documents};
pub use watch::{DEFAULT_DISCOVERY_INTERVAL, watch_cluster};

/// A candidate's label value id when the node lacks the label.
pub const NO_LABEL: u32 = u32::MAX;

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

/// The annotation kube-scheduler's volume binding writes on a claim it
/// provisions for the node it chose.
pub const SELECTED_NODE_ANNOTATION: &str = "volume.kubernetes.io/selected-node";

fn selected_node(claim: &Claim) -> Option<&str> {
    claim
        .annotations
        .iter()
        .find(|(k, _)| k == SELECTED_NODE_ANNOTATION)
        .map(|(_, v)| v.as_str())
}

/// A pod Steward let through a filter (and maybe bound) that the cache does
/// not show on a node yet.
struct Placement {
    pod: Pod,
    /// Where it goes, once known: the node Steward bound it to, or the one
    /// kube-scheduler chose for its volumes (see
    /// [`ClusterCache::upsert_claim`]).
    node: Option<String>,
    /// Steward's bind succeeded: the pod cannot fail placement any more.
    bound: bool,
    since: Instant,
    /// The pod's scheduling failure (see [`convert::scheduling_failure`])
    /// when it was filtered: a different one seen later means this attempt
    /// failed after the filter.
    failure_at_filter: Option<String>,
}

/// Claims of a pod Steward placed (or saw bound) whose volumes may not
/// exist yet: their capacity is taken on `nodes` although no capacity
/// source shows it. A claim stops counting once it is bound to a volume the
/// cache holds; the whole reservation once the TTL passes.
struct Reservation {
    namespace: String,
    claims: Vec<String>,
    /// One node once bound; every node it passed while in flight.
    nodes: Vec<u32>,
    since: Instant,
}

/// Value ids of one node label, interned so candidate lists carry numbers.
#[derive(Default)]
struct LabelColumn {
    ids: FxHashMap<String, u32>,
    texts: Vec<String>,
    /// By node id; [`NO_LABEL`] where the node lacks the label.
    of_node: Vec<u32>,
}

impl LabelColumn {
    fn set(&mut self, node_id: u32, node: Option<&Node>, key: &str) {
        let value = node
            .and_then(|n| n.labels.iter().find(|(k, _)| k == key))
            .map(|(_, v)| v);
        let id = value.map(|v| match self.ids.get(v) {
            Some(&id) => id,
            None => {
                let id = self.texts.len() as u32;
                self.texts.push(v.clone());
                self.ids.insert(v.clone(), id);
                id
            }
        });
        let i = node_id as usize;
        if self.of_node.len() <= i {
            self.of_node.resize(i + 1, NO_LABEL);
        }
        self.of_node[i] = id.unwrap_or(NO_LABEL);
    }
}

/// A node name's id, and whether a Node of that name is in the cache: kept
/// in the map so a lookup never touches the node itself (kube-scheduler
/// sends thousands of names per call, and the nodes are cold in the CPU
/// cache).
#[derive(Clone, Copy)]
struct NodeSlot {
    id: u32,
    live: bool,
}

/// Nodes by stable id (never reused while the process runs), plus the
/// label columns policies asked for.
#[derive(Default)]
struct NodeTable {
    /// FxHash: kube-scheduler sends thousands of names per call.
    ids: FxHashMap<String, NodeSlot>,
    /// By id: every name ever given an id.
    names: Vec<String>,
    nodes: Vec<Option<Node>>,
    columns: HashMap<String, LabelColumn>,
}

impl NodeTable {
    /// The id of the live node called `name`.
    fn id(&self, name: &str) -> Option<u32> {
        let slot = self.ids.get(name)?;
        slot.live.then_some(slot.id)
    }

    /// The id `name` was given, whether or not its Node is in the cache.
    fn interned(&self, name: &str) -> Option<u32> {
        self.ids.get(name).map(|slot| slot.id)
    }

    fn get(&self, name: &str) -> Option<&Node> {
        self.nodes[self.id(name)? as usize].as_ref()
    }

    fn live(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().flatten()
    }

    /// The id of the node called `name`, assigning one if the name is new
    /// (storage objects may arrive before their Node).
    fn intern(&mut self, name: &str) -> u32 {
        if let Some(id) = self.interned(name) {
            return id;
        }
        let id = self.ids.len() as u32;
        self.ids
            .insert(name.to_string(), NodeSlot { id, live: false });
        self.names.push(name.to_string());
        if self.nodes.len() <= id as usize {
            self.nodes.resize(id as usize + 1, None);
        }
        id
    }

    fn upsert(&mut self, node: Node) {
        let id = self.intern(&node.name);
        if let Some(slot) = self.ids.get_mut(&node.name) {
            slot.live = true;
        }
        for (key, column) in &mut self.columns {
            column.set(id, Some(&node), key);
        }
        self.nodes[id as usize] = Some(node);
    }

    fn remove(&mut self, name: &str) {
        if let Some(slot) = self.ids.get_mut(name) {
            slot.live = false;
            let id = slot.id;
            self.nodes[id as usize] = None;
            for (key, column) in &mut self.columns {
                column.set(id, None, key);
            }
        }
    }

    fn add_column(&mut self, key: &str) {
        let mut column = LabelColumn::default();
        for (id, node) in self.nodes.iter().enumerate() {
            column.set(id as u32, node.as_ref(), key);
        }
        self.columns.insert(key.to_string(), column);
    }
}

#[derive(Default)]
struct State {
    pods: HashMap<String, NamespacePods>,
    nodes: NodeTable,
    claims: HashMap<(String, String), Claim>,
    volumes: HashMap<String, Volume>,
    storage_classes: HashMap<String, StorageClass>,
    workloads: HashMap<(String, String, String), Workload>,
    /// By (namespace, name).
    tidb_clusters: HashMap<(String, String), TidbCluster>,
    /// By pod uid.
    placements: HashMap<String, Placement>,
    storage: StorageTables,
    /// By pod uid.
    reservations: HashMap<String, Reservation>,
    /// Volumes that appeared after the cache synced, and when: their
    /// capacity shows in a node's source only once it reports new figures,
    /// or is taken as shown after `volume_ttl`.
    fresh_volumes: HashMap<String, Instant>,
    volume_ttl: Duration,
    /// By node id: when its capacity source last reported changed figures.
    storage_changed: Vec<Option<Instant>>,
    /// By in-flight pod uid: the pods a filter refused while it was in
    /// flight, to be requeued once it is bound or its attempt failed.
    waiting_on: HashMap<String, BTreeSet<(String, String)>>,
    /// Pods to requeue now (see [`ClusterCache::take_requeue`]).
    requeue: BTreeSet<(String, String)>,
}

impl State {
    /// Whether the claim's capacity shows in the capacity source of every
    /// node of `nodes`: it is bound to a volume the cache holds, and that
    /// volume either predates the cache's sync or appeared before the
    /// node's source last reported changed figures.
    fn reflected(&self, namespace: &str, claim: &str, nodes: &[u32]) -> bool {
        let Some(volume) = self
            .claims
            .get(&(namespace.to_string(), claim.to_string()))
            .and_then(|c| c.volume_name.as_ref().filter(|_| c.phase == "Bound"))
            .filter(|v| self.volumes.contains_key(*v))
        else {
            return false;
        };
        let Some(appeared) = self.fresh_volumes.get(volume) else {
            return true;
        };
        appeared.elapsed() >= self.volume_ttl
            || nodes.iter().all(|&n| {
                self.storage_changed
                    .get(n as usize)
                    .copied()
                    .flatten()
                    .is_some_and(|changed| changed > *appeared)
            })
    }

    /// Notes that node `id`'s capacity source reported changed figures.
    fn mark_storage_changed(&mut self, id: u32) {
        let i = id as usize;
        if self.storage_changed.len() <= i {
            self.storage_changed.resize(i + 1, None);
        }
        self.storage_changed[i] = Some(Instant::now());
    }

    /// The pod `uid`'s placement is settled (bound, failed or gone): the
    /// pods refused while it was in flight are to be requeued.
    fn settle(&mut self, uid: &str) {
        if let Some(pods) = self.waiting_on.remove(uid) {
            self.requeue.extend(pods);
        }
    }

    /// Whether pod `uid` passed a filter within `ttl` and is not bound yet.
    fn in_flight(&self, uid: &str, ttl: Duration) -> bool {
        self.placements
            .get(uid)
            .is_some_and(|p| p.node.is_none() && p.since.elapsed() < ttl)
    }

    /// Reserves the pod's claims whose capacity its nodes' sources do not
    /// show yet on `nodes`; a reservation already on exactly these nodes
    /// keeps its start time.
    fn reserve(&mut self, pod: &Pod, nodes: Vec<u32>) {
        let claims: Vec<String> = pod
            .claims
            .iter()
            .filter(|c| !self.reflected(&pod.namespace, c, &nodes))
            .cloned()
            .collect();
        if claims.is_empty() || nodes.is_empty() {
            self.reservations.remove(&pod.uid);
            return;
        }
        if self
            .reservations
            .get(&pod.uid)
            .is_some_and(|r| r.nodes == nodes)
        {
            return;
        }
        self.reservations.insert(
            pod.uid.clone(),
            Reservation {
                namespace: pod.namespace.clone(),
                claims,
                nodes,
                since: Instant::now(),
            },
        );
    }

    fn reserve_on(&mut self, pod: &Pod, node: &str) {
        let id = self.nodes.intern(node);
        self.reserve(pod, vec![id]);
    }
}

/// The cache. Cheap to share: wrap it in an `Arc`.
pub struct ClusterCache {
    state: RwLock<State>,
    in_flight_ttl: Duration,
    synced: AtomicBool,
    /// Woken whenever a placement settles (see [`ClusterCache::wait_settled`]).
    settled: tokio::sync::Notify,
    /// Fed by watches (not a snapshot): an optional kind is only there
    /// once its watch has listed it.
    watched: AtomicBool,
    /// Optional kinds the watches have found served or not.
    kinds: Mutex<BTreeMap<OptionalKind, KindState>>,
}

impl Default for ClusterCache {
    fn default() -> Self {
        ClusterCache::new(DEFAULT_IN_FLIGHT_TTL)
    }
}

impl ClusterCache {
    pub fn new(in_flight_ttl: Duration) -> ClusterCache {
        ClusterCache {
            state: RwLock::new(State {
                volume_ttl: in_flight_ttl,
                ..State::default()
            }),
            in_flight_ttl,
            synced: AtomicBool::new(false),
            settled: tokio::sync::Notify::new(),
            watched: AtomicBool::new(false),
            kinds: Mutex::default(),
        }
    }

    /// Whether the core kinds (pods, nodes, claims, volumes, storage
    /// classes, StatefulSets) have delivered their initial state; optional
    /// kinds are asked with [`ClusterCache::kind_state`].
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    pub fn mark_synced(&self) {
        self.synced.store(true, Ordering::Release);
    }

    /// From now on optional kinds count as listed only when their watch
    /// says so (a snapshot holds all it will ever hold).
    pub fn mark_watched(&self) {
        self.watched.store(true, Ordering::Release);
    }

    pub fn kind_state(&self, kind: OptionalKind) -> KindState {
        match self.kinds.lock().get(&kind) {
            Some(&state) => state,
            None if self.watched.load(Ordering::Acquire) => KindState::Listing,
            None => KindState::Synced,
        }
    }

    pub fn set_kind_state(&self, kind: OptionalKind, state: KindState) {
        self.kinds.lock().insert(kind, state);
    }

    /// Those of `kinds` the API server does not serve.
    pub fn not_served(&self, kinds: impl IntoIterator<Item = OptionalKind>) -> Vec<OptionalKind> {
        kinds
            .into_iter()
            .filter(|&k| self.kind_state(k) == KindState::NotServed)
            .collect()
    }

    /// Drops every object of `kind` (its watch stopped) and records `state`.
    pub fn clear_kind(&self, kind: OptionalKind, state: KindState) {
        {
            let mut guard = self.state.write();
            let s = &mut *guard;
            let storage = &mut s.storage;
            match kind {
                OptionalKind::CsiStorageCapacity => storage.csi.clear(),
                OptionalKind::LocalStorageNode => {
                    storage.lvm.clear();
                    storage.lvm_pools = PoolColumns::default();
                }
                OptionalKind::LocalDiskNode => storage.disks.clear(),
                OptionalKind::LocalVolume => storage.local_volumes.clear(),
                OptionalKind::TidbCluster => s.tidb_clusters.clear(),
                OptionalKind::AdvancedStatefulSet => s
                    .workloads
                    .retain(|(kind, _, _), _| kind != tidb::ADVANCED_STATEFULSET),
            }
        }
        self.set_kind_state(kind, state);
    }

    pub fn upsert_pod(&self, pod: Pod) {
        let mut s = self.state.write();
        let mut settled = false;
        if let Some(node) = &pod.node_name {
            settled = s.placements.remove(&pod.uid).is_some();
            s.settle(&pod.uid);
            // Bound: its volumes' capacity may not show in the sources yet.
            if !pod.deleting && matches!(pod.phase.as_str(), "Pending" | "Running") {
                s.reserve_on(&pod, node);
            } else {
                s.reservations.remove(&pod.uid);
            }
        }
        s.pods.entry(pod.namespace.clone()).or_default().insert(pod);
        drop(s);
        if settled {
            self.settled.notify_waiters();
        }
    }

    /// What the watch saw of a pod's scheduling (see
    /// [`convert::scheduling_failure`]): a failure other than the one the
    /// pod carried when it was filtered means kube-scheduler's attempt
    /// failed after Steward's filter (a PreBind, a bind, a later
    /// extender): the pod is no longer placed.
    pub fn observe_scheduling(&self, uid: &str, failure: Option<String>) {
        let Some(failure) = failure else {
            return;
        };
        let mut s = self.state.write();
        let failed = s
            .placements
            .get(uid)
            .is_some_and(|p| !p.bound && p.failure_at_filter.as_deref() != Some(failure.as_str()));
        if failed {
            tracing::debug!(uid, failure, "a placement failed after the filter");
            s.placements.remove(uid);
            s.reservations.remove(uid);
            s.settle(uid);
            drop(s);
            self.settled.notify_waiters();
        }
    }

    pub fn remove_pod(&self, namespace: &str, name: &str) {
        let mut s = self.state.write();
        let removed = s.pods.get_mut(namespace).and_then(|ns| ns.remove(name));
        if let Some(pod) = removed {
            s.placements.remove(&pod.uid);
            s.reservations.remove(&pod.uid);
            s.settle(&pod.uid);
            drop(s);
            self.settled.notify_waiters();
        }
    }

    pub fn upsert_node(&self, node: Node) {
        self.state.write().nodes.upsert(node);
    }

    /// A node's TopoLVM capacity annotations (see [`storage::topolvm_capacity`]).
    pub fn set_topolvm_capacity(&self, node: &str, capacity: Vec<(String, PoolFigures)>) {
        let mut s = self.state.write();
        if capacity.is_empty() && s.nodes.interned(node).is_none() {
            return;
        }
        let id = s.nodes.intern(node);
        if s.storage.topolvm.get(id as usize) != Some(&capacity) {
            s.mark_storage_changed(id);
        }
        s.storage.topolvm_pools.set_node(id, Some(true), &capacity);
        set_slot(&mut s.storage.topolvm, id, capacity);
    }

    /// A HwameiStor `LocalStorageNode` (JSON).
    pub fn upsert_storage_node(&self, object: &serde_json::Value) {
        let (node, pools) = storage::storage_node(object);
        let mut s = self.state.write();
        let id = s.nodes.intern(&node);
        let ready = pools.state == "Ready";
        let before = s.storage.lvm.get(id as usize).and_then(Option::as_ref);
        if before.is_none_or(|b| b.pools != pools.pools) {
            s.mark_storage_changed(id);
        }
        s.storage.lvm_pools.set_node(id, Some(ready), &pools.pools);
        set_slot(&mut s.storage.lvm, id, Some(pools));
    }

    pub fn remove_storage_node(&self, node: &str) {
        let mut s = self.state.write();
        if let Some(id) = s.nodes.interned(node) {
            s.storage.lvm_pools.set_node(id, None, &[]);
            set_slot(&mut s.storage.lvm, id, None);
        }
    }

    /// A HwameiStor `LocalDiskNode` (JSON).
    pub fn upsert_disk_node(&self, object: &serde_json::Value) {
        let (node, disks) = storage::disk_node(object);
        let mut s = self.state.write();
        let id = s.nodes.intern(&node);
        set_slot(&mut s.storage.disks, id, Some(disks));
    }

    /// Forgets the `LocalDiskNode` of the given object name.
    pub fn remove_disk_node(&self, node: &str) {
        let mut s = self.state.write();
        if let Some(id) = s.nodes.interned(node) {
            set_slot(&mut s.storage.disks, id, None);
        }
    }

    /// A HwameiStor `LocalVolume` (JSON).
    pub fn upsert_local_volume(&self, object: &serde_json::Value) {
        let volume: LocalVolume = storage::local_volume(object);
        self.state
            .write()
            .storage
            .local_volumes
            .insert(volume.name.clone(), volume);
    }

    pub fn remove_local_volume(&self, name: &str) {
        self.state.write().storage.local_volumes.remove(name);
    }

    pub fn upsert_csi_capacity(&self, namespace: &str, name: &str, capacity: CsiCapacity) {
        let mut s = self.state.write();
        let key = (namespace.to_string(), name.to_string());
        if s.storage.csi.get(&key).map(|c| &c.capacity) != Some(&capacity.capacity) {
            // Which nodes an object covers is its topology's business: every
            // node counts as reporting anew.
            for id in 0..s.nodes.nodes.len() as u32 {
                s.mark_storage_changed(id);
            }
        }
        s.storage.csi.insert(key, capacity);
    }

    pub fn remove_csi_capacity(&self, namespace: &str, name: &str) {
        self.state
            .write()
            .storage
            .csi
            .remove(&(namespace.to_string(), name.to_string()));
    }

    /// Adds a node only if the cache has none of that name.
    pub fn insert_node_if_unknown(&self, node: Node) {
        let mut s = self.state.write();
        if s.nodes.get(&node.name).is_none() {
            s.nodes.upsert(node);
        }
    }

    pub fn remove_node(&self, name: &str) {
        self.state.write().nodes.remove(name);
    }

    /// Stores a claim. A claim whose `volume.kubernetes.io/selected-node`
    /// annotation just changed to a node tells where kube-scheduler placed
    /// its in-flight pod: its volume binding (PreBind) writes it before
    /// waiting for the volume, at least a second before the pod is bound.
    /// The pod counts on that node from now on, so its siblings need not
    /// wait for the bind. An unchanged annotation (a relist, or one left
    /// from an earlier attempt) says nothing.
    pub fn upsert_claim(&self, claim: Claim) {
        let key = (claim.namespace.clone(), claim.name.clone());
        let selected = selected_node(&claim).map(str::to_string);
        let mut s = self.state.write();
        let old = s.claims.insert(key.clone(), claim);
        let Some(node) = selected.filter(|n| old.as_ref().and_then(selected_node) != Some(n))
        else {
            return;
        };
        let (namespace, name) = key;
        let placed: Vec<Pod> = s
            .placements
            .values_mut()
            .filter(|p| {
                p.node.is_none() && p.pod.namespace == namespace && p.pod.claims.contains(&name)
            })
            .map(|p| {
                p.node = Some(node.clone());
                p.pod.clone()
            })
            .collect();
        if placed.is_empty() {
            return;
        }
        for pod in &placed {
            s.reserve_on(pod, &node);
            s.settle(&pod.uid);
        }
        drop(s);
        self.settled.notify_waiters();
    }

    pub fn remove_claim(&self, namespace: &str, name: &str) {
        self.state
            .write()
            .claims
            .remove(&(namespace.to_string(), name.to_string()));
    }

    pub fn upsert_volume(&self, volume: Volume) {
        let mut s = self.state.write();
        if self.is_synced() && !s.volumes.contains_key(&volume.name) {
            s.fresh_volumes.insert(volume.name.clone(), Instant::now());
        }
        s.volumes.insert(volume.name.clone(), volume);
    }

    pub fn remove_volume(&self, name: &str) {
        let mut s = self.state.write();
        s.volumes.remove(name);
        s.fresh_volumes.remove(name);
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

    pub fn upsert_tidb_cluster(&self, tc: TidbCluster) {
        let key = (tc.namespace.clone(), tc.name.clone());
        self.state.write().tidb_clusters.insert(key, tc);
    }

    pub fn remove_tidb_cluster(&self, namespace: &str, name: &str) {
        self.state
            .write()
            .tidb_clusters
            .remove(&(namespace.to_string(), name.to_string()));
    }

    /// The pod passed a filter on the nodes of ids `passed`: until it is
    /// bound, guests see it `in-flight`, and its unprovisioned claims are
    /// reserved on every one of those nodes. `failure` is the scheduling
    /// failure the pod carried in the request (see
    /// [`ClusterCache::observe_scheduling`]).
    pub fn begin_placement(&self, pod: &Pod, passed: &[u32], failure: Option<String>) {
        let mut s = self.state.write();
        s.reserve(pod, passed.to_vec());
        s.placements.insert(
            pod.uid.clone(),
            Placement {
                pod: pod.clone(),
                node: None,
                bound: false,
                since: Instant::now(),
                failure_at_filter: failure,
            },
        );
        let ttl = self.in_flight_ttl;
        s.placements.retain(|_, p| p.since.elapsed() < ttl);
        s.reservations.retain(|_, r| r.since.elapsed() < ttl);
        s.fresh_volumes.retain(|_, seen| seen.elapsed() < ttl);
        let State {
            placements,
            waiting_on,
            requeue,
            ..
        } = &mut *s;
        waiting_on.retain(|uid, pods| {
            let live = placements.contains_key(uid);
            if !live {
                requeue.append(pods);
            }
            live
        });
        let requeue = !requeue.is_empty();
        drop(s);
        if requeue {
            self.settled.notify_waiters();
        }
    }

    /// Which of `uids` are in flight: passed a filter within the in-flight
    /// TTL and not bound yet.
    pub fn in_flight(&self, uids: &[String]) -> Vec<String> {
        let s = self.state.read();
        uids.iter()
            .filter(|u| s.in_flight(u, self.in_flight_ttl))
            .cloned()
            .collect()
    }

    /// Waits until none of the pods `uids` is in flight any more (bound,
    /// failed or gone), or until `deadline`; returns those still in flight.
    pub async fn wait_settled(
        &self,
        uids: &[String],
        deadline: tokio::time::Instant,
    ) -> Vec<String> {
        loop {
            let settled = self.settled.notified();
            tokio::pin!(settled);
            settled.as_mut().enable();
            let pending = self.in_flight(uids);
            if pending.is_empty() || tokio::time::Instant::now() >= deadline {
                return pending;
            }
            if tokio::time::timeout_at(deadline, settled).await.is_err() {
                return self.in_flight(uids);
            }
        }
    }

    /// Pod `namespace/name` was refused while the pods `blockers` were in
    /// flight: once each is bound or its attempt failed, the pod is handed
    /// to [`ClusterCache::take_requeue`] (kube-scheduler 1.20 would
    /// otherwise park it for a minute).
    pub fn requeue_when_settled(&self, blockers: &[String], namespace: &str, name: &str) {
        let mut s = self.state.write();
        let pod = (namespace.to_string(), name.to_string());
        let mut now = false;
        for uid in blockers {
            if s.in_flight(uid, self.in_flight_ttl) {
                s.waiting_on
                    .entry(uid.clone())
                    .or_default()
                    .insert(pod.clone());
            } else {
                now = true;
            }
        }
        if now {
            s.requeue.insert(pod);
            drop(s);
            self.settled.notify_waiters();
        }
    }

    /// Takes the pods to requeue now (see
    /// [`ClusterCache::requeue_when_settled`]), but for those bound since.
    pub fn take_requeue(&self) -> Vec<(String, String)> {
        let mut s = self.state.write();
        let pods = std::mem::take(&mut s.requeue);
        pods.into_iter()
            .filter(|(namespace, name)| {
                let pod = s.pods.get(namespace).and_then(|ns| ns.pods.get(name));
                pod.is_none_or(|p| p.node_name.is_none() && !s.placements.contains_key(&p.uid))
            })
            .collect()
    }

    /// [`ClusterCache::take_requeue`], waiting for some when there are none.
    pub async fn next_requeue(&self) -> Vec<(String, String)> {
        loop {
            let settled = self.settled.notified();
            tokio::pin!(settled);
            settled.as_mut().enable();
            let pods = self.take_requeue();
            if !pods.is_empty() {
                return pods;
            }
            settled.await;
        }
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
            s.reserve_on(&pod, node);
            s.placements.insert(
                uid.to_string(),
                Placement {
                    pod,
                    node: Some(node.to_string()),
                    bound: true,
                    since: Instant::now(),
                    failure_at_filter: None,
                },
            );
        }
        s.settle(uid);
        drop(s);
        self.settled.notify_waiters();
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
        let pod = pod.clone();
        s.placements.remove(&pod.uid);
        s.reserve_on(&pod, node);
        s.settle(&pod.uid);
        drop(s);
        self.settled.notify_waiters();
        true
    }

    /// Forgets a placement (its binding failed) and what it reserved.
    pub fn abandon_placement(&self, uid: &str) {
        let mut s = self.state.write();
        s.placements.remove(uid);
        s.reservations.remove(uid);
        s.settle(uid);
        drop(s);
        self.settled.notify_waiters();
    }

    pub fn node_count(&self) -> usize {
        self.state.read().nodes.live().count()
    }

    pub fn pod_count(&self) -> usize {
        self.state
            .read()
            .pods
            .values()
            .map(|ns| ns.pods.len())
            .sum()
    }

    /// Host ids of the named nodes; `None` for names the cache does not know.
    pub fn node_ids(&self, names: &[String]) -> Vec<Option<u32>> {
        let s = self.state.read();
        names.iter().map(|name| s.nodes.id(name)).collect()
    }

    /// For each key, the value id of each node in `ids` (the `labels`
    /// columns of a scheduler call).
    pub fn label_columns(&self, ids: &[u32], keys: &[String]) -> Vec<Vec<u32>> {
        {
            let s = self.state.read();
            if keys.iter().all(|k| s.nodes.columns.contains_key(k)) {
                return keys
                    .iter()
                    .map(|k| {
                        let of_node = &s.nodes.columns[k].of_node;
                        ids.iter()
                            .map(|&id| of_node.get(id as usize).copied().unwrap_or(NO_LABEL))
                            .collect()
                    })
                    .collect();
            }
        }
        {
            let mut s = self.state.write();
            for k in keys {
                if !s.nodes.columns.contains_key(k) {
                    s.nodes.add_column(k);
                }
            }
        }
        self.label_columns(ids, keys)
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
        self.state.read().nodes.live().cloned().collect()
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
    /// Uids of the in-flight pods this view showed (as pods or as
    /// reservations): an answer built on them may change once they settle.
    in_flight_seen: Arc<parking_lot::Mutex<BTreeSet<String>>>,
}

impl ClusterQuery {
    pub fn new(cache: Arc<ClusterCache>) -> ClusterQuery {
        ClusterQuery {
            cache,
            hidden_pods: Arc::default(),
            in_flight_seen: Arc::default(),
        }
    }

    /// The in-flight pods this view (and its clones) showed so far.
    pub fn in_flight_seen(&self) -> Vec<String> {
        self.in_flight_seen.lock().iter().cloned().collect()
    }

    /// The same view without the pods of the given uids.
    pub fn hiding(&self, uids: HashSet<String>) -> ClusterQuery {
        ClusterQuery {
            cache: self.cache.clone(),
            hidden_pods: Arc::new(uids),
            in_flight_seen: self.in_flight_seen.clone(),
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
            if pod.in_flight {
                self.in_flight_seen.lock().insert(pod.uid.clone());
            }
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
            .live()
            .filter(|n| selector_matches(&n.labels, selector))
            .cloned()
            .collect();
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        nodes
    }

    pub fn get_node(&self, name: &str) -> Option<Node> {
        self.cache.state.read().nodes.get(name).cloned()
    }

    pub fn node_name(&self, id: u32) -> Option<String> {
        let s = self.cache.state.read();
        s.nodes
            .nodes
            .get(id as usize)?
            .as_ref()
            .map(|n| n.name.clone())
    }

    pub fn node_names(&self, ids: &[u32]) -> Vec<Option<String>> {
        let s = self.cache.state.read();
        ids.iter()
            .map(|&id| {
                let node = s.nodes.nodes.get(id as usize)?.as_ref();
                node.map(|n| n.name.clone())
            })
            .collect()
    }

    pub fn label_text(&self, key: &str, id: u32) -> Option<String> {
        let s = self.cache.state.read();
        s.nodes.columns.get(key)?.texts.get(id as usize).cloned()
    }

    pub fn label_id(&self, key: &str, text: &str) -> Option<u32> {
        let s = self.cache.state.read();
        s.nodes.columns.get(key)?.ids.get(text).copied()
    }

    pub fn node_label_id(&self, node: &str, key: &str) -> Option<u32> {
        let s = self.cache.state.read();
        let id = s.nodes.interned(node)?;
        let value = *s.nodes.columns.get(key)?.of_node.get(id as usize)?;
        (value != NO_LABEL).then_some(value)
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

    pub fn get_tidb_cluster(&self, namespace: &str, name: &str) -> Option<TidbCluster> {
        self.cache
            .state
            .read()
            .tidb_clusters
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    /// Label `key`'s value id on each node id (its column made on first
    /// use, as for the keys of scheduler needs).
    pub fn node_label_ids(&self, key: &str, nodes: &[u32]) -> Vec<u32> {
        self.cache
            .label_columns(nodes, &[key.to_string()])
            .pop()
            .unwrap_or_default()
    }
}

fn ns_has(s: &State, pod: &Pod) -> bool {
    s.pods
        .get(&pod.namespace)
        .is_some_and(|ns| ns.pods.contains_key(&pod.name))
}
