//! Evaluating a `reconcile`-world policy: one fresh instance per reconcile.

use anyhow::Result;
use wasmtime::component::Component;

use super::Runtime;
use super::bindings::reconcile::ReconcilePre;
use super::bindings::{Plan, WorkloadState};
use super::evaluator::Evaluator;
use super::sandbox::{EvalError, GuestState, Limits};
use crate::cluster::ClusterQuery;
use crate::pd::PdEndpoint;

/// A loaded, validated reconcile policy, ready to plan.
pub struct ReconcilePolicy {
    eval: Evaluator<ReconcilePre<GuestState>>,
    pd: PdEndpoint,
}

impl ReconcilePolicy {
    /// Links the component and has it validate `settings`.
    pub fn new(
        runtime: &Runtime,
        id: &str,
        component: &Component,
        settings: String,
        limits: Limits,
        pd: PdEndpoint,
    ) -> Result<ReconcilePolicy> {
        let eval: Evaluator<ReconcilePre<GuestState>> =
            Evaluator::new(runtime, id, component, settings, limits, Some(pd.clone()))?;
        eval.validate(|store, p, settings| p.call_validate_settings(store, settings))?;
        Ok(ReconcilePolicy { eval, pd })
    }

    pub fn id(&self) -> &str {
        self.eval.id()
    }

    pub fn pd_endpoint(&self) -> &PdEndpoint {
        &self.pd
    }

    /// Runs `reconcile`. Call it on a blocking thread: PD reads block on it.
    pub fn reconcile(
        &self,
        cluster: ClusterQuery,
        state: &WorkloadState,
    ) -> Result<Plan, EvalError> {
        self.eval
            .run(cluster, true, |store, p| {
                p.call_reconcile(store, &self.eval.settings, state)
            })?
            .map_err(EvalError::Guest)
    }
}
