//! kube-scheduler's HTTP extender protocol (`k8s.io/kube-scheduler/extender/v1`).
//! The Go types carry no json tags, so field names are the capitalised Go
//! names; Go decodes case-insensitively, so lower-case aliases are accepted.
//! Unset pointers and maps travel as `null`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// `ExtenderArgs`: the body of filter and prioritize.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtenderArgs {
    #[serde(rename = "Pod", alias = "pod")]
    pub pod: Option<Pod>,
    /// Full nodes, when the extender is not `nodeCacheCapable`.
    #[serde(rename = "Nodes", alias = "nodes")]
    pub nodes: Option<NodeList>,
    /// Node names, when it is.
    #[serde(rename = "NodeNames", alias = "nodenames", alias = "nodeNames")]
    pub node_names: Option<Vec<String>>,
}

/// A `v1.NodeList`; items are kept verbatim to answer in the same form.
#[derive(Debug, Deserialize, Serialize)]
pub struct NodeList {
    #[serde(default)]
    pub metadata: serde_json::Value,
    #[serde(default)]
    pub items: Vec<Box<RawValue>>,
}

/// `ExtenderFilterResult`.
#[derive(Debug, Serialize, Deserialize, Default)]
pub struct ExtenderFilterResult {
    #[serde(rename = "Nodes")]
    pub nodes: Option<NodeList>,
    #[serde(rename = "NodeNames")]
    pub node_names: Option<Vec<String>>,
    #[serde(rename = "FailedNodes")]
    pub failed_nodes: BTreeMap<String, String>,
    /// Nodes no preemption can fix (kube-scheduler ≥ 1.21 reads it; older
    /// ones find the same nodes in `FailedNodes`).
    #[serde(rename = "FailedAndUnresolvableNodes")]
    pub failed_and_unresolvable_nodes: BTreeMap<String, String>,
    #[serde(rename = "Error")]
    pub error: String,
}

/// One `HostPriority` of the prioritize answer.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct HostPriority {
    #[serde(rename = "Host")]
    pub host: String,
    #[serde(rename = "Score")]
    pub score: i64,
}

/// `ExtenderPreemptionArgs`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtenderPreemptionArgs {
    #[serde(rename = "Pod", alias = "pod")]
    pub pod: Option<Pod>,
    #[serde(rename = "NodeNameToVictims", alias = "nodeNameToVictims")]
    pub node_name_to_victims: Option<BTreeMap<String, Victims>>,
    #[serde(rename = "NodeNameToMetaVictims", alias = "nodeNameToMetaVictims")]
    pub node_name_to_meta_victims: Option<BTreeMap<String, MetaVictims>>,
}

#[derive(Debug, Deserialize)]
pub struct Victims {
    #[serde(rename = "Pods", alias = "pods", default)]
    pub pods: Vec<VictimPod>,
    #[serde(rename = "NumPDBViolations", alias = "numPDBViolations", default)]
    pub num_pdb_violations: i64,
}

/// The part of a victim pod the extender needs: its uid.
#[derive(Debug, Deserialize)]
pub struct VictimPod {
    #[serde(default)]
    pub metadata: VictimMeta,
}

#[derive(Debug, Deserialize, Default)]
pub struct VictimMeta {
    #[serde(default)]
    pub uid: String,
}

#[derive(Debug, Deserialize, Serialize, Clone, PartialEq)]
pub struct MetaVictims {
    #[serde(rename = "Pods", alias = "pods", default)]
    pub pods: Vec<MetaPod>,
    #[serde(rename = "NumPDBViolations", alias = "numPDBViolations", default)]
    pub num_pdb_violations: i64,
}

#[derive(Debug, Deserialize, Serialize, Clone, PartialEq)]
pub struct MetaPod {
    #[serde(rename = "UID", alias = "uid")]
    pub uid: String,
}

/// `ExtenderPreemptionResult`.
#[derive(Debug, Serialize, Deserialize, Default)]
pub struct ExtenderPreemptionResult {
    #[serde(rename = "NodeNameToMetaVictims")]
    pub node_name_to_meta_victims: BTreeMap<String, MetaVictims>,
}

/// `ExtenderBindingArgs`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtenderBindingArgs {
    #[serde(rename = "PodName", alias = "podName")]
    pub pod_name: String,
    #[serde(rename = "PodNamespace", alias = "podNamespace")]
    pub pod_namespace: String,
    #[serde(rename = "PodUID", alias = "podUID")]
    pub pod_uid: String,
    #[serde(rename = "Node", alias = "node")]
    pub node: String,
}

/// `ExtenderBindingResult`.
#[derive(Debug, Serialize, Deserialize, Default)]
pub struct ExtenderBindingResult {
    #[serde(rename = "Error")]
    pub error: String,
}
