//! The scheduler-extender hook: decode kube-scheduler's request, select the
//! policies for the pod, evaluate them over the candidate nodes, encode the
//! answer in the mode it was asked in.

pub mod wire;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::budget::{Budget, Panicked};
use crate::config::{FailureMode, SchedulerConfig};
use crate::metrics::Metrics;
use crate::policy::{PolicySet, PolicyStore, ScheduledPolicy};
use k8s_openapi::api::core::v1 as k8s;
use steward_cluster::{Backend, ClusterCache, ClusterQuery, convert};
use steward_wit::{Candidates, Pod};
use wire::*;

/// A request the extender cannot act on; answered with HTTP 400.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadRequest(pub String);

pub struct Extender {
    pub policies: Arc<PolicyStore>,
    pub cluster: Arc<ClusterCache>,
    pub metrics: Arc<Metrics>,
    pub backend: Backend,
    /// How long a filter whose answer refused nodes because of pods in
    /// flight waits for them to settle before answering (`scheduler.filterWaitMs`).
    pub filter_wait: Duration,
}

/// A decoded `filter` request.
struct FilterRequest {
    pod: Pod,
    /// The pod's scheduling failure as kube-scheduler sent it (see
    /// [`convert::scheduling_failure`]).
    failure: Option<String>,
    candidates: CandidateNodes,
}

/// One evaluation of a filter request.
struct FilterEvaluation {
    request: FilterRequest,
    /// `None` when no policy selects the pod (every node passes).
    verdicts: Option<Verdicts>,
    /// Pods in flight (not the pod itself) the verdicts depended on, when
    /// they refused some node: settled, they may let more through.
    pending: Vec<String>,
}

/// The candidate nodes of a request.
pub enum CandidateNodes {
    /// `nodeCacheCapable`: names, looked up in the cache.
    Names(Vec<String>),
    /// Full node objects, kept verbatim for the answer.
    Objects(NodeList, Vec<String>),
}

impl CandidateNodes {
    /// Reads the request's candidates. Full node objects the cache does not
    /// know yet (no watch, or a lagging one) are taken in; known ones stay
    /// as the watch delivered them.
    pub fn from_args(
        cache: &ClusterCache,
        nodes: Option<NodeList>,
        names: Option<Vec<String>>,
    ) -> Result<CandidateNodes, BadRequest> {
        match (names, nodes) {
            (Some(names), _) => Ok(CandidateNodes::Names(names)),
            (None, Some(list)) => {
                let mut names = Vec::with_capacity(list.items.len());
                for (i, raw) in list.items.iter().enumerate() {
                    let node: k8s::Node = serde_json::from_str(raw.get())
                        .map_err(|e| BadRequest(format!("Nodes.items[{i}] is not a Node: {e}")))?;
                    let node = convert::node(&node);
                    names.push(node.name.clone());
                    cache.insert_node_if_unknown(node);
                }
                Ok(CandidateNodes::Objects(list, names))
            }
            (None, None) => Err(BadRequest(
                "the request has neither Nodes nor NodeNames; kube-scheduler sends one of them"
                    .into(),
            )),
        }
    }

    fn names(&self) -> &[String] {
        match self {
            CandidateNodes::Names(n) | CandidateNodes::Objects(_, n) => n,
        }
    }

    /// The answer for the nodes at `alive`, in the request's mode.
    fn answer(self, alive: &[usize]) -> (Option<NodeList>, Option<Vec<String>>) {
        match self {
            CandidateNodes::Names(names) => (None, Some(keep_at(names, alive))),
            CandidateNodes::Objects(list, _) => (
                Some(NodeList {
                    metadata: list.metadata,
                    items: keep_at(list.items, alive),
                }),
                None,
            ),
        }
    }
}

/// The items at the ascending positions `keep`, moved out of `items`.
fn keep_at<T>(items: Vec<T>, keep: &[usize]) -> Vec<T> {
    let mut wanted = keep.iter().copied().peekable();
    items
        .into_iter()
        .enumerate()
        .filter(|(i, _)| {
            let hit = wanted.peek() == Some(i);
            if hit {
                wanted.next();
            }
            hit
        })
        .map(|(_, item)| item)
        .collect()
}

/// The candidates still in play: request indices and host node ids.
struct Alive {
    index: Vec<usize>,
    ids: Vec<u32>,
}

