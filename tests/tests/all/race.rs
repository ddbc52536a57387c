//! Back-to-back scheduling: kube-scheduler binds asynchronously, so when the
//! next PD pod is filtered the watch may not show the previous one placed.
//! Steward counts pods it let through (and bound) before the watch does, and
//! reserves the pool capacity of their claims until the pools count the
//! volumes. A member in flight counts in every domain it may land in until
//! its claim names the node kube-scheduler chose or it is bound; a filter
//! that can place nobody because of members in flight waits for them.

use steward::cluster::SELECTED_NODE_ANNOTATION;
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
        reason.contains("and basic-pd-0 may still land there"),
        "{reason}"
    );
    // Waiting is resolvable: kube-scheduler retries the pod.
    assert!(second.failed_and_unresolvable_nodes.is_empty());

    // A retry of pd-0 itself is not blocked by its own earlier attempt.
    assert_eq!(passing(&app, &pd0, all_nodes()).len(), 4);
}

/// What kube-scheduler's volume binding does in PreBind, before it waits
/// for the volume: names the chosen node on the pod's claim.
fn select_node(app: &steward::server::App, claim: &str, node: &str) {
    let query = steward::cluster::ClusterQuery::new(app.hooks.cluster.clone());
    let mut claim = query
        .get_claim("tidb-cluster", claim)
        .expect("claim in snapshot");
    claim
        .annotations
        .retain(|(k, _)| k != SELECTED_NODE_ANNOTATION);
    claim
        .annotations
        .push((SELECTED_NODE_ANNOTATION.into(), node.into()));
    app.hooks.cluster.upsert_claim(claim);
}

#[test]
fn a_claims_selected_node_places_the_member_before_its_bind() {
    let app = app(PD_QUORUM);
    let pd0 = pod(&app, "basic-pd-0");
    let pd1 = pod(&app, "basic-pd-1");
    assert_eq!(passing(&app, &pd0, all_nodes()).len(), 4);
    assert!(passing(&app, &pd1, all_nodes()).is_empty());
    // kube-scheduler chose node 52 for pd-0: its claim says so long before
    // the volume exists and the pod is bound.
    select_node(&app, "pd-basic-pd-0", NODES[1]);
    let second = app.hooks.extender.filter_pod(&pd1, all_nodes());
    assert_eq!(second.node_names.unwrap(), [NODES[0], NODES[2], NODES[3]]);
    assert!(second.failed_nodes[NODES[1]].contains("already has 1 pd pod(s)"));
}

