//! The configured policies: loading them, and choosing which ones a request
//! goes to.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use arc_swap::ArcSwap;

use crate::cluster::convert::requirement;
use crate::config::{AdmissionMode, Config, FailureMode, Hook, PodSelectorConfig, PolicyConfig};
use crate::pd::PdEndpoint;
use crate::runtime::{
    AdmissionPolicy, Limits, Pod, ReconcilePolicy, Runtime, SchedulerPolicy, World,
};

/// Which pods a policy sees.
#[derive(Debug, Clone, Default)]
pub struct PodSelector {
    scheduler_names: Vec<String>,
    namespaces: Vec<String>,
    labels: Vec<crate::runtime::SelectorRequirement>,
}

impl PodSelector {
    pub fn from_config(c: &PodSelectorConfig) -> PodSelector {
        let labels = c
            .match_labels
            .iter()
            .map(|(k, v)| requirement(k, "In", &Some(vec![v.clone()])))
            .chain(
                c.match_expressions
                    .iter()
                    .map(|e| requirement(&e.key, &e.operator, &Some(e.values.clone()))),
            )
            .collect();
        PodSelector {
            scheduler_names: c.scheduler_names.clone(),
            namespaces: c.namespaces.clone(),
            labels,
        }
    }

    pub fn matches(&self, pod: &Pod) -> bool {
        (self.scheduler_names.is_empty() || self.scheduler_names.contains(&pod.scheduler_name))
            && (self.namespaces.is_empty() || self.namespaces.contains(&pod.namespace))
            && crate::cluster::selector_matches(&pod.labels, &self.labels)
    }
}

/// A scheduler policy with what the host needs to route to it.
pub struct ScheduledPolicy {
    pub id: String,
    pub digest: String,
    pub selector: PodSelector,
    pub failure_mode: FailureMode,
    pub policy: SchedulerPolicy,
}

/// An admission policy with how its verdicts are applied.
pub struct AdmittingPolicy {
    pub id: String,
    pub digest: String,
    pub mode: AdmissionMode,
    /// May return a JSONPatch.
    pub mutate: bool,
    pub failure_mode: FailureMode,
    pub policy: AdmissionPolicy,
}

/// Every loaded policy, in configuration order (the order they run in).
#[derive(Default)]
pub struct PolicySet {
    pub scheduler: Vec<Arc<ScheduledPolicy>>,
    /// Admission policies, addressed by id from the webhook path.
    pub admission: Vec<Arc<AdmittingPolicy>>,
    /// Reconcile policies, named by the workloads that opt in.
    pub reconcile: Vec<Arc<ReconcilingPolicy>>,
}

/// A reconcile policy.
pub struct ReconcilingPolicy {
    pub id: String,
    pub digest: String,
    pub policy: ReconcilePolicy,
}

impl PolicySet {
    /// Loads and validates every policy of the configuration.
    pub fn load(runtime: &Runtime, config: &Config) -> Result<PolicySet> {
        let mut set = PolicySet::default();
        for p in &config.policies {
            let context = || format!("policy {} ({})", p.id, config.resolve(&p.module).display());
            if p.hook == Hook::Reconcile {
                let loaded = load_reconcile_policy(runtime, config, p).with_context(context)?;
                tracing::info!(policy = %loaded.id, digest = %loaded.digest, "policy loaded");
                set.reconcile.push(Arc::new(loaded));
                continue;
            }
            if p.hook == Hook::Admission {
                let loaded = load_admission_policy(runtime, config, p).with_context(context)?;
                tracing::info!(policy = %loaded.id, digest = %loaded.digest, "policy loaded");
                set.admission.push(Arc::new(loaded));
                continue;
            }
            let loaded = load_scheduler_policy(runtime, config, p).with_context(context)?;
            tracing::info!(policy = %loaded.id, digest = %loaded.digest, "policy loaded");
            set.scheduler.push(Arc::new(loaded));
        }
        Ok(set)
    }

    /// The admission policy with this id.
    pub fn admission(&self, id: &str) -> Option<&Arc<AdmittingPolicy>> {
        self.admission.iter().find(|p| p.id == id)
    }

    /// The reconcile policy with this id.
    pub fn reconcile(&self, id: &str) -> Option<&Arc<ReconcilingPolicy>> {
        self.reconcile.iter().find(|p| p.id == id)
    }

    /// The scheduler policies that select `pod`, in order.
    pub fn scheduler_for<'a>(
        &'a self,
        pod: &'a Pod,
    ) -> impl Iterator<Item = &'a Arc<ScheduledPolicy>> {
        self.scheduler
            .iter()
            .filter(move |p| p.selector.matches(pod))
    }
}

/// The component of a policy, checked to implement `world`, with its
/// digest, settings and limits.
struct Loaded {
    component: wasmtime::component::Component,
    digest: String,
    settings: String,
    limits: Limits,
}

