//! `simulate`: replays a snapshot's pending pods through the scheduler
//! policies, one at a time as kube-scheduler would, and reports where each
//! pod lands and why the other nodes were refused.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use steward_cluster::ClusterCache;
use steward_hooks::extender::{CandidateNodes, Extender};
use steward_wit::{Node, Pod};

/// Where one pod went.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Placement {
    pub pod: String,
    pub node: Option<String>,
    /// Refused node → reason (Steward's policies or kube-scheduler's own checks).
    pub refused: BTreeMap<String, String>,
}

/// Places every pending pod of the cache, in namespace/name/ordinal order.
pub fn run(extender: &Extender) -> Vec<Placement> {
    let query = steward_cluster::ClusterQuery::new(extender.cluster.clone());
    let nodes = query.list_nodes(&[]);
    pending_pods(&extender.cluster)
        .iter()
        .map(|pod| place(extender, pod, &nodes))
        .collect()
}

/// The pods waiting for a node, in namespace/name/ordinal order.
pub fn pending_pods(cluster: &ClusterCache) -> Vec<Pod> {
    let mut pending: Vec<Pod> = cluster
        .all_pods()
        .into_iter()
        .filter(|p| p.node_name.is_none() && !p.deleting && p.phase == "Pending")
        .collect();
    pending.sort_by_key(|p| (p.namespace.clone(), natural_key(&p.name)));
    pending
}

/// Sorts `basic-pd-10` after `basic-pd-9`.
fn natural_key(name: &str) -> (String, u64) {
    match name.rsplit_once('-') {
        Some((stem, n)) if n.parse::<u64>().is_ok() => (stem.to_string(), n.parse().unwrap_or(0)),
        _ => (name.to_string(), 0),
    }
}

/// kube-scheduler's own node checks, before any extender is asked.
fn scheduler_refusal(node: &Node) -> Option<&'static str> {
    if !node.ready {
        Some("kube-scheduler: node is not Ready")
    } else if node.unschedulable {
        Some("kube-scheduler: node is cordoned")
    } else if node
        .taints
        .iter()
        .any(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
    {
        Some("kube-scheduler: node has a NoSchedule/NoExecute taint")
    } else {
        None
    }
}

fn place(extender: &Extender, pod: &Pod, nodes: &[Node]) -> Placement {
    let mut refused = BTreeMap::new();
    let mut names = Vec::new();
    for n in nodes {
        match scheduler_refusal(n) {
            Some(why) => {
                refused.insert(n.name.clone(), why.to_string());
            }
            None => names.push(n.name.clone()),
        }
    }
    let verdict = extender.filter_pod(pod, CandidateNodes::Names(names));
    refused.extend(verdict.failed_nodes);
    let passed = verdict.node_names.unwrap_or_default();
    let scores = extender.prioritize_pod(pod, &CandidateNodes::Names(passed.clone()));
    // Highest score; ties go to the node with fewer pods, then by name.
    let best = scores
        .iter()
        .map(|s| (s.score, extender.cluster.pods_on(&s.host).len(), &s.host))
        .max_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)).then(b.2.cmp(a.2)))
        .map(|(_, _, host)| host.clone());
    if let Some(node) = &best {
        extender
            .cluster
            .bind_in_place(&pod.namespace, &pod.name, node);
    }
    Placement {
        pod: format!("{}/{}", pod.namespace, pod.name),
        node: best,
        refused,
    }
}

/// The human report: one block per pod, then a summary line.
pub fn render(placements: &[Placement]) -> String {
    let mut out = String::new();
    for p in placements {
        let node = p.node.as_deref().unwrap_or("(unschedulable)");
        let _ = writeln!(out, "{:<32} -> {node}", p.pod);
        for (n, why) in &p.refused {
            let _ = writeln!(out, "    refused {n}: {why}");
        }
    }
    let placed = placements.iter().filter(|p| p.node.is_some()).count();
    let _ = writeln!(out, "placed {placed} of {} pending pods", placements.len());
    out
}
