//! The configured policies: the one loader every policy version goes
//! through (at start, on hot swap, in the CLI), and choosing which policies
//! a request goes to.

pub mod source;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use arc_swap::ArcSwap;
use steward_cluster::ClusterQuery;
use steward_cluster::convert::requirement;
use steward_cluster::kinds::OptionalKind;
use steward_oci::RegistryClient;
use steward_runtime::{
    AdmissionPolicy, EvalError, Limits, PdReader, ReconcilePolicy, Runtime, SchedulerPolicy, World,
};
use steward_wit::{Candidates, FilterResult, NodeScore, Pod, SchedulerNeeds};

use crate::config::{
    AdmissionMode, Config, FailureMode, Hook, ModuleSource, PodSelectorConfig, PolicyConfig,
};
use crate::pd::{PdClient, PdEndpoint, PdReads, SecretAccess};
use source::{Module, fetch};

/// Which pods a policy sees.
#[derive(Debug, Clone, Default)]
pub struct PodSelector {
    scheduler_names: Vec<String>,
    namespaces: Vec<String>,
    labels: Vec<steward_wit::SelectorRequirement>,
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
            && steward_cluster::selector_matches(&pod.labels, &self.labels)
    }
}

/// What the extender asks of a scheduler policy. Steward loads Wasm
/// components; its benchmarks also link the same policies natively, to
/// price the sandbox on the very same request path.
pub trait Scheduler: Send + Sync {
    fn needs(&self) -> &SchedulerNeeds;
    fn filter(
        &self,
        cluster: ClusterQuery,
        pod: &Pod,
        nodes: &Candidates,
    ) -> Result<FilterResult, EvalError>;
    fn prioritize(
        &self,
        cluster: ClusterQuery,
        pod: &Pod,
        nodes: &Candidates,
    ) -> Result<Vec<NodeScore>, EvalError>;
}

impl Scheduler for SchedulerPolicy {
    fn needs(&self) -> &SchedulerNeeds {
        SchedulerPolicy::needs(self)
    }

    fn filter(
        &self,
        cluster: ClusterQuery,
        pod: &Pod,
        nodes: &Candidates,
    ) -> Result<FilterResult, EvalError> {
        SchedulerPolicy::filter(self, cluster, pod, nodes)
    }

    fn prioritize(
        &self,
        cluster: ClusterQuery,
        pod: &Pod,
        nodes: &Candidates,
    ) -> Result<Vec<NodeScore>, EvalError> {
        SchedulerPolicy::prioritize(self, cluster, pod, nodes)
    }
}

/// A scheduler policy with what the host needs to route to it.
pub struct ScheduledPolicy {
    pub id: String,
    pub digest: String,
    pub selector: PodSelector,
    pub failure_mode: FailureMode,
    pub policy: Box<dyn Scheduler>,
}

impl ScheduledPolicy {
    /// The kinds the policy cannot do its job without: its capacity
    /// sources'. It is degraded while one is not served.
    pub fn required_kinds(&self) -> BTreeSet<OptionalKind> {
        OptionalKind::of_sources(&self.policy.needs().capacity_sources)
    }

    /// Every optional kind it reads: the required ones, and tidb-operator's
    /// when it asks for them (used where served, never missed).
    pub fn kinds(&self) -> BTreeSet<OptionalKind> {
        let mut kinds = self.required_kinds();
        if self.policy.needs().tidb_operator {
            kinds.extend(OptionalKind::TIDB_OPERATOR);
        }
        kinds
    }
}

/// An admission policy with how its verdicts are applied.
pub struct AdmittingPolicy {
    pub id: String,
    pub digest: String,
    pub mode: AdmissionMode,
    /// May return a JSONPatch.
    pub mutate: bool,
    pub failure_mode: FailureMode,
    /// Where its actions reach PD.
    pub pd: PdEndpoint,
    pub policy: AdmissionPolicy,
}

