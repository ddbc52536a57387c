//! Reconcile hooks (SPEC §3.3): for each StatefulSet that opts in, build
//! its state, ask its policies for a plan and perform the plan's actions in
//! order. A failed plan or action is recorded as an Event and retried with
//! exponential backoff. Everything a policy remembers lives in the
//! StatefulSet's annotations (written by `annotate` actions), so a new host
//! resumes from the cluster alone; the only memory here is the backoff.
//!
//! [`Reconciler::reconcile`] is one step, driven by the kube-runtime
//! controller in [`controller`] (only while this replica holds the
//! [`lease`]) or directly by tests.

pub mod controller;
pub mod lease;
pub mod state;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::actions::{self, ActionContext, Executor, Subject, WorkloadRef};
use crate::budget::{Budget, RECONCILE_EVALUATIONS};
use crate::config::ReconcileConfig;
use crate::metrics::Metrics;
use crate::policy::{PolicyStore, ReconcilingPolicy};
use steward_cluster::{ClusterCache, ClusterQuery, tidb};
use steward_wit::{Action, EventType, Plan, Workload};

/// Label a StatefulSet opts in with; its value names the policy.
pub const OPT_IN_LABEL: &str = "steward.io/reconcile";
/// Annotation naming the policies (comma-separated, run in that order);
/// takes precedence over the label's value.
pub const OPT_IN_ANNOTATION: &str = "steward.io/reconcile";

/// Performs plan actions. The [`Executor`] does it against the API server
/// and PD; tests back it with an in-memory cluster.
pub trait Effects: Send + Sync + 'static {
    fn perform(
        &self,
        ctx: &ActionContext<'_>,
        action: &Action,
    ) -> impl Future<Output = Result<(), String>> + Send;
}

impl Effects for Executor {
    async fn perform(&self, ctx: &ActionContext<'_>, action: &Action) -> Result<(), String> {
        Executor::perform(self, ctx, action).await
    }
}

/// Wall time as Unix milliseconds; tests run a faster clock.
pub trait Clock: Send + Sync + 'static {
    fn now_ms(&self) -> i64;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64)
    }
}

/// What one reconcile did.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Actions performed (requeue-after not counted).
    pub performed: Vec<Action>,
    /// Reconcile again after this long (None: on the next change).
    pub requeue_after: Option<Duration>,
    /// Why the reconcile stopped early.
    pub error: Option<String>,
}

/// One reconcile step over the cluster cache.
pub struct Reconciler<E> {
    pub policies: Arc<PolicyStore>,
    pub cluster: Arc<ClusterCache>,
    pub effects: E,
    pub clock: Arc<dyn Clock>,
    pub metrics: Arc<Metrics>,
    backoff_base: Duration,
    backoff_max: Duration,
    budget: Budget,
    /// Failed reconciles in a row, per (workload kind, namespace, name).
    failures: Mutex<HashMap<(String, String, String), u32>>,
}

impl<E: Effects> Reconciler<E> {
    pub fn new(
        policies: Arc<PolicyStore>,
        cluster: Arc<ClusterCache>,
        effects: E,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
        config: &ReconcileConfig,
    ) -> Reconciler<E> {
        Reconciler {
            policies,
            cluster,
            effects,
            clock,
            metrics,
            backoff_base: Duration::from_millis(config.backoff_base_ms),
            backoff_max: Duration::from_millis(config.backoff_max_ms),
            budget: Budget::new(RECONCILE_EVALUATIONS),
            failures: Mutex::default(),
        }
    }

    /// Reconciles StatefulSet `namespace/name` of workload kind `kind`
    /// (`StatefulSet`, or `AdvancedStatefulSet` for `apps.pingcap.com/v1`)
    /// once.
    pub async fn reconcile(&self, kind: &str, namespace: &str, name: &str) -> Report {
        let query = ClusterQuery::new(self.cluster.clone());
        let key = (kind.to_string(), namespace.to_string(), name.to_string());
        let Some(workload) = query.get_workload(kind, namespace, name) else {
            self.failures.lock().remove(&key);
            return Report::default();
        };
        let resource = tidb::statefulset_resource(kind);
        let subject = Subject {
            api_version: resource.api_version,
            kind: resource.kind,
            namespace: namespace.into(),
            name: name.into(),
            uid: workload.uid.clone(),
        };
        let target = WorkloadRef { kind, name };
        let mut report = Report::default();
        let set = self.policies.current();
        for id in policy_ids(&workload) {
            let Some(policy) = set.reconcile(&id).cloned() else {
                let message = format!(
                    "{} names reconcile policy `{id}`, which is not configured; fix its \
                     {OPT_IN_LABEL} label or annotation",
                    target.text(namespace)
                );
                return self
                    .fail(report, (&subject, &target), None, "UnknownPolicy", message)
                    .await;
            };
            let plan = match self.plan(&policy, &query, &target, namespace).await {
                Ok(plan) => plan,
                Err(e) => {
                    let message = format!("policy {id} could not plan: {e}");
                    return self
                        .fail(
                            report,
                            (&subject, &target),
                            Some(&policy),
                            "ReconcileFailed",
                            message,
                        )
                        .await;
                }
            };
            let ctx = ActionContext {
                namespace,
                workload: Some(target),
                subject: &subject,
                pd: &policy.pd,
            };
            for action in plan.actions {
                if let Action::RequeueAfter(ms) = action {
                    let after = Duration::from_millis(ms.into());
                    report.requeue_after =
                        Some(report.requeue_after.map_or(after, |r| r.min(after)));
                    continue;
                }
                let kind = actions::name(&action);
                let what = actions::describe(&action);
                match self.effects.perform(&ctx, &action).await {
                    Ok(()) => {
                        self.metrics.action(&id, kind, "ok");
                        tracing::info!(policy = %id, statefulset = %format!("{namespace}/{name}"), "{what}");
                        report.performed.push(action);
                    }
                    Err(e) => {
                        self.metrics.action(&id, kind, "error");
                        let message = format!("policy {id}: {what} failed: {e}");
                        return self
                            .fail(
                                report,
                                (&subject, &target),
                                Some(&policy),
                                "ActionFailed",
                                message,
                            )
                            .await;
                    }
                }
            }
        }
        self.failures.lock().remove(&key);
        report
    }

