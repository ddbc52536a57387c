//! failover: tidb-operator's failover for TiDB StatefulSets with local
//! volumes (domain rules §1c):
//!
//! - a PD member or TiKV store is failed only when Kubernetes (pod missing,
//!   not ready, or on a node that is not Ready) AND PD (member unhealthy,
//!   store `Down`) agree, for longer than the failover period;
//! - each failure is recorded in the failure store (`steward.io/failures`)
//!   and adds one replica: replicas = spec + failures, at most
//!   `maxFailoverCount` failures;
//! - a failed PD member is deleted from PD and its pod and claims removed,
//!   so it comes back empty and joins again; once every PD is healthy the
//!   extra members leave PD and the StatefulSet scales back by itself;
//! - TiKV failures are recovered only when asked (`recoverTikv`, or the
//!   StatefulSet annotation `steward.io/recover-failover: "true"`), by
//!   tidb-operator's scale-in: highest ordinal first, its store taken
//!   offline in PD (`pd-store-delete`) and the replica and its claims
//!   removed only once PD reports the store Tombstone.
//!
//! On an Advanced StatefulSet the members are its desired ordinals
//! (`spec.replicas` slots skipping its delete slots, as tidb-operator
//! counts them): a failure adds the next desired ordinal, and scaling back
//! removes the highest first.
//!
//! The failure store, the suspicion times and the scale-back progress live
//! in StatefulSet annotations, so a new host resumes where the last stopped.
//!
//! It also scales PD and TiKV in safely on request (`steward.io/scale-in:
//! N`, see [`scale_in`]); failure detection waits while a scale-in runs.

mod failover;
pub mod scale_in;
mod tikv_exit;

pub use failover::{
    FAILOVER_ANNOTATION, FailoverState, RECOVER_ANNOTATION, ScaleIn, Settings, reconcile,
};

use steward_sdk::cluster::ClusterView;
use steward_sdk::pd::PdView;
use steward_sdk::reconcile::{Plan, ReconcilePolicy, WorkloadState};

pub struct Failover;

impl ReconcilePolicy for Failover {
    type Settings = Settings;

    fn reconcile(
        _: &impl ClusterView,
        pd: &impl PdView,
        s: &Settings,
        state: &WorkloadState,
    ) -> Result<Plan, String> {
        match steward_sdk::tidb::scale_in_target(&state.workload)? {
            Some(target) => scale_in::reconcile(pd, s, state, target),
            None => reconcile(pd, s, state),
        }
    }
}

steward_sdk::export_reconcile_policy!(Failover);
