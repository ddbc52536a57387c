//! The Steward guest SDK.
//!
//! A policy crate depends on this crate, implements the trait of the one
//! world it targets ([`scheduler::SchedulerPolicy`],
//! [`admission::AdmissionPolicy`] or [`reconcile::ReconcilePolicy`]) and
//! exports it with that world's macro:
//!
//! ```ignore
//! use steward_sdk::scheduler::{Candidates, FilterResult, SchedulerPolicy};
//! pub struct MyPolicy;
//! impl SchedulerPolicy for MyPolicy { /* type Settings, filter */ }
//! steward_sdk::export_scheduler_policy!(MyPolicy);
//! ```
//!
//! The macro parses the settings ([`settings::Settings`]) and binds the
//! world's exports in the policy crate only, so policies of different
//! worlds build in one cargo invocation and each component carries its own
//! world alone.
//!
//! Policy logic is written against [`cluster::ClusterView`] and
//! [`pd::PdView`], so the same code runs on the host inside Wasm and on an
//! in-memory [`cluster::FakeCluster`] in unit tests.

pub mod admission;
pub mod build;
pub mod cluster;
pub mod filter;
pub mod labels;
pub mod pd;
pub use steward_wit::quantity;
pub mod reconcile;
pub mod scheduler;
pub mod settings;
pub mod tidb;

/// Bindings of every interface of Steward's WIT package, generated once
/// for all worlds, so a `Pod` is the same Rust type in every world. The
/// world imports nothing from an interface a policy does not call, and
/// exports nothing: the export macros add a world's exports.
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        inline: "
            package steward:sdk;

            world sdk {
                import steward:policy/types@0.2.0;
                import steward:policy/cluster@0.2.0;
                import steward:policy/log@0.2.0;
                import steward:policy/pd@0.2.0;
                import steward:policy/actions@0.2.0;
                import steward:policy/scheduling@0.2.0;
                import steward:policy/reviewing@0.2.0;
                import steward:policy/reconciling@0.2.0;
            }
        ",
        generate_all,
        additional_derives: [PartialEq],
    });
}

include!(concat!(env!("OUT_DIR"), "/generate.rs"));

/// What the export macros expand to in a policy crate reaches through here.
#[doc(hidden)]
pub mod __private {
    pub use wit_bindgen;
}

pub use bindings::steward::policy::actions::{Action, Annotation, EventType, Target};
pub use bindings::steward::policy::pd::{Member, PdCluster, Store};
pub use bindings::steward::policy::types::{
    CapacitySource, Claim, LocalVolume, LogLevel, Node, NodeDisks, NodeSelectorTerm, Owner, Pod,
    PoolColumns, PoolState, SelectorOperator, SelectorRequirement, StorageClass, Taint,
    TidbCluster, TidbComponent, Volume, Workload,
};
pub use cluster::PoolCapacity;
pub use settings::Settings;

/// Sends a line to the host's log, tagged with the policy id.
pub fn log(level: LogLevel, message: &str) {
    bindings::steward::policy::log::emit(level, message);
}
