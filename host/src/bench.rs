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

use crate::admission::Endpoint;
use crate::cluster::read_documents;
use crate::config::Config;
use crate::extender::{CandidateNodes, Extender};
use crate::policy::{LoadedPolicy, PodSelector, PolicySet, PolicyStore, ScheduledPolicy};
use crate::runtime::Pod;
use crate::server::App;

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
        self.samples[self.samples.len() / 2]
    }

    pub fn p99(&self) -> Duration {
        self.samples[(self.samples.len() * 99 / 100).min(self.samples.len() - 1)]
    }

    pub fn max(&self) -> Duration {
        self.samples[self.samples.len() - 1]
    }

    /// Evaluations per second on one thread.
    pub fn per_second(&self) -> f64 {
        let total: Duration = self.samples.iter().sum();
        self.samples.len() as f64 / total.as_secs_f64().max(f64::MIN_POSITIVE)
    }
}

/// Measures every selected policy's hooks. `snapshot` is the file the
/// cluster was loaded from (admission reviews carry its Pod objects).
pub fn run(app: &App, config: &Config, snapshot: &Path, options: &Options) -> Result<Vec<Timings>> {
    if options.requests == 0 {
        bail!("--requests must be at least 1");
    }
    let set = app.extender.policies.current();
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
    let pending = crate::simulate::pending_pods(&app.cluster);
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
        timings.extend(scheduler(app, policy, &pods, options));
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
        let review = |i: usize| -> Result<()> {
            app.admission
                .review(endpoint, &policy.id, &reviews[i % reviews.len()])
                .map(drop)
                .map_err(|r| {
                    anyhow::anyhow!("the review was refused ({}): {}", r.status, r.message)
                })
        };
        for i in 0..options.warmup {
            review(i)?;
        }
        let ok_before = app.metrics.evaluations(&policy.id, "admission", "ok");
        let mut samples = Vec::with_capacity(options.requests);
        for i in 0..options.requests {
            let t = Instant::now();
            review(i)?;
            samples.push(t.elapsed());
        }
        let ok = app.metrics.evaluations(&policy.id, "admission", "ok") - ok_before;
        samples.sort();
        timings.push(Timings {
            policy: policy.id.clone(),
            hook: "review",
            pods: reviews.len(),
            failed: options.requests as u64 - ok,
            samples,
        });
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
/// through `pods`. Each filter's in-flight placement is dropped afterwards
/// so every request sees the same cluster.
fn scheduler(
    app: &App,
    policy: &Arc<ScheduledPolicy>,
    pods: &[&Pod],
    options: &Options,
) -> [Timings; 2] {
    let extender = Extender {
        policies: Arc::new(PolicyStore::new(PolicySet::assemble([
            LoadedPolicy::Scheduler(policy.clone()),
        ]))),
        cluster: app.cluster.clone(),
        metrics: app.metrics.clone(),
        binder: app.extender.binder.clone(),
    };
    let names: Vec<String> = app
        .cluster
        .all_nodes()
        .into_iter()
        .map(|n| n.name)
        .collect();
    let filter = |i: usize| {
        let pod = pods[i % pods.len()];
        extender.filter_pod(pod, CandidateNodes::Names(names.clone()));
        app.cluster.abandon_placement(&pod.uid);
    };
    let prioritize = |i: usize| {
        extender.prioritize_pod(pods[i % pods.len()], &CandidateNodes::Names(names.clone()));
    };
    let measure = |hook: &'static str, f: &dyn Fn(usize)| {
        for i in 0..options.warmup {
            f(i);
        }
        let ok_before = app.metrics.evaluations(&policy.id, "scheduler", "ok");
        let mut samples: Vec<Duration> = (0..options.requests)
            .map(|i| {
                let t = Instant::now();
                f(i);
                t.elapsed()
            })
            .collect();
        let ok = app.metrics.evaluations(&policy.id, "scheduler", "ok") - ok_before;
        samples.sort();
        Timings {
            policy: policy.id.clone(),
            hook,
            pods: pods.len(),
            failed: options.requests as u64 - ok,
            samples,
        }
    };
    [
        measure("filter", &filter),
        measure("prioritize", &prioritize),
    ]
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
        "apiVersion": crate::admission::wire::API_VERSION,
        "kind": crate::admission::wire::KIND,
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
