//! Back-to-back scheduling: kube-scheduler binds asynchronously, so when the
//! next PD pod is filtered the watch may not show the previous one placed.
//! Steward counts pods it let through (and bound) before the watch does, and
//! reserves the pool capacity of their claims until the volumes exist.

use steward::extender::CandidateNodes;
use steward::wit::Pod;
use steward_tests::{LOCAL_PV, PD_QUORUM, app};

const NODES: [&str; 4] = [
    "k8s-10-6-163-51",
    "k8s-10-6-163-52",
    "k8s-10-6-163-53",
    "k8s-10-6-163-54",
];

fn all_nodes() -> CandidateNodes {
    CandidateNodes::Names(NODES.iter().map(|n| n.to_string()).collect())
}

fn pod(app: &steward::server::App, name: &str) -> Pod {
    app.hooks
        .cluster
        .all_pods()
        .into_iter()
        .find(|p| p.name == name)
        .expect("pod in snapshot")
}

/// Records that `pod` was bound to `node`, as Steward's bind does.
fn bind(app: &steward::server::App, pod: &Pod, node: &str) {
    app.hooks
        .cluster
        .record_binding(&pod.uid, &pod.namespace, &pod.name, node);
}

/// The nodes among `nodes` that the filter lets `pod` onto.
fn passing(app: &steward::server::App, pod: &Pod, nodes: CandidateNodes) -> Vec<String> {
    app.hooks
        .extender
        .filter_pod(pod, nodes)
        .node_names
        .expect("node names")
}

#[test]
fn a_pod_between_filter_and_bind_holds_back_the_next_member() {
    let app = app(PD_QUORUM);
    let pd0 = pod(&app, "basic-pd-0");
    assert_eq!(passing(&app, &pd0, all_nodes()).len(), 4);

    // pd-0 is now in flight: nobody knows which node kube-scheduler picks.
    let pd1 = pod(&app, "basic-pd-1");
    let second = app.hooks.extender.filter_pod(&pd1, all_nodes());
    assert_eq!(second.node_names.unwrap(), Vec::<String>::new());
    let reason = &second.failed_nodes[NODES[0]];
    assert!(
        reason.contains("waiting for pod tidb-cluster/basic-pd-0 to be bound"),
        "{reason}"
    );
    // Waiting is resolvable: kube-scheduler retries the pod.
    assert!(second.failed_and_unresolvable_nodes.is_empty());

    // A retry of pd-0 itself is not blocked by its own earlier attempt.
    assert_eq!(passing(&app, &pd0, all_nodes()).len(), 4);
}

#[test]
fn a_binding_counts_before_the_lagging_watch_shows_it() {
    let app = app(PD_QUORUM);
    let pd0 = pod(&app, "basic-pd-0");
    app.hooks.extender.filter_pod(&pd0, all_nodes());
    // Steward bound pd-0 to node 51; the watch has not delivered that yet:
    // the cached pod still has no node.
    bind(&app, &pd0, NODES[0]);
    assert_eq!(pod(&app, "basic-pd-0").node_name, None);

    let pd1 = pod(&app, "basic-pd-1");
    let second = app.hooks.extender.filter_pod(&pd1, all_nodes());
    assert_eq!(second.node_names.unwrap(), [NODES[1], NODES[2], NODES[3]]);
    assert!(second.failed_nodes[NODES[0]].contains("already has 1 pd pod(s)"));

    // The watch catches up: same answer, and the placement is retired.
    let mut caught_up = pd0.clone();
    caught_up.node_name = Some(NODES[0].to_string());
    app.hooks.cluster.upsert_pod(caught_up);
    assert_eq!(
        passing(&app, &pd1, all_nodes()),
        [NODES[1], NODES[2], NODES[3]]
    );
}

#[test]
fn a_pod_the_watch_has_not_delivered_at_all_still_counts() {
    let app = app(PD_QUORUM);
    let pd0 = pod(&app, "basic-pd-0");
    app.hooks.extender.filter_pod(&pd0, all_nodes());
    bind(&app, &pd0, NODES[2]);
    // The watch even missed pd-0's creation (deleted and recreated, say).
    app.hooks.cluster.remove_pod(&pd0.namespace, &pd0.name);
    app.hooks.extender.filter_pod(&pd0, all_nodes());
    bind(&app, &pd0, NODES[2]);

    let pd1 = pod(&app, "basic-pd-1");
    let second = app.hooks.extender.filter_pod(&pd1, all_nodes());
    assert!(second.failed_nodes[NODES[2]].contains("already has 1 pd pod(s)"));
}

#[test]
fn an_abandoned_placement_stops_holding_others_back() {
    let app = app(PD_QUORUM);
    let pd0 = pod(&app, "basic-pd-0");
    app.hooks.extender.filter_pod(&pd0, all_nodes());
    app.hooks.cluster.abandon_placement(&pd0.uid);
    let pd1 = pod(&app, "basic-pd-1");
    assert_eq!(passing(&app, &pd1, all_nodes()).len(), 4);
}

