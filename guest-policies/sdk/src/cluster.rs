//! Cluster queries behind one trait, so policy logic runs the same on the
//! host's cache (inside Wasm) and on in-memory fixtures (in tests).

use crate::bindings::steward::policy::cluster as host;
use crate::{
    CapacitySource, Claim, LocalVolume, Node, NodeDisks, NodeSelectorTerm, Pod, PoolColumns,
    PoolState, SelectorRequirement, StorageClass, TidbCluster, Volume, Workload, labels,
};

/// One node's pool as a policy reads it: a row of the host's
/// `pool-columns` (see the WIT `types` interface for each figure).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PoolCapacity {
    pub state: PoolState,
    pub schedulable: bool,
    pub free_bytes: u64,
    pub total_bytes: u64,
    pub free_volumes: u32,
    pub reserved_bytes: u64,
    pub reserved_volumes: u32,
}

impl PoolState {
    /// The state's code in `pool-columns.state`.
    pub fn code(self) -> u8 {
        match self {
            PoolState::Ready => 0,
            PoolState::Missing => 1,
            PoolState::NotReady => 2,
            PoolState::BadData => 3,
        }
    }

    /// The state a `pool-columns.state` code stands for; a code the host
    /// never sends reads as unusable figures.
    pub fn from_code(code: u8) -> PoolState {
        match code {
            0 => PoolState::Ready,
            1 => PoolState::Missing,
            2 => PoolState::NotReady,
            _ => PoolState::BadData,
        }
    }
}

impl PoolColumns {
    /// Each node's row, in the order the nodes were asked about (no copy
    /// of the columns).
    pub fn iter(&self) -> impl Iterator<Item = PoolCapacity> + '_ {
        (0..self.state.len()).map(|i| PoolCapacity {
            state: PoolState::from_code(self.state[i]),
            schedulable: self.schedulable.get(i).is_some_and(|&s| s == 1),
            free_bytes: self.free_bytes.get(i).copied().unwrap_or(0),
            total_bytes: self.total_bytes.get(i).copied().unwrap_or(0),
            free_volumes: self.free_volumes.get(i).copied().unwrap_or(0),
            reserved_bytes: self.reserved_bytes.get(i).copied().unwrap_or(0),
            reserved_volumes: self.reserved_volumes.get(i).copied().unwrap_or(0),
        })
    }

    /// Columns from rows (fixtures, native views).
    pub fn from_rows(rows: impl IntoIterator<Item = PoolCapacity>) -> PoolColumns {
        let mut c = PoolColumns {
            state: Vec::new(),
            schedulable: Vec::new(),
            free_bytes: Vec::new(),
            total_bytes: Vec::new(),
            free_volumes: Vec::new(),
            reserved_bytes: Vec::new(),
            reserved_volumes: Vec::new(),
        };
        for r in rows {
            c.state.push(r.state.code());
            c.schedulable.push(u8::from(r.schedulable));
            c.free_bytes.push(r.free_bytes);
            c.total_bytes.push(r.total_bytes);
            c.free_volumes.push(r.free_volumes);
            c.reserved_bytes.push(r.reserved_bytes);
            c.reserved_volumes.push(r.reserved_volumes);
        }
        c
    }
}

