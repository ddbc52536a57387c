//! Conventions of TiDB clusters run by tidb-operator, and the failure store
//! Steward's policies share (written by failover, read by placement).

use serde::{Deserialize, Serialize};

use crate::{Workload, labels};

pub const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";
pub const COMPONENT_LABEL: &str = "app.kubernetes.io/component";

/// StatefulSet annotation holding the failure store: a JSON list of
/// [`Failure`]s. It lives in the cluster so a host restart loses nothing.
pub const FAILURES_ANNOTATION: &str = "steward.io/failures";

/// A member both Kubernetes and PD consider failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Failure {
    pub pod: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member_id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_id: Option<u64>,
    #[serde(default)]
    pub created_at_ms: i64,
    /// PD member (or TiKV store) already deleted from PD.
    #[serde(default)]
    pub deleted: bool,
}

/// The failure store of a workload; absent means none.
pub fn failures(workload: &Workload) -> Result<Vec<Failure>, String> {
    match labels::get(&workload.annotations, FAILURES_ANNOTATION) {
        None => Ok(Vec::new()),
        Some(text) => serde_json::from_str(text).map_err(|e| {
            format!(
                "annotation {FAILURES_ANNOTATION} of StatefulSet {}/{} is not a failure list ({e}); \
                 fix or remove it",
                workload.namespace, workload.name
            )
        }),
    }
}
