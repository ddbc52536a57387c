//! Evaluating an `admission`-world policy: one fresh instance per review.

use anyhow::Result;
use wasmtime::component::Component;

use std::sync::Arc;

use steward_wit::admission::AdmissionPre;
use steward_wit::{AdmissionRequest, PatchOperation, Verdict};

use crate::Runtime;
use crate::evaluator::Evaluator;
use crate::pd_access::PdReader;
use crate::sandbox::{ClusterImport, EvalError, GuestState, Limits};

/// A loaded, validated admission policy, ready to review.
pub struct AdmissionPolicy {
    eval: Evaluator<AdmissionPre<GuestState>>,
}

impl AdmissionPolicy {
    /// Links the component and has it validate `settings`.
    pub fn new(
        runtime: &Runtime,
        id: &str,
        component: &Component,
        settings: String,
        limits: Limits,
        pd: Arc<dyn PdReader>,
    ) -> Result<AdmissionPolicy> {
        let eval: Evaluator<AdmissionPre<GuestState>> =
            Evaluator::new(runtime, id, component, settings, limits, Some(pd))?;
        eval.validate(|store, p, settings| p.call_validate_settings(store, settings))?;
        Ok(AdmissionPolicy { eval })
    }

    /// Runs `review`; the patch is checked to be RFC 6902 operations with
    /// JSON values. Call it on a blocking thread: PD reads block on it.
    pub fn review(
        &self,
        cluster: impl ClusterImport,
        request: &AdmissionRequest,
    ) -> Result<Verdict, EvalError> {
        let verdict = self
            .eval
            .run(cluster, true, |store, p| {
                p.call_review(store, &self.eval.settings, request)
            })?
            .map_err(EvalError::Guest)?;
        for (i, op) in verdict.patch.iter().enumerate() {
            check_patch_operation(op).map_err(|e| EvalError::Invalid(format!("patch[{i}] {e}")))?;
        }
        Ok(verdict)
    }
}

fn check_patch_operation(op: &PatchOperation) -> Result<(), String> {
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
