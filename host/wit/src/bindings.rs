//! The wasmtime bindings, one module per world.

pub mod common {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "sdk-common",
    });
}

pub mod scheduler {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "scheduler",
        with: {
            "steward:policy/types": super::common::steward::policy::types,
            "steward:policy/cluster": super::common::steward::policy::cluster,
            "steward:policy/log": super::common::steward::policy::log,
        },
    });
}

/// PD access and the action vocabulary, shared by admission and reconcile.
pub mod pd_common {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "pd-common",
    });
}

pub mod admission {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "admission",
        with: {
            "steward:policy/types": super::common::steward::policy::types,
            "steward:policy/cluster": super::common::steward::policy::cluster,
            "steward:policy/log": super::common::steward::policy::log,
            "steward:policy/pd": super::pd_common::steward::policy::pd,
            "steward:policy/actions": super::pd_common::steward::policy::actions,
        },
    });
}

pub mod reconcile {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "reconcile",
        with: {
            "steward:policy/types": super::common::steward::policy::types,
            "steward:policy/cluster": super::common::steward::policy::cluster,
            "steward:policy/log": super::common::steward::policy::log,
            "steward:policy/pd": super::pd_common::steward::policy::pd,
            "steward:policy/actions": super::pd_common::steward::policy::actions,
        },
    });
}

pub use admission::steward::policy::reviewing::{
    AdmissionRequest, PatchOperation, UserInfo, Verdict,
};
pub use pd_common::steward::policy::actions::{Action, Annotation, EventType, Target};
pub use pd_common::steward::policy::pd::{Member, PdCluster, Store};
pub use reconcile::steward::policy::reconciling::{Plan, Replica, WorkloadState};

pub use common::steward::policy::types::{
    CapacitySource, Claim, LocalVolume, LogLevel, Node, NodeDisks, NodeSelectorTerm, Owner, Pod,
    PoolColumns, PoolState, SelectorOperator, SelectorRequirement, StorageClass, Taint,
    TidbCluster, TidbComponent, Volume, Workload,
};
pub use scheduler::steward::policy::scheduling::{
    Candidates, FilterResult, NodeScore, Rejection, SchedulerNeeds,
};
