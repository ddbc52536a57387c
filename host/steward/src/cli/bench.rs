//! `bench`: times each configured policy's hooks in process on a snapshot's
//! pending pods, through the paths `serve` answers requests with (the
//! extender's filter and prioritize against every node, the admission
//! review of a pod CREATE), so policy authors and operators see what one
//! evaluation costs on their own cluster.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use steward_cluster::read_documents;
use steward_hooks::Hooks;
use steward_hooks::admission::Endpoint;
use steward_hooks::config::Config;
use steward_hooks::extender::{CandidateNodes, Extender};
use steward_hooks::policy::{LoadedPolicy, PodSelector, PolicySet, PolicyStore, ScheduledPolicy};
use steward_wit::Pod;

/// How much to measure.
pub struct Options {
    /// Only this policy (by id); every policy when `None`.
    pub policy: Option<String>,
    /// Timed evaluations per policy and hook.
    pub requests: usize,
    /// Untimed evaluations before them.
    pub warmup: usize,
}

/// The timings of one hook of one policy.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Timings {
    pub policy: String,
    pub hook: &'static str,
    /// The pending pods the requests cycled through.
    pub pods: usize,
    /// Evaluations that did not return a verdict (trap, deadline, ...).
    pub failed: u64,
    /// Every timed evaluation, shortest first.
    #[serde(skip)]
    pub samples: Vec<Duration>,
}

impl Timings {
    pub fn median(&self) -> Duration {
        percentile(&self.samples, 50)
    }

    pub fn p99(&self) -> Duration {
        percentile(&self.samples, 99)
    }

    pub fn max(&self) -> Duration {
        percentile(&self.samples, 100)
    }

    /// Evaluations per second on one thread.
    pub fn per_second(&self) -> f64 {
        let total: Duration = self.samples.iter().sum();
        self.samples.len() as f64 / total.as_secs_f64().max(f64::MIN_POSITIVE)
    }
}

/// Runs `evaluate` on `warmup` inputs untimed, then on `requests` inputs
/// timed, and returns the timed durations shortest first. `prepare(i)`
/// makes the `i`th input of each phase (the decoded request a server would
/// hand over) before the clock starts; the answer is dropped after it stops.
pub fn sample<I, O, E>(
    warmup: usize,
    requests: usize,
    mut prepare: impl FnMut(usize) -> I,
    mut evaluate: impl FnMut(I) -> Result<O, E>,
) -> Result<Vec<Duration>, E> {
    for i in 0..warmup {
        evaluate(prepare(i))?;
    }
    let mut samples = Vec::with_capacity(requests);
    for i in 0..requests {
        let input = prepare(i);
        let started = Instant::now();
        let answer = evaluate(input)?;
        samples.push(started.elapsed());
        drop(answer);
    }
    samples.sort();
    Ok(samples)
}

/// The `pct`th percentile of durations sorted shortest first (100: the
/// longest).
pub fn percentile(sorted: &[Duration], pct: usize) -> Duration {
    sorted[(sorted.len() * pct / 100).min(sorted.len() - 1)]
}

/// One hook of one policy, as [`time_hook`] reports it.
struct Hook<'a> {
    policy: &'a str,
    /// The world, as the evaluation metrics name it.
    world: &'static str,
    name: &'static str,
    /// The pending pods the requests cycle through.
    pods: usize,
}

/// Times `hook`: warm-up, then the timed requests, of which those the
/// policy did not answer (trap, deadline, ...) are counted from the
/// evaluation metrics.
fn time_hook<I, O>(
    hooks: &Hooks,
    hook: Hook,
    options: &Options,
    mut prepare: impl FnMut(usize) -> I,
    mut evaluate: impl FnMut(I) -> Result<O>,
) -> Result<Timings> {
    sample(options.warmup, 0, &mut prepare, &mut evaluate)?;
    let ok_before = hooks.metrics.evaluations(hook.policy, hook.world, "ok");
    let samples = sample(0, options.requests, prepare, evaluate)?;
    let ok = hooks.metrics.evaluations(hook.policy, hook.world, "ok") - ok_before;
    Ok(Timings {
        policy: hook.policy.to_string(),
        hook: hook.name,
        pods: hook.pods,
        failed: options.requests as u64 - ok,
        samples,
    })
}

