//! Evaluating a `scheduler`-world policy: one fresh instance per call.

use anyhow::Result;
use wasmtime::component::Component;

use steward_wit::scheduler::SchedulerPre;
use steward_wit::{Candidates, FilterResult, NodeScore, Pod, SchedulerNeeds};

use crate::Runtime;
use crate::evaluator::Evaluator;
use crate::sandbox::{ClusterImport, EvalError, GuestState, Limits};

/// A loaded, validated scheduler policy, ready to evaluate.
pub struct SchedulerPolicy {
    eval: Evaluator<SchedulerPre<GuestState>>,
    needs: SchedulerNeeds,
}

impl SchedulerPolicy {
    /// Links the component and has it validate `settings`.
    pub fn new(
        runtime: &Runtime,
        id: &str,
        component: &Component,
        settings: String,
        limits: Limits,
    ) -> Result<SchedulerPolicy> {
        let eval: Evaluator<SchedulerPre<GuestState>> =
            Evaluator::new(runtime, id, component, settings, limits, None)?;
        let needs =
            eval.validate(|store, p, settings| p.call_validate_settings(store, settings))?;
        Ok(SchedulerPolicy { eval, needs })
    }

    pub fn needs(&self) -> &SchedulerNeeds {
        &self.needs
    }

    /// Runs `filter`; the result's indices are checked against `nodes`.
    pub fn filter(
        &self,
        cluster: impl ClusterImport,
        pod: &Pod,
        nodes: &Candidates,
    ) -> Result<FilterResult, EvalError> {
        let result = self
            .eval
            .run(cluster, false, |store, p| {
                p.call_filter(store, &self.eval.settings, pod, nodes)
            })?
            .map_err(EvalError::Guest)?;
        for r in &result.rejections {
            if r.node as usize >= nodes.nodes.len() || r.reason as usize >= result.reasons.len() {
                return Err(EvalError::Invalid(format!(
                    "rejection of node #{} with reason #{} is out of range ({} nodes, {} reasons)",
                    r.node,
                    r.reason,
                    nodes.nodes.len(),
                    result.reasons.len()
                )));
            }
        }
        Ok(result)
    }

    /// Runs `prioritize`; scores are checked to be 0..=10 and in range.
    pub fn prioritize(
        &self,
        cluster: impl ClusterImport,
        pod: &Pod,
        nodes: &Candidates,
    ) -> Result<Vec<NodeScore>, EvalError> {
        let scores = self
            .eval
            .run(cluster, false, |store, p| {
                p.call_prioritize(store, &self.eval.settings, pod, nodes)
            })?
            .map_err(EvalError::Guest)?;
        if let Some(bad) = scores
            .iter()
            .find(|s| s.node as usize >= nodes.nodes.len() || s.score > 10)
        {
            return Err(EvalError::Invalid(format!(
                "score {} for node #{} is outside 0..=10 or the candidate list",
                bad.score, bad.node
            )));
        }
        Ok(scores)
    }
}
