//! `steward simulate` on the bundled snapshot: 3 PD and 3 TiKV pods on the
//! seed's 4 nodes, quorum respected, reasons shown for refused nodes.

use std::collections::BTreeMap;

use steward::simulate;
use steward_tests::{PD_QUORUM, app};

#[test]
fn the_seed_cluster_is_placed_without_breaking_quorum() {
    let app = app(PD_QUORUM);
    let placements = simulate::run(&app.extender);
    assert_eq!(placements.len(), 6, "{placements:#?}");
    let mut per_node: BTreeMap<(&str, String), u32> = BTreeMap::new();
    for p in &placements {
        let node = p
            .node
            .clone()
            .unwrap_or_else(|| panic!("{} was not placed: {p:#?}", p.pod));
        let component = if p.pod.contains("-pd-") { "pd" } else { "tikv" };
        *per_node.entry((component, node)).or_default() += 1;
    }
    // 3 replicas: at most one PD and one TiKV per node.
    assert!(per_node.values().all(|&n| n == 1), "{per_node:?}");
    assert_eq!(per_node.keys().filter(|(c, _)| *c == "pd").count(), 3);
    assert_eq!(per_node.keys().filter(|(c, _)| *c == "tikv").count(), 3);

    // The third PD saw two nodes refused, each with the quorum reason.
    let pd2 = placements
        .iter()
        .find(|p| p.pod == "tidb-cluster/basic-pd-2")
        .unwrap();
    assert_eq!(pd2.refused.len(), 2, "{pd2:#?}");
    assert!(
        pd2.refused
            .values()
            .all(|r| r.contains("at most 1 of 3 may share a domain"))
    );

    let report = simulate::render(&placements);
    assert!(report.contains("placed 6 of 6 pending pods"), "{report}");
    assert!(
        report.contains("refused k8s-10-6-163-51: pd-quorum:"),
        "{report}"
    );
}

#[test]
fn a_fourth_node_less_cluster_leaves_pods_pending_with_reasons() {
    let app = app(PD_QUORUM);
    // Cordon two nodes: only two remain for three PDs.
    for n in ["k8s-10-6-163-53", "k8s-10-6-163-54"] {
        let mut node = app
            .cluster
            .all_nodes()
            .into_iter()
            .find(|x| x.name == n)
            .unwrap();
        node.unschedulable = true;
        app.cluster.upsert_node(node);
    }
    let placements = simulate::run(&app.extender);
    let pd2 = placements
        .iter()
        .find(|p| p.pod == "tidb-cluster/basic-pd-2")
        .unwrap();
    assert_eq!(pd2.node, None);
    assert_eq!(
        pd2.refused["k8s-10-6-163-53"],
        "kube-scheduler: node is cordoned"
    );
    assert!(pd2.refused["k8s-10-6-163-51"].contains("pd-quorum"));
}
