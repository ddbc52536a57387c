//! Evaluating a `reconcile`-world policy: one fresh instance per reconcile.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, anyhow};
use wasmtime::component::Component;

use super::bindings::reconcile::{Reconcile, ReconcilePre};
use super::bindings::{Plan, WorkloadState};
use super::sandbox::{self, EvalError, Limits};
use super::{PdAccess, Runtime, pd_access};
use crate::cluster::ClusterQuery;
use crate::pd::{PdClient, PdEndpoint};

/// A loaded, validated reconcile policy, ready to plan.
pub struct ReconcilePolicy {
    /// Keeps the engine and its epoch ticker alive.
    runtime: Runtime,
    pre: ReconcilePre<sandbox::GuestState>,
    id: Arc<str>,
    settings: String,
    limits: Limits,
    pd_client: PdClient,
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
        let mut linker = sandbox::linker(runtime.engine()).map_err(anyhow::Error::from)?;
        pd_access::add_to_linker(&mut linker).map_err(anyhow::Error::from)?;
        let pre = linker
            .instantiate_pre(component)
            .map_err(anyhow::Error::from)
            .context("the component's imports cannot be satisfied")?;
        let pre = ReconcilePre::new(pre)
            .map_err(anyhow::Error::from)
            .context("the component does not match the reconcile world")?;
        let policy = ReconcilePolicy {
            runtime: runtime.clone(),
            pre,
            id: id.into(),
            settings,
            limits,
            pd_client: PdClient::default(),
            pd,
        };
        policy
            .run(ClusterQuery::empty(), false, |store, p| {
                p.call_validate_settings(store, &policy.settings)
            })
            .map_err(|e| anyhow!("validate-settings {e}"))?
            .map_err(|e| anyhow!("settings rejected: {e}"))?;
        Ok(policy)
    }

    pub fn id(&self) -> &str {
        &self.id
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
        self.run(cluster, true, |store, p| {
            p.call_reconcile(store, &self.settings, state)
        })?
        .map_err(EvalError::Guest)
    }

    fn run<T>(
        &self,
        cluster: ClusterQuery,
        with_pd: bool,
        call: impl FnOnce(&mut wasmtime::Store<sandbox::GuestState>, &Reconcile) -> wasmtime::Result<T>,
    ) -> Result<T, EvalError> {
        let mut store =
            sandbox::store(self.runtime.engine(), self.id.clone(), cluster, self.limits);
        if with_pd {
            store.data_mut().pd = Some(PdAccess {
                client: self.pd_client.clone(),
                endpoint: self.pd.clone(),
                deadline_at: Instant::now() + self.limits.deadline,
            });
        }
        let result = self
            .pre
            .instantiate(&mut store)
            .and_then(|instance| call(&mut store, &instance));
        result.map_err(|e| sandbox::classify(e, &store, self.limits))
    }
}
