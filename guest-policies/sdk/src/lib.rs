//! The Steward guest SDK.
//!
//! A policy crate depends on this crate with the feature of the one world it
//! targets (`scheduler`, `admission` or `reconcile`), implements that world's
//! `Guest` trait and exports it with the world's macro:
//!
//! ```ignore
//! use steward_sdk::scheduler::{Guest, FilterResult, NodeScore, SchedulerNeeds};
//! struct MyPolicy;
//! impl Guest for MyPolicy { /* validate_settings, filter, prioritize */ }
//! steward_sdk::scheduler::export_scheduler_policy!(MyPolicy with_types_in steward_sdk::scheduler);
//! ```
//!
//! Policy logic is best written against [`cluster::ClusterView`], so the same
//! code runs on the host's cache inside Wasm ([`cluster::HostCluster`]) and on
//! an in-memory [`cluster::FakeCluster`] in unit tests.

pub mod build;
pub mod cluster;
pub mod filter;
pub mod labels;
#[cfg(any(feature = "admission", feature = "reconcile"))]
pub mod pd;
pub use steward_wit::quantity;
pub mod settings;
pub mod tidb;

/// Bindings of the interfaces every world shares (records, cluster queries,
/// logging, PD, actions). The per-world modules reuse them, so a `Pod` is the
/// same Rust type in every world.
pub mod common {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "sdk-common",
        additional_derives: [PartialEq],
    });
}

pub use cluster::PoolCapacity;
pub use common::steward::policy::types::{
    CapacitySource, Claim, LocalVolume, LogLevel, Node, NodeDisks, NodeSelectorTerm, Owner, Pod,
    PoolColumns, PoolState, SelectorOperator, SelectorRequirement, StorageClass, Taint, Volume,
    Workload,
};

/// Bindings of PD access and the action vocabulary, shared by the admission
/// and reconcile worlds.
#[cfg(any(feature = "admission", feature = "reconcile"))]
pub mod pd_common {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "pd-common",
        additional_derives: [PartialEq],
    });
}

#[cfg(any(feature = "admission", feature = "reconcile"))]
pub use pd_common::steward::policy::actions::{Action, Annotation, EventType, Target};
#[cfg(any(feature = "admission", feature = "reconcile"))]
pub use pd_common::steward::policy::pd::{Member, PdCluster, Store};

/// Sends a line to the host's log, tagged with the policy id.
pub fn log(level: LogLevel, message: &str) {
    common::steward::policy::log::emit(level, message);
}

#[cfg(feature = "scheduler")]
pub mod scheduler {
    //! The `scheduler` world: `validate-settings`, `filter`, `prioritize`.
    wit_bindgen::generate!({
        path: "../../wit",
        world: "scheduler",
        with: {
            "steward:policy/types@0.1.0": crate::common::steward::policy::types,
            "steward:policy/cluster@0.1.0": crate::common::steward::policy::cluster,
            "steward:policy/log@0.1.0": crate::common::steward::policy::log,
            "steward:policy/scheduling@0.1.0": generate,
        },
        additional_derives: [PartialEq],
        pub_export_macro: true,
        export_macro_name: "export_scheduler_policy",
        default_bindings_module: "steward_sdk::scheduler",
    });
    pub use self::steward::policy::scheduling::Rejection;

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
}

#[cfg(feature = "admission")]
pub mod admission {
    //! The `admission` world: `validate-settings`, `review`.
    wit_bindgen::generate!({
        path: "../../wit",
        world: "admission",
        with: {
            "steward:policy/types@0.1.0": crate::common::steward::policy::types,
            "steward:policy/cluster@0.1.0": crate::common::steward::policy::cluster,
            "steward:policy/log@0.1.0": crate::common::steward::policy::log,
            "steward:policy/pd@0.1.0": crate::pd_common::steward::policy::pd,
            "steward:policy/actions@0.1.0": crate::pd_common::steward::policy::actions,
            "steward:policy/reviewing@0.1.0": generate,
        },
        additional_derives: [PartialEq],
        pub_export_macro: true,
        export_macro_name: "export_admission_policy",
        default_bindings_module: "steward_sdk::admission",
    });
    pub use self::steward::policy::reviewing::{PatchOperation, UserInfo};

    impl Verdict {
        /// Admits the request unchanged.
        pub fn allow() -> Verdict {
            Verdict {
                allowed: true,
                message: None,
                code: None,
                warnings: Vec::new(),
                patch: Vec::new(),
                actions: Vec::new(),
                audit_annotations: Vec::new(),
            }
        }

        /// Refuses the request with a message for the user (HTTP 403).
        pub fn deny(message: impl Into<String>) -> Verdict {
            Verdict {
                allowed: false,
                message: Some(message.into()),
                ..Verdict::allow()
            }
        }

        pub fn warning(mut self, warning: impl Into<String>) -> Verdict {
            self.warnings.push(warning.into());
            self
        }

        /// Adds an RFC 6902 operation; `value` is JSON text.
        pub fn patch(mut self, op: &str, path: &str, value: Option<String>) -> Verdict {
            self.patch.push(PatchOperation {
                op: op.into(),
                path: path.into(),
                value,
                from: None,
            });
            self
        }

        /// Adds a side effect for the host to perform (never on a dry run).
        pub fn action(mut self, action: crate::Action) -> Verdict {
            self.actions.push(action);
            self
        }
    }

    impl AdmissionRequest {
        /// `DELETE` of the object, or `CREATE` of its `eviction`
        /// subresource (a drain): both end with the pod gone.
        pub fn removes_pod(&self) -> bool {
            self.resource.2 == "pods"
                && match self.sub_resource.as_deref() {
                    None => self.operation == "DELETE",
                    Some("eviction") => self.operation == "CREATE",
                    Some(_) => false,
                }
        }

        /// The pod the request is about: the typed object, or for an
        /// eviction the pod of that name from the cluster cache.
        pub fn target_pod(&self, cluster: &impl crate::cluster::ClusterView) -> Option<crate::Pod> {
            match &self.pod {
                Some(p) => Some(p.clone()),
                None if self.resource.2 == "pods" => cluster.get_pod(&self.namespace, &self.name),
                None => None,
            }
        }
    }
}

#[cfg(feature = "reconcile")]
pub mod reconcile {
    //! The `reconcile` world: `validate-settings`, `reconcile`.
    wit_bindgen::generate!({
        path: "../../wit",
        world: "reconcile",
        with: {
            "steward:policy/types@0.1.0": crate::common::steward::policy::types,
            "steward:policy/cluster@0.1.0": crate::common::steward::policy::cluster,
            "steward:policy/log@0.1.0": crate::common::steward::policy::log,
            "steward:policy/pd@0.1.0": crate::pd_common::steward::policy::pd,
            "steward:policy/actions@0.1.0": crate::pd_common::steward::policy::actions,
            "steward:policy/reconciling@0.1.0": generate,
        },
        additional_derives: [PartialEq],
        pub_export_macro: true,
        export_macro_name: "export_reconcile_policy",
        default_bindings_module: "steward_sdk::reconcile",
    });
    pub use self::steward::policy::reconciling::Replica;

    use crate::{Action, Annotation, EventType, Target};

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
}