impl Alive {
    /// The nodes the cache knows; the others fail with a reason. A node
    /// named again is dropped: kube-scheduler names each node once, and
    /// repeats are not echoed back.
    fn known(
        cache: &ClusterCache,
        names: &[String],
        failed: &mut BTreeMap<String, String>,
    ) -> Alive {
        let mut alive = Alive {
            index: Vec::with_capacity(names.len()),
            ids: Vec::with_capacity(names.len()),
        };
        // Host ids are dense, so a flag per id finds repeats.
        let mut seen: Vec<bool> = Vec::new();
        for (i, id) in cache.node_ids(names).into_iter().enumerate() {
            match id {
                Some(id) => {
                    let slot = id as usize;
                    if slot >= seen.len() {
                        seen.resize(slot + 1, false);
                    }
                    if std::mem::replace(&mut seen[slot], true) {
                        continue;
                    }
                    alive.index.push(i);
                    alive.ids.push(id);
                }
                None => {
                    failed.insert(
                        names[i].clone(),
                        "Steward's cluster cache does not know this node yet; it is considered \
                         once the node watch delivers it"
                            .into(),
                    );
                }
            }
        }
        alive
    }

    /// The call's `candidates` for a policy that asked for `label_keys`.
    fn candidates(&self, cache: &ClusterCache, label_keys: &[String]) -> Candidates {
        Candidates {
            nodes: self.ids.clone(),
            labels: cache.label_columns(&self.ids, label_keys),
        }
    }

    /// Drops the candidates at these positions.
    fn remove(&mut self, positions: &[usize]) {
        let mut gone = vec![false; self.ids.len()];
        for &p in positions {
            gone[p] = true;
        }
        let keep: Vec<usize> = (0..gone.len()).filter(|&i| !gone[i]).collect();
        self.index = keep_at(std::mem::take(&mut self.index), &keep);
        self.ids = keep_at(std::mem::take(&mut self.ids), &keep);
    }

    fn clear(&mut self) {
        self.index.clear();
        self.ids.clear();
    }
}

fn decode_pod(pod: Option<k8s::Pod>) -> Result<Pod, BadRequest> {
    let pod = pod.ok_or_else(|| BadRequest("the request has no Pod".into()))?;
    Ok(convert::pod(&pod))
}

/// Verdicts of the filter chain over some candidates.
struct Verdicts {
    alive: Vec<usize>,
    /// Host ids of the `alive` nodes.
    alive_ids: Vec<u32>,
    failed: BTreeMap<String, String>,
    unresolvable: BTreeMap<String, String>,
}

impl Extender {
    /// An extender that waits the default `scheduler.filterWaitMs`.
    pub fn new(
        policies: Arc<PolicyStore>,
        cluster: Arc<ClusterCache>,
        metrics: Arc<Metrics>,
        backend: Backend,
    ) -> Extender {
        Extender {
            policies,
            cluster,
            metrics,
            backend,
            filter_wait: Duration::from_millis(SchedulerConfig::default().filter_wait_ms),
        }
    }

    /// `filter`: which candidate nodes the pod may use, with a reason for
    /// every node it may not. Answers at once; see [`Extender::serve_filter`]
    /// for the answer that waits for pods in flight.
    pub fn filter(&self, args: ExtenderArgs) -> Result<ExtenderFilterResult, BadRequest> {
        let request = self.decode_filter(args)?;
        Ok(self.answer_filter(self.evaluate_filter(request)))
    }

    /// `filter` for a decoded pod, answered at once.
    pub fn filter_pod(&self, pod: &Pod, candidates: CandidateNodes) -> ExtenderFilterResult {
        let request = FilterRequest {
            pod: pod.clone(),
            failure: None,
            candidates,
        };
        self.answer_filter(self.evaluate_filter(request))
    }

