//! What every policy kind shares: linking a component against the sandbox's
//! imports, and one fresh, limited instance per evaluation.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use wasmtime::Store;
use wasmtime::component::{Component, InstancePre};

use super::bindings::admission::{Admission, AdmissionPre};
use super::bindings::reconcile::{Reconcile, ReconcilePre};
use super::bindings::scheduler::{Scheduler, SchedulerPre};
use super::sandbox::{self, EvalError, GuestState, Limits};
use super::{PdAccess, Runtime, pd_access};
use crate::cluster::ClusterQuery;
use crate::pd::{PdClient, PdEndpoint};

/// A world's pre-linked component, as `bindgen!` generates it.
pub(super) trait WorldPre: Sized {
    type Instance;
    /// The world's name, for errors.
    const WORLD: &'static str;
    fn from_instance_pre(pre: InstancePre<GuestState>) -> wasmtime::Result<Self>;
    fn instantiate(&self, store: &mut Store<GuestState>) -> wasmtime::Result<Self::Instance>;
}

macro_rules! world_pre {
    ($pre:ident, $instance:ty, $world:literal) => {
        impl WorldPre for $pre<GuestState> {
            type Instance = $instance;
            const WORLD: &'static str = $world;
            fn from_instance_pre(pre: InstancePre<GuestState>) -> wasmtime::Result<Self> {
                $pre::new(pre)
            }
            fn instantiate(&self, store: &mut Store<GuestState>) -> wasmtime::Result<$instance> {
                $pre::instantiate(self, store)
            }
        }
    };
}

world_pre!(SchedulerPre, Scheduler, "scheduler");
world_pre!(AdmissionPre, Admission, "admission");
world_pre!(ReconcilePre, Reconcile, "reconcile");

/// How a policy that reads PD reaches it.
struct PdRoute {
    client: PdClient,
    endpoint: PdEndpoint,
}

/// A linked policy component with its settings, limits and PD route.
pub(super) struct Evaluator<P> {
    /// Keeps the engine and its epoch ticker alive: without the ticker no
    /// deadline would ever fire.
    runtime: Runtime,
    pre: P,
    id: Arc<str>,
    pub(super) settings: String,
    limits: Limits,
    pd: Option<PdRoute>,
}

impl<P: WorldPre> Evaluator<P> {
    /// Links `component` (with the `pd` import when `pd` is given).
    pub(super) fn new(
        runtime: &Runtime,
        id: &str,
        component: &Component,
        settings: String,
        limits: Limits,
        pd: Option<PdEndpoint>,
    ) -> Result<Evaluator<P>> {
        let mut linker = sandbox::linker(runtime.engine()).map_err(anyhow::Error::from)?;
        if pd.is_some() {
            pd_access::add_to_linker(&mut linker).map_err(anyhow::Error::from)?;
        }
        let pre = linker
            .instantiate_pre(component)
            .map_err(anyhow::Error::from)
            .context("the component's imports cannot be satisfied")?;
        let pre = P::from_instance_pre(pre)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("the component does not match the {} world", P::WORLD))?;
        Ok(Evaluator {
            runtime: runtime.clone(),
            pre,
            id: id.into(),
            settings,
            limits,
            pd: pd.map(|endpoint| PdRoute {
                client: PdClient::default(),
                endpoint,
            }),
        })
    }

    /// Has the guest check its settings (no PD, no cluster): what each
    /// world returns for valid settings, or the reason they were refused.
    pub(super) fn validate<T>(
        &self,
        call: impl FnOnce(
            &mut Store<GuestState>,
            &P::Instance,
            &str,
        ) -> wasmtime::Result<Result<T, String>>,
    ) -> Result<T> {
        self.run(ClusterQuery::empty(), false, |store, p| {
            call(store, p, &self.settings)
        })
        .map_err(|e| anyhow::anyhow!("validate-settings {e}"))?
        .map_err(|e| anyhow::anyhow!("settings rejected: {e}"))
    }

    pub(super) fn id(&self) -> &str {
        &self.id
    }

    /// Runs `call` on a fresh instance; PD reads are allowed when `with_pd`
    /// (never while validating settings) and stop at the deadline.
    pub(super) fn run<T>(
        &self,
        cluster: ClusterQuery,
        with_pd: bool,
        call: impl FnOnce(&mut Store<GuestState>, &P::Instance) -> wasmtime::Result<T>,
    ) -> Result<T, EvalError> {
        let mut store =
            sandbox::store(self.runtime.engine(), self.id.clone(), cluster, self.limits);
        if let Some(route) = self.pd.as_ref().filter(|_| with_pd) {
            store.data_mut().pd = Some(PdAccess {
                client: route.client.clone(),
                endpoint: route.endpoint.clone(),
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
