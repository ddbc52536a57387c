//! The guests build in one cargo invocation (`xtask::build_guests`) and
//! each component still implements one world and imports only its
//! interfaces. (`foreign_wit` and `reads_files` exist to be refused: see
//! the runtime tests.) A guest built without Rust's `std` imports
//! Steward's interfaces alone and serves like any other.

use steward::extender::CandidateNodes;
use steward_tests::{guest, inspect_world};

#[test]
fn every_guest_imports_only_its_own_world() {
    let worlds: Vec<(&str, String)> = xtask::GUESTS
        .iter()
        .filter(|(_, stem)| !["foreign_wit", "reads_files"].contains(stem))
        .map(|&(_, stem)| (stem, inspect_world(&guest(stem))))
        .collect();
    for (stem, world) in &worlds {
        let expected = match *stem {
            "pd_quorum" | "local_pv" | "misbehave" => "scheduler",
            "local_storage_admission" | "tidb_guard" | "misbehave_admission" => "admission",
            "upgrade_gate" | "failover" => "reconcile",
            other => panic!("guest {other} has no expected world here"),
        };
        assert_eq!(world, expected, "{stem}");
    }
}

#[test]
fn a_guest_without_std_imports_only_stewards_interfaces_and_serves() {
    let wasm = std::fs::read(guest("lean_noop")).unwrap();
    let runtime = steward_tests::runtime();
    let (component, world) = runtime.load(&wasm).expect("the lean guest loads");
    assert_eq!(world.name(), "scheduler");
    let imports = runtime.interface(&component).imports;
    assert!(!imports.is_empty());
    for import in &imports {
        assert!(
            import.starts_with("steward:policy/"),
            "{import} in {imports:?}"
        );
    }

    let app = steward_tests::app("- id: lean\n  hook: scheduler\n  module: {lean_noop}\n");
    let names: Vec<String> = app
        .hooks
        .cluster
        .all_nodes()
        .into_iter()
        .map(|n| n.name)
        .collect();
    let pod = app.hooks.cluster.all_pods().into_iter().next().unwrap();
    let answer = app
        .hooks
        .extender
        .filter_pod(&pod, CandidateNodes::Names(names.clone()));
    assert_eq!(answer.error, "");
    assert!(answer.failed_nodes.is_empty(), "{:?}", answer.failed_nodes);
    assert_eq!(answer.node_names, Some(names));
}
