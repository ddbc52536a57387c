//! upgrade-gate: tidb-operator's graceful rolling upgrade for StatefulSets
//! (`apps/v1` or Advanced) that opt in (domain rules §1b):
//!
//! - the partition stays at `replicas` (an Advanced StatefulSet's: one past
//!   its highest desired ordinal) while nothing is upgrading, so a new
//!   template restarts no pod by itself;
//! - an upgrade lowers it one desired ordinal at a time, highest first
//!   (an Advanced StatefulSet's delete slots skipped), and only after the
//!   pod above is Ready at the new revision and healthy in PD;
//! - before a TiKV pod restarts, PD evicts its store's leaders; the gate
//!   waits for zero (or the eviction timeout, with an Event); after the pod
//!   is back `Up` the eviction ends and the gate waits for 2/3 of the
//!   leaders to return (or a timeout);
//! - before the PD leader's pod restarts, PD leadership moves to a healthy
//!   upgraded member;
//! - PD before TiKV before TiDB; nothing while the cluster is unhealthy or
//!   the workload is scaling; leftover evict-leader schedulers are removed
//!   at the end.
//!
//! What the gate must remember lives in the StatefulSet annotation
//! `steward.io/upgrade-gate`, so a new host resumes where the last stopped.

mod gate;

pub use gate::{GATE_ANNOTATION, GateState, Settings, reconcile};

use steward_sdk::cluster::ClusterView;
use steward_sdk::pd::PdView;
use steward_sdk::reconcile::{Plan, ReconcilePolicy, WorkloadState};

pub struct UpgradeGate;

impl ReconcilePolicy for UpgradeGate {
    type Settings = Settings;

    fn reconcile(
        cluster: &impl ClusterView,
        pd: &impl PdView,
        s: &Settings,
        state: &WorkloadState,
    ) -> Result<Plan, String> {
        reconcile(cluster, pd, s, state)
    }
}

steward_sdk::export_reconcile_policy!(UpgradeGate);
