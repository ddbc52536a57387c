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
}

/// An in-memory cluster for unit tests; fill it with [`crate::build`].
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
}
