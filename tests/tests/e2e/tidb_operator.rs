//! Steward in place of tidb-scheduler on a tidb-operator v1 cluster: it
//! reads the TidbCluster (topology key annotation, replicas, delete slots)
//! and resolves pods owned by an Advanced StatefulSet. tidb-operator's CRDs
//! are ours (`tests/control-plane/tidb-operator-crds.yaml`, the fields
//! Steward reads); no tidb-operator runs, so the test plays its part.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use steward::cluster::ClusterQuery;
use steward::server::App;
use steward_tests::control_plane::doubles::Doubles;
use steward_tests::control_plane::{ControlPlane, KubeVersion};
use steward_tests::e2e::{
    SCHEDULER_NAME, create, eventually, install_crds, scenario, scheduling_refusal,
};

use crate::sources::{
    NAMESPACE, PD_QUORUM, ZONE, bare_cluster, pd_nodes, pd_statefulset, serve, write_config,
};

/// Two nodes in zone-a, one in zone-b, one in zone-c.
const NODES: [(&str, Option<&str>); 4] = [
    ("a1", Some("zone-a")),
    ("a2", Some("zone-a")),
    ("b1", Some("zone-b")),
    ("c1", Some("zone-c")),
];

fn zone_of(node: &str) -> &'static str {
    NODES
        .iter()
        .find(|(n, _)| *n == node)
        .and_then(|(_, z)| *z)
        .unwrap_or("none")
}

/// A TidbCluster `basic` whose PD has `replicas`, annotated with the zone
/// topology key and `annotations`.
fn tidb_cluster(replicas: u32, annotations: Value) -> Value {
    let mut all = json!({"pingcap.com/ha-topology-key": ZONE});
    all.as_object_mut()
        .expect("an object")
        .extend(annotations.as_object().cloned().unwrap_or_default());
    json!({
        "apiVersion": "pingcap.com/v1alpha1", "kind": "TidbCluster",
        "metadata": {"name": "basic", "namespace": NAMESPACE, "annotations": all},
        "spec": {"schedulerName": SCHEDULER_NAME, "pd": {"replicas": replicas}},
    })
}

/// Waits until Steward's cache holds `basic`'s TidbCluster (so the first
/// pod is already placed by it).
async fn steward_sees_tidb_cluster(app: &App) -> Result<()> {
    let query = ClusterQuery::new(app.hooks.cluster.clone());
    eventually(
        Duration::from_secs(30),
        "the TidbCluster in Steward's cache",
        || async { Ok(query.get_tidb_cluster(NAMESPACE, "basic").map(|_| ())) },
    )
    .await
}

/// Steward (pd-quorum only) on a control plane with tidb-operator's CRDs,
/// the zoned nodes, kube-scheduler and the kubelet double.
struct Running {
    app: App,
    _doubles: Doubles,
    control_plane: ControlPlane,
}

async fn start(version: KubeVersion) -> Result<(Running, Client)> {
    let (mut control_plane, kubeconfig) = bare_cluster(version, &NODES).await?;
    let client = control_plane.client.clone();
    install_crds(
        &client,
        &steward_tests::root().join("tests/control-plane/tidb-operator-crds.yaml"),
    )
    .await?;
    // pd-quorum without a topologyKey: the TidbCluster's annotation decides.
    let file = control_plane.dir.join("steward.yaml");
    write_config(&file, &kubeconfig, &[PD_QUORUM])?;
    let (app, addr) = serve(&file).await?;
    control_plane.start_scheduler(addr).await?;
    let doubles = Doubles::start(&client, &[]);
    Ok((
        Running {
            app,
            _doubles: doubles,
            control_plane,
        },
        client,
    ))
}

/// A TidbCluster annotated `pingcap.com/ha-topology-key:
/// topology.kubernetes.io/zone`, Steward's pd-quorum without a
/// `topologyKey`: its PD StatefulSet goes one member per zone, and a fourth
/// member (four nodes, three zones) waits with the zone rule in its event.
#[test]
fn a_tidb_clusters_zone_annotation_places_pd_per_zone() {
    scenario(
        "a_tidb_clusters_zone_annotation_places_pd_per_zone",
        |version| async move {
            let (mut running, client) = start(version).await?;
            create(&client, tidb_cluster(4, json!({}))).await?;
            steward_sees_tidb_cluster(&running.app).await?;
            create(&client, pd_statefulset("basic", 4)).await?;
            let placed = pd_nodes(&client, "basic", 3).await?;
            let zones: std::collections::BTreeSet<&str> =
                placed.values().map(|n| zone_of(n)).collect();
            ensure!(zones.len() == 3, "PD members share a zone: {placed:?}");
            let refusal = scheduling_refusal(&client, NAMESPACE, "basic-pd-3", "pd-quorum").await?;
            ensure!(
                refusal.contains(&format!("{ZONE}=zone-a already has 1 pd pod(s) of basic"))
                    && refusal.contains("at most 1 of 4"),
                "the refusal names the zone rule: {refusal}"
            );
            running.control_plane.check().await
        },
    );
}

