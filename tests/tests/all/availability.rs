//! Policies and the kinds they need: a policy whose capacity source's kinds
//! the API server does not serve is degraded in `/status` (naming the
//! CRD), and `/readyz` waits only for the kinds of policies that are not.

use std::collections::BTreeSet;
use std::sync::Arc;

use steward::Hooks;
use steward::cluster::kinds::{KindState, OptionalKind};
use steward::cluster::{Backend, ClusterCache};
use steward::reload::status::{PolicyStatus, Report, State};
use steward_tests::{LOCAL_PV, PD_QUORUM, config, load_policies, runtime};

const CSI_LOCAL_PV: &str = "- id: local-pv-csi\n  hook: scheduler\n  module: {local_pv}\n  \
                            settings: {capacitySource: csiStorageCapacity}\n";

/// Hooks over a cache fed by watches that have listed nothing optional yet,
/// with every policy reported serving by the reloader.
fn hooks(policies: &str) -> Hooks {
    let config = config(policies);
    let set = load_policies(runtime(), &config).expect("policies load");
    let cluster = Arc::new(ClusterCache::default());
    cluster.mark_watched();
    let hooks = Hooks::new(set, cluster, Backend::Snapshot);
    let serving = |id: &str| PolicyStatus {
        id: id.into(),
        hook: "scheduler".into(),
        source: "test".into(),
        state: State::Serving,
        digest: None,
        resolved: None,
        version: None,
        signed_by: None,
        generation: 1,
        loaded_at: None,
        last_error: None,
        last_error_at: None,
        missing_kinds: None,
    };
    hooks.status.set(Report {
        policies: config.policies.iter().map(|p| serving(&p.id)).collect(),
        ..Report::default()
    });
    hooks
}

fn state_of(hooks: &Hooks, id: &str) -> (State, Option<String>) {
    let report = hooks.status_report();
    let p = report.policies.iter().find(|p| p.id == id).unwrap();
    (p.state, p.missing_kinds.clone())
}

const HWAMEISTOR: [OptionalKind; 3] = [
    OptionalKind::LocalStorageNode,
    OptionalKind::LocalDiskNode,
    OptionalKind::LocalVolume,
];

#[test]
fn only_the_capacity_sources_of_configured_policies_are_wanted() {
    let wanted = |policies: &str| -> BTreeSet<OptionalKind> {
        hooks(policies)
            .extender
            .policies
            .wanted_kinds()
            .borrow()
            .clone()
    };
    let tidb_operator = BTreeSet::from(OptionalKind::TIDB_OPERATOR);
    assert_eq!(
        wanted(PD_QUORUM),
        tidb_operator,
        "pd-quorum reads no capacity, and tidb-operator's kinds where served"
    );
    assert_eq!(
        wanted(&format!("{PD_QUORUM}{LOCAL_PV}")),
        &tidb_operator | &BTreeSet::from(HWAMEISTOR)
    );
    assert_eq!(
        wanted(CSI_LOCAL_PV),
        BTreeSet::from([OptionalKind::CsiStorageCapacity])
    );
}

/// Marks every kind of `kinds` as the API server's discovery found it.
fn discovered(hooks: &Hooks, kinds: &[OptionalKind], state: KindState) {
    for &kind in kinds {
        hooks.cluster.clear_kind(kind, state);
    }
}

#[test]
fn pd_quorum_alone_is_ready_without_tidb_operators_crds() {
    let hooks = hooks(PD_QUORUM);
    assert_eq!(
        hooks.readiness(),
        Err("the cluster cache has not synced yet".into())
    );
    hooks.cluster.mark_synced();
    assert_eq!(
        hooks.readiness(),
        Err("policy pd-quorum waits for the initial list of TidbCluster".into()),
        "discovery has not answered yet"
    );
    discovered(&hooks, &OptionalKind::TIDB_OPERATOR, KindState::NotServed);
    assert_eq!(hooks.readiness(), Ok(()));
    assert_eq!(
        state_of(&hooks, "pd-quorum"),
        (State::Serving, None),
        "tidb-operator's kinds are read where served, never missed"
    );
    // Served: ready once listed.
    discovered(&hooks, &[OptionalKind::TidbCluster], KindState::Listing);
    assert!(hooks.readiness().is_err());
    discovered(&hooks, &OptionalKind::TIDB_OPERATOR, KindState::Synced);
    assert_eq!(hooks.readiness(), Ok(()));
}

#[test]
fn a_policy_whose_crds_are_absent_is_degraded_and_does_not_hold_readiness() {
    let hooks = hooks(&format!("{PD_QUORUM}{LOCAL_PV}"));
    hooks.cluster.mark_synced();
    discovered(&hooks, &OptionalKind::TIDB_OPERATOR, KindState::NotServed);
    // Discovery has not answered yet: local-pv's kinds are being listed.
    assert_eq!(
        hooks.readiness(),
        Err("policy local-pv waits for the initial list of LocalStorageNode".into())
    );
    discovered(&hooks, &HWAMEISTOR, KindState::NotServed);
    assert_eq!(
        hooks.readiness(),
        Ok(()),
        "only the degraded policy lacks kinds"
    );
    let (state, why) = state_of(&hooks, "local-pv");
    assert_eq!(state, State::Degraded);
    let why = why.unwrap();
    for crd in [
        "localstoragenodes.hwameistor.io",
        "localdisknodes.hwameistor.io",
        "localvolumes.hwameistor.io",
    ] {
        assert!(why.contains(crd), "{why}");
    }
    assert_eq!(state_of(&hooks, "pd-quorum"), (State::Serving, None));

    // The CRDs are installed: listed one by one, then serving.
    hooks
        .cluster
        .set_kind_state(OptionalKind::LocalStorageNode, KindState::Synced);
    assert_eq!(state_of(&hooks, "local-pv").0, State::Degraded);
    discovered(&hooks, &HWAMEISTOR, KindState::Synced);
    assert_eq!(state_of(&hooks, "local-pv"), (State::Serving, None));
    assert_eq!(hooks.readiness(), Ok(()));
}

#[test]
fn a_snapshot_holds_every_kind_it_will_ever_hold() {
    let config = config(&format!("{PD_QUORUM}{LOCAL_PV}"));
    let set = load_policies(runtime(), &config).expect("policies load");
    let cluster = Arc::new(ClusterCache::default());
    cluster.mark_synced();
    let hooks = Hooks::new(set, cluster, Backend::Snapshot);
    assert_eq!(hooks.readiness(), Ok(()));
}
