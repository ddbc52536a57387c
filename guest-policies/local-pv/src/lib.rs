//! local-pv: places pods whose claims use local volumes where the volumes
//! are, or where there is room for them.
//!
//! The policy needs its `capacitySource`'s kinds (HwameiStor:
//! LocalStorageNode, LocalDiskNode, LocalVolume; CSIStorageCapacity: its
//! objects; TopoLVM: Node annotations only): while the API server does
//! not serve them, Steward reports the policy degraded.
//!
//! # Filter
//! - A **bound** claim pins the pod: a HwameiStor LVM volume
//!   (`lvm.hwameistor.io`) to the hosts of its `LocalVolume` replicas, or
//!   only to its published node once it has one; any other local volume
//!   (a `local` PV, or a CSI driver listed as local) to its PV's required
//!   node affinity. A local PV without affinity is refused with a reason:
//!   nothing shows where its data is.
//! - **New** claims of a WaitForFirstConsumer class of a local provisioner
//!   (`lvmProvisioners`, default `lvm.hwameistor.io`) are summed per pool
//!   (HwameiStor: `LocalStorage_Pool<poolClass>`; TopoLVM: the
//!   `topolvm.io/device-class` parameter, default `00default`;
//!   CSIStorageCapacity: the class name). A node passes when its pool is
//!   Ready and its free bytes and free volume slots, minus what Steward has
//!   reserved there for other pods' claims whose volumes the source does
//!   not count yet,
//!   cover the sum.
//! - New claims of a **disk** provisioner (`diskProvisioners`, default
//!   `disk.hwameistor.io`) need as many `Available` disks of the class's
//!   `diskType` as claims (plus reserved ones), largest claim to largest
//!   disk.
//! - **HA** claims (`replicaNumber` ≥ 2) also need that many schedulable
//!   nodes cluster-wide whose pool takes the pod's claims of that pool.
//! - Every refused node gets its own reason. Capacity shortages are
//!   unresolvable (evicting pods frees no volume space) unless only the
//!   reservations make the difference; waiting for the cache is resolvable.
//!
//! # Prioritize (0..=10), setting `scoring`
//! Only new pool claims are scored (HwameiStor scores disk volumes 0 too);
//! a pod without them gets no preference (empty list). With several pools
//! the node's score is the **minimum** over them (TopoLVM's rule for
//! several device classes). `free` is the pool's free bytes minus
//! reservations; `divisor` is `divisors[pool]` or `divisor` (default 1).
//! - `spread` (default) = TopoLVM's `capacityToScore(free)`:
//!   `clamp(floor(log2(free_GiB / divisor)), 1, 10)`, 1 under 1 GiB, 0 when
//!   nothing is free. With divisor 1: 500 GiB → 8, ≥ 1 TiB → 10. This is
//!   exactly topolvm-scheduler's score.
//! - `binPack` = `10 − capacityToScore(free − need)`: the node left with the
//!   least room after the pod's claims scores highest.
//! - `hwameistor` = HwameiStor's plugin score scaled to 0..10:
//!   `floor(mean over claims of int((free − request) / free × 100) / 10)`.
//!   HwameiStor computes the same mean on 0..100 and kube-scheduler
//!   multiplies by the plugin weight 10; an extender's 0..10 is multiplied by
//!   `weight × 10`, so set the extender weight to 10 for the same pull.
//!   HwameiStor uses `freeCapacityBytes`; Steward uses total − used (the
//!   figure HwameiStor's filter uses), minus reservations.

mod claims;
mod filter;
mod score;
pub mod settings;

pub use filter::filter;
pub use score::{capacity_to_score, hwameistor_volume_score, prioritize};
pub use settings::Settings;

use steward_sdk::cluster::ClusterView;
use steward_sdk::scheduler::{Candidates, FilterResult, NodeScore, SchedulerPolicy};
use steward_sdk::{CapacitySource, Pod};

pub struct LocalPv;

impl SchedulerPolicy for LocalPv {
    type Settings = Settings;

    /// The configured source: its kinds are all the policy reads besides
    /// the core ones (a TopoLVM or CSI cluster has no HwameiStor volumes
    /// or disk nodes to look up).
    fn capacity_sources(s: &Settings) -> Vec<CapacitySource> {
        vec![s.capacity_source.wit()]
    }

    fn filter(
        cluster: &impl ClusterView,
        s: &Settings,
        pod: &Pod,
        nodes: &Candidates,
    ) -> Result<FilterResult, String> {
        Ok(filter(cluster, s, pod, nodes).into())
    }

    fn prioritize(
        cluster: &impl ClusterView,
        s: &Settings,
        pod: &Pod,
        nodes: &Candidates,
    ) -> Result<Vec<NodeScore>, String> {
        Ok(prioritize(cluster, s, pod, nodes))
    }
}

steward_sdk::export_scheduler_policy!(LocalPv);

#[cfg(test)]
mod tests;
