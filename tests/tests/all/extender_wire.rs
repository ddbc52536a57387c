//! The filter/prioritize/preempt/bind wire format exactly as kube-scheduler
//! 1.20 sends it (fixtures in tests/fixtures/extender), answered in the mode
//! it was asked in.

use serde_json::Value;
use steward::extender::wire::{ExtenderArgs, ExtenderBindingArgs, ExtenderPreemptionArgs};
use steward_tests::{LOCAL_PV, PD_QUORUM, app, fixture_json};

const N51: &str = "k8s-10-6-163-51";
const N52: &str = "k8s-10-6-163-52";
const N53: &str = "k8s-10-6-163-53";
const N54: &str = "k8s-10-6-163-54";

/// The app with basic-pd-0 on node 51 and basic-pd-1 on node 53, so the
/// fixture's basic-pd-2 may only go to 52 or 54.
fn app_with_two_pds() -> steward::server::App {
    let app = app(PD_QUORUM);
    assert!(
        app.hooks
            .cluster
            .bind_in_place("tidb-cluster", "basic-pd-0", N51)
    );
    assert!(
        app.hooks
            .cluster
            .bind_in_place("tidb-cluster", "basic-pd-1", N53)
    );
    app
}

fn decode<T: serde::de::DeserializeOwned>(name: &str) -> T {
    serde_json::from_value(fixture_json(name)).expect("fixture decodes")
}