/// Pods of an Advanced StatefulSet (`apps.pingcap.com/v1`) with delete slot
/// 1: the test creates them as its controller would (ordinals 0, 2, 3) and
/// leaves the old pd-1 running in zone-b. pd-quorum resolves their owner,
/// does not count pd-1, and places the three desired members one per zone,
/// zone-b included.
#[test]
fn an_advanced_statefulsets_delete_slot_is_left_out_of_the_count() {
    scenario(
        "an_advanced_statefulsets_delete_slot_is_left_out_of_the_count",
        |version| async move {
            let (mut running, client) = start(version).await?;
            let slots = json!({"pd.tidb.pingcap.com/delete-slots": "[1]"});
            create(&client, tidb_cluster(3, slots)).await?;
            steward_sees_tidb_cluster(&running.app).await?;
            let uid = create_advanced_statefulset(&client).await?;
            let query = ClusterQuery::new(running.app.hooks.cluster.clone());
            eventually(
                Duration::from_secs(30),
                "the Advanced StatefulSet in Steward's cache",
                || async {
                    let w = query.get_workload("AdvancedStatefulSet", NAMESPACE, "basic-pd");
                    Ok(w.filter(|w| w.desired_ordinals == [0, 2, 3]).map(|_| ()))
                },
            )
            .await?;
            let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
            pods.create(&PostParams::default(), &pd_pod(1, &uid, Some("b1")))
                .await
                .context("creating the leftover basic-pd-1 on b1")?;
            for ordinal in [0, 2, 3] {
                pods.create(&PostParams::default(), &pd_pod(ordinal, &uid, None))
                    .await
                    .with_context(|| format!("creating basic-pd-{ordinal}"))?;
            }
            let placed = pd_nodes(&client, "basic", 4).await?;
            let desired: BTreeMap<&String, &str> = placed
                .iter()
                .filter(|(pod, _)| pod.as_str() != "basic-pd-1")
                .map(|(pod, node)| (pod, zone_of(node)))
                .collect();
            let zones: std::collections::BTreeSet<&str> = desired.values().copied().collect();
            ensure!(
                zones.len() == 3 && zones.contains("zone-b"),
                "the desired members go one per zone, zone-b included: {placed:?}"
            );
            running.control_plane.check().await
        },
    );
}

/// Creates the Advanced StatefulSet `basic-pd` (3 replicas, delete slot 1)
/// and returns its uid.
async fn create_advanced_statefulset(client: &Client) -> Result<String> {
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("apps.pingcap.com", "v1", "StatefulSet"),
        "statefulsets",
    );
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), NAMESPACE, &resource);
    let labels = pd_labels();
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "apps.pingcap.com/v1", "kind": "StatefulSet",
        "metadata": {"name": "basic-pd", "namespace": NAMESPACE, "labels": labels,
                     "annotations": {"delete-slots": "[1]"}},
        "spec": {
            "replicas": 3, "serviceName": "basic-pd-peer",
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}},
        },
    }))?;
    let created = api
        .create(&PostParams::default(), &object)
        .await
        .context("creating the Advanced StatefulSet basic-pd")?;
    created
        .metadata
        .uid
        .context("the created Advanced StatefulSet has a uid")
}

fn pd_labels() -> Value {
    json!({
        "app.kubernetes.io/instance": "basic",
        "app.kubernetes.io/component": "pd",
        "app.kubernetes.io/managed-by": "tidb-operator",
    })
}

/// PD member `ordinal` as the Advanced StatefulSet controller creates it;
/// on `node` already when given one.
fn pd_pod(ordinal: u32, owner_uid: &str, node: Option<&str>) -> Pod {
    let mut spec = json!({
        "schedulerName": SCHEDULER_NAME,
        "containers": [{"name": "pd", "image": "pingcap/pd:v6.5.0"}],
    });
    if let Some(node) = node {
        spec["nodeName"] = json!(node);
    }
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": format!("basic-pd-{ordinal}"), "namespace": NAMESPACE, "labels": pd_labels(),
            "ownerReferences": [{
                "apiVersion": "apps.pingcap.com/v1", "kind": "StatefulSet", "name": "basic-pd",
                "uid": owner_uid, "controller": true,
            }],
        },
        "spec": spec,
    }))
    .expect("a valid pod")
}