/// Read-only view of the cluster a policy decides on.
pub trait ClusterView {
    fn list_pods(&self, namespace: &str, selector: &[SelectorRequirement]) -> Vec<Pod>;
    fn get_pod(&self, namespace: &str, name: &str) -> Option<Pod>;
    fn list_nodes(&self, selector: &[SelectorRequirement]) -> Vec<Node>;
    fn get_node(&self, name: &str) -> Option<Node>;
    fn get_claim(&self, namespace: &str, name: &str) -> Option<Claim>;
    fn get_volume(&self, name: &str) -> Option<Volume>;
    fn get_storage_class(&self, name: &str) -> Option<StorageClass>;
    fn get_workload(&self, kind: &str, namespace: &str, name: &str) -> Option<Workload>;
    /// A tidb-operator TidbCluster (for policies whose needs ask for
    /// tidb-operator's kinds, while the API server serves them).
    fn get_tidb_cluster(&self, namespace: &str, name: &str) -> Option<TidbCluster>;
    /// The value id of label `key` on each node id,
    /// [`NO_LABEL`](crate::scheduler::NO_LABEL) where the node lacks it.
    fn node_label_ids(&self, key: &str, nodes: &[u32]) -> Vec<u32>;
    /// Name of the node with host id `id` (scheduler candidates carry ids).
    fn node_name(&self, id: u32) -> Option<String>;
    /// `node_name` of each id (one host call for many).
    fn node_names(&self, ids: &[u32]) -> Vec<Option<String>> {
        ids.iter().map(|&id| self.node_name(id)).collect()
    }
    /// Text of value id `id` of label `key`.
    fn label_text(&self, key: &str, id: u32) -> Option<String>;
    /// Value id of `text` for label `key`, if any node carries it.
    fn label_id(&self, key: &str, text: &str) -> Option<u32>;

    /// The value id of label `key` on the named node.
    fn node_label_id(&self, node: &str, key: &str) -> Option<u32> {
        let node = self.get_node(node)?;
        self.label_id(key, labels::get(&node.labels, key)?)
    }

    fn list_storage_classes(&self) -> Vec<StorageClass>;
    /// A HwameiStor `LocalVolume` by name (a PV's CSI volume handle).
    fn get_local_volume(&self, name: &str) -> Option<LocalVolume>;
    /// Host id of the named node.
    fn node_id(&self, name: &str) -> Option<u32>;
    /// Per node id: does the node satisfy a volume's required node affinity?
    fn match_node_affinity(&self, terms: &[NodeSelectorTerm], nodes: &[u32]) -> Vec<bool>;
    /// Ids of the nodes `source` reports storage for.
    fn storage_nodes(&self, source: CapacitySource) -> Vec<u32>;
    /// Pool `pool` of each node id, with capacity reserved by other pods'
    /// unprovisioned claims of `classes` (see the WIT `cluster` interface).
    fn pool_capacities(
        &self,
        source: CapacitySource,
        pool: &str,
        classes: &[String],
        except_pod: &str,
        nodes: &[u32],
    ) -> PoolColumns;
    /// Why pool `pool` of node `node` is not ready.
    fn pool_problem(&self, source: CapacitySource, pool: &str, node: u32) -> Option<String>;
    /// HwameiStor disks of `disk_type` per node id, with reserved disk claims.
    fn free_disks(
        &self,
        disk_type: &str,
        classes: &[String],
        except_pod: &str,
        nodes: &[u32],
    ) -> Vec<NodeDisks>;
}

/// The host's cluster cache, through the `cluster` import.
pub struct HostCluster;