#[test]
fn full_node_list_is_answered_with_full_nodes() {
    let app = app_with_two_pds();
    let request = fixture_json("extender/filter-nodes.json");
    let args: ExtenderArgs = serde_json::from_value(request.clone()).unwrap();
    let answer = serde_json::to_value(app.hooks.extender.filter(args).unwrap()).unwrap();

    // Capitalised Go field names, NodeNames null in this mode.
    let keys: Vec<&str> = answer
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "Error",
            "FailedAndUnresolvableNodes",
            "FailedNodes",
            "NodeNames",
            "Nodes"
        ]
    );
    assert_eq!(answer["NodeNames"], Value::Null);
    assert_eq!(answer["Error"], "");
    // Accepted nodes come back verbatim, managedFields and all.
    let items = answer["Nodes"]["items"].as_array().unwrap();
    let names: Vec<&str> = items
        .iter()
        .map(|n| n["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, [N52, N54]);
    let original = request["Nodes"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["metadata"]["name"] == N52)
        .unwrap();
    assert_eq!(&items[0], original);
    assert!(items[0]["metadata"]["managedFields"].is_array());
    // Every refused node has a reason a person can act on.
    let failed = answer["FailedNodes"].as_object().unwrap();
    assert_eq!(failed.keys().collect::<Vec<_>>(), [N51, N53]);
    let reason = failed[N51].as_str().unwrap();
    assert!(
        reason.starts_with("pd-quorum: kubernetes.io/hostname=k8s-10-6-163-51 already has 1 pd pod(s) of basic; at most 1 of 3"),
        "{reason}"
    );
    // Quorum placement cannot be fixed by preemption.
    assert_eq!(answer["FailedAndUnresolvableNodes"], answer["FailedNodes"]);
}

#[test]
fn request_nodes_do_not_overwrite_what_the_cache_knows() {
    let app = app_with_two_pds();
    let mut request = fixture_json("extender/filter-nodes.json");
    // The request's copy of node 52 lost its hostname label; the cache's
    // (watch-delivered) copy still has it, and it is the one evaluated.
    let items = request["Nodes"]["items"].as_array_mut().unwrap();
    let n52 = items
        .iter_mut()
        .find(|n| n["metadata"]["name"] == N52)
        .unwrap();
    n52["metadata"]["labels"]
        .as_object_mut()
        .unwrap()
        .remove("kubernetes.io/hostname");
    let answer = app
        .hooks
        .extender
        .filter(serde_json::from_value(request).unwrap())
        .unwrap();
    let passing: Vec<String> = answer
        .nodes
        .unwrap()
        .items
        .into_iter()
        .map(|n| {
            let node: Value = serde_json::from_str(n.get()).unwrap();
            node["metadata"]["name"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(passing, [N52, N54], "52 and 54 still pass");
}

#[test]
fn node_names_are_answered_with_node_names() {
    let app = app_with_two_pds();
    let args: ExtenderArgs = decode("extender/filter-nodenames.json");
    let answer = serde_json::to_value(app.hooks.extender.filter(args).unwrap()).unwrap();
    assert_eq!(answer["Nodes"], Value::Null);
    assert_eq!(answer["NodeNames"], serde_json::json!([N52, N54]));
    assert_eq!(answer["FailedNodes"].as_object().unwrap().len(), 2);
}

#[test]
fn lower_case_field_names_decode_too() {
    // Go decodes case-insensitively; so does Steward.
    let mut request = fixture_json("extender/filter-nodenames.json");
    let obj = request.as_object_mut().unwrap();
    let pod = obj.remove("Pod").unwrap();
    let names = obj.remove("NodeNames").unwrap();
    obj.remove("Nodes");
    obj.insert("pod".into(), pod);
    obj.insert("nodenames".into(), names);
    let app = app_with_two_pds();
    let args: ExtenderArgs = serde_json::from_value(request).unwrap();
    let answer = app.hooks.extender.filter(args).unwrap();
    assert_eq!(answer.node_names.unwrap(), [N52, N54]);
}

#[test]
fn prioritize_answers_every_node_in_range_or_nothing_without_a_preference() {
    // pd-quorum only filters: no preference is an empty list, which
    // kube-scheduler reads as 0 for every node.
    let args: ExtenderArgs = decode("extender/prioritize-nodenames.json");
    let answer = app_with_two_pds().hooks.extender.prioritize(args).unwrap();
    assert_eq!(serde_json::to_value(answer).unwrap(), serde_json::json!([]));

    // local-pv scores the pod's local claims: an entry per node it
    // prefers, in the request's order.
    let app = app(&format!("{PD_QUORUM}{LOCAL_PV}"));
    let args: ExtenderArgs = decode("extender/prioritize-nodenames.json");
    let answer = serde_json::to_value(app.hooks.extender.prioritize(args).unwrap()).unwrap();
    let list = answer.as_array().unwrap();
    let hosts: Vec<&str> = list.iter().map(|e| e["Host"].as_str().unwrap()).collect();
    assert!(!hosts.is_empty());
    assert!(hosts.is_sorted(), "{hosts:?}");
    for entry in list {
        assert_eq!(
            entry.as_object().unwrap().keys().collect::<Vec<_>>(),
            ["Host", "Score"]
        );
        assert!((1..=10).contains(&entry["Score"].as_i64().unwrap()));
    }
}

#[test]
fn preempt_keeps_nodes_where_the_pod_would_fit() {
    let app = app_with_two_pds();
    // The fixture proposes evicting a batch job on node 53, which holds
    // basic-pd-1: evicting the job does not make room for a second PD.
    for file in [
        "extender/preempt-victims.json",
        "extender/preempt-metavictims.json",
    ] {
        let args: ExtenderPreemptionArgs = decode(file);
        let answer = serde_json::to_value(app.hooks.extender.preempt(args).unwrap()).unwrap();
        assert_eq!(
            answer,
            serde_json::json!({"NodeNameToMetaVictims": {}}),
            "{file}"
        );
    }
    // Node 54 holds no PD: the same victims there are accepted, echoed as uids.
    let mut request = fixture_json("extender/preempt-metavictims.json");
    let victims = request["NodeNameToMetaVictims"][N53].take();
    request["NodeNameToMetaVictims"] = serde_json::json!({ N54: victims.clone() });
    let answer = serde_json::to_value(
        app.hooks
            .extender
            .preempt(serde_json::from_value(request).unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(answer["NodeNameToMetaVictims"][N54], victims);
}

#[test]
fn preempting_a_member_of_the_same_component_frees_its_domain() {
    let app = app_with_two_pds();
    let pd1_uid = app
        .hooks
        .cluster
        .all_pods()
        .into_iter()
        .find(|p| p.name == "basic-pd-1")
        .unwrap()
        .uid;
    let mut request = fixture_json("extender/preempt-metavictims.json");
    request["NodeNameToMetaVictims"][N53]["Pods"] = serde_json::json!([{"UID": pd1_uid}]);
    let answer = app
        .hooks
        .extender
        .preempt(serde_json::from_value(request).unwrap())
        .unwrap();
    assert!(answer.node_name_to_meta_victims.contains_key(N53));
}

#[tokio::test]
async fn bind_places_the_pod_in_the_snapshot() {
    let app = app(PD_QUORUM);
    let args: ExtenderBindingArgs = decode("extender/bind.json");
    let answer = serde_json::to_value(app.hooks.extender.bind(args).await).unwrap();
    assert_eq!(answer, serde_json::json!({"Error": ""}));
    assert_eq!(
        app.hooks.cluster.pods_on(N54),
        [("tidb-cluster".to_string(), "basic-pd-2".to_string())]
    );
}
