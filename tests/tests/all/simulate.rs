//! `steward simulate` on the bundled snapshot: 3 PD and 3 TiKV pods on the
//! seed's 4 nodes, quorum respected, reasons shown for refused nodes.

use std::collections::BTreeMap;

use steward::cli::simulate;
use steward_tests::{PD_QUORUM, app};

#[test]
fn the_seed_cluster_is_placed_without_breaking_quorum() {
    let app = app(PD_QUORUM);
    let placements = simulate::run(&app.hooks.extender);
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
            .hooks
            .cluster
            .all_nodes()
            .into_iter()
            .find(|x| x.name == n)
            .unwrap();
        node.unschedulable = true;
        app.hooks.cluster.upsert_node(node);
    }
    let placements = simulate::run(&app.hooks.extender);
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

/// `steward simulate --config deploy/examples/steward.yaml`: pd-quorum and
/// local-pv together, with the built guests in place of target/policies.
fn example_config_app() -> steward::server::App {
    use std::sync::Arc;
    use steward::cluster::{ClusterCache, load_snapshot};
    use steward::config::{ClusterSource, ModuleSource};
    let mut config =
        steward::config::Config::load(&steward_tests::root().join("deploy/examples/steward.yaml"))
            .expect("the example config loads");
    for p in &mut config.policies {
        let ModuleSource::File(path) = &p.module else {
            panic!("the example config names policy files");
        };
        let stem = path.file_stem().unwrap().to_str().unwrap().to_string();
        p.module = ModuleSource::File(steward_tests::guest(&stem));
    }
    assert_eq!(
        config
            .policies
            .iter()
            .map(|p| p.id.as_str())
            .collect::<Vec<_>>(),
        ["pd-quorum", "local-pv"]
    );
    let policies =
        steward_tests::load_policies(steward_tests::runtime(), &config).expect("policies load");
    let cluster = Arc::new(ClusterCache::default());
    let ClusterSource::Snapshot(path) = &config.cluster else {
        panic!("the example config serves a snapshot");
    };
    load_snapshot(&cluster, &config.resolve(path)).expect("snapshot loads");
    let hooks = steward::Hooks::new(policies, cluster, steward::cluster::Backend::Snapshot);
    steward::server::App::new(&config, hooks)
}

#[test]
fn the_example_config_places_the_seed_cluster_with_quorum_and_local_pools() {
    let app = example_config_app();
    let placements = simulate::run(&app.hooks.extender);
    let report = simulate::render(&placements);
    assert!(report.contains("placed 6 of 6 pending pods"), "{report}");
    // k8s-10-6-163-52 has no HDD pool: local-pv keeps every pod off it,
    // so PD and TiKV each take 51, 53 and 54 once.
    for p in &placements {
        assert_ne!(p.node.as_deref(), Some("k8s-10-6-163-52"), "{report}");
        assert_eq!(
            p.refused["k8s-10-6-163-52"],
            "local-pv: LocalStorageNode k8s-10-6-163-52 has no pool LocalStorage_PoolHDD (it has \
             none)",
            "{report}"
        );
    }
    let mut per_node: BTreeMap<(&str, String), u32> = BTreeMap::new();
    for p in &placements {
        let component = if p.pod.contains("-pd-") { "pd" } else { "tikv" };
        *per_node
            .entry((component, p.node.clone().unwrap()))
            .or_default() += 1;
    }
    assert_eq!(per_node.len(), 6, "{per_node:?}");
    assert!(per_node.values().all(|&n| n == 1), "{per_node:?}");
    // The third PD: two nodes refused by quorum, one by storage.
    let pd2 = placements
        .iter()
        .find(|p| p.pod == "tidb-cluster/basic-pd-2")
        .unwrap();
    assert_eq!(
        pd2.refused
            .values()
            .filter(|r| r.starts_with("pd-quorum:"))
            .count(),
        2,
        "{pd2:#?}"
    );
}