#[test]
fn a_selected_node_left_from_an_earlier_attempt_says_nothing() {
    let app = app(PD_QUORUM);
    let pd0 = pod(&app, "basic-pd-0");
    let pd1 = pod(&app, "basic-pd-1");
    // An earlier attempt of pd-0 chose 52, then failed.
    select_node(&app, "pd-basic-pd-0", NODES[1]);
    assert_eq!(passing(&app, &pd0, all_nodes()).len(), 4);
    // A relist delivers the claim unchanged: pd-0 is still in flight.
    select_node(&app, "pd-basic-pd-0", NODES[1]);
    assert!(passing(&app, &pd1, all_nodes()).is_empty());
    // This attempt chooses 53.
    select_node(&app, "pd-basic-pd-0", NODES[2]);
    assert_eq!(
        passing(&app, &pd1, all_nodes()),
        [NODES[0], NODES[1], NODES[3]]
    );
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

/// The snapshot's LocalStorageNode of `node` with `used` bytes of its HDD
/// pool in use by one volume: what HwameiStor reports once it counts it.
fn storage_node_using(node: &str, used: u64) -> serde_json::Value {
    let objects = steward::cluster::read_documents(&steward_tests::example_snapshot()).unwrap();
    let mut lsn = objects
        .into_iter()
        .find(|o| o["kind"] == "LocalStorageNode" && o["metadata"]["name"] == node)
        .expect("the node's LocalStorageNode is in the snapshot");
    let pool = &mut lsn["status"]["pools"]["LocalStorage_PoolHDD"];
    let total = pool["totalCapacityBytes"].as_u64().unwrap();
    pool["usedCapacityBytes"] = used.into();
    pool["freeCapacityBytes"] = (total - used).into();
    pool["usedVolumeCount"] = 1.into();
    lsn
}

/// Two pods back to back against one pool that fits only one: the second
/// is kept off the pool from the first one's placement until the pool's
/// own figures count the first one's volume, even after the volume exists.
#[test]
fn capacity_taken_by_a_placed_pod_is_reserved_until_its_pool_reports_it() {
    let app = app_with_big_claims(None);
    let pd0 = pod(&app, "basic-pd-0");
    let pd1 = pod(&app, "basic-pd-1");
    assert_eq!(passing(&app, &pd0, only(NODES[0])), [NODES[0]]);
    // pd-0 is bound to 51; the watch lags: no node on the cached pod, its
    // claim Pending, the pool still reporting 500 GiB free.
    bind(&app, &pd0, NODES[0]);
    let reserved = "local-pv: pool LocalStorage_PoolHDD on k8s-10-6-163-51 has 200 GiB free (500 \
                    GiB reported, 300 GiB of it reserved for claims of pods placed there whose \
                    volumes the source does not count yet); the pod's new claims need 300 GiB";
    let second = app.hooks.extender.filter_pod(&pd1, all_nodes());
    assert_eq!(second.node_names.unwrap(), [NODES[2], NODES[3]]);
    assert_eq!(second.failed_nodes[NODES[0]], reserved);
    // The reservation may lapse: kube-scheduler retries, it is resolvable.
    assert!(!second.failed_and_unresolvable_nodes.contains_key(NODES[0]));
    // pd-0's own retry does not count its own reservation.
    assert_eq!(passing(&app, &pd0, only(NODES[0])), [NODES[0]]);

    // The volume appears (the claim is bound to a PV the cache holds), but
    // HwameiStor's LocalStorageNode does not count it yet: still reserved.
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
    let third = app.hooks.extender.filter_pod(&pd1, only(NODES[0]));
    assert_eq!(third.failed_nodes[NODES[0]], reserved);

    // The pool reports the volume: its own figures keep pd-1 off, and the
    // reservation no longer counts on top of them.
    app.hooks
        .cluster
        .upsert_storage_node(&storage_node_using(NODES[0], 300 << 30));
    let fourth = app.hooks.extender.filter_pod(&pd1, only(NODES[0]));
    assert_eq!(
        fourth.failed_nodes[NODES[0]],
        "local-pv: pool LocalStorage_PoolHDD on k8s-10-6-163-51 has 200 GiB free; the pod's new \
         claims need 300 GiB"
    );
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

/// A filter fixture of basic-pd-2 on the four nodes as kube-scheduler sends
/// it (`filter-nodenames.json`: `nodeCacheCapable`, `filter-nodes.json`:
/// full nodes), with the snapshot's uid of the pod and, when given, the
/// PodScheduled condition of a failed attempt.
fn pd2_filter_body(
    app: &steward::server::App,
    fixture: &str,
    failure: Option<(&str, &str)>,
) -> axum::body::Bytes {
    let mut request = steward_tests::fixture_json(fixture);
    request["Pod"]["metadata"]["uid"] = pod(app, "basic-pd-2").uid.into();
    if let Some((reason, message)) = failure {
        request["Pod"]["status"]["conditions"] = serde_json::json!([{
            "type": "PodScheduled", "status": "False", "reason": reason, "message": message,
        }]);
    }
    serde_json::to_vec(&request).unwrap().into()
}

/// An extender over the app's policies and cache whose filters wait up to
/// `wait` for pods in flight.
fn extender_waiting(
    app: &steward::server::App,
    wait: std::time::Duration,
) -> std::sync::Arc<steward::extender::Extender> {
    let hooks = &app.hooks;
    let mut extender = steward::extender::Extender::new(
        hooks.extender.policies.clone(),
        hooks.cluster.clone(),
        hooks.metrics.clone(),
        hooks.extender.backend.clone(),
    );
    extender.filter_wait = wait;
    std::sync::Arc::new(extender)
}

/// Serves one filter request as the HTTP endpoint does; the answer.
async fn serve_filter(
    app: steward::server::App,
    extender: std::sync::Arc<steward::extender::Extender>,
    body: axum::body::Bytes,
) -> serde_json::Value {
    let answer = extender
        .serve_filter(&app.hooks.budgets.extender, body)
        .await
        .expect("the evaluation ran")
        .expect("the request is valid");
    serde_json::from_slice(&answer).unwrap()
}

/// Filters that started waiting for pods in flight so far.
fn filter_waits(app: &steward::server::App) -> u64 {
    let text = app.hooks.metrics.encode();
    text.lines()
        .find_map(|l| l.strip_prefix("steward_filter_waits_total "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

const NODE_NAMES: &str = "extender/filter-nodenames.json";

/// The names of the nodes a filter answer lets through, in either mode.
fn answered_nodes(answer: &serde_json::Value) -> Vec<String> {
    match answer["NodeNames"].as_array() {
        Some(names) => names.iter().map(|n| n.as_str().unwrap().into()).collect(),
        None => answer["Nodes"]["items"]
            .as_array()
            .expect("NodeNames or Nodes")
            .iter()
            .map(|n| n["metadata"]["name"].as_str().unwrap().into())
            .collect(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filter_waits_for_the_member_in_flight_then_counts_it() {
    for fixture in [NODE_NAMES, "extender/filter-nodes.json"] {
        let app = app(PD_QUORUM);
        let pd0 = pod(&app, "basic-pd-0");
        assert_eq!(passing(&app, &pd0, all_nodes()).len(), 4);
        // pd-2's filter finds pd-0 in flight and waits (holding no permit).
        let extender = extender_waiting(&app, std::time::Duration::from_secs(4));
        let body = pd2_filter_body(&app, fixture, None);
        let pd2 = tokio::spawn(serve_filter(app.clone(), extender, body));
        steward_tests::wait_for(std::time::Duration::from_secs(60), || async {
            (filter_waits(&app) == 1).then_some(())
        })
        .await
        .expect("pd-2's filter waits for pd-0");
        // pd-0 is bound: pd-2's answer counts it there.
        bind(&app, &pd0, NODES[0]);
        let answer = pd2.await.unwrap();
        assert_eq!(
            answered_nodes(&answer),
            [NODES[1], NODES[2], NODES[3]],
            "{fixture}"
        );
        let reason = answer["FailedNodes"][NODES[0]].as_str().unwrap();
        assert!(
            reason.contains("already has 1 pd pod(s)"),
            "{fixture}: {reason}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_still_refused_when_its_wait_ends_is_requeued_once_the_member_binds() {
    let app = app(PD_QUORUM);
    let pd0 = pod(&app, "basic-pd-0");
    assert_eq!(passing(&app, &pd0, all_nodes()).len(), 4);
    let extender = extender_waiting(&app, std::time::Duration::ZERO);
    let answer = serve_filter(
        app.clone(),
        extender,
        pd2_filter_body(&app, NODE_NAMES, None),
    )
    .await;
    assert_eq!(answer["NodeNames"], serde_json::json!([]));
    let reason = answer["FailedNodes"][NODES[0]].as_str().unwrap();
    assert!(
        reason.contains("and basic-pd-0 may still land there"),
        "{reason}"
    );
    // Nothing to requeue while pd-0 is in flight; once it is bound, pd-2.
    assert!(app.hooks.cluster.take_requeue().is_empty());
    bind(&app, &pd0, NODES[0]);
    assert_eq!(
        app.hooks.cluster.take_requeue(),
        [("tidb-cluster".to_string(), "basic-pd-2".to_string())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_placement_that_fails_after_the_filter_releases_its_hold_at_once() {
    let app = app(PD_QUORUM);
    let pd1 = pod(&app, "basic-pd-1");
    let pd2 = pod(&app, "basic-pd-2");
    // pd-2's earlier attempt failed; kube-scheduler tries it again.
    let earlier = (
        "Unschedulable",
        "0/4 nodes are available: 4 node(s) were unschedulable.",
    );
    let answer = serve_filter(
        app.clone(),
        extender_waiting(&app, std::time::Duration::ZERO),
        pd2_filter_body(&app, NODE_NAMES, Some(earlier)),
    )
    .await;
    assert_eq!(answer["NodeNames"].as_array().unwrap().len(), 4);
    // The watch shows the earlier failure late: pd-2 is still in flight.
    let cluster = &app.hooks.cluster;
    cluster.observe_scheduling(&pd2.uid, Some(format!("{}: {}", earlier.0, earlier.1)));
    let held = app.hooks.extender.filter_pod(&pd1, all_nodes());
    assert_eq!(held.node_names.unwrap(), Vec::<String>::new());
    // This attempt fails in PreBind: pd-1 goes ahead at once.
    cluster.observe_scheduling(
        &pd2.uid,
        Some(
            "SchedulerError: running PreBind plugin \"VolumeBinding\": binding volumes: timed out \
             waiting for the condition"
                .into(),
        ),
    );
    assert_eq!(passing(&app, &pd1, all_nodes()).len(), 4);
}