    /// The `filter` request body to its answer's body. An evaluation that
    /// refused every node while pods of the same policies' concern were in
    /// flight (filtered, not bound) waits, holding no evaluation permit,
    /// until they are bound or their attempt failed, at most
    /// [`Extender::filter_wait`] in all, and evaluates again: the pod is
    /// then placed in this scheduling cycle instead of being parked by
    /// kube-scheduler. A pod still refused for pods in flight is requeued
    /// once they settle (see [`ClusterCache::requeue_when_settled`]).
    pub async fn serve_filter(
        self: &Arc<Self>,
        budget: &Budget,
        body: bytes::Bytes,
    ) -> Result<Result<Vec<u8>, BadRequest>, Panicked> {
        let deadline = tokio::time::Instant::now() + self.filter_wait;
        let extender = self.clone();
        let first = budget
            .run_compute(move || {
                let request = extender.decode_filter(decode(Verb::Filter, &body)?)?;
                Ok(extender.evaluate_filter(request))
            })
            .await?;
        let mut evaluation = match first {
            Ok(evaluation) => evaluation,
            Err(bad) => return Ok(Err(bad)),
        };
        while !evaluation.pending.is_empty() {
            self.metrics.filter_wait();
            let still = self
                .cluster
                .wait_settled(&evaluation.pending, deadline)
                .await;
            if !still.is_empty() || tokio::time::Instant::now() >= deadline {
                self.metrics.filter_wait_timeout();
                let pod = &evaluation.request.pod;
                self.cluster
                    .requeue_when_settled(&evaluation.pending, &pod.namespace, &pod.name);
                break;
            }
            let extender = self.clone();
            let request = evaluation.request;
            evaluation = budget
                .run_compute(move || extender.evaluate_filter(request))
                .await?;
        }
        Ok(encode(&self.answer_filter(evaluation)))
    }

    fn decode_filter(&self, args: ExtenderArgs) -> Result<FilterRequest, BadRequest> {
        let pod = args
            .pod
            .ok_or_else(|| BadRequest("the request has no Pod".into()))?;
        let candidates = CandidateNodes::from_args(&self.cluster, args.nodes, args.node_names)?;
        Ok(FilterRequest {
            failure: convert::scheduling_failure(&pod),
            pod: convert::pod(&pod),
            candidates,
        })
    }

    /// Runs the filter chain over the request's candidates.
    fn evaluate_filter(&self, request: FilterRequest) -> FilterEvaluation {
        let set = self.policies.current();
        let policies: Vec<&Arc<ScheduledPolicy>> = set.scheduler_for(&request.pod).collect();
        if policies.is_empty() {
            self.metrics.pass_through();
            return FilterEvaluation {
                request,
                verdicts: None,
                pending: Vec::new(),
            };
        }
        let names = request.candidates.names();
        let mut failed = BTreeMap::new();
        let alive = Alive::known(&self.cluster, names, &mut failed);
        let known = alive.ids.len();
        let query = ClusterQuery::new(self.cluster.clone());
        let v = self.run_filters(&policies, &request.pod, names, alive, failed, &query);
        let pending = if v.alive.is_empty() && known > 0 {
            let mut seen = query.in_flight_seen();
            seen.retain(|uid| *uid != request.pod.uid);
            seen
        } else {
            Vec::new()
        };
        FilterEvaluation {
            request,
            verdicts: Some(v),
            pending,
        }
    }

