//! Evaluating a `scheduler`-world policy: one fresh instance per call.

use std::sync::Arc;

use anyhow::{Context, Result, anyhow};
use wasmtime::component::Component;

use super::Runtime;
use super::bindings::scheduler::SchedulerPre;
use super::bindings::{Candidates, FilterResult, NodeScore, Pod, SchedulerNeeds};
use super::sandbox::{self, EvalError, Limits};
use crate::cluster::ClusterQuery;

/// A loaded, validated scheduler policy, ready to evaluate.
pub struct SchedulerPolicy {
    /// Keeps the engine and its epoch ticker alive: without the ticker no
    /// deadline would ever fire.
    runtime: Runtime,
    pre: SchedulerPre<sandbox::GuestState>,
    id: Arc<str>,
    settings: String,
    limits: Limits,
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
        let linker = sandbox::linker(runtime.engine()).map_err(anyhow::Error::from)?;
        let pre = linker
            .instantiate_pre(component)
            .map_err(anyhow::Error::from)
            .context("the component's imports cannot be satisfied")?;
        let pre = SchedulerPre::new(pre)
            .map_err(anyhow::Error::from)
            .context("the component does not match the scheduler world")?;
        let mut policy = SchedulerPolicy {
            runtime: runtime.clone(),
            pre,
            id: id.into(),
            settings,
            limits,
            needs: SchedulerNeeds {
                node_labels: Vec::new(),
            },
        };
        policy.needs = policy
            .run(ClusterQuery::empty(), |store, p| {
                p.call_validate_settings(store, &policy.settings)
            })
            .map_err(|e| anyhow!("validate-settings {e}"))?
            .map_err(|e| anyhow!("settings rejected: {e}"))?;
        Ok(policy)
    }

    pub fn needs(&self) -> &SchedulerNeeds {
        &self.needs
    }

    /// Runs `filter`; the result's indices are checked against `nodes`.
    pub fn filter(
        &self,
        cluster: ClusterQuery,
        pod: &Pod,
        nodes: &Candidates,
    ) -> Result<FilterResult, EvalError> {
        let result = self
            .run(cluster, |store, p| {
                p.call_filter(store, &self.settings, pod, nodes)
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
        cluster: ClusterQuery,
        pod: &Pod,
        nodes: &Candidates,
    ) -> Result<Vec<NodeScore>, EvalError> {
        let scores = self
            .run(cluster, |store, p| {
                p.call_prioritize(store, &self.settings, pod, nodes)
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

    fn run<T>(
        &self,
        cluster: ClusterQuery,
        call: impl FnOnce(
            &mut wasmtime::Store<sandbox::GuestState>,
            &super::bindings::scheduler::Scheduler,
        ) -> wasmtime::Result<T>,
    ) -> Result<T, EvalError> {
        let mut store =
            sandbox::store(self.runtime.engine(), self.id.clone(), cluster, self.limits);
        let result = self
            .pre
            .instantiate(&mut store)
            .and_then(|instance| call(&mut store, &instance));
        result.map_err(|e| sandbox::classify(e, &store, self.limits))
    }
}