fn load_component(
    runtime: &Runtime,
    config: &Config,
    p: &PolicyConfig,
    world: World,
) -> Result<Loaded> {
    let path = config.resolve(&p.module);
    let wasm = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let (component, found) = runtime.load(&wasm)?;
    if found != world {
        bail!(
            "the component implements the {} world, but the policy is configured with hook {}",
            found.name(),
            world.name()
        );
    }
    let settings = if p.settings.is_null() {
        String::new()
    } else {
        p.settings.to_string()
    };
    let limits = Limits {
        deadline: Duration::from_millis(p.deadline_ms),
        memory_bytes: (p.memory_mib << 20) as usize,
    };
    Ok(Loaded {
        component,
        digest: crate::runtime::digest(&wasm),
        settings,
        limits,
    })
}

fn load_admission_policy(
    runtime: &Runtime,
    config: &Config,
    p: &PolicyConfig,
) -> Result<AdmittingPolicy> {
    let l = load_component(runtime, config, p, World::Admission)?;
    let pd = PdEndpoint::from_config(&p.pd);
    let policy = AdmissionPolicy::new(runtime, &p.id, &l.component, l.settings, l.limits, pd)?;
    Ok(AdmittingPolicy {
        id: p.id.clone(),
        digest: l.digest,
        mode: p.mode,
        mutate: p.mutate,
        failure_mode: p.failure_mode,
        policy,
    })
}

fn load_reconcile_policy(
    runtime: &Runtime,
    config: &Config,
    p: &PolicyConfig,
) -> Result<ReconcilingPolicy> {
    let l = load_component(runtime, config, p, World::Reconcile)?;
    let pd = PdEndpoint::from_config(&p.pd);
    let policy = ReconcilePolicy::new(runtime, &p.id, &l.component, l.settings, l.limits, pd)?;
    Ok(ReconcilingPolicy {
        id: p.id.clone(),
        digest: l.digest,
        policy,
    })
}

fn load_scheduler_policy(
    runtime: &Runtime,
    config: &Config,
    p: &PolicyConfig,
) -> Result<ScheduledPolicy> {
    if p.hook != Hook::Scheduler {
        bail!(
            "hook {:?} is not served yet; only scheduler, admission and reconcile policies are",
            p.hook
        );
    }
    let l = load_component(runtime, config, p, World::Scheduler)?;
    let policy = SchedulerPolicy::new(runtime, &p.id, &l.component, l.settings, l.limits)?;
    Ok(ScheduledPolicy {
        id: p.id.clone(),
        digest: l.digest,
        selector: PodSelector::from_config(&p.select),
        failure_mode: p.failure_mode,
        policy,
    })
}

/// The live policy set; swapped atomically, read without locks.
pub struct PolicyStore {
    current: ArcSwap<PolicySet>,
}

impl PolicyStore {
    pub fn new(set: PolicySet) -> PolicyStore {
        PolicyStore {
            current: ArcSwap::from_pointee(set),
        }
    }

    /// The set to evaluate one request with; a swap does not affect it.
    pub fn current(&self) -> Arc<PolicySet> {
        self.current.load_full()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MatchExpression;

    fn pod(scheduler: &str, labels: &[(&str, &str)]) -> Pod {
        Pod {
            namespace: "tidb-cluster".into(),
            name: "basic-pd-0".into(),
            uid: "u".into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            annotations: Vec::new(),
            owner: None,
            node_name: None,
            scheduler_name: scheduler.into(),
            phase: "Pending".into(),
            ready: false,
            deleting: false,
            claims: Vec::new(),
            in_flight: false,
        }
    }

    #[test]
    fn selectors_match_scheduler_names_namespaces_labels_and_expressions() {
        let config = PodSelectorConfig {
            scheduler_names: vec!["steward-scheduler".into()],
            namespaces: vec!["tidb-cluster".into()],
            match_labels: [(
                "app.kubernetes.io/managed-by".into(),
                "tidb-operator".into(),
            )]
            .into(),
            match_expressions: vec![
                MatchExpression {
                    key: "app.kubernetes.io/component".into(),
                    operator: "NotIn".into(),
                    values: vec!["tidb".into()],
                },
                MatchExpression {
                    key: "app.kubernetes.io/instance".into(),
                    operator: "Exists".into(),
                    values: Vec::new(),
                },
            ],
        };
        let s = PodSelector::from_config(&config);
        let managed = [
            ("app.kubernetes.io/managed-by", "tidb-operator"),
            ("app.kubernetes.io/instance", "basic"),
            ("app.kubernetes.io/component", "pd"),
        ];
        assert!(s.matches(&pod("steward-scheduler", &managed)));
        assert!(!s.matches(&pod("default-scheduler", &managed)));
        assert!(
            !s.matches(&pod(
                "steward-scheduler",
                &managed[..2]
                    .iter()
                    .chain(&[("app.kubernetes.io/component", "tidb")])
                    .copied()
                    .collect::<Vec<_>>()
            ))
        );
        assert!(!s.matches(&pod("steward-scheduler", &managed[1..])));
        assert!(!s.matches(&pod("steward-scheduler", &[managed[0], managed[2]])));
        assert!(PodSelector::from_config(&PodSelectorConfig::default()).matches(&pod("any", &[])));
    }
}