    /// Runs the policy on a blocking thread (its PD reads block).
    async fn plan(
        &self,
        policy: &Arc<ReconcilingPolicy>,
        query: &ClusterQuery,
        target: &WorkloadRef<'_>,
        namespace: &str,
    ) -> Result<Plan, String> {
        let workload = query
            .get_workload(target.kind, namespace, target.name)
            .ok_or_else(|| format!("{} is gone", target.text(namespace)))?;
        let state = state::observe(query, workload, self.clock.now_ms());
        let policy = policy.clone();
        let query = query.clone();
        let started = std::time::Instant::now();
        let result = self
            .budget
            .run(move || policy.policy.reconcile(query, &state).map(|p| (p, policy)))
            .await
            .map_err(|e| format!("the evaluation thread failed: {e}"))?;
        match result {
            Ok((plan, policy)) => {
                self.metrics
                    .evaluation(&policy.id, "reconcile", "ok", started.elapsed());
                Ok(plan)
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// Records a Warning Event with `message` and schedules the retry.
    async fn fail(
        &self,
        mut report: Report,
        (subject, target): (&Subject, &WorkloadRef<'_>),
        policy: Option<&Arc<ReconcilingPolicy>>,
        reason: &str,
        message: String,
    ) -> Report {
        let id = policy.map_or("-", |p| p.id.as_str());
        tracing::warn!(policy = %id, statefulset = %format!("{}/{}", subject.namespace, subject.name), "{message}");
        let event = Action::EmitEvent((EventType::Warning, reason.into(), message.clone()));
        let pd = crate::pd::PdEndpoint::from_config(&Default::default());
        let ctx = ActionContext {
            namespace: &subject.namespace,
            workload: Some(*target),
            subject,
            pd: policy.map_or(&pd, |p| &p.pd),
        };
        match self.effects.perform(&ctx, &event).await {
            Ok(()) => report.performed.push(event),
            Err(e) => tracing::warn!("{e}"),
        }
        let key = (
            target.kind.to_string(),
            subject.namespace.clone(),
            target.name.to_string(),
        );
        let failures = {
            let mut map = self.failures.lock();
            let n = map.entry(key).or_default();
            *n = n.saturating_add(1);
            *n
        };
        report.requeue_after = Some(self.backoff(failures));
        report.error = Some(message);
        report
    }

    /// Base × 2^(failures-1), capped.
    fn backoff(&self, failures: u32) -> Duration {
        let factor = 1u32 << failures.saturating_sub(1).min(20);
        (self.backoff_base * factor).min(self.backoff_max)
    }
}

/// The policies a StatefulSet names, in order: its annotation's list, or
/// its label's value.
pub fn policy_ids(workload: &Workload) -> Vec<String> {
    let find = |map: &[(String, String)], key: &str| {
        map.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
    };
    let names = find(&workload.annotations, OPT_IN_ANNOTATION)
        .or_else(|| find(&workload.labels, OPT_IN_LABEL))
        .unwrap_or_default();
    names
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::state::tests::workload;
    use super::*;

    #[test]
    fn the_annotation_list_wins_over_the_label() {
        let mut w = workload();
        assert!(policy_ids(&w).is_empty());
        w.labels.push((OPT_IN_LABEL.into(), "upgrade-gate".into()));
        assert_eq!(policy_ids(&w), ["upgrade-gate"]);
        w.annotations
            .push((OPT_IN_ANNOTATION.into(), "failover, upgrade-gate".into()));
        assert_eq!(policy_ids(&w), ["failover", "upgrade-gate"]);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let config = ReconcileConfig {
            backoff_base_ms: 1_000,
            backoff_max_ms: 5_000,
            ..ReconcileConfig::default()
        };
        let r = Reconciler::new(
            Arc::new(PolicyStore::new(Default::default())),
            Arc::new(ClusterCache::default()),
            Executor::new(
                &steward_cluster::Backend::Snapshot,
                Arc::new(ClusterCache::default()),
            ),
            Arc::new(SystemClock),
            Arc::new(Metrics::default()),
            &config,
        );
        let delays: Vec<u64> = (1..=5).map(|n| r.backoff(n).as_millis() as u64).collect();
        assert_eq!(delays, [1_000, 2_000, 4_000, 5_000, 5_000]);
    }
}
