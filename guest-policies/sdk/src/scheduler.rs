//! The `scheduler` world: `validate-settings`, `filter`, `prioritize`.
//! Implement [`SchedulerPolicy`] and export it with
//! [`export_scheduler_policy!`](crate::export_scheduler_policy).

pub use crate::bindings::steward::policy::scheduling::{
    Candidates, FilterResult, NodeScore, Rejection, SchedulerNeeds,
};

use crate::cluster::ClusterView;
use crate::settings::{self, Settings};
use crate::{CapacitySource, Pod};

/// A candidate's value id in a `labels` column when the node lacks the
/// label.
pub const NO_LABEL: u32 = u32::MAX;

impl Candidates {
    /// Candidate `index`'s value id in label column `column`.
    pub fn label(&self, column: usize, index: usize) -> Option<u32> {
        let id = *self.labels.get(column)?.get(index)?;
        (id != NO_LABEL).then_some(id)
    }
}

/// A kube-scheduler extender policy. Each call gets the settings parsed
/// and the cluster to query (the host's inside Wasm, a
/// [`FakeCluster`](crate::cluster::FakeCluster) in tests).
pub trait SchedulerPolicy {
    type Settings: Settings;

    /// Node label keys whose value ids each call's `nodes` carry, one
    /// column per key in this order; asked once, when the policy loads.
    fn node_labels(_settings: &Self::Settings) -> Vec<String> {
        Vec::new()
    }

    /// Capacity sources the policy reads through the cluster queries; the
    /// host watches a source's kinds only for policies that name it (and
    /// reports the policy degraded while they are not served). Asked once,
    /// when the policy loads.
    fn capacity_sources(_settings: &Self::Settings) -> Vec<CapacitySource> {
        Vec::new()
    }

    /// Whether the policy reads tidb-operator's TidbClusters and Advanced
    /// StatefulSets; the host watches them (where served) only then.
    fn tidb_operator(_settings: &Self::Settings) -> bool {
        false
    }

    /// Refuses the candidate nodes the pod may not run on.
    fn filter(
        cluster: &impl ClusterView,
        settings: &Self::Settings,
        pod: &Pod,
        nodes: &Candidates,
    ) -> Result<FilterResult, String>;

    /// Scores candidate nodes 0..=10; nodes left out score 0. The default
    /// has no preference.
    fn prioritize(
        _cluster: &impl ClusterView,
        _settings: &Self::Settings,
        _pod: &Pod,
        _nodes: &Candidates,
    ) -> Result<Vec<NodeScore>, String> {
        Ok(Vec::new())
    }
}

/// Exports a [`SchedulerPolicy`] as the component's `scheduler` world:
/// `steward_sdk::export_scheduler_policy!(MyPolicy);` once, in the policy
/// crate (which must call this SDK `steward_sdk`). Outside Wasm it only
/// checks the trait is implemented, so several policies link into one
/// native test binary.
#[macro_export]
macro_rules! export_scheduler_policy {
    ($policy:ty) => {
        const _: () = $crate::scheduler::implemented::<$policy>();

        #[cfg(target_arch = "wasm32")]
        type __StewardPolicy = $policy;

        #[cfg(target_arch = "wasm32")]
        #[doc(hidden)]
        mod __steward_export {
            $crate::__generate!(
                world: "scheduler",
                with: {
                    "steward:policy/types@0.2.0": ::steward_sdk::bindings::steward::policy::types,
                    "steward:policy/cluster@0.2.0": ::steward_sdk::bindings::steward::policy::cluster,
                    "steward:policy/log@0.2.0": ::steward_sdk::bindings::steward::policy::log,
                    "steward:policy/scheduling@0.2.0": ::steward_sdk::bindings::steward::policy::scheduling,
                },
            );

            struct Export;

            impl Guest for Export {
                fn validate_settings(settings: String) -> Result<SchedulerNeeds, String> {
                    $crate::scheduler::validate_settings::<super::__StewardPolicy>(&settings)
                }

                fn filter(
                    settings: String,
                    pod: Pod,
                    nodes: Candidates,
                ) -> Result<FilterResult, String> {
                    $crate::scheduler::filter::<super::__StewardPolicy>(&settings, &pod, &nodes)
                }

                fn prioritize(
                    settings: String,
                    pod: Pod,
                    nodes: Candidates,
                ) -> Result<Vec<NodeScore>, String> {
                    $crate::scheduler::prioritize::<super::__StewardPolicy>(&settings, &pod, &nodes)
                }
            }

            export!(Export);
        }
    };
}

/// Compiles only for a [`SchedulerPolicy`]: the export macro's check.
#[doc(hidden)]
pub const fn implemented<P: SchedulerPolicy>() {}

#[doc(hidden)]
pub fn validate_settings<P: SchedulerPolicy>(settings: &str) -> Result<SchedulerNeeds, String> {
    let settings = settings::parse::<P::Settings>(settings)?;
    Ok(SchedulerNeeds {
        node_labels: P::node_labels(&settings),
        capacity_sources: P::capacity_sources(&settings),
        tidb_operator: P::tidb_operator(&settings),
    })
}

#[doc(hidden)]
pub fn filter<P: SchedulerPolicy>(
    settings: &str,
    pod: &Pod,
    nodes: &Candidates,
) -> Result<FilterResult, String> {
    P::filter(
        &crate::cluster::HostCluster,
        &settings::parse(settings)?,
        pod,
        nodes,
    )
}

#[doc(hidden)]
pub fn prioritize<P: SchedulerPolicy>(
    settings: &str,
    pod: &Pod,
    nodes: &Candidates,
) -> Result<Vec<NodeScore>, String> {
    P::prioritize(
        &crate::cluster::HostCluster,
        &settings::parse(settings)?,
        pod,
        nodes,
    )
}
