//! pd-quorum: places PD and TiKV pods so that losing one topology domain
//! never loses a Raft majority: tidb-operator's HA predicate
//! (`pkg/scheduler/predicates/ha.go`, release-1.x), as a stateless filter.
//!
//! Where the figures come from: the pod's TidbCluster (`pingcap.com/v1alpha1`,
//! named by the pod's `app.kubernetes.io/instance` label) when the API
//! server serves the CRD and the cluster has one, exactly as the HA
//! predicate reads it; otherwise the pod's owning StatefulSet (`apps/v1`,
//! or tidb-operator's Advanced StatefulSet `apps.pingcap.com/v1`) and
//! Steward's failure store (annotation `steward.io/failures`, written by the
//! failover policy).
//!
//! - Topology key: the TidbCluster's `pingcap.com/ha-topology-key`
//!   annotation, else the `topologyKey` setting (default
//!   `kubernetes.io/hostname`, the HA predicate's default).
//! - Replicas: PD `spec.pd.replicas` + failure members whose member was
//!   deleted, TiKV `spec.tikv.replicas` + failure stores (+ the spare
//!   replicas of a volume replacement); without a TidbCluster, the
//!   StatefulSet's `spec.replicas`.
//! - Members count only if their ordinal is desired (replicas plus delete
//!   slots: `<component>.tidb.pingcap.com/delete-slots` on the TidbCluster,
//!   `delete-slots` on an Advanced StatefulSet) and they are not failure
//!   members (PD `failureMembers`, TiKV `failureStores`, or Steward's
//!   failure store).
//! - PD: at most `max(1, (replicas + 1) / 2 - 1)` pods per domain.
//! - TiKV: one per domain until three domains host TiKV, then
//!   `ceil(replicas / 3)`; fewer than 3 replicas: no limit.
//! - Only the least-loaded eligible domains stay open (strict balancing).
//! - Nodes without the topology label are never eligible.
//! - A pod whose claim is bound, offered exactly one node, goes back there.
//! - A member between filter and bind (`in-flight`) may land in any
//!   domain: it counts in every domain against the limit, but not towards
//!   balance or the domains in use (either would loosen the rule).
//!
//! Deliberate differences from tidb-scheduler:
//! - Every refused node gets its own reason (`FailedNodes`, and
//!   `FailedAndUnresolvableNodes` for the quorum rule), where the HA
//!   predicate returns an empty node list and one Event: kube-scheduler
//!   then shows why each node was refused and tries no preemption that
//!   cannot help.
//! - No PVC scheduling lock (`tidb.pingcap.com/pod-scheduling`): a filter
//!   writes nothing. The in-flight rule above keeps placements of one
//!   component within the limit instead, from Steward's own record of pods
//!   it let through and the nodes their claims name.
//! - Members' domains are read from Steward's cache of Nodes rather than a
//!   GET per member, and a member on a node the cache does not know counts
//!   nowhere (the HA predicate fails the whole call then).

mod quorum;

pub use quorum::{Settings, filter};

use steward_sdk::Pod;
use steward_sdk::cluster::ClusterView;
use steward_sdk::scheduler::{Candidates, FilterResult, SchedulerPolicy};

pub struct PdQuorum;

impl SchedulerPolicy for PdQuorum {
    type Settings = Settings;

    fn node_labels(s: &Settings) -> Vec<String> {
        vec![s.topology_key.clone()]
    }

    fn tidb_operator(_: &Settings) -> bool {
        true
    }

    fn filter(
        cluster: &impl ClusterView,
        s: &Settings,
        pod: &Pod,
        nodes: &Candidates,
    ) -> Result<FilterResult, String> {
        Ok(filter(cluster, s, pod, nodes).into())
    }
}

steward_sdk::export_scheduler_policy!(PdQuorum);
