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
pub mod quantity;
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
            "steward:policy/pd@0.1.0": generate,
            "steward:policy/actions@0.1.0": generate,
            "steward:policy/reviewing@0.1.0": generate,
        },
        additional_derives: [PartialEq],
        pub_export_macro: true,
        export_macro_name: "export_admission_policy",
        default_bindings_module: "steward_sdk::admission",
    });

    pub mod build {
        //! Test builders for this world's PD records (with [`crate::build`]).
        use super::steward::policy::pd::{Member, Store};
        crate::build::pd_builders!();
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
            "steward:policy/pd@0.1.0": generate,
            "steward:policy/actions@0.1.0": generate,
            "steward:policy/reconciling@0.1.0": generate,
        },
        additional_derives: [PartialEq],
        pub_export_macro: true,
        export_macro_name: "export_reconcile_policy",
        default_bindings_module: "steward_sdk::reconcile",
    });

    pub mod build {
        //! Test builders for this world's PD records (with [`crate::build`]).
        use super::steward::policy::pd::{Member, Store};
        crate::build::pd_builders!();
    }
}
