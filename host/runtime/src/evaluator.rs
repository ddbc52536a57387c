//! What every policy kind shares: linking a component against the sandbox's
//! imports, and one fresh, limited instance per evaluation.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use wasmtime::Store;
use wasmtime::component::{Component, InstancePre};

use steward_wit::admission::{Admission, AdmissionPre};
use steward_wit::reconcile::{Reconcile, ReconcilePre};
use steward_wit::scheduler::{Scheduler, SchedulerPre};

use crate::Runtime;
use crate::pd_access::{self, PdAccess, PdReader};
use crate::sandbox::{self, ClusterImport, EvalError, GuestState, Limits, NoCluster};

/// A world's pre-linked component, as `bindgen!` generates it.
pub(crate) trait WorldPre: Sized {
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

/// A linked policy component with its settings, limits and PD route.
pub(crate) struct Evaluator<P> {
    /// Keeps the engine and its epoch ticker alive: without the ticker no
    /// deadline would ever fire.
    runtime: Runtime,
    pre: P,
    id: Arc<str>,
    pub(crate) settings: String,
    limits: Limits,
    pd: Option<Arc<dyn PdReader>>,
}

impl<P: WorldPre> Evaluator<P> {
    /// Links `component` (with the `pd` import when `pd` is given).
    pub(crate) fn new(
        runtime: &Runtime,
        id: &str,
        component: &Component,
        settings: String,
        limits: Limits,
        pd: Option<Arc<dyn PdReader>>,
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
            pd,
        })
    }

    /// Has the guest check its settings (no PD, no cluster): what each
    /// world returns for valid settings, or the reason they were refused.
    pub(crate) fn validate<T>(
        &self,
        call: impl FnOnce(
            &mut Store<GuestState>,
            &P::Instance,
            &str,
        ) -> wasmtime::Result<Result<T, String>>,
    ) -> Result<T> {
        self.run(NoCluster, false, |store, p| call(store, p, &self.settings))
            .map_err(|e| anyhow::anyhow!("validate-settings {e}"))?
            .map_err(|e| anyhow::anyhow!("settings rejected: {e}"))
    }

    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// Runs `call` on a fresh instance; PD reads are allowed when `with_pd`
    /// (never while validating settings) and stop at the deadline.
    pub(crate) fn run<T>(
        &self,
        cluster: impl ClusterImport,
        with_pd: bool,
        call: impl FnOnce(&mut Store<GuestState>, &P::Instance) -> wasmtime::Result<T>,
    ) -> Result<T, EvalError> {
        let mut store =
            sandbox::store(self.runtime.engine(), self.id.clone(), cluster, self.limits);
        if let Some(reader) = self.pd.as_ref().filter(|_| with_pd) {
            store.data_mut().pd = Some(PdAccess {
                reader: reader.clone(),
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