/// A reconcile policy.
pub struct ReconcilingPolicy {
    pub id: String,
    pub digest: String,
    /// Where its actions reach PD.
    pub pd: PdEndpoint,
    pub policy: ReconcilePolicy,
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

/// One loaded policy of any hook: what a reload swaps in.
#[derive(Clone)]
pub enum LoadedPolicy {
    Scheduler(Arc<ScheduledPolicy>),
    Admission(Arc<AdmittingPolicy>),
    Reconcile(Arc<ReconcilingPolicy>),
}

/// Why a policy's module was refused, by pipeline step.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file or registry could not be read.
    #[error("{0:#}")]
    Fetch(anyhow::Error),
    /// What was read does not match its digest.
    #[error("{0:#}")]
    Digest(anyhow::Error),
    /// `signatures.publicKeys` is set and the version carries no valid
    /// signature by any of them (retried at every poll: it may be signed
    /// after it was pushed).
    #[error("{0:#}")]
    Signature(anyhow::Error),
    /// Not a component, does not compile, or wrong world or WIT version.
    #[error("{0:#}")]
    Component(anyhow::Error),
    /// Linking or `validate-settings` failed, or the settings were rejected.
    #[error("{0:#}")]
    Settings(anyhow::Error),
}

impl LoadError {
    /// The step that refused it (a metric label).
    pub fn kind(&self) -> &'static str {
        match self {
            LoadError::Fetch(_) => "fetch",
            LoadError::Digest(_) => "digest",
            LoadError::Signature(_) => "signature",
            LoadError::Component(_) => "component",
            LoadError::Settings(_) => "settings",
        }
    }
}

impl PolicySet {
    /// Loads every policy of the configuration with [`load_all`].
    pub async fn load(runtime: &Runtime, config: &Config) -> Result<PolicySet> {
        let client = RegistryClient::new(&config.registries.insecure);
        let loaded = load_all(runtime, &client, config).await?;
        Ok(PolicySet::assemble(loaded.into_iter().map(|(p, _)| p)))
    }

    /// The set of `policies`, kept in the given order within each hook.
    pub fn assemble(policies: impl IntoIterator<Item = LoadedPolicy>) -> PolicySet {
        let mut set = PolicySet::default();
        for p in policies {
            match p {
                LoadedPolicy::Scheduler(s) => set.scheduler.push(s),
                LoadedPolicy::Admission(a) => set.admission.push(a),
                LoadedPolicy::Reconcile(r) => set.reconcile.push(r),
            }
        }
        set
    }

