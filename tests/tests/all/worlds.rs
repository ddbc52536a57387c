//! The guests build in one cargo invocation (`xtask::build_guests`) and
//! each component still implements one world and imports only its
//! interfaces. (`foreign_wit` and `reads_files` exist to be refused: see
//! the runtime tests.)

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