/// Claims of 300 GiB: each HDD pool (500 GiB) takes one of them only.
fn app_with_big_claims(
    cache: Option<std::sync::Arc<steward::cluster::ClusterCache>>,
) -> steward::server::App {
    let app = match cache {
        None => app(LOCAL_PV),
        Some(cache) => {
            let config = steward_tests::config(LOCAL_PV);
            let policies = steward_tests::load_policies(steward_tests::runtime(), &config)
                .expect("policies load");
            steward::cluster::load_snapshot(&cache, &steward_tests::example_snapshot())
                .expect("snapshot loads");
            let hooks = steward::Hooks::new(policies, cache, steward::cluster::Backend::Snapshot);
            steward::server::App::new(&config, hooks)
        }
    };
    let query = steward::cluster::ClusterQuery::new(app.hooks.cluster.clone());
    for name in ["pd-basic-pd-0", "pd-basic-pd-1"] {
        let mut claim = query
            .get_claim("tidb-cluster", name)
            .expect("claim in snapshot");
        claim.requested_bytes = 300 << 30;
        app.hooks.cluster.upsert_claim(claim);
    }
    app
}

fn only(node: &str) -> CandidateNodes {
    CandidateNodes::Names(vec![node.to_string()])
}

#[test]
fn capacity_taken_by_a_placed_pod_is_reserved_until_its_volume_exists() {
    let app = app_with_big_claims(None);
    let pd0 = pod(&app, "basic-pd-0");
    let pd1 = pod(&app, "basic-pd-1");
    assert_eq!(passing(&app, &pd0, only(NODES[0])), [NODES[0]]);
    // pd-0 is bound to 51; the watch lags: no node on the cached pod, its
    // claim Pending, the pool still reporting 500 GiB free.
    bind(&app, &pd0, NODES[0]);
    let second = app.hooks.extender.filter_pod(&pd1, all_nodes());
    assert_eq!(second.node_names.unwrap(), [NODES[2], NODES[3]]);
    assert_eq!(
        second.failed_nodes[NODES[0]],
        "local-pv: pool LocalStorage_PoolHDD on k8s-10-6-163-51 has 200 GiB free (500 GiB \
         reported, 300 GiB of it reserved for claims of pods placed there whose volumes do not \
         exist yet); the pod's new claims need 300 GiB"
    );
    // The reservation may lapse: kube-scheduler retries, it is resolvable.
    assert!(!second.failed_and_unresolvable_nodes.contains_key(NODES[0]));
    // pd-0's own retry does not count its own reservation.
    assert_eq!(passing(&app, &pd0, only(NODES[0])), [NODES[0]]);

    // The volume appears: the claim is bound to a PV the cache holds, so the
    // pool's own figures count it from now on and the reservation ends.
    let query = steward::cluster::ClusterQuery::new(app.hooks.cluster.clone());
    let mut claim = query.get_claim("tidb-cluster", "pd-basic-pd-0").unwrap();
    claim.phase = "Bound".into();
    claim.volume_name = Some("pvc-pd-0".into());
    app.hooks.cluster.upsert_claim(claim);
    app.hooks.cluster.upsert_volume(steward::wit::Volume {
        name: "pvc-pd-0".into(),
        labels: Vec::new(),
        annotations: Vec::new(),
        capacity_bytes: 300 << 30,
        storage_class: Some("hwameistor-storage-lvm-hdd".into()),
        phase: "Bound".into(),
        claim: Some(("tidb-cluster".into(), "pd-basic-pd-0".into())),
        csi_driver: Some("lvm.hwameistor.io".into()),
        csi_handle: Some("pvc-pd-0".into()),
        local_path: None,
        node_affinity: Vec::new(),
    });
    assert_eq!(passing(&app, &pd1, only(NODES[0])), [NODES[0]]);
}

#[test]
fn a_pod_in_flight_holds_its_claims_on_every_node_it_passed() {
    let app = app_with_big_claims(None);
    let pd0 = pod(&app, "basic-pd-0");
    let pd1 = pod(&app, "basic-pd-1");
    assert_eq!(
        passing(&app, &pd0, all_nodes()),
        [NODES[0], NODES[2], NODES[3]]
    );
    // Nobody knows yet which of the three pd-0 lands on.
    let second = app.hooks.extender.filter_pod(&pd1, all_nodes());
    assert_eq!(second.node_names.unwrap(), Vec::<String>::new());
    assert!(second.failed_nodes[NODES[3]].contains("300 GiB of it reserved"));
    // Bound to 54: the other two are free again.
    bind(&app, &pd0, NODES[3]);
    assert_eq!(passing(&app, &pd1, all_nodes()), [NODES[0], NODES[2]]);
    // A failed binding gives the capacity back.
    app.hooks.cluster.abandon_placement(&pd0.uid);
    assert_eq!(
        passing(&app, &pd1, all_nodes()),
        [NODES[0], NODES[2], NODES[3]]
    );
}

#[test]
fn a_reservation_expires_with_the_in_flight_ttl() {
    let cache = std::sync::Arc::new(steward::cluster::ClusterCache::new(
        std::time::Duration::from_millis(200),
    ));
    let app = app_with_big_claims(Some(cache));
    let pd0 = pod(&app, "basic-pd-0");
    let pd1 = pod(&app, "basic-pd-1");
    app.hooks.extender.filter_pod(&pd0, only(NODES[0]));
    bind(&app, &pd0, NODES[0]);
    assert!(passing(&app, &pd1, only(NODES[0])).is_empty());
    std::thread::sleep(std::time::Duration::from_millis(250));
    assert_eq!(passing(&app, &pd1, only(NODES[0])), [NODES[0]]);
}