    /// The optional kinds any of its policies needs: scheduler policies
    /// name theirs; reconcile and admission policies act on StatefulSets,
    /// which may be Advanced ones (read where served, never missed).
    pub fn kinds(&self) -> BTreeSet<OptionalKind> {
        let mut kinds: BTreeSet<OptionalKind> =
            self.scheduler.iter().flat_map(|p| p.kinds()).collect();
        if !self.reconcile.is_empty() || !self.admission.is_empty() {
            kinds.insert(OptionalKind::AdvancedStatefulSet);
        }
        kinds
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

impl LoadedPolicy {
    /// The digest of the component it runs.
    pub fn digest(&self) -> &str {
        match self {
            LoadedPolicy::Scheduler(s) => &s.digest,
            LoadedPolicy::Admission(a) => &a.digest,
            LoadedPolicy::Reconcile(r) => &r.digest,
        }
    }
}

/// Fetches, compiles and validates every configured policy, in order, with
/// the module each came from; any refusal fails the whole start.
pub async fn load_all(
    runtime: &Runtime,
    client: &RegistryClient,
    config: &Config,
) -> Result<Vec<(LoadedPolicy, Module)>> {
    let mut loaded = Vec::new();
    for p in &config.policies {
        let policy = load(runtime, client, config, p, &p.module)
            .await
            .with_context(|| format!("policy {} ({})", p.id, p.module))?;
        tracing::info!(policy = %p.id, source = %p.module, digest = %policy.1.digest, "policy loaded");
        loaded.push(policy);
    }
    Ok(loaded)
}

/// Fetches the module `source` names and builds it as policy `p`.
pub async fn load(
    runtime: &Runtime,
    client: &RegistryClient,
    config: &Config,
    p: &PolicyConfig,
    source: &ModuleSource,
) -> Result<(LoadedPolicy, Module), LoadError> {
    let module = fetch(client, config, source).await?;
    let secrets = SecretAccess::of_cluster(&config.cluster);
    let loaded = build_off_reactor(runtime, p, &module, &secrets).await?;
    Ok((loaded, module))
}

/// [`build`] on a blocking thread: compiling takes milliseconds to seconds.
pub async fn build_off_reactor(
    runtime: &Runtime,
    p: &PolicyConfig,
    module: &Module,
    secrets: &SecretAccess,
) -> Result<LoadedPolicy, LoadError> {
    let (runtime, p, wasm) = (runtime.clone(), p.clone(), module.wasm.clone());
    let secrets = secrets.clone();
    tokio::task::spawn_blocking(move || build(&runtime, &p, &wasm, &secrets))
        .await
        .unwrap_or_else(|e| {
            Err(LoadError::Component(anyhow::anyhow!(
                "loading panicked: {e}"
            )))
        })
}

/// Compiles (or loads precompiled) `wasm`, checks it implements the
/// configured hook's world, and has it validate its settings. `secrets`
/// reaches the TLS Secrets of its PD, if it names any.
pub fn build(
    runtime: &Runtime,
    p: &PolicyConfig,
    wasm: &[u8],
    secrets: &SecretAccess,
) -> Result<LoadedPolicy, LoadError> {
    let (component, world) = runtime.load(wasm).map_err(LoadError::Component)?;
    let expected = match p.hook {
        Hook::Scheduler => World::Scheduler,
        Hook::Admission => World::Admission,
        Hook::Reconcile => World::Reconcile,
    };
    if world != expected {
        return Err(LoadError::Component(anyhow::anyhow!(
            "the component implements the {} world, but the policy is configured with hook {}",
            world.name(),
            expected.name()
        )));
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
    let id = p.id.clone();
    let digest = steward_oci::digest(wasm);
    let loaded = match p.hook {
        Hook::Scheduler => {
            let policy = SchedulerPolicy::new(runtime, &p.id, &component, settings, limits)
                .map_err(LoadError::Settings)?;
            LoadedPolicy::Scheduler(Arc::new(ScheduledPolicy {
                id,
                digest,
                selector: PodSelector::from_config(&p.select),
                failure_mode: p.failure_mode,
                policy: Box::new(policy),
            }))
        }
        Hook::Admission => {
            let (pd, reads) = pd_route(p, secrets);
            let policy = AdmissionPolicy::new(runtime, &p.id, &component, settings, limits, reads)
                .map_err(LoadError::Settings)?;
            LoadedPolicy::Admission(Arc::new(AdmittingPolicy {
                id,
                digest,
                mode: p.mode,
                mutate: p.mutate,
                failure_mode: p.failure_mode,
                pd,
                policy,
            }))
        }
        Hook::Reconcile => {
            let (pd, reads) = pd_route(p, secrets);
            let policy = ReconcilePolicy::new(runtime, &p.id, &component, settings, limits, reads)
                .map_err(LoadError::Settings)?;
            LoadedPolicy::Reconcile(Arc::new(ReconcilingPolicy {
                id,
                digest,
                pd,
                policy,
            }))
        }
    };
    Ok(loaded)
}

/// Where policy `p`'s PD is, and the reads its guest makes there.
fn pd_route(p: &PolicyConfig, secrets: &SecretAccess) -> (PdEndpoint, Arc<dyn PdReader>) {
    let endpoint = PdEndpoint::from_config(&p.pd);
    let reads = PdReads {
        client: PdClient::new(secrets.clone()),
        endpoint: endpoint.clone(),
    };
    (endpoint, Arc::new(reads))
}

/// The live policy set; swapped atomically, read without locks.
pub struct PolicyStore {
    current: ArcSwap<PolicySet>,
    /// The optional kinds the current set needs, for the watches.
    kinds: tokio::sync::watch::Sender<BTreeSet<OptionalKind>>,
}

impl PolicyStore {
    pub fn new(set: PolicySet) -> PolicyStore {
        PolicyStore {
            kinds: tokio::sync::watch::Sender::new(set.kinds()),
            current: ArcSwap::from_pointee(set),
        }
    }

    /// The set to evaluate one request with; a swap does not affect it.
    pub fn current(&self) -> Arc<PolicySet> {
        self.current.load_full()
    }

    /// Serves `set` from now on; evaluations holding the old set finish on it.
    pub fn swap(&self, set: PolicySet) {
        let kinds = set.kinds();
        self.current.store(Arc::new(set));
        self.kinds.send_if_modified(|current| {
            let changed = *current != kinds;
            *current = kinds;
            changed
        });
    }

    /// The optional kinds the serving policies need, updated on each swap
    /// that changes them.
    pub fn wanted_kinds(&self) -> tokio::sync::watch::Receiver<BTreeSet<OptionalKind>> {
        self.kinds.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MatchExpression;

    fn pod(scheduler: &str, labels: &[(&str, &str)]) -> Pod {
        labels.iter().fold(
            steward_wit::build::pod("tidb-cluster", "basic-pd-0")
                .scheduled_by(scheduler)
                .pending(),
            |pod, (k, v)| pod.label(k, v),
        )
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
