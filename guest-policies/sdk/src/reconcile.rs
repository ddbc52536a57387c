//! The `reconcile` world: `validate-settings`, `reconcile`. Implement
//! [`ReconcilePolicy`] and export it with
//! [`export_reconcile_policy!`](crate::export_reconcile_policy).

pub use crate::bindings::steward::policy::reconciling::{Plan, Replica, WorkloadState};

use crate::cluster::ClusterView;
use crate::pd::PdView;
use crate::settings::{self, Settings};
use crate::{Action, Annotation, EventType, Target};

/// A controller policy: looks at one opted-in workload and returns the
/// next steps. Each reconcile gets the settings parsed, the cluster and PD
/// to query (the host's inside Wasm, fakes in tests).
pub trait ReconcilePolicy {
    type Settings: Settings;

    /// The plan for the workload now; an `Err` makes the host reconcile
    /// again with backoff.
    fn reconcile(
        cluster: &impl ClusterView,
        pd: &impl PdView,
        settings: &Self::Settings,
        state: &WorkloadState,
    ) -> Result<Plan, String>;
}

/// Exports a [`ReconcilePolicy`] as the component's `reconcile` world:
/// `steward_sdk::export_reconcile_policy!(MyPolicy);` once, in the policy
/// crate (which must call this SDK `steward_sdk`). Outside Wasm it only
/// checks the trait is implemented.
#[macro_export]
macro_rules! export_reconcile_policy {
    ($policy:ty) => {
        const _: () = $crate::reconcile::implemented::<$policy>();

        #[cfg(target_arch = "wasm32")]
        type __StewardPolicy = $policy;

        #[cfg(target_arch = "wasm32")]
        #[doc(hidden)]
        mod __steward_export {
            $crate::__generate!(
                world: "reconcile",
                with: {
                    "steward:policy/types@0.2.0": ::steward_sdk::bindings::steward::policy::types,
                    "steward:policy/cluster@0.2.0": ::steward_sdk::bindings::steward::policy::cluster,
                    "steward:policy/log@0.2.0": ::steward_sdk::bindings::steward::policy::log,
                    "steward:policy/pd@0.2.0": ::steward_sdk::bindings::steward::policy::pd,
                    "steward:policy/actions@0.2.0": ::steward_sdk::bindings::steward::policy::actions,
                    "steward:policy/reconciling@0.2.0": ::steward_sdk::bindings::steward::policy::reconciling,
                },
            );

            struct Export;

            impl Guest for Export {
                fn validate_settings(settings: String) -> Result<(), String> {
                    $crate::reconcile::validate_settings::<super::__StewardPolicy>(&settings)
                }

                fn reconcile(settings: String, state: WorkloadState) -> Result<Plan, String> {
                    $crate::reconcile::reconcile::<super::__StewardPolicy>(&settings, &state)
                }
            }

            export!(Export);
        }
    };
}

/// Compiles only for a [`ReconcilePolicy`]: the export macro's check.
#[doc(hidden)]
pub const fn implemented<P: ReconcilePolicy>() {}

#[doc(hidden)]
pub fn validate_settings<P: ReconcilePolicy>(settings: &str) -> Result<(), String> {
    settings::parse::<P::Settings>(settings).map(drop)
}

#[doc(hidden)]
pub fn reconcile<P: ReconcilePolicy>(
    settings: &str,
    state: &WorkloadState,
) -> Result<Plan, String> {
    P::reconcile(
        &crate::cluster::HostCluster,
        &crate::pd::HostPd,
        &settings::parse(settings)?,
        state,
    )
}

/// Default wait between two looks at a workload that is in the middle
/// of something.
pub const POLL_MS: u32 = 5_000;

/// A policy's `pollMs` setting: the wait between two looks, at least
/// 1 ms, [`POLL_MS`] unless set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "u32")]
pub struct PollMs(u32);

impl PollMs {
    pub fn get(self) -> u32 {
        self.0
    }
}

impl Default for PollMs {
    fn default() -> PollMs {
        PollMs(POLL_MS)
    }
}

impl TryFrom<u32> for PollMs {
    type Error = &'static str;
    fn try_from(ms: u32) -> Result<PollMs, Self::Error> {
        if ms == 0 {
            return Err("pollMs must be at least 1");
        }
        Ok(PollMs(ms))
    }
}

impl Plan {
    pub fn new() -> Plan {
        Plan {
            actions: Vec::new(),
        }
    }
    pub fn action(mut self, action: Action) -> Plan {
        self.actions.push(action);
        self
    }
    pub fn set_partition(self, partition: u32) -> Plan {
        self.action(Action::SetPartition(partition))
    }
    pub fn set_replicas(self, replicas: u32) -> Plan {
        self.action(Action::SetReplicas(replicas))
    }
    /// Sets (Some) or removes (None) an annotation of the workload: how
    /// a policy remembers things across reconciles.
    pub fn remember(self, workload: &str, key: &str, value: Option<String>) -> Plan {
        self.action(Action::Annotate((
            Target::Workload(workload.into()),
            vec![Annotation {
                key: key.into(),
                value,
            }],
        )))
    }
    pub fn event(self, kind: EventType, reason: &str, message: impl Into<String>) -> Plan {
        self.action(Action::EmitEvent((kind, reason.into(), message.into())))
    }
    pub fn requeue_after(self, ms: u32) -> Plan {
        self.action(Action::RequeueAfter(ms))
    }
    /// The actions that are not `requeue-after` or `emit-event`: what
    /// changes the cluster.
    pub fn changes(&self) -> impl Iterator<Item = &Action> {
        self.actions
            .iter()
            .filter(|a| !matches!(a, Action::RequeueAfter(_) | Action::EmitEvent(_)))
    }
}

impl Default for Plan {
    fn default() -> Plan {
        Plan::new()
    }
}

impl WorkloadState {
    /// The pod with ordinal `ordinal`, if it exists.
    pub fn replica(&self, ordinal: u32) -> Option<&Replica> {
        self.replicas.iter().find(|r| r.ordinal == ordinal)
    }
}