/// Measures every selected policy's hooks. `snapshot` is the file the
/// cluster was loaded from (admission reviews carry its Pod objects).
pub fn run(
    hooks: &Hooks,
    config: &Config,
    snapshot: &Path,
    options: &Options,
) -> Result<Vec<Timings>> {
    if options.requests == 0 {
        bail!("--requests must be at least 1");
    }
    let set = hooks.extender.policies.current();
    if let Some(id) = &options.policy {
        let known = set
            .scheduler
            .iter()
            .map(|p| &p.id)
            .chain(set.admission.iter().map(|p| &p.id));
        if !known.clone().any(|k| k == id) {
            let known: Vec<&str> = known.map(String::as_str).collect();
            bail!(
                "no scheduler or admission policy `{id}` is configured (configured: {})",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            );
        }
    }
    let wanted = |id: &str| options.policy.as_deref().is_none_or(|w| w == id);
    let pending = crate::cli::simulate::pending_pods(&hooks.cluster);
    let mut timings = Vec::new();
    for policy in set.scheduler.iter().filter(|p| wanted(&p.id)) {
        let pods: Vec<&Pod> = pending
            .iter()
            .filter(|p| policy.selector.matches(p))
            .collect();
        if pods.is_empty() {
            skip(&policy.id, options)?;
            continue;
        }
        timings.extend(scheduler(hooks, policy, &pods, options)?);
    }
    let documents = read_documents(snapshot)?;
    for policy in set.admission.iter().filter(|p| wanted(&p.id)) {
        let selector = config
            .policies
            .iter()
            .find(|c| c.id == policy.id)
            .map(|c| PodSelector::from_config(&c.select))
            .unwrap_or_default();
        let reviews: Vec<Vec<u8>> = pending
            .iter()
            .filter(|p| selector.matches(p))
            .filter_map(|p| pod_object(&documents, &p.namespace, &p.name))
            .map(|object| create_review(&object))
            .collect();
        if reviews.is_empty() {
            skip(&policy.id, options)?;
            continue;
        }
        let endpoint = if policy.mutate {
            Endpoint::Mutate
        } else {
            Endpoint::Validate
        };
        let hook = Hook {
            policy: &policy.id,
            world: "admission",
            name: "review",
            pods: reviews.len(),
        };
        timings.push(time_hook(
            hooks,
            hook,
            options,
            |i| &reviews[i % reviews.len()],
            |body| {
                hooks
                    .admission
                    .review(endpoint, &policy.id, body)
                    .map_err(|r| {
                        anyhow::anyhow!("the review was refused ({}): {}", r.status, r.message)
                    })
            },
        )?);
    }
    if timings.is_empty() {
        bail!(
            "the snapshot has no pending pod that a configured scheduler or admission policy \
             selects; add a Pending pod without spec.nodeName that matches a policy's select"
        );
    }
    Ok(timings)
}

/// A policy with nothing to evaluate: an error when it was asked for by
/// name, a note otherwise.
fn skip(id: &str, options: &Options) -> Result<()> {
    if options.policy.is_some() {
        bail!(
            "the snapshot has no pending pod that policy `{id}` selects; add a Pending pod \
             without spec.nodeName that matches its select"
        );
    }
    eprintln!("{id}: no pending pod of the snapshot is selected; skipped");
    Ok(())
}

/// Filter and prioritize of `policy` alone, against every node, cycling
/// through `pods`. The in-flight placements filters record are dropped
/// before each request, so every request sees the same cluster.
fn scheduler(
    hooks: &Hooks,
    policy: &Arc<ScheduledPolicy>,
    pods: &[&Pod],
    options: &Options,
) -> Result<[Timings; 2]> {
    let extender = Extender::new(
        Arc::new(PolicyStore::new(PolicySet::assemble([
            LoadedPolicy::Scheduler(policy.clone()),
        ]))),
        hooks.cluster.clone(),
        hooks.metrics.clone(),
        hooks.extender.backend.clone(),
    );
    let names: Vec<String> = hooks
        .cluster
        .all_nodes()
        .into_iter()
        .map(|n| n.name)
        .collect();
    let hook = |name| Hook {
        policy: &policy.id,
        world: "scheduler",
        name,
        pods: pods.len(),
    };
    let candidates = || CandidateNodes::Names(names.clone());
    let next_pod = |i: usize| {
        for pod in pods {
            hooks.cluster.abandon_placement(&pod.uid);
        }
        pods[i % pods.len()]
    };
    let filter = time_hook(
        hooks,
        hook("filter"),
        options,
        |i| (next_pod(i), candidates()),
        |(pod, nodes)| Ok(extender.filter_pod(pod, nodes)),
    )?;
    let nodes = candidates();
    let prioritize = time_hook(hooks, hook("prioritize"), options, next_pod, |pod| {
        Ok(extender.prioritize_pod(pod, &nodes))
    })?;
    Ok([filter, prioritize])
}

/// The snapshot's object for pod `namespace/name` (Lists searched too).
fn pod_object(
    documents: &[serde_json::Value],
    namespace: &str,
    name: &str,
) -> Option<serde_json::Value> {
    let is_it = |o: &&serde_json::Value| {
        o["kind"] == "Pod"
            && o["metadata"]["name"] == name
            && o["metadata"]["namespace"].as_str().unwrap_or_default() == namespace
    };
    documents
        .iter()
        .flat_map(|d| match d["items"].as_array() {
            Some(items) if d["kind"] == "List" => items.iter().collect(),
            _ => vec![d],
        })
        .find(|o| is_it(o))
        .cloned()
}

/// The AdmissionReview kube-apiserver sends when `pod` is created, as a dry
/// run so a policy's actions are never performed.
fn create_review(pod: &serde_json::Value) -> Vec<u8> {
    let meta = &pod["metadata"];
    serde_json::to_vec(&serde_json::json!({
        "apiVersion": steward_hooks::admission::wire::API_VERSION,
        "kind": steward_hooks::admission::wire::KIND,
        "request": {
            "uid": "steward-bench",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "name": meta["name"],
            "namespace": meta["namespace"],
            "operation": "CREATE",
            "userInfo": {"username": "steward-bench"},
            "dryRun": true,
            "object": pod,
        },
    }))
    .expect("a review serializes")
}

/// One line per policy and hook.
pub fn render(timings: &[Timings]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<24} {:<10} {:>5} {:>7} {:>6} {:>11} {:>11} {:>11} {:>10}",
        "policy", "hook", "pods", "n", "failed", "median µs", "p99 µs", "max µs", "evals/s"
    );
    let micros = |d: Duration| d.as_secs_f64() * 1e6;
    for t in timings {
        let _ = writeln!(
            out,
            "{:<24} {:<10} {:>5} {:>7} {:>6} {:>11.1} {:>11.1} {:>11.1} {:>10.0}",
            t.policy,
            t.hook,
            t.pods,
            t.samples.len(),
            t.failed,
            micros(t.median()),
            micros(t.p99()),
            micros(t.max()),
            t.per_second()
        );
    }
    out
}
