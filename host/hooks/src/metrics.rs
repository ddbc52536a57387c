//! Prometheus metrics: evaluations by policy and outcome, their latency,
//! traps and deadline hits, requests per endpoint, and which version of
//! each policy serves and how its reloads went.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EvaluationLabels {
    pub policy: String,
    pub hook: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabels {
    pub policy: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AdmissionVerdictLabels {
    pub policy: String,
    pub mode: String,
    pub verdict: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    pub policy: String,
    pub action: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub endpoint: String,
    pub code: u16,
}

/// The version of a policy that serves.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyInfoLabels {
    pub policy: String,
    pub source: String,
    pub digest: String,
    pub version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    pub policy: String,
    /// `ok`, or the step that refused the new version.
    pub outcome: String,
}

pub struct Metrics {
    registry: Registry,
    evaluations: Family<EvaluationLabels, Counter>,
    latency: Family<PolicyLabels, Histogram>,
    traps: Family<PolicyLabels, Counter>,
    deadlines: Family<PolicyLabels, Counter>,
    requests: Family<RequestLabels, Counter>,
    request_latency: Family<EndpointLabels, Histogram>,
    pass_through: Counter,
    filter_waits: Counter,
    filter_wait_timeouts: Counter,
    admission_verdicts: Family<AdmissionVerdictLabels, Counter>,
    actions: Family<ActionLabels, Counter>,
    policy_info: Family<PolicyInfoLabels, Gauge>,
    reloads: Family<ReloadLabels, Counter>,
    /// The info labels currently set per policy, to clear on a swap.
    serving: parking_lot::Mutex<std::collections::HashMap<String, PolicyInfoLabels>>,
}

/// 10 µs .. ~10 s.
fn latency_buckets() -> Histogram {
    Histogram::new(exponential_buckets(1e-5, 2.0, 21))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("steward");
        let evaluations = Family::<EvaluationLabels, Counter>::default();
        let latency = Family::<PolicyLabels, Histogram>::new_with_constructor(latency_buckets);
        let request_latency =
            Family::<EndpointLabels, Histogram>::new_with_constructor(latency_buckets);
        let traps = Family::<PolicyLabels, Counter>::default();
        let deadlines = Family::<PolicyLabels, Counter>::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let pass_through = Counter::default();
        registry.register(
            "evaluations",
            "Policy evaluations by policy, hook and outcome",
            evaluations.clone(),
        );
        registry.register(
            "evaluation_duration_seconds",
            "Time one policy evaluation took, instantiation included",
            latency.clone(),
        );
        registry.register("traps", "Evaluations that trapped", traps.clone());
        registry.register(
            "deadline_exceeded",
            "Evaluations stopped at their deadline",
            deadlines.clone(),
        );
        registry.register(
            "requests",
            "Hook requests by endpoint and HTTP status",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from a hook request's arrival to its answer, by endpoint (what the caller waits, less the network)",
            request_latency.clone(),
        );
        registry.register(
            "pass_through",
            "Scheduler requests for pods no policy selects",
            pass_through.clone(),
        );
        let filter_waits = Counter::default();
        registry.register(
            "filter_waits",
            "Filters that refused nodes because of pods in flight and waited for them to be bound",
            filter_waits.clone(),
        );
        let filter_wait_timeouts = Counter::default();
        registry.register(
            "filter_wait_timeouts",
            "Filter waits that ended with pods still in flight (the pod is requeued once they \
             settle)",
            filter_wait_timeouts.clone(),
        );
        let admission_verdicts = Family::<AdmissionVerdictLabels, Counter>::default();
        registry.register(
            "admission_verdicts",
            "Admission verdicts by policy, mode and verdict (in monitor mode: what the policy \
             would have done)",
            admission_verdicts.clone(),
        );
        let actions = Family::<ActionLabels, Counter>::default();
        registry.register(
            "actions",
            "Side effects performed for policies, by policy, action and outcome",
            actions.clone(),
        );
        let policy_info = Family::<PolicyInfoLabels, Gauge>::default();
        let reloads = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "policy_info",
            "The version of each policy that serves (value 1): source, component digest, version",
            policy_info.clone(),
        );
        registry.register(
            "policy_reloads",
            "Attempts to load a new version of a policy, by outcome (ok or the refusing step)",
            reloads.clone(),
        );
        Metrics {
            registry,
            admission_verdicts,
            actions,
            policy_info,
            reloads,
            serving: Default::default(),
            evaluations,
            latency,
            traps,
            deadlines,
            requests,
            request_latency,
            pass_through,
            filter_waits,
            filter_wait_timeouts,
        }
    }
}

