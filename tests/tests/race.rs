//! Back-to-back scheduling: kube-scheduler binds asynchronously, so when the
//! next PD pod is filtered the watch may not show the previous one placed.
//! Steward counts pods it let through (and bound) before the watch does.

use steward::extender::CandidateNodes;
use steward::runtime::Pod;
use steward_tests::{PD_QUORUM, app};

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
    app.cluster
        .all_pods()
        .into_iter()
        .find(|p| p.name == name)
        .expect("pod in snapshot")
}

#[test]
fn a_pod_between_filter_and_bind_holds_back_the_next_member() {
    let app = app(PD_QUORUM);
    let pd0 = pod(&app, "basic-pd-0");
    let first = app.extender.filter_pod(&pd0, all_nodes());
    assert_eq!(first.node_names.unwrap().len(), 4);

    // pd-0 is now in flight: nobody knows which node kube-scheduler picks.
    let pd1 = pod(&app, "basic-pd-1");
    let second = app.extender.filter_pod(&pd1, all_nodes());
    assert_eq!(second.node_names.unwrap(), Vec::<String>::new());
    let reason = &second.failed_nodes[NODES[0]];
    assert!(
        reason.contains("waiting for pod tidb-cluster/basic-pd-0 to be bound"),
        "{reason}"
    );
    // Waiting is resolvable: kube-scheduler retries the pod.
    assert!(second.failed_and_unresolvable_nodes.is_empty());

    // A retry of pd-0 itself is not blocked by its own earlier attempt.
    let retry = app.extender.filter_pod(&pd0, all_nodes());
    assert_eq!(retry.node_names.unwrap().len(), 4);
}

#[test]
fn a_binding_counts_before_the_lagging_watch_shows_it() {
    let app = app(PD_QUORUM);
    let pd0 = pod(&app, "basic-pd-0");
    app.extender.filter_pod(&pd0, all_nodes());
    // Steward bound pd-0 to node 51; the watch has not delivered that yet:
    // the cached pod still has no node.
    app.cluster
        .record_binding(&pd0.uid, &pd0.namespace, &pd0.name, NODES[0]);
    assert_eq!(pod(&app, "basic-pd-0").node_name, None);

    let pd1 = pod(&app, "basic-pd-1");
    let second = app.extender.filter_pod(&pd1, all_nodes());
    assert_eq!(second.node_names.unwrap(), [NODES[1], NODES[2], NODES[3]]);
    assert!(second.failed_nodes[NODES[0]].contains("already has 1 pd pod(s)"));

    // The watch catches up: same answer, and the placement is retired.
    let mut caught_up = pd0.clone();
    caught_up.node_name = Some(NODES[0].to_string());
    app.cluster.upsert_pod(caught_up);
    let again = app.extender.filter_pod(&pd1, all_nodes());
    assert_eq!(again.node_names.unwrap(), [NODES[1], NODES[2], NODES[3]]);
}

#[test]
fn a_pod_the_watch_has_not_delivered_at_all_still_counts() {
    let app = app(PD_QUORUM);
    let pd0 = pod(&app, "basic-pd-0");
    app.extender.filter_pod(&pd0, all_nodes());
    app.cluster
        .record_binding(&pd0.uid, &pd0.namespace, &pd0.name, NODES[2]);
    // The watch even missed pd-0's creation (deleted and recreated, say).
    app.cluster.remove_pod(&pd0.namespace, &pd0.name);
    app.extender.filter_pod(&pd0, all_nodes());
    app.cluster
        .record_binding(&pd0.uid, &pd0.namespace, &pd0.name, NODES[2]);

    let pd1 = pod(&app, "basic-pd-1");
    let second = app.extender.filter_pod(&pd1, all_nodes());
    assert!(second.failed_nodes[NODES[2]].contains("already has 1 pd pod(s)"));
}

#[test]
fn an_abandoned_placement_stops_holding_others_back() {
    let app = app(PD_QUORUM);
    let pd0 = pod(&app, "basic-pd-0");
    app.extender.filter_pod(&pd0, all_nodes());
    app.cluster.abandon_placement(&pd0.uid);
    let pd1 = pod(&app, "basic-pd-1");
    assert_eq!(
        app.extender
            .filter_pod(&pd1, all_nodes())
            .node_names
            .unwrap()
            .len(),
        4
    );
}
