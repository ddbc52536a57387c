//! Which members count, how many are desired and in which topology: from
//! the pod's TidbCluster when the host has one (tidb-operator's HA
//! predicate reads the same), else from its StatefulSet of either kind and
//! Steward's failure store.

use std::collections::BTreeSet;

use steward_sdk::cluster::ClusterView;
use steward_sdk::tidb::{self, component_of, is_statefulset};
use steward_sdk::{Pod, labels};

/// The component's desired members, as the HA predicate counts them.
pub struct Desired {
    /// The replica count the per-domain limit is computed from.
    pub replicas: u32,
    /// Ordinals of members that count; others are being removed.
    pub ordinals: BTreeSet<u32>,
    /// Pods of failure members: replaced, so they do not count.
    pub failed: BTreeSet<String>,
    /// The node label whose values are the failure domains.
    pub topology_key: String,
}

/// Why the desired members are unknown: the refusal's reason, and whether
/// waiting (for the cache) cannot help.
pub struct Unknown {
    pub reason: String,
    pub unresolvable: bool,
}

impl Desired {
    /// The members of `pod`'s `component` of TiDB cluster `instance`.
    /// `default_key` (the `topologyKey` setting) applies unless the
    /// TidbCluster's `pingcap.com/ha-topology-key` annotation names one.
    pub fn of(
        cluster: &impl ClusterView,
        pod: &Pod,
        instance: &str,
        component: &str,
        default_key: &str,
    ) -> Result<Desired, Unknown> {
        let tc = cluster.get_tidb_cluster(&pod.namespace, instance);
        if let Some((tc, spec)) = tc
            .as_ref()
            .and_then(|tc| Some((tc, component_of(tc, component)?)))
        {
            return Ok(Desired {
                replicas: spec.desired_replicas,
                ordinals: spec.desired_ordinals.iter().copied().collect(),
                failed: spec.failure_pods.iter().cloned().collect(),
                topology_key: tc
                    .ha_topology_key
                    .clone()
                    .unwrap_or_else(|| default_key.to_string()),
            });
        }
        let Some(owner) = pod.owner.as_ref().filter(|o| is_statefulset(&o.kind)) else {
            return Err(Unknown {
                reason: format!(
                    "pod {}/{} has no owning StatefulSet and no TidbCluster {instance}, so its \
                     {component} replica count is unknown",
                    pod.namespace, pod.name
                ),
                unresolvable: true,
            });
        };
        let Some(workload) = cluster.get_workload(&owner.kind, &pod.namespace, &owner.name) else {
            return Err(Unknown {
                reason: format!(
                    "{} {}/{} of pod {} is not in the cluster cache yet",
                    owner.kind, pod.namespace, owner.name, pod.name
                ),
                unresolvable: false,
            });
        };
        let failures = tidb::failures(&workload).map_err(|reason| Unknown {
            reason,
            unresolvable: false,
        })?;
        Ok(Desired {
            replicas: workload.replicas,
            ordinals: workload.desired_ordinals.iter().copied().collect(),
            failed: failures.into_iter().map(|f| f.pod).collect(),
            topology_key: default_key.to_string(),
        })
    }

    /// Whether `member` counts towards its domain.
    pub fn counts(&self, member: &Pod) -> bool {
        labels::ordinal(&member.name).is_some_and(|o| self.ordinals.contains(&o))
            && !self.failed.contains(&member.name)
    }
}