    /// The answer to an evaluated request; the pod is in flight on the
    /// nodes it passed.
    fn answer_filter(&self, evaluation: FilterEvaluation) -> ExtenderFilterResult {
        let FilterRequest {
            pod,
            failure,
            candidates,
        } = evaluation.request;
        let Some(v) = evaluation.verdicts else {
            let all: Vec<usize> = (0..candidates.names().len()).collect();
            let (nodes, node_names) = candidates.answer(&all);
            return ExtenderFilterResult {
                nodes,
                node_names,
                ..Default::default()
            };
        };
        if !v.alive.is_empty() && pod.node_name.is_none() {
            self.cluster.begin_placement(&pod, &v.alive_ids, failure);
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
        names: &[String],
        mut alive: Alive,
        mut failed: BTreeMap<String, String>,
        query: &ClusterQuery,
    ) -> Verdicts {
        let mut unresolvable = BTreeMap::new();
        for p in policies {
            if alive.ids.is_empty() {
                break;
            }
            let candidates = alive.candidates(&self.cluster, &p.policy.needs().node_labels);
            let started = Instant::now();
            let result = p.policy.filter(query.clone(), pod, &candidates);
            let outcome = result.as_ref().map(|_| "ok").unwrap_or_else(|e| e.kind());
            self.metrics
                .evaluation(&p.id, "scheduler", outcome, started.elapsed());
            match result {
                Ok(r) => {
                    let mut rejected = Vec::with_capacity(r.rejections.len());
                    for rej in &r.rejections {
                        let name = names[alive.index[rej.node as usize]].clone();
                        let reason = format!("{}: {}", p.id, r.reasons[rej.reason as usize]);
                        if rej.unresolvable {
                            unresolvable.insert(name.clone(), reason.clone());
                        }
                        failed.insert(name, reason);
                        rejected.push(rej.node as usize);
                    }
                    alive.remove(&rejected);
                }
                Err(e) => {
                    tracing::warn!(policy = %p.id, pod = %format!("{}/{}", pod.namespace, pod.name), "filter {e}");
                    if p.failure_mode == FailureMode::FailClosed {
                        let reason = format!("{}: policy {e}; failing closed", p.id);
                        for &i in &alive.index {
                            failed.insert(names[i].clone(), reason.clone());
                        }
                        alive.clear();
                    }
                }
            }
        }
        Verdicts {
            alive: alive.index,
            alive_ids: alive.ids,
            failed,
            unresolvable,
        }
    }

    /// `prioritize`: 0..=10 per node, the mean of the scores of the policies
    /// that expressed a preference. Nodes scoring 0 are left out: kube-scheduler
    /// reads a missing node as 0, and without a preference the answer is then
    /// empty instead of an entry per node for it to decode.
    pub fn prioritize(&self, args: ExtenderArgs) -> Result<Vec<HostPriority>, BadRequest> {
        let pod = decode_pod(args.pod)?;
        let candidates = CandidateNodes::from_args(&self.cluster, args.nodes, args.node_names)?;
        let mut scores = self.prioritize_pod(&pod, &candidates);
        scores.retain(|s| s.score != 0);
        Ok(scores)
    }

    /// `prioritize` for a decoded pod.
    pub fn prioritize_pod(&self, pod: &Pod, candidates: &CandidateNodes) -> Vec<HostPriority> {
        let set = self.policies.current();
        let names = candidates.names();
        let mut sums = vec![0u32; names.len()];
        let mut voters = 0u32;
        let alive = Alive::known(&self.cluster, names, &mut BTreeMap::new());
        for p in set.scheduler_for(pod) {
            let nodes = alive.candidates(&self.cluster, &p.policy.needs().node_labels);
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
                        sums[alive.index[s.node as usize]] += u32::from(s.score);
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(policy = %p.id, "prioritize {e}; its scores are left out"),
            }
        }
        names
            .iter()
            .zip(sums)
            .map(|(name, sum)| HostPriority {
                host: name.clone(),
                score: (sum + voters / 2).checked_div(voters).map_or(0, i64::from),
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
            let names = [node.clone()];
            let mut failed = BTreeMap::new();
            let alive = Alive::known(&self.cluster, &names, &mut failed);
            let hidden: HashSet<String> = v.pods.iter().map(|p| p.uid.clone()).collect();
            let verdict =
                self.run_filters(&policies, &pod, &names, alive, failed, &base.hiding(hidden));
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
        let bound = self
            .backend
            .bind(
                &self.cluster,
                &args.pod_namespace,
                &args.pod_name,
                &args.pod_uid,
                &args.node,
            )
            .await;
        let error = bound.err().unwrap_or_default();
        if !error.is_empty() {
            tracing::warn!("{error}");
        }
        ExtenderBindingResult { error }
    }

    /// An evaluating verb's request body to its answer's body: decode,
    /// evaluate, encode. Evaluations block: call it on a blocking thread.
    pub fn serve(&self, verb: Verb, body: &[u8]) -> Result<Vec<u8>, BadRequest> {
        match verb {
            Verb::Filter => encode(&self.filter(decode(verb, body)?)?),
            Verb::Prioritize => encode(&self.prioritize(decode(verb, body)?)?),
            Verb::Preempt => encode(&self.preempt(decode(verb, body)?)?),
        }
    }

    /// The `bind` request body to its answer's body.
    pub async fn serve_bind(&self, body: &[u8]) -> Result<Vec<u8>, BadRequest> {
        let args = serde_json::from_slice(body)
            .map_err(|e| BadRequest(format!("cannot decode the bind request: {e}")))?;
        encode(&self.bind(args).await)
    }
}

/// The extender verbs that evaluate policies (`bind` does not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Filter,
    Prioritize,
    Preempt,
}

impl Verb {
    pub fn name(self) -> &'static str {
        match self {
            Verb::Filter => "filter",
            Verb::Prioritize => "prioritize",
            Verb::Preempt => "preempt",
        }
    }
}

fn decode<A: serde::de::DeserializeOwned>(verb: Verb, body: &[u8]) -> Result<A, BadRequest> {
    serde_json::from_slice(body)
        .map_err(|e| BadRequest(format!("cannot decode the {} request: {e}", verb.name())))
}

fn encode(answer: &impl serde::Serialize) -> Result<Vec<u8>, BadRequest> {
    Ok(serde_json::to_vec(answer).expect("extender answers serialize"))
}