impl Metrics {
    /// Records one evaluation; `outcome` is `ok` or an error kind.
    pub fn evaluation(&self, policy: &str, hook: &str, outcome: &str, took: Duration) {
        self.evaluations
            .get_or_create(&EvaluationLabels {
                policy: policy.into(),
                hook: hook.into(),
                outcome: outcome.into(),
            })
            .inc();
        let p = PolicyLabels {
            policy: policy.into(),
        };
        self.latency.get_or_create(&p).observe(took.as_secs_f64());
        match outcome {
            "trap" | "memory" => {
                self.traps.get_or_create(&p).inc();
            }
            "deadline" => {
                self.deadlines.get_or_create(&p).inc();
            }
            _ => {}
        }
    }

    /// How many evaluations of `policy` at `hook` ended with `outcome`.
    pub fn evaluations(&self, policy: &str, hook: &str, outcome: &str) -> u64 {
        self.evaluations
            .get_or_create(&EvaluationLabels {
                policy: policy.into(),
                hook: hook.into(),
                outcome: outcome.into(),
            })
            .get()
    }

    /// One answered hook request, `took` from its arrival.
    pub fn request(&self, endpoint: &str, code: u16, took: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                endpoint: endpoint.into(),
                code,
            })
            .inc();
        self.request_latency
            .get_or_create(&EndpointLabels {
                endpoint: endpoint.into(),
            })
            .observe(took.as_secs_f64());
    }

    /// `verdict`: allowed, denied, patched, error-allowed or error-denied.
    pub fn admission_verdict(&self, policy: &str, mode: &str, verdict: &str) {
        self.admission_verdicts
            .get_or_create(&AdmissionVerdictLabels {
                policy: policy.into(),
                mode: mode.into(),
                verdict: verdict.into(),
            })
            .inc();
    }

    /// `outcome`: ok or error.
    pub fn admission_action(&self, policy: &str, action: &str, outcome: &str) {
        self.action(policy, action, outcome);
    }

    /// One side effect performed for a policy; `outcome`: ok or error.
    pub fn action(&self, policy: &str, action: &str, outcome: &str) {
        self.actions
            .get_or_create(&ActionLabels {
                policy: policy.into(),
                action: action.into(),
                outcome: outcome.into(),
            })
            .inc();
    }

    pub fn pass_through(&self) {
        self.pass_through.inc();
    }

    /// A filter starts waiting for pods in flight.
    pub fn filter_wait(&self) {
        self.filter_waits.inc();
    }

    /// A filter answered with pods it waited for still in flight.
    pub fn filter_wait_timeout(&self) {
        self.filter_wait_timeouts.inc();
    }

    /// Records the version of `info.policy` that serves now.
    pub fn policy_serving(&self, info: PolicyInfoLabels) {
        let mut serving = self.serving.lock();
        if let Some(old) = serving.insert(info.policy.clone(), info.clone()) {
            self.policy_info.remove(&old);
        }
        self.policy_info.get_or_create(&info).set(1);
    }

    /// Forgets a policy removed from the configuration.
    pub fn policy_removed(&self, policy: &str) {
        if let Some(old) = self.serving.lock().remove(policy) {
            self.policy_info.remove(&old);
        }
    }

    /// Counts one reload attempt of `policy`.
    pub fn reload(&self, policy: &str, outcome: &str) {
        self.reloads
            .get_or_create(&ReloadLabels {
                policy: policy.into(),
                outcome: outcome.into(),
            })
            .inc();
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}
