//! The scheduler-extender hook: decode kube-scheduler's request, select the
//! policies for the pod, evaluate them over the candidate nodes, encode the
//! answer in the mode it was asked in.

pub mod wire;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::api::core::v1 as k8s;
use kube::api::PostParams;

use crate::cluster::{ClusterCache, ClusterQuery, convert, project};
use crate::config::FailureMode;
use crate::metrics::Metrics;
use crate::policy::{PolicySet, PolicyStore, ScheduledPolicy};
use crate::runtime::{Node, Pod};
use wire::*;

/// A request the extender cannot act on; answered with HTTP 400.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadRequest(pub String);

/// Who performs a binding kube-scheduler delegates to the extender.
#[derive(Clone)]
pub enum Binder {
    /// Offline: the snapshot in the cache is the cluster.
    Snapshot,
    /// POST the pod's `binding` subresource.
    Kubernetes(kube::Client),
}

pub struct Extender {
    pub policies: Arc<PolicyStore>,
    pub cluster: Arc<ClusterCache>,
    pub metrics: Arc<Metrics>,
    pub binder: Binder,
}

/// The candidate nodes of a request.
pub enum Candidates {
    /// `nodeCacheCapable`: names, looked up in the cache.
    Names(Vec<String>),
    /// Full node objects, kept verbatim for the answer.
    Objects(NodeList, Vec<Node>),
}

impl Candidates {
    pub fn from_args(
        nodes: Option<NodeList>,
        names: Option<Vec<String>>,
    ) -> Result<Candidates, BadRequest> {
        match (names, nodes) {
            (Some(names), _) => Ok(Candidates::Names(names)),
            (None, Some(list)) => {
                let mut records = Vec::with_capacity(list.items.len());
                for (i, raw) in list.items.iter().enumerate() {
                    let node: k8s::Node = serde_json::from_str(raw.get())
                        .map_err(|e| BadRequest(format!("Nodes.items[{i}] is not a Node: {e}")))?;
                    records.push(convert::node(&node));
                }
                Ok(Candidates::Objects(list, records))
            }
            (None, None) => Err(BadRequest(
                "the request has neither Nodes nor NodeNames; kube-scheduler sends one of them"
                    .into(),
            )),
        }
    }

    fn name(&self, i: usize) -> &str {
        match self {
            Candidates::Names(n) => &n[i],
            Candidates::Objects(_, records) => &records[i].name,
        }
    }

    fn len(&self) -> usize {
        match self {
            Candidates::Names(n) => n.len(),
            Candidates::Objects(_, r) => r.len(),
        }
    }

    /// The nodes at `alive`, with only `label_keys` labels.
    fn project(&self, cache: &ClusterCache, alive: &[usize], label_keys: &[String]) -> Vec<Node> {
        match self {
            Candidates::Names(names) => {
                let wanted: Vec<&str> = alive.iter().map(|&i| names[i].as_str()).collect();
                cache
                    .candidates(&wanted, label_keys)
                    .into_iter()
                    .zip(wanted)
                    .map(|(n, name)| n.unwrap_or_else(|| unknown_node(name)))
                    .collect()
            }
            Candidates::Objects(_, records) => alive
                .iter()
                .map(|&i| project(&records[i], label_keys))
                .collect(),
        }
    }

    /// Indices of nodes the extender can reason about; the others fail.
    fn known(&self, cache: &ClusterCache, failed: &mut BTreeMap<String, String>) -> Vec<usize> {
        match self {
            Candidates::Names(names) => cache
                .known_nodes(names)
                .into_iter()
                .enumerate()
                .filter_map(|(i, known)| {
                    if !known {
                        failed.insert(
                            names[i].clone(),
                            "Steward's cluster cache does not know this node yet; it is \
                             considered once the node watch delivers it"
                                .into(),
                        );
                    }
                    known.then_some(i)
                })
                .collect(),
            Candidates::Objects(_, records) => (0..records.len()).collect(),
        }
    }

    /// The answer for the nodes at `alive`, in the request's mode.
    fn answer(self, alive: &[usize]) -> (Option<NodeList>, Option<Vec<String>>) {
        match self {
            Candidates::Names(names) => (
                None,
                Some(alive.iter().map(|&i| names[i].clone()).collect()),
            ),
            Candidates::Objects(list, _) => {
                let keep: HashSet<usize> = alive.iter().copied().collect();
                let items = list
                    .items
                    .into_iter()
                    .enumerate()
                    .filter(|(i, _)| keep.contains(i))
                    .map(|(_, item)| item)
                    .collect();
                (
                    Some(NodeList {
                        metadata: list.metadata,
                        items,
                    }),
                    None,
                )
            }
        }
    }
}

