//! Conventions of TiDB clusters run by tidb-operator, and the failure store
//! Steward's policies share (written by failover, read by placement).

use serde::{Deserialize, Serialize};

use crate::cluster::ClusterView;
use crate::{TidbCluster, TidbComponent, Workload, labels};

pub use steward_wit::ordinals::{
    ADVANCED_STATEFULSET, ADVANCED_STATEFULSET_GROUP, statefulset_kind,
};

pub const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";
pub const COMPONENT_LABEL: &str = "app.kubernetes.io/component";

/// Whether an owner kind is a StatefulSet of either API: the pods of a
/// TiDB component belong to one or the other.
pub fn is_statefulset(kind: &str) -> bool {
    kind == "StatefulSet" || kind == ADVANCED_STATEFULSET
}

/// The ordinals StatefulSet `w` keeps at `replicas`: `0..replicas`, or for
/// an Advanced StatefulSet `replicas` slots skipping its delete slots
/// (tidb-operator's `helper.GetPodOrdinals`), ascending. At `spec.replicas`
/// they are the host's `desired-ordinals`; a policy changing the replicas
/// needs them at another count (the highest desired ordinal goes first).
pub fn ordinals_at(w: &Workload, replicas: u32) -> Vec<u32> {
    steward_wit::ordinals::of_statefulset(&w.kind, &w.annotations, replicas)
}

/// The partition that holds every pod of `w` at its current revision: one
/// past the highest desired ordinal (`spec.replicas` without delete slots).
pub fn held_partition(w: &Workload) -> u32 {
    w.desired_ordinals.last().map_or(0, |o| o + 1)
}

/// StatefulSet `name` of either API, kind `kind` first: the components of
/// a TiDB cluster share one kind, except while it moves to Advanced
/// StatefulSets.
pub fn statefulset(
    cluster: &impl ClusterView,
    kind: &str,
    namespace: &str,
    name: &str,
) -> Option<Workload> {
    let other = if kind == ADVANCED_STATEFULSET {
        "StatefulSet"
    } else {
        ADVANCED_STATEFULSET
    };
    cluster
        .get_workload(kind, namespace, name)
        .or_else(|| cluster.get_workload(other, namespace, name))
}

/// The TidbCluster's spec of `component` (`pd`, `tikv`), if it has one.
pub fn component_of<'a>(tc: &'a TidbCluster, component: &str) -> Option<&'a TidbComponent> {
    match component {
        "pd" => tc.pd.as_ref(),
        "tikv" => tc.tikv.as_ref(),
        _ => None,
    }
}

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

/// StatefulSet annotation an upgrade gate records: the lowest
/// `rollingUpdate.partition` allowed while the upgrade is gated. An update
/// that lowers the partition below it is refused (tidb-operator's
/// `tidb.pingcap.com/<component>-partition` rule).
pub const PROTECTED_PARTITION_ANNOTATION: &str = "steward.io/protected-partition";

/// StatefulSet annotation asking Steward to scale a PD or TiKV StatefulSet
/// in to this many replicas, one member at a time, each leaving PD before
/// its pod and claims go (the failover policy carries it out and removes
/// the annotation when done). tidb-guard refuses a plain replicas decrease
/// that would remove members PD still has, and names this annotation.
pub const SCALE_IN_ANNOTATION: &str = "steward.io/scale-in";

/// TiKV pod annotation: when leader eviction from its store began, Unix
/// milliseconds. Kept on the pod so a host restart keeps the timeout.
pub const EVICT_LEADER_BEGIN_ANNOTATION: &str = "steward.io/evict-leader-begin-ms";

/// The TiDB cluster (`app.kubernetes.io/instance`) a pod or workload
/// belongs to.
pub fn instance(labels: &[(String, String)]) -> Option<&str> {
    labels::get(labels, INSTANCE_LABEL)
}

/// The component (`pd`, `tikv`, ...) of a pod or workload.
pub fn component(labels: &[(String, String)]) -> Option<&str> {
    labels::get(labels, COMPONENT_LABEL)
}

/// Whether PD's store `address` belongs to TiKV pod `pod` of cluster
/// `instance`: tidb-operator names stores
/// `<pod>.<instance>-tikv-peer.<namespace>[.svc[.<domain>]]:20160`.
pub fn is_store_of(address: &str, pod: &str, instance: &str, namespace: &str) -> bool {
    let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
    let prefix = format!("{pod}.{instance}-tikv-peer.{namespace}");
    host == prefix
        || host
            .strip_prefix(&prefix)
            .is_some_and(|rest| rest.starts_with('.'))
}

/// The protected partition of a workload, if its upgrade gate set one.
pub fn protected_partition(workload: &Workload) -> Result<Option<u32>, String> {
    match labels::get(&workload.annotations, PROTECTED_PARTITION_ANNOTATION) {
        None => Ok(None),
        Some(text) => text.trim().parse().map(Some).map_err(|_| {
            format!(
                "annotation {PROTECTED_PARTITION_ANNOTATION} of StatefulSet {}/{} is `{text}`, \
                 not a partition number; fix or remove it",
                workload.namespace, workload.name
            )
        }),
    }
}

/// The replicas a scale-in was asked for ([`SCALE_IN_ANNOTATION`]), if any.
pub fn scale_in_target(workload: &Workload) -> Result<Option<u32>, String> {
    match labels::get(&workload.annotations, SCALE_IN_ANNOTATION) {
        None => Ok(None),
        Some(text) => text.trim().parse().map(Some).map_err(|_| {
            format!(
                "annotation {SCALE_IN_ANNOTATION} of StatefulSet {}/{} is `{text}`, not a \
                 replica count; fix or remove it",
                workload.namespace, workload.name
            )
        }),
    }
}

/// The ordinal of PD member (or TiKV pod) `name` in StatefulSet
/// `statefulset`, if it is one of its replicas.
pub fn ordinal_in(name: &str, statefulset: &str) -> Option<u32> {
    name.strip_prefix(statefulset)?
        .strip_prefix('-')?
        .parse::<u32>()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_addresses_match_their_pod_only() {
        let a = "basic-tikv-1.basic-tikv-peer.tidb-cluster.svc:20160";
        assert!(is_store_of(a, "basic-tikv-1", "basic", "tidb-cluster"));
        assert!(!is_store_of(a, "basic-tikv-10", "basic", "tidb-cluster"));
        assert!(!is_store_of(a, "basic-tikv-1", "basic", "tidb"));
        assert!(is_store_of(
            "basic-tikv-1.basic-tikv-peer.tidb-cluster:20160",
            "basic-tikv-1",
            "basic",
            "tidb-cluster"
        ));
    }
}
