//! Evaluating an `admission`-world policy: one fresh instance per review.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, anyhow};
use wasmtime::component::Component;

use super::bindings::admission::{Admission, AdmissionPre};
use super::bindings::{AdmissionRequest, Verdict};
use super::sandbox::{self, EvalError, Limits};
use super::{PdAccess, Runtime, pd_access};
use crate::cluster::ClusterQuery;
use crate::pd::{PdClient, PdEndpoint};

/// A loaded, validated admission policy, ready to review.
pub struct AdmissionPolicy {
    /// Keeps the engine and its epoch ticker alive.
    runtime: Runtime,
    pre: AdmissionPre<sandbox::GuestState>,
    id: Arc<str>,
    settings: String,
    limits: Limits,
    pd_client: PdClient,
    pd: PdEndpoint,
}

impl AdmissionPolicy {
    /// Links the component and has it validate `settings`.
    pub fn new(
        runtime: &Runtime,
        id: &str,
        component: &Component,
        settings: String,
        limits: Limits,
        pd: PdEndpoint,
    ) -> Result<AdmissionPolicy> {
        let mut linker = sandbox::linker(runtime.engine()).map_err(anyhow::Error::from)?;
        pd_access::add_to_linker(&mut linker).map_err(anyhow::Error::from)?;
        let pre = linker
            .instantiate_pre(component)
            .map_err(anyhow::Error::from)
            .context("the component's imports cannot be satisfied")?;
        let pre = AdmissionPre::new(pre)
            .map_err(anyhow::Error::from)
            .context("the component does not match the admission world")?;
        let policy = AdmissionPolicy {
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

    pub fn pd_endpoint(&self) -> &PdEndpoint {
        &self.pd
    }

    pub fn pd_client(&self) -> &PdClient {
        &self.pd_client
    }

    /// Runs `review`; the patch is checked to be RFC 6902 operations with
    /// JSON values. Call it on a blocking thread: PD reads block on it.
    pub fn review(
        &self,
        cluster: ClusterQuery,
        request: &AdmissionRequest,
    ) -> Result<Verdict, EvalError> {
        let verdict = self
            .run(cluster, true, |store, p| {
                p.call_review(store, &self.settings, request)
            })?
            .map_err(EvalError::Guest)?;
        for (i, op) in verdict.patch.iter().enumerate() {
            check_patch_operation(op).map_err(|e| EvalError::Invalid(format!("patch[{i}] {e}")))?;
        }
        Ok(verdict)
    }

    fn run<T>(
        &self,
        cluster: ClusterQuery,
        with_pd: bool,
        call: impl FnOnce(&mut wasmtime::Store<sandbox::GuestState>, &Admission) -> wasmtime::Result<T>,
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

fn check_patch_operation(op: &super::PatchOperation) -> Result<(), String> {
    let needs_value = match op.op.as_str() {
        "add" | "replace" | "test" => true,
        "remove" => false,
        "move" | "copy" => {
            if !op
                .from
                .as_deref()
                .is_some_and(|f| f.is_empty() || f.starts_with('/'))
            {
                return Err(format!("`{}` needs a `from` JSON pointer", op.op));
            }
            false
        }
        other => return Err(format!("has op `{other}`, not an RFC 6902 operation")),
    };
    if !op.path.is_empty() && !op.path.starts_with('/') {
        return Err(format!("path `{}` is not a JSON pointer", op.path));
    }
    match (&op.value, needs_value) {
        (Some(v), true) => serde_json::from_str::<serde::de::IgnoredAny>(v)
            .map(|_| ())
            .map_err(|e| format!("value of `{}` is not JSON: {e}", op.path)),
        (None, true) => Err(format!("`{}` of `{}` needs a value", op.op, op.path)),
        (_, false) => Ok(()),
    }
}
