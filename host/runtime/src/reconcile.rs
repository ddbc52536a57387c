//! Evaluating a `reconcile`-world policy: one fresh instance per reconcile.

use anyhow::Result;
use wasmtime::component::Component;

use std::sync::Arc;

use steward_wit::reconcile::ReconcilePre;
use steward_wit::{Plan, WorkloadState};

use crate::Runtime;
use crate::evaluator::Evaluator;
use crate::pd_access::PdReader;
use crate::sandbox::{ClusterImport, EvalError, GuestState, Limits};

/// A loaded, validated reconcile policy, ready to plan.
pub struct ReconcilePolicy {
    eval: Evaluator<ReconcilePre<GuestState>>,
}

impl ReconcilePolicy {
    /// Links the component and has it validate `settings`.
    pub fn new(
        runtime: &Runtime,
        id: &str,
        component: &Component,
        settings: String,
        limits: Limits,
        pd: Arc<dyn PdReader>,
    ) -> Result<ReconcilePolicy> {
        let eval: Evaluator<ReconcilePre<GuestState>> =
            Evaluator::new(runtime, id, component, settings, limits, Some(pd))?;
        eval.validate(|store, p, settings| p.call_validate_settings(store, settings))?;
        Ok(ReconcilePolicy { eval })
    }

    pub fn id(&self) -> &str {
        self.eval.id()
    }

    /// Runs `reconcile`. Call it on a blocking thread: PD reads block on it.
    pub fn reconcile(
        &self,
        cluster: impl ClusterImport,
        state: &WorkloadState,
    ) -> Result<Plan, EvalError> {
        self.eval
            .run(cluster, true, |store, p| {
                p.call_reconcile(store, &self.eval.settings, state)
            })?
            .map_err(EvalError::Guest)
    }
}