fn unknown_node(name: &str) -> Node {
    Node {
        name: name.to_string(),
        labels: Vec::new(),
        ready: false,
        unschedulable: false,
        taints: Vec::new(),
    }
}

fn decode_pod(pod: Option<k8s::Pod>) -> Result<Pod, BadRequest> {
    let pod = pod.ok_or_else(|| BadRequest("the request has no Pod".into()))?;
    Ok(convert::pod(&pod))
}

/// Verdicts of the filter chain over some candidates.
struct Verdicts {
    alive: Vec<usize>,
    failed: BTreeMap<String, String>,
    unresolvable: BTreeMap<String, String>,
}

impl Extender {
    /// `filter`: which candidate nodes the pod may use, with a reason for
    /// every node it may not.
    pub fn filter(&self, args: ExtenderArgs) -> Result<ExtenderFilterResult, BadRequest> {
        let pod = decode_pod(args.pod)?;
        let candidates = Candidates::from_args(args.nodes, args.node_names)?;
        Ok(self.filter_pod(&pod, candidates))
    }

    /// `filter` for a decoded pod.
    pub fn filter_pod(&self, pod: &Pod, candidates: Candidates) -> ExtenderFilterResult {
        let set = self.policies.current();
        let policies: Vec<&Arc<ScheduledPolicy>> = set.scheduler_for(pod).collect();
        if policies.is_empty() {
            self.metrics.pass_through();
            let all: Vec<usize> = (0..candidates.len()).collect();
            let (nodes, node_names) = candidates.answer(&all);
            return ExtenderFilterResult {
                nodes,
                node_names,
                ..Default::default()
            };
        }
        let mut failed = BTreeMap::new();
        let alive = candidates.known(&self.cluster, &mut failed);
        let query = ClusterQuery::new(self.cluster.clone());
        let v = self.run_filters(&policies, pod, &candidates, alive, failed, &query);
        if !v.alive.is_empty() && pod.node_name.is_none() {
            self.cluster.begin_placement(pod);
        }
        let (nodes, node_names) = candidates.answer(&v.alive);
        ExtenderFilterResult {
            nodes,
            node_names,
            failed_nodes: v.failed,
            failed_and_unresolvable_nodes: v.unresolvable,
            error: String::new(),
        }
    }

    fn run_filters(
        &self,
        policies: &[&Arc<ScheduledPolicy>],
        pod: &Pod,
        candidates: &Candidates,
        mut alive: Vec<usize>,
        mut failed: BTreeMap<String, String>,
        query: &ClusterQuery,
    ) -> Verdicts {
        let mut unresolvable = BTreeMap::new();
        for p in policies {
            if alive.is_empty() {
                break;
            }
            let nodes = candidates.project(&self.cluster, &alive, &p.policy.needs().node_labels);
            let started = Instant::now();
            let result = p.policy.filter(query.clone(), pod, &nodes);
            let outcome = result.as_ref().map(|_| "ok").unwrap_or_else(|e| e.kind());
            self.metrics
                .evaluation(&p.id, "scheduler", outcome, started.elapsed());
            match result {
                Ok(r) => {
                    let mut rejected = HashSet::new();
                    for rej in &r.rejections {
                        let index = alive[rej.node as usize];
                        let name = candidates.name(index).to_string();
                        let reason = format!("{}: {}", p.id, r.reasons[rej.reason as usize]);
                        if rej.unresolvable {
                            unresolvable.insert(name.clone(), reason.clone());
                        }
                        failed.insert(name, reason);
                        rejected.insert(index);
                    }
                    alive.retain(|i| !rejected.contains(i));
                }
                Err(e) => {
                    tracing::warn!(policy = %p.id, pod = %format!("{}/{}", pod.namespace, pod.name), "filter {e}");
                    if p.failure_mode == FailureMode::FailClosed {
                        let reason = format!("{}: policy {e}; failing closed", p.id);
                        for &i in &alive {
                            failed.insert(candidates.name(i).to_string(), reason.clone());
                        }
                        alive.clear();
                    }
                }
            }
        }
        Verdicts {
            alive,
            failed,
            unresolvable,
        }
    }

    /// `prioritize`: 0..=10 per node, the mean of the scores of the policies
    /// that expressed a preference.
    pub fn prioritize(&self, args: ExtenderArgs) -> Result<Vec<HostPriority>, BadRequest> {
        let pod = decode_pod(args.pod)?;
        let candidates = Candidates::from_args(args.nodes, args.node_names)?;
        Ok(self.prioritize_pod(&pod, &candidates))
    }