impl ClusterView for HostCluster {
    fn list_pods(&self, namespace: &str, selector: &[SelectorRequirement]) -> Vec<Pod> {
        host::list_pods(namespace, selector)
    }
    fn get_pod(&self, namespace: &str, name: &str) -> Option<Pod> {
        host::get_pod(namespace, name)
    }
    fn list_nodes(&self, selector: &[SelectorRequirement]) -> Vec<Node> {
        host::list_nodes(selector)
    }
    fn get_node(&self, name: &str) -> Option<Node> {
        host::get_node(name)
    }
    fn get_claim(&self, namespace: &str, name: &str) -> Option<Claim> {
        host::get_claim(namespace, name)
    }
    fn get_volume(&self, name: &str) -> Option<Volume> {
        host::get_volume(name)
    }
    fn get_storage_class(&self, name: &str) -> Option<StorageClass> {
        host::get_storage_class(name)
    }
    fn get_workload(&self, kind: &str, namespace: &str, name: &str) -> Option<Workload> {
        host::get_workload(kind, namespace, name)
    }
    fn get_tidb_cluster(&self, namespace: &str, name: &str) -> Option<TidbCluster> {
        host::get_tidb_cluster(namespace, name)
    }
    fn node_label_ids(&self, key: &str, nodes: &[u32]) -> Vec<u32> {
        host::node_label_ids(key, nodes)
    }
    fn node_name(&self, id: u32) -> Option<String> {
        host::node_name(id)
    }
    fn node_names(&self, ids: &[u32]) -> Vec<Option<String>> {
        host::node_names(ids)
    }
    fn label_text(&self, key: &str, id: u32) -> Option<String> {
        host::label_text(key, id)
    }
    fn label_id(&self, key: &str, text: &str) -> Option<u32> {
        host::label_id(key, text)
    }
    fn node_label_id(&self, node: &str, key: &str) -> Option<u32> {
        host::node_label_id(node, key)
    }
    fn list_storage_classes(&self) -> Vec<StorageClass> {
        host::list_storage_classes()
    }
    fn get_local_volume(&self, name: &str) -> Option<LocalVolume> {
        host::get_local_volume(name)
    }
    fn node_id(&self, name: &str) -> Option<u32> {
        host::node_id(name)
    }
    fn match_node_affinity(&self, terms: &[NodeSelectorTerm], nodes: &[u32]) -> Vec<bool> {
        host::match_node_affinity(terms, nodes)
    }
    fn storage_nodes(&self, source: CapacitySource) -> Vec<u32> {
        host::storage_nodes(source)
    }
    fn pool_capacities(
        &self,
        source: CapacitySource,
        pool: &str,
        classes: &[String],
        except_pod: &str,
        nodes: &[u32],
    ) -> PoolColumns {
        host::pool_capacities(source, pool, classes, except_pod, nodes)
    }
    fn pool_problem(&self, source: CapacitySource, pool: &str, node: u32) -> Option<String> {
        host::pool_problem(source, pool, node)
    }
    fn free_disks(
        &self,
        disk_type: &str,
        classes: &[String],
        except_pod: &str,
        nodes: &[u32],
    ) -> Vec<NodeDisks> {
        host::free_disks(disk_type, classes, except_pod, nodes)
    }
}

/// An in-memory cluster for unit tests; fill it with [`crate::build`].
/// A node's id is its index in `nodes`; a label value's id is the index of
/// the first node carrying it.
#[derive(Default, Clone)]
pub struct FakeCluster {
    pub pods: Vec<Pod>,
    pub nodes: Vec<Node>,
    pub claims: Vec<Claim>,
    pub volumes: Vec<Volume>,
    pub storage_classes: Vec<StorageClass>,
    pub workloads: Vec<Workload>,
    pub local_volumes: Vec<LocalVolume>,
    pub tidb_clusters: Vec<TidbCluster>,
    pub pools: Vec<FakePool>,
    pub disks: Vec<FakeDisks>,
}

/// One node's pool in a [`FakeCluster`]: what a capacity source reports,
/// reservations included (the host computes those; tests set them).
#[derive(Clone, Debug)]
pub struct FakePool {
    pub node: String,
    pub source: CapacitySource,
    pub name: String,
    pub capacity: PoolCapacity,
    /// What `pool-problem` says when the state is not ready.
    pub problem: Option<String>,
}

/// One node's disks of one type in a [`FakeCluster`].
#[derive(Clone, Debug)]
pub struct FakeDisks {
    pub node: String,
    pub disk_type: String,
    pub disks: NodeDisks,
}

