//! tidb-guard: refuses changes that would break a TiDB cluster's quorum or
//! data safety (tidb-operator's pod and StatefulSet webhooks):
//!
//! - a StatefulSet UPDATE may not lower `rollingUpdate.partition` below
//!   the partition an upgrade gate protects (`steward.io/protected-partition`),
//!   nor lower or remove that annotation, unless Steward makes it (its
//!   user, authenticated by the API server, is in `stewardUsers`);
//! - a PD or TiKV StatefulSet may not scale down (spec update or `scale`
//!   subresource; an Advanced StatefulSet's new delete slots remove pods
//!   too) while a PD member is unhealthy, nor remove a replica whose member
//!   or store PD still has: `steward.io/scale-in` does that safely;
//! - a TiKV pod is not deleted or evicted while its store holds Raft
//!   leaders: the guard asks PD to evict them and refuses until none are
//!   left or the eviction timeout has passed. `Tombstone`, `Down` or absent
//!   stores pass, `Offline` ones (being emptied by PD) are refused;
//! - the PD leader's pod is not deleted or evicted before PD leadership
//!   moved to a healthy member, which the guard asks for;
//! - a new TiKV pod ends the leader eviction of its store.
//!
//! A refused eviction that clears by itself gets 429, as from a
//! PodDisruptionBudget, so drains retry; a DELETE keeps 403.
//!
//! StatefulSets of both APIs are guarded alike: `apps/v1` and
//! tidb-operator's Advanced StatefulSets (`apps.pingcap.com/v1`). Side
//! effects are actions the host performs, never on a dry run.

mod guard;

pub use guard::{Settings, review};

use steward_sdk::admission::{AdmissionPolicy, AdmissionRequest, Verdict};
use steward_sdk::cluster::ClusterView;
use steward_sdk::pd::PdView;

pub struct TidbGuard;

impl AdmissionPolicy for TidbGuard {
    type Settings = Settings;

    fn review(
        cluster: &impl ClusterView,
        pd: &impl PdView,
        s: &Settings,
        request: &AdmissionRequest,
    ) -> Result<Verdict, String> {
        review(cluster, pd, s, request)
    }
}

steward_sdk::export_admission_policy!(TidbGuard);