    /// `prioritize` for a decoded pod.
    pub fn prioritize_pod(&self, pod: &Pod, candidates: &Candidates) -> Vec<HostPriority> {
        let set = self.policies.current();
        let all: Vec<usize> = (0..candidates.len()).collect();
        let mut sums = vec![0u32; candidates.len()];
        let mut voters = 0u32;
        for p in set.scheduler_for(pod) {
            let nodes = candidates.project(&self.cluster, &all, &p.policy.needs().node_labels);
            let started = Instant::now();
            let result = p
                .policy
                .prioritize(ClusterQuery::new(self.cluster.clone()), pod, &nodes);
            let outcome = result.as_ref().map(|_| "ok").unwrap_or_else(|e| e.kind());
            self.metrics
                .evaluation(&p.id, "scheduler", outcome, started.elapsed());
            match result {
                Ok(scores) if !scores.is_empty() => {
                    voters += 1;
                    for s in scores {
                        sums[s.node as usize] += u32::from(s.score);
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(policy = %p.id, "prioritize {e}; its scores are left out"),
            }
        }
        all.into_iter()
            .map(|i| HostPriority {
                host: candidates.name(i).to_string(),
                score: (sums[i] + voters / 2)
                    .checked_div(voters)
                    .map_or(0, i64::from),
            })
            .collect()
    }

    /// `preempt`: keeps the nodes where evicting the proposed victims lets
    /// every policy accept the pod.
    pub fn preempt(
        &self,
        args: ExtenderPreemptionArgs,
    ) -> Result<ExtenderPreemptionResult, BadRequest> {
        let pod = decode_pod(args.pod)?;
        let victims: BTreeMap<String, MetaVictims> =
            match (args.node_name_to_meta_victims, args.node_name_to_victims) {
                (Some(meta), _) => meta,
                (None, Some(full)) => full
                    .into_iter()
                    .map(|(node, v)| {
                        let pods = v
                            .pods
                            .into_iter()
                            .map(|p| MetaPod {
                                uid: p.metadata.uid,
                            })
                            .collect();
                        (
                            node,
                            MetaVictims {
                                pods,
                                num_pdb_violations: v.num_pdb_violations,
                            },
                        )
                    })
                    .collect(),
                (None, None) => BTreeMap::new(),
            };
        let set: Arc<PolicySet> = self.policies.current();
        let policies: Vec<&Arc<ScheduledPolicy>> = set.scheduler_for(&pod).collect();
        let base = ClusterQuery::new(self.cluster.clone());
        let mut kept = BTreeMap::new();
        for (node, v) in victims {
            let candidates = Candidates::Names(vec![node.clone()]);
            let mut failed = BTreeMap::new();
            let alive = candidates.known(&self.cluster, &mut failed);
            let hidden: HashSet<String> = v.pods.iter().map(|p| p.uid.clone()).collect();
            let verdict = self.run_filters(
                &policies,
                &pod,
                &candidates,
                alive,
                failed,
                &base.hiding(hidden),
            );
            if !verdict.alive.is_empty() {
                kept.insert(node, v);
            }
        }
        Ok(ExtenderPreemptionResult {
            node_name_to_meta_victims: kept,
        })
    }

    /// `bind`: binds the pod and remembers where, so the next filter counts
    /// it there even before the watch shows it.
    pub async fn bind(&self, args: ExtenderBindingArgs) -> ExtenderBindingResult {
        let who = format!("{}/{}", args.pod_namespace, args.pod_name);
        let error = match &self.binder {
            Binder::Snapshot => {
                if self
                    .cluster
                    .bind_in_place(&args.pod_namespace, &args.pod_name, &args.node)
                {
                    String::new()
                } else {
                    format!("pod {who} is not in the snapshot")
                }
            }
            Binder::Kubernetes(client) => {
                let api: kube::Api<k8s::Pod> =
                    kube::Api::namespaced(client.clone(), &args.pod_namespace);
                let binding = k8s::Binding {
                    metadata: kube::api::ObjectMeta {
                        name: Some(args.pod_name.clone()),
                        namespace: Some(args.pod_namespace.clone()),
                        uid: Some(args.pod_uid.clone()),
                        ..Default::default()
                    },
                    target: k8s::ObjectReference {
                        api_version: Some("v1".into()),
                        kind: Some("Node".into()),
                        name: Some(args.node.clone()),
                        ..Default::default()
                    },
                };
                match api
                    .create_subresource::<_, serde_json::Value>(
                        "binding",
                        &args.pod_name,
                        &PostParams::default(),
                        &binding,
                    )
                    .await
                {
                    Ok(_) => {
                        self.cluster.record_binding(
                            &args.pod_uid,
                            &args.pod_namespace,
                            &args.pod_name,
                            &args.node,
                        );
                        String::new()
                    }
                    Err(e) => {
                        self.cluster.abandon_placement(&args.pod_uid);
                        format!("binding pod {who} to node {} failed: {e}", args.node)
                    }
                }
            }
        };
        if !error.is_empty() {
            tracing::warn!("{error}");
        }
        ExtenderBindingResult { error }
    }
}