impl FakeCluster {
    pub fn with_pod(mut self, pod: Pod) -> Self {
        self.pods.push(pod);
        self
    }
    pub fn with_node(mut self, node: Node) -> Self {
        self.nodes.push(node);
        self
    }
    pub fn with_claim(mut self, claim: Claim) -> Self {
        self.claims.push(claim);
        self
    }
    pub fn with_volume(mut self, volume: Volume) -> Self {
        self.volumes.push(volume);
        self
    }
    pub fn with_storage_class(mut self, class: StorageClass) -> Self {
        self.storage_classes.push(class);
        self
    }
    pub fn with_workload(mut self, workload: Workload) -> Self {
        self.workloads.push(workload);
        self
    }
    pub fn with_local_volume(mut self, volume: LocalVolume) -> Self {
        self.local_volumes.push(volume);
        self
    }
    pub fn with_tidb_cluster(mut self, tc: TidbCluster) -> Self {
        self.tidb_clusters.push(tc);
        self
    }
    pub fn with_pool(mut self, pool: FakePool) -> Self {
        self.pools.push(pool);
        self
    }
    pub fn with_disks(mut self, disks: FakeDisks) -> Self {
        self.disks.push(disks);
        self
    }

    fn node_at(&self, id: u32) -> Option<&str> {
        self.nodes.get(id as usize).map(|n| n.name.as_str())
    }

    /// Whether node `id` exists, is ready and takes new pods.
    fn schedulable(&self, id: u32) -> bool {
        self.nodes
            .get(id as usize)
            .is_some_and(|n| n.ready && !n.unschedulable)
    }
}

impl ClusterView for FakeCluster {
    fn list_pods(&self, namespace: &str, selector: &[SelectorRequirement]) -> Vec<Pod> {
        self.pods
            .iter()
            .filter(|p| p.namespace == namespace && labels::matches(&p.labels, selector))
            .cloned()
            .collect()
    }
    fn get_pod(&self, namespace: &str, name: &str) -> Option<Pod> {
        self.pods
            .iter()
            .find(|p| p.namespace == namespace && p.name == name)
            .cloned()
    }
    fn list_nodes(&self, selector: &[SelectorRequirement]) -> Vec<Node> {
        self.nodes
            .iter()
            .filter(|n| labels::matches(&n.labels, selector))
            .cloned()
            .collect()
    }
    fn get_node(&self, name: &str) -> Option<Node> {
        self.nodes.iter().find(|n| n.name == name).cloned()
    }
    fn get_claim(&self, namespace: &str, name: &str) -> Option<Claim> {
        self.claims
            .iter()
            .find(|c| c.namespace == namespace && c.name == name)
            .cloned()
    }
    fn get_volume(&self, name: &str) -> Option<Volume> {
        self.volumes.iter().find(|v| v.name == name).cloned()
    }
    fn get_storage_class(&self, name: &str) -> Option<StorageClass> {
        self.storage_classes
            .iter()
            .find(|c| c.name == name)
            .cloned()
    }
    fn get_workload(&self, kind: &str, namespace: &str, name: &str) -> Option<Workload> {
        self.workloads
            .iter()
            .find(|w| w.kind == kind && w.namespace == namespace && w.name == name)
            .cloned()
    }
    fn get_tidb_cluster(&self, namespace: &str, name: &str) -> Option<TidbCluster> {
        self.tidb_clusters
            .iter()
            .find(|t| t.namespace == namespace && t.name == name)
            .cloned()
    }
    fn node_label_ids(&self, key: &str, nodes: &[u32]) -> Vec<u32> {
        nodes
            .iter()
            .map(|&id| {
                self.nodes
                    .get(id as usize)
                    .and_then(|n| labels::get(&n.labels, key))
                    .and_then(|text| self.label_id(key, text))
                    .unwrap_or(crate::scheduler::NO_LABEL)
            })
            .collect()
    }
    fn node_name(&self, id: u32) -> Option<String> {
        self.node_at(id).map(str::to_string)
    }
    fn label_text(&self, key: &str, id: u32) -> Option<String> {
        labels::get(&self.nodes.get(id as usize)?.labels, key).map(str::to_string)
    }
    fn label_id(&self, key: &str, text: &str) -> Option<u32> {
        self.nodes
            .iter()
            .position(|n| labels::get(&n.labels, key) == Some(text))
            .map(|i| i as u32)
    }
    fn list_storage_classes(&self) -> Vec<StorageClass> {
        self.storage_classes.clone()
    }
    fn get_local_volume(&self, name: &str) -> Option<LocalVolume> {
        self.local_volumes.iter().find(|v| v.name == name).cloned()
    }
    fn node_id(&self, name: &str) -> Option<u32> {
        self.nodes
            .iter()
            .position(|n| n.name == name)
            .map(|i| i as u32)
    }
    fn match_node_affinity(&self, terms: &[NodeSelectorTerm], nodes: &[u32]) -> Vec<bool> {
        nodes
            .iter()
            .map(|&id| {
                let Some(node) = self.nodes.get(id as usize) else {
                    return false;
                };
                let fields = [("metadata.name".to_string(), node.name.clone())];
                terms.iter().any(|t| {
                    (!t.match_expressions.is_empty() || !t.match_fields.is_empty())
                        && labels::matches(&node.labels, &t.match_expressions)
                        && labels::matches(&fields, &t.match_fields)
                })
            })
            .collect()
    }
    fn storage_nodes(&self, source: CapacitySource) -> Vec<u32> {
        let mut ids: Vec<u32> = self
            .pools
            .iter()
            .filter(|p| p.source == source)
            .filter_map(|p| self.node_id(&p.node))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }
    fn pool_capacities(
        &self,
        source: CapacitySource,
        pool: &str,
        _classes: &[String],
        _except_pod: &str,
        nodes: &[u32],
    ) -> PoolColumns {
        PoolColumns::from_rows(nodes.iter().map(|&id| {
            let node = self.node_at(id);
            let schedulable = self.schedulable(id);
            self.pools
                .iter()
                .find(|p| p.source == source && p.name == pool && Some(p.node.as_str()) == node)
                .map(|p| PoolCapacity {
                    schedulable,
                    ..p.capacity
                })
                .unwrap_or(PoolCapacity {
                    state: PoolState::Missing,
                    schedulable,
                    free_bytes: 0,
                    total_bytes: 0,
                    free_volumes: 0,
                    reserved_bytes: 0,
                    reserved_volumes: 0,
                })
        }))
    }

