//! The `cluster` import of every policy world, answered from the cache.

use steward_wit::common::steward::policy::cluster;
use steward_wit::{
    CapacitySource, Claim, LocalVolume, Node, NodeDisks, NodeSelectorTerm, Pod, PoolColumns,
    SelectorRequirement, StorageClass, TidbCluster, Volume, Workload,
};

use crate::ClusterQuery;

impl cluster::Host for ClusterQuery {
    fn list_pods(&mut self, namespace: String, selector: Vec<SelectorRequirement>) -> Vec<Pod> {
        ClusterQuery::list_pods(self, &namespace, &selector)
    }
    fn get_pod(&mut self, namespace: String, name: String) -> Option<Pod> {
        ClusterQuery::get_pod(self, &namespace, &name)
    }
    fn list_nodes(&mut self, selector: Vec<SelectorRequirement>) -> Vec<Node> {
        ClusterQuery::list_nodes(self, &selector)
    }
    fn get_node(&mut self, name: String) -> Option<Node> {
        ClusterQuery::get_node(self, &name)
    }
    fn get_claim(&mut self, namespace: String, name: String) -> Option<Claim> {
        ClusterQuery::get_claim(self, &namespace, &name)
    }
    fn get_volume(&mut self, name: String) -> Option<Volume> {
        ClusterQuery::get_volume(self, &name)
    }
    fn get_storage_class(&mut self, name: String) -> Option<StorageClass> {
        ClusterQuery::get_storage_class(self, &name)
    }
    fn get_workload(&mut self, kind: String, namespace: String, name: String) -> Option<Workload> {
        ClusterQuery::get_workload(self, &kind, &namespace, &name)
    }
    fn get_tidb_cluster(&mut self, namespace: String, name: String) -> Option<TidbCluster> {
        ClusterQuery::get_tidb_cluster(self, &namespace, &name)
    }
    fn node_label_ids(&mut self, key: String, nodes: Vec<u32>) -> Vec<u32> {
        ClusterQuery::node_label_ids(self, &key, &nodes)
    }
    fn node_name(&mut self, id: u32) -> Option<String> {
        ClusterQuery::node_name(self, id)
    }
    fn node_names(&mut self, ids: Vec<u32>) -> Vec<Option<String>> {
        ClusterQuery::node_names(self, &ids)
    }
    fn label_text(&mut self, key: String, id: u32) -> Option<String> {
        ClusterQuery::label_text(self, &key, id)
    }
    fn label_id(&mut self, key: String, text: String) -> Option<u32> {
        ClusterQuery::label_id(self, &key, &text)
    }
    fn node_label_id(&mut self, node: String, key: String) -> Option<u32> {
        ClusterQuery::node_label_id(self, &node, &key)
    }
    fn list_storage_classes(&mut self) -> Vec<StorageClass> {
        ClusterQuery::list_storage_classes(self)
    }
    fn get_local_volume(&mut self, name: String) -> Option<LocalVolume> {
        ClusterQuery::get_local_volume(self, &name)
    }
    fn node_id(&mut self, name: String) -> Option<u32> {
        ClusterQuery::node_id(self, &name)
    }
    fn match_node_affinity(&mut self, terms: Vec<NodeSelectorTerm>, nodes: Vec<u32>) -> Vec<bool> {
        ClusterQuery::match_node_affinity(self, &terms, &nodes)
    }
    fn storage_nodes(&mut self, source: CapacitySource) -> Vec<u32> {
        ClusterQuery::storage_nodes(self, source)
    }
    fn pool_capacities(
        &mut self,
        source: CapacitySource,
        pool: String,
        storage_classes: Vec<String>,
        except_pod: String,
        nodes: Vec<u32>,
    ) -> PoolColumns {
        ClusterQuery::pool_capacities(self, source, &pool, &storage_classes, &except_pod, &nodes)
    }
    fn pool_problem(&mut self, source: CapacitySource, pool: String, node: u32) -> Option<String> {
        ClusterQuery::pool_problem(self, source, &pool, node)
    }
    fn free_disks(
        &mut self,
        disk_type: String,
        storage_classes: Vec<String>,
        except_pod: String,
        nodes: Vec<u32>,
    ) -> Vec<NodeDisks> {
        ClusterQuery::free_disks(self, &disk_type, &storage_classes, &except_pod, &nodes)
    }
}
