//! Cluster queries behind one trait, so policy logic runs the same on the
//! host's cache (inside Wasm) and on in-memory fixtures (in tests).

use crate::common::steward::policy::cluster as host;
use crate::{Claim, Node, Pod, SelectorRequirement, StorageClass, Volume, Workload, labels};

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
    /// Name of the node with host id `id` (scheduler candidates carry ids).
    fn node_name(&self, id: u32) -> Option<String>;
    /// Text of value id `id` of label `key`.
    fn label_text(&self, key: &str, id: u32) -> Option<String>;
    /// Value id of `text` for label `key`, if any node carries it.
    fn label_id(&self, key: &str, text: &str) -> Option<u32>;

    /// The value id of label `key` on the named node.
    fn node_label_id(&self, node: &str, key: &str) -> Option<u32> {
        let node = self.get_node(node)?;
        self.label_id(key, labels::get(&node.labels, key)?)
    }
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
    fn node_name(&self, id: u32) -> Option<String> {
        host::node_name(id)
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
    fn node_name(&self, id: u32) -> Option<String> {
        self.nodes.get(id as usize).map(|n| n.name.clone())
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
}

#[cfg(feature = "scheduler")]
impl FakeCluster {
    /// The `candidates` of a scheduler call over the named nodes (which
    /// must be in `nodes`), with columns for `label_keys`.
    pub fn candidates(&self, names: &[&str], label_keys: &[&str]) -> crate::scheduler::Candidates {
        let ids: Vec<u32> = names
            .iter()
            .map(|name| {
                let i = self.nodes.iter().position(|n| n.name == *name);
                i.unwrap_or_else(|| panic!("candidate {name} is not a node of the fake cluster"))
                    as u32
            })
            .collect();
        let labels = label_keys
            .iter()
            .map(|key| {
                ids.iter()
                    .map(|&id| {
                        labels::get(&self.nodes[id as usize].labels, key)
                            .and_then(|text| self.label_id(key, text))
                            .unwrap_or(crate::scheduler::NO_LABEL)
                    })
                    .collect()
            })
            .collect();
        crate::scheduler::Candidates { nodes: ids, labels }
    }
}