    fn pool_problem(&self, source: CapacitySource, pool: &str, node: u32) -> Option<String> {
        let name = self.node_at(node)?;
        match self
            .pools
            .iter()
            .find(|p| p.source == source && p.name == pool && p.node == name)
        {
            Some(p) => p.problem.clone(),
            None => Some(format!("node {name} has no pool {pool}")),
        }
    }
    fn free_disks(
        &self,
        disk_type: &str,
        _classes: &[String],
        _except_pod: &str,
        nodes: &[u32],
    ) -> Vec<NodeDisks> {
        nodes
            .iter()
            .map(|&id| {
                let node = self.node_at(id);
                let schedulable = self.schedulable(id);
                self.disks
                    .iter()
                    .find(|d| d.disk_type == disk_type && Some(d.node.as_str()) == node)
                    .map(|d| NodeDisks {
                        schedulable,
                        ..d.disks.clone()
                    })
                    .unwrap_or(NodeDisks {
                        state: PoolState::Missing,
                        schedulable,
                        free: Vec::new(),
                        reserved: Vec::new(),
                        problem: None,
                    })
            })
            .collect()
    }
}

impl FakeCluster {
    /// The `candidates` of a scheduler call over the named nodes (which
    /// must be in `nodes`), with columns for `label_keys`.
    pub fn candidates(&self, names: &[&str], label_keys: &[&str]) -> crate::scheduler::Candidates {
        let ids: Vec<u32> = names
            .iter()
            .map(|name| {
                self.node_id(name)
                    .unwrap_or_else(|| panic!("candidate {name} is not a node of the fake cluster"))
            })
            .collect();
        let labels = label_keys
            .iter()
            .map(|key| self.node_label_ids(key, &ids))
            .collect();
        crate::scheduler::Candidates { nodes: ids, labels }
    }
}
